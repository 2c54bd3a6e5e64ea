"""CUDA backend of the dynamic depth-wise convolution: ``kernels/dynamic_dwconv.cu`` through cupy.

Why cupy: it compiles CUDA C++ at run time with NVRTC, so users need no nvcc and no build step;
the official DLGSANet code relies on it too. Everything here is lazy and defensive: importing
this module never imports cupy, and every way cupy can be missing or broken surfaces as
:class:`CupyUnavailable` with a one-line reason, which the dispatcher turns into a fallback to
the PyTorch path (see the dispatcher, ``__init__.py``).

Kernels are compiled once per (device, storage dtype, kernel size) and cached in memory (cupy
also keeps compiled binaries on disk, so a later process skips NVRTC). They are launched on
torch's current CUDA stream, read and write torch's memory directly through raw pointers (no
cupy allocation, no copies), and are wrapped in an autograd Function.

The pure helpers (:func:`kernel_source`, :func:`name_expressions`, :func:`nvrtc_options`,
:func:`launch_config`) are what the CPU-side tests use to compile the same source with NVRTC,
nvcc and g++, so what CI proves is what runs on a GPU.
"""
from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import re
import threading
import warnings
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional, Tuple, Union

import torch

from ..native import kernel_file
from ..optional import Unavailable

SOURCE_NAME = "dynamic_dwconv.cu"
BLOCK_THREADS = 256  # must match DWC_BLOCK_THREADS in the .cu (its __launch_bounds__)
STRIP = 2  # outputs along a row per thread in the forward and grad-input passes (DWC_STRIP in the .cu)
MAX_GRID_Y = 65535
MAX_PLANE_PIXELS = 1 << 30  # the kernels index one H x W plane with 32-bit integers

#: torch dtype -> storage type name in the .cu source (same bit layout).
STORAGE_TYPES: Dict[torch.dtype, str] = {
    torch.float32: "float",
    torch.float64: "double",
    torch.float16: "dwc_half",
    torch.bfloat16: "dwc_bfloat16",
}
KERNEL_NAMES = ("dwconv_forward", "dwconv_grad_input", "dwconv_grad_kernels")


class CupyUnavailable(Unavailable):
    """The cupy backend cannot run here; ``str(error)`` is the reason, fit for one log line."""


# ------------------------------------------------------------------------------------------------
# Pure helpers (no cupy, no GPU): shared with the CPU-side compile tests.
# ------------------------------------------------------------------------------------------------
def kernel_source_path() -> Path:
    """Path of ``dynamic_dwconv.cu``; raises :class:`CupyUnavailable` when it was not shipped."""
    try:
        return kernel_file(SOURCE_NAME)
    except FileNotFoundError as exc:
        raise CupyUnavailable(f"CUDA source {exc}") from None


@functools.lru_cache(maxsize=1)
def kernel_source() -> str:
    """The CUDA C++ source, read once."""
    try:
        return kernel_source_path().read_text(encoding="utf-8")
    except OSError as exc:
        raise CupyUnavailable(f"cannot read the CUDA source: {exc}") from exc


def name_expressions(dtype: torch.dtype, kernel_size: int) -> Tuple[str, str, str]:
    """Template instances (forward, grad wrt input, grad wrt kernels) for a storage dtype and K."""
    if dtype not in STORAGE_TYPES:
        raise CupyUnavailable(f"dtype {dtype} is not supported by the CUDA kernels "
                              f"(supported: {', '.join(str(d) for d in STORAGE_TYPES)})")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise CupyUnavailable(f"kernel size {kernel_size} is not a positive odd number")
    type_name = STORAGE_TYPES[dtype]
    return tuple(f"{name}<{type_name}, {kernel_size}>" for name in KERNEL_NAMES)  # type: ignore[return-value]


def nvrtc_options() -> Tuple[str, ...]:
    """NVRTC options of our own (cupy adds ``-arch``, ``-ftz=true`` and a default-device flag)."""
    return ("--std=c++14", f"-DDWC_BLOCK_THREADS={BLOCK_THREADS}", f"-DDWC_STRIP={STRIP}")


def strip_width(kernel: str, dtype: torch.dtype) -> int:
    """Outputs along a row that one thread of ``kernel`` computes (``dwc_strip`` in the .cu): the
    gather passes take STRIP in 32- and 16-bit storage and one in float64; grad_kernels one."""
    return STRIP if kernel in KERNEL_NAMES[:2] and dtype != torch.float64 else 1


def launch_config(n: int, groups: int, height: int, width: int, block: int = BLOCK_THREADS,
                  strip: int = 1) -> Tuple[Tuple[int, int, int], Tuple[int, int, int]]:
    """Grid and block for the kernels: x runs over the strips of ``strip`` pixels of a plane's
    rows (one thread each), y over (n, g).

    The kernels use grid-stride loops in both directions, so the caps here never lose work.
    """
    tasks = height * -(-width // strip)
    grid_x = max(1, min((tasks + block - 1) // block, 2**31 - 1))
    grid_y = max(1, min(n * groups, MAX_GRID_Y))
    return (grid_x, grid_y, 1), (block, 1, 1)


# ------------------------------------------------------------------------------------------------
# cupy: import, compile, launch.
# ------------------------------------------------------------------------------------------------
class _Kernels(NamedTuple):
    forward: Any
    grad_input: Any
    grad_kernels: Any


_lock = threading.Lock()
_cupy: Any = None
_cupy_error: Optional[str] = None
_compiled: Dict[Tuple[int, torch.dtype, int], Union[_Kernels, str]] = {}
_streams: Dict[Tuple[int, int], Any] = {}


def _first_line(exc: BaseException) -> str:
    """The telling line of an error: cupy wraps an import failure in a banner of advice and puts the
    real error under "Original error:" (``cupy/__init__.py``); otherwise the first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not set(line.strip()) <= {"="}]
    for i, line in enumerate(lines[:-1]):
        if line == "Original error:":
            return lines[i + 1][:300]
    return lines[0] if lines else ""


def cupy_distributions() -> Dict[str, str]:
    """Installed cupy distributions (cupy, cupy-cuda12x, ...) and their versions, from package metadata."""
    found: Dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "") if dist.metadata else ""
        if name.lower() == "cupy" or name.lower().startswith(("cupy-cuda", "cupy_cuda", "cupy-rocm")):
            found.setdefault(name.lower().replace("_", "-"), dist.version)
    return found


def _error_text(exc: BaseException) -> str:
    """``Type: message`` of an error, unless its telling line already names the type."""
    line = _first_line(exc)
    return line if re.match(r"[A-Za-z_.]*(Error|Exception): ", line) else f"{type(exc).__name__}: {line}"


def _import_failure(exc: ImportError) -> str:
    """Why ``import cupy`` raised: not installed at all, or installed but not importable.

    The two need different fixes: a cupy built for numpy 2 under numpy 1.26, for example, raises
    ``ImportError: numpy.core.multiarray failed to import`` although it is installed.
    """
    try:
        present = importlib.util.find_spec("cupy") is not None
    except (ImportError, ValueError):  # a half-imported cupy in sys.modules
        present = True
    if not present:  # (also what ``sys.modules["cupy"] = None`` looks like)
        return (f"cupy is not installed ({_first_line(exc)}); run `python install.py` in the DLGSANet "
                f"folder, or `pip install dlgsanet[cuda12]` (cuda11/cuda12/cuda13 matching "
                f"torch.version.cuda={torch.version.cuda})")
    which = ", ".join(f"{name} {version}" for name, version in sorted(cupy_distributions().items())) or "cupy"
    numpy = ""
    if "numpy" in str(exc).lower():
        try:
            numpy = f" (numpy {importlib.metadata.version('numpy')} is installed)"
        except importlib.metadata.PackageNotFoundError:
            pass
    return (f"{which} is installed but cannot be imported: {_error_text(exc).rstrip('.')}{numpy}; "
            f"uninstall it, then run `python install.py` in the DLGSANet folder, which installs the newest cupy "
            f"that fits the installed packages")


def import_cupy() -> Any:
    """The cupy module, imported once; raises :class:`CupyUnavailable` with the reason."""
    global _cupy, _cupy_error
    with _lock:
        if _cupy is None and _cupy_error is None:
            try:
                import cupy  # noqa: PLC0415 - optional, heavy, and may be broken: import on first use

                cupy.cuda.runtime.runtimeGetVersion()  # fails early when its CUDA libraries are unusable
                _cupy = cupy
            except ImportError as exc:
                _cupy_error = _import_failure(exc)
            except Exception as exc:  # a broken cupy must never break inference
                _cupy_error = f"cupy is installed but unusable: {type(exc).__name__}: {_first_line(exc)}"
        if _cupy is None:
            raise CupyUnavailable(_cupy_error)
        return _cupy


def compiled_kernels(device_index: int, dtype: torch.dtype, kernel_size: int) -> _Kernels:
    """Compile (once) and load the three kernels for one device, dtype and K.

    A failure is cached too, so a broken setup costs one compile attempt per process, not one
    per call.
    """
    key = (device_index, dtype, kernel_size)
    cached = _compiled.get(key)
    if cached is None:
        names = name_expressions(dtype, kernel_size)
        cupy = import_cupy()
        try:
            with cupy.cuda.Device(device_index):
                module = cupy.RawModule(code=kernel_source(), options=nvrtc_options(),
                                        name_expressions=names)
                # get_function loads the binary now, so a compile or load error is caught here
                cached = _Kernels(*(module.get_function(name) for name in names))
        except CupyUnavailable as exc:
            cached = str(exc)
        except Exception as exc:  # NVRTC error, driver too old for the PTX, unsupported GPU, ...
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            cached = f"compiling the CUDA kernels failed on cuda:{device_index}: {type(exc).__name__}: {first_line}"
        with _lock:
            _compiled[key] = cached
    if isinstance(cached, str):
        raise CupyUnavailable(cached)
    return cached


def unavailable_reason(x: torch.Tensor, kernels: torch.Tensor) -> Optional[str]:
    """Why the cupy backend cannot run these tensors (None when it can). Compiles on first use."""
    if x.device.type != "cuda" or kernels.device.type != "cuda":
        return f"the cupy kernels need CUDA tensors, got {x.device.type}"
    if x.device != kernels.device:
        return f"x is on {x.device} but kernels on {kernels.device}"
    if x.dtype != kernels.dtype:
        return f"x is {x.dtype} but kernels {kernels.dtype}"
    if x.shape[2] * x.shape[3] > MAX_PLANE_PIXELS:
        return f"a {x.shape[2]}x{x.shape[3]} plane exceeds the kernels' 2^30 pixel limit"
    try:
        compiled_kernels(x.device.index, x.dtype, kernels.shape[2])
    except CupyUnavailable as exc:
        return str(exc)
    return None


def _stream(cupy: Any, device: torch.device) -> Any:
    """cupy's view of torch's current stream on ``device``, so kernels order with torch's work.

    ``Stream.from_external`` (cupy >= 14, torch streams speak the CUDA stream protocol) where it
    exists, else ``ExternalStream`` on the raw ``cudaStream_t`` (deprecated in cupy 14).
    """
    torch_stream = torch.cuda.current_stream(device)
    key = (device.index, torch_stream.cuda_stream)
    stream = _streams.get(key)
    if stream is None:
        from_external = getattr(cupy.cuda.Stream, "from_external", None)
        if from_external is not None and hasattr(torch_stream, "__cuda_stream__"):
            try:
                stream = from_external(torch_stream)
            except Exception:  # noqa: BLE001 - fall back to the pointer form below
                stream = None
        if stream is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                try:
                    stream = cupy.cuda.ExternalStream(torch_stream.cuda_stream, device.index)
                except TypeError:  # cupy < 12 has no device argument
                    stream = cupy.cuda.ExternalStream(torch_stream.cuda_stream)
        with _lock:
            if len(_streams) > 64:  # streams come and go; the wrappers are cheap to recreate
                _streams.clear()
            _streams[key] = stream
    return stream


def _launch(kernel: Any, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor,
            shape: Tuple[int, int, int, int, int], strip: int) -> None:
    """Run one kernel on torch's current stream; ``shape`` is (N, C, G, H, W) of the convolution."""
    n, channels, groups, height, width = shape
    grid, block = launch_config(n, groups, height, width, strip=strip)
    cupy = import_cupy()
    import numpy as np  # noqa: PLC0415 - cupy depends on numpy; keep this module's import light

    # Raw device pointers: the kernels read and write torch's memory in place (no cupy arrays,
    # which would also lack a bfloat16 dtype).
    args = (np.uint64(a.data_ptr()), np.uint64(b.data_ptr()), np.uint64(out.data_ptr()),
            np.int32(n), np.int32(channels), np.int32(groups), np.int32(height), np.int32(width))
    with cupy.cuda.Device(out.device.index), _stream(cupy, out.device):
        kernel(grid, block, args)  # on the stream made current by the `with` (every cupy version)


class DynamicDWConvFunction(torch.autograd.Function):
    """Autograd wrapper: forward and both gradients by the CUDA kernels (first order only)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        kernels = kernels.contiguous()
        n, c, h, w = x.shape
        groups, k = kernels.shape[1], kernels.shape[2]
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
        if out.numel():
            _launch(compiled_kernels(x.device.index, x.dtype, k).forward, x, kernels, out, (n, c, groups, h, w),
                    strip_width(KERNEL_NAMES[0], x.dtype))
        ctx.save_for_backward(x, kernels)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        x, kernels = ctx.saved_tensors
        grad_out = grad_out.contiguous().to(x.dtype)
        n, c, h, w = x.shape
        groups, k = kernels.shape[1], kernels.shape[2]
        compiled = compiled_kernels(x.device.index, x.dtype, k)
        grad_x = grad_k = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.empty_like(x, memory_format=torch.contiguous_format)
            if grad_x.numel():
                _launch(compiled.grad_input, grad_out, kernels, grad_x, (n, c, groups, h, w),
                        strip_width(KERNEL_NAMES[1], x.dtype))
        if ctx.needs_input_grad[1]:
            grad_k = torch.empty_like(kernels, memory_format=torch.contiguous_format)
            if grad_k.numel():
                _launch(compiled.grad_kernels, x, grad_out, grad_k, (n, c, groups, h, w), 1)
        return grad_x, grad_k


def dynamic_dwconv_cupy(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """The dynamic depth-wise convolution by the CUDA kernels (call :func:`unavailable_reason` first)."""
    return DynamicDWConvFunction.apply(x, kernels)


def reset_caches() -> None:
    """Forget the imported cupy, compiled kernels and streams (tests that hide or restore cupy)."""
    global _cupy, _cupy_error
    with _lock:
        _cupy = None
        _cupy_error = None
        _compiled.clear()
        _streams.clear()
