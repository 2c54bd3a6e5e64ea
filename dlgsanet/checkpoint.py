"""Reading, recognising, building and writing DLGSANet checkpoints — safely.

Checkpoints are untrusted input: ``.pth``/``.pt``/``.ckpt`` files are pickles, so they are only
ever read by ``torch_pickle``'s restricted reader, which refuses any pickle that would run code
(and, unlike ``torch.load``, cannot be replaced by a host).
Hyperparameters are not stored in official checkpoints; they are inferred from tensor shapes
and key counts, so presets and custom configurations load without being named.
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch

from .model.config import TLC_WINDOW_BY_SCALE, DLGSANetConfig, preset_name
from .errors import CheckpointError
from .model.network import DLGSANet
from .torch_pickle import read_torch_file

StateDict = dict[str, torch.Tensor]
Source = Union[str, os.PathLike, Mapping[str, Any], None]

SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin", ".sft")
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
METADATA_CONFIG_KEY = "dlgsanet_config"
CONTAINER_KEY = "_container"  # added to the metadata returned by read_checkpoint, never saved
_CONTAINER_KEYS = ("params_ema", "params", "state_dict", "model_state_dict", "model", "net_g")

# Keys every DLGSANet state dict has (group 0, block 0 of each kind).
_SIGNATURE_KEYS = (
    "overlap_embed.0.proj.weight",
    "deep_feature_extraction.0.body.0.IDynamicDWConv.conv.conv2.0.weight",
    "deep_feature_extraction.0.body.1.restormer_attn.temperature",
    "upsample.0.weight",
)
# Tell-tale keys of other super-resolution architectures, for a helpful error message.
_FOREIGN_HINTS = (
    ("RRDB_trunk.", "ESRGAN (old RRDBNet layout)"),
    ("body.0.rdb1.", "ESRGAN / Real-ESRGAN (RRDBNet)"),
    ("model.1.sub.", "ESRGAN (old architecture)"),
    ("layers.0.residual_group.blocks.0.attn.relative_position_bias_table", "SwinIR / HAT-family transformer"),
    ("layers.0.residual_group.blocks.0.", "SwinIR-family transformer"),
    ("conv_after_body.", "a SwinIR-family or DAT-family transformer"),
    ("layers.0.blocks.0.", "a window-attention transformer (SwinIR/DAT family)"),
    ("block_1.c1_r.", "SPAN"),
    ("body.0.weight", "Real-ESRGAN compact (SRVGGNet)"),
    ("first_stage_model.", "a Stable Diffusion checkpoint"),
    ("model.diffusion_model.", "a Stable Diffusion checkpoint"),
    ("encoder.down.", "a VAE"),
)
_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"RIFF": "a RIFF file (WebP image or audio)",
    b"<": "an HTML/XML text file (a failed download?)",
    b"{": "a JSON text file",
    b"version https://git-lfs": "a Git LFS pointer (the real file was never downloaded)",
}


def default_model_path(scale: int = 4) -> Path:
    """Path of the bundled default model (DLGSANet-Tiny trained by this project) for ``scale``."""
    return WEIGHTS_DIR / f"dlgsanet_tiny_x{scale}.safetensors"


def bundled_scales() -> list[int]:
    """The scales that have a bundled default model, ascending (an install may lack some)."""
    return [s for s in sorted(TLC_WINDOW_BY_SCALE) if default_model_path(s).is_file()]


def bundled_scale_for(factor: Optional[float], scales: Optional[list[int]] = None) -> int:
    """The bundled model to use for an output ``factor`` (None: x4, the classic default).

    The smallest bundled scale that reaches ``factor``: for a x2 output the x2 model scores a
    little higher on Set5 than the x4 one followed by a bicubic downscale, at the same cost
    (docs/default_model.md).
    Beyond every bundled scale, the largest, and the image is resized after it. ``scales``: those
    to choose from (default: the bundled ones).
    """
    scales = sorted(scales if scales is not None else bundled_scales())
    if not scales:
        raise CheckpointError(f"no bundled DLGSANet model in {WEIGHTS_DIR} (an incomplete install?); "
                              f"reinstall the package or pass a checkpoint path")
    if factor is None:
        return 4 if 4 in scales else scales[-1]
    return next((s for s in scales if s >= factor - 1e-9), scales[-1])


def bundled_model_path(scale: int) -> Path:
    """The bundled model for ``scale``, or a CheckpointError that names the scales there are."""
    path = default_model_path(scale)
    if not path.is_file():
        there = ", ".join(f"x{s}" for s in bundled_scales()) or "none"
        raise CheckpointError(f"no bundled DLGSANet model for x{scale} (bundled: {there}); "
                              f"pick one of those or pass a checkpoint file for x{scale}")
    return path


# ----------------------------------------------------------------------------------------------
# reading files
# ----------------------------------------------------------------------------------------------
def _sniff(path: Path) -> Optional[str]:
    with open(path, "rb") as f:
        head = f.read(32)
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            return what
    return None


def _read_safetensors(path: Path) -> tuple[StateDict, dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        tensors: StateDict = {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
        return tensors, metadata
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path.name}: not a valid .safetensors file, or it is truncated or "
                              f"corrupt ({e}). Download it again or convert the original .pth "
                              f"with `python -m dlgsanet convert`.") from None


def _read_pickle(path: Path) -> Any:
    """A ``.pth``/``.pt``/``.ckpt`` through our own restricted reader (see ``torch_pickle``): never
    ``torch.load``, which hosts replace (A1111's returns None for current torch files)."""
    return read_torch_file(path)


def _check_file(path: Path) -> None:
    """Errors that need no parsing: missing, a folder, empty, or plainly another kind of file."""
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path.name}: the file is empty (0 bytes); download it again")
    what = _sniff(path)
    if what is not None:
        raise CheckpointError(f"{path.name}: this is {what}, not a model checkpoint")


def read_checkpoint(path: Union[str, os.PathLike]) -> tuple[StateDict, dict[str, str]]:
    """Read ``path`` safely and return its DLGSANet-shaped state dict and metadata (if any).

    Unwraps BasicSR files (``params_ema`` preferred over ``params``), ``state_dict`` wrappers
    and ``module.``-style prefixes.
    """
    path = Path(path)
    _check_file(path)
    metadata: dict[str, str] = {}
    if path.suffix.lower() in (".safetensors", ".sft"):
        raw: Any
        raw, metadata = _read_safetensors(path)
        metadata.setdefault(CONTAINER_KEY, "safetensors")
    else:
        raw = _read_pickle(path)
        inner = _container_key(raw)
        metadata[CONTAINER_KEY] = "PyTorch pickle" + (f" ({inner!r} of a BasicSR-style dict)" if inner else "")
    return unwrap_state_dict(raw, name=path.name), metadata


def _read_shapes(path: Path) -> Any:
    """The file's tensors as data-less ``meta`` tensors (names and shapes; no weights are read)."""
    if path.suffix.lower() in (".safetensors", ".sft"):
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {key: torch.empty(f.get_slice(key).get_shape(), device="meta") for key in f.keys()}
    return read_torch_file(path, shapes_only=True)


def inspect_config(path: Union[str, os.PathLike], tlc_window: Optional[int] = None) -> DLGSANetConfig:
    """The hyperparameters of a checkpoint file, reading only tensor names and shapes.

    Model lists (A1111's dropdown, ComfyUI's loader) inspect every file in a models folder at
    start-up; reading headers only keeps that instant even next to multi-GB checkpoints. Still
    safe: safetensors headers are JSON and pickles go through the restricted reader.
    """
    path = Path(path)
    _check_file(path)
    try:
        raw = _read_shapes(path)
    except CheckpointError:
        raise
    except Exception:  # anything unforeseen: the full reader decides (and says what is wrong)
        raw = read_checkpoint(path)[0]
    sd = unwrap_state_dict(raw, name=path.name)
    if not is_dlgsanet_state_dict(sd):
        raise CheckpointError(f"{path.name} is not a DLGSANet checkpoint: {describe_foreign(sd)}")
    return config_from_state_dict(sd, tlc_window)


def read_state_dict(path: Union[str, os.PathLike]) -> StateDict:
    """The state dict of a checkpoint file (see :func:`read_checkpoint`)."""
    return read_checkpoint(path)[0]


def _container_key(raw: Any) -> Optional[str]:
    """Which wrapper key holds the weights (``params_ema`` preferred, as BasicSR and spandrel do)."""
    if isinstance(raw, Mapping):
        for key in _CONTAINER_KEYS:
            inner = raw.get(key)
            if isinstance(inner, Mapping) and inner:
                return key
    return None


def unwrap_state_dict(raw: Any, *, name: str = "checkpoint") -> StateDict:
    """Find the tensor dict inside the containers used in the wild and strip key prefixes."""
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{name}: expected a dict of tensors, found {type(raw).__name__}")
    inner = _container_key(raw)
    if inner is not None:
        raw = raw[inner]
    tensors = {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{name}: no tensors found (keys: {_few(list(raw))}) — not a model checkpoint")
    return _strip_prefix(tensors)


def _strip_prefix(sd: StateDict) -> StateDict:
    anchor = "overlap_embed.0.proj.weight"
    if anchor in sd:
        return sd
    for key in sd:
        if key.endswith("." + anchor):
            prefix = key[: -len(anchor)]
            return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}
    if all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _few(items: list, n: int = 4) -> str:
    shown = ", ".join(repr(i) for i in items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


# ----------------------------------------------------------------------------------------------
# recognising and inferring the configuration
# ----------------------------------------------------------------------------------------------
def is_dlgsanet_state_dict(sd: Mapping[str, Any]) -> bool:
    """True when ``sd`` has the keys that every DLGSANet state dict has (and no prefix)."""
    return all(k in sd for k in _SIGNATURE_KEYS)


def describe_foreign(sd: Mapping[str, Any]) -> str:
    """A short guess of what a non-DLGSANet state dict is, for error messages."""
    keys = list(sd)
    for hint, what in _FOREIGN_HINTS:
        if any(k.startswith(hint) for k in keys):
            return f"it looks like {what}"
    return f"its keys look like {_few(keys, 3)}"


def _count(sd: Mapping[str, Any], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def config_from_state_dict(sd: Mapping[str, torch.Tensor], tlc_window: Optional[int] = None) -> DLGSANetConfig:
    """Infer every hyperparameter of a DLGSANet state dict from its shapes and key counts."""
    if not is_dlgsanet_state_dict(sd):
        missing = [k for k in _SIGNATURE_KEYS if k not in sd]
        raise CheckpointError(f"not a DLGSANet checkpoint: {describe_foreign(sd)} "
                              f"(missing DLGSANet keys such as {_few(missing, 2)})")
    try:
        embed = sd["overlap_embed.0.proj.weight"]
        dim, in_chans = int(embed.shape[0]), int(embed.shape[1])
        groups = _count(sd, r"deep_feature_extraction\.(\d+)\.body\.")
        blocks = _count(sd, r"deep_feature_extraction\.0\.body\.(\d+)\.norm1\.")
        hyper = sd["deep_feature_extraction.0.body.0.IDynamicDWConv.conv.conv1.1.weight"]
        window = int(hyper.shape[-1])
        kernel_channels = int(sd["deep_feature_extraction.0.body.0.IDynamicDWConv.conv.conv2.0.weight"].shape[0])
        kernel_groups = kernel_channels // (window * window)
        global_heads = int(sd["deep_feature_extraction.0.body.1.restormer_attn.temperature"].shape[0])
        hidden2 = int(sd["deep_feature_extraction.0.body.0.IDynamic_ffn.project_in.weight"].shape[0])
        up = int(sd["upsample.0.weight"].shape[0])
    except (KeyError, IndexError) as e:
        raise CheckpointError(f"DLGSANet checkpoint is incomplete: missing or malformed {e}") from None
    scale = math.isqrt(up // max(in_chans, 1))
    problems = []
    if kernel_groups <= 0 or kernel_channels % (window * window) or dim % kernel_groups:
        problems.append(f"dynamic-kernel channels {kernel_channels} do not fit window {window} and dim {dim}")
    if scale * scale * in_chans != up:
        problems.append(f"upsampler has {up} output channels, not scale^2 x {in_chans}")
    if problems:
        raise CheckpointError("inconsistent DLGSANet checkpoint: " + "; ".join(problems))
    try:
        return DLGSANetConfig(dim=dim, groups=groups, blocks=blocks, local_heads=dim // kernel_groups,
                              global_heads=global_heads, window=window, scale=scale,
                              tlc_window=tlc_window, ffn_expansion=hidden2 / (2 * dim), in_chans=in_chans)
    except ValueError as e:
        raise CheckpointError(f"inconsistent DLGSANet checkpoint: {e}") from None


def model_from_state_dict(sd: Mapping[str, torch.Tensor], *, tlc_window: Optional[int] = None,
                          device: Union[str, torch.device, None] = None,
                          dtype: Optional[torch.dtype] = None) -> DLGSANet:
    """Build a DLGSANet of the inferred configuration, load ``sd`` strictly, return it in eval mode."""
    config = config_from_state_dict(sd, tlc_window)
    model = DLGSANet(config)
    _load_strict(model, sd)
    model.eval()
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    return model


def _load_strict(model: DLGSANet, sd: Mapping[str, torch.Tensor]) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k} {tuple(sd[k].shape)} (expected {tuple(v.shape)})"
             for k, v in expected.items() if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys, e.g. {_few(missing, 3)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys, e.g. {_few(unexpected, 3)}")
    if wrong:
        problems.append(f"{len(wrong)} tensors of the wrong shape, e.g. {_few(wrong, 2)}")
    if problems:
        raise CheckpointError(f"DLGSANet checkpoint does not match the inferred configuration "
                              f"{model.config}: " + "; ".join(problems))
    with torch.no_grad():
        for key, tensor in expected.items():
            value = sd[key]
            if not value.is_floating_point() or not torch.isfinite(value).all():
                raise CheckpointError(f"DLGSANet checkpoint tensor {key} is not finite floating point")
            tensor.copy_(value)


# ----------------------------------------------------------------------------------------------
# the public entry points
# ----------------------------------------------------------------------------------------------
def load_model(source: Source = None, *, device: Union[str, torch.device, None] = None,
               dtype: Optional[torch.dtype] = None, tlc_window: Optional[int] = None,
               scale: Optional[int] = None) -> DLGSANet:
    """Load a DLGSANet in eval mode from a file path or a state dict (None: the bundled model).

    ``tlc_window`` overrides the test-time TLC window (default: from the file's metadata, else
    96/72/48 for x2/x3/x4); ``scale`` picks the bundled model when ``source`` is None.
    """
    metadata: dict[str, str] = {}
    if source is None:
        sd, metadata = read_checkpoint(bundled_model_path(scale or bundled_scale_for(None)))
    elif isinstance(source, Mapping):
        sd = unwrap_state_dict(source, name="state dict")
    elif isinstance(source, (str, os.PathLike)):
        sd, metadata = read_checkpoint(source)
    else:
        raise CheckpointError(f"cannot load a model from {type(source).__name__}; pass a file path or a state dict")
    if not is_dlgsanet_state_dict(sd):
        name = Path(source).name if isinstance(source, (str, os.PathLike)) else "state dict"
        raise CheckpointError(f"{name} is not a DLGSANet checkpoint: {describe_foreign(sd)}")
    if tlc_window is None and METADATA_CONFIG_KEY in metadata:
        try:
            tlc_window = json.loads(metadata[METADATA_CONFIG_KEY]).get("tlc_window")
        except (ValueError, AttributeError):
            tlc_window = None
    return model_from_state_dict(sd, tlc_window=tlc_window, device=device, dtype=dtype)


def save_model(model: DLGSANet, path: Union[str, os.PathLike], *, metadata: Optional[Mapping[str, str]] = None,
               overwrite: bool = False) -> Path:
    """Write ``model`` as ``.safetensors`` with its hyperparameters in the metadata.

    Refuses to replace an existing file unless ``overwrite``; writes to a temporary file first
    so an interrupted save never leaves a truncated checkpoint behind.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise CheckpointError(f"save_model writes .safetensors files; got {path.name}")
    if path.exists() and not overwrite:
        raise CheckpointError(f"{path} already exists; choose another name or pass overwrite=True")
    config = model.config
    meta = {
        "format": "pt",
        "architecture": "DLGSANet",
        METADATA_CONFIG_KEY: json.dumps(config.to_dict()),
        "dlgsanet_preset": preset_name(config) or "custom",
        "scale": str(config.scale),
    }
    meta.update({str(k): str(v) for k, v in (metadata or {}).items() if k != CONTAINER_KEY})
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a saved model is an ordinary file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
