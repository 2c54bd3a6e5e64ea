"""Stand-in of ComfyUI's ``comfy_api/latest/__init__.py`` (v0.33.0, commit 783545f6): the
``ComfyExtension`` base class and the ``io`` module (the real one also offers ``ui``, ``Input``,
``InputImpl``, ``Types`` and the ``ComfyAPI`` object, which the DLGSANet nodes do not use).
There is no ``comfy_api/__init__.py`` in ComfyUI either: ``comfy_api`` is a namespace package.
"""
from abc import ABC, abstractmethod

from . import _io as io


class ComfyExtension(ABC):
    async def on_load(self) -> None:
        """Called when an extension is loaded."""

    @abstractmethod
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        """Returns a list of nodes that this extension provides."""


IO = io

__all__ = ["ComfyExtension", "io", "IO"]
