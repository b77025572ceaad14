/**
 * `profileInfluence` on the random checkpoints (MHA, GQA, Qwen2 q/k/v biases, llama3 RoPE scaling, an explicit
 * head_dim, tied and untied embeddings) against an independent float64 reference: the forward written out
 * layer by layer and its backward derived by hand, with the full attention matrix in hand to evaluate
 * E_ij = −A_ij (G_ij − S_i)/(1 − A_ij + eps) entry by entry (DESIGN.md: Attention influence). Also: the
 * argument checks, and that a model loaded with a plan is still profiled dense.
 */
import { MoaError, uniformPlan } from "@moa/core";
import type { Backend, Tensor } from "@moa/kernels-cuda";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { profileInfluence, InfluenceSession } from "../src/backward.js";
import { loadModel, type Model } from "../src/load.js";
import { halfToFloat } from "../src/weights.js";
import { fixtureDir } from "./fixtures.js";

const EPS = 2 ** -23;
const BLOCK = 64;

/** A weight as float64 (bf16/f16/f32 widened exactly). */
function widen(backend: Backend, t: Tensor): Float64Array {
  const host = backend.toHost(t);
  if (t.dtype === "f32") return Float64Array.from(host as Float32Array);
  const bits = host as Uint16Array;
  const out = new Float64Array(bits.length);
  const word = new Uint32Array(1);
  const single = new Float32Array(word.buffer);
  for (let i = 0; i < bits.length; i++) {
    if (t.dtype === "bf16") {
      word[0] = bits[i]! << 16;
      out[i] = single[0]!;
    } else {
      out[i] = halfToFloat(bits[i]!);
    }
  }
  return out;
}

/** y[r, o] = x[r, :] · w[o, :] + bias[o]; w is [outs, ins]. */
function linear(
  x: Float64Array,
  w: Float64Array,
  bias: Float64Array | undefined,
  outs: number,
): Float64Array {
  const ins = w.length / outs;
  const rows = x.length / ins;
  const y = new Float64Array(rows * outs);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outs; o++) {
      let sum = bias ? bias[o]! : 0;
      for (let i = 0; i < ins; i++) sum += x[r * ins + i]! * w[o * ins + i]!;
      y[r * outs + o] = sum;
    }
  }
  return y;
}

/** dx[r, i] = Σ_o dy[r, o] · w[o, i]: the input gradient of `linear`. */
function linearBackward(dy: Float64Array, w: Float64Array, outs: number): Float64Array {
  const ins = w.length / outs;
  const rows = dy.length / outs;
  const dx = new Float64Array(rows * ins);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outs; o++) {
      const g = dy[r * outs + o]!;
      for (let i = 0; i < ins; i++) dx[r * ins + i]! += g * w[o * ins + i]!;
    }
  }
  return dx;
}

function rmsNorm(x: Float64Array, w: Float64Array, eps: number): Float64Array {
  const d = w.length;
  const y = new Float64Array(x.length);
  for (let r = 0; r < x.length / d; r++) {
    let squares = 0;
    for (let i = 0; i < d; i++) squares += x[r * d + i]! ** 2;
    const inv = 1 / Math.sqrt(squares / d + eps);
    for (let i = 0; i < d; i++) y[r * d + i] = x[r * d + i]! * inv * w[i]!;
  }
  return y;
}

/** d/dx of Σ dy ⊙ rmsNorm(x): y_i = x_i r w_i with r = (mean x² + eps)^(−1/2), dr/dx_j = −r³ x_j / d. */
function rmsNormBackward(dy: Float64Array, x: Float64Array, w: Float64Array, eps: number): Float64Array {
  const d = w.length;
  const dx = new Float64Array(x.length);
  for (let r = 0; r < x.length / d; r++) {
    let squares = 0;
    let dot = 0;
    for (let i = 0; i < d; i++) {
      squares += x[r * d + i]! ** 2;
      dot += dy[r * d + i]! * w[i]! * x[r * d + i]!;
    }
    const inv = 1 / Math.sqrt(squares / d + eps);
    for (let i = 0; i < d; i++) {
      dx[r * d + i] = dy[r * d + i]! * w[i]! * inv - (x[r * d + i]! * inv ** 3 * dot) / d;
    }
  }
  return dx;
}

/** Rotate-half RoPE of every head of x[n, heads, headDim] by the angle at position sign·p. */
function rope(
  x: Float64Array,
  heads: number,
  headDim: number,
  invFreq: Float32Array,
  sign: 1 | -1,
): Float64Array {
  const y = Float64Array.from(x);
  const half = headDim / 2;
  for (let p = 0; p < x.length / (heads * headDim); p++) {
    for (let h = 0; h < heads; h++) {
      const base = (p * heads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const angle = sign * Math.fround(p * invFreq[i]!); // fp32 angle, as transformers computes it
        const [a, b] = [x[base + i]!, x[base + i + half]!];
        y[base + i] = a * Math.cos(angle) - b * Math.sin(angle);
        y[base + i + half] = b * Math.cos(angle) + a * Math.sin(angle);
      }
    }
  }
  return y;
}

const sigmoid = (g: number) => 1 / (1 + Math.exp(-g));

/** The loss and block influence of one sequence, all in float64. */
function referenceProfile(model: Model, ids: number[], answerStart: number) {
  const b = model.backend;
  const config = model.config;
  const {
    hiddenSize: d,
    heads: hq,
    kvHeads: hkv,
    headDim: hd,
    intermediateSize: ff,
    rmsNormEps: eps,
  } = config;
  const weights = model.transformer.weights;
  const invFreq = b.toHost(model.transformer.invFreq) as Float32Array;
  const scale = hd ** -0.5;
  const n = ids.length;
  const nb = Math.ceil(n / BLOCK);
  const group = hq / hkv;
  const opt = (t: Tensor | undefined) => (t === undefined ? undefined : widen(b, t));
  const layers = weights.layers.map((w) => ({
    inputNorm: widen(b, w.inputNorm),
    q: widen(b, w.q),
    k: widen(b, w.k),
    v: widen(b, w.v),
    o: widen(b, w.o),
    qBias: opt(w.qBias),
    kBias: opt(w.kBias),
    vBias: opt(w.vBias),
    oBias: opt(w.oBias),
    postNorm: widen(b, w.postNorm),
    gate: widen(b, w.gate),
    up: widen(b, w.up),
    down: widen(b, w.down),
  }));
  const embed = widen(b, weights.embed);
  const lmHead = widen(b, weights.lmHead);
  const finalNorm = widen(b, weights.norm);

  // Forward, keeping what the backward needs.
  let x = new Float64Array(n * d);
  for (let p = 0; p < n; p++) x.set(embed.subarray(ids[p]! * d, (ids[p]! + 1) * d), p * d);
  const saved = [];
  for (const w of layers) {
    const h = rmsNorm(x, w.inputNorm, eps);
    const q = rope(linear(h, w.q, w.qBias, hq * hd), hq, hd, invFreq, 1);
    const k = rope(linear(h, w.k, w.kBias, hkv * hd), hkv, hd, invFreq, 1);
    const v = linear(h, w.v, w.vBias, hkv * hd);
    const probs: Float64Array[] = []; // [head][i·n + j]
    const attn = new Float64Array(n * hq * hd);
    for (let head = 0; head < hq; head++) {
      const g = Math.floor(head / group);
      const p = new Float64Array(n * n);
      for (let i = 0; i < n; i++) {
        let max = Number.NEGATIVE_INFINITY;
        for (let j = 0; j <= i; j++) {
          let s = 0;
          for (let e = 0; e < hd; e++) s += q[(i * hq + head) * hd + e]! * k[(j * hkv + g) * hd + e]!;
          p[i * n + j] = s * scale;
          max = Math.max(max, s * scale);
        }
        let sum = 0;
        for (let j = 0; j <= i; j++) sum += p[i * n + j] = Math.exp(p[i * n + j]! - max);
        for (let j = 0; j <= i; j++) {
          p[i * n + j]! /= sum;
          for (let e = 0; e < hd; e++)
            attn[(i * hq + head) * hd + e]! += p[i * n + j]! * v[(j * hkv + g) * hd + e]!;
        }
      }
      probs.push(p);
    }
    const xMid = linear(attn, w.o, w.oBias, d).map((value, i) => value + x[i]!);
    const h2 = rmsNorm(xMid, w.postNorm, eps);
    const gate = linear(h2, w.gate, undefined, ff);
    const up = linear(h2, w.up, undefined, ff);
    const act = gate.map((g, i) => g * sigmoid(g) * up[i]!);
    saved.push({ x, q, k, v, probs, xMid, gate, up });
    x = linear(act, w.down, undefined, d).map((value, i) => value + xMid[i]!);
  }

  // Loss over the answer rows and its gradient at the final hidden state.
  const answers = n - answerStart;
  const vocab = config.vocabSize;
  const rows = x.subarray((answerStart - 1) * d, (n - 1) * d);
  const logits = linear(rmsNorm(rows, finalNorm, eps), lmHead, undefined, vocab);
  const dLogits = new Float64Array(logits.length);
  let loss = 0;
  for (let r = 0; r < answers; r++) {
    const row = logits.subarray(r * vocab, (r + 1) * vocab);
    const max = Math.max(...row);
    let sum = 0;
    for (const value of row) sum += Math.exp(value - max);
    const target = ids[answerStart + r]!;
    loss += Math.log(sum) + max - row[target]!;
    for (let j = 0; j < vocab; j++) {
      dLogits[r * vocab + j] = (Math.exp(row[j]! - max) / sum - (j === target ? 1 : 0)) / answers;
    }
  }
  let dx = new Float64Array(n * d);
  dx.set(
    rmsNormBackward(linearBackward(dLogits, lmHead, vocab), rows, finalNorm, eps),
    (answerStart - 1) * d,
  );

  // Backward through the layers, the influence from the full attention matrix.
  const influence = new Float64Array(layers.length * hq * nb * nb);
  for (let l = layers.length - 1; l >= 0; l--) {
    const w = layers[l]!;
    const s = saved[l]!;
    const dAct = linearBackward(dx, w.down, d);
    const dGate = dAct.map((da, i) => {
      const g = s.gate[i]!;
      return da * s.up[i]! * sigmoid(g) * (1 + g * (1 - sigmoid(g)));
    });
    const dUp = dAct.map((da, i) => da * s.gate[i]! * sigmoid(s.gate[i]!));
    const dh2 = linearBackward(dGate, w.gate, ff);
    const dh2Up = linearBackward(dUp, w.up, ff);
    for (let i = 0; i < dh2.length; i++) dh2[i]! += dh2Up[i]!;
    const dxMid = rmsNormBackward(dh2, s.xMid, w.postNorm, eps).map((value, i) => value + dx[i]!);
    const dAttn = linearBackward(dxMid, w.o, d);
    const dq = new Float64Array(n * hq * hd);
    const dk = new Float64Array(n * hkv * hd);
    const dv = new Float64Array(n * hkv * hd);
    for (let head = 0; head < hq; head++) {
      const g = Math.floor(head / group);
      const p = s.probs[head]!;
      for (let i = 0; i < n; i++) {
        const G = new Float64Array(i + 1); // dL/dA_ij
        let S = 0;
        for (let j = 0; j <= i; j++) {
          for (let e = 0; e < hd; e++)
            G[j]! += dAttn[(i * hq + head) * hd + e]! * s.v[(j * hkv + g) * hd + e]!;
          S += G[j]! * p[i * n + j]!;
        }
        for (let j = 0; j <= i; j++) {
          const a = p[i * n + j]!;
          const dScore = a * (G[j]! - S);
          for (let e = 0; e < hd; e++) {
            dq[(i * hq + head) * hd + e]! += scale * dScore * s.k[(j * hkv + g) * hd + e]!;
            dk[(j * hkv + g) * hd + e]! += scale * dScore * s.q[(i * hq + head) * hd + e]!;
            dv[(j * hkv + g) * hd + e]! += a * dAttn[(i * hq + head) * hd + e]!;
          }
          const E = i === 0 ? G[j]! * a : -dScore / (1 - a + EPS);
          influence[((l * hq + head) * nb + Math.floor(i / BLOCK)) * nb + Math.floor(j / BLOCK)]! +=
            Math.abs(E);
        }
      }
    }
    const dh = linearBackward(rope(dq, hq, hd, invFreq, -1), w.q, hq * hd);
    const dhk = linearBackward(rope(dk, hkv, hd, invFreq, -1), w.k, hkv * hd);
    const dhv = linearBackward(dv, w.v, hkv * hd);
    for (let i = 0; i < dh.length; i++) dh[i]! += dhk[i]! + dhv[i]!;
    const dNorm = rmsNormBackward(dh, s.x, w.inputNorm, eps);
    dx = dxMid.map((value, i) => value + dNorm[i]!);
  }
  return { loss: loss / answers, influence, blocks: nb };
}

/** Deterministic pseudo-random token ids (BOS first). */
function tokens(n: number, vocab: number, seed: number): number[] {
  let state = seed;
  return Array.from({ length: n }, (_, i) => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return i === 0 ? 0 : 3 + (state % (vocab - 3));
  });
}

const ARCHITECTURES = ["random-llama", "random-llama31", "random-qwen2", "random-mistral"] as const;

describe.each(ARCHITECTURES)("profileInfluence on %s equals a float64 forward and backward", (name) => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(fixtureDir(name), { backend: "cpu" });
  });
  afterAll(() => model.dispose());

  it("loss within 1e-6 relative, every block above 1e-6 of its head’s total within 1e-5 relative (n = 150)", () => {
    const ids = tokens(150, model.config.vocabSize, 7);
    const answerStart = 137;
    const got = profileInfluence(model, ids, answerStart);
    const want = referenceProfile(model, ids, answerStart);
    expect(got.blocks).toBe(want.blocks);
    expect(Math.abs(got.loss - want.loss)).toBeLessThan(1e-6 * want.loss);
    const perHead = want.blocks * want.blocks;
    let worst = 0;
    for (let head = 0; head < want.influence.length / perHead; head++) {
      let total = 0;
      for (let i = 0; i < perHead; i++) total += want.influence[head * perHead + i]!;
      expect(total).toBeGreaterThan(0);
      for (let i = head * perHead; i < (head + 1) * perHead; i++) {
        const value = want.influence[i]!;
        if (value === 0) expect(got.influence[i]).toBe(0);
        else if (value > 1e-6 * total) worst = Math.max(worst, Math.abs(got.influence[i]! - value) / value);
      }
    }
    expect(worst).toBeLessThan(1e-5);
  });
});

describe("profileInfluence with an InfluenceSession", () => {
  it("gives the same loss and influence as calls without, reusing one host array per length; release() is idempotent", async () => {
    const model = await loadModel(fixtureDir("random-llama31"), { backend: "cpu" });
    try {
      const session = new InfluenceSession();
      const arrays: Float32Array[] = [];
      for (const [n, answerStart] of [
        [150, 140],
        [90, 70],
        [150, 140],
        [150, 120],
      ] as const) {
        const ids = tokens(n, model.config.vocabSize, answerStart);
        const alone = profileInfluence(model, ids, answerStart);
        const shared = profileInfluence(model, ids, answerStart, { session });
        expect(shared.loss).toBe(alone.loss);
        expect(shared.influence).toEqual(alone.influence);
        arrays.push(shared.influence);
      }
      expect(arrays[1]).not.toBe(arrays[0]); // another length: another array
      expect(arrays[3]).toBe(arrays[2]); // the same length again: the same array, overwritten
      // The CPU reference keeps no fp16 weight copies: nothing is held, and releasing is harmless.
      expect(session.heldBytes).toBe(0);
      session.release();
      session.release();
    } finally {
      model.dispose();
    }
  });
});

describe("profileInfluence arguments", () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(fixtureDir("random-llama"), { backend: "cpu", maxLength: 100 });
  });
  afterAll(() => model.dispose());

  const code = (run: () => unknown): string => {
    try {
      run();
    } catch (error) {
      expect(error).toBeInstanceOf(MoaError);
      return `${(error as MoaError).code}: ${(error as MoaError).message}`;
    }
    return "no error";
  };

  it("refuses an answer start outside [1, n − 1], bad token ids and sequences beyond the context", () => {
    const ids = tokens(20, model.config.vocabSize, 3);
    expect(code(() => profileInfluence(model, ids, 0))).toMatch(
      /E_ARGUMENT: .*answerStart = 0 must be an integer in \[1, 19\]/,
    );
    expect(code(() => profileInfluence(model, ids, 20))).toMatch(/E_ARGUMENT: .*answerStart = 20/);
    expect(code(() => profileInfluence(model, ids, 2.5))).toMatch(/E_ARGUMENT: .*answerStart = 2.5/);
    expect(code(() => profileInfluence(model, [0], 1))).toMatch(/E_ARGUMENT: .*at least 2/);
    expect(code(() => profileInfluence(model, [0, 4096, 5], 1))).toMatch(/E_ARGUMENT: .*ids\[1\] = 4096/);
    expect(code(() => profileInfluence(model, tokens(101, 4096, 1), 50))).toMatch(/E_CONTEXT: .*101 tokens/);
  });

  it("the shortest input, 2 tokens, is one block: the loss of predicting token 1 and row 0's E_00 = G_00·A_00", () => {
    const got = profileInfluence(model, [0, 17], 1);
    const want = referenceProfile(model, [0, 17], 1);
    expect(got.blocks).toBe(1);
    expect(got.influence.length).toBe(model.config.layers * model.config.heads);
    expect(Math.abs(got.loss - want.loss)).toBeLessThan(1e-6 * want.loss);
    // Within 1e-5 of the largest head's: a head whose dOut_0·v_0 nearly cancels is small and carries fp32 noise.
    const largest = Math.max(...want.influence);
    for (const [i, value] of want.influence.entries()) {
      expect(Math.abs(got.influence[i]! - value)).toBeLessThan(1e-5 * largest);
    }
  });

  it("a model loaded with a plan is profiled with dense attention", async () => {
    // 200 tokens: blocks 0 (sink), 1 and 2 (diagonal); a rule of one block masks block 1 out.
    const ids = tokens(200, model.config.vocabSize, 5);
    const dense = await loadModel(fixtureDir("random-llama"), { backend: "cpu" });
    const planned = await loadModel(fixtureDir("random-llama"), {
      backend: "cpu",
      plan: uniformPlan(model.config.shape(), 0.2, [200]),
    });
    const bytes = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
    try {
      const fromDense = profileInfluence(dense, ids, 190);
      const fromPlanned = profileInfluence(planned, ids, 190);
      expect(fromPlanned.loss).toBe(fromDense.loss);
      expect(bytes(fromPlanned.influence).equals(bytes(fromDense.influence))).toBe(true);
      // The plan is in effect for inference: its logits differ from the dense model's.
      expect(bytes(planned.logits(ids)).equals(bytes(dense.logits(ids)))).toBe(false);
    } finally {
      planned.dispose();
      dense.dispose();
    }
  });
});
