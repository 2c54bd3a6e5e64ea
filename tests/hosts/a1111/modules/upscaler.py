"""Stand-in for A1111 1.10 ``modules/upscaler.py``: ``Upscaler``, ``UpscalerData`` and the
None / Lanczos / Nearest upscalers (Forge HEAD is the same but for ``UpscalerData.sha256``).

Written from the real file's behaviour (not copied). What matters to a plugin:

* ``Upscaler.__init__(create_dirs=False)`` reads ``opts.ESRGAN_tile``/``ESRGAN_tile_overlap``,
  ``shared.device`` and ``cmd_opts.no_half``, and sets ``model_path = models/<name>`` when
  ``self.name`` was set before it ran and ``model_path`` is still None.
* ``Upscaler.upscale(img, scale, selected_model)`` is the loop every caller uses: the target is
  ``floor(size * scale / 8) * 8``; ``do_upscale`` runs at most 3 times, skipped once the image
  already covers the target (except a first pass at scale 1), stopping on
  ``shared.state.interrupted`` or when a pass leaves the size unchanged; a final LANCZOS resize
  lands exactly on the target.
* ``find_models`` delegates to ``modelloader.load_models``.
"""
from __future__ import annotations

import os
from abc import abstractmethod

from PIL import Image

import modules.shared
from modules import modelloader, shared

LANCZOS = getattr(Image, "Resampling", Image).LANCZOS
NEAREST = getattr(Image, "Resampling", Image).NEAREST


class Upscaler:
    name = None
    model_path = None
    model_name = None
    model_url = None
    enable = True
    filter = None
    model = None
    user_path = None
    scalers: list
    tile = True

    def __init__(self, create_dirs=False):
        opts, cmd_opts = modules.shared.opts, modules.shared.cmd_opts
        self.tile_size, self.tile_pad = opts.ESRGAN_tile, opts.ESRGAN_tile_overlap
        self.device = modules.shared.device
        self.half = not cmd_opts.no_half
        self.scale = 1
        self.model_download_path = None
        self.mod_pad_h = self.img = self.output = self.mod_scale = None
        self.pre_pad = 0
        if self.model_path is None and self.name:
            self.model_path = os.path.join(shared.models_path, self.name)
        if create_dirs and self.model_path:
            os.makedirs(self.model_path, exist_ok=True)
        try:
            import cv2  # noqa: F401
        except Exception:
            pass
        else:
            self.can_tile = True

    @abstractmethod
    def do_upscale(self, img: Image.Image, selected_model: str):
        return img

    def upscale(self, img: Image.Image, scale, selected_model: str = None):
        self.scale = scale
        target = (int(img.width * scale // 8 * 8), int(img.height * scale // 8 * 8))
        for attempt in range(3):
            covers = img.width >= target[0] and img.height >= target[1]
            if covers and (attempt > 0 or scale != 1):
                break
            if shared.state.interrupted:
                break
            before = img.size
            img = self.do_upscale(img, selected_model)
            if img.size == before:
                break
        if img.size != target:
            img = img.resize(target, resample=LANCZOS)
        return img

    @abstractmethod
    def load_model(self, path: str):
        pass

    def find_models(self, ext_filter=None) -> list:
        return modelloader.load_models(model_path=self.model_path, model_url=self.model_url,
                                       command_path=self.user_path, ext_filter=ext_filter)

    def update_status(self, prompt):
        print(f"\nextras: {prompt}", file=shared.progress_print_out)


class UpscalerData:
    name = None
    data_path = None
    scale: int = 4
    scaler: Upscaler = None
    model: None

    def __init__(self, name: str, path: str, upscaler: Upscaler = None, scale: int = 4, model=None):
        self.name, self.data_path, self.local_data_path = name, path, path
        self.scaler, self.scale, self.model = upscaler, scale, model

    def __repr__(self):
        return f"<UpscalerData name={self.name} path={self.data_path} scale={self.scale}>"


class UpscalerNone(Upscaler):
    name = "None"
    scalers = []

    def __init__(self, dirname=None):
        super().__init__(False)
        self.scalers = [UpscalerData("None", None, self)]

    def load_model(self, path):
        pass

    def do_upscale(self, img, selected_model=None):
        return img


class _PILResize:
    """Shared body of the Lanczos and Nearest entries (a resize by ``self.scale``); a mixin, so
    both stay *direct* subclasses of Upscaler as discovery requires."""

    scalers = []
    label = ""
    resample = LANCZOS

    def __init__(self, dirname=None):
        super().__init__(False)
        self.name = self.label  # set after __init__, so these have no model_path (as in the real file)
        self.scalers = [UpscalerData(self.name, None, self)]

    def load_model(self, _):
        pass

    def do_upscale(self, img, selected_model=None):
        size = (int(img.width * self.scale), int(img.height * self.scale))
        return img.resize(size, resample=self.resample)


class UpscalerLanczos(_PILResize, Upscaler):
    label = "Lanczos"


class UpscalerNearest(_PILResize, Upscaler):
    label = "Nearest"
    resample = NEAREST
