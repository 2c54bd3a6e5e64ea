"""Shared pytest fixtures: paths to the shared data and official fixtures, deterministic seeds."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DLGSANET_SHARED", REPO_ROOT.parent / "shared"))
OFFICIAL_FIXTURES = SHARED / "fixtures" / "official"
DATA = SHARED / "data"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test, restored afterwards. Tests on tiny tensors use it: on a
    shared 2-core box, waking a second OpenMP thread for each op costs far more than it saves
    (4-50x slower measured here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def webui(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh A1111 webui around the stand-in host (``a1111_helpers.Webui``), with the host's
    folders on ``sys.path`` and A1111's replacement of ``torch.load`` for the test."""
    from a1111_helpers import host_on_sys_path, make_webui, use_a1111_torch_load

    for path in reversed(host_on_sys_path()):
        monkeypatch.syspath_prepend(path)
    use_a1111_torch_load(monkeypatch)
    return make_webui(tmp_path)


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared folder not found at {SHARED} (set DLGSANET_SHARED)")
    return SHARED


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device (none here)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
