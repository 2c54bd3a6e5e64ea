"""ComfyUI entry point of the DLGSANet pack: node mappings and spandrel registration.

ComfyUI imports this folder as a package named after its full path, whatever the folder is
called, so everything inside is imported relatively. Registering DLGSANet with spandrel makes
ComfyUI's built-in "Load Upscale Model" / "Upscale Image (using Model)" accept DLGSANet files too.
"""
import importlib.util
import logging

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}

# Only inside ComfyUI (where ``folder_paths`` exists) are the nodes wired up. Elsewhere -- pytest
# importing the repository root as a package, a stray import from another host -- importing this
# file is a cheap no-op instead of an ImportError.
if importlib.util.find_spec("folder_paths") is not None:
    from .dlgsanet import is_dlgsanet_state_dict, model_from_state_dict
    from .dlgsanet_spandrel import register as _register_spandrel
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: F811

    try:
        _register_spandrel(is_dlgsanet_state_dict, model_from_state_dict)
    except Exception as _error:  # a broken spandrel install must not cost the user our own nodes
        logging.getLogger("DLGSANet").warning("DLGSANet: not registered with spandrel (%s)", _error)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
