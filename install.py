#!/usr/bin/env python3
"""Install hook of the DLGSANet upscaler, run by ComfyUI-Manager, AUTOMATIC1111 / Forge, or by hand.

    python install.py                  install what is missing (quiet when nothing is)
    python install.py --dry-run        print the plan and what pip would add, install nothing
    python install.py --dry-run --cuda 12.4   the plan for a torch built for CUDA 12.4 ("none": no CUDA)
    python install.py --force-cupy     install cupy although no NVIDIA driver is visible (image builds;
                                       also DLGSANET_FORCE_CUPY=1)

What it installs, with the Python that runs it:
- the lines of ``requirements.txt`` that are missing (A1111 runs only this file; ComfyUI-Manager
  installs them itself first, so then there is nothing left to do), and
- cupy, for the CUDA kernels of the dynamic convolution, matching the installed torch:
  CUDA 11 -> cupy-cuda11x, 12 -> cupy-cuda12x, 13 -> cupy-cuda13x; the newest release that fits
  the installed packages. A CPU, Apple MPS or ROCm build of torch gets none (the PyTorch path runs
  there), and so does a CUDA build of torch on a machine without an NVIDIA driver (the default
  Linux torch wheel is a CUDA build, also on CPU-only machines). ``--no-cupy`` or
  DLGSANET_NO_CUPY=1 opts out (and wins over ``--force-cupy``).

What it never does: change a package that is already installed. Every installed distribution is
pinned (``name==version``) in a constraints file handed to pip, pip first resolves with
``--dry-run --report`` (so nothing is touched when nothing fits, and what would be added is known),
and a requirement that an installed version does not meet is reported, not upgraded. When no
cupy fits, nothing is installed and one line says which installed package blocks it and what to
do. It does not remove packages or fail the host's start: every error ends in a message and exit
status 0. A1111's ``--skip-install`` turns it into a no-op.

torch is not imported (that takes seconds): its build is read from ``torch/version.py``. A cupy
that is installed is imported in a child process, so one that cannot import (for example built
for numpy 2 under numpy 1.26) is reported with its import error.
"""
from __future__ import annotations

import argparse
import ast
import ctypes
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent
TAG = "[DLGSANet]"
HOST_OWNED = ("torch", "torchvision", "torchaudio")
#: The same choice as the cuda11 / cuda12 / cuda13 extras of pyproject.toml.
CUPY_FOR_CUDA_MAJOR: Dict[int, str] = {11: "cupy-cuda11x>=12", 12: "cupy-cuda12x>=13", 13: "cupy-cuda13x>=13.6"}
NO_CUPY_ENV = "DLGSANET_NO_CUPY"
FORCE_CUPY_ENV = "DLGSANET_FORCE_CUPY"
#: Where an NVIDIA driver shows itself, cheapest first (see :func:`find_nvidia_driver`).
DRIVER_SIGNS = "/proc/driver/nvidia/version, libcuda.so.1 / nvcuda.dll, nvidia-smi"


@dataclass(frozen=True)
class TorchBuild:
    """What matters of the installed torch: its version and the GPU toolkit it was built for."""

    version: Optional[str]  # None: torch is not installed
    cuda: Optional[str] = None  # torch.version.cuda, e.g. "12.4"
    hip: Optional[str] = None  # torch.version.hip (ROCm builds)


@dataclass
class Plan:
    install: List[str] = field(default_factory=list)  # missing requirement lines, for pip
    reasons: List[str] = field(default_factory=list)  # one line per install: why
    cupy: Optional[str] = None  # cupy requirement; pip picks the newest release that fits the constraints
    cupy_reason: str = ""
    messages: List[str] = field(default_factory=list)  # printed on every run: the user may want to act
    notes: List[str] = field(default_factory=list)  # printed in dry runs: what was left alone, why
    constraints: List[str] = field(default_factory=list)  # name==version of every installed distribution


# ------------------------------------------------------------------------------------------------
# The plan: pure functions of what is installed.
# ------------------------------------------------------------------------------------------------
def normalize(name: str) -> str:
    """Distribution names compare after PEP 503 normalisation (Pillow == pillow, a_b == a-b)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(line: str) -> str:
    found = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
    if not found:
        raise ValueError(f"cannot read a package name from requirement {line!r}")
    return normalize(found.group(1))


def parse_requirements(text: str) -> List[str]:
    """Requirement lines without comments, blanks and pip options (-r, --index-url, ...)."""
    lines = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith(("#", "-")):
            lines.append(line)
    return lines


def _packaging():
    """packaging's Requirement and Version, from packaging itself or pip's vendored copy."""
    for module in ("packaging", "pip._vendor.packaging"):
        try:
            requirements = importlib.import_module(f"{module}.requirements")
            version = importlib.import_module(f"{module}.version")
            return requirements.Requirement, version.Version
        except Exception:  # noqa: BLE001 - any import trouble: fall back to presence checks
            continue
    return None, None


def unmet(line: str, installed: Mapping[str, str]) -> Optional[str]:
    """Why ``line`` needs installing (None when it is satisfied or does not apply here)."""
    name = requirement_name(line)
    requirement_cls, version_cls = _packaging()
    requirement = None
    if requirement_cls is not None:
        try:
            requirement = requirement_cls(line)
        except Exception:  # noqa: BLE001 - unparsable: judge by name only
            requirement = None
    if requirement is not None and requirement.marker is not None and not requirement.marker.evaluate():
        return None
    if name not in installed:
        return "missing"
    if requirement is not None and requirement.specifier and version_cls is not None:
        try:
            if not requirement.specifier.contains(version_cls(installed[name]), prereleases=True):
                return f"installed {installed[name]} does not satisfy {requirement.specifier}"
        except Exception:  # noqa: BLE001 - odd version string: keep what is there
            return None
    return None


def pins(installed: Mapping[str, str]) -> List[str]:
    """``name==version`` for every installed distribution: with these as pip constraints, pip can
    add packages but not upgrade, downgrade or reinstall one. Versions pip cannot read (not PEP 440)
    are left out, since one bad line would make pip refuse the whole file."""
    _requirement_cls, version_cls = _packaging()
    lines = []
    for name, version in sorted(installed.items()):
        if version_cls is not None:
            try:
                version_cls(version)
            except Exception:  # noqa: BLE001 - InvalidVersion
                continue
        lines.append(f"{name}=={version}")
    return lines


def cupy_choice(torch_build: TorchBuild) -> Tuple[Optional[str], str]:
    """(cupy requirement or None, why) for the installed torch."""
    if torch_build.version is None:
        return None, "torch is not installed, so no cupy was chosen (install PyTorch first, then run this again)"
    if torch_build.hip:
        return None, (f"torch {torch_build.version} is a ROCm build (HIP {torch_build.hip}): "
                      f"the CUDA kernels do not apply")
    if not torch_build.cuda:
        return None, (f"torch {torch_build.version} has no CUDA (a CPU or Apple MPS build): "
                      f"cupy is not needed, the PyTorch path runs")
    try:
        major = int(str(torch_build.cuda).split(".")[0])
    except ValueError:
        return None, f"cannot read torch's CUDA version {torch_build.cuda!r}"
    if major not in CUPY_FOR_CUDA_MAJOR:
        return None, f"no cupy wheel is known for CUDA {torch_build.cuda}; the PyTorch path runs"
    return CUPY_FOR_CUDA_MAJOR[major], f"torch {torch_build.version} is built for CUDA {torch_build.cuda}"


def installed_cupy(installed: Mapping[str, str]) -> List[str]:
    return sorted(name for name in installed if name == "cupy" or name.startswith("cupy-cuda")
                  or name.startswith("cupy-rocm"))


def broken_cupy_message(names: Sequence[str], installed: Mapping[str, str], error: str) -> str:
    """One line for a cupy that is installed but cannot be imported, and how to get one that can."""
    which = ", ".join(f"{name} {installed.get(name, '')}".strip() for name in names)
    numpy = f" (numpy {installed['numpy']} is installed)" if "numpy" in error.lower() and "numpy" in installed else ""
    return (f"{which} is installed but cannot be imported: {error.rstrip('.')}{numpy}. DLGSANet runs on the "
            f"PyTorch path. To fix: {sys.executable} -m pip uninstall -y {' '.join(names)}, then run this "
            f"install.py again: it installs the newest cupy that fits the installed packages")


def make_plan(torch_build: TorchBuild, installed: Mapping[str, str], requirements: Sequence[str], *,
              with_cupy: bool = True, driver: Optional[str] = None, force_cupy: bool = False,
              cupy_import_error: Optional[str] = None) -> Plan:
    """What to add so that DLGSANet runs at its best, changing nothing that is installed.

    ``driver`` is the sign of an NVIDIA driver that was found (None: none), ``force_cupy`` skips
    that check, ``cupy_import_error`` is why an installed cupy failed to import (None: it imported,
    or none is installed).
    """
    plan = Plan()
    installed = {normalize(k): v for k, v in installed.items()}
    plan.constraints = pins(installed)
    for line in requirements:
        name = requirement_name(line)
        if name in HOST_OWNED:
            plan.notes.append(f"skipped '{line}': the host application owns {name}")
            continue
        why = unmet(line, installed)
        if why == "missing":
            plan.install.append(line)
            plan.reasons.append(f"{line}: {why}")
        elif why:
            plan.messages.append(
                f"requirements.txt asks for '{line}' but {name} {installed[name]} is installed; it stays as it is "
                f"(DLGSANet never changes an installed package). If DLGSANet fails to load, update it by hand: "
                f"{sys.executable} -m pip install \"{line}\"")

    if not with_cupy:
        plan.notes.append("cupy left out on request (--no-cupy or DLGSANET_NO_CUPY)")
        return plan
    wanted, why = cupy_choice(torch_build)
    present = installed_cupy(installed)
    if wanted is None:
        plan.notes.append(why)
        return plan
    wanted_name = requirement_name(wanted)
    if present:
        others = [name for name in present if name != wanted_name]
        if others:
            plan.messages.append(
                f"warning: {', '.join(others)} is installed but {why}, which needs {wanted_name}; the two cannot "
                f"live together, so nothing was changed. To fix it: {sys.executable} -m pip uninstall -y "
                f"{' '.join(others)} && {sys.executable} {Path(__file__).resolve()}")
        elif cupy_import_error:
            plan.messages.append(broken_cupy_message(present, installed, cupy_import_error))
        else:
            plan.notes.append(f"{wanted_name} {installed[wanted_name]} is installed and imports: {why}")
        return plan
    if driver is None and not force_cupy:
        plan.messages.append(
            f"cupy not installed: {why}, but no NVIDIA driver was found ({DRIVER_SIGNS}), so DLGSANet runs "
            f"on the PyTorch path. Building an image for a GPU machine? Set {FORCE_CUPY_ENV}=1 (or pass "
            f"--force-cupy) to install {wanted_name} anyway; {NO_CUPY_ENV}=1 silences this line")
        return plan
    plan.cupy = wanted
    plan.cupy_reason = f"{why}; " + (f"NVIDIA driver: {driver}" if driver else
                                     f"no NVIDIA driver found, installed on request ({FORCE_CUPY_ENV} / --force-cupy)")
    return plan


# ------------------------------------------------------------------------------------------------
# Reading pip's answers (pure).
# ------------------------------------------------------------------------------------------------
def report_additions(report: Mapping, installed: Mapping[str, str]) -> Tuple[List[Tuple[str, str]], List[str]]:
    """From a ``pip install --dry-run --report`` JSON: (what pip would add, what it would change).

    The second list must be empty: with every installed distribution pinned, pip may only add.
    """
    added, changed = [], []
    for item in report.get("install", []):
        metadata = item.get("metadata", {})
        name, version = normalize(metadata.get("name", "?")), metadata.get("version", "?")
        if name in installed:
            changed.append(f"{name} {installed[name]} -> {version}")
        else:
            added.append((name, version))
    return added, changed


def _version_key(version: str):
    _requirement_cls, version_cls = _packaging()
    try:
        return (0, version_cls(version)) if version_cls else (1, version)
    except Exception:  # noqa: BLE001
        return (1, version)


def conflict_summary(pip_output: str, installed: Mapping[str, str]) -> Optional[Tuple[str, List[str]]]:
    """(summary, blocking packages) from pip's ResolutionImpossible text: which installed package
    blocks every candidate, e.g. "numpy 1.21.6 is installed; cupy-cuda13x 14.0.0 to 14.2.0 need
    numpy<2.6,>=2.0, 13.6.0 needs numpy<2.6,>=1.22". None when pip's text has no such lines."""
    held = {normalize(m.group(1)): m.group(2) for m in
            re.finditer(r"The user requested \(constraint\) ([A-Za-z0-9._-]+)==(\S+)", pip_output)}
    needs: Dict[Tuple[str, str, str], List[str]] = {}  # (candidate, blocker, spec) -> candidate versions
    for m in re.finditer(r"^\s*([A-Za-z0-9._-]+) (\S+) depends on ([A-Za-z0-9._-]+)(.*)$", pip_output, re.M):
        candidate, version, dependency, spec = normalize(m.group(1)), m.group(2), normalize(m.group(3)), m.group(4)
        if dependency in held:
            spec = re.sub(r"\s+and\s+", ",", spec.strip()).replace(" ", "")
            needs.setdefault((candidate, dependency, spec), []).append(version)
    if not needs:
        return None
    blockers = sorted({dependency for _c, dependency, _s in needs})
    parts: List[str] = []
    for (candidate, dependency, spec), versions in sorted(
            needs.items(), key=lambda kv: max(_version_key(v) for v in kv[1]), reverse=True):
        versions = sorted(versions, key=_version_key)
        which = versions[0] if len(versions) == 1 else f"{versions[0]} to {versions[-1]}"
        named = candidate if not any(p.startswith(candidate + " ") for p in parts) else ""
        parts.append(f"{named} {which} need{'s' if len(versions) == 1 else ''} {dependency}{spec or ' (any)'}".strip())
    held_text = ", ".join(f"{name} {installed.get(name, held[name])}" for name in blockers)
    return f"{held_text} {'is' if len(blockers) == 1 else 'are'} installed; {', '.join(parts)}", blockers


def pip_error_line(output: str) -> str:
    """pip's first ERROR line, short; else its last line."""
    for line in output.splitlines():
        if line.startswith("ERROR:") and "ResolutionImpossible" not in line:
            return line[len("ERROR:"):].strip()[:300]
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def no_fit_message(requirement: str, output: str, installed: Mapping[str, str]) -> str:
    """The one line printed when pip finds nothing to add under the constraints: why and what to do."""
    name = requirement_name(requirement)
    is_cupy = name.startswith("cupy")
    fallback = "DLGSANet runs on its PyTorch path" if is_cupy else "DLGSANet may fail to load without it"
    silence = f"; {NO_CUPY_ENV}=1 silences this line" if is_cupy else ""
    if "ResolutionImpossible" in output or "conflicting dependencies" in output:
        found = conflict_summary(output, installed)
        if found:
            summary, blockers = found
            return (f"{name} not installed: no release fits the packages installed here ({summary}), and DLGSANet "
                    f"never changes an installed package, so {fallback}. To get {name}: let {' and '.join(blockers)} "
                    f"move into one of those ranges if the host allows it, then run {Path(__file__).name} "
                    f"again{silence}")
        return (f"{name} not installed: no release fits the packages installed here (pip: "
                f"{pip_error_line(output)}), and DLGSANet never changes an installed package, so {fallback}{silence}")
    if "No matching distribution" in output or "Could not find a version" in output:
        return (f"{name} not installed: pip found no {requirement} for this Python and platform "
                f"({pip_error_line(output)}), so {fallback}{silence}")
    return (f"{name} not installed: pip could not resolve {requirement} ({pip_error_line(output)}), so {fallback}; "
            f"run {Path(__file__).name} again when the package index is reachable{silence}")


# ------------------------------------------------------------------------------------------------
# Reading the environment.
# ------------------------------------------------------------------------------------------------
def installed_distributions() -> Dict[str, str]:
    """name -> version of every distribution this Python sees (the first one found, as import does)."""
    importlib.invalidate_caches()  # also see what pip has just added
    found: Dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if name:
            found.setdefault(normalize(name), dist.version)
    return found


def _loadable(library: str) -> bool:
    try:
        ctypes.CDLL(library)
        return True
    except OSError:
        return False


def find_nvidia_driver(proc: Path = Path("/proc"), platform: str = sys.platform,
                       which: Callable[[str], Optional[str]] = shutil.which,
                       loadable: Callable[[str], bool] = _loadable) -> Optional[str]:
    """The first sign of an NVIDIA driver, or None; torch is not imported (that takes seconds).

    Signs, cheapest first: the kernel module's ``/proc/driver/nvidia/version`` (Linux hosts and
    containers started with the NVIDIA runtime), WSL's ``/usr/lib/wsl/lib/libcuda.so.1``, the driver's
    user-space library loadable by name (``libcuda.so.1``; ``nvcuda.dll`` on Windows), which is what
    cupy and torch load, and ``nvidia-smi`` on PATH. No sign: no cupy (``--force-cupy`` overrides, for
    images built where the driver appears only at run time). macOS has no NVIDIA CUDA.
    """
    if platform == "darwin":
        return None
    if platform.startswith("linux"):
        if (proc / "driver" / "nvidia" / "version").is_file():
            return f"{proc / 'driver' / 'nvidia' / 'version'}"
        if Path("/usr/lib/wsl/lib/libcuda.so.1").is_file():
            return "/usr/lib/wsl/lib/libcuda.so.1 (WSL)"
    if platform == "win32":
        system32 = Path(os.environ.get("SystemRoot", r"C:\Windows")) / "System32" / "nvcuda.dll"
        if system32.is_file():
            return str(system32)
    library = "nvcuda.dll" if platform == "win32" else "libcuda.so.1"
    if loadable(library):
        return f"{library} loads"
    smi = which("nvidia-smi")
    if smi:
        return smi
    return None


def import_error_line(text: str) -> str:
    """The telling line of an import failure: cupy wraps the real error in a banner of advice and
    puts it under "Original error:" (``cupy/__init__.py``); otherwise the last line (a traceback's
    ``ImportError: ...``)."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not set(line.strip()) <= {"="}]
    for i, line in enumerate(lines[:-1]):
        if line == "Original error:":
            return lines[i + 1][:300]
    return lines[-1][:300] if lines else ""


def cupy_import_error(python: str = sys.executable) -> Optional[str]:
    """Why ``import cupy`` fails in a fresh process of ``python`` (None: it imports)."""
    try:
        out = subprocess.run([python, "-c", "import cupy"], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if out.returncode == 0:
        return None
    return import_error_line(out.stderr) or f"exit status {out.returncode}"


def _literal_assignments(source: str) -> Dict[str, object]:
    values: Dict[str, object] = {}
    for node in ast.parse(source).body:
        target, value = None, None
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target, value = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            target, value = node.target.id, node.value
        if target:
            try:
                values[target] = ast.literal_eval(value)
            except ValueError:
                pass
    return values


def read_torch_build() -> TorchBuild:
    """The installed torch's version and CUDA/HIP versions, without importing torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.origin:
        return TorchBuild(version=None)
    version_file = Path(spec.origin).parent / "version.py"
    try:
        values = _literal_assignments(version_file.read_text(encoding="utf-8"))
        if "__version__" in values:
            return TorchBuild(str(values["__version__"]), values.get("cuda") or None, values.get("hip") or None)
    except (OSError, SyntaxError, ValueError):
        pass
    # An unusual torch layout: ask torch itself, in a separate process.
    probe = ("import torch; v = torch.version; "
             "print(torch.__version__); print(v.cuda or ''); print(getattr(v, 'hip', None) or '')")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    lines = (out.stdout.splitlines() + ["", "", ""])[:3]
    if out.returncode != 0 or not lines[0]:
        return TorchBuild(version=None)
    return TorchBuild(lines[0], lines[1] or None, lines[2] or None)


def a1111_skip_install() -> bool:
    """True under AUTOMATIC1111 / Forge started with --skip-install (install.py must do nothing)."""
    if "--skip-install" in shlex.split(os.environ.get("COMMANDLINE_ARGS", "")):
        return True
    spec = importlib.util.find_spec("launch")  # A1111 puts its root on PYTHONPATH for install.py
    if spec is None or not spec.origin:
        return False
    if not (Path(spec.origin).parent / "modules" / "launch_utils.py").is_file():
        return False  # some other module called launch: leave it alone
    try:
        import launch  # noqa: PLC0415 - A1111's; parses COMMANDLINE_ARGS into launch.args

        return bool(getattr(getattr(launch, "args", None), "skip_install", False))
    except Exception:  # noqa: BLE001 - a broken host module is no reason to fail
        return False


# ------------------------------------------------------------------------------------------------
# Running pip.
# ------------------------------------------------------------------------------------------------
def installer_command() -> Optional[List[str]]:
    """pip of this Python; uv's pip for environments made by uv without pip."""
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"]
    uv = shutil.which("uv")
    if uv:
        return [uv, "pip", "install", "--python", sys.executable]
    return None


def pip_arguments(requirements: Sequence[str], constraints_file: Optional[str],
                  only_binary: Sequence[str] = ()) -> List[str]:
    args: List[str] = []
    if os.environ.get("INDEX_URL"):  # A1111's own mirror setting, as its run_pip honours it
        args += ["--index-url", os.environ["INDEX_URL"]]
    if constraints_file:
        args += ["-c", constraints_file]
    for name in only_binary:  # cupy from source would mean a CUDA toolkit and an hour of compiling
        args += ["--only-binary", name]
    return args + list(requirements)


def cache_dir() -> Path:
    """``$DLGSANET_CACHE_DIR``, else ``$XDG_CACHE_HOME/dlgsanet``, else ``~/.cache/dlgsanet`` (as the package's
    ``dlgsanet/ops/native.py``; install.py cannot import the package, which may lack its dependencies)."""
    if os.environ.get("DLGSANET_CACHE_DIR"):
        return Path(os.environ["DLGSANET_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")).expanduser() / "dlgsanet"


def memo_path(requirements: Sequence[str], constraints: Sequence[str]) -> Path:
    """Where "nothing fits" is remembered for exactly this Python, request and set of installed packages,
    so that later host starts print the line without asking pip again (which can mean downloading
    every candidate wheel: pip < 23.3 reads a wheel's dependencies only from the whole wheel)."""
    key = "\n".join([sys.executable, *requirements, "--", *constraints])
    return cache_dir() / f"install-no-fit-{hashlib.sha256(key.encode()).hexdigest()[:20]}.txt"


@dataclass
class Outcome:
    added: List[Tuple[str, str]] = field(default_factory=list)  # (name, version) pip added or would add
    message: Optional[str] = None  # one line when nothing was (or would be) added


def _remember(memo: Path, message: str) -> None:
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(message + "\n", encoding="utf-8")
    except OSError:
        pass  # a read-only home: ask pip again next time


def add_packages(command: List[str], requirements: Sequence[str], *, dry_run: bool,
                 only_binary: Sequence[str] = (), why: str = "") -> Outcome:
    """Add ``requirements`` under constraints that pin every installed distribution.

    pip resolves first (``--dry-run --report``): when nothing fits, nothing is touched and the
    outcome says why in one line; then it installs exactly the versions it resolved. Installers
    without ``--report`` (uv, pip < 22.2) install directly: they too resolve fully before changing
    anything, so a conflict still changes nothing.
    """
    installed = installed_distributions()
    is_pip = command[1:3] == ["-m", "pip"]
    memo = memo_path(requirements, pins(installed))
    if not dry_run:
        try:
            return Outcome(message=memo.read_text(encoding="utf-8").strip() + " (remembered for these installed "
                                   f"packages in {memo}; delete it to ask pip again)")
        except (OSError, UnicodeDecodeError):
            pass
    with tempfile.TemporaryDirectory(prefix="dlgsanet-install-") as tmp:
        constraints_file = os.path.join(tmp, "constraints.txt")
        Path(constraints_file).write_text("\n".join(pins(installed)) + "\n", encoding="utf-8")
        report_file = os.path.join(tmp, "report.json")
        resolved: Optional[List[Tuple[str, str]]] = None
        if is_pip:
            probe = subprocess.run(command + ["--dry-run", "--report", report_file]
                                   + pip_arguments(requirements, constraints_file, only_binary),
                                   capture_output=True, text=True, cwd=str(ROOT))
            output = probe.stdout + probe.stderr
            if probe.returncode == 0 and os.path.isfile(report_file):
                added, changed = report_additions(json.loads(Path(report_file).read_text(encoding="utf-8")),
                                                  installed)
                if changed:
                    return Outcome(message=f"{', '.join(requirements)} not installed: pip would change "
                                           f"{', '.join(changed)} despite the constraints")
                resolved = added
            elif "no such option" not in output:
                message = no_fit_message(requirements[0], output, installed)
                if "ResolutionImpossible" in output and not dry_run:
                    _remember(memo, message)
                return Outcome(message=message)
        if dry_run:
            return Outcome(added=resolved or [], message=None if resolved is not None else
                           "this installer has no --dry-run --report: the versions are chosen at install time")
        exact = [f"{name}=={version}" for name, version in resolved] if resolved else list(requirements)
        if resolved is not None and not resolved:
            return Outcome()
        print(f"{TAG} installing {_added_text(resolved) if resolved else ', '.join(requirements)}"
              f"{' (' + why + ')' if why else ''}", flush=True)
        result = subprocess.run(command + pip_arguments(exact, constraints_file, only_binary),
                                capture_output=not is_pip, text=True, cwd=str(ROOT))
    after = installed_distributions()
    changed = [f"{name} {version} -> {after.get(name, 'removed')}" for name, version in installed.items()
               if after.get(name) != version]
    added = sorted((name, version) for name, version in after.items() if name not in installed)
    if changed:
        return Outcome(added, f"warning: installing {', '.join(requirements)} changed {', '.join(changed)}")
    if result.returncode != 0:
        output = (result.stdout or "") + (result.stderr or "")
        return Outcome(added, no_fit_message(requirements[0], output, installed) if output else
                       f"installing {', '.join(requirements)} failed (exit status {result.returncode})")
    return Outcome(added)


# ------------------------------------------------------------------------------------------------
# Main.
# ------------------------------------------------------------------------------------------------
def _print_plan(plan: Plan, torch_build: TorchBuild, cuda_given: bool, driver: Optional[str]) -> None:
    print(f"{TAG} dry run: nothing is installed")
    print(f"{TAG} python: {sys.executable}")
    print(f"{TAG} torch: {torch_build.version or 'not installed'} (CUDA {torch_build.cuda or 'none'}"
          f"{', HIP ' + torch_build.hip if torch_build.hip else ''}{', as given by --cuda' if cuda_given else ''})")
    print(f"{TAG} NVIDIA driver: {driver or 'none found (' + DRIVER_SIGNS + ')'}")
    for line in plan.reasons:
        print(f"{TAG} would install {line}")
    if plan.cupy:
        print(f"{TAG} would install the newest {plan.cupy} that fits the installed packages: {plan.cupy_reason}")
    if not plan.install and not plan.cupy:
        print(f"{TAG} nothing to install")
    for line in plan.messages:
        print(f"{TAG} {line}")
    for line in plan.notes:
        print(f"{TAG} note: {line}")
    command = installer_command() or ["<pip>"]
    cupy_step = [plan.cupy] if plan.cupy else []
    for step, only_binary in ((plan.install, []), (cupy_step, [requirement_name(c) for c in cupy_step])):
        if step:
            print(f"{TAG} command: " + " ".join(shlex.quote(a) for a in command + pip_arguments(
                step, "<constraints>", only_binary)))
    if plan.install or plan.cupy:
        print(f"{TAG} constraints: {len(plan.constraints)} pins, every installed distribution "
              f"({', '.join(c for c in plan.constraints if requirement_name(c) in HOST_OWNED + ('numpy',))}, ...)")


def _added_text(added: Sequence[Tuple[str, str]]) -> str:
    return ", ".join(f"{name} {version}" for name, version in added) or "nothing"


def run(args: argparse.Namespace) -> int:
    if a1111_skip_install():
        if args.dry_run:
            print(f"{TAG} A1111 --skip-install is set: nothing would be done")
        return 0
    torch_build = read_torch_build()
    if args.cuda is not None:
        cuda = None if args.cuda.lower() in ("", "none", "cpu") else args.cuda
        torch_build = TorchBuild(torch_build.version or "(not installed; assumed present)", cuda, None)
    requirements = parse_requirements(Path(args.requirements).read_text(encoding="utf-8"))
    with_cupy = not args.no_cupy and os.environ.get(NO_CUPY_ENV, "").strip() in ("", "0")
    force_cupy = args.force_cupy or os.environ.get(FORCE_CUPY_ENV, "").strip() not in ("", "0")
    installed = installed_distributions()
    wanted, _why = cupy_choice(torch_build)
    import_error = cupy_import_error() if with_cupy and wanted and installed_cupy(installed) else None
    driver = find_nvidia_driver()
    plan = make_plan(torch_build, installed, requirements, with_cupy=with_cupy, driver=driver,
                     force_cupy=force_cupy, cupy_import_error=import_error)

    if args.dry_run:
        _print_plan(plan, torch_build, args.cuda is not None, driver)
    else:
        for line in plan.messages:
            print(f"{TAG} {line}")
    if not plan.install and not plan.cupy:
        return 0  # everything is present: say nothing more
    command = installer_command()
    if command is None:
        wanted_all = plan.install + ([plan.cupy] if plan.cupy else [])
        print(f"{TAG} cannot install {', '.join(wanted_all)}: this Python has no pip (and uv was not found)")
        return 0
    steps = [(plan.install, [], "missing from this Python")]
    if plan.cupy:
        name = requirement_name(plan.cupy)
        steps.append(([plan.cupy], [name], f"the newest {name} that fits the installed packages; {plan.cupy_reason}"))
    for requirements_step, only_binary, why in steps:
        if not requirements_step:
            continue
        outcome = add_packages(command, requirements_step, dry_run=args.dry_run, only_binary=only_binary, why=why)
        if outcome.message:
            print(f"{TAG} {outcome.message}")
        elif args.dry_run:
            print(f"{TAG} pip would add: {_added_text(outcome.added)}")
        else:
            print(f"{TAG} installed {_added_text(outcome.added)}; nothing that was installed before changed")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Install DLGSANet's dependencies without changing installed packages.")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and install nothing")
    parser.add_argument("--cuda", metavar="X.Y", help="plan for a torch built for this CUDA version ('none': no CUDA)")
    parser.add_argument("--no-cupy", action="store_true", help="do not install cupy (also DLGSANET_NO_CUPY=1)")
    parser.add_argument("--force-cupy", action="store_true",
                        help="install cupy although no NVIDIA driver is visible (also DLGSANET_FORCE_CUPY=1)")
    parser.add_argument("--requirements", default=str(ROOT / "requirements.txt"), help=argparse.SUPPRESS)
    args, _unknown = parser.parse_known_args(argv)  # hosts may pass their own flags: ignore them
    try:
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]  # ours before pip's lines
    except (AttributeError, ValueError):
        pass
    try:
        return run(args)
    except Exception as exc:  # noqa: BLE001 - never fail the host's start
        print(f"{TAG} the install step failed: {type(exc).__name__}: {exc}. DLGSANet itself is not affected; "
              f"missing packages can be installed by hand from {ROOT / 'requirements.txt'}.")
        return 0


if __name__ == "__main__":
    sys.exit(main())
