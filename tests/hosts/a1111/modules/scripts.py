"""Stand-in for A1111 1.10 ``modules/scripts.py``: ``load_scripts()`` and ``basedir()``.

Imports ``scripts/*.py`` of every extension in ``extensions/`` (sorted by folder name, then
file name) with ``script_loading.load_module``. The extension *root* is prepended to sys.path
only while its file is imported and sys.path is restored in ``finally``; an import error is
reported and startup goes on. ``load_scripts`` first clears all callbacks, as the real one does.

``FORGE_SYS_PATH`` (stand-in only): when True, also prepend every script's basedir permanently
first, as Forge does since commit 7f98a1d1 (lllyasviel, 2024-01-29).
"""
from __future__ import annotations

import os
import sys
from collections import namedtuple

from modules import errors, paths_internal, script_callbacks, script_loading, shared

ScriptFile = namedtuple("ScriptFile", ["basedir", "filename", "path"])

FORGE_SYS_PATH = False
current_basedir = paths_internal.script_path
loaded_modules: list = []  # stand-in only: the script modules of the last load


def basedir() -> str:
    return current_basedir


def list_scripts(scriptdirname: str, extension: str) -> list[ScriptFile]:
    scripts_list = []
    if shared.cmd_opts.disable_all_extensions or not os.path.isdir(paths_internal.extensions_dir):
        return scripts_list
    for name in sorted(os.listdir(paths_internal.extensions_dir)):
        ext_dir = os.path.join(paths_internal.extensions_dir, name)
        script_dir = os.path.join(ext_dir, scriptdirname)
        if not os.path.isdir(script_dir):
            continue
        for filename in sorted(os.listdir(script_dir)):
            path = os.path.join(script_dir, filename)
            if os.path.splitext(filename)[1].lower() == extension and os.path.isfile(path):
                scripts_list.append(ScriptFile(ext_dir, filename, path))
    return scripts_list


def load_scripts() -> None:
    global current_basedir
    script_callbacks.clear_callbacks()
    loaded_modules.clear()
    scripts_list = list_scripts("scripts", ".py")

    if FORGE_SYS_PATH:
        for s in scripts_list:
            if s.basedir not in sys.path:
                sys.path = [s.basedir] + sys.path

    syspath = sys.path
    for scriptfile in scripts_list:
        try:
            if scriptfile.basedir != paths_internal.script_path:
                sys.path = [scriptfile.basedir] + sys.path
            current_basedir = scriptfile.basedir
            loaded_modules.append(script_loading.load_module(scriptfile.path))
        except Exception:
            errors.report(f"Error loading script: {scriptfile.filename}", exc_info=True)
        finally:
            sys.path = syspath
            current_basedir = paths_internal.script_path
