/**
 * The contract between @moa/runtime and the native ops. One interface, two implementations:
 * the C++ CPU reference (always built) and CUDA (built when nvcc is present, used only when a GPU is there).
 * Tensors are opaque handles owned by a backend; every op writes into a preallocated `out`, so a forward
 * pass allocates nothing per token. Row-major layouts, shapes listed outermost first.
 *
 * Dtypes: activations and outputs are f32; KV caches f32, or bf16 on CUDA (`kvCacheDtype`); weights (matmul w
 * and bias, embedding table, RMSNorm weight) may be f32, bf16 or f16 and are widened on the fly (CUDA: matmul
 * rounds x to a 16-bit weight's type and accumulates in fp32, attention runs its products in bf16 with fp32
 * softmax and accumulation); ids and positions are i32. Every op checks its
 * arguments and throws an Error naming the op and the tensors' dtypes and shapes.
 */

export type DType = "f32" | "bf16" | "f16" | "i32";

export interface Tensor {
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly device: "cpu" | "cuda";
  /** Bytes of storage (product of shape × element size). */
  readonly byteLength: number;
}

export type HostArray = Float32Array | Int32Array | Uint16Array | Uint8Array;

/**
 * Per-query-head MoA attention rule as the kernels see it (DESIGN.md: Elastic rule, Block mask).
 * alpha/beta have one entry per query head. Span S(n) = clamp(alpha + beta·n, 0, n),
 * nb = max(1, floor(S(n) / blockSize)).
 * - "block": prefill/profiling mask at the sequence length n: block (qb, kb), kb ≤ qb, is kept iff
 *   kb < sinkTokens/blockSize or kb ≥ qb − nb + 1; the token mask is the causal part of kept blocks.
 * - "window": the decode mask; query at position i (length i+1) attends key j ≤ i iff
 *   j < sinkTokens or j > i − nb(i+1)·blockSize. Prefill in this mode equals token-by-token decode.
 */
export interface MoaMask {
  readonly mode: "block" | "window";
  readonly alpha: Float32Array;
  readonly beta: Float32Array;
  readonly blockSize: number;
  readonly sinkTokens: number;
}

/**
 * One layer's elastic KV cache. Every (sequence slot, KV head) owns a region of `sinkTokens + ringCap[g]`
 * entries starting at entry `regionOffset[slot·kvHeads + g]` of `k`/`v` (each [entries, headDim]):
 * token p < sinkTokens lives at region[p]; token p ≥ sinkTokens at region[sinkTokens + (p − sinkTokens) mod ringCap[g]].
 * Keys are stored after RoPE. A dense cache is the same layout with ringCap ≥ maxLength − sinkTokens.
 */
export interface KvCacheLayer {
  readonly k: Tensor;
  readonly v: Tensor;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly sinkTokens: number;
  /** Int32 [kvHeads]: ring capacity per KV head (sized by the widest query head of its group at the max length). */
  readonly ringCap: Int32Array;
  /** Int32 [slots·kvHeads]: first entry of each region. */
  readonly regionOffset: Int32Array;
}

export interface Backend {
  readonly name: "cpu" | "cuda";
  /** Human-readable device, e.g. "CPU (16 threads)" or "NVIDIA H100 80GB HBM3". */
  readonly deviceName: string;
  /** The element type this backend's KV caches should use: "f32" on the CPU reference; "bf16" on CUDA
   *  (decode attention is bound by reading the cache, so half the bytes is about twice the speed). Every op
   *  that takes a cache accepts f32 caches; bf16 caches are CUDA-only. */
  readonly kvCacheDtype: "f32" | "bf16";

  /** Zero-initialised tensor; with `uninitialized` the zero fill is skipped where that saves time (CUDA) and the
   *  contents are unspecified until written: for buffers every element of which is written before it is read. */
  empty(dtype: DType, shape: readonly number[], options?: { readonly uninitialized?: boolean }): Tensor;
  /** Copy host data (element type must match dtype; bf16/f16 as Uint16Array; any dtype as raw bytes in a
   *  Uint8Array) into a new tensor. */
  fromHost(dtype: DType, shape: readonly number[], data: HostArray): Tensor;
  /** Copy a tensor back to the host (f32 → Float32Array, i32 → Int32Array, bf16/f16 → Uint16Array); with `into`
   *  (that type, or a Uint8Array of the bytes, exactly the tensor's size) into it, which is returned: a caller
   *  reading the same shape again and again reuses one array instead of a fresh one, whose first touch of tens
   *  of MB costs page faults (~10 ms on a virtual machine). */
  toHost(t: Tensor, into?: HostArray): HostArray;
  /** Write host data into an existing tensor at an element offset. */
  write(t: Tensor, data: HostArray, elementOffset?: number): void;
  /** A view of rows [rowStart, rowStart+rows) of a tensor's first dimension, sharing storage. */
  rows(t: Tensor, rowStart: number, rows: number): Tensor;
  /** A view of the same elements with another shape (same element count), sharing storage: e.g. a projection
   *  output [T, heads·headDim] as [T, heads, headDim] for rope and attention. */
  reshape(t: Tensor, shape: readonly number[]): Tensor;
  /** Release a tensor's storage (idempotent). Freeing a view only retires the view; after freeing the owner,
   *  the owner and all its views are refused by every op. */
  free(t: Tensor): void;
  synchronize(): void;
  /** Free and total memory of the device the tensors live on, in bytes (CUDA: after the GPU finished the queued
   *  ops and the tensor pool returned what no tensor uses; CPU: the host's free and total RAM). */
  memoryInfo(): { free: number; total: number };
  /**
   * Keeps the operand copies that `exact` matmul and matmulBackward make of these tensors until the returned
   * function is called, so each is converted once instead of at every GEMM that reads it: on CUDA at the default
   * profiling precision, a scaled fp16 copy of each f32 or bf16 tensor (2 bytes per element of device memory,
   * made now in stream order; f16 tensors are used as they are and need none). The results are the same bits
   * either way. The tensors must not change while pinned (freeing one releases its copy). The CPU reference makes
   * no copies: the call only checks its arguments. Releasing twice is harmless.
   */
  pinHalfCopies(tensors: readonly Tensor[]): () => void;
  /**
   * pinHalfCopies for f32 tensors that an op is about to write, without a conversion: the next `siluMul`,
   * `siluMulBackward` (both outputs pinned), `rmsNorm` or `rope` (in place) that writes one of them whole writes
   * its scaled fp16 copy in the same pass, and only the copy (CUDA at the default profiling precision; the same
   * bits as writing the tensor and pinning it). Until the returned function is called, only `exact` matmul and
   * matmulBackward of 16-bit weights (which read the copy) may read such a tensor: any other reader, and a GEMM
   * that runs before the op, fails. Where no copies are kept (the CPU reference, other precisions) the ops write
   * the tensors as always.
   */
  pinHalfOutputs(tensors: readonly Tensor[]): () => void;
  /** Device memory `pinHalfCopies` would take for these tensors, in bytes (0 on the CPU). */
  halfCopyBytes(tensors: readonly Tensor[]): number;

  /**
   * out[m,n] = x[m,k] · wᵀ (+ bias[n]); w is [n,k] (Hugging Face Linear layout) in f32/bf16/f16; fp32 accumulate.
   * `exact`: CUDA rounds x to a 16-bit weight's type unless this is set; then the product runs at the profiler's
   * precision (MOA_CUDA_BACKWARD_PRECISION): by default x and w as fp16 copies scaled by powers of two (11
   * significant bits instead of bf16's 8, one GEMM); "split": x as bf16 hi + lo, two GEMMs, about fp32's
   * precision. The profiler's forward needs it: rounding x to bf16 moves some blocks of the influence by several
   * percent. The CPU reference is always exact.
   */
  matmul(out: Tensor, x: Tensor, w: Tensor, bias?: Tensor, exact?: boolean): void;
  /** out[t,d] = table[ids[t], :]. */
  embedding(out: Tensor, ids: Tensor, table: Tensor): void;
  /** out[t,d] = x / sqrt(mean(x²) + eps) · weight. */
  rmsNorm(out: Tensor, x: Tensor, weight: Tensor, eps: number): void;
  /** In place on x[t, heads, headDim]: Hugging Face rotate-half RoPE with inverse frequencies invFreq[headDim/2]
   *  (llama3 scaling is folded into invFreq by the caller) and cos/sin multiplied by attentionScale.
   *  A shorter invFreq[r] (partial rotary) rotates the first 2r dims of each head and leaves the rest.
   *  Positions may be negative: the angle of −p is exactly minus the angle of p, so rope at −p with the same
   *  attentionScale is the transpose of rope at p — its backward (dx = scale · R(−θ) · dy). */
  rope(x: Tensor, positions: Tensor, invFreq: Tensor, attentionScale: number): void;
  /** out = silu(gate) · up, elementwise. */
  siluMul(out: Tensor, gate: Tensor, up: Tensor): void;
  /** out = a + b, elementwise (out may alias a). */
  add(out: Tensor, a: Tensor, b: Tensor): void;
  /** Row-wise softmax of x[rows, cols] into out. */
  softmax(out: Tensor, x: Tensor): void;

  /**
   * Causal self-attention over packed variable-length sequences (prefill from position 0).
   * q[T, Hq, D], k/v[T, Hkv, D], out[T, Hq, D]; cuSeqlens i32 [B+1] (host array, 0 … T, non-decreasing)
   * gives each sequence's rows.
   * GQA: query head h reads KV head floor(h / (Hq/Hkv)). mask undefined = dense causal.
   * stats f32 [T, Hq, 2], when given (dense attention only), receives each row's softmax statistics for
   * `attentionBackward`: the max m of the scaled scores and l = Σ_j e^(score_j − m).
   * options.queryStart (with stats only): out and stats are needed from this row of each sequence on — the rows
   * before may be left as they were (CUDA skips their 64-row tiles), as attentionBackward's queryStart reads.
   */
  attentionPrefill(
    out: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cuSeqlens: Int32Array,
    scale: number,
    mask?: MoaMask,
    stats?: Tensor,
    options?: { readonly queryStart?: number },
  ): void;

  /**
   * Column sums of dense causal attention over packed sequences (H2O's heavy-hitter scores): out f32 [T, Hkv],
   * out[t, g] = Σ over the query heads h of KV head g and the rows i ≥ t of t's sequence of
   * softmax_j(scale · q[i, h]·k[j, g], j ≤ i) at j = t. q [T, Hq, D], k [T, Hkv, D], cuSeqlens as in
   * attentionPrefill. Nothing T×T is stored; results do not depend on the thread count.
   */
  attentionColumnSums(out: Tensor, q: Tensor, k: Tensor, cuSeqlens: Int32Array, scale: number): void;

  /** Store k/v[T, Hkv, D] of tokens at absolute positions[T] (host) of sequence slots[T] (host) into the cache. */
  kvAppend(cache: KvCacheLayer, k: Tensor, v: Tensor, slots: Int32Array, positions: Int32Array): void;

  /**
   * One new query per sequence: q[B, Hq, D] → out[B, Hq, D], attending the cached tokens of slots[b] with
   * seqLens[b] tokens (the new token included, already appended). mask undefined = every cached token;
   * otherwise mode "window" per query head (mask.sinkTokens must equal cache.sinkTokens). Only entries that
   * still hold their token are read: the sink and the last ringCap positions, so a window wider than the
   * ring sees the cached part of it.
   */
  attentionDecode(
    out: Tensor,
    q: Tensor,
    cache: KvCacheLayer,
    slots: Int32Array,
    seqLens: Int32Array,
    scale: number,
    mask?: MoaMask,
  ): void;

  // ---- backward, for profiling: activation gradients only, no weight gradients (DESIGN.md: Kernels) ----

  /** dx[m,k] = dy[m,n] · w, or dx += dy · w with `accumulate`: the input gradient of `matmul` (w [n,k] in
   *  f32/bf16/f16, as there; a bias has no input gradient). dx must not overlap dy. */
  matmulBackward(dx: Tensor, dy: Tensor, w: Tensor, accumulate?: boolean): void;
  /** The input gradient of `rmsNorm` given the output gradient dy: with r = 1/sqrt(mean(x²) + eps) per row,
   *  dx = r·(weight ⊙ dy) − x · r³/dim · Σ(x ⊙ weight ⊙ dy), or dx += that with `accumulate` (the same bits as
   *  a separate `add`). dx must not overlap dy or x. */
  rmsNormBackward(dx: Tensor, dy: Tensor, x: Tensor, weight: Tensor, eps: number, accumulate?: boolean): void;
  /** The gradients of out = silu(gate) · up given dOut: dUp = dOut · silu(gate),
   *  dGate = dOut · up · σ(gate)(1 + gate(1 − σ(gate))). Outputs must not overlap the inputs or each other. */
  siluMulBackward(dGate: Tensor, dUp: Tensor, dOut: Tensor, gate: Tensor, up: Tensor): void;
  /**
   * Backward of dense causal `attentionPrefill` over packed sequences, with the MoA attention influence
   * (DESIGN.md: Attention influence). q/k/v/cuSeqlens/scale as in the forward, out its output and stats its
   * softmax statistics [T, Hq, 2], dOut [T, Hq, D] the output gradient. Writes dq [T, Hq, D] and dk/dv
   * [T, Hkv, D] (GQA: summed over the query heads of each KV head). P is recomputed tile by tile; nothing
   * T×T is stored.
   * influence f32 [B, Hq, nb, nb] (B sequences, nb ≥ ceil(longest/64)), when given: for every causal 64×64
   * block (qb, kb) of sequence b and query head h, Σ|E_ij| over the block is ADDED to influence[b, h, qb, kb],
   * with A = P, G = dL/dA = dOut_i·v_j, S_i = dOut_i·out_i, E_ij = −A_ij (G_ij − S_i)/(1 − A_ij + eps),
   * row 0: E_0j = G_0j A_0j, eps = fp32 machine epsilon. Entries outside the causal blocks are left alone.
   * options.queryStart (default 0): dOut is read from this row of each sequence on, the rows before count as
   * zero (a profile's last layer, whose loss reads only the answer rows): their dq is 0, they add no influence,
   * and on CUDA their 64-row tiles are skipped. options.gradients false: only the influence is written, not dq,
   * dk and dv (a profile's first layer needs only its influence).
   */
  attentionBackward(
    dq: Tensor,
    dk: Tensor,
    dv: Tensor,
    dOut: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    stats: Tensor,
    cuSeqlens: Int32Array,
    scale: number,
    influence?: Tensor,
    options?: { readonly queryStart?: number; readonly gradients?: boolean },
  ): void;
  /** Cross-entropy of logits[rows, vocab] against targets i32 [rows], with max subtraction:
   *  losses[r] = logsumexp(logits[r]) − logits[r, targets[r]], dLogits = (softmax(logits) − onehot) · gradScale
   *  (gradScale = 1/rows gives the gradient of the mean), the softmax rounded to fp32 before the one-hot is
   *  subtracted, as fp32 autograd computes it. Throws for a target outside [0, vocab). */
  crossEntropy(losses: Tensor, dLogits: Tensor, logits: Tensor, targets: Tensor, gradScale: number): void;
}
