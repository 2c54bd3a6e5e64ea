"""ComfyUI entry point of the DLGSANet pack: the nodes (V3 or V1) and spandrel registration.

ComfyUI imports this folder as a package named after its full path, whatever the folder is
called, so everything inside is imported relatively. Registering DLGSANet with spandrel makes
ComfyUI's built-in "Load Upscale Model" / "Upscale Image (using Model)" accept DLGSANet files too.

Exactly one node API is exported, decided here at import time: ``comfy_entrypoint`` (V3 schema
nodes) when the pinned ``comfy_api.v0_0_2`` imports, else ``NODE_CLASS_MAPPINGS`` (V1). ComfyUI
reads ``NODE_CLASS_MAPPINGS`` first and ignores ``comfy_entrypoint`` when both exist, so the V3
path must not define it at all (an empty dict would register no nodes).
"""
import importlib.util
import logging

__all__: list = []

# Only inside ComfyUI (where ``folder_paths`` exists) are the nodes wired up. Elsewhere -- pytest
# importing the repository root as a package, a stray import from another host -- importing this
# file is a cheap no-op instead of an ImportError.
if importlib.util.find_spec("folder_paths") is not None:
    from .dlgsanet import is_dlgsanet_state_dict, model_from_state_dict
    from .dlgsanet_spandrel import register as _register_spandrel
    from .nodes import v3_api_available

    try:
        _register_spandrel(is_dlgsanet_state_dict, model_from_state_dict)
    except Exception as _error:  # a broken spandrel install must not cost the user our own nodes
        logging.getLogger("DLGSANet").warning("DLGSANet: not registered with spandrel (%s)", _error)

    if v3_api_available():
        from .nodes.v3 import comfy_entrypoint

        __all__ = ["comfy_entrypoint"]
    else:
        from .nodes.v1 import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

        __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
