#!/usr/bin/env bash
# Attention benchmarks, ours and PyTorch's, in one command on a GPU machine:
#   bash bench/run.sh <out-dir> [--quick]
# Builds bench/attention_bench.cu with nvcc unless a prebuilt binary is given in $ATTENTION_BENCH, runs it,
# runs bench/sdpa_baseline.py, and writes <out-dir>/attention.json (bench/report.py) plus a table on stdout.
set -euo pipefail
out=${1:?usage: bench/run.sh <out-dir> [--quick]}
quick=${2:-}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
bin=${ATTENTION_BENCH:-}
if [[ -z "$bin" ]]; then
  bin="$out/attention_bench"
  src="$root/packages/kernels-cuda/src"
  nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a -I"$src" "$root/bench/attention_bench.cu" \
    "$src/cuda/attention_prefill.cu" "$src/cuda/attention_decode.cu" "$src/cuda/device.cu" -ldl -o "$bin"
fi
"$bin" "$out/ours.json" $quick
python3 "$root/bench/sdpa_baseline.py" "$out/sdpa.json" $quick
python3 "$root/bench/report.py" "$out/ours.json" "$out/sdpa.json" "$out/attention.json" "bash bench/run.sh $out $quick"
