"""Stand-in for A1111 1.10 ``modules/modelloader.py`` (= Forge e26abf87): model discovery and
the shared spandrel loader. Written from the real file's behaviour (not copied).

* ``load_models`` searches ``command_path`` (or its ``experiments/pretrained_models``) and then
  ``model_path`` with ``shared.walk_files``; a ``model_url`` is returned only when nothing was
  found; any exception inside is swallowed (returns what was found so far).
* ``load_upscalers`` imports every ``modules/*_model.py``, takes the *direct* subclasses of
  ``Upscaler`` (newest copy of each class name wins), and for each class calls
  ``cls(vars(cmd_opts).get(f"{name.lower().replace('upscaler', '')}_models_path"))`` — one
  positional argument — then sets ``user_path`` and ``model_download_path``. There is **no**
  try/except here: a constructor that raises stops the webui start.
* ``load_spandrel_model`` adds ``spandrel_extra_arches`` once (warning on failure), loads with
  ``spandrel.ModelLoader(device=device).load_from_file`` and only *warns* when the architecture
  is not the expected one.
"""
from __future__ import annotations

import importlib
import logging
import os
from urllib.parse import urlparse

from modules import shared
from modules.upscaler import Upscaler, UpscalerLanczos, UpscalerNearest, UpscalerNone

logger = logging.getLogger(__name__)


def load_models(model_path: str, model_url: str = None, command_path: str = None, ext_filter=None,
                download_name=None, ext_blacklist=None, hash_prefix=None) -> list:
    found: list[str] = []
    try:
        places = []
        if command_path is not None and command_path != model_path:
            pretrained = os.path.join(command_path, "experiments/pretrained_models")
            if os.path.exists(pretrained):
                places.append(pretrained)
            elif os.path.exists(command_path):
                places.append(command_path)
        places.append(model_path)
        for place in places:
            for full_path in shared.walk_files(place, allowed_extensions=ext_filter):
                if os.path.islink(full_path) and not os.path.exists(full_path):
                    continue  # broken symlink
                if ext_blacklist is not None and any(full_path.endswith(x) for x in ext_blacklist):
                    continue
                if full_path not in found:
                    found.append(full_path)
        if model_url is not None and not found:
            if download_name is not None:
                raise RuntimeError("downloads are not available in the stand-in")
            found.append(model_url)
    except Exception:
        pass
    return found


def friendly_name(file: str) -> str:
    if file.startswith("http"):
        file = urlparse(file).path
    return os.path.splitext(os.path.basename(file))[0]


def load_upscalers() -> None:
    modules_dir = os.path.join(shared.script_path, "modules")
    for file in os.listdir(modules_dir):
        if "_model.py" in file:
            try:
                importlib.import_module(f"modules.{file.replace('_model.py', '')}_model")
            except Exception:
                pass

    commandline_options = vars(shared.cmd_opts)
    newest: dict[str, type] = {}
    for cls in reversed(Upscaler.__subclasses__()):  # after a reload the newest copy is last
        newest.setdefault(str(cls), cls)

    data = []
    for cls in reversed(newest.values()):
        cmd_name = f"{cls.__name__.lower().replace('upscaler', '')}_models_path"
        commandline_model_path = commandline_options.get(cmd_name, None)
        scaler = cls(commandline_model_path)
        scaler.user_path = commandline_model_path
        scaler.model_download_path = commandline_model_path or scaler.model_path
        data += scaler.scalers

    builtin = (UpscalerNone, UpscalerLanczos, UpscalerNearest)
    shared.sd_upscalers = sorted(data, key=lambda x: "" if isinstance(x.scaler, builtin) else x.name.lower())


_spandrel_extra_init_state = None


def _init_spandrel_extra_archs() -> None:
    global _spandrel_extra_init_state
    if _spandrel_extra_init_state is not None:
        return
    try:
        import spandrel
        import spandrel_extra_arches
        spandrel.MAIN_REGISTRY.add(*spandrel_extra_arches.EXTRA_REGISTRY)
        _spandrel_extra_init_state = True
    except Exception:
        logger.warning("Failed to load spandrel_extra_arches", exc_info=True)
        _spandrel_extra_init_state = False


def load_spandrel_model(path, *, device, prefer_half: bool = False, dtype=None, expected_architecture: str | None = None):
    import spandrel

    _init_spandrel_extra_archs()
    model_descriptor = spandrel.ModelLoader(device=device).load_from_file(str(path))
    arch = model_descriptor.architecture
    if expected_architecture and arch.name != expected_architecture:
        logger.warning(f"Model {path!r} is not a {expected_architecture!r} model (got {arch.name!r})")
    if prefer_half:
        if model_descriptor.supports_half:
            model_descriptor.model.half()
        else:
            logger.info("Model %s does not support half precision, ignoring --half", path)
    if dtype:
        model_descriptor.model.to(dtype=dtype)
    model_descriptor.model.eval()
    return model_descriptor
