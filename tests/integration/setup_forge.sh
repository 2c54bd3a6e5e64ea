#!/usr/bin/env bash
# Prepare a real Forge (lllyasviel/stable-diffusion-webui-forge at dfdcbab6) headless on a CPU,
# as shared/reference/real_hosts.md section 3 describes, and prove it answers the upscaler API.
# Not run by CI: it needs the source trees as local git mirrors (GitHub is not reachable there).
#
# Usage: setup_forge.sh FORGE_DIR FORGE_GIT ASSETS_GIT HUGGINGFACE_GUESS_GIT BLIP_GIT
#        setup_forge.sh --check FORGE_DIR      (start check only, on a tree made before)
#   FORGE_DIR   folder to create (must not exist, or be empty)
#   *_GIT       git directories (bare or not) of lllyasviel/stable-diffusion-webui-forge,
#               AUTOMATIC1111/stable-diffusion-webui-assets, lllyasviel/huggingface_guess,
#               salesforce/BLIP
# Environment: PYTHON (default python3.11), PORT (default 7862), START_TIMEOUT (s, default 300).
#
# Result:
#   FORGE_DIR/webui                     Forge dfdcbab6 with repositories/ at the launcher's pins
#   FORGE_DIR/venv                      torch 2.14.1 + torchvision 0.29.1 + the webui's requirements
#                                       + the built-in extensions' packages + openai-clip + joblib
#   FORGE_DIR/requirements_relaxed.txt  requirements_versions.txt with setuptools 80.9.0 (pass as REQS_FILE)
#   FORGE_DIR/builtin-constraints.txt   numpy/protobuf pins the built-ins' packages are installed under
#   FORGE_DIR/pip-freeze-pristine.txt   `pip freeze --all` right after set-up (never rewritten)
#   FORGE_DIR/logs/start-*.log          the check start's log
#   FORGE_DIR/READY                     written last, only when the check start passed: the launch
#                                       command, its environment and the version line Forge printed
# The check start (full environment preparation, no third-party extension) must leave
# `pip freeze --all` identical to pip-freeze-pristine.txt, answer GET /sdapi/v1/upscalers and
# upscale one image with the built-in "Lanczos" through POST /sdapi/v1/extra-single-image.
set -euo pipefail
export LC_ALL=C
PYTHON="${PYTHON:-python3.11}"
PORT="${PORT:-7862}"
START_TIMEOUT="${START_TIMEOUT:-300}"

FORGE_COMMIT=dfdcbab685e57677014f05a3309b48cc87383167
ASSETS_COMMIT=6f7db241d2f8ba7457bac5ca9753331f0c266917
HFGUESS_COMMIT=84826248b49bb7ca754c73293299c4d4e23a548d
BLIP_COMMIT=48211a1594f1321b00f14c9f7a5b4813144b2fb9

usage() { sed -n '6,11p' "$0" >&2; exit 2; }

# checkout MIRROR DEST COMMIT: a checkout of COMMIT that leaves out blobs the mirror lacks
# (sparse checkout, so HEAD is still the pinned commit the launcher compares with). A plain clone
# keeps the mirror's tags, which the webui's version line (`git describe --tags`) needs.
checkout() {
    local mirror="$1" dest="$2" commit="$3" missing
    git clone -q --no-checkout --config core.filemode=false "$mirror" "$dest"
    # ls-tree lines are "mode blob id<TAB>path"; cat-file prints "id missing" for absent blobs.
    missing=$(join -t $'\t' \
        <(git -C "$dest" ls-tree -r "$commit" | awk -F'\t' '{split($1,a," "); if (a[2]=="blob") print a[3]"\t"$2}' | sort) \
        <(git -C "$dest" ls-tree -r "$commit" | awk '$2=="blob"{print $3}' \
            | git -C "$dest" cat-file --batch-check | awk '$2=="missing"{print $1}' | sort) \
        | cut -f2)
    if [[ -n "$missing" ]]; then
        git -C "$dest" config core.sparseCheckout true
        { echo '/*'; while IFS= read -r p; do [[ -n "$p" ]] && echo "!/$p"; done <<<"$missing"; } \
            > "$dest/.git/info/sparse-checkout"
        echo "setup_forge: $(basename "$dest"): leaving out missing blobs: $(echo $missing)"
    fi
    git -C "$dest" checkout -q "$commit" 2>/dev/null || true
    [[ "$(git -C "$dest" rev-parse HEAD)" == "$commit" ]] || { echo "setup_forge: checkout of $commit failed in $dest" >&2; exit 1; }
}

setup() {
    local WEBUI="$1" ASSETS="$2" HFGUESS="$3" BLIP="$4"
    echo "setup_forge: source trees"
    checkout "$WEBUI" "$DIR/webui" "$FORGE_COMMIT"
    mkdir -p "$DIR/webui/repositories"
    checkout "$ASSETS" "$DIR/webui/repositories/stable-diffusion-webui-assets" "$ASSETS_COMMIT"
    checkout "$HFGUESS" "$DIR/webui/repositories/huggingface_guess" "$HFGUESS_COMMIT"
    checkout "$BLIP" "$DIR/webui/repositories/BLIP" "$BLIP_COMMIT"

    echo "setup_forge: virtual environment"
    "$PYTHON" -m venv "$DIR/venv"
    local PIP=("$DIR/venv/bin/python" -m pip --disable-pip-version-check)
    # Installed first, so the launcher (which installs torch only when it is missing) keeps it.
    "${PIP[@]}" install -q torch==2.14.1 torchvision==0.29.1
    # The only relaxed pin: torch 2.14.1 needs setuptools>=77.0.3; >=81 has no pkg_resources.
    sed 's/^setuptools==69\.5\.1.*/setuptools==80.9.0/' "$DIR/webui/requirements_versions.txt" \
        > "$DIR/requirements_relaxed.txt"
    # Before the first start: the launcher checks open_clip before the requirements and would fetch
    # it from GitHub; openai-clip provides the `clip` module it would fetch from GitHub too.
    "${PIP[@]}" install -q -r "$DIR/requirements_relaxed.txt" openai-clip==1.0.1
    # The built-in extensions' installers pip-install these unpinned when one is missing; left to
    # them, today's releases pull numpy>=2 / protobuf>=4 and the start dies in scikit-image.
    printf 'numpy==1.26.2\nprotobuf==3.20.0\n' > "$DIR/builtin-constraints.txt"
    "${PIP[@]}" install -q -c "$DIR/builtin-constraints.txt" \
        fvcore mediapipe onnxruntime 'opencv-python>=4.8.0' svglib
    # The built-in soft-inpainting script imports joblib; no requirements file lists it.
    "${PIP[@]}" install -q joblib
    "${PIP[@]}" check
    "${PIP[@]}" freeze --all > "$DIR/pip-freeze-pristine.txt"
}

# check: one start with full environment preparation, the API checks, SIGTERM, then READY.
check() {
    local webui="$DIR/webui" py="$DIR/venv/bin/python" log pid t0 t1 url version
    [[ -f "$DIR/pip-freeze-pristine.txt" && -x "$py" && -f "$webui/launch.py" ]] \
        || { echo "setup_forge: $DIR is not a Forge tree made by this script" >&2; exit 1; }
    local ext
    ext=$(find "$webui/extensions" -mindepth 1 -maxdepth 1 -type d -printf '%f ' 2>/dev/null || true)
    if [[ -n "$ext" ]]; then
        echo "setup_forge: the check start needs no third-party extension; move these out of $webui/extensions first: $ext" >&2
        exit 1
    fi
    url="http://127.0.0.1:$PORT"
    if "$py" -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1',$PORT))!=0)"; then
        echo "setup_forge: port $PORT is in use; set PORT to a free one" >&2; exit 1
    fi
    rm -f "$DIR/READY"
    mkdir -p "$DIR/logs"
    log="$DIR/logs/start-$(date -u +%Y%m%dT%H%M%SZ).log"
    local -a envs=(
        "REQS_FILE=$DIR/requirements_relaxed.txt"
        "HANDREFINER_WHEEL=/nonexistent/handrefinerportable.whl"
        "DEPTH_ANYTHING_WHEEL=/nonexistent/depth_anything.whl"
        "DEPTH_ANYTHING_V2_WHEEL=/nonexistent/depth_anything_v2.whl"
    )
    local -a cmd=("$py" -u launch.py --skip-torch-cuda-test --always-cpu
        --nowebui --api --no-download-sd-model --skip-version-check
        --server-name 127.0.0.1 --port "$PORT")
    echo "setup_forge: starting Forge on port $PORT (log: $log)"
    t0=$(date +%s.%N)
    (cd "$webui" && exec env "${envs[@]}" "${cmd[@]}") > "$log" 2>&1 &
    pid=$!
    # Stop the server we started, whatever happens below.
    trap 'kill -TERM '"$pid"' 2>/dev/null || true' EXIT
    until curl -sf -o /dev/null "$url/sdapi/v1/upscalers"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$log" >&2; echo "setup_forge: Forge exited before the API answered" >&2; exit 1
        fi
        if (( $(date +%s) - ${t0%.*} > START_TIMEOUT )); then
            tail -n 30 "$log" >&2; echo "setup_forge: no API answer within ${START_TIMEOUT}s" >&2; exit 1
        fi
        sleep 0.5
    done
    t1=$(date +%s.%N)
    echo "setup_forge: API up after $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s"
    grep -E '^(Version:|Startup time:)' "$log" || true

    # A start with no third-party extension must change no package.
    "$py" -m pip --disable-pip-version-check freeze --all > "$DIR/logs/pip-freeze-after-start.txt"
    if ! diff -u "$DIR/pip-freeze-pristine.txt" "$DIR/logs/pip-freeze-after-start.txt"; then
        echo "setup_forge: the start changed installed packages (diff above)" >&2; exit 1
    fi
    echo "setup_forge: pip freeze --all identical to pip-freeze-pristine.txt"

    "$py" - "$url" <<'EOF'
import base64, io, json, sys, time, urllib.request
from PIL import Image
url = sys.argv[1]
names = [u["name"] for u in json.load(urllib.request.urlopen(url + "/sdapi/v1/upscalers", timeout=30))]
assert "Lanczos" in names, f"no Lanczos among upscalers: {names}"
w, h, scale = 37, 29, 2
im = Image.new("RGB", (w, h))
im.putdata([(x * 7 % 256, y * 9 % 256, x * y % 256) for y in range(h) for x in range(w)])
buf = io.BytesIO(); im.save(buf, "PNG")
body = {"image": base64.b64encode(buf.getvalue()).decode(), "upscaler_1": "Lanczos",
        "upscaling_resize": scale, "resize_mode": 0}
req = urllib.request.Request(url + "/sdapi/v1/extra-single-image", data=json.dumps(body).encode(),
                             headers={"Content-Type": "application/json"})
t = time.time()
out = json.load(urllib.request.urlopen(req, timeout=120))
res = Image.open(io.BytesIO(base64.b64decode(out["image"])))
want = (w * scale // 8 * 8, h * scale // 8 * 8)  # the webui's floor(side * scale / 8) * 8 rule
assert res.size == want, f"Extras gave {res.size}, expected {want}"
print(f"setup_forge: upscalers {names}")
print(f"setup_forge: Extras Lanczos x{scale}: {im.size} -> {res.size} in {time.time() - t:.2f} s; "
      f"html_info {out.get('html_info')!r}")
EOF

    trap - EXIT
    t0=$(date +%s.%N)
    kill -TERM "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid"; echo "setup_forge: Forge did not stop on SIGTERM within 30 s" >&2; exit 1
    fi
    echo "setup_forge: stopped by SIGTERM in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"

    version=$(grep -m1 '^Version:' "$log" || echo 'Version: (not printed)')
    {
        echo "# Forge ready: $(date -u +%FT%TZ)"
        echo "# $version"
        echo "# $(grep -m1 '^Startup time:' "$log" || true)"
        echo "# launch (cd first; stop with SIGTERM to the PID you started; add --skip-prepare-environment for faster restarts):"
        echo "cd $webui"
        printf '%q \\\n' "${envs[@]}"
        printf '%q ' "${cmd[@]}"; echo
    } > "$DIR/READY"
    echo "setup_forge: ready at $DIR (see $DIR/READY)"
}

if [[ "${1:-}" == "--check" ]]; then
    [[ $# -eq 2 ]] || usage
    DIR="$(cd "$2" && pwd)"
    check
    exit 0
fi
[[ $# -eq 5 ]] || usage
DIR="$1"
if [[ -e "$DIR" && -n "$(ls -A "$DIR" 2>/dev/null)" ]]; then
    echo "setup_forge: $DIR exists and is not empty; choose another folder (or use --check on it)" >&2
    exit 1
fi
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
setup "$2" "$3" "$4" "$5"
check
