"""The CPU benchmarks' bookkeeping: the multiply-accumulate count, the smallest run, the ablation steps."""
from __future__ import annotations

import importlib.util
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import REPO_ROOT
from dlgsanet import DLGSANetConfig
from dlgsanet.model.mhdlsa import DynamicDWConv
from dlgsanet.cpu import fused as cpu_kernels


def load_bench():
    name = "bench_cpu_under_test"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / "bench_cpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("size,tlc", [((23, 31), 10), ((12, 12), 48), ((17, 9), 0)])
def test_mac_count_agrees_with_torch_flop_counter(size: tuple[int, int], tlc: int) -> None:
    """Independent count: torch's FlopCounterMode on the naive reference sees every convolution
    and attention matmul (2 FLOPs per MAC) but not the unfold dynamic conv (a multiply and a sum),
    which is added by hand: C * K * K per pixel per local block."""
    bench = load_bench()
    config = DLGSANetConfig(dim=12, groups=2, blocks=2, local_heads=3, global_heads=4, window=5, scale=3,
                            tlc_window=tlc)
    ours = bench.DLGSANet(config).eval()
    reference = bench.load_reference().ReferenceDLGSANet.from_config(config).eval()
    h, w = size
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        reference(torch.rand(1, 3, h, w))
    local_blocks = sum(isinstance(m, DynamicDWConv) for m in ours.modules())
    dynamic = local_blocks * config.dim * config.window ** 2 * h * w
    assert bench.count_macs(ours, h, w) == counter.get_total_flops() // 2 + dynamic


def test_count_macs_grows_with_overlapping_windows() -> None:
    """TLC windows overlap on sizes that are not multiples of the window: more attention work."""
    bench = load_bench()
    model = bench.DLGSANet(DLGSANetConfig(dim=12, groups=1, blocks=1, local_heads=3, global_heads=3,
                                          window=5, scale=2, tlc_window=8)).eval()
    no_overlap = bench.count_macs(model, 16, 16)
    model.set_tlc_window(None)
    assert bench.count_macs(model, 16, 16) == no_overlap  # 2x2 windows tile 16x16 exactly
    model.set_tlc_window(8)
    overlap = bench.count_macs(model, 15, 15) / (15 * 15)
    model.set_tlc_window(None)
    assert overlap > bench.count_macs(model, 15, 15) / (15 * 15)


@pytest.mark.slow
def test_benchmark_runs_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench()
    assert bench.main(["--cases", "tiny:4:24", "--repeats", "1", "--threads", "1", "--memory"]) == 0
    out = capsys.readouterr().out
    assert "tiny:4:24" in out and "fp32 GEMM roof" in out and "agree with the reference" in out


def test_ablation_steps_all_compute_the_reference_function() -> None:
    """Every step of the ablation (the reference patched step by step, then our network on both
    paths) must agree with the naive reference within 1e-4, or the script exits non-zero. 56x56 at
    x4 has 2x2 overlapping TLC windows, so the batched-window step is exercised."""
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "benchmarks.ablation_cpu", "--case", "tiny:4:56", "--repeats", "1",
                           "--threads", "1"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = [line.split()[0] for line in proc.stdout.splitlines() if line[:1].isdigit()]
    fused = cpu_kernels.usable(torch.zeros(1))  # the last step, where the C++ kernels build
    assert steps == ["1", "2", "3", "4", "5", "6"] + (["7", "8", "9", "10"] if fused else [])
    assert ("C++ MHDLSA in/out (default)" in proc.stdout) == fused
