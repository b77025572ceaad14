// The backward ops for profiling (matmul input gradient, RMSNorm, SiLU·mul, RoPE at negated positions,
// cross-entropy) against independent double-precision references: brute-force products, central finite
// differences of the forward functions, and the adjoint identity ⟨R x, y⟩ = ⟨x, Rᵀ y⟩.
import { describe, expect, it } from "vitest";
import {
  backendUnderTest,
  randomBf16,
  randomF16,
  randomF32,
  randomInt,
  rng,
  ropeRef,
  widen,
} from "./reference.js";

const backend = backendUnderTest();
type WeightType = "f32" | "bf16" | "f16";

function host(t: Parameters<typeof backend.toHost>[0]): Float32Array {
  return backend.toHost(t) as Float32Array;
}

function randomWeights(random: ReturnType<typeof rng>, dtype: WeightType, count: number) {
  return dtype === "f32"
    ? randomF32(random, count)
    : dtype === "bf16"
      ? randomBf16(random, count)
      : randomF16(random, count);
}

/** Central finite differences of a scalar function of x (double precision), one coordinate at a time. */
function finiteDifferences(f: (x: Float64Array) => number, x: Float64Array, h = 1e-5): Float64Array {
  const grad = new Float64Array(x.length);
  const probe = Float64Array.from(x);
  for (let i = 0; i < x.length; i++) {
    probe[i] = x[i]! + h;
    const up = f(probe);
    probe[i] = x[i]! - h;
    const down = f(probe);
    probe[i] = x[i]!;
    grad[i] = (up - down) / (2 * h);
  }
  return grad;
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += a[i]! * b[i]!;
  return sum;
}

function worstRelative(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let scale = 0;
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]!));
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!) / scale);
  return worst;
}

describe("matmulBackward", () => {
  const shapes: [number, number, number][] = [
    [1, 1, 1],
    [1, 300, 17],
    [3, 65, 7],
    [9, 16, 64],
    [37, 257, 130],
    [70, 520, 33],
  ];
  for (const wType of ["f32", "bf16", "f16"] as const) {
    for (const [m, n, k] of shapes) {
      it(`dx = dy·w (and dx += dy·w) for ${wType} w [${n}, ${k}], ${m} rows`, () => {
        const random = rng(m * 131 + n * 7 + k);
        const dy = randomF32(random, m * n);
        const w = randomWeights(random, wType, n * k);
        const start = randomF32(random, m * k);
        const wide = widen(wType, w);
        const dyt = backend.fromHost("f32", [m, n], dy);
        const wt = backend.fromHost(wType, [n, k], w);
        for (const accumulate of [false, true]) {
          const dx = backend.fromHost("f32", [m, k], start);
          backend.matmulBackward(dx, dyt, wt, accumulate);
          const got = host(dx);
          for (let r = 0; r < m; r++) {
            for (let c = 0; c < k; c++) {
              let sum = accumulate ? start[r * k + c]! : 0;
              let magnitude = Math.abs(sum);
              for (let j = 0; j < n; j++) {
                const product = dy[r * n + j]! * wide[j * k + c]!;
                sum += product;
                magnitude += Math.abs(product);
              }
              expect(Math.abs(got[r * k + c]! - sum)).toBeLessThanOrEqual(1e-6 * (n + 1) * magnitude + 1e-7);
            }
          }
        }
      });
    }
  }

  it("is the adjoint of matmul: ⟨x·wᵀ, dy⟩ = ⟨x, dy·w⟩ on a 3-d activation", () => {
    const random = rng(5);
    const [rows, n, k] = [2 * 3, 40, 24];
    const x = randomF32(random, rows * k);
    const dy = randomF32(random, rows * n);
    const w = randomBf16(random, n * k);
    const wt = backend.fromHost("bf16", [n, k], w);
    const y = backend.empty("f32", [2, 3, n]);
    backend.matmul(y, backend.fromHost("f32", [2, 3, k], x), wt);
    const dx = backend.empty("f32", [2, 3, k]);
    backend.matmulBackward(dx, backend.fromHost("f32", [2, 3, n], dy), wt);
    const left = dot(host(y), dy);
    expect(Math.abs(left - dot(x, host(dx)))).toBeLessThan(1e-5 * Math.abs(left) + 1e-4);
  });
});

describe("rmsNormBackward", () => {
  for (const [rows, dim, wType] of [
    [1, 2, "f32"],
    [3, 7, "bf16"],
    [5, 64, "f32"],
    [4, 130, "f16"],
  ] as const) {
    it(`equals finite differences of RMSNorm (${rows}×${dim}, ${wType} weight)`, () => {
      const random = rng(rows * 100 + dim);
      const x = randomF32(random, rows * dim, -2, 2);
      const dy = randomF32(random, rows * dim);
      const weight = randomWeights(random, wType, dim);
      const wide = widen(wType, weight);
      const eps = 1e-5;
      // L(x) = Σ dy ⊙ rmsNorm(x), in double: dL/dx is the input gradient.
      const loss = (xs: Float64Array): number => {
        let total = 0;
        for (let r = 0; r < rows; r++) {
          let squares = 0;
          for (let j = 0; j < dim; j++) squares += xs[r * dim + j]! ** 2;
          const inv = 1 / Math.sqrt(squares / dim + eps);
          for (let j = 0; j < dim; j++) total += dy[r * dim + j]! * xs[r * dim + j]! * inv * wide[j]!;
        }
        return total;
      };
      const expected = finiteDifferences(loss, Float64Array.from(x));
      const dx = backend.empty("f32", [rows, dim]);
      backend.rmsNormBackward(
        dx,
        backend.fromHost("f32", [rows, dim], dy),
        backend.fromHost("f32", [rows, dim], x),
        backend.fromHost(wType, [dim], weight),
        eps,
      );
      expect(worstRelative(host(dx), expected)).toBeLessThan(1e-5);
    });
  }

  it("with accumulate adds the gradient to dx: the same bits as the gradient and a separate add", () => {
    const random = rng(77);
    const [rows, dim] = [6, 96];
    const x = backend.fromHost("f32", [rows, dim], randomF32(random, rows * dim, -2, 2));
    const dy = backend.fromHost("f32", [rows, dim], randomF32(random, rows * dim));
    const weight = backend.fromHost("bf16", [dim], randomWeights(random, "bf16", dim));
    const start = randomF32(random, rows * dim, -3, 3);
    const gradient = backend.empty("f32", [rows, dim]);
    backend.rmsNormBackward(gradient, dy, x, weight, 1e-6);
    const separate = backend.fromHost("f32", [rows, dim], start);
    backend.add(separate, separate, gradient);
    const fused = backend.fromHost("f32", [rows, dim], start);
    backend.rmsNormBackward(fused, dy, x, weight, 1e-6, true);
    expect(host(fused)).toEqual(host(separate));
    expect(host(fused)).not.toEqual(host(gradient));
  });
});

describe("siluMulBackward", () => {
  it("equals finite differences of silu(gate)·up, including large |gate|", () => {
    const random = rng(11);
    const count = 1000;
    const gate = randomF32(random, count, -8, 8);
    gate[0] = -30;
    gate[1] = 30;
    gate[2] = 0;
    const up = randomF32(random, count, -2, 2);
    const dOut = randomF32(random, count);
    const silu = (g: number) => g / (1 + Math.exp(-g));
    const dGateRef = finiteDifferences((g) => {
      let total = 0;
      for (let i = 0; i < count; i++) total += dOut[i]! * silu(g[i]!) * up[i]!;
      return total;
    }, Float64Array.from(gate));
    const dUpRef = Float64Array.from({ length: count }, (_, i) => dOut[i]! * silu(gate[i]!));
    const dGate = backend.empty("f32", [10, 100]);
    const dUp = backend.empty("f32", [10, 100]);
    backend.siluMulBackward(
      dGate,
      dUp,
      backend.fromHost("f32", [10, 100], dOut),
      backend.fromHost("f32", [10, 100], gate),
      backend.fromHost("f32", [10, 100], up),
    );
    expect(worstRelative(host(dGate), dGateRef)).toBeLessThan(1e-5);
    expect(worstRelative(host(dUp), dUpRef)).toBeLessThan(1e-6);
  });
});

describe("rope at negated positions (the RoPE backward)", () => {
  it("is the transpose of rope: ⟨rope(x, p), y⟩ = ⟨x, rope(y, −p)⟩, with an attention scale", () => {
    const random = rng(21);
    const [tokens, heads, headDim] = [37, 3, 16];
    const x = randomF32(random, tokens * heads * headDim);
    const y = randomF32(random, tokens * heads * headDim);
    const positions = Int32Array.from({ length: tokens }, () => randomInt(random, 0, 9000));
    const invFreq = Float32Array.from({ length: headDim / 2 }, (_, i) => 1 / 10000 ** ((2 * i) / headDim));
    const scale = 1.3;
    const rotated = ropeRef(x, positions, invFreq, heads, headDim, scale);
    const yt = backend.fromHost("f32", [tokens, heads, headDim], y);
    const negated = backend.fromHost(
      "i32",
      [tokens],
      positions.map((p) => -p),
    );
    backend.rope(yt, negated, backend.fromHost("f32", [headDim / 2], invFreq), scale);
    const left = dot(rotated, y);
    expect(Math.abs(left - dot(x, host(yt)))).toBeLessThan(1e-5 * Math.abs(left) + 1e-4);
  });

  it("undoes rope exactly up to rounding, partial rotary included", () => {
    const random = rng(22);
    const [tokens, heads, headDim] = [20, 2, 12];
    const x = randomF32(random, tokens * heads * headDim);
    const positions = Int32Array.from({ length: tokens }, (_, t) => t * 301);
    const invFreq = backend.fromHost("f32", [4], Float32Array.of(1, 0.3, 0.01, 0.0001));
    const xt = backend.fromHost("f32", [tokens, heads, headDim], x);
    backend.rope(xt, backend.fromHost("i32", [tokens], positions), invFreq, 1);
    backend.rope(
      xt,
      backend.fromHost(
        "i32",
        [tokens],
        positions.map((p) => -p),
      ),
      invFreq,
      1,
    );
    const back = host(xt);
    for (let i = 0; i < x.length; i++) expect(Math.abs(back[i]! - x[i]!)).toBeLessThan(1e-6);
  });
});

describe("crossEntropy", () => {
  it("losses equal log-softmax in double and dLogits = (fp32 softmax − onehot)·scale, for large and shifted logits", () => {
    const random = rng(31);
    const [rows, vocab] = [5, 1000];
    const logits = randomF32(random, rows * vocab, -10, 10);
    for (let j = 0; j < vocab; j++) logits[2 * vocab + j]! += 500; // a shifted row (max subtraction)
    logits[3 * vocab + 7] = 80; // a row dominated by one token
    const targets = Int32Array.of(0, 999, 17, 7, 123);
    const scale = 1 / rows;
    const losses = backend.empty("f32", [rows]);
    const dLogits = backend.empty("f32", [rows, vocab]);
    backend.crossEntropy(
      losses,
      dLogits,
      backend.fromHost("f32", [rows, vocab], logits),
      backend.fromHost("i32", [rows], targets),
      scale,
    );
    const gotLosses = host(losses);
    const gotGrad = host(dLogits);
    for (let r = 0; r < rows; r++) {
      const row = logits.subarray(r * vocab, (r + 1) * vocab);
      const max = Math.max(...row);
      let sum = 0;
      for (const value of row) sum += Math.exp(value - max);
      const logSum = Math.log(sum) + max;
      const loss = logSum - row[targets[r]!]!;
      expect(Math.abs(gotLosses[r]! - loss)).toBeLessThan(1e-6 * Math.max(1, loss));
      for (let j = 0; j < vocab; j++) {
        const want = (Math.fround(Math.exp(row[j]! - logSum)) - (j === targets[r] ? 1 : 0)) * scale;
        expect(Math.abs(gotGrad[r * vocab + j]! - want)).toBeLessThanOrEqual(1e-7 * Math.abs(want) + 1e-30);
      }
    }
  });

  it("a near-certain target gets (fp32(p) − 1)·scale, the gradient fp32 autograd computes", () => {
    // p = 1 − 2.1e-5: fp32 rounding of p moves 1 − p by about 5e-4 relative.
    const logits = Float32Array.of(0, -11.5, -12, -13);
    const losses = backend.empty("f32", [1]);
    const dLogits = backend.empty("f32", [1, 4]);
    backend.crossEntropy(
      losses,
      dLogits,
      backend.fromHost("f32", [1, 4], logits),
      backend.fromHost("i32", [1], Int32Array.of(0)),
      0.5,
    );
    let sum = 0;
    for (const value of logits) sum += Math.exp(value);
    expect(host(dLogits)[0]).toBe(Math.fround((Math.fround(1 / sum) - 1) * 0.5));
    expect(Math.abs(host(losses)[0]! - Math.log(sum))).toBeLessThan(1e-6 * Math.log(sum));
  });

  it("refuses a target outside the vocabulary", () => {
    const logits = backend.empty("f32", [2, 4]);
    expect(() =>
      backend.crossEntropy(
        backend.empty("f32", [2]),
        backend.empty("f32", [2, 4]),
        logits,
        backend.fromHost("i32", [2], Int32Array.of(0, 4)),
        1,
      ),
    ).toThrow(/crossEntropy: targets\[1\] = 4 is outside the vocabulary/);
  });
});

describe("argument checks of the backward ops", () => {
  it("name the op and the shapes", () => {
    const w = backend.empty("bf16", [4, 6]);
    expect(() =>
      backend.matmulBackward(backend.empty("f32", [3, 6]), backend.empty("f32", [3, 5]), w),
    ).toThrow(
      /matmulBackward: dy's last dim \(5\) must equal w's first dim \(4\) — dx f32\[3, 6\], dy f32\[3, 5\], w bf16\[4, 6\]/,
    );
    expect(() =>
      backend.rmsNormBackward(
        backend.empty("f32", [2, 3]),
        backend.empty("f32", [2, 4]),
        backend.empty("f32", [2, 3]),
        backend.empty("f32", [3]),
        1e-5,
      ),
    ).toThrow(/rmsNormBackward: dy and x must have the same shape/);
    const gate = backend.empty("f32", [8]);
    expect(() =>
      backend.siluMulBackward(
        gate,
        backend.empty("f32", [8]),
        backend.empty("f32", [8]),
        gate,
        backend.empty("f32", [8]),
      ),
    ).toThrow(/siluMulBackward: dGate must not overlap gate/);
    expect(() =>
      backend.crossEntropy(
        backend.empty("f32", [3]),
        backend.empty("f32", [2, 4]),
        backend.empty("f32", [2, 4]),
        backend.empty("i32", [2]),
        1,
      ),
    ).toThrow(/crossEntropy: losses must be \[2\]/);
  });

  it("reshape keeps the storage and refuses another element count", () => {
    const t = backend.fromHost(
      "f32",
      [2, 6],
      Float32Array.from({ length: 12 }, (_, i) => i),
    );
    const view = backend.reshape(t, [2, 3, 2]);
    expect(view.shape).toEqual([2, 3, 2]);
    backend.write(view, Float32Array.of(-1), 11);
    expect(host(t)[11]).toBe(-1);
    expect(() => backend.reshape(t, [5])).toThrow(/reshape: \[5\] holds 5 elements, the tensor 12/);
    backend.free(view);
    expect(host(t)[0]).toBe(0);
  });
});
