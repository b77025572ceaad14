import { DEFAULT_GEOMETRY, type MaskGeometry } from "./constants.js";
import { checkInteger, fail } from "./errors.js";
import { blockCount, sinkBlockCount } from "./mask.js";
import type { MoaPlan } from "./plan.js";
import { type ElasticRule, ruleKey, spanBlocks } from "./rule.js";

/**
 * Kept causal token entries of a head at length `n` under the block mask, in closed
 * form per query block: O(n/B). Rows of query block `qb` (there are `rq`, fewer in the
 * last partial block) see every kept off-diagonal key block in full (`B` keys each) and
 * the causal triangle of the diagonal block, which is always kept (`nb ≥ 1`).
 */
export function keptEntries(rule: ElasticRule, n: number, geom: MaskGeometry = DEFAULT_GEOMETRY): number {
  checkInteger(n, "n", 1, "keptEntries");
  const B = geom.blockSize;
  const nBlocks = blockCount(n, B);
  const nb = spanBlocks(rule, n, B);
  const g = sinkBlockCount(geom);
  let kept = 0;
  for (let qb = 0; qb < nBlocks; qb++) {
    const rq = Math.min(B, n - qb * B);
    // Off-diagonal kept blocks: [0, min(g, qb)) ∪ [max(0, qb − nb + 1), qb).
    const sink = Math.min(g, qb);
    const bandStart = Math.max(0, qb - nb + 1);
    const offDiagonal = Math.min(qb, sink + qb - Math.max(bandStart, sink));
    kept += rq * B * offDiagonal + (rq * (rq + 1)) / 2;
  }
  return kept;
}

/**
 * DESIGN.md: Definitions — (compute) density of a head at length `n`: kept causal
 * entries / all causal entries `n(n + 1)/2`.
 */
export function computeDensity(rule: ElasticRule, n: number, geom: MaskGeometry = DEFAULT_GEOMETRY): number {
  return keptEntries(rule, n, geom) / ((n * (n + 1)) / 2);
}

/** DESIGN.md: Definitions — tokens a head caches at length `n`: `min(n, G + nb·B)`. */
export function kvTokens(rule: ElasticRule, n: number, geom: MaskGeometry = DEFAULT_GEOMETRY): number {
  return Math.min(n, geom.sinkTokens + spanBlocks(rule, n, geom.blockSize) * geom.blockSize);
}

/** DESIGN.md: Definitions — KV density of a head: cached tokens / `n`. */
export function kvDensity(rule: ElasticRule, n: number, geom: MaskGeometry = DEFAULT_GEOMETRY): number {
  checkInteger(n, "n", 1, "kvDensity");
  return kvTokens(rule, n, geom) / n;
}

function planGeometry(plan: MoaPlan): MaskGeometry {
  return { blockSize: plan.blockSize, sinkTokens: plan.sinkTokens };
}

/** Query heads per KV head (GQA group size). */
export function groupSize(plan: MoaPlan): number {
  return plan.model.heads / plan.model.kvHeads;
}

/** The KV head that query head `h` reads: `floor(h / (heads / kvHeads))`. */
export function kvHeadOf(plan: MoaPlan, head: number): number {
  return Math.floor(head / groupSize(plan));
}

/** DESIGN.md: Definitions — a plan's compute density: the mean over (layer, query head). */
export function planComputeDensity(plan: MoaPlan, n: number): number {
  checkInteger(n, "n", 1, "planComputeDensity");
  const geom = planGeometry(plan);
  const cache = new Map<string, number>();
  let sum = 0;
  let count = 0;
  for (const layer of plan.rules) {
    for (const rule of layer) {
      const key = ruleKey(rule);
      let d = cache.get(key);
      if (d === undefined) {
        d = computeDensity(rule, n, geom);
        cache.set(key, d);
      }
      sum += d;
      count++;
    }
  }
  return sum / count;
}

/**
 * DESIGN.md: Definitions (Plan, GQA) — tokens cached for one KV head at length `n`:
 * the widest of its query heads' caches, since they share it.
 */
export function kvHeadTokens(plan: MoaPlan, layer: number, kvHead: number, n: number): number {
  const { layers, kvHeads } = plan.model;
  if (!Number.isInteger(layer) || layer < 0 || layer >= layers) {
    fail("E_ARGUMENT", "kvHeadTokens", "layer", layer, `must be an integer in [0, ${layers - 1}]`);
  }
  if (!Number.isInteger(kvHead) || kvHead < 0 || kvHead >= kvHeads) {
    fail("E_ARGUMENT", "kvHeadTokens", "kvHead", kvHead, `must be an integer in [0, ${kvHeads - 1}]`);
  }
  const geom = planGeometry(plan);
  const group = groupSize(plan);
  const row = plan.rules[layer]!;
  let widest = 0;
  for (let h = kvHead * group; h < (kvHead + 1) * group; h++) {
    widest = Math.max(widest, kvTokens(row[h]!, n, geom));
  }
  return widest;
}

/**
 * DESIGN.md: Definitions — a plan's KV density at length `n`: the mean over
 * (layer, KV head) of `kvHeadTokens / n`. For MHA this is the mean over heads.
 */
export function planKvDensity(plan: MoaPlan, n: number): number {
  checkInteger(n, "n", 1, "planKvDensity");
  let sum = 0;
  for (let layer = 0; layer < plan.model.layers; layer++) {
    for (let kv = 0; kv < plan.model.kvHeads; kv++) sum += kvHeadTokens(plan, layer, kv, n);
  }
  return sum / (n * plan.model.layers * plan.model.kvHeads);
}

export interface KvBytesOptions {
  /** Sequences in the batch, all of length `n` (default 1). */
  batch?: number;
  /** Bytes per cached element (default 2: fp16/bf16). */
  bytesPerElement?: number;
}

/**
 * Bytes of the KV cache of a plan at length `n`:
 * `Σ_{layer, kv head} kvHeadTokens · headDim · 2 (K and V) · bytesPerElement · batch`.
 */
export function planKvBytes(plan: MoaPlan, n: number, options: KvBytesOptions = {}): number {
  checkInteger(n, "n", 1, "planKvBytes");
  const batch = options.batch ?? 1;
  const bytesPerElement = options.bytesPerElement ?? 2;
  checkInteger(batch, "batch", 1, "planKvBytes");
  if (!(bytesPerElement > 0) || !Number.isFinite(bytesPerElement)) {
    fail("E_ARGUMENT", "planKvBytes", "bytesPerElement", bytesPerElement, "must be a positive number");
  }
  let tokens = 0;
  for (let layer = 0; layer < plan.model.layers; layer++) {
    for (let kv = 0; kv < plan.model.kvHeads; kv++) tokens += kvHeadTokens(plan, layer, kv, n);
  }
  return tokens * plan.model.headDim * 2 * bytesPerElement * batch;
}
