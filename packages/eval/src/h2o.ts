/**
 * H2O (Heavy-Hitter Oracle; Zhang et al., NeurIPS 2023) as an equal-KV-density baseline: every (sequence,
 * layer, KV head) keeps at most `budget` cached tokens, the `recent` most recent ones plus the `heavy` "heavy
 * hitters" with the highest accumulated attention. The variant is the paper's real-drop KV cache
 * (`H2OKVCache_LayerWise` in the authors' code), exactly:
 *
 * - Budget: `budget = max(1, round(d · n))` tokens for KV density `d` at length `n` (the prompt's tokens),
 *   split evenly as in the paper: `recent = ceil(budget / 2)`, `heavy = budget − recent`.
 * - Score of a cached token: the sum of the softmax attention probabilities it has received from every query
 *   so far (prompt rows and generated tokens), summed over the query heads that read its KV head (GQA).
 * - Prefill: the whole prompt is attended densely (its outputs equal the dense model's); then, if the prompt
 *   is longer than the budget, the cache keeps its last `recent` tokens and the `heavy` other tokens of highest
 *   score (ties: the earlier token).
 * - Decode: the new token's key and value are appended, it attends every cached token, the probabilities are
 *   added to the scores, and if the cache holds more than `budget` tokens the lowest-score token outside the
 *   `recent` most recent positions is evicted (ties: the later token). The cache holds exactly `budget` tokens
 *   after every step once the sequence is longer than the budget.
 * - No attention sink is reserved (H2O has none); RoPE is applied before caching, at absolute positions.
 *
 * The executor runs the checkpoint's weights through the same backend ops as @moa/runtime's TransformerModel
 * (embedding, RMSNorm, projections, RoPE, SiLU·mul); only attention differs. Prefill attention output comes
 * from the backend's dense causal kernel and the scores from its `attentionColumnSums` (on CUDA nothing n×n leaves
 * the GPU: n floats per KV head come back); decode attention runs on the host over the compacted cache.
 */
import type { Model, ModelConfig, ModelWeights } from "@moa/runtime";
import { argmax } from "@moa/runtime";
import type { Backend, Tensor } from "@moa/kernels-cuda";

/** The cache budget of one (sequence, layer, KV head). */
export interface H2oBudget {
  /** Tokens kept: `heavy + recent`. */
  readonly budget: number;
  /** Heavy hitters: the highest accumulated attention outside the recent window. */
  readonly heavy: number;
  /** The most recent positions, always kept. */
  readonly recent: number;
}

/** The budget for KV density `density` at `length` tokens: `round(density · length)`, half recent, half heavy. */
export function h2oBudget(density: number, length: number): H2oBudget {
  if (!(density > 0 && density <= 1))
    throw new RangeError(`h2oBudget: density = ${density}: must be in (0, 1]`);
  if (!Number.isSafeInteger(length) || length < 1) {
    throw new RangeError(`h2oBudget: length = ${length}: must be a positive integer`);
  }
  const budget = Math.max(1, Math.round(density * length));
  const recent = Math.ceil(budget / 2);
  return { budget, heavy: budget - recent, recent };
}

/**
 * Positions of a prompt of `scores.length` tokens that the cache keeps after prefill, ascending: all of them
 * when they fit, else the last `recent` and the `heavy` highest-scoring others (ties: the earlier position).
 */
export function h2oPrefillKeep(scores: ArrayLike<number>, budget: H2oBudget): Int32Array {
  const length = scores.length;
  if (length <= budget.budget) return Int32Array.from({ length }, (_, i) => i);
  const recentFrom = length - budget.recent;
  const candidates = Int32Array.from({ length: recentFrom }, (_, i) => i);
  candidates.sort((a, b) => scores[b]! - scores[a]! || a - b);
  const kept = new Int32Array(budget.budget);
  kept.set(candidates.subarray(0, budget.heavy));
  for (let p = recentFrom; p < length; p++) kept[budget.heavy + p - recentFrom] = p;
  return kept.sort();
}

/**
 * The cache of one (sequence, layer, KV head): up to `capacity` entries in no particular order (attention does
 * not depend on it; keys carry their RoPE), each with its absolute position and accumulated score.
 */
export class H2oHeadCache {
  readonly keys: Float32Array;
  readonly values: Float32Array;
  readonly scores: Float64Array;
  readonly positions: Int32Array;
  size = 0;

  constructor(
    readonly capacity: number,
    readonly headDim: number,
  ) {
    this.keys = new Float32Array(capacity * headDim);
    this.values = new Float32Array(capacity * headDim);
    this.scores = new Float64Array(capacity);
    this.positions = new Int32Array(capacity);
  }

  /** Appends a token (key and value of `headDim` floats each) with its starting score. */
  push(position: number, key: ArrayLike<number>, value: ArrayLike<number>, score = 0): void {
    if (this.size >= this.capacity) {
      throw new RangeError(`H2oHeadCache: push beyond the capacity of ${this.capacity} tokens`);
    }
    const e = this.size++;
    this.keys.set(key, e * this.headDim);
    this.values.set(value, e * this.headDim);
    this.scores[e] = score;
    this.positions[e] = position;
  }

  /**
   * The entry H2O evicts: the lowest score among positions ≤ `newest − recent` (outside the recent window),
   * ties to the later position; -1 when every cached token is recent.
   */
  victim(newest: number, recent: number): number {
    const limit = newest - recent;
    let victim = -1;
    for (let e = 0; e < this.size; e++) {
      const p = this.positions[e]!;
      if (p > limit) continue;
      if (
        victim < 0 ||
        this.scores[e]! < this.scores[victim]! ||
        (this.scores[e] === this.scores[victim] && p > this.positions[victim]!)
      ) {
        victim = e;
      }
    }
    return victim;
  }

  /** Removes entry `e` (the last entry moves into its place). */
  remove(e: number): void {
    const last = --this.size;
    if (e === last) return;
    const d = this.headDim;
    this.keys.copyWithin(e * d, last * d, last * d + d);
    this.values.copyWithin(e * d, last * d, last * d + d);
    this.scores[e] = this.scores[last]!;
    this.positions[e] = this.positions[last]!;
  }

  /** Cached positions, ascending (for tests and inspection). */
  sortedPositions(): number[] {
    return Array.from(this.positions.subarray(0, this.size)).sort((a, b) => a - b);
  }
}

/** One sequence's H2O caches: `layers[l][g]` for KV head g, and the tokens processed so far. */
export class H2oSequence {
  readonly layers: H2oHeadCache[][];
  length = 0;

  constructor(
    config: ModelConfig,
    readonly budget: H2oBudget,
  ) {
    // One entry beyond the budget: the new token is appended before the eviction of its step.
    this.layers = Array.from({ length: config.layers }, () =>
      Array.from({ length: config.kvHeads }, () => new H2oHeadCache(budget.budget + 1, config.headDim)),
    );
  }
}

/** Rows of logits computed per lm_head call when every position's logits are wanted. */
const LOGIT_CHUNK = 256;

type Attend = (layer: number, t: Activations) => void;

/** Activations of one forward pass over `rows` token rows; freed together. */
interface Activations {
  readonly rows: number;
  readonly x: Tensor;
  readonly h: Tensor;
  readonly qFlat: Tensor;
  readonly kFlat: Tensor;
  readonly vFlat: Tensor;
  readonly q: Tensor;
  readonly k: Tensor;
  readonly attn: Tensor;
  readonly attnFlat: Tensor;
  readonly v: Tensor;
  readonly gate: Tensor;
  readonly up: Tensor;
  readonly act: Tensor;
  readonly ids: Tensor;
  readonly positions: Tensor;
  readonly all: Tensor[];
}

/**
 * Runs a loaded model with H2O KV caches. The model's own KV cache is not used; load it with `slots: 1` and
 * without a plan.
 */
export class H2oModel {
  private readonly backend: Backend;
  private readonly config: ModelConfig;
  private readonly weights: ModelWeights;
  private readonly invFreq: Tensor;
  private readonly scale: number;

  constructor(readonly model: Model) {
    if (model.plan !== undefined) {
      throw new RangeError("H2oModel: the model was loaded with a MoA plan; H2O runs the dense checkpoint");
    }
    this.backend = model.backend;
    this.config = model.config;
    this.weights = model.transformer.weights;
    this.invFreq = model.transformer.invFreq;
    this.scale = model.transformer.scale;
  }

  /** A new empty sequence with its caches. */
  sequence(budget: H2oBudget): H2oSequence {
    return new H2oSequence(this.config, budget);
  }

  private activations(rows: number): Activations {
    const b = this.backend;
    const { hiddenSize: d, heads, kvHeads, headDim, intermediateSize: ff } = this.config;
    const all: Tensor[] = [];
    const make = (dtype: "f32" | "i32", shape: number[]): Tensor => {
      const t = b.empty(dtype, shape);
      all.push(t);
      return t;
    };
    try {
      const qFlat = make("f32", [rows, heads * headDim]);
      const kFlat = make("f32", [rows, kvHeads * headDim]);
      const vFlat = make("f32", [rows, kvHeads * headDim]);
      const attnFlat = make("f32", [rows, heads * headDim]);
      return {
        rows,
        x: make("f32", [rows, d]),
        h: make("f32", [rows, d]),
        qFlat,
        kFlat,
        vFlat,
        attnFlat,
        // Per-head views of the projections for rope and attention (same storage).
        q: b.reshape(qFlat, [rows, heads, headDim]),
        k: b.reshape(kFlat, [rows, kvHeads, headDim]),
        v: b.reshape(vFlat, [rows, kvHeads, headDim]),
        attn: b.reshape(attnFlat, [rows, heads, headDim]),
        gate: make("f32", [rows, ff]),
        up: make("f32", [rows, ff]),
        act: make("f32", [rows, ff]),
        ids: make("i32", [rows]),
        positions: make("i32", [rows]),
        all,
      };
    } catch (error) {
      for (const t of all) b.free(t);
      throw error;
    }
  }

  /** The layer stack of runtime's TransformerModel (model.ts), with attention supplied by `attend`. */
  private forward(t: Activations, ids: Int32Array, positions: Int32Array, attend: Attend): void {
    const b = this.backend;
    const eps = this.config.rmsNormEps;
    b.write(t.ids, ids);
    b.write(t.positions, positions);
    b.embedding(t.x, t.ids, this.weights.embed);
    for (let l = 0; l < this.weights.layers.length; l++) {
      const w = this.weights.layers[l]!;
      b.rmsNorm(t.h, t.x, w.inputNorm, eps);
      b.matmul(t.qFlat, t.h, w.q, w.qBias);
      b.matmul(t.kFlat, t.h, w.k, w.kBias);
      b.matmul(t.vFlat, t.h, w.v, w.vBias);
      b.rope(t.q, t.positions, this.invFreq, 1);
      b.rope(t.k, t.positions, this.invFreq, 1);
      attend(l, t);
      b.matmul(t.h, t.attnFlat, w.o, w.oBias);
      b.add(t.x, t.x, t.h);
      b.rmsNorm(t.h, t.x, w.postNorm, eps);
      b.matmul(t.gate, t.h, w.gate, w.gateBias);
      b.matmul(t.up, t.h, w.up, w.upBias);
      b.siluMul(t.act, t.gate, t.up);
      b.matmul(t.h, t.act, w.down, w.downBias);
      b.add(t.x, t.x, t.h);
    }
    b.rmsNorm(t.h, t.x, this.weights.norm, eps);
  }

  /** Logits of rows [start, start + count) of the final hidden states, on the host. */
  private logitsOf(t: Activations, start: number, count: number): Float32Array {
    const b = this.backend;
    const out = b.empty("f32", [count, this.config.vocabSize]);
    try {
      b.matmul(out, b.rows(t.h, start, count), this.weights.lmHead);
      return b.toHost(out) as Float32Array;
    } finally {
      b.free(out);
    }
  }

  /**
   * Prefills an empty sequence with `tokens` (dense attention over the prompt), then shrinks each cache to the
   * budget. Returns the last row's logits, or with `allLogits` calls it with the logits of every row (row p
   * predicts token p + 1) in chunks, and returns the last row's.
   */
  prefill(
    seq: H2oSequence,
    tokens: ArrayLike<number>,
    allLogits?: (row: number, logits: Float32Array) => void,
  ): Float32Array {
    if (seq.length !== 0) throw new RangeError("H2oModel.prefill: the sequence is not empty");
    const n = tokens.length;
    if (n < 1) throw new RangeError("H2oModel.prefill: no tokens");
    this.model.transformer.checkLength(n, "prompt");
    const b = this.backend;
    const t = this.activations(n);
    try {
      const positions = Int32Array.from({ length: n }, (_, i) => i);
      this.forward(t, Int32Array.from(tokens), positions, (layer, acts) => {
        b.attentionPrefill(acts.attn, acts.q, acts.k, acts.v, Int32Array.of(0, n), this.scale);
        this.fillCaches(seq, layer, acts, n);
      });
      seq.length = n;
      const vocab = this.config.vocabSize;
      if (allLogits === undefined) return this.logitsOf(t, n - 1, 1);
      let last: Float32Array = new Float32Array(0);
      for (let start = 0; start < n; start += LOGIT_CHUNK) {
        const count = Math.min(LOGIT_CHUNK, n - start);
        const block = this.logitsOf(t, start, count);
        for (let r = 0; r < count; r++) allLogits(start + r, block.subarray(r * vocab, (r + 1) * vocab));
        last = block.subarray((count - 1) * vocab, count * vocab);
      }
      return last;
    } finally {
      for (const tensor of t.all) b.free(tensor);
    }
  }

  /** Accumulated attention of every prompt token per KV head, then the kept tokens into the caches. */
  private fillCaches(seq: H2oSequence, layer: number, t: Activations, n: number): void {
    const b = this.backend;
    const { kvHeads, headDim: dim } = this.config;
    const sums = b.empty("f32", [n, kvHeads]);
    let columns: Float32Array;
    try {
      b.attentionColumnSums(sums, t.q, t.k, Int32Array.of(0, n), this.scale);
      columns = b.toHost(sums) as Float32Array;
    } finally {
      b.free(sums);
    }
    const k = b.toHost(t.k) as Float32Array;
    const v = b.toHost(t.v) as Float32Array;
    for (let g = 0; g < kvHeads; g++) {
      const scores = Float64Array.from({ length: n }, (_, p) => columns[p * kvHeads + g]!);
      const cache = seq.layers[layer]![g]!;
      for (const p of h2oPrefillKeep(scores, seq.budget)) {
        const at = (p * kvHeads + g) * dim;
        cache.push(p, k.subarray(at, at + dim), v.subarray(at, at + dim), scores[p]!);
      }
    }
  }

  /**
   * One decode step for several sequences: `tokens[i]` is appended to `seqs[i]`. Returns logits `[B·vocab]`.
   */
  decode(seqs: readonly H2oSequence[], tokens: ArrayLike<number>): Float32Array {
    const batch = seqs.length;
    if (tokens.length !== batch)
      throw new RangeError(`H2oModel.decode: ${tokens.length} tokens for ${batch} sequences`);
    const positions = new Int32Array(batch);
    for (let i = 0; i < batch; i++) {
      const seq = seqs[i]!;
      if (seq.length === 0) throw new RangeError("H2oModel.decode: prefill the sequence first");
      this.model.transformer.checkLength(seq.length + 1, "sequence");
      positions[i] = seq.length;
    }
    const b = this.backend;
    const t = this.activations(batch);
    try {
      this.forward(t, Int32Array.from(tokens), positions, (layer, acts) => {
        const out = this.decodeAttention(seqs, layer, acts, positions);
        b.write(acts.attnFlat, out);
      });
      for (const seq of seqs) seq.length++;
      return this.logitsOf(t, 0, batch);
    } finally {
      for (const tensor of t.all) b.free(tensor);
    }
  }

  private decodeAttention(
    seqs: readonly H2oSequence[],
    layer: number,
    t: Activations,
    positions: Int32Array,
  ): Float32Array {
    const b = this.backend;
    const { heads, kvHeads, headDim: dim } = this.config;
    const group = heads / kvHeads;
    const scale = this.scale;
    const q = b.toHost(t.q) as Float32Array;
    const k = b.toHost(t.k) as Float32Array;
    const v = b.toHost(t.v) as Float32Array;
    const out = new Float32Array(seqs.length * heads * dim);
    const acc = new Float64Array(dim);
    let weights = new Float64Array(0);
    for (const [i, seq] of seqs.entries()) {
      const position = positions[i]!;
      for (let g = 0; g < kvHeads; g++) {
        const cache = seq.layers[layer]![g]!;
        const at = (i * kvHeads + g) * dim;
        cache.push(position, k.subarray(at, at + dim), v.subarray(at, at + dim));
        const size = cache.size;
        const keys = cache.keys;
        const values = cache.values;
        const scores = cache.scores;
        if (weights.length < size) weights = new Float64Array(cache.capacity);
        for (let h = g * group; h < (g + 1) * group; h++) {
          const qAt = (i * heads + h) * dim;
          let max = Number.NEGATIVE_INFINITY;
          for (let e = 0; e < size; e++) {
            const kAt = e * dim;
            // Four partial sums: independent chains the JIT can overlap.
            let d0 = 0;
            let d1 = 0;
            let d2 = 0;
            let d3 = 0;
            let c = 0;
            for (; c + 4 <= dim; c += 4) {
              d0 += q[qAt + c]! * keys[kAt + c]!;
              d1 += q[qAt + c + 1]! * keys[kAt + c + 1]!;
              d2 += q[qAt + c + 2]! * keys[kAt + c + 2]!;
              d3 += q[qAt + c + 3]! * keys[kAt + c + 3]!;
            }
            for (; c < dim; c++) d0 += q[qAt + c]! * keys[kAt + c]!;
            const w = (d0 + d1 + d2 + d3) * scale;
            weights[e] = w;
            if (w > max) max = w;
          }
          let sum = 0;
          for (let e = 0; e < size; e++) {
            const w = Math.exp(weights[e]! - max);
            weights[e] = w;
            sum += w;
          }
          const inv = 1 / sum;
          acc.fill(0);
          for (let e = 0; e < size; e++) {
            const p = weights[e]! * inv;
            scores[e]! += p;
            const vAt = e * dim;
            for (let c = 0; c < dim; c++) acc[c]! += p * values[vAt + c]!;
          }
          for (let c = 0; c < dim; c++) out[qAt + c] = acc[c]!;
        }
        if (cache.size > seq.budget.budget) cache.remove(cache.victim(position, seq.budget.recent));
      }
    }
    return out;
  }
}

export interface H2oGenerateOptions {
  readonly maxNewTokens: number;
  /** Ends a sequence once its generated text contains this string (the text is cut before it). */
  readonly stopString?: string;
  /** Token ids that end a sequence (default: the checkpoint's EOS ids). */
  readonly stopTokens?: readonly number[];
}

export interface H2oGeneration {
  readonly tokens: readonly number[];
  readonly text: string;
}

/**
 * Greedy generation for several prompts with H2O caches: each prompt is prefilled alone (its scores are its
 * own), then live sequences decode together. `budgets[i]` is prompt i's budget.
 */
export function h2oGenerate(
  h2o: H2oModel,
  prompts: readonly (readonly number[])[],
  budgets: readonly H2oBudget[],
  options: H2oGenerateOptions,
): H2oGeneration[] {
  const model = h2o.model;
  const stopTokens = new Set(options.stopTokens ?? model.config.eosTokenIds);
  const states = prompts.map((prompt, i) => {
    const seq = h2o.sequence(budgets[i]!);
    const logits = h2o.prefill(seq, prompt);
    return {
      seq,
      promptTokens: prompt.length,
      next: argmax(logits),
      tokens: [] as number[],
      text: "",
      done: false,
    };
  });
  const finish = (s: (typeof states)[number]): void => {
    if (stopTokens.has(s.next)) {
      s.done = true;
      return;
    }
    s.tokens.push(s.next);
    s.text = model.decode(s.tokens);
    const stop = options.stopString === undefined ? -1 : s.text.indexOf(options.stopString);
    if (stop >= 0) s.text = s.text.slice(0, stop);
    // As runtime's generate: prompt + generated tokens never exceed the context.
    const full = s.promptTokens + s.tokens.length >= model.maxLength;
    if (stop >= 0 || s.tokens.length >= options.maxNewTokens || full) s.done = true;
  };
  for (const s of states) finish(s);
  for (;;) {
    const live = states.filter((s) => !s.done);
    if (live.length === 0) break;
    const logits = h2o.decode(
      live.map((s) => s.seq),
      live.map((s) => s.next),
    );
    const vocab = model.config.vocabSize;
    live.forEach((s, row) => {
      s.next = argmax(logits.subarray(row * vocab, (row + 1) * vocab));
      finish(s);
    });
  }
  return states.map((s) => ({ tokens: s.tokens, text: s.text }));
}
