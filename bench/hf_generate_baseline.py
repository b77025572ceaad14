"""End-to-end baseline: transformers `generate` (SDPA attention, bf16, greedy) on the same checkpoint as
bench/e2e-decode.ts. Decode tokens/s = batch · steps / time between the first and the last generated token
(timestamps taken by a logits processor after a device synchronisation), so the prompt's prefill is excluded.
Batch: the given one, halved on out-of-memory until it fits.

  python3 bench/hf_generate_baseline.py <checkpoint-dir> <out.json> --contexts 8192,32768 --batches 48,12 [--steps 16]
"""
import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM, LogitsProcessor, LogitsProcessorList


class StepClock(LogitsProcessor):
    def __init__(self):
        self.times = []

    def __call__(self, input_ids, scores):
        torch.cuda.synchronize()
        self.times.append(time.perf_counter())
        return scores


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("out")
    parser.add_argument("--contexts", default="8192,32768")
    parser.add_argument("--batches", default="32,8")
    parser.add_argument("--steps", type=int, default=16)
    args = parser.parse_args()
    model = AutoModelForCausalLM.from_pretrained(args.dir, dtype=torch.bfloat16, attn_implementation="sdpa",
                                                 device_map="cuda")
    model.eval()
    weights = torch.cuda.memory_allocated()
    results = []
    for n, batch in zip(map(int, args.contexts.split(",")), map(int, args.batches.split(","))):
        while batch >= 1:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            ids = torch.randint(2, model.config.vocab_size, (batch, n), device="cuda")
            clock = StepClock()
            try:
                with torch.no_grad():
                    start = time.perf_counter()
                    model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.steps + 1,
                                   min_new_tokens=args.steps + 1, do_sample=False,
                                   logits_processor=LogitsProcessorList([clock]), pad_token_id=0)
                    torch.cuda.synchronize()
                    total = time.perf_counter() - start
            except torch.OutOfMemoryError:
                print(f"n={n} batch {batch}: out of memory, halving", flush=True)
                del ids
                batch //= 2
                continue
            decode = clock.times[-1] - clock.times[0]
            steps = len(clock.times) - 1
            row = {"context": n, "batch": batch, "decodeStepMs": 1000 * decode / steps,
                   "decodeTokensPerSecond": batch * steps / decode, "prefillSeconds": clock.times[0] - start,
                   "totalSeconds": total, "peakMemoryGiB": torch.cuda.max_memory_allocated() / 2**30,
                   "weightsGiB": weights / 2**30}
            print(f"transformers n={n} batch {batch}: decode step {row['decodeStepMs']:.1f} ms = "
                  f"{row['decodeTokensPerSecond']:.0f} tok/s, prefill {row['prefillSeconds']:.1f} s, "
                  f"peak {row['peakMemoryGiB']:.1f} GiB", flush=True)
            results.append(row)
            del ids
            break
    import transformers
    with open(args.out, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
                   "transformers": transformers.__version__, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
