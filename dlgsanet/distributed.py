"""``dlgsanet upscale ... --ray [ADDRESS]``: the same job as the local command, on a Ray cluster.

The driver (the machine running the command) plans the outputs exactly as locally, checks and
loads the checkpoint once, and puts its weights into Ray's object store; nodes need the same
dlgsanet installed and must see the input and output paths (shared storage), not the
checkpoint. A Ray Dataset of (index, src, dst) rows goes through ``map_batches`` with an actor
pool: each actor builds the model once and upscales its rows with the CLI's own per-image code
(``upscale_run``: read, upscale, write beside and rename, never overwriting), so outputs are
bit-identical to the local command's. A file that fails is reported in its result row; the job
goes on, and the driver prints the same summary and exit status as the local command.
Ray is optional: it is imported only here, only with ``--ray``.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .checkpoint import load_model, model_from_state_dict
from .cli.upscale_plan import Job, Plan
from .cli.upscale_run import Outcome, failure_text, upscale_job
from .devices import pick_device, pick_dtype
from .errors import DLGSANetError
from .images import is_image_file

INSTALL_HINT = 'pip install "dlgsanet[distributed]"'
#: Torch threads (and Ray CPUs) per CPU actor when neither --workers nor --threads says otherwise.
DEFAULT_CPU_THREADS = 4
#: Upper bound on dataset blocks: one block per file up to this, then several files per block.
MAX_BLOCKS = 2000
#: Files queued on one actor at a time: 2 hides the hand-over latency, and at the end of the job
#: at most one file waits behind another on a busy actor while others are idle.
TASKS_IN_FLIGHT = 2


def import_ray():
    """``ray`` with Ray Data, or one line saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (the part we use; a bare ``ray`` install lacks its deps)
    except ImportError:
        raise DLGSANetError(f"--ray needs Ray Data, which is not installed here: {INSTALL_HINT}") from None
    return ray


def check_ray_options(args: argparse.Namespace) -> None:
    """Option mistakes of ``--ray``/``--workers``, reported before any file is read."""
    workers = getattr(args, "workers", None)
    if args.ray is None:
        if workers is not None:
            raise DLGSANetError("--workers only applies with --ray (the local command uses one process)")
        return
    if args.ray and Path(args.ray).exists():
        raise DLGSANetError(f"--ray {args.ray}: that is a file or folder, not a cluster address; put --ray "
                            f"after the inputs, or write --ray=ADDRESS")
    if workers is not None and workers < 1:
        raise DLGSANetError(f"--workers must be a positive integer, got {workers}")
    if args.device not in ("auto", "cpu", "cuda"):
        raise DLGSANetError(f"--device {args.device}: with --ray use auto, cpu or cuda (Ray gives every "
                            f"worker its own GPU)")
    import_ray()


@dataclass
class Layout:
    """How many actors and what each asks Ray for."""

    workers: int
    num_cpus: float
    num_gpus: float
    threads: Optional[int]   # torch threads in each actor (None: leave torch's choice)

    def describe(self) -> str:
        each = "1 GPU" if self.num_gpus >= 1 else (f"{self.num_gpus:g} GPU" if self.num_gpus else
                                                     f"{self.threads} CPU thread(s)")
        return f"{self.workers} Ray worker(s), each with {each}"


def plan_workers(node_cpus: list[float], gpus: float, args: argparse.Namespace) -> Layout:
    """Actors for a cluster whose nodes have ``node_cpus`` CPUs and ``gpus`` GPUs in all.

    With GPUs (and --device auto or cuda): one actor per GPU, or --workers N sharing them (an
    equal fraction each, so that they pack). On CPUs: each actor takes ``threads`` CPUs
    (--threads, else what --workers leaves each, else 4) and as many actors as fit on the nodes.
    """
    workers, threads = getattr(args, "workers", None), getattr(args, "threads", None)
    if args.device == "cuda" and gpus < 1:
        raise DLGSANetError("--device cuda, but the Ray cluster has no GPUs; use --device auto or cpu")
    if gpus >= 1 and args.device in ("auto", "cuda"):
        workers = workers or int(gpus)
        share = 1.0 if workers <= int(gpus) else 1.0 / math.ceil(workers / int(gpus))
        return Layout(workers, 1, share, threads)
    largest, total = max(node_cpus, default=0), sum(node_cpus)

    def fit(t: int) -> int:  # actors of t CPUs that the nodes hold
        return sum(int(c // t) for c in node_cpus)

    if threads is not None and threads > largest:
        raise DLGSANetError(f"--threads {threads}: no node of the Ray cluster has that many CPUs "
                            f"(the largest has {largest:g})")
    if threads is None:
        threads = max(1, int(min(largest, total // workers if workers else DEFAULT_CPU_THREADS)))
        while workers and threads > 1 and fit(threads) < workers:
            threads -= 1
    workers = workers or max(1, fit(threads))
    if fit(threads) < workers:
        raise DLGSANetError(f"{workers} workers of {threads} thread(s) do not fit on the Ray cluster's CPUs "
                            f"({', '.join(f'{c:g}' for c in node_cpus) or 'none'} per node); lower --workers "
                            f"or --threads")
    return Layout(workers, threads, 0, threads)


class _Notes:
    """Collects the warning lines ``upscale_job`` writes (it writes to the progress bar locally)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, line: str) -> None:
        self.lines.append(line)


def _no_progress(done: int, total: int) -> None:
    """Per-tile progress is not sent back: Ray's own progress counts files."""


class UpscaleWorker:
    """One Ray actor: builds the model once, then upscales the files of each batch it is given."""

    def __init__(self, weights: list, options: dict[str, Any], threads: Optional[int]) -> None:
        import ray
        import torch

        if threads:
            torch.set_num_threads(threads)
        state_dict, tlc_window = ray.get(weights[0])   # a list, so that Ray hands over the reference
        device = pick_device(options["device"])
        self.model = model_from_state_dict(state_dict, tlc_window=tlc_window, device=device,
                                           dtype=pick_dtype(options["precision"], device))
        self.args = argparse.Namespace(**options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        errors, notes = [], []
        for src, dst in zip(batch["src"], batch["dst"]):
            log = _Notes()
            try:
                upscale_job(self.model, Job(Path(src), Path(dst)), self.args, _no_progress, log)
                errors.append("")
            except Exception as e:  # noqa: BLE001  one file's failure must not stop the cluster's job
                errors.append(failure_text(Path(src), e))
            notes.append("\n".join(log.lines))
        return {"index": batch["index"], "error": np.array(errors, dtype=object),
                "notes": np.array(notes, dtype=object)}


def connect(ray, address: str, quiet: bool) -> bool:
    """Join the cluster at ``address``; "" means $RAY_ADDRESS when set, else a new local cluster
    for this run only (not whatever ``ray start`` last left recorded here: use ``auto`` for that).
    True when this call started Ray in this process, so that it also shuts it down."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    try:
        ray.init(address=address, logging_level=logging.ERROR if quiet else logging.INFO,
                 log_to_driver=not quiet)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = ""
        if address not in ("auto", "local") and not os.environ.get("RAY_AUTH_MODE"):
            hint = ("; a cluster with token authentication (recent Ray's default) also needs "
                    "RAY_AUTH_MODE=token and its token here (docs/distributed.md)")
        where = "a local Ray cluster" if address == "local" else f"the Ray cluster at {address}"
        raise DLGSANetError(f"cannot start or reach {where}: {first}{hint}") from None
    return True


def cluster_layout(ray, args: argparse.Namespace) -> Layout:
    node_cpus = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    return plan_workers(node_cpus, ray.cluster_resources().get("GPU", 0), args)


def run_on_ray(plan: Plan, args: argparse.Namespace) -> tuple[int, Outcome]:
    """Upscale ``plan`` on the cluster; (model scale, outcome), as ``run_jobs`` gives locally."""
    ray = import_ray()
    others = [job.src for job in plan.jobs if not is_image_file(job.src)]
    if others:
        raise DLGSANetError(f"--ray upscales images; {others[0]} is not one (videos run without --ray)")
    model = load_model(args.model, device="cpu")  # a bad checkpoint fails here, before the cluster
    weights = (model.state_dict(), model.config.tlc_window)
    options = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    started = connect(ray, args.ray, args.quiet)
    try:
        layout = cluster_layout(ray, args)
        if not layout.num_gpus:  # CPU workers: a precision the CPU lacks fails here, not in every actor
            pick_dtype(args.precision, pick_device("cpu"))
        if not args.quiet:
            print(f"dlgsanet upscale: {len(plan.jobs)} image(s) on {layout.describe()}", file=sys.stderr)
        return model.scale, _execute(ray, plan, args, layout, ray.put(weights), options)
    finally:
        if started:
            ray.shutdown()


def _execute(ray, plan: Plan, args, layout: Layout, weights_ref, options: dict) -> Outcome:
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = not args.quiet
    if args.quiet:
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    absolute = [(os.path.abspath(job.src), os.path.abspath(job.dst)) for job in plan.jobs]
    rows = [{"index": i, "src": src, "dst": dst} for i, (src, dst) in enumerate(absolute)]
    dataset = ray.data.from_items(rows, override_num_blocks=min(len(rows), MAX_BLOCKS)).map_batches(
        UpscaleWorker, batch_size=1, fn_constructor_args=([weights_ref], options, layout.threads),
        compute=ray.data.ActorPoolStrategy(size=layout.workers, max_tasks_in_flight_per_actor=TASKS_IN_FLIGHT),
        num_cpus=layout.num_cpus, num_gpus=layout.num_gpus)
    done, failed = {}, {}
    try:
        for row in dataset.iter_rows():
            index = int(row["index"])
            job = plan.jobs[index]
            for note in filter(None, str(row["notes"]).splitlines()):
                print(note, file=sys.stderr)
            if row["error"]:
                message = str(row["error"]).replace(absolute[index][0], str(job.src))
                failed[index] = (job.src, message)
                print(f"dlgsanet upscale: failed: {message}", file=sys.stderr)
            else:
                done[index] = job.dst
    except KeyboardInterrupt:
        print(f"dlgsanet upscale: stopped after {len(done)} of {len(plan.jobs)} image(s); run the same "
              f"command with --skip-existing to do the rest", file=sys.stderr)
        raise
    except ray.exceptions.RayError as e:  # a worker that could not start, a lost node, ...
        raise DLGSANetError(f"the Ray job failed after {len(done)} image(s): {_root_cause(e)}; the "
                            f"outputs written so far stay, --skip-existing resumes") from None
    return Outcome(done=[done[i] for i in sorted(done)], failed=[failed[i] for i in sorted(failed)])


def _root_cause(error: BaseException) -> str:
    """One line for the error that started it all. Ray wraps it in actor, task and data-layer
    errors whose text holds the remote traceback; its last "SomeError: message" line is the cause."""
    texts, seen = [], set()
    while isinstance(error, BaseException) and id(error) not in seen:
        seen.add(id(error))
        texts.append((type(error).__name__, str(error)))
        error = getattr(error, "cause", None) or error.__cause__ or error.__context__
    for _, text in texts:
        raised = [line.strip() for line in text.splitlines() if _RAISED.match(line.strip())]
        if raised:
            return raised[-1]
    name, text = texts[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{name}: {lines[0]}" if lines else name


_RAISED = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)(\(.*\))?: \S")
