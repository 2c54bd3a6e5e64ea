"""The training loop: it learns, writes loadable checkpoints, and resumes on the same schedule.

A tiny custom configuration on a few small synthetic images keeps each run well under a second
of compute; the recipe (L1, Adam, MultiStepLR, EMA, patch pairs) is the real one.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dlgsanet
from dlgsanet.cli import main as cli_main
from dlgsanet.errors import DLGSANetError
from dlgsanet.evaluate import evaluate_folder
from dlgsanet.train import TrainOptions, learning_rate, load_state, train

TINY = dict(dim=8, groups=1, blocks=1, local_heads=2, global_heads=2, window=3)


def _write_images(folder: Path, n: int = 3, size: int = 40) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        phase = rng.uniform(0, 3, size=3)
        img = 127 + 100 * np.sin(xx[..., None] / (3 + i) + phase) * np.cos(yy[..., None] / (4 + i))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


def _options(tmp_path: Path, out: str, **kw) -> TrainOptions:
    data = _write_images(tmp_path / "data")
    base = dict(train_dirs=[str(data)], out_dir=str(tmp_path / out), scale=2, config=TINY,
                patch_size=16, batch_size=4, iterations=6, lr=2e-3, milestones=[2, 4],
                val_every=3, save_every=3, log_every=1, threads=1, val_dir=str(data))
    base.update(kw)
    return TrainOptions(**base)


def _fixed_batch(tmp_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from dlgsanet.data import PatchPairs

    pairs = PatchPairs([tmp_path / "data"], 2, 8)
    return pairs.sample(8, torch.Generator().manual_seed(123))


def test_training_lowers_the_loss_and_writes_a_loadable_checkpoint(tmp_path: Path) -> None:
    opts = _options(tmp_path, "run", iterations=40, milestones=[30], save_every=40, val_every=40,
                    log_every=10)
    lr, hr = _fixed_batch(tmp_path)
    torch.manual_seed(opts.seed)
    untrained = dlgsanet.DLGSANet(opts.model_config())  # the weights train() starts from
    with torch.no_grad():
        before = float(torch.nn.functional.l1_loss(untrained.train()(lr), hr))

    summary = train(opts, progress=False, log=lambda _m: None)

    raw = Path(opts.out_dir) / "models" / "net_g_40.safetensors"
    model = dlgsanet.load_model(raw)  # the public loader reads what training wrote
    assert model.config.dim == TINY["dim"] and model.scale == 2
    with torch.no_grad():
        after = float(torch.nn.functional.l1_loss(model.train()(lr), hr))
    assert after < 0.7 * before

    ema = dlgsanet.load_model(summary["ema_path"])
    from safetensors import safe_open

    with safe_open(summary["ema_path"], "pt") as f:
        meta = f.metadata()
    recipe = json.loads(meta["dlgsanet_recipe"])
    assert recipe["iterations"] == 40 and recipe["lr"] == 2e-3
    assert json.loads(meta["dlgsanet_training"])["weights"] == "ema"
    assert not torch.equal(ema.upsample[0].weight, model.upsample[0].weight)
    assert summary["val_psnr"] is not None and np.isfinite(summary["val_psnr"])
    # Validation is `dlgsanet eval`'s score of the saved EMA weights, to the last bit.
    scored = evaluate_folder(ema, opts.val_dir, bicubic=False)
    assert summary["val_psnr"] == scored.psnr


def test_resume_continues_the_schedule(tmp_path: Path) -> None:
    straight = _options(tmp_path, "straight")
    train(straight, progress=False, log=lambda _m: None)

    split = _options(tmp_path, "split")
    train(split, stop_after=3, progress=False, log=lambda _m: None)
    assert load_state(Path(split.out_dir) / "training_state.pt")["iteration"] == 3
    # resume through the command line, as a user would
    rc = cli_main(["train", "--data", *split.train_dirs, "--out", split.out_dir, "--iterations", "6",
                   "--resume", "--no-progress", "--threads", "1"])
    assert rc == 0

    a = load_state(Path(straight.out_dir) / "training_state.pt")
    b = load_state(Path(split.out_dir) / "training_state.pt")
    assert a["iteration"] == b["iteration"] == 6
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            torch.testing.assert_close(b[key][name], tensor, rtol=0, atol=1e-6, msg=f"{key}.{name}")
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]

    def lrs(path: str) -> list[tuple[int, float]]:
        rows = [json.loads(l) for l in (Path(path) / "log.jsonl").read_text().splitlines()]
        return [(r["iteration"], r["lr"]) for r in rows if "lr" in r]

    assert lrs(split.out_dir) == lrs(straight.out_dir)
    assert [lr for _, lr in lrs(straight.out_dir)] == [learning_rate(straight, i) for i in range(1, 7)]


def test_learning_rate_follows_multistep_milestones(tmp_path: Path) -> None:
    opts = _options(tmp_path, "x", iterations=100, milestones=None, lr=1e-3)
    assert opts.milestones == [50, 80, 90, 95]
    assert learning_rate(opts, 50) == 1e-3 and learning_rate(opts, 51) == 5e-4
    assert learning_rate(opts, 100) == pytest.approx(1e-3 / 16)


def test_bad_input_gives_our_errors(tmp_path: Path) -> None:
    with pytest.raises(DLGSANetError, match="not found"):
        train(_options(tmp_path, "a", train_dirs=[str(tmp_path / "missing")]), progress=False)
    with pytest.raises(DLGSANetError, match="multiple of the scale"):
        _options(tmp_path, "b", patch_size=15)
    with pytest.raises(DLGSANetError, match="large enough"):
        train(_options(tmp_path, "c", patch_size=200), progress=False, log=lambda _m: None)
    opts = _options(tmp_path, "d", iterations=1, val_dir=None)
    train(opts, progress=False, log=lambda _m: None)
    with pytest.raises(DLGSANetError, match="--resume"):  # never overwrite a run
        train(opts, progress=False, log=lambda _m: None)
    with pytest.raises(DLGSANetError, match="nothing to resume"):
        train(_options(tmp_path, "e"), resume=True, progress=False)


def test_resume_can_lengthen_the_schedule(tmp_path: Path) -> None:
    # a run stopped at 3 of 6 iterations and resumed as a 10-iteration run is the 10-iteration run,
    # because the default milestones (5/8/9/10 of 10) leave the first 3 learning rates unchanged
    longer = _options(tmp_path, "long", iterations=10, milestones=None, save_every=5, val_dir=None)
    train(longer, progress=False, log=lambda _m: None)
    short = _options(tmp_path, "short", iterations=6, milestones=None, save_every=5, val_dir=None)
    train(short, stop_after=3, progress=False, log=lambda _m: None)
    messages: list[str] = []
    train(short, resume=True, resume_iterations=10, progress=False, log=messages.append)
    assert any("same as one started with it" in m for m in messages)
    a = load_state(Path(longer.out_dir) / "training_state.pt")
    b = load_state(Path(short.out_dir) / "training_state.pt")
    assert a["iteration"] == b["iteration"] == 10
    for name, tensor in a["ema"].items():
        torch.testing.assert_close(b["ema"][name], tensor, rtol=0, atol=1e-6, msg=name)

    # a change that rewrites the past is allowed but reported
    messages.clear()
    train(short, resume=True, resume_iterations=12, resume_milestones=[1], progress=False,
          log=messages.append)
    assert any("WARNING" in m for m in messages)
    with pytest.raises(DLGSANetError, match="below"):
        train(short, resume=True, resume_iterations=4, progress=False, log=lambda _m: None)


def test_init_from_takes_the_body_of_another_scale_and_starts_the_upsampler_fresh(tmp_path: Path) -> None:
    x2 = _options(tmp_path, "x2", iterations=3, val_dir=None)
    train(x2, progress=False, log=lambda _m: None)
    body = dlgsanet.load_model(Path(x2.out_dir) / "models" / "net_g_3.safetensors").state_dict()

    x4 = _options(tmp_path, "x4", scale=4, patch_size=16, iterations=1, lr=1e-12, val_dir=None,
                  init_from=str(Path(x2.out_dir) / "models" / "net_g_3.safetensors"))
    messages: list[str] = []
    train(x4, progress=False, log=messages.append)
    started = dlgsanet.load_model(Path(x4.out_dir) / "models" / "net_g_1.safetensors").state_dict()
    assert started["upsample.0.weight"].shape[0] == 3 * 16
    for name, tensor in body.items():
        if name.startswith("upsample"):
            continue  # one step at lr 1e-12 moves nothing measurable: the body is x2's
        torch.testing.assert_close(started[name], tensor, rtol=0, atol=1e-6, msg=name)
    assert any("fresh: upsample.0.bias, upsample.0.weight" in m for m in messages)

    other = _options(tmp_path, "other", config=None, preset="tiny", iterations=1, val_dir=None,
                     init_from=str(Path(x2.out_dir) / "models" / "net_g_3.safetensors"))
    with pytest.raises(DLGSANetError, match="its body does not fit this model"):
        train(other, progress=False, log=lambda _m: None)


def test_resume_can_go_on_with_larger_patches(tmp_path: Path) -> None:
    run = _options(tmp_path, "grow", iterations=4, val_dir=None)
    train(run, stop_after=2, progress=False, log=lambda _m: None)
    rc = cli_main(["train", "--data", *run.train_dirs, "--out", run.out_dir, "--resume", "--patch-size", "24",
                   "--batch-size", "2", "--no-progress", "--threads", "1"])
    assert rc == 0
    state = load_state(Path(run.out_dir) / "training_state.pt")
    saved = json.loads(state["options"])
    assert state["iteration"] == 4 and saved["patch_size"] == 24 and saved["batch_size"] == 2
    assert json.loads((Path(run.out_dir) / "options.json").read_text())["patch_size"] == 24


def test_a_run_resumes_from_another_folder_with_its_data_elsewhere(tmp_path: Path) -> None:
    import shutil

    run = _options(tmp_path, "first", iterations=4, val_dir=None)
    train(run, stop_after=2, progress=False, log=lambda _m: None)
    moved, data = tmp_path / "repo" / "run", tmp_path / "elsewhere" / "data"
    shutil.copytree(run.out_dir, moved)
    shutil.copytree(run.train_dirs[0], data)
    shutil.rmtree(run.train_dirs[0])  # the folders the run was started with are gone
    rc = cli_main(["train", "--data", str(data), "--out", str(moved), "--resume", "--no-progress", "--threads", "1"])
    assert rc == 0
    assert load_state(moved / "training_state.pt")["iteration"] == 4
    assert json.loads((moved / "options.json").read_text())["train_dirs"] == [str(data)]
