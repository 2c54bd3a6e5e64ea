"""Benchmarks of tiled inference: accuracy vs overlap, peak memory vs image size, time vs pixels.

Every figure is measured in this run, side by side; nothing is compared with stored numbers.

  python benchmarks/bench_tiling.py accuracy --weights W.safetensors [--tiles 96,256] [--overlaps 0,8,16,32]
      PSNR (dB, RGB, outputs clamped to 0..1) between tiled and whole-image output on centre crops
      of real photographs from ../shared/data (Set5/Set14 HR used as inputs), each crop sized so
      that it is exactly --grid x --grid tiles with exactly the requested overlap.
  python benchmarks/bench_tiling.py memory [--sizes 512,1024,2048] [--tile 256] [--output uint8]
      Peak RSS of a whole upscale, one fresh process per size, and the working memory beyond the
      input, the model and the output buffer (CUDA: torch.cuda.max_memory_allocated).
  python benchmarks/bench_tiling.py speed [--sizes 64,128,256] [--tiled-sizes 480,704,928] [--big 480]
      Time against pixels (whole image, and tiled at the defaults), and the overhead of tiling
      at the default tile size and overlap against whole-image inference on one image.
  python benchmarks/bench_tiling.py alpha --weights W.safetensors [--images baby,butterfly,lenna]
      Masks made from photographs, downscaled x4, upscaled back by bicubic and by the network:
      PSNR against the original mask and time (why alpha defaults to bicubic).
  python benchmarks/bench_tiling.py calibrate [--sizes 48,96,144]
      Peak RSS of one forward pass against pixels: the measured bytes per pixel next to
      dlgsanet.tiling.memory.bytes_per_pixel's estimate.

``--arch tiny`` (default) is the Tiny preset; ``--arch tiny-shallow`` has the same layer widths
(hence the same activation memory per pixel) with one group of one block: it makes memory runs
of large images affordable on a small CPU. Random weights are fine for memory and time; accuracy
needs trained weights (``--weights``). ``--threads`` sets torch's intra-op threads (default 1).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DLGSANET_SHARED", REPO.parent / "shared")) / "data"


import dlgsanet as dl  # noqa: E402  (installed, or PYTHONPATH=. from a checkout)
import dlgsanet.tiling.memory  # noqa: E402,F401
import dlgsanet.tiling.settings  # noqa: E402,F401
from dlgsanet.tiling.plan import plan_tiles  # noqa: E402
from dlgsanet.tiling.settings import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE  # noqa: E402


def build_model(arch: str, scale: int = 4, weights: Optional[str] = None) -> torch.nn.Module:
    if weights:
        load_model = getattr(dl, "load_model", None)
        if load_model is not None:
            return load_model(weights, device="cpu")
        from safetensors.torch import load_file
        sd = load_file(weights)
        scale = int(round(math.sqrt(sd["upsample.0.weight"].shape[0] / 3)))
        model = dl.DLGSANet(dl.preset_config("tiny", scale))
        model.load_state_dict(sd)
        return model.eval()
    config = dl.preset_config("tiny", scale)
    if arch == "tiny-shallow":
        config = config.with_(groups=1, blocks=1)
    elif arch != "tiny":
        raise SystemExit(f"unknown --arch {arch}")
    torch.manual_seed(0)
    return dl.DLGSANet(config).eval()


def current_rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def load_rgb(path: Path) -> torch.Tensor:
    import numpy as np
    from PIL import Image
    arr = np.array(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


# -- accuracy -----------------------------------------------------------------------------

def cmd_accuracy(args) -> None:
    """Tiled vs whole on centre crops sized so the plan is exactly ``grid`` x ``grid`` tiles with
    exactly the requested overlap (crop = grid * tile - (grid - 1) * overlap)."""
    model = build_model(args.arch, weights=args.weights)
    tiles = [int(t) for t in args.tiles.split(",")]
    overlaps = [int(o) for o in args.overlaps.split(",")]
    ramps = [float(r) for r in args.ramps.split(",")]
    aligns = {"on": [True], "off": [False], "both": [True, False]}[args.align]
    images = {}
    for name in args.images.split(","):
        path = next((p for p in DATA.glob(f"Set*/HR/{name}.png")), None)
        if path is None:
            raise SystemExit(f"image {name} not found under {DATA}")
        images[name] = load_rgb(path)
    print(f"accuracy: weights={args.weights} grid={args.grid or 'whole photos'} images={list(images)}", flush=True)
    rows = []
    for name, img in images.items():
        refs: dict = {}
        for tile in tiles:
            for ov in overlaps:
                if ov >= tile:
                    continue
                h, w = img.shape[-2:]
                if args.grid == 0:  # the whole photograph, however it tiles
                    size, crop = (h, w), img
                else:
                    side = args.grid * tile - (args.grid - 1) * ov
                    if side > min(h, w):
                        print(f"  {name}: {side}px crop does not fit ({h}x{w}); skipped", flush=True)
                        continue
                    y0, x0 = (h - side) // 2, (w - side) // 2
                    size, crop = (side, side), img[..., y0:y0 + side, x0:x0 + side].contiguous()
                if size not in refs:
                    t0 = time.perf_counter()
                    refs[size] = (dl.upscale(model, crop, tile_size=max(size), overlap=0, min_tile_size=1),
                                  time.perf_counter() - t0)
                ref, t_whole = refs[size]
                for align in aligns:
                    for ramp in ramps:
                        t0 = time.perf_counter()
                        out = dl.upscale(model, crop, tile_size=tile, overlap=ov, min_tile_size=1,
                                         ramp=ramp, align_tlc=align)
                        dt = time.perf_counter() - t0
                        rows.append((name, tile, ov, align, ramp, psnr(out, ref)))
                        n = len(plan_tiles(*size, tile, ov))
                        print(f"  {name:10s} {size[0]:4d}x{size[1]:<4d} tile {tile:4d} overlap {ov:3d} "
                              f"({n:2d} tiles) windows {'whole' if align else 'tile '} ramp {ramp:.2f}  "
                              f"PSNR {rows[-1][5]:6.2f} dB  "
                              f"max|diff| {float((out - ref).abs().max()):.4f}  time x{dt / t_whole:.2f}",
                              flush=True)
    print("\nmean PSNR over images (dB), tiled vs whole image:")
    for align in aligns:
        for ramp in ramps:
            print(f"windows {'of the whole image' if align else 'of each tile'}, ramp {ramp}:")
            print("   tile \\ overlap" + "".join(f"{o:>8d}" for o in overlaps))
            for tile in tiles:
                vals = []
                for ov in overlaps:
                    ps = [r[5] for r in rows if r[1:5] == (tile, ov, align, ramp)]
                    vals.append(f"{sum(ps) / len(ps):8.2f}" if ps else f"{'-':>8s}")
                print(f"   {tile:14d}" + "".join(vals))


# -- alpha: bicubic against the network -----------------------------------------------------

def cmd_alpha(args) -> None:
    """Masks made from photographs (hard: luminance above its median; soft: that, blurred),
    downscaled x4 like LR images, upscaled back both ways; PSNR against the full-size mask."""
    import torch.nn.functional as F

    from dlgsanet.alpha import upscale_rgba
    model = build_model(args.arch, weights=args.weights)
    s = model.scale
    print(f"alpha: weights={args.weights}; PSNR (dB) of the upscaled mask against the original")
    print(f"{'image':10s} {'mask':5s} {'bicubic':>8s} {'model':>8s}   time bicubic / model (s)")
    for name in args.images.split(","):
        path = next((p for p in DATA.glob(f"Set*/HR/{name}.png")), None)
        img = load_rgb(path)
        h, w = (img.shape[-2] // s) * s, (img.shape[-1] // s) * s
        img = img[..., :h, :w]
        luma = (0.299 * img[:, 0] + 0.587 * img[:, 1] + 0.114 * img[:, 2])[:, None]
        hard = (luma > luma.median()).float()
        k = torch.tensor([1, 4, 6, 4, 1], dtype=torch.float32)
        k2 = (k[:, None] * k[None, :] / 256).view(1, 1, 5, 5)
        soft = F.conv2d(F.pad(hard, (2, 2, 2, 2), mode="replicate"), k2)
        for kind, mask in (("hard", hard), ("soft", soft)):
            lr = F.interpolate(torch.cat([img, mask], 1), scale_factor=1 / s, mode="bicubic",
                               antialias=True).clamp(0, 1)
            res = {}
            for mode in ("bicubic", "model"):
                t0 = time.perf_counter()
                out = upscale_rgba(model, lr, alpha=mode)
                res[mode] = (psnr(out[:, 3:], mask), time.perf_counter() - t0)
            print(f"{name:10s} {kind:5s} {res['bicubic'][0]:8.2f} {res['model'][0]:8.2f}   "
                  f"{res['bicubic'][1]:.1f} / {res['model'][1]:.1f}", flush=True)


# -- memory -------------------------------------------------------------------------------

def child_memory(args) -> dict:
    torch.set_num_threads(args.threads)
    model = build_model(args.arch)
    device = torch.device(args.device)
    model = model.to(device)
    size = args.size
    x = torch.rand(1, 3, size, size)
    out_dtype = torch.uint8 if args.output == "uint8" else torch.float32
    out_bytes = 3 * (size * args.scale) ** 2 * (1 if out_dtype == torch.uint8 else 4)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base = current_rss()
    t0 = time.perf_counter()
    y = dl.upscale(model, x, tile_size=args.tile, overlap=args.overlap, output_dtype=out_dtype)
    dt = time.perf_counter() - t0
    result = dict(size=size, tile=args.tile, tiles=len(plan_tiles(size, size, args.tile, args.overlap)),
                  seconds=dt, base_rss=base, peak_rss=peak_rss(), out_bytes=out_bytes,
                  out_shape=list(y.shape))
    if device.type == "cuda":
        result["cuda_peak"] = torch.cuda.max_memory_allocated(device)
    return result


def run_child(kind: str, extra: list[str]) -> dict:
    cmd = [sys.executable, __file__, f"_{kind}", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"child failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cmd_memory(args) -> None:
    mib = 2 ** 20
    print(f"memory: arch={args.arch} scale=x{args.scale} tile={args.tile} overlap={args.overlap} "
          f"output={args.output} device={args.device} threads={args.threads} (one process per size)")
    print(f"{'input':>10s} {'tiles':>6s} {'seconds':>8s} {'output MiB':>11s} {'peak RSS MiB':>13s} "
          f"{'before MiB':>11s} {'working MiB':>12s}" + ("  cuda peak MiB" if args.device == "cuda" else ""))
    for size in [int(s) for s in args.sizes.split(",")]:
        r = run_child("memory", [f"--size={size}", f"--arch={args.arch}", f"--tile={args.tile}",
                                 f"--overlap={args.overlap}", f"--output={args.output}",
                                 f"--device={args.device}", f"--threads={args.threads}",
                                 f"--scale={args.scale}"])
        working = r["peak_rss"] - r["base_rss"] - (r["out_bytes"] if args.device == "cpu" else 0)
        line = (f"{size:>5d}^2    {r['tiles']:6d} {r['seconds']:8.1f} {r['out_bytes'] / mib:11.1f} "
                f"{r['peak_rss'] / mib:13.1f} {r['base_rss'] / mib:11.1f} {working / mib:12.1f}")
        if "cuda_peak" in r:
            line += f"  {r['cuda_peak'] / mib:13.1f}"
        print(line, flush=True)


# -- speed --------------------------------------------------------------------------------

def _time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def cmd_speed(args) -> None:
    torch.set_num_threads(args.threads)
    model = build_model(args.arch)
    tile, ov = args.tile, args.overlap
    print(f"speed: arch={args.arch} x4 threads={args.threads} best of {args.repeats}")
    print("whole image, time against pixels:")
    print(f"{'input':>9s} {'pixels':>8s} {'seconds':>9s} {'us/px':>7s}")
    for size in [int(v) for v in args.sizes.split(",")]:
        x = torch.rand(1, 3, size, size)
        t = _time(lambda: dl.upscale(model, x, tile_size=size, overlap=0, min_tile_size=1), args.repeats)
        print(f"{size:>5d}^2 {size * size:8d} {t:9.2f} {t / size / size * 1e6:7.1f}", flush=True)
    print(f"tiled at the defaults (tile {tile}, overlap {ov}), time against pixels:")
    print(f"{'input':>9s} {'pixels':>8s} {'tiles':>6s} {'tiled px':>9s} {'seconds':>9s} {'us/px':>7s}")
    for size in [int(v) for v in args.tiled_sizes.split(",")]:
        x = torch.rand(1, 3, size, size)
        t = _time(lambda: dl.upscale(model, x, tile_size=tile, overlap=ov), args.repeats)
        n = len(plan_tiles(size, size, tile, ov))
        print(f"{size:>5d}^2 {size * size:8d} {n:6d} {n * min(tile, size) ** 2 / size / size:8.2f}x "
              f"{t:9.2f} {t / size / size * 1e6:7.1f}", flush=True)
    big = args.big
    x = torch.rand(1, 3, big, big)
    tw = _time(lambda: dl.upscale(model, x, tile_size=big, overlap=0, min_tile_size=1), args.repeats)
    tt = _time(lambda: dl.upscale(model, x, tile_size=tile, overlap=ov), args.repeats)
    n = len(plan_tiles(big, big, tile, ov))
    px = n * min(tile, big) ** 2
    print(f"\noverhead at the defaults (tile {tile}, overlap {ov}) on {big}^2, side by side: whole "
          f"{tw:.2f} s, tiled {tt:.2f} s ({n} tiles, {px / big / big:.2f}x the pixels): ratio {tt / tw:.2f}; "
          f"on large images the pixel ratio tends to {(tile / (tile - ov)) ** 2:.2f}")


# -- calibration of the per-pixel memory estimate ------------------------------------------

def child_calibrate(args) -> dict:
    torch.set_num_threads(args.threads)
    model = build_model(args.arch)
    x = torch.rand(1, 3, args.size, args.size)
    base = current_rss()
    with torch.inference_mode():
        model(x)
    return dict(size=args.size, base=base, peak=peak_rss(),
                estimate=dl.tiling.memory.bytes_per_pixel(model) * args.size ** 2)


def cmd_calibrate(args) -> None:
    print(f"calibrate: arch={args.arch}; one forward pass per process")
    print(f"{'input':>9s} {'measured MiB':>13s} {'bytes/px':>9s} {'estimate MiB':>13s}")
    pts = []
    for size in [int(s) for s in args.sizes.split(",")]:
        r = run_child("calibrate", [f"--size={size}", f"--arch={args.arch}", f"--threads={args.threads}"])
        used = r["peak"] - r["base"]
        pts.append((size * size, used))
        print(f"{size:>5d}^2 {used / 2**20:13.1f} {used / size / size:9.0f} "
              f"{r['estimate'] / 2**20:13.1f}", flush=True)
    if len(pts) >= 2:
        (p0, m0), (p1, m1) = pts[0], pts[-1]
        print(f"marginal bytes per pixel (slope between the extremes): {(m1 - m0) / (p1 - p0):.0f}")


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p):
        p.add_argument("--arch", default="tiny", choices=["tiny", "tiny-shallow"])
        p.add_argument("--threads", type=int, default=1)
        return p

    p = common(sub.add_parser("accuracy"))
    p.add_argument("--weights", required=True)
    p.add_argument("--images", default="baby,lenna,zebra")
    p.add_argument("--grid", type=int, default=2,
                   help="tiles per axis (crop size follows); 0: whole photographs, however they tile")
    p.add_argument("--tiles", default=str(dl.tiling.settings.MIN_TILE_SIZE))
    p.add_argument("--overlaps", default="0,8,16,24,32,48")
    p.add_argument("--ramps", default=str(dl.tiling.settings.DEFAULT_RAMP))
    p.add_argument("--align", default="on", choices=["on", "off", "both"],
                   help="TLC windows of the whole image (on), of each tile (off), or both")
    p = common(sub.add_parser("alpha"))
    p.add_argument("--weights", required=True)
    p.add_argument("--images", default="baby,butterfly,lenna")
    for name in ("memory", "_memory"):
        p = common(sub.add_parser(name))
        p.add_argument("--sizes", default="512,1024,2048")
        p.add_argument("--size", type=int, default=512)
        p.add_argument("--tile", type=int, default=DEFAULT_TILE_SIZE)
        p.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP)
        p.add_argument("--output", default="uint8", choices=["uint8", "float32"])
        p.add_argument("--device", default="cpu")
        p.add_argument("--scale", type=int, default=4)
    p = common(sub.add_parser("speed"))
    p.add_argument("--sizes", default="64,128,256")
    p.add_argument("--tiled-sizes", default="480,704,928")
    p.add_argument("--big", type=int, default=480)
    p.add_argument("--tile", type=int, default=DEFAULT_TILE_SIZE)
    p.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP)
    p.add_argument("--repeats", type=int, default=1)
    for name in ("calibrate", "_calibrate"):
        p = common(sub.add_parser(name))
        p.add_argument("--sizes", default="48,96,144")
        p.add_argument("--size", type=int, default=96)
    args = ap.parse_args(argv)
    if args.cmd.startswith("_"):  # child process: print one JSON line
        torch.set_num_threads(args.threads)
        fn = {"_memory": child_memory, "_calibrate": child_calibrate}[args.cmd]
        print(json.dumps(fn(args)))
        return
    torch.set_num_threads(args.threads)
    {"accuracy": cmd_accuracy, "alpha": cmd_alpha, "memory": cmd_memory, "speed": cmd_speed,
     "calibrate": cmd_calibrate}[args.cmd](args)


if __name__ == "__main__":
    main()
