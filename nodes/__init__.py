"""ComfyUI node classes of the DLGSANet pack (thin adapters over ``dlgsanet``)."""
from .loader import DLGSANetModelLoader
from .upscale import DLGSANetTiledUpscale, DLGSANetUpscale

NODE_CLASS_MAPPINGS = {
    "DLGSANetModelLoader": DLGSANetModelLoader,
    "DLGSANetUpscale": DLGSANetUpscale,
    "DLGSANetTiledUpscale": DLGSANetTiledUpscale,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "DLGSANetModelLoader": "Load DLGSANet Model",
    "DLGSANetUpscale": "Upscale Image with DLGSANet",
    "DLGSANetTiledUpscale": "Tiled Upscale (DLGSANet)",
}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
