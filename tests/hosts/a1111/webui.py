"""Stand-in for A1111 1.10 ``webui.py`` + ``modules/initialize.py``: the startup order that matters
to an upscaler extension, as :func:`boot` (stand-in only).

1. ``shared_cmd_options``: every extension's ``preload.py`` adds its flags, then the command line
   is parsed;
2. ``shared_init.initialize()``: options, devices, state;
3. ``initialize_rest()``: ``scripts.load_scripts()`` (extension scripts are imported, their
   callbacks registered) *before* ``modelloader.load_upscalers()``.

``reload_ui()`` mirrors "Reload UI": ``script_unloaded`` callbacks, then ``initialize_rest`` again.
"""
from __future__ import annotations

import os

from modules import modelloader, paths_internal, script_callbacks, scripts, shared, shared_cmd_options, shared_init


def boot(data_dir: str, argv: list[str] | tuple[str, ...] = (), *, forge_sys_path: bool = False) -> None:
    paths_internal.configure(data_dir)
    shared.models_path, shared.data_path = paths_internal.models_path, paths_internal.data_path
    shared.extensions_dir = paths_internal.extensions_dir
    os.makedirs(shared.models_path, exist_ok=True)
    shared.cmd_opts = shared_cmd_options.parse(list(argv))
    shared.parser = shared_cmd_options.parser
    shared_init.initialize()
    scripts.FORGE_SYS_PATH = forge_sys_path
    initialize_rest()


def initialize_rest() -> None:
    scripts.load_scripts()
    modelloader.load_upscalers()


def reload_ui() -> None:
    script_callbacks.script_unloaded_callback()
    initialize_rest()
