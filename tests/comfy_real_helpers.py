"""Shared by the tests that run the pack inside a real ComfyUI (v0.3.75 in CI, v0.33.0 by hand).

A server per test module: ``main.py --cpu`` on 127.0.0.1 with a fresh ``--base-directory``
whose ``custom_nodes`` holds a copy of this repository under an odd folder name; helpers to
queue prompts, read ``/history`` and saved images, convert the example workflows to the API
format with the server's own ``/object_info``, and compare with :mod:`dlgsanet` run here.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
from PIL import Image

import comfy_helpers as ch
import dlgsanet
from browser_helpers import WebSocket

PACK_FOLDER = "DLGSANet Upscaler.v2"  # spaces and a dot; ComfyUI maps "." to "_x_" in the module name
MODEL_FILE = "dlgsanet_tiny_x4.safetensors"  # the name the built-in example workflow uses
STARTUP_TIMEOUT = 240
RUN_TIMEOUT = 300
VIRTUAL_NODES = {"Note", "MarkdownNote"}  # frontend-only, never sent to the server


class Server:
    """A running ComfyUI: HTTP helpers, its log, and the folders of its base directory."""

    def __init__(self, base: Path, port: int, proc: subprocess.Popen, log: Path) -> None:
        self.base, self.port, self.proc, self.log_path = base, port, proc, log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body[:1] in (b"{", b"[") else body

    def post(self, path: str, payload: Any) -> Any:
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                body = r.read()
        except urllib.error.HTTPError as e:
            raise AssertionError(f"POST {path} -> {e.code}: {e.read().decode(errors='replace')}") from None
        return json.loads(body) if body[:1] in (b"{", b"[") else body

    def queue(self, prompt: dict[str, Any], workflow: Optional[dict[str, Any]] = None,
              client_id: Optional[str] = None) -> str:
        body: dict[str, Any] = {"prompt": prompt, "client_id": client_id or str(uuid.uuid4())}
        if workflow is not None:
            body["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
        return self.post("/prompt", body)["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = RUN_TIMEOUT) -> dict[str, Any]:
        """The /history entry of ``prompt_id`` once it has finished (success, error or interrupt)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                return history[prompt_id]
            if self.proc.poll() is not None:
                raise AssertionError(f"ComfyUI exited while running a prompt:\n{self.log()[-4000:]}")
            time.sleep(0.5)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout}s:\n{self.log()[-4000:]}")

    def run(self, prompt: dict[str, Any], workflow: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        """Queue ``prompt`` and wait for its /history entry."""
        return self.wait(self.queue(prompt, workflow))

    def websocket(self, client_id: str) -> WebSocket:
        return WebSocket(f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def input_image(size: tuple[int, int]) -> Image.Image:
    """A deterministic photo-like image of ``size`` (w, h): gradients, edges, a disc, stripes."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 0.5 + 0.5 * np.sin(x / 7.0) * np.cos(y / 11.0)
    g = np.clip((x + y) / (w + h), 0, 1)
    b = ((x // 6 + y // 6) % 2).astype(np.float32) * 0.6 + 0.2
    disc = ((x - w * 0.6) ** 2 + (y - h * 0.45) ** 2) < (h * 0.25) ** 2
    r[disc], g[disc], b[disc] = 0.95, 0.3, 0.1
    rgb = np.stack([r, g, b], -1)
    return Image.fromarray((rgb * 255).round().astype(np.uint8), "RGB")


def copy_pack(dest: Path) -> None:
    """This repository as a user's clone would be, minus tests and caches."""
    shutil.copytree(ch.REPO_ROOT, dest, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", "*.pyc", ".pytest_cache", ".hypothesis", "tests", "runs", ".cache",
        ".venv", "*.egg-info", "build", "dist"))


def model_for_test(dest: Path) -> str:
    """The bundled default model when the repository has one, else a small random-weight x4."""
    bundled = dlgsanet.default_model_path()
    if bundled.exists():
        shutil.copyfile(bundled, dest)
        return "bundled Tiny x4"
    dlgsanet.save_model(ch.random_model(ch.small_config(scale=4)), dest)
    return "random-weight small x4 (no bundled model in the repository)"


def prepare_base(base: Path, size: tuple[int, int]) -> str:
    """A ComfyUI base directory: the pack, one model in upscale_models, input/example.png."""
    copy_pack(base / "custom_nodes" / PACK_FOLDER)
    (base / "models" / "upscale_models").mkdir(parents=True, exist_ok=True)
    what = model_for_test(base / "models" / "upscale_models" / MODEL_FILE)
    (base / "input").mkdir(exist_ok=True)
    input_image(size).save(base / "input" / "example.png")
    return what


@contextlib.contextmanager
def running_server(python: Path, comfyui: Path, base: Path, extra_args: Sequence[str] = (),
                   env: Optional[dict[str, str]] = None, log_name: str = "server.log",
                   startup_timeout: float = STARTUP_TIMEOUT) -> Iterator[Server]:
    """Start ComfyUI on a free port; yield once ``/system_stats`` answers; SIGTERM it after."""
    port, log = free_port(), base / log_name
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("PYTHONPATH", None)  # the server sees only its own tree and the pack
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
             "--base-directory", str(base), "--disable-auto-launch",
             "--database-url", "sqlite:///:memory:", *extra_args],
            cwd=comfyui, env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    srv = Server(base, port, proc, log)
    started = time.monotonic()
    try:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"ComfyUI exited during start-up (code {proc.returncode}):\n"
                                     f"{srv.log()[-6000:]}")
            try:
                srv.get("/system_stats")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() - started > startup_timeout:
                    raise AssertionError(f"ComfyUI did not answer within {startup_timeout}s:\n"
                                         f"{srv.log()[-6000:]}") from None
                time.sleep(0.5)
        srv.startup_s = round(time.monotonic() - started, 1)  # type: ignore[attr-defined]
        yield srv
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def to_api(workflow: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """UI-format workflow -> API prompt, with the widget order of this server's /object_info."""
    wf = dict(workflow, nodes=[n for n in workflow["nodes"] if n["type"] not in VIRTUAL_NODES])
    widgets = {name: ch.widget_inputs(defn["input"]) for name, defn in info.items()}
    return ch.ui_to_api(wf, widgets)


def choices(spec: list) -> list:
    """Options of a combo input in /object_info (V1: [[...], {...}]; V3: ["COMBO", {"options": [...]}])."""
    return spec[0] if isinstance(spec[0], list) else spec[1]["options"]


def node_of(prompt: dict[str, Any], class_type: str) -> tuple[str, dict[str, Any]]:
    return next((k, n) for k, n in prompt.items() if n["class_type"] == class_type)


def saved_image(server: Server, history: dict[str, Any], node_id: str) -> np.ndarray:
    status = history["status"]
    assert status["status_str"] == "success", json.dumps(status, indent=1)[-4000:]
    entry = history["outputs"][node_id]["images"][0]
    path = server.base / "output" / entry["subfolder"] / entry["filename"]
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def as_comfyui_saves(x: torch.Tensor) -> np.ndarray:
    """[H,W,3] float -> uint8 exactly as SaveImage does: clip(255 * x) then truncate."""
    return np.clip(255.0 * x.cpu().float().numpy(), 0, 255).astype(np.uint8)


def library_input(path: Path) -> torch.Tensor:
    """An input image as LoadImage gives it: RGB float32 / 255, [1,H,W,3]."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB")).astype(np.float32) / 255.0
    return torch.from_numpy(arr)[None]


def whole_image_reference(model: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """The network on the whole image, [1,H,W,3] in and out (what one-tile built-in upscaling is)."""
    with torch.inference_mode():
        return model(image.movedim(-1, 1)).clamp(0, 1).movedim(1, -1)


def compare(saved: np.ndarray, expected: np.ndarray, size: tuple[int, int], scale: int) -> dict[str, Any]:
    """Check a saved PNG against the local result: same shape, not blank, within one level."""
    w, h = size
    assert saved.shape == (h * scale, w * scale, 3), saved.shape
    assert saved.std() > 5, "saved image is blank"
    diff = np.abs(saved.astype(np.int16) - expected.astype(np.int16))
    stats = {"input": f"{w}x{h}", "output": f"{saved.shape[1]}x{saved.shape[0]}",
             "max_diff_levels": int(diff.max()), "mean_diff_levels": round(float(diff.mean()), 5),
             "output_std_levels": round(float(saved.std()), 1)}
    assert diff.max() <= 1 and diff.mean() < 0.01, stats
    return stats


def pack_import_problems(log: str) -> list[str]:
    """Lines of a ComfyUI log that say the pack failed to import (empty when it imported)."""
    lines = [line for line in log.splitlines() if PACK_FOLDER in line]
    if not any("seconds" in line for line in lines):
        return [f"{PACK_FOLDER} is not listed in the import times"]
    return [line for line in lines if "IMPORT FAILED" in line or "Cannot import" in line
            or line.lstrip().startswith("File ")]
