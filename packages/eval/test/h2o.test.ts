import { argmax, loadModel, type Model } from "@moa/runtime";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  H2oHeadCache,
  H2oModel,
  h2oBudget,
  h2oGenerate,
  h2oPrefillKeep,
  negativeLogLikelihood,
} from "../src/index.js";
import { MOA_NANO, MOA_TINY } from "./fixtures.js";

/** Brute force: rank every non-recent position by (score desc, position asc) and keep the first `heavy`. */
function bruteForceKeep(scores: number[], budget: number, recent: number, heavy: number): number[] {
  if (scores.length <= budget) return scores.map((_, i) => i);
  const recentFrom = scores.length - recent;
  const ranked = scores
    .slice(0, recentFrom)
    .map((score, position) => ({ score, position }))
    .sort((a, b) => (a.score !== b.score ? b.score - a.score : a.position - b.position));
  const kept = ranked.slice(0, heavy).map((r) => r.position);
  for (let p = recentFrom; p < scores.length; p++) kept.push(p);
  return kept.sort((a, b) => a - b);
}

describe("H2O budget and eviction rules", () => {
  it("splits round(d · n) tokens into ceil(half) recent and the rest heavy", () => {
    fc.assert(
      fc.property(
        fc.double({ min: 0.001, max: 1, noNaN: true }),
        fc.integer({ min: 1, max: 100_000 }),
        (d, n) => {
          const b = h2oBudget(d, n);
          expect(b.budget).toBe(Math.max(1, Math.round(d * n)));
          expect(b.recent + b.heavy).toBe(b.budget);
          expect(b.recent).toBe(Math.ceil(b.budget / 2));
        },
      ),
    );
    expect(() => h2oBudget(0, 10)).toThrow(RangeError);
    expect(() => h2oBudget(0.5, 0)).toThrow(RangeError);
  });

  it("keeps after prefill the recent window and the top heavy hitters (brute force, with ties)", () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 6 }), { minLength: 1, maxLength: 80 }),
        fc.double({ min: 0.01, max: 1, noNaN: true }),
        (ints, d) => {
          const scores = ints.map((s) => s / 3);
          const b = h2oBudget(d, scores.length);
          const kept = Array.from(h2oPrefillKeep(scores, b));
          expect(kept).toEqual(bruteForceKeep(scores, b.budget, b.recent, b.heavy));
          expect(kept).toHaveLength(Math.min(scores.length, b.budget));
        },
      ),
    );
  });

  it("evicts the lowest score outside the recent window, the later position on ties", () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 1, maxLength: 40 }),
        fc.integer({ min: 1, max: 10 }),
        (ints, recent) => {
          const cache = new H2oHeadCache(ints.length, 2);
          // Entries out of position order, as evictions leave them.
          for (let i = ints.length - 1; i >= 0; i--) cache.push(i, [i, i], [i, i], ints[i]!);
          const newest = ints.length - 1;
          const candidates = ints
            .map((score, position) => ({ score, position }))
            .filter((c) => c.position <= newest - recent)
            .sort((a, b) => (a.score !== b.score ? a.score - b.score : b.position - a.position));
          const victim = cache.victim(newest, recent);
          if (candidates.length === 0) expect(victim).toBe(-1);
          else {
            expect(cache.positions[victim]).toBe(candidates[0]!.position);
            cache.remove(victim);
            expect(cache.size).toBe(ints.length - 1);
            expect(cache.sortedPositions()).toEqual(
              ints.map((_, i) => i).filter((p) => p !== candidates[0]!.position),
            );
            // The moved entry kept its key, value and score.
            for (let e = 0; e < cache.size; e++) {
              const p = cache.positions[e]!;
              expect(cache.keys[e * 2]).toBe(p);
              expect(cache.values[e * 2 + 1]).toBe(p);
              expect(cache.scores[e]).toBe(ints[p]);
            }
          }
        },
      ),
    );
  });
});

describe("H2O on moa-nano", () => {
  let model: Model;
  let h2o: H2oModel;
  const text =
    "def greet(name):\n    return 'hello ' + name\n\nclass Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n";
  beforeAll(async () => {
    model = await loadModel(MOA_NANO, { backend: "cpu", slots: 2, maxLength: 512 });
    h2o = new H2oModel(model);
  });
  afterAll(() => model.dispose());

  it("equals the dense model when the budget covers every token", () => {
    const prompt = model.encode(text.repeat(3));
    const dense = model.logits([...prompt, 17, 42]);
    const vocab = model.config.vocabSize;
    const seq = h2o.sequence(h2oBudget(1, prompt.length + 8));
    const rows: Float32Array[] = [];
    h2o.prefill(seq, prompt, (_, logits) => rows.push(logits.slice()));
    rows.push(h2o.decode([seq], [17]));
    rows.push(h2o.decode([seq], [42]));
    rows.forEach((row, p) => {
      const expected = dense.subarray(p * vocab, (p + 1) * vocab);
      let worst = 0;
      for (let i = 0; i < vocab; i++) worst = Math.max(worst, Math.abs(row[i]! - expected[i]!));
      expect(worst).toBeLessThan(2e-4);
      expect(argmax(row)).toBe(argmax(expected));
    });
    // Every row's attention sums to 1 per query head: the scores of a KV head add up to rows × group.
    const group = model.config.heads / model.config.kvHeads;
    for (const layer of seq.layers) {
      for (const cache of layer) {
        expect(cache.size).toBe(prompt.length + 2);
        const total = cache.scores.subarray(0, cache.size).reduce((s, x) => s + x, 0);
        expect(total).toBeCloseTo((prompt.length + 2) * group, 3);
      }
    }
  });

  it("generates the dense model's greedy tokens when nothing is evicted", async () => {
    const prompts = [model.encode(text), model.encode(text.repeat(2))];
    const { generateBatch } = await import("@moa/runtime");
    const it = generateBatch(model, prompts, { maxNewTokens: 12, temperature: 0, ignoreEos: true });
    let step = await it.next();
    while (!step.done) step = await it.next();
    const dense = step.value;
    const mine = h2oGenerate(
      h2o,
      prompts,
      prompts.map((p) => h2oBudget(1, p.length + 12)),
      { maxNewTokens: 12, stopTokens: [] },
    );
    expect(mine.map((g) => g.tokens)).toEqual(dense.map((g) => g.tokens));
  });

  it("holds exactly the budget after prefill and after every decode step, recent window included", () => {
    const prompt = model.encode(text.repeat(8)).slice(0, 200);
    const budget = h2oBudget(0.3, prompt.length);
    expect(budget.budget).toBe(60);
    const seq = h2o.sequence(budget);
    h2o.prefill(seq, prompt);
    const check = (length: number) => {
      for (const layer of seq.layers) {
        for (const cache of layer) {
          expect(cache.size).toBe(budget.budget);
          const positions = cache.sortedPositions();
          expect(new Set(positions).size).toBe(budget.budget);
          for (let p = length - budget.recent; p < length; p++) expect(positions).toContain(p);
          expect(positions[positions.length - 1]).toBe(length - 1);
        }
      }
    };
    check(prompt.length);
    let token = 5;
    for (let step = 1; step <= 6; step++) {
      const logits = h2o.decode([seq], [token]);
      token = argmax(logits);
      check(prompt.length + step);
    }
  });

  it("scores a window read token by token the same as a dense prefill of its first `budget` tokens and decode", () => {
    const window = [0, ...model.encode(text.repeat(3), { addSpecialTokens: false })].slice(0, 120);
    const budget = h2oBudget(0.5, window.length);
    const nll = (prefix: number): number[] => {
      const seq = h2o.sequence(budget);
      const out: number[] = [];
      h2o.prefill(seq, window.slice(0, prefix), (row, logits) =>
        out.push(negativeLogLikelihood(logits, window[row + 1]!)),
      );
      for (let p = prefix; p + 1 < window.length; p++) {
        out.push(negativeLogLikelihood(h2o.decode([seq], [window[p]!]), window[p + 1]!));
      }
      return out;
    };
    const fast = nll(budget.budget);
    const slow = nll(1);
    expect(fast).toHaveLength(window.length - 1);
    expect(slow).toHaveLength(window.length - 1);
    fast.forEach((x, i) => {
      expect(x).toBeCloseTo(slow[i]!, 3);
    });
  });

  it("equals the dense model on a GQA checkpoint (moa-tiny: 6 query heads on 2 KV heads)", async () => {
    const tiny = await loadModel(MOA_TINY, { backend: "cpu", maxLength: 256 });
    try {
      const prompt = tiny.encode(text.repeat(2));
      const dense = tiny.logits([...prompt, 17]);
      const vocab = tiny.config.vocabSize;
      const gqa = new H2oModel(tiny);
      const seq = gqa.sequence(h2oBudget(1, prompt.length + 1));
      gqa.prefill(seq, prompt);
      const row = gqa.decode([seq], [17]);
      const expected = dense.subarray(prompt.length * vocab, (prompt.length + 1) * vocab);
      let worst = 0;
      for (let i = 0; i < vocab; i++) worst = Math.max(worst, Math.abs(row[i]! - expected[i]!));
      expect(worst).toBeLessThan(2e-4);
      // Each KV head's scores sum over its 3 query heads: rows × 3.
      expect(
        seq.layers[0]![1]!.scores.subarray(0, seq.layers[0]![1]!.size).reduce((s, x) => s + x, 0),
      ).toBeCloseTo((prompt.length + 1) * 3, 3);
    } finally {
      tiny.dispose();
    }
  });

  it("refuses a model loaded with a MoA plan", async () => {
    const { uniformPlan } = await import("@moa/core");
    const planned = await loadModel(MOA_NANO, {
      backend: "cpu",
      maxLength: 256,
      plan: uniformPlan(model.config.shape(), 0.5, [256]),
    });
    try {
      expect(() => new H2oModel(planned)).toThrow(/plan/);
    } finally {
      planned.dispose();
    }
  });
});
