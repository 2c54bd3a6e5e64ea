"""The spandrel architecture tests again, under spandrel 0.3.4 (the A1111 1.10 / Forge pin).

0.3.4's ``ArchRegistry.add`` has no ``ignore_duplicates`` and raises a plain ``ValueError``;
several architecture classes have other names. ``tests/test_comfy_spandrel.py`` runs in a
virtual environment prepared by ``setup_spandrel034.sh`` (system packages plus spandrel 0.3.4).
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("DLGSANET_SPANDREL034_CACHE",
                            Path.home() / ".cache" / "dlgsanet-ci" / "spandrel-0.3.4"))
PYTHON = CACHE / "venv" / "bin" / "python"

if not (CACHE / "READY").is_file():
    pytest.skip(f"spandrel 0.3.4 environment not prepared at {CACHE}: run "
                f"tests/integration/setup_spandrel034.sh (setup_comfyui.sh runs it)", allow_module_level=True)


def test_spandrel_architecture_under_spandrel_0_3_4():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    proc = subprocess.run(
        [str(PYTHON), "-m", "pytest", "tests/test_comfy_spandrel.py", "-q", "-s", "-p", "no:cacheprovider",
         "-W", "ignore::UserWarning"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    print(output[-3000:])
    assert "spandrel 0.3.4" in output, output[-3000:]
    assert proc.returncode == 0, output[-6000:]
    assert " passed" in output and " failed" not in output
