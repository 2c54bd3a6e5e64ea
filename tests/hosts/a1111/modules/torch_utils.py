"""Stand-in for A1111 1.10 ``modules/torch_utils.py``: ``get_param`` (first parameter of a module,
unwrapping a spandrel descriptor's ``.model``)."""
from __future__ import annotations

import torch


def get_param(model) -> torch.nn.Parameter:
    if hasattr(model, "model") and hasattr(model.model, "parameters"):
        model = model.model
    for param in model.parameters():
        return param
    raise ValueError(f"No parameters found in model {model!r}")
