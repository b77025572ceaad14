import { fail } from "./errors.js";
import type { ElasticRule } from "./rule.js";

export interface CandidateGridOptions {
  /** The lengths profiled (e.g. 2048, 4096, 8192). */
  lengths: number[];
  /** The longest length a plan must stay valid at (default `2 · max(lengths)`). */
  extend?: number;
  /** Number of alpha values in `linspace(−maxLen/4, maxLen, alphaCount)` (default 11). */
  alphaCount?: number;
  /** Step of beta over [0, 1] (default 0.125, which must divide 1). */
  betaStep?: number;
}

/** numpy-style `linspace(start, stop, count)`: `start + i·step`, the last value exactly `stop`. */
function linspace(start: number, stop: number, count: number): number[] {
  if (count === 1) return [start];
  const step = (stop - start) / (count - 1);
  const values: number[] = [];
  for (let i = 0; i < count - 1; i++) values.push(start + i * step);
  values.push(stop);
  return values;
}

/**
 * DESIGN.md: Definitions — candidate grid. `alpha ∈ linspace(−maxLen/4, maxLen, alphaCount)`,
 * `beta ∈ {0, betaStep, …, 1}`; a pair is kept iff, with the span unclamped,
 * `S(maxLen) ≤ maxLen`, `S(extend) ≤ extend` and `S(minLen) > 0`. For lengths
 * {2048, 4096, 8192} and the defaults this is the reference grid (alpha from −2048 to
 * 8192 in steps of 1024, extend 16384). Ordered by alpha, then beta.
 */
export function candidateGrid(options: CandidateGridOptions): ElasticRule[] {
  const where = "candidateGrid";
  const { lengths } = options;
  if (!Array.isArray(lengths) || lengths.length === 0) {
    fail("E_ARGUMENT", where, "lengths", lengths, "must be a non-empty array of positive integers");
  }
  lengths.forEach((n, k) => {
    if (!Number.isInteger(n) || n <= 0)
      fail("E_ARGUMENT", where, `lengths[${k}]`, n, "must be a positive integer");
  });
  const maxLen = Math.max(...lengths);
  const minLen = Math.min(...lengths);
  const extend = options.extend ?? 2 * maxLen;
  if (!Number.isFinite(extend) || extend < maxLen) {
    fail("E_ARGUMENT", where, "extend", extend, `must be a finite length >= max(lengths) = ${maxLen}`);
  }
  const alphaCount = options.alphaCount ?? 11;
  if (!Number.isInteger(alphaCount) || alphaCount < 1) {
    fail("E_ARGUMENT", where, "alphaCount", alphaCount, "must be an integer >= 1");
  }
  const betaStep = options.betaStep ?? 0.125;
  const betaSteps = Math.round(1 / betaStep);
  if (!(betaStep > 0 && betaStep <= 1) || Math.abs(betaSteps * betaStep - 1) > 1e-12) {
    fail("E_ARGUMENT", where, "betaStep", betaStep, "must be in (0, 1] and divide 1 (e.g. 0.125, 0.1, 0.25)");
  }
  const alphas = linspace(-maxLen / 4, maxLen, alphaCount);
  // i / steps (not i · step) so that beta = 1 and beta = 0.1·k come out exact.
  const betas = Array.from({ length: betaSteps + 1 }, (_, i) => i / betaSteps);
  const grid: ElasticRule[] = [];
  for (const alpha of alphas) {
    for (const beta of betas) {
      if (alpha + beta * maxLen > maxLen) continue;
      if (alpha + beta * extend > extend) continue;
      if (!(alpha + beta * minLen > 0)) continue;
      grid.push({ alpha, beta });
    }
  }
  return grid;
}
