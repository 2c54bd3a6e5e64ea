"""The whole network in CPU inference: asked once per forward pass, then every group and block
through the banded paths with one workspace and one kernel plan."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from .mhdlsa import local_block
from .plan import KernelPlan
from .sparse_gsa import global_block
from .workspace import Workspace
from ..model.layers import inplace_ok
from ..model.mhdlsa import MHDLSABlock
from ..model.network import DLGSANet, ResidualGroup


def cpu_inference(x: torch.Tensor, module: nn.Module) -> bool:
    """Whether ``module`` may run its CPU inference path on ``x``: a CPU tensor and no autograd
    graph being recorded (buffers may then be reused and written in place)."""
    return x.device.type == "cpu" and inplace_ok(x, *module.parameters())


def residual_group(group: ResidualGroup, x: torch.Tensor, workspace: Optional[Workspace] = None,
                   kernels: Optional[KernelPlan] = None) -> torch.Tensor:
    """``group(x)``, block by block in bands; block outputs go to ``workspace`` when given."""
    kernels = kernels or KernelPlan.choose(x, group)
    y = x
    for block in group.body[:-1]:
        run = local_block if isinstance(block, MHDLSABlock) else global_block
        y = run(block, y, workspace, kernels)
    return group.close(y, x)


def infer(model: DLGSANet, x: torch.Tensor) -> Optional[torch.Tensor]:
    """``model(x)`` in CPU inference, or None when ``x`` is not CPU inference (see
    :func:`cpu_inference`). Registered with ``dlgsanet.model.network.use_inference_pass``.

    Image by image: CPU inference gains nothing from batching (every op already has a whole image
    of work), and image by image every image gets exactly the bits it gets alone, whatever GEMM
    kernels the batch size would have selected.
    """
    if not cpu_inference(x, model):
        return None
    kernels = KernelPlan.choose(x, model)
    if x.shape[0] > 1:
        return torch.cat([_one_pass(model, image, kernels) for image in x.split(1)])
    return _one_pass(model, x, kernels)


def _one_pass(model: DLGSANet, x: torch.Tensor, kernels: KernelPlan) -> torch.Tensor:
    feat = model.embed(x)
    workspace = Workspace()  # the blocks write their outputs into buffers allocated once per pass
    deep = feat
    for group in model.groups():
        deep = residual_group(group, deep, workspace, kernels)
    return model.reconstruct(deep, feat)
