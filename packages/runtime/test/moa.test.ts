/**
 * MoA mode: plan masks in prefill and decode, the elastic ring-buffer cache, and its byte accounting, checked
 * against dense attention, against a full prefill under the decode (window) mask, and against @moa/core.
 */
import {
  DEFAULT_GEOMETRY,
  densePlan,
  type ElasticRule,
  kvHeadTokens,
  makePlan,
  type ModelShape,
  type MoaPlan,
  planKvBytes,
  spanBlocks,
} from "@moa/core";
import { loadBackend } from "@moa/kernels-cuda";
import { beforeAll, describe, expect, it } from "vitest";
import { readModelConfig } from "../src/config.js";
import { KvCache, ringCapacities } from "../src/kv-cache.js";
import { loadModel, type Model } from "../src/load.js";
import { Xoshiro128 } from "../src/sampling.js";
import { fixtureDir, referenceVectors } from "./fixtures.js";

/** Random elastic rules whose windows are short enough that a ring buffer of a few blocks wraps. */
function randomPlan(shape: ModelShape, seed: number, maxAlpha: number, maxBeta: number): MoaPlan {
  const rng = new Xoshiro128(seed);
  const rules: ElasticRule[][] = Array.from({ length: shape.layers }, () =>
    Array.from({ length: shape.heads }, () => ({
      alpha: Math.round((rng.nextFloat() * (maxAlpha + 128) - 128) / 8) * 8,
      beta: Math.round(rng.nextFloat() * maxBeta * 64) / 64,
    })),
  );
  return makePlan(shape, rules, [], { test: "random", seed });
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}

/** Bit-for-bit equality (vitest's toEqual walks millions of elements one by one). */
function sameBits(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(
    Buffer.from(b.buffer, b.byteOffset, b.byteLength),
  );
}

function argmaxOf(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

describe("a plan whose spans cover the input", () => {
  for (const name of ["moa-nano", "random-llama31"] as const) {
    it(`equals dense exactly on ${name} (prefill logits, decode, cache size)`, async () => {
      const ids = referenceVectors().models[name].input_ids;
      const dense = await loadModel(fixtureDir(name), { backend: "cpu", maxLength: ids.length + 8 });
      const config = dense.config;
      const covering = await loadModel(fixtureDir(name), {
        backend: "cpu",
        maxLength: ids.length + 8,
        plan: densePlan(config.shape(), [ids.length]),
      });
      try {
        // Prefill both (all logit rows), then decode the same 8 tokens from each cache: every row bit-identical.
        const run = (model: Model): Float32Array[] => {
          const slot = model.cache.allocateSlot();
          const rows = model.transformer.prefill([{ slot, tokens: ids }], { logits: "all" });
          for (const token of [5, 17, 300, 2, 9, 44, 1000, 3]) {
            rows.push(model.transformer.decode(Int32Array.of(slot), [token]));
          }
          model.cache.releaseSlot(slot);
          return rows;
        };
        const expected = run(dense);
        const actual = run(covering);
        expect(actual).toHaveLength(expected.length);
        for (const [i, rows] of actual.entries())
          expect(sameBits(rows, expected[i]!), `row block ${i}`).toBe(true);
        expect(covering.cacheBytes()).toBe(dense.cacheBytes());
      } finally {
        dense.dispose();
        covering.dispose();
      }
    });
  }
});

interface RingCase {
  name: "moa-nano" | "random-llama31";
  maxAlpha: number;
  maxBeta: number;
  /** Short prompts fill the rings during decode; long ones (`overflows`) already overflow them in prefill. */
  runs: Array<{ seed: number; prompt: number; overflows: boolean }>;
}

const RING_CASES: RingCase[] = [
  {
    name: "moa-nano",
    maxAlpha: 256,
    maxBeta: 0.25,
    runs: [
      { seed: 1, prompt: 200, overflows: false },
      { seed: 2, prompt: 700, overflows: true },
    ],
  },
  {
    name: "random-llama31",
    maxAlpha: 96,
    maxBeta: 0.25,
    runs: [
      { seed: 3, prompt: 40, overflows: false },
      { seed: 4, prompt: 200, overflows: true },
    ],
  },
];

describe.each(RING_CASES)("ring-buffer decode on $name", ({ name, maxAlpha, maxBeta, runs }) => {
  const ids = referenceVectors().models[name].input_ids;
  let shape: ModelShape;
  beforeAll(async () => {
    shape = (await readModelConfig(fixtureDir(name))).shape();
  });

  it.each(runs)(
    "equals a full prefill under the window mask (random plan, seed $seed, prompt $prompt)",
    async ({ seed, prompt, overflows }) => {
      const plan = randomPlan(shape, seed, maxAlpha, maxBeta);
      const model = await loadModel(fixtureDir(name), { backend: "cpu", plan, maxLength: ids.length });
      try {
        // The rings are shorter than the sequence, so decode overwrites entries as it goes.
        const rings = model.cache.layers.flatMap((layer) => Array.from(layer.ringCap));
        expect(Math.min(...rings) + DEFAULT_GEOMETRY.sinkTokens).toBeLessThan(ids.length);
        const vocab = model.config.vocabSize;
        const full = model.logits(ids, { maskMode: "window" });

        if (overflows) expect(Math.max(...rings) + DEFAULT_GEOMETRY.sinkTokens).toBeLessThan(prompt);
        const slot = model.cache.allocateSlot();
        const [last] = model.transformer.prefill([{ slot, tokens: ids.slice(0, prompt) }], {
          logits: "last",
          maskMode: "window",
        });
        let worst = maxAbsDiff(last!, full.subarray((prompt - 1) * vocab, prompt * vocab));
        let argmaxAgree = 0;
        for (let p = prompt; p < ids.length; p++) {
          const step = model.transformer.decode(Int32Array.of(slot), [ids[p]!]);
          const expected = full.subarray(p * vocab, (p + 1) * vocab);
          worst = Math.max(worst, maxAbsDiff(step, expected));
          if (argmaxOf(step) === argmaxOf(expected)) argmaxAgree++;
        }
        model.cache.releaseSlot(slot);
        expect(worst).toBeLessThan(1e-4);
        expect(argmaxAgree).toBe(ids.length - prompt);
      } finally {
        model.dispose();
      }
    },
  );

  it("differs from dense once windows drop tokens (the plan is in effect)", async () => {
    const plan = randomPlan(shape, runs[0]!.seed, maxAlpha, maxBeta);
    const sparse = await loadModel(fixtureDir(name), { backend: "cpu", plan, maxLength: ids.length });
    const dense = await loadModel(fixtureDir(name), { backend: "cpu", maxLength: ids.length });
    try {
      expect(maxAbsDiff(sparse.logits(ids), dense.logits(ids))).toBeGreaterThan(1e-3);
    } finally {
      sparse.dispose();
      dense.dispose();
    }
  });
});

describe("several sequences in one batch with a plan (random-llama31, GQA)", () => {
  it("each sequence of a batched prefill + decode equals its own full prefill under the window mask", async () => {
    const ids = referenceVectors().models["random-llama31"].input_ids;
    const shape = (await readModelConfig(fixtureDir("random-llama31"))).shape();
    const plan = randomPlan(shape, 21, 96, 0.25);
    const model = await loadModel(fixtureDir("random-llama31"), {
      backend: "cpu",
      plan,
      maxLength: 300,
      slots: 3,
    });
    try {
      const vocab = model.config.vocabSize;
      // Three sequences of different lengths; their prompts differ in length too.
      const sequences = [ids.slice(0, 260), ids.slice(5, 205).reverse(), ids.slice(100, 250)];
      const prompts = [30, 75, 1];
      const expected = sequences.map((seq) => model.logits(seq, { maskMode: "window" }));
      const slots = sequences.map(() => model.cache.allocateSlot());
      const first = model.transformer.prefill(
        sequences.map((seq, i) => ({ slot: slots[i]!, tokens: seq.slice(0, prompts[i]!) })),
        { maskMode: "window" },
      );
      let worst = 0;
      sequences.forEach((_, i) => {
        const p = prompts[i]! - 1;
        worst = Math.max(worst, maxAbsDiff(first[i]!, expected[i]!.subarray(p * vocab, (p + 1) * vocab)));
      });
      const position = [...prompts];
      for (;;) {
        const live = sequences.map((_, i) => i).filter((i) => position[i]! < sequences[i]!.length);
        if (live.length === 0) break;
        const out = model.transformer.decode(
          Int32Array.from(live, (i) => slots[i]!),
          live.map((i) => sequences[i]![position[i]!]!),
        );
        live.forEach((i, row) => {
          const p = position[i]!;
          const want = expected[i]!.subarray(p * vocab, (p + 1) * vocab);
          worst = Math.max(worst, maxAbsDiff(out.subarray(row * vocab, (row + 1) * vocab), want));
          position[i] = p + 1;
        });
      }
      expect(worst).toBeLessThan(1e-4);
    } finally {
      model.dispose();
    }
  });
});

describe("KV cache bytes", () => {
  let backend: Awaited<ReturnType<typeof loadBackend>>;
  beforeAll(async () => {
    backend = await loadBackend("cpu");
  });

  it.each([
    ["moa-nano", 2048],
    ["random-llama31", 700],
    ["moa-tiny", 2048],
    ["moa-tiny", 8192],
  ] as const)(
    "equal the plan's KV density prediction on %s at %i tokens (core planKvBytes)",
    async (name, n) => {
      const shape = (await readModelConfig(fixtureDir(name))).shape();
      for (const seed of [11, 12, 13]) {
        const plan = randomPlan(shape, seed, 1024, 0.5);
        for (const slots of [1, 3]) {
          const cache = new KvCache(backend, shape, { maxLength: n, slots, plan });
          try {
            expect(cache.cacheBytes()).toBe(planKvBytes(plan, n, { bytesPerElement: 4, batch: slots }));
          } finally {
            cache.dispose();
          }
        }
      }
    },
  );

  it("sizes each KV head by the widest query head of its GQA group", async () => {
    const shape = (await readModelConfig(fixtureDir("moa-tiny"))).shape();
    const plan = randomPlan(shape, 5, 2048, 0.5);
    const n = 4096;
    const cache = new KvCache(backend, shape, { maxLength: n, slots: 2, plan });
    try {
      const group = shape.heads / shape.kvHeads;
      cache.layers.forEach((layer, l) => {
        for (let g = 0; g < shape.kvHeads; g++) {
          const widest = Math.max(
            ...plan.rules[l]!.slice(g * group, (g + 1) * group).map(
              (r) => spanBlocks(r, n, plan.blockSize) * plan.blockSize,
            ),
          );
          expect(layer.ringCap[g]).toBe(Math.min(widest, n - plan.sinkTokens));
          expect(layer.sinkTokens + layer.ringCap[g]!).toBe(kvHeadTokens(plan, l, g, n));
        }
        // Regions tile the tensors slot by slot, KV head by KV head.
        const perSlot = Array.from(layer.ringCap).reduce((a, c) => a + c + layer.sinkTokens, 0);
        expect(Array.from(layer.regionOffset)).toEqual([
          0,
          layer.sinkTokens + layer.ringCap[0]!,
          perSlot,
          perSlot + layer.sinkTokens + layer.ringCap[0]!,
        ]);
        expect(layer.k.shape).toEqual([2 * perSlot, shape.headDim]);
      });
    } finally {
      cache.dispose();
    }
  });

  it("fits the window the kernels compute from float32 alpha/beta when a rule is not exact in float32", () => {
    const shape = { architecture: "llama", layers: 1, heads: 2, kvHeads: 1, headDim: 16 };
    // In float64 alpha + beta·200 lands just below 128 (nb = 1); in float32 it rounds to 128 (nb = 2).
    const rule = { alpha: 128 - 0.3 * 200 - 1e-13, beta: 0.3 };
    expect(spanBlocks(rule, 200)).toBe(1);
    expect(spanBlocks({ alpha: Math.fround(rule.alpha), beta: Math.fround(rule.beta) }, 200)).toBe(2);
    const plan = makePlan(shape, [[rule, { alpha: 0, beta: 0 }]], []);
    expect(ringCapacities(shape, 0, 200, plan).ringCap[0]).toBe(128);
  });

  it("dense caches hold maxLength tokens per slot and KV head", async () => {
    const shape = (await readModelConfig(fixtureDir("moa-tiny"))).shape();
    const cache = new KvCache(backend, shape, { maxLength: 1000, slots: 2 });
    try {
      expect(cache.cacheBytes()).toBe(shape.layers * shape.kvHeads * 1000 * shape.headDim * 2 * 4 * 2);
    } finally {
      cache.dispose();
    }
  });

  it("hands out and takes back slots", async () => {
    const shape = (await readModelConfig(fixtureDir("moa-nano"))).shape();
    const cache = new KvCache(backend, shape, { maxLength: 128, slots: 2 });
    try {
      const a = cache.allocateSlot();
      const b = cache.allocateSlot();
      expect(new Set([a, b]).size).toBe(2);
      expect(() => cache.allocateSlot()).toThrow(/slots are in use/);
      cache.releaseSlot(a);
      expect(cache.allocateSlot()).toBe(a);
    } finally {
      cache.dispose();
    }
  });
});
