"""Operators of DLGSANet behind one entry point each, with backends chosen at call time.

One folder per operator: its dispatcher in ``__init__.py`` and one module per backend. ``native``
finds the sources of ``kernels/`` and builds and binds the C++ ones; ``optional`` is what every
optional backend shares (its "unavailable" reason, environment choice, one log line per reason).
"""
from .dynamic_dwconv import dynamic_dwconv

__all__ = ["dynamic_dwconv"]
