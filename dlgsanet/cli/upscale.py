"""``dlgsanet upscale INPUT... -o OUT``: upscale image files and folders.

Never overwrites without ``--overwrite`` and never overwrites an input; RGBA keeps alpha,
grayscale stays grayscale, 16-bit PNGs stay 16-bit. Checks everything it can before the model
is loaded (``upscale_plan``), then works image by image (``upscale_run``): a damaged file is
reported and skipped, and the exit status is 1 when any image failed.
"""
from __future__ import annotations

import argparse
import sys

from ..checkpoint import load_model
from ..devices import pick_device, pick_dtype
from ..tiling.settings import MIN_TILE_SIZE
from .upscale_plan import check_options, collect, plan_outputs
from .upscale_run import run_jobs, summary

EPILOG = """\
models: --scale 2/3/4 picks a bundled DLGSANet-Tiny (x4 unless --outscale asks for less: --outscale
1.5 or 2 uses the x2 model, up to 3 the x3 one, each a little better than x4 then downscaling);
--model FILE any other.

output size: by default the model's own scale. --outscale F gives any
factor (1.5; 2 from a x4 model; 8 from a x4 model runs it twice); --size WxH fits the image in
that box, --width/--height set one side; aspect ratio is always kept. Sizes other than the
model's are resampled after the model with antialiased bicubic filtering.

formats: PNG keeps everything (alpha, grayscale, 16 bits). JPEG has no transparency: RGBA
images written as JPEG lose their alpha (a warning says so), unless --background COLOR
flattens them onto a colour. WebP keeps alpha at 8 bits.

exit status: 0 all done; 1 some images failed (listed at the end, the others are written);
2 nothing done (a bad option or input, reported before any work); 130 interrupted.
An interrupted run resumes with the same command plus --skip-existing (outputs are written
to a temporary file and renamed, so no half-written image is ever left behind).

videos: frames are decoded, upscaled --batch at a time and encoded as they come (memory is
bounded by the batch); frame count, timestamps (any frame rate), colour tags and the pixel
format where the codec has it are kept, audio is copied unchanged. Sizes a yuv420p video
cannot have (odd) are rounded down to even by resampling. See docs/video.md.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image or video files and/or folders of them")
    parser.add_argument("-o", "--output", required=True,
                        help="output folder (created), or a .png/.jpg/.webp file name for a single input "
                             "image (.mp4/.mkv/.mov/.webm/.avi for a single video)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", help="checkpoint (.pth/.safetensors); default: a bundled DLGSANet-Tiny (--scale)")
    which.add_argument("--scale", type=int, choices=[2, 3, 4], default=None,
                       help="use the bundled DLGSANet-Tiny of this scale (default: x4, or with --outscale F "
                            "the smallest bundled scale that reaches F); the output size follows it")
    size = parser.add_argument_group("output size (default: the model's scale)")
    size.add_argument("--outscale", type=float, default=None, metavar="F",
                      help="output size as a factor of the input, any number > 0 (e.g. 2 or 1.5)")
    size.add_argument("--size", default=None, metavar="WxH", help="fit the output inside WxH pixels")
    size.add_argument("--width", type=int, default=None, metavar="W",
                      help="output width (height follows); with --height: fit inside both")
    size.add_argument("--height", type=int, default=None, metavar="H", help="output height (width follows)")
    fmt = parser.add_argument_group("output files")
    fmt.add_argument("--format", choices=["same", "png", "jpg", "webp"], default="same",
                     help="output format (default: same as the input); JPEG drops transparency")
    fmt.add_argument("--background", default=None, metavar="COLOR",
                     help="flatten transparency onto COLOR (white, black, gray, #RRGGBB), e.g. for JPEG")
    fmt.add_argument("--quality", type=int, default=95, metavar="N",
                     help="JPEG and WebP quality, 1-100 (default: 95)")
    fmt.add_argument("--lossless", action="store_true", help="lossless WebP (--quality is then ignored)")
    fmt.add_argument("--suffix", default="", help="appended to output file stems, e.g. _x4")
    existing = fmt.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace existing output files")
    existing.add_argument("--skip-existing", action="store_true",
                          help="leave existing output files alone and do the rest (resume a run)")
    video = parser.add_argument_group("videos (.mp4 .mkv .mov .webm .avi; needs PyAV: pip install 'dlgsanet[video]')")
    video.add_argument("--codec", default=None,
                       help="video encoder (default: libx264, libvpx-vp9 for .webm; mpeg4 without libx264)")
    video.add_argument("--crf", type=int, default=18,
                       help="constant quality, 0 = lossless (x264/x265) .. 51; lower is better (default: 18)")
    video.add_argument("--batch", type=int, default=None, metavar="N",
                       help="frames upscaled together (default: as many as fit on CUDA, 2 on the CPU)")
    parser.add_argument("--recursive", action="store_true", help="also look into sub-folders")
    parser.add_argument("--tile", default=None, metavar="N",
                        help=f"tile size in input pixels, at least {MIN_TILE_SIZE}; 0 or auto: choose by free "
                             f"memory (default)")
    parser.add_argument("--overlap", type=int, default=None, help="tile overlap in input pixels (default: tuned)")
    parser.add_argument("--border", choices=["mirror", "official"], default="mirror",
                        help="image borders: mirror-pad the input so edges keep their colour (default), or "
                             "official: exactly what the official network computes (zero padding, edges drift)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for torch (default: torch's choice; 1 can be faster on a busy machine)")
    cluster = parser.add_argument_group("many machines (Ray; docs/distributed.md)")
    cluster.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                         help="run on a Ray cluster at ADDRESS (host:6379, ray://host:10001, or auto: the one "
                              "started on this machine); without ADDRESS: $RAY_ADDRESS, else a new local one")
    cluster.add_argument("--workers", type=int, default=None, metavar="N",
                         help="Ray actors (default: one per GPU, else the cluster's CPUs / 4 threads each)")


def run(args: argparse.Namespace) -> int:
    check_options(args)
    if args.ray is not None or args.workers is not None:
        from ..distributed import check_ray_options

        check_ray_options(args)
    plan = plan_outputs(args, collect(args.inputs, args.recursive))
    if not plan.jobs:
        if not args.quiet:
            print(f"nothing to do: all {len(plan.skipped)} output(s) already exist (--skip-existing)",
                  file=sys.stderr)
        return 0
    if args.ray is not None:
        from ..distributed import run_on_ray

        model_scale, outcome = run_on_ray(plan, args)
    else:
        device = pick_device(args.device)
        model = load_model(args.model, device=device, dtype=pick_dtype(args.precision, device))
        model_scale, outcome = model.scale, run_jobs(model, plan, args)
    if args.outscale is not None:
        scale_text = f"x{args.outscale:g}"
    elif args.width is not None or args.height is not None:
        scale_text = f"to fit {args.width or '*'}x{args.height or '*'}"
    else:
        scale_text = f"x{model_scale}"
    for line in summary(plan, outcome, scale_text, failures_only=args.quiet):
        print(line, file=sys.stderr)
    return 1 if outcome.failed else 0
