"""The pack as ComfyUI, ComfyUI-Manager and the Comfy Registry see it.

- imported under any folder name (Manager installs into the registry id, git into the repo name);
- only relative imports inside the pack (ComfyUI puts its own ``comfy/`` first on sys.path);
- no eval/exec, no pip or subprocess at run time, no sys.path edits (Registry standards);
- ``pyproject.toml`` valid for the Registry.
"""
from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import comfy_helpers as ch
from core_helpers import absolute_imports

ROOT = ch.REPO_ROOT
PACK_FILES = [ROOT / "__init__.py", *sorted((ROOT / "nodes").glob("*.py")), ROOT / "dlgsanet_spandrel.py"]
# What the entry point and nodes may import absolutely: the standard library bits they use, torch,
# and ComfyUI's own modules. Everything of ours is relative.
ALLOWED_ABSOLUTE = {"__future__", "importlib.util", "logging", "os", "zipfile", "pathlib", "typing", "torch",
                    "folder_paths", "comfy", "comfy.utils", "comfy.model_management"}


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


def test_pack_loads_under_any_folder_name(tmp_path):
    folder = tmp_path / "custom_nodes" / "My DLGSANet pack.v1.2"
    folder.parent.mkdir()
    folder.symlink_to(ROOT, target_is_directory=True)
    pack = ch.load_pack(folder)
    assert pack.__name__ == str(folder).replace(".", "_x_")
    assert set(pack.NODE_CLASS_MAPPINGS) == {"DLGSANetModelLoader", "DLGSANetUpscale", "DLGSANetTiledUpscale"}
    for cls in pack.NODE_CLASS_MAPPINGS.values():
        assert cls.__module__.startswith(pack.__name__ + ".nodes.")
    loader = sys.modules[pack.__name__ + ".nodes.loader"]
    for path in loader.bundled_models().values():  # found from the pack's own location
        assert path.resolve() == (folder / "dlgsanet" / "weights" / path.name).resolve()


def test_pyproject_is_valid_for_the_comfy_registry():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    project, comfy = data["project"], data["tool"]["comfy"]
    name = project["name"]
    assert len(name) < 100 and re.fullmatch(r"[A-Za-z][A-Za-z0-9._-]*", name)
    assert not re.search(r"[._-]{2}", name) and "comfyui" not in name.lower()
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert project["urls"]["Repository"].startswith("https://")
    assert isinstance(project.get("license"), dict)
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", comfy["PublisherId"])
    assert comfy["DisplayName"].strip()
    assert re.fullmatch(r"(>=|==|~=|>|<=|<)\s*\d+\.\d+(\.\d+)?", comfy["requires-comfyui"])
    accel = [c for c in project.get("classifiers", []) if c.startswith("Environment ::")]
    assert all(re.fullmatch(r"Environment :: (GPU :: (NVIDIA CUDA|AMD ROCm|Intel Arc|Apple Metal)|"
                            r"NPU :: Huawei Ascend)", c) for c in accel), accel


def test_pack_loads_without_spandrel(tmp_path, monkeypatch):
    """spandrel is optional: without it the nodes still load (only the built-in-loader bridge is off)."""
    monkeypatch.setitem(sys.modules, "spandrel", None)  # makes `import spandrel` raise ImportError
    folder = tmp_path / "custom_nodes" / "no-spandrel"
    folder.parent.mkdir()
    folder.symlink_to(ROOT, target_is_directory=True)
    pack = ch.load_pack(folder)
    assert len(pack.NODE_CLASS_MAPPINGS) == 3
    ours = sys.modules[pack.__name__ + ".dlgsanet"]
    adapter = sys.modules[pack.__name__ + ".dlgsanet_spandrel"]
    assert adapter.register(ours.is_dlgsanet_state_dict, ours.model_from_state_dict) is False
