"""Operators of DLGSANet behind one entry point each, with backends chosen at call time."""
from .dynamic_dwconv import dynamic_dwconv

__all__ = ["dynamic_dwconv"]
