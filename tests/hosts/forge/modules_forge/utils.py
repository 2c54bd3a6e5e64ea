"""Stand-in for Forge HEAD (dfdcbab6) ``modules_forge/utils.py``: ``prepare_free_memory``.

Forge's built-in upscalers call it first so its memory manager frees VRAM held by the
diffusion models; the stand-in only counts calls (``calls``).
"""
from __future__ import annotations

calls: list[bool] = []


def prepare_free_memory(aggressive: bool = False) -> None:
    calls.append(aggressive)
