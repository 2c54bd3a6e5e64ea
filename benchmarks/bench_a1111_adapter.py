"""What the A1111/Forge adapter costs on top of the engine, measured side by side in one run.

Boots the stand-in A1111 1.10 from ``tests/hosts/a1111`` in a temporary folder with this
repository as an extension and a DLGSANet-Tiny x4 (random weights; speed does not depend on
them) in ``models/DLGSANet``, then times, alternating, on the same RGB image:

* ``engine``:  ``dlgsanet.upscale`` on a float tensor (what any front end must pay);
* ``adapter``: ``Upscaler.do_upscale`` (PIL -> tensor -> engine -> uint8 PIL, progress, cancel
  polling, cache lookup) -- the webui's own ``Upscaler.upscale`` adds only a PIL resize.

Also reports the start-up cost of the extension (script import + model discovery) and the
RGBA cost (bicubic alpha). Run: ``python benchmarks/bench_a1111_adapter.py [--size 128] [--repeats 5]``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "hosts" / "a1111")]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from a1111_helpers import make_webui, write_model  # noqa: E402
from PIL import Image  # noqa: E402

import dlgsanet  # noqa: E402


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="input side in pixels")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import spandrel  # noqa: F401  (a real webui has it imported already; keep it out of the start-up figure)

    with tempfile.TemporaryDirectory() as tmp:
        w = make_webui(Path(tmp))
        torch.manual_seed(0)
        path = write_model(dlgsanet.DLGSANet(dlgsanet.preset_config("tiny", 4)), w.dlgsanet_dir / "tiny4.safetensors")
        start = time.perf_counter()
        w.boot(["--nowebui"])
        boot = time.perf_counter() - start
        from dlgsanet_webui.settings import tiling  # as the script's import left it
        entry = w.entry_for(path)
        scaler = entry.scaler
        model = scaler.load_model(entry.data_path)
        tiles = tiling()  # the settings as the upscaler reads them

        rng = np.random.default_rng(0)
        rgb = Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8), "RGB")
        rgba = Image.fromarray(rng.integers(0, 256, (args.size, args.size, 4), dtype=np.uint8), "RGBA")
        tensor = torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).unsqueeze(0).float() / 255
        w.set_opt("enable_upscale_progressbar", False)

        def engine() -> None:
            dlgsanet.upscale(model, tensor, tiles=tiles)

        def adapter() -> None:
            scaler.do_upscale(rgb, entry.data_path)

        def adapter_rgba() -> None:
            scaler.do_upscale(rgba, entry.data_path)

        engine(), adapter()  # warm-up
        results: dict[str, list[float]] = {"engine": [], "adapter": [], "adapter_rgba": []}
        for _ in range(args.repeats):  # alternate, so load drift hits all three alike
            results["engine"] += timed(engine, 1)
            results["adapter"] += timed(adapter, 1)
            results["adapter_rgba"] += timed(adapter_rgba, 1)

    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"DLGSANet-Tiny x4, {args.size}x{args.size} input, tile={tile} overlap={overlap}, "
          f"threads={torch.get_num_threads()}, device={next(model.parameters()).device}")
    print(f"start-up (script import + discovery of 1 model, spandrel preloaded): {boot:.3f} s")
    for k, v in med.items():
        print(f"{k:>13}: median {v:.3f} s  (min {min(results[k]):.3f}, max {max(results[k]):.3f})")
    print(f"adapter / engine ratio: {med['adapter'] / med['engine']:.3f}")
    print(f"RGBA / RGB ratio (adapter): {med['adapter_rgba'] / med['adapter']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
