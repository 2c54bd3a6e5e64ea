"""Helpers for the CUDA kernel tests: build and call the CPU emulation, find nvcc and NVRTC.

The CPU emulation is ``tests/kernels/dynamic_dwconv_cpu.cpp`` (which includes ``tests/kernels/cpu_shim.h``
and the real ``kernels/dynamic_dwconv.cu``) compiled with g++ into a shared library and called with
ctypes. NVRTC is called through its C API with ctypes, so the compile check needs no cupy and no GPU.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from dlgsanet.ops.dynamic_dwconv import cupy_backend
from dlgsanet.ops.dynamic_dwconv.torch_backend import dynamic_dwconv_torch

REPO_ROOT = Path(__file__).resolve().parents[1]
KERNELS_DIR = REPO_ROOT / "kernels"
KERNEL_SOURCE = KERNELS_DIR / "dynamic_dwconv.cu"
CPU_ENTRY = Path(__file__).resolve().parent / "kernels" / "dynamic_dwconv_cpu.cpp"  # test-only C++

DTYPE_CODES: Dict[torch.dtype, int] = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
OP_FORWARD, OP_GRAD_INPUT, OP_GRAD_KERNELS = 0, 1, 2

Launch = Tuple[Tuple[int, int, int], Tuple[int, int, int]]


# ------------------------------------------------------------------------------------------------
# CPU emulation through g++
# ------------------------------------------------------------------------------------------------
def gxx() -> Optional[str]:
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("g++")


def build_cpu_library(out_dir: Path, strip: int = cupy_backend.STRIP) -> Path:
    """Compile the emulation with warnings as errors, ``strip`` outputs per thread in the gather
    passes (the launcher's by default); returns the shared library's path."""
    compiler = gxx()
    if compiler is None:
        raise FileNotFoundError("g++ not found")
    lib = out_dir / f"libdwconv_cpu_s{strip}.so"
    cmd = [compiler, "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", f"-DDWC_STRIP={strip}",
           str(CPU_ENTRY), "-o", str(lib)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"g++ failed ({' '.join(cmd)}):\n{result.stderr}")
    return lib


class CpuKernels:
    """The three CUDA kernels, run on the CPU by cpu_shim.h's block/thread loop."""

    def __init__(self, path: Path, strip: int = cupy_backend.STRIP) -> None:
        self.strip = strip  # what the library was built with (build_cpu_library)
        self.lib = ctypes.CDLL(str(path))
        self.lib.dwc_cpu_run.restype = ctypes.c_int
        self.lib.dwc_cpu_run.argtypes = [ctypes.c_int] * 3 + [ctypes.c_void_p] * 3 + [ctypes.c_int] * 5 \
            + [ctypes.c_uint] * 3
        for name in ("half_to_float", "float_to_half", "bfloat16_to_float", "float_to_bfloat16"):
            fn = getattr(self.lib, f"dwc_cpu_{name}")
            fn.restype = None
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_longlong]
        sizes = (ctypes.c_int * 32)()
        count = self.lib.dwc_cpu_kernel_sizes(sizes, 32)
        self.kernel_sizes = tuple(sizes[i] for i in range(count))
        self.channel_block = int(self.lib.dwc_cpu_channel_block())

    def _run(self, op: int, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, shape: Tuple[int, ...],
             k: int, launch: Optional[Launch]) -> torch.Tensor:
        n, c, g, h, w = shape
        strip = 1 if op == OP_GRAD_KERNELS or out.dtype == torch.float64 else self.strip  # as the .cu's dwc_strip
        (gx, gy, _), (bx, _, _) = launch or cupy_backend.launch_config(n, g, h, w, strip=strip)
        for t in (a, b, out):
            assert t.is_contiguous() and t.device.type == "cpu" and t.dtype == out.dtype
        rc = self.lib.dwc_cpu_run(op, DTYPE_CODES[out.dtype], k, a.data_ptr(), b.data_ptr(), out.data_ptr(),
                                  n, c, g, h, w, gx, gy, bx)
        if rc != 0:
            raise ValueError(f"emulation library rejected dtype {out.dtype} / K {k} (rc {rc})")
        return out

    def forward(self, x: torch.Tensor, kernels: torch.Tensor, launch: Optional[Launch] = None) -> torch.Tensor:
        n, c, h, w = x.shape
        out = torch.full_like(x, float("nan"))  # NaN: an output the kernel forgot to write shows up
        return self._run(OP_FORWARD, x, kernels, out, (n, c, kernels.shape[1], h, w), kernels.shape[2], launch)

    def grad_input(self, grad_out: torch.Tensor, kernels: torch.Tensor,
                   launch: Optional[Launch] = None) -> torch.Tensor:
        n, c, h, w = grad_out.shape
        out = torch.full_like(grad_out, float("nan"))
        return self._run(OP_GRAD_INPUT, grad_out, kernels, out, (n, c, kernels.shape[1], h, w),
                         kernels.shape[2], launch)

    def grad_kernels(self, x: torch.Tensor, grad_out: torch.Tensor, groups: int, k: int,
                     launch: Optional[Launch] = None) -> torch.Tensor:
        n, c, h, w = x.shape
        out = torch.full((n, groups, k, k, h, w), float("nan"), dtype=x.dtype)
        return self._run(OP_GRAD_KERNELS, x, grad_out, out, (n, c, groups, h, w), k, launch)

    def convert(self, name: str, values: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
        values = values.contiguous()
        out = torch.empty(values.shape, dtype=out_dtype)
        getattr(self.lib, f"dwc_cpu_{name}")(values.data_ptr(), out.data_ptr(), values.numel())
        return out


def torch_reference(x: torch.Tensor, kernels: torch.Tensor, grad_out: torch.Tensor,
                    dtype: torch.dtype = torch.float64) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward and both gradients of the PyTorch path, computed in ``dtype`` by autograd."""
    xr = x.to(dtype).requires_grad_()
    kr = kernels.to(dtype).requires_grad_()
    out = dynamic_dwconv_torch(xr, kr)
    out.backward(grad_out.to(dtype))
    return out.detach(), xr.grad, kr.grad


def random_case(n: int, c: int, g: int, h: int, w: int, k: int, dtype: torch.dtype,
                seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x, kernels and grad_out with unit-scale outputs (kernels scaled by 1/K), made in float64."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64).to(dtype)
    kernels = (torch.randn(n, g, k, k, h, w, generator=gen, dtype=torch.float64) / k).to(dtype)
    grad_out = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64).to(dtype)
    return x, kernels, grad_out


# ------------------------------------------------------------------------------------------------
# nvcc
# ------------------------------------------------------------------------------------------------
def nvcc() -> Optional[str]:
    found = shutil.which(os.environ.get("NVCC", "nvcc"))
    if found:
        return found
    for candidate in sorted(glob.glob("/usr/local/cuda*/bin/nvcc"), reverse=True):
        return candidate
    return None


def nvcc_archs(nvcc_path: str) -> List[str]:
    """The ``sm_XX`` codes this nvcc can compile for."""
    result = subprocess.run([nvcc_path, "--list-gpu-code"], capture_output=True, text=True)
    return [line.strip() for line in result.stdout.split() if line.strip().startswith("sm_")]


def instantiation_unit(instances: Sequence[Tuple[str, int]]) -> str:
    """A translation unit that includes the real .cu and instantiates the given (type, K) kernels."""
    lines = [f'#include "{KERNEL_SOURCE}"']
    for type_name, k in instances:
        for kernel in cupy_backend.KERNEL_NAMES:
            lines.append(f"template __global__ void {kernel}<{type_name}, {k}>("
                         f"const {type_name}*, const {type_name}*, {type_name}*, int, int, int, int, int);")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# NVRTC through its C API
# ------------------------------------------------------------------------------------------------
def find_libnvrtc() -> Optional[str]:
    """libnvrtc from the CUDA wheels that come with torch, the system, or a CUDA toolkit."""
    patterns = []
    for site in sys.path:
        patterns += [os.path.join(site, "nvidia", "*", "lib", "libnvrtc.so*"),
                     os.path.join(site, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so*")]
    patterns += ["/usr/local/cuda*/lib64/libnvrtc.so*", "/usr/local/cuda*/targets/*/lib/libnvrtc.so*"]
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            name = os.path.basename(path)
            if "builtins" not in name and ".alt." not in name:
                return path
    return ctypes.util.find_library("nvrtc")


class Nvrtc:
    """The few NVRTC calls cupy makes to compile a RawModule with name expressions."""

    def __init__(self, path: str) -> None:
        self.lib = ctypes.CDLL(path)
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._check(self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
        self.version = (major.value, minor.value)
        count = ctypes.c_int()
        self._check(self.lib.nvrtcGetNumSupportedArchs(ctypes.byref(count)), "nvrtcGetNumSupportedArchs")
        archs = (ctypes.c_int * count.value)()
        self._check(self.lib.nvrtcGetSupportedArchs(archs), "nvrtcGetSupportedArchs")
        self.archs = tuple(archs)
        self.lib.nvrtcGetErrorString.restype = ctypes.c_char_p

    def _check(self, rc: int, what: str) -> None:
        if rc != 0:
            raise RuntimeError(f"{what} returned {rc}")

    def compile(self, source: str, options: Sequence[str],
                names: Sequence[str]) -> Tuple[int, str, Dict[str, str], int]:
        """(result code, log, name expression -> lowered name, cubin size)."""
        prog = ctypes.c_void_p()
        self._check(self.lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"dynamic_dwconv.cu",
                                                0, None, None), "nvrtcCreateProgram")
        try:
            for name in names:
                self._check(self.lib.nvrtcAddNameExpression(prog, name.encode()), "nvrtcAddNameExpression")
            opts = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
            rc = self.lib.nvrtcCompileProgram(prog, len(options), opts)
            size = ctypes.c_size_t()
            self._check(self.lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)), "nvrtcGetProgramLogSize")
            log = ctypes.create_string_buffer(size.value)
            self._check(self.lib.nvrtcGetProgramLog(prog, log), "nvrtcGetProgramLog")
            lowered: Dict[str, str] = {}
            cubin_size = 0
            if rc == 0:
                for name in names:
                    out = ctypes.c_char_p()
                    self._check(self.lib.nvrtcGetLoweredName(prog, name.encode(), ctypes.byref(out)),
                                "nvrtcGetLoweredName")
                    lowered[name] = out.value.decode()
                cubin = ctypes.c_size_t()
                if self.lib.nvrtcGetCUBINSize(prog, ctypes.byref(cubin)) == 0:
                    cubin_size = cubin.value
            return rc, log.value.decode(errors="replace").strip(), lowered, cubin_size
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(prog))
