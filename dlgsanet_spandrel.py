"""DLGSANet as a spandrel architecture, so every spandrel-based loader accepts DLGSANet files.

ComfyUI's built-in "Load Upscale Model" (and every pack built on ``UPSCALE_MODEL``), A1111/Forge's
ESRGAN-family upscalers and chaiNNer load checkpoints through spandrel's global ``MAIN_REGISTRY``.
Adding one architecture there makes all of them load DLGSANet checkpoints.

A host adapter, shared by both hosts, so it lives beside their entry points and not in the
host-independent ``dlgsanet`` package. The ComfyUI pack imports it relatively (``.dlgsanet_spandrel``)
and the A1111 script as a top-level module; since ``dlgsanet`` itself is imported relatively in
one host and absolutely in the other, this module imports none of it: each host passes in
``dlgsanet.is_dlgsanet_state_dict`` and ``dlgsanet.model_from_state_dict`` (hyperparameters
inferred from shapes, the same code our own loader uses).

What ComfyUI's built-in path does with the descriptor (v0.33.0 ``nodes_upscale_model.py``): it
wraps ``descriptor.model`` in a ``ModelPatcher`` (attributes set on the network, weights and
buffers possibly replaced by new tensors when loaded), then calls ``descriptor(tile.float())``
on 512-pixel tiles scaled by ``descriptor.scale``. So the network keeps no state derived from its
weights, accepts any tile size (``SizeRequirements(minimum=1)``: nothing is padded) and fp32
input; tests/test_comfy_spandrel.py replays those steps.

spandrel is optional and imported only inside functions (and spandrel itself needs torchvision at
import time). Works with spandrel 0.3.4 (the A1111/Forge pin; ``ArchRegistry.add`` has no
``ignore_duplicates`` there and raises a plain ``ValueError``) and 0.4.x (ComfyUI).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

ARCH_ID = "DLGSANet"

#: ``dlgsanet.is_dlgsanet_state_dict``: spandrel's detect contract, no false negatives and (here)
#: no false positives either, through keys that only DLGSANet has (the dynamic-convolution
#: hyper-network, ``...IDynamicDWConv.conv.conv2.0.weight``).
Detect = Callable[[Mapping[str, Any]], bool]
#: ``dlgsanet.model_from_state_dict``: the network, with our own clear CheckpointError messages.
Build = Callable[[Mapping[str, Any]], Any]


def make_architecture(detect: Detect, build: Build) -> Any:
    """A new ``spandrel.Architecture`` instance for DLGSANet (needs spandrel importable)."""
    from spandrel import Architecture, ImageModelDescriptor, ModelTiling, SizeRequirements

    class DLGSANetArch(Architecture):  # type: ignore[misc,type-arg]
        """Detect and load DLGSANet state dicts (official keys; any preset, scale or custom size)."""

        def __init__(self) -> None:
            super().__init__(id=ARCH_ID, name="DLGSANet", detect=detect)

        def load(self, state_dict: Mapping[str, Any]) -> Any:
            # Validates shapes and values with our own clear CheckpointError messages; spandrel's
            # descriptor then loads the same tensors strictly once more (a few MB, negligible).
            model = build(state_dict)
            config = model.config
            tags = [model.preset] if model.preset else []
            tags += [f"{config.dim}dim", f"{config.groups}x{config.blocks}blocks"]
            return ImageModelDescriptor(
                model,
                dict(state_dict),
                architecture=self,
                purpose="SR" if config.scale > 1 else "Restoration",
                tags=tags,
                # Attention and channel LayerNorm in float16 are unverified against fp32 on trained
                # weights, so fp16 stays off (as spandrel does for SwinIR/DAT/HAT); bf16 keeps the
                # fp32 range and is safe.
                supports_half=False,
                supports_bfloat16=True,
                scale=config.scale,
                input_channels=config.in_chans,
                output_channels=config.in_chans,
                size_requirements=SizeRequirements(minimum=1),
                # TLC windows make the global attention local already, so tiling is harmless.
                tiling=ModelTiling.SUPPORTED,
            )

    return DLGSANetArch()


def register(detect: Detect, build: Build, registry: Optional[Any] = None) -> bool:
    """Add DLGSANet to ``registry`` (default: ``spandrel.MAIN_REGISTRY``); True if it was added.

    Idempotent: calling it again (a host reloading the pack, or the ComfyUI pack and the A1111
    script both calling it, even from two copies of this module) leaves one entry and returns
    False. Returns False too when spandrel cannot be imported. Never raises for a duplicate.
    """
    if registry is None:
        try:
            from spandrel import MAIN_REGISTRY
        except ImportError:
            return False
        registry = MAIN_REGISTRY
    if ARCH_ID in registry:
        return False
    from spandrel import ArchSupport

    try:
        registry.add(ArchSupport.from_architecture(make_architecture(detect, build)))
    except ValueError:  # 0.4.x DuplicateArchitectureError is a ValueError too (a racing add)
        if ARCH_ID in registry:
            return False
        raise
    return True
