#!/usr/bin/env python3
"""Install hook of the DLGSANet upscaler, run by ComfyUI-Manager, AUTOMATIC1111 / Forge, or by hand.

    python install.py                 install what is missing (quiet when nothing is)
    python install.py --dry-run       print the plan, install nothing
    python install.py --dry-run --cuda 12.4   the plan for a torch built for CUDA 12.4 ("none": no CUDA)

What it installs, with the Python that runs it:
- the lines of ``requirements.txt`` that are missing or unsatisfied (A1111 runs only this file;
  ComfyUI-Manager installs them itself first, so then there is nothing left to do), and
- cupy, for the CUDA kernels of the dynamic convolution, matching the installed torch:
  CUDA 11 -> cupy-cuda11x, 12 -> cupy-cuda12x, 13 -> cupy-cuda13x; a CPU, Apple MPS or ROCm build of
  torch gets none (the PyTorch path runs there). ``--no-cupy`` or DLGSANET_NO_CUPY=1 opts out.

What it never does: install, upgrade or downgrade torch, torchvision or torchaudio (the host owns
them; their installed versions are pinned in a constraints file handed to pip, and such lines
in requirements.txt are skipped), remove a package, or fail the host's start: every error ends
in a message and exit status 0. A1111's ``--skip-install`` turns it into a no-op.

torch is not imported (that takes seconds): its build is read from ``torch/version.py``.
"""
from __future__ import annotations

import argparse
import ast
import importlib.metadata
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent
TAG = "[DLGSANet]"
HOST_OWNED = ("torch", "torchvision", "torchaudio")
#: The same choice as the cuda11 / cuda12 / cuda13 extras of pyproject.toml.
CUPY_FOR_CUDA_MAJOR: Dict[int, str] = {11: "cupy-cuda11x>=12", 12: "cupy-cuda12x>=13", 13: "cupy-cuda13x>=13.6"}
NO_CUPY_ENV = "DLGSANET_NO_CUPY"


@dataclass(frozen=True)
class TorchBuild:
    """What matters of the installed torch: its version and the GPU toolkit it was built for."""

    version: Optional[str]  # None: torch is not installed
    cuda: Optional[str] = None  # torch.version.cuda, e.g. "12.4"
    hip: Optional[str] = None  # torch.version.hip (ROCm builds)


@dataclass
class Plan:
    install: List[str] = field(default_factory=list)  # requirement strings for pip
    reasons: List[str] = field(default_factory=list)  # one line per install: why
    warnings: List[str] = field(default_factory=list)  # printed always: the user should act
    notes: List[str] = field(default_factory=list)  # printed in dry runs: what was left alone, why
    constraints: List[str] = field(default_factory=list)  # pins that keep pip off the host's packages


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


def cupy_choice(torch_build: TorchBuild) -> Tuple[Optional[str], str]:
    """(cupy requirement or None, why) for the installed torch."""
    if torch_build.version is None:
        return None, "torch is not installed, so no cupy was chosen (install PyTorch first, then run this again)"
    if torch_build.hip:
        return None, f"torch {torch_build.version} is a ROCm build (HIP {torch_build.hip}): the CUDA kernels do not apply"
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


def make_plan(torch_build: TorchBuild, installed: Mapping[str, str], requirements: Sequence[str],
              *, with_cupy: bool = True) -> Plan:
    """What to install so that DLGSANet runs at its best, touching nothing the host owns."""
    plan = Plan()
    installed = {normalize(k): v for k, v in installed.items()}
    plan.constraints = [f"{name}=={installed[name]}" for name in HOST_OWNED if name in installed]
    for line in requirements:
        name = requirement_name(line)
        if name in HOST_OWNED:
            plan.notes.append(f"skipped '{line}': the host application owns {name}")
            continue
        why = unmet(line, installed)
        if why:
            plan.install.append(line)
            plan.reasons.append(f"{line}: {why}")

    if not with_cupy:
        plan.notes.append("cupy left out on request (--no-cupy or DLGSANET_NO_CUPY)")
        return plan
    wanted, why = cupy_choice(torch_build)
    if wanted is None:
        plan.notes.append(why)
        return plan
    present = installed_cupy(installed)
    wanted_name = requirement_name(wanted)
    others = [name for name in present if name != wanted_name]
    if others:
        plan.warnings.append(
            f"{', '.join(others)} is installed but {why}, which needs {wanted_name}; the two cannot live "
            f"together, so nothing was changed. To fix it: {sys.executable} -m pip uninstall -y "
            f"{' '.join(others)} && {sys.executable} -m pip install \"{wanted}\"")
        return plan
    missing = unmet(wanted, installed)
    if missing:
        plan.install.append(wanted)
        plan.reasons.append(f"{wanted}: {missing}; {why} (CUDA kernels for the dynamic convolution)")
    else:
        plan.notes.append(f"{wanted_name} {installed[wanted_name]} already matches: {why}")
    return plan


# ------------------------------------------------------------------------------------------------
# Reading the environment.
# ------------------------------------------------------------------------------------------------
def installed_distributions() -> Dict[str, str]:
    found: Dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if name:
            found.setdefault(normalize(name), dist.version)
    return found


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


def installer_command() -> Optional[List[str]]:
    """pip of this Python; uv's pip for environments made by uv without pip."""
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"]
    uv = shutil.which("uv")
    if uv:
        return [uv, "pip", "install", "--python", sys.executable]
    return None


def pip_arguments(plan: Plan, constraints_file: Optional[str]) -> List[str]:
    args: List[str] = []
    if os.environ.get("INDEX_URL"):  # A1111's own mirror setting, as its run_pip honours it
        args += ["--index-url", os.environ["INDEX_URL"]]
    if constraints_file:
        args += ["-c", constraints_file]
    return args + list(plan.install)


# ------------------------------------------------------------------------------------------------
# Main.
# ------------------------------------------------------------------------------------------------
def _print_plan(plan: Plan, torch_build: TorchBuild, cuda_given: bool) -> None:
    print(f"{TAG} dry run: nothing is installed")
    print(f"{TAG} python: {sys.executable}")
    print(f"{TAG} torch: {torch_build.version or 'not installed'} (CUDA {torch_build.cuda or 'none'}"
          f"{', HIP ' + torch_build.hip if torch_build.hip else ''}{', as given by --cuda' if cuda_given else ''})")
    for line in plan.reasons:
        print(f"{TAG} would install {line}")
    if not plan.install:
        print(f"{TAG} nothing to install")
    for line in plan.warnings:
        print(f"{TAG} warning: {line}")
    for line in plan.notes:
        print(f"{TAG} note: {line}")
    if plan.install:
        command = installer_command() or ["<pip>"]
        print(f"{TAG} command: " + " ".join(shlex.quote(a) for a in command + pip_arguments(plan, "<constraints>")))
        print(f"{TAG} constraints: " + (", ".join(plan.constraints) or "none (torch not installed)"))


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
    plan = make_plan(torch_build, installed_distributions(), requirements, with_cupy=with_cupy)

    if args.dry_run:
        _print_plan(plan, torch_build, args.cuda is not None)
        return 0
    for line in plan.warnings:
        print(f"{TAG} warning: {line}")
    if not plan.install:
        return 0  # everything is present: say nothing

    command = installer_command()
    if command is None:
        print(f"{TAG} cannot install {', '.join(plan.install)}: this Python has no pip (and uv was not found)")
        return 0
    for line in plan.reasons:
        print(f"{TAG} installing {line}")
    print(f"{TAG} torch stays as it is ({', '.join(plan.constraints) or 'not installed'})")
    with tempfile.TemporaryDirectory(prefix="dlgsanet-install-") as tmp:
        constraints_file = None
        if plan.constraints:
            constraints_file = os.path.join(tmp, "constraints.txt")
            Path(constraints_file).write_text("\n".join(plan.constraints) + "\n", encoding="utf-8")
        result = subprocess.run(command + pip_arguments(plan, constraints_file), cwd=str(ROOT))
    if result.returncode == 0:
        print(f"{TAG} installed {', '.join(plan.install)}")
    else:
        print(f"{TAG} installing {', '.join(plan.install)} failed (exit status {result.returncode}); "
              f"DLGSANet still runs (without cupy it uses the slower PyTorch path). "
              f"To retry: {sys.executable} {Path(__file__).resolve()}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Install DLGSANet's dependencies without touching torch.")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and install nothing")
    parser.add_argument("--cuda", metavar="X.Y", help="plan for a torch built for this CUDA version ('none': no CUDA)")
    parser.add_argument("--no-cupy", action="store_true", help="do not install cupy (also DLGSANET_NO_CUPY=1)")
    parser.add_argument("--requirements", default=str(ROOT / "requirements.txt"), help=argparse.SUPPRESS)
    args, _unknown = parser.parse_known_args(argv)  # hosts may pass their own flags: ignore them
    try:
        return run(args)
    except Exception as exc:  # noqa: BLE001 - never fail the host's start
        print(f"{TAG} the install step failed: {type(exc).__name__}: {exc}. DLGSANet itself is not affected; "
              f"missing packages can be installed by hand from {ROOT / 'requirements.txt'}.")
        return 0


if __name__ == "__main__":
    sys.exit(main())
