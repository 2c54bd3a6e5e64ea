"""Helpers for the ComfyUI pack tests: stand-in hosts, loading the pack as ComfyUI does, models.

Importing this module puts ``tests/hosts/comfyui`` (stand-ins of ``folder_paths``, ``comfy.utils``,
``comfy.model_management`` and the pinned ``comfy_api.v0_0_2``) on ``sys.path``, as ComfyUI's own
root would be. ``load_pack(..., api="v1")`` imports the pack as a ComfyUI without ``comfy_api``
would (v0.3.46 and older); ``registered_nodes`` and ``execute`` do what ComfyUI's ``nodes.py``
and ``execution.py`` do with what the pack exports.
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import json
import os
import sys
import types
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST_DIR = Path(__file__).resolve().parent / "hosts" / "comfyui"
EXAMPLE_WORKFLOWS = REPO_ROOT / "example_workflows"
if str(HOST_DIR) not in sys.path:
    sys.path.insert(0, str(HOST_DIR))

import comfy.model_management as mm  # noqa: E402  (stand-in)
import comfy.utils  # noqa: E402,F401  (stand-in)
import folder_paths  # noqa: E402,F401  (stand-in, re-exported for the tests)

from dlgsanet import DLGSANet, DLGSANetConfig  # noqa: E402

#: Node types of ComfyUI itself that our example workflows use, with their widget inputs in
#: widget order (from ComfyUI v0.3.75 nodes.py / comfy_extras/nodes_upscale_model.py).
CORE_WIDGETS: dict[str, list[str]] = {
    "LoadImage": ["image", "upload"],
    "SaveImage": ["filename_prefix"],
    "PreviewImage": [],
    "UpscaleModelLoader": ["model_name"],
    "ImageUpscaleWithModel": [],
}
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")


#: Module names that make ``import comfy_api.v0_0_2`` fail, as in a ComfyUI without the V3 API.
_V3_MODULES = ("comfy_api", "comfy_api.latest", "comfy_api.latest._io", "comfy_api.v0_0_2")


@contextlib.contextmanager
def without_v3_api() -> Iterator[None]:
    """A ComfyUI older than v0.3.47: ``comfy_api.v0_0_2`` cannot be imported."""
    saved = {name: sys.modules.get(name) for name in _V3_MODULES}
    sys.modules.update({name: None for name in _V3_MODULES})  # None: import raises ImportError
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def load_pack(pack_dir: Path, api: str = "v3") -> types.ModuleType:
    """Import a pack folder exactly as ComfyUI's ``nodes.load_custom_node`` does (v0.3.75, v0.33.0):
    a package named after the folder's full path with dots replaced, from ``<dir>/__init__.py``.

    ``api="v1"``: in a ComfyUI without the V3 API. The module is cached by its path, so load the
    same folder under another path (a symlink) for the other API.
    """
    module_path = str(pack_dir)
    sys_module_name = module_path.replace(".", "_x_")
    if sys_module_name in sys.modules:
        return sys.modules[sys_module_name]
    spec = importlib.util.spec_from_file_location(sys_module_name, os.path.join(module_path, "__init__.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[sys_module_name] = module
    try:
        with without_v3_api() if api == "v1" else contextlib.nullcontext():
            spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[sys_module_name]
        raise
    return module


def linked_pack(folder: Path, api: str = "v3") -> types.ModuleType:
    """The repository loaded from ``folder`` (a new symlink to it), as ComfyUI would."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.symlink_to(REPO_ROOT, target_is_directory=True)
    return load_pack(folder, api)


def registered_nodes(pack: types.ModuleType) -> tuple[dict[str, type], dict[str, str], str]:
    """(node id -> class, node id -> display name, "v1" or "v3"): what ComfyUI registers from the
    pack, in the order of v0.33.0 ``nodes.load_custom_node``: ``NODE_CLASS_MAPPINGS`` when it is
    not None (then ``comfy_entrypoint`` is never looked at), else ``comfy_entrypoint()``'s
    extension: ``on_load()``, ``get_node_list()``, each class's ``GET_SCHEMA()``."""
    if getattr(pack, "NODE_CLASS_MAPPINGS", None) is not None:
        return (dict(pack.NODE_CLASS_MAPPINGS), dict(getattr(pack, "NODE_DISPLAY_NAME_MAPPINGS", None) or {}),
                "v1")
    from comfy_api.latest import ComfyExtension

    async def load() -> tuple[dict[str, type], dict[str, str], str]:
        entry = pack.comfy_entrypoint
        extension = await entry() if inspect.iscoroutinefunction(entry) else entry()
        assert isinstance(extension, ComfyExtension)
        await extension.on_load()
        node_list = await extension.get_node_list()
        assert isinstance(node_list, list)
        classes, names = {}, {}
        for cls in node_list:
            schema = cls.GET_SCHEMA()
            classes[schema.node_id] = cls
            if schema.display_name is not None:
                names[schema.node_id] = schema.display_name
        return classes, names, "v3"

    return asyncio.run(load())


def execute(cls: type, **inputs: Any) -> tuple:
    """Run a node as ComfyUI's ``execution.py`` does (v0.33.0), in inference mode: V1 -> a new
    instance's ``FUNCTION`` with keyword arguments; V3 -> ``FUNCTION`` (``EXECUTE_NORMALIZED``)
    on a per-run clone of the class. Returns the output tuple."""
    from comfy_api.latest import io

    with torch.inference_mode():
        if isinstance(cls, type) and issubclass(cls, io.ComfyNode):
            cls.VALIDATE_CLASS()
            clone = cls.PREPARE_CLASS_CLONE(None)
            output = getattr(cls, cls.FUNCTION).__func__(clone, **inputs)
            return tuple(output.result or ())
        return tuple(getattr(cls(), cls.FUNCTION)(**inputs))


def pack_module(pack: types.ModuleType, name: str) -> types.ModuleType:
    """A submodule of a loaded pack, e.g. ``pack_module(pack, "dlgsanet")``."""
    return sys.modules[f"{pack.__name__}.{name}"]


def small_config(scale: int = 2, **changes: Any) -> DLGSANetConfig:
    """A DLGSANet small enough for fast CPU tests (all structural features present)."""
    base = dict(dim=12, groups=1, blocks=1, local_heads=3, global_heads=2, window=7, scale=scale)
    base.update(changes)
    return DLGSANetConfig(**base)


def random_model(config: Optional[DLGSANetConfig] = None, seed: int = 0) -> DLGSANet:
    """A DLGSANet with random weights (eval mode); biases randomised too so nothing is trivial."""
    torch.manual_seed(seed)
    model = DLGSANet(config or small_config())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


class NewerComfyUI:
    """Turns the v0.3.75 stand-in into a newer ComfyUI (0.29+ / 2026): ``intermediate_dtype``,
    ``is_oom``/``raise_non_oom`` and a ``BaseException`` interrupt, as in current
    ``comfy/model_management.py``."""

    def __init__(self, monkeypatch: Any, intermediate_dtype: torch.dtype = torch.float16) -> None:
        class InterruptProcessingException(BaseException):
            pass

        def is_oom(e: BaseException) -> bool:
            if isinstance(e, mm.OOM_EXCEPTION):
                return True
            accel = getattr(torch, "AcceleratorError", RuntimeError)
            return isinstance(e, accel) and (getattr(e, "error_code", None) == 2
                                             or "out of memory" in str(e).lower())

        def raise_non_oom(e: BaseException) -> None:
            if not is_oom(e):
                raise e

        monkeypatch.setattr(mm, "InterruptProcessingException", InterruptProcessingException)
        monkeypatch.setattr(mm, "intermediate_dtype", lambda: intermediate_dtype, raising=False)
        monkeypatch.setattr(mm, "is_oom", is_oom, raising=False)
        monkeypatch.setattr(mm, "raise_non_oom", raise_non_oom, raising=False)
        self.InterruptProcessingException = InterruptProcessingException


# ------------------------------------------------------------------------------------------
# workflows (UI format, as the frontend saves them) -> API format (what POST /prompt runs)
# ------------------------------------------------------------------------------------------
def load_workflow(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def workflow_files() -> list[Path]:
    return sorted(EXAMPLE_WORKFLOWS.glob("*.json"))


def widget_inputs(input_types: dict[str, Any]) -> list[str]:
    """Names of the inputs shown as widgets (combos and INT/FLOAT/STRING/BOOLEAN), in order."""
    names = []
    for section in ("required", "optional"):
        for name, spec in input_types.get(section, {}).items():
            kind = spec[0]
            if isinstance(kind, (list, tuple)) or kind in WIDGET_TYPES or kind == "COMBO":
                names.append(name)
    return names


def iter_links(workflow: dict[str, Any]) -> Iterator[tuple[int, int, int, int, int, str]]:
    for link in workflow["links"]:
        if isinstance(link, dict):  # schema version 1
            yield (link["id"], link["origin_id"], link["origin_slot"], link["target_id"],
                   link["target_slot"], link["type"])
        else:
            yield tuple(link)  # type: ignore[misc]


def ui_to_api(workflow: dict[str, Any], widgets: dict[str, list[str]]) -> dict[str, Any]:
    """Convert a UI-format workflow to the API prompt format, as the frontend's "Export (API)".

    ``widgets`` maps node type -> its widget input names in widget order (``LoadImage``'s
    ``upload`` button has no value slot of its own, so it is skipped).
    """
    links = {lid: (src, slot) for lid, src, slot, _dst, _dslot, _t in iter_links(workflow)}
    prompt: dict[str, Any] = {}
    for node in workflow["nodes"]:
        if node.get("mode", 0) in (2, 4):  # muted / bypassed
            continue
        inputs: dict[str, Any] = {}
        names = [n for n in widgets[node["type"]] if n != "upload"]
        values = list(node.get("widgets_values") or [])
        for name, value in zip(names, values):
            inputs[name] = value
        for inp in node.get("inputs") or []:
            if inp.get("link") is not None:
                src, slot = links[inp["link"]]
                inputs[inp["name"]] = [str(src), slot]
        title = node.get("title") or node["type"]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs, "_meta": {"title": title}}
    return prompt
