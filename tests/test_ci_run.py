"""``.ci/run`` runs README's test command, in a virtual environment of its own.

Why: README's second "Quick start" command is what a user runs and what CI must prove. CI once
passed only because its machine kept an environment from earlier runs, while the command failed in
a fresh venv. ``.ci/run`` reads the command out of README.md (so they cannot drift) and runs it in a
venv it makes and deletes; these tests hold it to that, and to failing when the command fails.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CI_RUN = REPO_ROOT / ".ci" / "run"


def _quick_start_bash_blocks(readme: str) -> list[str]:
    """The ```bash blocks of README's "## Quick start" section, in order."""
    section = re.search(r"^## Quick start\n(.*?)(?=^## |\Z)", readme, flags=re.M | re.S)
    assert section, "README.md has no '## Quick start' section"
    return [b.strip() for b in re.findall(r"^```bash\n(.*?)^```", section.group(1), flags=re.M | re.S)]


def _ci_run(*args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CI_RUN), *args], capture_output=True, text=True, timeout=timeout)


def test_ci_run_runs_the_readme_test_command():
    blocks = _quick_start_bash_blocks((REPO_ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 2, blocks
    proc = _ci_run("--print-command")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == blocks[1]
    # The command installs the test tools, prepares the integration tests and runs the whole suite.
    command = blocks[1]
    assert '-e ".[test]"' in command and "tests/integration/setup_comfyui.sh" in command
    assert command.endswith("python -m pytest"), command
    # .ci/run itself names no other test command to run instead.
    code = [line for line in CI_RUN.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in code if "pytest" in line], code


def test_ci_run_refuses_a_readme_without_the_command(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n## Quick start\n\n```bash\npip install .\n```\n\n## Install\n\n```bash\nmake\n```\n")
    proc = _ci_run("--readme", str(readme))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "second bash block" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_ci_run_uses_a_fresh_venv_and_fails_when_the_command_fails(tmp_path):
    report = tmp_path / "report.txt"
    check = (
        "import importlib.util, os, sys; "
        "assert sys.prefix != sys.base_prefix, 'not in a venv'; "
        "assert importlib.util.find_spec('torch') is None, 'the venv sees packages it did not install'; "
        "assert os.environ['DLGSANET_REQUIRE_INTEGRATION'] == '1'; "
        "caches = [os.environ[k] for k in ('DLGSANET_COMFYUI_CACHE', 'DLGSANET_SPANDREL034_CACHE', 'DLGSANET_CACHE_DIR')]; "
        "root = os.path.dirname(sys.prefix); "
        "assert all(c.startswith(root + os.sep) for c in caches), (root, caches); "
        f"open({str(report)!r}, 'w').write(sys.prefix)"
    )
    readme = tmp_path / "README.md"
    readme.write_text(
        "# x\n\n## Quick start\n\n```bash\npip install .\n```\n\ntext\n\n"
        f"```bash\npython -c \"{check}\" && exit 3\n```\n\n## Install\n")
    proc = _ci_run("--readme", str(readme), timeout=300)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    prefix = Path(report.read_text())
    assert prefix.name == "venv" and prefix.parent.name.startswith("dlgsanet-ci.")
    assert not prefix.parent.exists(), "the run's venv and caches were not deleted"
    assert sys.prefix != str(prefix)


@pytest.mark.parametrize("required", [False, True])
def test_unprepared_integration_tests_skip_unless_ci_requires_them(tmp_path, required):
    """Outside CI an unprepared integration test skips with the set-up command; under .ci/run's
    DLGSANET_REQUIRE_INTEGRATION=1 it fails, so a missing install step cannot pass as a skip."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DLGSANET_REQUIRE"))}
    env.update(DLGSANET_SPANDREL034_CACHE=str(tmp_path / "none"), DLGSANET_COMFYUI_CACHE=str(tmp_path / "none"))
    if required:
        env["DLGSANET_REQUIRE_INTEGRATION"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
         "tests/integration/test_spandrel_034.py", "tests/integration/test_comfyui_real.py"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert out.count("setup_spandrel034.sh") >= 1 and out.count("setup_comfyui.sh") >= 1, out
    if required:
        assert proc.returncode != 0 and "2 errors" in out, out
    else:
        assert proc.returncode in (0, 5) and "2 skipped" in out, out  # 5: both modules skipped whole
