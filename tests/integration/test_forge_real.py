"""The extension in a real Forge (lllyasviel/stable-diffusion-webui-forge dfdcbab6), installed and
started as a user does, on the CPU (``--always-cpu``).

Needs a webui prepared as ``shared/reference/real_hosts.md`` section 3 says at
``$DLGSANET_FORGE_DIR``; skipped without it. The checks are in ``real_webui_checks.py``; Forge's
``GET /sdapi/v1/options`` shows our settings only thanks to
``dlgsanet_webui.settings.extend_api_options_model``.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ENV = "DLGSANET_FORGE_DIR"
if not os.environ.get(ENV):
    pytest.skip(f"{ENV} is not set (a real Forge prepared by tests/integration/setup_forge.sh)",
                allow_module_level=True)

from real_webui import started_host  # noqa: E402
from real_webui_checks import *  # noqa: E402,F401,F403

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def host():
    yield from started_host(Path(os.environ[ENV]), "forge")
