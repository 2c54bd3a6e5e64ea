"""Stand-in for A1111 1.10 ``modules/shared_cmd_options.py``: preload extensions, then parse.

The real module does this once at import time from ``sys.argv``; the stand-in does the same in
:func:`parse` (stand-in only) so each test can start a webui with its own command line.
"""
from __future__ import annotations

import argparse
import copy

from modules import cmd_args, paths_internal, script_loading

parser: argparse.ArgumentParser = cmd_args.parser
cmd_opts = parser.parse_known_args([])[0]


def parse(argv: list[str]) -> argparse.Namespace:
    """Run every extension's preload.py on a fresh parser, then parse ``argv`` (known args only,
    as with IGNORE_CMD_ARGS_ERRORS)."""
    global parser, cmd_opts
    parser = copy.deepcopy(cmd_args.parser)
    script_loading.preload_extensions(paths_internal.extensions_dir, parser)
    cmd_opts, _ = parser.parse_known_args(argv)
    return cmd_opts
