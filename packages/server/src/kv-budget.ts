/**
 * Exact KV memory per sequence, known before the model is loaded. With MoA every (layer, KV head) caches at most
 * `kvHeadTokens(plan, layer, kvHead, n)` tokens at length `n` (DESIGN.md: KV density), so a sequence that may grow
 * to `maxLength` tokens needs `planKvBytes(plan, maxLength)` bytes — no more, whatever it generates. A dense
 * model caches every token of every KV head. The server turns its KV budget into that many sequence slots.
 */
import { MoaError, type ModelShape, type MoaPlan, planKvBytes } from "@moa/core";

/**
 * Bytes of one cached K or V element for each dtype a backend's KV cache may have (`Backend.kvCacheDtype`):
 * the CPU backend caches f32, the CUDA backend bf16 (f32 with MOA_CUDA_KV_DTYPE=f32). Everything the server
 * computes in bytes uses the element size of the cache it serves from; `serve()` checks the loaded cache
 * against this accounting and refuses to start if the two ever disagree.
 */
export const KV_CACHE_DTYPE_BYTES: Readonly<Record<"f32" | "bf16", number>> = { f32: 4, bf16: 2 };

/**
 * Bytes of one element of an f32 KV cache (the CPU backend's). Sizing for a model that is served elsewhere takes
 * that backend's element size instead ({@link KV_CACHE_DTYPE_BYTES}, `KvCache.elementBytes`).
 */
export const KV_CACHE_ELEMENT_BYTES = KV_CACHE_DTYPE_BYTES.f32;

/**
 * Bytes of K and V one sequence of up to `maxLength` tokens holds, with a plan or dense, in a cache of
 * `elementBytes` per element (the loaded cache's `elementBytes`: 4 for f32, 2 for bf16).
 */
export function sequenceKvBytes(
  shape: ModelShape,
  plan: MoaPlan | undefined,
  maxLength: number,
  elementBytes: number,
): number {
  if (!Number.isSafeInteger(elementBytes) || elementBytes < 1) {
    throw new MoaError(
      "E_ARGUMENT",
      `server: KV cache elementBytes = ${elementBytes}: must be a positive integer`,
      { source: "server", field: "elementBytes" },
    );
  }
  if (plan !== undefined) return planKvBytes(plan, maxLength, { bytesPerElement: elementBytes });
  // Dense: every layer and KV head caches all maxLength tokens, K and V.
  return shape.layers * shape.kvHeads * maxLength * shape.headDim * 2 * elementBytes;
}

export interface KvBudget {
  /** Bytes the operator allows the KV cache to use. */
  readonly budgetBytes: number;
  /** Exact bytes one sequence slot needs (prompt + generated ≤ maxLength). */
  readonly sequenceBytes: number;
  /** Sequences admitted at once: ⌊budget / sequenceBytes⌋, capped by `maxBatch`. */
  readonly slots: number;
  /** Bytes actually allocated: `slots · sequenceBytes` (≤ budget). */
  readonly capacityBytes: number;
}

/**
 * Sizes the cache: `budgetBytes` defaults to what `maxBatch` sequences of `maxLength` need; a smaller budget
 * admits fewer sequences at once, a budget below one sequence is an error that says how much one needs.
 */
export function kvBudget(sequenceBytes: number, maxBatch: number, budgetBytes?: number): KvBudget {
  if (!Number.isSafeInteger(maxBatch) || maxBatch < 1) {
    throw new MoaError("E_ARGUMENT", `server: maxBatch = ${maxBatch}: must be an integer ≥ 1`, {
      source: "server",
      field: "maxBatch",
    });
  }
  const budget = budgetBytes ?? sequenceBytes * maxBatch;
  if (!Number.isSafeInteger(budget) || budget < 1) {
    throw new MoaError("E_ARGUMENT", `server: kvBudget = ${budget}: must be a positive integer of bytes`, {
      source: "server",
      field: "kvBudget",
    });
  }
  const slots = Math.min(maxBatch, Math.floor(budget / sequenceBytes));
  if (slots < 1) {
    throw new MoaError(
      "E_ARGUMENT",
      `server: kvBudget = ${budget} bytes is less than one sequence needs (${sequenceBytes} bytes at this max length); raise the budget or lower the max length`,
      { source: "server", field: "kvBudget" },
    );
  }
  return { budgetBytes: budget, sequenceBytes, slots, capacityBytes: slots * sequenceBytes };
}
