"""The nodes as V3 schema nodes (``comfy_entrypoint`` -> ``ComfyExtension`` -> ``io.ComfyNode``).

Imported only when :func:`nodes.v3_api_available` says the pinned ``comfy_api.v0_0_2`` is there.
Ids, names, inputs (names, types, defaults, order), outputs and text come from ``specs.py``, the
same table the V1 classes use, so workflows saved with either API load in the other. Only
keyword arguments that every ``comfy_api.v0_0_2`` since its first release accepts are passed.
"""
from __future__ import annotations

from typing import Any

import torch
from comfy_api.v0_0_2 import ComfyExtension, io

from . import loader, specs, upscale

_MODEL = io.Custom(specs.MODEL_TYPE)


def _input(p: specs.Param) -> Any:
    common = dict(optional=p.optional, tooltip=p.tooltip)
    if p.kind == "COMBO":
        return io.Combo.Input(p.name, options=p.options() if p.options else [], default=p.default, **common)
    if p.kind == "INT":
        return io.Int.Input(p.name, default=p.default, min=p.min, max=p.max, step=p.step, **common)
    if p.kind == "FLOAT":
        return io.Float.Input(p.name, default=p.default, min=p.min, max=p.max, step=p.step, **common)
    if p.kind == "IMAGE":
        return io.Image.Input(p.name, **common)
    if p.kind == specs.MODEL_TYPE:
        return _MODEL.Input(p.name, **common)
    raise ValueError(f"no V3 input type for {p.kind!r}")  # a programming error in specs.py


def _output(o: specs.Out) -> Any:
    kind = io.Image if o.kind == "IMAGE" else _MODEL
    return kind.Output(o.name, display_name=o.name, tooltip=o.tooltip)


def schema(spec: specs.NodeSpec) -> Any:
    """The ``io.Schema`` of a node spec."""
    return io.Schema(node_id=spec.node_id, display_name=spec.display_name, category=spec.category,
                     description=spec.description, inputs=[_input(p) for p in spec.inputs],
                     outputs=[_output(spec.output)])


class DLGSANetModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> Any:
        return schema(specs.LOADER)

    @classmethod
    def execute(cls, model_name: str, precision: str) -> Any:
        return io.NodeOutput(loader.load(model_name, precision))


class DLGSANetUpscale(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> Any:
        return schema(specs.UPSCALE)

    @classmethod
    def execute(cls, dlgsanet_model: torch.nn.Module, image: torch.Tensor, scale_by: float = 0.0) -> Any:
        return io.NodeOutput(upscale.run_upscale(dlgsanet_model, image, tile_size=None, overlap=None,
                                                 scale_by=scale_by))


class DLGSANetTiledUpscale(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> Any:
        return schema(specs.TILED)

    @classmethod
    def execute(cls, dlgsanet_model: torch.nn.Module, image: torch.Tensor, tile_size: int, overlap: int,
                scale_by: float = 0.0) -> Any:
        return io.NodeOutput(upscale.run_upscale(dlgsanet_model, image, tile_size=int(tile_size),
                                                 overlap=int(overlap), scale_by=scale_by))


class DLGSANetExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [DLGSANetModelLoader, DLGSANetUpscale, DLGSANetTiledUpscale]


async def comfy_entrypoint() -> DLGSANetExtension:
    """ComfyUI's V3 entry point (the pack's ``__init__.py`` re-exports it)."""
    return DLGSANetExtension()
