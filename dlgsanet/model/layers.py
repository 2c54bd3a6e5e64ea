"""Building blocks shared by both attention blocks, on channels-last maps.

Inside the network, feature maps travel as ``[B, H, W, C]`` (channels last). Why: the channel
LayerNorm becomes PyTorch's fused ``layer_norm`` over a contiguous last dimension (no permute
copies), every 1x1 convolution becomes one GEMM over all pixels, the 3x3 convolutions run in
oneDNN's native NHWC layout, and the TLC windows are gathered as whole pixel rows. The
parameters stay ``nn.Conv2d`` / ``nn.LayerNorm`` modules with the official names and shapes;
only the way they are applied changes, never what they compute.

CPU inference computes the same blocks band by band of rows with fused kernels: see
``dlgsanet.cpu``, which uses these modules and helpers.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops.gelu_gate import gelu_gate


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


def inplace_ok(*tensors: torch.Tensor) -> bool:
    """Whether buffers may be reused in place: no autograd graph is being recorded for them."""
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def conv1x1(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """1x1 conv (``weight`` [out, in, 1, 1]) of a channels-last map: one GEMM over all pixels.

    On the CPU it goes to oneDNN (as a 1x1 convolution of the channels-last map), which beats
    MKL's sgemm on these skinny shapes with bit-identical results (figures in
    docs/performance.md); elsewhere it is ``F.linear``.
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
    gives each pixel (row) a thread block of its own, and a slower kernel still unless the row
    splits into 4-element vectors; at DLGSANet's widths one row-wise ``var_mean`` plus element-wise
    ops is faster. Only 16-bit maps of a multiple of 4 channels stay on PyTorch's kernel, which
    is faster there. Figures in docs/performance.md; ``benchmarks/bench_cuda.py`` measures both.
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


class GDFN(nn.Module):
    """Gated-Dconv feed-forward network (Restormer): 1x1 expand, 3x3 depth-wise, GELU gate, 1x1.

    ``forward(x, residual)`` returns ``residual + GDFN(x)``; channels-last in and out. The halves
    are two separate (contiguous) maps, rather than one map split afterwards: the depth-wise conv
    and the projection are per channel, so this is the same arithmetic, but GELU then runs on a
    contiguous tensor and oneDNN's depth-wise conv is faster on two 2*dim-channel maps than on one.
    """

    def __init__(self, dim: int, expansion: float = 2.0) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.hidden_features = hidden
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=False)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2,
                                bias=False)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=False)

    def half(self, x: torch.Tensor, part: slice) -> torch.Tensor:
        """The hidden channels ``part`` (gate or value): 1x1 expand, then 3x3 depth-wise."""
        t = conv1x1(x, self.project_in.weight[part])
        dw = self.dwconv
        return depthwise(t, dw.weight[part], dw.bias[part] if dw.bias is not None else None, dw.padding)

    @staticmethod
    def gate(gate: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """GELU(gate) * value (in place when allowed; under autograd :func:`gelu_gate`, which is one
        C++ pass each way in CPU training)."""
        if not inplace_ok(gate, value):
            return gelu_gate(gate, value)
        return F.gelu(gate).mul_(value)

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.hidden_features
        gated = self.gate(self.half(x, slice(0, h)), self.half(x, slice(h, 2 * h)))
        return pointwise(gated, self.project_out, residual)
