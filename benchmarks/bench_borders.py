"""Image borders: the engine's ``border="official"`` (the network as published, zero padding)
against its default ``border="mirror"`` (the image mirrored outwards, output cropped).

Every figure is measured in this run, side by side; nothing is compared with stored numbers.

  python benchmarks/bench_borders.py [--weights W] [--pads 8] [--threads 1] [--repeats 3]
      [--sections flat,photos,context,time]

- flat: flat colours (8, saturated ones included) of 1x1, 2x2, 8x8 and 64x64 pixels. Worst
  absolute deviation from the colour in 8-bit levels over the whole output, over the border band
  (the outer 4 input pixels, 4*scale output pixels) and over the interior (the rest).
- photos: Set5 + Set14 HR (../shared/data), LR made with the project's bicubic
  (dlgsanet.evaluate.bicubic_downscale, as in evaluation), SR compared with HR: PSNR (RGB,
  8-bit, squared errors pooled over all images) of the edge band (outer 1 input pixel), the
  border band (outer 4) and the interior. "reflect" is the other mirror (dcb|abcd|cba, torch's
  F.pad), run as padding + official + crop, to show why the engine mirrors about the outer edge.
- context: each LR image cropped by --margin pixels on every side; the crop's SR against the
  whole LR's official SR on the same pixels (there they have real context): PSNR of the same
  bands. What a border pixel would be had the photo been larger.
- time: one 256x256 input, best of --repeats, official against mirror (the padded image is
  (256+2*pad)^2: 1.13x the pixels at pad 8).

``--pads 4,8,16`` adds a mirror row per pad width (the engine's ``border_pad``).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DLGSANET_SHARED", REPO.parent / "shared")) / "data"

import dlgsanet  # noqa: E402  (installed, or PYTHONPATH=. from a checkout)
from dlgsanet.evaluate import load_pairs  # noqa: E402
from dlgsanet.tiling.settings import BORDER_PAD  # noqa: E402

COLOURS = [(200, 100, 50), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 255, 255),
           (0, 0, 0), (128, 128, 128)]
SIZES = (1, 2, 8, 64)
BAND = 4  # input pixels: the border band

Mode = tuple[str, Callable[[torch.Tensor], torch.Tensor]]


def modes(model: torch.nn.Module, pads: list[int], reflect: bool) -> list[Mode]:
    """(label, images [B,3,H,W] 0..1 -> output 0..1) for official, mirror per pad, and reflect."""
    out: list[Mode] = [("official", lambda x: dlgsanet.upscale(model, x, border="official"))]
    for pad in pads:
        label = "mirror" if pad == BORDER_PAD and len(pads) == 1 else f"mirror pad {pad}"
        out.append((label, lambda x, p=pad: dlgsanet.upscale(model, x, border="mirror", border_pad=p)))
    if reflect:
        most, s = max(pads), model.scale

        def reflect_run(x: torch.Tensor) -> torch.Tensor:
            h, w = x.shape[-2:]
            pad = min(most, h - 1, w - 1)  # F.pad's reflect needs pad < size
            y = dlgsanet.upscale(model, F.pad(x, (pad,) * 4, mode="reflect"), border="official")
            return y[..., pad * s:(pad + h) * s, pad * s:(pad + w) * s]
        out.append((f"reflect pad {pad}", reflect_run))
    return out


def levels(x: torch.Tensor) -> torch.Tensor:
    return (x.double() * 255).round()


def band_masks(h: int, w: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(border band, interior) masks of an h x w output; ``width`` output pixels of band."""
    band = torch.ones(h, w, dtype=torch.bool)
    band[width:h - width, width:w - width] = False
    return band, ~band


def flat(model: torch.nn.Module, run_modes: list[Mode]) -> None:
    s = model.scale
    print(f"\n## Flat colours: worst |output - colour| in 8-bit levels over {len(COLOURS)} colours "
          f"(band = outer {BAND} input px)")
    print("| size | mode | whole | border band | interior | worst colour |")
    print("|---|---|---|---|---|---|")
    for size in SIZES:
        for label, run in run_modes:
            worst = [0.0, 0.0, 0.0]
            worst_colour = None
            for colour in COLOURS:
                c = torch.tensor(colour, dtype=torch.float64).view(3, 1, 1)
                x = (c / 255).float().expand(3, size, size)[None].contiguous()
                dev = (levels(run(x)[0]) - c).abs().amax(0)
                band, inner = band_masks(size * s, size * s, BAND * s)
                figures = [float(dev.max()), float(dev[band].max()),
                           float(dev[inner].max()) if inner.any() else 0.0]
                if figures[0] > worst[0]:
                    worst_colour = colour
                worst = [max(a, b) for a, b in zip(worst, figures)]
            inner = f"{worst[2]:.0f}" if size > 2 * BAND else "-"
            print(f"| {size}x{size} | {label} | {worst[0]:.0f} | {worst[1]:.0f} | {inner} | {worst_colour or '-'} |")
    c = torch.tensor(COLOURS[0], dtype=torch.float32).view(1, 3, 1, 1) / 255
    for label, run in run_modes:
        got = levels(run(c))[0].mean((1, 2))
        print(f"1x1 {COLOURS[0]} -> mean {tuple(round(float(v)) for v in got)} ({label})")


def _psnr(sq: float, n: int) -> float:
    return math.inf if sq == 0 else 10 * math.log10(255.0 ** 2 * n / sq)


def band_psnr(pairs: list[tuple[torch.Tensor, torch.Tensor]], s: int) -> tuple[float, float, float]:
    """PSNR of (edge band, border band, interior), squared errors pooled over the pairs."""
    sums = [[0.0, 0], [0.0, 0], [0.0, 0]]
    for got, ref in pairs:
        err = ((got - ref) ** 2).sum(0)
        h, w = err.shape
        edge, _ = band_masks(h, w, s)
        band, inner = band_masks(h, w, BAND * s)
        for k, mask in enumerate((edge, band, inner)):
            sums[k][0] += float(err[mask].sum())
            sums[k][1] += int(mask.sum()) * 3
    return tuple(_psnr(sq, n) for sq, n in sums)  # type: ignore[return-value]


def photo_pairs(scale: int) -> list:
    pairs = []
    for name in ("Set5", "Set14"):
        folder = DATA / name / "HR"
        if folder.is_dir():
            pairs += load_pairs(folder, scale)
    if not pairs:
        sys.exit(f"no Set5/Set14 HR images under {DATA}")
    return pairs


def chw(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float() / 255


def photos(model: torch.nn.Module, run_modes: list[Mode], pairs: list) -> None:
    s = model.scale
    print(f"\n## Photos ({len(pairs)} Set5+Set14 images, x{s}): PSNR against HR, dB "
          f"(edge = outer 1 input px, border = outer {BAND})")
    print("| mode | edge band | border band | interior | seconds |")
    print("|---|---|---|---|---|")
    for label, run in run_modes:
        t0, results = time.perf_counter(), []
        for p in pairs:
            sr = levels(run(chw(p.lr)[None])[0])
            results.append((sr, torch.from_numpy(p.hr).permute(2, 0, 1).double()))
        edge, band, inner = band_psnr(results, s)
        print(f"| {label} | {edge:.2f} | {band:.2f} | {inner:.2f} | {time.perf_counter() - t0:.0f} |")


def context(model: torch.nn.Module, run_modes: list[Mode], pairs: list, margin: int) -> None:
    s = model.scale
    print(f"\n## Context: SR of each LR cropped by {margin} px against the whole LR's official SR on "
          f"the same pixels, PSNR dB")
    print("| mode | edge band | border band | interior |")
    print("|---|---|---|---|")
    refs = []
    for p in pairs:
        lr = chw(p.lr)[None]
        full = levels(dlgsanet.upscale(model, lr, border="official")[0])
        refs.append((lr[..., margin:-margin, margin:-margin].contiguous(),
                     full[:, margin * s:-margin * s, margin * s:-margin * s]))
    for label, run in run_modes:
        edge, band, inner = band_psnr([(levels(run(crop)[0]), ref) for crop, ref in refs], s)
        print(f"| {label} | {edge:.2f} | {band:.2f} | {inner:.2f} |")


def timing(model: torch.nn.Module, run_modes: list[Mode], pairs: list, repeats: int) -> None:
    """Best of ``repeats``, the modes taking turns (a shared machine's load falls on all alike);
    CPU seconds of this process next to wall seconds (CPU time is steadier under load)."""
    hr = max(pairs, key=lambda p: p.hr.shape[0] * p.hr.shape[1]).hr
    x = chw(hr[:256, :256])[None]
    print(f"\n## Time: one 256x256 input, best of {repeats}, modes in turn "
          f"(torch threads: {torch.get_num_threads()})")
    best = {label: [math.inf, math.inf] for label, _ in run_modes}
    for _ in range(repeats):
        for label, run in run_modes:
            c0, t0 = time.process_time(), time.perf_counter()
            run(x)
            cpu, wall = time.process_time() - c0, time.perf_counter() - t0
            best[label] = [min(best[label][0], cpu), min(best[label][1], wall)]
    base_cpu, base_wall = best[run_modes[0][0]]
    for label, (cpu, wall) in best.items():
        print(f"{label}: {cpu:.2f} s CPU (x{cpu / base_cpu:.2f}), {wall:.2f} s wall (x{wall / base_wall:.2f})")


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None, help="checkpoint (default: the bundled model)")
    ap.add_argument("--pads", default=str(BORDER_PAD), help="mirror pad widths, comma separated")
    ap.add_argument("--no-reflect", action="store_true", help="leave out the reflect row")
    ap.add_argument("--margin", type=int, default=24, help="context section: crop per side (input px)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sections", default="flat,photos,context,time")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = dlgsanet.load_model(args.weights, device="cpu")
    pads = [int(p) for p in args.pads.split(",")]
    sections = set(args.sections.split(","))
    print(f"model: {getattr(model, 'preset', '?')} x{model.scale}, TLC window "
          f"{model.config.tlc_window}; engine default pad {BORDER_PAD}")
    run_modes = modes(model, pads, reflect=not args.no_reflect)
    plain = modes(model, pads, reflect=False)
    pairs = photo_pairs(model.scale) if sections & {"photos", "context", "time"} else []
    with torch.inference_mode():
        if "flat" in sections:
            flat(model, plain)
        if "photos" in sections:
            photos(model, run_modes, pairs)
        if "context" in sections:
            context(model, run_modes, pairs, args.margin)
        if "time" in sections:
            timing(model, plain, pairs, args.repeats)


if __name__ == "__main__":
    main()
