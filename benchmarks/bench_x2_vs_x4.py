"""For a x2 output: the bundled x2 model against the bundled x4 model followed by a downscale by 2.

    python -m benchmarks.bench_x2_vs_x4 --data ../shared/data/Set5

Why: ``dlgsanet upscale --outscale 2`` (and ``bundled_scale_for``) picks the x2 model when one
is bundled; this measures what that choice buys. Both models get the same 8-bit LR inputs (the
MATLAB-bicubic x1/2 of each HR image, as ``dlgsanet eval``), the x4 result is brought back to x2
by MATLAB bicubic, and both are scored as ``eval`` scores (Y-channel PSNR, 2-pixel border).
Seconds are the models' own time, one thread, measured side by side per image.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dlgsanet import load_model
from dlgsanet.degradation import imresize, quantize
from dlgsanet.evaluate import load_pairs, super_resolve
from dlgsanet.metrics import psnr_y


def halve(img: np.ndarray) -> np.ndarray:
    """MATLAB-bicubic x1/2 of an 8-bit HxWx3 image, rounded to 8 bits."""
    chw = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).double() / 255.0
    return quantize(imresize(chw, 0.5, True)).permute(1, 2, 0).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a benchmark set (folder of HR images or with HR/)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x2, x4 = load_model(scale=2), load_model(scale=4)
    scores: dict[str, list[float]] = {"x2": [], "x4 then /2": []}
    seconds = dict.fromkeys(scores, 0.0)
    for pair in load_pairs(args.data, 2):
        start = time.perf_counter()
        sr2, _ = super_resolve(x2, pair.lr)
        seconds["x2"] += time.perf_counter() - start
        start = time.perf_counter()
        sr4, _ = super_resolve(x4, pair.lr)
        seconds["x4 then /2"] += time.perf_counter() - start
        scores["x2"].append(psnr_y(sr2, pair.hr, 2))
        scores["x4 then /2"].append(psnr_y(halve(sr4), pair.hr, 2))
    for name, values in scores.items():
        print(f"{name:>11}: {np.mean(values):.3f} dB over {len(values)} images, {seconds[name]:.1f} s")
    print(f"difference: {np.mean(scores['x2']) - np.mean(scores['x4 then /2']):+.3f} dB for the x2 model")


if __name__ == "__main__":
    main()
