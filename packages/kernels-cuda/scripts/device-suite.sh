#!/bin/bash
# The GPU suite and the profiling-attention timings on a GPU machine that has no pnpm, no network and no
# compiler (a lent device machine, a container with only the driver). Build and bundle where nvcc and pnpm are:
#
#   pnpm --filter @moa/kernels-cuda build:native           # build/Release/moa_cpu.node + moa_cuda.node
#   node packages/kernels-cuda/scripts/gpu-suite.mjs --bundle   # dist-gpu/*.mjs
#
# then carry packages/kernels-cuda/build/Release/moa_{cpu,cuda}.node, packages/kernels-cuda/dist-gpu and a Node ≥ 20
# binary (NODE=/path/to/node, or an xz-compressed one at .dev/node.xz) to the repository root there and run
#
#   packages/kernels-cuda/scripts/device-suite.sh OUT_DIR [lengths]
#
# It writes OUT_DIR/card.txt (nvidia-smi), suite.log (node:test output of every GPU test, with the measured
# errors), attention-backward.log/.json (timings at each length, default 4096,8192,32768) and exits with the
# suite's status. MOA_SUITE_TIMEOUT / MOA_BENCH_TIMEOUT (seconds) bound each part; MOA_CUDA_SYNC=1 (which
# names the op of a faulting kernel) applies to the suite only, never to the timings.
set -u
OUT_DIR=${1:?usage: device-suite.sh OUT_DIR [lengths]}
LENGTHS=${2:-4096,8192,32768}
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
PKG=$ROOT/packages/kernels-cuda
mkdir -p "$OUT_DIR"
NODE=${NODE:-}
if [ -z "$NODE" ]; then
  NODE=/tmp/moa-node
  [ -x "$NODE" ] || { xz -dc "$ROOT/.dev/node.xz" > "$NODE" && chmod +x "$NODE"; } || exit 1
fi
{ nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; "$NODE" --version; } > "$OUT_DIR/card.txt" 2>&1
export MOA_NUM_THREADS=${MOA_NUM_THREADS:-$(nproc)}
cd "$PKG" || exit 1
set -o pipefail
timeout "${MOA_SUITE_TIMEOUT:-3600}" "$NODE" scripts/gpu-suite.mjs --prebuilt 2>&1 | tee "$OUT_DIR/suite.log"
status=$?
timeout "${MOA_BENCH_TIMEOUT:-3600}" env -u MOA_CUDA_SYNC "$NODE" dist-gpu/attention-backward.mjs \
  "$OUT_DIR/attention-backward.json" "$LENGTHS" 2>&1 | tee "$OUT_DIR/attention-backward.log"
exit $status
