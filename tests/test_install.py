"""install.py: the plan as a pure function, and real runs of the script that install nothing.

No test here reaches a package registry: the real runs are dry runs, or runs whose plan is empty.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
INSTALL_PY = REPO_ROOT / "install.py"


def _load_install() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dlgsanet_install_hook", INSTALL_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


install = _load_install()
TorchBuild = install.TorchBuild

HOST = {"torch": "2.4.1+cu121", "torchvision": "0.19.1+cu121", "numpy": "1.26.4", "pillow": "10.4.0",
        "safetensors": "0.4.5", "tqdm": "4.66.5"}
REQUIREMENTS = ["numpy", "pillow", "safetensors>=0.4", "tqdm"]


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("COMMANDLINE_ARGS", "DLGSANET_NO_CUPY", "INDEX_URL")}
    env.update(extra)
    return env


def _run(*args: str, env: dict = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(INSTALL_PY), *args], capture_output=True, text=True,
                          env=env or _env(), cwd="/", timeout=120)


# ------------------------------------------------------------------------------------------------
# The plan
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("build,expected", [
    (TorchBuild("2.4.1+cu118", "11.8"), "cupy-cuda11x"),
    (TorchBuild("2.4.1+cu121", "12.1"), "cupy-cuda12x"),
    (TorchBuild("2.9.0+cu128", "12.8"), "cupy-cuda12x"),
    (TorchBuild("2.9.0+cu130", "13.0"), "cupy-cuda13x"),
    (TorchBuild("2.4.1+cpu", None), None),
    (TorchBuild("2.4.1", None), None),  # macOS wheels (MPS) have no CUDA either
    (TorchBuild("2.4.1+rocm6.1", None, "6.1.40091"), None),
    (TorchBuild("1.12.1+cu102", "10.2"), None),
    (TorchBuild(None), None),
])
def test_cupy_follows_torchs_cuda(build: TorchBuild, expected: str) -> None:
    requirement, why = install.cupy_choice(build)
    assert (install.requirement_name(requirement) if requirement else None) == expected
    assert why


def test_cupy_table_is_the_pyproject_extras() -> None:
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for major, requirement in install.CUPY_FOR_CUDA_MAJOR.items():
        assert extras[f"cuda{major}"] == [requirement]


def test_nothing_to_do_when_everything_is_present() -> None:
    plan = install.make_plan(TorchBuild("2.4.1+cu121", "12.1"), dict(HOST, **{"cupy-cuda12x": "13.3.0"}),
                             REQUIREMENTS)
    assert plan.install == [] and plan.warnings == []
    assert plan.constraints == ["torch==2.4.1+cu121", "torchvision==0.19.1+cu121"]


def test_missing_and_unsatisfied_lines_are_installed() -> None:
    host = dict(HOST, safetensors="0.3.1")
    del host["tqdm"]
    plan = install.make_plan(TorchBuild("2.4.1+cpu", None), host, REQUIREMENTS)
    assert plan.install == ["safetensors>=0.4", "tqdm"]
    assert any("0.3.1" in reason for reason in plan.reasons)


def test_torch_is_never_installed_even_if_requirements_name_it() -> None:
    plan = install.make_plan(TorchBuild(None), {}, ["torch>=2.1", "Torchvision", "torchaudio==2.0", "numpy"])
    assert plan.install == ["numpy"]
    assert sum("owns" in note for note in plan.notes) == 3
    assert plan.constraints == []  # nothing to pin: torch is not installed


@pytest.mark.parametrize("build", [TorchBuild("2.4.1+cu121", "12.1"), TorchBuild("2.4.1+cpu", None),
                                   TorchBuild("2.9.0+cu130", "13.0")])
def test_no_plan_ever_touches_host_packages(build: TorchBuild) -> None:
    for installed in ({}, HOST, {"numpy": "1.0"}):
        plan = install.make_plan(build, installed, REQUIREMENTS + ["torch", "torchvision>=0.1"])
        assert not {install.requirement_name(line) for line in plan.install} & set(install.HOST_OWNED)


def test_cupy_is_added_for_a_cuda_torch() -> None:
    plan = install.make_plan(TorchBuild("2.4.1+cu121", "12.1"), HOST, REQUIREMENTS)
    assert plan.install == ["cupy-cuda12x>=13"]


def test_cupy_for_another_cuda_is_reported_not_replaced() -> None:
    plan = install.make_plan(TorchBuild("2.4.1+cu121", "12.1"), dict(HOST, **{"cupy-cuda11x": "12.3.0"}),
                             REQUIREMENTS)
    assert plan.install == []
    assert len(plan.warnings) == 1 and "cupy-cuda11x" in plan.warnings[0] and "uninstall" in plan.warnings[0]


def test_opting_out_of_cupy() -> None:
    plan = install.make_plan(TorchBuild("2.4.1+cu121", "12.1"), HOST, REQUIREMENTS, with_cupy=False)
    assert plan.install == []


def test_requirement_parsing() -> None:
    text = "# comment\n\nnumpy  # inline\n-r other.txt\n--index-url x\nPillow>=9 ; python_version >= '3'\n"
    assert install.parse_requirements(text) == ["numpy", "Pillow>=9 ; python_version >= '3'"]
    assert install.requirement_name("Pillow>=9") == "pillow" and install.requirement_name("a_b.c") == "a-b-c"
    assert install.unmet("pillow>=9 ; python_version < '3'", {}) is None  # marker says: not here


def test_real_requirements_file_has_no_host_packages() -> None:
    lines = install.parse_requirements((REPO_ROOT / "requirements.txt").read_text())
    assert lines and not {install.requirement_name(line) for line in lines} & set(install.HOST_OWNED)


def test_torch_build_is_read_without_importing_torch() -> None:
    code = ("import sys, importlib.util; spec = importlib.util.spec_from_file_location('h', sys.argv[1]); "
            "m = importlib.util.module_from_spec(spec); sys.modules['h'] = m; spec.loader.exec_module(m); "
            "b = m.read_torch_build(); "
            "print(b.version, b.cuda, b.hip, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(INSTALL_PY)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    import torch

    assert out.stdout.split() == [torch.__version__, str(torch.version.cuda), str(torch.version.hip), "False"]


# ------------------------------------------------------------------------------------------------
# The script
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cuda,wheel", [("11.8", "cupy-cuda11x"), ("12.4", "cupy-cuda12x"), ("13.0", "cupy-cuda13x")])
def test_dry_run_prints_the_plan(cuda: str, wheel: str) -> None:
    result = _run("--dry-run", "--cuda", cuda)
    assert result.returncode == 0, result.stderr
    assert "dry run" in result.stdout and wheel in result.stdout
    if f"would install {wheel}" in result.stdout:
        assert "-c" in result.stdout and "torch==" in result.stdout  # the pin goes with every install


def test_dry_run_without_cuda_installs_no_cupy() -> None:
    result = _run("--dry-run", "--cuda", "none")
    assert result.returncode == 0
    assert "cupy-cuda" not in result.stdout and "has no CUDA" in result.stdout


def test_quiet_and_quick_when_everything_is_present(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy\npytest\n")  # both installed here
    start = time.perf_counter()
    result = _run("--requirements", str(requirements), "--no-cupy")
    elapsed = time.perf_counter() - start
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""
    assert elapsed < 30  # generous for a loaded CI machine; typically well under a second


def test_failure_is_a_message_and_exit_status_zero(tmp_path: Path) -> None:
    result = _run("--requirements", str(tmp_path / "missing.txt"))
    assert result.returncode == 0
    assert "install step failed" in result.stdout


def test_a1111_skip_install_in_commandline_args() -> None:
    result = _run("--dry-run", env=_env(COMMANDLINE_ARGS="--xformers --skip-install"))
    assert result.returncode == 0 and "--skip-install is set" in result.stdout


def test_a1111_skip_install_through_launch_module(tmp_path: Path) -> None:
    """A1111 runs install.py with its root on PYTHONPATH; ``launch.args`` is its parsed command line."""
    webui = tmp_path / "webui"
    (webui / "modules").mkdir(parents=True)
    # Stand-in for stable-diffusion-webui/modules/launch_utils.py, whose module-level
    # `args, _ = cmd_args.parser.parse_known_args()` carries `skip_install`; launch.py re-exports it.
    (webui / "modules" / "launch_utils.py").write_text(
        "import argparse\nargs = argparse.Namespace(skip_install=True)\n")
    (webui / "launch.py").write_text("from modules.launch_utils import args\n")
    (webui / "modules" / "__init__.py").write_text("")
    result = _run("--dry-run", env=_env(PYTHONPATH=str(webui)))
    assert result.returncode == 0 and "--skip-install is set" in result.stdout
    (webui / "modules" / "launch_utils.py").write_text(
        "import argparse\nargs = argparse.Namespace(skip_install=False)\n")
    result = _run("--dry-run", env=_env(PYTHONPATH=str(webui)))
    assert "--skip-install" not in result.stdout and "dry run" in result.stdout


def test_unrelated_launch_module_is_not_imported(tmp_path: Path) -> None:
    (tmp_path / "launch.py").write_text("raise SystemExit('imported!')\n")
    result = _run("--dry-run", env=_env(PYTHONPATH=str(tmp_path)))
    assert result.returncode == 0 and "dry run" in result.stdout
