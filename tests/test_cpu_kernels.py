"""The fused C++ CPU kernels (``kernels/cpu_fused.cpp`` through ``dlgsanet.cpu.fused``).

Each kernel against a plain PyTorch statement of what it computes (zero padding, bands of rows
with their halo, odd sizes, channel tails, batches), the network with the kernels on and off,
independence from the thread count, and every way of not having them (turned off, no compiler,
a cache folder that cannot be written) falling back to the PyTorch ops with one log line.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import core_helpers
from dlgsanet import DLGSANet, DLGSANetConfig
from dlgsanet.cpu.plan import layer_norm_params
from dlgsanet.cpu.sparse_gsa import attend, window_rectangles
from dlgsanet.model.layers import GDFN, ChannelLayerNorm
from dlgsanet.cpu import fused as cpu_kernels
from dlgsanet.ops import native
from dlgsanet.ops.dynamic_dwconv.torch_backend import dynamic_dwconv_torch
from dlgsanet.model.sparse_gsa import SparseGSA

needs_kernels = pytest.mark.skipif(native.compiler() is None or os.name != "posix",
                                   reason="no C++ compiler here: the fused CPU kernels cannot be built "
                                          "(the PyTorch ops are used instead)")


@pytest.fixture
def fresh_kernels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A cache folder of the test's own and no library loaded yet; the state is restored after."""
    monkeypatch.setenv(cpu_kernels.CACHE_ENV_VAR, str(tmp_path / "cache"))
    monkeypatch.delenv(cpu_kernels.ENV_VAR, raising=False)
    cpu_kernels.reset()
    yield tmp_path / "cache"
    cpu_kernels.reset()


def padded_rows(x: torch.Tensor, offset: int, rows: int, halo: int, dim: int) -> torch.Tensor:
    """Rows ``offset - halo .. offset + rows + halo`` of ``x`` along ``dim``, zeros outside it."""
    lo, hi = offset - halo, offset + rows + halo
    pad_lo, pad_hi = max(0, -lo), max(0, hi - x.shape[dim])
    part = x.narrow(dim, max(lo, 0), min(hi, x.shape[dim]) - max(lo, 0))
    shape = list(part.shape)
    pieces = []
    if pad_lo:
        pieces.append(part.new_zeros(*shape[:dim], pad_lo, *shape[dim + 1:]))
    pieces.append(part)
    if pad_hi:
        pieces.append(part.new_zeros(*shape[:dim], pad_hi, *shape[dim + 1:]))
    return torch.cat(pieces, dim)


# --- dynamic conv --------------------------------------------------------------------------------
@needs_kernels
@pytest.mark.parametrize("batch,channels,groups,k,reduced,x_rows,width,offset,rows", [
    (1, 90, 15, 7, 22, 70, 128, 3, 64),     # Large's shapes: a middle band
    (1, 48, 8, 7, 12, 20, 65, 0, 17),       # first band (rows above are the image's padding)
    (3, 12, 2, 5, 4, 9, 70, 4, 5),          # last band, two column blocks, batch
    (2, 14, 2, 3, 3, 6, 5, 1, 4),           # 7 channels per group: blocks of 6 and 1
    (1, 8, 2, 9, 5, 4, 130, 0, 4),          # kernel wider than the band; three column blocks
    (1, 3, 3, 1, 2, 1, 1, 0, 1),            # 1x1 kernel, one pixel
])
def test_dynamic_conv_matches_kernels_made_then_applied(batch: int, channels: int, groups: int, k: int, reduced: int,
                                                        x_rows: int, width: int, offset: int, rows: int,
                                                        one_torch_thread: None) -> None:
    """Per-pixel kernels from the hyper features (``weight @ hyper + bias``), then the dynamic
    conv of the band with the image's zero padding: what the C++ kernel fuses."""
    x = torch.randn(batch, channels, x_rows, width)
    hyper = torch.randn(batch, reduced, x_rows + 2, width)
    weight, bias = torch.randn(groups * k * k, reduced) * 0.3, torch.randn(groups * k * k)
    got = cpu_kernels.dynamic_conv(x, offset, hyper, offset + 1, weight, bias, rows, k)

    h = hyper[:, :, offset + 1:offset + 1 + rows].reshape(batch, reduced, -1)
    kernels = (torch.einsum("tr,brp->btp", weight, h) + bias.view(1, -1, 1)).view(batch, groups, k, k, rows, width)
    band = padded_rows(x, offset, rows, k // 2, 2)                 # the rows the band sees, padding included
    expected = dynamic_dwconv_torch(band, F.pad(kernels, (0, 0, k // 2, k // 2)))[:, :, k // 2:k // 2 + rows]
    assert got.shape == (batch, channels, rows, width)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


@needs_kernels
def test_dynamic_conv_without_bias_and_into_a_buffer(one_torch_thread: None) -> None:
    x, hyper = torch.randn(1, 6, 5, 9), torch.randn(1, 2, 5, 9)
    weight = torch.randn(2 * 9, 2)
    out = torch.full((1, 6, 5, 9), float("nan"))
    assert cpu_kernels.dynamic_conv(x, 0, hyper, 0, weight, None, 5, 3, out=out) is out
    kernels = torch.einsum("tr,brp->btp", weight, hyper.view(1, 2, -1)).view(1, 2, 3, 3, 5, 9)
    torch.testing.assert_close(out, dynamic_dwconv_torch(x, kernels), rtol=1e-5, atol=1e-5)


# --- the feed-forward and the qkv conv: 1x1 conv, 3x3 depth-wise conv (and gate, projection) ----
def random_norm(channels: int) -> ChannelLayerNorm:
    norm = ChannelLayerNorm(channels)
    with torch.no_grad():
        norm.body.weight.normal_(1, 0.5)
        norm.body.bias.normal_(0, 0.5)
    return norm


def random_gdfn(channels: int, expansion: float, biases: bool) -> GDFN:
    gdfn = GDFN(channels, expansion).eval()
    with torch.no_grad():
        for p in gdfn.parameters():  # outputs of about unit size, as in a trained block
            p.normal_(0, 1 / p[0].numel() ** 0.5)
        if biases:  # the official GDFN has none; the kernel takes them anyway
            gdfn.dwconv.bias = torch.nn.Parameter(torch.randn(gdfn.dwconv.out_channels))
            gdfn.project_out.bias = torch.nn.Parameter(torch.randn(channels))
    return gdfn


@needs_kernels
@pytest.mark.parametrize("batch,height,width,channels,expansion", [
    (1, 20, 130, 90, 2.0),      # Large: three column blocks, the last of two columns
    (2, 9, 70, 48, 2.0),        # Tiny/Light, a batch
    (3, 4, 3, 20, 2.66),        # hidden 53: gate and value padded inside; fewer columns than a quad
    (1, 40, 9, 10, 1.0),        # several row runs per image (rows re-expanded at their ends)
    (1, 1, 1, 4, 1.0),          # one pixel: every neighbour is padding
])
@pytest.mark.parametrize("biases", [False, True])
@pytest.mark.parametrize("normalise", [False, True])
def test_gdfn_matches_the_pytorch_feed_forward(batch: int, height: int, width: int, channels: int, expansion: float,
                                               biases: bool, normalise: bool, one_torch_thread: None) -> None:
    """residual + W_out (GELU(dw(gate)) * dw(value)), [gate; value] = W_in LN(x), against GDFN's
    own PyTorch forward (separate LayerNorm, 1x1 conv, depth-wise conv, GELU, product, 1x1 conv)."""
    gdfn = random_gdfn(channels, expansion, biases)
    x, residual = torch.randn(batch, height, width, channels) * 3 + 1, torch.randn(batch, height, width, channels)
    norm = random_norm(channels) if normalise else None
    with torch.no_grad():
        expected = gdfn(norm(x) if normalise else x, residual.clone())
        out = torch.full_like(residual, float("nan"))
        got = cpu_kernels.gdfn(x, residual, out, gdfn.project_in.weight, gdfn.dwconv.weight, gdfn.dwconv.bias,
                               gdfn.project_out.weight, gdfn.project_out.bias, layer_norm_params(norm))
    assert got is out
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@needs_kernels
def test_gdfn_may_write_over_its_residual(one_torch_thread: None) -> None:
    gdfn = random_gdfn(12, 2.0, biases=False)
    x, residual = torch.randn(2, 19, 70, 12), torch.randn(2, 19, 70, 12)
    with torch.no_grad():
        expected = gdfn(x, residual.clone())
        cpu_kernels.gdfn(x, residual, residual, gdfn.project_in.weight, gdfn.dwconv.weight, None,
                         gdfn.project_out.weight, None)
    torch.testing.assert_close(residual, expected, rtol=1e-5, atol=1e-5)


@needs_kernels
@pytest.mark.parametrize("batch,height,width,channels,out_channels", [
    (1, 18, 128, 90, 270),      # Large's qkv
    (2, 5, 67, 48, 144),        # Tiny's qkv, a partial column block
    (1, 3, 2, 7, 21),           # channel tail of 5 in the last vector
    (1, 1, 1, 3, 1),            # one pixel, one output channel
])
@pytest.mark.parametrize("with_bias,normalise", [(False, False), (True, False), (False, True)])
def test_conv1x1_dw3x3_matches_two_convolutions(batch: int, height: int, width: int, channels: int, out_channels: int,
                                                with_bias: bool, normalise: bool, one_torch_thread: None) -> None:
    x = torch.randn(batch, height, width, channels)
    weight, dw = torch.randn(out_channels, channels, 1, 1) * 0.3, torch.randn(out_channels, 1, 3, 3)
    bias = torch.randn(out_channels) if with_bias else None
    norm = random_norm(channels) if normalise else None
    with torch.no_grad():
        normed = norm(x) if normalise else x
    expected = F.conv2d(F.conv2d(normed.permute(0, 3, 1, 2), weight), dw, bias, padding=1, groups=out_channels)
    out = torch.full((batch, height, width, out_channels), float("nan"))
    cpu_kernels.conv1x1_dw3x3(x, weight, dw, bias, out, layer_norm_params(norm))
    torch.testing.assert_close(out, expected.permute(0, 2, 3, 1), rtol=1e-5, atol=1e-5)


@needs_kernels
def test_gelu_of_the_gate_matches_torch_over_its_range(one_torch_thread: None) -> None:
    """The kernel's vectorised erf (A&S 7.1.26 with its own exp) against torch's GELU from -12 to
    12, including where exp(-x^2/2) underflows. Weights that make every other step the identity:
    channel 0 carries the values to the gate, channel 1 (all ones) to the value."""
    values = torch.linspace(-12, 12, 4001).view(1, 1, 4001, 1)
    x = torch.cat([values, torch.ones_like(values)], dim=3)           # [1, 1, 4001, 2]
    w_in = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 2, 1, 1)    # gate <- channel 0, value <- 1
    w_dw = torch.zeros(2, 1, 3, 3)
    w_dw[:, 0, 1, 1] = 1                                              # centre tap only
    w_out = torch.tensor([[1.0], [0.0]]).view(2, 1, 1, 1)
    out = cpu_kernels.gdfn(x, torch.zeros_like(x), torch.empty_like(x), w_in, w_dw, None, w_out, None)
    torch.testing.assert_close(out[..., 0], F.gelu(values[..., 0]), rtol=0, atol=3e-6)


@needs_kernels
@pytest.mark.parametrize("batch,height,width,channels,heads,window", [
    (1, 100, 70, 90, 6, 48),    # Large: 3 x 2 overlapping windows, heads of 15 channels
    (2, 20, 17, 24, 4, 8),      # a batch, heads of 6
    (1, 13, 11, 40, 2, 0),      # TLC off: one window is the whole map; heads of 20 (two 16-blocks)
    (1, 9, 9, 4, 4, 4),         # heads of one channel: the last q/k reads stop at the map's end
])
def test_window_attention_matches_the_pytorch_attention(batch: int, height: int, width: int, channels: int,
                                                        heads: int, window: int, one_torch_thread: None,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Gram blocks, norms, ReLU map, projection and the average over overlapping TLC windows,
    against SparseGSA's own PyTorch path (gathered windows, batched GEMMs, index_add)."""
    gsa = SparseGSA(channels, heads, window).eval()
    with torch.no_grad():
        gsa.temperature.uniform_(0.5, 2.0)
        gsa.project_out.weight.normal_(0, channels ** -0.5)
        qkv, residual = torch.randn(batch, height, width, 3 * channels), torch.randn(batch, height, width, channels)
        qkv[0, :3, :2, :channels] = 0          # a q channel that is all zero in a window: norm clamped
        monkeypatch.setenv(cpu_kernels.ENV_VAR, "off")
        expected = gsa.attend(qkv, residual)   # PyTorch ops
        monkeypatch.setenv(cpu_kernels.ENV_VAR, "auto")
        assert torch.equal(attend(gsa, qkv, residual), cpu_kernels.window_attention(
            qkv, residual, torch.empty_like(residual), gsa.temperature, gsa.project_out.weight,
            *window_rectangles(height, width, window, qkv.device)))     # attend takes the kernel when it can
        out = torch.full_like(residual, float("nan"))
        cpu_kernels.window_attention(qkv, residual, out, gsa.temperature, gsa.project_out.weight,
                                     *window_rectangles(height, width, window, qkv.device))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=2e-5)


@needs_kernels
@pytest.mark.parametrize("batch,rows,width,channels,reduced,normalise,with_bias", [
    (1, 70, 128, 90, 22, True, True),     # Large's band
    (2, 5, 13, 48, 12, False, True),      # a batch; 65 pixels: a partial last block of 64
    (1, 1, 3, 7, 2, True, False),         # fewer pixels than a panel
])
def test_mhdlsa_in_makes_planes_and_hyper_features(batch: int, rows: int, width: int, channels: int, reduced: int,
                                                   normalise: bool, with_bias: bool, one_torch_thread: None) -> None:
    """planes = W0 LN(x) and hyper = W_r planes + b_r as channel planes, from rows of a larger
    channels-last map (the band of a batch is not contiguous across images)."""
    full = torch.randn(batch, rows + 4, width, channels)
    band = full[:, 2:2 + rows]
    w0, wr = torch.randn(channels, channels, 1, 1) * 0.2, torch.randn(reduced, channels, 1, 1) * 0.2
    br = torch.randn(reduced) if with_bias else None
    norm = random_norm(channels) if normalise else None
    with torch.no_grad():
        y = (norm(band) if normalise else band).reshape(batch, -1, channels)
    expect_planes = torch.einsum("oc,bpc->bop", w0.view(channels, channels), y)
    expect_hyper = torch.einsum("rc,bcp->brp", wr.view(reduced, channels), expect_planes)
    if with_bias:
        expect_hyper = expect_hyper + br.view(1, -1, 1)
    planes = torch.full((batch, channels, rows * width), float("nan"))
    hyper = torch.full((batch, reduced, rows * width), float("nan"))
    cpu_kernels.mhdlsa_in(band, w0, wr, br, planes, hyper, layer_norm_params(norm))
    torch.testing.assert_close(planes, expect_planes, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hyper, expect_hyper, rtol=1e-5, atol=1e-5)


@needs_kernels
def test_mhdlsa_out_writes_its_rows_of_the_output_only(one_torch_thread: None) -> None:
    """out = residual + W1 acc, channels-last, into rows 3..9 of larger maps (a batch of two)."""
    acc, w1 = torch.randn(2, 20, 6, 70), torch.randn(20, 20, 1, 1) * 0.2
    residual, out = torch.randn(2, 12, 70, 20), torch.full((2, 12, 70, 20), 7.0)
    expected = residual[:, 3:9] + torch.einsum("oc,bchw->bhwo", w1.view(20, 20), acc)
    cpu_kernels.mhdlsa_out(acc, w1, residual[:, 3:9], out[:, 3:9])
    torch.testing.assert_close(out[:, 3:9], expected, rtol=1e-5, atol=1e-5)
    assert (out[:, :3] == 7).all() and (out[:, 9:] == 7).all()


def test_kernels_refuse_mismatched_shapes_with_a_clear_error() -> None:
    x = torch.randn(1, 3, 4, 5)
    with pytest.raises(ValueError, match="inside the map"):
        cpu_kernels.window_attention(torch.randn(1, 4, 5, 6), torch.randn(1, 4, 5, 2), torch.empty(1, 4, 5, 2),
                                     torch.ones(1, 1, 1), torch.randn(2, 2, 1, 1), (0, 1), (0,), (4, 5))
    with pytest.raises(ValueError, match="must not be the input"):
        cpu_kernels.gdfn(x, x, x, torch.randn(8, 5, 1, 1), torch.randn(8, 1, 3, 3), None, torch.randn(5, 4, 1, 1), None)
    with pytest.raises(ValueError, match="LayerNorm"):
        cpu_kernels.gdfn(x, x, torch.empty_like(x), torch.randn(8, 5, 1, 1), torch.randn(8, 1, 3, 3), None,
                         torch.randn(5, 4, 1, 1), None, (torch.ones(4), torch.zeros(4), 1e-5))
    with pytest.raises(ValueError, match="do not fit"):
        cpu_kernels.gdfn(x, x, torch.empty_like(x), torch.randn(8, 5, 1, 1), torch.randn(8, 1, 3, 3), None,
                         torch.randn(5, 3, 1, 1), None)
    with pytest.raises(ValueError, match="do not fit"):
        cpu_kernels.conv1x1_dw3x3(x, torch.randn(6, 5, 1, 1), torch.randn(6, 1, 3, 3), None, torch.empty(1, 3, 4, 7))
    with pytest.raises(ValueError, match="contiguous"):
        cpu_kernels.conv1x1_dw3x3(x.transpose(1, 2), torch.randn(6, 5, 1, 1), torch.randn(6, 1, 3, 3), None,
                                  torch.empty(1, 4, 3, 6))
    with pytest.raises(ValueError, match="do not fit"):
        cpu_kernels.dynamic_conv(torch.randn(1, 6, 3, 4), 0, torch.randn(1, 2, 3, 4), 0, torch.randn(17, 2), None, 3, 3)
    with pytest.raises(ValueError, match="cover"):
        cpu_kernels.dynamic_conv(torch.randn(1, 6, 3, 4), 0, torch.randn(1, 2, 3, 4), 1, torch.randn(18, 2), None, 3, 3)


# --- the network with the kernels ----------------------------------------------------------------
def small_model(scale: int = 2) -> DLGSANet:
    cfg = DLGSANetConfig(dim=24, groups=2, blocks=1, local_heads=4, global_heads=4, window=7, scale=scale,
                         tlc_window=16)
    return core_helpers.randomise(DLGSANet(cfg), 0, noise=0.05).eval()


@needs_kernels
def test_network_with_kernels_equals_pytorch_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every block, kernels on and off, on a map with overlapping TLC windows and several bands."""
    model, x = small_model(), torch.rand(2, 3, 37, 29)
    with torch.inference_mode():
        monkeypatch.setenv(cpu_kernels.ENV_VAR, "off")
        plain = model(x)
        monkeypatch.setenv(cpu_kernels.ENV_VAR, "auto")
        assert cpu_kernels.usable(x)
        fused = model(x)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=2e-5)


@needs_kernels
def test_kernels_results_do_not_depend_on_the_thread_count() -> None:
    """Every output element is one thread's fixed sequence of operations: the same bits with one
    thread or two (the kernels are passed torch's count)."""
    x, hyper = torch.randn(2, 12, 20, 70), torch.randn(2, 3, 20, 70)
    weight, bias = torch.randn(2 * 49, 3), torch.randn(2 * 49)
    gdfn, maps = random_gdfn(17, 2.0, biases=True), torch.randn(2, 40, 70, 17)   # 2 and 4 row runs
    qkv_w, qkv_dw = torch.randn(51, 17, 1, 1), torch.randn(51, 1, 3, 3)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with torch.no_grad():
                ffn = cpu_kernels.gdfn(maps, maps, torch.empty_like(maps), gdfn.project_in.weight, gdfn.dwconv.weight,
                                       gdfn.dwconv.bias, gdfn.project_out.weight, gdfn.project_out.bias)
            qkv = cpu_kernels.conv1x1_dw3x3(maps, qkv_w, qkv_dw, None, torch.empty(2, 40, 70, 51))
            attn = cpu_kernels.window_attention(qkv, maps, torch.empty_like(maps), torch.ones(1, 1, 1),
                                                torch.randn(17, 17, 1, 1, generator=torch.Generator().manual_seed(1)),
                                                (0, 12, 20), (0, 22, 40), (20, 30))
            results.append((cpu_kernels.dynamic_conv(x, 3, hyper, 3, weight, bias, 14, 7), ffn, qkv, attn))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(*results))


@needs_kernels
def test_network_with_kernels_gives_the_same_bits_with_one_thread_or_two() -> None:
    """With the kernels, what is left of PyTorch (oneDNN's 3x3 and 7x7 convolutions, pixel shuffle)
    splits no sum between threads either, and the bands no longer change a block's result."""
    model, x = small_model(), torch.rand(1, 3, 45, 38)
    before = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with torch.inference_mode():
                outs.append(model(x))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(outs[0], outs[1])


@needs_kernels
def test_network_with_kernels_gives_each_image_its_own_bits() -> None:
    model, x = small_model(), torch.rand(3, 3, 26, 31)
    with torch.inference_mode():
        assert cpu_kernels.usable(x)
        assert torch.equal(model(x), torch.cat([model(x[i:i + 1]) for i in range(3)]))


# --- availability and fallback -------------------------------------------------------------------
@needs_kernels
def test_kernels_build_once_into_the_cache(fresh_kernels: Path) -> None:
    assert cpu_kernels.usable(torch.zeros(1))
    built = list(fresh_kernels.glob("cpu_fused-*.so"))
    assert len(built) == 1 and not list(fresh_kernels.glob(".cpu_fused-*"))  # no temporary left behind
    stamp = built[0].stat().st_mtime_ns
    cpu_kernels.reset()                                             # a new process, in effect
    assert cpu_kernels.usable(torch.zeros(1))
    assert list(fresh_kernels.glob("cpu_fused-*.so")) == built and built[0].stat().st_mtime_ns == stamp


@needs_kernels
def test_a_damaged_cached_library_is_built_again(fresh_kernels: Path) -> None:
    """A later process finds a damaged file in the cache (a disk that filled up, say): it builds
    the library again rather than failing. (A new process: this one already maps the file.)"""
    assert cpu_kernels.usable(torch.zeros(1))
    (built,) = fresh_kernels.glob("cpu_fused-*.so")
    damaged = built.with_name("damaged")
    damaged.write_bytes(b"not a shared library")
    os.replace(damaged, built)
    probe = "import torch; from dlgsanet.cpu import fused as cpu_kernels; print(cpu_kernels.usable(torch.zeros(1)))"
    env = dict(os.environ, **{cpu_kernels.CACHE_ENV_VAR: str(fresh_kernels)})
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    assert proc.stdout.strip() == "True", proc.stderr
    assert built.read_bytes() != b"not a shared library"


def test_turned_off_means_never_built(fresh_kernels: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cpu_kernels.ENV_VAR, "off")
    assert not cpu_kernels.usable(torch.zeros(1))
    assert not fresh_kernels.exists()


def test_other_dtypes_and_devices_take_the_pytorch_ops() -> None:
    assert not cpu_kernels.usable(torch.zeros(1, dtype=torch.float64))
    assert not cpu_kernels.usable(torch.zeros(1, dtype=torch.bfloat16))
    assert not cpu_kernels.usable(torch.zeros(1, device="meta"))


def test_no_compiler_falls_back_with_one_log_line(fresh_kernels: Path, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("CXX", str(fresh_kernels.parent / "no-such-compiler"))
    model, x = small_model(), torch.rand(1, 3, 20, 18)
    with caplog.at_level(logging.WARNING, logger=cpu_kernels.__name__), torch.inference_mode():
        assert not cpu_kernels.usable(x)
        y = model(x)
        model(x)
    lines = [r.getMessage() for r in caplog.records if "fused CPU kernels not used" in r.getMessage()]
    assert len(lines) == 1 and "no C++ compiler" in lines[0]
    assert y.shape == (1, 3, 40, 36) and torch.isfinite(y).all()


@needs_kernels
def test_a_broken_compiler_falls_back(fresh_kernels: Path, monkeypatch: pytest.MonkeyPatch,
                                      caplog: pytest.LogCaptureFixture) -> None:
    """A "compiler" that fails every build: the reason is logged and the PyTorch ops run."""
    fake = fresh_kernels.parent / "fake-cxx"
    fake.write_text("#!/bin/sh\necho 'fatal: this compiler is broken' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CXX", str(fake))
    with caplog.at_level(logging.WARNING, logger=cpu_kernels.__name__):
        assert not cpu_kernels.usable(torch.zeros(1))
    assert any("could not build" in r.getMessage() and "broken" in r.getMessage() for r in caplog.records)


@needs_kernels
def test_an_unwritable_cache_folder_builds_in_the_temporary_folder(fresh_kernels: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = fresh_kernels.parent / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(cpu_kernels.CACHE_ENV_VAR, str(blocker / "cache"))
    monkeypatch.setenv("TMPDIR", str(fresh_kernels.parent / "tmp"))
    (fresh_kernels.parent / "tmp").mkdir()
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)                  # re-read TMPDIR
    assert cpu_kernels.usable(torch.zeros(1))
    assert list((fresh_kernels.parent / "tmp").glob("dlgsanet-*/cpu_fused-*.so"))
    assert blocker.read_text() == "not a folder"


@needs_kernels
def test_withheld_kernels_are_not_used_inside_the_block_only() -> None:
    x = torch.zeros(1)
    assert cpu_kernels.usable(x, kernel="gdfn")
    with cpu_kernels.withheld("gdfn", "window_attention"):
        assert not cpu_kernels.usable(x, kernel="gdfn") and not cpu_kernels.usable(x, kernel="window_attention")
        assert cpu_kernels.usable(x, kernel="dynamic_conv")
    assert cpu_kernels.usable(x, kernel="gdfn") and cpu_kernels.usable(x, kernel="window_attention")
    with pytest.raises(ValueError, match="unknown kernels"):
        with cpu_kernels.withheld("gated_dwconv"):
            pass
