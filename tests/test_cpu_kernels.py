"""The fused C++ CPU kernels (``kernels/cpu_fused.cpp`` through ``dlgsanet.ops.cpu_kernels``).

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
from dlgsanet.ops import cpu_kernels
from dlgsanet.ops.dynamic_dwconv_torch import dynamic_dwconv_torch

needs_kernels = pytest.mark.skipif(cpu_kernels.compiler() is None or os.name != "posix",
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


# --- 3x3 depth-wise conv, plain and gated ----------------------------------------------------------
def dw_reference(x: torch.Tensor, weight: torch.Tensor, bias, offset: int, rows: int) -> torch.Tensor:
    band = padded_rows(x, offset, rows, 1, 1)                      # [B, rows + 2, W, C]
    y = F.conv2d(band.permute(0, 3, 1, 2), weight, bias, padding=(0, 1), groups=weight.shape[0])
    return y.permute(0, 2, 3, 1)


@needs_kernels
@pytest.mark.parametrize("batch,rows_in,width,channels,offset,rows", [
    (1, 66, 128, 180, 1, 64),   # Large's feed-forward band
    (2, 9, 33, 17, 0, 8),       # top band; channel tail of 1; width not a multiple of 4
    (1, 5, 8, 9, 1, 4),         # bottom band
    (3, 3, 1, 7, 0, 3),         # one pixel wide; fewer channels than a vector
    (1, 4, 2, 8, 0, 4),         # two pixels wide
    (1, 2, 5, 3, 1, 1),         # one row, both neighbours outside the band
])
@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_dwconv3x3_matches_conv2d(batch: int, rows_in: int, width: int, channels: int, offset: int, rows: int,
                                  gated: bool, with_bias: bool, one_torch_thread: None) -> None:
    """dw(x) or GELU(dw(gate)) * dw(value) on a band; gate and value are channel slices of one
    map, as the feed-forward's single expand GEMM gives them."""
    both = torch.randn(batch, rows_in, width, 2 * channels)
    gate, value = both[..., :channels], both[..., channels:]
    wg, wv = torch.randn(channels, 1, 3, 3), torch.randn(channels, 1, 3, 3)
    bg, bv = (torch.randn(channels), torch.randn(channels)) if with_bias else (None, None)
    out = torch.empty(batch, rows, width, channels)
    if gated:
        cpu_kernels.dwconv3x3(gate, cpu_kernels.taps_major(wg), bg, rows, offset, out,
                              value, cpu_kernels.taps_major(wv), bv)
        expected = F.gelu(dw_reference(gate, wg, bg, offset, rows)) * dw_reference(value, wv, bv, offset, rows)
    else:
        cpu_kernels.dwconv3x3(gate, cpu_kernels.taps_major(wg), bg, rows, offset, out)
        expected = dw_reference(gate, wg, bg, offset, rows)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=2e-5)


@needs_kernels
def test_dwconv3x3_writes_a_band_of_a_larger_map_only(one_torch_thread: None) -> None:
    """The output may be rows of a bigger batch of maps (SparseGSA writes its qkv band in place):
    nothing outside those rows is touched."""
    x, weight = torch.randn(2, 6, 7, 10), torch.randn(10, 1, 3, 3)
    full = torch.full((2, 20, 7, 10), 7.0)
    cpu_kernels.dwconv3x3(x, cpu_kernels.taps_major(weight), None, 4, 1, full[:, 5:9])
    torch.testing.assert_close(full[:, 5:9], dw_reference(x, weight, None, 1, 4), rtol=1e-5, atol=1e-5)
    assert (full[:, :5] == 7).all() and (full[:, 9:] == 7).all()


@needs_kernels
def test_gelu_of_the_gate_matches_torch_over_its_range(one_torch_thread: None) -> None:
    """The kernel's vectorised erf (A&S 7.1.26 with its own exp) against torch's GELU from -12 to
    12, including where exp(-x^2/2) underflows; a 1x1-in-the-middle weight makes dw the identity."""
    values = torch.linspace(-12, 12, 4001).view(1, 1, 4001, 1).repeat(1, 1, 1, 9)
    identity = torch.zeros(9, 1, 3, 3)
    identity[:, 0, 1, 1] = 1
    ones = torch.ones_like(values)
    out = torch.empty_like(values)
    taps = cpu_kernels.taps_major(identity)
    cpu_kernels.dwconv3x3(values, taps, None, 1, 0, out, ones, taps, None)
    torch.testing.assert_close(out, F.gelu(values), rtol=0, atol=3e-6)


def test_kernels_refuse_mismatched_shapes_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="weight"):
        cpu_kernels.dwconv3x3(torch.randn(1, 3, 4, 5), torch.randn(9, 4), None, 3, 0, torch.empty(1, 3, 4, 5))
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
    both, taps = torch.randn(2, 20, 33, 34), torch.randn(9, 17)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out = torch.empty(2, 14, 33, 17)
            cpu_kernels.dwconv3x3(both[..., :17], taps, None, 14, 3, out, both[..., 17:], taps, None)
            results.append((cpu_kernels.dynamic_conv(x, 3, hyper, 3, weight, bias, 14, 7), out))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(*results))


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
    probe = "import torch; from dlgsanet.ops import cpu_kernels; print(cpu_kernels.usable(torch.zeros(1)))"
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
