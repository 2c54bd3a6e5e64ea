"""example_workflows/: UI-format workflows that open in ComfyUI's editor and run as they are.

Structure (links consistent both ways, known node types, valid widget values) is checked here;
tests/integration/test_comfyui_real.py runs them in a real ComfyUI.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

import comfy_helpers as ch
from comfy_helpers import folder_paths

WORKFLOWS = ch.workflow_files()
VIRTUAL = {"Note": ["text"], "MarkdownNote": ["text"]}  # frontend-only nodes


@pytest.fixture(scope="module", params=["v3", "v1"])
def nodes(request, tmp_path_factory):
    """Our nodes as a ComfyUI with the V3 API registers them, and as one without it."""
    folder = tmp_path_factory.mktemp(f"wf-{request.param}") / "custom_nodes" / "pack"
    return ch.registered_nodes(ch.linked_pack(folder, request.param))[0]


def widget_specs(cls):
    """(name, type or list of options, options) of each widget input, in widget order; the
    number of them that are optional (always the last ones: old workflows omit them)."""
    spec = cls.INPUT_TYPES()
    out = []
    for section in ("required", "optional"):
        for name, (kind, options) in spec.get(section, {}).items():
            if name in ch.widget_inputs({section: {name: (kind, options)}}):
                out.append((name, options.get("options", kind) if kind == "COMBO" else kind, options))
    return out, len(ch.widget_inputs({"optional": spec.get("optional", {})}))


@pytest.fixture(autouse=True)
def _empty_models_folder(tmp_path):
    folder_paths._reset(str(tmp_path))


def nodes_by_id(wf):
    return {n["id"]: n for n in wf["nodes"]}


def test_there_are_the_two_example_workflows():
    assert {p.stem for p in WORKFLOWS} == {"dlgsanet_tiled_upscale", "dlgsanet_builtin_upscale_model"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_links_are_consistent_both_ways(path: Path):
    wf = ch.load_workflow(path)
    assert wf["version"] == 0.4
    nodes = nodes_by_id(wf)
    links = list(ch.iter_links(wf))
    ids = [link[0] for link in links]
    assert len(ids) == len(set(ids)), "duplicate link ids"
    assert wf["last_node_id"] >= max(nodes) and wf["last_link_id"] >= max(ids)
    for lid, src, sslot, dst, dslot, kind in links:
        out, inp = nodes[src]["outputs"][sslot], nodes[dst]["inputs"][dslot]
        assert lid in (out["links"] or []) and inp["link"] == lid
        assert out["type"] == inp["type"] == kind
    for node in wf["nodes"]:  # and nothing dangles the other way
        for inp in node.get("inputs", []):
            assert inp["link"] is None or inp["link"] in ids
        for out in node.get("outputs", []):
            assert all(lid in ids for lid in (out["links"] or []))


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_node_types_exist_and_widget_values_are_valid(path: Path, nodes):
    wf = ch.load_workflow(path)
    bundled = ch.REPO_ROOT / "dlgsanet" / "weights"
    missing_bundled = []
    for node in wf["nodes"]:
        kind, values = node["type"], node.get("widgets_values") or []
        if kind in nodes:
            widgets, optional = widget_specs(nodes[kind])
            # A workflow saved before optional widgets were added has fewer values: the editor
            # keeps the defaults for the missing (last) ones.
            assert len(widgets) - optional <= len(values) <= len(widgets), f"{kind}: {values} for {widgets}"
            for (name, kind_or_options, options), value in zip(widgets, values):
                if isinstance(kind_or_options, list):
                    if str(value).startswith("(bundled) ") and not (bundled / value[10:]).exists():
                        missing_bundled.append(value)  # the model is trained and added separately
                        continue
                    assert value in kind_or_options, f"{kind}.{name} = {value!r} not in {kind_or_options}"
                elif kind_or_options == "INT":
                    assert isinstance(value, int) and options["min"] <= value <= options["max"]
                elif kind_or_options == "FLOAT":
                    assert isinstance(value, (int, float)) and options["min"] <= value <= options["max"]
            # linked inputs match the node's declared input types
            spec = nodes[kind].INPUT_TYPES()
            for inp in node.get("inputs", []):
                declared = {**spec["required"], **spec.get("optional", {})}[inp["name"]][0]
                assert declared == inp["type"]
        elif kind in ch.CORE_WIDGETS or kind in VIRTUAL:
            widgets = ch.CORE_WIDGETS[kind] if kind in ch.CORE_WIDGETS else VIRTUAL[kind]
            assert len(values) == len(widgets), f"{kind}: {values} for widgets {widgets}"
        else:
            pytest.fail(f"{path.name}: unknown node type {kind}")
    if missing_bundled:
        pytest.skip(f"{path.name} uses {missing_bundled}, which is not in dlgsanet/weights yet")


def test_tiled_workflow_is_image_loader_tiled_upscale_save():
    wf = ch.load_workflow(ch.EXAMPLE_WORKFLOWS / "dlgsanet_tiled_upscale.json")
    prompt = ch.ui_to_api(wf, {**ch.CORE_WIDGETS, "DLGSANetModelLoader": ["model_name", "precision"],
                               "DLGSANetTiledUpscale": ["tile_size", "overlap"]})
    by_type = {n["class_type"]: (k, n) for k, n in prompt.items()}
    assert set(by_type) == {"LoadImage", "DLGSANetModelLoader", "DLGSANetTiledUpscale", "SaveImage"}
    up = by_type["DLGSANetTiledUpscale"][1]["inputs"]
    assert up["image"] == [by_type["LoadImage"][0], 0]
    assert up["dlgsanet_model"] == [by_type["DLGSANetModelLoader"][0], 0]
    assert by_type["SaveImage"][1]["inputs"]["images"] == [by_type["DLGSANetTiledUpscale"][0], 0]
    assert by_type["DLGSANetModelLoader"][1]["inputs"]["model_name"].startswith("(bundled) ")


def test_builtin_workflow_uses_comfyuis_own_upscale_nodes():
    wf = ch.load_workflow(ch.EXAMPLE_WORKFLOWS / "dlgsanet_builtin_upscale_model.json")
    types = {n["type"] for n in wf["nodes"]}
    assert {"UpscaleModelLoader", "ImageUpscaleWithModel", "LoadImage", "SaveImage"} <= types


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_each_workflow_has_a_jpeg_preview(path: Path):
    preview = path.with_suffix(".jpg")
    assert preview.is_file(), f"missing {preview.name}"
    with Image.open(preview) as im:
        assert im.format == "JPEG"
        assert 256 <= im.width <= 1600 and 128 <= im.height <= 1600
