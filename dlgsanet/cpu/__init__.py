"""CPU inference speed paths: bands of rows, reused buffers and the fused C++ kernels.

The model (``dlgsanet.model``) computes the paper's network; this package computes the same
function faster on a CPU without autograd. It imports the model's modules, never the other way
round: importing it registers :func:`network.infer` with the network, which then asks one question
per forward pass (CPU, no autograd?) and hands the whole pass over. Which fused kernels the pass
uses is decided once, at its start (:class:`plan.KernelPlan`). Figures in docs/performance.md.
"""
from ..model.network import use_inference_pass
from .network import infer

use_inference_pass(infer)
