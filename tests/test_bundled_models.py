"""The bundled default models (issue 20): which one each entry point picks, and that every file is
what its JSON record, ``dlgsanet/weights/README.md`` and ``docs/default_model.md`` say it is."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import DATA, REPO_ROOT
from dlgsanet import checkpoint, load_model
from dlgsanet.checkpoint import bundled_model_path, bundled_scale_for, bundled_scales, default_model_path
from dlgsanet.cli import main
from dlgsanet.errors import CheckpointError
from dlgsanet.evaluate import evaluate_folder

SCALES = bundled_scales()
DOCS = (REPO_ROOT / "docs" / "default_model.md", REPO_ROOT / "dlgsanet" / "weights" / "README.md",
        REPO_ROOT / "README.md")


def _record(scale: int) -> dict:
    return json.loads(default_model_path(scale).with_suffix(".json").read_text())


def _upscale(tmp_path: Path, name: str, *options: str) -> np.ndarray:
    src = tmp_path / "in.png"
    if not src.exists():
        rng = np.random.default_rng(0)
        y, x = np.mgrid[0:20, 0:28].astype(np.float32)
        img = 120 + 80 * np.sin(x[..., None] / 3 + np.arange(3)) * np.cos(y[..., None] / 4)
        Image.fromarray(np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)).save(src)
    out = tmp_path / f"{name}.png"
    assert main(["upscale", str(src), "-o", str(out), "--quiet", *options]) == 0
    with Image.open(out) as im:
        return np.asarray(im)


def test_x2_x3_and_x4_are_bundled() -> None:
    assert SCALES == [2, 3, 4], SCALES


@pytest.mark.parametrize(("factor", "scales", "chosen"), [
    (None, [2, 4], 4), (None, [2], 2), (1.5, [2, 4], 2), (2, [2, 4], 2), (2.0000000001, [2, 4], 2),
    (2.5, [2, 4], 4), (2.5, [2, 3, 4], 3), (3, [4, 2, 3], 3), (0.5, [2, 3, 4], 2), (8, [2, 4], 4), (8, [2], 2)])
def test_bundled_scale_for_takes_the_smallest_that_reaches_the_factor(factor, scales, chosen) -> None:
    assert bundled_scale_for(factor, scales) == chosen


def test_no_bundled_model_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CheckpointError, match="no bundled DLGSANet model"):
        bundled_scale_for(2, [])
    # an install that lacks the x3 file (a partial copy): its weights folder holds x2 and x4 only
    for scale in (2, 4):
        shutil.copy(default_model_path(scale), tmp_path)
    monkeypatch.setattr(checkpoint, "WEIGHTS_DIR", tmp_path)
    assert bundled_scales() == [2, 4]
    with pytest.raises(CheckpointError, match=r"no bundled DLGSANet model for x3 \(bundled: x2, x4\); pick one"):
        bundled_model_path(3)
    with pytest.raises(CheckpointError, match="x3"):
        load_model(scale=3)
    src = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(src)
    assert main(["upscale", str(src), "-o", str(tmp_path / "o"), "--scale", "3"]) == 2
    assert "no bundled DLGSANet model for x3" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    # and --outscale 3 falls back to the x4 model, then resizes
    assert bundled_scale_for(3, bundled_scales()) == 4


@pytest.mark.parametrize("scale", SCALES)
def test_record_describes_the_file_beside_it(scale: int) -> None:
    path = default_model_path(scale)
    record = _record(scale)
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["recipe"]["scale"] == scale and record["recipe"]["preset"] == "tiny"
    model = load_model(scale=scale)
    assert (model.scale, model.preset) == (scale, "tiny")


@pytest.mark.parametrize("scale", SCALES)
def test_set5_score_is_the_documented_one_and_far_above_bicubic(scale: int, shared_dir) -> None:
    """Re-scores the shipped file: the tables users read must hold for the file they get."""
    recorded = _record(scale)[f"evaluation_x{scale}"]["Set5"]
    report = evaluate_folder(load_model(scale=scale), DATA / "Set5")
    print(f"x{scale} Set5: {report.psnr:.4f} dB / {report.ssim:.4f} (bicubic {report.bicubic_psnr:.4f})")
    assert abs(report.psnr - recorded["psnr"]) < 0.005 and abs(report.ssim - recorded["ssim"]) < 0.0005
    assert report.psnr > report.bicubic_psnr + 2.0
    for doc in DOCS:
        assert f"{recorded['psnr']:.2f}" in doc.read_text(), f"{doc.name} does not quote x{scale} Set5"


@pytest.mark.parametrize("scale", SCALES)
def test_cli_scale_picks_that_bundled_model(scale: int, tmp_path) -> None:
    picked = _upscale(tmp_path, f"scale{scale}", "--scale", str(scale))
    assert picked.shape == (20 * scale, 28 * scale, 3)
    assert np.array_equal(picked, _upscale(tmp_path, f"model{scale}", "--model", str(default_model_path(scale))))


def test_cli_outscale_uses_the_smallest_bundled_model_that_reaches_it(tmp_path) -> None:
    """x2 output: the x2 model (not x4 then downscaled); x3 output: the x3 model."""
    assert np.array_equal(_upscale(tmp_path, "out2", "--outscale", "2"), _upscale(tmp_path, "s2", "--scale", "2"))
    assert np.array_equal(_upscale(tmp_path, "out3", "--outscale", "3"), _upscale(tmp_path, "s3", "--scale", "3"))
    assert np.array_equal(_upscale(tmp_path, "out25", "--outscale", "2.5"),
                          _upscale(tmp_path, "s3to25", "--scale", "3", "--outscale", "2.5"))
    assert np.array_equal(_upscale(tmp_path, "default", ), _upscale(tmp_path, "s4", "--scale", "4"))


def test_cli_scale_errors_before_any_work(tmp_path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    base = [sys.executable, "-m", "dlgsanet", "upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "o")]
    cases = [(["--scale", "2", "--model", str(default_model_path(4))], "not allowed with argument"),
             (["--scale", "5"], "invalid choice")]
    for options, message in cases:
        proc = subprocess.run(base + options, capture_output=True, text=True, cwd=REPO_ROOT)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert not (tmp_path / "o").exists()
