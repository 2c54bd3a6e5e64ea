"""Stand-in for A1111 1.10 ``modules/shared.py``: the process-wide globals extensions read.

``opts``, ``state`` and ``device`` are filled by ``shared_init.initialize()`` (as in the real
webui), ``cmd_opts`` by the command-line parse, ``sd_upscalers`` by
``modelloader.load_upscalers()``.
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from modules import options, paths_internal, shared_cmd_options, util

if TYPE_CHECKING:
    from modules import shared_state

cmd_opts = shared_cmd_options.cmd_opts
parser = shared_cmd_options.parser

models_path = paths_internal.models_path
script_path = paths_internal.script_path
data_path = paths_internal.data_path
extensions_dir = paths_internal.extensions_dir

device = None
state: "shared_state.State" = None  # type: ignore[assignment]
opts: options.Options = None  # type: ignore[assignment]
options_templates: dict = None  # type: ignore[assignment]
restricted_opts: set = None  # type: ignore[assignment]

sd_upscalers: list = []
progress_print_out = sys.stdout

OptionInfo = options.OptionInfo
options_section = options.options_section
natural_sort_key = util.natural_sort_key
walk_files = util.walk_files
