import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { argmax, Sampler, Xoshiro128 } from "../src/sampling.js";

function softmax(logits: number[], temperature: number): number[] {
  const max = Math.max(...logits);
  const e = logits.map((l) => Math.exp((l - max) / temperature));
  const total = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / total);
}

function histogram(sampler: Sampler, logits: Float32Array, draws: number): number[] {
  const counts = new Array<number>(logits.length).fill(0);
  for (let i = 0; i < draws; i++) counts[sampler.sample(logits)]!++;
  return counts.map((c) => c / draws);
}

describe("sampling", () => {
  it("greedy picks the argmax, the first index on ties (torch.argmax)", () => {
    const sampler = new Sampler();
    expect(sampler.sample(new Float32Array([0.1, 3, -1, 3]))).toBe(1);
    fc.assert(
      fc.property(
        fc.array(fc.float({ noNaN: true, min: -100, max: 100 }), { minLength: 1, maxLength: 50 }),
        (xs) => {
          const best = sampler.sample(new Float32Array(xs));
          const values = Float32Array.from(xs);
          expect(values.every((v) => v <= values[best]!)).toBe(true);
          expect(values.indexOf(values[best]!)).toBe(best);
        },
      ),
    );
    expect(argmax(new Float32Array([-5, -2, -2]))).toBe(1);
  });

  it("a seed reproduces the draws; different seeds give different streams", () => {
    const logits = Float32Array.from({ length: 64 }, (_, i) => Math.sin(i));
    const run = (seed: number) => {
      const s = new Sampler({ temperature: 1, seed });
      return Array.from({ length: 50 }, () => s.sample(logits));
    };
    expect(run(42)).toEqual(run(42));
    expect(run(42)).not.toEqual(run(43));
  });

  it("xoshiro128** floats are uniform in [0, 1)", () => {
    const rng = new Xoshiro128(1);
    const bins = new Array<number>(10).fill(0);
    let outside = 0;
    for (let i = 0; i < 100_000; i++) {
      const u = rng.nextFloat();
      if (!(u >= 0 && u < 1)) outside++;
      else bins[Math.floor(u * 10)]!++;
    }
    expect(outside).toBe(0);
    for (const b of bins) expect(Math.abs(b / 100_000 - 0.1)).toBeLessThan(0.005);
  });

  it("temperature sampling follows softmax(logits / T)", () => {
    const logits = [1, 2, 0.5, -1, 1.5];
    for (const temperature of [0.7, 1.3]) {
      const freq = histogram(new Sampler({ temperature, seed: 5 }), Float32Array.from(logits), 40_000);
      const expected = softmax(logits, temperature);
      for (const [i, p] of expected.entries()) expect(Math.abs(freq[i]! - p)).toBeLessThan(0.01);
    }
  });

  it("top-k draws only from the k largest (ties with the k-th kept), renormalised", () => {
    const logits = Float32Array.from([3, 1, 2, 2, 0]);
    const freq = histogram(new Sampler({ temperature: 1, topK: 3, seed: 9 }), logits, 30_000);
    expect(freq[1]).toBe(0);
    expect(freq[4]).toBe(0);
    const p = softmax([3, 2, 2], 1);
    expect(Math.abs(freq[0]! - p[0]!)).toBeLessThan(0.01);
    const tied = histogram(new Sampler({ temperature: 1, topK: 2, seed: 9 }), logits, 5_000);
    expect(tied[2]! > 0 && tied[3]! > 0).toBe(true);
    expect(new Sampler({ temperature: 5, topK: 1 }).sample(Float32Array.from([0, 9, 1]))).toBe(1);
  });

  it("top-p keeps the smallest prefix whose mass reaches p", () => {
    // probabilities 0.5, 0.3, 0.2 (after softmax of logs)
    const logits = Float32Array.from([Math.log(0.5), Math.log(0.3), Math.log(0.2)]);
    const freq = histogram(new Sampler({ temperature: 1, topP: 0.75, seed: 3 }), logits, 30_000);
    expect(freq[2]).toBe(0);
    expect(Math.abs(freq[0]! - 0.5 / 0.8)).toBeLessThan(0.01);
    const single = histogram(new Sampler({ temperature: 1, topP: 0.4, seed: 3 }), logits, 1_000);
    expect(single[0]).toBe(1);
  });

  it("rejects invalid options", () => {
    expect(() => new Sampler({ temperature: -1 })).toThrow(/temperature/);
    expect(() => new Sampler({ topP: 0 })).toThrow(/topP/);
    expect(() => new Sampler({ topK: 1.5 })).toThrow(/topK/);
    expect(() => new Sampler({ seed: 0.5 })).toThrow(/seed/);
  });
});
