"""Stand-in for A1111 1.10 ``modules/shared_init.py``: ``initialize()`` fills ``shared``.

Creates ``shared.opts`` from the core templates (plus a ``config.json`` in the data folder when
present, as ``Options.load`` would), picks the devices as A1111 1.8-1.10 does (CPU for the
parts named in ``--use-cpu``), sets ``devices.dtype`` from ``--no-half`` and creates the State.
"""
from __future__ import annotations

import json
import os

import torch

from modules import shared


def initialize() -> None:
    from modules import devices, options, shared_options, shared_state

    shared.options_templates = dict(shared_options.options_templates)
    shared.opts = options.Options(dict(shared_options.options_templates), shared_options.restricted_opts)
    shared.restricted_opts = shared_options.restricted_opts
    config = os.path.join(shared.data_path, shared.cmd_opts.ui_settings_file)
    if os.path.isfile(config):
        with open(config, encoding="utf8") as f:
            shared.opts.data = json.load(f)

    use_cpu = shared.cmd_opts.use_cpu
    devices.device, devices.device_esrgan = (
        devices.cpu if any(y in use_cpu for y in (x, "all")) else devices.get_optimal_device()
        for x in ("sd", "esrgan"))
    devices.dtype = torch.float32 if shared.cmd_opts.no_half else torch.float16
    shared.device = devices.device
    shared.state = shared_state.State()
