"""Buffers reused by the blocks of one CPU inference pass.

Why: a fresh buffer of a few MiB or more is mapped by the operating system page by page on first
write, which costs several times the arithmetic done on it (figures in docs/performance.md), and
the C library hands big freed blocks back to the system. Each block's output, the qkv map, the
attention sum and the kernel bands are therefore taken from a :class:`Workspace`: allocated once
per forward pass and overwritten by every block.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch


class Workspace:
    """Large buffers reused by the blocks of one CPU inference pass.

    One workspace serves one forward pass (create it per pass, never share it between threads).
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def take(self, name: str, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        """An uninitialised ``shape`` tensor (dtype/device of ``like``) backed by buffer ``name``."""
        numel = 1
        for size in shape:
            numel *= int(size)
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != like.dtype or buf.device != like.device:
            buf = like.new_empty(numel)
            self._buffers[name] = buf
        return buf[:numel].view(*shape)

    def output_for(self, *inputs: torch.Tensor) -> torch.Tensor:
        """A buffer shaped like ``inputs[0]`` that shares storage with none of ``inputs``
        (block outputs ping-pong between two buffers)."""
        ptrs = {t.untyped_storage().data_ptr() for t in inputs}
        for name in ("act0", "act1", "act2"):
            out = self.take(name, inputs[0].shape, inputs[0])
            if out.untyped_storage().data_ptr() not in ptrs:
                return out
        raise RuntimeError("workspace: no free activation buffer")  # pragma: no cover


def new_output(like: torch.Tensor, workspace: Optional[Workspace]) -> torch.Tensor:
    """An output buffer shaped like ``like`` (from ``workspace`` when there is one)."""
    return workspace.output_for(like) if workspace is not None else torch.empty_like(like)


def scratch(workspace: Optional[Workspace], name: str, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """An uninitialised ``shape`` buffer: workspace buffer ``name``, or a fresh tensor."""
    return workspace.take(name, shape, like) if workspace is not None else like.new_empty(shape)
