"""The C++ kernels of CPU training (``kernels/cpu_train.cpp``): loading, self-check, calls.

Why a library of their own, apart from the inference kernels of ``kernels/cpu_fused.cpp``: they
serve autograd (float32 and float64, forward and backward), are chosen by another switch
(:mod:`dlgsanet.ops.cpu_training`), and must not change the inference library's build or bits.
Building and caching are :mod:`dlgsanet.ops.native`'s job. The library is used only after it
ran every kernel on small random inputs against the PyTorch ops (with their backward) and agreed
within 1e-4: a kernel that builds but computes something else must not train a model.
"""
from __future__ import annotations

import ctypes
from typing import Optional

import torch

from . import native
from .optional import Unavailable

SOURCE_NAME = "cpu_train.cpp"
ABI_VERSION = 2
DTYPES = {torch.float32: "f32", torch.float64: "f64"}
SELF_CHECK_TOLERANCE = 1e-4

_p, _i, _i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
_DDW_SHAPE = [_i64] * 6 + [_i]
SIGNATURES = {
    "dlgt_abi_version": (_i, []),
    "dlgt_openmp": (_i, []),
    **{f"dlgt_ddw_forward_{s}": (_i, [_p] * 3 + _DDW_SHAPE) for s in DTYPES.values()},
    **{f"dlgt_ddw_backward_{s}": (_i, [_p] * 5 + _DDW_SHAPE) for s in DTYPES.values()},
    **{f"dlgt_gate_forward_{s}": (_i, [_p] * 3 + [_i64, _i]) for s in DTYPES.values()},
    **{f"dlgt_gate_backward_{s}": (_i, [_p] * 5 + [_i64, _i]) for s in DTYPES.values()},
}



class TrainKernelsUnavailable(Unavailable):
    """The C++ training kernels cannot be used here; ``str(error)`` is the one-line reason."""


def _self_check() -> None:
    from .dynamic_dwconv.cpu_backend import self_check as dynamic_conv_check
    from .gelu_gate import self_check as gate_check

    for check in (dynamic_conv_check, gate_check):
        for name, err in check():
            if not err <= SELF_CHECK_TOLERANCE:
                raise TrainKernelsUnavailable(f"self-check failed: {name} differs from the PyTorch ops by {err:.2e}")


def _load() -> ctypes.CDLL:
    lib, path = native.load(SOURCE_NAME, SIGNATURES, ABI_VERSION)
    if lib.dlgt_abi_version() != ABI_VERSION:
        raise TrainKernelsUnavailable(f"{path.name} has ABI {lib.dlgt_abi_version()}, expected {ABI_VERSION}")
    _library.provide(lib)  # the self-check calls the kernels through the public path
    _self_check()
    return lib


_library = native.LoadedOnce(_load, TrainKernelsUnavailable)


def library() -> ctypes.CDLL:
    """The loaded kernels (built and self-checked on first call); raises TrainKernelsUnavailable."""
    return _library.get()


def reset() -> None:
    """Forget the loaded library (tests; a host after installing a compiler)."""
    _library.reset()


def unavailable_reason(*tensors: torch.Tensor) -> Optional[str]:
    """Why the kernels cannot run on these tensors (None: they can). Loads them on first use."""
    if any(t.device.type != "cpu" for t in tensors):
        return f"the tensors are on {tensors[0].device.type}"
    if tensors[0].dtype not in DTYPES or any(t.dtype != tensors[0].dtype for t in tensors):
        return f"no C++ kernels for {', '.join(sorted({str(t.dtype) for t in tensors}))}"
    try:
        lib = library()
    except TrainKernelsUnavailable as exc:
        return str(exc)
    if not lib.dlgt_openmp() and torch.get_num_threads() > 1:
        return f"the C++ kernels were built without OpenMP and PyTorch has {torch.get_num_threads()} threads"
    return None


def call(name: str, dtype: torch.dtype, *args) -> None:
    """Run kernel ``name`` for ``dtype`` (``dlgt_<name>_f32`` or ``_f64``) on ``args`` plus the thread count."""
    function = f"dlgt_{name}_{DTYPES[dtype]}"
    status = getattr(library(), function)(*args, torch.get_num_threads())
    if status != 0:
        raise RuntimeError(f"{function} failed with status {status}")


def ptr(t: Optional[torch.Tensor]) -> Optional[int]:
    """The data pointer ctypes passes for ``t`` (None: a null pointer)."""
    return None if t is None else t.data_ptr()
