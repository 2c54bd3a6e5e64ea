"""Command line: ``python -m dlgsanet <command>`` (also the ``dlgsanet`` console script).

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
only the module of the command being run is imported, which keeps start-up quick.
Errors of ours are printed as one clear line (exit 2); no stack traces for user mistakes.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Optional, Sequence

from ..errors import DLGSANetError

COMMANDS = {
    "upscale": "upscale images with a DLGSANet model (the bundled default unless --model)",
    "info": "describe a checkpoint: preset, scale, parameters, hyperparameters, file format",
    "convert": "convert an official .pth checkpoint to .safetensors",
    "eval": "PSNR/SSIM on a folder of HR images, as in the paper (Y channel, MATLAB bicubic LR)",
    "train": "train a DLGSANet with the paper's recipe",
}


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported and given its arguments."""
    parser = argparse.ArgumentParser(prog="dlgsanet", description="DLGSANet super-resolution")
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"dlgsanet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(f".{name}", __name__)
            module.add_arguments(cmd)
            cmd.set_defaults(_run=module.run)
    return parser


def set_threads(threads: Optional[int]) -> None:
    """Apply a command's ``--threads`` to torch (None: leave torch's choice)."""
    if threads is None:
        return
    if threads < 1:
        raise DLGSANetError(f"--threads must be a positive integer, got {threads}")
    import torch

    torch.set_num_threads(threads)


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:  # every command's output, --help included
        return _closed_pipe()


def _main(argv: list[str]) -> int:
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    except SystemExit:  # --help, --version, usage errors: flush now, where a closed pipe is caught
        sys.stdout.flush()
        raise
    try:
        set_threads(getattr(args, "threads", None))
        status = int(args._run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows up here, not in the interpreter's exit
        return status
    except DLGSANetError as e:
        print(f"dlgsanet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dlgsanet {args.command}: interrupted", file=sys.stderr)
        return 130


def _closed_pipe() -> int:
    """The reader of our output went away (``dlgsanet info --json | head``): stop quietly.

    stdout is pointed at the null device so that the interpreter's final flush of what is still
    buffered cannot fail again; the status is the shell's for a command ended by SIGPIPE.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout without a file descriptor (embedded, captured)
        pass
    return 141
