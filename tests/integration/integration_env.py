"""Where the integration tests find what ``tests/integration/setup_*.sh`` prepared.

Why one place: the hosts run with the Python that runs pytest (``sys.executable``), so they share
its torch; the set-up scripts add what is missing to that environment (ComfyUI's requirements) or
to a folder beside it (spandrel 0.3.4), and never make a second environment, which would see
another interpreter's packages. When the preparation is absent a test skips and says which script
to run, except under ``DLGSANET_REQUIRE_INTEGRATION=1`` (set by ``.ci/run``), where it fails:
in CI a missing install step must not pass as a skip.
"""
from __future__ import annotations

import os
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import List, NoReturn

import pytest
from packaging.requirements import InvalidRequirement, Requirement

REQUIRE_ENV_VAR = "DLGSANET_REQUIRE_INTEGRATION"
PYTHON = Path(sys.executable)  # the hosts run with this Python, in this environment


def cache_dir(env_var: str, name: str) -> Path:
    """``$env_var``, else ``~/.cache/dlgsanet-ci/<name>`` (the set-up scripts' default)."""
    return Path(os.environ.get(env_var) or Path.home() / ".cache" / "dlgsanet-ci" / name)


def not_prepared(reason: str) -> NoReturn:
    """Skip the calling test module with ``reason``; fail it instead when integration is required."""
    if os.environ.get(REQUIRE_ENV_VAR) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV_VAR}=1: integration tests must run here)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def missing_requirements(requirements: Path) -> List[str]:
    """Lines of a requirements file that this Python's environment does not satisfy."""
    missing = []
    for line in requirements.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement:
            missing.append(f"{line} (cannot be parsed)")
            continue
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            found = version(req.name)
        except PackageNotFoundError:
            missing.append(f"{req.name} (not installed)")
            continue
        if req.specifier and not req.specifier.contains(found, prereleases=True):
            missing.append(f"{line} (found {found})")
    return missing
