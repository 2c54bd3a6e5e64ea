"""Stand-in for A1111 1.10 ``modules/cmd_args.py``: the flags an upscaler extension reads.

Same names, types and defaults as the real parser for: --data-dir, --models-dir, --no-half,
--precision, --upcast-sampling, --use-cpu, --skip-install, --nowebui, --api, --loglevel,
--ui-settings-file, --freeze-settings, --hide-ui-dir-config, --disable-all-extensions and
--disable-safe-unpickle.
"""
from __future__ import annotations

import argparse

from modules.paths_internal import data_path, models_path  # noqa: F401

parser = argparse.ArgumentParser()
parser.add_argument("--data-dir", type=str, default=data_path, help="base path where all user data is stored")
parser.add_argument("--models-dir", type=str, default=None, help="base path where models are stored; overrides --data-dir")
parser.add_argument("--no-half", action="store_true", help="do not switch the model to 16-bit floats")
parser.add_argument("--precision", type=str, help="evaluate at this precision", choices=["full", "half", "autocast"], default="autocast")
parser.add_argument("--upcast-sampling", action="store_true", help="upcast sampling")
parser.add_argument("--use-cpu", nargs="+", help="use CPU as torch device for specified modules", default=[], type=str.lower)
parser.add_argument("--skip-install", action="store_true", help="launch.py argument: skip installation of packages")
parser.add_argument("--nowebui", action="store_true", help="use api=True to launch the API instead of the webui")
parser.add_argument("--api", action="store_true", help="use api=True to launch the API together with the webui")
parser.add_argument("--loglevel", type=str, help="log level; one of: CRITICAL, ERROR, WARNING, INFO, DEBUG", default=None)
parser.add_argument("--ui-settings-file", type=str, help="filename to use for ui settings", default="config.json")
parser.add_argument("--freeze-settings", action="store_true", help="disable editing of all settings globally")
parser.add_argument("--freeze-settings-in-sections", type=str, default=None)
parser.add_argument("--freeze-specific-settings", type=str, default=None)
parser.add_argument("--hide-ui-dir-config", action="store_true", help="hide directory configuration from webui")
parser.add_argument("--disable-all-extensions", action="store_true", help="prevent all extensions from running")
parser.add_argument("--disable-safe-unpickle", action="store_true", help="disable checking pytorch models for malicious code", default=False)
