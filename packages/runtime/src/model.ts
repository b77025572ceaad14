/**
 * The decoder-only transformer (Llama, Mistral, Qwen2) as a sequence of Backend ops:
 * embedding → per layer [RMSNorm → q/k/v projections (+bias) → RoPE → KV append → attention (dense or MoA) →
 * o_proj → residual → RMSNorm → gate/up → SiLU·mul → down → residual] → final RMSNorm → lm_head (or the tied
 * embedding). Activations are fp32; weights stay in their stored dtype.
 *
 * With a plan, prefill attends under the plan's block mask at each prompt's length (DESIGN.md: Block mask) and
 * decode under the window mask, reading the elastic KV cache (sink + ring buffer per KV head).
 */
import { MoaError, type MoaPlan } from "@moa/core";
import type { Backend, MoaMask, Tensor } from "@moa/kernels-cuda";
import type { ModelConfig } from "./config.js";
import type { KvCache } from "./kv-cache.js";
import { ropeInvFreq } from "./rope.js";
import type { ModelWeights } from "./weights.js";

export const E_CONTEXT = "E_CONTEXT";

/** Rows of logits computed per lm_head call when every position's logits are wanted. */
const LOGIT_CHUNK = 256;

export type MaskMode = "block" | "window";

export interface PrefillSequence {
  /** KV cache slot (from `cache.allocateSlot()`), empty: prefill starts at position 0. */
  readonly slot: number;
  readonly tokens: ArrayLike<number>;
}

export interface PrefillOptions {
  /** "last" (default): one logit row per sequence; "all": a row for every position. */
  readonly logits?: "last" | "all";
  /** Mask of a planned model's prefill: "block" (default, DESIGN.md) or "window" (what decode computes). */
  readonly maskMode?: MaskMode;
}

/** Describes what bounds a sequence's length, for the error raised when a sequence would exceed it. */
export interface ContextLimit {
  readonly length: number;
  readonly source: string;
  readonly field: string;
}

/** Scratch tensors for up to `capacity` token rows; each call takes row views of them. */
class Workspace {
  readonly tensors: Tensor[] = [];
  readonly x: Tensor;
  readonly h: Tensor;
  readonly qFlat: Tensor;
  readonly kFlat: Tensor;
  readonly vFlat: Tensor;
  readonly attnFlat: Tensor;
  /** Per-head layouts [rows, heads, headDim]; separate storage only when the backend cannot reshape. */
  readonly q: Tensor | undefined;
  readonly k: Tensor | undefined;
  readonly v: Tensor | undefined;
  readonly attn: Tensor | undefined;
  readonly gate: Tensor;
  readonly up: Tensor;
  readonly act: Tensor;
  readonly ids: Tensor;
  readonly positions: Tensor;

  constructor(
    private readonly backend: Backend,
    config: ModelConfig,
    readonly capacity: number,
    canReshape: boolean,
  ) {
    const { hiddenSize: d, heads, kvHeads, headDim, intermediateSize: ff } = config;
    const make = (dtype: "f32" | "i32", shape: number[]): Tensor => {
      const t = backend.empty(dtype, shape);
      this.tensors.push(t);
      return t;
    };
    try {
      this.x = make("f32", [capacity, d]);
      this.h = make("f32", [capacity, d]);
      this.qFlat = make("f32", [capacity, heads * headDim]);
      this.kFlat = make("f32", [capacity, kvHeads * headDim]);
      this.vFlat = make("f32", [capacity, kvHeads * headDim]);
      this.attnFlat = make("f32", [capacity, heads * headDim]);
      if (!canReshape) {
        this.q = make("f32", [capacity, heads, headDim]);
        this.k = make("f32", [capacity, kvHeads, headDim]);
        this.v = make("f32", [capacity, kvHeads, headDim]);
        this.attn = make("f32", [capacity, heads, headDim]);
      }
      this.gate = make("f32", [capacity, ff]);
      this.up = make("f32", [capacity, ff]);
      this.act = make("f32", [capacity, ff]);
      this.ids = make("i32", [capacity]);
      this.positions = make("i32", [capacity]);
    } catch (error) {
      this.dispose();
      throw error;
    }
  }

  dispose(): void {
    for (const t of this.tensors.splice(0)) this.backend.free(t);
  }
}

interface Views {
  x: Tensor;
  h: Tensor;
  /** Projection outputs and the attention output as matmul sees them: [rows, heads·headDim]. */
  qFlat: Tensor;
  kFlat: Tensor;
  vFlat: Tensor;
  attnFlat: Tensor;
  /** The same as rope and attention see them: [rows, heads, headDim]. */
  q: Tensor;
  k: Tensor;
  v: Tensor;
  attn: Tensor;
  /** Whether q/k/v/attn share storage with their flat twins (else they are copied across). */
  shared: boolean;
  gate: Tensor;
  up: Tensor;
  act: Tensor;
  ids: Tensor;
  positions: Tensor;
}

export class TransformerModel {
  readonly invFreq: Tensor;
  readonly scale: number;
  private readonly blockMasks: MoaMask[] | undefined;
  private readonly windowMasks: MoaMask[] | undefined;
  private workspace: Workspace | undefined;
  private logitsBuffer: Tensor | undefined;
  private disposed = false;

  constructor(
    readonly backend: Backend,
    readonly config: ModelConfig,
    readonly weights: ModelWeights,
    readonly cache: KvCache,
    readonly limit: ContextLimit,
  ) {
    this.invFreq = backend.fromHost("f32", [config.headDim / 2], ropeInvFreq(config.rope));
    // transformers: `self.scaling = self.head_dim ** -0.5`.
    this.scale = config.headDim ** -0.5;
    const plan = cache.plan;
    if (plan !== undefined) {
      this.blockMasks = masksOf(plan, "block");
      this.windowMasks = masksOf(plan, "window");
    }
  }

  get plan(): MoaPlan | undefined {
    return this.cache.plan;
  }

  private views(rows: number): Views {
    const reshape = reshapeOf(this.backend);
    if (this.workspace === undefined || this.workspace.capacity < rows) {
      this.workspace?.dispose();
      this.workspace = undefined;
      this.workspace = new Workspace(this.backend, this.config, rows, reshape !== undefined);
    }
    const ws = this.workspace;
    const b = this.backend;
    const { heads, kvHeads, headDim } = this.config;
    const take = (t: Tensor): Tensor => (rows === ws.capacity ? t : b.rows(t, 0, rows));
    const qFlat = take(ws.qFlat);
    const kFlat = take(ws.kFlat);
    const vFlat = take(ws.vFlat);
    const attnFlat = take(ws.attnFlat);
    const perHead = (flat: Tensor, separate: Tensor | undefined, h: number): Tensor =>
      reshape !== undefined ? reshape(flat, [rows, h, headDim]) : take(separate!);
    return {
      x: take(ws.x),
      h: take(ws.h),
      qFlat,
      kFlat,
      vFlat,
      attnFlat,
      q: perHead(qFlat, ws.q, heads),
      k: perHead(kFlat, ws.k, kvHeads),
      v: perHead(vFlat, ws.v, kvHeads),
      attn: perHead(attnFlat, ws.attn, heads),
      shared: reshape !== undefined,
      gate: take(ws.gate),
      up: take(ws.up),
      act: take(ws.act),
      ids: take(ws.ids),
      positions: take(ws.positions),
    };
  }

  private logitRows(rows: number): Tensor {
    if (this.logitsBuffer === undefined || this.logitsBuffer.shape[0]! < rows) {
      if (this.logitsBuffer !== undefined) this.backend.free(this.logitsBuffer);
      this.logitsBuffer = undefined;
      this.logitsBuffer = this.backend.empty("f32", [rows, this.config.vocabSize]);
    }
    return this.logitsBuffer.shape[0] === rows
      ? this.logitsBuffer
      : this.backend.rows(this.logitsBuffer, 0, rows);
  }

  private checkAlive(): void {
    if (this.disposed) {
      throw new MoaError("E_ARGUMENT", "model: used after dispose()", { source: "model", field: "dispose" });
    }
  }

  /** Throws E_CONTEXT when a sequence of `length` tokens would not fit the model's context. */
  checkLength(length: number, what: string): void {
    if (length > this.limit.length) {
      throw new MoaError(
        E_CONTEXT,
        `${what} of ${length} tokens exceeds the context: ${this.limit.source}: ${this.limit.field} = ${this.limit.length}`,
        { source: this.limit.source, field: this.limit.field },
      );
    }
  }

  private checkTokens(tokens: ArrayLike<number>, what: string): void {
    const vocab = this.config.vocabSize;
    for (let i = 0; i < tokens.length; i++) {
      const t = tokens[i]!;
      if (!Number.isInteger(t) || t < 0 || t >= vocab) {
        throw new MoaError(
          "E_ARGUMENT",
          `${what}[${i}] = ${t}: token ids must be integers in [0, ${vocab - 1}]`,
          {
            source: what,
            field: `${what}[${i}]`,
          },
        );
      }
    }
  }

  /** Same elements, another shape: backend.ts has no reshape, so this goes through the host. */
  private copy(from: Tensor, to: Tensor): void {
    this.backend.write(to, this.backend.toHost(from));
  }

  /** The residual stream through every layer; `attend` runs attention of layer `l` from q/k/v into attn. */
  private layers(v: Views, attend: (layer: number, v: Views) => void): void {
    const b = this.backend;
    const eps = this.config.rmsNormEps;
    for (let l = 0; l < this.weights.layers.length; l++) {
      const w = this.weights.layers[l]!;
      b.rmsNorm(v.h, v.x, w.inputNorm, eps);
      b.matmul(v.qFlat, v.h, w.q, w.qBias);
      b.matmul(v.kFlat, v.h, w.k, w.kBias);
      b.matmul(v.vFlat, v.h, w.v, w.vBias);
      if (!v.shared) {
        this.copy(v.qFlat, v.q);
        this.copy(v.kFlat, v.k);
        this.copy(v.vFlat, v.v);
      }
      b.rope(v.q, v.positions, this.invFreq, 1);
      b.rope(v.k, v.positions, this.invFreq, 1);
      attend(l, v);
      if (!v.shared) this.copy(v.attn, v.attnFlat);
      b.matmul(v.h, v.attnFlat, w.o, w.oBias);
      b.add(v.x, v.x, v.h);
      b.rmsNorm(v.h, v.x, w.postNorm, eps);
      b.matmul(v.gate, v.h, w.gate, w.gateBias);
      b.matmul(v.up, v.h, w.up, w.upBias);
      b.siluMul(v.act, v.gate, v.up);
      b.matmul(v.h, v.act, w.down, w.downBias);
      b.add(v.x, v.x, v.h);
    }
    b.rmsNorm(v.h, v.x, this.weights.norm, eps);
  }

  /**
   * Runs whole prompts from position 0 for empty cache slots, packed into one pass, and caches their keys
   * and values. Returns one Float32Array of logits per sequence: `[vocab]` ("last") or `[length·vocab]` ("all").
   */
  prefill(sequences: readonly PrefillSequence[], options: PrefillOptions = {}): Float32Array[] {
    this.checkAlive();
    if (sequences.length === 0) return [];
    const { v, cuSeqlens, total } = this.forwardPrefill(sequences, options.maskMode);
    const b = this.backend;
    if (options.logits === "all") {
      // lm_head in chunks of rows, so the backend never holds more than LOGIT_CHUNK × vocab logits at once.
      const vocab = this.config.vocabSize;
      const host = new Float32Array(total * vocab);
      for (let start = 0; start < total; start += LOGIT_CHUNK) {
        const count = Math.min(LOGIT_CHUNK, total - start);
        const logits = this.logitRows(count);
        b.matmul(logits, b.rows(v.h, start, count), this.weights.lmHead);
        host.set(b.toHost(logits) as Float32Array, start * vocab);
      }
      return sequences.map((_, i) => host.subarray(cuSeqlens[i]! * vocab, cuSeqlens[i + 1]! * vocab));
    }
    const logits = this.logitRows(1);
    return sequences.map((_, i) => {
      b.matmul(logits, b.rows(v.h, cuSeqlens[i + 1]! - 1, 1), this.weights.lmHead);
      return b.toHost(logits) as Float32Array;
    });
  }

  /**
   * Prefills one sequence (an empty slot, as `prefill`) and returns the negative log-likelihood of each next
   * token from row `from` on: `nll[p − from] = −log p(tokens[p + 1] | tokens[0..p])` for p in [from, n − 1).
   * The log-softmax runs on the backend (crossEntropy, sums in double) in chunks of rows, so only these n − 1 −
   * from numbers reach the host, never the n × vocab logits (4 GiB for 8k tokens of a 128k vocabulary).
   */
  prefillNll(sequence: PrefillSequence, from: number, maskMode?: MaskMode): Float64Array {
    this.checkAlive();
    const n = sequence.tokens.length;
    if (!Number.isInteger(from) || from < 0 || from > Math.max(0, n - 1)) {
      throw new MoaError(
        "E_ARGUMENT",
        `prefillNll: from = ${from} must be an integer in [0, ${Math.max(0, n - 1)}]`,
        {
          source: "prefillNll",
          field: "from",
        },
      );
    }
    const { v } = this.forwardPrefill([sequence], maskMode);
    const b = this.backend;
    const out = new Float64Array(n - 1 - from);
    if (out.length === 0) return out;
    const chunk = Math.min(LOGIT_CHUNK, out.length);
    const logits = this.logitRows(chunk);
    const vocab = this.config.vocabSize;
    const dLogits = b.empty("f32", [chunk, vocab]);
    const losses = b.empty("f32", [chunk]);
    const targets = b.empty("i32", [chunk]);
    try {
      for (let first = 0; first < out.length; first += chunk) {
        const count = Math.min(chunk, out.length - first);
        const row = from + first;
        const rowTargets = b.rows(targets, 0, count);
        b.write(
          rowTargets,
          Int32Array.from({ length: count }, (_, i) => sequence.tokens[row + 1 + i]!),
        );
        const rowLogits = count === chunk ? logits : b.rows(logits, 0, count);
        b.matmul(rowLogits, b.rows(v.h, row, count), this.weights.lmHead);
        const rowLosses = b.rows(losses, 0, count);
        b.crossEntropy(rowLosses, b.rows(dLogits, 0, count), rowLogits, rowTargets, 0);
        out.set(b.toHost(rowLosses) as Float32Array, first);
      }
    } finally {
      for (const t of [dLogits, losses, targets]) b.free(t);
    }
    return out;
  }

  /** Embedding, every layer (caching keys and values) and the final norm of a packed prefill; v.h holds it. */
  private forwardPrefill(
    sequences: readonly PrefillSequence[],
    maskMode: MaskMode | undefined,
  ): { v: Views; cuSeqlens: Int32Array; total: number } {
    const cache = this.cache;
    const cuSeqlens = new Int32Array(sequences.length + 1);
    const seen = new Set<number>();
    for (const [i, seq] of sequences.entries()) {
      if (seq.tokens.length === 0) {
        throw new MoaError("E_ARGUMENT", `prefill: sequences[${i}].tokens is empty`, {
          source: "prefill",
          field: `sequences[${i}].tokens`,
        });
      }
      if (cache.length(seq.slot) !== 0 || seen.has(seq.slot)) {
        throw new MoaError("E_ARGUMENT", `prefill: sequences[${i}].slot = ${seq.slot} is not an empty slot`, {
          source: "prefill",
          field: `sequences[${i}].slot`,
        });
      }
      seen.add(seq.slot);
      this.checkLength(seq.tokens.length, "prompt");
      this.checkTokens(seq.tokens, "prompt");
      cuSeqlens[i + 1] = cuSeqlens[i]! + seq.tokens.length;
    }
    const total = cuSeqlens[sequences.length]!;
    const ids = new Int32Array(total);
    const positions = new Int32Array(total);
    const slots = new Int32Array(total);
    for (const [i, seq] of sequences.entries()) {
      const start = cuSeqlens[i]!;
      for (let p = 0; p < seq.tokens.length; p++) {
        ids[start + p] = seq.tokens[p]!;
        positions[start + p] = p;
        slots[start + p] = seq.slot;
      }
    }

    const b = this.backend;
    const v = this.views(total);
    b.write(v.ids, ids);
    b.write(v.positions, positions);
    b.embedding(v.x, v.ids, this.weights.embed);
    const masks = maskMode === "window" ? this.windowMasks : this.blockMasks;
    const appendRuns = this.appendRuns(cuSeqlens);
    this.layers(v, (l, views) => {
      const layerCache = cache.layers[l]!;
      for (const [start, count] of appendRuns) {
        const k = b.rows(views.k, start, count);
        const val = b.rows(views.v, start, count);
        b.kvAppend(
          layerCache,
          k,
          val,
          slots.subarray(start, start + count),
          positions.subarray(start, start + count),
        );
      }
      b.attentionPrefill(views.attn, views.q, views.k, views.v, cuSeqlens, this.scale, masks?.[l]);
    });
    for (const seq of sequences) cache.setLength(seq.slot, seq.tokens.length);
    return { v, cuSeqlens, total };
  }

  /**
   * Token rows of a packed prefill to append to the cache, as [start, count] runs: the sink and the tokens a
   * ring keeps at the end (earlier ones would be overwritten), in runs no longer than the smallest ring, so no
   * run writes one cache entry twice whatever order a kernel writes in.
   */
  private appendRuns(cuSeqlens: Int32Array): Array<[number, number]> {
    const runs: Array<[number, number]> = [];
    const sink = this.cache.sinkTokens;
    const maxRing = this.cache.maxRingCap();
    const chunk = Math.max(1, this.cache.minRingCap());
    for (let i = 0; i + 1 < cuSeqlens.length; i++) {
      const start = cuSeqlens[i]!;
      const length = cuSeqlens[i + 1]! - start;
      const sinkRows = Math.min(sink, length);
      if (sinkRows > 0) runs.push([start, sinkRows]);
      const tailFrom = Math.max(sinkRows, length - maxRing);
      for (let p = tailFrom; p < length; p += chunk) runs.push([start + p, Math.min(chunk, length - p)]);
    }
    return runs;
  }

  /**
   * One decode step for several sequences: `tokens[b]` is appended to slot `slots[b]` at the slot's next
   * position. Returns the logits `[B·vocab]` (row b for sequence b).
   */
  decode(slots: Int32Array, tokens: ArrayLike<number>): Float32Array {
    this.checkAlive();
    const batch = slots.length;
    if (tokens.length !== batch) {
      throw new MoaError("E_ARGUMENT", `decode: ${tokens.length} tokens for ${batch} slots`, {
        source: "decode",
        field: "tokens",
      });
    }
    this.checkTokens(tokens, "tokens");
    const positions = new Int32Array(batch);
    const seqLens = new Int32Array(batch);
    const seen = new Set<number>();
    for (let i = 0; i < batch; i++) {
      const slot = slots[i]!;
      if (seen.has(slot)) {
        throw new MoaError("E_ARGUMENT", `decode: slot ${slot} appears twice in one step`, {
          source: "decode",
          field: "slots",
        });
      }
      seen.add(slot);
      const length = this.cache.length(slot);
      if (length === 0) {
        throw new MoaError("E_ARGUMENT", `decode: slot ${slot} has no prompt; prefill it first`, {
          source: "decode",
          field: "slots",
        });
      }
      this.checkLength(length + 1, "sequence");
      positions[i] = length;
      seqLens[i] = length + 1;
    }
    const b = this.backend;
    const v = this.views(batch);
    b.write(v.ids, Int32Array.from(tokens));
    b.write(v.positions, positions);
    b.embedding(v.x, v.ids, this.weights.embed);
    this.layers(v, (l, views) => {
      const layerCache = this.cache.layers[l]!;
      b.kvAppend(layerCache, views.k, views.v, slots, positions);
      b.attentionDecode(views.attn, views.q, layerCache, slots, seqLens, this.scale, this.windowMasks?.[l]);
    });
    for (let i = 0; i < batch; i++) this.cache.setLength(slots[i]!, seqLens[i]!);
    const logits = this.logitRows(batch);
    b.matmul(logits, v.h, this.weights.lmHead);
    return b.toHost(logits) as Float32Array;
  }

  /**
   * Frees the scratch tensors sized by the longest call so far (a long prefill's activations, the logits
   * buffer); the next call allocates what it needs. Weights and cache stay. Lets a server (or a benchmark)
   * give a long prefill's working memory back to the KV cache.
   */
  releaseScratch(): void {
    this.checkAlive();
    this.workspace?.dispose();
    this.workspace = undefined;
    if (this.logitsBuffer !== undefined) this.backend.free(this.logitsBuffer);
    this.logitsBuffer = undefined;
  }

  /** Frees the backend tensors (weights, scratch, cache). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.workspace?.dispose();
    if (this.logitsBuffer !== undefined) this.backend.free(this.logitsBuffer);
    this.backend.free(this.invFreq);
    for (const t of this.weights.all) this.backend.free(t);
    this.cache.dispose();
  }
}

/**
 * A backend's `reshape(t, shape)` (a view of the same elements with another shape), if it has one. backend.ts
 * does not list it: without it, matmul outputs [rows, heads·headDim] are copied into [rows, heads, headDim]
 * tensors for rope and attention (and back for o_proj), which is correct but costs a host round trip.
 */
type Reshape = (t: Tensor, shape: readonly number[]) => Tensor;

function reshapeOf(backend: Backend): Reshape | undefined {
  const candidate = (backend as Backend & { reshape?: unknown }).reshape;
  return typeof candidate === "function" ? (candidate.bind(backend) as Reshape) : undefined;
}

function masksOf(plan: MoaPlan, mode: MaskMode): MoaMask[] {
  return plan.rules.map((layer) => ({
    mode,
    alpha: Float32Array.from(layer, (r) => r.alpha),
    beta: Float32Array.from(layer, (r) => r.beta),
    blockSize: plan.blockSize,
    sinkTokens: plan.sinkTokens,
  }));
}
