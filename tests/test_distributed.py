"""``dlgsanet upscale ... --ray`` (issue 18): the local command's job on a Ray cluster.

One local Ray cluster of 2 CPUs for the module (its start-up costs seconds); the CLI joins it
instead of starting its own. Every output is compared byte for byte with the local command's
for the same folder, so the tests hold whatever the model computes. The tests that need Ray skip
with a reason when it is not installed (CI installs it with the test extra); the option checks
and the message without Ray run everywhere.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import png
import pytest
from PIL import Image

import dlgsanet
from core_helpers import random_model, small_config
from dlgsanet.cli import main
from dlgsanet.distributed import plan_workers
from dlgsanet.errors import DLGSANetError


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "small_x2.safetensors"
    dlgsanet.save_model(random_model(small_config(scale=2)), path)
    return path


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster for the module, shut down after its last test."""
    ray = pytest.importorskip("ray", reason='Ray is not installed (pip install "dlgsanet[distributed]")')
    pytest.importorskip("ray.data", reason='Ray Data is not installed (pip install "dlgsanet[distributed]")')
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _rgb(path: Path, seed: int, mode: str = "RGB", h: int = 9, w: int = 13) -> Path:
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)
    Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode).save(path)
    return path


def _png16(path: Path, seed: int, alpha: bool, h: int = 8, w: int = 11) -> Path:
    planes = 4 if alpha else 3
    pixels = np.random.default_rng(seed).integers(0, 65536, (h, w * planes), dtype=np.uint16)
    with open(path, "wb") as f:
        png.Writer(w, h, greyscale=False, alpha=alpha, bitdepth=16).write(f, pixels.tolist())
    return path


def _mixed_folder(root: Path) -> Path:
    """RGB, RGBA, grayscale, 16-bit RGB and 16-bit RGBA PNGs, plus a JPEG."""
    root.mkdir()
    _rgb(root / "rgb.png", 0)
    _rgb(root / "rgba.png", 1, "RGBA")
    _rgb(root / "grey.png", 2, "L")
    _png16(root / "deep.png", 3, alpha=False)
    _png16(root / "deep_alpha.png", 4, alpha=True)
    _rgb(root / "photo.jpg", 5, h=10, w=12)
    return root


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _summary(err: str) -> list[str]:
    """The closing lines (from "upscaled ..." on), without the output folder's name."""
    lines = err.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("upscaled "))
    return [lines[start].rsplit(" into ", 1)[0]] + lines[start + 1:]


@pytest.mark.slow
def test_outputs_are_bit_identical_to_the_local_command(ray_cluster, model_file, tmp_path, capsys) -> None:
    src = _mixed_folder(tmp_path / "in")
    common = ["upscale", str(src), "--model", str(model_file)]
    assert main(common + ["-o", str(tmp_path / "local")]) == 0
    capsys.readouterr()
    assert main(common + ["-o", str(tmp_path / "ray"), "--ray", "--workers", "2"]) == 0
    err = capsys.readouterr().err
    assert "on 2 Ray worker(s)" in err and "upscaled 6 of 6 image(s) x2" in err
    local, distributed = _files(tmp_path / "local"), _files(tmp_path / "ray")
    assert sorted(local) == sorted(distributed) == sorted(p.name for p in src.iterdir())
    assert [name for name in local if local[name] != distributed[name]] == []
    info = png.Reader(filename=str(tmp_path / "ray" / "deep_alpha.png")).read()[3]
    assert info["bitdepth"] == 16 and info["alpha"]  # the folder really exercises 16 bits
    assert Image.open(tmp_path / "ray" / "grey.png").mode == "L"


@pytest.mark.slow
def test_a_damaged_file_is_reported_while_the_rest_complete(ray_cluster, model_file, tmp_path, capsys,
                                                            monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative inputs: messages name files as the user did
    src = Path("in")
    src.mkdir()
    _rgb(src / "a.png", 0)
    _rgb(src / "e.png", 1)
    (src / "c.png").write_bytes(b"")
    (src / "d.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    common = ["upscale", str(src), "--model", str(model_file)]
    assert main(common + ["-o", "local"]) == 1
    local_err = capsys.readouterr().err
    assert main(common + ["-o", "ray", "--ray"]) == 1
    err = capsys.readouterr().err
    assert sorted(p.name for p in Path("ray").iterdir()) == ["a.png", "e.png"]
    assert _files(Path("ray")) == _files(Path("local"))
    assert _summary(err) == _summary(local_err)
    failed = err[err.index("2 image(s) failed:"):]
    assert str(src / "c.png") in failed and "empty" in failed and str(src / "d.jpg") in failed
    assert str(tmp_path) not in failed and "Traceback" not in err


@pytest.mark.slow
def test_existing_outputs_are_skipped_or_refused_never_replaced_silently(ray_cluster, model_file, tmp_path,
                                                                        capsys) -> None:
    src = tmp_path / "in"
    src.mkdir()
    _rgb(src / "a.png", 0)
    _rgb(src / "b.png", 1)
    assert main(["upscale", str(src), "-o", str(tmp_path / "local"), "--model", str(model_file)]) == 0
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"done before")
    args = ["upscale", str(src), "-o", str(out), "--model", str(model_file), "--ray"]
    capsys.readouterr()
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err and not (out / "b.png").exists()
    assert main(args + ["--skip-existing"]) == 0
    assert "skipped 1" in capsys.readouterr().err
    assert (out / "a.png").read_bytes() == b"done before"
    assert (out / "b.png").read_bytes() == (tmp_path / "local" / "b.png").read_bytes()
    assert main(args + ["--overwrite"]) == 0
    assert _files(out) == _files(tmp_path / "local")


def test_without_ray_one_line_says_how_to_install_it(model_file, tmp_path, capsys, monkeypatch) -> None:
    """Ray hidden from the import system (the test runs with or without Ray installed)."""
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.data", None)
    src = tmp_path / "in"
    src.mkdir()
    _rgb(src / "a.png", 0)
    assert main(["upscale", str(src), "-o", str(tmp_path / "out"), "--model", str(model_file), "--ray"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "dlgsanet[distributed]"' in err
    assert not (tmp_path / "out").exists()


def test_ray_option_mistakes_are_one_line_before_any_work(tmp_path, capsys) -> None:
    src = tmp_path / "in"
    src.mkdir()
    _rgb(src / "a.png", 0)
    missing_model = str(tmp_path / "no_model.safetensors")  # never reached: the checks come first
    for extra, expected in ((["--workers", "2"], "--workers only applies with --ray"),
                            (["--ray", "--workers", "0"], "--workers must be a positive integer"),
                            (["--ray", "--device", "cuda:1"], "Ray gives every worker its own GPU")):
        assert main(["upscale", str(src), "-o", str(tmp_path / "out"), "--model", missing_model, *extra]) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1
    # --ray before the inputs takes the first input as its address: said as such
    assert main(["upscale", "--ray", str(src), str(src / "a.png"), "-o", str(tmp_path / "out")]) == 2
    assert "not a cluster address" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _options(**changes) -> argparse.Namespace:
    return argparse.Namespace(**{"device": "auto", "workers": None, "threads": None, **changes})


def test_worker_layout_follows_the_cluster() -> None:
    one_per_gpu = plan_workers([16, 16], 4, _options())
    assert (one_per_gpu.workers, one_per_gpu.num_gpus) == (4, 1)
    shared = plan_workers([16, 16], 3, _options(workers=4))  # 2 per GPU fit, 0.75 each would not
    assert (shared.workers, shared.num_gpus) == (4, 0.5)
    cpu_only = plan_workers([16, 16], 4, _options(device="cpu"))
    assert (cpu_only.workers, cpu_only.num_cpus, cpu_only.num_gpus, cpu_only.threads) == (8, 4, 0, 4)
    uneven = plan_workers([6, 6], 0, _options())  # one actor of 4 per node, not 12 // 4 = 3
    assert (uneven.workers, uneven.threads) == (2, 4)
    small = plan_workers([2], 0, _options())
    assert (small.workers, small.threads) == (1, 2)
    split = plan_workers([2], 0, _options(workers=2))
    assert (split.workers, split.threads) == (2, 1)
    three = plan_workers([4, 2], 0, _options(workers=3))  # 6 // 3 = 2 threads: 2 + 1 actors fit
    assert (three.workers, three.threads) == (3, 2)
    with pytest.raises(DLGSANetError, match="no GPUs"):
        plan_workers([8], 0, _options(device="cuda"))
    with pytest.raises(DLGSANetError, match="do not fit"):
        plan_workers([4], 0, _options(workers=2, threads=4))
    with pytest.raises(DLGSANetError, match="do not fit"):
        plan_workers([2], 0, _options(workers=3))
    with pytest.raises(DLGSANetError, match="that many CPUs"):
        plan_workers([4, 4, 4, 4], 0, _options(threads=8))
