"""Hyperparameters of DLGSANet and the official presets (Tiny / Light / Large).

The checkpoint files carry no hyperparameters, so a :class:`DLGSANetConfig` is either
chosen from a preset or inferred from tensor shapes (see ``checkpoint.py``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Optional

#: Test-time TLC window of the global attention per scale, from the official option files.
TLC_WINDOW_BY_SCALE = {2: 96, 3: 72, 4: 48}
#: RGB mean subtracted before the network and added back after (DIV2K mean, as in BasicSR).
RGB_MEAN = (0.4488, 0.4371, 0.4040)


def default_tlc_window(scale: int) -> int:
    """The official TLC window for ``scale``; other scales get the x4 window scaled by 4/scale."""
    return TLC_WINDOW_BY_SCALE.get(scale, max(8, round(48 * 4 / max(scale, 1))))


@dataclass(frozen=True)
class DLGSANetConfig:
    """All hyperparameters that shape a DLGSANet ("sparseedge" blocks, pixel-shuffle-direct)."""

    dim: int = 48
    groups: int = 3
    blocks: int = 3
    local_heads: int = 6
    global_heads: int = 6
    window: int = 7
    scale: int = 4
    tlc_window: Optional[int] = None  # None: follows the scale (96/72/48); 0: TLC off
    ffn_expansion: float = 2.0
    in_chans: int = 3

    def __post_init__(self) -> None:
        if self.tlc_window is None:
            object.__setattr__(self, "tlc_window", default_tlc_window(self.scale))
        problems = []
        if self.dim <= 0 or self.groups <= 0 or self.blocks <= 0:
            problems.append("dim, groups and blocks must be positive")
        if self.local_heads <= 0 or self.dim % self.local_heads:
            problems.append(f"dim {self.dim} is not divisible by local_heads {self.local_heads}")
        if self.global_heads <= 0 or self.dim % self.global_heads:
            problems.append(f"dim {self.dim} is not divisible by global_heads {self.global_heads}")
        if self.dim < 4:
            problems.append(f"dim {self.dim} must be >= 4 (the hyper-network reduces it by 4)")
        if self.window <= 0 or self.window % 2 == 0:
            problems.append(f"window {self.window} must be a positive odd number")
        if self.scale < 1:
            problems.append(f"scale {self.scale} must be >= 1")
        if self.tlc_window is not None and self.tlc_window < 0:
            problems.append(f"tlc_window {self.tlc_window} must be >= 0 (0 turns TLC off)")
        if problems:
            raise ValueError("invalid DLGSANet configuration: " + "; ".join(problems))

    @property
    def kernel_groups(self) -> int:
        """G: number of per-pixel kernels of the dynamic conv (dim / local_heads channels share one)."""
        return self.dim // self.local_heads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DLGSANetConfig":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def with_(self, **changes: Any) -> "DLGSANetConfig":
        return replace(self, **changes)


PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(dim=48, groups=3, blocks=3, local_heads=6, global_heads=6, window=7),
    "light": dict(dim=48, groups=4, blocks=3, local_heads=6, global_heads=6, window=7),
    "large": dict(dim=90, groups=6, blocks=4, local_heads=6, global_heads=6, window=7),
}


def preset_config(preset: str, scale: int = 4, tlc_window: Optional[int] = None) -> DLGSANetConfig:
    """The configuration of an official preset at ``scale``."""
    try:
        params = PRESETS[preset.lower()]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}") from None
    return DLGSANetConfig(scale=scale, tlc_window=tlc_window, **params)


def preset_name(config: DLGSANetConfig) -> Optional[str]:
    """"tiny", "light" or "large" when ``config`` matches a preset's architecture, else None."""
    for name, params in PRESETS.items():
        if all(getattr(config, k) == v for k, v in params.items()) and config.ffn_expansion == 2.0 \
                and config.in_chans == 3:
            return name
    return None
