"""CPU training steps of DLGSANet: the plain PyTorch path against the faster CPU-training path, one run.

    python benchmarks/bench_train.py                               # Tiny x4 (16, 48) and Tiny x2 (16, 24)
    python -m benchmarks.bench_train                               # the same, from the repository root
    python -m benchmarks.bench_train --threads 1 --repeats 5
    python -m benchmarks.bench_train --cases tiny:4:16:48 --profile  # top operators of both paths

A case is preset:scale:batch:lr_size. For each, one random-weight model (as ``bench_cpu``) is
trained on random batches with the recipe of ``dlgsanet.train``: forward in train mode (global
attention over the whole patch), L1 loss, backward, Adam step. "current" is the plain PyTorch
path (``cpu_training_kernels(False)``, what ``DLGSANET_TRAIN_KERNELS=off`` gives users), "new" the
default. Steps are interleaved (current, new, current, ... alternating who goes first) so a load
spike on a shared machine hits both, after one warm-up step each; medians are reported.

Before timing, both paths run one backward pass from the same weights, batch and output gradient,
and the largest relative gradient difference over all parameters is printed (it must stay below
1e-4; see :func:`gradient_difference` for why not the L1 loss's gradient).

FLOPs: a training step is counted as 3x the forward's multiply-accumulates (``bench_cpu``'s
:func:`count_macs`, train mode: whole-patch attention), i.e. forward, grad of the input and grad
of the weights; "GFLOP/s" is 2 * 3 * MACs / seconds, and "roof" that rate over the best fp32
``torch.mm`` rate measured in the same run with the same thread count (at the start and the end).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F

from dlgsanet import DLGSANet, preset_config
from dlgsanet.ops.cpu_training import cpu_training_kernels

if __package__:
    from .bench_cpu import count_macs, gemm_roof, random_weights
else:  # run as a script (python benchmarks/bench_train.py): benchmarks is no package then
    import importlib.util
    from pathlib import Path

    _spec = importlib.util.spec_from_file_location("bench_cpu", Path(__file__).resolve().parent / "bench_cpu.py")
    assert _spec is not None and _spec.loader is not None
    _bench_cpu = importlib.util.module_from_spec(_spec)
    sys.modules["bench_cpu"] = _bench_cpu  # its dataclasses look their module up there
    _spec.loader.exec_module(_bench_cpu)
    count_macs, gemm_roof, random_weights = _bench_cpu.count_macs, _bench_cpu.gemm_roof, _bench_cpu.random_weights

DEFAULT_CASES = ["tiny:4:16:48", "tiny:2:16:24"]
PATHS = (("current", False), ("new", True))


def parse_case(text: str) -> tuple[str, int, int, int]:
    try:
        preset, scale, batch, size = text.split(":")
        return preset.lower(), int(scale), int(batch), int(size)
    except ValueError:
        raise SystemExit(f"bad case {text!r}: expected preset:scale:batch:lr_size, e.g. tiny:4:16:48") from None


class Trainer:
    """A model, its Adam and one fixed batch: ``step()`` is one training step of ``dlgsanet.train``."""

    def __init__(self, model: DLGSANet, lr_batch: torch.Tensor, hr_batch: torch.Tensor) -> None:
        self.model = model.train()
        self.optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.99))
        self.lr_batch, self.hr_batch = lr_batch, hr_batch

    def step(self) -> None:
        loss = F.l1_loss(self.model(self.lr_batch), self.hr_batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def gradient_difference(model: DLGSANet, lr_batch: torch.Tensor, hr_batch: torch.Tensor) -> float:
    """Largest over parameters of ``max|g_new - g_current| / max|g_current|``, for one fixed random
    gradient of the output. Not the L1 loss's: its gradient is the sign of (output - target),
    which flips wherever the two paths' outputs straddle the target by a rounding error, and those
    flips alone move the gradients of a few parameters by 1e-4 to 1e-3 relative."""
    grad_out = torch.randn(hr_batch.shape, generator=torch.Generator().manual_seed(1))
    grads = []
    for _, enabled in PATHS:
        model.zero_grad(set_to_none=True)
        with cpu_training_kernels(enabled):
            model(lr_batch).backward(grad_out)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    model.zero_grad(set_to_none=True)
    current, new = grads
    return max(((new[n] - g).abs().max() / g.abs().max().clamp_min(1e-30)).item() for n, g in current.items())


def timed(fn: Callable[[], None]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run_case(case: str, repeats: int, roof: float) -> dict:
    preset, scale, batch, size = parse_case(case)
    gen = torch.Generator().manual_seed(size)
    model = random_weights(DLGSANet(preset_config(preset, scale)).train())
    lr_batch = torch.rand(batch, 3, size, size, generator=gen)
    hr_batch = torch.rand(batch, 3, size * scale, size * scale, generator=gen)
    diff = gradient_difference(model, lr_batch, hr_batch)
    trainers = {name: Trainer(copy.deepcopy(model), lr_batch, hr_batch) for name, _ in PATHS}
    times: dict[str, list[float]] = {name: [] for name, _ in PATHS}
    for i in range(repeats + 1):  # the first round warms up (oneDNN primitives, allocator, kernels)
        for name, enabled in (PATHS if i % 2 == 0 else PATHS[::-1]):
            with cpu_training_kernels(enabled):
                seconds = timed(trainers[name].step)
            if i:
                times[name].append(seconds)
    flops = 2 * 3 * count_macs(model, size, size) * batch
    row = dict(case=case, gflop=flops / 1e9, diff=diff)
    for name, _ in PATHS:
        median = statistics.median(times[name])
        row[name] = median
        row[f"{name}_gflops"] = flops / median / 1e9
        row[f"{name}_roof"] = flops / median / 1e9 / roof
    row["ratio"] = row["current"] / row["new"]
    return row


def print_rows(rows: list[dict], roof: float, threads: int, repeats: int) -> None:
    print(f"\nfp32 GEMM roof: {roof:.1f} GFLOP/s (torch.mm, {threads} thread(s)); medians of {repeats} "
          f"interleaved steps; a step counted as 3x the forward's MACs")
    head = (f"{'case (preset:scale:batch:LR)':<30} {'GFLOP':>6} {'current s':>10} {'new s':>8} {'speed-up':>9} "
            f"{'cur GFLOP/s':>11} {'new GFLOP/s':>11} {'cur roof':>9} {'new roof':>9} {'max rel grad diff':>18}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['case']:<30} {r['gflop']:>6.1f} {r['current']:>10.3f} {r['new']:>8.3f} {r['ratio']:>8.2f}x "
              f"{r['current_gflops']:>11.1f} {r['new_gflops']:>11.1f} {r['current_roof']:>9.1%} "
              f"{r['new_roof']:>9.1%} {r['diff']:>18.2e}")


def profile_case(case: str, rows: int = 15) -> None:
    """Top operators (self CPU time) of one step of each path, after a warm-up step."""
    from torch.profiler import ProfilerActivity, profile

    preset, scale, batch, size = parse_case(case)
    model = random_weights(DLGSANet(preset_config(preset, scale)).train())
    lr_batch, hr_batch = torch.rand(batch, 3, size, size), torch.rand(batch, 3, size * scale, size * scale)
    for name, enabled in PATHS:
        trainer = Trainer(copy.deepcopy(model), lr_batch, hr_batch)
        with cpu_training_kernels(enabled):
            trainer.step()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                trainer.step()
        print(f"\n{case}, {name} path:")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES),
                        help="comma-separated preset:scale:batch:lr_size (default %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per path (default %(default)s)")
    parser.add_argument("--profile", action="store_true", help="print the top operators instead of timing")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    cases = [c for c in args.cases.split(",") if c]
    if args.profile:
        for case in cases:
            profile_case(case)
        return
    roof = gemm_roof()
    rows = []
    for case in cases:
        rows.append(run_case(case, args.repeats, roof))
        print(f"{case}: current {rows[-1]['current']:.3f} s, new {rows[-1]['new']:.3f} s", file=sys.stderr)
    roof = max(roof, gemm_roof())
    for r in rows:  # the roof is the best rate seen, so recompute the shares with it
        for name, _ in PATHS:
            r[f"{name}_roof"] = r[f"{name}_gflops"] / roof
    print_rows(rows, roof, threads, args.repeats)


if __name__ == "__main__":
    main()
