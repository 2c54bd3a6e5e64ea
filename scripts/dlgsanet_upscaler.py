"""DLGSANet in the AUTOMATIC1111 / Forge upscaler dropdowns (Extras, Hires. fix, SD upscale, API).

A thin adapter over the host-independent ``dlgsanet`` package. A1111 imports this file by path
with the extension root on sys.path *only while it is imported*, so ``dlgsanet`` and the
spandrel adapter ``dlgsanet_spandrel`` (unique top-level names) are imported here at the top;
anything imported later must be a ``dlgsanet.*`` submodule, which resolves through the
already-imported package.

Why it is shaped like this (see ``docs/a1111.md`` for users):

* ``UpscalerDLGSANet`` is a *direct* ``Upscaler`` subclass: ``modelloader.load_upscalers`` only
  sees direct subclasses and calls ``cls(vars(cmd_opts).get("dlgsanet_models_path"))`` with no
  try/except around it, so the constructor never raises: a broken file is logged and skipped.
* Each checkpoint is inspected once at start-up, so the dropdown names carry the preset and the
  scale ("DLGSANet Tiny x4 (name)") -- A1111 reads "x4" from the name to fill in "Scale by".
* A1111's own tiling helper feeds models BGR; DLGSANet was trained on RGB with an RGB mean
  shift, so images go through our own tiling engine (``dlgsanet.upscale``) in RGB.
* Settings are registered at import (not only in ``on_ui_settings``, which never runs with
  ``--nowebui``) and always read with defaults.
* The spandrel architecture is registered too, so a DLGSANet file in ``models/ESRGAN`` also
  loads through the built-in ESRGAN upscaler (the only path on forks that list ESRGAN only);
  ``modelloader.load_spandrel_model`` is wrapped so that DLGSANet pickles there are read by our
  own reader (A1111's ``torch.load`` refuses files saved by a current torch).
* Checkpoints never go through ``torch.load`` (``dlgsanet.torch_pickle``), for the same reason.
* On Forge the ``GET /sdapi/v1/options`` response model is built before extension scripts load;
  ours are added to it at import (``_extend_api_options_model``).
"""
from __future__ import annotations

import functools
import logging
import os
import sys
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import tqdm
from PIL import Image

# The webui's own modules (A1111 1.10 / Forge).
from modules import devices, modelloader, script_callbacks, shared
from modules.upscaler import Upscaler, UpscalerData

# Ours, imported now: the extension root is on sys.path only while this file is being imported.
import dlgsanet
import dlgsanet.alpha
import dlgsanet.checkpoint
import dlgsanet.config
import dlgsanet.devices
import dlgsanet.tiling
import dlgsanet.torch_pickle
import dlgsanet_spandrel
from dlgsanet import CheckpointError, DLGSANetConfig, DLGSANetError, TileOutOfMemoryError, UpscaleCancelled

try:  # Forge: let its memory manager make room before we allocate (moved between versions)
    from modules_forge.utils import prepare_free_memory as _forge_prepare_free_memory
except ImportError:
    try:
        from modules_forge.forge_util import prepare_free_memory as _forge_prepare_free_memory
    except ImportError:
        _forge_prepare_free_memory = None

logger = logging.getLogger("DLGSANet")

NAME = "DLGSANet"
MODEL_EXTENSIONS = [".safetensors", ".pth", ".pt", ".ckpt"]
DEVICE_TASK = "dlgsanet"  # `--use-cpu dlgsanet` (or `all`) runs it on the CPU
CACHE_SIZE = 2  # Extras can chain two upscalers; both stay loaded (a few MB each)
PRESET_TITLES = {"tiny": "Tiny", "light": "Light", "large": "Large"}
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# ---------------------------------------------------------------------------------------------
# settings (Settings > Upscaling)
# ---------------------------------------------------------------------------------------------
OPT_TILE = "dlgsanet_tile"
OPT_OVERLAP = "dlgsanet_tile_overlap"
OPT_PRECISION = "dlgsanet_precision"
OPT_KEEP_LOADED = "dlgsanet_keep_loaded"
OPT_ALPHA = "dlgsanet_alpha"
DEFAULTS: dict[str, Any] = {
    OPT_TILE: dlgsanet.tiling.DEFAULT_TILE_SIZE,  # the engine's measured defaults
    OPT_OVERLAP: dlgsanet.tiling.DEFAULT_OVERLAP,
    OPT_PRECISION: "auto",
    OPT_ALPHA: "bicubic",
    OPT_KEEP_LOADED: True,
}
MIN_TILE = dlgsanet.tiling.MIN_TILE_SIZE
SECTION = ("upscaling", "Upscaling")


def _option_infos() -> dict[str, Any]:
    """Our OptionInfos; Gradio components only when Gradio imports (it always does in a webui)."""
    try:
        import gradio as gr
        slider, radio, checkbox = gr.Slider, gr.Radio, gr.Checkbox
    except Exception:
        slider = radio = checkbox = None
    info = shared.OptionInfo
    return {
        OPT_TILE: info(DEFAULTS[OPT_TILE], "Tile size for DLGSANet (input pixels).", slider,
                       {"minimum": 0, "maximum": 1024, "step": 16}, section=SECTION)
        .info(f"0 = automatic: the whole image when it fits in memory; Interrupt acts between tiles; "
              f"smaller = less memory; minimum {MIN_TILE}"),
        OPT_OVERLAP: info(DEFAULTS[OPT_OVERLAP], "Tile overlap for DLGSANet (input pixels).", slider,
                          {"minimum": 0, "maximum": 64, "step": 1}, section=SECTION)
        .info("low values = visible seams"),
        OPT_PRECISION: info(DEFAULTS[OPT_PRECISION], "DLGSANet precision.", radio,
                            {"choices": ["auto", "fp32", "bf16", "fp16"]}, section=SECTION)
        .info("auto = fp32; bf16/fp16 need less memory on GPUs; fp16 falls back to fp32 on the CPU "
              "and with --no-half"),
        OPT_ALPHA: info(DEFAULTS[OPT_ALPHA], "DLGSANet: upscale transparency (alpha) with", radio,
                        {"choices": list(dlgsanet.alpha.ALPHA_MODES)}, section=SECTION)
        .info("bicubic = fast, keeps flat areas exact; model = crisper mask edges, twice the time"),
        OPT_KEEP_LOADED: info(DEFAULTS[OPT_KEEP_LOADED], "Keep DLGSANet models loaded between upscales.",
                              checkbox, section=SECTION)
        .info("off = free the model after every image"),
    }


def register_settings() -> None:
    """Add our options to ``shared.opts``; idempotent, safe at import and from on_ui_settings."""
    opts = getattr(shared, "opts", None)
    if opts is None or not hasattr(opts, "add_option"):
        return
    for key, info in _option_infos().items():
        opts.add_option(key, info)


def _opt(key: str) -> Any:
    """A setting's value, or its default when missing or of the wrong type (hand-edited config)."""
    default = DEFAULTS[key]
    value = getattr(getattr(shared, "opts", None), key, default)
    if isinstance(default, bool):
        return value if isinstance(value, bool) else default
    if isinstance(default, int):
        try:
            return max(0, int(value))
        except (TypeError, ValueError):
            return default
    allowed = dlgsanet.alpha.ALPHA_MODES if key == OPT_ALPHA else ("auto", *PRECISIONS)
    return value if value in allowed else default


# ---------------------------------------------------------------------------------------------
# discovery: checkpoint files -> dropdown entries
# ---------------------------------------------------------------------------------------------
def inspect_checkpoint(path: str) -> DLGSANetConfig:
    """The configuration of a checkpoint file, from its headers only (raises CheckpointError if unusable)."""
    try:
        config = dlgsanet.checkpoint.inspect_config(path)
    except CheckpointError:
        raise
    except Exception as e:  # anything unforeseen in a hostile file still becomes "skip this file"
        raise CheckpointError(f"{os.path.basename(path)}: cannot be read ({type(e).__name__}: {e})") from None
    if config.in_chans != 3:
        raise CheckpointError(f"{os.path.basename(path)}: a {config.in_chans}-channel model; only RGB "
                              f"(3-channel) DLGSANet models can upscale webui images")
    return config


def scaler_label(config: DLGSANetConfig, detail: str) -> str:
    """"DLGSANet Tiny x4 (detail)": preset and scale first, so A1111's regex finds "x4"."""
    preset = dlgsanet.config.preset_name(config)
    return f"{NAME} {PRESET_TITLES.get(preset, 'Custom')} x{config.scale} ({detail})"


def bundled_model_paths() -> list[str]:
    """The default model(s) shipped inside the package, when present."""
    paths: list[str] = []
    for scale in (2, 3, 4):
        path = Path(dlgsanet.default_model_path(scale))
        if path.is_file() and str(path) not in paths:
            paths.append(str(path))
    return paths


# ---------------------------------------------------------------------------------------------
# loaded models: cached between calls, released on request
# ---------------------------------------------------------------------------------------------
class ModelCache:
    """Up to ``capacity`` loaded models, keyed on file identity, device and dtype.

    The key includes the file's size and modification time, so replacing a file on disk takes
    effect on the next upscale without a restart.
    """

    def __init__(self, capacity: int = CACHE_SIZE) -> None:
        self.capacity = capacity
        self._models: OrderedDict[tuple, torch.nn.Module] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        try:
            stat = os.stat(path)
        except OSError:
            raise CheckpointError(f"model file not found: {path} (moved or deleted since start-up? "
                                  f"use Reload UI to refresh the list)") from None
        key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns, str(device), dtype)
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                return model
            model = dlgsanet.load_model(path, device=device, dtype=dtype)
            self._models[key] = model
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
            return model

    def release(self) -> int:
        """Drop every loaded model; returns how many there were."""
        with self._lock:
            count = len(self._models)
            self._models.clear()
        return count

    def __len__(self) -> int:
        return len(self._models)


_cache = ModelCache()


def release_models(*_args: Any) -> None:
    """Free the loaded DLGSANet models (and the GPU memory they held). Safe to call any time."""
    if _cache.release():
        devices.torch_gc()


# ---------------------------------------------------------------------------------------------
# images: PIL <-> tensors, alpha kept
# ---------------------------------------------------------------------------------------------
def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info)


def _to_array(img: Image.Image) -> tuple[np.ndarray, str]:
    """HxWxC uint8 RGB or RGBA (when the image has transparency) and its PIL mode."""
    mode = "RGBA" if _has_alpha(img) else "RGB"
    return np.array(img if img.mode == mode else img.convert(mode), dtype=np.uint8), mode


# ---------------------------------------------------------------------------------------------
# the upscaler
# ---------------------------------------------------------------------------------------------
class UpscalerDLGSANet(Upscaler):
    """DLGSANet checkpoints from ``models/DLGSANet`` (or ``--dlgsanet-models-path``) plus the
    bundled default model, one dropdown entry each."""

    def __init__(self, dirname: Optional[str] = None) -> None:
        self.name = NAME
        self.user_path = dirname
        self.scalers = []
        try:
            super().__init__()
        except Exception:  # an unexpected host (missing options...): keep going with what we need
            logger.warning("DLGSANet: the webui's Upscaler base failed to initialise", exc_info=True)
            self.model_path = os.path.join(getattr(shared, "models_path", "models"), NAME)
            self.scale, self.model_download_path = 1, None
        try:
            if self.model_path:
                os.makedirs(self.model_path, exist_ok=True)  # shows users where models go
        except OSError:
            pass
        try:
            self.scalers = self._discover()
        except Exception:
            logger.exception("DLGSANet: listing models failed; no DLGSANet upscalers this session")
            self.scalers = []

    def _discover(self) -> list[UpscalerData]:
        entries: list[tuple[str, str]] = [(p, "built-in") for p in bundled_model_paths()]
        for path in self.find_models(ext_filter=MODEL_EXTENSIONS):
            if not path.startswith(("http://", "https://")):
                entries.append((path, modelloader.friendly_name(path)))
        scalers: list[UpscalerData] = []
        taken: set[str] = set()
        for path, detail in entries:
            try:
                config = inspect_checkpoint(path)
            except Exception as e:
                logger.warning("DLGSANet: skipping %s: %s", path, e)
                continue
            label = scaler_label(config, detail)
            if label in taken:  # same file name in another folder: show where it is
                label = scaler_label(config, self._relative(path))
            suffix = 2
            while label in taken:
                label = scaler_label(config, f"{self._relative(path)} {suffix}")
                suffix += 1
            taken.add(label)
            scalers.append(UpscalerData(label, path, self, scale=config.scale))
        return scalers

    def _relative(self, path: str) -> str:
        for root in (self.user_path, self.model_path):
            if root:
                try:
                    rel = os.path.relpath(path, root)
                except ValueError:  # another drive on Windows
                    continue
                if not rel.startswith(".."):
                    return os.path.splitext(rel)[0].replace(os.sep, "/")
        return os.path.splitext(path)[0]

    # -- runtime --------------------------------------------------------------------------------
    def load_model(self, path: str) -> torch.nn.Module:
        device = _device()
        return _cache.get(path, device, _dtype(device))

    def do_upscale(self, img: Image.Image, selected_model: Optional[str]) -> Image.Image:
        """PIL in, PIL out at the model's native scale; on any failure the input comes back
        unchanged (as A1111's built-in upscalers do) and the reason is logged."""
        if not selected_model:
            return img
        if _forge_prepare_free_memory is not None:
            try:
                _forge_prepare_free_memory()
            except Exception:
                logger.debug("Forge prepare_free_memory failed", exc_info=True)
        try:
            model = self.load_model(selected_model)
        except CheckpointError as e:
            logger.error("DLGSANet: cannot load %s: %s", selected_model, e)
            return img
        except Exception:
            logger.exception("DLGSANet: unexpected error loading %s", selected_model)
            return img
        try:
            return _upscale_pil(model, img)
        except UpscaleCancelled:
            return img
        except TileOutOfMemoryError as e:
            logger.error("DLGSANet: out of memory: %s (lower the tile size in Settings > Upscaling)", e)
            return img
        except DLGSANetError as e:
            logger.error("DLGSANet: upscale failed: %s", e)
            return img
        finally:
            if not _opt(OPT_KEEP_LOADED):
                _cache.release()
            devices.torch_gc()


def _device() -> torch.device:
    """``devices.get_device_for`` honours ``--use-cpu dlgsanet|all`` on A1111 (Forge: its device)."""
    get_device_for = getattr(devices, "get_device_for", None)
    if get_device_for is not None:
        try:
            return torch.device(get_device_for(DEVICE_TASK))
        except Exception:
            logger.debug("devices.get_device_for failed; using shared.device", exc_info=True)
    return torch.device(getattr(shared, "device", None) or "cpu")


_warned: set[str] = set()


def _dtype(device: torch.device) -> torch.dtype:
    choice = _opt(OPT_PRECISION)
    dtype = PRECISIONS.get(choice, torch.float32)
    if dtype != torch.float32:
        reason = dlgsanet.devices.dtype_problem(dtype, device)
        if reason is None and dtype == torch.float16 and getattr(getattr(shared, "cmd_opts", None), "no_half", False):
            reason = "--no-half is set"
        if reason:
            if reason not in _warned:
                _warned.add(reason)
                logger.warning("DLGSANet: %s; using fp32", reason)
            return torch.float32
    return dtype


def _tiling() -> tuple[Optional[int], int]:
    """(tile size or None for automatic, overlap) from the settings, made valid for the engine."""
    tile, overlap = _opt(OPT_TILE), _opt(OPT_OVERLAP)
    if tile == 0:
        return None, min(overlap, MIN_TILE - 1)
    tile = max(tile, MIN_TILE)
    return tile, min(overlap, tile // 2)


def _cancel_requested() -> bool:
    state = getattr(shared, "state", None)
    return bool(state is not None and (state.interrupted or state.skipped))


class _ProgressBar:
    """A console tqdm bar over the tiles, like A1111's built-in tiled upscalers (hidden when
    ``opts.enable_upscale_progressbar`` is off). Callable as the engine's ``progress(done, total)``.

    The bar, and with it tqdm's clock, starts when the work starts (``with``), not at the first
    report: a bar made at the first finished tile shows that tile as done in no time (rates such
    as 12264 tile/s). The total comes with the engine's first report.
    """

    def __init__(self) -> None:
        self.bar: Optional[tqdm.tqdm] = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            return
        if self.bar.total != total:
            self.bar.total = total
            self.bar.refresh()
        self.bar.update(done - self.bar.n)

    def __enter__(self) -> "_ProgressBar":
        show = bool(getattr(getattr(shared, "opts", None), "enable_upscale_progressbar", True))
        self.bar = tqdm.tqdm(total=None, desc=NAME, unit="tile", disable=not show)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()


def _upscale_pil(model: torch.nn.Module, img: Image.Image) -> Image.Image:
    """Colour through the tiling engine in RGB; alpha (if any) by ``dlgsanet.alpha``'s rule."""
    arr, mode = _to_array(img)
    images = torch.from_numpy(arr).unsqueeze(0).float().div_(255.0)  # [1,H,W,C] in 0..1
    tile, overlap = _tiling()
    with _ProgressBar() as progress:
        out = dlgsanet.alpha.upscale_rgba(
            model, images, channels_last=True, alpha=_opt(OPT_ALPHA), output_dtype=torch.uint8,
            output_device=torch.device("cpu"), tile_size=tile, overlap=overlap,
            progress=progress, cancel=_cancel_requested)
    return Image.fromarray(out[0].numpy(), mode)


# ---------------------------------------------------------------------------------------------
# import-time wiring
# ---------------------------------------------------------------------------------------------
def _register_spandrel() -> None:
    """Let A1111's built-in (ESRGAN-family) path load DLGSANet files too; optional."""
    try:
        dlgsanet_spandrel.register(dlgsanet.is_dlgsanet_state_dict, dlgsanet.model_from_state_dict)
    except Exception:
        logger.warning("DLGSANet: could not register with spandrel (models/ESRGAN will not load "
                       "DLGSANet files; the DLGSANet entries still work)", exc_info=True)


PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


def _dlgsanet_descriptor(path: Any, *, device: Any = None, prefer_half: bool = False, dtype: Any = None,
                         **_ignored: Any) -> Any:
    """A spandrel descriptor for a DLGSANet pickle, read by our own reader; None when the file
    is not a DLGSANet checkpoint we can read (the webui's loader then decides, as before)."""
    import spandrel

    name = os.path.basename(str(path))
    try:
        # Names and shapes only (no tensor data): cheap for any file.
        raw = dlgsanet.torch_pickle.read_torch_file(Path(path), shapes_only=True)
        if not dlgsanet.is_dlgsanet_state_dict(dlgsanet.checkpoint.unwrap_state_dict(raw, name=name)):
            return None
    except CheckpointError:
        return None
    # Ours: any problem from here on is reported with our message (ESRGAN's do_upscale logs it).
    state_dict = dlgsanet.checkpoint.read_state_dict(path)
    descriptor = spandrel.ModelLoader(device=device).load_from_state_dict(state_dict)
    if prefer_half and descriptor.supports_half:
        descriptor.model.half()
    if dtype:
        descriptor.model.to(dtype=dtype)
    descriptor.model.eval()
    logger.info("DLGSANet: %s loaded with DLGSANet's own checkpoint reader", name)
    return descriptor


def _wrap_load_spandrel_model() -> None:
    """DLGSANet pickles in ``models/ESRGAN`` (ESRGAN, DAT, ... all load through
    ``modelloader.load_spandrel_model``) are read by our reader; every other file as before.

    A1111's ``modules/safe.py`` replaces ``torch.load`` (which spandrel calls) with a checker that
    returns None for any file saved by a current torch (zip entries it does not know); spandrel
    then fails with a TypeError and the webui falls back to a plain LANCZOS resize. Wrapped once:
    after Reload UI the webui's own function is wrapped again, never our wrapper.
    """
    original = getattr(modelloader, "load_spandrel_model", None)
    if original is None:
        return
    original = getattr(original, "_dlgsanet_original", original)

    @functools.wraps(original)
    def load_spandrel_model(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path).lower().endswith(PICKLE_SUFFIXES):
            descriptor = _dlgsanet_descriptor(path, **kwargs)
            if descriptor is not None:
                return descriptor
        return original(path, *args, **kwargs)

    load_spandrel_model._dlgsanet_original = original  # type: ignore[attr-defined]
    modelloader.load_spandrel_model = load_spandrel_model


def _extend_api_options_model() -> None:
    """Show our settings in ``GET /sdapi/v1/options`` on Forge.

    ``modules.api.models`` builds the response model of that endpoint from the options
    registered when it is first imported. Forge's built-in ControlNet imports it while the
    built-in scripts load, before any extension script registers options, so the answer leaves
    ours out (POST still sets them). The API's routes are made after every script is loaded, so
    replacing ``OptionsModel`` by one that adds our fields now is what the route then uses.
    On A1111 the module is imported later, with our options already in it: nothing to do.
    """
    models = sys.modules.get("modules.api.models")
    base = getattr(models, "OptionsModel", None)
    if base is None:
        return
    known = getattr(base, "model_fields", None) or getattr(base, "__fields__", {})
    missing = [key for key in DEFAULTS if key not in known]
    if not missing:
        return
    from pydantic import Field, create_model

    labels = {key: info.label for key, info in _option_infos().items()}
    fields: dict[str, Any] = {
        key: (Optional[type(DEFAULTS[key])], Field(default=DEFAULTS[key], description=labels[key]))
        for key in missing}
    models.OptionsModel = create_model("Options", __base__=base, **fields)  # type: ignore[union-attr]


def _wire() -> None:
    try:
        register_settings()
    except Exception:
        logger.warning("DLGSANet: could not register settings; defaults will be used", exc_info=True)
    for hook, callback in (("on_ui_settings", register_settings),
                           ("on_script_unloaded", release_models),
                           ("on_model_loaded", release_models)):
        register: Optional[Callable[..., None]] = getattr(script_callbacks, hook, None)
        if register is not None:
            try:
                register(callback, name=f"dlgsanet_{hook}")
            except TypeError:  # older webui without the name= keyword
                register(callback)
    _register_spandrel()
    for step in (_wrap_load_spandrel_model, _extend_api_options_model):
        try:
            step()
        except Exception:
            logger.warning("DLGSANet: %s failed", step.__name__, exc_info=True)


_wire()
