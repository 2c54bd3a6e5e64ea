"""Fused CPU kernels (``kernels/cpu_fused.cpp``): built on first use, loaded with ctypes.

Why compiled kernels: on a CPU the network's GEMMs already run near oneDNN's rate, and what is
left is memory traffic between separate PyTorch ops. MHDLSA's per-pixel kernels are the largest
tensor of the model, written by one GEMM and read back by K*K multiply-adds; the feed-forward's
depth-wise conv, GELU and gate each make a pass over a 2*dim-channel map. The C++ kernels make
the per-pixel kernels of a few dozen pixels at a time in L1 and filter with them at once, and
fuse the gate (GELU(dwconv(a)) * dwconv(b)) into one pass (figures: ``docs/performance.md``).

Why plain C++ through ctypes rather than a PyTorch extension: it needs no PyTorch headers and no
build tools beyond a C++ compiler, builds in about a second, and a missing or failing compiler
costs nothing but speed. The library is cached per source, compiler, flags and CPU under the
user's cache folder, so later processes load it without compiling.

Choice: ``DLGSANET_CPU_KERNELS=auto`` (default) uses the kernels for float32 CPU inference when
they build, load and pass a self-check against the PyTorch ops; ``off`` never builds or uses
them. Every reason the kernels are not used is logged once, in one line, and inference goes on
with the PyTorch ops, which compute the same function (within float rounding).
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch.profiler import record_function

from .sources import kernel_file

ENV_VAR = "DLGSANET_CPU_KERNELS"
CACHE_ENV_VAR = "DLGSANET_CACHE_DIR"
CHOICES = ("auto", "off")
SOURCE_NAME = "cpu_fused.cpp"
ABI_VERSION = 1
BUILD_TIMEOUT_S = 180
BASE_FLAGS = ("-O3", "-std=c++17", "-fPIC", "-shared", "-fno-math-errno", "-fno-trapping-math")

logger = logging.getLogger(__name__)
_lock = threading.Lock()
_state: dict = {}  # "lib": loaded library or None, "reason": why not, "openmp": bool


class CpuKernelsUnavailable(RuntimeError):
    """The fused CPU kernels cannot be used here; ``str(error)`` is the one-line reason."""


def requested() -> str:
    """``auto`` or ``off`` from ``$DLGSANET_CPU_KERNELS`` (an unknown value counts as auto)."""
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value in ("off", "0", "no", "false", "torch"):
        return "off"
    if value not in ("", "auto", "on", "1", "yes", "true"):
        _log_once(f"DLGSANet: ignoring {ENV_VAR}={os.environ.get(ENV_VAR)!r} (expected auto or off); using auto")
    return "auto"


_logged: set = set()


def _log_once(message: str, level: int = logging.WARNING) -> None:
    if message not in _logged:
        _logged.add(message)
        logger.log(level, message)


def source_path() -> Path:
    """``cpu_fused.cpp`` beside the package when installed, else the repository's ``kernels/``."""
    try:
        return kernel_file(SOURCE_NAME)
    except FileNotFoundError as exc:
        raise CpuKernelsUnavailable(str(exc)) from None


def compiler() -> Optional[str]:
    """The C++ compiler: ``$CXX``, else the first of c++, g++, clang++ on the PATH."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["c++", "g++", "clang++"]
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def cache_dir() -> Path:
    """``$DLGSANET_CACHE_DIR``, else ``$XDG_CACHE_HOME/dlgsanet``, else ``~/.cache/dlgsanet``."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "dlgsanet"


def _cpu_identity() -> str:
    """What -march=native depends on: the CPU model and feature flags where the OS says them."""
    parts = [platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith(("model name", "flags", "Features", "CPU part")):
                    parts.append(line.strip())
                if line.strip() == "":  # the first processor says it all
                    break
    except OSError:
        pass
    return "\n".join(parts)


def _compiler_version(cxx: str) -> str:
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30)
        return out.stdout.splitlines()[0] if out.stdout else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def flag_sets() -> List[List[str]]:
    """Flags to try, best first: native ISA and OpenMP, then without one, then without both."""
    return [[*BASE_FLAGS, "-march=native", "-fopenmp"], [*BASE_FLAGS, "-fopenmp"],
            [*BASE_FLAGS, "-march=native"], list(BASE_FLAGS)]


def build(cxx: str, source: Path, folder: Path) -> Path:
    """Compile ``source`` into ``folder`` (or reuse the cached build); the first flag set that
    compiles wins. Writes through a temporary file and an atomic rename, so processes that
    build at the same time never load a half-written library."""
    text = source.read_bytes()
    version = _compiler_version(cxx)
    identity = _cpu_identity()
    errors = []
    for flags in flag_sets():
        key = hashlib.sha256(b"\0".join([text, cxx.encode(), version.encode(), identity.encode(),
                                         " ".join(flags).encode(), str(ABI_VERSION).encode()])).hexdigest()[:20]
        target = folder / f"cpu_fused-{key}.so"
        if target.is_file():
            return target
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".cpu_fused-", suffix=".so", dir=folder)
        os.close(fd)
        try:
            result = subprocess.run([cxx, *flags, "-o", tmp, str(source)], capture_output=True, text=True,
                                    timeout=BUILD_TIMEOUT_S)
            if result.returncode == 0:
                os.replace(tmp, target)
                return target
            lines = result.stderr.strip().splitlines() or ["?"]
            errors.append(f"{' '.join(flags)}: {next((l for l in lines if 'error' in l), lines[-1]).strip()}")
        except (OSError, subprocess.SubprocessError) as exc:
            errors.append(f"{' '.join(flags)}: {exc}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise CpuKernelsUnavailable(f"{Path(cxx).name} could not build {source.name} ({'; '.join(errors)[:300]})")


def _bind(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    p, i, i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
    lib.dlg_abi_version.restype = i
    lib.dlg_openmp.restype = i
    lib.dlg_dynamic_conv.restype = i
    lib.dlg_dynamic_conv.argtypes = [p, i, i, p, i, i, p, p, p] + [i] * 8
    lib.dlg_dwconv3x3.restype = i
    lib.dlg_dwconv3x3.argtypes = [p] * 7 + [i] * 4 + [i64, i, i, i64, i]
    if lib.dlg_abi_version() != ABI_VERSION:
        raise CpuKernelsUnavailable(f"{path.name} has ABI {lib.dlg_abi_version()}, expected {ABI_VERSION}")
    return lib


def _load() -> ctypes.CDLL:
    if os.name != "posix":
        raise CpuKernelsUnavailable(f"not built on {platform.system()} (GCC/clang vector extensions needed)")
    cxx = compiler()
    if cxx is None:
        raise CpuKernelsUnavailable("no C++ compiler found (set CXX, or install g++ or clang++)")
    source = source_path()
    start = time.perf_counter()
    folders = [cache_dir(), Path(tempfile.gettempdir()) / f"dlgsanet-{os.getuid()}"]
    last: Optional[Exception] = None
    for folder in folders:
        try:
            path = build(cxx, source, folder)
            break
        except OSError as exc:  # cache folder not writable: try the next one
            last = exc
    else:
        raise CpuKernelsUnavailable(f"no writable cache folder for the kernels ({last})")
    try:
        lib = _bind(path)
    except OSError:  # a damaged cached file: build it again, once
        path.unlink(missing_ok=True)
        lib = _bind(build(cxx, source, path.parent))
    _self_check(lib)
    logger.info("DLGSANet: fused CPU kernels ready (%s, OpenMP %s) in %.1f s", path.name,
                "on" if lib.dlg_openmp() else "off", time.perf_counter() - start)
    return lib


def library() -> ctypes.CDLL:
    """The loaded kernels (built and self-checked on first call); raises CpuKernelsUnavailable."""
    with _lock:
        if "lib" not in _state:
            try:
                _state["lib"] = _load()
            except CpuKernelsUnavailable as exc:
                _state["lib"], _state["reason"] = None, str(exc)
            except Exception as exc:  # noqa: BLE001 - never let an accelerator break inference
                _state["lib"], _state["reason"] = None, f"{type(exc).__name__}: {exc}"
        if _state["lib"] is None:
            raise CpuKernelsUnavailable(_state["reason"])
        return _state["lib"]


def reset() -> None:
    """Forget the loaded library and logged reasons (tests; a host after installing a compiler)."""
    with _lock:
        _state.clear()
        _logged.clear()


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the fused kernels serve these tensors: float32 on the CPU, kernels not turned off,
    built and checked, and threaded like PyTorch (a build without OpenMP only serves one thread)."""
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return False
    if requested() == "off":
        return False
    try:
        lib = library()
    except CpuKernelsUnavailable as exc:
        _log_once(f"DLGSANet: fused CPU kernels not used, PyTorch ops instead: {exc}")
        return False
    if not lib.dlg_openmp() and torch.get_num_threads() > 1:
        _log_once("DLGSANet: fused CPU kernels built without OpenMP; PyTorch ops used while it has "
                  f"{torch.get_num_threads()} threads", logging.INFO)
        return False
    return True


def _ptr(t: Optional[torch.Tensor]) -> Optional[int]:
    return None if t is None else t.data_ptr()


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise ValueError(f"fused CPU kernel: {what}")


def dynamic_conv(x: torch.Tensor, x_offset: int, hyper: torch.Tensor, hyper_offset: int, weight: torch.Tensor,
                 bias: Optional[torch.Tensor], rows: int, kernel_size: int,
                 out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """MHDLSA's dynamic depth-wise conv of ``rows`` output rows, per-pixel kernels made inside.

    ``x``: ``[B, C, Hx, W]`` input planes, output row y centred on x row ``y + x_offset`` (rows
    outside ``x`` are the image's zero padding); ``hyper``: ``[B, R, Hh, W]`` hyper-network
    features, output row y uses row ``y + hyper_offset``; ``weight`` ``[G*K*K, R]`` and ``bias``
    ``[G*K*K]``: the hyper-network's last 1x1 conv. Returns ``[B, C, rows, W]`` (into ``out``).
    """
    b, c, hx, w = x.shape
    _, r, hh, _ = hyper.shape
    taps = kernel_size * kernel_size
    groups = weight.shape[0] // taps
    _require(x.is_contiguous() and hyper.is_contiguous() and weight.is_contiguous(), "inputs must be contiguous")
    _require(hyper.shape[0] == b and hyper.shape[3] == w and weight.shape[1] == r and groups * taps == weight.shape[0]
             and groups > 0 and c % groups == 0,
             f"shapes x {tuple(x.shape)}, hyper {tuple(hyper.shape)}, weight {tuple(weight.shape)} do not fit")
    _require(0 <= hyper_offset and hyper_offset + rows <= hh, "hyper rows do not cover the output rows")
    if out is None:
        out = x.new_empty(b, c, rows, w)
    _require(out.is_contiguous() and tuple(out.shape) == (b, c, rows, w), "bad output buffer")
    if bias is not None:
        bias = bias.contiguous()
    with record_function("dlgsanet::dynamic_conv"):  # named in torch.profiler tables
        status = library().dlg_dynamic_conv(_ptr(x), hx, x_offset, _ptr(hyper), hh, hyper_offset, _ptr(weight),
                                            _ptr(bias), _ptr(out), b, c, groups, kernel_size, r, rows, w,
                                            torch.get_num_threads())
    _require(status == 0, f"dlg_dynamic_conv failed with status {status}")
    return out


def taps_major(weight: torch.Tensor) -> torch.Tensor:
    """A 3x3 depth-wise weight ``[C, 1, 3, 3]`` as ``[9, C]`` (the kernels' layout)."""
    return weight.reshape(weight.shape[0], 9).t().contiguous()


def _pixel_stride(t: torch.Tensor) -> int:
    """Floats from one pixel to the next of a channels-last ``[B, H, W, C]`` map whose pixels may
    carry more channels than ``C`` (a channel slice of a wider map); checks the other strides."""
    b, h, w, c = t.shape
    ld = t.stride(2)
    _require(t.stride(3) == 1 and ld >= c and t.stride(1) == w * ld and (b == 1 or t.stride(0) == h * w * ld),
             f"map strides {t.stride()} are not channels-last rows of whole pixels")
    return ld


def dwconv3x3(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], rows: int, offset: int,
              out: torch.Tensor, value: Optional[torch.Tensor] = None, value_weight: Optional[torch.Tensor] = None,
              value_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Channels-last 3x3 depth-wise conv of a band: ``out`` rows i = 0..rows-1 centred on ``x``
    row ``i + offset`` (rows outside ``x`` are zero padding). With ``value``:
    ``GELU(dw(x)) * dw(value)`` (the feed-forward's gate). Weights as :func:`taps_major`.

    ``x`` and ``value`` may be channel slices of one wider map (same strides); ``out``:
    ``[B, rows, W, C]`` whose images may be spaced apart (a band of a larger map).
    """
    b, hx, w, c = x.shape
    ld = _pixel_stride(x)
    params = [weight] + [t for t in (bias, value_weight, value_bias) if t is not None]
    _require(all(t.is_contiguous() for t in params), "weights must be contiguous")
    _require(tuple(weight.shape) == (9, c), f"weight {tuple(weight.shape)} is not [9, {c}]")
    _require(value is None or (value.shape == x.shape and value.stride() == x.stride() and value_weight is not None
                               and tuple(value_weight.shape) == (9, c)), "value does not match")
    _require(tuple(out.shape) == (b, rows, w, c) and out.stride()[1:] == (w * c, c, 1), "bad output buffer")
    with record_function("dlgsanet::gated_dwconv3x3" if value is not None else "dlgsanet::dwconv3x3"):
        status = library().dlg_dwconv3x3(_ptr(x), _ptr(value), _ptr(weight), _ptr(value_weight), _ptr(bias),
                                         _ptr(value_bias), _ptr(out), b, hx, w, c, ld, rows, offset, out.stride(0),
                                         torch.get_num_threads())
    _require(status == 0, f"dlg_dwconv3x3 failed with status {status}")
    return out


def _self_check(lib: ctypes.CDLL) -> None:
    """Run both kernels once on small random inputs against the PyTorch ops (a miscompiled or
    mismatched library must never produce images)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 7, 11, generator=gen)                       # [B, H, W, C], odd sizes
    v = torch.randn(2, 5, 7, 11, generator=gen)
    wg, wv = torch.randn(11, 1, 3, 3, generator=gen), torch.randn(11, 1, 3, 3, generator=gen)
    bias = torch.randn(11, generator=gen)
    conv = lambda t, wt, bi: F.conv2d(t.permute(0, 3, 1, 2), wt, bi, padding=1, groups=11).permute(0, 2, 3, 1)
    expect = F.gelu(conv(x, wg, bias)) * conv(v, wv, None)
    got = torch.empty(2, 5, 7, 11)
    wg9, wv9 = taps_major(wg), taps_major(wv)  # kept alive across the call
    status = lib.dlg_dwconv3x3(x.data_ptr(), v.data_ptr(), wg9.data_ptr(), wv9.data_ptr(), bias.data_ptr(), None,
                               got.data_ptr(), 2, 5, 7, 11, 11, 5, 0, got.stride(0), 1)
    err = (got - expect).abs().max().item() if status == 0 else float("inf")
    # dynamic conv: G=2 groups of 3 channels, K=5, R=4, 6x70 (a partial second column block)
    planes = torch.randn(1, 6, 6, 70, generator=gen)
    hyper = torch.randn(1, 4, 6, 70, generator=gen)
    wk, bk = torch.randn(50, 4, generator=gen), torch.randn(50, generator=gen)
    kernels = (torch.einsum("tr,brp->btp", wk, hyper.view(1, 4, -1)) + bk.view(1, -1, 1)).view(1, 2, 5, 5, 6, 70)
    from .dynamic_dwconv_torch import dynamic_dwconv_torch
    expect2 = dynamic_dwconv_torch(planes, kernels)
    got2 = torch.empty(1, 6, 6, 70)
    status2 = lib.dlg_dynamic_conv(planes.data_ptr(), 6, 0, hyper.data_ptr(), 6, 0, wk.data_ptr(), bk.data_ptr(),
                                   got2.data_ptr(), 1, 6, 2, 5, 4, 6, 70, 1)
    err2 = (got2 - expect2).abs().max().item() if status2 == 0 else float("inf")
    if not (err < 1e-4 and err2 < 1e-4):
        raise CpuKernelsUnavailable(f"self-check failed (max error {err:.3g} / {err2:.3g}, status {status} / {status2})")


__all__ = ["CpuKernelsUnavailable", "usable", "library", "reset", "dynamic_conv", "dwconv3x3", "taps_major",
           "requested", "compiler", "cache_dir", "build", "source_path", "flag_sets", "ENV_VAR"]
