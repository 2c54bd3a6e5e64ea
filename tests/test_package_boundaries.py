"""The dependency direction: ``dlgsanet/`` knows nothing of the hosts; adapters depend on it.

``nodes/`` (ComfyUI), ``scripts/`` (A1111/Forge) and the root's ``dlgsanet_spandrel.py`` adapt the
package to its hosts. No module of the package may import a host or host-side library, at module
level or inside a function, so it runs unchanged in any of them and on its own.
"""
from __future__ import annotations

from conftest import REPO_ROOT
from core_helpers import absolute_imports

#: Top-level modules of the hosts and of host-side loaders (ComfyUI, A1111/Forge, spandrel).
HOST_MODULES = {"folder_paths", "comfy", "comfy_api", "comfy_extras", "nodes", "server", "execution", "modules",
                "modules_forge", "ldm_patched", "launch", "webui", "spandrel", "spandrel_extra_arches",
                "dlgsanet_spandrel", "dlgsanet_webui"}


def test_the_package_imports_no_host_module() -> None:
    offenders = [f"{path.relative_to(REPO_ROOT)}:{line} {name}"
                 for path in sorted((REPO_ROOT / "dlgsanet").rglob("*.py"))
                 for line, name in absolute_imports(path) if name.split(".")[0] in HOST_MODULES]
    assert not offenders, "dlgsanet/ must stay host-independent: " + ", ".join(offenders)


def test_the_wheel_lists_every_subpackage_of_dlgsanet() -> None:
    """pyproject.toml names the packages one by one (so the host adapters stay out of the wheel):
    a new subpackage missing there would install a dlgsanet that cannot import itself."""
    import tomllib

    listed = set(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO_ROOT).parts) for p in (REPO_ROOT / "dlgsanet").rglob("__init__.py")}
    assert found - listed == set(), f"add these to [tool.setuptools] packages: {sorted(found - listed)}"
    assert not any(name.startswith(("dlgsanet_webui", "nodes", "scripts")) for name in listed)
