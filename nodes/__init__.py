"""ComfyUI nodes of the DLGSANet pack (thin adapters over ``dlgsanet``), for both node APIs.

``specs.py`` defines the nodes once; ``v3.py`` builds V3 schema nodes from it through the pinned
``comfy_api.v0_0_2`` and ``v1.py`` the legacy ``NODE_CLASS_MAPPINGS`` classes. ComfyUI reads
``NODE_CLASS_MAPPINGS`` first and then ignores ``comfy_entrypoint``, so the pack's entry point
exports exactly one of the two, chosen by :func:`v3_api_available`.
"""
from __future__ import annotations

import logging
import os

#: The comfy_api version the V3 nodes are written against: pinned, not ``latest`` (which may
#: change under us). Present from ComfyUI v0.3.47 (July 2025) on, together with the V3 loader.
PINNED_API = "comfy_api.v0_0_2"
#: What the V3 nodes use from it (all present since the V3 schema's first release).
V3_NAMES = ("ComfyNode", "Schema", "NodeOutput", "Custom", "Image", "Int", "Float", "Combo")
#: ``DLGSANET_COMFY_NODE_API=v1`` keeps the legacy nodes even where V3 is available: an escape
#: hatch should a ComfyUI's V3 loader misbehave (same ids and inputs, so workflows keep loading).
NODE_API_ENV = "DLGSANET_COMFY_NODE_API"


def v3_api_available() -> bool:
    """True when this ComfyUI has the pinned V3 API (and with it the V3 node loader)."""
    if os.environ.get(NODE_API_ENV, "").strip().lower() == "v1":
        logging.getLogger("DLGSANet").info("DLGSANet: %s=v1, using the V1 node API", NODE_API_ENV)
        return False
    try:
        from comfy_api.v0_0_2 import ComfyExtension, io  # noqa: F401
    except ImportError:
        return False
    except Exception as error:  # a broken comfy_api must not cost the user the nodes
        logging.getLogger("DLGSANet").warning("DLGSANet: %s unusable (%s); using the V1 node API",
                                              PINNED_API, error)
        return False
    return all(hasattr(io, name) for name in V3_NAMES)
