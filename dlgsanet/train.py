"""Training DLGSANet with the paper's recipe (the official BasicSR option files).

Recipe: random HR patches (96/144/192 px for x2/x3/x4) with their MATLAB-bicubic LR, flips and
90-degree rotations, L1 loss, Adam (lr 5e-4, betas 0.9/0.99), MultiStepLR (halving at 50/80/90/95%
of the run), EMA of the weights (0.999), validation PSNR (Y channel, border = scale) every N
iterations. Everything that sets the cost of a run is an option, so a CPU run can be short.

Outputs in ``out_dir``: ``models/net_g_ema_<iter>.safetensors`` (and the raw weights),
``training_state.pt`` (resumable: weights, EMA, Adam, iteration, RNG states; tensors and plain
containers only, read back with ``weights_only=True``), ``options.json`` and ``log.jsonl``.
The learning rate is a pure function of the iteration, so a resumed run follows exactly the
schedule of an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from .model.config import DLGSANetConfig, preset_config
from .data import PatchPairs
from .devices import pick_device
from .errors import CheckpointError, DLGSANetError
from .evaluate import EvalPair, evaluate_pairs, load_pairs
from .model.network import DLGSANet

#: Default HR patch size per scale (official ``gt_size``: LR patches of 48 px).
DEFAULT_PATCH = {2: 96, 3: 144, 4: 192}
#: MultiStepLR milestones of the official 500k-iteration run, as fractions of the run.
MILESTONE_FRACTIONS = (0.5, 0.8, 0.9, 0.95)
STATE_FILE = "training_state.pt"
STATE_VERSION = 1


def default_milestones(iterations: int) -> list[int]:
    """The official milestones (250k/400k/450k/475k of 500k) scaled to ``iterations``."""
    return [max(1, int(round(f * iterations))) for f in MILESTONE_FRACTIONS]


@dataclass
class TrainOptions:
    """One training run. Defaults are the paper's; ``iterations`` etc. make a short run."""

    train_dirs: Sequence[str]
    out_dir: str
    val_dir: Optional[str] = None
    val_images: Optional[int] = None  # validate on the first N images of val_dir (None: all)
    preset: str = "tiny"
    scale: int = 4
    config: Optional[dict[str, Any]] = None  # a custom DLGSANetConfig.to_dict(); overrides preset
    patch_size: Optional[int] = None  # HR patch side; None -> DEFAULT_PATCH[scale]
    batch_size: int = 8
    iterations: int = 500_000
    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.99)
    milestones: Optional[list[int]] = None  # None -> MILESTONE_FRACTIONS of iterations
    gamma: float = 0.5
    ema_decay: float = 0.999
    ema_warmup: bool = False  # decay min(ema_decay, (1+t)/(10+t)): for runs of a few 1000 its
    val_every: int = 10_000
    save_every: int = 10_000
    log_every: int = 100
    seed: int = 0
    device: str = "auto"
    threads: Optional[int] = None
    init_from: Optional[str] = None  # a DLGSANet checkpoint whose same-shaped tensors start the run

    def __post_init__(self) -> None:
        self.train_dirs = [str(d) for d in self.train_dirs]
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        if self.patch_size is None:
            self.patch_size = DEFAULT_PATCH.get(self.scale, 48 * self.scale)
        if self.milestones is None:
            self.milestones = default_milestones(self.iterations)
        self.milestones = sorted(int(m) for m in self.milestones)
        problems = []
        if self.patch_size % self.scale:
            problems.append(f"patch size {self.patch_size} is not a multiple of the scale {self.scale}")
        if self.batch_size < 1 or self.iterations < 1:
            problems.append("batch size and iterations must be positive")
        if self.lr <= 0:
            problems.append("the learning rate must be positive")
        if not 0 <= self.ema_decay < 1:
            problems.append(f"EMA decay {self.ema_decay} must be in [0, 1)")
        if self.val_every < 1 or self.save_every < 1 or self.log_every < 1:
            problems.append("val/save/log intervals must be positive")
        if problems:
            raise DLGSANetError("invalid training options: " + "; ".join(problems))

    def model_config(self) -> DLGSANetConfig:
        if self.config:
            return DLGSANetConfig.from_dict({**self.config, "scale": self.scale})
        return preset_config(self.preset, self.scale)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def learning_rate(options: TrainOptions, iteration: int) -> float:
    """MultiStepLR: ``lr * gamma ** (milestones passed)`` for the step that makes ``iteration``."""
    passed = sum(1 for m in options.milestones or [] if iteration > m)
    return options.lr * options.gamma ** passed


def ema_decay_at(options: TrainOptions, step: int) -> float:
    if options.ema_warmup:
        return min(options.ema_decay, (1.0 + step) / (10.0 + step))
    return options.ema_decay


@torch.no_grad()
def update_ema(ema: DLGSANet, model: DLGSANet, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * model, over parameters (buffers copied)."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


@torch.no_grad()
def validate(model: DLGSANet, pairs: Sequence[EvalPair]) -> float:
    """Mean Y-channel PSNR of ``model`` on ``pairs``, scored by the code of ``dlgsanet eval``
    (eval mode, official borders, 8-bit output), so validation and final scores agree."""
    return float(evaluate_pairs(model, pairs, bicubic=False).psnr)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file and a rename: a reader never sees half a state."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_weights(model: DLGSANet, path: Path, metadata: dict[str, str]) -> Path:
    """The weights as ``.safetensors`` with config and recipe in the metadata (overwrites our own file)."""
    from .checkpoint import save_model

    return save_model(model, path, metadata=metadata, overwrite=True)


def _cpu_state(sd: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v) for k, v in sd.items()}


def _optimizer_to(opt: torch.optim.Optimizer, device: torch.device) -> None:
    for state in opt.state.values():
        for k, v in state.items():
            if isinstance(v, torch.Tensor) and k != "step":
                state[k] = v.to(device)


def init_from_checkpoint(model: DLGSANet, path: str, log: "Logger") -> None:
    """Start ``model`` from another DLGSANet checkpoint of the same body; the upsampler is taken
    only where its shape fits (same scale).

    Why: the body (embedding, groups, fusion conv) does not depend on the scale, so a x3 or x4 run
    can start from a trained x2 body (as EDSR does) and only the upsampler starts fresh.
    """
    from .checkpoint import read_state_dict

    source = read_state_dict(path)
    own = model.state_dict()
    fits = {k for k, v in source.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    misfits = sorted(k for k in own if k not in fits and not k.startswith("upsample."))
    if misfits:
        raise DLGSANetError(f"--init-from {path}: its body does not fit this model ({len(misfits)} tensors "
                            f"missing or of another shape, e.g. {', '.join(misfits[:3])}); start from a "
                            f"checkpoint of the same preset/configuration")
    model.load_state_dict({**own, **{k: source[k] for k in fits}})
    fresh = sorted(set(own) - fits)
    log(f"init: {len(fits)} of {len(own)} tensors from {path}; fresh: {', '.join(fresh) or 'none'}")


def load_state(path: Path) -> dict[str, Any]:
    """A training state written by :func:`train` (tensors and plain containers only)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        raise CheckpointError(f"cannot read training state {path}: {e}") from e
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise CheckpointError(f"{path} is not a DLGSANet training state (version {STATE_VERSION})")
    return state


Logger = Callable[[str], None]


def _reschedule(saved: TrainOptions, iterations: Optional[int], milestones: Optional[list[int]],
                done: int, log: Logger) -> TrainOptions:
    """``saved`` with a new length/milestones (on resume), telling whether the past still fits it."""
    iterations = iterations or saved.iterations
    if iterations == saved.iterations and milestones in (None, saved.milestones):
        return saved
    if iterations < done:
        raise DLGSANetError(f"--iterations {iterations} is below the {done} iterations already done")
    if milestones is None and saved.milestones != default_milestones(saved.iterations):
        milestones = saved.milestones  # custom milestones stay; default ones follow the new length
    changed = TrainOptions(**{**asdict(saved), "iterations": iterations, "milestones": milestones})
    same_past = all(learning_rate(saved, i) == learning_rate(changed, i) for i in range(1, done + 1))
    log(f"resume: schedule changed to {changed.iterations} iterations, milestones {changed.milestones}; "
        + ("the learning rates used so far are those of the new schedule, so the run is the same as one "
           "started with it" if same_past else
           "WARNING: the new schedule differs from the one used for the iterations already done"))
    return changed


def train(options: TrainOptions, *, resume: bool = False, stop_after: Optional[int] = None,
          progress: bool = True, log: Logger = print, resume_iterations: Optional[int] = None,
          resume_milestones: Optional[list[int]] = None, resume_patch_size: Optional[int] = None,
          resume_batch_size: Optional[int] = None) -> dict[str, Any]:
    """Run (or resume) training; returns a summary (iteration, last loss, best/last PSNR, paths).

    ``stop_after``: end this session after that iteration (state saved) without changing the
    schedule, so a long run can be split across sessions and resumed. ``resume_iterations`` /
    ``resume_milestones``: lengthen or reshape the schedule of a resumed run (the MultiStepLR
    milestones follow a new length unless given). ``resume_patch_size`` / ``resume_batch_size``:
    go on with other patches (e.g. small patches first, whole TLC windows last); the change is
    logged and kept in the saved options.
    """
    out = Path(options.out_dir)
    state_path = out / STATE_FILE
    state: Optional[dict[str, Any]] = None
    if resume:
        if not state_path.is_file():
            raise DLGSANetError(f"nothing to resume: {state_path} not found")
        state = load_state(state_path)
        saved = TrainOptions(**json.loads(state["options"]))
        # where things are is not part of the recipe: a run committed to a repository resumes
        # on another machine, from wherever its folder and the data are now
        saved.device, saved.threads, saved.out_dir = options.device, options.threads, options.out_dir
        saved.train_dirs, saved.val_dir = options.train_dirs, options.val_dir or saved.val_dir
        log(f"resume: continuing the saved run ({saved.iterations} iterations, milestones "
            f"{saved.milestones}, data {', '.join(saved.train_dirs)}); other recipe options given "
            f"now are ignored")
        options = _reschedule(saved, resume_iterations, resume_milestones, int(state["iteration"]), log)
        changes = {k: v for k, v in (("patch_size", resume_patch_size), ("batch_size", resume_batch_size))
                   if v is not None and v != getattr(options, k)}
        if changes:
            log(f"resume: from iteration {state['iteration']} on, " + ", ".join(
                f"{k.replace('_', ' ')} {getattr(options, k)} -> {v}" for k, v in changes.items()))
            options = TrainOptions(**{**asdict(options), **changes})
    elif state_path.exists():
        raise DLGSANetError(f"{out} already holds a training run; pass --resume to continue it "
                            f"or choose another output folder")

    if options.threads:
        torch.set_num_threads(options.threads)
    device = pick_device(options.device)
    torch.manual_seed(options.seed)
    generator = torch.Generator().manual_seed(options.seed)

    config = options.model_config()
    model = DLGSANet(config).to(device).train()
    ema = DLGSANet(config).to(device).eval()
    ema.load_state_dict(model.state_dict())
    if options.init_from and state is None:
        init_from_checkpoint(model, options.init_from, log)
        ema.load_state_dict(model.state_dict())
    for p in ema.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr, betas=options.betas)

    start, wall_before, best = 0, 0.0, -math.inf
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        _optimizer_to(optimizer, device)
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        start, wall_before = int(state["iteration"]), float(state["wall_time_s"])
        best = float(state.get("best_psnr", -math.inf))
        log(f"resumed at iteration {start} ({wall_before:.0f} s of training so far)")

    t_load = time.time()
    pairs = PatchPairs(options.train_dirs, options.scale, options.patch_size // options.scale)
    val = load_pairs(options.val_dir, options.scale, limit=options.val_images) if options.val_dir else []
    log(f"data: {len(pairs)} training images ({len(pairs.skipped)} too small, skipped), "
        f"{len(val)} validation images, loaded in {time.time() - t_load:.1f} s; device {device}, "
        f"{torch.get_num_threads()} threads")

    (out / "models").mkdir(parents=True, exist_ok=True)
    (out / "options.json").write_text(json.dumps(asdict(options), indent=2, sort_keys=True))
    log_file = open(out / "log.jsonl", "a", encoding="utf-8")
    recipe = options.to_json()
    t0 = time.time()

    def elapsed() -> float:
        return wall_before + time.time() - t0

    def meta(it: int, weights: str) -> dict[str, str]:
        return {"dlgsanet_recipe": recipe, "dlgsanet_training": json.dumps(
            {"iteration": it, "weights": weights, "wall_time_s": round(elapsed(), 1),
             "command": " ".join(sys.argv)})}

    def record(entry: dict[str, Any]) -> None:
        log_file.write(json.dumps(entry) + "\n")
        log_file.flush()

    def save_state(it: int) -> None:
        atomic_torch_save({
            "version": STATE_VERSION, "iteration": it, "wall_time_s": elapsed(), "best_psnr": best,
            "options": recipe, "model": _cpu_state(model.state_dict()),
            "ema": _cpu_state(ema.state_dict()), "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
        }, state_path)

    end = options.iterations if stop_after is None else min(options.iterations, stop_after)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=options.iterations, initial=start, unit="it", dynamic_ncols=True,
                   mininterval=5.0, file=sys.stderr)
    loss_sum, loss_n, last_loss, last_psnr = 0.0, 0, math.nan, None
    it = start
    try:
        while it < end:
            it += 1
            lr_now = learning_rate(options, it)
            for group in optimizer.param_groups:
                group["lr"] = lr_now
            lr_batch, hr_batch = pairs.sample(options.batch_size, generator)
            lr_batch, hr_batch = lr_batch.to(device), hr_batch.to(device)
            loss = F.l1_loss(model(lr_batch), hr_batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            update_ema(ema, model, ema_decay_at(options, it - 1))
            last_loss = float(loss.detach())
            if not math.isfinite(last_loss):
                raise DLGSANetError(f"training diverged at iteration {it} (loss {last_loss}); "
                                    f"lower the learning rate")
            loss_sum, loss_n = loss_sum + last_loss, loss_n + 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr_now:.1e}", refresh=False)
            if it % options.log_every == 0 or it == end:
                record({"iteration": it, "loss": loss_sum / loss_n, "lr": lr_now,
                        "wall_time_s": round(elapsed(), 1)})
                log(f"iter {it}: loss {loss_sum / loss_n:.5f} lr {lr_now:.2e} "
                    f"({elapsed():.0f} s)")
                loss_sum, loss_n = 0.0, 0
            if val and (it % options.val_every == 0 or it == options.iterations):
                last_psnr = validate(ema, val)
                best = max(best, last_psnr)
                record({"iteration": it, "val_psnr_ema": last_psnr, "wall_time_s": round(elapsed(), 1)})
                log(f"iter {it}: validation PSNR (EMA, Y) {last_psnr:.3f} dB")
            if it % options.save_every == 0 or it == end:
                save_weights(ema, out / "models" / f"net_g_ema_{it}.safetensors", meta(it, "ema"))
                save_weights(model, out / "models" / f"net_g_{it}.safetensors", meta(it, "raw"))
                save_weights(ema, out / "models" / "net_g_ema_latest.safetensors", meta(it, "ema"))
                save_state(it)
    finally:
        if bar is not None:
            bar.close()
        log_file.close()
    return {"iteration": it, "loss": last_loss, "val_psnr": last_psnr,
            "best_psnr": best if math.isfinite(best) else None, "wall_time_s": elapsed(),
            "ema_path": str(out / "models" / f"net_g_ema_{it}.safetensors"), "state_path": str(state_path)}
