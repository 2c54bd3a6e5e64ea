"""The spandrel architecture tests again, under spandrel 0.3.4 (the A1111 1.10 / Forge pin).

0.3.4's ``ArchRegistry.add`` has no ``ignore_duplicates`` and raises a plain ``ValueError``;
several architecture classes have other names. ``tests/test_comfy_spandrel.py`` runs again with
this pytest's Python and the folder that ``setup_spandrel034.sh`` filled with spandrel 0.3.4 alone
first on ``PYTHONPATH``: 0.3.4 shadows the installed 0.4.x, everything else is this environment's.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

from integration_env import PYTHON, cache_dir, not_prepared  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE = cache_dir("DLGSANET_SPANDREL034_CACHE", "spandrel-0.3.4")
SITE = CACHE / "site"  # spandrel 0.3.4 alone (pip install --no-deps --target)

if not (CACHE / "READY").is_file() or not (SITE / "spandrel").is_dir():
    not_prepared(f"spandrel 0.3.4 not prepared at {CACHE}: run "
                 "tests/integration/setup_spandrel034.sh (setup_comfyui.sh runs it)")


def test_spandrel_architecture_under_spandrel_0_3_4():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join([str(SITE), str(REPO_ROOT)])
    proc = subprocess.run(
        [str(PYTHON), "-m", "pytest", "tests/test_comfy_spandrel.py", "-q", "-s", "-p", "no:cacheprovider",
         "-W", "ignore::UserWarning"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    print(output[-3000:])
    assert "spandrel 0.3.4" in output, output[-3000:]
    assert proc.returncode == 0, output[-6000:]
    assert " passed" in output and " failed" not in output
