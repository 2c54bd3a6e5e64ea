#!/usr/bin/env bash
# Every check that needs an NVIDIA GPU, in one bounded run (a GPU is rarely at hand: make it count).
#
#   bash benchmarks/gpu_checks.sh [LOG_DIR]
#
# Run from the repository root with the Python that holds torch (and cupy, for the CUDA kernels).
# Set DLGSANET_SHARED to the shared folder when it is not ../shared (the official fixtures live in
# $DLGSANET_SHARED/fixtures/official). Each step has its own time limit and a log in LOG_DIR
# (default: gpu-logs); a failing step does not stop the later ones; the exit status is the number
# of failed steps. GPU_CHECKS_SKIP="profile tiling-memory" leaves out the steps named.
#   1. the device, driver, torch and cupy versions;
#   2. python -m pytest -m gpu: the cupy kernels against the PyTorch path in fp32/fp16/bf16,
#      gradcheck in fp64, streams, CUDA graphs, the whole model against the official outputs,
#      the fallback without cupy, and the CUDA paths of the tiling, evaluation and network code;
#   3. benchmarks/bench_cuda.py: the operator and the whole network, torch path vs cupy kernels;
#   4. benchmarks/bench_cuda.py --profile: where the GPU time of a forward pass goes;
#   5. benchmarks/bench_tiling.py memory on CUDA: the allocator's peak against the image size;
#   6. the command line on the bundled model: CUDA fp32/fp16/bf16 PNGs against the CPU's;
#   7. compute-sanitizer memcheck over the three kernels (out-of-bounds or misaligned accesses).
set -uo pipefail
LOG_DIR=${1:-gpu-logs}
PYTHON=${PYTHON:-python3}
mkdir -p "$LOG_DIR"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the checkout's dlgsanet, installed or not
failed=0

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  if [[ " ${GPU_CHECKS_SKIP:-} " == *" $name "* ]]; then
    echo "=== $name: skipped (GPU_CHECKS_SKIP)"
    return
  fi
  echo "=== $name (limit ${limit} s): $*"
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$LOG_DIR/$name.log"
  local status=${PIPESTATUS[0]}
  echo "=== $name: exit $status after $((SECONDS - start)) s"
  [ "$status" -eq 0 ] || failed=$((failed + 1))
}

step env 60 bash -c "nvidia-smi -L; nvidia-smi --query-gpu=driver_version,memory.total --format=csv,noheader;
  $PYTHON -c 'import sys, torch; print(sys.version.split()[0], \"torch\", torch.__version__, \"CUDA\", torch.version.cuda,
  torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"no CUDA device\")';
  $PYTHON -c 'import cupy; print(\"cupy\", cupy.__version__, \"runtime\", cupy.cuda.runtime.runtimeGetVersion())'"
step pytest-gpu 200 "$PYTHON" -m pytest -m gpu -p no:cacheprovider --continue-on-collection-errors -rA --tb=short -q
step bench-cuda 200 "$PYTHON" benchmarks/bench_cuda.py
step profile 90 "$PYTHON" benchmarks/bench_cuda.py --profile large:512:fp32 tiny:512:fp16 --rows 20
step tiling-memory 60 "$PYTHON" benchmarks/bench_tiling.py memory --device cuda --sizes 512,1024,2048
step cli 150 bash -c '
set -e
"$0" -c "from PIL import Image; Image.open(\"dlgsanet/samples/butterfly_lr.png\").convert(\"RGB\").resize((600, 500), Image.BICUBIC).save(\"/tmp/gpu_cli_in.png\")"
"$0" -m dlgsanet upscale /tmp/gpu_cli_in.png -o /tmp/gpu_cli_cpu.png --device cpu --quiet --overwrite
for p in fp32 fp16 bf16; do
  start=$(date +%s%N)
  "$0" -m dlgsanet upscale /tmp/gpu_cli_in.png -o /tmp/gpu_cli_$p.png --device cuda --precision $p --quiet --overwrite
  echo "cuda $p: $(( ($(date +%s%N) - start) / 1000000 )) ms for the whole command (start-up included)"
done
"$0" -c "
import numpy as np; from PIL import Image
cpu = np.asarray(Image.open(\"/tmp/gpu_cli_cpu.png\"), dtype=np.int16)
for p in (\"fp32\", \"fp16\", \"bf16\"):
    d = np.abs(np.asarray(Image.open(f\"/tmp/gpu_cli_{p}.png\"), dtype=np.int16) - cpu)
    print(f\"cuda {p} against cpu fp32, 2400x2000 PNG: max {d.max()} levels, mean {d.mean():.4f}, {(d > 1).mean() * 100:.3f} % off by more than 1\")
"' "$PYTHON"
if command -v compute-sanitizer >/dev/null; then
  step memcheck 90 compute-sanitizer --tool memcheck --error-exitcode 3 "$PYTHON" -c "
import torch
from dlgsanet.ops import dynamic_dwconv
for dtype in (torch.float32, torch.float16, torch.bfloat16):
    for n, c, g, h, w, k in ((2, 12, 2, 7, 9, 5), (1, 6, 3, 1, 33, 7), (1, 9, 9, 17, 1, 3)):
        x = torch.randn(n, c, h, w, device='cuda', dtype=dtype, requires_grad=True)
        kern = torch.randn(n, g, k, k, h, w, device='cuda', dtype=dtype, requires_grad=True)
        dynamic_dwconv(x, kern, backend='cupy').sum().backward()
torch.cuda.synchronize()
print('memcheck cases done')"
else
  echo "=== memcheck: skipped, compute-sanitizer not on PATH"
fi
echo "=== gpu_checks: $failed step(s) failed"
exit "$failed"
