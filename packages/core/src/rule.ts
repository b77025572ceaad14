import { BLOCK_SIZE } from "./constants.js";

/**
 * DESIGN.md: Definitions — an elastic rule `r = (alpha, beta)`: a sliding window
 * whose span grows linearly with the input length `n`.
 */
export interface ElasticRule {
  /** Span at length 0, in tokens (may be negative: the window then opens later). */
  alpha: number;
  /** Span growth per token of input, in [0, 1]. */
  beta: number;
}

/** DESIGN.md: Definitions — `S(n) = clamp(alpha + beta * n, 0, n)`, in tokens. */
export function spanAt(rule: ElasticRule, n: number): number {
  const span = rule.alpha + rule.beta * n;
  return Math.min(Math.max(span, 0), n);
}

/**
 * DESIGN.md: Definitions — the span counted in whole blocks,
 * `nb = max(1, floor(S(n) / B))`, including the diagonal block.
 *
 * Computed in float64. Where `alpha + beta·n` lands within rounding of a multiple of `B`,
 * float32 (or a different operation order) can floor to another block, so kernels and
 * caches should take `nb` from here as an integer rather than recompute it from the rule.
 */
export function spanBlocks(rule: ElasticRule, n: number, blockSize: number = BLOCK_SIZE): number {
  return Math.max(1, Math.floor(spanAt(rule, n) / blockSize));
}

/** A canonical string for a rule, usable as a Map key: `alpha,beta` with full precision. */
export function ruleKey(rule: ElasticRule): string {
  return `${rule.alpha},${rule.beta}`;
}

/** Whether two rules are the same `(alpha, beta)` pair. */
export function sameRule(a: ElasticRule, b: ElasticRule): boolean {
  return a.alpha === b.alpha && a.beta === b.beta;
}
