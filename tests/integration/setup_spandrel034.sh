#!/usr/bin/env bash
# Prepare spandrel 0.3.4 (the version A1111 1.10 and Forge pin) for tests/integration/test_spandrel_034.py.
#
# A virtual environment that sees the system site-packages (torch, torchvision, pytest, ...) with
# spandrel 0.3.4 installed over the system's 0.4.x; nothing outside the cache directory changes.
# Result: $DLGSANET_SPANDREL034_CACHE (default ~/.cache/dlgsanet-ci/spandrel-0.3.4)/venv and READY.
set -euo pipefail

VERSION="spandrel==0.3.4"
CACHE="${DLGSANET_SPANDREL034_CACHE:-$HOME/.cache/dlgsanet-ci/spandrel-0.3.4}"
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"

if [[ -f "$CACHE/READY" ]] && grep -qx "$VERSION" "$CACHE/READY"; then
    echo "setup_spandrel034: ready at $CACHE"
    exit 0
fi
# Start afresh, but only ever delete a folder this script made (never a user's folder).
if [[ -e "$CACHE" && ! -f "$CACHE/.dlgsanet-ci" ]] && [[ -n "$(ls -A "$CACHE" 2>/dev/null)" ]]; then
    echo "setup_spandrel034: $CACHE exists and was not made by this script; choose another folder" >&2
    exit 1
fi
rm -rf "$CACHE"
mkdir -p "$CACHE"
touch "$CACHE/.dlgsanet-ci"
"$PYTHON" -m venv --system-site-packages "$CACHE/venv"
# spandrel's own requirements (torch, torchvision, safetensors, numpy, einops, typing_extensions)
# come from the system; --no-deps keeps pip from touching them.
"$CACHE/venv/bin/python" -m pip install --quiet --no-deps "$VERSION"
"$CACHE/venv/bin/python" -c "import spandrel; assert spandrel.__version__ == '0.3.4', spandrel.__version__; print('setup_spandrel034: spandrel', spandrel.__version__)"
echo "$VERSION" > "$CACHE/READY"
echo "setup_spandrel034: ready at $CACHE"
