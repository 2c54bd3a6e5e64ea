"""CPU training's faster path (``dlgsanet.ops.cpu_training``): same gradients, clean fallback.

The C++ dynamic conv and GELU gate (``kernels/cpu_train.cpp``) are checked by ``gradcheck`` in
float64 and against PyTorch's autograd; a whole small network trained on the faster path gives
the gradients of the plain PyTorch path on every parameter and on the input; the switch, a
missing compiler and a failed self-check all give the PyTorch path; inference never changes.
"""
from __future__ import annotations

import importlib
import logging
import os
from typing import Iterator

import pytest
import torch
import torch.nn.functional as F

from core_helpers import randomise, small_config
from dlgsanet import DLGSANet
from dlgsanet.model.mhdlsa import DynamicDWConv
from dlgsanet.ops import cpu_training, gelu_gate as gate_module, native, train_kernels
from dlgsanet.ops.cpu_training import cpu_training_kernels
from dlgsanet.ops.dynamic_dwconv import cpu_backend, dynamic_dwconv
from dlgsanet.ops.dynamic_dwconv.torch_backend import dynamic_dwconv_torch

dispatch = importlib.import_module("dlgsanet.ops.dynamic_dwconv")
LOGGER = "dlgsanet.ops.dynamic_dwconv"
RELATIVE = 1e-4


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(cpu_training.ENV_VAR, raising=False)
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    train_kernels.reset()
    dispatch.reset_fallback_log()
    gate_module._log_once.reset()
    yield
    train_kernels.reset()
    dispatch.reset_fallback_log()
    gate_module._log_once.reset()


def kernels_or_skip() -> None:
    """Skip where no compiler can build the kernels; anything else that keeps them out (a failed
    build or self-check) is a failure."""
    if os.name != "posix" or native.compiler() is None:
        pytest.skip("no C++ compiler for the training kernels")
    reason = cpu_backend.unavailable_reason(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1, 1, 1))
    assert reason is None, reason


def case(n: int, c: int, g: int, k: int, h: int, w: int, dtype=torch.float32, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen, dtype=dtype).requires_grad_()
    kern = torch.randn(n, g, k, k, h, w, generator=gen, dtype=dtype).requires_grad_()
    return x, kern


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


# shapes: channels per group 6 (the presets), 10 (two chunks of the C++ loop), 1; K 3/5/7; rows
# and columns narrower than K, widths that are not a multiple of the vector width
SHAPES = [(2, 12, 2, 7, 9, 13), (1, 20, 2, 3, 5, 17), (2, 6, 6, 5, 4, 3), (1, 6, 1, 7, 2, 8)]


@pytest.mark.parametrize("shape", SHAPES)
def test_gradcheck_float64(shape, one_torch_thread) -> None:
    kernels_or_skip()
    x, kern = case(*shape, dtype=torch.float64)
    assert torch.autograd.gradcheck(cpu_backend.dynamic_dwconv_cpu, (x, kern))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", SHAPES)
def test_float32_matches_the_pytorch_function(shape, threads: int) -> None:
    kernels_or_skip()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x, kern = case(*shape, seed=1)
        grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
        ours = cpu_backend.dynamic_dwconv_cpu(x, kern)
        theirs = dynamic_dwconv_torch(x, kern)
        assert relative(ours, theirs) < 1e-5
        for a, b in zip(torch.autograd.grad(ours, (x, kern), grad), torch.autograd.grad(theirs, (x, kern), grad)):
            assert relative(a, b) < 1e-5
    finally:
        torch.set_num_threads(before)


def test_only_the_requested_gradient_is_computed() -> None:
    kernels_or_skip()
    x, kern = case(*SHAPES[0])
    x.requires_grad_(False)
    out = dynamic_dwconv(x, kern)
    assert "Cpu" in type(out.grad_fn).__name__
    (gk,) = torch.autograd.grad(out.sum(), (kern,))
    (expect,) = torch.autograd.grad(dynamic_dwconv_torch(x, kern).sum(), (kern,))
    assert relative(gk, expect) < 1e-5


def _model_gradients(model: DLGSANet, x: torch.Tensor, grad_out: torch.Tensor, enabled: bool) -> dict:
    """Gradients for a fixed output gradient: the L1 loss's sign flips wherever the two paths'
    outputs straddle the target by a rounding error, which would test the loss, not the kernels."""
    model.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    with cpu_training_kernels(enabled):
        model(x).backward(grad_out)
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    grads["<input>"] = x.grad.clone()
    return grads


def test_network_gradients_match_the_pytorch_path(monkeypatch: pytest.MonkeyPatch) -> None:
    kernels_or_skip()
    calls, gates = [], []
    real = cpu_backend.dynamic_dwconv_cpu
    monkeypatch.setattr(dispatch, "dynamic_dwconv_cpu", lambda *a: calls.append(1) or real(*a))
    real_gate = gate_module.GeluGateCpuFunction.apply
    monkeypatch.setattr(gate_module.GeluGateCpuFunction, "apply", lambda *a: gates.append(1) or real_gate(*a))
    config = small_config(groups=2, blocks=2)
    model = randomise(DLGSANet(config), seed=3).train()
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, 12, 10, generator=gen)
    grad_out = torch.randn(2, 3, 24, 20, generator=gen)
    plain = _model_gradients(model, x, grad_out, enabled=False)
    assert not calls and not gates
    fast = _model_gradients(model, x, grad_out, enabled=True)
    assert len(calls) == config.groups * config.blocks  # every MHDLSA took the C++ kernels
    assert len(gates) == 2 * config.groups * config.blocks  # and every feed-forward
    assert plain.keys() == fast.keys()
    for name, g in plain.items():
        assert fast[name] is not None and g.abs().max() > 0, name
        assert relative(fast[name], g) < RELATIVE, name


def test_per_pixel_kernels_gemm_in_training_conv_otherwise() -> None:
    conv = randomise(DynamicDWConv(12, 5, 6), seed=5)
    hidden = torch.randn(2, 3, 6, 7)
    with torch.no_grad():  # inference: the convolution itself, bit for bit
        assert torch.equal(conv.per_pixel_kernels(hidden), conv.conv2(hidden))
    trained = hidden.clone().requires_grad_()
    fast = conv.per_pixel_kernels(trained)
    assert "bmm" in type(fast.grad_fn.next_functions[0][0]).__name__.lower()  # behind the view
    with cpu_training_kernels(False):
        plain = conv.per_pixel_kernels(trained)
    assert "Convolution" in type(plain.grad_fn).__name__
    assert relative(fast, plain) < 1e-5
    grad = torch.randn(fast.shape)
    ours = torch.autograd.grad(fast, (trained, conv.conv2[0].weight, conv.conv2[0].bias), grad)
    theirs = torch.autograd.grad(plain, (trained, conv.conv2[0].weight, conv.conv2[0].bias), grad)
    for a, b in zip(ours, theirs):
        assert relative(a, b) < 1e-5


def test_dispatch_takes_the_kernels_only_in_cpu_training(monkeypatch: pytest.MonkeyPatch) -> None:
    kernels_or_skip()
    x, kern = case(*SHAPES[0])
    assert dispatch.select_backend(x, kern) == ("cpu", None)
    assert dispatch.select_backend(x, kern, "torch") == ("torch", None)
    with torch.no_grad():
        assert dispatch.select_backend(x, kern) == ("torch", None)
    assert dispatch.select_backend(x.detach(), kern.detach()) == ("torch", None)
    with cpu_training_kernels(False):
        assert dispatch.select_backend(x, kern) == ("torch", None)
    monkeypatch.setenv(cpu_training.ENV_VAR, "off")
    assert dispatch.select_backend(x, kern) == ("torch", None)
    with cpu_training_kernels(True):  # the context manager beats the environment
        assert dispatch.select_backend(x, kern) == ("cpu", None)


def _falls_back_with_one_line(caplog: pytest.LogCaptureFixture, needle: str) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    x, kern = case(*SHAPES[0])
    for _ in range(2):
        out = dynamic_dwconv(x, kern)
        assert type(out.grad_fn).__name__.startswith("DynamicDWConvFunction")  # the PyTorch Function
    torch.testing.assert_close(out, dynamic_dwconv_torch(x, kern), rtol=0, atol=0)
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(lines) == 1 and needle in lines[0] and "PyTorch path" in lines[0], lines


def test_no_compiler_falls_back(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(native, "compiler", lambda: None)
    _falls_back_with_one_line(caplog, "no C++ compiler")


def test_failed_self_check_falls_back(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    kernels_or_skip()
    train_kernels.reset()

    def wrong() -> None:
        raise train_kernels.TrainKernelsUnavailable("self-check failed: output differs")

    monkeypatch.setattr(train_kernels, "_self_check", wrong)
    _falls_back_with_one_line(caplog, "self-check failed")


def test_turned_off_is_silent(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    monkeypatch.setenv(cpu_training.ENV_VAR, "off")
    x, kern = case(*SHAPES[0])
    out = dynamic_dwconv(x, kern)
    assert type(out.grad_fn).__name__.startswith("DynamicDWConvFunction")
    assert not [r for r in caplog.records if r.name == LOGGER]


def test_inference_does_not_depend_on_the_switch() -> None:
    model = randomise(DLGSANet(small_config()), seed=6).eval()
    x = torch.rand(1, 3, 10, 9)
    with torch.no_grad():
        with cpu_training_kernels(True):
            on = model(x)
        with cpu_training_kernels(False):
            off = model(x)
    assert torch.equal(on, off)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (37,)])
def test_gelu_gate_gradcheck_float64(shape, one_torch_thread) -> None:
    kernels_or_skip()
    gen = torch.Generator().manual_seed(7)
    gate = (torch.randn(shape, generator=gen, dtype=torch.float64) * 3).requires_grad_()
    value = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gate_module.GeluGateCpuFunction.apply, (gate, value))


@pytest.mark.parametrize("threads", [1, 2])
def test_gelu_gate_float32_matches_pytorch(threads: int) -> None:
    kernels_or_skip()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(8)
        gate = (torch.randn(3, 9, 11, 37, generator=gen) * 4).requires_grad_()  # not a multiple of 8
        value = torch.randn(3, 9, 11, 37, generator=gen, requires_grad=True)
        grad = torch.randn(gate.shape, generator=gen)
        ours = gate_module.gelu_gate(gate, value)
        assert "GeluGate" in type(ours.grad_fn).__name__
        theirs = F.gelu(gate) * value
        assert relative(ours, theirs) < 1e-5
        for a, b in zip(torch.autograd.grad(ours, (gate, value), grad), torch.autograd.grad(theirs, (gate, value), grad)):
            assert relative(a, b) < 1e-5
    finally:
        torch.set_num_threads(before)


def test_gelu_gate_falls_back_without_a_compiler(monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(native, "compiler", lambda: None)
    caplog.set_level(logging.WARNING, logger=gate_module.__name__)
    gate, value = torch.randn(2, 5, requires_grad=True), torch.randn(2, 5, requires_grad=True)
    for _ in range(2):
        out = gate_module.gelu_gate(gate, value)
    assert "Mul" in type(out.grad_fn).__name__
    torch.testing.assert_close(out, F.gelu(gate) * value, rtol=0, atol=0)
    lines = [r.getMessage() for r in caplog.records if r.name == gate_module.__name__]
    assert len(lines) == 1 and "no C++ compiler" in lines[0], lines
