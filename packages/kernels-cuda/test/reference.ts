// Plain-TypeScript references for the ops, written from the definitions (backend.ts, DESIGN.md) and kept
// independent of the C++ code: double-precision accumulation, brute-force masks, no tiling.
import type { Backend, MoaMask } from "../src/index.js";
import { loadBackend } from "../src/index.js";

/** The backend under test: the CPU reference, or MOA_TEST_BACKEND=cuda on a GPU machine. */
export function backendUnderTest(): Backend {
  const name = process.env.MOA_TEST_BACKEND;
  return loadBackend(name === "cuda" || name === "auto" ? name : "cpu");
}

/** Deterministic uniform floats in [lo, hi) (mulberry32). */
export function rng(seed: number): (lo?: number, hi?: number) => number {
  let state = seed >>> 0;
  return (lo = -1, hi = 1) => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    const unit = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    return lo + (hi - lo) * unit;
  };
}

export function randomF32(random: ReturnType<typeof rng>, count: number, lo = -1, hi = 1): Float32Array {
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = random(lo, hi);
  return out;
}

export function randomInt(random: ReturnType<typeof rng>, lo: number, hi: number): number {
  return Math.min(hi - 1, Math.floor(random(lo, hi)));
}

// ---- half precision, from the IEEE layouts ----

const word = new Uint32Array(1);
const single = new Float32Array(word.buffer);

export function bf16ToNumber(bits: number): number {
  word[0] = (bits & 0xffff) << 16;
  return single[0]!;
}

export function f16ToNumber(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 31) return mantissa ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

/** Random bf16 bits of magnitude about 2^-7 … 2^1 (and either sign). */
export function randomBf16(random: ReturnType<typeof rng>, count: number): Uint16Array {
  const out = new Uint16Array(count);
  for (let i = 0; i < count; i++) {
    const sign = random() < 0 ? 0x8000 : 0;
    const exponent = randomInt(random, 120, 128);
    out[i] = sign | (exponent << 7) | randomInt(random, 0, 128);
  }
  return out;
}

/** Random f16 bits of magnitude about 2^-9 … 2^1, with a few subnormals. */
export function randomF16(random: ReturnType<typeof rng>, count: number): Uint16Array {
  const out = new Uint16Array(count);
  for (let i = 0; i < count; i++) {
    const sign = random() < 0 ? 0x8000 : 0;
    const exponent = random(0, 1) < 0.05 ? 0 : randomInt(random, 6, 16);
    out[i] = sign | (exponent << 10) | randomInt(random, 0, 1024);
  }
  return out;
}

export function widen(dtype: "f32" | "bf16" | "f16", data: Float32Array | Uint16Array): Float64Array {
  const out = new Float64Array(data.length);
  for (let i = 0; i < data.length; i++) {
    const value = data[i]!;
    out[i] = dtype === "f32" ? value : dtype === "bf16" ? bf16ToNumber(value) : f16ToNumber(value);
  }
  return out;
}

// ---- ops ----

/** out[m, n] = x[m, k] · wᵀ + bias; also Σ|x·w| per entry, the scale of the rounding error. */
export function matmulRef(
  x: Float32Array,
  w: Float64Array,
  bias: Float64Array | undefined,
  m: number,
  n: number,
  k: number,
): { out: Float64Array; magnitude: Float64Array } {
  const out = new Float64Array(m * n);
  const magnitude = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let sum = bias ? bias[j]! : 0;
      let abs = Math.abs(sum);
      for (let p = 0; p < k; p++) {
        const product = x[i * k + p]! * w[j * k + p]!;
        sum += product;
        abs += Math.abs(product);
      }
      out[i * n + j] = sum;
      magnitude[i * n + j] = abs;
    }
  }
  return { out, magnitude };
}

export function rmsNormRef(x: Float32Array, weight: Float64Array, dim: number, eps: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let r = 0; r < x.length / dim; r++) {
    let sum = 0;
    for (let i = 0; i < dim; i++) sum += x[r * dim + i]! ** 2;
    const inv = 1 / Math.sqrt(sum / dim + eps);
    for (let i = 0; i < dim; i++) out[r * dim + i] = x[r * dim + i]! * inv * weight[i]!;
  }
  return out;
}

/** Hugging Face rotate_half RoPE on the first 2·invFreq.length dims of each head. */
export function ropeRef(
  x: Float32Array,
  positions: Int32Array,
  invFreq: Float32Array,
  heads: number,
  headDim: number,
  attentionScale: number,
): Float64Array {
  const out = Float64Array.from(x);
  const half = invFreq.length;
  for (let t = 0; t < positions.length; t++) {
    for (let h = 0; h < heads; h++) {
      const base = (t * heads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const angle = Math.fround(positions[t]! * invFreq[i]!);
        const cos = Math.cos(angle) * attentionScale;
        const sin = Math.sin(angle) * attentionScale;
        const a = x[base + i]!;
        const b = x[base + i + half]!;
        out[base + i] = a * cos - b * sin;
        out[base + i + half] = b * cos + a * sin;
      }
    }
  }
  return out;
}

export function softmaxRef(x: Float32Array, cols: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let r = 0; r < x.length / cols; r++) {
    let max = Number.NEGATIVE_INFINITY;
    for (let j = 0; j < cols; j++) max = Math.max(max, x[r * cols + j]!);
    let sum = 0;
    for (let j = 0; j < cols; j++) sum += Math.exp(x[r * cols + j]! - max);
    for (let j = 0; j < cols; j++) out[r * cols + j] = Math.exp(x[r * cols + j]! - max) / sum;
  }
  return out;
}

// ---- masks (DESIGN.md: Definitions), brute force ----

export function spanBlocksRef(alpha: number, beta: number, n: number, blockSize: number): number {
  const span = Math.min(Math.max(alpha + beta * n, 0), n);
  return Math.max(1, Math.floor(span / blockSize));
}

/** Whether query i attends key j of a sequence of length n for query head h. */
export function keptRef(mask: MoaMask | undefined, h: number, n: number, i: number, j: number): boolean {
  if (j > i) return false;
  if (!mask) return true;
  const B = mask.blockSize;
  const G = mask.sinkTokens;
  if (mask.mode === "block") {
    const qb = Math.floor(i / B);
    const kb = Math.floor(j / B);
    const nb = spanBlocksRef(mask.alpha[h]!, mask.beta[h]!, n, B);
    return kb < G / B || kb >= qb - nb + 1;
  }
  const nb = spanBlocksRef(mask.alpha[h]!, mask.beta[h]!, i + 1, B);
  return j < G || j > i - nb * B;
}

/** Attention of one query vector over the given key positions (double precision). */
export function attendRef(
  query: ArrayLike<number>,
  keyAt: (j: number) => ArrayLike<number>,
  valueAt: (j: number) => ArrayLike<number>,
  keys: readonly number[],
  scale: number,
  headDim: number,
): Float64Array {
  const scores = keys.map((j) => {
    const key = keyAt(j);
    let dot = 0;
    for (let e = 0; e < headDim; e++) dot += query[e]! * key[e]!;
    return dot * scale;
  });
  const max = Math.max(...scores);
  const weights = scores.map((s) => Math.exp(s - max));
  const sum = weights.reduce((a, b) => a + b, 0);
  const out = new Float64Array(headDim);
  keys.forEach((j, idx) => {
    const value = valueAt(j);
    for (let e = 0; e < headDim; e++) out[e]! += (weights[idx]! / sum) * value[e]!;
  });
  return out;
}

/** Causal prefill over packed sequences with the brute-force token mask. */
export function attentionPrefillRef(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  cuSeqlens: Int32Array,
  queryHeads: number,
  kvHeads: number,
  headDim: number,
  scale: number,
  mask?: MoaMask,
): Float64Array {
  const out = new Float64Array(q.length);
  for (let s = 0; s + 1 < cuSeqlens.length; s++) {
    const base = cuSeqlens[s]!;
    const n = cuSeqlens[s + 1]! - base;
    for (let h = 0; h < queryHeads; h++) {
      const g = Math.floor((h * kvHeads) / queryHeads);
      const keyAt = (j: number) =>
        k.subarray(((base + j) * kvHeads + g) * headDim, ((base + j) * kvHeads + g + 1) * headDim);
      const valueAt = (j: number) =>
        v.subarray(((base + j) * kvHeads + g) * headDim, ((base + j) * kvHeads + g + 1) * headDim);
      for (let i = 0; i < n; i++) {
        const keys: number[] = [];
        for (let j = 0; j <= i; j++) if (keptRef(mask, h, n, i, j)) keys.push(j);
        const query = q.subarray(
          ((base + i) * queryHeads + h) * headDim,
          ((base + i) * queryHeads + h + 1) * headDim,
        );
        out.set(
          attendRef(query, keyAt, valueAt, keys, scale, headDim),
          ((base + i) * queryHeads + h) * headDim,
        );
      }
    }
  }
  return out;
}

/** Largest |a − b|. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let max = 0;
  for (let i = 0; i < a.length; i++) {
    const diff = Math.abs(a[i]! - b[i]!);
    if (Number.isNaN(diff)) return Number.POSITIVE_INFINITY;
    max = Math.max(max, diff);
  }
  return max;
}

export function maskOf(
  mode: MoaMask["mode"],
  rules: readonly { alpha: number; beta: number }[],
  blockSize = 64,
  sinkTokens = 64,
): MoaMask {
  return {
    mode,
    alpha: Float32Array.from(rules.map((r) => r.alpha)),
    beta: Float32Array.from(rules.map((r) => r.beta)),
    blockSize,
    sinkTokens,
  };
}
