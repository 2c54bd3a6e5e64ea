#!/usr/bin/env bash
# Prepare spandrel 0.3.4 (the version A1111 1.10 and Forge pin) for tests/integration/test_spandrel_034.py.
#
# spandrel 0.3.4 alone goes into a plain folder (pip install --no-deps --target); the test puts that
# folder first on PYTHONPATH of the pytest it starts with its own Python, so 0.3.4 shadows the
# installed 0.4.x there and every other package (torch, torchvision, safetensors, einops, ...) is the
# caller's. No environment is made and nothing installed anywhere changes; the folder does not
# depend on the Python that made it (spandrel is pure Python).
# Result: $DLGSANET_SPANDREL034_CACHE (default ~/.cache/dlgsanet-ci/spandrel-0.3.4)/site and READY.
set -euo pipefail

VERSION="spandrel==0.3.4"
LAYOUT="$VERSION site"  # READY's content; an older layout (a venv) is rebuilt
CACHE="${DLGSANET_SPANDREL034_CACHE:-$HOME/.cache/dlgsanet-ci/spandrel-0.3.4}"
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"

check() {
    PYTHONPATH="$CACHE/site" "$PYTHON" -c "import spandrel; assert spandrel.__version__ == '0.3.4', spandrel.__version__; print('setup_spandrel034: spandrel', spandrel.__version__, 'from', spandrel.__file__)"
}

if [[ -f "$CACHE/READY" ]] && grep -qxF "$LAYOUT" "$CACHE/READY"; then
    check
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
"$PYTHON" -m pip install --quiet --no-deps --target "$CACHE/site" "$VERSION"
check
echo "$LAYOUT" > "$CACHE/READY"
echo "setup_spandrel034: ready at $CACHE"
