"""Ship a finished training run as a bundled default model: ``dlgsanet/weights/dlgsanet_tiny_xS``.

Run from the repository root once a run in ``training/<run>/`` (or its working copy) has saved the
iteration to ship::

    python training/ship.py --run /work/runs/tiny_x2 --record-from training/tiny_x2 \
        --data ../shared/data --machine "2-core shared CPU (AVX2), torch 2.14.1, 2 threads"

It writes two files and refuses to replace either (``--overwrite`` to redo a ship):

- ``dlgsanet_tiny_xS.safetensors``: the EMA weights of that iteration, with the recipe and the
  training record in the safetensors metadata (``dlgsanet_recipe``, ``dlgsanet_training``);
- ``dlgsanet_tiny_xS.json``: the record users and tests read (recipe, every session's command, wall
  time, the Set5 validation curve, Set5/Set14 scores next to bicubic, the file's SHA-256).

Set14 is scored here for the first time in a run's life: nothing before shipping looks at it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from dlgsanet import load_model, save_model
from dlgsanet.checkpoint import WEIGHTS_DIR, default_model_path, read_checkpoint
from dlgsanet.errors import DLGSANetError
from dlgsanet.evaluate import evaluate_folder


def read_log(path: Path) -> tuple[dict[int, float], dict[int, float]]:
    """(iteration -> Set5 validation PSNR, iteration -> training wall time); a resumed session's
    entries replace those an interrupted one wrote past its last save."""
    psnr: dict[int, float] = {}
    wall: dict[int, float] = {}
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        it = int(entry["iteration"])
        wall[it] = float(entry["wall_time_s"])
        if "val_psnr_ema" in entry:
            psnr[it] = round(float(entry["val_psnr_ema"]), 3)
    return psnr, wall


def sessions(path: Path) -> list[str]:
    """The commands that made the run, one per line (``#`` lines are comments)."""
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def portable(recipe: dict[str, Any], data: Path) -> dict[str, Any]:
    """The recipe with this machine's paths written as a checkout sees them: ``data/...`` for the
    image sets, repository-relative for files in it, ``runs/<name>`` for the output folder."""
    root = Path(__file__).resolve().parents[1]

    def short(path: str) -> str:
        p = Path(path).resolve()
        for base, prefix in ((data.resolve(), "data"), (root, "")):
            if p.is_relative_to(base):
                return str(Path(prefix) / p.relative_to(base))
        return path

    out = dict(recipe)
    out["train_dirs"] = [short(d) for d in recipe["train_dirs"]]
    for key in ("val_dir", "init_from"):
        if out.get(key):
            out[key] = short(out[key])
    out["out_dir"] = f"runs/{Path(recipe['out_dir']).name}"
    return out


def score(model_path: Path, data: Path, scale: int) -> dict[str, dict[str, float]]:
    model = load_model(model_path)
    out = {}
    for name in ("Set5", "Set14"):
        report = evaluate_folder(model, data / name)
        out[name] = {"psnr": round(report.psnr, 4), "ssim": round(report.ssim, 4),
                     "bicubic_psnr": round(report.bicubic_psnr, 4), "bicubic_ssim": round(report.bicubic_ssim, 4)}
        print(f"x{scale} {name}: {out[name]}", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="the run's output folder (with models/)")
    parser.add_argument("--record-from", type=Path, default=None,
                        help="folder with log.jsonl, options.json and sessions.txt (default: --run)")
    parser.add_argument("--iteration", type=int, default=None, help="default: the run's last saved iteration")
    parser.add_argument("--data", type=Path, required=True, help="folder with Set5/ and Set14/")
    parser.add_argument("--machine", required=True, help="what it was trained on, in words")
    parser.add_argument("--note", default=None,
                        help="why this iteration, when it is not the run's last validated one (kept in the record)")
    parser.add_argument("--weights-dir", type=Path, default=WEIGHTS_DIR,
                        help="where the bundled models live (default: dlgsanet/weights of this checkout)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        return ship(args)
    except DLGSANetError as exc:
        parser.error(str(exc))


def ship(args: argparse.Namespace) -> int:
    """Write the model and its record for the parsed command line ``args``."""

    record_dir = args.record_from or args.run
    options = json.loads((record_dir / "options.json").read_text())
    scale = int(options["scale"])
    psnr, wall = read_log(record_dir / "log.jsonl")
    if not psnr:
        raise DLGSANetError(f"{record_dir / 'log.jsonl'} has no validation score yet; ship after a validation")
    it = args.iteration or max(psnr)
    if it not in wall:
        raise DLGSANetError(f"iteration {it} is not in {record_dir / 'log.jsonl'}")
    source = args.run / "models" / f"net_g_ema_{it}.safetensors"
    if not source.is_file():
        raise DLGSANetError(f"{source} not found: that iteration was not saved in this run folder")
    target = args.weights_dir / default_model_path(scale).name  # the name load_model(scale=) reads
    record_path = target.with_suffix(".json")
    for path in (target, record_path):
        if path.exists() and not args.overwrite:
            raise DLGSANetError(f"{path} exists; --overwrite to replace it")

    _, meta = read_checkpoint(source)
    trained = json.loads(meta["dlgsanet_training"])
    if int(trained["iteration"]) != it:
        raise DLGSANetError(f"{source} says it holds iteration {trained['iteration']}, not {it}")
    commands = sessions(record_dir / "sessions.txt")
    record: dict[str, Any] = {
        "model": f"DLGSANet-{options['preset'].capitalize()} x{scale}, EMA weights",
        "iteration": it,
        "training_wall_time_s": round(wall[it], 1),
        "sessions": commands,
        "machine": args.machine,
        "recipe": {**portable(options, args.data), "iterations": it},
    }
    if args.note:
        record["note"] = args.note
    save_model(load_model(source), target, overwrite=args.overwrite, metadata={
        "dlgsanet_recipe": json.dumps(record["recipe"], sort_keys=True),
        "dlgsanet_training": json.dumps({k: record[k] for k in ("model", "iteration", "training_wall_time_s",
                                                                 "sessions", "machine", "note") if k in record})})
    record["sha256"] = hashlib.sha256(target.read_bytes()).hexdigest()
    record[f"evaluation_x{scale}"] = score(target, args.data, scale)
    record["evaluation_command"] = f"python -m dlgsanet eval --data data/Set5 --scale {scale}  (and data/Set14)"
    record["validation_psnr_set5_by_iteration"] = {str(k): v for k, v in sorted(psnr.items()) if k <= it}
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {target} and {record_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
