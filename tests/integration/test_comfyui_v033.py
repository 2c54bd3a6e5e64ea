"""The pack inside a real ComfyUI v0.33.0 (Aug 2026), run by hand: V3 nodes, the built-in
upscale path, the example workflows through ``/prompt`` and through the real frontend in headless
Chromium, progress over the websocket, ``/interrupt`` between tiles, and a ComfyUI-Manager
install that must not change any package the host has.

CI cannot fetch this ComfyUI: prepare it with ``tests/integration/setup_comfyui_v033.sh <mirror>
<dir>`` and run ``DLGSANET_COMFYUI_DIR=<dir> pytest -v tests/integration/test_comfyui_v033.py``.
Skipped, with that reason, while ``DLGSANET_COMFYUI_DIR`` is unset. Browser checks need
Debian's ``chromium`` (``/usr/bin/chromium``, or ``DLGSANET_CHROMIUM``); the Manager check needs the
package registry (``comfyui_manager``, cupy). ``DLGSANET_COMFYUI_SCREENSHOTS=<dir>`` keeps a
screenshot of each workflow loaded in the frontend.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.integration

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (helpers)
import browser_helpers as bh  # noqa: E402
import comfy_helpers as ch  # noqa: E402
import comfy_real_helpers as crh  # noqa: E402

import dlgsanet  # noqa: E402
from dlgsanet.alpha import upscale_rgba  # noqa: E402
from dlgsanet.checkpoint import bundled_scales  # noqa: E402

_DIR = os.environ.get("DLGSANET_COMFYUI_DIR")
if not _DIR:
    pytest.skip("DLGSANET_COMFYUI_DIR is unset: prepare a real ComfyUI v0.33.0 with "
                "tests/integration/setup_comfyui_v033.sh and point DLGSANET_COMFYUI_DIR at it",
                allow_module_level=True)
DIR = Path(_DIR)
COMFYUI = DIR / "ComfyUI"
PYTHON = DIR / "venv" / "bin" / "python"
VERSION = "0.33.0"
INPUT_SIZE = (120, 48)  # example.png: one tile for the workflows' own settings
TILED_SIZE = (256, 176)  # tiles.png: 3 x 2 tiles of 96 px with 16 px overlap
BIG_SIZE = (720, 560)  # big.png: at least 9 x 7 = 63 tiles of 96 px, for the interrupt
SMALL_TILE, SMALL_OVERLAP = 96, 16
BUNDLED = "(bundled) "

RESULTS: dict[str, Any] = {}


def _tiles_along(length: int, tile: int, overlap: int) -> int:
    """The fewest tiles of ``tile`` px overlapping by ``overlap`` that cover ``length`` px."""
    return 1 if length <= tile else -(-(length - overlap) // (tile - overlap))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    for path in (COMFYUI / "main.py", PYTHON):
        if not path.exists():
            pytest.fail(f"DLGSANET_COMFYUI_DIR={DIR} has no {path.relative_to(DIR)}: run "
                        "tests/integration/setup_comfyui_v033.sh <mirror> <dir> first", pytrace=False)
    base = tmp_path_factory.mktemp("comfyui033 base")
    RESULTS["model"] = crh.prepare_base(base, INPUT_SIZE)
    crh.input_image(TILED_SIZE).save(base / "input" / "tiles.png")
    crh.input_image(BIG_SIZE).save(base / "input" / "big.png")
    with crh.running_server(PYTHON, COMFYUI, base) as srv:
        RESULTS["startup_s"] = srv.startup_s
        try:
            yield srv
        finally:
            print(f"\nComfyUI v0.33.0 integration results: {json.dumps(RESULTS, indent=1)}")


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


def _model_path(server: crh.Server, name: str) -> Path:
    if name.startswith(BUNDLED):
        return dlgsanet.default_model_path().parent / name[len(BUNDLED):]
    return server.base / "models" / "upscale_models" / name


def _expected_for(server: crh.Server, prompt: dict[str, Any]) -> tuple[np.ndarray, int, tuple[int, int]]:
    """What the prompt's upscale node must produce, computed here with :mod:`dlgsanet`."""
    _, load = crh.node_of(prompt, "LoadImage")
    image = crh.library_input(server.base / "input" / load["inputs"]["image"])
    size = (image.shape[2], image.shape[1])
    classes = {n["class_type"] for n in prompt.values()}
    if "ImageUpscaleWithModel" in classes:
        _, loader = crh.node_of(prompt, "UpscaleModelLoader")
        model = dlgsanet.load_model(_model_path(server, loader["inputs"]["model_name"]))
        # ImageUpscaleWithModel runs float32 tiles of 512 px: these inputs are one tile.
        assert max(size) <= 512
        return crh.as_comfyui_saves(crh.whole_image_reference(model, image)[0]), model.scale, size
    _, loader = crh.node_of(prompt, "DLGSANetModelLoader")
    model = dlgsanet.load_model(_model_path(server, loader["inputs"]["model_name"]))
    known = {"dlgsanet_model", "image", "tile_size", "overlap"}
    up = next(n for n in prompt.values() if n["class_type"] in ("DLGSANetUpscale", "DLGSANetTiledUpscale"))
    extra = {k: v for k, v in up["inputs"].items() if k not in known}
    assert not extra or all(v in (None, 0, 0.0, "model", "model scale") for v in extra.values()), (
        f"reference does not know these inputs yet: {extra}")
    expected = upscale_rgba(model, image, channels_last=True, tile_size=up["inputs"].get("tile_size"),
                            overlap=up["inputs"].get("overlap"))
    return crh.as_comfyui_saves(expected[0]), model.scale, size


# ------------------------------------------------------------------------------------------
# the server and the nodes
# ------------------------------------------------------------------------------------------
def test_server_is_comfyui_v0_33_0(server):
    stats = server.get("/system_stats")["system"]
    RESULTS["system"] = {k: stats.get(k) for k in ("comfyui_version", "python_version", "pytorch_version",
                                                    "required_frontend_version", "installed_templates_version")}
    assert stats["comfyui_version"] == VERSION, stats


def test_pack_imports_without_failure(server):
    log = server.log()
    assert crh.pack_import_problems(log) == [], log[-6000:]
    assert "Unable to parse pyproject.toml" not in log, log[-6000:]


def test_our_nodes_are_v3_schema_nodes(object_info):
    """V3 nodes answer /object_info through ``Schema.get_v1_info``: every field of its
    ``NodeInfoV1`` (``output_matchtypes``, ``price_badge``...), which V1 nodes lack."""
    v3_fields = set(object_info["ImageUpscaleWithModel"])  # a V3 node of ComfyUI itself
    v1_fields = set(object_info["LoadImage"])  # a V1 node of ComfyUI itself (nodes.py)
    assert v3_fields != v1_fields and {"output_matchtypes", "price_badge"} <= v3_fields - v1_fields
    ours = {n: object_info[n] for n in ("DLGSANetModelLoader", "DLGSANetUpscale", "DLGSANetTiledUpscale")}
    RESULTS["object_info fields"] = {"V3 (ImageUpscaleWithModel)": sorted(v3_fields),
                                     "V1 (LoadImage)": sorted(v1_fields),
                                     **{n: sorted(i) for n, i in ours.items()}}
    for name, info in ours.items():
        assert set(info) == v3_fields, f"{name} is not a V3 node here: fields {sorted(info)}"
        assert info["python_module"].startswith("custom_nodes."), info["python_module"]


def test_our_nodes_keep_their_ids_inputs_and_outputs(object_info):
    loader, up, tiled = (object_info[n] for n in ("DLGSANetModelLoader", "DLGSANetUpscale", "DLGSANetTiledUpscale"))
    assert (loader["display_name"], up["display_name"], tiled["display_name"]) == (
        "Load DLGSANet Model", "Upscale Image with DLGSANet", "Tiled Upscale (DLGSANet)")
    for node in (loader, up, tiled):
        assert node["category"] == "image/upscaling" and node["description"]
    assert loader["output"] == ["DLGSANET_MODEL"]
    assert list(loader["input"]["required"])[:2] == ["model_name", "precision"]
    names = crh.choices(loader["input"]["required"]["model_name"])
    assert crh.MODEL_FILE in names and BUNDLED + dlgsanet.default_model_path().name in names, names
    for node in (up, tiled):
        assert node["output"] == ["IMAGE"]
        assert list(node["input"]["required"])[:2] == ["dlgsanet_model", "image"]
        assert node["input"]["required"]["dlgsanet_model"][0] == "DLGSANET_MODEL"
        assert node["input"]["required"]["image"][0] == "IMAGE"
    assert list(tiled["input"]["required"])[2:4] == ["tile_size", "overlap"]
    RESULTS["inputs"] = {n: object_info[n]["input_order"] for n in
                         ("DLGSANetModelLoader", "DLGSANetUpscale", "DLGSANetTiledUpscale")}


def test_builtin_loader_path_equals_dlgsanet(server, object_info):
    """UpscaleModelLoader + ImageUpscaleWithModel with our .safetensors (spandrel registration)."""
    assert crh.MODEL_FILE in crh.choices(object_info["UpscaleModelLoader"]["input"]["required"]["model_name"])
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "2": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": crh.MODEL_FILE}},
        "3": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["2", 0], "image": ["1", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "builtin"}},
    }
    history = server.run(prompt)
    saved = crh.saved_image(server, history, "4")
    expected, scale, size = _expected_for(server, prompt)
    RESULTS["built-in loader path"] = crh.compare(saved, expected, size, scale)


def test_every_bundled_model_is_listed_and_upscales_at_its_scale(server, object_info):
    """The loader offers each bundled model (x2, x3 and x4 today); the tiled example workflow with
    each one gives what :mod:`dlgsanet` computes, at that model's scale."""
    names = crh.choices(object_info["DLGSANetModelLoader"]["input"]["required"]["model_name"])
    assert bundled_scales() == [2, 3, 4], bundled_scales()
    workflow = next(p for p in ch.workflow_files() if p.stem == "dlgsanet_tiled_upscale")
    for scale in bundled_scales():
        name = BUNDLED + dlgsanet.default_model_path(scale).name
        assert name in names, names
        prompt = crh.to_api(ch.load_workflow(workflow), object_info)
        crh.node_of(prompt, "DLGSANetModelLoader")[1]["inputs"]["model_name"] = name
        history = server.run(prompt)
        saved = crh.saved_image(server, history, crh.node_of(prompt, "SaveImage")[0])
        expected, model_scale, size = _expected_for(server, prompt)
        assert model_scale == scale
        RESULTS[f"bundled x{scale} through the tiled workflow"] = crh.compare(saved, expected, size, scale)


@pytest.mark.parametrize("path", ch.workflow_files(), ids=lambda p: p.stem)
def test_example_workflow_through_prompt(server, object_info, path):
    workflow = ch.load_workflow(path)
    prompt = crh.to_api(workflow, object_info)
    started = time.monotonic()
    history = server.run(prompt, workflow)
    save_id, _ = crh.node_of(prompt, "SaveImage")
    saved = crh.saved_image(server, history, save_id)
    expected, scale, size = _expected_for(server, prompt)
    RESULTS[f"/prompt {path.name}"] = {**crh.compare(saved, expected, size, scale),
                                       "seconds": round(time.monotonic() - started, 1)}


def test_v1_nodes_on_request_in_the_same_comfyui(tmp_path_factory):
    """``DLGSANET_COMFY_NODE_API=v1``: the legacy ``NODE_CLASS_MAPPINGS`` path in this real
    ComfyUI (v0.3.75 and v0.33.0 both have the pinned V3 API, so only this shows V1 for real):
    V1 node fields, same ids and inputs, and both example workflows give the same images."""
    base = tmp_path_factory.mktemp("comfyui033 v1 base")
    crh.prepare_base(base, INPUT_SIZE)
    with crh.running_server(PYTHON, COMFYUI, base, env={"DLGSANET_COMFY_NODE_API": "v1"},
                            log_name="server-v1.log") as srv:
        assert crh.pack_import_problems(srv.log()) == [], srv.log()[-6000:]
        info = srv.get("/object_info")
        v3_only = {"output_matchtypes", "price_badge", "api_node"}  # what only Schema.get_v1_info adds
        assert v3_only <= set(info["ImageUpscaleWithModel"]) and not v3_only & set(info["LoadImage"])
        results: dict[str, Any] = {}
        for name in ("DLGSANetModelLoader", "DLGSANetUpscale", "DLGSANetTiledUpscale"):
            assert not v3_only & set(info[name]), f"{name} is not a V1 node: fields {sorted(info[name])}"
            assert info[name]["python_module"].startswith("custom_nodes."), info[name]["python_module"]
        # V1 combos are a plain list of options; V3 ones are ["COMBO", {"options": [...]}].
        assert isinstance(info["DLGSANetModelLoader"]["input"]["required"]["model_name"][0], list)
        assert list(info["DLGSANetTiledUpscale"]["input"]["required"])[:4] == [
            "dlgsanet_model", "image", "tile_size", "overlap"]
        for path in ch.workflow_files():
            prompt = crh.to_api(ch.load_workflow(path), info)
            history = srv.run(prompt)
            save_id, _ = crh.node_of(prompt, "SaveImage")
            expected, scale, size = _expected_for(srv, prompt)
            results[path.name] = crh.compare(crh.saved_image(srv, history, save_id), expected, size, scale)
    RESULTS["V1 on request (DLGSANET_COMFY_NODE_API=v1)"] = results


def _tiled_prompt(image: str, prefix: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "DLGSANetModelLoader", "inputs": {"model_name": crh.MODEL_FILE, "precision": "auto"}},
        "3": {"class_type": "DLGSANetTiledUpscale", "inputs": {
            "dlgsanet_model": ["2", 0], "image": ["1", 0], "tile_size": SMALL_TILE, "overlap": SMALL_OVERLAP}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": prefix}},
    }


def _fill_defaults(prompt: dict[str, Any], object_info: dict[str, Any]) -> dict[str, Any]:
    """Widgets a prompt leaves out (e.g. inputs added later) take their /object_info defaults."""
    for node in prompt.values():
        spec = object_info[node["class_type"]]["input"].get("required", {})
        for name, value in spec.items():
            if name not in node["inputs"] and len(value) > 1 and isinstance(value[1], dict) and "default" in value[1]:
                node["inputs"][name] = value[1]["default"]
    return prompt


def _messages_until_done(ws: bh.WebSocket, prompt_id: str, timeout: float) -> list[dict[str, Any]]:
    """Websocket messages of ``prompt_id`` until it succeeds, fails or is interrupted."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    ws.settimeout(timeout)
    while time.monotonic() < deadline:
        msg = ws.recv_json()
        data = msg.get("data") or {}
        if data.get("prompt_id") != prompt_id:
            continue
        got.append(msg)
        if msg["type"] in ("execution_success", "execution_error", "execution_interrupted"):
            return got
        if msg["type"] == "executing" and data.get("node") is None:
            return got
    raise AssertionError(f"no end of {prompt_id} in {timeout}s: {got[-5:]}")


def test_progress_messages_over_the_websocket(server, object_info):
    client_id = str(uuid.uuid4())
    ws = server.websocket(client_id)
    try:
        prompt = _fill_defaults(_tiled_prompt("tiles.png", "progress"), object_info)
        prompt_id = server.queue(prompt, client_id=client_id)
        messages = _messages_until_done(ws, prompt_id, crh.RUN_TIMEOUT)
    finally:
        ws.close()
    # at least 3 x 2 tiles (more when the engine pads the image border before tiling)
    fewest = _tiles_along(TILED_SIZE[0], SMALL_TILE, SMALL_OVERLAP) * _tiles_along(TILED_SIZE[1], SMALL_TILE, SMALL_OVERLAP)
    progress = [m["data"] for m in messages if m["type"] == "progress" and m["data"].get("node") == "3"]
    RESULTS["websocket progress"] = {"fewest tiles": fewest, "messages": [(p["value"], p["max"]) for p in progress],
                                     "types": sorted({m["type"] for m in messages})}
    assert messages[-1]["type"] in ("execution_success", "executing"), messages[-1]
    assert progress, f"no progress message for the upscale node: {[m['type'] for m in messages]}"
    maxima = {p["max"] for p in progress}
    assert len(maxima) == 1 and maxima.pop() >= fewest, RESULTS["websocket progress"]
    tiles = progress[0]["max"]
    values = [p["value"] for p in progress]
    assert values == sorted(values) and values[-1] == tiles, values
    # tile by tile, not one jump: ComfyUI sends the first and last update and drops any other that
    # comes within 0.1 s of the last one sent (comfy/utils.py, PROGRESS_THROTTLE_MIN_INTERVAL), so
    # on a fast CPU a small tile's message may be dropped; most of them arrive
    seen = set(values) & set(range(1, tiles + 1))
    assert len(seen) >= max(3, tiles // 2), values
    history = server.wait(prompt_id)
    saved = crh.saved_image(server, history, "4")
    expected, scale, size = _expected_for(server, prompt)
    RESULTS["tiled 3x2 through /prompt"] = crh.compare(saved, expected, size, scale)


def test_interrupt_between_tiles_then_the_next_prompt_runs(server, object_info):
    client_id = str(uuid.uuid4())
    ws = server.websocket(client_id)
    try:
        prompt = _fill_defaults(_tiled_prompt("big.png", "interrupted"), object_info)
        prompt_id = server.queue(prompt, client_id=client_id)
        seen: list[tuple[int, int]] = []
        ws.settimeout(crh.RUN_TIMEOUT)
        while True:  # wait until a tile or two are done
            msg = ws.recv_json()
            data = msg.get("data") or {}
            if data.get("prompt_id") != prompt_id:
                continue
            assert msg["type"] not in ("execution_success", "execution_error"), msg
            if msg["type"] == "progress" and data.get("node") == "3":
                seen.append((data["value"], data["max"]))
                if data["value"] >= 2:
                    break
        interrupted_at = time.monotonic()
        server.post("/interrupt", {})
        rest = _messages_until_done(ws, prompt_id, crh.RUN_TIMEOUT)
        stopped_after = time.monotonic() - interrupted_at
    finally:
        ws.close()
    after = [(m["data"]["value"], m["data"]["max"]) for m in rest if m["type"] == "progress"]
    tiles = seen[-1][1]
    RESULTS["interrupt"] = {"tiles": tiles, "progress before": seen, "progress after": after,
                            "end": rest[-1]["type"], "stopped_after_s": round(stopped_after, 2)}
    assert rest[-1]["type"] == "execution_interrupted", RESULTS["interrupt"]
    assert rest[-1]["data"]["node_type"] == "DLGSANetTiledUpscale", rest[-1]
    assert all(v < tiles for v, _ in seen + after), RESULTS["interrupt"]  # stopped before the end
    history = server.wait(prompt_id)
    RESULTS["interrupt"]["history status"] = {k: history["status"][k] for k in ("status_str", "completed")}
    assert history["status"]["status_str"] == "error" and history["status"]["completed"] is False
    assert any(m[0] == "execution_interrupted" for m in history["status"]["messages"]), history["status"]
    assert not history.get("outputs"), history.get("outputs")
    assert not list((server.base / "output").glob("interrupted*"))
    assert crh.pack_import_problems(server.log()) == [], server.log()[-4000:]  # no traceback through us
    # still serving: the next prompt runs to a saved image
    prompt = _fill_defaults(_tiled_prompt("example.png", "after_interrupt"), object_info)
    history = server.run(prompt)
    saved = crh.saved_image(server, history, "4")
    expected, scale, size = _expected_for(server, prompt)
    RESULTS["prompt after interrupt"] = crh.compare(saved, expected, size, scale)


# ------------------------------------------------------------------------------------------
# the frontend v0.33.0 serves, in real headless Chromium
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser(server):
    if not bh.CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {bh.CHROMIUM} (Debian: apt-get install chromium; or set DLGSANET_CHROMIUM)")
    RESULTS["chromium"] = bh.chromium_version()
    # A returning user: the first-run templates dialog would cover the canvas.
    server.post("/settings/Comfy.TutorialCompleted", True)
    chrome = bh.Chromium()
    try:
        yield chrome
    finally:
        RESULTS["browser console (last lines)"] = chrome.console[-15:]
        chrome.quit()


_GRAPH_STATE = r"""(() => {
  const dialogs = [...document.querySelectorAll('[role=dialog], .p-dialog, .comfy-modal')]
      .filter(d => d.getClientRects().length > 0).map(d => d.innerText.slice(0, 400));
  const nodes = (window.app && app.graph) ? app.graph._nodes || app.graph.nodes : [];
  // v0.33.0's frontend (1.49) reports a missing node type in a notice panel, not a dialog
  const notices = document.body.innerText.match(/[^\n]*(missing node|isn't installed|not installed)[^\n]*/gi) || [];
  return {dialogs, notices, nodes: nodes.map(n => ({id: n.id, type: n.type, has_errors: !!n.has_errors,
      registered: !!(n.constructor && n.constructor.nodeData),
      widgets: (n.widgets || []).map(w => [w.name, w.value])}))};
})()"""

_DROP = """((text, name) => {
  const file = new File([text], name, {type: 'application/json'});
  const dt = new DataTransfer();
  dt.items.add(file);
  const canvas = app.canvas.canvas;  // the graph canvas (the first <canvas> is the minimap)
  const r = canvas.getBoundingClientRect();
  const opts = {dataTransfer: dt, bubbles: true, cancelable: true,
                clientX: r.left + r.width / 2, clientY: r.top + r.height / 2};
  canvas.dispatchEvent(new DragEvent('dragenter', opts));
  canvas.dispatchEvent(new DragEvent('dragover', opts));
  canvas.dispatchEvent(new DragEvent('drop', opts));
  return true;
})"""


def _open_frontend(chrome: bh.Chromium, server: crh.Server) -> None:
    chrome.navigate(server.url + "/")
    chrome.wait_for("!!(window.app && window.app.graph && document.querySelector('canvas') "
                    "&& window.app.canvas)", timeout=240, what="the ComfyUI frontend to load")
    chrome.wait_for("!!(window.LiteGraph || true) && document.readyState === 'complete'", timeout=60)
    time.sleep(2)  # extensions finish registering node definitions


def _drop_workflow(browser: bh.Chromium, workflow: dict[str, Any], name: str) -> dict[str, Any]:
    """Drop ``workflow`` as a .json file on the graph canvas; the graph state once it is loaded."""
    browser.js(f"({_DROP})({json.dumps(json.dumps(workflow))}, {json.dumps(name)})")
    wanted = sorted(n["type"] for n in workflow["nodes"])
    browser.wait_for(
        f"(() => {{ const s = {_GRAPH_STATE}; "
        f"return JSON.stringify(s.nodes.map(n => n.type).sort()) === {json.dumps(json.dumps(wanted, separators=(',', ':')))} ? s : null; }})()",
        timeout=60, what=f"the nodes of {name} on the canvas")
    time.sleep(1.5)  # a missing-nodes dialog would open now
    return browser.js(_GRAPH_STATE)


def test_frontend_check_sees_a_missing_node(server, browser):
    """Control for the checks below: a node type no pack provides is seen as missing."""
    _open_frontend(browser, server)
    workflow = ch.load_workflow(ch.EXAMPLE_WORKFLOWS / "dlgsanet_tiled_upscale.json")
    for node in workflow["nodes"]:
        if node["type"] == "DLGSANetTiledUpscale":
            node["type"] = "DLGSANetNoSuchNode"
    state = _drop_workflow(browser, workflow, "missing_node.json")
    missing = [n for n in state["nodes"] if not n["registered"] or n["has_errors"]]
    RESULTS["frontend control (missing node)"] = {"missing": missing, "notices": state["notices"],
                                                  "dialogs": state["dialogs"]}
    assert [n["type"] for n in missing] == ["DLGSANetNoSuchNode"], state
    assert any("DLGSANetNoSuchNode" in d for d in state["notices"] + state["dialogs"]), state


@pytest.mark.parametrize("path", ch.workflow_files(), ids=lambda p: p.stem)
def test_example_workflow_dropped_into_the_frontend_and_queued(server, browser, path):
    _open_frontend(browser, server)
    RESULTS["frontend version"] = browser.js("window.__COMFYUI_FRONTEND_VERSION__ || null")
    workflow = ch.load_workflow(path)
    state = _drop_workflow(browser, workflow, path.name)
    shots = os.environ.get("DLGSANET_COMFYUI_SCREENSHOTS")
    if shots:
        browser.screenshot(Path(shots) / f"comfyui033_{path.stem}.png")
    record = RESULTS.setdefault(f"frontend {path.name}", {})
    record.update(dialogs=state["dialogs"], notices=state["notices"],
                  nodes=[(n["type"], n["registered"], n["has_errors"]) for n in state["nodes"]])
    assert not [n for n in state["nodes"] if n["type"] not in crh.VIRTUAL_NODES
                and (not n["registered"] or n["has_errors"])], record
    assert state["notices"] == [], record
    assert not [d for d in state["dialogs"] if "missing" in d.lower() or "not found" in d.lower()], record
    # widgets as saved in the file (same ids, inputs and widget order after loading)
    by_id = {str(n["id"]): n for n in state["nodes"]}
    for node in workflow["nodes"]:
        if node.get("widgets_values") and node["type"] not in crh.VIRTUAL_NODES:
            shown = [v for _, v in by_id[str(node["id"])]["widgets"]]
            assert shown[:len(node["widgets_values"])] == node["widgets_values"] or \
                [v for v in shown if v is not None][:len(node["widgets_values"])] == node["widgets_values"], \
                (node["type"], by_id[str(node["id"])]["widgets"], node["widgets_values"])

    before = set(server.get("/history"))
    browser.js("app.queuePrompt(0, 1).then(() => true)")
    deadline = time.monotonic() + 60
    new: set[str] = set()
    while not new and time.monotonic() < deadline:
        queue = server.get("/queue")
        running = {q[1] for q in queue["queue_running"] + queue["queue_pending"]}
        new = (set(server.get("/history")) | running) - before
        time.sleep(0.3)
    assert len(new) == 1, f"the frontend queued {len(new)} prompts; console:\n" + "\n".join(browser.console[-20:])
    prompt_id = new.pop()
    history = server.wait(prompt_id)
    prompt = history["prompt"][2]
    save_id, _ = crh.node_of(prompt, "SaveImage")
    saved = crh.saved_image(server, history, save_id)
    expected, scale, size = _expected_for(server, prompt)
    record.update(crh.compare(saved, expected, size, scale))
    record["saved"] = history["outputs"][save_id]["images"][0]["filename"]
    assert (server.base / "output" / record["saved"]).is_file()


# ------------------------------------------------------------------------------------------
# ComfyUI-Manager: the pack installed the Manager's way must not change a host package
# ------------------------------------------------------------------------------------------
def _pip_freeze(python: Path) -> dict[str, str]:
    out = subprocess.run([str(python), "-m", "pip", "freeze", "--all"], capture_output=True, text=True,
                         check=True, timeout=300).stdout
    pins = {}
    for line in out.splitlines():
        if "==" in line:
            name, version = line.split("==", 1)
        elif " @ " in line:
            name, version = line.split(" @ ", 1)
        else:
            continue
        pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def _manager_pin() -> str:
    lines = [ln.strip() for ln in (COMFYUI / "manager_requirements.txt").read_text().splitlines()]
    pins = [ln for ln in lines if ln and not ln.startswith("#")]
    assert len(pins) == 1 and "==" in pins[0], pins
    return pins[0]


def _pip(python: Path, *args: str) -> str:
    proc = subprocess.run([str(python), "-m", "pip", *args], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_manager_install_changes_no_host_package(tmp_path):
    """ComfyUI v0.33.0 with ``--enable-manager`` and its pinned comfyui_manager; the pack
    reserved for installation as the Manager does it (``install-scripts.txt`` line
    ``[path, '#LAZY-INSTALL-SCRIPT', python]``, written by comfyui_manager's ``reserve_script``),
    so that the Manager's prestartup installs it in ComfyUI's Python: each ``requirements.txt``
    line that is not installed with ``pip install``, then ``python install.py`` in the pack.
    The environment holds numpy 1.26.4 and a CUDA 13 torch: the newest cupy-cuda13x requires
    numpy >= 2, so installing it unconstrained would upgrade numpy."""
    if not PYTHON.exists():
        pytest.fail(f"no {PYTHON}: run setup_comfyui_v033.sh first", pytrace=False)
    venv = tmp_path / "venv"
    # A copy of the prepared venv (hard links: the original is never written; pip replaces
    # files rather than editing them), so the main venv stays as ComfyUI installed it.
    subprocess.run(["cp", "-al", str(DIR / "venv"), str(venv)], check=True)
    python = venv / "bin" / "python"
    main_before = _pip_freeze(PYTHON)
    pin = _manager_pin()
    _pip(python, "install", "--quiet", "numpy==1.26.4", pin)
    cuda = subprocess.run([str(python), "-c", "import torch; print(torch.__version__, torch.version.cuda)"],
                          capture_output=True, text=True, check=True).stdout.split()
    RESULTS["manager env"] = {"torch": cuda[0], "torch.version.cuda": cuda[1], "manager": pin}
    assert cuda[1] != "None", "this check needs a CUDA build of torch"
    base = tmp_path / "base"
    (base / "custom_nodes").mkdir(parents=True)
    env = {"DLGSANET_FORCE_CUPY": "1"}
    # First start: the Manager settles (its own prestartup work is part of the host).
    with crh.running_server(python, COMFYUI, base, ["--enable-manager"], env=env, log_name="first.log") as srv:
        assert srv.get("/system_stats")["system"]["comfyui_version"] == VERSION
    first_log = (base / "first.log").read_text(errors="replace")
    assert "ComfyUI-Manager" in first_log, first_log[-4000:]
    before = _pip_freeze(python)
    assert before["numpy"] == "1.26.4", before.get("numpy")

    pack = base / "custom_nodes" / crh.PACK_FOLDER
    crh.copy_pack(pack)
    scripts = base / "user" / "__manager" / "startup-scripts"
    scripts.mkdir(parents=True, exist_ok=True)
    with open(scripts / "install-scripts.txt", "a") as f:  # comfyui_manager glob/manager_core.py reserve_script
        f.write(f"{[str(pack), '#LAZY-INSTALL-SCRIPT', str(python)]}\n")
    with crh.running_server(python, COMFYUI, base, ["--enable-manager"], env=env, log_name="install.log",
                            startup_timeout=1800) as srv:
        log = srv.log()
        object_info = srv.get("/object_info")
    after = _pip_freeze(python)
    changed = {k: (before[k], after.get(k)) for k in before if after.get(k) != before[k]}
    added = {k: v for k, v in after.items() if k not in before}
    install_lines = [ln for ln in log.splitlines() if "DLGSANet" in ln or "EXECUTE" in ln or "Install:" in ln]
    RESULTS["manager install"] = {"changed": changed, "added": added, "log": install_lines[-30:],
                                  "numpy": after.get("numpy")}
    assert not (scripts / "install-scripts.txt").exists(), "the Manager did not run the reserved install"
    assert f"Install: install script for '{pack}'" in log, log[-6000:]
    assert changed == {}, RESULTS["manager install"]
    assert any(k.startswith("cupy-cuda13x") for k in added), RESULTS["manager install"]
    assert crh.pack_import_problems(log) == [], log[-6000:]
    assert "DLGSANetUpscale" in object_info
    assert _pip_freeze(PYTHON) == main_before, "the main venv changed"
    report = os.environ.get("DLGSANET_COMFYUI_REPORT")
    if report:
        Path(report).mkdir(parents=True, exist_ok=True)
        (Path(report) / "manager_freeze_before.txt").write_text("\n".join(f"{k}=={v}" for k, v in sorted(before.items())))
        (Path(report) / "manager_freeze_after.txt").write_text("\n".join(f"{k}=={v}" for k, v in sorted(after.items())))
        (Path(report) / "manager_install.log").write_text(log)
