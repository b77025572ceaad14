"""PyTorch baseline for the attention microbenchmarks (bench/attention_bench.cu measures ours in the same
command): causal prefill attention through scaled_dot_product_attention on the flash backend, bf16,
32 query / 8 KV heads, head 128, batch 1, n = 8k, 32k, 128k. Median of CUDA-event timings.

Usage: python3 bench/sdpa_baseline.py <out.json> [--quick]
"""
import json
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def median_ms(fn, warmup, reps):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2]


def main():
    out_path = sys.argv[1]
    quick = "--quick" in sys.argv
    hq, hkv, d = 32, 8, 128
    rows = []
    lengths = [8192] if quick else [8192, 32768, 131072]
    for n in lengths:
        q = torch.randn(1, hq, n, d, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, hkv, n, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(1, hkv, n, d, device="cuda", dtype=torch.bfloat16)
        reps = 3 if n >= 131072 else 5 if n >= 32768 else 20
        mode = "enable_gqa"
        try:
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                fn = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
                ms = median_ms(fn, 1, reps)
        except RuntimeError:
            # The flash backend without GQA support: expand K/V to every query head (outside the timing).
            mode = "expanded-kv"
            ke = k.repeat_interleave(hq // hkv, dim=1)
            ve = v.repeat_interleave(hq // hkv, dim=1)
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                fn = lambda: F.scaled_dot_product_attention(q, ke, ve, is_causal=True)
                ms = median_ms(fn, 1, reps)
            del ke, ve
        flops = 4.0 * d * n * (n + 1) / 2 * hq
        tflops = flops / (ms * 1e-3) / 1e12
        print(f"sdpa flash n={n:<7} {ms:9.3f} ms  {tflops:6.1f} TFLOP/s ({mode})", flush=True)
        rows.append({"n": n, "plan": "sdpa-flash", "density": 1.0, "ms": ms, "tflops": tflops, "gqa": mode})
        del q, k, v
        torch.cuda.empty_cache()
    with open(out_path, "w") as f:
        json.dump({"torch": torch.__version__, "cuda": torch.version.cuda,
                   "device": torch.cuda.get_device_name(0), "prefill": rows}, f, indent=1)


if __name__ == "__main__":
    main()
