"""The upscale command on real folders (issue 17): damaged files, resuming, where outputs may go,
messages in the CLI's words, JPEG quality and alpha, a closed stdout pipe, per-tile progress."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dlgsanet
from conftest import REPO_ROOT
from core_helpers import random_model, small_config
from dlgsanet.cli import main


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "small_x2.safetensors"
    dlgsanet.save_model(random_model(small_config(scale=2)), path)
    return path


def _image(path: Path, h: int = 9, w: int = 13, seed: int = 0, channels: int = 3) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)
    Image.fromarray(pixels, "RGBA" if channels == 4 else "RGB").save(path)
    return path


def _folder(root: Path, names=("a.png", "b.png")) -> Path:
    root.mkdir()
    for i, name in enumerate(names):
        _image(root / name, seed=i)
    return root


def test_folder_run_goes_on_past_damaged_files(model_file, tmp_path, capsys) -> None:
    src = _folder(tmp_path / "in", ("a.png", "e.png"))
    (src / "c.png").write_bytes(b"")
    (src / "d.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "out"
    assert main(["upscale", str(src), "-o", str(out), "--model", str(model_file)]) == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "e.png"]
    err = capsys.readouterr().err
    assert "upscaled 2 of 4 image(s)" in err and "2 image(s) failed:" in err
    summary = err[err.index("2 image(s) failed:"):]
    assert "c.png" in summary and "empty" in summary and "d.jpg" in summary
    assert "Traceback" not in err


def test_skip_existing_resumes_a_run(model_file, tmp_path, capsys) -> None:
    src = _folder(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"done before the interrupt")
    args = ["upscale", str(src), "-o", str(out), "--model", str(model_file)]
    assert main(args) == 2  # neither --overwrite nor --skip-existing: nothing is done
    err = capsys.readouterr().err
    assert "already exists" in err and "--skip-existing" in err and "--overwrite" in err
    assert not (out / "b.png").exists()
    assert main(args + ["--skip-existing"]) == 0
    assert (out / "a.png").read_bytes() == b"done before the interrupt"
    assert Image.open(out / "b.png").size == (26, 18)
    assert "skipped 1" in capsys.readouterr().err
    assert main(args + ["--skip-existing"]) == 0
    assert "nothing to do" in capsys.readouterr().err


def test_output_that_is_an_existing_file_is_refused_before_work(tmp_path, capsys) -> None:
    """A missing --model proves nothing was loaded: the output check comes first."""
    src = _folder(tmp_path / "in")
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"mine")
    missing_model = str(tmp_path / "no_model.safetensors")
    for inputs in ([str(src / "a.png"), str(src / "b.png")], [str(src)]):
        assert main(["upscale", *inputs, "-o", str(notes), "--model", missing_model]) == 2
        err = capsys.readouterr().err
        assert "existing file" in err and "give a folder" in err and len(err.strip().splitlines()) == 1
    assert notes.read_bytes() == b"mine"


@pytest.mark.parametrize("output, inputs, message", [
    ("single.tiff", ["a.png"], "cannot write .tiff files"),
    ("two.png", ["a.png", "b.png"], "is a file name, but there are 2 input images"),
])
def test_file_like_outputs_never_become_folders(tmp_path, capsys, output, inputs, message) -> None:
    src = _folder(tmp_path / "in")
    out = tmp_path / output
    assert main(["upscale", *(str(src / n) for n in inputs), "-o", str(out),
                 "--model", str(tmp_path / "no_model.safetensors")]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_tile_option_in_cli_words(model_file, tmp_path, capsys) -> None:
    src = _image(tmp_path / "a.png")
    assert main(["upscale", str(src), "-o", str(tmp_path / "o0"), "--model", str(model_file), "--quiet",
                 "--tile", "0"]) == 0  # 0 = automatic
    assert main(["upscale", str(src), "-o", str(tmp_path / "o1"), "--model", str(model_file), "--quiet",
                 "--tile", "auto"]) == 0
    assert (tmp_path / "o0" / "a.png").exists() and (tmp_path / "o1" / "a.png").exists()
    capsys.readouterr()
    assert main(["upscale", str(src), "-o", str(tmp_path / "o2"), "--model", str(model_file), "--tile", "50"]) == 2
    err = capsys.readouterr().err
    assert "--tile must be 0 or auto" in err and "96" in err and "tile_size" not in err


def test_convert_onto_existing_file_names_the_option(tmp_path, capsys) -> None:
    pth = tmp_path / "official.pth"
    torch.save({"params": random_model(small_config(scale=2)).state_dict()}, pth)
    out = tmp_path / "taken.safetensors"
    out.write_bytes(b"mine")
    assert main(["convert", str(pth), str(out)]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "overwrite=True" not in err
    assert out.read_bytes() == b"mine"
    assert main(["convert", str(pth), str(out), "--overwrite"]) == 0


def test_empty_image_file_is_named(model_file, tmp_path, capsys) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    assert main(["upscale", str(tmp_path / "empty.png"), "-o", str(tmp_path / "o"), "--model", str(model_file),
                 "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "empty.png" in err and "empty (0 bytes)" in err and "cannot identify" not in err


def test_closed_stdout_pipe_is_quiet() -> None:
    """``dlgsanet info --json | head``: the reader is gone before we write."""
    proc = subprocess.Popen([sys.executable, "-m", "dlgsanet", "info", "--json"], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait() != 0
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err


def test_rgba_to_jpeg_warns_that_alpha_is_dropped(model_file, tmp_path, capsys) -> None:
    src = _image(tmp_path / "t.png", channels=4)
    assert main(["upscale", str(src), "-o", str(tmp_path / "t.jpg"), "--model", str(model_file)]) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warning) == 1 and "transparency" in warning[0] and "--format png" in warning[0]
    assert Image.open(tmp_path / "t.jpg").mode == "RGB"
    with pytest.raises(SystemExit):
        main(["upscale", "--help"])
    assert "JPEG drops transparency" in " ".join(capsys.readouterr().out.split())


def test_background_flattens_transparency(model_file, tmp_path, capsys) -> None:
    """The flattened output is the RGBA output composited by hand over the colour."""
    src = _image(tmp_path / "t.png", 12, 12, channels=4)
    base = ["upscale", str(src), "--model", str(model_file)]
    assert main(base + ["-o", str(tmp_path / "rgba.png")]) == 0
    assert main(base + ["-o", str(tmp_path / "flat.png"), "--background", "#ff8000"]) == 0
    assert "warning" not in capsys.readouterr().err
    rgba = np.asarray(Image.open(tmp_path / "rgba.png"), dtype=np.float64) / 255
    expected = rgba[..., :3] * rgba[..., 3:] + np.array([1.0, 128 / 255, 0.0]) * (1 - rgba[..., 3:])
    with Image.open(tmp_path / "flat.png") as im:
        assert im.mode == "RGB"
        # rounding: the RGBA file (colour and alpha, 0.5 level each) and the flat one (0.5)
        assert np.abs(np.asarray(im) - expected * 255).max() <= 1.5
    assert main(base + ["-o", str(tmp_path / "x.jpg"), "--background", "pink"]) == 2
    assert "--background must be" in capsys.readouterr().err


def test_quality_and_lossless_webp(model_file, tmp_path) -> None:
    src = _image(tmp_path / "a.png", 40, 48)
    base = ["upscale", str(src), "--model", str(model_file), "--quiet"]
    assert main(base + ["-o", str(tmp_path / "q95.jpg")]) == 0
    assert main(base + ["-o", str(tmp_path / "q30.jpg"), "--quality", "30"]) == 0
    assert (tmp_path / "q30.jpg").stat().st_size < 0.7 * (tmp_path / "q95.jpg").stat().st_size
    assert main(base + ["-o", str(tmp_path / "ref.png")]) == 0
    assert main(base + ["-o", str(tmp_path / "l.webp"), "--lossless"]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "l.webp").convert("RGB")),
                          np.asarray(Image.open(tmp_path / "ref.png").convert("RGB")))
    assert main(base + ["-o", str(tmp_path / "bad.jpg"), "--quality", "0"]) == 2


def test_progress_bar_moves_per_tile(model_file, tmp_path, capsys) -> None:
    """One image of several tiles: the bar shows image 1/1 and stops at every tile."""
    src = _image(tmp_path / "wide.png", 100, 180)
    tiles = []
    model = dlgsanet.load_model(model_file)
    rgb = torch.from_numpy(np.asarray(Image.open(src), dtype=np.float32) / 255).permute(2, 0, 1)[None]
    dlgsanet.upscale_rgba(model, rgb, tile_size=96, progress=lambda done, total: tiles.append(total))
    total_tiles = tiles[-1]
    assert total_tiles >= 2
    assert main(["upscale", str(src), "-o", str(tmp_path / "o.png"), "--model", str(model_file),
                 "--tile", "96"]) == 0
    err = capsys.readouterr().err
    percents = {int(p) for p in re.findall(r"image 1/1 wide\.png:\s+(\d+)%", err)}
    assert len(percents - {0, 100}) == total_tiles - 1, err  # one stop per finished tile
    assert 100 in percents


def test_output_inside_a_file_or_with_a_clashing_format_is_refused(tmp_path, capsys) -> None:
    src = _image(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_bytes(b"mine")
    missing_model = str(tmp_path / "no_model.safetensors")
    for output, extra, message in ((tmp_path / "notes.txt" / "x.png", [], "notes.txt is a file"),
                                   (tmp_path / "notes.txt" / "sub", [], "notes.txt is a file"),
                                   (tmp_path / "x.png", ["--format", "jpg"], "--format jpg does not match")):
        assert main(["upscale", str(src), "-o", str(output), "--model", missing_model, *extra]) == 2
        assert message in capsys.readouterr().err
