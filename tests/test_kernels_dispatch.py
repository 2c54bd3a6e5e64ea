"""Backend selection of dlgsanet.ops.dynamic_dwconv and the cupy backend's pure helpers (no GPU).

What runs where: the argument beats $DLGSANET_BACKEND beats auto; a fallback away from a
requested or possible cupy is logged once with its reason; a missing cupy never raises.
"""
from __future__ import annotations

import importlib
import logging
import sys
from typing import Iterator

import pytest
import torch

from dlgsanet.errors import DLGSANetError
from dlgsanet.ops import dynamic_dwconv
from dlgsanet.ops.dynamic_dwconv import cupy_backend
from dlgsanet.ops.dynamic_dwconv.torch_backend import dynamic_dwconv_torch

LOGGER = "dlgsanet.ops.dynamic_dwconv"
# the package re-exports the function under the module's name, so fetch the module explicitly
dispatch_module = importlib.import_module(LOGGER)


@pytest.fixture(autouse=True)
def _fresh_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("DLGSANET_BACKEND", raising=False)
    dispatch_module.reset_fallback_log()
    cupy_backend.reset_caches()
    yield
    dispatch_module.reset_fallback_log()
    cupy_backend.reset_caches()


def _case(n: int = 2, c: int = 6, g: int = 2, h: int = 5, w: int = 4, k: int = 3):
    return torch.randn(n, c, h, w), torch.randn(n, g, k, k, h, w)


def _fallback_lines(caplog: pytest.LogCaptureFixture) -> list:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_default_on_cpu_is_torch_and_silent(caplog: pytest.LogCaptureFixture) -> None:
    x, k = _case()
    caplog.set_level(logging.INFO, logger=LOGGER)
    assert dispatch_module.select_backend(x, k) == ("torch", None)
    torch.testing.assert_close(dynamic_dwconv(x, k), dynamic_dwconv_torch(x, k), rtol=0, atol=0)
    assert _fallback_lines(caplog) == []


@pytest.mark.parametrize("value,expected", [(None, "auto"), ("torch", "torch"), ("CUPY", "cupy"), (" auto ", "auto")])
def test_requested_backend_reads_the_environment(monkeypatch: pytest.MonkeyPatch, value, expected) -> None:
    if value is not None:
        monkeypatch.setenv("DLGSANET_BACKEND", value)
    assert dispatch_module.requested_backend() == expected


def test_argument_beats_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLGSANET_BACKEND", "cupy")
    assert dispatch_module.requested_backend("torch") == "torch"
    x, k = _case()
    assert dispatch_module.select_backend(x, k, "torch") == ("torch", None)


def test_unknown_argument_is_our_error() -> None:
    x, k = _case()
    with pytest.raises(DLGSANetError, match="unknown dynamic_dwconv backend 'triton'"):
        dynamic_dwconv(x, k, backend="triton")
    with pytest.raises(ValueError):  # also a ValueError, like the shape checks
        dynamic_dwconv(x, k, backend="triton")


def test_bad_environment_value_is_logged_once_and_ignored(monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("DLGSANET_BACKEND", "fast")
    caplog.set_level(logging.WARNING, logger=LOGGER)
    x, k = _case()
    for _ in range(3):
        torch.testing.assert_close(dynamic_dwconv(x, k), dynamic_dwconv_torch(x, k))
    lines = _fallback_lines(caplog)
    assert len(lines) == 1 and "DLGSANET_BACKEND='fast'" in lines[0] and "using auto" in lines[0]


def test_forced_cupy_on_cpu_falls_back_with_one_line(monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    x, k = _case()
    monkeypatch.setenv("DLGSANET_BACKEND", "cupy")
    first = dynamic_dwconv(x, k)
    second = dynamic_dwconv(x, k, backend="cupy")
    torch.testing.assert_close(first, dynamic_dwconv_torch(x, k), rtol=0, atol=0)
    torch.testing.assert_close(second, first, rtol=0, atol=0)
    lines = _fallback_lines(caplog)
    assert len(lines) == 1, lines
    assert "PyTorch path" in lines[0] and "need CUDA tensors" in lines[0] and "cpu" in lines[0]


def test_missing_cupy_gives_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)  # what `import cupy` sees when it is not installed
    cupy_backend.reset_caches()
    with pytest.raises(cupy_backend.CupyUnavailable, match="cupy is not installed") as info:
        cupy_backend.import_cupy()
    assert "install.py" in str(info.value) and str(torch.version.cuda) in str(info.value)
    # the reason is cached: the second call does not try again, and still explains itself
    with pytest.raises(cupy_backend.CupyUnavailable, match="not installed"):
        cupy_backend.import_cupy()


def test_gradients_flow_through_the_fallback() -> None:
    x, k = _case()
    x.requires_grad_()
    k.requires_grad_()
    dynamic_dwconv(x, k, backend="cupy").square().sum().backward()
    assert x.grad is not None and k.grad is not None and x.grad.abs().sum() > 0


def test_shape_checks_come_first() -> None:
    x, k = _case()
    with pytest.raises(ValueError, match="incompatible shapes"):
        dynamic_dwconv(x, k[:, :, :2, :2], backend="cupy")


# ------------------------------------------------------------------------------------------------
# Pure helpers of the cupy backend
# ------------------------------------------------------------------------------------------------
def test_source_is_found_and_is_the_repository_file() -> None:
    path = cupy_backend.kernel_source_path()
    assert path.name == "dynamic_dwconv.cu" and "dwconv_forward" in cupy_backend.kernel_source()


def test_block_size_and_strip_agree_with_the_source() -> None:
    assert f"#define DWC_BLOCK_THREADS {cupy_backend.BLOCK_THREADS}" in cupy_backend.kernel_source()
    assert f"-DDWC_BLOCK_THREADS={cupy_backend.BLOCK_THREADS}" in cupy_backend.nvrtc_options()
    assert f"#define DWC_STRIP {cupy_backend.STRIP}" in cupy_backend.kernel_source()
    assert f"-DDWC_STRIP={cupy_backend.STRIP}" in cupy_backend.nvrtc_options()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_strip_widths(dtype: torch.dtype) -> None:
    forward, grad_input, grad_kernels = (cupy_backend.strip_width(name, dtype) for name in cupy_backend.KERNEL_NAMES)
    assert forward == grad_input == (1 if dtype == torch.float64 else cupy_backend.STRIP) and grad_kernels == 1


@pytest.mark.parametrize("dtype,type_name", [(torch.float32, "float"), (torch.float64, "double"),
                                             (torch.float16, "dwc_half"), (torch.bfloat16, "dwc_bfloat16")])
def test_name_expressions(dtype: torch.dtype, type_name: str) -> None:
    assert cupy_backend.name_expressions(dtype, 7) == (
        f"dwconv_forward<{type_name}, 7>", f"dwconv_grad_input<{type_name}, 7>",
        f"dwconv_grad_kernels<{type_name}, 7>")


@pytest.mark.parametrize("dtype,k", [(torch.int32, 3), (torch.float32, 4), (torch.float32, 0)])
def test_name_expressions_refuse_what_the_kernels_cannot_do(dtype: torch.dtype, k: int) -> None:
    with pytest.raises(cupy_backend.CupyUnavailable):
        cupy_backend.name_expressions(dtype, k)


@pytest.mark.parametrize("n,g,h,w", [(1, 8, 256, 256), (3, 15, 37, 53), (1, 1, 1, 1), (5000, 15, 4, 4)])
def test_launch_config_is_within_cuda_limits(n: int, g: int, h: int, w: int) -> None:
    (gx, gy, gz), (bx, by, bz) = cupy_backend.launch_config(n, g, h, w)
    assert (by, bz, gz) == (1, 1, 1) and bx == cupy_backend.BLOCK_THREADS
    assert 1 <= gx <= 2**31 - 1 and 1 <= gy <= 65535
    assert gx * bx >= h * w  # one thread per pixel (the y loop strides when N*G > 65535)
    assert gy == min(n * g, 65535)
    (sx, sy, _), _ = cupy_backend.launch_config(n, g, h, w, strip=4)
    assert sx * bx >= h * -(-w // 4) and (sx - 1) * bx < h * -(-w // 4) and sy == gy  # one thread per strip


def test_unavailable_reasons_on_cpu() -> None:
    x, k = _case()
    assert "CUDA tensors" in cupy_backend.unavailable_reason(x, k)
