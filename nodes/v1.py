"""The nodes for ComfyUIs without the V3 schema: classic ``NODE_CLASS_MAPPINGS`` classes.

Everything users see (ids, names, inputs, outputs, text) comes from ``specs.py``; each class only
names its spec and the function that does the work. ComfyUI calls ``FUNCTION`` on a fresh
instance with the inputs as keyword arguments and expects a tuple of outputs.
"""
from __future__ import annotations

from typing import Any

import torch

from . import loader, specs, upscale


class _V1Node:
    """Fills the V1 class attributes from ``SPEC`` (set by each subclass)."""

    SPEC: specs.NodeSpec
    FUNCTION = "run"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        spec = cls.SPEC
        cls.DESCRIPTION = spec.description
        cls.CATEGORY = spec.category
        cls.RETURN_TYPES = (spec.output.kind,)
        cls.RETURN_NAMES = (spec.output.name,)
        cls.OUTPUT_TOOLTIPS = (spec.output.tooltip,)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, dict[str, tuple]]:
        return specs.v1_input_types(cls.SPEC)


class DLGSANetModelLoader(_V1Node):
    SPEC = specs.LOADER

    def run(self, model_name: str, precision: str) -> tuple[torch.nn.Module]:
        return (loader.load(model_name, precision),)


class DLGSANetUpscale(_V1Node):
    SPEC = specs.UPSCALE

    def run(self, dlgsanet_model: torch.nn.Module, image: torch.Tensor,
            scale_by: float = 0.0) -> tuple[torch.Tensor]:
        return (upscale.run_upscale(dlgsanet_model, image, tile_size=None, overlap=None,
                                    scale_by=scale_by),)


class DLGSANetTiledUpscale(_V1Node):
    SPEC = specs.TILED

    def run(self, dlgsanet_model: torch.nn.Module, image: torch.Tensor, tile_size: int, overlap: int,
            scale_by: float = 0.0) -> tuple[torch.Tensor]:
        return (upscale.run_upscale(dlgsanet_model, image, tile_size=int(tile_size),
                                    overlap=int(overlap), scale_by=scale_by),)


# Literal ids: ComfyUI-Manager's scanner reads them from the source to map node ids to packs.
NODE_CLASS_MAPPINGS = {
    "DLGSANetModelLoader": DLGSANetModelLoader,
    "DLGSANetUpscale": DLGSANetUpscale,
    "DLGSANetTiledUpscale": DLGSANetTiledUpscale,
}
NODE_DISPLAY_NAME_MAPPINGS = {node_id: cls.SPEC.display_name for node_id, cls in NODE_CLASS_MAPPINGS.items()}
