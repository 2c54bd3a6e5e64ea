"""Shrink a training state for the repository: Adam's two moments stored in bfloat16.

    python training/pack_state.py training/<run>/training_state.pt

Why: the state a run writes (weights, EMA, Adam's first and second moments, all float32) is
about 9.5 MB for Tiny, over the 8 MB a committed file may have. The moments only steer the next
steps and bfloat16 keeps their range, so they are stored at half size (about 7 MB in all);
resuming casts them back to float32 (``Optimizer.load_state_dict`` casts state to the
parameters' dtype). A resumed run is then equal to an uninterrupted one within that rounding,
not bit for bit. Weights and EMA stay float32. Written in place, atomically.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from dlgsanet.train import atomic_torch_save, load_state

MOMENTS = ("exp_avg", "exp_avg_sq")


def pack(path: Path) -> tuple[int, int]:
    """Pack ``path`` in place; (bytes before, bytes after)."""
    before = path.stat().st_size
    state = load_state(path)
    for slot in state["optimizer"]["state"].values():
        for key in MOMENTS:
            if key in slot:
                slot[key] = slot[key].to(torch.bfloat16)
    atomic_torch_save(state, path)
    return before, path.stat().st_size


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        b, a = pack(Path(arg))
        print(f"{arg}: {b:,} -> {a:,} bytes")
