#!/usr/bin/env bash
# Profiling speed (issue 5), ours and PyTorch eager on the same card, in one command on a GPU machine:
#   bash bench/profile-bench.sh <out-dir>
# 1. the eager profiler's definition check (fp32, fixtures/reference-vectors.json `influence`),
# 2. the random Llama-3.1-8B-shape checkpoint (bench/make_random_checkpoint.py) unless $CKPT has one,
# 3. ours (bench/profile-speed.ts, bundled as packages/kernels-cuda/dist-gpu/profile-speed.mjs) at 4k and 8k on
#    fixtures/moa-tiny and at 4k, 8k and 32k on the 8B shape, and the eager profiler (bench/eager_profiler.py) at
#    4k and 8k on both,
# 4. bench/profile_report.py: <out-dir>/profile.json with the ratios, and a table on stdout.
# Needs python3 with torch and transformers, and for ours: node ($NODE, default `node`), the bundle
# (node packages/kernels-cuda/scripts/gpu-suite.mjs --bundle) and the CUDA addon
# (packages/kernels-cuda/build/Release/moa_cuda.node). A failing step is logged and the rest still runs.
# Env: CKPT (8B checkpoint dir, default /tmp/random-llama3-8b), RUNS (timed runs per length after a warm-up,
# default 3; RUNS_TINY for moa-tiny, default 15: its runs take 0.01-0.2 s and vary by up to 60% at 4k),
# SKIP_OURS=1 / SKIP_EAGER=1 (one side only), OURS_8B_LENGTHS (default 4096,8192,32768).
set -uo pipefail
out=${1:?usage: bench/profile-bench.sh <out-dir>}
root=$(cd "$(dirname "$0")/.." && pwd)
node=${NODE:-node}
ckpt=${CKPT:-/tmp/random-llama3-8b}
runs=${RUNS:-3}
runs_tiny=${RUNS_TINY:-15}
ours_8b=${OURS_8B_LENGTHS:-4096,8192,32768}
bundle="$root/packages/kernels-cuda/dist-gpu/profile-speed.mjs"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
start=$(date +%s)
step() { echo "[profile-bench t+$(( $(date +%s) - start ))s] $*"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1 > "$out/card.txt"
step "card: $(cat "$out/card.txt")"

if [[ -z "${SKIP_EAGER:-}" ]]; then
  step "eager --check"
  python3 "$root/bench/eager_profiler.py" --check --out "$out/eager-check.json" || step "eager --check exited $?"
fi

if [[ ! -f "$ckpt/config.json" ]]; then
  step "writing the random 8B-shape checkpoint to $ckpt"
  python3 "$root/bench/make_random_checkpoint.py" "$ckpt" || step "make_random_checkpoint exited $?"
fi

if [[ -z "${SKIP_OURS:-}" ]]; then
  step "ours moa-tiny"
  "$node" "$bundle" "$root/fixtures/moa-tiny" "$out/ours-moa-tiny.json" 4096,8192 "$runs_tiny" || step "ours moa-tiny exited $?"
  step "ours 8B ($ours_8b)"
  "$node" "$bundle" "$ckpt" "$out/ours-8b.json" "$ours_8b" "$runs" || step "ours 8B exited $?"
fi

if [[ -z "${SKIP_EAGER:-}" ]]; then
  step "eager moa-tiny"
  python3 "$root/bench/eager_profiler.py" --bench "$root/fixtures/moa-tiny" --lengths 4096,8192 --runs "$runs_tiny" \
    --out "$out/eager-moa-tiny.json" || step "eager moa-tiny exited $?"
  step "eager 8B"
  python3 "$root/bench/eager_profiler.py" --bench "$ckpt" --label random-llama3-8b --lengths 4096,8192 \
    --runs "$runs" --out "$out/eager-8b.json" || step "eager 8B exited $?"
fi

step "report"
python3 "$root/bench/profile_report.py" "$out" "bash bench/profile-bench.sh $out"
step "done"
