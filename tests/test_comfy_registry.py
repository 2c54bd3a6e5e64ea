"""Comfy Registry readiness: pyproject.toml as the Registry's publishing tool reads it, and the
published archive (git-tracked files less .comfyignore) as ComfyUI's governance check sees it.

The rules are those of comfy-cli 1.23.0 (``comfy node validate`` / ``comfy node publish``:
``registry/config_parser.py`` for the fields, ``file_utils.zip_files`` for the archive, a ruff
run for exec/eval/";" statements) and of the Registry's specification page (node id, semver,
icon limits). comfy-cli only prints a warning and then publishes *without* a field it does not
accept (no OS list, no accelerators, no ComfyUI range), so each of those is an error here.
"""
from __future__ import annotations

import ast
import fnmatch
import io
import re
import subprocess
import tokenize
import tomllib
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
COMFY = PYPROJECT["tool"]["comfy"]

#: [tool.comfy] keys comfy-cli reads (anything else, e.g. a mistyped "Publisherid", is ignored).
TOOL_COMFY_KEYS = {"PublisherId", "DisplayName", "Icon", "Banner", "Models", "includes", "web",
                   "requires-comfyui", "version"}
OS_PREFIXES = ("Microsoft", "POSIX", "MacOS", "OS Independent")
ACCELERATORS = {"GPU :: NVIDIA CUDA", "GPU :: AMD ROCm", "GPU :: Intel Arc", "NPU :: Huawei Ascend",
                "GPU :: Apple Metal"}
VERSION_PART = re.compile(r"(?:(==|>=|<=|!=|~=|>|<|<>|=)\s*)?(\d+\.\d+\.\d+(?:-[a-zA-Z0-9]+)?)")
ICON_TYPES = {".svg": None, ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".gif": "GIF"}
RAW_PREFIX = "https://raw.githubusercontent.com/"
#: What ComfyUI needs of the pack at run time: must survive .comfyignore.
RUNTIME = ["__init__.py", "nodes/__init__.py", "nodes/v1.py", "nodes/v3.py", "nodes/specs.py",
           "dlgsanet_spandrel.py", "dlgsanet/__init__.py", "dlgsanet/resample.py", "install.py",
           "requirements.txt", "pyproject.toml", "LICENSE", "kernels/dynamic_dwconv.cu",
           "dlgsanet/weights/dlgsanet_tiny_x4.safetensors", "example_workflows/dlgsanet_tiled_upscale.json"]


# ------------------------------------------------------------------------------------------
# [project] and [tool.comfy]
# ------------------------------------------------------------------------------------------
def test_node_id_follows_the_registry_rules():
    name = PROJECT["name"]
    assert len(name) < 100
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9._-]*", name), "alphanumerics, - _ . only; starts with a letter"
    assert not re.search(r"[._-]{2}", name), "no consecutive special characters"
    assert "comfyui" not in name.lower(), "the Registry advises against 'ComfyUI' in the node id"


def test_version_description_licence_and_repository():
    version = PROJECT["version"]
    assert isinstance(version, str) and re.fullmatch(r"\d+\.\d+\.\d+", version.strip()), version
    assert "version" not in PROJECT.get("dynamic", [])
    assert PROJECT["description"].strip()
    licence = PROJECT["license"]
    if isinstance(licence, dict):  # comfy-cli: {file = ...} or {text = ...}; anything else is dropped
        assert set(licence) & {"file", "text"}, licence
        if "file" in licence:
            assert (ROOT / licence["file"]).is_file()
        else:
            assert licence["text"].strip()
    else:
        assert isinstance(licence, str) and licence.strip()
    urls = PROJECT["urls"]
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", urls["Repository"]), urls["Repository"]
    for key in ("Documentation", "Issues"):
        if key in urls:
            assert urls[key].startswith(urls["Repository"] + "/"), urls[key]


def test_os_and_accelerator_classifiers_are_all_recognised():
    """One classifier comfy-cli does not know empties the whole OS (or accelerator) list."""
    classifiers = PROJECT["classifiers"]
    systems = [c[len("Operating System :: "):] for c in classifiers if c.startswith("Operating System :: ")]
    accelerators = [c[len("Environment :: "):] for c in classifiers if c.startswith("Environment ::")]
    assert systems and all(s.startswith(OS_PREFIXES) for s in systems), systems
    assert accelerators and all(a in ACCELERATORS for a in accelerators), accelerators


def test_requires_comfyui_is_a_version_range_comfy_cli_accepts():
    spec = COMFY["requires-comfyui"]
    parts = [p.strip() for p in spec.split(",")]
    assert parts and all(VERSION_PART.fullmatch(p) for p in parts), spec
    assert all(VERSION_PART.fullmatch(p).group(1) for p in parts), "each part needs an operator"


def test_tool_comfy_publisher_display_name_and_no_unknown_keys():
    assert set(COMFY) <= TOOL_COMFY_KEYS, set(COMFY) - TOOL_COMFY_KEYS
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", COMFY["PublisherId"]), COMFY["PublisherId"]
    assert COMFY["DisplayName"].strip()
    for include in COMFY.get("includes", []):
        assert (ROOT / include.lstrip("/")).exists(), include


def test_icon_is_an_image_of_this_repository_within_the_registry_limits():
    """Icon: a URL to an SVG/PNG/JPG/GIF of at most 800 x 400. Ours is a file of this repository
    on its main branch: it must exist, be tracked, and be what its extension says."""
    url = COMFY["Icon"]
    repo = PROJECT["urls"]["Repository"].removeprefix("https://github.com/")
    prefix = f"{RAW_PREFIX}{repo}/main/"
    assert url.startswith(prefix), f"{url} is not a file of {repo}"
    rel = url[len(prefix):]
    suffix = Path(rel).suffix.lower()
    assert suffix in ICON_TYPES, url
    path = ROOT / rel
    assert path.is_file(), f"{rel} is missing"
    tracked = git_files()
    if tracked is not None:
        assert rel in tracked or rel in untracked_new_files(), f"{rel} is not in git"
    if ICON_TYPES[suffix]:
        with Image.open(path) as im:
            assert im.format == ICON_TYPES[suffix]
            assert im.width <= 800 and im.height <= 400, im.size


# ------------------------------------------------------------------------------------------
# the published archive
# ------------------------------------------------------------------------------------------
def git_files() -> list[str] | None:
    """``git ls-files`` of the repository (what comfy-cli starts from), None outside a git checkout."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return [p for p in out.stdout.decode().split("\0") if p]


def untracked_new_files() -> set[str]:
    """Files not yet committed but not ignored either (they will be tracked once committed)."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--others", "--exclude-standard"],
                             capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return set()
    return {p for p in out.stdout.decode().split("\0") if p}


def comfyignore_patterns() -> list[str]:
    lines = (ROOT / ".comfyignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """gitwildmatch (as pathspec applies it to each file) for the forms .comfyignore uses:
    ``/anchored/``, ``dir/`` (any depth), ``*.ext`` / ``name`` (any path component)."""
    parts = path.split("/")
    for pattern in patterns:
        directory = pattern.endswith("/")  # matches directories only: the file must lie inside
        segments = pattern.strip("/").split("/")
        if pattern.startswith("/") or len(segments) > 1:  # anchored at the root
            k = len(segments)
            if len(parts) >= k + directory and all(fnmatch.fnmatchcase(a, b) for a, b in zip(parts, segments)):
                return True
        elif any(fnmatch.fnmatchcase(c, segments[0]) for c in (parts[:-1] if directory else parts)):
            return True
    return False


def published_files() -> list[str]:
    tracked = git_files()
    if tracked is None:
        pytest.skip("not a git checkout: the published archive is built from git-tracked files")
    patterns = comfyignore_patterns()
    files = sorted(set(tracked) | untracked_new_files())
    return [p for p in files if not ignored(p, patterns)]


def test_the_ignore_matcher_reads_comfyignore_like_gitwildmatch():
    """The matcher above understands every pattern in .comfyignore (no other syntax is used),
    and gives gitwildmatch's answers on paths whose answer is known."""
    for pattern in comfyignore_patterns():
        assert re.fullmatch(r"/?[\w.*-]+(/[\w.*-]+)*/?", pattern) and "**" not in pattern, pattern
    cases = {("tests/test_x.py", "/tests/"): True, ("a/tests/x.py", "/tests/"): False,
             ("a/__pycache__/x.pyc", "__pycache__/"): True, ("x.pyc", "*.pyc"): True,
             ("nodes/v1.py", "*.pyc"): False, ("preload.py", "/preload.py"): True,
             ("dlgsanet/preload.py", "/preload.py"): False, ("tests", "/tests/"): False}
    for (path, pattern), expected in cases.items():
        assert ignored(path, [pattern]) is expected, (path, pattern)


def test_comfyignore_keeps_tests_benchmarks_ci_and_dev_scripts_out():
    files = published_files()
    leaked = [p for p in files if p.split("/")[0] in ("tests", "benchmarks", ".ci")]
    assert not leaked, leaked
    assert not [p for p in files if p.endswith((".sh", ".bat", ".ps1"))], "dev scripts in the archive"
    tracked = set(git_files() or ()) | untracked_new_files()
    assert any(p.startswith("tests/") for p in tracked)  # so the check above checked something


def test_everything_comfyui_needs_is_published():
    files = set(published_files())
    missing = [p for p in RUNTIME if p not in files]
    assert not missing, missing
    assert {p for p in files if p.startswith("dlgsanet/") and p.endswith(".py")} >= {
        p for p in (set(git_files() or ()) | untracked_new_files())
        if p.startswith("dlgsanet/") and p.endswith(".py")}, "part of the package is ignored"


def test_no_bytecode_caches_or_symlinks_are_published():
    """ComfyUI's governance check refuses a pack holding .pyc, __pycache__ or symlinks."""
    files = published_files()
    assert not [p for p in files if p.endswith((".pyc", ".pyo")) or "__pycache__" in p.split("/")]
    links = [p for p in files if (ROOT / p).is_symlink()]
    assert not links, links
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-s"], capture_output=True, text=True, check=True)
    assert not [line for line in out.stdout.splitlines() if line.startswith("120000")], "symlink in git"


def test_published_python_has_no_exec_eval_or_semicolon_statements():
    """comfy-cli's security check: ruff S102 (exec), S307 (eval), E702 (``a; b`` on one line)."""
    for rel in published_files():
        if not rel.endswith(".py"):
            continue
        text = (ROOT / rel).read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(text, filename=rel)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in ("exec", "eval"), f"{rel}:{node.lineno} calls {node.func.id}"
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            assert not (tok.type == tokenize.OP and tok.string == ";"), f"{rel}:{tok.start[0]} uses ';'"
