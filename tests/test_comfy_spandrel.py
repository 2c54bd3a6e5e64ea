"""DLGSANet as a spandrel architecture: exact detection both ways, loading, idempotent registration.

Runs against the installed spandrel (0.4.x, as in ComfyUI); the integration suite re-runs this
file under spandrel 0.3.4 (the A1111/Forge pin), see tests/integration/test_spandrel_034.py.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys

import pytest
import torch

spandrel = pytest.importorskip("spandrel", reason="spandrel (optional extra) is not installed")

from comfy_helpers import random_model, small_config  # noqa: E402
import dlgsanet_spandrel  # noqa: E402  (the repository root's host adapter)
from dlgsanet import (CheckpointError, DLGSANetConfig, is_dlgsanet_state_dict,  # noqa: E402
                      model_from_state_dict, preset_config)
from dlgsanet_spandrel import ARCH_ID  # noqa: E402

detect = is_dlgsanet_state_dict


def register(registry=None) -> bool:
    """Register as both hosts do, with the package's detect and build functions."""
    return dlgsanet_spandrel.register(is_dlgsanet_state_dict, model_from_state_dict, registry)

DLGSANET_CONFIGS = {
    "tiny-x4": preset_config("tiny", 4),
    "light-x2": preset_config("light", 2),
    "large-x3": preset_config("large", 3),
    "small-x1": small_config(scale=1),
    "small-x2-2groups-2blocks": small_config(scale=2, groups=2, blocks=2),
    "small-x4-window5-heads": small_config(scale=4, window=5, local_heads=6, global_heads=3),
    "small-x8-ffn3": small_config(scale=8, ffn_expansion=3.0),
}
# Loading builds the network twice; the big presets are covered by detection above (CPU time).
LOAD_CONFIGS = [name for name in DLGSANET_CONFIGS if not name.startswith(("light", "large"))]

# Other architectures, built through spandrel's own classes with random weights: (id, module,
# class names across spandrel versions, constructor kwargs kept small).
FOREIGN = [
    ("ESRGAN", "ESRGAN", ("ESRGAN", "RRDBNet"), dict(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4)),
    ("Compact", "Compact", ("Compact", "SRVGGNetCompact"),
     dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=4)),
    ("SPAN", "SPAN", ("SPAN",), dict(num_in_ch=3, num_out_ch=3, feature_channels=12, upscale=4)),
    ("SwinIR", "SwinIR", ("SwinIR",), dict(img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=4,
                                           upscale=2, upsampler="pixelshuffledirect")),
    ("DAT", "DAT", ("DAT",), dict(embed_dim=12, depth=[1], num_heads=[2], split_size=[2, 4], upscale=2)),
    ("SAFMN", "SAFMN", ("SAFMN",), dict(dim=8, n_blocks=1, upscaling_factor=4)),
    ("OmniSR", "OmniSR", ("OmniSR",), dict(num_feat=16, res_num=1, up_scale=4, window_size=4)),
    # Restormer-style layers (norm1.body, attn.temperature, project_in, dwconv) like DLGSANet's:
    ("FFTformer", "FFTformer", ("FFTformer",), dict(dim=8, num_blocks=[1, 1, 1], num_refinement_blocks=1)),
    ("NAFNet", "NAFNet", ("NAFNet",), dict(width=8, enc_blk_nums=[1], dec_blk_nums=[1], middle_blk_num=1)),
    ("DITN", "DITN", ("DITN",), dict(dim=12, ITL_blocks=1, SAL_blocks=1, upscale=4)),
    ("PLKSR", "PLKSR", ("PLKSR",), dict(dim=12, n_blocks=2, upscaling_factor=4)),
    ("RCAN", "RCAN", ("RCAN",), dict(n_resgroups=1, n_resblocks=1, n_feats=16, reduction=4, scale=2)),
]


def foreign_state_dict(module_name: str, class_names: tuple[str, ...], kwargs: dict) -> dict:
    try:
        module = importlib.import_module(f"spandrel.architectures.{module_name}")
    except ImportError:
        pytest.skip(f"spandrel {spandrel.__version__} has no {module_name} architecture")
    cls = next((getattr(module, n) for n in class_names if hasattr(module, n)), None)
    if cls is None:
        pytest.skip(f"spandrel {spandrel.__version__}: no class {class_names} in {module_name}")
    torch.manual_seed(0)
    return cls(**kwargs).state_dict()


def builtin_archs() -> list:
    return [a for a in spandrel.MAIN_REGISTRY.architectures("detection") if a.architecture.id != ARCH_ID]


@pytest.fixture(scope="module")
def registry():
    """spandrel's built-ins plus DLGSANet, without touching the process-wide MAIN_REGISTRY."""
    reg = spandrel.ArchRegistry()
    reg.add(*builtin_archs())
    assert register(reg) is True
    return reg


@pytest.fixture(scope="module")
def dlgsanet_state_dicts() -> dict[str, dict]:
    return {name: random_model(cfg).state_dict() for name, cfg in DLGSANET_CONFIGS.items()}


def test_builtin_registry_is_large_enough_to_mean_something():
    assert len(builtin_archs()) >= 20  # 0.3.4 has ~30, 0.4.2 has 42


@pytest.mark.parametrize("name", list(DLGSANET_CONFIGS))
def test_no_builtin_architecture_claims_a_dlgsanet_state_dict(name, dlgsanet_state_dicts):
    sd = dlgsanet_state_dicts[name]
    claimed = [a.architecture.id for a in builtin_archs() if a.detect(sd)]
    assert claimed == [], f"built-in spandrel architectures claim a DLGSANet {name} state dict: {claimed}"


@pytest.mark.parametrize("arch_id,module_name,class_names,kwargs", FOREIGN, ids=[f[0] for f in FOREIGN])
def test_dlgsanet_claims_no_other_architecture(arch_id, module_name, class_names, kwargs, registry):
    sd = foreign_state_dict(module_name, class_names, kwargs)
    assert not detect(sd)
    # and spandrel, with DLGSANet registered, still loads it as what it is
    loaded = spandrel.ModelLoader(registry=registry).load_from_state_dict(sd)
    assert loaded.architecture.id == arch_id


@pytest.mark.parametrize("name", LOAD_CONFIGS)
def test_spandrel_loads_dlgsanet_with_inferred_hyperparameters(name, registry, dlgsanet_state_dicts):
    config: DLGSANetConfig = DLGSANET_CONFIGS[name]
    sd = dlgsanet_state_dicts[name]
    for state_dict in (sd, _through_safetensors(sd)):
        desc = spandrel.ModelLoader(registry=registry).load_from_state_dict(state_dict)
        assert isinstance(desc, spandrel.ImageModelDescriptor)
        assert desc.architecture.id == ARCH_ID
        assert desc.model.config == config
        assert desc.scale == config.scale
        assert (desc.input_channels, desc.output_channels) == (3, 3)
        assert desc.purpose == ("SR" if config.scale > 1 else "Restoration")
        assert desc.supports_bfloat16 and not desc.supports_half
        preset = desc.model.preset
        assert (preset in desc.tags) if preset else f"{config.dim}dim" in desc.tags
        assert all(torch.equal(desc.model.state_dict()[k], v) for k, v in sd.items())


def test_descriptor_call_equals_the_network(registry):
    model = random_model(small_config(scale=3))
    desc = spandrel.ModelLoader(registry=registry).load_from_state_dict(model.state_dict())
    image = torch.rand(1, 3, 19, 13)
    with torch.inference_mode():
        expected = model(image).clamp(0, 1)
    got = desc(image)
    assert got.shape == (1, 3, 57, 39)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_descriptor_survives_what_comfyuis_builtin_upscale_path_does_to_it(registry):
    """ComfyUI v0.33.0 ``comfy_extras/nodes_upscale_model.py``: "Load Upscale Model" wraps
    ``descriptor.model`` in a ``ModelPatcher`` (whose ``__init__`` sets ``device``,
    ``model_loaded_weight_memory``, ``lowvram_patch_counter``, ``model_lowvram``,
    ``current_weight_patches_uuid``, ``model_offload_buffer_memory`` on the module when absent);
    ``load_models_gpu`` moves it, and with dynamic VRAM every parameter and buffer is replaced by
    a new tensor (``comfy.utils.set_attr_param`` / ``set_attr_buffer``); "Upscale Image (using
    Model)" then calls ``descriptor(tile.float())`` on 512-pixel tiles, scaled by
    ``descriptor.scale``. The network must keep no state derived from its weights."""
    model = random_model(small_config(scale=2))
    desc = spandrel.ModelLoader(registry=registry).load_from_state_dict(model.state_dict()).eval()
    image = torch.rand(1, 3, 24, 20)
    before = desc(image.float())
    net = desc.model
    patcher_attrs = {"device": torch.device("cpu"), "model_loaded_weight_memory": 0, "lowvram_patch_counter": 0,
                     "model_lowvram": False, "current_weight_patches_uuid": None, "model_offload_buffer_memory": 0}
    for name, value in patcher_attrs.items():
        assert not hasattr(net, name), f"DLGSANet already has {name!r}: the patcher would not set it"
        setattr(net, name, value)  # a read-only property here would break the patcher
    for key, param in list(net.named_parameters()):
        owner, attr = _resolve(net, key)
        setattr(owner, attr, torch.nn.Parameter(param.detach().clone(), requires_grad=False))
    for key, buf in list(net.named_buffers()):
        owner, attr = _resolve(net, key)
        persistent = attr not in getattr(owner, "_non_persistent_buffers_set", set())
        owner.register_buffer(attr, buf.clone(), persistent=persistent)
    net.to(torch.device("cpu"))
    with torch.inference_mode():
        after = desc(image.float())
    assert desc.scale == 2 and desc.dtype == torch.float32 and desc.device.type == "cpu"
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    # fp32 in, whatever the tile size (spandrel pads nothing: any size >= 1 is accepted)
    assert desc.size_requirements.minimum <= 1 and not desc.size_requirements.multiple_of > 1
    assert desc.tiling == spandrel.ModelTiling.SUPPORTED


def _resolve(obj, key):
    """comfy.utils.resolve_attr: the module that owns a dotted parameter or buffer name."""
    *path, name = key.split(".")
    for part in path:
        obj = getattr(obj, part)
    return obj, name


def test_spandrel_loads_dlgsanet_files(tmp_path, registry):
    """BasicSR .pth ({"params_ema": ...}, through spandrel's restricted unpickler) and .safetensors."""
    from safetensors.torch import save_file

    sd = random_model(small_config(scale=2)).state_dict()
    pth, st = tmp_path / "basicsr.pth", tmp_path / "model.safetensors"
    torch.save({"params_ema": sd, "params": {k: v + 1 for k, v in sd.items()}}, pth)
    save_file({f"module.{k}": v.contiguous() for k, v in sd.items()}, str(st))
    for path in (pth, st):
        desc = spandrel.ModelLoader(registry=registry).load_from_file(str(path))
        assert desc.architecture.id == ARCH_ID and desc.scale == 2
        assert all(torch.equal(desc.model.state_dict()[k], v) for k, v in sd.items())


def test_broken_dlgsanet_state_dict_gives_our_clear_error(registry):
    sd = dict(random_model(small_config()).state_dict())
    sd["upsample.0.weight"] = sd["upsample.0.weight"][:5]  # 5 channels: not scale^2 x 3
    with pytest.raises(CheckpointError, match="upsampler"):
        spandrel.ModelLoader(registry=registry).load_from_state_dict(sd)


def test_register_is_idempotent_even_from_a_second_copy_of_the_module():
    reg = spandrel.ArchRegistry()
    assert register(reg) is True
    assert register(reg) is False
    # a host that imports the package under another name (ComfyUI: path-derived) registers too
    spec = importlib.util.find_spec("dlgsanet_spandrel")
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)
    assert copy is not sys.modules["dlgsanet_spandrel"]
    assert copy.register(is_dlgsanet_state_dict, model_from_state_dict, reg) is False
    assert [a.architecture.id for a in reg] == [ARCH_ID]


def test_register_defaults_to_spandrels_main_registry():
    register()
    assert ARCH_ID in spandrel.MAIN_REGISTRY
    before = len(spandrel.MAIN_REGISTRY)
    assert register() is False
    assert len(spandrel.MAIN_REGISTRY) == before


def test_spandrel_version_under_test():
    """Shows in the test log which spandrel ran this file (0.3.4 in the integration re-run)."""
    print(f"spandrel {spandrel.__version__}")
    assert spandrel.__version__.split(".")[:2] in (["0", "3"], ["0", "4"])


def _through_safetensors(sd: dict) -> dict:
    from safetensors.torch import load, save

    return load(save({k: v.contiguous() for k, v in sd.items()}))
