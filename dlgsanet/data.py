"""Training data: folders of HR images, decoded and degraded once, sampled as random patch pairs.

As in the paper's BasicSR recipe the network learns from (LR, HR) pairs where LR is the
MATLAB-bicubic downscaling of the whole HR image (8-bit), cut into aligned random patches with
random flips and 90-degree rotations. The usual training sets are small as 8-bit tensors (size
in docs/training.md), so everything is decoded up front and a batch costs only a few tensor slices.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, Union

import torch

from .degradation import bicubic_degrade
from .errors import DLGSANetError
from .images import IMAGE_SUFFIXES, list_images, read_rgb8

PathLike = Union[str, os.PathLike]


class TrainingDataError(DLGSANetError, ValueError):
    """The training or validation images cannot be used (missing folder, no images, too small)."""


def training_images(folder: PathLike) -> list[Path]:
    """:func:`dlgsanet.images.list_images`, failing when ``folder`` is missing or holds no image."""
    path = Path(folder)
    if not path.is_dir():
        raise TrainingDataError(f"image folder not found: {path}")
    files = list_images(path)
    if not files:
        raise TrainingDataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
    return files


class PatchPairs:
    """All (HR, LR) pairs of some folders in memory; :meth:`sample` draws a training batch."""

    def __init__(self, folders: Sequence[PathLike], scale: int, lr_patch: int) -> None:
        if lr_patch < 1:
            raise TrainingDataError(f"patch size must give at least 1 LR pixel, got {lr_patch}")
        self.scale, self.lr_patch = scale, lr_patch
        self.hr: list[torch.Tensor] = []
        self.lr: list[torch.Tensor] = []
        self.skipped: list[Path] = []
        for folder in folders:
            for path in training_images(folder):
                img = read_rgb8(path)
                if min(img.shape[-2:]) // scale < lr_patch:
                    self.skipped.append(path)
                    continue
                hr, lr = bicubic_degrade(img, scale)
                self.hr.append(hr)
                self.lr.append(lr)
        if not self.hr:
            raise TrainingDataError(f"no training image is large enough for {lr_patch * scale} px "
                                    f"HR patches in {', '.join(map(str, folders))}")
        # Sample images in proportion to their number of patch positions, so every LR pixel is
        # about equally likely (BasicSR's pre-cropped sub-images have the same effect).
        areas = torch.tensor([float((l.shape[-2] - lr_patch + 1) * (l.shape[-1] - lr_patch + 1))
                              for l in self.lr], dtype=torch.float64)
        self.weights = areas / areas.sum()

    def __len__(self) -> int:
        return len(self.hr)

    def sample(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(LR ``[B,3,p,p]``, HR ``[B,3,sp,sp]``) float 0..1, random crops, flips, rot90."""
        p, s = self.lr_patch, self.scale
        picks = torch.multinomial(self.weights, batch, replacement=True, generator=generator)
        lrs, hrs = [], []
        for i in picks.tolist():
            lr_img, hr_img = self.lr[i], self.hr[i]
            top = int(torch.randint(0, lr_img.shape[-2] - p + 1, (1,), generator=generator))
            left = int(torch.randint(0, lr_img.shape[-1] - p + 1, (1,), generator=generator))
            lr = lr_img[:, top:top + p, left:left + p]
            hr = hr_img[:, top * s:(top + p) * s, left * s:(left + p) * s]
            hflip, vflip, rot = (torch.rand(3, generator=generator) < 0.5).tolist()
            lr, hr = augment(lr, hflip, vflip, rot), augment(hr, hflip, vflip, rot)
            lrs.append(lr)
            hrs.append(hr)
        return (torch.stack(lrs).float() / 255.0, torch.stack(hrs).float() / 255.0)


def augment(img: torch.Tensor, hflip: bool, vflip: bool, rot90: bool) -> torch.Tensor:
    """BasicSR's ``augment``: horizontal flip, vertical flip, then transpose (a 90-degree turn)."""
    if hflip:
        img = img.flip(-1)
    if vflip:
        img = img.flip(-2)
    if rot90:
        img = img.transpose(-2, -1)
    return img
