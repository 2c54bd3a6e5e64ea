"""Stand-in for A1111 1.10 ``modules/script_callbacks.py``: the callbacks an upscaler may use.

``on_ui_settings`` callbacks run only while the Gradio settings page is built (never with
``--nowebui``); ``on_model_loaded`` after a Stable Diffusion checkpoint is loaded;
``on_script_unloaded`` before Reload UI re-imports the scripts. Each callback runs in its own
try/except and a failure is reported, as in the real dispatchers.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Any

from modules import errors


@dataclasses.dataclass
class ScriptCallback:
    script: str
    callback: Any
    name: str = "unnamed"


callback_map: dict[str, list[ScriptCallback]] = dict(
    callbacks_model_loaded=[],
    callbacks_ui_settings=[],
    callbacks_script_unloaded=[],
    callbacks_on_reload=[],
)


def clear_callbacks() -> None:
    for callback_list in callback_map.values():
        callback_list.clear()


def add_callback(callbacks: list, fun, *, name=None, category="unknown", filename=None) -> None:
    if filename is None:
        stack = [x for x in inspect.stack() if x.filename != __file__]
        filename = stack[0].filename if stack else "unknown file"
    callback_name = f"{os.path.basename(filename)}/{category}" + (f"/{name}" if name is not None else "")
    callbacks.append(ScriptCallback(filename, fun, callback_name))


def report_exception(c: ScriptCallback, job: str) -> None:
    errors.report(f"Error executing callback {job} for {c.script}", exc_info=True)


def model_loaded_callback(sd_model) -> None:
    for c in callback_map["callbacks_model_loaded"]:
        try:
            c.callback(sd_model)
        except Exception:
            report_exception(c, "model_loaded_callback")


def ui_settings_callback() -> None:
    for c in callback_map["callbacks_ui_settings"]:
        try:
            c.callback()
        except Exception:
            report_exception(c, "ui_settings_callback")


def script_unloaded_callback() -> None:
    for c in reversed(callback_map["callbacks_script_unloaded"]):
        try:
            c.callback()
        except Exception:
            report_exception(c, "script_unloaded")


def on_model_loaded(callback, *, name=None) -> None:
    add_callback(callback_map["callbacks_model_loaded"], callback, name=name, category="model_loaded")


def on_ui_settings(callback, *, name=None) -> None:
    add_callback(callback_map["callbacks_ui_settings"], callback, name=name, category="ui_settings")


def on_script_unloaded(callback, *, name=None) -> None:
    add_callback(callback_map["callbacks_script_unloaded"], callback, name=name, category="script_unloaded")


def on_before_reload(callback, *, name=None) -> None:
    add_callback(callback_map["callbacks_on_reload"], callback, name=name, category="on_reload")
