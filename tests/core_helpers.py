"""Small models and checkpoints for the core tests (random weights, fast on a CPU)."""
from __future__ import annotations

import torch

from dlgsanet import DLGSANet, DLGSANetConfig


def small_config(**changes) -> DLGSANetConfig:
    """A DLGSANet small enough for unit tests: every kind of layer, a few thousand parameters."""
    base = dict(dim=12, groups=2, blocks=1, local_heads=6, global_heads=3, window=5, scale=2, tlc_window=8)
    base.update(changes)
    return DLGSANetConfig(**base)


def random_model(config: DLGSANetConfig, seed: int = 0) -> DLGSANet:
    """Default init plus noise and temperatures in [0.3, 3] (as the official fixtures were made),
    so that every parameter matters."""
    gen = torch.Generator().manual_seed(seed)
    model = DLGSANet(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("temperature"):
                p.copy_(torch.rand(p.shape, generator=gen) * 2.7 + 0.3)
            else:
                p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    return model.eval()
