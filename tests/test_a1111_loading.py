"""How A1111 and Forge load the extension: the import rules, Forge's extras, the ESRGAN path.

* A fresh interpreter that can import ``dlgsanet`` *only* through the extension root that A1111
  puts on sys.path while it imports our script: the script loads, sys.path is restored, and
  upscaling later (after the import) still works.
* Forge: script basedirs stay on sys.path and ``modules_forge.utils.prepare_free_memory`` exists.
* Forks that list ESRGAN-family upscalers only: a DLGSANet file in ``models/ESRGAN`` loads through
  the built-in ESRGAN upscaler thanks to our spandrel registration.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dlgsanet.checkpoint import bundled_scales
from a1111_helpers import (
    A1111_HOST,
    EXTENSION_DIRNAME,
    forget_forge_modules,
    host_on_sys_path,
    make_webui,
    nearest_model,
    write_model,
)
from PIL import Image

DRIVER = textwrap.dedent("""
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    data_dir, ext_root = sys.argv[1], sys.argv[2]
    assert "dlgsanet" not in sys.modules
    path_before = list(sys.path)

    import webui                      # the stand-in A1111: preload, args, shared, scripts, upscalers
    webui.boot(data_dir, [])
    from modules import errors, shared
    import spandrel
    from PIL import Image

    ours = [u for u in shared.sd_upscalers if type(u.scaler).__name__ == "UpscalerDLGSANet"]
    result = {
        "names": [u.name for u in ours],
        "scales": [u.scale for u in ours],
        "reported": errors.reported,
        "sys_path_restored": sys.path == path_before,
        "dlgsanet_file": sys.modules["dlgsanet"].__file__,
        "spandrel_registered": "DLGSANet" in spandrel.MAIN_REGISTRY,
    }
    try:
        import dlgsanet_not_there  # noqa: F401
    except ImportError:
        pass
    entry = ours[0]
    out = entry.scaler.upscale(Image.new("RGBA", (20, 12), (255, 0, 0, 255)), 4, entry.data_path)
    result["size"], result["mode"], result["pixel"] = out.size, out.mode, out.getpixel((7, 7))
    result["submodules_after_import"] = sorted(m for m in sys.modules if m.startswith("dlgsanet."))
    print("RESULT " + json.dumps(result))
""")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
def test_a_fresh_webui_imports_the_script_as_a1111_does(tmp_path):
    w = make_webui(tmp_path)
    write_model(nearest_model(4), w.dlgsanet_dir / "near4.safetensors")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env["PYTHONPATH"] = str(A1111_HOST)  # the webui's own root; NOT this repository
    ext_root = w.data_dir / "extensions" / EXTENSION_DIRNAME
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(w.data_dir), str(ext_root)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(li for li in proc.stdout.splitlines() if li.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])

    assert result["reported"] == [], proc.stderr[-4000:]  # "Error loading script: ..." would be here
    scales = bundled_scales()
    bundled = [f"DLGSANet Tiny x{s} (built-in)" for s in scales]
    assert sorted(result["names"]) == sorted(["DLGSANet Custom x4 (near4)"] + bundled)
    assert sorted(result["scales"]) == sorted([4] + scales)
    assert result["sys_path_restored"]
    # dlgsanet came from the extension folder (only reachable while the script was imported).
    assert os.path.realpath(result["dlgsanet_file"]).startswith(os.path.realpath(ext_root))
    assert result["spandrel_registered"]
    assert result["size"] == [80, 48] and result["mode"] == "RGBA" and result["pixel"] == [255, 0, 0, 255]


def test_the_script_is_a_direct_upscaler_subclass(webui):
    webui.boot()
    upscaler = webui.modules("upscaler")
    cls = webui.script.UpscalerDLGSANet
    assert upscaler.Upscaler in cls.__bases__ and cls in upscaler.Upscaler.__subclasses__()
    assert cls.__name__.lower().replace("upscaler", "") + "_models_path" == "dlgsanet_models_path"
    assert webui.script.__name__ == "dlgsanet_upscaler.py"  # loaded by path, as A1111 does


def test_constructor_never_raises(webui, monkeypatch, caplog):
    write_model(nearest_model(2), webui.dlgsanet_dir / "near2.safetensors")
    webui.boot()
    cls = webui.script.UpscalerDLGSANet
    # A fork whose Upscaler base needs options this one lacks, and an unlistable folder.
    monkeypatch.delitem(webui.shared.opts.data_labels, "ESRGAN_tile")
    monkeypatch.delitem(webui.shared.opts.data, "ESRGAN_tile")
    scaler = cls(str(webui.data_dir / "does-not-exist"))
    assert [s.name for s in scaler.scalers if "(built-in)" not in s.name] == ["DLGSANet Custom x2 (near2)"]
    monkeypatch.setattr(webui.shared, "walk_files", lambda *a, **k: (_ for _ in ()).throw(PermissionError("no")))
    monkeypatch.setattr(webui.modules("modelloader"), "load_models", lambda *a, **k: 1 / 0)
    assert cls(None).scalers == []
    assert any("listing models failed" in r.getMessage() for r in caplog.records)


def test_forge_sys_path_and_memory_hook(tmp_path, monkeypatch):
    for path in reversed(host_on_sys_path(forge=True)):
        monkeypatch.syspath_prepend(path)
    w = make_webui(tmp_path)
    path = write_model(nearest_model(2), w.dlgsanet_dir / "near2.safetensors")
    try:
        from modules_forge import utils as forge_utils

        forge_utils.calls.clear()
        before = list(sys.path)
        w.boot(forge=True)
        ext_root = str(w.data_dir / "extensions" / EXTENSION_DIRNAME)
        assert ext_root in sys.path and ext_root not in before  # Forge keeps it (commit 7f98a1d1)
        entry = w.entry_for(path)
        out = entry.scaler.upscale(Image.new("RGB", (16, 8), (0, 255, 0)), 4, entry.data_path)
        assert out.size == (64, 32) and (np.asarray(out) == [0, 255, 0]).all()
        assert len(forge_utils.calls) == 2  # before each of the two x2 passes
    finally:
        forget_forge_modules()
        sys.path[:] = [p for p in sys.path if not p.startswith(str(tmp_path))]


@pytest.fixture
def forge_webui(webui, monkeypatch):
    """The ``webui`` fixture booted as Forge: its extras importable, ``torch.load`` left alone."""
    import torch

    monkeypatch.setattr(torch, "load", webui.modules("safe").unsafe_torch_load)
    for path in host_on_sys_path(forge=True)[1:]:
        monkeypatch.syspath_prepend(path)
    webui.forge = True
    yield webui
    forget_forge_modules()


@pytest.mark.parametrize("host,suffix", [("a1111", ".pth"), ("forge", ".pth"), ("forge", ".safetensors")])
def test_dlgsanet_file_in_models_esrgan_loads_through_the_builtin_path(request, host, suffix):
    """A .pth saved by this torch: A1111's safe torch.load returns None for it (new zip entries);
    our wrapper of load_spandrel_model reads DLGSANet files itself, so no plain resize."""
    webui = request.getfixturevalue("webui" if host == "a1111" else "forge_webui")
    esrgan_dir = webui.models_dir / "ESRGAN"
    write_model(nearest_model(2, bias=(0.25, 0.0, 0.0)), esrgan_dir / f"2x_DLGSANet{suffix}")
    webui.boot()
    webui.set_opt("ESRGAN_tile", 0)
    entry = webui.entry("2x_DLGSANet")
    assert type(entry.scaler).__name__ == "UpscalerESRGAN"

    out = entry.scaler.upscale(Image.new("RGB", (16, 16), (100, 100, 100)), 2, entry.data_path)

    assert not webui.modules("errors").reported  # no "Unable to load ESRGAN model"
    assert out.size == (32, 32)
    # A1111's helper feeds BGR: the model's red bias comes out blue. This is why docs/a1111.md
    # recommends the DLGSANet entries, which feed RGB (see test_colours_are_fed_in_rgb_order).
    r, g, b = np.asarray(out).reshape(-1, 3).mean(0)
    assert round(b) == 100 + round(0.25 * 255) and round(r) == 100 and round(g) == 100


def test_a1111_safe_load_refuses_current_torch_files(webui, tmp_path):
    """The host behaviour the wrapper exists for (stand-in of A1111's modules/safe.py)."""
    import torch

    webui.boot()
    path = tmp_path / "plain.pth"
    torch.save({"w": torch.ones(2)}, path)
    assert torch.load(path) is None
    assert any("may be malicious" in r for r in webui.modules("errors").reported)


def test_other_files_in_models_esrgan_take_the_webuis_path(webui, monkeypatch):
    import torch
    from spandrel import ModelLoader

    webui.boot()
    webui.boot()  # Reload UI imports the script again: the webui's own function is wrapped once
    load = webui.modules("modelloader").load_spandrel_model
    assert not hasattr(load._dlgsanet_original, "_dlgsanet_original")

    path = webui.models_dir / "ESRGAN" / "other.pth"
    path.parent.mkdir()
    torch.save({"conv_first.weight": torch.zeros(8, 3, 3, 3)}, path)
    seen = []
    monkeypatch.setattr(ModelLoader, "load_from_file", lambda self, p: seen.append(p) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        load(str(path), device=None)
    assert seen == [str(path)]  # spandrel's own loader got it, as without the extension


def test_esrgan_folder_without_our_registration_cannot_load_dlgsanet(webui):
    """The negative of the test above: without the registration, spandrel refuses the file."""
    import spandrel

    webui.boot()  # our script registers the architecture while it is imported
    sd = {k: v for k, v in nearest_model(2).state_dict().items()}
    registry = spandrel.ArchRegistry()
    registry.add(*[s for s in spandrel.MAIN_REGISTRY if s.architecture.id != "DLGSANet"])
    with pytest.raises(spandrel.UnsupportedModelError):
        spandrel.ModelLoader(registry=registry).load_from_state_dict(sd)
    assert spandrel.ModelLoader().load_from_state_dict(sd).architecture.id == "DLGSANet"
