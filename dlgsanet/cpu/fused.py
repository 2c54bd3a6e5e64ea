"""Fused CPU kernels (``kernels/cpu_fused.cpp``): whether to use them, the calls, their self-check.

Why compiled kernels: on a CPU the network's GEMMs run near the roof, and what is left is memory
traffic between separate PyTorch ops. MHDLSA's per-pixel kernels are the largest tensor of the
model, written by one GEMM and read back by K*K multiply-adds; the feed-forward's 4*dim-channel
intermediate is written by its expand GEMM and read by the depth-wise conv, GELU and gate. The
C++ kernels make the per-pixel kernels of a few dozen pixels at a time in L1 and filter with them
at once, and run the whole feed-forward (and SparseGSA's qkv 1x1 + depth-wise conv) three rows at
a time with their own GEMM micro-kernel, so those intermediates never reach memory; SparseGSA's
windowed attention reads its windows in place, and MHDLSA's 1x1 convs around the dynamic conv
take the LayerNorm and the residual in (figures: ``docs/performance.md``). Building, caching
(``$DLGSANET_CACHE_DIR``) and binding are :mod:`dlgsanet.ops.native`'s job.

Choice: ``DLGSANET_CPU_KERNELS=auto`` (default) uses the kernels for float32 CPU inference when
they build, load and pass a self-check against the PyTorch ops; ``off`` never builds or uses
them. Every reason the kernels are not used is logged once, in one line, and inference goes on
with the PyTorch ops, which compute the same function (within float rounding).
"""
from __future__ import annotations

import ctypes
import logging
import time
from contextlib import contextmanager
from typing import Iterator, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch.profiler import record_function

from ..ops import native
from ..ops.native import CACHE_ENV_VAR
from ..ops.optional import OnceLog, Unavailable, env_choice

ENV_VAR = "DLGSANET_CPU_KERNELS"
CHOICES = ("auto", "off")
#: Other spellings users write for the two choices.
ALIASES = {"0": "off", "no": "off", "false": "off", "torch": "off", "on": "auto", "1": "auto", "yes": "auto",
           "true": "auto"}
SOURCE_NAME = "cpu_fused.cpp"
ABI_VERSION = 2

_p, _i, _i64, _f = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_float
#: The library's functions: (restype, argtypes) as in ``kernels/cpu_fused.cpp``.
SIGNATURES = {
    "dlg_abi_version": (_i, []),
    "dlg_openmp": (_i, []),
    "dlg_dynamic_conv": (_i, [_p, _i, _i, _p, _i, _i, _p, _p, _p] + [_i] * 8),
    "dlg_gdfn": (_i, [_p, _p, _p, _f] + [_p] * 7 + [_i] * 6),
    "dlg_conv1x1_dw3x3": (_i, [_p, _p, _p, _f] + [_p] * 4 + [_i] * 6),
    "dlg_window_attention": (_i, [_p] * 6 + [_i, _p] + [_i] * 9),
    "dlg_mhdlsa_in": (_i, [_p, _i64, _p, _p, _f] + [_p] * 5 + [_i] * 5),
    "dlg_mhdlsa_out": (_i, [_p] * 4 + [_i64] + [_i] * 4),
}

logger = logging.getLogger(__name__)
_log_once = OnceLog(logger)


class CpuKernelsUnavailable(Unavailable):
    """The fused CPU kernels cannot be used here; ``str(error)`` is the one-line reason."""


def requested() -> str:
    """``auto`` or ``off`` from ``$DLGSANET_CPU_KERNELS`` (an unknown value counts as auto)."""
    return env_choice(ENV_VAR, CHOICES, _log_once, ALIASES)


def _load() -> ctypes.CDLL:
    start = time.perf_counter()
    lib, path = native.load(SOURCE_NAME, SIGNATURES, ABI_VERSION)
    if lib.dlg_abi_version() != ABI_VERSION:
        raise CpuKernelsUnavailable(f"{path.name} has ABI {lib.dlg_abi_version()}, expected {ABI_VERSION}")
    _self_check(lib)
    logger.info("DLGSANet: fused CPU kernels ready (%s, OpenMP %s) in %.1f s", path.name,
                "on" if lib.dlg_openmp() else "off", time.perf_counter() - start)
    return lib


_library = native.LoadedOnce(_load, CpuKernelsUnavailable)


def library() -> ctypes.CDLL:
    """The loaded kernels (built and self-checked on first call); raises CpuKernelsUnavailable."""
    return _library.get()


def reset() -> None:
    """Forget the loaded library and logged reasons (tests; a host after installing a compiler)."""
    _library.reset()
    _log_once.reset()


#: The kernels, by the name the network asks for them with.
KERNELS = ("dynamic_conv", "mhdlsa_in_out", "gdfn", "conv1x1_dw3x3", "window_attention")
_withheld: set = set()


@contextmanager
def withheld(*names: str) -> Iterator[None]:
    """Within this block (this process), the named kernels are not used: the network takes its
    PyTorch ops for those parts. For benchmarks that show what each kernel buys."""
    unknown = set(names) - set(KERNELS)
    if unknown:
        raise ValueError(f"unknown kernels {sorted(unknown)}; known: {', '.join(KERNELS)}")
    before = set(_withheld)
    _withheld.update(names)
    try:
        yield
    finally:
        _withheld.clear()
        _withheld.update(before)


def usable(*tensors: torch.Tensor, kernel: Optional[str] = None) -> bool:
    """Whether the fused kernels (or the one named ``kernel``) serve these tensors: float32 on the
    CPU, kernels not turned off (or withheld), built and checked, and threaded like PyTorch (a build
    without OpenMP only serves one thread)."""
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors) or kernel in _withheld:
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


Norm = Optional[Tuple[torch.Tensor, torch.Tensor, float]]


def _norm_args(norm: Norm, channels: int) -> tuple:
    """ctypes arguments of a LayerNorm ``(weight, bias, eps)`` over ``channels``, or of none."""
    if norm is None:
        return None, None, 0.0
    weight, bias, eps = norm
    _require(weight.is_contiguous() and bias.is_contiguous() and weight.shape == (channels,)
             and bias.shape == (channels,), f"LayerNorm parameters must be [{channels}] and contiguous")
    return _ptr(weight), _ptr(bias), float(eps)


def gdfn(x: torch.Tensor, residual: torch.Tensor, out: torch.Tensor, project_in: torch.Tensor,
         dw_weight: torch.Tensor, dw_bias: Optional[torch.Tensor], project_out: torch.Tensor,
         out_bias: Optional[torch.Tensor], norm: Norm = None) -> torch.Tensor:
    """The whole feed-forward in one pass: ``out = residual + W_out (GELU(dw(gate)) * dw(value))``
    with ``[gate; value] = W_in LN(x)``, all channels-last ``[B, H, W, C]``; ``norm``: the
    LayerNorm's ``(weight, bias, eps)``, or None when ``x`` is normalised already. Weights in
    PyTorch's layouts: ``project_in`` ``[2h, C, 1, 1]``, ``dw_weight`` ``[2h, 1, 3, 3]``,
    ``project_out`` ``[C, h, 1, 1]``. ``out`` must not be ``x`` (it may be ``residual`` otherwise)."""
    b, hgt, w, c = x.shape
    hidden = project_out.shape[1]
    tensors = [x, residual, out, project_in, dw_weight, project_out] + [t for t in (dw_bias, out_bias) if t is not None]
    _require(all(t.is_contiguous() for t in tensors), "inputs must be contiguous")
    _require(residual.shape == x.shape and out.shape == x.shape, "residual and output must be shaped like x")
    _require(out.data_ptr() != x.data_ptr(), "the output must not be the input")
    _require(tuple(project_in.shape[:2]) == (2 * hidden, c) and tuple(dw_weight.shape) == (2 * hidden, 1, 3, 3)
             and tuple(project_out.shape[:2]) == (c, hidden),
             f"weights {tuple(project_in.shape)}, {tuple(dw_weight.shape)}, {tuple(project_out.shape)} do not fit "
             f"{c} channels")
    with record_function("dlgsanet::gdfn"):
        status = library().dlg_gdfn(_ptr(x), *_norm_args(norm, c), _ptr(residual), _ptr(out), _ptr(project_in),
                                    _ptr(dw_weight), _ptr(dw_bias), _ptr(project_out), _ptr(out_bias), b, hgt, w,
                                    c, hidden, torch.get_num_threads())
    _require(status == 0, f"dlg_gdfn failed with status {status}")
    return out


def conv1x1_dw3x3(x: torch.Tensor, weight: torch.Tensor, dw_weight: torch.Tensor, dw_bias: Optional[torch.Tensor],
                  out: torch.Tensor, norm: Norm = None) -> torch.Tensor:
    """A 1x1 conv (``weight`` ``[N, C, 1, 1]``, no bias) then a 3x3 depth-wise conv (``dw_weight``
    ``[N, 1, 3, 3]``, zero padding) of ``LN(x)``, ``x`` a channels-last ``[B, H, W, C]`` map, in one
    pass, into ``out`` ``[B, H, W, N]`` (SparseGSA's qkv); the 1x1 conv's output never reaches
    memory. ``norm`` as in :func:`gdfn`."""
    b, hgt, w, c = x.shape
    n = weight.shape[0]
    tensors = [x, out, weight, dw_weight] + ([dw_bias] if dw_bias is not None else [])
    _require(all(t.is_contiguous() for t in tensors), "inputs must be contiguous")
    _require(tuple(weight.shape[:2]) == (n, c) and tuple(dw_weight.shape) == (n, 1, 3, 3)
             and tuple(out.shape) == (b, hgt, w, n),
             f"weights {tuple(weight.shape)}, {tuple(dw_weight.shape)} or output {tuple(out.shape)} do not fit "
             f"input {tuple(x.shape)}")
    with record_function("dlgsanet::conv1x1_dw3x3"):
        status = library().dlg_conv1x1_dw3x3(_ptr(x), *_norm_args(norm, c), _ptr(out), _ptr(weight),
                                             _ptr(dw_weight), _ptr(dw_bias), b, hgt, w, c, n, torch.get_num_threads())
    _require(status == 0, f"dlg_conv1x1_dw3x3 failed with status {status}")
    return out


def window_attention(qkv: torch.Tensor, residual: torch.Tensor, out: torch.Tensor, temperature: torch.Tensor,
                     project_out: torch.Tensor, row_starts: Sequence[int], col_starts: Sequence[int],
                     window: Tuple[int, int]) -> torch.Tensor:
    """SparseGSA's attention on its TLC windows in one call: ``out = residual + (sum over the
    windows covering a pixel of W_out A_w v) / their count``, with ``A_w`` the heads' sparse
    attention maps ReLU(q k^T / (|q| |k|^T) * temperature) of window w. ``qkv``: ``[B, H, W, 3C]``;
    windows: ``row_starts x col_starts``, each ``window = (height, width)``; ``temperature``:
    ``[heads, 1, 1]``; ``project_out``: ``[C, C, 1, 1]``; ``out`` may be ``residual``."""
    b, hgt, w, c3 = qkv.shape
    c, heads = c3 // 3, temperature.numel()
    _require(all(t.is_contiguous() for t in (qkv, residual, out, temperature, project_out)),
             "inputs must be contiguous")
    _require(c3 == 3 * c and heads > 0 and c % heads == 0 and tuple(project_out.shape[:2]) == (c, c)
             and residual.shape == (b, hgt, w, c) and out.shape == residual.shape,
             f"qkv {tuple(qkv.shape)}, residual {tuple(residual.shape)} or weights do not fit")
    wh, ww = window
    _require(all(0 <= r and r + wh <= hgt for r in row_starts) and all(0 <= s and s + ww <= w for s in col_starts)
             and len(row_starts) > 0 and len(col_starts) > 0, "windows must lie inside the map")
    rows = (ctypes.c_int * len(row_starts))(*row_starts)
    cols = (ctypes.c_int * len(col_starts))(*col_starts)
    with record_function("dlgsanet::window_attention"):
        status = library().dlg_window_attention(_ptr(qkv), _ptr(residual), _ptr(out), _ptr(temperature),
                                                _ptr(project_out), rows, len(row_starts), cols, len(col_starts),
                                                wh, ww, b, hgt, w, c, heads, torch.get_num_threads())
    _require(status == 0, f"dlg_window_attention failed with status {status}")
    return out


def _pixel_rows(t: torch.Tensor) -> int:
    """The batch stride of a channels-last ``[B, H, W, C]`` map whose images are contiguous rows of
    whole pixels (a band of rows of a larger map qualifies); raises otherwise."""
    b, h, w, c = t.shape
    rows = all(t.stride(d) == step for d, step in ((1, w * c), (2, c), (3, 1)) if t.shape[d] > 1)
    _require(rows, f"map strides {t.stride()} are not rows of whole pixels")
    return t.stride(0) if b > 1 else h * w * c


def mhdlsa_in(x: torch.Tensor, conv0: torch.Tensor, reduce: torch.Tensor, reduce_bias: Optional[torch.Tensor],
              planes: torch.Tensor, hyper: torch.Tensor, norm: Norm = None) -> None:
    """MHDLSA's way in for a band: ``planes = W0 LN(x)`` and ``hyper = W_r planes + b_r`` as channel
    planes, from the channels-last band ``x`` ``[B, rows, W, C]`` (a view of rows of the block's
    input). ``conv0`` ``[C, C, 1, 1]``, ``reduce`` ``[R, C, 1, 1]``; ``planes`` ``[B, C, rows*W]``,
    ``hyper`` ``[B, R, rows*W]``, contiguous. ``norm`` as in :func:`gdfn`."""
    b, rows, w, c = x.shape
    r = reduce.shape[0]
    stride = _pixel_rows(x)
    _require(all(t.is_contiguous() for t in (conv0, reduce, planes, hyper))
             and (reduce_bias is None or reduce_bias.is_contiguous()), "weights and outputs must be contiguous")
    _require(tuple(conv0.shape[:2]) == (c, c) and tuple(reduce.shape[:2]) == (r, c)
             and tuple(planes.shape) == (b, c, rows * w) and tuple(hyper.shape) == (b, r, rows * w),
             f"weights {tuple(conv0.shape)}, {tuple(reduce.shape)} or outputs do not fit {c} channels")
    with record_function("dlgsanet::mhdlsa_in"):
        status = library().dlg_mhdlsa_in(_ptr(x), stride, *_norm_args(norm, c), _ptr(conv0), _ptr(reduce),
                                         _ptr(reduce_bias), _ptr(planes), _ptr(hyper), b, rows * w, c, r,
                                         torch.get_num_threads())
    _require(status == 0, f"dlg_mhdlsa_in failed with status {status}")


def mhdlsa_out(acc: torch.Tensor, conv1: torch.Tensor, residual: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """MHDLSA's way out: ``out = residual + W1 acc`` back to channels-last. ``acc``: ``[B, C, rows,
    W]`` channel planes; ``conv1`` ``[C, C, 1, 1]``; ``residual``, ``out``: ``[B, rows, W, C]`` views of
    rows of larger maps with the same strides (``out`` may be ``residual``)."""
    b, c, rows, w = acc.shape
    stride = _pixel_rows(out)
    _require(acc.is_contiguous() and conv1.is_contiguous() and tuple(conv1.shape[:2]) == (c, c)
             and tuple(out.shape) == (b, rows, w, c) and residual.shape == out.shape
             and _pixel_rows(residual) == stride, "acc, weight, residual and output do not fit")
    with record_function("dlgsanet::mhdlsa_out"):
        status = library().dlg_mhdlsa_out(_ptr(acc), _ptr(conv1), _ptr(residual), _ptr(out), stride, b, rows * w, c,
                                          torch.get_num_threads())
    _require(status == 0, f"dlg_mhdlsa_out failed with status {status}")
    return out


def _self_check(lib: ctypes.CDLL) -> None:
    """Run every kernel once on small random inputs against PyTorch ops (a miscompiled or
    mismatched library must never produce images)."""
    gen = torch.Generator().manual_seed(0)
    errors, statuses = [], []
    # feed-forward with its LayerNorm: 11 channels, hidden 13 (padded inside), 2 images of 5x7, all biases
    x, res = torch.randn(2, 5, 7, 11, generator=gen), torch.randn(2, 5, 7, 11, generator=gen)
    ln_w, ln_b = torch.randn(11, generator=gen), torch.randn(11, generator=gen)
    w_in, w_dw = torch.randn(26, 11, 1, 1, generator=gen) * 0.3, torch.randn(26, 1, 3, 3, generator=gen) * 0.3
    b_dw, w_out = torch.randn(26, generator=gen), torch.randn(11, 13, 1, 1, generator=gen) * 0.3
    b_out = torch.randn(11, generator=gen)
    normed = F.layer_norm(x, (11,), ln_w, ln_b, 1e-5).permute(0, 3, 1, 2)
    t = F.conv2d(F.conv2d(normed, w_in), w_dw, b_dw, padding=1, groups=26)
    expect = res + F.conv2d(F.gelu(t[:, :13]) * t[:, 13:], w_out, b_out).permute(0, 2, 3, 1)
    got = torch.empty_like(res)
    statuses.append(lib.dlg_gdfn(x.data_ptr(), ln_w.data_ptr(), ln_b.data_ptr(), 1e-5, res.data_ptr(), got.data_ptr(),
                                 w_in.data_ptr(), w_dw.data_ptr(), b_dw.data_ptr(), w_out.data_ptr(), b_out.data_ptr(),
                                 2, 5, 7, 11, 13, 1))
    errors.append((got - expect).abs().max().item())
    # 1x1 then depth-wise conv into 21 channels (a channel tail)
    w1, wd = torch.randn(21, 11, 1, 1, generator=gen) * 0.3, torch.randn(21, 1, 3, 3, generator=gen)
    expect = F.conv2d(F.conv2d(x.permute(0, 3, 1, 2), w1), wd, None, padding=1, groups=21).permute(0, 2, 3, 1)
    got = torch.empty(2, 5, 7, 21)
    statuses.append(lib.dlg_conv1x1_dw3x3(x.data_ptr(), None, None, 0.0, got.data_ptr(), w1.data_ptr(), wd.data_ptr(),
                                          None,
                                          2, 5, 7, 11, 21, 1))
    errors.append((got - expect).abs().max().item())
    # window attention: 8 channels in 2 heads, two overlapping 4x5 windows of a 6x5 map
    qkv, res = torch.randn(1, 6, 5, 24, generator=gen), torch.randn(1, 6, 5, 8, generator=gen)
    temp, w_p = torch.rand(2, 1, 1, generator=gen) + 0.5, torch.randn(8, 8, 1, 1, generator=gen) * 0.3
    total = torch.zeros(6, 5, 8)
    for r in (0, 2):
        q, k, v = qkv[0, r:r + 4].reshape(20, 24).split(8, dim=1)
        q, k = F.normalize(q, dim=0).view(20, 2, 4), F.normalize(k, dim=0).view(20, 2, 4)
        attn = torch.relu(torch.einsum("phi,phj->hij", q, k) * temp)                # [heads, 4, 4]
        total[r:r + 4] += (torch.einsum("hij,phj->phi", attn, v.view(20, 2, 4)).reshape(20, 8)
                           @ w_p.view(8, 8).t()).view(4, 5, 8)
    expect = res + total / torch.tensor([1.0, 1, 2, 2, 1, 1]).view(6, 1, 1)
    got = torch.empty_like(res)
    rows, cols = (ctypes.c_int * 2)(0, 2), (ctypes.c_int * 1)(0)
    statuses.append(lib.dlg_window_attention(qkv.data_ptr(), res.data_ptr(), got.data_ptr(), temp.data_ptr(),
                                             w_p.data_ptr(), rows, 2, cols, 1, 4, 5, 1, 6, 5, 8, 2, 1))
    errors.append((got - expect).abs().max().item())
    # MHDLSA's way in and out: 8 channels, 3 reduced, 70 pixels (a partial second block)
    band = torch.randn(1, 7, 10, 8, generator=gen)
    ln_w8, ln_b8 = torch.rand(8, generator=gen) + 0.5, torch.randn(8, generator=gen)
    w0, wr, br = torch.randn(8, 8, generator=gen), torch.randn(3, 8, generator=gen), torch.randn(3, generator=gen)
    planes, hyper = torch.empty(1, 8, 70), torch.empty(1, 3, 70)
    expect = w0 @ F.layer_norm(band, (8,), ln_w8, ln_b8, 1e-5).view(70, 8).t()
    statuses.append(lib.dlg_mhdlsa_in(band.data_ptr(), 560, ln_w8.data_ptr(), ln_b8.data_ptr(), 1e-5, w0.data_ptr(),
                                      wr.data_ptr(), br.data_ptr(), planes.data_ptr(), hyper.data_ptr(),
                                      1, 70, 8, 3, 1))
    errors.append(max((planes[0] - expect).abs().max().item(),
                      (hyper[0] - wr @ expect - br.view(3, 1)).abs().max().item()))
    got = torch.empty(1, 7, 10, 8)
    statuses.append(lib.dlg_mhdlsa_out(planes.data_ptr(), w0.data_ptr(), band.data_ptr(), got.data_ptr(), 560,
                                       1, 70, 8, 1))
    errors.append((got - band - (w0 @ planes[0]).t().reshape(1, 7, 10, 8)).abs().max().item())
    # dynamic conv: G=2 groups of 3 channels, K=5, R=4, 6x70 (a partial second column block)
    planes = torch.randn(1, 6, 6, 70, generator=gen)
    hyper = torch.randn(1, 4, 6, 70, generator=gen)
    wk, bk = torch.randn(50, 4, generator=gen), torch.randn(50, generator=gen)
    kernels = (torch.einsum("tr,brp->btp", wk, hyper.view(1, 4, -1)) + bk.view(1, -1, 1)).view(1, 2, 5, 5, 6, 70)
    from ..ops.dynamic_dwconv.torch_backend import dynamic_dwconv_torch
    expect = dynamic_dwconv_torch(planes, kernels)
    got = torch.empty(1, 6, 6, 70)
    statuses.append(lib.dlg_dynamic_conv(planes.data_ptr(), 6, 0, hyper.data_ptr(), 6, 0, wk.data_ptr(),
                                         bk.data_ptr(), got.data_ptr(), 1, 6, 2, 5, 4, 6, 70, 1))
    errors.append((got - expect).abs().max().item())
    if any(statuses) or not all(err < 1e-4 for err in errors):
        raise CpuKernelsUnavailable(f"self-check failed (max errors {', '.join(f'{e:.3g}' for e in errors)}; "
                                    f"status {statuses})")


__all__ = ["CpuKernelsUnavailable", "usable", "withheld", "KERNELS", "library", "reset", "dynamic_conv", "gdfn",
           "conv1x1_dw3x3", "window_attention", "mhdlsa_in", "mhdlsa_out", "requested", "ENV_VAR", "CACHE_ENV_VAR"]
