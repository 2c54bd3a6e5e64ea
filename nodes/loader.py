"""Load DLGSANet Model's work: a DLGSANet checkpoint from ``upscale_models`` (or the bundled model).

The list is read through ``folder_paths``, so folders added in ``extra_model_paths.yaml`` count.
``upscale_models`` is shared with ESRGAN, SwinIR and friends, so only DLGSANet checkpoints are
listed: recognised from the tensor names in the file's header (never by unpickling), plus any
file whose name says "dlgsanet" (so a broken download shows up and explains itself on load).
"""
from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

import folder_paths

from ..dlgsanet import DLGSANet, default_model_path, load_model
from ..dlgsanet.devices import pick_dtype
from . import host

log = logging.getLogger("DLGSANet")

FOLDER = "upscale_models"
BUNDLED_PREFIX = "(bundled) "
# Tensor-name fragments only DLGSANet checkpoints contain (the dynamic-convolution
# hyper-network and the sparse global attention, under their official names).
_SIGNATURE = (b"IDynamicDWConv", b"restormer_attn", b"overlap_embed")
_PICKLE_PEEK_BYTES = 4 << 20
_listing_cache: dict[tuple[str, int, int], bool] = {}


def bundled_models() -> dict[str, Path]:
    """Display name -> path of the models shipped inside the pack."""
    folder = default_model_path().parent
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    return {BUNDLED_PREFIX + f.name: f for f in files}


def _header_names(path: str) -> bytes:
    """The part of a checkpoint that holds its tensor names, read without running any pickle."""
    with open(path, "rb") as f:
        head = f.read(8)
        if path.lower().endswith((".safetensors", ".sft")) and len(head) == 8:
            size = int.from_bytes(head, "little")
            return f.read(min(size, 100 << 20))  # the JSON header: every tensor name
    if zipfile.is_zipfile(path):  # torch.save's zip format: names live in data.pkl
        with zipfile.ZipFile(path) as zf:
            pickles = [n for n in zf.namelist() if n.endswith("data.pkl")]
            return zf.read(pickles[0]) if pickles else b""
    with open(path, "rb") as f:  # legacy torch.save: the pickle with the names comes first
        return f.read(_PICKLE_PEEK_BYTES)


def looks_like_dlgsanet(path: str) -> bool:
    """True for a file whose tensor names are DLGSANet's (cached on size and mtime)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _listing_cache:
        try:
            names = _header_names(path)
            _listing_cache[key] = all(s in names for s in _SIGNATURE)
        except (OSError, zipfile.BadZipFile, ValueError):
            _listing_cache[key] = False
    return _listing_cache[key]


def model_choices() -> list[str]:
    """Bundled models first, then DLGSANet files of every ``upscale_models`` folder."""
    found = []
    for name in folder_paths.get_filename_list(FOLDER):
        path = folder_paths.get_full_path(FOLDER, name)
        if path and ("dlgsanet" in name.lower() or looks_like_dlgsanet(path)):
            found.append(name)
    return list(bundled_models()) + found


def resolve(model_name: str) -> Path:
    bundled = bundled_models()
    if model_name in bundled:
        return bundled[model_name]
    return Path(folder_paths.get_full_path_or_raise(FOLDER, model_name))


def load(model_name: str, precision: str) -> DLGSANet:
    """What "Load DLGSANet Model" does: the checkpoint, on ComfyUI's offload device."""
    path = resolve(model_name)
    dtype = pick_dtype(precision, host.compute_device())
    model = load_model(path, device=host.offload_device(), dtype=dtype)
    log.info("DLGSANet: loaded %s (%s x%d, %s)", path.name, model.preset or "custom",
             model.scale, str(dtype).replace("torch.", ""))
    return model
