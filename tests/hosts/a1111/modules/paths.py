"""Stand-in for A1111 1.10 ``modules/paths.py``: re-exports the paths of ``paths_internal``.

(The real module also checks the cloned repositories and edits sys.path for them; irrelevant here.)
"""
from __future__ import annotations

from modules import paths_internal


def __getattr__(name: str):
    # The real module does `from modules.paths_internal import models_path, script_path, ...`;
    # forwarding keeps the values in step with paths_internal.configure() between tests.
    return getattr(paths_internal, name)
