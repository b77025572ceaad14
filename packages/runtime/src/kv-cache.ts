/**
 * The elastic KV cache (DESIGN.md: Kernels, MoA decode). Every (sequence slot, KV head) owns a region of
 * `sinkTokens + ringCap` entries per layer: the sink, then a ring buffer of the head's window. A KV head's ring
 * is sized by the widest query head of its GQA group at the longest length the cache serves, so it caches
 * exactly `kvHeadTokens(plan, layer, kvHead, maxLength)` tokens (@moa/core) — the plan's KV density made real.
 * Without a plan the cache is dense: one region of `maxLength` entries per (slot, KV head).
 */
import { MoaError, type MoaPlan, spanBlocks } from "@moa/core";
import type { Backend, KvCacheLayer } from "@moa/kernels-cuda";

export const E_CAPACITY = "E_CAPACITY";

export interface KvCacheShape {
  readonly layers: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
}

export interface KvCacheOptions {
  /** Longest sequence (prompt + generated tokens) a slot holds. */
  readonly maxLength: number;
  /** Sequences that can be cached at once. */
  readonly slots: number;
  /** MoA plan; undefined = dense cache. */
  readonly plan?: MoaPlan | undefined;
}

/**
 * Ring capacity of each KV head of one layer: `min(maxLength − G, max over its query heads of nb(maxLength)·B)`
 * for a plan (nb grows with the length for beta ≥ 0, so the window at every earlier length fits; for rules
 * exact in float32, as every grid rule is, this is `kvHeadTokens(plan, layer, g, maxLength) − G`), or
 * `maxLength` with no sink for a dense cache.
 */
export function ringCapacities(
  shape: KvCacheShape,
  layer: number,
  maxLength: number,
  plan?: MoaPlan,
): { sinkTokens: number; ringCap: Int32Array } {
  const ringCap = new Int32Array(shape.kvHeads);
  if (plan === undefined) {
    ringCap.fill(maxLength);
    return { sinkTokens: 0, ringCap };
  }
  const group = shape.heads / shape.kvHeads;
  const rules = plan.rules[layer]!;
  const available = Math.max(0, maxLength - plan.sinkTokens);
  for (let g = 0; g < shape.kvHeads; g++) {
    let widest = 0;
    for (let h = g * group; h < (g + 1) * group; h++) {
      const rule = rules[h]!;
      // The kernels get alpha/beta as float32 (MoaMask); for a rule that float32 cannot hold exactly, nb can
      // floor to another block at a boundary, so the ring fits the wider of the two readings.
      const asKernel = { alpha: Math.fround(rule.alpha), beta: Math.fround(rule.beta) };
      const blocks = Math.max(
        spanBlocks(rule, maxLength, plan.blockSize),
        spanBlocks(asKernel, maxLength, plan.blockSize),
      );
      widest = Math.max(widest, blocks * plan.blockSize);
    }
    ringCap[g] = Math.min(available, widest);
  }
  return { sinkTokens: plan.sinkTokens, ringCap };
}

/** Bytes per cached K or V element of each cache dtype a backend may ask for (`Backend.kvCacheDtype`). */
const CACHE_ELEMENT_BYTES = { f32: 4, bf16: 2 } as const;

export class KvCache {
  readonly layers: readonly KvCacheLayer[];
  readonly maxLength: number;
  readonly slots: number;
  readonly plan: MoaPlan | undefined;
  /** Tokens cached so far per slot (positions 0 … length−1 have been appended). */
  private readonly lengths: Int32Array;
  private readonly inUse: Uint8Array;
  private disposed = false;

  constructor(
    private readonly backend: Backend,
    readonly shape: KvCacheShape,
    options: KvCacheOptions,
  ) {
    const { maxLength, slots, plan } = options;
    if (!Number.isSafeInteger(maxLength) || maxLength < 1) {
      throw new MoaError("E_ARGUMENT", `KvCache: maxLength = ${maxLength}: must be a positive integer`, {
        source: "KvCache",
        field: "maxLength",
      });
    }
    if (!Number.isSafeInteger(slots) || slots < 1) {
      throw new MoaError("E_ARGUMENT", `KvCache: slots = ${slots}: must be a positive integer`, {
        source: "KvCache",
        field: "slots",
      });
    }
    this.maxLength = maxLength;
    this.slots = slots;
    this.plan = plan;
    this.lengths = new Int32Array(slots);
    this.inUse = new Uint8Array(slots);
    const layers: KvCacheLayer[] = [];
    try {
      for (let layer = 0; layer < shape.layers; layer++) {
        const { sinkTokens, ringCap } = ringCapacities(shape, layer, maxLength, plan);
        const regionOffset = new Int32Array(slots * shape.kvHeads);
        let entries = 0;
        for (let slot = 0; slot < slots; slot++) {
          for (let g = 0; g < shape.kvHeads; g++) {
            regionOffset[slot * shape.kvHeads + g] = entries;
            entries += sinkTokens + ringCap[g]!;
          }
        }
        if (entries > 2 ** 31 - 1) {
          throw new MoaError(
            E_CAPACITY,
            `KvCache: layer ${layer} needs ${entries} entries, beyond the 2^31 the kernels index`,
            { source: "KvCache", field: "maxLength" },
          );
        }
        const k = backend.empty(backend.kvCacheDtype, [entries, shape.headDim]);
        const v = backend.empty(backend.kvCacheDtype, [entries, shape.headDim]);
        layers.push({
          k,
          v,
          kvHeads: shape.kvHeads,
          headDim: shape.headDim,
          sinkTokens,
          ringCap,
          regionOffset,
        });
      }
    } catch (error) {
      for (const layer of layers) {
        backend.free(layer.k);
        backend.free(layer.v);
      }
      throw error;
    }
    this.layers = layers;
  }

  /** Bytes of K and V storage over all layers and slots, exactly as allocated. */
  cacheBytes(): number {
    let bytes = 0;
    for (const layer of this.layers) bytes += layer.k.byteLength + layer.v.byteLength;
    return bytes;
  }

  /** Bytes one slot occupies. */
  slotBytes(): number {
    return this.cacheBytes() / this.slots;
  }

  /** Bytes per cached element (K or V value). */
  get elementBytes(): number {
    return CACHE_ELEMENT_BYTES[this.backend.kvCacheDtype];
  }

  /** Smallest ring over all layers and KV heads (prefill appends in chunks no longer than it). */
  minRingCap(): number {
    let min = Number.POSITIVE_INFINITY;
    for (const layer of this.layers) for (const cap of layer.ringCap) min = Math.min(min, cap);
    return min;
  }

  /** Largest ring over all layers and KV heads. */
  maxRingCap(): number {
    let max = 0;
    for (const layer of this.layers) for (const cap of layer.ringCap) max = Math.max(max, cap);
    return max;
  }

  get sinkTokens(): number {
    return this.layers[0]?.sinkTokens ?? 0;
  }

  freeSlots(): number {
    let free = 0;
    for (const used of this.inUse) if (used === 0) free++;
    return free;
  }

  /** Claims a free slot (its length reset to 0). */
  allocateSlot(): number {
    const slot = this.inUse.indexOf(0);
    if (slot < 0) {
      throw new MoaError(
        E_CAPACITY,
        `KV cache: all ${this.slots} sequence slots are in use; load the model with more slots`,
        { source: "KvCache", field: "slots" },
      );
    }
    this.inUse[slot] = 1;
    this.lengths[slot] = 0;
    return slot;
  }

  /** Returns a slot; its cached tokens are forgotten. */
  releaseSlot(slot: number): void {
    this.checkSlot(slot);
    this.inUse[slot] = 0;
    this.lengths[slot] = 0;
  }

  /** Tokens cached for a slot. */
  length(slot: number): number {
    this.checkSlot(slot);
    return this.lengths[slot]!;
  }

  /** Records that positions [0, length) of the slot are cached. */
  setLength(slot: number, length: number): void {
    this.checkSlot(slot);
    this.lengths[slot] = length;
  }

  private checkSlot(slot: number): void {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.slots) {
      throw new MoaError(
        "E_ARGUMENT",
        `KV cache: slot = ${slot}: must be an integer in [0, ${this.slots - 1}]`,
        {
          source: "KvCache",
          field: "slot",
        },
      );
    }
  }

  /** Releases the backend storage. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const layer of this.layers) {
      this.backend.free(layer.k);
      this.backend.free(layer.v);
    }
  }
}
