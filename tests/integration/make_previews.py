"""Write the .jpg previews of example_workflows/ (shown by ComfyUI's template browser).

Each preview is what its workflow does, made with the library (which the integration test proves
gives ComfyUI's saved output to the 8-bit level): the bundled sample image enlarged with nearest
neighbour next to the bundled model's x4 result.

    python tests/integration/make_previews.py [--model PATH]   (default: the bundled model;
                                                                the package installed, e.g. pip install -e .)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

import dlgsanet
from dlgsanet.images import read_image

ROOT = Path(__file__).resolve().parents[2]

CAPTIONS = {
    "dlgsanet_tiled_upscale": "Load DLGSANet Model -> Tiled Upscale (DLGSANet)",
    "dlgsanet_builtin_upscale_model": "Load Upscale Model -> Upscale Image (using Model)",
}
PAD, BAR = 12, 34


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=dlgsanet.default_model_path())
    model_path = parser.parse_args().model
    if not model_path.exists():
        print(f"no model at {model_path}; previews need a trained one", file=sys.stderr)
        return 1
    model = dlgsanet.load_model(model_path)
    sample = next((ROOT / "dlgsanet" / "samples").glob("*.png"))
    rgb = read_image(sample).rgb
    with torch.inference_mode():
        up = dlgsanet.upscale(model, rgb[None])[0]
    to_pil = lambda t: Image.fromarray((t.clamp(0, 1).permute(1, 2, 0) * 255).round().byte().numpy())  # noqa: E731
    result = to_pil(up)
    nearest = to_pil(rgb).resize(result.size, Image.NEAREST)
    w, h = result.size
    font = ImageFont.load_default(size=15)
    for stem, caption in CAPTIONS.items():
        canvas = Image.new("RGB", (3 * PAD + 2 * w, 2 * PAD + h + 2 * BAR), (32, 32, 36))
        canvas.paste(nearest, (PAD, PAD + BAR))
        canvas.paste(result, (2 * PAD + w, PAD + BAR))
        draw = ImageDraw.Draw(canvas)
        draw.text((PAD, PAD + 8), f"input {rgb.shape[2]}x{rgb.shape[1]} (nearest x{model.scale})",
                  fill=(200, 200, 200), font=font)
        draw.text((2 * PAD + w, PAD + 8), f"DLGSANet x{model.scale}  {w}x{h}", fill=(235, 235, 235), font=font)
        draw.text((PAD, PAD + BAR + h + 8), caption, fill=(160, 200, 255), font=font)
        out = ROOT / "example_workflows" / f"{stem}.jpg"
        canvas.save(out, quality=90)
        print(f"wrote {out.relative_to(ROOT)} ({canvas.width}x{canvas.height})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
