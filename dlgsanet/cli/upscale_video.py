"""``dlgsanet upscale`` for one video: batches of frames through the model, a progress bar in frames.

Why the whole batch goes through one forward pass when it fits: the tiling engine runs the
images of a batch one after the other (each may need its own tiles), which leaves a GPU idle
between small frames. A batch whose frames fit in memory together is therefore run as one
[B,3,H,W] forward pass, set up exactly as the engine sets up a whole-image tile (mirrored
border, the image's own TLC windows), so each frame comes out as the single-image path gives it.
Frames too big for that go through the engine, which tiles them.
"""
from __future__ import annotations

import sys
from typing import Callable, Optional

import torch

from ..alpha import upscale_rgba
from ..errors import DLGSANetError
from ..resample import upscale_to
from ..tiling.engine import mirrored_crop, model_device_dtype
from ..tiling.memory import is_out_of_memory, memory_budget, whole_batch_fits, whole_pass_bytes
from ..tiling.settings import TileSettings
from ..model.tlc import tlc_frame
from .. import video as V
from .upscale_plan import Job, tile_settings

#: Frames per batch on the CPU by default (a CPU gains little from more; memory grows with it).
CPU_BATCH = 2
MAX_BATCH = 32


def default_batch(model, size: tuple[int, int], border: str) -> int:
    """Frames per batch: as many whole frames as fit in free memory on CUDA, CPU_BATCH elsewhere."""
    device, dtype = model_device_dtype(model)
    if device.type != "cuda":
        return CPU_BATCH
    budget = memory_budget(device)
    if budget is None:
        return 1
    per_frame = whole_pass_bytes(model, *size, TileSettings(border=border).pad, dtype)
    return max(1, min(MAX_BATCH, int(budget // per_frame)))


def whole_batch(model, x: torch.Tensor, pad: int) -> torch.Tensor:
    """[B,3,H,W] -> [B,3,sH,sW] float32 on the CPU in one forward pass (mirrored border of ``pad``)."""
    device, dtype = model_device_dtype(model)
    b, _, h, w = x.shape
    hp, wp, s = h + 2 * pad, w + 2 * pad, model.scale
    xp = torch.stack([mirrored_crop(x[k], 0, hp, 0, wp, pad) if pad else x[k] for k in range(b)])
    P = pad * s
    with torch.inference_mode(), tlc_frame(0, 0, hp, wp):
        y = model(xp.to(device, dtype))[:, :, P:P + h * s, P:P + w * s]
        return y.to("cpu", torch.float32).clamp(0, 1).clone()


def batch_runner(model, args, target: tuple[int, int],
                 progress: Optional[Callable[[int, int], None]] = None) -> V.BatchRunner:
    """[B,3,H,W] frames -> [B,3,*target] (model passes, then resampling as for images)."""
    pad = TileSettings(border=args.border).pad
    device, dtype = model_device_dtype(model)

    def one_pass(t: torch.Tensor, p) -> torch.Tensor:
        b, _, h, w = t.shape
        if args.tile is None and whole_batch_fits(model, b, h, w, pad, device=device, dtype=dtype):
            try:
                return whole_batch(model, t, pad)
            except BaseException as exc:  # noqa: B902 - only out-of-memory falls through
                if not is_out_of_memory(exc):
                    raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        return upscale_rgba(model, t, tiles=tile_settings(args), progress=p)

    def run(x: torch.Tensor) -> torch.Tensor:
        return upscale_to(one_pass, x, target, scale=model.scale, has_alpha=False, progress=progress)

    return run


def run_video(model, job: Job, args, write: Callable[[str], None], target_of) -> None:
    """Upscale ``job.src`` into ``job.dst`` (temporary file, renamed when complete)."""
    from tqdm import tqdm

    container, vstream = V.open_input(job.src)
    writer = None
    bar = None
    try:
        ctx = vstream.codec_context
        h, w = ctx.height, ctx.width
        if not h or not w:
            raise DLGSANetError(f"{job.src}: the video stream has no frame size")
        codec = args.codec or V.default_codec(job.dst.suffix)
        source_fmt = ctx.pix_fmt or "yuv420p"
        pix_fmt = V.choose_pix_fmt(codec, source_fmt)
        if pix_fmt != source_fmt:
            write(f"dlgsanet upscale: note: {job.dst.name}: {codec} cannot write {source_fmt}; using {pix_fmt}")
        wanted = target_of(h, w)
        target = V.even_size(wanted, pix_fmt)
        if target != wanted:
            write(f"dlgsanet upscale: note: {job.dst.name}: {pix_fmt} needs sizes that are multiples of its "
                  f"chroma blocks; frames are resized to {target[1]}x{target[0]} instead of "
                  f"{wanted[1]}x{wanted[0]} (nothing is cropped)")
        deep = V._depth(source_fmt) > 8
        colour = {"colorspace": ctx.colorspace, "color_range": ctx.color_range,
                  "color_primaries": ctx.color_primaries, "color_trc": ctx.color_trc,
                  "sample_aspect_ratio": ctx.sample_aspect_ratio or None}  # anamorphic pixels stay so
        rate = vstream.guessed_rate or vstream.average_rate
        time_base = vstream.time_base or (1 / rate if rate else None)
        if time_base is None:
            raise DLGSANetError(f"{job.src}: the video has neither a time base nor a frame rate")
        job.dst.parent.mkdir(parents=True, exist_ok=True)
        writer = V.VideoWriter(job.dst, codec=codec, crf=args.crf, pix_fmt=pix_fmt, size=target,
                               rate=rate, time_base=time_base, colour=colour,
                               audio=list(container.streams.audio), overwrite=args.overwrite)
        batch = args.batch or default_batch(model, (h, w), args.border)
        bar = tqdm(total=int(vstream.frames or 0) or None, unit="frame", smoothing=0, disable=args.quiet,
                   desc=job.src.name, file=sys.stderr, leave=False)
        run = batch_runner(model, args, target)
        step = 1 / rate if rate else time_base
        for n, (src_frame, array) in enumerate(V.upscale_frames(
                V.decoded_frames(container, vstream, writer), run, batch, deep)):
            fallback = int(round(n * step / time_base))
            writer.encode(V.output_frame(array, src_frame, fallback, time_base, pix_fmt, colour))
            bar.update(1)
        writer.finish()
        writer = None
    except (DLGSANetError, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001 - FFmpeg's errors (damaged stream, full disk): this file fails
        text = getattr(e, "strerror", None) or (str(e).splitlines()[0] if str(e).strip() else type(e).__name__)
        raise DLGSANetError(f"{job.src}: {text}") from None
    finally:
        if writer is not None:
            writer.abort()
        if bar is not None:
            bar.close()
        container.close()
