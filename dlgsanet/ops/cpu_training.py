"""Whether CPU training takes its faster paths: the user's switch and the test for a call.

Why a switch of its own: CPU training (autograd on CPU tensors) can run MHDLSA's dynamic conv and
the feed-forward's GELU gate in the C++ kernels of ``kernels/cpu_train.cpp``, the hyper-network's
last 1x1 conv as one batched GEMM and its 7x7 depth-wise conv channels-last, where oneDNN's NCHW
kernels and their backward are slow at so few channels (figures in docs/performance.md). All
compute the same function as the PyTorch path, within float rounding, but not the same bits, so a user comparing runs (or chasing a suspected kernel bug) needs one
switch that restores the plain PyTorch path: ``DLGSANET_TRAIN_KERNELS=off``, or
:func:`cpu_training_kernels` in code (benchmarks time both in one process). Inference never takes
these paths: no autograd graph, nothing changes.
"""
from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from typing import Iterator, Optional

import torch

from .optional import OnceLog, env_choice

ENV_VAR = "DLGSANET_TRAIN_KERNELS"
CHOICES = ("auto", "off")
ALIASES = {"0": "off", "no": "off", "false": "off", "torch": "off", "on": "auto", "1": "auto", "yes": "auto",
           "true": "auto"}

logger = logging.getLogger(__name__)
_log_once = OnceLog(logger)
_override = threading.local()


def requested() -> str:
    """``auto`` or ``off``: :func:`cpu_training_kernels` where in effect, else ``$DLGSANET_TRAIN_KERNELS``."""
    forced: Optional[bool] = getattr(_override, "enabled", None)
    if forced is not None:
        return "auto" if forced else "off"
    return env_choice(ENV_VAR, CHOICES, _log_once, ALIASES)


@contextmanager
def cpu_training_kernels(enabled: bool) -> Iterator[None]:
    """Within this block (this thread), CPU training takes its faster paths (``True``, where they
    can run) or the plain PyTorch path (``False``), whatever the environment says."""
    before = getattr(_override, "enabled", None)
    _override.enabled = bool(enabled)
    try:
        yield
    finally:
        _override.enabled = before


def recording(*tensors: torch.Tensor) -> bool:
    """Whether autograd records a graph through any of ``tensors``."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def applies(*tensors: torch.Tensor) -> bool:
    """Whether a call on ``tensors`` is CPU training with the faster paths allowed: every tensor on
    the CPU, a graph recorded through them, and the switch not off."""
    return (all(t.device.type == "cpu" for t in tensors) and recording(*tensors)
            and requested() == "auto")
