"""Building blocks shared by both attention blocks, on channels-last maps.

Inside the network, feature maps travel as ``[B, H, W, C]`` (channels last). Why: the channel
LayerNorm becomes PyTorch's fused ``layer_norm`` over a contiguous last dimension (no permute
copies), every 1x1 convolution becomes one GEMM over all pixels, the 3x3 convolutions run in
oneDNN's native NHWC layout, and the TLC windows are gathered as whole pixel rows. The
parameters stay ``nn.Conv2d`` / ``nn.LayerNorm`` modules with the official names and shapes;
only the way they are applied changes, never what they compute.

CPU inference additionally keeps the blocks' wide intermediates (4*dim channels in the
feed-forward, K*K*G per-pixel kernels, ...) out of memory. Where the fused C++ kernels of
``dlgsanet.cpu.fused`` build, the feed-forward and SparseGSA's qkv run in one pass each,
three rows at a time, and MHDLSA's per-pixel kernels are made and used a few pixels at a time.
Otherwise (and around MHDLSA's kernel) each block runs in bands of image rows
(:func:`row_bands`) with PyTorch ops, the same function: the intermediates are made and consumed
one band at a time, so they stay in cache and no image-sized buffer is allocated for them. A band
carries the few extra rows that its convolutions need on each side
(their "halo"); those rows are computed with the image's zero padding and thrown away, so every
kept row sees exactly the inputs it sees in a whole-image pass. Bands depend on the image width
only, never on the batch, so an image gets the same bits alone and in a batch.
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .cpu import fused as cpu_kernels

#: Floats per band of the feed-forward's hidden halves in CPU inference (512k = 2 MiB).
FFN_BAND_ELEMENTS = 1 << 19
#: Largest factor by which many threads enlarge the bands (the per-pixel kernel band then holds
#: at most 8 x 8 MiB).
MAX_BAND_SCALE = 8


def matrix(conv: nn.Conv2d) -> torch.Tensor:
    """The ``[out, in]`` matrix of a 1x1 convolution (a view of its weight)."""
    return conv.weight.view(conv.out_channels, conv.in_channels)


def _onednn(x: torch.Tensor) -> bool:
    # bf16 only where oneDNN has bf16 kernels (AVX-512 / AVX-NE-CONVERT); elsewhere F.conv2d copes
    return (x.device.type == "cpu" and torch.backends.mkldnn.enabled and torch.backends.mkldnn.is_available()
            and (x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and _onednn_bf16())))


def _onednn_bf16() -> bool:
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(probe is not None and probe())


def cpu_inference(x: torch.Tensor, module: nn.Module) -> bool:
    """Whether ``module`` may take its banded CPU inference path on ``x``: a CPU tensor and no
    autograd graph being recorded (buffers may then be reused and written in place)."""
    return x.device.type == "cpu" and inplace_ok(x, *module.parameters())


def inplace_ok(*tensors: torch.Tensor) -> bool:
    """Whether buffers may be reused in place: no autograd graph is being recorded for them."""
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def conv1x1(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """1x1 conv (``weight`` [out, in, 1, 1]) of a channels-last map: one GEMM over all pixels.

    On the CPU it goes to oneDNN (as a 1x1 convolution of the channels-last map), which beats
    MKL's sgemm on these skinny shapes on the machines measured (EPYC, AVX2, one core: 60 vs 37
    GFLOP/s for 90 -> 270 channels; never slower) with bit-identical results; elsewhere it is
    ``F.linear``.
    """
    if _onednn(x):
        y = torch.ops.aten.mkldnn_convolution(x.permute(0, 3, 1, 2), weight, bias, [0, 0], [1, 1], [1, 1], 1)
        return y.permute(0, 2, 3, 1).contiguous()  # no-op: oneDNN keeps channels_last
    return F.linear(x, weight.view(weight.shape[0], weight.shape[1]), bias)


def pointwise(x: torch.Tensor, conv: nn.Conv2d, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """1x1 conv of a channels-last map; ``residual +`` it when given (in place when allowed)."""
    y = conv1x1(x, conv.weight, conv.bias)
    if residual is None:
        return y
    return y.add_(residual) if inplace_ok(y, residual) else y + residual


def spatial(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A KxK (depth-wise or dense) conv of a channels-last map, result channels-last.

    ``[B,H,W,C].permute(0,3,1,2)`` is a ``channels_last`` NCHW tensor, which oneDNN convolves in
    its native layout and returns in the same layout, so no copy is made either way.

    On the CPU oneDNN is called directly: ``F.conv2d`` picks its algorithm from the input size,
    batch included (a single small image goes to a different kernel than a batch of them), which
    would make an image's result depend on what else is in its batch.
    """
    xc = x.permute(0, 3, 1, 2)
    if _onednn(x) and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple):
        y = torch.ops.aten.mkldnn_convolution(xc, conv.weight, conv.bias, list(conv.padding),
                                              list(conv.stride), list(conv.dilation), conv.groups)
    else:
        y = F.conv2d(xc, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    return y.permute(0, 2, 3, 1).contiguous()  # no-op when the backend kept channels_last


def depthwise(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
              padding: tuple[int, int]) -> torch.Tensor:
    """Depth-wise conv (``weight`` [C, 1, k, k]) of a channels-last map, result channels-last."""
    xc = x.permute(0, 3, 1, 2)
    if _onednn(x):
        y = torch.ops.aten.mkldnn_convolution(xc, weight, bias, list(padding), [1, 1], [1, 1], weight.shape[0])
    else:
        y = F.conv2d(xc, weight, bias, 1, padding, 1, weight.shape[0])
    return y.permute(0, 2, 3, 1).contiguous()


def row_bands(height: int, rows: int, halo: int) -> Iterator[tuple[int, int, int, int]]:
    """Bands ``[r0, r1)`` of at most ``rows`` rows, of near-equal heights (no thin last band),
    with their support ``[a0, a1)``: ``halo`` rows more on each side, clipped to the image."""
    bands = -(-height // max(1, rows))
    for i in range(bands):
        r0, r1 = i * height // bands, (i + 1) * height // bands
        yield r0, r1, max(0, r0 - halo), min(height, r1 + halo)


def band_rows(width: int, channels: int, budget: int, minimum: int = 8) -> int:
    """Rows per band so that a band of ``channels`` channels holds about ``budget`` floats, scaled
    by :func:`thread_band_scale` (at least ``minimum`` rows, so that the halo stays a small share
    of the work)."""
    return max(minimum, budget * thread_band_scale() // max(1, width * channels))


def thread_band_scale(threads: Optional[int] = None) -> int:
    """How much larger bands are with ``threads`` torch threads (default: the current count).

    The band budgets were tuned on one core, where a band's intermediates should stay in that
    core's cache. With more threads every op of a band is split between them, so each thread's
    share shrinks while the fork/join and oneDNN set-up cost per op stays: measured side by side
    on the 2-core box (docs/performance.md), 2 threads, medians: Tiny x4 at 128^2 0.594 s with
    one-core bands, 0.533 s with 4x larger ones; Large 4.369 s and 3.971 s. Capped so that memory
    stays bounded on many cores.
    """
    threads = torch.get_num_threads() if threads is None else threads
    return 1 if threads <= 1 else min(MAX_BAND_SCALE, 2 * threads)


class Workspace:
    """Large buffers reused by the blocks of one CPU inference pass.

    Why: a fresh buffer of a few MiB or more is mapped by the operating system page by page on
    first write; measured here, that costs about 0.8 ms per MiB (several times the arithmetic
    done on it), and the C library hands big freed blocks back to the system. Each block's
    output, the qkv map, the attention sum and the kernel bands are therefore taken from here:
    allocated once per forward pass and overwritten by every block.

    One workspace serves one forward pass (create it in ``forward``, never share it between
    threads).
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


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of each pixel (biased variance, eps 1e-5), channels-last input.

    The parameters live in ``body`` (an ``nn.LayerNorm``) so the official key names
    ``normX.body.weight`` / ``normX.body.bias`` load unchanged.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.LayerNorm(dim, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_layer_norm(x, self.body.weight, self.body.bias, self.body.eps)


#: On CUDA, LayerNorms over at most this many channels take :func:`layer_norm_by_reductions`.
CUDA_REDUCTION_LAYER_NORM_CHANNELS = 256


def channel_layer_norm(x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                       eps: float) -> torch.Tensor:
    """LayerNorm over the last dimension of a channels-last map.

    ``F.layer_norm`` everywhere, except in CUDA inference over few channels. PyTorch's CUDA kernel
    gives each pixel (row) a thread block of its own; unless the row splits into 4-element vectors
    it takes a slower kernel still. For DLGSANet's widths on an H200, a 512x512 map, float32:
    0.40 ms at 48 channels, 1.44 ms at 90 (any dtype: 90 does not split), which was 41 % of
    Large's whole forward pass. One row-wise ``var_mean`` plus element-wise ops take 0.27 and
    0.37 ms (float32) and 0.48 ms (16-bit, 90 channels); only 16-bit maps of a multiple of 4
    channels stay on PyTorch's kernel, which is 10 % faster there (0.30 against 0.34 ms at 48).
    ``benchmarks/bench_cuda.py`` measures both paths side by side.
    """
    c = x.shape[-1]
    if (x.device.type == "cuda" and 0 < c <= CUDA_REDUCTION_LAYER_NORM_CHANNELS
            and (x.dtype in (torch.float32, torch.float64) or c % 4)
            and weight is not None and bias is not None and inplace_ok(x, weight, bias)):
        return layer_norm_by_reductions(x, weight, bias, eps)
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps)


def layer_norm_by_reductions(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """``F.layer_norm(x, x.shape[-1:], weight, bias, eps)`` as one ``var_mean`` and element-wise
    ops (no autograd: they work in place). Statistics and arithmetic are float32 for 16-bit
    inputs, rounded once at the end as the fused kernel does: a mean rounded to bfloat16 would
    shift every value of its row."""
    wide = x if x.dtype in (torch.float32, torch.float64) else x.float()
    var, mean = torch.var_mean(wide, dim=-1, keepdim=True, correction=0)
    y = torch.sub(wide, mean).mul_(var.add_(eps).rsqrt_())
    y = torch.addcmul(bias.to(y.dtype), y, weight.to(y.dtype), out=y)
    return y if y.dtype == x.dtype else y.to(x.dtype)


def layer_norm_params(norm: nn.Module) -> Optional[tuple[torch.Tensor, torch.Tensor, float]]:
    """``(weight, bias, eps)`` of a :class:`ChannelLayerNorm`, for the fused kernels that apply
    it themselves; None for any other ``norm`` (which is then applied first)."""
    if isinstance(norm, ChannelLayerNorm) and norm.body.weight is not None and norm.body.bias is not None:
        return norm.body.weight, norm.body.bias, norm.body.eps
    return None


class GDFN(nn.Module):
    """Gated-Dconv feed-forward network (Restormer): 1x1 expand, 3x3 depth-wise, GELU gate, 1x1.

    ``forward(x, residual)`` returns ``residual + GDFN(x)``; channels-last in and out. In CPU
    inference the fused C++ kernel (:func:`dlgsanet.cpu.fused.gdfn`) runs all of it in one
    pass. With PyTorch ops the halves are two separate
    (contiguous) maps, rather than one map split afterwards: the depth-wise conv and the
    projection are per channel, so this is the same arithmetic, but GELU then runs on a contiguous
    tensor (about 1.6x faster than on the strided half) and oneDNN's depth-wise conv is faster on
    two 2*dim-channel maps than on one.
    """

    def __init__(self, dim: int, expansion: float = 2.0) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.hidden_features = hidden
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=False)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2,
                                bias=False)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=False)

    def _half(self, x: torch.Tensor, part: slice) -> torch.Tensor:
        t = conv1x1(x, self.project_in.weight[part])
        dw = self.dwconv
        return depthwise(t, dw.weight[part], dw.bias[part] if dw.bias is not None else None, dw.padding)

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.hidden_features
        gated = F.gelu(self._half(x, slice(0, h)))
        value = self._half(x, slice(h, 2 * h))
        gated = gated.mul_(value) if inplace_ok(gated, value) else gated * value
        return pointwise(gated, self.project_out, residual)

    def banded(self, x: torch.Tensor, norm: nn.Module, residual: torch.Tensor,
               workspace: Optional[Workspace] = None) -> torch.Tensor:
        """``residual + GDFN(norm(x))`` for CPU inference.

        With the fused C++ kernel (:func:`dlgsanet.cpu.fused.gdfn`) the whole feed-forward
        is one pass that keeps the 4*dim-channel intermediate of three rows at a time in cache.
        Otherwise it runs band by band of rows with PyTorch ops (halo 1 row for the 3x3
        depth-wise conv; ``norm`` is per pixel, so it is applied per band too).
        """
        h = self.hidden_features
        b, _, w, _ = x.shape
        out = new_output(residual, workspace)
        if (cpu_kernels.usable(x, kernel="gdfn") and self.dwconv.kernel_size == (3, 3) and self.project_in.bias is None
                and self.dwconv.padding == (1, 1) and x.is_contiguous() and residual.is_contiguous()):
            params = layer_norm_params(norm)  # the LayerNorm then runs inside the kernel too
            return cpu_kernels.gdfn(x if params else norm(x), residual, out, self.project_in.weight,
                                    self.dwconv.weight, self.dwconv.bias, self.project_out.weight,
                                    self.project_out.bias, params)
        for r0, r1, a0, a1 in row_bands(x.shape[1], band_rows(w, h, FFN_BAND_ELEMENTS), 1):
            band = norm(x[:, a0:a1])
            gated = F.gelu(self._half(band, slice(0, h))[:, r0 - a0:r1 - a0])
            gated.mul_(self._half(band, slice(h, 2 * h))[:, r0 - a0:r1 - a0])
            proj = conv1x1(gated, self.project_out.weight, self.project_out.bias)
            torch.add(proj, residual[:, r0:r1], out=out[:, r0:r1])
        return out
