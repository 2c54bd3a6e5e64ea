"""Our options in Settings > Upscaling: registered at import, always read with defaults.

``on_ui_settings`` never runs with ``--nowebui``, so the options are added when the script is
imported too (idempotent). A hand-edited ``config.json`` can hold anything, so every read falls
back to the default when the stored value has the wrong type or is not a known choice.
"""
from __future__ import annotations

import sys
from typing import Any, Optional

import dlgsanet.alpha
import dlgsanet.devices
import dlgsanet.tiling
from dlgsanet.tiling import TileSettings
from modules import shared

OPT_TILE = "dlgsanet_tile"
OPT_OVERLAP = "dlgsanet_tile_overlap"
OPT_PRECISION = "dlgsanet_precision"
OPT_KEEP_LOADED = "dlgsanet_keep_loaded"
OPT_ALPHA = "dlgsanet_alpha"
DEFAULTS: dict[str, Any] = {
    OPT_TILE: dlgsanet.tiling.DEFAULT_TILE_SIZE,  # the engine's defaults
    OPT_OVERLAP: dlgsanet.tiling.DEFAULT_OVERLAP,
    OPT_PRECISION: "auto",
    OPT_ALPHA: "bicubic",
    OPT_KEEP_LOADED: True,
}
CHOICES: dict[str, tuple[str, ...]] = {
    OPT_PRECISION: dlgsanet.devices.PRECISION_CHOICES,
    OPT_ALPHA: tuple(dlgsanet.alpha.ALPHA_MODES),
}
MIN_TILE = dlgsanet.tiling.MIN_TILE_SIZE
SECTION = ("upscaling", "Upscaling")


def option_infos() -> dict[str, Any]:
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
                            {"choices": list(CHOICES[OPT_PRECISION])}, section=SECTION)
        .info("auto = fp32; bf16/fp16 need less memory on GPUs; fp16 falls back to fp32 on the CPU "
              "and with --no-half"),
        OPT_ALPHA: info(DEFAULTS[OPT_ALPHA], "DLGSANet: upscale transparency (alpha) with", radio,
                        {"choices": list(CHOICES[OPT_ALPHA])}, section=SECTION)
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
    for key, info in option_infos().items():
        opts.add_option(key, info)


def opt(key: str) -> Any:
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
    return value if value in CHOICES[key] else default


def tiling() -> TileSettings:
    """The tile settings from the sliders, brought into range by the engine's own rule."""
    return TileSettings.clamped(opt(OPT_TILE), opt(OPT_OVERLAP))


def extend_api_options_model() -> None:
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

    labels = {key: info.label for key, info in option_infos().items()}
    fields: dict[str, Any] = {
        key: (Optional[type(DEFAULTS[key])], Field(default=DEFAULTS[key], description=labels[key]))
        for key in missing}
    models.OptionsModel = create_model("Options", __base__=base, **fields)  # type: ignore[union-attr]
