"""The command line end to end: upscale (formats, alpha, grayscale, 16-bit, no overwrite), info, convert."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO_ROOT
from core_helpers import random_model, small_config
from dlgsanet import load_model, save_model
from dlgsanet.cli import main
from dlgsanet.images import read_image


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "small_x2.safetensors"
    save_model(random_model(small_config(scale=2)), path)
    return path


def _rgb(h: int = 9, w: int = 13, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_upscale_png_jpeg_webp_and_folder(model_file, tmp_path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_rgb()).save(src / "a.png")
    Image.fromarray(_rgb(seed=1)).save(src / "b.jpg", quality=95)
    Image.fromarray(_rgb(seed=2)).save(src / "c.webp")
    (src / "notes.txt").write_text("not an image")
    assert main(["upscale", str(src), "-o", str(tmp_path / "out"), "--model", str(model_file), "--quiet"]) == 0
    for name in ("a.png", "b.jpg", "c.webp"):
        with Image.open(tmp_path / "out" / name) as im:
            assert im.size == (26, 18) and im.mode == "RGB"
    assert not (tmp_path / "out" / "notes.txt").exists()


def test_rgba_keeps_alpha_and_gray_stays_gray(model_file, tmp_path) -> None:
    rgba = np.dstack([_rgb(), np.tile(np.linspace(0, 255, 13, dtype=np.uint8), (9, 1))])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    Image.fromarray(_rgb()[..., 0], "L").save(tmp_path / "g.png")
    out = tmp_path / "out"
    assert main(["upscale", str(tmp_path / "t.png"), str(tmp_path / "g.png"), "-o", str(out),
                 "--model", str(model_file), "--quiet"]) == 0
    with Image.open(out / "t.png") as im:
        assert im.mode == "RGBA" and im.size == (26, 18)
        alpha = np.asarray(im)[..., 3].astype(int)
    assert alpha[:, 0].mean() < 40 and alpha[:, -1].mean() > 215  # the gradient survived
    with Image.open(out / "g.png") as im:
        assert im.mode == "L" and im.size == (26, 18)


def test_16bit_png_is_read_without_clipping_and_written_at_16_bits(model_file, tmp_path) -> None:
    png = pytest.importorskip("png")
    values = (np.arange(9 * 13 * 3).reshape(9, 13, 3) * 149 + 7).astype(np.uint16)
    with open(tmp_path / "deep.png", "wb") as f:
        png.Writer(13, 9, bitdepth=16, greyscale=False).write(f, values.reshape(9, -1).tolist())
    image = read_image(tmp_path / "deep.png")
    assert image.bit_depth == 16
    restored = (image.rgb.permute(1, 2, 0).numpy() * 65535).round().astype(np.uint16)
    assert np.array_equal(restored, values)
    assert main(["upscale", str(tmp_path / "deep.png"), "-o", str(tmp_path / "o.png"),
                 "--model", str(model_file), "--quiet"]) == 0
    width, height, _, info = png.Reader(filename=str(tmp_path / "o.png")).read()
    assert (width, height, info["bitdepth"]) == (26, 18, 16)


def test_16bit_grayscale_png_stays_16bit_grayscale(model_file, tmp_path) -> None:
    """Issue 17: this crashed in write_image (Pillow 13) after the whole upscale."""
    png = pytest.importorskip("png")
    values = (np.arange(9 * 13).reshape(9, 13) * 509 + 3).astype(np.uint16)
    with open(tmp_path / "grey16.png", "wb") as f:
        png.Writer(13, 9, bitdepth=16, greyscale=True).write(f, values.tolist())
    assert main(["upscale", str(tmp_path / "grey16.png"), "-o", str(tmp_path / "o.png"),
                 "--model", str(model_file), "--quiet"]) == 0
    width, height, _, info = png.Reader(filename=str(tmp_path / "o.png")).read()
    assert (width, height, info["bitdepth"], info["greyscale"], info["alpha"]) == (26, 18, 16, True, False)


def test_never_overwrites_without_permission(model_file, tmp_path, capsys) -> None:
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    out = tmp_path / "out.png"
    out.write_bytes(b"precious")
    args = ["upscale", str(tmp_path / "a.png"), "-o", str(out), "--model", str(model_file), "--quiet"]
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"
    assert main(args + ["--overwrite"]) == 0
    assert Image.open(out).size == (26, 18)


def test_never_replaces_its_input(model_file, tmp_path, capsys) -> None:
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    before = (tmp_path / "a.png").read_bytes()
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path), "--model", str(model_file),
                 "--overwrite", "--quiet"]) == 2
    assert "would replace its input" in capsys.readouterr().err
    assert (tmp_path / "a.png").read_bytes() == before


def test_threads_option_sets_torch_threads(model_file, tmp_path) -> None:
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", str(model_file),
                     "--quiet", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1 and (tmp_path / "out" / "a.png").exists()
    finally:
        torch.set_num_threads(before)


def test_bad_inputs_are_one_line_errors(model_file, tmp_path) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "esrgan.pth").write_bytes(b"")
    cases = [  # (arguments, message, exit status: 2 nothing done, 1 an image failed)
        (["upscale", str(tmp_path / "missing.png"), "-o", str(tmp_path / "o")], "input not found", 2),
        (["upscale", str(tmp_path / "broken.png"), "-o", str(tmp_path / "o"), "--model", str(model_file)],
         "cannot read", 1),
        (["upscale", str(tmp_path / "broken.png"), "-o", str(tmp_path / "o"), "--model", str(tmp_path / "esrgan.pth")],
         "empty", 2),
        (["info", str(tmp_path / "nope.safetensors")], "not found", 2),
        (["upscale", str(tmp_path / "broken.png"), "-o", str(tmp_path / "o"), "--threads", "0"],
         "--threads must be a positive integer", 2),
    ]
    for args, message, status in cases:
        proc = subprocess.run([sys.executable, "-m", "dlgsanet", *args], capture_output=True, text=True,
                              cwd=REPO_ROOT)
        assert proc.returncode == status, proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr


def test_info_and_convert(model_file, tmp_path, capsys) -> None:
    pth = tmp_path / "official.pth"
    model = random_model(small_config(scale=3))
    torch.save({"params_ema": model.state_dict(), "params": model.state_dict()}, pth)
    assert main(["info", str(pth), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["scale"] == 3 and info["preset"] == "custom"
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["hyperparameters"]["groups"] == 2 and "params_ema" in info["format"]
    out = tmp_path / "converted.safetensors"
    assert main(["convert", str(pth), str(out)]) == 0
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert info["format"] == "safetensors" and info["metadata"]["converted_from"] == "official.pth"
    assert main(["convert", str(pth), str(out)]) == 2  # exists: refused


def test_unusable_precision_is_a_clear_error() -> None:
    """bf16 runs on some CPUs and not on others; either it works or the error says why."""
    from dlgsanet.devices import dtype_problem, pick_dtype

    cpu = torch.device("cpu")
    assert pick_dtype("auto", cpu) == torch.float32
    with pytest.raises(Exception, match="fp16 on the CPU"):
        pick_dtype("fp16", cpu)
    if dtype_problem(torch.bfloat16, cpu) is None:
        assert pick_dtype("bf16", cpu) == torch.bfloat16
    else:
        with pytest.raises(Exception, match="bfloat16 does not run on this cpu"):
            pick_dtype("bf16", cpu)


def test_border_official_gives_the_official_network_and_mirror_is_the_default(tmp_path) -> None:
    """``--border official`` writes exactly ``model(x)``; the default (mirror) keeps a flat colour."""
    flat = np.zeros((12, 12, 3), dtype=np.uint8)
    flat[...] = (200, 30, 40)  # saturated: where the official zero padding drifts most
    Image.fromarray(flat).save(tmp_path / "flat.png")
    outs = {}
    for border in ("mirror", "official"):
        dst = tmp_path / f"{border}.png"
        assert main(["upscale", str(tmp_path / "flat.png"), "-o", str(dst), "--border", border, "--quiet"]) == 0
        outs[border] = np.asarray(Image.open(dst)).astype(int)
    model = load_model().eval()
    with torch.no_grad():
        reference = model(torch.from_numpy(flat).permute(2, 0, 1)[None].float() / 255)[0]
    expected = (reference.clamp(0, 1) * 255).round().permute(1, 2, 0).numpy().astype(int)
    assert np.abs(outs["official"] - expected).max() <= 1  # the engine's own rounding of the same floats
    # the official network's zero padding drifts at the edges (9-47 levels with the bundled x4
    # models so far); the default mirror padding keeps the colour
    mirror_drift = np.abs(outs["mirror"] - flat[0, 0]).max()
    assert mirror_drift <= 3
    assert np.abs(outs["official"] - flat[0, 0]).max() > mirror_drift + 3
