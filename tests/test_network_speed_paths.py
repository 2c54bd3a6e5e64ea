"""The fast evaluation paths of the network, each against a plain statement of what it computes.

The whole model is checked against the naive official reference in
``test_reference_equivalence.py``; these tests pin down the pieces (dynamic conv and its
hand-written backward, the banded kernel path, TLC gather/scatter, the folded attention, the
channels-last feed-forward) so that a failure says which one broke.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import core_helpers
import dlgsanet.cpu.gdfn as cpu_gdfn
import dlgsanet.cpu.mhdlsa as mhdlsa
import dlgsanet.cpu.sparse_gsa as sparse_gsa
import dlgsanet.model.layers as layers
from dlgsanet.cpu.bands import MAX_BAND_SCALE, band_rows, row_bands, thread_band_scale
from dlgsanet.cpu.network import residual_group
from dlgsanet.cpu.workspace import Workspace
from dlgsanet.model.layers import GDFN, ChannelLayerNorm, spatial
from dlgsanet.cpu import fused as cpu_kernels
from dlgsanet.ops.dynamic_dwconv.torch_backend import DynamicDWConvFunction, dynamic_dwconv_torch
from dlgsanet.model.sparse_gsa import SparseGSA
from dlgsanet.model.tlc import window_plan, window_starts


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def unfold_dynamic_conv(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """The defining formula, through unfold (as the official CUDA op was replaced on the CPU)."""
    n, c, h, w = x.shape
    g, k = kernels.shape[1], kernels.shape[2]
    patches = F.unfold(x, k, padding=k // 2).view(n, g, c // g, k * k, h * w)
    return (patches * kernels.reshape(n, g, 1, k * k, h * w)).sum(3).view(n, c, h, w)


def randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    return core_helpers.randomise(module, seed, noise=0.05)


# --- dynamic depth-wise convolution --------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 6, 5, 7, 3, 3), (2, 12, 9, 4, 2, 5), (1, 4, 1, 1, 4, 7), (2, 48, 11, 13, 8, 7)])
def test_dynamic_conv_matches_unfold_formula(shape: tuple) -> None:
    n, c, h, w, g, k = shape
    x = torch.randn(n, c, h, w)
    kernels = torch.randn(n, g, k, k, h, w)
    expected = unfold_dynamic_conv(x, kernels)
    with torch.no_grad():
        assert torch.allclose(dynamic_dwconv_torch(x, kernels), expected, atol=1e-5)
    x.requires_grad_(True)
    assert torch.allclose(dynamic_dwconv_torch(x, kernels), expected, atol=1e-5)


def test_dynamic_conv_backward_passes_gradcheck() -> None:
    x = torch.randn(2, 4, 4, 5, dtype=torch.float64, requires_grad=True)
    kernels = torch.randn(2, 2, 3, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(DynamicDWConvFunction.apply, (x, kernels))


def test_dynamic_conv_backward_matches_autograd_through_unfold() -> None:
    x = torch.randn(2, 12, 8, 9, requires_grad=True)
    kernels = torch.randn(2, 4, 5, 5, 8, 9, requires_grad=True)
    grad = torch.randn(2, 12, 8, 9)
    ours = torch.autograd.grad(dynamic_dwconv_torch(x, kernels), (x, kernels), grad)
    ref = torch.autograd.grad(unfold_dynamic_conv(x, kernels), (x, kernels), grad)
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, atol=1e-4)


def test_dynamic_conv_gradient_for_one_argument_only() -> None:
    x = torch.randn(1, 4, 6, 6)
    kernels = torch.randn(1, 2, 3, 3, 6, 6, requires_grad=True)
    out = dynamic_dwconv_torch(x, kernels)
    (gk,) = torch.autograd.grad(out.sum(), kernels)
    (rk,) = torch.autograd.grad(unfold_dynamic_conv(x, kernels).sum(), kernels)
    assert torch.allclose(gk, rk, atol=1e-5)


@pytest.mark.parametrize("kernels", ["auto", "off"])
@pytest.mark.parametrize("rows", [1, 2, 5, 10_000])
def test_banded_local_block_equals_whole_image_path(rows: int, kernels: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """CPU inference makes the per-pixel kernels band by band of ``rows`` rows (halo K // 2, the
    image's zero padding at its borders), with the fused C++ kernels where they build or with
    PyTorch ops; autograd takes the whole-image path through the dispatcher. All the same function."""
    monkeypatch.setenv(cpu_kernels.ENV_VAR, kernels)
    dim, k, heads = 12, 5, 3
    block = randomise(mhdlsa.MHDLSABlock(dim, k, heads, 2.0))
    monkeypatch.setattr(mhdlsa, "KERNEL_BAND_ELEMENTS", rows * (dim // heads) * k * k * 9)
    monkeypatch.setattr(mhdlsa, "MIN_BAND_ROWS", 1)
    x = torch.randn(2, 11, 9, dim)
    with torch.no_grad():
        banded = mhdlsa.local_block(block, x)
    whole = block(x.clone().requires_grad_(True))
    assert torch.allclose(banded, whole.detach(), atol=1e-5)


@pytest.mark.parametrize("kernels", ["auto", "off"])
@pytest.mark.parametrize("budget", [1, 1 << 30])
def test_banded_global_block_equals_whole_image_path(budget: int, kernels: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """qkv in bands of rows, windows in chunks, feed-forward in bands (C++ kernels or PyTorch
    ops): same function as the whole-image autograd path, with TLC windows that overlap."""
    monkeypatch.setenv(cpu_kernels.ENV_VAR, kernels)
    monkeypatch.setattr(sparse_gsa, "QKV_BAND_ELEMENTS", budget)
    monkeypatch.setattr(sparse_gsa, "WINDOW_CHUNK_ELEMENTS", budget)
    monkeypatch.setattr(cpu_gdfn, "FFN_BAND_ELEMENTS", budget)
    block = randomise(sparse_gsa.SparseGSABlock(12, 3, 2.0, tlc_window=7)).eval()
    x = torch.randn(2, 19, 17, 12)
    with torch.no_grad():
        banded = sparse_gsa.global_block(block, x)
    whole = block(x.clone().requires_grad_(True))
    assert torch.allclose(banded, whole.detach(), atol=1e-5)


@pytest.mark.parametrize("size", [(1, 1), (3, 2), (14, 11), (9, 31)])
def test_cpu_inference_batch_is_bit_exact_at_any_size(size: tuple[int, int]) -> None:
    """Tiny maps make GEMM libraries pick kernels by batch size; each image must still get
    exactly the bits it gets alone."""
    from dlgsanet import DLGSANetConfig, DLGSANet

    model = randomise(DLGSANet(DLGSANetConfig(dim=12, groups=1, blocks=1, local_heads=3, global_heads=3,
                                              window=5, scale=2, tlc_window=6))).eval()
    x = torch.rand(3, 3, *size)
    with torch.inference_mode():
        assert torch.equal(model(x), torch.cat([model(x[i:i + 1]) for i in range(3)]))


def test_workspace_buffers_do_not_change_results() -> None:
    """Block outputs ping-pong between two reused buffers; the group's input must survive."""
    from dlgsanet import DLGSANetConfig
    from dlgsanet.model.network import ResidualGroup

    group = randomise(ResidualGroup(DLGSANetConfig(dim=12, groups=1, blocks=3, local_heads=3, global_heads=3,
                                                   window=5, scale=2, tlc_window=6))).eval()
    x = torch.randn(1, 13, 10, 12)
    keep = x.clone()
    with torch.no_grad():
        plain = residual_group(group, x)
        reused = residual_group(group, x, Workspace())
    assert torch.equal(x, keep)
    assert torch.equal(plain, reused)


def test_workspace_never_hands_out_an_input_buffer() -> None:
    ws = Workspace()
    a = ws.output_for(torch.zeros(2, 3))
    b = ws.output_for(a)
    c = ws.output_for(b)
    assert a.data_ptr() != b.data_ptr() and c.data_ptr() != b.data_ptr()
    assert ws.take("k", (4, 5), a).shape == (4, 5) and ws.take("k", (2, 2), a).shape == (2, 2)


# --- TLC windows ---------------------------------------------------------------------------------
def official_windows(h: int, w: int, window: int) -> list[tuple[int, int, int, int]]:
    """(top, left, height, width) of each window, by the official nested while-loops."""
    k1, k2 = min(h, window), min(w, window)
    nr, nc = (h - 1) // k1 + 1, (w - 1) // k2 + 1
    si = k1 if nr == 1 else math.ceil((h - k1) / (nr - 1) - 1e-8)
    sj = k2 if nc == 1 else math.ceil((w - k2) / (nc - 1) - 1e-8)
    out, i, last_i = [], 0, False
    while i < h and not last_i:
        if i + k1 >= h:
            i, last_i = h - k1, True
        j, last_j = 0, False
        while j < w and not last_j:
            if j + k2 >= w:
                j, last_j = w - k2, True
            out.append((i, j, k1, k2))
            j += sj
        i += si
    return out


@pytest.mark.parametrize("h,w,window", [(10, 7, 4), (48, 48, 48), (100, 130, 48), (5, 30, 8), (97, 33, 96)])
def test_window_plan_follows_official_grid(h: int, w: int, window: int) -> None:
    plan = window_plan(h, w, window, torch.device("cpu"))
    wins = official_windows(h, w, window)
    assert plan.count == len(wins)
    x = torch.randn(2, h, w, 3)
    gathered = x.reshape(2 * h * w, 3).index_select(0, plan.batch_index(2))
    gathered = gathered.view(2, plan.count, plan.window_h, plan.window_w, 3)
    count = torch.zeros(h, w)
    for idx, (i, j, kh, kw) in enumerate(wins):
        assert torch.equal(gathered[:, idx], x[:, i:i + kh, j:j + kw])
        count[i:i + kh, j:j + kw] += 1
    assert torch.equal(plan.coverage.view(h, w), count)
    assert tuple(sorted({i for i, *_ in wins})) == window_starts(h, window)


def test_window_index_scatters_overlaps_into_their_sum() -> None:
    """index_add_ over the plan's index (what the attention does) sums overlapping windows."""
    h, w, window = 13, 9, 5
    plan = window_plan(h, w, window, torch.device("cpu"))
    windows = torch.randn(2 * plan.count, plan.pixels, 4)
    expected = torch.zeros(2, h, w, 4)
    blocks = windows.view(2, plan.count, plan.window_h, plan.window_w, 4)
    for idx, (i, j, kh, kw) in enumerate(official_windows(h, w, window)):
        expected[:, i:i + kh, j:j + kw] += blocks[:, idx]
    total = torch.zeros(2 * h * w, 4).index_add_(0, plan.batch_index(2), windows.reshape(-1, 4))
    assert torch.allclose(total.view(2, h, w, 4), expected, atol=1e-6)


# --- attention, norm, feed-forward ---------------------------------------------------------------
def plain_attention(attn: SparseGSA, x_nchw: torch.Tensor) -> torch.Tensor:
    """Restormer-style sparse attention written out as in the paper (whole map, NCHW)."""
    b, c, h, w = x_nchw.shape
    heads = attn.heads
    q, k, v = attn.qkv_dwconv(attn.qkv(x_nchw)).chunk(3, dim=1)
    q, k, v = (t.reshape(b, heads, c // heads, h * w) for t in (q, k, v))
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    out = torch.relu(q @ k.transpose(-2, -1) * attn.temperature) @ v
    return attn.project_out(out.reshape(b, c, h, w))


@pytest.mark.parametrize("dim,heads", [(12, 3), (18, 6), (8, 1)])
def test_folded_attention_equals_plain_attention(dim: int, heads: int) -> None:
    attn = randomise(SparseGSA(dim, heads, tlc_window=0)).eval()
    x = torch.randn(2, dim, 7, 10)
    nhwc = x.permute(0, 2, 3, 1).contiguous()
    zero = torch.zeros_like(nhwc)
    with torch.no_grad():
        ours = attn(nhwc, residual=zero).permute(0, 3, 1, 2)
    assert torch.allclose(ours, plain_attention(attn, x), atol=1e-5)
    grad_path = attn(nhwc, residual=zero).permute(0, 3, 1, 2)  # autograd path (vector_norm)
    assert torch.allclose(grad_path.detach(), plain_attention(attn, x), atol=1e-5)


def test_attention_of_an_all_zero_window_has_finite_gradients() -> None:
    """F.normalize clamps the norm at 1e-12; a zero query/key channel must not give NaN."""
    attn = randomise(SparseGSA(6, 2, tlc_window=0)).train()
    x = torch.zeros(1, 5, 5, 6, requires_grad=True)
    attn(x, residual=x).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in attn.parameters())


def test_channel_layer_norm_equals_manual_formula() -> None:
    norm = randomise(ChannelLayerNorm(10))
    x = torch.randn(2, 4, 5, 10) * 3 + 1
    mu = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True, unbiased=False)
    expected = (x - mu) / torch.sqrt(var + 1e-5) * norm.body.weight + norm.body.bias
    assert torch.allclose(norm(x), expected, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels", [12, 48, 90])
def test_layer_norm_by_reductions_is_as_accurate_as_the_fused_kernel(dtype: torch.dtype, channels: int) -> None:
    """The CUDA inference path of the channel LayerNorm (run here on the CPU: the same ops) against
    float64. Rows far from zero (mean 50, std 3) make a mean rounded to 16 bits show at once."""
    gen = torch.Generator().manual_seed(channels)
    x = (torch.randn(2, 9, 7, channels, generator=gen) * 3 + 50).to(dtype)
    weight = torch.randn(channels, generator=gen).to(dtype)
    bias = torch.randn(channels, generator=gen).to(dtype)
    exact = F.layer_norm(x.double(), (channels,), weight.double(), bias.double(), 1e-5)
    ours = layers.layer_norm_by_reductions(x, weight, bias, 1e-5)
    fused = F.layer_norm(x, (channels,), weight, bias, 1e-5)
    assert ours.dtype == dtype and ours.shape == x.shape
    ours_error = (ours.double() - exact).abs().max().item()
    assert ours_error <= max((fused.double() - exact).abs().max().item(), 1e-5)
    if dtype != torch.float32:  # correctly rounded: float32 arithmetic, one rounding at the end
        assert (ours == exact.to(dtype)).double().mean().item() > 0.99


def test_channel_layer_norm_takes_the_fused_kernel_off_cuda_and_under_autograd() -> None:
    x, weight, bias = torch.randn(1, 3, 4, 48), torch.randn(48), torch.randn(48)
    assert torch.equal(layers.channel_layer_norm(x, weight, bias, 1e-5), F.layer_norm(x, (48,), weight, bias, 1e-5))
    x.requires_grad_()
    layers.channel_layer_norm(x, weight, bias, 1e-5).sum().backward()
    assert x.grad is not None


@pytest.mark.parametrize("height,rows,halo", [(10, 3, 1), (128, 41, 3), (5, 8, 2), (7, 1, 0)])
def test_row_bands_cover_every_row_once_with_their_halo(height: int, rows: int, halo: int) -> None:
    bands = list(row_bands(height, rows, halo))
    kept = [r for r0, r1, _, _ in bands for r in range(r0, r1)]
    assert kept == list(range(height))
    assert max(r1 - r0 for r0, r1, _, _ in bands) - min(r1 - r0 for r0, r1, _, _ in bands) <= 1
    for r0, r1, a0, a1 in bands:
        assert r1 - r0 <= rows and a0 == max(0, r0 - halo) and a1 == min(height, r1 + halo)


def test_bands_grow_with_threads_but_stay_bounded() -> None:
    """One thread keeps the one-core budget; more threads get larger bands, never more than
    MAX_BAND_SCALE times, and band_rows follows the current torch thread count."""
    assert thread_band_scale(1) == 1 and thread_band_scale(2) == 4
    assert thread_band_scale(64) == MAX_BAND_SCALE
    one = band_rows(128, 96, 1 << 19)
    torch.set_num_threads(2)
    try:
        assert band_rows(128, 96, 1 << 19) == (4 << 19) // (128 * 96) > 3 * one
    finally:
        torch.set_num_threads(1)


def test_gdfn_channels_last_equals_nchw_formula() -> None:
    ffn = randomise(GDFN(8, 2.0))
    x = torch.randn(2, 8, 6, 5)
    t = ffn.dwconv(ffn.project_in(x))
    g, v = t.chunk(2, dim=1)
    expected = ffn.project_out(F.gelu(g) * v) + x
    nhwc = x.permute(0, 2, 3, 1).contiguous()
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            out = ffn(nhwc, residual=nhwc).permute(0, 3, 1, 2)
        assert torch.allclose(out.detach(), expected.detach(), atol=1e-5)


@pytest.mark.parametrize("size", [(1, 1), (3, 2), (14, 11), (40, 33)])
def test_spatial_conv_is_batch_independent(size: tuple[int, int]) -> None:
    """F.conv2d picks a different CPU kernel for one small image than for a batch (different
    rounding); ``spatial`` must give every image the same bits alone or in a batch."""
    conv = torch.nn.Conv2d(16, 16, 3, padding=1)
    x = torch.randn(3, *size, 16)
    with torch.no_grad():
        together = spatial(x, conv)
        alone = torch.cat([spatial(x[i:i + 1], conv) for i in range(3)])
    assert torch.equal(together, alone)
    expected = conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    assert torch.allclose(together, expected, atol=1e-5)


@pytest.mark.gpu
def test_torch_paths_on_cuda_match_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Device-agnostic: the pure-PyTorch code on CUDA (dispatcher forced to torch) as on CPU."""
    monkeypatch.setenv("DLGSANET_BACKEND", "torch")
    from dlgsanet import DLGSANet, DLGSANetConfig

    model = randomise(DLGSANet(DLGSANetConfig(dim=12, groups=1, blocks=1, local_heads=3, global_heads=3,
                                              window=5, scale=2, tlc_window=8))).eval()
    x = torch.rand(2, 3, 19, 13)
    with torch.no_grad():
        cpu = model(x)
        gpu = model.cuda()(x.cuda()).cpu()
    assert torch.allclose(cpu, gpu, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_channel_layer_norm_on_cuda_matches_the_fused_kernel(dtype: torch.dtype) -> None:
    """CUDA inference takes layer_norm_by_reductions for DLGSANet's widths: same values as
    PyTorch's kernel (both float32 inside), including batch, odd sizes and a strided input."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    for shape in [(1, 37, 53, 48), (3, 16, 9, 90), (2, 5, 7, 12)]:
        x = (torch.randn(*shape, device="cuda", generator=gen) * 3 + 5).to(dtype)
        weight = torch.randn(shape[-1], device="cuda", generator=gen).to(dtype)
        bias = torch.randn(shape[-1], device="cuda", generator=gen).to(dtype)
        for tensor in (x, x.transpose(1, 2)):
            with torch.no_grad():
                ours = layers.channel_layer_norm(tensor, weight, bias, 1e-5)
            theirs = F.layer_norm(tensor, shape[-1:], weight, bias, 1e-5)
            assert ours.dtype == dtype
            tolerance = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
            torch.testing.assert_close(ours, theirs, rtol=0, atol=tolerance)
