"""training/ship.py: a finished run becomes a bundled model and its record, scored as `eval` scores.

A tiny configuration trained for a few steps on synthetic images stands in for a real run; the
script, the training loop, the loader and the evaluation are all the real ones.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
import torch

import dlgsanet
from dlgsanet.checkpoint import read_checkpoint
from dlgsanet.evaluate import evaluate_folder
from dlgsanet.train import TrainOptions, train

from conftest import REPO_ROOT
from test_train import TINY, _write_images

SHIP = REPO_ROOT / "training" / "ship.py"


def _ship_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dlgsanet_training_ship", SHIP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A finished x2 run (saves and validations at 3 and 6) and the Set5/Set14 folders to score."""
    root = tmp_path_factory.mktemp("ship")
    data = root / "data"
    _write_images(data / "train", n=3, size=40)
    _write_images(data / "Set5" / "HR", n=2, size=36)
    _write_images(data / "Set14", n=3, size=30)
    out = root / "runs" / "tiny_x2"
    opts = TrainOptions(train_dirs=[str(data / "train")], out_dir=str(out), scale=2, config=TINY,
                        patch_size=16, batch_size=4, iterations=6, lr=2e-3, milestones=[4],
                        val_every=3, save_every=3, log_every=1, threads=1, val_dir=str(data / "Set5" / "HR"))
    train(opts, progress=False, log=lambda _m: None)
    (out / "sessions.txt").write_text("# how it was made\npython -m dlgsanet train --out runs/tiny_x2   # 1-6\n\n"
                                      "python -m dlgsanet train --out runs/tiny_x2 --resume   # none\n")
    return {"root": root, "data": data, "out": out}


def _ship(run: dict[str, Path], weights: Path, *extra: str) -> int:
    return _ship_module().main(["--run", str(run["out"]), "--data", str(run["data"]),
                                "--machine", "a test machine", "--weights-dir", str(weights), *extra])


def test_ship_writes_the_ema_weights_and_a_record_that_eval_confirms(run: dict[str, Path], tmp_path: Path) -> None:
    assert _ship(run, tmp_path) == 0
    model_path, record_path = tmp_path / "dlgsanet_tiny_x2.safetensors", tmp_path / "dlgsanet_tiny_x2.json"
    record = json.loads(record_path.read_text())

    # the last validated iteration, as its EMA weights, bit for bit
    assert record["iteration"] == 6
    shipped, meta = read_checkpoint(model_path)
    ema, _ = read_checkpoint(run["out"] / "models" / "net_g_ema_6.safetensors")
    assert shipped.keys() == ema.keys() and all(torch.equal(shipped[k], ema[k]) for k in ema)
    assert record["sha256"] == hashlib.sha256(model_path.read_bytes()).hexdigest()

    # scores are what `dlgsanet eval` gives for the shipped file
    model = dlgsanet.load_model(model_path)
    for name, folder in (("Set5", run["data"] / "Set5"), ("Set14", run["data"] / "Set14")):
        report = evaluate_folder(model, folder)
        assert record["evaluation_x2"][name] == {
            "psnr": round(report.psnr, 4), "ssim": round(report.ssim, 4),
            "bicubic_psnr": round(report.bicubic_psnr, 4), "bicubic_ssim": round(report.bicubic_ssim, 4)}

    # the curve and wall time are the log's; the commands are sessions.txt's, comments dropped
    log = [json.loads(line) for line in (run["out"] / "log.jsonl").read_text().splitlines()]
    val = {str(e["iteration"]): round(e["val_psnr_ema"], 3) for e in log if "val_psnr_ema" in e}
    assert record["validation_psnr_set5_by_iteration"] == val and set(val) == {"3", "6"}
    assert record["training_wall_time_s"] == round([e for e in log if e["iteration"] == 6][-1]["wall_time_s"], 1)
    assert record["sessions"] == ["python -m dlgsanet train --out runs/tiny_x2   # 1-6",
                                  "python -m dlgsanet train --out runs/tiny_x2 --resume   # none"]
    # this machine's paths are written as a checkout sees them
    recipe = record["recipe"]
    assert recipe["train_dirs"] == ["data/train"] and recipe["val_dir"] == "data/Set5/HR"
    assert recipe["out_dir"] == "runs/tiny_x2" and recipe["iterations"] == 6
    assert json.loads(meta["dlgsanet_recipe"]) == recipe
    assert json.loads(meta["dlgsanet_training"])["machine"] == "a test machine"


def test_ship_never_replaces_a_bundled_model_unless_told(run: dict[str, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert _ship(run, tmp_path, "--iteration", "3", "--note", "why 3") == 0
    model_path = tmp_path / "dlgsanet_tiny_x2.safetensors"
    before = model_path.read_bytes()
    assert json.loads(model_path.with_suffix(".json").read_text())["note"] == "why 3"
    assert json.loads(read_checkpoint(model_path)[1]["dlgsanet_training"])["note"] == "why 3"
    with pytest.raises(SystemExit) as exc:
        _ship(run, tmp_path)
    assert exc.value.code == 2 and "exists; --overwrite to replace it" in capsys.readouterr().err
    assert model_path.read_bytes() == before
    assert json.loads(model_path.with_suffix(".json").read_text())["iteration"] == 3

    assert _ship(run, tmp_path, "--overwrite") == 0
    assert model_path.read_bytes() != before
    record = json.loads(model_path.with_suffix(".json").read_text())
    assert record["iteration"] == 6 and record["sha256"] == hashlib.sha256(model_path.read_bytes()).hexdigest()
    assert "note" not in record


def test_ship_explains_an_iteration_that_was_not_saved(run: dict[str, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _ship(run, tmp_path, "--iteration", "5")  # logged, validated never, saved never
    assert "net_g_ema_5.safetensors not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _ship(run, tmp_path, "--iteration", "60")
    assert "iteration 60 is not in" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_resumed_sessions_log_entries_replace_those_of_the_interrupted_one(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    entries = [{"iteration": 500, "val_psnr_ema": 30.0, "wall_time_s": 100.0},
               {"iteration": 600, "loss": 0.1, "lr": 1e-3, "wall_time_s": 130.0},   # killed after this
               {"iteration": 600, "loss": 0.1, "lr": 1e-3, "wall_time_s": 125.0},   # the resumed session
               {"iteration": 1000, "val_psnr_ema": 30.12345, "wall_time_s": 200.0}]
    log.write_text("".join(json.dumps(e) + "\n" for e in entries))
    psnr, wall = _ship_module().read_log(log)
    assert psnr == {500: 30.0, 1000: 30.123} and wall == {500: 100.0, 600: 125.0, 1000: 200.0}
