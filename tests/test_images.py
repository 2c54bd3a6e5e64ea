"""Image files in and out (dlgsanet/images.py): 16-bit grey and grey+alpha, ICC at 16 bits, empty
files, and no half-written output when writing is interrupted. Expected pixels are computed
here from the inputs; files are read back with pypng, an independent decoder."""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from dlgsanet.errors import ImageInputError
from dlgsanet.images import list_images, read_image, read_rgb8, write_image

png = pytest.importorskip("png")


def _levels16(x: torch.Tensor) -> np.ndarray:
    """What a 16-bit file must hold for float ``x`` in 0..1: round(x * 65535)."""
    return np.rint(x.double().numpy() * 65535).astype(np.uint16)


def _read_pypng(path: Path) -> tuple[np.ndarray, dict]:
    width, height, rows, info = png.Reader(filename=str(path)).asDirect()
    return np.vstack([np.asarray(r, dtype=np.uint16) for r in rows]).reshape(height, width, info["planes"]), info


def test_16bit_grayscale_png_is_written_at_16_bits(tmp_path) -> None:
    """Was: Image.fromarray(..., mode="I;16") -> ValueError on Pillow 13, after all the work."""
    grey = torch.rand(1, 7, 11, dtype=torch.float64).float()
    path = write_image(tmp_path / "g.png", grey.expand(3, -1, -1), grayscale=True, bit_depth=16)
    pixels, info = _read_pypng(path)
    assert info["bitdepth"] == 16 and info["greyscale"] and not info["alpha"]
    assert np.array_equal(pixels[..., 0], _levels16(grey[0]))
    image = read_image(path)
    assert image.bit_depth == 16 and image.grayscale and image.alpha is None
    assert np.array_equal(_levels16(image.rgb[0]), pixels[..., 0])


def test_16bit_grey_alpha_png_round_trips(tmp_path) -> None:
    """Was: read through Pillow's 8-bit LA, so both planes lost their low byte."""
    rng = np.random.default_rng(0)
    planes = rng.integers(0, 65536, (6, 9, 2), dtype=np.uint16)
    src = tmp_path / "ga.png"
    with open(src, "wb") as f:
        png.Writer(9, 6, greyscale=True, alpha=True, bitdepth=16).write(f, planes.reshape(6, -1).tolist())
    image = read_image(src)
    assert image.bit_depth == 16 and image.grayscale and image.alpha is not None
    assert np.array_equal(_levels16(image.rgb[0]), planes[..., 0])
    assert np.array_equal(_levels16(image.alpha[0]), planes[..., 1])
    out = write_image(tmp_path / "out.png", image.rgb, image.alpha, grayscale=True, bit_depth=16)
    pixels, info = _read_pypng(out)
    assert info["bitdepth"] == 16 and info["greyscale"] and info["alpha"]
    assert np.array_equal(pixels, planes)


def test_icc_profile_is_kept_at_16_bits(tmp_path) -> None:
    profile = bytes(range(256)) * 3  # any bytes: the file must carry them unchanged
    rgb = torch.rand(3, 4, 5)
    path = write_image(tmp_path / "icc.png", rgb, bit_depth=16, icc_profile=profile)
    data = path.read_bytes()
    start = data.index(b"iCCP") + 4
    length = int.from_bytes(data[start - 8:start - 4], "big")
    name, rest = data[start:start + length].split(b"\0", 1)
    assert rest[0] == 0 and zlib.decompress(rest[1:]) == profile
    assert read_image(path).icc_profile == profile


def test_empty_file_is_named_and_called_empty(tmp_path) -> None:
    (tmp_path / "blank.png").write_bytes(b"")
    with pytest.raises(ImageInputError, match=r"blank\.png: the file is empty"):
        read_image(tmp_path / "blank.png")


def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch) -> None:
    """The encoder is stopped half-way (Pillow's save, not our code, is replaced): neither the
    target nor a temporary file may remain, and an existing file keeps its bytes."""
    from PIL import Image

    def half_write(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"\x89PNG\r\n\x1a\n half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", half_write)
    with pytest.raises(KeyboardInterrupt):
        write_image(tmp_path / "new.png", torch.rand(3, 4, 4))
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "old.png").write_bytes(b"precious")
    with pytest.raises(KeyboardInterrupt):
        write_image(tmp_path / "old.png", torch.rand(3, 4, 4), overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["old.png"]
    assert (tmp_path / "old.png").read_bytes() == b"precious"


def test_list_images_sorts_by_name_and_skips_hidden_and_other_files(tmp_path) -> None:
    for name in ("b.png", "a.BMP", "c.tiff", "._a.png", ".hidden.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"listing looks at names only")
    (tmp_path / "dir.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.BMP", "b.png", "c.tiff"]


def test_rgb8_reader_is_the_decoder_rounded_to_8_bits(tmp_path) -> None:
    """Training/evaluation see what the upscale command sees: grey replicated, alpha dropped,
    16 bits rounded (not truncated) to 8."""
    grey = torch.rand(1, 5, 6, dtype=torch.float64).float()
    alpha = torch.rand(1, 5, 6, dtype=torch.float64).float()
    path = write_image(tmp_path / "ga.png", grey.expand(3, -1, -1), alpha, grayscale=True, bit_depth=16)
    rgb8 = read_rgb8(path)
    assert rgb8.dtype == torch.uint8 and rgb8.shape == (3, 5, 6)
    expected = np.rint(_levels16(grey[0]).astype(np.float64) / 65535 * 255).astype(np.uint8)
    for c in range(3):
        assert np.array_equal(rgb8[c].numpy(), expected)
    assert torch.equal(rgb8, (read_image(path).rgb * 255).round().to(torch.uint8))
