"""CPU inference speed paths: bands of rows, reused buffers and the fused C++ kernels.

The model (``dlgsanet.model``) computes the paper's network; this package computes the same
function faster on a CPU without autograd, and is chosen once per forward pass.
"""
