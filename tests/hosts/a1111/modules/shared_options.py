"""Stand-in for A1111 1.10 ``modules/shared_options.py``: the core options an upscaler reads.

Only the "Upscaling" section (same keys, defaults and section ids) and ``list_hidden_files``
(read by ``util.walk_files``).
"""
from __future__ import annotations

from modules.options import OptionInfo, options_section

options_templates: dict[str, OptionInfo] = {}
restricted_opts: set[str] = set()

options_templates.update(options_section(("upscaling", "Upscaling", "postprocessing"), {
    "ESRGAN_tile": OptionInfo(192, "Tile size for ESRGAN upscalers.").info("0 = no tiling"),
    "ESRGAN_tile_overlap": OptionInfo(8, "Tile overlap for ESRGAN upscalers.").info("Low values = visible seam"),
    "DAT_tile": OptionInfo(192, "Tile size for DAT upscalers.").info("0 = no tiling"),
    "DAT_tile_overlap": OptionInfo(8, "Tile overlap for DAT upscalers.").info("Low values = visible seam"),
    "upscaler_for_img2img": OptionInfo(None, "Upscaler for img2img"),
    "set_scale_by_when_changing_upscaler": OptionInfo(False, "Automatically set the Scale by factor based on the name of the selected Upscaler."),
}))

options_templates.update(options_section(("system", "System", "system"), {
    "enable_upscale_progressbar": OptionInfo(True, "Show a progress bar in the console for tiled upscaling."),
    "list_hidden_files": OptionInfo(True, "Load models/files in hidden directories").info("directory is hidden if its name starts with \".\""),
}))
