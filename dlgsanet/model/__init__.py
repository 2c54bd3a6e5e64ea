"""The DLGSANet network as the paper describes it: configuration, layers, the two attention
blocks (MHDLSA, SparseGSA), TLC windows and the network.

``forward`` here is the reference path (any device, autograd). The CPU inference speed paths
live in ``dlgsanet.cpu``, which imports this package, never the other way round.
"""
from .config import PRESETS, DLGSANetConfig, preset_config
from .network import DLGSANet

__all__ = ["DLGSANet", "DLGSANetConfig", "PRESETS", "preset_config"]
