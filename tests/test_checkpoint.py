"""Loading, recognising and saving checkpoints; every bad input gets a CheckpointError that says why."""
from __future__ import annotations

import json
import pathlib

import pytest
import torch
from safetensors import safe_open

from core_helpers import random_model, small_config
import dlgsanet
from dlgsanet import CheckpointError, config_from_state_dict, load_model, save_model


@pytest.fixture
def model():
    return random_model(small_config())


def _same_output(a, b, size=(9, 11)) -> bool:
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        return torch.allclose(a(x), b(x), atol=1e-6)


@pytest.mark.parametrize("changes", [
    dict(), dict(groups=1), dict(blocks=4, groups=1), dict(dim=24, local_heads=4, global_heads=2),
    dict(window=3), dict(scale=3), dict(scale=1), dict(ffn_expansion=1.5),
])
def test_hyperparameters_inferred_from_shapes(changes, tmp_path) -> None:
    config = small_config(**changes)
    original = random_model(config)
    path = tmp_path / "m.pth"
    torch.save({"params_ema": original.state_dict()}, path)
    loaded = load_model(path)
    expected = config.with_(tlc_window=None)  # the TLC window is not stored in .pth files
    assert loaded.config == expected
    assert loaded.preset is None
    assert not loaded.training
    assert _same_output(original.eval().to(torch.float32), loaded) or loaded.config.tlc_window != config.tlc_window


def test_basicsr_file_prefers_params_ema(model, tmp_path) -> None:
    noisy = {k: v + 1.0 for k, v in model.state_dict().items()}
    torch.save({"params": noisy, "params_ema": model.state_dict()}, tmp_path / "b.pth")
    loaded = load_model(tmp_path / "b.pth", tlc_window=8)
    assert _same_output(model, loaded)


@pytest.mark.parametrize("wrap", ["plain", "module", "state_dict", "params"])
def test_wrappers_and_prefixes(model, tmp_path, wrap) -> None:
    sd = model.state_dict()
    obj = {"plain": sd, "module": {f"module.{k}": v for k, v in sd.items()},
           "state_dict": {"state_dict": sd, "epoch": 3}, "params": {"params": sd}}[wrap]
    for suffix in (".pth", ".pt", ".ckpt"):
        torch.save(obj, tmp_path / f"m{suffix}")
        assert _same_output(model, load_model(tmp_path / f"m{suffix}", tlc_window=8))


def test_save_and_reload_safetensors_keeps_config(model, tmp_path) -> None:
    path = save_model(model, tmp_path / "m.safetensors", metadata={"note": "hello"})
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["dlgsanet_config"]) == model.config.to_dict()
    assert meta["note"] == "hello" and meta["scale"] == str(model.scale)
    loaded = load_model(path)
    assert loaded.config == model.config  # TLC window restored from the metadata
    assert _same_output(model, loaded)


def test_save_refuses_to_overwrite(model, tmp_path) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"user data")
    with pytest.raises(CheckpointError, match="already exists"):
        save_model(model, path)
    assert path.read_bytes() == b"user data"
    save_model(model, path, overwrite=True)
    assert load_model(path).scale == model.scale


def test_device_and_dtype(model) -> None:
    loaded = load_model(model.state_dict(), dtype=torch.bfloat16, device="cpu")
    assert next(loaded.parameters()).dtype == torch.bfloat16


def test_tlc_window_override(model) -> None:
    assert load_model(model.state_dict()).config.tlc_window == 96  # x2 default
    assert load_model(model.state_dict(), tlc_window=32).config.tlc_window == 32


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
class _Payload:
    """A pickle that would create a file when unpickled."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.target),))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path, model) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"params": model.state_dict(), "payload": _Payload(str(marker))}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused to load"):
        load_model(path)
    assert not marker.exists()


def test_missing_file(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope.pth")


def test_folder(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="folder"):
        load_model(tmp_path)


def test_empty_file(tmp_path) -> None:
    (tmp_path / "e.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_model(tmp_path / "e.safetensors")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file(model, tmp_path, suffix) -> None:
    path = tmp_path / f"m{suffix}"
    if suffix == ".pth":
        torch.save(model.state_dict(), path)
    else:
        save_model(model, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(path)


@pytest.mark.parametrize("content,what", [
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "PNG image"),
    (b"<!DOCTYPE html><html>Not found</html>", "HTML"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\n", "Git LFS pointer"),
    (bytes(range(256))[::-1], "not a PyTorch checkpoint"),
    (b"\x80\x02garbage", "not a PyTorch checkpoint"),
])
def test_not_a_checkpoint(tmp_path, content, what) -> None:
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=what):
        load_model(path)


def test_tensor_instead_of_dict(tmp_path) -> None:
    torch.save(torch.zeros(3), tmp_path / "t.pth")
    with pytest.raises(CheckpointError, match="expected a dict of tensors"):
        load_model(tmp_path / "t.pth")


def test_dict_without_tensors(tmp_path) -> None:
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "t.pth")
    with pytest.raises(CheckpointError, match="no tensors"):
        load_model(tmp_path / "t.pth")


def _foreign_state_dict(arch: str) -> dict:
    spandrel = pytest.importorskip("spandrel")
    if arch == "ESRGAN":
        from spandrel.architectures.ESRGAN import ESRGANArch  # noqa: F401
        from spandrel.architectures.ESRGAN.__arch.RRDB import RRDBNet

        return RRDBNet(in_nc=3, out_nc=3, num_filters=8, num_blocks=1).state_dict()
    from spandrel.architectures.SwinIR.__arch.SwinIR import SwinIR

    return SwinIR(img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=4, upscale=2,
                  upsampler="pixelshuffledirect").state_dict()


@pytest.mark.parametrize("arch,pattern", [("ESRGAN", "ESRGAN"), ("SwinIR", "SwinIR")])
def test_other_architecture_is_named(tmp_path, arch, pattern) -> None:
    try:
        sd = _foreign_state_dict(arch)
    except ImportError as e:  # spandrel's private layout differs between versions
        pytest.skip(f"cannot build a {arch} through spandrel here: {e}")
    torch.save(sd, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=f"not a DLGSANet checkpoint.*{pattern}"):
        load_model(tmp_path / "other.pth")


def test_missing_keys_are_named(model) -> None:
    sd = dict(model.state_dict())
    del sd["deep_feature_extraction.0.body.0.norm2.body.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys.*norm2\.body\.bias"):
        load_model(sd)


def test_unexpected_keys_are_named(model) -> None:
    sd = dict(model.state_dict())
    sd["deep_feature_extraction.0.body.0.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"unexpected keys.*extra\.weight"):
        load_model(sd)


def test_inconsistent_shapes_are_named(model) -> None:
    sd = dict(model.state_dict())
    key = "deep_feature_extraction.1.body.1.restormer_ffn.project_out.weight"
    sd[key] = torch.zeros(5, 5, 1, 1)
    with pytest.raises(CheckpointError, match=r"wrong shape.*project_out"):
        load_model(sd)


def test_upsampler_that_is_no_square_scale(model) -> None:
    sd = dict(model.state_dict())
    sd["upsample.0.weight"] = torch.zeros(7, sd["upsample.0.weight"].shape[1], 3, 3)
    with pytest.raises(CheckpointError, match="inconsistent"):
        config_from_state_dict(sd)


def test_non_finite_weights(model) -> None:
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["upsample.0.bias"][0] = float("nan")
    with pytest.raises(CheckpointError, match="not finite"):
        load_model(sd)


def test_wrong_source_type() -> None:
    with pytest.raises(CheckpointError, match="cannot load a model from int"):
        load_model(3)  # type: ignore[arg-type]


def test_one_exception_type_for_every_error() -> None:
    assert issubclass(CheckpointError, dlgsanet.DLGSANetError)


def test_inspect_config_reads_shapes_only(model, tmp_path) -> None:
    from dlgsanet.checkpoint import inspect_config

    torch.save({"params_ema": model.state_dict()}, tmp_path / "m.pth")
    save_model(model, tmp_path / "m.safetensors")
    for name in ("m.pth", "m.safetensors"):
        assert inspect_config(tmp_path / name) == model.config.with_(tlc_window=None)
    legacy = tmp_path / "legacy.pth"  # the pre-zip format cannot be memory-mapped: full read
    torch.save(model.state_dict(), legacy, _use_new_zipfile_serialization=False)
    assert inspect_config(legacy).dim == model.config.dim
    torch.save({"conv_first.weight": torch.zeros(8, 3, 3, 3), "body.0.rdb1.conv1.weight": torch.zeros(1)},
               tmp_path / "esrgan.pth")
    with pytest.raises(CheckpointError, match="not a DLGSANet checkpoint.*ESRGAN"):
        inspect_config(tmp_path / "esrgan.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        inspect_config(tmp_path / "empty.pth")


# ---------------------------------------------------------------------------------------------
# our own pickle reader (dlgsanet.torch_pickle): every torch.save layout, never torch.load
# ---------------------------------------------------------------------------------------------
def _save(obj, path, layout: str) -> pathlib.Path:
    torch.save(obj, path, _use_new_zipfile_serialization=(layout == "zip"))
    return path


@pytest.mark.parametrize("layout", ["zip", "legacy"])
@pytest.mark.parametrize("wrap", ["plain", "params", "params_ema", "both"])
def test_every_torch_save_layout_loads(model, tmp_path, layout, wrap) -> None:
    sd = model.state_dict()  # an OrderedDict with _metadata, as real checkpoints are
    noisy = {k: v + 1.0 for k, v in sd.items()}
    obj = {"plain": sd, "params": {"params": sd}, "params_ema": {"params_ema": sd},
           "both": {"params": noisy, "params_ema": sd, "iter": 5000}}[wrap]
    path = _save(obj, tmp_path / "m.pth", layout)
    assert _same_output(model, load_model(path, tlc_window=8))
    from dlgsanet.checkpoint import inspect_config

    assert inspect_config(path) == model.config.with_(tlc_window=None)


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_tensor_kinds_round_trip(tmp_path, layout) -> None:
    from dlgsanet.torch_pickle import read_torch_file

    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    obj = {"t": base, "view": base[1:3, ::2], "transposed": base.t(), "half": base.half(),
           "bf16": base.bfloat16(), "int": torch.arange(5), "bool": torch.tensor([True, False]),
           "param": torch.nn.Parameter(torch.ones(3)), "empty": torch.zeros(0, 4), "scalar": torch.tensor(2.5),
           "meta": {"epoch": 3, "name": "x", "lr": [0.1, None]}}
    path = _save(obj, tmp_path / "k.pth", layout)
    got = read_torch_file(path)
    for key, value in obj.items():
        if isinstance(value, torch.Tensor):
            assert got[key].dtype == value.dtype and torch.equal(got[key], value.detach()), key
        else:
            assert got[key] == value
    shapes = read_torch_file(path, shapes_only=True)
    assert shapes["view"].device.type == "meta" and shapes["view"].shape == (2, 3)


def test_reading_never_calls_torch_load(model, tmp_path, monkeypatch) -> None:
    """A1111's modules/safe.py replaces torch.load and returns None for current torch files."""
    zip_file = _save({"params_ema": model.state_dict()}, tmp_path / "new.pth", "zip")
    legacy = _save(model.state_dict(), tmp_path / "old.pth", "legacy")
    monkeypatch.setattr(torch, "load", lambda *a, **k: None)
    for path in (zip_file, legacy):
        assert _same_output(model, load_model(path, tlc_window=8))


class _SystemPayload:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        import os

        return (os.system, (self.command,))


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_os_system_pickle_is_named_and_never_runs(model, tmp_path, layout) -> None:
    marker = tmp_path / "pwned"
    path = _save({"params": model.state_dict(), "x": _SystemPayload(f"touch {marker}")}, tmp_path / "evil.pth", layout)
    from dlgsanet.checkpoint import inspect_config

    for read in (load_model, inspect_config):
        with pytest.raises(CheckpointError) as info:
            read(path)
        message = str(info.value)
        assert "tries to call os.system" in message and "no code from checkpoints is ever run" in message
        assert "python -m dlgsanet convert" in message and "truncated" not in message
    assert not marker.exists()


def _rezip(src: pathlib.Path, dst: pathlib.Path, change) -> pathlib.Path:
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = change(info.filename, zin.read(info.filename))
            if data is not None:
                zout.writestr(info.filename, data)
    return dst


def test_storage_records_are_checked_against_the_file(model, tmp_path) -> None:
    src = _save(model.state_dict(), tmp_path / "m.pth", "zip")
    short = _rezip(src, tmp_path / "short.pth", lambda n, d: d[:8] if n.endswith("/data/0") else d)
    gone = _rezip(src, tmp_path / "gone.pth", lambda n, d: None if n.endswith("/data/0") else d)
    for path, what in ((short, "holds 8 bytes"), (gone, "missing storage record")):
        with pytest.raises(CheckpointError, match=f"truncated or corrupt.*{what}"):
            load_model(path)


def test_object_building_opcodes_are_refused(model, tmp_path) -> None:
    """Opcodes that would call code on an allowed class (NEWOBJ) or set an object's state (BUILD)."""
    import pickle

    src = _save(model.state_dict(), tmp_path / "m.pth", "zip")
    newobj = pickle.PROTO + b"\x02" + pickle.GLOBAL + b"collections\nOrderedDict\n" + pickle.EMPTY_TUPLE \
        + pickle.NEWOBJ + pickle.STOP
    build = pickle.PROTO + b"\x02" + pickle.GLOBAL + b"torch\nfloat32\n" + pickle.EMPTY_DICT + pickle.BUILD \
        + pickle.STOP
    for name, payload in (("newobj", newobj), ("build", build)):
        path = _rezip(src, tmp_path / f"{name}.pth", lambda n, d: payload if n.endswith("/data.pkl") else d)
        with pytest.raises(CheckpointError, match="refused to load: this pickle would run code"):
            load_model(path)
