"""DLGSANet on the CPU: our network against the naive official arithmetic, side by side in one run.

    python -m benchmarks.bench_cpu                 # from the repository root (no install needed)
    python -m benchmarks.bench_cpu --quick         # Tiny and Large x4 on 128x128, no memory part
    python -m benchmarks.bench_cpu --cases tiny:4:128 large:4:256 --repeats 5 --threads 1
    python -m benchmarks.bench_cpu --profile tiny:4:128      # top operators of both models

For every case (preset:scale:size; default Tiny, Light, Large x4 on 128x128 and 256x256 and Tiny
x2 on 256x256) it builds one random-weight model (default init plus noise, temperatures in
[0.3, 3], as the official fixtures were made), loads the same tensors into the naive reference
(``benchmarks/official_reference.py``: unfold dynamic conv, TLC windows in Python loops,
LayerNorm through reshapes), checks that both outputs agree within 1e-4, and times both in eval
mode, interleaved (ours, reference, ours, ...) so that a load spike hits both; it reports medians.

The fp32 GEMM roof is measured in the same run (best torch.mm rate over square sizes, at the
start and the end; the higher counts) with the same thread count. Multiply-accumulates are counted
from the layers of the model for the input size (:func:`count_macs`: every convolution, the
dynamic conv, the attention products per TLC window), so "share of roof" is 2 * MACs / seconds /
roof. Peak memory of whole-image inference (default Tiny x4 on 512x512) is measured in separate
processes, as the peak resident set size during the forward pass minus the size before it.

Wall-clock times on a shared machine are noisy; CPU seconds (process time) are printed too.
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable, Optional

import torch

import dlgsanet
from dlgsanet import DLGSANet, preset_config
from dlgsanet.model.mhdlsa import DynamicDWConv
from dlgsanet.model.sparse_gsa import SparseGSA
from dlgsanet.model.tlc import needs_windows, window_plan

HERE = Path(__file__).resolve().parent
DEFAULT_CASES = ["tiny:4:128", "tiny:4:256", "light:4:128", "light:4:256", "large:4:128", "large:4:256",
                 "tiny:2:256"]
QUICK_CASES = ["tiny:4:128", "large:4:128"]
TOLERANCE = 1e-4


def load_reference() -> ModuleType:
    """``official_reference.py`` from next to this file (loaded by path: benchmarks is no package)."""
    if "official_reference" in sys.modules:
        return sys.modules["official_reference"]
    spec = importlib.util.spec_from_file_location("official_reference", HERE / "official_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["official_reference"] = module
    spec.loader.exec_module(module)
    return module


def random_weights(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Default init plus noise, temperatures in [0.3, 3] (as the official fixtures were made)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("temperature"):
                p.copy_(torch.rand(p.shape, generator=gen) * 2.7 + 0.3)
            else:
                p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    return model


def build_pair(preset: str, scale: int, seed: int = 0) -> tuple[DLGSANet, torch.nn.Module]:
    ours = random_weights(DLGSANet(preset_config(preset, scale)), seed).eval()
    reference = load_reference().ReferenceDLGSANet.from_config(ours.config)
    reference.load_state_dict(ours.state_dict(), strict=True)
    return ours, reference.eval()


# --- counting -------------------------------------------------------------------------------------
def count_macs(model: DLGSANet, height: int, width: int) -> int:
    """Multiply-accumulates of one eval-mode forward pass on a ``height x width`` input, counted
    from the layers as the official arithmetic performs them: every convolution (all stride 1,
    'same' padding) at the feature size, the dynamic depth-wise conv (C * K * K per pixel), and per
    attention window (or the whole map without TLC) ``q k^T`` and ``attn v`` (C * C / heads per
    pixel each). Element-wise work (norms, activations, additions) is not counted."""
    pixels = height * width
    total = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            total += module.out_channels * (module.in_channels // module.groups) * kh * kw * pixels
        elif isinstance(module, DynamicDWConv):
            dim = module.conv1[0].in_channels
            total += dim * module.kernel_size ** 2 * pixels
        elif isinstance(module, SparseGSA):
            dim = module.project_out.in_channels
            window = module.window
            covered = pixels
            if needs_windows(height, width, window):
                plan = window_plan(height, width, window, torch.device("cpu"))
                covered = plan.count * plan.pixels
            total += 2 * dim * (dim // module.heads) * covered
    return total


def gemm_roof(sizes: tuple[int, ...] = (1024, 2048), repeats: int = 3) -> float:
    """Best fp32 GEMM rate (GFLOP/s) of torch.mm over square sizes: a roof is a maximum."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            best = max(best, 2 * n ** 3 / (time.perf_counter() - t) / 1e9)
    return best


# --- timing ---------------------------------------------------------------------------------------
@dataclass
class Timing:
    wall: list[float]
    cpu: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)


def timed(fn: Callable[[], object], into: Timing) -> None:
    gc.collect()
    c, t = time.process_time(), time.perf_counter()
    fn()
    into.wall.append(time.perf_counter() - t)
    into.cpu.append(time.process_time() - c)


def parse_case(text: str) -> tuple[str, int, int]:
    try:
        preset, scale, size = text.split(":")
        return preset.lower(), int(scale), int(size)
    except ValueError:
        raise SystemExit(f"bad case {text!r}: expected preset:scale:size, e.g. tiny:4:128") from None


def run_case(case: str, repeats: int, with_reference: bool, roof: float, threads: int) -> dict:
    preset, scale, size = parse_case(case)
    ours, reference = build_pair(preset, scale)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size))
    macs = count_macs(ours, size, size)
    mine, theirs = Timing([], []), Timing([], [])
    with torch.inference_mode():
        out = ours(x)  # warm-up (oneDNN primitives, allocator) and the output to compare
        diff = None
        if with_reference:
            diff = (reference(x) - out).abs().max().item()
        for i in range(repeats):  # interleaved, alternating who goes first
            order = [(ours, mine), (reference, theirs)] if with_reference else [(ours, mine)]
            for model, into in (order if i % 2 == 0 else order[::-1]):
                timed(lambda: model(x), into)
    row = dict(case=case, macs=macs, ours=mine.median, ours_cpu=mine.cpu_median, threads=threads,
               ours_gflops=2 * macs / mine.median / 1e9, roof_share=2 * macs / mine.median / 1e9 / roof)
    if with_reference:
        row.update(reference=theirs.median, reference_cpu=theirs.cpu_median, ratio=theirs.median / mine.median,
                   ratio_cpu=theirs.cpu_median / mine.cpu_median, ref_roof_share=2 * macs / theirs.median / 1e9 / roof,
                   max_diff=diff)
    return row


def print_rows(rows: list[dict], roof: float, threads: int) -> None:
    print(f"\nfp32 GEMM roof: {roof:.1f} GFLOP/s (torch.mm, {threads} thread(s)); times are medians, "
          f"wall-clock [CPU]")
    head = (f"{'case':<13} {'GMAC':>7} {'ours s':>16} {'reference s':>18} {'speed-up':>14} "
            f"{'ours GFLOP/s':>12} {'roof share':>15} {'ref roof':>8} {'max|diff|':>10}")
    print(head)
    print("-" * len(head))
    for r in rows:
        ours = f"{r['ours']:.3f} [{r['ours_cpu']:.3f}]"
        if "reference" in r:
            ref = f"{r['reference']:.3f} [{r['reference_cpu']:.3f}]"
            ratio = f"{r['ratio']:.2f}x [{r['ratio_cpu']:.2f}x]"
            tail = f"{r['ref_roof_share']:>7.1%} {r['max_diff']:>10.2e}"
        else:
            ref, ratio, tail = "-", "-", f"{'-':>7} {'-':>10}"
        share = f"{r['roof_share']:.1%} [{r['roof_share_cpu']:.1%}]"
        print(f"{r['case']:<13} {r['macs'] / 1e9:>7.2f} {ours:>16} {ref:>18} {ratio:>14} "
              f"{r['ours_gflops']:>12.1f} {share:>15} {tail}")


# --- memory ---------------------------------------------------------------------------------------
def _rss_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(which: str, preset: str, scale: int, size: int) -> None:
    """In a fresh process: peak RSS growth (MiB) during one whole-image forward pass."""
    ours, reference = build_pair(preset, scale)
    model = ours if which == "ours" else reference
    del ours, reference  # keep only the measured model alive
    with torch.inference_mode():
        model(torch.rand(1, 3, 16, 16))  # load libraries, warm up kernels
        x = torch.rand(1, 3, size, size)
        gc.collect()
        before = _rss_kib("VmRSS")
        reset = True
        try:  # reset the high-water mark to the current RSS (Linux >= 4.0)
            with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
                fh.write("5")
        except OSError:
            reset = False
        t = time.perf_counter()
        out = model(x)
        seconds = time.perf_counter() - t
        peak = _rss_kib("VmHWM")
    print(json.dumps(dict(which=which, peak_mib=(peak - before) / 1024, seconds=seconds, reset=reset,
                          output_mib=out.numel() * out.element_size() / 2 ** 20)))


def measure_memory(preset: str, scale: int, size: int, threads: int) -> dict:
    results = {}
    for which in ("ours", "reference"):
        cmd = [sys.executable, "-m", "benchmarks.bench_cpu", "--threads", str(threads),
               "--memory-child", which, preset, str(scale), str(size)]
        proc = subprocess.run(cmd, cwd=HERE.parent, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"memory measurement of {which} failed:\n{proc.stderr[-2000:]}")
        results[which] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results


# --- profile --------------------------------------------------------------------------------------
def profile_case(case: str, rows: int, with_reference: bool) -> None:
    from torch.profiler import ProfilerActivity, profile

    preset, scale, size = parse_case(case)
    ours, reference = build_pair(preset, scale)
    x = torch.rand(1, 3, size, size)
    models = [("ours", ours)] + ([("reference", reference)] if with_reference else [])
    with torch.inference_mode():
        for name, model in models:
            model(x)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                model(x)
            print(f"\n=== top operators, {name}, {case} (self CPU time) ===")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


# --- main -----------------------------------------------------------------------------------------
def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=None, help="preset:scale:size, e.g. tiny:4:128")
    parser.add_argument("--quick", action="store_true", help="Tiny and Large x4 on 128x128, 3 repeats, no memory")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each model per case (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-reference", action="store_true", help="time our model only")
    parser.add_argument("--memory", nargs="*", default=None, metavar="PRESET:SCALE:SIZE",
                        help="peak-memory cases (default tiny:4:512); give none to skip")
    parser.add_argument("--profile", metavar="CASE", help="print the top operators of both models and exit")
    parser.add_argument("--profile-rows", type=int, default=15)
    parser.add_argument("--memory-child", nargs=4, metavar=("WHICH", "PRESET", "SCALE", "SIZE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    if args.memory_child:
        which, preset, scale, size = args.memory_child
        memory_child(which, preset, int(scale), int(size))
        return 0
    print(f"dlgsanet {dlgsanet.__version__}, torch {torch.__version__}, {threads} thread(s), "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} CPUs visible")
    if args.profile:
        profile_case(args.profile, args.profile_rows, not args.no_reference)
        return 0
    cases = args.cases or (QUICK_CASES if args.quick else DEFAULT_CASES)
    repeats = max(1, args.repeats)
    memory_cases = [] if args.quick else (args.memory if args.memory is not None else ["tiny:4:512"])

    roof_start = gemm_roof()
    rows = []
    for case in cases:
        row = run_case(case, repeats, not args.no_reference, roof_start, threads)
        rows.append(row)
        diff = f", max |diff| {row['max_diff']:.2e}" if "max_diff" in row else ""
        ratio = f", speed-up {row['ratio']:.2f}x" if "ratio" in row else ""
        print(f"  {case}: ours {row['ours']:.3f} s{ratio}{diff}", flush=True)
    roof = max(roof_start, gemm_roof())
    for row in rows:  # the roof is the best rate seen in the run
        row["roof_share"] = row["ours_gflops"] / roof
        # CPU seconds / threads: the time the work took when it had the cores (load-independent)
        row["roof_share_cpu"] = 2 * row["macs"] / (row["ours_cpu"] / threads) / 1e9 / roof
        if "reference" in row:
            row["ref_roof_share"] = 2 * row["macs"] / row["reference"] / 1e9 / roof
    print_rows(rows, roof, threads)

    failures = [r["case"] for r in rows if r.get("max_diff") is not None and not r["max_diff"] <= TOLERANCE]
    for case in memory_cases:
        preset, scale, size = parse_case(case)
        mem = measure_memory(preset, scale, size, threads)
        o, r = mem["ours"], mem["reference"]
        print(f"\npeak memory, whole-image inference {case} (RSS growth during the forward pass, separate "
              f"processes): ours {o['peak_mib']:.0f} MiB ({o['seconds']:.1f} s), reference {r['peak_mib']:.0f} MiB "
              f"({r['seconds']:.1f} s); ratio {r['peak_mib'] / max(o['peak_mib'], 1e-9):.1f}x; "
              f"output alone {o['output_mib']:.0f} MiB")
        if o["peak_mib"] > r["peak_mib"]:
            failures.append(f"memory {case}")
    if failures:
        print(f"\nFAILED: {', '.join(failures)}")
        return 1
    print("\nall outputs agree with the reference within 1e-4" if not args.no_reference else "")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
