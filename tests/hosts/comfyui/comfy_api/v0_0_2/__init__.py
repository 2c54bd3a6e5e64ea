"""Stand-in of ComfyUI's ``comfy_api/v0_0_2/__init__.py`` (v0.33.0, commit 783545f6; the same
names since v0.3.47): the pinned API version re-exports ``io`` and ``ComfyExtension`` of
``comfy_api.latest`` (the real file also re-exports ``ui``/``UI`` and defines the
``ComfyAPIAdapter_v0_0_2`` object, unused by the DLGSANet nodes).
"""
from comfy_api.latest import IO, ComfyExtension, io  # noqa: F401

__all__ = ["ComfyExtension", "io", "IO"]
