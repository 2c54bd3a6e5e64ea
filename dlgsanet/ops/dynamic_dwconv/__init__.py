"""The dynamic depth-wise convolution of MHDLSA, dispatched to the best available backend.

Backends:

- ``cupy``: the CUDA kernels of ``kernels/dynamic_dwconv.cu``, compiled with NVRTC through cupy
  (``cupy_backend.py``). Used for CUDA tensors when cupy imports and the kernels compile.
- ``cpu``: C++ forward and backward (``kernels/cpu_train.cpp``, ``cpu_backend.py``) for CPU
  training: float32/float64 CPU tensors under autograd, unless ``$DLGSANET_TRAIN_KERNELS`` is
  ``off``. Inference on the CPU (no graph) keeps the PyTorch path and its exact bits.
- ``torch``: pure PyTorch (``torch_backend.py``), every device; the reference.

The choice: the ``backend`` argument, else the ``DLGSANET_BACKEND`` environment variable, else
``auto``. ``auto`` takes cupy where it can run, the C++ kernels in CPU training, and PyTorch
otherwise; ``cupy`` insists on trying cupy but still falls back (inference must not die because
an optional accelerator is missing); ``torch`` never touches cupy or the C++ kernels. Every
fallback away from cupy on a CUDA tensor, away from a requested cupy, or away from the C++
kernels in CPU training, is logged once per reason, in one line, so a slow run explains itself.
"""
from __future__ import annotations

import logging
from typing import Optional, Tuple

import torch

from ...errors import DLGSANetError
from ..cpu_training import applies as cpu_training_applies
from ..optional import OnceLog, env_choice
from . import cpu_backend, cupy_backend
from .cpu_backend import dynamic_dwconv_cpu
from .torch_backend import dynamic_dwconv_torch

ENV_VAR = "DLGSANET_BACKEND"
BACKENDS = ("auto", "cupy", "torch")

logger = logging.getLogger(__name__)
_log_once = OnceLog(logger)


class BackendChoiceError(DLGSANetError, ValueError):
    """An unknown backend name was passed to :func:`dynamic_dwconv`."""


def _check(x: torch.Tensor, kernels: torch.Tensor) -> None:
    if x.dim() != 4 or kernels.dim() != 6:
        raise ValueError(f"dynamic_dwconv expects x [N,C,H,W] and kernels [N,G,K,K,H,W], got "
                         f"{tuple(x.shape)} and {tuple(kernels.shape)}")
    n, c, h, w = x.shape
    kn, g, k1, k2, kh, kw = kernels.shape
    if kn != n or (kh, kw) != (h, w) or k1 != k2 or k1 % 2 == 0 or c % g:
        raise ValueError(f"dynamic_dwconv: incompatible shapes x {tuple(x.shape)} and kernels "
                         f"{tuple(kernels.shape)} (need same N, H, W; odd square K; C divisible by G)")


def reset_fallback_log() -> None:
    """Forget which fallbacks were already logged (for tests and long-lived hosts after a fix)."""
    _log_once.reset()


def requested_backend(backend: Optional[str] = None) -> str:
    """The backend asked for: the argument, else ``$DLGSANET_BACKEND``, else ``auto``.

    A bad argument is a programming error and raises; a bad environment value is a user's typo
    in a host's launcher, so it is logged once and ignored rather than breaking every upscale.
    """
    if backend is not None:
        name = str(backend).strip().lower()
        if name not in BACKENDS:
            raise BackendChoiceError(f"unknown dynamic_dwconv backend {backend!r}; "
                                     f"choose one of {', '.join(BACKENDS)}")
        return name
    return env_choice(ENV_VAR, BACKENDS, _log_once)


def select_backend(x: torch.Tensor, kernels: torch.Tensor,
                   backend: Optional[str] = None) -> Tuple[str, Optional[str]]:
    """(backend that will run, reason cupy was passed over or None when nothing worth a log line).

    May compile the CUDA kernels (once per device, dtype and kernel size), or the C++ ones (once).
    """
    requested = requested_backend(backend)
    if requested == "torch":
        return "torch", None
    if requested == "auto" and x.device.type == "cpu" and cpu_training_applies(x, kernels):
        reason = cpu_backend.unavailable_reason(x, kernels)
        return ("torch", f"{reason} (CPU training)") if reason else ("cpu", None)
    if x.device.type != "cuda":
        # auto on a CPU/MPS tensor is the normal path, not a fallback: say nothing.
        return "torch", (f"backend cupy requested, but the tensors are on {x.device.type}; "
                         f"the CUDA kernels need CUDA tensors" if requested == "cupy" else None)
    reason = cupy_backend.unavailable_reason(x, kernels)
    return ("torch", reason) if reason else ("cupy", None)


def dynamic_dwconv(x: torch.Tensor, kernels: torch.Tensor, *, backend: Optional[str] = None) -> torch.Tensor:
    """Per-pixel depth-wise convolution with zero padding K // 2 (see ``torch_backend``).

    ``backend``: ``"auto"`` (default, or ``$DLGSANET_BACKEND``), ``"cupy"`` or ``"torch"``; the C++
    CPU kernels are an ``auto`` choice only (see the module's docstring).
    """
    _check(x, kernels)
    chosen, reason = select_backend(x, kernels, backend)
    if reason:
        _log_once(f"DLGSANet: dynamic conv uses the PyTorch path: {reason}")
    if chosen == "cupy":
        return cupy_backend.dynamic_dwconv_cupy(x, kernels)
    if chosen == "cpu":
        return dynamic_dwconv_cpu(x, kernels)
    return dynamic_dwconv_torch(x, kernels)
