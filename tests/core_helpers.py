"""Small models and checkpoints for the core tests (random weights, fast on a CPU)."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator

import torch

from dlgsanet import DLGSANet, DLGSANetConfig


def small_config(**changes) -> DLGSANetConfig:
    """A DLGSANet small enough for unit tests: every kind of layer, a few thousand parameters."""
    base = dict(dim=12, groups=2, blocks=1, local_heads=6, global_heads=3, window=5, scale=2, tlc_window=8)
    base.update(changes)
    return DLGSANetConfig(**base)


def randomise(module: torch.nn.Module, seed: int = 0, noise: float = 0.02) -> torch.nn.Module:
    """Default init plus Gaussian ``noise`` and temperatures in [0.3, 3] (as the official fixtures
    were made), so that every parameter matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("temperature"):
                p.copy_(torch.rand(p.shape, generator=gen) * 2.7 + 0.3)
            else:
                p.add_(torch.randn(p.shape, generator=gen) * noise)
    return module


def random_model(config: DLGSANetConfig, seed: int = 0) -> DLGSANet:
    """A randomised :class:`DLGSANet` (see :func:`randomise`) in eval mode."""
    return randomise(DLGSANet(config), seed).eval()


def absolute_imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every absolute import in a Python file, at any depth (functions too)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.lineno, node.module or ""
