"""What every optional backend shares: why it cannot run, the user's choice, one log line per reason.

Why: an optional accelerator (the cupy kernels of the dynamic conv, the fused C++ CPU kernels) must
never stop inference. Every way it can be missing becomes an :class:`Unavailable` whose text is a
one-line reason; the caller falls back to PyTorch ops and logs that reason once, so a slow run
explains itself without flooding the log. A bad value of the environment variable that chooses a
backend is a user's typo in a host's launcher: it is logged once and ignored rather than breaking
every upscale.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Mapping, Optional, Sequence, Set


class Unavailable(RuntimeError):
    """An optional backend cannot run here; ``str(error)`` is the reason, fit for one log line."""


class OnceLog:
    """Logs each distinct message once per process on ``logger`` (until :meth:`reset`)."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._seen: Set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, message: str, level: int = logging.WARNING) -> None:
        with self._lock:
            if message in self._seen:
                return
            self._seen.add(message)
        self.logger.log(level, message)

    def reset(self) -> None:
        """Forget what was logged (tests; a long-lived host after the user fixed the cause)."""
        with self._lock:
            self._seen.clear()


def env_choice(var: str, choices: Sequence[str], log: OnceLog,
               aliases: Optional[Mapping[str, str]] = None) -> str:
    """The choice in ``$var`` (case and surrounding blanks ignored): one of ``choices``, or the one an
    ``aliases`` spelling stands for. Unset or empty means ``choices[0]``; any other value is logged
    once and also counts as ``choices[0]``."""
    raw = os.environ.get(var, "")
    value = raw.strip().lower()
    value = (aliases or {}).get(value, value)
    if not value:
        return choices[0]
    if value in choices:
        return value
    log(f"DLGSANet: ignoring {var}={raw!r} (expected one of {', '.join(choices)}); using {choices[0]}")
    return choices[0]
