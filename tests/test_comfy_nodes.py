"""The ComfyUI nodes against stand-ins of folder_paths / comfy.utils / comfy.model_management /
comfy_api.v0_0_2, through both node APIs.

The pack is imported the way ComfyUI imports it (a package named after its path), once as a
ComfyUI with the pinned V3 API sees it and once as one without it (V1), and its nodes are run
the way ComfyUI's execution.py runs each kind; results are compared with the library
(``dlgsanet``) run on the same weights and inputs.
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
from dlgsanet.resample import upscale_rgba_to
from dlgsanet.tiling import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE, MIN_TILE_SIZE

IDS = {
    "DLGSANetModelLoader": "Load DLGSANet Model",
    "DLGSANetUpscale": "Upscale Image with DLGSANet",
    "DLGSANetTiledUpscale": "Tiled Upscale (DLGSANet)",
}
#: Widget inputs of each node, in widget order, as saved workflows store them (append only).
WIDGETS = {
    "DLGSANetModelLoader": ["model_name", "precision"],
    "DLGSANetUpscale": ["scale_by"],
    "DLGSANetTiledUpscale": ["tile_size", "overlap", "scale_by"],
}


@pytest.fixture(scope="module", params=["v3", "v1"])
def pack(request, tmp_path_factory):
    """The pack loaded by a ComfyUI with the pinned V3 API ("v3") and by one without ("v1")."""
    folder = tmp_path_factory.mktemp(f"comfy-{request.param}") / "custom_nodes" / "DLGSANet pack.v1"
    return ch.linked_pack(folder, request.param)


@pytest.fixture(scope="module")
def nodes(pack):
    return ch.registered_nodes(pack)[0]


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


def run(nodes, node_id, **inputs):
    """Run a node as ComfyUI's execution.py does (V1 or V3); its outputs."""
    return ch.execute(nodes[node_id], **inputs)


def load(nodes, name="small_x2.safetensors", precision="auto"):
    return run(nodes, "DLGSANetModelLoader", model_name=name, precision=precision)[0]


def upscale(nodes, model, image, **widgets):
    return run(nodes, "DLGSANetUpscale", dlgsanet_model=model, image=image, **widgets)[0]


def tiled(nodes, model, image, tile_size, overlap, **widgets):
    return run(nodes, "DLGSANetTiledUpscale", dlgsanet_model=model, image=image, tile_size=tile_size,
               overlap=overlap, **widgets)[0]


def reference(models: Path, name="small_x2.safetensors"):
    return dlgsanet.load_model(models / name)


def images(batch=2, height=20, width=24, channels=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, height, width, channels, generator=g)


def normalised_inputs(input_types):
    """INPUT_TYPES with combos written one way: V3 says ("COMBO", {"options": [...]}), V1 ([...], {})."""
    out = {}
    for section, inputs in input_types.items():
        out[section] = {}
        for name, (kind, options) in inputs.items():
            options = dict(options)
            if kind == "COMBO":
                kind = options.pop("options")
                options.pop("multiselect", None)
            out[section][name] = (list(kind) if isinstance(kind, (list, tuple)) else kind, options)
    return out


# ------------------------------------------------------------------------------------------
# which API is exported, and node definitions
# ------------------------------------------------------------------------------------------
def test_exactly_one_node_api_is_exported(pack):
    api = ch.registered_nodes(pack)[2]
    has_v1, has_v3 = hasattr(pack, "NODE_CLASS_MAPPINGS"), hasattr(pack, "comfy_entrypoint")
    assert (has_v1, has_v3) == ((False, True) if api == "v3" else (True, False))
    expected = "v3" if pack.__name__.split("comfy-")[1].startswith("v3") else "v1"
    assert api == expected  # V3 exactly when comfy_api.v0_0_2 imports


def test_v3_nodes_are_schema_nodes_of_the_pinned_api(pack, nodes):
    from comfy_api.v0_0_2 import io

    is_v3 = ch.registered_nodes(pack)[2] == "v3"
    for node_id, cls in nodes.items():
        assert issubclass(cls, io.ComfyNode) is is_v3
        if is_v3:
            assert cls.GET_SCHEMA().node_id == node_id
            assert "define_schema" in cls.__dict__ and "execute" in cls.__dict__


def test_mappings_ids_names_and_category(pack, nodes):
    assert ch.registered_nodes(pack)[1] == IDS
    assert set(nodes) == set(IDS)
    for cls in nodes.values():
        assert cls.CATEGORY == "image/upscaling"


def test_v1_and_v3_describe_the_same_nodes(tmp_path, comfy):
    """Same inputs (names, types, defaults, order, tooltips), outputs, text: what /object_info
    serves and saved workflows rely on is identical whichever API this ComfyUI has."""
    v3, names3, api3 = ch.registered_nodes(ch.linked_pack(tmp_path / "a" / "pack", "v3"))
    v1, names1, api1 = ch.registered_nodes(ch.linked_pack(tmp_path / "b" / "pack", "v1"))
    assert (api3, api1) == ("v3", "v1") and names3 == names1 == IDS
    for node_id in IDS:
        a, b = v3[node_id], v1[node_id]
        ia, ib = normalised_inputs(a.INPUT_TYPES()), normalised_inputs(b.INPUT_TYPES())
        assert ia == ib
        assert [list(s) for s in ia.values()] == [list(s) for s in ib.values()]  # order too
        for attr in ("RETURN_TYPES", "RETURN_NAMES", "OUTPUT_TOOLTIPS"):
            assert list(getattr(a, attr)) == list(getattr(b, attr)), attr
        assert (a.CATEGORY, a.DESCRIPTION) == (b.CATEGORY, b.DESCRIPTION)


@pytest.mark.parametrize("node_id", list(IDS))
def test_every_node_and_input_is_described(nodes, node_id, comfy):
    cls = nodes[node_id]
    assert len(cls.DESCRIPTION) > 40
    spec = cls.INPUT_TYPES()
    inputs = {**spec["required"], **spec.get("optional", {})}
    for name, (_kind, options) in inputs.items():
        assert len(options.get("tooltip", "")) > 20, f"{node_id}.{name} has no tooltip"
    assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
    assert all(len(t) > 20 for t in cls.OUTPUT_TOOLTIPS)
    # ComfyUI calls the node with the inputs as keyword arguments
    fn = cls.execute if hasattr(cls, "execute") else getattr(cls, cls.FUNCTION)
    params = list(inspect.signature(fn).parameters)
    assert params[params[0] == "self":] == list(inputs)


def test_widget_order_is_append_only(nodes, comfy):
    """Saved workflows store widget values by position: old widgets keep their places, new
    ones come last and are optional (an old API-format prompt without them still validates)."""
    for node_id, widgets in WIDGETS.items():
        spec = nodes[node_id].INPUT_TYPES()
        assert ch.widget_inputs(spec) == widgets
    assert list(nodes["DLGSANetUpscale"].INPUT_TYPES()["optional"]) == ["scale_by"]
    assert list(nodes["DLGSANetTiledUpscale"].INPUT_TYPES()["optional"]) == ["scale_by"]


def test_types_and_tiling_defaults(nodes, comfy):
    loader, up, tiled_ = (nodes[i] for i in IDS)
    assert list(loader.RETURN_TYPES) == ["DLGSANET_MODEL"] and list(loader.RETURN_NAMES) == ["dlgsanet_model"]
    assert list(up.RETURN_TYPES) == list(tiled_.RETURN_TYPES) == ["IMAGE"]
    assert list(up.RETURN_NAMES) == list(tiled_.RETURN_NAMES) == ["IMAGE"]
    for cls in (up, tiled_):
        req = cls.INPUT_TYPES()["required"]
        assert req["dlgsanet_model"][0] == "DLGSANET_MODEL" and req["image"][0] == "IMAGE"
        scale_by = cls.INPUT_TYPES()["optional"]["scale_by"]
        assert scale_by[0] == "FLOAT" and scale_by[1]["default"] == 0.0 and scale_by[1]["min"] == 0.0
    req = normalised_inputs(tiled_.INPUT_TYPES())["required"]
    assert req["tile_size"][1]["default"] == DEFAULT_TILE_SIZE
    assert req["tile_size"][1]["min"] == MIN_TILE_SIZE
    assert req["overlap"][1]["default"] == DEFAULT_OVERLAP
    precision = normalised_inputs(loader.INPUT_TYPES())["required"]["precision"]
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


def test_loader_lists_dlgsanet_files_only(pack, nodes, comfy, tmp_path):
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

    choices = ch.pack_module(pack, "nodes.loader").model_choices()
    weights = Path(dlgsanet.default_model_path()).parent
    bundled = ["(bundled) " + p.name for p in sorted(weights.glob("*.safetensors"))]
    expected = sorted(["small_x2.safetensors", os.path.join("sub", "basicsr.pth"), "legacy.pth",
                       "prefixed.safetensors", "dlgsanet_broken.pth", "extra_x3.safetensors"])
    assert choices == bundled + expected
    assert normalised_inputs(nodes["DLGSANetModelLoader"].INPUT_TYPES())["required"]["model_name"][0] == choices
    m = load(nodes, "extra_x3.safetensors")
    assert m.scale == 3


def test_loader_loads_with_precision(pack, nodes, comfy):
    ref = reference(comfy)
    model = load(nodes)
    assert next(model.parameters()).dtype == torch.float32  # auto = fp32 on the CPU
    assert next(model.parameters()).device == mm.unet_offload_device()
    assert model.config.to_dict() == ref.config.to_dict() and not model.training  # two module copies
    for k, v in ref.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    assert next(load(nodes, precision="bf16").parameters()).dtype == torch.bfloat16
    with pytest.raises(errors(pack).DLGSANetError, match="fp16"):
        load(nodes, precision="fp16")  # not safe on this (CPU) device


def test_loader_errors_name_the_file_and_what_it_is(pack, nodes, comfy):
    torch.save(_foreign_state_dict(), comfy / "dlgsanet_x4.pth")
    with pytest.raises(errors(pack).CheckpointError) as err:
        load(nodes, "dlgsanet_x4.pth")
    assert "dlgsanet_x4.pth" in str(err.value) and "ESRGAN" in str(err.value)
    (comfy / "dlgsanet_truncated.safetensors").write_bytes(b"\x10\x00\x00")
    with pytest.raises(errors(pack).CheckpointError, match="dlgsanet_truncated.safetensors"):
        load(nodes, "dlgsanet_truncated.safetensors")
    with pytest.raises(FileNotFoundError, match="upscale_models"):  # ComfyUI's own message
        load(nodes, "missing.safetensors")


def test_loader_bundled_model(pack, nodes, comfy):
    path = dlgsanet.default_model_path()
    if not path.exists():
        pytest.skip(f"no bundled model yet at {path}")
    model = load(nodes, "(bundled) " + path.name)
    assert model.scale == 4 and model.preset == "tiny"


# ------------------------------------------------------------------------------------------
# upscaling
# ------------------------------------------------------------------------------------------
def test_upscale_rgb_batch_equals_library(pack, nodes, comfy):
    image = images(batch=2)
    before = image.clone()
    out = upscale(nodes, load(nodes), image)
    assert out.shape == (2, 40, 48, 3) and out.dtype == torch.float32
    expected = dlgsanet.upscale(reference(comfy), image.movedim(-1, 1)).movedim(1, -1)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    assert torch.equal(image, before)  # never modified in place
    assert out.std() > 0.01


def test_upscale_rgba_keeps_alpha(pack, nodes, comfy):
    image = images(batch=1, height=16, width=20, channels=4)
    image[..., 3] = 0.0
    image[:, :, :10, 3] = 1.0  # left half opaque, right half transparent
    out = upscale(nodes, load(nodes), image)
    assert out.shape == (1, 32, 40, 4)
    rgb_only = upscale(nodes, load(nodes), image[..., :3].contiguous())
    torch.testing.assert_close(out[..., :3], rgb_only, rtol=0, atol=1e-6)
    alpha = out[0, :, :, 3]
    assert torch.all(alpha[:, :16] > 0.99) and torch.all(alpha[:, 24:] < 0.01)
    assert alpha.min() >= 0 and alpha.max() <= 1


@pytest.mark.slow
def test_tiled_upscale_equals_library_and_reports_every_tile(pack, nodes, comfy):
    updates = []
    ch.comfy.utils.set_progress_bar_global_hook(lambda v, t, preview, node_id=None: updates.append((v, t)))
    model, forwards = load(nodes), []
    model.register_forward_hook(lambda *_: forwards.append(1))
    image = images(batch=2, height=100, width=96)  # two 96px tiles per image
    out = tiled(nodes, model, image, 96, 16)
    expected = dlgsanet.upscale(reference(comfy), image.movedim(-1, 1), tile_size=96, overlap=16)
    torch.testing.assert_close(out, expected.movedim(1, -1), rtol=0, atol=1e-6)
    assert len(forwards) >= 4  # really tiled (2 images; tiles cover the border-padded image)
    assert updates[-1] == (len(forwards), len(forwards))
    done = [v for v, _ in updates if v > 0]  # the engine may announce (0, total) first
    assert done == list(range(1, len(forwards) + 1))


def test_memory_is_freed_before_and_given_back_after(pack, nodes, comfy):
    model = load(nodes)
    events = mm._calls
    model.register_forward_pre_hook(lambda *_: events.append(("forward",)))
    upscale(nodes, model, images(batch=1))
    names = [e[0] for e in events]
    assert names[0] == "free_memory" and names[-1] == "soft_empty_cache"
    assert "forward" in names[1:-1]
    _, required, device = events[0]
    assert device == mm.get_torch_device()
    assert required > mm.module_size(model)
    assert next(model.parameters()).device == mm.unet_offload_device()


@pytest.mark.parametrize("newer", [False, True], ids=["comfyui-0.3.75", "newer-comfyui"])
def test_cancel_stops_between_tiles_with_comfyuis_interrupt(pack, nodes, comfy, monkeypatch, newer):
    if newer:
        ch.NewerComfyUI(monkeypatch)
    model, forwards = load(nodes), []

    def after_forward(*_):
        forwards.append(1)
        mm.interrupt_current_processing(True)  # the user presses Cancel during the first tile

    model.register_forward_hook(after_forward)
    with pytest.raises(mm.InterruptProcessingException):
        tiled(nodes, model, images(batch=1, height=96, width=200), 96, 16)
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
def test_out_of_memory_falls_back_to_tiles(pack, nodes, comfy):
    """A CUDA-style OOM on the whole image: the engine re-plans with smaller tiles."""
    model = load(nodes)
    # 104 px: the 96x200 image padded by the engine's border (8 px a side) is 112x216, halved to 104.
    seen = _oom_above(model, 104 * 104, lambda: torch.OutOfMemoryError("CUDA out of memory (injected)"))
    image = images(batch=1, height=96, width=200)
    out = upscale(nodes, model, image)
    ref = reference(comfy)
    ref_seen = _oom_above(ref, 104 * 104, lambda: torch.OutOfMemoryError("CUDA out of memory (injected)"))
    expected = dlgsanet.upscale(ref, image.movedim(-1, 1)).movedim(1, -1)
    assert seen["failed"] >= 1 and seen == ref_seen
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("newer", [False, True], ids=["comfyui-0.3.75", "newer-comfyui"])
def test_out_of_memory_only_comfyui_recognises_is_retried_with_halved_tiles(pack, nodes, comfy, monkeypatch, newer):
    """Errors only this ComfyUI takes for OOM reach the engine's halving through the predicate the
    node passes in (the node has no retry loop of its own)."""
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

    model = load(nodes)
    seen = _oom_above(model, 128 * 112, make_error)  # 112: 96 rows + the engine's 8-px border padding
    image = images(batch=1, height=96, width=200)
    out = upscale(nodes, model, image)
    ref = reference(comfy)
    ref_seen = _oom_above(ref, 128 * 112, make_error)
    is_oom = ch.pack_module(pack, "nodes.host").is_oom
    expected = dlgsanet.upscale(ref, image.movedim(-1, 1), oom_types=(is_oom,))
    assert seen["failed"] >= 1 and seen == ref_seen  # halved by the engine, as it halves its own OOMs
    assert max(h * w for h, w in seen["ok"]) <= 128 * 112
    torch.testing.assert_close(out, expected.movedim(1, -1), rtol=0, atol=1e-6)


def test_other_errors_are_not_taken_for_out_of_memory(pack, nodes, comfy):
    model = load(nodes)
    seen = _oom_above(model, 0, lambda: ValueError("boom"))
    with pytest.raises(ValueError, match="boom"):
        upscale(nodes, model, images(batch=1))
    assert seen["failed"] == 1
    assert next(model.parameters()).device == mm.unet_offload_device()


def test_newer_comfyui_intermediate_dtype(pack, nodes, comfy, monkeypatch):
    ch.NewerComfyUI(monkeypatch, intermediate_dtype=torch.float16)
    image = images(batch=1, channels=4).half()
    out = upscale(nodes, load(nodes), image)
    assert out.dtype == torch.float16 and out.shape == (1, 40, 48, 4)
    expected = upscale_rgba(reference(comfy), image, channels_last=True, output_dtype=torch.float16)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-3)


def test_bad_images_give_clear_errors(pack, nodes, comfy):
    model = load(nodes)
    with pytest.raises(errors(pack).ImageInputError, match="3 or 4 channels"):
        upscale(nodes, model, torch.rand(1, 8, 8, 2))
    with pytest.raises(errors(pack).ImageInputError, match="Load DLGSANet Model"):
        upscale(nodes, object(), torch.rand(1, 8, 8, 3))
    empty = upscale(nodes, model, torch.rand(0, 8, 8, 3))
    assert empty.shape == (0, 16, 16, 3)
    assert upscale(nodes, model, torch.rand(0, 8, 8, 3), scale_by=1.5).shape == (0, 12, 12, 3)
    with pytest.raises(errors(pack).DLGSANetError, match="overlap"):
        tiled(nodes, model, torch.rand(1, 8, 8, 3), 96, 96)


# ------------------------------------------------------------------------------------------
# "scale by"
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale_by", [1.5, 3.0, 2.0], ids=["x1.5-from-x2", "x3-two-passes", "x2-native"])
def test_scale_by_is_the_final_factor_like_the_library(pack, nodes, comfy, scale_by):
    image = images(batch=2, height=10, width=14, channels=4)
    out = upscale(nodes, load(nodes), image, scale_by=scale_by)
    assert out.shape == (2, round(10 * scale_by), round(14 * scale_by), 4)
    expected = upscale_rgba_to(reference(comfy), image, outscale=scale_by, channels_last=True)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_scale_by_default_and_zero_keep_the_model_scale(pack, nodes, comfy):
    """Old workflows (no scale_by value) and scale_by=0 give exactly the model's own result."""
    image = images(batch=1)
    model = load(nodes)
    native = upscale(nodes, model, image)
    assert native.shape == (1, 40, 48, 3)
    assert torch.equal(upscale(nodes, model, image, scale_by=0.0), native)
    assert torch.equal(upscale(nodes, model, image, scale_by=2.0), native)  # the model's own factor
    assert torch.equal(tiled(nodes, model, image, 96, 16, scale_by=0.0), tiled(nodes, model, image, 96, 16))


def test_scale_by_on_the_tiled_node(pack, nodes, comfy):
    image = images(batch=1, height=12, width=16)
    out = tiled(nodes, load(nodes), image, 96, 16, scale_by=1.25)
    expected = upscale_rgba_to(reference(comfy), image, outscale=1.25, channels_last=True,
                               tile_size=96, overlap=16)
    assert out.shape == (1, 15, 20, 3)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_bad_scale_by_fails_before_any_work(pack, nodes, comfy):
    model, forwards = load(nodes), []
    model.register_forward_hook(lambda *_: forwards.append(1))
    with pytest.raises(errors(pack).DLGSANetError, match="scale"):
        upscale(nodes, model, images(batch=1), scale_by=-2.0)
    assert forwards == []
