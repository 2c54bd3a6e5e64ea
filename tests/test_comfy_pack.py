"""The pack as ComfyUI, ComfyUI-Manager and the Comfy Registry see it.

- imported under any folder name (Manager installs into the registry id, git into the repo name);
- only relative imports inside the pack (ComfyUI puts its own ``comfy/`` first on sys.path);
- no eval/exec, no pip or subprocess at run time, no sys.path edits (Registry standards);
- one node API exported: V3 when the pinned ``comfy_api.v0_0_2`` is usable, else V1.
(``pyproject.toml`` and the published archive: tests/test_comfy_registry.py.)
"""
from __future__ import annotations

import ast
import logging
import re
import sys
import types
from pathlib import Path

import pytest

import comfy_helpers as ch
from core_helpers import absolute_imports

ROOT = ch.REPO_ROOT
PACK_FILES = [ROOT / "__init__.py", *sorted((ROOT / "nodes").glob("*.py")), ROOT / "dlgsanet_spandrel.py"]
# What the entry point and nodes may import absolutely: the standard library bits they use, torch,
# and ComfyUI's own modules. Everything of ours is relative.
ALLOWED_ABSOLUTE = {"__future__", "importlib.util", "logging", "os", "zipfile", "pathlib", "typing", "torch",
                    "dataclasses", "folder_paths", "comfy", "comfy.utils", "comfy.model_management",
                    "comfy_api.v0_0_2"}
NODE_IDS = {"DLGSANetModelLoader", "DLGSANetUpscale", "DLGSANetTiledUpscale"}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_only_relative_imports_of_our_code():
    for path in PACK_FILES:
        if path.name == "dlgsanet_spandrel.py":
            continue  # checked below: spandrel only inside functions, none of our code
        for line, name in absolute_imports(path):
            assert name in ALLOWED_ABSOLUTE, f"{path.relative_to(ROOT)}:{line} imports {name} absolutely"


def test_spandrel_is_imported_only_inside_functions():
    """And the adapter imports none of our code: each host passes the package's functions in."""
    tree = _tree(ROOT / "dlgsanet_spandrel.py")
    for node in tree.body:  # module level
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            assert not any(m.split(".")[0] == "spandrel" for m in mods)
    for node in ast.walk(tree):  # anywhere
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0 and (node.module or "").split(".")[0] != "dlgsanet", node.lineno
        elif isinstance(node, ast.Import):
            assert all(a.name.split(".")[0] != "dlgsanet" for a in node.names), node.lineno


def test_no_eval_exec_pip_subprocess_or_sys_path_edits():
    for path in PACK_FILES + sorted((ROOT / "dlgsanet").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in ("eval", "exec"), f"{path}:{node.lineno}"
            if isinstance(node, ast.Attribute) and node.attr in ("insert", "append") and \
                    isinstance(node.value, ast.Attribute) and node.value.attr == "path" and \
                    isinstance(node.value.value, ast.Name) and node.value.value.id == "sys":
                raise AssertionError(f"{path}:{node.lineno} edits sys.path")
        if path in PACK_FILES:
            assert "subprocess" not in text and not re.search(r"\bpip\b", text), path


@pytest.mark.parametrize("api", ["v3", "v1"])
def test_pack_loads_under_any_folder_name(tmp_path, api):
    folder = tmp_path / "custom_nodes" / "My DLGSANet pack.v1.2"
    pack = ch.linked_pack(folder, api)
    assert pack.__name__ == str(folder).replace(".", "_x_")
    classes, _names, registered_as = ch.registered_nodes(pack)
    assert registered_as == api and set(classes) == NODE_IDS
    for cls in classes.values():
        assert cls.__module__ == f"{pack.__name__}.nodes.{api}"
    loader = sys.modules[pack.__name__ + ".nodes.loader"]
    for path in loader.bundled_models().values():  # found from the pack's own location
        assert path.resolve() == (folder / "dlgsanet" / "weights" / path.name).resolve()


def test_v3_only_with_every_name_the_nodes_use(tmp_path, monkeypatch):
    """A comfy_api.v0_0_2 whose io lacks something the V3 nodes use (``Custom`` here) means V1."""
    from comfy_api.v0_0_2 import io

    monkeypatch.delattr(io, "Custom")
    pack = ch.linked_pack(tmp_path / "custom_nodes" / "pack", "v3")
    assert ch.registered_nodes(pack)[2] == "v1" and not hasattr(pack, "comfy_entrypoint")


def test_the_v1_api_can_be_asked_for(tmp_path, monkeypatch):
    """``DLGSANET_COMFY_NODE_API=v1`` keeps the legacy nodes although the V3 API is there."""
    monkeypatch.setenv("DLGSANET_COMFY_NODE_API", "V1")
    pack = ch.linked_pack(tmp_path / "custom_nodes" / "pack", "v3")
    classes, _names, api = ch.registered_nodes(pack)
    assert api == "v1" and set(classes) == NODE_IDS and not hasattr(pack, "comfy_entrypoint")


def test_a_broken_comfy_api_costs_nothing_but_v3(tmp_path, monkeypatch, caplog):
    """comfy_api.v0_0_2 raising something other than ImportError: V1 nodes and one warning."""
    class Broken(types.ModuleType):
        def __getattr__(self, name):
            raise RuntimeError("comfy_api is broken (injected)")

    monkeypatch.setitem(sys.modules, "comfy_api.v0_0_2", Broken("comfy_api.v0_0_2"))
    with caplog.at_level(logging.WARNING, logger="DLGSANet"):
        pack = ch.linked_pack(tmp_path / "custom_nodes" / "pack", "v3")
    classes, _names, api = ch.registered_nodes(pack)
    assert api == "v1" and set(classes) == NODE_IDS
    assert any("comfy_api.v0_0_2 unusable" in r.getMessage() and "injected" in r.getMessage()
               for r in caplog.records)


def test_outside_comfyui_the_entry_point_exports_nothing(tmp_path, monkeypatch):
    """Without ``folder_paths`` (pytest, another host) importing the pack defines no node API."""
    monkeypatch.setitem(sys.modules, "folder_paths", None)  # find_spec("folder_paths") -> None
    pack = ch.linked_pack(tmp_path / "elsewhere" / "pack", "v3")
    assert not hasattr(pack, "NODE_CLASS_MAPPINGS") and not hasattr(pack, "comfy_entrypoint")
    assert pack.__all__ == []


def test_pack_loads_without_spandrel(tmp_path, monkeypatch):
    """spandrel is optional: without it the nodes still load (only the built-in-loader bridge is off)."""
    monkeypatch.setitem(sys.modules, "spandrel", None)  # makes `import spandrel` raise ImportError
    folder = tmp_path / "custom_nodes" / "no-spandrel"
    folder.parent.mkdir()
    folder.symlink_to(ROOT, target_is_directory=True)
    pack = ch.load_pack(folder)
    assert set(ch.registered_nodes(pack)[0]) == NODE_IDS
    ours = sys.modules[pack.__name__ + ".dlgsanet"]
    adapter = sys.modules[pack.__name__ + ".dlgsanet_spandrel"]
    assert adapter.register(ours.is_dlgsanet_state_dict, ours.model_from_state_dict) is False
