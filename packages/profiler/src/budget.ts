/**
 * Defaults and budgets of `moa compress`: which lengths to profile and validate at, a KV budget in bytes turned
 * into a KV density, and the range of KV density the candidate grid can reach (checked before any profiling).
 */
import {
  candidateGrid,
  DEFAULT_GEOMETRY,
  densePlan,
  kvDensity,
  MoaError,
  type ModelShape,
  planKvBytes,
} from "@moa/core";

const B = DEFAULT_GEOMETRY.blockSize;

/** Longest default profiled length: past it profiling costs more than most users can afford. */
export const MAX_DEFAULT_PROFILE_LENGTH = 16384;

function floorToBlock(n: number): number {
  return Math.floor(n / B) * B;
}

/**
 * Default profiled lengths for a model of `context` tokens: V/4, V/2 and V with V = min(context, 16384) — the
 * reference's 2048, 4096, 8192 for an 8k-context model, 512, 1024, 2048 for moa-nano. The profile reaches the
 * longest length plans are validated at when the context allows nothing longer: profiled only up to half of it,
 * moa-nano's plans lose retrieval at 2048 tokens (validation loss 0.80 against the dense 0.0085), because rules
 * that differ only beyond the longest profiled length look the same to the profile.
 */
export function defaultProfileLengths(context: number): number[] {
  const v = floorToBlock(Math.min(context, MAX_DEFAULT_PROFILE_LENGTH));
  return [...new Set([v / 4, v / 2, v].map((n) => Math.max(B, floorToBlock(n))))];
}

/**
 * Default validation length: twice the longest profiled length when the context allows (unseen and longer),
 * else the context (unseen samples at the longest length the model runs).
 */
export function defaultValidationLength(lengths: readonly number[], context: number): number {
  const longest = Math.max(...lengths);
  return Math.min(2 * longest, context);
}

export interface KvBudget {
  /** Bytes the KV cache may use. */
  bytes: number;
  /** Sequence length the budget must hold, each of `batch` sequences. */
  maxLength: number;
  batch: number;
  /** Bytes per cached K or V element: 4 for an f32 cache (the CPU backend), 2 for bf16 (the CUDA backend). */
  bytesPerElement: number;
}

/**
 * The KV density a byte budget allows: `budget / dense KV bytes` of `batch` sequences of `maxLength` tokens
 * (core's `planKvBytes` of the dense plan, DESIGN.md: KV density). Above 1 the dense cache fits: an error, as there
 * is nothing to compress for.
 */
export function kvBudgetDensity(
  shape: ModelShape,
  budget: KvBudget,
): { density: number; denseBytes: number } {
  const { maxLength, batch, bytesPerElement } = budget;
  const denseBytes = planKvBytes(densePlan(shape, [maxLength]), maxLength, { batch, bytesPerElement });
  const density = budget.bytes / denseBytes;
  if (density >= 1) {
    throw new MoaError(
      "E_BUDGET",
      `KV budget ${budget.bytes} bytes holds the dense cache of ${batch} × ${maxLength} tokens (${denseBytes} bytes): nothing to compress; lower the budget or raise the max length or batch`,
      { source: "kvBudget", field: "bytes" },
    );
  }
  return { density, denseBytes };
}

export interface DensityRange {
  /** Lengths the KV density is constrained at: the profiled ones and the extend length. */
  lengths: number[];
  /** Least and most KV density any plan of the grid reaches at each length (every head at its narrowest/widest rule). */
  least: number[];
  most: number[];
}

/** The KV density the candidate grid for `lengths` and `extend` can reach (DESIGN.md: Candidate grid). */
export function gridDensityRange(lengths: readonly number[], extend: number): DensityRange {
  const grid = candidateGrid({ lengths: [...lengths], extend });
  const kvLengths = [...new Set([...lengths, extend])].sort((a, b) => a - b);
  const least = kvLengths.map((n) => Math.min(...grid.map((rule) => kvDensity(rule, n))));
  const most = kvLengths.map((n) => Math.max(...grid.map((rule) => kvDensity(rule, n))));
  return { lengths: kvLengths, least, most };
}

/**
 * Throws E_BUDGET when no plan of the grid has KV density in `[lowerRatio·density, density]` at every
 * constrained length, saying which bound fails and the achievable range: checked before profiling, which is the
 * expensive part.
 */
export function checkDensityFeasible(range: DensityRange, density: number, lowerRatio: number): void {
  const floor = Math.max(...range.least);
  const ceiling = Math.min(...range.most);
  const describe = () =>
    range.lengths
      .map((n, i) => `${n}: ${range.least[i]!.toFixed(4)}–${range.most[i]!.toFixed(4)}`)
      .join(", ");
  if (density < floor) {
    throw new MoaError(
      "E_BUDGET",
      `KV density ${density.toFixed(4)} is below the least the candidate rules reach (${floor.toFixed(4)}: every head at its narrowest rule; achievable per length ${describe()}); raise --density or the budget`,
      { source: "density", field: "density" },
    );
  }
  if (lowerRatio * density > ceiling) {
    throw new MoaError(
      "E_BUDGET",
      `KV density ${density.toFixed(4)} × lower ratio ${lowerRatio} is above the most the candidate rules reach (${ceiling.toFixed(4)}; achievable per length ${describe()}); lower --density or --lower-ratio`,
      { source: "density", field: "density" },
    );
  }
}
