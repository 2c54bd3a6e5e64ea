"""The ComfyUI nodes against stand-ins of folder_paths / comfy.utils / comfy.model_management.

The pack is imported the way ComfyUI imports it (a package named after its path); results are
compared with the library (``dlgsanet``) run on the same weights and inputs.
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path

import pytest
import torch

import comfy_helpers as ch
from comfy_helpers import folder_paths, mm, random_model, small_config

import dlgsanet
from dlgsanet.alpha import upscale_rgba
from dlgsanet.tiling import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE, MIN_TILE_SIZE

IDS = {
    "DLGSANetModelLoader": "Load DLGSANet Model",
    "DLGSANetUpscale": "Upscale Image with DLGSANet",
    "DLGSANetTiledUpscale": "Tiled Upscale (DLGSANet)",
}


@pytest.fixture(scope="module")
def pack():
    return ch.load_pack(ch.REPO_ROOT)


@pytest.fixture
def comfy(tmp_path):
    """A fresh ComfyUI base directory with an upscale_models folder holding one x2 model."""
    folder_paths._reset(str(tmp_path))
    models = tmp_path / "models" / "upscale_models"
    models.mkdir(parents=True)
    dlgsanet.save_model(random_model(small_config(scale=2)), models / "small_x2.safetensors")
    mm._calls.clear()
    mm.interrupt_current_processing(False)
    ch.comfy.utils.set_progress_bar_global_hook(None)
    yield models
    mm.interrupt_current_processing(False)
    ch.comfy.utils.set_progress_bar_global_hook(None)


def errors(pack):
    """The pack's own exception classes (ComfyUI imports the pack's copy of dlgsanet)."""
    return ch.pack_module(pack, "dlgsanet")


def run(pack, node_id, *inputs):
    """Call a node's FUNCTION as ComfyUI's execution.py does: a fresh instance, inference mode."""
    cls = pack.NODE_CLASS_MAPPINGS[node_id]
    with torch.inference_mode():
        return getattr(cls(), cls.FUNCTION)(*inputs)


def load(pack, name="small_x2.safetensors", precision="auto"):
    return run(pack, "DLGSANetModelLoader", name, precision)[0]


def reference(models: Path, name="small_x2.safetensors"):
    return dlgsanet.load_model(models / name)


def images(batch=2, height=20, width=24, channels=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, height, width, channels, generator=g)


# ------------------------------------------------------------------------------------------
# node definitions
# ------------------------------------------------------------------------------------------
def test_mappings_ids_names_and_category(pack):
    assert pack.NODE_DISPLAY_NAME_MAPPINGS == IDS
    assert set(pack.NODE_CLASS_MAPPINGS) == set(IDS)
    for cls in pack.NODE_CLASS_MAPPINGS.values():
        assert cls.CATEGORY == "image/upscaling"


@pytest.mark.parametrize("node_id", list(IDS))
def test_every_node_and_input_is_described(pack, node_id, comfy):
    cls = pack.NODE_CLASS_MAPPINGS[node_id]
    assert len(cls.DESCRIPTION) > 40
    spec = cls.INPUT_TYPES()
    inputs = {**spec["required"], **spec.get("optional", {})}
    for name, (_kind, options) in inputs.items():
        assert len(options.get("tooltip", "")) > 20, f"{node_id}.{name} has no tooltip"
    assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
    # ComfyUI calls FUNCTION with the inputs as keyword arguments
    params = list(inspect.signature(getattr(cls, cls.FUNCTION)).parameters)[1:]
    assert params == list(inputs)


def test_types_and_tiling_defaults(pack, comfy):
    loader, up, tiled = (pack.NODE_CLASS_MAPPINGS[i] for i in IDS)
    assert loader.RETURN_TYPES == ("DLGSANET_MODEL",)
    assert up.RETURN_TYPES == tiled.RETURN_TYPES == ("IMAGE",)
    for cls in (up, tiled):
        req = cls.INPUT_TYPES()["required"]
        assert req["dlgsanet_model"][0] == "DLGSANET_MODEL" and req["image"][0] == "IMAGE"
    req = tiled.INPUT_TYPES()["required"]
    assert req["tile_size"][1]["default"] == DEFAULT_TILE_SIZE
    assert req["tile_size"][1]["min"] == MIN_TILE_SIZE
    assert req["overlap"][1]["default"] == DEFAULT_OVERLAP
    precision = loader.INPUT_TYPES()["required"]["precision"]
    assert precision[0] == ["auto", "fp32", "bf16", "fp16"] and precision[1]["default"] == "auto"


# ------------------------------------------------------------------------------------------
# loader
# ------------------------------------------------------------------------------------------
def _foreign_state_dict():
    spandrel = pytest.importorskip("spandrel")
    from spandrel.architectures import ESRGAN

    cls = getattr(ESRGAN, "ESRGAN", None) or ESRGAN.RRDBNet  # 0.4.x / 0.3.x name
    sd = cls(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4).state_dict()
    assert spandrel.ModelLoader().load_from_state_dict(sd).architecture.id == "ESRGAN"
    return sd


def test_loader_lists_dlgsanet_files_only(pack, comfy, tmp_path):
    from safetensors.torch import save_file

    sd = random_model(small_config()).state_dict()
    (comfy / "sub").mkdir()
    torch.save({"params_ema": sd}, comfy / "sub" / "basicsr.pth")
    torch.save(sd, comfy / "legacy.pth", _use_new_zipfile_serialization=False)
    save_file({f"module.{k}": v for k, v in sd.items()}, str(comfy / "prefixed.safetensors"))
    foreign = _foreign_state_dict()
    torch.save(foreign, comfy / "4x_esrgan.pth")
    save_file(foreign, str(comfy / "4x_esrgan.safetensors"))
    (comfy / "dlgsanet_broken.pth").write_bytes(b"\x00" * 100)  # named so: listed, explains on load
    (comfy / "readme.txt").write_text("not a model")
    extra = tmp_path / "elsewhere"  # a folder added by extra_model_paths.yaml
    extra.mkdir()
    dlgsanet.save_model(random_model(small_config(scale=3)), extra / "extra_x3.safetensors")
    folder_paths.add_model_folder_path("upscale_models", str(extra))

    choices = pack.nodes.loader.model_choices()
    weights = Path(dlgsanet.default_model_path()).parent
    bundled = ["(bundled) " + p.name for p in sorted(weights.glob("*.safetensors"))]
    expected = sorted(["small_x2.safetensors", os.path.join("sub", "basicsr.pth"), "legacy.pth",
                       "prefixed.safetensors", "dlgsanet_broken.pth", "extra_x3.safetensors"])
    assert choices == bundled + expected
    assert pack.nodes.loader.DLGSANetModelLoader.INPUT_TYPES()["required"]["model_name"][0] == choices
    m = load(pack, "extra_x3.safetensors")
    assert m.scale == 3


def test_loader_loads_with_precision(pack, comfy):
    ref = reference(comfy)
    model = load(pack)
    assert next(model.parameters()).dtype == torch.float32  # auto = fp32 on the CPU
    assert next(model.parameters()).device == mm.unet_offload_device()
    assert model.config.to_dict() == ref.config.to_dict() and not model.training  # two module copies
    for k, v in ref.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    assert next(load(pack, precision="bf16").parameters()).dtype == torch.bfloat16
    with pytest.raises(errors(pack).DLGSANetError, match="fp16"):
        load(pack, precision="fp16")  # not safe on this (CPU) device


def test_loader_errors_name_the_file_and_what_it_is(pack, comfy):
    torch.save(_foreign_state_dict(), comfy / "dlgsanet_x4.pth")
    with pytest.raises(errors(pack).CheckpointError) as err:
        load(pack, "dlgsanet_x4.pth")
    assert "dlgsanet_x4.pth" in str(err.value) and "ESRGAN" in str(err.value)
    (comfy / "dlgsanet_truncated.safetensors").write_bytes(b"\x10\x00\x00")
    with pytest.raises(errors(pack).CheckpointError, match="dlgsanet_truncated.safetensors"):
        load(pack, "dlgsanet_truncated.safetensors")
    with pytest.raises(FileNotFoundError, match="upscale_models"):  # ComfyUI's own message
        load(pack, "missing.safetensors")


def test_loader_bundled_model(pack, comfy):
    path = dlgsanet.default_model_path()
    if not path.exists():
        pytest.skip(f"no bundled model yet at {path}")
    model = load(pack, "(bundled) " + path.name)
    assert model.scale == 4 and model.preset == "tiny"


# ------------------------------------------------------------------------------------------
# upscaling
# ------------------------------------------------------------------------------------------
def test_upscale_rgb_batch_equals_library(pack, comfy):
    image = images(batch=2)
    before = image.clone()
    out = run(pack, "DLGSANetUpscale", load(pack), image)[0]
    assert out.shape == (2, 40, 48, 3) and out.dtype == torch.float32
    expected = dlgsanet.upscale(reference(comfy), image.movedim(-1, 1)).movedim(1, -1)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    assert torch.equal(image, before)  # never modified in place
    assert out.std() > 0.01


def test_upscale_rgba_keeps_alpha(pack, comfy):
    image = images(batch=1, height=16, width=20, channels=4)
    image[..., 3] = 0.0
    image[:, :, :10, 3] = 1.0  # left half opaque, right half transparent
    out = run(pack, "DLGSANetUpscale", load(pack), image)[0]
    assert out.shape == (1, 32, 40, 4)
    rgb_only = run(pack, "DLGSANetUpscale", load(pack), image[..., :3].contiguous())[0]
    torch.testing.assert_close(out[..., :3], rgb_only, rtol=0, atol=1e-6)
    alpha = out[0, :, :, 3]
    assert torch.all(alpha[:, :16] > 0.99) and torch.all(alpha[:, 24:] < 0.01)
    assert alpha.min() >= 0 and alpha.max() <= 1


@pytest.mark.slow
def test_tiled_upscale_equals_library_and_reports_every_tile(pack, comfy):
    updates = []
    ch.comfy.utils.set_progress_bar_global_hook(lambda v, t, preview, node_id=None: updates.append((v, t)))
    model, forwards = load(pack), []
    model.register_forward_hook(lambda *_: forwards.append(1))
    image = images(batch=2, height=100, width=96)  # two 96px tiles per image
    out = run(pack, "DLGSANetTiledUpscale", model, image, 96, 16)[0]
    expected = dlgsanet.upscale(reference(comfy), image.movedim(-1, 1), tile_size=96, overlap=16)
    torch.testing.assert_close(out, expected.movedim(1, -1), rtol=0, atol=1e-6)
    assert len(forwards) == 4  # really tiled
    assert updates[-1] == (len(forwards), len(forwards))
    assert [v for v, _ in updates] == list(range(1, len(forwards) + 1))


def test_memory_is_freed_before_and_given_back_after(pack, comfy):
    model = load(pack)
    events = mm._calls
    model.register_forward_pre_hook(lambda *_: events.append(("forward",)))
    run(pack, "DLGSANetUpscale", model, images(batch=1))
    names = [e[0] for e in events]
    assert names[0] == "free_memory" and names[-1] == "soft_empty_cache"
    assert "forward" in names[1:-1]
    _, required, device = events[0]
    assert device == mm.get_torch_device()
    assert required > mm.module_size(model)
    assert next(model.parameters()).device == mm.unet_offload_device()


@pytest.mark.parametrize("newer", [False, True], ids=["comfyui-0.3.75", "newer-comfyui"])
def test_cancel_stops_between_tiles_with_comfyuis_interrupt(pack, comfy, monkeypatch, newer):
    if newer:
        ch.NewerComfyUI(monkeypatch)
    model, forwards = load(pack), []

    def after_forward(*_):
        forwards.append(1)
        mm.interrupt_current_processing(True)  # the user presses Cancel during the first tile

    model.register_forward_hook(after_forward)
    with pytest.raises(mm.InterruptProcessingException):
        run(pack, "DLGSANetTiledUpscale", model, images(batch=1, height=96, width=200), 96, 16)
    assert len(forwards) == 1
    assert not mm.processing_interrupted()  # ComfyUI's flag was consumed by the raise
    assert mm._calls[-1][0] == "soft_empty_cache"
    assert issubclass(mm.InterruptProcessingException, Exception) is not newer


def _oom_above(model, max_pixels, make_error):
    seen = {"ok": [], "failed": 0}

    def pre(_module, args):
        h, w = args[0].shape[-2:]
        if h * w > max_pixels:
            seen["failed"] += 1
            raise make_error()
        seen["ok"].append((h, w))

    model.register_forward_pre_hook(pre)
    return seen


@pytest.mark.slow
def test_out_of_memory_falls_back_to_tiles(pack, comfy):
    """A CUDA-style OOM on the whole image: the engine re-plans with smaller tiles."""
    model = load(pack)
    seen = _oom_above(model, 96 * 96, lambda: torch.OutOfMemoryError("CUDA out of memory (injected)"))
    image = images(batch=1, height=96, width=200)
    out = run(pack, "DLGSANetUpscale", model, image)[0]
    ref = reference(comfy)
    ref_seen = _oom_above(ref, 96 * 96, lambda: torch.OutOfMemoryError("CUDA out of memory (injected)"))
    expected = dlgsanet.upscale(ref, image.movedim(-1, 1)).movedim(1, -1)
    assert seen["failed"] >= 1 and seen == ref_seen
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("newer", [False, True], ids=["comfyui-0.3.75", "newer-comfyui"])
def test_out_of_memory_only_comfyui_recognises_is_retried_with_halved_tiles(pack, comfy, monkeypatch, newer):
    """Errors the engine does not take for OOM, but this ComfyUI does, are retried by the node."""
    if newer:  # newer ComfyUI's is_oom: an accelerator error with error code 2
        ch.NewerComfyUI(monkeypatch, intermediate_dtype=torch.float32)

        def make_error():
            e = torch.AcceleratorError("CUDA error: resource allocation failed (injected)")
            e.error_code = 2
            return e
    else:  # older ComfyUI: our fallback reads the message of a RuntimeError subclass
        class DriverError(RuntimeError):
            pass

        def make_error():
            return DriverError("driver: out of memory (injected)")

    model = load(pack)
    seen = _oom_above(model, 128 * 96, make_error)
    image = images(batch=1, height=96, width=200)
    out = run(pack, "DLGSANetUpscale", model, image)[0]
    assert seen["failed"] == 2  # auto (whole image), then 256 (still whole), then 128 tiles
    assert max(h * w for h, w in seen["ok"]) <= 128 * 96
    expected = dlgsanet.upscale(reference(comfy), image.movedim(-1, 1), tile_size=128)
    torch.testing.assert_close(out, expected.movedim(1, -1), rtol=0, atol=1e-6)


def test_other_errors_are_not_taken_for_out_of_memory(pack, comfy):
    model = load(pack)
    seen = _oom_above(model, 0, lambda: ValueError("boom"))
    with pytest.raises(ValueError, match="boom"):
        run(pack, "DLGSANetUpscale", model, images(batch=1))
    assert seen["failed"] == 1
    assert next(model.parameters()).device == mm.unet_offload_device()


def test_newer_comfyui_intermediate_dtype(pack, comfy, monkeypatch):
    ch.NewerComfyUI(monkeypatch, intermediate_dtype=torch.float16)
    image = images(batch=1, channels=4).half()
    out = run(pack, "DLGSANetUpscale", load(pack), image)[0]
    assert out.dtype == torch.float16 and out.shape == (1, 40, 48, 4)
    expected = upscale_rgba(reference(comfy), image, channels_last=True, output_dtype=torch.float16)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-3)


def test_bad_images_give_clear_errors(pack, comfy):
    model = load(pack)
    with pytest.raises(errors(pack).ImageInputError, match="3 or 4 channels"):
        run(pack, "DLGSANetUpscale", model, torch.rand(1, 8, 8, 2))
    with pytest.raises(errors(pack).ImageInputError, match="Load DLGSANet Model"):
        run(pack, "DLGSANetUpscale", object(), torch.rand(1, 8, 8, 3))
    empty = run(pack, "DLGSANetUpscale", model, torch.rand(0, 8, 8, 3))[0]
    assert empty.shape == (0, 16, 16, 3)
    with pytest.raises(errors(pack).DLGSANetError, match="overlap"):
        run(pack, "DLGSANetTiledUpscale", model, torch.rand(1, 8, 8, 3), 96, 96)
