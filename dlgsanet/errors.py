"""Exceptions raised by the dlgsanet package.

Every error a user can cause (a bad file, a bad image, a cancel) surfaces as a subclass of
:class:`DLGSANetError`, with a message that says what is wrong and what to do, so host
applications can catch one type and show the message instead of a torch stack trace.
"""
from __future__ import annotations


class DLGSANetError(Exception):
    """Base class of every error this package raises on purpose."""


class CheckpointError(DLGSANetError, ValueError):
    """A checkpoint cannot be loaded: missing, unreadable, unsafe, or not a DLGSANet model."""


class ImageInputError(DLGSANetError, ValueError):
    """An image or batch handed to the inference API has the wrong shape, dtype or range."""


class UpscaleCancelled(DLGSANetError):
    """The caller's ``cancel()`` callback asked to stop; nothing partial is returned."""


class TileOutOfMemoryError(DLGSANetError, MemoryError):
    """Out of memory even at the smallest allowed tile size."""


class TileSettingsError(DLGSANetError, ValueError):
    """A tile size, overlap or ramp that cannot work (negative, overlap >= tile, ...)."""


class OutputSizeError(DLGSANetError, ValueError):
    """An output scale or size that cannot be made (zero, negative, not a number)."""
