"""The naive official-arithmetic DLGSANet (``benchmarks/official_reference.py``) for tests.

The reference lives with the benchmarks (it is a yardstick, not part of the package), so it is
loaded by file path here instead of through ``sys.path``.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch

from conftest import REPO_ROOT
from core_helpers import random_model
from dlgsanet import DLGSANet, DLGSANetConfig

REFERENCE_FILE = REPO_ROOT / "benchmarks" / "official_reference.py"


def load_reference_module() -> ModuleType:
    """Import ``benchmarks/official_reference.py`` once, under the name ``official_reference``."""
    name = "official_reference"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(REFERENCE_FILE))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def model_pair(config: DLGSANetConfig, seed: int = 0) -> tuple[DLGSANet, torch.nn.Module]:
    """Our model with random weights (default init + noise, temperatures in [0.3, 3], as the
    official fixtures were made) and the naive reference holding the very same tensors; eval mode."""
    ours = random_model(config, seed=seed)
    reference = load_reference_module().ReferenceDLGSANet.from_config(config)
    reference.load_state_dict(ours.state_dict(), strict=True)
    return ours.eval(), reference.eval()
