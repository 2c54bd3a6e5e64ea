"""``python -m dlgsanet train``: train a DLGSANet with the paper's recipe (see ``dlgsanet.train``)."""
from __future__ import annotations

import argparse
import json

from ..errors import DLGSANetError


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", nargs="+", required=True, metavar="DIR",
                        help="folders of HR training images (PNG/JPEG); LR is made by MATLAB bicubic")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder: models/*.safetensors, training_state.pt, log.jsonl")
    parser.add_argument("--val", metavar="DIR", help="folder of HR validation images (e.g. Set5)")
    parser.add_argument("--val-images", type=int, metavar="N", help="validate on the first N images only")
    parser.add_argument("--preset", default="tiny", choices=["tiny", "light", "large"])
    parser.add_argument("--scale", type=int, default=4, choices=[2, 3, 4])
    parser.add_argument("--patch-size", type=int, metavar="PX",
                        help="HR patch side (default 96/144/192 for x2/x3/x4, as the paper); with --resume: "
                             "go on with another patch size")
    parser.add_argument("--batch-size", type=int, metavar="N",
                        help="patches per step (default 8); with --resume: go on with another batch")
    parser.add_argument("--init-from", metavar="CHECKPOINT",
                        help="start from the tensors of this DLGSANet checkpoint that fit (e.g. a x2 "
                             "body for a x4 run; the upsampler starts fresh when the scale differs)")
    parser.add_argument("--iterations", type=int, metavar="N",
                        help="length of the run (default 500000); with --resume: a new length")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--milestones", type=_ints, metavar="I,J,...",
                        help="MultiStepLR milestones (default: 50/80/90/95%% of --iterations); "
                             "with --resume: new milestones")
    parser.add_argument("--gamma", type=float, default=0.5, help="MultiStepLR factor")
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--ema-warmup", action="store_true",
                        help="EMA decay min(decay, (1+t)/(10+t)): lets short runs' EMA forget the start")
    parser.add_argument("--val-every", type=int, default=10_000, metavar="N")
    parser.add_argument("--save-every", type=int, default=10_000, metavar="N")
    parser.add_argument("--log-every", type=int, default=100, metavar="N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (CUDA, then Apple MPS, else CPU), cpu, cuda, cuda:N or mps")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads for torch (1 is fastest on a busy shared CPU)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its training_state.pt (same schedule)")
    parser.add_argument("--stop-after", type=int, metavar="ITER",
                        help="end this session after iteration ITER (state saved; resume later)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..train import TrainOptions, train

    try:
        options = TrainOptions(
            train_dirs=args.data, out_dir=args.out, val_dir=args.val, val_images=args.val_images,
            preset=args.preset, scale=args.scale, patch_size=args.patch_size, batch_size=args.batch_size or 8,
            iterations=args.iterations or 500_000, lr=args.lr, milestones=args.milestones, gamma=args.gamma,
            ema_decay=args.ema_decay, ema_warmup=args.ema_warmup, val_every=args.val_every,
            save_every=args.save_every, log_every=args.log_every, seed=args.seed, device=args.device,
            threads=args.threads, init_from=args.init_from)
    except (TypeError, ValueError) as e:
        raise DLGSANetError(str(e)) from e
    summary = train(options, resume=args.resume, stop_after=args.stop_after, progress=not args.no_progress,
                    resume_iterations=args.iterations if args.resume else None,
                    resume_milestones=args.milestones if args.resume else None,
                    resume_patch_size=args.patch_size if args.resume else None,
                    resume_batch_size=args.batch_size if args.resume else None)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover - ``python -m dlgsanet train`` is the public entry
    import sys

    from . import main

    sys.exit(main(["train", *sys.argv[1:]]))
