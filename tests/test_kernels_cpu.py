"""The CUDA kernels, compiled with g++ through tests/kernels/cpu_shim.h, against the PyTorch path.

This is the proof of the kernels' arithmetic that CI can run without a GPU: the very source the
cupy backend compiles with NVRTC runs here one (block, thread) at a time. Forward, gradient wrt
input and gradient wrt kernels; float32 against the PyTorch path in float32 (tolerance 1e-5),
float64 to 1e-12, float16 / bfloat16 storage against a float64 reference (correctly rounded,
which only float32 accumulation achieves).
"""
from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dlgsanet.ops.dynamic_dwconv import cupy_backend
from kernels_helpers import CPU_ENTRY, CpuKernels, build_cpu_library, gxx, random_case, torch_reference

pytestmark = pytest.mark.skipif(gxx() is None, reason="g++ not found: the CPU emulation of the CUDA kernels "
                                                       "cannot be built here")

# (N, C, G, H, W, K): odd sizes, W < K and H < K, depth-wise (C == G), Tiny's 48 channels in
# 8 groups, more channels per group than the kernel's accumulator block, batch 1 and 3.
SHAPES = [
    pytest.param(1, 6, 1, 5, 7, 3, id="n1-c6-g1-5x7-k3"),
    pytest.param(3, 12, 2, 9, 4, 5, id="n3-c12-g2-9x4-k5"),
    pytest.param(1, 48, 8, 11, 13, 7, id="n1-c48-g8-11x13-k7"),
    pytest.param(3, 20, 2, 6, 10, 7, id="n3-c20-g2-6x10-k7-chunked"),
    pytest.param(2, 9, 9, 3, 2, 5, id="n2-c9-g9-3x2-k5-depthwise"),
    pytest.param(1, 4, 2, 8, 6, 1, id="n1-c4-g2-8x6-k1"),
    pytest.param(1, 10, 1, 7, 12, 9, id="n1-c10-g1-7x12-k9"),
    pytest.param(1, 3, 3, 13, 5, 11, id="n1-c3-g3-13x5-k11"),
]


@pytest.fixture(scope="session")
def cpu_kernels(tmp_path_factory: pytest.TempPathFactory) -> CpuKernels:
    """Build the emulation once per test session (g++ takes a few seconds)."""
    return CpuKernels(build_cpu_library(tmp_path_factory.mktemp("dwconv_cpu")))


def test_shapes_cover_what_the_kernel_special_cases(cpu_kernels: CpuKernels) -> None:
    channels_per_group = [p.values[1] // p.values[2] for p in SHAPES]
    assert max(channels_per_group) > cpu_kernels.channel_block  # the channel-block loop runs twice
    assert {p.values[5] for p in SHAPES} <= set(cpu_kernels.kernel_sizes)
    assert {3, 5, 7} <= {p.values[5] for p in SHAPES} and {1, 3} <= {p.values[0] for p in SHAPES}


@pytest.mark.parametrize("n,c,g,h,w,k", SHAPES)
def test_float32_matches_torch_path(cpu_kernels: CpuKernels, n: int, c: int, g: int, h: int, w: int,
                                    k: int) -> None:
    x, kernels, grad_out = random_case(n, c, g, h, w, k, torch.float32, seed=n * 1000 + c * 10 + k)
    ref_out, ref_gx, ref_gk = torch_reference(x, kernels, grad_out, torch.float32)
    torch.testing.assert_close(cpu_kernels.forward(x, kernels), ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cpu_kernels.grad_input(grad_out, kernels), ref_gx, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cpu_kernels.grad_kernels(x, grad_out, g, k), ref_gk, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n,c,g,h,w,k", SHAPES)
def test_float64_matches_torch_path(cpu_kernels: CpuKernels, n: int, c: int, g: int, h: int, w: int,
                                    k: int) -> None:
    x, kernels, grad_out = random_case(n, c, g, h, w, k, torch.float64, seed=7 + k)
    ref_out, ref_gx, ref_gk = torch_reference(x, kernels, grad_out, torch.float64)
    torch.testing.assert_close(cpu_kernels.forward(x, kernels), ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cpu_kernels.grad_input(grad_out, kernels), ref_gx, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cpu_kernels.grad_kernels(x, grad_out, g, k), ref_gk, rtol=1e-12, atol=1e-12)


HALF_ULP = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}  # relative bound of one rounding


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("n,c,g,h,w,k", [SHAPES[1], SHAPES[2], SHAPES[3]])
def test_16bit_storage_is_rounded_once_from_float32_sums(cpu_kernels: CpuKernels, dtype: torch.dtype, n: int,
                                                         c: int, g: int, h: int, w: int, k: int) -> None:
    x, kernels, grad_out = random_case(n, c, g, h, w, k, dtype, seed=3)
    refs = torch_reference(x, kernels, grad_out, torch.float64)  # exact sums of the stored inputs
    results = (cpu_kernels.forward(x, kernels), cpu_kernels.grad_input(grad_out, kernels),
               cpu_kernels.grad_kernels(x, grad_out, g, k))
    for result, ref in zip(results, refs):
        assert result.dtype == dtype
        # within one rounding of the exact value ...
        torch.testing.assert_close(result.double(), ref, rtol=HALF_ULP[dtype] * 1.001, atol=1e-6)
        # ... and nearly always exactly the correctly rounded value: accumulating in the 16-bit
        # type instead of float32 would miss this on a large fraction of the outputs.
        assert (result == ref.to(dtype)).double().mean() > 0.99


@pytest.mark.parametrize("n,c,g,h,w,k", [SHAPES[1], SHAPES[3], SHAPES[7]])
def test_any_launch_shape_gives_identical_results(cpu_kernels: CpuKernels, n: int, c: int, g: int, h: int,
                                                  w: int, k: int) -> None:
    """Grid-stride loops: tiny grids and odd blocks compute the same outputs, bit for bit."""
    x, kernels, grad_out = random_case(n, c, g, h, w, k, torch.float32, seed=11)
    default = (cpu_kernels.forward(x, kernels), cpu_kernels.grad_input(grad_out, kernels),
               cpu_kernels.grad_kernels(x, grad_out, g, k))
    for launch in (((1, 1, 1), (1, 1, 1)), ((2, 3, 1), (32, 1, 1)), ((5, 1, 1), (7, 1, 1))):
        again = (cpu_kernels.forward(x, kernels, launch), cpu_kernels.grad_input(grad_out, kernels, launch),
                 cpu_kernels.grad_kernels(x, grad_out, g, k, launch))
        for a, b in zip(default, again):
            assert torch.equal(a, b), f"launch {launch} differs"


@pytest.mark.parametrize("strip", [1, 3, 4])
def test_every_strip_width_gives_the_same_bits(cpu_kernels: CpuKernels, tmp_path: Path, strip: int) -> None:
    """The gather passes sum each output's terms in the same order whatever the strip of outputs a
    thread takes (DWC_STRIP, a tuning knob): same bits as the launcher's strip, in every dtype,
    with a ragged last strip (W not a multiple of the strip) and rows narrower than the strip."""
    other = CpuKernels(build_cpu_library(tmp_path, strip=strip), strip=strip)
    for n, c, g, h, w, k in [p.values for p in SHAPES]:
        for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
            x, kernels, grad_out = random_case(n, c, g, h, w, k, dtype, seed=strip)
            assert torch.equal(other.forward(x, kernels), cpu_kernels.forward(x, kernels)), (n, c, g, h, w, k, dtype)
            assert torch.equal(other.grad_input(grad_out, kernels), cpu_kernels.grad_input(grad_out, kernels))


def test_production_launch_covers_every_output_once(cpu_kernels: CpuKernels) -> None:
    """More (n, g) planes than threads along y and a ragged last block: nothing left unwritten."""
    n, c, g, h, w, k = 3, 6, 3, 17, 19, 3  # 323 pixels: two 256-thread blocks, the second ragged
    x, kernels, grad_out = random_case(n, c, g, h, w, k, torch.float32, seed=5)
    grid, block = cupy_backend.launch_config(n, g, h, w)
    assert grid[0] * block[0] >= h * w and grid[1] == n * g
    out = cpu_kernels.forward(x, kernels)
    assert not out.isnan().any()
    torch.testing.assert_close(out, torch_reference(x, kernels, grad_out, torch.float32)[0], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# The 16-bit conversions that the kernels do in software on the CPU (bit manipulation shared with
# the GPU for bfloat16; the GPU's cvt instructions for float16), checked against torch's, which
# round to nearest even.
# ------------------------------------------------------------------------------------------------
def _all_16bit_patterns(dtype: torch.dtype) -> torch.Tensor:
    return torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(dtype)


def _float_probes(dtype: torch.dtype) -> torch.Tensor:
    """Every 16-bit value, every midpoint between neighbours and the floats next to each midpoint,
    plus random bit patterns, infinities, NaN, zeros, the overflow threshold and float32 subnormals."""
    values = _all_16bit_patterns(dtype).double()
    finite = values[torch.isfinite(values)].unique()
    mids = ((finite[1:] + finite[:-1]) / 2).float()
    below = torch.nextafter(mids, torch.full_like(mids, -float("inf")))
    above = torch.nextafter(mids, torch.full_like(mids, float("inf")))
    randoms = torch.randint(-2**31, 2**31 - 1, (200_000,), generator=torch.Generator().manual_seed(1),
                            dtype=torch.int64).to(torch.int32).view(torch.float32)
    specials = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 65504.0, 65519.99, 65520.0,
                             -65520.0, 1e-45, -1e-45, 2.0**-25, 2.0**-24, 1.5 * 2.0**-25, 3.4e38, -3.4e38],
                            dtype=torch.float32)
    return torch.cat([finite.float(), mids, below, above, randoms, specials])


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int16) if t.element_size() == 2 else t.view(torch.int32)


@pytest.mark.parametrize("dtype,name", [(torch.float16, "half"), (torch.bfloat16, "bfloat16")])
def test_widening_every_16bit_pattern_is_exact(cpu_kernels: CpuKernels, dtype: torch.dtype, name: str) -> None:
    patterns = _all_16bit_patterns(dtype)
    ours = cpu_kernels.convert(f"{name}_to_float", patterns.view(torch.int16), torch.float32)
    theirs = patterns.float()
    nan = theirs.isnan()
    assert torch.equal(ours.isnan(), nan)
    assert torch.equal(_bits(ours[~nan]), _bits(theirs[~nan]))


@pytest.mark.parametrize("dtype,name", [(torch.float16, "half"), (torch.bfloat16, "bfloat16")])
def test_narrowing_rounds_to_nearest_even(cpu_kernels: CpuKernels, dtype: torch.dtype, name: str) -> None:
    probes = _float_probes(dtype)
    ours = cpu_kernels.convert(f"float_to_{name}", probes, torch.int16).view(dtype)
    theirs = probes.to(dtype)
    nan = theirs.isnan()
    assert torch.equal(ours.isnan(), nan)
    mismatch = (_bits(ours) != _bits(theirs)) & ~nan
    assert not mismatch.any(), [struct.pack("<f", float(v)).hex() for v in probes[mismatch][:5]]


@pytest.mark.parametrize("body", ["__shared__ float tile[32]; (void)tile;", "__syncthreads();"])
def test_shim_refuses_what_a_sequential_loop_cannot_emulate(tmp_path: Path, body: str) -> None:
    """A kernel that shares memory between threads must not compile for the CPU at all."""
    unit = tmp_path / "sync.cpp"
    unit.write_text(f'#include "{CPU_ENTRY.parent / "cpu_shim.h"}"\n__global__ void k() {{ {body} }}\n')
    result = subprocess.run([gxx(), "-std=c++17", "-fsyntax-only", str(unit)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "CANNOT_EMULATE" in result.stderr or "needs real threads" in result.stderr


@pytest.mark.slow
def test_no_out_of_bounds_access_under_address_sanitizer(tmp_path: Path) -> None:
    """An out-of-bounds read that cannot change a result (say, a channel lane past the end of the
    tensor that is never stored) passes every comparison above but would be a real bug on a GPU.
    AddressSanitizer and UBSan see it; the probe uses exactly-sized numpy buffers, no torch."""
    compiler = gxx()
    libasan = subprocess.run([compiler, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(libasan) or not os.path.exists(libasan):
        pytest.skip("g++ has no AddressSanitizer runtime here")
    lib = tmp_path / "libdwconv_asan.so"
    build = subprocess.run([compiler, "-std=c++17", "-O0", "-g", "-fsanitize=address,undefined",
                            "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer", "-shared", "-fPIC",
                            str(CPU_ENTRY), "-o", str(lib)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    env = dict(os.environ, LD_PRELOAD=libasan, ASAN_OPTIONS="detect_leaks=0")
    probe = Path(__file__).with_name("kernels_asan_probe.py")
    result = subprocess.run([sys.executable, str(probe), str(lib)], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert "without an out-of-bounds access" in result.stdout
