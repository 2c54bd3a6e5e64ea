"""The CUDA source compiles for real GPUs: nvcc for sm_75 / sm_86 / sm_90 without a warning, and
NVRTC (the compiler cupy uses at run time) with the backend's own options and name expressions.

Neither needs a GPU. nvcc comes from a CUDA toolkit; NVRTC from the CUDA wheels that a CUDA build
of torch installs (or a toolkit). Each test skips, saying why, where its compiler is missing.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import torch

from dlgsanet.ops.dynamic_dwconv import cupy_backend
from kernels_helpers import KERNEL_SOURCE, Nvrtc, find_libnvrtc, instantiation_unit, nvcc, nvcc_archs

ARCHS = ["sm_75", "sm_86", "sm_90"]  # Turing (oldest CUDA 13 still builds for), Ampere, Hopper
# What the model runs (K = 7) in every storage type, plus float at other kernel sizes.
INSTANCES = [("float", 7), ("double", 7), ("dwc_half", 7), ("dwc_bfloat16", 7), ("float", 3), ("float", 5),
             ("float", 1)]


def test_source_needs_no_header() -> None:
    """NVRTC's include paths differ between CUDA and cupy versions: the source includes nothing."""
    assert not re.search(r"^\s*#\s*include", KERNEL_SOURCE.read_text(), flags=re.M)


def _ptxas_report(stderr: str) -> Dict[str, Tuple[int, int]]:
    """Kernel (demangled-ish) -> (registers, spill bytes) from ``ptxas -v`` output."""
    report: Dict[str, Tuple[int, int]] = {}
    name, spill = "", 0
    for line in stderr.splitlines():
        found = re.search(r"Compiling entry function '(\w+)'", line)
        if found:
            name = found.group(1)
        found = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if found:
            spill = int(found.group(1)) + int(found.group(2))
        found = re.search(r"Used (\d+) registers", line)
        if found and name:
            report[name] = (int(found.group(1)), spill)
    return report


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_nvcc_compiles_without_warnings_or_spills(arch: str, tmp_path: Path) -> None:
    compiler = nvcc()
    if compiler is None:
        pytest.skip("nvcc not found (install a CUDA toolkit or set NVCC): compile check not run")
    if arch not in nvcc_archs(compiler):
        pytest.skip(f"this nvcc cannot compile for {arch} (supports {', '.join(nvcc_archs(compiler))})")
    unit = tmp_path / "instances.cu"
    unit.write_text(instantiation_unit(INSTANCES))
    number = arch.split("_")[1]
    cmd = [compiler, "-c", "-std=c++17", f"-gencode=arch=compute_{number},code={arch}",
           "-Werror", "all-warnings", "-Xcompiler", "-Wall,-Wextra,-Werror", "-Xptxas", "-v",
           str(unit), "-o", str(tmp_path / "instances.o")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stderr[-6000:]}"
    warnings = [line for line in (result.stdout + result.stderr).splitlines()
                if "warning" in line.lower() and "ptxas info" not in line]
    assert not warnings, warnings
    report = _ptxas_report(result.stderr)
    assert len(report) == 3 * len(INSTANCES)
    spilled = {name: r for name, r in report.items() if r[1]}
    assert not spilled, f"register spills on {arch}: {spilled}"
    print(f"\n{arch} registers per thread:", sorted(r[0] for r in report.values()))


@pytest.fixture(scope="module")
def nvrtc() -> Nvrtc:
    path = find_libnvrtc()
    if path is None:
        pytest.skip("libnvrtc not found (it comes with CUDA builds of torch or a CUDA toolkit)")
    return Nvrtc(path)


def _all_names() -> List[str]:
    names = [name for dtype in cupy_backend.STORAGE_TYPES for name in cupy_backend.name_expressions(dtype, 7)]
    return names + list(cupy_backend.name_expressions(torch.float32, 3))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_nvrtc_compiles_what_the_cupy_backend_asks_for(nvrtc: Nvrtc, arch: str) -> None:
    number = int(arch.split("_")[1])
    if number not in nvrtc.archs:
        pytest.skip(f"NVRTC {nvrtc.version} cannot compile for {arch}")
    # cupy's RawModule adds these to our options (cupy/cuda/compiler.py, cupy 13-14).
    options = cupy_backend.nvrtc_options() + (f"-arch={arch}", "--device-as-default-execution-space", "-ftz=true")
    names = _all_names()
    rc, log, lowered, cubin_size = nvrtc.compile(cupy_backend.kernel_source(), options, names)
    assert rc == 0, log
    assert log == "", f"NVRTC warnings: {log}"
    assert set(lowered) == set(names) and all(value.startswith("_Z") for value in lowered.values())
    assert cubin_size > 0


def test_nvrtc_rejects_a_broken_source(nvrtc: Nvrtc) -> None:
    """The compile check can fail: a typo in the source is an error with a log, not a silent pass."""
    broken = cupy_backend.kernel_source().replace("acc[cc][p] = io::fma", "acc[cc][p] = io::fmaa", 1)
    name = cupy_backend.name_expressions(torch.float32, 3)[0]
    rc, log, _, _ = nvrtc.compile(broken, cupy_backend.nvrtc_options() + ("-arch=compute_75",), [name])
    assert rc != 0 and "fmaa" in log
