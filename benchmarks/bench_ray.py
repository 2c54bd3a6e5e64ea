"""The local ``dlgsanet upscale`` against the same job on Ray (``--ray``) on this machine.

    python -m benchmarks.bench_ray                     # from the repository root; needs Ray Data
    python -m benchmarks.bench_ray --files 16 --size 64 --workers 1 2

One folder of ``--files`` random RGB PNGs of ``--size`` pixels square, the bundled Tiny x4 model.
Every run is the real command in a fresh process (``python -m dlgsanet upscale ... --quiet``), so
each pays Python start-up and model loading alike. The Ray runs join a cluster started once
beforehand (``ray start --head``, its start-up -- until a driver can connect -- and stop
timed separately), so their wall time
holds what a job costs on a running cluster: connecting, starting the actors, shipping the model,
and the per-file hand-over. The fixed cost per job is the Ray run on one file minus the local run
on one file (after a first job that warms the fresh cluster up); the overhead per file is
(Ray time - local time) / files on the whole folder.
Outputs are compared byte for byte with the local command's.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

PORT = 6391  # not Ray's default, so that a cluster of the user's on this machine is left alone


def make_folder(root: Path, files: int, size: int) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(files):
        # smooth random content (upsampled noise), closer to photos than white noise
        small = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size), Image.BICUBIC).save(root / f"img{i:03d}.png")
    return root


def timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {' '.join(command)}\n{result.stdout[-3000:]}")
    return elapsed


def start_head(cpus: int, env: dict) -> tuple[subprocess.Popen, float]:
    """``ray start --head --block`` in the background; (its process, seconds until it takes jobs)."""
    start = time.perf_counter()
    head = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
                             f"--port={PORT}", f"--num-cpus={cpus}", "--num-gpus=0", "--include-dashboard=false",
                             "--disable-usage-stats"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    probe = "import ray; ray.init(address=%r, logging_level='ERROR'); ray.shutdown()" % f"127.0.0.1:{PORT}"
    while subprocess.run([sys.executable, "-c", probe], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, timeout=120).returncode != 0:
        if head.poll() is not None or time.perf_counter() - start > 120:
            head.kill()
            sys.exit("ray start --head did not come up")
    return head, time.perf_counter() - start


def forget_head() -> None:
    """Drop the address our head left in Ray's record of the last cluster started here, so that
    a later ``ray.init()``/``--ray auto`` does not wait for a cluster that is gone."""
    try:
        from ray._common.utils import get_ray_address_file  # private, but where Ray keeps it
        record = Path(get_ray_address_file(None))
    except ImportError:
        record = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    if record.is_file() and record.read_text().strip().endswith(f":{PORT}"):
        record.unlink()


def same_files(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir()) and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--size", type=int, default=64, help="input images are SIZE x SIZE pixels")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    try:
        import ray  # noqa: F401
    except ImportError:
        sys.exit('needs Ray Data: pip install "dlgsanet[distributed]"')
    cpus = os.cpu_count() or 1
    # Each run names its cluster; an explicit address needs token auth switched on (recent Ray).
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "token"
    work = Path(tempfile.mkdtemp(prefix="bench_ray."))
    try:
        folder = make_folder(work / "in", args.files, args.size)
        one = make_folder(work / "one", 1, args.size)
        upscale = [sys.executable, "-m", "dlgsanet", "upscale", "--quiet"]
        print(f"{args.files} files of {args.size}x{args.size} px, bundled Tiny x4, {cpus} CPUs, "
              f"load average before: {os.getloadavg()[0]:.2f}")
        local = timed(upscale + [str(folder), "-o", str(work / "local")], env)
        local_one = timed(upscale + [str(one), "-o", str(work / "local_one")], env)

        head, cluster_start = start_head(cpus, env)
        address = f"127.0.0.1:{PORT}"
        try:
            # the first job on a fresh cluster also pays for starting Ray's worker processes
            first = timed(upscale + [str(one), "-o", str(work / "ray_first"), "--ray", address,
                                     "--workers", "1"], env)
            results = []
            for workers in args.workers:
                out = work / f"ray{workers}"
                seconds = timed(upscale + [str(folder), "-o", str(out), "--ray", address,
                                           "--workers", str(workers)], env)
                results.append((workers, seconds, same_files(work / "local", out)))
            ray_one = timed(upscale + [str(one), "-o", str(work / "ray_one"), "--ray", address,
                                       "--workers", "1"], env)
        finally:
            start = time.perf_counter()
            head.terminate()  # only the head we started (`ray stop` would stop every Ray here)
            head.wait(timeout=120)
            cluster_stop = time.perf_counter() - start
            forget_head()
        local_start = timed([sys.executable, "-c", "import ray; ray.init(address='local', include_dashboard=False); ray.shutdown()"],
                            env)

        n = args.files
        print(f"\n{'run':<22}{'wall s':>9}{'images/s':>10}{'vs local':>10}{'overhead/file s':>17}  outputs")
        print(f"{'local command':<22}{local:>9.2f}{n / local:>10.2f}{1:>10.2f}{'':>17}  (reference)")
        for workers, seconds, same in results:
            print(f"{f'ray, {workers} worker(s)':<22}{seconds:>9.2f}{n / seconds:>10.2f}{local / seconds:>10.2f}"
                  f"{(seconds - local) / n:>17.3f}  {'identical' if same else 'DIFFERENT'}")
        print(f"\nfixed cost of a Ray job on a running cluster (1 file, Ray - local): {ray_one - local_one:.2f} s "
              f"(local 1 file {local_one:.2f} s, Ray {ray_one:.2f} s)")
        fixed = ray_one - local_one
        for workers, seconds, _ in results:
            print(f"  ray, {workers} worker(s): beyond that fixed cost, {(seconds - local - fixed) / max(n - 1, 1):+.3f} s "
                  f"per file")
        print(f"first job on the fresh cluster (1 file): {first:.2f} s")
        print(f"cluster start-up: ray start --head {cluster_start:.2f} s, ray stop {cluster_stop:.2f} s; "
              f"a process that starts its own local Ray (ray.init + shutdown, what --ray without a running "
              f"cluster adds) {local_start:.2f} s")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
