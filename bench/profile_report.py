"""Merges bench/profile-bench.sh's results (bench/profile-speed.ts, ours; bench/eager_profiler.py, PyTorch eager)
into one JSON with ratios and prints a table. Usage:
  python3 bench/profile_report.py <out-dir> "<command>"
Reads <out-dir>/card.txt (nvidia-smi), eager-check.json, and for each model M in (moa-tiny, 8b): ours-M.json and
eager-M.json; writes <out-dir>/profile.json. Acceptance (issue 5): ours ≥ 5× the eager tokens/s at 4k and 8k on
both models, and the 8B shape profiles a 32k-token sample.
"""
import json
import os
import sys

MODELS = [("moa-tiny", "fixtures/moa-tiny"), ("8b", "random Llama-3.1-8B shape (bench/make_random_checkpoint.py)")]
TARGET = 5.0


def read(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def main():
    out = sys.argv[1]
    command = sys.argv[2] if len(sys.argv) > 2 else ""
    card = (open(os.path.join(out, "card.txt")).read().strip() if os.path.exists(os.path.join(out, "card.txt"))
            else "unknown")
    check = read(os.path.join(out, "eager-check.json"))
    rows, sides = [], {}
    for key, what in MODELS:
        ours, eager = read(os.path.join(out, f"ours-{key}.json")), read(os.path.join(out, f"eager-{key}.json"))
        sides[key] = {"model": what, "ours": ours and {k: v for k, v in ours.items() if k != "results"},
                      "eager": eager and {k: v for k, v in eager.items() if k != "results"}}
        by_n = {}
        for side, data in (("ours", ours), ("eager", eager)):
            for r in (data or {}).get("results", []):
                by_n.setdefault(r["n"], {})[side] = r
        for n in sorted(by_n):
            o, e = by_n[n].get("ours"), by_n[n].get("eager")
            row = {"model": key, "n": n, "ours": o, "eager": e}
            ot = o.get("tokensPerSecond") if o else None
            et = e.get("tokensPerSecond") if e else None
            row["speedup"] = ot / et if ot and et else None
            if o and e:
                row["sameTokens"] = o.get("idsDigest") == e.get("idsDigest")
                if o.get("loss") is not None and e.get("loss") is not None:
                    row["lossDiff"] = o["loss"] - e["loss"]
                so, se = o.get("influenceSumPerLayer"), e.get("influenceSumPerLayer")
                if so and se and len(so) == len(se):
                    row["influenceSumRelDiff"] = abs(sum(so) - sum(se)) / abs(sum(se))
            rows.append(row)

    def speedup(model, n):
        return next((r["speedup"] for r in rows if r["model"] == model and r["n"] == n), None)

    def eager_oom(model, n):
        return next((bool(r["eager"] and r["eager"].get("oom")) for r in rows if r["model"] == model and r["n"] == n),
                    False)

    long_run = next((r["ours"] for r in rows if r["model"] == "8b" and r["n"] == 32768), None)
    acceptance = {
        f"{model} {n // 1024}k": (speedup(model, n) is not None and speedup(model, n) >= TARGET)
        or (eager_oom(model, n) and bool(next((r["ours"] for r in rows if r["model"] == model and r["n"] == n
                                               and r["ours"] and r["ours"].get("tokensPerSecond")), None)))
        for model, _ in MODELS for n in (4096, 8192)
    }
    acceptance["8b 32k profiles"] = bool(long_run and long_run.get("tokensPerSecond"))
    result = {"card": card, "command": command, "target": f">= {TARGET}x eager tokens/s at 4k and 8k",
              "eagerCheck": check and {"pass": check.get("pass"), "device": check.get("device"),
                                       "results": check.get("results")},
              "sides": sides, "rows": rows, "acceptance": acceptance}
    with open(os.path.join(out, "profile.json"), "w") as f:
        json.dump(result, f, indent=1)

    print(f"\nProfiling speed on {card} (one sequence, answer = last 16 tokens; tokens/s = n / median seconds)")
    if check:
        for r in check.get("results", []):
            print(f"  eager --check {r['model']} ({r['formula']}): loss |diff| {r['lossAbsDiff']:.1e}, worst rel err "
                  f"{r['worstRelErr']:.2e} (ill-conditioned {r['worstRelErrIllConditioned']:.1e}) "
                  f"{'within' if r['meetsTolerances'] else 'NOT within'} README tolerances")
        print(f"  eager --check overall: {'PASS' if check.get('pass') else 'FAIL'}")
    print(f"{'model':<9} {'n':>6} {'ours tok/s':>11} {'eager tok/s':>12} {'speedup':>8} {'ours peak':>10} "
          f"{'eager peak':>11} {'ours loss':>10} {'eager loss':>11} {'same ids':>8}")

    def fmt(value, spec, missing="-"):
        return format(value, spec) if isinstance(value, (int, float)) else missing

    for r in rows:
        o, e = r["ours"] or {}, r["eager"] or {}
        eager_tps = "OOM" if e.get("oom") else fmt(e.get("tokensPerSecond"), ".0f")
        ours_tps = "OOM" if o.get("oom") else ("fail" if o.get("error") else fmt(o.get("tokensPerSecond"), ".0f"))
        ours_peak = fmt(o.get("peakDeviceUsedGiB"), ".1f") + " GiB" if o.get("peakDeviceUsedGiB") else "-"
        eager_peak = fmt(e.get("peakAllocatedGiB"), ".1f") + " GiB" if e.get("peakAllocatedGiB") else "-"
        print(f"{r['model']:<9} {r['n']:>6} {ours_tps:>11} {eager_tps:>12} {fmt(r['speedup'], '8.2f'):>8} "
              f"{ours_peak:>10} {eager_peak:>11} {fmt(o.get('loss'), '.5f'):>10} {fmt(e.get('loss'), '.5f'):>11} "
              f"{str(r.get('sameTokens', '-')):>8}")
    print("acceptance: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in acceptance.items()))
    print("(ours peak: device memory in use, cudaMemGetInfo, CUDA context included; eager peak: "
          "torch.cuda.max_memory_allocated)")


if __name__ == "__main__":
    main()
