"""Stand-in for A1111 1.10 ``modules/paths_internal.py``: where the webui's data and models live.

The real module derives these from ``--data-dir`` / ``--models-dir`` at import time; the stand-in
exposes :func:`configure` (stand-in only) so each test can boot a webui in its own folder.
"""
from __future__ import annotations

import os

modules_path = os.path.dirname(os.path.realpath(__file__))
script_path = os.path.dirname(modules_path)  # the webui installation (holds modules/)
cwd = os.getcwd()

data_path = script_path
models_path = os.path.join(data_path, "models")
extensions_dir = os.path.join(data_path, "extensions")
extensions_builtin_dir = os.path.join(script_path, "extensions-builtin")


def configure(data_dir: str, models_dir: str | None = None) -> None:
    """Stand-in only: what the real module computes from ``--data-dir`` and ``--models-dir``."""
    global data_path, models_path, extensions_dir
    data_path = os.path.abspath(data_dir)
    models_path = os.path.abspath(models_dir) if models_dir else os.path.join(data_path, "models")
    extensions_dir = os.path.join(data_path, "extensions")
