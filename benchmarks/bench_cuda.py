"""CUDA kernels (cupy backend) against the PyTorch path, measured side by side in one run.

    python benchmarks/bench_cuda.py            # everything below
    python benchmarks/bench_cuda.py --quick    # Tiny only, 256x256, fewer repetitions
    python benchmarks/bench_cuda.py --profile large:512:fp32 tiny:256:fp16   # where the GPU time goes

Part 1, the operator alone: dynamic_dwconv forward, and forward + backward, at the shapes the
presets produce (Tiny/Light: 48 channels in 8 groups; Large: 90 channels in 15 groups; K = 7) on
256x256 and 512x512 feature maps, batch 1, in float32 / float16 / bfloat16.
Part 2, the channel LayerNorm alone at 48 and 90 channels: PyTorch's fused kernel against the
reductions path that CUDA inference takes.
Part 3, the whole network: Tiny / Light / Large x4 (random weights, eval mode, TLC windows) on
256x256 and 512x512 inputs in float32 / float16 / bfloat16, with DLGSANET_BACKEND=torch vs cupy;
then on the largest size with the LayerNorm by F.layer_norm vs by reductions.

Times are medians of CUDA-event timings after warm-up; "speed-up" is torch time / cupy time;
"max |diff|" compares the two backends' outputs; peak memory is torch's allocator peak. Without a
CUDA device, or without a working cupy backend, it says so and exits with status 0.
"""
from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
from pathlib import Path
from typing import Callable, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import dlgsanet  # noqa: E402
from dlgsanet.model import layers  # noqa: E402
from dlgsanet.ops.dynamic_dwconv import cupy_backend  # noqa: E402
from dlgsanet.ops.dynamic_dwconv.torch_backend import dynamic_dwconv_torch  # noqa: E402

dispatch = importlib.import_module("dlgsanet.ops.dynamic_dwconv")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# (label, channels, groups): what DynamicDWConv makes of each preset (groups = dim / heads).
OP_SHAPES = [("Tiny/Light", 48, 8), ("Large", 90, 15)]


def cuda_time_ms(fn: Callable[[], object], reps: int, warmup: int = 3) -> float:
    """Median milliseconds of ``fn`` on the current stream, by CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def row(cells: List[str], widths: List[int]) -> str:
    return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))


OP_WIDTHS = [34, 6, 10, 10, 9, 10]
MODEL_WIDTHS = [22, 6, 11, 11, 9, 10, 11, 11]


def bench_operator(sizes: List[int], dtypes: List[str], reps: int) -> None:
    print("\n== dynamic_dwconv alone (batch 1, K=7) ==")
    print(row(["case", "dtype", "torch ms", "cupy ms", "speed-up", "max|diff|"], OP_WIDTHS))
    for label, channels, groups in OP_SHAPES:
        for size in sizes:
            for dtype_name in dtypes:
                dtype = DTYPES[dtype_name]
                x = torch.randn(1, channels, size, size, device="cuda", dtype=dtype)
                k = (torch.randn(1, groups, 7, 7, size, size, device="cuda") / 7).to(dtype)
                grad = torch.randn_like(x)
                with torch.no_grad():
                    diff = (cupy_backend.dynamic_dwconv_cupy(x, k).float() - dynamic_dwconv_torch(x, k).float())
                    diff = diff.abs().max().item()
                for mode in ("forward", "fwd+bwd"):
                    def run(backend: str) -> None:
                        if mode == "forward":
                            with torch.no_grad():
                                dispatch.dynamic_dwconv(x, k, backend=backend)
                        else:
                            xr, kr = x.detach().requires_grad_(), k.detach().requires_grad_()
                            dispatch.dynamic_dwconv(xr, kr, backend=backend).backward(grad)

                    t_torch = cuda_time_ms(lambda: run("torch"), reps)
                    t_cupy = cuda_time_ms(lambda: run("cupy"), reps)
                    print(row([f"{label} C{channels} G{groups} {size}x{size} {mode}", dtype_name,
                               f"{t_torch:.3f}", f"{t_cupy:.3f}", f"{t_torch / t_cupy:.2f}x", f"{diff:.2e}"],
                              OP_WIDTHS), flush=True)


def bench_model(presets: List[str], sizes: List[int], dtypes: List[str], reps: int) -> None:
    print("\n== whole network x4 (batch 1, eval, inference_mode) ==")
    print(row(["case", "dtype", "torch ms", "cupy ms", "speed-up", "max|diff|", "torch MiB", "cupy MiB"],
              MODEL_WIDTHS))
    for preset in presets:
        for dtype_name in dtypes:
            dtype = DTYPES[dtype_name]
            torch.manual_seed(0)
            model = dlgsanet.DLGSANet(dlgsanet.preset_config(preset, 4)).eval().to("cuda", dtype)
            for size in sizes:
                image = torch.rand(1, 3, size, size, device="cuda", dtype=dtype)
                results = {}
                for backend in ("torch", "cupy"):
                    os.environ[dispatch.ENV_VAR] = backend
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                    try:
                        with torch.inference_mode():
                            out = model(image)
                            ms = cuda_time_ms(lambda: model(image), reps, warmup=1)
                        results[backend] = (ms, out.float(), torch.cuda.max_memory_allocated() / 2**20)
                    except torch.cuda.OutOfMemoryError:
                        results[backend] = (float("nan"), None, float("nan"))
                    finally:
                        os.environ.pop(dispatch.ENV_VAR, None)
                (t_torch, out_torch, mem_torch), (t_cupy, out_cupy, mem_cupy) = results["torch"], results["cupy"]
                diff = ((out_torch - out_cupy).abs().max().item()
                        if out_torch is not None and out_cupy is not None else float("nan"))
                print(row([f"{preset} {size}x{size}", dtype_name, f"{t_torch:.2f}", f"{t_cupy:.2f}",
                           f"{t_torch / t_cupy:.2f}x", f"{diff:.2e}", f"{mem_torch:.0f}", f"{mem_cupy:.0f}"],
                          MODEL_WIDTHS), flush=True)
            del model
            torch.cuda.empty_cache()


LN_WIDTHS = [30, 6, 14, 16, 9, 10]


def bench_layer_norm(size: int, dtypes: List[str], reps: int) -> None:
    """The channel LayerNorm at the presets' widths: PyTorch's fused kernel against the
    reductions path that CUDA inference takes (dlgsanet.model.layers.channel_layer_norm)."""
    print(f"\n== channel LayerNorm alone (batch 1, {size}x{size} map, channels last, inference) ==")
    print(row(["case", "dtype", "F.layer_norm ms", "reductions ms", "speed-up", "max|diff|"], LN_WIDTHS))
    for channels in (48, 90):
        for dtype_name in dtypes:
            dtype = DTYPES[dtype_name]
            x = torch.randn(1, size, size, channels, device="cuda").to(dtype)
            weight, bias = torch.randn(channels, device="cuda").to(dtype), torch.randn(channels, device="cuda").to(dtype)
            with torch.inference_mode():
                fused = lambda: torch.nn.functional.layer_norm(x, (channels,), weight, bias, 1e-5)  # noqa: E731
                ours = lambda: layers.channel_layer_norm(x, weight, bias, 1e-5)  # noqa: E731
                diff = (fused().float() - ours().float()).abs().max().item()
                t_fused, t_ours = cuda_time_ms(fused, reps), cuda_time_ms(ours, reps)
            print(row([f"C{channels}", dtype_name, f"{t_fused:.3f}", f"{t_ours:.3f}", f"{t_fused / t_ours:.2f}x",
                       f"{diff:.2e}"], LN_WIDTHS), flush=True)


def bench_model_layer_norm(presets: List[str], size: int, dtypes: List[str], reps: int) -> None:
    """The whole network (default backend) with every channel LayerNorm by F.layer_norm, then by
    the reductions path: what the latter buys end to end."""
    print(f"\n== whole network x4 ({size}x{size}, batch 1): channel LayerNorm by F.layer_norm vs reductions ==")
    print(row(["case", "dtype", "F.layer_norm ms", "reductions ms", "speed-up", "max|diff|"], LN_WIDTHS))
    default = layers.CUDA_REDUCTION_LAYER_NORM_CHANNELS
    for preset in presets:
        for dtype_name in dtypes:
            dtype = DTYPES[dtype_name]
            torch.manual_seed(0)
            model = dlgsanet.DLGSANet(dlgsanet.preset_config(preset, 4)).eval().to("cuda", dtype)
            image = torch.rand(1, 3, size, size, device="cuda", dtype=dtype)
            results = []
            for limit in (0, default):
                layers.CUDA_REDUCTION_LAYER_NORM_CHANNELS = limit
                try:
                    with torch.inference_mode():
                        out = model(image).float()
                        results.append((cuda_time_ms(lambda: model(image), reps, warmup=1), out))
                finally:
                    layers.CUDA_REDUCTION_LAYER_NORM_CHANNELS = default
            (t_fused, out_fused), (t_ours, out_ours) = results
            print(row([f"{preset} {size}x{size}", dtype_name, f"{t_fused:.2f}", f"{t_ours:.2f}",
                       f"{t_fused / t_ours:.2f}x", f"{(out_fused - out_ours).abs().max().item():.2e}"], LN_WIDTHS),
                  flush=True)
            del model
            torch.cuda.empty_cache()


def profile_model(cases: List[str], rows: int) -> None:
    """torch.profiler over the whole network: the kernels that take the GPU's time, and how much
    of the wall time the GPU is busy at all (low: launch-bound, the CPU cannot feed it)."""
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    for case in cases:
        preset, size, dtype_name = case.split(":")
        dtype = DTYPES[dtype_name]
        torch.manual_seed(0)
        model = dlgsanet.DLGSANet(dlgsanet.preset_config(preset, 4)).eval().to("cuda", dtype)
        image = torch.rand(1, 3, int(size), int(size), device="cuda", dtype=dtype)
        with torch.inference_mode():
            for _ in range(2):
                model(image)
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(3):
                    model(image)
                end.record()
                end.synchronize()
        events = prof.key_averages()
        busy_us = sum(e.self_device_time_total for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
        wall_ms = start.elapsed_time(end) / 3
        print(f"\n== profile {case}: {wall_ms:.2f} ms a forward pass, GPU busy {busy_us / 3000:.2f} ms "
              f"({busy_us / 30 / wall_ms:.0f} %) ==")
        print(events.table(sort_by="self_device_time_total", row_limit=rows, max_name_column_width=60))
        del model
        torch.cuda.empty_cache()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Tiny only, 256x256, 5 repetitions")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--presets", nargs="+", default=["tiny", "light", "large"])
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["fp32", "fp16", "bf16"])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--profile", nargs="+", metavar="PRESET:SIZE:DTYPE",
                        help="instead of timing: profile the whole network, e.g. large:512:fp32 tiny:256:fp16")
    parser.add_argument("--rows", type=int, default=25, help="kernels listed per profile")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.presets, args.reps = [256], ["tiny"], 5

    if not torch.cuda.is_available():
        print("bench_cuda: no CUDA device here; nothing measured (run it on a machine with an NVIDIA GPU).")
        return 0
    probe_x = torch.zeros(1, 2, 4, 4, device="cuda")
    reason = cupy_backend.unavailable_reason(probe_x, torch.zeros(1, 1, 7, 7, 4, 4, device="cuda"))
    if reason:
        print(f"bench_cuda: the cupy backend cannot run here: {reason}")
        return 0
    cupy = cupy_backend.import_cupy()
    props = torch.cuda.get_device_properties(0)
    print(f"device: {props.name} (sm_{props.major}{props.minor}, {props.multi_processor_count} SMs, "
          f"{props.total_memory / 2**30:.0f} GiB); torch {torch.__version__} (CUDA {torch.version.cuda}); "
          f"cupy {cupy.__version__}; TF32 convolutions {'on' if torch.backends.cudnn.allow_tf32 else 'off'}, "
          f"TF32 matmul {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'} (torch's defaults: fp32 rows "
          f"of the two backends may differ by ~1e-3 through cuDNN's algorithm choice)")
    torch.backends.cudnn.benchmark = True
    if args.profile:
        profile_model(args.profile, args.rows)
        return 0
    bench_operator(args.sizes, args.dtypes, args.reps)
    bench_layer_norm(max(args.sizes), args.dtypes, args.reps)
    if not args.skip_model:
        bench_model(args.presets, args.sizes, args.dtypes, max(3, args.reps // 4))
        bench_model_layer_norm(args.presets, max(args.sizes), args.dtypes, max(3, args.reps // 4))
    return 0


if __name__ == "__main__":
    sys.exit(main())
