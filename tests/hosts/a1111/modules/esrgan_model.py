"""Stand-in for A1111 1.10 ``modules/esrgan_model.py``: the built-in ESRGAN upscaler, i.e. the
path any spandrel-loadable file in ``models/ESRGAN`` takes (Forge-classic forks show only this
one). Written from the real file's behaviour (not copied).

Lists ``models/ESRGAN`` (A1111 1.10.1: ``.pt``/``.pth``; Forge HEAD, whose file imports
``modules_forge.utils``: ``.safetensors`` too, so the stand-in lists those when
``modules_forge`` is importable) with scale 4 and
the file stem as the name; with no files, the downloadable "ESRGAN_4x" entry. ``do_upscale``
loads with ``modelloader.load_spandrel_model(expected_architecture="ESRGAN")`` on every call
(no cache), reports a load failure and returns the input, and runs
``upscaler_utils.upscale_with_model`` with the ESRGAN tile settings.
"""
from __future__ import annotations

import importlib.util

from modules import devices, errors, modelloader
from modules.shared import opts
from modules.upscaler import Upscaler, UpscalerData
from modules.upscaler_utils import upscale_with_model


class UpscalerESRGAN(Upscaler):
    def __init__(self, dirname):
        self.name = "ESRGAN"
        self.model_url = "https://example.invalid/ESRGAN.pth"  # the real URL is never fetched in tests
        self.model_name = "ESRGAN_4x"
        self.scalers = []
        self.user_path = dirname
        super().__init__()
        forge = importlib.util.find_spec("modules_forge") is not None
        model_paths = self.find_models(ext_filter=[".pt", ".pth", ".safetensors"] if forge else [".pt", ".pth"])
        if not model_paths:
            self.scalers.append(UpscalerData(self.model_name, self.model_url, self, 4))
        for file in model_paths:
            name = self.model_name if file.startswith("http") else modelloader.friendly_name(file)
            self.scalers.append(UpscalerData(name, file, self, 4))

    def do_upscale(self, img, selected_model):
        try:
            model = self.load_model(selected_model)
        except Exception:
            errors.report(f"Unable to load ESRGAN model {selected_model}", exc_info=True)
            return img
        model.to(devices.device_esrgan)
        return upscale_with_model(model, img, tile_size=opts.ESRGAN_tile, tile_overlap=opts.ESRGAN_tile_overlap)

    def load_model(self, path: str):
        if path.startswith("http"):
            raise RuntimeError("downloads are not available in the stand-in")
        return modelloader.load_spandrel_model(
            path, device=("cpu" if devices.device_esrgan.type == "mps" else None), expected_architecture="ESRGAN")
