"""Merges bench/attention_bench.cu's and bench/sdpa_baseline.py's JSON into one result with ratios, prints a
table and writes the combined JSON (card, CUDA version, command). Usage:
  python3 bench/report.py <ours.json> <sdpa.json> <out.json> "<command>"
"""
import json
import sys

# Datasheet HBM bandwidth (bytes/s) of the cards this was run on, for "achieved vs peak".
PEAK_GBS = {"H100": 3350.0, "H200": 4800.0}


def main():
    ours = json.load(open(sys.argv[1]))
    sdpa = json.load(open(sys.argv[2]))
    command = sys.argv[4] if len(sys.argv) > 4 else ""
    device = ours["device"]
    peak = next((v for k, v in PEAK_GBS.items() if k in device), None)
    dense = {r["n"]: r for r in ours["prefill"] if r["plan"] == "dense"}
    base = {r["n"]: r for r in sdpa["prefill"]}
    prefill = []
    print(f"\nPrefill attention on {device} (32 q / 8 kv heads, head 128, batch 1, bf16)")
    print(f"{'n':>7} {'plan':<17} {'density':>7} {'ms':>9} {'TFLOP/s':>8} {'vs dense':>8} {'target':>7} {'vs SDPA':>8}")
    for r in ours["prefill"] + sdpa["prefill"]:
        row = dict(r)
        n = r["n"]
        if r["plan"] != "sdpa-flash":
            row["speedupVsOurDense"] = dense[n]["ms"] / r["ms"]
            row["targetSpeedup"] = 0.8 / r["density"] if r["plan"] != "dense" else None
            row["speedupVsSdpa"] = base[n]["ms"] / r["ms"] if n in base else None
        prefill.append(row)
        vs_dense = f"{row.get('speedupVsOurDense', 0):8.2f}" if "speedupVsOurDense" in row else " " * 8
        target = f"{row['targetSpeedup']:7.2f}" if row.get("targetSpeedup") else " " * 7
        vs_sdpa = f"{row['speedupVsSdpa']:8.2f}" if row.get("speedupVsSdpa") else " " * 8
        print(f"{n:>7} {r['plan']:<17} {r['density']:7.3f} {r['ms']:9.3f} {r['tflops']:8.1f} {vs_dense} {target} {vs_sdpa}")
    decode = []
    print(f"\nDecode attention on {device} (bf16 cache; copy bandwidth {ours['copyBandwidthGBs']:.0f} GB/s, datasheet {peak} GB/s)")
    print(f"{'context':>7} {'batch':>5} {'plan':<8} {'ms':>8} {'GB/s':>7} {'% peak':>7} {'% copy':>7}")
    for r in ours["decode"]:
        row = dict(r)
        row["fractionOfPeak"] = r["GBs"] / peak if peak else None
        row["fractionOfCopy"] = r["GBs"] / ours["copyBandwidthGBs"]
        decode.append(row)
        pct = f"{100 * row['fractionOfPeak']:6.1f}%" if peak else "   n/a "
        print(f"{r['context']:>7} {r['batch']:>5} {r['plan']:<8} {r['ms']:8.3f} {r['GBs']:7.0f} {pct} {100 * row['fractionOfCopy']:6.1f}%")
    result = {
        "device": device,
        "cudaRuntime": ours["cudaRuntime"],
        "cudaDriver": ours["cudaDriver"],
        "torch": sdpa["torch"],
        "torchCuda": sdpa["cuda"],
        "command": command,
        "copyBandwidthGBs": ours["copyBandwidthGBs"],
        "datasheetPeakGBs": peak,
        "prefill": prefill,
        "decode": decode,
    }
    with open(sys.argv[3], "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
