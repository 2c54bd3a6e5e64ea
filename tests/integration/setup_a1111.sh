#!/usr/bin/env bash
# Prepare a real AUTOMATIC1111 stable-diffusion-webui v1.10.1 for tests/integration/test_a1111_real.py.
# Not run by CI: it needs the source trees as local git mirrors (GitHub is not reachable there).
#
# Usage: setup_a1111.sh A1111_DIR WEBUI_GIT ASSETS_GIT STABLEDIFFUSION_GIT GENERATIVE_MODELS_GIT \
#                       K_DIFFUSION_GIT BLIP_GIT
#   A1111_DIR   folder to create (must not exist, or be empty)
#   *_GIT       git directories (bare or not) of w-e-w/stable-diffusion-webui,
#               AUTOMATIC1111/stable-diffusion-webui-assets, Stability-AI/stablediffusion,
#               Stability-AI/generative-models, crowsonkb/k-diffusion, salesforce/BLIP
# Environment: PYTHON (default python3.11).
#
# Result:
#   A1111_DIR/webui                     v1.10.1 (82a973c0) with repositories/ at the launcher's pins
#   A1111_DIR/venv                      torch 2.14.1 + torchvision 0.29.1 + the webui's requirements
#   A1111_DIR/requirements_relaxed.txt  requirements_versions.txt with setuptools 80.9.0 (pass as REQS_FILE)
#   A1111_DIR/pip-freeze-pristine.txt   `pip freeze --all` right after set-up
#   A1111_DIR/READY                     written last
# Then: DLGSANET_A1111_DIR=A1111_DIR pytest tests/integration/test_a1111_real.py
set -euo pipefail
export LC_ALL=C
if [[ $# -ne 7 ]]; then
    sed -n '5,12p' "$0" >&2
    exit 2
fi
DIR="$1"; WEBUI="$2"; ASSETS="$3"; SD="$4"; SGM="$5"; KDIFF="$6"; BLIP="$7"
PYTHON="${PYTHON:-python3.11}"

if [[ -e "$DIR" && -n "$(ls -A "$DIR" 2>/dev/null)" ]]; then
    echo "setup_a1111: $DIR exists and is not empty; choose another folder" >&2
    exit 1
fi
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"

# checkout MIRROR DEST COMMIT: a checkout of COMMIT that leaves out blobs the mirror lacks
# (sparse checkout, so HEAD is still the pinned commit the launcher compares with).
checkout() {
    local mirror="$1" dest="$2" commit="$3" missing
    git clone -q --no-checkout --config core.filemode=false "$mirror" "$dest"
    # ls-tree lines are "mode blob id<TAB>path"; cat-file prints "id missing" for absent blobs.
    missing=$(join -t $'\t' \
        <(git -C "$dest" ls-tree -r "$commit" | awk -F'\t' '{split($1,a," "); if (a[2]=="blob") print a[3]"\t"$2}' | sort) \
        <(git -C "$dest" ls-tree -r "$commit" | awk '$2=="blob"{print $3}' \
            | git -C "$dest" cat-file --batch-check | awk '$2=="missing"{print $1}' | sort) \
        | cut -f2)
    git -C "$dest" config core.sparseCheckout true
    { echo '/*'; while IFS= read -r p; do [[ -n "$p" ]] && echo "!/$p"; done <<<"$missing"; } \
        > "$dest/.git/info/sparse-checkout"
    [[ -n "$missing" ]] && echo "setup_a1111: $(basename "$dest"): leaving out missing blobs: $(echo $missing)"
    git -C "$dest" checkout -q "$commit" 2>/dev/null || true
    [[ "$(git -C "$dest" rev-parse HEAD)" == "$commit" ]] || { echo "setup_a1111: checkout of $commit failed in $dest" >&2; exit 1; }
}

echo "setup_a1111: source trees"
checkout "$WEBUI" "$DIR/webui" 82a973c04367123ae98bd9abdf80d9eda9b910e2
mkdir -p "$DIR/webui/repositories"
checkout "$ASSETS" "$DIR/webui/repositories/stable-diffusion-webui-assets" 6f7db241d2f8ba7457bac5ca9753331f0c266917
checkout "$SD" "$DIR/webui/repositories/stable-diffusion-stability-ai" cf1d67a6fd5ea1aa600c4df58e5b47da45f6bdbf
checkout "$SGM" "$DIR/webui/repositories/generative-models" 45c443b316737a4ab6e40413d7794a7f5657c19f
checkout "$KDIFF" "$DIR/webui/repositories/k-diffusion" ab527a9a6d347f364e3d185ba6d714e22d80cb3c
checkout "$BLIP" "$DIR/webui/repositories/BLIP" 48211a1594f1321b00f14c9f7a5b4813144b2fb9

echo "setup_a1111: virtual environment"
"$PYTHON" -m venv "$DIR/venv"
PIP=("$DIR/venv/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q torch==2.14.1 torchvision==0.29.1
# The only relaxed pin: torch 2.14.1 needs setuptools>=77.0.3; >=81 has no pkg_resources.
sed 's/^setuptools==69\.5\.1.*/setuptools==80.9.0/' "$DIR/webui/requirements_versions.txt" \
    > "$DIR/requirements_relaxed.txt"
"${PIP[@]}" install -q -r "$DIR/requirements_relaxed.txt"
# The launcher would fetch `clip` from GitHub; this registry package provides the same module.
"${PIP[@]}" install -q openai-clip==1.0.1
"${PIP[@]}" freeze --all > "$DIR/pip-freeze-pristine.txt"
"$DIR/venv/bin/python" -c "import torch, spandrel, numpy; print('setup_a1111: torch', torch.__version__, 'spandrel', spandrel.__version__, 'numpy', numpy.__version__)"
date -u +%FT%TZ > "$DIR/READY"
echo "setup_a1111: ready at $DIR"
