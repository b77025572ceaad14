/**
 * Parity with Hugging Face transformers (fixtures/README.md: reference-vectors.json): NLL at every position and
 * full logit rows within 1e-4, argmax everywhere and the 24-token greedy continuation identical.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadModel, type Model } from "../src/load.js";
import { Sampler } from "../src/sampling.js";
import { fixtureDir, MODEL_NAMES, referenceVectors } from "./fixtures.js";

const TOLERANCE = 1e-4;

/** −log softmax(row)[target], in float64. */
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

describe.each(MODEL_NAMES)("%s matches transformers", (name) => {
  const vectors = referenceVectors().models[name];
  let model: Model;
  let logits: Float32Array;
  let vocab: number;
  const row = (p: number) => logits.subarray(p * vocab, (p + 1) * vocab);

  let slot: number;

  beforeAll(async () => {
    // Two slots: one keeps the prefill below for the greedy decode, Model.nll takes the other.
    model = await loadModel(fixtureDir(name), { backend: "cpu", slots: 2 });
    vocab = model.config.vocabSize;
    // One prefill serves every check: logits at all positions, and the cache the greedy decode continues from.
    slot = model.cache.allocateSlot();
    [logits] = model.transformer.prefill([{ slot, tokens: vectors.input_ids }], { logits: "all" }) as [
      Float32Array,
    ];
  });
  afterAll(() => model.dispose());

  it("NLL of every next token within 1e-4", () => {
    let worst = 0;
    for (let p = 0; p < vectors.nll.length; p++) {
      worst = Math.max(worst, Math.abs(nll(row(p), vectors.input_ids[p + 1]!) - vectors.nll[p]!));
    }
    expect(vectors.nll.length).toBe(vectors.input_ids.length - 1);
    expect(worst).toBeLessThan(TOLERANCE);
  });

  it("Model.nll (log-softmax on the backend, only the rows asked for) gives the same NLL within 1e-4", () => {
    const all = model.nll(vectors.input_ids);
    expect(all.length).toBe(vectors.nll.length);
    let worst = 0;
    for (let p = 0; p < all.length; p++) worst = Math.max(worst, Math.abs(all[p]! - vectors.nll[p]!));
    expect(worst).toBeLessThan(TOLERANCE);
    const from = vectors.input_ids.length - 5;
    const tail = model.nll(vectors.input_ids, { from });
    expect(Array.from(tail)).toEqual(Array.from(all.subarray(from)));
    expect(model.nll(vectors.input_ids, { from: vectors.input_ids.length - 1 }).length).toBe(0);
    expect(() => model.nll(vectors.input_ids, { from: -1 })).toThrow(/from = -1 must be an integer/);
  });

  it("the reference logit rows within 1e-4", () => {
    const positions = Object.keys(vectors.logits_at);
    expect(positions.length).toBeGreaterThan(0);
    for (const key of positions) {
      const expected = vectors.logits_at[key]!;
      const actual = row(Number(key));
      let worst = 0;
      for (let i = 0; i < vocab; i++) worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!));
      expect(worst, `row ${key}`).toBeLessThan(TOLERANCE);
    }
  });

  it("argmax identical at every position", () => {
    const argmax = vectors.input_ids.map((_, p) => argmaxOf(row(p)));
    expect(argmax).toEqual(vectors.argmax);
  });

  it("the 24-token greedy continuation identical (incremental decode from the prefilled cache)", () => {
    const sampler = new Sampler();
    const tokens = [sampler.sample(row(vectors.input_ids.length - 1))];
    while (tokens.length < vectors.greedy.length) {
      tokens.push(sampler.sample(model.transformer.decode(Int32Array.of(slot), [tokens.at(-1)!])));
    }
    expect(tokens).toEqual(vectors.greedy);
  });
});
