"""Stand-in for A1111 1.10 ``modules/errors.py``: ``report``, ``display`` and ``run``.

``report`` prints the message (and the traceback with ``exc_info``) to stderr, prefixed with
``***`` as the real one does; the stand-in also keeps the messages in ``reported`` for tests.
"""
from __future__ import annotations

import sys
import textwrap
import traceback

reported: list[str] = []  # stand-in only


def report(message: str, *, exc_info: bool = False) -> None:
    reported.append(message)
    for line in message.splitlines():
        print("***", line, file=sys.stderr)
    if exc_info:
        print(textwrap.indent(traceback.format_exc(), "    "), file=sys.stderr)
        print("---", file=sys.stderr)


def display(e: Exception, task: str, *, full_traceback: bool = False) -> None:
    reported.append(f"{task}: {type(e).__name__}: {e}")
    print(f"{task or 'error'}: {type(e).__name__}", file=sys.stderr)
    print(traceback.format_exc(), file=sys.stderr)


def run(code, task: str) -> None:
    try:
        code()
    except Exception as e:
        display(e, task)
