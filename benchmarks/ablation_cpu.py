"""What each CPU speed change buys: from the naive official arithmetic to our network, one step at a time.

    python -m benchmarks.ablation_cpu                          # Tiny x4 on 128x128, torch's threads
    python -m benchmarks.ablation_cpu --case large:4:128 --threads 1 --repeats 3

Every variant computes the same function on the same random weights (checked against the naive
reference within 1e-4) and is timed in the same run, interleaved, medians reported, each step
against the one before it and against the reference. The steps are cumulative:

1. the naive reference (``official_reference.py``: unfold dynamic conv, hand-written LayerNorm
   through reshapes, TLC windows cut and pasted one by one in Python loops);
2. + the dynamic depth-wise conv as K*K shifted multiply-adds (``dynamic_dwconv_torch``) instead of
   materialising every K x K patch with unfold;
3. + PyTorch's fused ``layer_norm`` (one pass) instead of mean, variance and four element-wise ops;
4. + all TLC windows gathered and summed back with one ``index_select`` / ``index_add_``;
5. our network on its whole-image path: channels-last maps, 1x1 convs as GEMMs on transposed
   operands, the attention's Gram matrix taken before normalising and ``project_out`` folded into
   it, oneDNN called directly;
6. our network as it runs for inference with PyTorch ops only: each block band by band of rows
   (intermediates stay in cache, reused buffers, no page faults);
7. (with more than one thread) the bands enlarged for the thread count (``thread_band_scale``):
   step 6 is then timed with one-core bands;
8. + the fused C++ dynamic conv (``kernels/cpu_fused.cpp``: per-pixel kernels made and used a few
   pixels at a time);
9. + the whole feed-forward and SparseGSA's qkv in one C++ pass each (three rows at a time,
   LayerNorm included, our own GEMM micro-kernel);
10. + SparseGSA's windowed attention, projection and average in one C++ call;
11. + MHDLSA's LayerNorm, conv0 and hyper-network 1x1 in one C++ pass, and conv1 plus the residual
   in another: the default where the kernels build.
   Steps 5-7 run with ``DLGSANET_CPU_KERNELS=off``; steps 8-10 withhold the later kernels. With
   one thread there is no step 7, and the steps after it move up by one.

Steps 2-5 patch the reference or our modules inside this process only; that is what an ablation is.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from contextlib import ExitStack, contextmanager
from typing import Callable, Iterator, Optional

import torch
import torch.nn.functional as F

import dlgsanet
import dlgsanet.cpu.bands as bands
import dlgsanet.cpu.network as cpu_network
from dlgsanet.cpu import fused as cpu_kernels
from dlgsanet.ops.dynamic_dwconv.torch_backend import dynamic_dwconv_torch
from dlgsanet.model.tlc import needs_windows, window_plan

from .bench_cpu import TOLERANCE, Timing, build_pair, load_reference, parse_case, timed


@contextmanager
def patched(owner: object, name: str, value: object) -> Iterator[None]:
    before = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, before)


@contextmanager
def environment(name: str, value: str) -> Iterator[None]:
    """Set environment variable ``name`` to ``value`` inside the block, then restore it."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def fused_layer_norm(self, x: torch.Tensor) -> torch.Tensor:
    """The reference's channel LayerNorm as one ``F.layer_norm`` over channels-last pixels."""
    body = self.body
    y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), body.weight, body.bias, 1e-5)
    return y.permute(0, 3, 1, 2).contiguous()  # NCHW again, as the reference's to_map gives


def batched_windows_forward(self, x: torch.Tensor) -> torch.Tensor:
    """The reference's SparseAttention with all TLC windows in one gather and one scatter-add."""
    ref = load_reference()
    h, w = x.shape[-2:]
    qkv = self.qkv_dwconv(self.qkv(x))
    if self.training or not needs_windows(h, w, self.tlc_kernel):
        return self.project_out(ref.merge_heads(self._attend(qkv), h, w))
    b, c3 = qkv.shape[:2]
    plan = window_plan(h, w, self.tlc_kernel, x.device)
    index = plan.batch_index(b)
    flat = qkv.permute(0, 2, 3, 1).reshape(b * h * w, c3)
    windows = flat.index_select(0, index).view(b * plan.count, plan.window_h, plan.window_w, c3)
    out = self._attend(windows.permute(0, 3, 1, 2))                      # [n, heads, d, pixels]
    out = out.reshape(b * plan.count, c3 // 3, plan.pixels).transpose(1, 2).reshape(-1, c3 // 3)
    total = qkv.new_zeros(b * h * w, c3 // 3).index_add_(0, index, out)
    mean = total.view(b, h, w, c3 // 3) / plan.coverage
    return self.project_out(mean.permute(0, 3, 1, 2))


def never(*_: object) -> bool:
    return False


Variant = tuple[str, torch.nn.Module, Callable[[ExitStack], None]]


def variants(ours: torch.nn.Module, reference: torch.nn.Module) -> list[Variant]:
    ref = load_reference()

    def step2(stack: ExitStack) -> None:
        stack.enter_context(patched(ref, "unfold_dynamic_dwconv", dynamic_dwconv_torch))

    def step3(stack: ExitStack) -> None:
        step2(stack)
        stack.enter_context(patched(ref.LayerNorm, "forward", fused_layer_norm))

    def step4(stack: ExitStack) -> None:
        step3(stack)
        stack.enter_context(patched(ref.SparseAttention, "forward", batched_windows_forward))

    def torch_ops(stack: ExitStack) -> None:
        stack.enter_context(environment(cpu_kernels.ENV_VAR, "off"))

    def whole_image_path(stack: ExitStack) -> None:
        torch_ops(stack)
        stack.enter_context(patched(cpu_network, "cpu_inference", never))

    def one_core_bands(stack: ExitStack) -> None:
        torch_ops(stack)
        stack.enter_context(patched(bands, "MAX_BAND_SCALE", 1))

    out: list[Variant] = [
        ("1 naive reference", reference, lambda stack: None),
        ("2 + shifted multiply-add dynamic conv", reference, step2),
        ("3 + fused LayerNorm", reference, step3),
        ("4 + batched TLC windows", reference, step4),
        ("5 ours, whole-image path", ours, whole_image_path),
    ]
    if torch.get_num_threads() > 1:
        out.append(("6 ours, banded (one-core bands)", ours, one_core_bands))
        out.append(("7 ours, banded, bands for the threads", ours, torch_ops))
    else:
        out.append(("6 ours, banded", ours, torch_ops))

    def withheld(*names: str) -> Callable[[ExitStack], None]:
        return lambda stack: stack.enter_context(cpu_kernels.withheld(*names))

    if cpu_kernels.usable(next(ours.parameters())):  # the C++ kernels one after another
        steps = [("dynamic conv", "dynamic_conv"), ("feed-forward and qkv", "gdfn", "conv1x1_dw3x3"),
                 ("window attention", "window_attention"), ("MHDLSA in/out (default)", "mhdlsa_in_out")]
        for i, (label, *_) in enumerate(steps):
            later = [name for step in steps[i + 1:] for name in step[1:]]
            out.append((f"{len(out) + 1} + C++ {label}", ours, withheld(*later)))
    else:
        print("fused C++ kernels unavailable here: their steps are left out", file=sys.stderr)
    return out


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", default="tiny:4:128", help="preset:scale:size")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each variant (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    preset, scale, size = parse_case(args.case)
    ours, reference = build_pair(preset, scale)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size))
    steps = variants(ours, reference)
    print(f"dlgsanet {dlgsanet.__version__}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"case {args.case}, {args.repeats} repeats", flush=True)
    times = {name: Timing([], []) for name, _, _ in steps}
    with torch.no_grad():
        expected = reference(x)
        for name, model, setup in steps:  # warm-up and agreement check
            with ExitStack() as stack:
                setup(stack)
                diff = float((model(x) - expected).abs().max())
            if diff > TOLERANCE:
                raise SystemExit(f"{name}: differs from the reference by {diff:.2e} (> {TOLERANCE})")
        for i in range(args.repeats):
            for name, model, setup in (steps if i % 2 == 0 else steps[::-1]):
                with ExitStack() as stack:
                    setup(stack)
                    timed(lambda: model(x), times[name])
    base = statistics.median(times[steps[0][0]].wall)
    previous = base
    print(f"\n{'step':<42} {'seconds':>8} {'vs previous':>12} {'vs reference':>13}")
    for name, _, _ in steps:
        t = statistics.median(times[name].wall)
        print(f"{name:<42} {t:>8.3f} {previous / t:>11.2f}x {base / t:>12.2f}x")
        previous = t
    return 0


if __name__ == "__main__":
    sys.exit(main())
