"""A real AUTOMATIC1111 v1.10.1 or Forge, prepared as ``shared/reference/real_hosts.md`` says
(``tests/integration/setup_a1111.sh`` for A1111), driven the way a user installs an extension.

``<root>/webui`` is the webui tree, ``<root>/venv`` its Python, ``<root>/requirements_relaxed.txt``
the requirements file passed as ``REQS_FILE`` on every start. The extension is a copy of this
repository's files (what a clone holds) in ``webui/extensions/<odd folder name>``; the start is
a plain one, with the environment preparation that runs every extension's ``install.py`` in the
webui's Python. ``pip freeze --all`` is taken before and after that first start.
"""
from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Spaces, brackets, a dot and a non-ASCII letter: the extension never relies on its folder name.
EXTENSION_FOLDER = "DLGSANet upscaler (tést).ext"
#: Files we put into the webui's model folders (removed again before each run).
OUR_MODEL_FILES = ("DLGSANet/broken.pth", "DLGSANet/newzip_x4.pth", "ESRGAN/4x_DLGSANet_newzip.pth")
STARTUP_TIMEOUT_S = 1500  # a first start with package installs, on 2 busy cores


def repository_files() -> list[str]:
    """What a clone of the repository holds (tracked and new, not ignored, files)."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO_ROOT,
                         capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p and (REPO_ROOT / p).is_file()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_b64(img: Any) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def b64_png(data: str) -> Any:
    from PIL import Image

    if data.startswith("data:"):
        data = data.split(",", 1)[1]
    img = Image.open(io.BytesIO(base64.b64decode(data)))
    img.load()
    return img


class RealWebui:
    """One prepared webui folder (``kind`` = "a1111" or "forge")."""

    def __init__(self, root: Path, kind: str) -> None:
        self.root, self.kind = root, kind
        self.webui = root / "webui"
        self.python = root / "venv" / "bin" / "python"
        self.extension = self.webui / "extensions" / EXTENSION_FOLDER
        self.models = self.webui / "models"
        self.port = free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = root / f"dlgsanet-test-{kind}.log"
        self.startup_s = 0.0

    # -- set-up ------------------------------------------------------------------------------
    def missing(self) -> Optional[str]:
        for path in (self.webui / "launch.py", self.python, self.root / "requirements_relaxed.txt"):
            if not path.exists():
                return f"{path} is missing (prepare the host as shared/reference/real_hosts.md says)"
        return None

    def reset(self) -> None:
        """A first start again: no copy of the extension, no settings file, none of our models."""
        shutil.rmtree(self.extension, ignore_errors=True)
        (self.webui / "config.json").unlink(missing_ok=True)
        for name in OUR_MODEL_FILES:
            (self.models / name).unlink(missing_ok=True)

    def install_extension(self) -> None:
        for rel in repository_files():
            target = self.extension / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / rel, target)

    def freeze(self) -> list[str]:
        out = subprocess.run([str(self.python), "-m", "pip", "freeze", "--all"], capture_output=True,
                             text=True, check=True).stdout
        return sorted(line for line in out.splitlines() if line.strip())

    def run_python(self, code: str, *args: str, pythonpath: Optional[Path] = None, timeout: int = 600) -> str:
        """Run ``code`` in the webui's Python with ``pythonpath`` (default: this repository) importable."""
        env = dict(os.environ, PYTHONPATH=str(pythonpath or REPO_ROOT))
        proc = subprocess.run([str(self.python), "-c", code, *args], capture_output=True, text=True,
                              env=env, timeout=timeout, cwd=str(pythonpath or self.root))
        if proc.returncode != 0:
            raise AssertionError(f"webui python failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        return proc.stdout

    # -- the server ----------------------------------------------------------------------------
    def command(self) -> tuple[list[str], dict[str, str]]:
        env = dict(os.environ, REQS_FILE=str(self.root / "requirements_relaxed.txt"), PYTHONUNBUFFERED="1")
        env.pop("PYTHONPATH", None)
        args = [str(self.python), "-u", "launch.py", "--skip-torch-cuda-test", "--nowebui", "--api",
                "--no-download-sd-model", "--skip-version-check", "--server-name", "127.0.0.1",
                "--port", str(self.port)]
        if self.kind == "forge":
            args.append("--always-cpu")
            for var in ("HANDREFINER_WHEEL", "DEPTH_ANYTHING_WHEEL", "DEPTH_ANYTHING_V2_WHEEL"):
                env[var] = f"/nonexistent/{var.lower()}.whl"  # no network: fail at once (real_hosts.md)
        else:
            args += ["--use-cpu", "all", "--no-half", "--precision", "full"]
        return args, env

    def start(self) -> None:
        args, env = self.command()
        t0 = time.monotonic()
        with open(self.log_path, "w") as log:
            log.write(f"$ cd {self.webui} && REQS_FILE={env['REQS_FILE']} {' '.join(args)}\n")
            log.flush()
            self.proc = subprocess.Popen(args, cwd=str(self.webui), env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"the webui exited ({self.proc.returncode}) during start-up:\n{self.log()[-6000:]}")
            try:
                self.get("/sdapi/v1/upscalers", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                if time.monotonic() - t0 > STARTUP_TIMEOUT_S:
                    self.stop()
                    raise AssertionError(f"the webui did not answer in {STARTUP_TIMEOUT_S}s:\n{self.log()[-6000:]}")
                time.sleep(2)
        self.startup_s = time.monotonic() - t0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the process group this test started
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- the API -------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, timeout: float = 900) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def get(self, path: str, timeout: float = 60) -> Any:
        return self.request("GET", path, timeout=timeout)

    def post(self, path: str, body: Any, timeout: float = 900) -> Any:
        return self.request("POST", path, body, timeout=timeout)

    def extras(self, img: Any, upscaler: str, scale: float) -> Any:
        answer = self.post("/sdapi/v1/extra-single-image",
                           {"image": png_b64(img), "upscaler_1": upscaler, "upscaling_resize": scale,
                            "resize_mode": 0})
        return b64_png(answer["image"])


def freeze_diff(before: list[str], after: list[str]) -> dict[str, list[str]]:
    """Added, removed and changed distributions between two ``pip freeze`` listings."""
    def parse(lines: list[str]) -> dict[str, str]:
        out = {}
        for line in lines:
            name, sep, version = line.partition("==")
            if not sep:
                name, _, version = line.partition(" @ ")
            out[name.strip().lower().replace("_", "-")] = version.strip()
        return out

    a, b = parse(before), parse(after)
    return {
        "added": sorted(f"{k}=={b[k]}" for k in b.keys() - a.keys()),
        "removed": sorted(f"{k}=={a[k]}" for k in a.keys() - b.keys()),
        "changed": sorted(f"{k}: {a[k]} -> {b[k]}" for k in a.keys() & b.keys() if a[k] != b[k]),
    }


def started_host(root: Path, kind: str):
    """Generator for a module fixture: reset, our models in place, freeze, install, first start."""
    import pytest
    import torch

    host = RealWebui(root, kind)
    reason = host.missing()
    if reason:
        pytest.skip(reason)
    host.reset()
    from dlgsanet import default_model_path
    from dlgsanet.checkpoint import read_state_dict

    sd = read_state_dict(default_model_path(4))
    for name in OUR_MODEL_FILES:
        path = host.models / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("broken.pth"):
            path.write_bytes(b"\x80\x02this is not a checkpoint")
        else:
            torch.save(sd, path)  # this torch's default layout: the zip with .format_version
    host.freeze_before = host.freeze()
    host.install_extension()
    try:
        host.start()
        host.freeze_after = host.freeze()
        diff = freeze_diff(host.freeze_before, host.freeze_after)
        pristine = root / "pip-freeze-pristine.txt"
        vs_pristine = (freeze_diff(sorted(pristine.read_text().split("\n")[:-1]), host.freeze_after)
                       if pristine.exists() else None)
        (root / f"freeze-diff-{kind}-first-start.txt").write_text(
            f"first start {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, startup {host.startup_s:.0f}s\n"
            f"before -> after: {json.dumps(diff, indent=1)}\n"
            f"pip-freeze-pristine.txt -> after: {json.dumps(vs_pristine, indent=1)}\n")
        yield host
    finally:
        host.stop()
