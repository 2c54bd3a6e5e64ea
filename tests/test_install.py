"""install.py: the plan as a pure function, and real runs of the script that install nothing.

No test here reaches a package registry: the real runs are dry runs, or runs whose plan is empty
(``tests/integration/test_install_venv.py`` installs into a throwaway environment).
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


DRIVER = "/proc/driver/nvidia/version"  # what find_nvidia_driver reports when it finds the kernel module


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("COMMANDLINE_ARGS", "DLGSANET_NO_CUPY", "DLGSANET_FORCE_CUPY", "INDEX_URL")}
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
    host = dict(HOST, **{"cupy-cuda12x": "13.3.0"})
    plan = install.make_plan(TorchBuild("2.4.1+cu121", "12.1"), host, REQUIREMENTS, driver=DRIVER)
    assert plan.install == [] and plan.cupy is None and plan.messages == []
    assert sorted(plan.constraints) == sorted(f"{name}=={version}" for name, version in host.items())


def test_every_installed_distribution_is_pinned() -> None:
    """Not only torch: numpy, pillow, ... and pip itself, under normalised names; a version pip cannot
    read would make it refuse the whole constraints file, so such a line is left out."""
    host = dict(HOST, **{"Some_Pkg.Name": "2.0.post1", "odd": "not a version!", "pip": "23.2.1"})
    plan = install.make_plan(TorchBuild("2.4.1+cu121", "12.1"), host, REQUIREMENTS)
    expected = {f"{install.normalize(name)}=={version}" for name, version in host.items() if name != "odd"}
    assert set(plan.constraints) == expected and len(plan.constraints) == len(expected)


def test_missing_lines_are_installed_unsatisfied_ones_are_reported() -> None:
    """An installed package that does not meet a requirement line is the host's: reported, not upgraded."""
    host = dict(HOST, safetensors="0.3.1")
    del host["tqdm"]
    plan = install.make_plan(TorchBuild("2.4.1+cpu", None), host, REQUIREMENTS)
    assert plan.install == ["tqdm"]
    assert len(plan.messages) == 1
    assert "safetensors 0.3.1" in plan.messages[0] and "safetensors>=0.4" in plan.messages[0]


def test_torch_is_never_installed_even_if_requirements_name_it() -> None:
    plan = install.make_plan(TorchBuild(None), {}, ["torch>=2.1", "Torchvision", "torchaudio==2.0", "numpy"])
    assert plan.install == ["numpy"]
    assert sum("owns" in note for note in plan.notes) == 3
    assert plan.constraints == []  # nothing to pin: torch is not installed


@pytest.mark.parametrize("build", [TorchBuild("2.4.1+cu121", "12.1"), TorchBuild("2.4.1+cpu", None),
                                   TorchBuild("2.9.0+cu130", "13.0")])
def test_no_plan_ever_touches_installed_packages(build: TorchBuild) -> None:
    for installed in ({}, HOST, {"numpy": "1.0"}, dict(HOST, numpy="1.0", safetensors="0.1")):
        for driver in (None, DRIVER):
            plan = install.make_plan(build, installed, REQUIREMENTS + ["torch", "torchvision>=0.1"], driver=driver)
            names = {install.requirement_name(line) for line in plan.install + [plan.cupy or "x"]}
            assert not names & (set(install.HOST_OWNED) | set(installed))


def test_cupy_is_chosen_for_a_cuda_torch_with_a_driver() -> None:
    plan = install.make_plan(TorchBuild("2.4.1+cu121", "12.1"), HOST, REQUIREMENTS, driver=DRIVER)
    assert plan.install == [] and plan.cupy == "cupy-cuda12x>=13"
    assert DRIVER in plan.cupy_reason


def test_no_driver_no_cupy_unless_forced() -> None:
    """The default Linux torch wheel is a CUDA build, also on machines without an NVIDIA GPU."""
    plan = install.make_plan(TorchBuild("2.14.1+cu130", "13.0"), HOST, REQUIREMENTS, driver=None)
    assert plan.cupy is None and len(plan.messages) == 1
    assert "no NVIDIA driver" in plan.messages[0] and "DLGSANET_FORCE_CUPY=1" in plan.messages[0]
    forced = install.make_plan(TorchBuild("2.14.1+cu130", "13.0"), HOST, REQUIREMENTS, driver=None, force_cupy=True)
    assert forced.cupy == "cupy-cuda13x>=13.6" and forced.messages == []
    opted_out = install.make_plan(TorchBuild("2.14.1+cu130", "13.0"), HOST, REQUIREMENTS, with_cupy=False,
                                  force_cupy=True)
    assert opted_out.cupy is None and opted_out.messages == []  # DLGSANET_NO_CUPY wins


def test_cupy_for_another_cuda_is_reported_not_replaced() -> None:
    plan = install.make_plan(TorchBuild("2.4.1+cu121", "12.1"), dict(HOST, **{"cupy-cuda11x": "12.3.0"}),
                             REQUIREMENTS, driver=DRIVER)
    assert plan.install == [] and plan.cupy is None
    assert len(plan.messages) == 1 and "cupy-cuda11x" in plan.messages[0] and "uninstall" in plan.messages[0]


def test_installed_cupy_that_cannot_import_is_reported_as_such() -> None:
    error = "ImportError: numpy.core.multiarray failed to import"  # cupy 14 (numpy 2) under numpy 1.26
    host = dict(HOST, numpy="1.26.2", **{"cupy-cuda13x": "14.2.0"})
    plan = install.make_plan(TorchBuild("2.14.1+cu130", "13.0"), host, REQUIREMENTS, driver=DRIVER,
                             cupy_import_error=error)
    assert plan.install == [] and plan.cupy is None and len(plan.messages) == 1
    line = plan.messages[0]
    assert "cupy-cuda13x 14.2.0 is installed but cannot be imported" in line and error in line
    assert "numpy 1.26.2" in line and "uninstall" in line and "not installed" not in line
    fine = install.make_plan(TorchBuild("2.14.1+cu130", "13.0"), host, REQUIREMENTS, driver=DRIVER)
    assert fine.messages == [] and fine.cupy is None


def test_opting_out_of_cupy() -> None:
    plan = install.make_plan(TorchBuild("2.4.1+cu121", "12.1"), HOST, REQUIREMENTS, with_cupy=False, driver=DRIVER)
    assert plan.install == [] and plan.cupy is None


# ------------------------------------------------------------------------------------------------
# Where an NVIDIA driver shows itself
# ------------------------------------------------------------------------------------------------
def test_driver_signs(tmp_path: Path) -> None:
    never = {"which": lambda name: None, "loadable": lambda name: False}
    assert install.find_nvidia_driver(tmp_path, "linux", **never) is None
    (tmp_path / "driver" / "nvidia").mkdir(parents=True)
    (tmp_path / "driver" / "nvidia" / "version").write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.95\n")
    assert install.find_nvidia_driver(tmp_path, "linux", **never) == str(tmp_path / "driver" / "nvidia" / "version")
    empty = tmp_path / "empty"
    empty.mkdir()
    loaded = []
    assert "libcuda.so.1" in install.find_nvidia_driver(
        empty, "linux", which=lambda name: None, loadable=lambda name: loaded.append(name) or name == "libcuda.so.1")
    assert install.find_nvidia_driver(empty, "linux", which=lambda name: "/usr/bin/nvidia-smi",
                                      loadable=lambda name: False) == "/usr/bin/nvidia-smi"
    assert "nvcuda.dll" in install.find_nvidia_driver(empty, "win32", which=lambda name: None,
                                                      loadable=lambda name: name == "nvcuda.dll")
    assert install.find_nvidia_driver(tmp_path, "darwin", which=lambda name: "/x/nvidia-smi",
                                      loadable=lambda name: True) is None


# ------------------------------------------------------------------------------------------------
# Reading pip's answers
# ------------------------------------------------------------------------------------------------
# What pip 23.2.1 printed for `pip install --dry-run -c constraints "cupy-cuda13x>=13.6"` with numpy
# pinned at 1.21.6 (recorded from a real run against the package registry, Dec 2026).
PIP_CONFLICT = """\
INFO: pip is looking at multiple versions of cupy-cuda13x to determine which version is compatible with other requirements. This could take a while.
ERROR: Cannot install cupy-cuda13x==13.6.0, cupy-cuda13x==14.0.0, cupy-cuda13x==14.0.1, cupy-cuda13x==14.1.0, cupy-cuda13x==14.1.1 and cupy-cuda13x==14.2.0 because these package versions have conflicting dependencies.

The conflict is caused by:
    cupy-cuda13x 14.2.0 depends on numpy<2.6 and >=2.0
    cupy-cuda13x 14.1.1 depends on numpy<2.6 and >=2.0
    cupy-cuda13x 14.1.0 depends on numpy<2.6 and >=2.0
    cupy-cuda13x 14.0.1 depends on numpy<2.6 and >=2.0
    cupy-cuda13x 14.0.0 depends on numpy<2.6 and >=2.0
    cupy-cuda13x 13.6.0 depends on numpy<2.6 and >=1.22
    The user requested (constraint) numpy==1.21.6

To fix this you could try to:
1. loosen the range of package versions you've specified
2. remove package versions to allow pip attempt to solve the dependency conflict

ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/#dealing-with-dependency-conflicts
"""


def test_no_fit_is_one_line_naming_the_blocker_and_what_would_work() -> None:
    line = install.no_fit_message("cupy-cuda13x>=13.6", PIP_CONFLICT, {"numpy": "1.21.6"})
    assert "\n" not in line and line.startswith("cupy-cuda13x not installed")
    assert "numpy 1.21.6 is installed" in line
    assert "14.0.0 to 14.2.0 need numpy<2.6,>=2.0" in line and "13.6.0 needs numpy<2.6,>=1.22" in line
    assert "DLGSANET_NO_CUPY=1" in line
    unknown = install.no_fit_message("cupy-cuda13x>=13.6", "ERROR: ResolutionImpossible: something new", {})
    assert "\n" not in unknown and "no release fits" in unknown and "something new" in unknown
    offline = install.no_fit_message("cupy-cuda13x>=13.6", "WARNING: Retrying ...\nERROR: Could not find a version "
                                     "that satisfies the requirement cupy-cuda13x>=13.6 (from versions: none)\n", {})
    assert "\n" not in offline and "Could not find a version" in offline


def test_report_additions() -> None:
    """``pip install --dry-run --report`` lists what it would install; an installed name there is a change."""
    report = {"install": [{"metadata": {"name": "cupy-cuda13x", "version": "13.6.0"}},
                          {"metadata": {"name": "fastrlock", "version": "0.8.4"}},
                          {"metadata": {"name": "NumPy", "version": "2.4.6"}}]}
    added, changed = install.report_additions(report, {"numpy": "1.26.2"})
    assert added == [("cupy-cuda13x", "13.6.0"), ("fastrlock", "0.8.4")]
    assert changed == ["numpy 1.26.2 -> 2.4.6"]


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
    assert "dry run" in result.stdout and wheel in result.stdout and "NVIDIA driver:" in result.stdout
    if f"would install the newest {wheel}" in result.stdout:
        assert "-c" in result.stdout and "torch==" in result.stdout  # the pins go with every install


def test_cuda_torch_without_driver_says_so_and_asks_no_registry() -> None:
    """This machine's torch is a CUDA build; without a driver nothing is resolved or installed."""
    import torch

    if not torch.version.cuda or install.find_nvidia_driver():
        pytest.skip(f"needs a CUDA build of torch (have {torch.__version__}) and no NVIDIA driver "
                    f"(found: {install.find_nvidia_driver()})")
    start = time.perf_counter()
    result = _run("--requirements", os.devnull)
    assert result.returncode == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    if any("cupy-cuda" in line and "installed" in line and "driver" not in line for line in lines):
        pytest.skip(f"a cupy is already installed here: {lines}")
    assert len(lines) == 1 and "no NVIDIA driver" in lines[0] and "DLGSANET_FORCE_CUPY=1" in lines[0], lines
    assert time.perf_counter() - start < 30


BANNER = "=" * 64
CUPY_INIT_STAND_IN = f'''\
try:
    raise ImportError("numpy.core.multiarray failed to import (auto-generated because you didn't call "
                      "'numpy.import_array()' after cimporting numpy)")  # what `from cupy import _core` raised
except ImportError as exc:
    raise ImportError(f"""
{BANNER}
Failed to import CuPy.

If you installed CuPy via wheels (cupy-cudaXXX or cupy-rocm-X-X), make sure that the package matches with the version of CUDA or ROCm installed.

Original error:
  {{type(exc).__name__}}: {{exc}}
{BANNER}
""") from exc
'''


@pytest.fixture
def broken_cupy(tmp_path: Path) -> Path:
    """A folder holding a cupy-cuda13x 14.2.0 whose import fails as the real one does when built for numpy 2
    and run under numpy 1.26 (seen in a real A1111 after its numpy downgrade, and reproduced here with
    the real wheels): cupy 14.2.0's ``cupy/__init__.py`` imports ``cupy._core`` and re-raises its
    ImportError wrapped in a banner of advice, under "Original error:"."""
    site = tmp_path / "site"
    (site / "cupy").mkdir(parents=True)
    (site / "cupy" / "__init__.py").write_text(CUPY_INIT_STAND_IN)
    info = site / "cupy_cuda13x-14.2.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cupy-cuda13x\nVersion: 14.2.0\n")
    return site


def test_installed_cupy_that_cannot_import_is_reported_by_install_py(broken_cupy: Path) -> None:
    result = _run("--dry-run", "--cuda", "13.0", "--requirements", os.devnull, env=_env(PYTHONPATH=str(broken_cupy)))
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "cannot be imported" in line]
    assert len(lines) == 1, result.stdout
    assert "cupy-cuda13x 14.2.0 is installed but cannot be imported" in lines[0]
    assert "numpy.core.multiarray failed to import" in lines[0] and "would install" not in result.stdout


def test_installed_cupy_that_cannot_import_is_reported_at_run_time(broken_cupy: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime fallback reason says "installed but cannot be imported", not "not installed"."""
    from dlgsanet.ops.dynamic_dwconv import cupy_backend

    monkeypatch.syspath_prepend(str(broken_cupy))
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    cupy_backend.reset_caches()
    try:
        with pytest.raises(cupy_backend.CupyUnavailable) as info:
            cupy_backend.import_cupy()
    finally:
        cupy_backend.reset_caches()
    reason = str(info.value)
    assert "is installed but cannot be imported" in reason and "not installed" not in reason
    assert "cupy-cuda13x 14.2.0" in reason and "numpy.core.multiarray failed to import" in reason


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
