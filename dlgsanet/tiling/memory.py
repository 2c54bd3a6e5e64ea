"""Tile-size policy, in one place: the automatic tile size from the memory that is free on the
compute device, the halving after an out-of-memory error, and what counts as one.

Why an estimate rather than trial and error: an out-of-memory error on CUDA is recoverable
(the engine halves the tile and retries), but on the CPU the operating system usually kills
the process instead. So the tile is sized up front from free memory and a per-pixel cost of
the network, and out-of-memory retries remain a safety net for CUDA.

The per-pixel cost comes from the widest activations alive at the peak of a forward pass:
the per-pixel kernels of the dynamic convolution (K*K*G channels), the GDFN hidden map and
the TLC attention windows, see :func:`bytes_per_pixel`. It was calibrated against measured
peak memory (``benchmarks/bench_tiling.py --calibrate``; figures in docs/tiling.md).
"""
from __future__ import annotations

import math
import os
from typing import Callable, Optional, Sequence, Union

import torch

from .settings import TileSettings

#: What a host passes as ``oom_types``: exception classes, or predicates on the exception.
OomHint = Union[type, Callable[[BaseException], bool]]

#: Share of the free memory a tile may use. CUDA memory is ours to take (other tenants are
#: protected by the retry); RAM is shared with the whole desktop, so take less.
CUDA_FRACTION = 0.8
CPU_FRACTION = 0.5
#: Kept free on top of the fraction: CUDA context, cuDNN/cuBLAS workspaces, allocator slack.
CUDA_RESERVE = 384 * 2**20
CPU_RESERVE = 1024 * 2**20
#: Measured peak / counted live channels on the CPU (allocator caching, oneDNN layout copies;
#: figures in docs/tiling.md, "Peak memory").
ALLOCATOR_OVERHEAD = 1.8
#: Margin on top of the measured figure.
SAFETY = 1.25
#: How much the overlapping TLC windows enlarge the attention maps (1.0-1.5, typically ~1.3).
TLC_OVERLAP = 1.3
#: Tiles are multiples of this many input pixels (keeps shapes friendly to kernels and caches).
TILE_MULTIPLE = 8


def _cpu_available_bytes() -> Optional[int]:
    """Available RAM (what can be allocated without swapping), from psutil or /proc/meminfo."""
    try:
        import psutil  # optional; not a dependency
        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - psutil missing or broken: fall back to /proc
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:  # other POSIX systems: free physical pages
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def free_memory(device: torch.device) -> Optional[int]:
    """Bytes that a forward pass on ``device`` may still allocate, or None when unknown.

    CUDA counts memory cached by PyTorch's allocator but not in use as free, because the
    allocator hands it out again before asking the driver.
    """
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        free, _total = torch.cuda.mem_get_info(index)
        cached = torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index)
        return int(free + max(cached, 0))
    if device.type == "cpu":
        return _cpu_available_bytes()
    if device.type == "mps":
        try:
            return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
        except (AttributeError, RuntimeError):
            return None
    return None


def memory_budget(device: torch.device, free: Optional[int] = None) -> Optional[int]:
    """Bytes one tile's forward pass may use on ``device`` (None when free memory is unknown)."""
    device = torch.device(device)
    free = free_memory(device) if free is None else free
    if free is None:
        return None
    if device.type == "cpu":
        return max(0, int(free * CPU_FRACTION) - CPU_RESERVE)
    return max(0, int(free * CUDA_FRACTION) - CUDA_RESERVE)


def live_channels(model: torch.nn.Module) -> float:
    """Feature channels alive together at the peak of an eval forward pass, per input pixel.

    Local block: input, its norm, conv0, padded copy, accumulator and one product (6*dim) plus
    the per-pixel kernels (K*K*G). Global block: input and norm, qkv after its depth-wise conv,
    the TLC window copy and its reshape (3*dim each, times ~1.3 for overlapping windows), the
    normalised q and k and the output windows. GDFN: 2*dim + 5*hidden. Upsampling: 3*s^2 four
    times. Models that are not DLGSANet (no ``config``) get a generous generic figure.
    """
    cfg = getattr(model, "config", None)
    scale = int(getattr(model, "scale", 4) or 4)
    if cfg is None or not all(hasattr(cfg, a) for a in ("dim", "window", "kernel_groups")):
        return 2048.0 + 12 * scale * scale
    dim, k, g = cfg.dim, cfg.window, cfg.kernel_groups
    hidden = int(dim * getattr(cfg, "ffn_expansion", 2.0))
    dup = TLC_OVERLAP
    local = 6 * dim + k * k * g
    glob = 2 * dim + 3 * dim + dup * (2 * 3 * dim + 2 * dim + dim)
    ffn = 2 * dim + 5 * hidden
    upsample = 2 * dim + 4 * 3 * scale * scale
    return float(max(local, glob, ffn, upsample))


def bytes_per_pixel(model: torch.nn.Module, dtype: torch.dtype = torch.float32) -> float:
    """Estimated peak bytes per INPUT pixel of one eval forward pass, safety margin included."""
    elt = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4
    return float(elt * live_channels(model) * ALLOCATOR_OVERHEAD * SAFETY)


def largest_tile(budget: int, per_pixel: float) -> int:
    """Largest square tile side (a multiple of TILE_MULTIPLE, at least TILE_MULTIPLE) within budget."""
    side = int(math.isqrt(max(int(budget / max(per_pixel, 1e-9)), 0)))
    return max(TILE_MULTIPLE, side - side % TILE_MULTIPLE)


def auto_tile_size(model: torch.nn.Module, height: int, width: int, *, device: torch.device,
                   dtype: torch.dtype = torch.float32, budget: Optional[int] = None,
                   reserved: int = 0) -> Optional[int]:
    """The tile side for an image, or None when the whole image fits in memory at once.

    ``budget`` overrides the measured budget (bytes); ``reserved`` is subtracted from it (the
    output buffer when it lives on the compute device). Unknown free memory -> whole image,
    as the host would do without us.
    """
    if budget is None:
        budget = memory_budget(device)
        if budget is None:
            return None
    budget = max(0, budget - reserved)
    per_pixel = bytes_per_pixel(model, dtype)
    if height * width * per_pixel <= budget:
        return None
    return largest_tile(budget, per_pixel)


def first_tile_size(tiles: TileSettings, model: torch.nn.Module, height: int, width: int, *,
                    device: torch.device, dtype: torch.dtype, reserved: int = 0) -> int:
    """The tile side to start an image of ``height`` x ``width`` (padded) input pixels with: the
    asked ``tiles.tile_size``, else the automatic size (the whole image when it fits), never
    below the smallest tile or at most the overlap."""
    if tiles.tile_size is not None:
        return tiles.tile_size
    auto = auto_tile_size(model, height, width, device=device, dtype=dtype, budget=tiles.memory_budget,
                          reserved=reserved)
    return max(height, width) if auto is None else max(auto, tiles.min_tile_size, tiles.overlap + 1)


def halved_tile_size(failed: int, tiles: TileSettings) -> Optional[int]:
    """The tile side to retry with after ``failed`` px tiles ran out of memory (kept a multiple
    of 8 from 16 on), or None when that would go below ``tiles``' smallest tile or overlap."""
    new = failed // 2
    new -= new % TILE_MULTIPLE if new >= 2 * TILE_MULTIPLE else 0
    if new < tiles.min_tile_size or new <= tiles.overlap:
        return None
    return new


def is_out_of_memory(exc: BaseException, oom_types: Sequence[OomHint] = ()) -> bool:
    """True for an accelerator out-of-memory error (CUDA, ROCm, MPS, XPU), or what a host says is
    one: ``oom_types`` holds exception classes and/or predicates (ComfyUI's ``is_oom``)."""
    types = tuple(hint for hint in oom_types if isinstance(hint, type))
    if isinstance(exc, (torch.OutOfMemoryError, *types)):
        return True
    # MPS and some torch builds raise a plain RuntimeError whose text says so.
    if type(exc) in (RuntimeError, getattr(torch, "AcceleratorError", RuntimeError)) and \
            "out of memory" in str(exc).lower():
        return True
    return any(hint(exc) for hint in oom_types if not isinstance(hint, type))

def whole_pass_bytes(model: torch.nn.Module, height: int, width: int, pad: int,
                     dtype: torch.dtype) -> int:
    """Working memory of one image run untiled in a batch: the padded input's activations plus
    its float32 output."""
    s = model.scale
    return (height + 2 * pad) * (width + 2 * pad) * bytes_per_pixel(model, dtype) + 4 * 3 * height * width * s * s


def whole_batch_fits(model: torch.nn.Module, batch: int, height: int, width: int, pad: int, *,
                     device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``batch`` images go through one untiled forward pass within the memory budget
    (unknown free memory: yes, as the host would do without us)."""
    budget = memory_budget(device)
    return budget is None or batch * whole_pass_bytes(model, height, width, pad, dtype) <= budget
