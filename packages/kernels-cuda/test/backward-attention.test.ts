// attentionBackward (and the softmax statistics of attentionPrefill it reads) against a brute-force reference in
// double precision that materialises P for every row: dq, dk, dv, and the MoA attention influence summed over
// 64×64 blocks from the explicit E formula (DESIGN.md: Attention influence).
import { describe, expect, it } from "vitest";
import type { Tensor } from "../src/index.js";
import { backendUnderTest, randomF32, rng } from "./reference.js";

const backend = backendUnderTest();
const BLOCK = 64;
const EPS = 2 ** -23; // fp32 machine epsilon

interface Case {
  lengths: number[];
  queryHeads: number;
  kvHeads: number;
  headDim: number;
  /** Influence blocks per side; default ceil(longest / 64). */
  blocks?: number;
}

interface Reference {
  out: Float64Array;
  max: Float64Array;
  sum: Float64Array;
  dq: Float64Array;
  dk: Float64Array;
  dv: Float64Array;
  influence: Float64Array;
}

function cuSeqlensOf(lengths: number[]): Int32Array {
  const cu = new Int32Array(lengths.length + 1);
  for (const [i, n] of lengths.entries()) cu[i + 1] = cu[i]! + n;
  return cu;
}

/** Every quantity from its definition, row by row, with the full probability row in hand. */
function attentionBackwardRef(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  dOut: Float32Array,
  cuSeqlens: Int32Array,
  c: Case,
  scale: number,
  blocks: number,
): Reference {
  const { queryHeads: hq, kvHeads: hkv, headDim: d } = c;
  const tokens = cuSeqlens[cuSeqlens.length - 1]!;
  const sequences = cuSeqlens.length - 1;
  const ref: Reference = {
    out: new Float64Array(tokens * hq * d),
    max: new Float64Array(tokens * hq),
    sum: new Float64Array(tokens * hq),
    dq: new Float64Array(tokens * hq * d),
    dk: new Float64Array(tokens * hkv * d),
    dv: new Float64Array(tokens * hkv * d),
    influence: new Float64Array(sequences * hq * blocks * blocks),
  };
  const qAt = (t: number, h: number, e: number) => q[(t * hq + h) * d + e]!;
  const dOAt = (t: number, h: number, e: number) => dOut[(t * hq + h) * d + e]!;
  const kAt = (t: number, g: number, e: number) => k[(t * hkv + g) * d + e]!;
  const vAt = (t: number, g: number, e: number) => v[(t * hkv + g) * d + e]!;
  for (let s = 0; s < sequences; s++) {
    const base = cuSeqlens[s]!;
    const n = cuSeqlens[s + 1]! - base;
    for (let h = 0; h < hq; h++) {
      const g = Math.floor((h * hkv) / hq);
      for (let i = 0; i < n; i++) {
        const row = base + i;
        const x = new Float64Array(i + 1);
        for (let j = 0; j <= i; j++) {
          let sum = 0;
          for (let e = 0; e < d; e++) sum += qAt(row, h, e) * kAt(base + j, g, e);
          x[j] = sum * scale;
        }
        const max = Math.max(...x);
        let total = 0;
        for (let j = 0; j <= i; j++) total += Math.exp(x[j]! - max);
        ref.max[row * hq + h] = max;
        ref.sum[row * hq + h] = total;
        const p = x.map((value) => Math.exp(value - max) / total);
        const gRow = new Float64Array(i + 1); // G_ij = dL/dA_ij = dOut_i · v_j
        for (let j = 0; j <= i; j++) {
          for (let e = 0; e < d; e++) {
            ref.out[(row * hq + h) * d + e]! += p[j]! * vAt(base + j, g, e);
            gRow[j]! += dOAt(row, h, e) * vAt(base + j, g, e);
          }
        }
        let sI = 0;
        for (let j = 0; j <= i; j++) sI += gRow[j]! * p[j]!;
        for (let j = 0; j <= i; j++) {
          const dS = p[j]! * (gRow[j]! - sI);
          for (let e = 0; e < d; e++) {
            ref.dq[(row * hq + h) * d + e]! += scale * dS * kAt(base + j, g, e);
            ref.dk[((base + j) * hkv + g) * d + e]! += scale * dS * qAt(row, h, e);
            ref.dv[((base + j) * hkv + g) * d + e]! += p[j]! * dOAt(row, h, e);
          }
          const E = i === 0 ? gRow[j]! * p[j]! : (-p[j]! * (gRow[j]! - sI)) / (1 - p[j]! + EPS);
          const block = ((s * hq + h) * blocks + Math.floor(i / BLOCK)) * blocks + Math.floor(j / BLOCK);
          ref.influence[block]! += Math.abs(E);
        }
      }
    }
  }
  return ref;
}

interface Run {
  ref: Reference;
  out: Float32Array;
  stats: Float32Array;
  dq: Float32Array;
  dk: Float32Array;
  dv: Float32Array;
  influence: Float32Array;
}

function run(c: Case, seed: number, initialInfluence?: Float32Array): Run {
  const random = rng(seed);
  const tokens = c.lengths.reduce((a, b) => a + b, 0);
  const cuSeqlens = cuSeqlensOf(c.lengths);
  const blocks = c.blocks ?? Math.ceil(Math.max(...c.lengths) / BLOCK);
  const { queryHeads: hq, kvHeads: hkv, headDim: d } = c;
  const q = randomF32(random, tokens * hq * d);
  const k = randomF32(random, tokens * hkv * d);
  const v = randomF32(random, tokens * hkv * d);
  const dOut = randomF32(random, tokens * hq * d);
  const scale = 1 / Math.sqrt(d);
  const qt = backend.fromHost("f32", [tokens, hq, d], q);
  const kt = backend.fromHost("f32", [tokens, hkv, d], k);
  const vt = backend.fromHost("f32", [tokens, hkv, d], v);
  const out = backend.empty("f32", [tokens, hq, d]);
  const stats = backend.empty("f32", [tokens, hq, 2]);
  backend.attentionPrefill(out, qt, kt, vt, cuSeqlens, scale, undefined, stats);
  const dq = backend.empty("f32", [tokens, hq, d]);
  const dk = backend.empty("f32", [tokens, hkv, d]);
  const dv = backend.empty("f32", [tokens, hkv, d]);
  const influenceShape = [c.lengths.length, hq, blocks, blocks];
  const influence: Tensor = initialInfluence
    ? backend.fromHost("f32", influenceShape, initialInfluence)
    : backend.empty("f32", influenceShape);
  backend.attentionBackward(
    dq,
    dk,
    dv,
    backend.fromHost("f32", [tokens, hq, d], dOut),
    qt,
    kt,
    vt,
    out,
    stats,
    cuSeqlens,
    scale,
    influence,
  );
  const host = (t: Tensor) => backend.toHost(t) as Float32Array;
  return {
    ref: attentionBackwardRef(q, k, v, dOut, cuSeqlens, c, scale, blocks),
    out: host(out),
    stats: host(stats),
    dq: host(dq),
    dk: host(dk),
    dv: host(dv),
    influence: host(influence),
  };
}

/** Largest |got − want| relative to the largest |want|. */
function relativeToMax(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let scale = 0;
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]!));
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
  return worst / scale;
}

/** Largest relative error entry by entry (entries that are 0 in the reference must be 0). */
function relativeEach(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    if (want[i] === 0) {
      if (got[i] !== 0) return Number.POSITIVE_INFINITY;
      continue;
    }
    worst = Math.max(worst, Math.abs(got[i]! - want[i]!) / Math.abs(want[i]!));
  }
  return worst;
}

function expectMatches(r: Run): void {
  expect(relativeToMax(r.out, r.ref.out)).toBeLessThan(1e-5);
  expect(relativeToMax(r.dq, r.ref.dq)).toBeLessThan(1e-5);
  expect(relativeToMax(r.dk, r.ref.dk)).toBeLessThan(1e-5);
  expect(relativeToMax(r.dv, r.ref.dv)).toBeLessThan(1e-5);
  expect(relativeEach(r.influence, r.ref.influence)).toBeLessThan(1e-4);
}

describe("attentionPrefill softmax statistics", () => {
  it("are each row's max scaled score and Σ e^(score − max), and leave the output unchanged", () => {
    const c: Case = { lengths: [1, 70, 129], queryHeads: 2, kvHeads: 1, headDim: 16 };
    const r = run(c, 1);
    const tokens = 200;
    for (let t = 0; t < tokens * 2; t++) {
      expect(Math.abs(r.stats[2 * t]! - r.ref.max[t]!)).toBeLessThan(1e-5);
      expect(Math.abs(r.stats[2 * t + 1]! / r.ref.sum[t]! - 1)).toBeLessThan(1e-5);
    }
    const random = rng(1);
    const q = randomF32(random, tokens * 2 * 16);
    const k = randomF32(random, tokens * 16);
    const v = randomF32(random, tokens * 16);
    const plain = backend.empty("f32", [tokens, 2, 16]);
    backend.attentionPrefill(
      plain,
      backend.fromHost("f32", [tokens, 2, 16], q),
      backend.fromHost("f32", [tokens, 1, 16], k),
      backend.fromHost("f32", [tokens, 1, 16], v),
      cuSeqlensOf(c.lengths),
      0.25,
    );
    expect(backend.toHost(plain)).toEqual(r.out);
  });
});

describe("attentionBackward", () => {
  it("MHA, one sequence shorter than a block: dq, dk, dv and the influence equal brute force", () => {
    expectMatches(run({ lengths: [50], queryHeads: 2, kvHeads: 2, headDim: 16 }, 2));
  });

  it("one sequence of several blocks, n not a multiple of 64, head dim not a multiple of 32", () => {
    expectMatches(run({ lengths: [200], queryHeads: 3, kvHeads: 3, headDim: 40 }, 3));
  });

  it("GQA: dk and dv sum over the query heads of each KV head", () => {
    expectMatches(run({ lengths: [150], queryHeads: 6, kvHeads: 2, headDim: 8 }, 4));
    expectMatches(run({ lengths: [70], queryHeads: 4, kvHeads: 1, headDim: 64 }, 5));
  });

  it("packed sequences of mixed lengths (1, 64, 65, 130, 7) each get their own causal blocks", () => {
    expectMatches(run({ lengths: [1, 64, 65, 130, 7], queryHeads: 2, kvHeads: 1, headDim: 16 }, 6));
  });

  it("adds into influence, and leaves blocks beyond a sequence and above the diagonal alone", () => {
    const c: Case = { lengths: [100, 30], queryHeads: 2, kvHeads: 2, headDim: 8, blocks: 3 };
    const initial = Float32Array.from({ length: 2 * 2 * 3 * 3 }, (_, i) => i + 0.5);
    const r = run(c, 7, initial);
    for (let i = 0; i < initial.length; i++) {
      const qb = Math.floor(i / 3) % 3;
      const kb = i % 3;
      const sequence = Math.floor(i / 18);
      const inside = kb <= qb && qb < Math.ceil(c.lengths[sequence]! / BLOCK);
      if (!inside) expect(r.influence[i]).toBe(initial[i]);
      else
        expect(Math.abs(r.influence[i]! - initial[i]! - r.ref.influence[i]!)).toBeLessThan(
          1e-4 * r.ref.influence[i]!,
        );
    }
  });

  it("row 0 contributes G_00 · A_00 = dOut_0 · v_0", () => {
    const r = run({ lengths: [1], queryHeads: 1, kvHeads: 1, headDim: 4 }, 8);
    expect(r.ref.influence[0]).toBeGreaterThan(0);
    expect(Math.abs(r.influence[0]! - r.ref.influence[0]!)).toBeLessThan(1e-6 * r.ref.influence[0]!);
  });

  it("queryStart: the same results as dOut zeroed before it; gradients false writes only the influence", () => {
    const random = rng(31);
    const lengths = [150, 90];
    const [hq, hkv, d] = [4, 2, 16];
    const tokens = 240;
    const cu = cuSeqlensOf(lengths);
    const scale = 1 / Math.sqrt(d);
    const qt = backend.fromHost("f32", [tokens, hq, d], randomF32(random, tokens * hq * d, -3, 3));
    const kt = backend.fromHost("f32", [tokens, hkv, d], randomF32(random, tokens * hkv * d, -3, 3));
    const vt = backend.fromHost("f32", [tokens, hkv, d], randomF32(random, tokens * hkv * d));
    const out = backend.empty("f32", [tokens, hq, d]);
    const stats = backend.empty("f32", [tokens, hq, 2]);
    backend.attentionPrefill(out, qt, kt, vt, cu, scale, undefined, stats);
    const dOut = randomF32(random, tokens * hq * d);
    const queryStart = 70; // inside the second block of the first sequence, in the second block of the other
    const zeroed = dOut.slice();
    for (const [s, n] of lengths.entries())
      zeroed.fill(0, cu[s]! * hq * d, (cu[s]! + Math.min(queryStart, n)) * hq * d);
    const backward = (grad: Float32Array, options?: { queryStart?: number; gradients?: boolean }) => {
      const dq = backend.fromHost("f32", [tokens, hq, d], new Float32Array(tokens * hq * d).fill(7));
      const dk = backend.fromHost("f32", [tokens, hkv, d], new Float32Array(tokens * hkv * d).fill(7));
      const dv = backend.fromHost("f32", [tokens, hkv, d], new Float32Array(tokens * hkv * d).fill(7));
      const influence = backend.empty("f32", [2, hq, 3, 3]);
      const dOutT = backend.fromHost("f32", [tokens, hq, d], grad);
      backend.attentionBackward(dq, dk, dv, dOutT, qt, kt, vt, out, stats, cu, scale, influence, options);
      return [dq, dk, dv, influence].map((t) => backend.toHost(t) as Float32Array);
    };
    const want = backward(zeroed);
    const got = backward(dOut, { queryStart });
    for (const [i, name] of ["dq", "dk", "dv", "influence"].entries()) {
      expect(got[i], name).toEqual(want[i]);
    }
    expect(got[0]!.subarray(0, queryStart * hq * d).every((x) => x === 0)).toBe(true);
    const influenceOnly = backward(dOut, { gradients: false });
    const full = backward(dOut);
    expect(influenceOnly[3]).toEqual(full[3]);
    for (const i of [0, 1, 2]) expect(influenceOnly[i]!.every((x) => x === 7)).toBe(true);
    expect(() => backward(dOut, { queryStart: -1 })).toThrow(/options.queryStart must be an integer/);
    // The forward's queryStart lets rows before it go unwritten; the CPU reference writes them all.
    const partOut = backend.empty("f32", [tokens, hq, d]);
    const partStats = backend.empty("f32", [tokens, hq, 2]);
    backend.attentionPrefill(partOut, qt, kt, vt, cu, scale, undefined, partStats, { queryStart });
    expect(backend.toHost(partOut)).toEqual(backend.toHost(out));
    expect(() =>
      backend.attentionPrefill(partOut, qt, kt, vt, cu, scale, undefined, undefined, { queryStart }),
    ).toThrow(/options.queryStart is for the profiling prefill: pass stats too/);
  });

  it("refuses an influence tensor with too few blocks, and mismatched shapes", () => {
    const q = backend.empty("f32", [130, 2, 8]);
    const k = backend.empty("f32", [130, 1, 8]);
    const stats = backend.empty("f32", [130, 2, 2]);
    const cu = Int32Array.of(0, 130);
    const call = (influence: Tensor, kv = k) =>
      backend.attentionBackward(
        backend.empty("f32", [130, 2, 8]),
        backend.empty("f32", [130, 1, 8]),
        backend.empty("f32", [130, 1, 8]),
        backend.empty("f32", [130, 2, 8]),
        q,
        kv,
        k,
        backend.empty("f32", [130, 2, 8]),
        stats,
        cu,
        0.35,
        influence,
      );
    expect(() => call(backend.empty("f32", [1, 2, 2, 2]))).toThrow(
      /attentionBackward: influence must be \[1, 2, nb, nb\] \(sequences, query heads\) with nb ≥ 3/,
    );
    expect(() => call(backend.empty("f32", [1, 2, 3, 3]), backend.empty("f32", [130, 2, 8]))).toThrow(
      /attentionBackward: k and v must have the same shape/,
    );
    expect(() =>
      backend.attentionPrefill(
        backend.empty("f32", [130, 2, 8]),
        q,
        k,
        k,
        cu,
        0.35,
        {
          mode: "block",
          alpha: Float32Array.of(0, 0),
          beta: Float32Array.of(0, 0),
          blockSize: 64,
          sinkTokens: 64,
        },
        stats,
      ),
    ).toThrow(/attentionPrefill: stats are for attentionBackward, which is dense/);
  });
});
