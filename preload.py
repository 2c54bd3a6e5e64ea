"""A1111 / Forge preload hook: adds ``--dlgsanet-models-path`` before the command line is parsed.

The webui imports this file by path, before argparse runs and without the extension root on
sys.path, so it must not import ``dlgsanet``. The flag's name is what
``modelloader.load_upscalers`` derives from the class name ``UpscalerDLGSANet``
(``dlgsanet_models_path``) and hands to its constructor. The default mirrors the built-in
SwinIR extension: ``<models dir>/DLGSANet`` (``--models-dir`` / ``--data-dir`` respected).
"""
import os


def preload(parser) -> None:
    from modules import paths_internal

    parser.add_argument(
        "--dlgsanet-models-path", type=str,
        default=os.path.join(paths_internal.models_path, "DLGSANet"),
        help="Path to a folder with DLGSANet model files (.safetensors, .pth); searched before "
             "models/DLGSANet.",
    )
