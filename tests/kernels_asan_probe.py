"""Run every kernel of the CPU emulation on exactly-sized heap buffers (numpy only, no torch).

Used by tests/test_kernels_cpu.py with the emulation built with AddressSanitizer and libasan
preloaded: a read or write one element outside a tensor, which a GPU would perform silently (and
which could not change a result, e.g. a padded channel lane), aborts this process with a report.

Usage: python kernels_asan_probe.py LIBRARY
"""
from __future__ import annotations

import ctypes
import sys

import numpy as np

# (N, C, G, H, W, K): ragged channel blocks (C/G not a multiple of 6) and strips, K larger than H and W.
SHAPES = [(1, 6, 1, 5, 7, 3), (3, 20, 2, 6, 10, 7), (2, 9, 9, 3, 2, 5), (1, 3, 3, 13, 5, 11), (1, 10, 1, 7, 12, 9)]
DTYPES = [(0, np.float32), (1, np.float64), (2, np.float16), (3, np.uint16)]  # 3: bfloat16 bits


def main(library: str) -> int:
    lib = ctypes.CDLL(library)
    lib.dwc_cpu_run.argtypes = [ctypes.c_int] * 3 + [ctypes.c_void_p] * 3 + [ctypes.c_int] * 5 + [ctypes.c_uint] * 3
    rng = np.random.default_rng(0)
    runs = 0
    for n, c, g, h, w, k in SHAPES:
        for code, dtype in DTYPES:
            x = rng.standard_normal((n, c, h, w)).astype(dtype)
            kern = rng.standard_normal((n, g, k, k, h, w)).astype(dtype)
            grad = rng.standard_normal((n, c, h, w)).astype(dtype)
            out = np.empty_like(x)
            grad_k = np.empty_like(kern)
            for op, a, b, dst in ((0, x, kern, out), (1, grad, kern, out), (2, x, grad, grad_k)):
                for grid, block in (((max(1, -(-h * w // 256)), n * g), 256), ((1, 1), 3)):
                    rc = lib.dwc_cpu_run(op, code, k, a.ctypes.data, b.ctypes.data, dst.ctypes.data,
                                         n, c, g, h, w, grid[0], grid[1], block)
                    if rc != 0:
                        print(f"dwc_cpu_run rejected op {op} dtype {code} K {k}: {rc}")
                        return 2
                    runs += 1
    print(f"{runs} kernel runs without an out-of-bounds access")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
