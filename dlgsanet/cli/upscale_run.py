"""``dlgsanet upscale``, the work: one progress bar for the run, one image at a time, a summary.

The bar counts the input pixels of every model pass of every image (known before the first
tile), advanced after each tile, so an image of 4 tiles moves it 4 times and the rate (pixels per
second, averaged from the moment the work starts) means something from the first tile on. A
damaged file, or one that fails for its own reasons, is reported and the run goes on; the summary
lists what failed and the exit status says so.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from ..alpha import upscale_rgba
from ..errors import DLGSANetError
from ..images import LoadedImage, lost_on_write, read_image, write_image
from ..resample import pass_sizes, target_size, upscale_to
from ..video import is_video_file
from .upscale_plan import Job, Plan, tile_settings

#: Failures of one image that should not stop the others (damaged file, disk full, out of memory).
IMAGE_ERRORS = (DLGSANetError, OSError, MemoryError, RuntimeError, ValueError)


class BatchProgress:
    """A tqdm bar over the whole run in input pixels, with "image i/N name" as its label."""

    def __init__(self, weights: list[int], *, disable: bool, file=None) -> None:
        from tqdm import tqdm

        self.count, self.base = len(weights), 0
        # miniters=1 and mininterval=0: every tile is shown (tiles take seconds, not microseconds);
        # smoothing=0: the rate is the average since the bar was made, i.e. since work started.
        self.bar = tqdm(total=max(sum(weights), 1), unit="px", unit_scale=True, smoothing=0,
                        miniters=1, mininterval=0, disable=disable,
                        file=sys.stderr if file is None else file)

    def start_image(self, index: int, name: str, weight: int) -> Callable[[int, int], None]:
        """Label the bar for image ``index`` (1-based) and return its ``progress(done, total)``."""
        self.bar.set_description_str(f"image {index}/{self.count} {name}")
        base = self.base

        def progress(done: int, total: int) -> None:
            self._move_to(base + weight * min(done, total) // max(total, 1))

        self.base += weight
        return progress

    def finish_image(self) -> None:
        self._move_to(self.base)

    def _move_to(self, position: int) -> None:
        if position > self.bar.n:
            self.bar.update(position - self.bar.n)

    def write(self, line: str) -> None:
        """A message line that does not break the bar."""
        self.bar.write(line, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


@dataclass
class Outcome:
    done: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def image_weight(size: Optional[tuple[int, int]], args, scale: int) -> int:
    """Input pixels of all model passes for an image of ``size`` (0 when its size is unknown)."""
    if size is None:
        return 0
    h, w = size
    return sum(ph * pw for ph, pw in pass_sizes(h, w, output_target(h, w, args, scale), scale))


def output_target(h: int, w: int, args, scale: int) -> tuple[int, int]:
    """The output (height, width) the options ask for; the model's own scale by default."""
    if args.outscale is None and args.width is None and args.height is None:
        return h * scale, w * scale
    return target_size(h, w, outscale=args.outscale, width_to=args.width, height_to=args.height)


def upscale_image(model, image: LoadedImage, args, progress) -> torch.Tensor:
    """[C,H,W] result (RGB, plus alpha last when the image has it) at the requested size."""
    x = image.rgb if image.alpha is None else torch.cat([image.rgb, image.alpha.to(image.rgb.dtype)], 0)
    h, w = x.shape[-2:]
    tiles = tile_settings(args)

    def one_pass(t: torch.Tensor, p) -> torch.Tensor:
        return upscale_rgba(model, t, tiles=tiles, progress=p)

    out = upscale_to(one_pass, x[None], output_target(h, w, args, model.scale), scale=model.scale,
                     has_alpha=image.alpha is not None, progress=progress)
    return out[0]


def run_jobs(model, plan: Plan, args) -> Outcome:
    """Upscale and write every job; failures are collected, an interrupt stops the run."""
    # Videos have their own bar in frames (upscale_video.py); they weigh nothing in this one.
    weights = [0 if is_video_file(job.src) else image_weight(job.size, args, model.scale) for job in plan.jobs]
    bar = BatchProgress(weights, disable=args.quiet or all(is_video_file(job.src) for job in plan.jobs))
    outcome = Outcome()
    try:
        for index, (job, weight) in enumerate(zip(plan.jobs, weights), 1):
            progress = bar.start_image(index, job.src.name, weight)
            try:
                if is_video_file(job.src):
                    from .upscale_video import run_video

                    run_video(model, job, args, bar.write,
                              lambda h, w: output_target(h, w, args, model.scale))
                else:
                    upscale_job(model, job, args, progress, bar)
                outcome.done.append(job.dst)
            except IMAGE_ERRORS as e:
                message = failure_text(job.src, e)
                outcome.failed.append((job.src, message))
                bar.write(f"dlgsanet upscale: failed: {message}")
            bar.finish_image()
    except KeyboardInterrupt:
        bar.close()
        print(f"dlgsanet upscale: stopped after {len(outcome.done)} of {len(plan.jobs)} image(s); run "
              f"the same command with --skip-existing to do the rest", file=sys.stderr)
        raise
    bar.close()
    return outcome


def failure_text(src: Path, exc: BaseException) -> str:
    """One line naming the file: our messages already do, others get it in front."""
    text = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if str(src) in text else f"{src}: {text}"


def upscale_job(model, job: Job, args, progress, bar: BatchProgress) -> None:
    """Read, upscale and write one image: the same code for the local run and each Ray worker."""
    image = read_image(job.src)
    out = upscale_image(model, image, args, progress)
    has_alpha = image.alpha is not None
    if has_alpha and args.background is not None:  # flatten: colour over the background
        alpha = out[3:]
        background = torch.tensor(args.background, dtype=out.dtype).view(3, 1, 1)
        out, has_alpha = out[:3] * alpha + background * (1 - alpha), False
    lost = lost_on_write(job.dst, has_alpha, image.bit_depth)
    if lost:
        bar.write(f"dlgsanet upscale: warning: {job.dst.name}: drops the {' and the '.join(lost)}; "
                  f"use --format png to keep everything, or --background COLOR to flatten")
    job.dst.parent.mkdir(parents=True, exist_ok=True)
    write_image(job.dst, out[:3], out[3:] if has_alpha else None, grayscale=image.grayscale,
                bit_depth=image.bit_depth, icc_profile=image.icc_profile, quality=args.quality,
                lossless=args.lossless, overwrite=args.overwrite)


def summary(plan: Plan, outcome: Outcome, scale_text: str, failures_only: bool = False) -> list[str]:
    """The closing lines: what was written, skipped and what failed (and why)."""
    lines = [] if failures_only else \
        [f"upscaled {len(outcome.done)} of {len(plan.jobs)} image(s) {scale_text} into {plan.output}"]
    if plan.skipped and not failures_only:
        lines.append(f"skipped {len(plan.skipped)} whose output already exists (--skip-existing)")
    if outcome.failed:
        lines.append(f"{len(outcome.failed)} image(s) failed:")
        lines += [f"  {message}" for _, message in outcome.failed]
    return lines
