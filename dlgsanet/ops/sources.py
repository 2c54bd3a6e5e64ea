"""Where the kernel sources shipped with the package live (CUDA for cupy, C++ for the CPU)."""
from __future__ import annotations

from pathlib import Path
from typing import Tuple


def kernel_dirs() -> Tuple[Path, ...]:
    """Beside the package when installed (``dlgsanet/kernels``), else the repository's ``kernels/``."""
    here = Path(__file__).resolve().parent  # dlgsanet/ops
    return (here.parent / "kernels", here.parents[1] / "kernels")


def kernel_file(name: str) -> Path:
    """Path of kernel source ``name``; FileNotFoundError (saying where it looked) when not shipped."""
    for folder in kernel_dirs():
        candidate = folder / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{name} not found in " + " or ".join(map(str, kernel_dirs())))
