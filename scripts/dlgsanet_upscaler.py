"""DLGSANet in the AUTOMATIC1111 / Forge upscaler dropdowns (Extras, Hires. fix, SD upscale, API).

The webui imports this file by path, with the extension root on sys.path *only while it is
imported*: so everything of ours is imported here, at the top, from unique top-level names
(``dlgsanet_webui``, which imports ``dlgsanet`` and ``dlgsanet_spandrel``). The work is in
``dlgsanet_webui`` (see its docstring; ``docs/a1111.md`` for users).

Defining (here: importing) ``UpscalerDLGSANet`` is what lists our models: the webui collects the
direct ``Upscaler`` subclasses after every script is loaded. The webui runs this file again on
Reload UI, so the wiring (settings, callbacks, spandrel) is redone on every execution.
"""
import dlgsanet_webui
from dlgsanet_webui.model_cache import cache as _cache, release_models  # noqa: F401 (tests, benchmarks)
from dlgsanet_webui.upscaler import UpscalerDLGSANet  # noqa: F401 (the webui finds it as a subclass)

dlgsanet_webui.wire()
