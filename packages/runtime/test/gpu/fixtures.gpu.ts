/**
 * GPU correctness suite, part 2: the runtime on the CUDA backend (bf16 GEMM inputs, bf16 attention operands,
 * bf16 KV cache) against Hugging Face transformers' reference vectors (fixtures/README.md), and MoA on CUDA
 * against MoA on the CPU reference. Runs with node:test on a GPU machine (`pnpm test:gpu`).
 *
 * bf16 tolerances (the issue's acceptance): the 24-token greedy continuation identical on moa-nano and
 * moa-tiny, and mean |ΔNLL| < 2e-2 on every fixture.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { type ElasticRule, makePlan } from "@moa/core";
import { loadBackend } from "@moa/kernels-cuda";
import { profileInfluence } from "../../src/backward.js";
import { loadModel } from "../../src/load.js";
import { Sampler } from "../../src/sampling.js";
import { fixtureDir, MODEL_NAMES, referenceVectors } from "../fixtures.js";

interface InfluenceVectors {
  input_ids: number[];
  response_start: number;
  loss: number;
  /** [layer][head][query block][key block]. */
  block_influence: number[][][][];
}

const GREEDY_MODELS = new Set(["moa-nano", "moa-tiny"]);

function nll(row: Float32Array, target: number): number {
  let max = Number.NEGATIVE_INFINITY;
  for (const v of row) max = Math.max(max, v);
  let sum = 0;
  for (const v of row) sum += Math.exp(v - max);
  return Math.log(sum) + max - row[target]!;
}

function argmaxOf(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

const summary: string[] = [];
after(() => {
  console.log(`\nfixture parity on ${loadBackend("cuda").deviceName} (bf16):\n${summary.join("\n")}`);
});

describe("fixtures on CUDA match transformers (bf16)", () => {
  for (const name of MODEL_NAMES) {
    it(`${name}: mean |ΔNLL| < 2e-2${GREEDY_MODELS.has(name) ? ", greedy 24 tokens identical" : ""}`, async () => {
      const vectors = referenceVectors().models[name];
      const model = await loadModel(fixtureDir(name), { backend: "cuda" });
      try {
        assert.equal(model.backend.name, "cuda");
        const vocab = model.config.vocabSize;
        // Model.nll: the same forward, the log-softmax on the GPU, only the NLLs copied back.
        const onDevice = model.nll(vectors.input_ids);
        const slot = model.cache.allocateSlot();
        const [logits] = model.transformer.prefill([{ slot, tokens: vectors.input_ids }], {
          logits: "all",
        }) as [Float32Array];
        let total = 0;
        let worst = 0;
        let argmaxSame = 0;
        let deviceWorst = 0;
        for (let p = 0; p < vectors.nll.length; p++) {
          const row = logits.subarray(p * vocab, (p + 1) * vocab);
          const onHost = nll(row, vectors.input_ids[p + 1]!);
          deviceWorst = Math.max(deviceWorst, Math.abs(onDevice[p]! - onHost));
          const delta = Math.abs(onHost - vectors.nll[p]!);
          total += delta;
          worst = Math.max(worst, delta);
          if (argmaxOf(row) === vectors.argmax[p]) argmaxSame++;
        }
        const mean = total / vectors.nll.length;
        const sampler = new Sampler();
        const last = logits.subarray((vectors.input_ids.length - 1) * vocab);
        const tokens = [sampler.sample(last)];
        while (tokens.length < vectors.greedy.length) {
          tokens.push(sampler.sample(model.transformer.decode(Int32Array.of(slot), [tokens.at(-1)!])));
        }
        let same = 0;
        while (same < tokens.length && tokens[same] === vectors.greedy[same]) same++;
        summary.push(
          `  ${name.padEnd(15)} mean |ΔNLL| ${mean.toExponential(2)}  max ${worst.toExponential(2)}  argmax ${argmaxSame}/${vectors.nll.length}  greedy ${same}/${vectors.greedy.length} identical  Model.nll vs host ${deviceWorst.toExponential(2)}`,
        );
        assert.ok(mean < 2e-2, `${name}: mean |ΔNLL| = ${mean}`);
        assert.equal(onDevice.length, vectors.nll.length);
        assert.ok(
          deviceWorst < 1e-4,
          `${name}: Model.nll differs from the host log-softmax by ${deviceWorst}`,
        );
        if (GREEDY_MODELS.has(name)) assert.deepEqual(tokens, vectors.greedy);
      } finally {
        model.dispose();
      }
    });
  }
});

describe("MoA on CUDA equals MoA on the CPU reference", () => {
  it("moa-tiny with a mixed per-head plan: prefill NLL, window-mask prefill and ring-buffer decode", async () => {
    const name = "moa-tiny";
    const ids = referenceVectors().models[name].input_ids;
    const probe = await loadModel(fixtureDir(name), { backend: "cpu", maxLength: ids.length + 16 });
    const shape = probe.config.shape();
    probe.dispose();
    // Spans from 64 to ~0.6·n, not multiples of the block, different in every head.
    const rules: ElasticRule[][] = Array.from({ length: shape.layers }, (_, l) =>
      Array.from({ length: shape.heads }, (_, h) => ({
        alpha: 40 + 37 * ((l * 7 + h * 3) % 11),
        beta: ((l + h) % 5) / 8,
      })),
    );
    const plan = makePlan(shape, rules, [], { test: "gpu parity" });
    const options = { plan, maxLength: ids.length + 16 } as const;
    const gpu = await loadModel(fixtureDir(name), { ...options, backend: "cuda" });
    const ref = await loadModel(fixtureDir(name), { ...options, backend: "cpu" });
    try {
      const vocab = gpu.config.vocabSize;
      for (const maskMode of ["block", "window"] as const) {
        const a = gpu.logits(ids, { maskMode });
        const b = ref.logits(ids, { maskMode });
        let total = 0;
        for (let p = 0; p + 1 < ids.length; p++) {
          total += Math.abs(
            nll(a.subarray(p * vocab, (p + 1) * vocab), ids[p + 1]!) -
              nll(b.subarray(p * vocab, (p + 1) * vocab), ids[p + 1]!),
          );
        }
        const mean = total / (ids.length - 1);
        summary.push(
          `  moa-tiny plan, ${maskMode} prefill: mean |ΔNLL| CUDA vs CPU ${mean.toExponential(2)}`,
        );
        assert.ok(mean < 2e-2, `${maskMode}: mean |ΔNLL| = ${mean}`);
      }
      // Decode 16 tokens on both from the same prompt, feeding the CPU's choice to both (teacher forcing),
      // so the comparison stays on one path: each step's NLL of that token.
      const slotA = gpu.cache.allocateSlot();
      const slotB = ref.cache.allocateSlot();
      let rowA = gpu.transformer.prefill([{ slot: slotA, tokens: ids }])[0]!;
      let rowB = ref.transformer.prefill([{ slot: slotB, tokens: ids }])[0]!;
      let total = 0;
      for (let step = 0; step < 16; step++) {
        const next = argmaxOf(rowB);
        total += Math.abs(nll(rowA, next) - nll(rowB, next));
        rowA = gpu.transformer.decode(Int32Array.of(slotA), [next]);
        rowB = ref.transformer.decode(Int32Array.of(slotB), [next]);
      }
      summary.push(
        `  moa-tiny plan, ring-buffer decode: mean |ΔNLL| CUDA vs CPU ${(total / 16).toExponential(2)}`,
      );
      assert.ok(total / 16 < 2e-2, `decode: mean |ΔNLL| = ${total / 16}`);
    } finally {
      gpu.dispose();
      ref.dispose();
    }
  });

  it("a model can be freed and loaded again: device memory returns", async () => {
    const backend = loadBackend("cuda") as ReturnType<typeof loadBackend> & {
      memoryInfo(): { free: number };
    };
    backend.synchronize();
    const before = backend.memoryInfo().free;
    for (let i = 0; i < 3; i++) {
      const model = await loadModel(fixtureDir("moa-tiny"), { backend: "cuda", slots: 4 });
      model.logits([0, 5, 9, 11]);
      model.dispose();
    }
    backend.synchronize();
    const after = backend.memoryInfo().free;
    summary.push(`  free device memory before/after 3 load+dispose cycles: ${before} / ${after} bytes`);
    assert.ok(before - after < 64 * 2 ** 20, `free memory fell by ${before - after} bytes`);
  });
});

/**
 * The profiler on CUDA (every op on the GPU, its products at the profiler's precision: the default f16, scaled
 * fp16 operands, and "split", bf16 hi + lo) against transformers' fp32 influence vectors. Acceptance, for both:
 * the loss, and every block above 1e-4 of its head's total within 2%. The heads fixtures/README.md names as
 * holding entries with 1 − A_ij < 1e-4 (moa-nano layer 2, heads 0–1) divide by that difference; their worst
 * error is reported on its own (the CPU reference is held to 20% there too). Operands rounded once to bf16
 * (MOA_CUDA_BACKWARD_PRECISION=bf16) are measured beside them for the record.
 */
/** The backend calls a profile makes, timed one by one for the breakdown. */
const OPS = [
  "matmul",
  "matmulBackward",
  "attentionPrefill",
  "attentionBackward",
  "rmsNorm",
  "rmsNormBackward",
  "siluMul",
  "siluMulBackward",
  "crossEntropy",
  "rope",
  "add",
  "embedding",
  "toHost",
  "write",
  "empty",
  "free",
  "rows",
];

describe("profileInfluence on CUDA matches transformers' influence", () => {
  const ILL_CONDITIONED: Record<string, [number, number][]> = {
    "moa-nano": [
      [2, 0],
      [2, 1],
    ],
    "moa-tiny": [],
  };
  for (const name of ["moa-nano", "moa-tiny"] as const) {
    it(`${name}: loss, and blocks above 1e-4 of each head's total within 2%`, async () => {
      const all = referenceVectors() as unknown as { influence: Record<string, InfluenceVectors> };
      const reference = all.influence[name]!;
      const model = await loadModel(fixtureDir(name), { backend: "cuda" });
      try {
        const { layers, heads } = model.config;
        const measure = (mode: "split" | "bf16" | "f16") => {
          const previous = process.env.MOA_CUDA_BACKWARD_PRECISION;
          process.env.MOA_CUDA_BACKWARD_PRECISION = mode;
          try {
            profileInfluence(model, reference.input_ids, reference.response_start); // warm-up
            const started = performance.now();
            const profile = profileInfluence(model, reference.input_ids, reference.response_start);
            const ms = performance.now() - started;
            let worst = 0;
            let worstIll = 0;
            let checked = 0;
            for (let l = 0; l < layers; l++) {
              for (let h = 0; h < heads; h++) {
                const ill = ILL_CONDITIONED[name]!.some(([layer, head]) => layer === l && head === h);
                const expected = reference.block_influence[l]![h]!;
                let total = 0;
                for (const row of expected) for (const value of row) total += value;
                for (let qb = 0; qb < profile.blocks; qb++) {
                  for (let kb = 0; kb <= qb; kb++) {
                    const want = expected[qb]![kb]!;
                    if (want <= 1e-4 * total) continue;
                    const got =
                      profile.influence[((l * heads + h) * profile.blocks + qb) * profile.blocks + kb]!;
                    const relative = Math.abs(got - want) / want;
                    if (ill) worstIll = Math.max(worstIll, relative);
                    else worst = Math.max(worst, relative);
                    checked++;
                  }
                }
              }
            }
            const lossDiff = Math.abs(profile.loss - reference.loss);
            summary.push(
              `  ${name.padEnd(10)} influence (${mode}): loss ${profile.loss.toFixed(6)} vs ${reference.loss.toFixed(6)} (|Δ| ${lossDiff.toExponential(2)}), worst block ${(100 * worst).toFixed(3)}% over ${checked} blocks > 1e-4 of the head${ILL_CONDITIONED[name]!.length > 0 ? `, ill-conditioned heads ${(100 * worstIll).toFixed(2)}%` : ""}, ${reference.input_ids.length} tokens in ${ms.toFixed(0)} ms`,
            );
            return { worst, worstIll, lossDiff, checked };
          } finally {
            if (previous === undefined) delete process.env.MOA_CUDA_BACKWARD_PRECISION;
            else process.env.MOA_CUDA_BACKWARD_PRECISION = previous;
          }
        };
        measure("bf16");
        const split = measure("split");
        // The default precision (f16) is the one profiles are made with.
        const result = measure("f16");
        // Where a profile's time goes: every backend call timed with a synchronise on each side (so the sum is
        // a little above the profile's own time), printed per op.
        const backend = model.backend as typeof model.backend & Record<string, unknown>;
        const spent = new Map<string, { ms: number; calls: number }>();
        const originals = new Map<string, unknown>();
        for (const key of OPS) {
          const original = backend[key];
          if (typeof original !== "function") continue;
          originals.set(key, original);
          backend[key] = (...args: unknown[]) => {
            backend.synchronize();
            const started = performance.now();
            const value = (original as (...a: unknown[]) => unknown).apply(backend, args);
            backend.synchronize();
            const entry = spent.get(key) ?? { ms: 0, calls: 0 };
            entry.ms += performance.now() - started;
            entry.calls++;
            spent.set(key, entry);
            return value;
          };
        }
        try {
          profileInfluence(model, reference.input_ids, reference.response_start);
        } finally {
          for (const key of originals.keys()) delete backend[key];
        }
        summary.push(
          `  ${name.padEnd(10)} time per op (ms/calls): ${[...spent.entries()]
            .sort((a, b) => b[1].ms - a[1].ms)
            .map(([key, { ms, calls }]) => `${key} ${ms.toFixed(1)}/${calls}`)
            .join(", ")}`,
        );
        assert.ok(
          split.worst < 0.02,
          `${name} (split): a block is off by ${(100 * split.worst).toFixed(3)}%`,
        );
        assert.ok(result.checked > layers * heads);
        assert.ok(result.lossDiff < 2e-2, `${name}: loss off by ${result.lossDiff}`);
        assert.ok(result.worst < 0.02, `${name}: a block is off by ${(100 * result.worst).toFixed(3)}%`);
        assert.ok(result.worstIll < 0.2, `${name}: an ill-conditioned block is off by ${result.worstIll}`);
      } finally {
        model.dispose();
      }
    });
  }
});
