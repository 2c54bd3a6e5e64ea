"""The extension in a real AUTOMATIC1111 v1.10.1, installed and started as a user does.

Needs a webui prepared by ``tests/integration/setup_a1111.sh`` (see
``shared/reference/real_hosts.md`` section 1) at ``$DLGSANET_A1111_DIR``; skipped without it.
One plain start (environment preparation, so the extension's ``install.py`` runs as on a first
start) serves the module; the checks are in ``real_webui_checks.py``.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ENV = "DLGSANET_A1111_DIR"
if not os.environ.get(ENV):
    pytest.skip(f"{ENV} is not set (a real A1111 v1.10.1 prepared by tests/integration/setup_a1111.sh)",
                allow_module_level=True)

from real_webui import started_host  # noqa: E402
from real_webui_checks import *  # noqa: E402,F401,F403

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def host():
    yield from started_host(Path(os.environ[ENV]), "a1111")


def test_a1111_safe_loader_is_active(host):
    """The host condition the new-zip checks are about: A1111 replaces torch.load (modules/safe.py)."""
    assert "torch.load = load" in (host.webui / "modules" / "safe.py").read_text()
