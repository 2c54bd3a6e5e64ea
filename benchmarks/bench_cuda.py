"""CUDA kernels (cupy backend) against the PyTorch path, measured side by side in one run.

    python benchmarks/bench_cuda.py            # everything below
    python benchmarks/bench_cuda.py --quick    # Tiny only, 256x256, fewer repetitions

Part 1, the operator alone: dynamic_dwconv forward, and forward + backward, at the shapes the
presets produce (Tiny/Light: 48 channels in 8 groups; Large: 90 channels in 15 groups; K = 7) on
256x256 and 512x512 feature maps, batch 1, in float32 / float16 / bfloat16.
Part 2, the whole network: Tiny / Light / Large x4 (random weights, eval mode, TLC windows) on
256x256 and 512x512 inputs in float32 / float16 / bfloat16, with DLGSANET_BACKEND=torch vs cupy.

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
from typing import Callable, List, Tuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import dlgsanet  # noqa: E402
from dlgsanet.ops import cupy_backend  # noqa: E402
from dlgsanet.ops.dynamic_dwconv_torch import dynamic_dwconv_torch  # noqa: E402

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Tiny only, 256x256, 5 repetitions")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--presets", nargs="+", default=["tiny", "light", "large"])
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["fp32", "fp16", "bf16"])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--skip-model", action="store_true")
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
          f"cupy {cupy.__version__}")
    torch.backends.cudnn.benchmark = True
    bench_operator(args.sizes, args.dtypes, args.reps)
    if not args.skip_model:
        bench_model(args.presets, args.sizes, args.dtypes, max(3, args.reps // 4))
    return 0


if __name__ == "__main__":
    sys.exit(main())
