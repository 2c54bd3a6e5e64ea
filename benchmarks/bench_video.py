"""Video throughput: ``dlgsanet upscale clip.mp4`` against the same frames upscaled one by one as PNGs.

Both are measured in this run, side by side, each as one ``dlgsanet upscale`` command (in this
process, model loading included in both):

- video: the clip in, an H.264 clip out (decode, batches of ``--batch`` frames, encode, audio copy);
- pngs: the clip's frames, extracted beforehand (not timed) as PNG files, through the CLI as a
  folder of images: each frame read, upscaled alone and written as a PNG.

  python benchmarks/bench_video.py [--frames 48] [--size 96x64] [--batch N] [--threads N]
      [--model PATH] [--device auto] [--repeats 2]

Default model: the bundled DLGSANet-Tiny x4. The two commands alternate ``--repeats`` times and
the best time of each counts (a shared machine's load comes and goes; a single pair of runs
on 2 busy cores was seen anywhere between 0.55x and 1.3x). Prints frames/s of both and their ratio.
Needs PyAV (pip install 'dlgsanet[video]').
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_clip(path: Path, frames: int, w: int, h: int) -> list[np.ndarray]:
    """A 23.976 fps H.264 clip of smooth moving shapes (a codec-friendly, photo-like signal) with an
    AAC tone; returns the decoded RGB frames."""
    import av

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=Fraction(24000, 1001))
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        sound = out.add_stream("aac", rate=48000)
        sound.layout = "mono"
        for i in range(frames):
            t = i / 8
            r = 127 + 120 * np.sin(xx / 9 + t)
            g = 127 + 120 * np.cos(yy / 7 - t)
            b = 127 + 120 * np.sin((xx + yy) / 13 + 2 * t)
            img = np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        tone = (0.2 * np.sin(np.arange(int(48000 * frames / 23.976)) / 48000 * 2 * np.pi * 440)).astype(np.float32)
        chunk = av.AudioFrame.from_ndarray(tone[None], format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = 48000, 0
        for packet in [*sound.encode(chunk), *sound.encode(None)]:
            out.mux(packet)
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def timed(argv: list[str]) -> float:
    from dlgsanet.cli import main

    start = time.perf_counter()
    status = main(argv)
    seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"dlgsanet {' '.join(argv)} exited with {status}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", default="96x64", help="input WxH")
    parser.add_argument("--batch", type=int, default=None, help="--batch of the video run (default: the CLI's)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    a = parser.parse_args()
    w, h = (int(v) for v in a.size.lower().split("x"))
    from PIL import Image

    common = ["--quiet", "--device", a.device, "--precision", a.precision]
    common += ["--model", a.model] if a.model else []
    common += ["--threads", str(a.threads)] if a.threads else []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        frames = make_clip(root / "clip.mp4", a.frames, w, h)
        (root / "frames").mkdir()
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(root / "frames" / f"{i:05d}.png")
        batch = ["--batch", str(a.batch)] if a.batch else []
        # Warm-up (not timed): first-call costs of torch and the codec libraries.
        timed(["upscale", str(root / "frames" / "00000.png"), "-o", str(root / "warm.png"), *common])
        video_s = pngs_s = float("inf")
        for _ in range(a.repeats):
            video_s = min(video_s, timed(["upscale", str(root / "clip.mp4"), "-o", str(root / "out.mp4"),
                                          "--overwrite", *common, *batch]))
            pngs_s = min(pngs_s, timed(["upscale", str(root / "frames"), "-o", str(root / "pngs"),
                                        "--overwrite", *common]))
    n = len(frames)
    print(f"{n} frames {w}x{h}, model {a.model or 'bundled Tiny x4'}, device {a.device}, "
          f"batch {a.batch or 'default'}, best of {a.repeats}")
    print(f"video (decode, batches, H.264 encode, audio copy): {video_s:7.2f} s  {n / video_s:7.2f} frames/s")
    print(f"PNG frames one by one through the CLI:             {pngs_s:7.2f} s  {n / pngs_s:7.2f} frames/s")
    print(f"ratio video / PNGs: {pngs_s / video_s:.2f}x")


if __name__ == "__main__":
    main()
