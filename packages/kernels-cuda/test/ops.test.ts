import { describe, expect, it } from "vitest";
import {
  backendUnderTest,
  maxAbsDiff,
  randomBf16,
  randomF16,
  randomF32,
  randomInt,
  rmsNormRef,
  matmulRef,
  ropeRef,
  rng,
  softmaxRef,
  widen,
} from "./reference.js";

const backend = backendUnderTest();
type WeightType = "f32" | "bf16" | "f16";

function randomWeights(random: ReturnType<typeof rng>, dtype: WeightType, count: number) {
  return dtype === "f32"
    ? randomF32(random, count)
    : dtype === "bf16"
      ? randomBf16(random, count)
      : randomF16(random, count);
}

function host(t: Parameters<typeof backend.toHost>[0]): Float32Array {
  return backend.toHost(t) as Float32Array;
}

describe("matmul", () => {
  const shapes: [number, number, number][] = [
    [1, 1, 1],
    [1, 100, 257],
    [2, 17, 64],
    [3, 65, 7],
    [4, 16, 16],
    [5, 33, 300],
    [37, 64, 129],
    [130, 100, 520],
  ];
  for (const wType of ["f32", "bf16", "f16"] as const) {
    for (const [m, n, k] of shapes) {
      it(`equals x·wᵀ (+bias) for ${wType} weights, m=${m} n=${n} k=${k}`, () => {
        const random = rng(m * 7919 + n * 31 + k);
        const x = randomF32(random, m * k);
        const w = randomWeights(random, wType, n * k);
        const bias = randomWeights(random, wType, n);
        const xt = backend.fromHost("f32", [m, k], x);
        const wt = backend.fromHost(wType, [n, k], w);
        const bt = backend.fromHost(wType, [n], bias);
        for (const withBias of [false, true]) {
          const out = backend.empty("f32", [m, n]);
          backend.matmul(out, xt, wt, withBias ? bt : undefined);
          const ref = matmulRef(x, widen(wType, w), withBias ? widen(wType, bias) : undefined, m, n, k);
          const got = host(out);
          for (let i = 0; i < m * n; i++) {
            expect(Math.abs(got[i]! - ref.out[i]!)).toBeLessThanOrEqual(
              1e-6 * (k + 1) * ref.magnitude[i]! + 1e-7,
            );
          }
        }
      });
    }
  }

  it("flattens the leading dims of x and out ([2, 3, k] · wᵀ → [2, 3, n]) with f32 bias on bf16 weights", () => {
    const random = rng(5);
    const x = randomF32(random, 2 * 3 * 40);
    const w = randomBf16(random, 24 * 40);
    const bias = randomF32(random, 24);
    const out = backend.empty("f32", [2, 3, 24]);
    backend.matmul(
      out,
      backend.fromHost("f32", [2, 3, 40], x),
      backend.fromHost("bf16", [24, 40], w),
      backend.fromHost("f32", [24], bias),
    );
    const ref = matmulRef(x, widen("bf16", w), widen("f32", bias), 6, 24, 40);
    expect(maxAbsDiff(host(out), ref.out)).toBeLessThan(1e-4);
  });
});

describe("embedding", () => {
  for (const dtype of ["f32", "bf16", "f16"] as const) {
    it(`gathers rows of a ${dtype} table as f32`, () => {
      const random = rng(11);
      const vocab = 50;
      const dim = 37;
      const table = randomWeights(random, dtype, vocab * dim);
      const ids = Int32Array.from({ length: 23 }, () => randomInt(random, 0, vocab));
      ids[0] = 0;
      ids[1] = vocab - 1;
      const out = backend.empty("f32", [ids.length, dim]);
      backend.embedding(
        out,
        backend.fromHost("i32", [ids.length], ids),
        backend.fromHost(dtype, [vocab, dim], table),
      );
      const wide = widen(dtype, table);
      const expected = new Float64Array(ids.length * dim);
      ids.forEach((id, t) => {
        expected.set(wide.subarray(id * dim, (id + 1) * dim), t * dim);
      });
      expect(maxAbsDiff(host(out), expected)).toBe(0);
    });
  }
});

describe("rmsNorm", () => {
  for (const dtype of ["f32", "bf16", "f16"] as const) {
    for (const dim of [1, 7, 64, 300]) {
      it(`normalises rows with a ${dtype} weight, dim=${dim}`, () => {
        const random = rng(dim * 13);
        const rows = 9;
        const x = randomF32(random, rows * dim, -3, 3);
        const weight = randomWeights(random, dtype, dim);
        const out = backend.empty("f32", [rows, dim]);
        backend.rmsNorm(
          out,
          backend.fromHost("f32", [rows, dim], x),
          backend.fromHost(dtype, [dim], weight),
          1e-5,
        );
        expect(maxAbsDiff(host(out), rmsNormRef(x, widen(dtype, weight), dim, 1e-5))).toBeLessThan(2e-5);
      });
    }
  }

  it("works in place (out = x)", () => {
    const random = rng(3);
    const x = randomF32(random, 4 * 10);
    const weight = randomF32(random, 10);
    const t = backend.fromHost("f32", [4, 10], x);
    backend.rmsNorm(t, t, backend.fromHost("f32", [10], weight), 1e-6);
    expect(maxAbsDiff(host(t), rmsNormRef(x, widen("f32", weight), 10, 1e-6))).toBeLessThan(1e-5);
  });
});

describe("rope", () => {
  const cases = [
    { heads: 3, headDim: 16, half: 8, scale: 1 },
    { heads: 2, headDim: 64, half: 32, scale: 1.25 },
    { heads: 1, headDim: 10, half: 3, scale: 1 }, // partial rotary: dims ≥ 6 pass through
  ];
  for (const { heads, headDim, half, scale } of cases) {
    it(`rotates pairs (i, i + ${half}) of ${heads}×${headDim} heads, attentionScale ${scale}`, () => {
      const random = rng(headDim + half);
      const tokens = 13;
      const x = randomF32(random, tokens * heads * headDim);
      const positions = Int32Array.from({ length: tokens }, (_, t) => (t * 997) % 5000);
      const invFreq = Float32Array.from({ length: half }, (_, i) => 1 / 10000 ** ((2 * i) / (2 * half)));
      const t = backend.fromHost("f32", [tokens, heads, headDim], x);
      backend.rope(
        t,
        backend.fromHost("i32", [tokens], positions),
        backend.fromHost("f32", [half], invFreq),
        scale,
      );
      expect(maxAbsDiff(host(t), ropeRef(x, positions, invFreq, heads, headDim, scale))).toBeLessThan(1e-5);
    });
  }
});

describe("elementwise", () => {
  it("siluMul equals gate·sigmoid(gate)·up", () => {
    const random = rng(21);
    const count = 1001;
    const gate = randomF32(random, count, -8, 8);
    const up = randomF32(random, count);
    const out = backend.empty("f32", [7, 143]);
    backend.siluMul(out, backend.fromHost("f32", [7, 143], gate), backend.fromHost("f32", [7, 143], up));
    const expected = Float64Array.from(gate, (g, i) => (g / (1 + Math.exp(-g))) * up[i]!);
    expect(maxAbsDiff(host(out), expected)).toBeLessThan(1e-5);
  });

  it("add sums elementwise and may write into a", () => {
    const random = rng(22);
    const a = randomF32(random, 3 * 333);
    const b = randomF32(random, 3 * 333);
    const at = backend.fromHost("f32", [3, 333], a);
    backend.add(at, at, backend.fromHost("f32", [3, 333], b));
    expect(
      maxAbsDiff(
        host(at),
        Float64Array.from(a, (value, i) => value + b[i]!),
      ),
    ).toBeLessThan(1e-6);
  });

  it("softmax is row-wise, max-subtracted (stable for large scores)", () => {
    const random = rng(23);
    for (const cols of [1, 5, 64, 1000]) {
      const x = randomF32(random, 6 * cols, -50, 120);
      const out = backend.empty("f32", [2, 3, cols]);
      backend.softmax(out, backend.fromHost("f32", [2, 3, cols], x));
      expect(maxAbsDiff(host(out), softmaxRef(x, cols))).toBeLessThan(1e-6);
    }
  });
});
