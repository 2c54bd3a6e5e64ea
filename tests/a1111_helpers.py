"""Helpers for the A1111/Forge tests: a throw-away webui around the stand-in host, tiny models.

The stand-in host lives in ``tests/hosts/a1111`` (Forge extras in ``tests/hosts/forge``); each
of its modules names the real A1111 1.10 file it mirrors. The extension is this repository,
linked into ``<webui data dir>/extensions/`` exactly as a user's clone would sit there.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from dlgsanet import DLGSANet, DLGSANetConfig, save_model

REPO_ROOT = Path(__file__).resolve().parents[1]
A1111_HOST = Path(__file__).resolve().parent / "hosts" / "a1111"
FORGE_EXTRAS = Path(__file__).resolve().parent / "hosts" / "forge"
EXTENSION_DIRNAME = "sd-webui-dlgsanet"
SCRIPT_FILENAME = "dlgsanet_upscaler.py"
#: The regex A1111 applies to an upscaler's name to fill in "Scale by"
#: (scripts/postprocessing_upscale.py, on_selected_upscale_method, A1111 1.10).
SCALE_BY_REGEX = r"(\d)[xX]|[xX](\d)"


def tiny_config(scale: int = 4) -> DLGSANetConfig:
    """The smallest sensible DLGSANet: one group of one (local, global) block pair, 12 channels."""
    return DLGSANetConfig(dim=12, groups=1, blocks=1, local_heads=6, global_heads=6, scale=scale)


def random_model(scale: int = 4, seed: int = 0) -> DLGSANet:
    torch.manual_seed(seed)
    return DLGSANet(tiny_config(scale)).eval()


def nearest_model(scale: int, bias: Sequence[float] = (0.0, 0.0, 0.0)) -> DLGSANet:
    """A tiny DLGSANet whose weights make it an exact nearest-neighbour upsampler (+ ``bias``).

    The embedding copies R, G, B into the first three feature channels, the deep feature
    extraction's last convolution is zero (so its residual branch adds nothing) and the upsampler
    copies feature channel c to all ``scale**2`` sub-pixels of output channel c; the network's
    mean shift cancels. So colours are kept exactly, unlike a random-weight model. A per-channel
    ``bias`` (added to the output) makes channel order observable: fed BGR, it lands on the
    wrong channel.
    """
    model = random_model(scale)
    dim, s = model.config.dim, scale
    with torch.no_grad():
        embed = model.overlap_embed[0].proj.weight
        embed.zero_()
        for c in range(3):
            embed[c, c, 1, 1] = 1.0
        last = model.deep_feature_extraction[model.config.groups]
        last.weight.zero_()
        last.bias.zero_()
        up = model.upsample[0]
        up.weight.zero_()
        for c in range(3):
            for k in range(s * s):
                up.weight[c * s * s + k, c, 1, 1] = 1.0
                up.bias[c * s * s + k] = float(bias[c])
    assert dim >= 3
    return model


def write_model(model: DLGSANet, path: Path, *, fmt: Optional[str] = None) -> Path:
    """Save as ``.safetensors`` (with metadata) or as a BasicSR-style ``.pth`` (``params_ema``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = fmt or path.suffix.lstrip(".")
    if fmt == "safetensors":
        save_model(model, path, overwrite=True)
    else:
        torch.save({"params_ema": {k: v.clone() for k, v in model.state_dict().items()}}, path)
    return path


@dataclass
class Webui:
    """A booted stand-in webui; ``shared``/``scripts``/... are the stand-in modules."""

    data_dir: Path
    argv: list[str] = field(default_factory=list)
    forge: bool = False

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def dlgsanet_dir(self) -> Path:
        return self.models_dir / "DLGSANet"

    def boot(self, argv: Sequence[str] = (), *, forge: Optional[bool] = None) -> "Webui":
        import webui  # the stand-in's webui.py

        self.argv = list(argv)
        if forge is not None:
            self.forge = forge
        self.modules("errors").reported.clear()
        webui.boot(str(self.data_dir), self.argv, forge_sys_path=self.forge)
        return self

    @staticmethod
    def modules(name: str) -> Any:
        import importlib

        return importlib.import_module(f"modules.{name}")

    @property
    def shared(self) -> Any:
        return self.modules("shared")

    @property
    def script(self) -> Any:
        """Our script module as the last ``load_scripts`` imported it."""
        loaded = [m for m in self.modules("scripts").loaded_modules if m.__name__ == SCRIPT_FILENAME]
        assert loaded, f"{SCRIPT_FILENAME} was not loaded; errors: {self.modules('errors').reported}"
        return loaded[-1]

    def ours(self) -> list[Any]:
        """Our entries in ``shared.sd_upscalers`` (what the dropdowns show)."""
        return [u for u in self.shared.sd_upscalers if type(u.scaler).__name__ == "UpscalerDLGSANet"]

    def entry(self, label: str) -> Any:
        matches = [u for u in self.shared.sd_upscalers if u.name == label]
        assert len(matches) == 1, f"{label!r} not listed once; have {[u.name for u in self.shared.sd_upscalers]}"
        return matches[0]

    def entry_for(self, path: Path) -> Any:
        matches = [u for u in self.ours() if os.path.realpath(u.data_path) == os.path.realpath(path)]
        assert len(matches) == 1, f"{path} not listed once; have {[(u.name, u.data_path) for u in self.ours()]}"
        return matches[0]

    def set_opt(self, key: str, value: Any) -> None:
        assert self.shared.opts.set(key, value) or getattr(self.shared.opts, key) == value


def make_webui(root: Path) -> Webui:
    """A webui data folder with this repository installed as an extension (a symlink, as a clone)."""
    data = root / "webui"
    (data / "extensions").mkdir(parents=True)
    (data / "extensions" / EXTENSION_DIRNAME).symlink_to(REPO_ROOT, target_is_directory=True)
    (data / "models" / "DLGSANet").mkdir(parents=True)
    return Webui(data)


def use_a1111_torch_load(monkeypatch: Any) -> None:
    """``torch.load`` replaced by the stand-in ``modules/safe.py`` checker, as every A1111 start
    does (``modules/paths.py`` imports ``modules.safe``); the test's own ``torch.load`` comes back
    afterwards. Forge leaves ``torch.load`` alone."""
    from modules import safe

    monkeypatch.setattr(safe, "unsafe_torch_load", torch.load)
    monkeypatch.setattr(torch, "load", safe.load)


def host_on_sys_path(forge: bool = False) -> list[str]:
    """The stand-in host folders to prepend to sys.path (Forge extras last so A1111 wins)."""
    paths = [str(A1111_HOST)]
    if forge:
        paths.append(str(FORGE_EXTRAS))
    return paths


def forget_forge_modules() -> None:
    """Forget imported Forge extras so later A1111-flavoured loads do not see them."""
    for name in [n for n in sys.modules if n == "modules_forge" or n.startswith("modules_forge.")]:
        del sys.modules[name]


class ForwardCounter:
    """Counts forward calls of a module (one per tile) with a torch hook; optionally acts on one."""

    def __init__(self, module: torch.nn.Module, on_call=None) -> None:
        self.calls = 0
        self._on_call = on_call
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output) -> None:
        self.calls += 1
        if self._on_call is not None:
            self._on_call(self.calls)

    def remove(self) -> None:
        self._handle.remove()
