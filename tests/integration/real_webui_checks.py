"""The checks run in a real A1111 and a real Forge (imported by test_a1111_real.py / test_forge_real.py,
each of which provides a module-scoped ``host`` fixture: a started ``real_webui.RealWebui``).

Expected images come from ``python -m dlgsanet upscale`` run in the webui's own Python from the
installed extension folder, as a user would run the CLI. The webui asks the upscaler for
``floor(side * scale / 8) * 8`` pixels and resizes with LANCZOS when the model's size differs,
so x2 from a x4 model is compared with the CLI's x4 result resized the same way (in the webui's
Python, with its Pillow). Extras caches results by image and arguments, not by settings: the
settings check turns the cache off first.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from real_webui import RealWebui, freeze_diff

BUILT_IN = "DLGSANet Tiny x4 (built-in)"
NEW_ZIP = "DLGSANet Tiny x4 (newzip_x4)"
ESRGAN_NEW_ZIP = "4x_DLGSANet_newzip"

CLI = """
import subprocess, sys
from PIL import Image
src, dst, resize = sys.argv[1], sys.argv[2], sys.argv[3]
cmd = [sys.executable, "-m", "dlgsanet", "upscale", src, "-o", dst, "--quiet", *sys.argv[4:]]
subprocess.run(cmd, check=True)
if resize != "-":
    w, h = map(int, resize.split("x"))
    img = Image.open(dst)
    img.resize((w, h), resample=Image.LANCZOS).save(dst)
"""


def photo(size: tuple[int, int], seed: int, mode: str = "RGB") -> Image.Image:
    """A smooth picture with detail and noise (a model's output is never trivially equal)."""
    w, h = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([128 + 90 * np.sin(x / 7 + c) * np.cos(y / 5 - c) for c in range(3)], -1)
    img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    if mode == "RGBA":
        alpha = np.clip(255 * (x / w) * 1.4, 0, 255).astype(np.uint8)[..., None]
        alpha[: h // 4] = 0
        img = np.concatenate([img, alpha], -1)
    return Image.fromarray(img, mode)


def cli(host: RealWebui, img: Image.Image, tmp: Path, name: str, *args: str, resize: str = "-") -> np.ndarray:
    src, dst = tmp / f"{name}-in.png", tmp / f"{name}-cli.png"
    img.save(src)
    host.run_python(CLI, str(src), str(dst), resize, *args, pythonpath=host.extension)  # the extension's copy
    out = Image.open(dst)
    out.load()
    return np.asarray(out)


def webui_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return tuple(int(s * scale // 8 * 8) for s in size)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
def test_first_start_changes_no_installed_package(host):
    diff = freeze_diff(host.freeze_before, host.freeze_after)
    print(f"pip freeze diff over the first start with the extension: {diff}")
    assert not diff["changed"] and not diff["removed"], diff
    assert "Error running install.py for extension" not in host.log()


def test_the_extension_loaded_and_lists_its_upscalers(host):
    names = [u["name"] for u in host.get("/sdapi/v1/upscalers")]
    print("upscalers:", names)
    assert "Error loading script: dlgsanet_upscaler.py" not in host.log()
    for name in (BUILT_IN, NEW_ZIP, ESRGAN_NEW_ZIP):
        assert name in names
    assert not any("broken" in n for n in names)
    assert re.search(r"DLGSANet: skipping .*broken\.pth", host.log())


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_x4_equals_the_cli(host, tmp_path, mode):
    img = photo((64, 48), seed=1, mode=mode)
    got = np.asarray(host.extras(img, BUILT_IN, 4))
    want = cli(host, img, tmp_path, f"x4{mode}")
    assert got.shape == want.shape == (192, 256, len(mode))
    diff = np.abs(got.astype(int) - want).max()
    print(f"x4 {mode}: max difference to the CLI {diff}")
    assert diff == 0


def test_x2_equals_the_cli_resized_as_the_webui_does(host, tmp_path):
    img = photo((60, 44), seed=2)
    got = np.asarray(host.extras(img, BUILT_IN, 2))
    w, h = webui_size(img.size, 2)
    want = cli(host, img, tmp_path, "x2", resize=f"{w}x{h}")
    assert got.shape == want.shape == (h, w, 3)
    diff = np.abs(got.astype(int) - want).max()
    print(f"x2: {img.size} -> {(w, h)}, max difference to the CLI {diff}")
    assert diff == 0


def test_every_bundled_scale_is_an_entry_equal_to_the_cli(host, tmp_path):
    """Each bundled model (x2, x3 and x4 today) is in the dropdown at its own scale, and upscales as
    ``dlgsanet upscale --scale S`` does."""
    from dlgsanet.checkpoint import bundled_scales

    names = [u["name"] for u in host.get("/sdapi/v1/upscalers")]
    img = photo((56, 40), seed=6)  # sides * 2, 3 and 4 are multiples of 8: no webui resize
    assert bundled_scales() == [2, 3, 4], bundled_scales()
    for scale in bundled_scales():
        entry = f"DLGSANet Tiny x{scale} (built-in)"
        assert entry in names, names
        got = np.asarray(host.extras(img, entry, scale))
        want = cli(host, img, tmp_path, f"bundled{scale}", "--scale", str(scale))
        assert got.shape == want.shape == (40 * scale, 56 * scale, 3)
        diff = np.abs(got.astype(int) - want).max()
        print(f"{entry}: max difference to the CLI --scale {scale}: {diff}")
        assert diff == 0


def test_new_zip_pth_in_models_dlgsanet(host, tmp_path):
    """The bundled weights saved by this torch's torch.save (zip layout A1111's safe.py refuses)."""
    img = photo((40, 32), seed=3)
    assert np.array_equal(np.asarray(host.extras(img, NEW_ZIP, 4)), np.asarray(host.extras(img, BUILT_IN, 4)))
    assert "newzip_x4.pth" not in "".join(li for li in host.log().splitlines() if "Error verifying pickled file" in li)


def test_new_zip_pth_in_models_esrgan_is_no_plain_resize(host, tmp_path):
    img = photo((40, 32), seed=4)
    got = np.asarray(host.extras(img, ESRGAN_NEW_ZIP, 4)).astype(int)
    lanczos = np.asarray(img.resize((160, 128), Image.LANCZOS)).astype(int)
    ours = np.asarray(host.extras(img, BUILT_IN, 4)).astype(int)
    print(f"ESRGAN path: mean |diff| to LANCZOS {np.abs(got - lanczos).mean():.2f}, "
          f"to the DLGSANet entry (RGB) {np.abs(got - ours).mean():.2f}")
    assert "Unable to load ESRGAN model" not in host.log()
    assert np.abs(got - lanczos).mean() > 1.0


def test_settings_are_set_through_the_api_and_honoured(host, tmp_path):
    img = photo((200, 120), seed=5)
    untiled = cli(host, img, tmp_path, "untiled")
    host.post("/sdapi/v1/options", {"dlgsanet_tile": 96, "dlgsanet_tile_overlap": 8,
                                    "upscaling_max_images_in_cache": 0})
    try:
        options = host.get("/sdapi/v1/options")
        print("GET /sdapi/v1/options:", {k: v for k, v in options.items() if k.startswith("dlgsanet")})
        assert options.get("dlgsanet_tile") == 96 and options.get("dlgsanet_tile_overlap") == 8
        log_before = len(host.log())
        got = np.asarray(host.extras(img, BUILT_IN, 4))
        tiled = cli(host, img, tmp_path, "tiled", "--tile", "96", "--overlap", "8")
        assert np.array_equal(got, tiled)
        assert not np.array_equal(got, untiled)  # the setting changed the tiling
        bars = re.findall(r"DLGSANet:\s+100%.*?\|\s*(\d+)/(\d+) \[", host.log()[log_before:])
        print("progress bar ends:", bars[-1:] if bars else None)
        assert bars and int(bars[-1][1]) > 1  # the console bar counted several tiles
    finally:
        host.post("/sdapi/v1/options", {"dlgsanet_tile": 256, "dlgsanet_tile_overlap": 32})


def test_first_tile_rate_is_meaningful(host):
    """The console bar's rate once the first tile is done is about 1 / (time of one tile)."""
    rates = []
    for m in re.finditer(r"DLGSANet:.*?\|\s*1/\d+ \[[^,\]]*,\s*([\d.]+)(tile/s|s/tile)\]", host.log()):
        value = float(m.group(1))
        rates.append(value if m.group(2) == "tile/s" else 1 / value)
    print("first-tile rates (tile/s):", rates)
    assert rates and max(rates) < 100
