"""The dependency direction: ``dlgsanet/`` knows nothing of the hosts; adapters depend on it.

``nodes/`` (ComfyUI), ``scripts/`` (A1111/Forge) and the root's ``dlgsanet_spandrel.py`` adapt the
package to its hosts. No module of the package may import a host or host-side library, at module
level or inside a function, so it runs unchanged in any of them and on its own.
"""
from __future__ import annotations

import ast

from conftest import REPO_ROOT

#: Top-level modules of the hosts and of host-side loaders (ComfyUI, A1111/Forge, spandrel).
HOST_MODULES = {"folder_paths", "comfy", "comfy_extras", "nodes", "server", "execution", "modules", "modules_forge",
                "ldm_patched", "launch", "webui", "spandrel", "spandrel_extra_arches", "dlgsanet_spandrel"}


def test_the_package_imports_no_host_module() -> None:
    offenders = []
    for path in sorted((REPO_ROOT / "dlgsanet").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            offenders += [f"{path.relative_to(REPO_ROOT)}:{node.lineno} {n}" for n in names
                          if n.split(".")[0] in HOST_MODULES]
    assert not offenders, "dlgsanet/ must stay host-independent: " + ", ".join(offenders)
