"""The one definition of the three nodes: ids, names, inputs (in widget order), outputs, text.

Both node APIs are built from this table: ``v1.py`` (``INPUT_TYPES`` dicts, for ComfyUIs without
the V3 schema) and ``v3.py`` (``io.Schema``). Saved workflows store widget values by position,
so inputs are only ever appended, as optional inputs, never reordered or renamed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..dlgsanet.devices import PRECISION_CHOICES
from ..dlgsanet.tiling import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE, MIN_TILE_SIZE

CATEGORY = "image/upscaling"
MODEL_TYPE = "DLGSANET_MODEL"
#: Largest "scale by" factor offered (x16 of a 1024 px image is already 16384 px a side).
MAX_SCALE_BY = 16.0


@dataclass(frozen=True)
class Param:
    """One node input. ``kind``: "COMBO", "INT", "FLOAT" (widgets) or a socket type."""

    name: str
    kind: str
    tooltip: str
    default: Any = None
    min: Optional[float] = None
    max: Optional[float] = None
    step: Optional[float] = None
    options: Optional[Callable[[], list]] = None  # COMBO: called each time the node is described
    optional: bool = False

    def widget_options(self) -> dict[str, Any]:
        """The V1 options dict (also the V3 keyword arguments): only what is set."""
        keys = ("default", "min", "max", "step", "tooltip")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


@dataclass(frozen=True)
class Out:
    kind: str
    name: str
    tooltip: str


@dataclass(frozen=True)
class NodeSpec:
    node_id: str
    display_name: str
    description: str
    inputs: tuple[Param, ...]
    output: Out
    category: str = CATEGORY


def _model_choices() -> list:
    from .loader import model_choices  # late: reads folder_paths each time the node is described

    return model_choices()


MODEL_IN = Param("dlgsanet_model", MODEL_TYPE, "A DLGSANet model from the \"Load DLGSANet Model\" node.")
IMAGE_IN = Param("image", "IMAGE", "Images to upscale, any batch size. RGB or RGBA: the alpha channel is "
                                   "upscaled separately and re-attached.")
SCALE_BY_IN = Param(
    "scale_by", "FLOAT",
    "Final size relative to the input, like \"Upscale Image By\": 2.0 = twice the width and height "
    "(a x4 model's result is then reduced with antialiased bicubic), 8.0 from a x4 model runs it "
    "twice. 0 = the model's own scale (x2, x3, x4), no resampling.",
    default=0.0, min=0.0, max=MAX_SCALE_BY, step=0.01, optional=True)
IMAGE_OUT = Out("IMAGE", "IMAGE", "The upscaled images (scale x height, scale x width; \"scale by\" x "
                                  "height, width when it is set), RGBA if the input was.")

LOADER = NodeSpec(
    node_id="DLGSANetModelLoader",
    display_name="Load DLGSANet Model",
    description=("Loads a DLGSANet super-resolution model (any preset, scale or custom size; "
                 ".safetensors or .pth) from the upscale_models folder, or the model bundled "
                 "with this pack. Checkpoints are read safely: no code inside a file can run."),
    inputs=(
        Param("model_name", "COMBO",
              "DLGSANet checkpoints found in models/upscale_models (and folders from "
              "extra_model_paths.yaml); \"(bundled)\" entries ship with this pack.",
              options=_model_choices),
        Param("precision", "COMBO",
              "Weights and compute precision. auto = fp32 (exact); bf16 halves memory with a small "
              "loss; fp16 only on GPUs.", default="auto", options=lambda: list(PRECISION_CHOICES)),
    ),
    output=Out(MODEL_TYPE, "dlgsanet_model",
               "The DLGSANet model, for \"Upscale Image with DLGSANet\" and \"Tiled Upscale (DLGSANet)\"."),
)

UPSCALE = NodeSpec(
    node_id="DLGSANetUpscale",
    display_name="Upscale Image with DLGSANet",
    description=("Upscales images with a DLGSANet super-resolution model by its scale (x2, x3, "
                 "x4), or to any \"scale by\" factor. The whole image is processed at once when "
                 "it fits in memory; otherwise, or after an out-of-memory error, it is processed "
                 "in overlapping tiles that are blended without seams."),
    inputs=(MODEL_IN, IMAGE_IN, SCALE_BY_IN),
    output=IMAGE_OUT,
)

TILED = NodeSpec(
    node_id="DLGSANetTiledUpscale",
    display_name="Tiled Upscale (DLGSANet)",
    description=("Upscales images with a DLGSANet model in overlapping tiles of a size you "
                 "choose, blended without seams: bounded memory for very large images. On "
                 "out-of-memory the tile size is halved and the tile retried."),
    inputs=(
        MODEL_IN, IMAGE_IN,
        Param("tile_size", "INT",
              "Side of a square tile in input pixels. Smaller tiles use less memory; larger ones "
              "are a little faster. Halved automatically on out-of-memory.",
              default=DEFAULT_TILE_SIZE, min=MIN_TILE_SIZE, max=8192, step=8),
        Param("overlap", "INT",
              "Overlap between neighbouring tiles in input pixels, blended smoothly. The default "
              f"({DEFAULT_OVERLAP}) is seamless; must be smaller than the tile size.",
              default=DEFAULT_OVERLAP, min=0, max=512, step=1),
        SCALE_BY_IN,
    ),
    output=IMAGE_OUT,
)

NODES = (LOADER, UPSCALE, TILED)


def v1_input_types(spec: NodeSpec) -> dict[str, dict[str, tuple]]:
    """``INPUT_TYPES()`` of the V1 API: {"required": {...}, "optional": {...}} in widget order."""
    out: dict[str, dict[str, tuple]] = {"required": {}}
    for p in spec.inputs:
        kind: Any = p.options() if p.kind == "COMBO" and p.options else p.kind
        out.setdefault("optional" if p.optional else "required", {})[p.name] = (kind, p.widget_options())
    return out
