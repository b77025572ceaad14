/**
 * The profiling backward pass (DESIGN.md: Attention influence, Profile): one dense forward over a calibration
 * sequence, the mean cross-entropy over its answer tokens, and activation gradients (never weight gradients)
 * back through every layer down to the embeddings, with the MoA attention influence summed over 64×64 blocks
 * accumulated inside each layer's attention backward.
 *
 * Memory: the forward keeps each layer's input (the residual stream, [n, hidden] per layer) and, for as many
 * layers as the device's free memory holds (a margin left for the ops' scratch), that layer's activations too
 * (q, k, v, attention output and statistics, the MLP's gate and up); the backward recomputes the activations of
 * the other layers from their input, one layer at a time, with the MLP (row-local) in chunks of rows. Kept or
 * recomputed, the values are the same bits (the ops are deterministic): keeping only saves the second forward.
 * Logits exist only for the answer rows, in chunks too. A model loaded with a plan is still profiled dense: the
 * influence is defined on dense attention.
 *
 * Precision: every matmul runs `exact` (on CUDA, the profiler's precision instead of x rounded to bf16 as in
 * inference: see Backend.matmul). Rounding x to bf16 moves single blocks of the influence by 3–5% on
 * moa-nano/moa-tiny (measured), past what the profile is compared against. The GEMMs' operand copies are pinned
 * (Backend.pinHalfCopies) where one operand feeds several GEMMs: a 16-bit model's weights when memory is left
 * after the plan above (for the pass, or with a `session` from one call to the next), and each normed input
 * for the projections that read it (q, k, v; gate, up), and each layer's q, k and v from its attention forward
 * to its attention backward (both read them as fp16 copies). The inputs that only GEMMs and the attention ops read
 * (the normed inputs, the MLP's activation and its gradients, the rotated q, k, dq and dk) are written by their
 * ops as the fp16 copy alone (Backend.pinHalfOutputs).
 * Pinned or not, the results are the same bits.
 *
 * Rows: layer 0's backward stops at its influence (the gradient at the embeddings is not needed: its attention
 * backward writes no dq, dk, dv), and the last layer computes its output projection and MLP, forward and backward,
 * and its attention backward only on the rows from answerStart − 1 on: its other rows reach the loss only
 * through its keys and values.
 */
import { MoaError } from "@moa/core";
import type { Backend, Tensor } from "@moa/kernels-cuda";
import type { Model } from "./load.js";
import type { TransformerModel } from "./model.js";

/** Block size of the influence (DESIGN.md: Definitions, B). */
export const INFLUENCE_BLOCK_SIZE = 64;

/** Rows per MLP chunk and per chunk of answer logits. */
const ROW_CHUNK = 1024;

/**
 * Tensors below this many elements are not pinned (Backend.pinHalfCopies): a second conversion of a small tensor
 * costs less than a pin's allocation and launches, and a small model's pass is bound by launches (moa-tiny at 4k
 * tokens took 9 → 11 ms with every weight pinned, on an H100).
 */
const PIN_MIN_ELEMENTS = 1 << 22;

/** Free memory left for the ops' scratch (operand copies, cuBLAS) when deciding how many layers to keep. */
const KEEP_MARGIN_BYTES = 2 * 2 ** 30;
const KEEP_MARGIN_FRACTION = 0.08;

export interface InfluenceProfile {
  /** Mean cross-entropy over the answer tokens (targets at positions answerStart … n−1), in nats. */
  readonly loss: number;
  /**
   * Block influence, float32 `[layers, heads, blocks, blocks]` (query heads; `blocks = ceil(n / 64)`): the sum of
   * |E_ij| over each causal 64×64 block (query block, key block); blocks above the diagonal are 0.
   */
  readonly influence: Float32Array;
  /** Blocks per side, `ceil(n / 64)`. */
  readonly blocks: number;
  /** Layers whose activations the forward kept (the others were recomputed in the backward). */
  readonly keptLayers: number;
}

export interface InfluenceOptions {
  /**
   * At most this many layers keep their forward activations for the backward (default: as many as the device's
   * free memory holds); 0 recomputes every layer, the least memory. The result is the same either way.
   */
  readonly keepLayers?: number;
  /**
   * Resources kept from this call to the next one given the same session (a profile of many samples): the fp16
   * copies of a 16-bit model's weights, converted once instead of once per sample, and the host array the
   * influence is read into. With a session the returned `influence` is that array: the session's next call of
   * the same length overwrites it (copy it to keep it). The result is the same either way.
   */
  readonly session?: InfluenceSession;
}

/**
 * What profileInfluence keeps from one call to the next (InfluenceOptions.session). The weights' scaled fp16
 * copies (Backend.pinHalfCopies) are pinned by a call when the device has the memory left after its
 * activations and handed back first by a call that needs that memory (a longer sequence); `release()` frees
 * them (they take about the weights' size again). The influence's host array is reused by calls of the same
 * block count: a fresh one of tens of MB costs its page faults on every call (~10 ms on a virtual machine).
 */
export class InfluenceSession {
  private held: readonly Tensor[] = [];
  private unpin: (() => void) | undefined;
  private bytes = 0;
  private hostInfluence: Float32Array | undefined;

  /** Device memory the weight copies take now, in bytes. */
  get heldBytes(): number {
    return this.unpin === undefined ? 0 : this.bytes;
  }

  /** Whether the weight copies held now are of exactly these tensors. */
  holds(tensors: readonly Tensor[]): boolean {
    return (
      this.unpin !== undefined &&
      tensors.length === this.held.length &&
      tensors.every((t, i) => t === this.held[i])
    );
  }

  /** Pins copies of `tensors` unless they are the ones held (others held are released first). */
  ensure(backend: Backend, tensors: readonly Tensor[]): void {
    if (this.holds(tensors)) return;
    this.releaseCopies();
    this.unpin = backend.pinHalfCopies(tensors);
    this.held = [...tensors];
    this.bytes = backend.halfCopyBytes(tensors);
  }

  /** The host array for an influence of `length` floats (the last one when it has that length). */
  influenceArray(length: number): Float32Array {
    if (this.hostInfluence?.length !== length) this.hostInfluence = new Float32Array(length);
    return this.hostInfluence;
  }

  /** Frees the weight copies (a no-op when none are held). */
  releaseCopies(): void {
    const unpin = this.unpin;
    this.unpin = undefined;
    this.held = [];
    this.bytes = 0;
    unpin?.();
  }

  /** Frees the weight copies and drops the host array. Idempotent; the session can still be used after. */
  release(): void {
    this.releaseCopies();
    this.hostInfluence = undefined;
  }
}

/**
 * Profiles one sequence: `ids` (BOS included, as the model reads it) whose answer starts at `answerStart`. The
 * loss is the mean cross-entropy of predicting tokens answerStart … n−1 (logit rows answerStart−1 … n−2), the
 * loss of DESIGN.md: Profile; the influence is its MoA attention influence per layer and query head.
 */
export function profileInfluence(
  model: Model | TransformerModel,
  ids: ArrayLike<number>,
  answerStart: number,
  options: InfluenceOptions = {},
): InfluenceProfile {
  const transformer = "transformer" in model ? model.transformer : model;
  checkInput(transformer, ids, answerStart);
  const keepLayers = options.keepLayers ?? Number.POSITIVE_INFINITY;
  if (!(keepLayers >= 0) || (Number.isFinite(keepLayers) && !Number.isInteger(keepLayers))) {
    fail("keepLayers", `keepLayers = ${keepLayers} must be a non-negative integer`);
  }
  const pass = new InfluencePass(transformer, ids.length, keepLayers, options.session);
  try {
    return pass.run(ids, answerStart);
  } finally {
    pass.dispose();
  }
}

function elements(t: Tensor): number {
  return t.shape.reduce((count, dim) => count * dim, 1);
}

function fail(field: string, message: string): never {
  throw new MoaError("E_ARGUMENT", `profileInfluence: ${message}`, { source: "profileInfluence", field });
}

function checkInput(model: TransformerModel, ids: ArrayLike<number>, answerStart: number): void {
  const n = ids.length;
  if (n < 2) fail("ids", `ids has ${n} token(s); a profile needs at least 2 (a prompt and an answer token)`);
  model.checkLength(n, "profiled sequence");
  const vocab = model.config.vocabSize;
  for (let i = 0; i < n; i++) {
    const id = ids[i]!;
    if (!Number.isInteger(id) || id < 0 || id >= vocab) {
      fail(`ids[${i}]`, `ids[${i}] = ${id}: token ids must be integers in [0, ${vocab - 1}]`);
    }
  }
  if (!Number.isInteger(answerStart) || answerStart < 1 || answerStart > n - 1) {
    fail("answerStart", `answerStart = ${answerStart} must be an integer in [1, ${n - 1}] for ${n} tokens`);
  }
}

/**
 * One layer's activations as the backward reads them. The pass's shared set (recomputed per layer) has gate and
 * up of one row chunk; a kept layer's set has them for all n rows (`fullRows`).
 */
interface LayerActivations {
  readonly qFlat: Tensor;
  readonly kFlat: Tensor;
  readonly vFlat: Tensor;
  readonly attnFlat: Tensor;
  readonly q: Tensor;
  readonly k: Tensor;
  readonly v: Tensor;
  readonly attn: Tensor;
  readonly stats: Tensor;
  readonly xMid: Tensor;
  readonly gate: Tensor;
  readonly up: Tensor;
  /** A kept layer's set: gate and up hold all n rows and are not recomputed in the backward. */
  readonly fullRows: boolean;
}

/** The tensors of one profiling pass over n tokens, allocated once and freed by `dispose`. */
class InfluencePass {
  private readonly b: Backend;
  private readonly owned: Tensor[] = [];
  private readonly n: number;
  private readonly cuSeqlens: Int32Array;
  private readonly blocks: number;
  private readonly chunk: number;

  // Inputs.
  private readonly ids: Tensor;
  private readonly positions: Tensor;
  private readonly negatedPositions: Tensor;
  /** layerInputs[l]: the residual stream entering layer l; layerInputs[L]: the final hidden state. */
  private readonly layerInputs: (Tensor | undefined)[];

  // One layer's activations (recomputed in the backward unless the layer's own set is kept).
  private readonly h: Tensor;
  private readonly shared: LayerActivations | undefined;
  /** kept[l]: layer l's activations from the forward, or undefined (recomputed from its input). */
  private readonly kept: (LayerActivations | undefined)[] = [];
  private readonly projected: Tensor;
  private readonly act: Tensor;

  // Gradients.
  private readonly dx: Tensor;
  private readonly dh: Tensor;
  private readonly dAttnFlat: Tensor;
  private readonly dAttn: Tensor;
  private readonly dqFlat: Tensor;
  private readonly dkFlat: Tensor;
  private readonly dvFlat: Tensor;
  private readonly dq: Tensor;
  private readonly dk: Tensor;
  private readonly dv: Tensor;
  private readonly dGate: Tensor;
  private readonly dUp: Tensor;

  /** [layers, heads, blocks, blocks]. */
  private readonly influence: Tensor;
  /**
   * The first row the last layer computes past its attention (answerStart − 1, set by `run`): the loss reads
   * only the rows that predict answer tokens, and nothing reads the last layer's other rows beyond its keys and
   * values, so its output projection and MLP run on rows [answerRows, n) only, forward and backward.
   */
  private answerRows = 0;

  /** Whether the matmuls read 16-bit weights (the only ones with fp16 operand copies worth pinning). */
  private readonly halfWeights: boolean;
  /**
   * Whether every projection weight is 16-bit, so every GEMM reads its input's fp16 copy: then rmsNorm, siluMul
   * and siluMulBackward write only that copy of the GEMMs' inputs (Backend.pinHalfOutputs).
   */
  private readonly halfInputs: boolean;
  /**
   * Per layer, the release of the fp16 copies of its q, k and v (Backend.pinHalfCopies), made for its attention
   * forward and read again by its attention backward: a kept layer holds them from the forward to its backward.
   */
  private readonly attentionPins: ((() => void) | undefined)[] = [];
  /** The 16-bit weights pinned for the pass when memory allows (empty otherwise). */
  private readonly pinnedWeights: readonly Tensor[] = [];

  constructor(
    private readonly model: TransformerModel,
    n: number,
    keepLimit: number,
    private readonly session: InfluenceSession | undefined,
  ) {
    this.b = model.backend;
    this.n = n;
    this.cuSeqlens = Int32Array.of(0, n);
    this.blocks = Math.ceil(n / INFLUENCE_BLOCK_SIZE);
    const { hiddenSize: d, heads, kvHeads, headDim, intermediateSize: ff, layers } = model.config;
    const qDim = heads * headDim;
    const kvDim = kvHeads * headDim;
    const b = this.b;
    // Memory plan, from what the device has free now: the fixed buffers, the layer inputs, then as many layers'
    // activations as fit; when every layer fits, the MLP also runs on all n rows at once (no row chunks: fewer,
    // larger GEMMs), else in chunks of ROW_CHUNK rows.
    const rowBytes = 4 * n;
    const fixedBytes =
      rowBytes * (5 * d + 2 * qDim + 2 * kvDim) + 4 * layers * heads * this.blocks * this.blocks;
    const inputBytes = rowBytes * d * layers;
    // A kept layer's activations, and the fp16 copies of its q, k and v (attentionPins).
    const layerBytes =
      rowBytes * (2 * qDim + 2 * kvDim + 2 * heads + d + 2 * ff) + 2 * n * (qDim + 2 * kvDim);
    const sharedBytes = (mlpRows: number) =>
      rowBytes * (2 * qDim + 2 * kvDim + 2 * heads + d) + 4 * mlpRows * 2 * ff;
    const mlpScratchBytes = (mlpRows: number) => 4 * mlpRows * 3 * ff;
    // Copies held from an earlier call count as free: this plan decides whether they stay.
    const weights = model.weights;
    const projections = weights.layers.flatMap((w) => [w.q, w.k, w.v, w.o, w.gate, w.up, w.down]);
    this.halfWeights = projections.some((w) => w.dtype !== "f32");
    this.halfInputs = projections.every((w) => w.dtype !== "f32");
    const bf16 = [...projections, weights.lmHead].filter(
      (w) => w.dtype === "bf16" && elements(w) >= PIN_MIN_ELEMENTS,
    );
    if (session !== undefined && !session.holds(bf16)) session.releaseCopies();
    const memory = b.memoryInfo();
    const free = memory.free + (session?.heldBytes ?? 0);
    const total = memory.total;
    const spare = free - fixedBytes - inputBytes - Math.max(KEEP_MARGIN_BYTES, KEEP_MARGIN_FRACTION * total);
    let keep: number;
    let left: number;
    if (keepLimit >= layers && spare - mlpScratchBytes(n) >= layers * layerBytes) {
      keep = layers;
      this.chunk = n;
      left = spare - mlpScratchBytes(n) - layers * layerBytes;
    } else {
      this.chunk = Math.min(n, ROW_CHUNK);
      const afterShared = spare - mlpScratchBytes(this.chunk) - sharedBytes(this.chunk);
      keep = Math.max(0, Math.min(layers, keepLimit, Math.floor(afterShared / layerBytes)));
      left = afterShared - keep * layerBytes;
    }
    // The weights' fp16 copies only with what the activations left: keeping a layer saves a recomputation,
    // a pinned weight only its second conversion.
    if (bf16.length > 0 && b.halfCopyBytes(bf16) <= left) this.pinnedWeights = bf16;
    else session?.releaseCopies();
    try {
      this.ids = this.make("i32", [n]);
      this.positions = this.make("i32", [n]);
      this.negatedPositions = this.make("i32", [n]);
      this.layerInputs = [this.make("f32", [n, d])];
      this.h = this.make("f32", [n, d]);
      // The recomputed layers' set, needed only when some layer is not kept.
      this.shared = keep < layers ? this.activations(this.chunk, false) : undefined;
      this.projected = this.make("f32", [n, d]);
      this.act = this.make("f32", [this.chunk, ff]);
      // Zero on the rows that predict no answer token (lossBackward writes the others).
      this.dx = this.make("f32", [n, d], true);
      this.dh = this.make("f32", [n, d]);
      // Zero: the last layer's backward (the first to run) writes only its answer rows.
      this.dAttnFlat = this.make("f32", [n, qDim], true);
      this.dAttn = b.reshape(this.dAttnFlat, [n, heads, headDim]);
      this.dqFlat = this.make("f32", [n, qDim]);
      this.dkFlat = this.make("f32", [n, kvDim]);
      this.dvFlat = this.make("f32", [n, kvDim]);
      this.dq = b.reshape(this.dqFlat, [n, heads, headDim]);
      this.dk = b.reshape(this.dkFlat, [n, kvHeads, headDim]);
      this.dv = b.reshape(this.dvFlat, [n, kvHeads, headDim]);
      this.dGate = this.make("f32", [this.chunk, ff]);
      this.dUp = this.make("f32", [this.chunk, ff]);
      this.influence = this.make("f32", [layers, heads, this.blocks, this.blocks], true);
      for (let l = 0; l < layers; l++) this.kept.push(l < keep ? this.activations(n, true) : undefined);
    } catch (error) {
      this.dispose();
      throw error;
    }
  }

  /** Layers whose activations the forward keeps (the rest are recomputed in the backward). */
  get keptLayers(): number {
    return this.kept.filter((set) => set !== undefined).length + this.releasedKept;
  }
  private releasedKept = 0;

  /** One layer's activation tensors, gate and up with `mlpRows` rows; `kept`: they hold the layer for the backward. */
  private activations(mlpRows: number, kept: boolean): LayerActivations {
    const { hiddenSize: d, heads, kvHeads, headDim, intermediateSize: ff } = this.model.config;
    const n = this.n;
    const b = this.b;
    const qFlat = this.make("f32", [n, heads * headDim]);
    const kFlat = this.make("f32", [n, kvHeads * headDim]);
    const vFlat = this.make("f32", [n, kvHeads * headDim]);
    const attnFlat = this.make("f32", [n, heads * headDim]);
    return {
      qFlat,
      kFlat,
      vFlat,
      attnFlat,
      q: b.reshape(qFlat, [n, heads, headDim]),
      k: b.reshape(kFlat, [n, kvHeads, headDim]),
      v: b.reshape(vFlat, [n, kvHeads, headDim]),
      attn: b.reshape(attnFlat, [n, heads, headDim]),
      stats: this.make("f32", [n, heads, 2]),
      xMid: this.make("f32", [n, d]),
      gate: this.make("f32", [mlpRows, ff]),
      up: this.make("f32", [mlpRows, ff]),
      fullRows: kept,
    };
  }

  /** A pass buffer; every one is written before it is read, except those made with `zero` (accumulated into). */
  private make(dtype: "f32" | "i32", shape: number[], zero = false): Tensor {
    const t = this.b.empty(dtype, shape, { uninitialized: !zero });
    this.owned.push(t);
    return t;
  }

  dispose(): void {
    for (const t of this.owned.splice(0)) this.b.free(t);
  }

  /** Rows [start, start + count) of a tensor, or the tensor itself when that is all of it. */
  private rows(t: Tensor, start: number, count: number): Tensor {
    return start === 0 && count === t.shape[0] ? t : this.b.rows(t, start, count);
  }

  run(ids: ArrayLike<number>, answerStart: number): InfluenceProfile {
    const b = this.b;
    const n = this.n;
    const layers = this.model.weights.layers.length;
    const hostIds = Int32Array.from(ids);
    b.write(this.ids, hostIds);
    b.write(
      this.positions,
      Int32Array.from({ length: n }, (_, p) => p),
    );
    // RoPE's backward is the rotation by −θ (Backend.rope: negative positions).
    b.write(
      this.negatedPositions,
      Int32Array.from({ length: n }, (_, p) => -p),
    );
    // The answer tokens' targets go up now and their losses come back at the end, with the influence: a write or
    // a read in between would make the host wait for the GPU mid-pass.
    const answers = n - answerStart;
    this.answerRows = answerStart - 1;
    const targets = this.make("i32", [answers]);
    const losses = this.make("f32", [answers]);
    b.write(targets, hostIds.subarray(answerStart, n));

    let unpinWeights = () => {};
    if (this.session === undefined) unpinWeights = b.pinHalfCopies(this.pinnedWeights);
    else if (this.pinnedWeights.length > 0) this.session.ensure(b, this.pinnedWeights);
    try {
      // Forward, keeping each layer's input (and the activations of the kept layers).
      b.embedding(this.layerInputs[0]!, this.ids, this.model.weights.embed);
      for (let l = 0; l < layers; l++) {
        const next = this.make("f32", [n, this.model.config.hiddenSize]);
        const acts = this.kept[l] ?? this.shared!;
        this.attentionForward(l, this.layerInputs[l]!, acts);
        // The shared set is overwritten by the next layer: its copies go (the last layer's stay, as its set).
        if (this.kept[l] === undefined && l < layers - 1) this.releaseAttentionPins(l);
        this.mlpForward(l, next, acts);
        this.layerInputs.push(next);
      }

      this.lossBackward(answerStart, targets, losses);
      this.release(layers);
      for (let l = layers - 1; l >= 0; l--) {
        const kept = this.kept[l];
        // A recomputed layer: the last one's activations are still in the shared set from the forward.
        if (kept === undefined && l < layers - 1)
          this.attentionForward(l, this.layerInputs[l]!, this.shared!);
        const acts = kept ?? this.shared!;
        this.mlpBackward(l, acts);
        this.attentionBackward(l, this.layerInputs[l]!, acts);
        this.releaseAttentionPins(l);
        this.release(l);
        if (kept !== undefined) this.releaseActivations(l, kept);
      }
    } finally {
      for (let l = 0; l < this.attentionPins.length; l++) this.releaseAttentionPins(l);
      unpinWeights();
    }
    let total = 0;
    for (const value of b.toHost(losses) as Float32Array) total += value;
    return {
      loss: total / answers,
      influence:
        this.session === undefined
          ? (b.toHost(this.influence) as Float32Array)
          : (b.toHost(this.influence, this.session.influenceArray(elements(this.influence))) as Float32Array),
      blocks: this.blocks,
      keptLayers: this.keptLayers,
    };
  }

  /** Frees a kept layer's activations once its backward ran (the count of kept layers is taken before). */
  private releaseActivations(l: number, acts: LayerActivations): void {
    for (const t of [
      acts.qFlat,
      acts.kFlat,
      acts.vFlat,
      acts.attnFlat,
      acts.stats,
      acts.xMid,
      acts.gate,
      acts.up,
    ]) {
      this.owned.splice(this.owned.indexOf(t), 1);
      this.b.free(t);
    }
    this.releasedKept++;
    this.kept[l] = undefined;
  }

  /** Releases the fp16 copies of layer l's q, k and v, if it holds them. */
  private releaseAttentionPins(l: number): void {
    const unpin = this.attentionPins[l];
    this.attentionPins[l] = undefined;
    unpin?.();
  }

  /** Frees a layer input once the backward no longer needs it. */
  private release(l: number): void {
    const t = this.layerInputs[l];
    if (t === undefined) return;
    this.layerInputs[l] = undefined;
    this.owned.splice(this.owned.indexOf(t), 1);
    this.b.free(t);
  }

  /** h = RMSNorm(x); q, k, v (+bias), RoPE; attention with its softmax statistics; xMid = x + o_proj(attn). */
  private attentionForward(l: number, x: Tensor, acts: LayerActivations): void {
    const b = this.b;
    const w = this.model.weights.layers[l]!;
    const first = this.firstRow(l);
    // q on every row even for the last layer, whose attention needs only its answer rows: the fp16 copy of q takes
    // its scale from q's maximum over all rows, and moa-tiny's influence parity moved from 1.4% to 2.3% when the
    // last layer's q came from its answer rows' tile alone (measured on an H100).
    this.gemmInput(
      [this.h],
      () => b.rmsNorm(this.h, x, w.inputNorm, this.model.config.rmsNormEps),
      () => {
        b.matmul(acts.qFlat, this.h, w.q, w.qBias, true);
        b.matmul(acts.kFlat, this.h, w.k, w.kBias, true);
        b.matmul(acts.vFlat, this.h, w.v, w.vBias, true);
      },
    );
    this.releaseAttentionPins(l);
    const headDim = this.model.config.headDim;
    // Head dims 64 and 128: the CUDA attention kernels' (other head dims run the CPU reference on host copies of
    // q and k, which must then hold their values).
    const attentionKernel = headDim === 64 || headDim === 128;
    if (this.halfWeights && this.halfInputs && attentionKernel && elements(acts.k) >= PIN_MIN_ELEMENTS) {
      // The attention ops read q, k and v only as fp16 copies: RoPE writes q's and k's (not q and k themselves).
      const unpinRotated = b.pinHalfOutputs([acts.q, acts.k]);
      b.rope(acts.q, this.positions, this.model.invFreq, 1);
      b.rope(acts.k, this.positions, this.model.invFreq, 1);
      const unpinV = b.pinHalfCopies([acts.v]);
      this.attentionPins[l] = () => {
        unpinV();
        unpinRotated();
      };
    } else {
      b.rope(acts.q, this.positions, this.model.invFreq, 1);
      b.rope(acts.k, this.positions, this.model.invFreq, 1);
      if (this.halfWeights && elements(acts.k) >= PIN_MIN_ELEMENTS) {
        this.attentionPins[l] = b.pinHalfCopies([acts.q, acts.k, acts.v]);
      }
    }
    b.attentionPrefill(
      acts.attn,
      acts.q,
      acts.k,
      acts.v,
      this.cuSeqlens,
      this.model.scale,
      undefined,
      acts.stats,
      { queryStart: first },
    );
    const count = this.n - first;
    const projected = this.rows(this.projected, first, count);
    b.matmul(projected, this.rows(acts.attnFlat, first, count), w.o, w.oBias, true);
    b.add(this.rows(acts.xMid, first, count), this.rows(x, first, count), projected);
  }

  /** The first row layer l computes past its attention: 0, or the answer rows for the last layer. */
  private firstRow(l: number): number {
    return l === this.model.weights.layers.length - 1 ? this.answerRows : 0;
  }

  /**
   * `produce` writes `inputs`, which only the GEMMs of `projections` read. With 16-bit weights each input's fp16
   * operand copy is made once for all of them: written by `produce` itself in place of the input
   * (Backend.pinHalfOutputs) — saving the f32 write and the conversion's two reads — or converted after it.
   */
  private gemmInput(inputs: readonly Tensor[], produce: () => void, projections: () => void): void {
    const b = this.b;
    const pinned = this.halfWeights && inputs.every((t) => elements(t) >= PIN_MIN_ELEMENTS);
    let unpin = () => {};
    try {
      if (pinned && this.halfInputs) {
        unpin = b.pinHalfOutputs(inputs);
        produce();
      } else {
        produce();
        if (pinned) unpin = b.pinHalfCopies(inputs);
      }
      projections();
    } finally {
      unpin();
    }
  }

  /** Rows [start, start + count) of a layer's gate or up (a chunk buffer's first rows when not kept whole). */
  private mlpRows(t: Tensor, acts: LayerActivations, start: number, count: number): Tensor {
    return this.rows(t, acts.fullRows ? start : 0, count);
  }

  /** out = xMid + down(silu(gate(h)) · up(h)), h = RMSNorm(xMid), in chunks of rows. */
  private mlpForward(l: number, out: Tensor, acts: LayerActivations): void {
    const b = this.b;
    const w = this.model.weights.layers[l]!;
    for (let start = this.firstRow(l); start < this.n; start += this.chunk) {
      const count = Math.min(this.chunk, this.n - start);
      const xMid = this.rows(acts.xMid, start, count);
      const h = this.rows(this.h, start, count);
      const gate = this.mlpRows(acts.gate, acts, start, count);
      const up = this.mlpRows(acts.up, acts, start, count);
      const act = this.rows(this.act, 0, count);
      const projected = this.rows(this.projected, start, count);
      this.gemmInput(
        [h],
        () => b.rmsNorm(h, xMid, w.postNorm, this.model.config.rmsNormEps),
        () => {
          b.matmul(gate, h, w.gate, w.gateBias, true);
          b.matmul(up, h, w.up, w.upBias, true);
        },
      );
      this.gemmInput(
        [act],
        () => b.siluMul(act, gate, up),
        () => b.matmul(projected, act, w.down, w.downBias, true),
      );
      b.add(this.rows(out, start, count), xMid, projected);
    }
  }

  /**
   * Final norm, lm_head on the answer rows, mean cross-entropy; leaves dL/d(final hidden state) in dx (zero on
   * rows that predict no answer token) and each answer token's cross-entropy in `losses`.
   */
  private lossBackward(answerStart: number, targets: Tensor, losses: Tensor): void {
    const b = this.b;
    const weights = this.model.weights;
    const eps = this.model.config.rmsNormEps;
    const vocab = this.model.config.vocabSize;
    const hidden = this.layerInputs[this.layerInputs.length - 1]!;
    const answers = this.n - answerStart;
    const chunk = Math.min(answers, ROW_CHUNK);
    const logits = b.empty("f32", [chunk, vocab]);
    const dLogits = b.empty("f32", [chunk, vocab]);
    try {
      // Row p predicts token p + 1: rows answerStart − 1 … n − 2.
      for (let first = 0; first < answers; first += chunk) {
        const count = Math.min(chunk, answers - first);
        const row = answerStart - 1 + first;
        const x = this.rows(hidden, row, count);
        const h = this.rows(this.h, 0, count);
        const rowLogits = this.rows(logits, 0, count);
        const rowGrads = this.rows(dLogits, 0, count);
        const rowLosses = this.rows(losses, first, count);
        const rowTargets = this.rows(targets, first, count);
        b.rmsNorm(h, x, weights.norm, eps);
        b.matmul(rowLogits, h, weights.lmHead, undefined, true);
        b.crossEntropy(rowLosses, rowGrads, rowLogits, rowTargets, 1 / answers);
        const dh = this.rows(this.dh, 0, count);
        b.matmulBackward(dh, rowGrads, weights.lmHead);
        b.rmsNormBackward(this.rows(this.dx, row, count), dh, x, weights.norm, eps);
      }
    } finally {
      for (const t of [logits, dLogits]) b.free(t);
    }
  }

  /** dx (the gradient at the layer's output) becomes the gradient at xMid: dx += dL/dxMid through the MLP. */
  private mlpBackward(l: number, acts: LayerActivations): void {
    const b = this.b;
    const w = this.model.weights.layers[l]!;
    const eps = this.model.config.rmsNormEps;
    for (let start = this.firstRow(l); start < this.n; start += this.chunk) {
      const count = Math.min(this.chunk, this.n - start);
      const xMid = this.rows(acts.xMid, start, count);
      const h = this.rows(this.h, start, count);
      const gate = this.mlpRows(acts.gate, acts, start, count);
      const up = this.mlpRows(acts.up, acts, start, count);
      const dAct = this.rows(this.act, 0, count);
      const dGate = this.rows(this.dGate, 0, count);
      const dUp = this.rows(this.dUp, 0, count);
      const dx = this.rows(this.dx, start, count);
      const dh = this.rows(this.dh, start, count);
      if (!acts.fullRows) {
        this.gemmInput(
          [h],
          () => b.rmsNorm(h, xMid, w.postNorm, eps),
          () => {
            b.matmul(gate, h, w.gate, w.gateBias, true);
            b.matmul(up, h, w.up, w.upBias, true);
          },
        );
      }
      b.matmulBackward(dAct, dx, w.down);
      this.gemmInput(
        [dGate, dUp],
        () => b.siluMulBackward(dGate, dUp, dAct, gate, up),
        () => {
          b.matmulBackward(dh, dGate, w.gate);
          b.matmulBackward(dh, dUp, w.up, true);
        },
      );
      b.rmsNormBackward(dx, dh, xMid, w.postNorm, eps, true);
    }
  }

  /**
   * dx (the gradient at xMid) becomes the gradient at the layer's input x; the influence of layer l is added.
   * Layer 0 stops after its influence: nothing reads the gradient at the embeddings.
   */
  private attentionBackward(l: number, x: Tensor, acts: LayerActivations): void {
    const b = this.b;
    const w = this.model.weights.layers[l]!;
    const invFreq = this.model.invFreq;
    // The last layer: dx (and so dO, dS and dq) is zero on the rows before its answer rows.
    const first = this.firstRow(l);
    const count = this.n - first;
    b.matmulBackward(this.rows(this.dAttnFlat, first, count), this.rows(this.dx, first, count), w.o);
    b.attentionBackward(
      this.dq,
      this.dk,
      this.dv,
      this.dAttn,
      acts.q,
      acts.k,
      acts.v,
      acts.attn,
      acts.stats,
      this.cuSeqlens,
      this.model.scale,
      b.rows(this.influence, l, 1),
      // The last layer's dO is zero before its answer rows; layer 0 needs only its influence.
      { queryStart: first, gradients: l > 0 },
    );
    if (l === 0) return;
    const dq = this.rows(this.dq, first, count);
    this.gemmInput(
      [dq, this.dk],
      () => {
        b.rope(dq, this.rows(this.negatedPositions, first, count), invFreq, 1);
        b.rope(this.dk, this.negatedPositions, invFreq, 1);
      },
      () => {
        if (first === 0) {
          b.matmulBackward(this.dh, this.dqFlat, w.q);
          b.matmulBackward(this.dh, this.dkFlat, w.k, true);
          b.matmulBackward(this.dh, this.dvFlat, w.v, true);
        } else {
          // dq is zero before the answer rows: its product only on them, added last.
          b.matmulBackward(this.dh, this.dkFlat, w.k);
          b.matmulBackward(this.dh, this.dvFlat, w.v, true);
          b.matmulBackward(this.rows(this.dh, first, count), this.rows(this.dqFlat, first, count), w.q, true);
        }
      },
    );
    b.rmsNormBackward(this.dx, this.dh, x, w.inputNorm, this.model.config.rmsNormEps, true);
  }
}
