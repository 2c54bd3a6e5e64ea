"""Stand-in for A1111 1.10 ``modules/script_loading.py``: how scripts and preload.py are imported.

``load_module`` imports a file by path under its base name *including* ".py", without putting
it in ``sys.modules`` (so relative imports cannot work); ``preload_extensions`` calls each
extension's ``preload(parser)`` and reports, never raises, on errors.
"""
from __future__ import annotations

import importlib.util
import os

from modules import errors

loaded_scripts: dict[str, object] = {}


def load_module(path: str):
    module_spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    loaded_scripts[path] = module
    return module


def preload_extensions(extensions_dir: str, parser, extension_list=None) -> None:
    if not os.path.isdir(extensions_dir):
        return
    extensions = extension_list if extension_list is not None else os.listdir(extensions_dir)
    for dirname in sorted(extensions):
        preload_script = os.path.join(extensions_dir, dirname, "preload.py")
        if not os.path.isfile(preload_script):
            continue
        try:
            module = load_module(preload_script)
            if hasattr(module, "preload"):
                module.preload(parser)
        except Exception:
            errors.report(f"Error running preload() for {preload_script}", exc_info=True)
