import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { backendUnderTest, randomF32, rng } from "./reference.js";

const backend = backendUnderTest();

/** The definition in float64: Σ over a KV head's query heads and the rows i ≥ t of softmax_j(scale·q_i·k_j)[t]. */
function columnSumsRef(
  q: Float32Array,
  k: Float32Array,
  lengths: number[],
  hq: number,
  hkv: number,
  d: number,
  scale: number,
): Float64Array {
  const tokens = lengths.reduce((a, b) => a + b, 0);
  const out = new Float64Array(tokens * hkv);
  let start = 0;
  for (const n of lengths) {
    for (let h = 0; h < hq; h++) {
      const g = Math.floor(h / (hq / hkv));
      for (let i = 0; i < n; i++) {
        const x = new Float64Array(i + 1);
        for (let j = 0; j <= i; j++) {
          let dot = 0;
          for (let e = 0; e < d; e++)
            dot += q[((start + i) * hq + h) * d + e]! * k[((start + j) * hkv + g) * d + e]!;
          x[j] = dot * scale;
        }
        const max = Math.max(...x);
        let sum = 0;
        for (let j = 0; j <= i; j++) sum += Math.exp(x[j]! - max);
        for (let j = 0; j <= i; j++) out[(start + j) * hkv + g]! += Math.exp(x[j]! - max) / sum;
      }
    }
    start += n;
  }
  return out;
}

function run(lengths: number[], hq: number, hkv: number, d: number, seed: number, spread = 2) {
  const random = rng(seed);
  const tokens = lengths.reduce((a, b) => a + b, 0);
  const cuSeqlens = Int32Array.from([
    0,
    ...lengths.map((_, i) => lengths.slice(0, i + 1).reduce((a, b) => a + b)),
  ]);
  const q = randomF32(random, tokens * hq * d, -spread, spread);
  const k = randomF32(random, tokens * hkv * d, -spread, spread);
  const scale = 1 / Math.sqrt(d);
  const out = backend.empty("f32", [tokens, hkv]);
  backend.attentionColumnSums(
    out,
    backend.fromHost("f32", [tokens, hq, d], q),
    backend.fromHost("f32", [tokens, hkv, d], k),
    cuSeqlens,
    scale,
  );
  return {
    actual: backend.toHost(out) as Float32Array,
    expected: columnSumsRef(q, k, lengths, hq, hkv, d, scale),
  };
}

describe("attentionColumnSums (H2O's heavy-hitter scores)", () => {
  it("equals the float64 definition on packed sequences with GQA, across the 256-row blocks", () => {
    const { actual, expected } = run([300, 1, 77, 0, 520], 4, 2, 24, 1);
    for (let i = 0; i < expected.length; i++) {
      expect(Math.abs(actual[i]! - expected[i]!)).toBeLessThanOrEqual(1e-5 * Math.max(1, expected[i]!));
    }
  });

  it("each sequence's sums add up to its rows × the group's query heads (every softmax row sums to 1)", () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 90 }), { minLength: 1, maxLength: 3 }),
        fc.constantFrom([1, 1], [2, 1], [4, 2], [3, 3]),
        fc.integer({ min: 1, max: 40 }),
        fc.integer({ min: 0, max: 1000 }),
        (lengths, [hq, hkv], d, seed) => {
          const { actual, expected } = run(lengths, hq!, hkv!, d, seed, 4);
          let start = 0;
          for (const n of lengths) {
            for (let g = 0; g < hkv!; g++) {
              let total = 0;
              for (let t = start; t < start + n; t++) total += actual[t * hkv! + g]!;
              expect(total).toBeCloseTo((n * hq!) / hkv!, 3);
              // And every column against the float64 definition.
              for (let t = start; t < start + n; t++) {
                expect(Math.abs(actual[t * hkv! + g]! - expected[t * hkv! + g]!)).toBeLessThan(
                  1e-4 * (n + 1),
                );
              }
            }
            start += n;
          }
        },
      ),
      { numRuns: 25 },
    );
  });

  it("names the op and the problem for bad arguments", () => {
    const q = backend.empty("f32", [8, 4, 16]);
    const k = backend.empty("f32", [8, 2, 16]);
    expect(() =>
      backend.attentionColumnSums(backend.empty("f32", [8, 4]), q, k, Int32Array.of(0, 8), 0.25),
    ).toThrow(/attentionColumnSums.*out/);
    expect(() =>
      backend.attentionColumnSums(backend.empty("f32", [8, 2]), q, k, Int32Array.of(0, 7), 0.25),
    ).toThrow(/attentionColumnSums.*cuSeqlens/);
    expect(() =>
      backend.attentionColumnSums(
        backend.empty("f32", [8, 3]),
        q,
        backend.empty("f32", [8, 3, 16]),
        Int32Array.of(0, 8),
        0.25,
      ),
    ).toThrow(/attentionColumnSums.*multiple/);
  });
});
