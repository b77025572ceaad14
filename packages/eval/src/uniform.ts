/**
 * The StreamingLLM-style uniform baseline at a target KV density: every head keeps the sink and the same recent
 * window, as many whole blocks as fit in the target. Core's `uniformPlan(shape, d)` (sink + span d·n) caches
 * `G + ⌊d·n/B⌋·B` tokens, more than d·n (0.625 of n at n = 512 for d = 0.5), which would hand the baseline
 * more KV than the methods it is compared with; this one never exceeds the target unless the target is below
 * the least any rule caches (the sink and one block).
 */
import {
  DEFAULT_GEOMETRY,
  type ElasticRule,
  kvDensity,
  type MaskGeometry,
  type ModelShape,
  type MoaPlan,
  makePlan,
} from "@moa/core";

/**
 * The fixed-window rule `(alpha = nb·B, beta = 0)` whose KV density at length `n`, `min(n, G + nb·B) / n`
 * (core `kvDensity`), is the largest that is ≤ `target`; the narrowest rule (one block) when even that exceeds
 * the target. A rule for one length: a fixed window's density changes with `n`.
 */
export function uniformRule(
  target: number,
  n: number,
  geometry: MaskGeometry = DEFAULT_GEOMETRY,
): ElasticRule {
  if (!(target > 0 && target <= 1)) {
    throw new RangeError(`uniformRule: target = ${target}: must be in (0, 1]`);
  }
  if (!Number.isSafeInteger(n) || n < 1)
    throw new RangeError(`uniformRule: n = ${n}: must be a positive integer`);
  const B = geometry.blockSize;
  // The span is clamped to n, so no rule keeps more than ⌊n/B⌋ blocks; from the widest down, the first that
  // fits is the largest density ≤ target (kvDensity grows with the blocks).
  for (let nb = Math.max(1, Math.floor(n / B)); nb > 1; nb--) {
    const rule = { alpha: nb * B, beta: 0 };
    if (kvDensity(rule, n, geometry) <= target) return rule;
  }
  return { alpha: B, beta: 0 };
}

/**
 * The uniform baseline plan for the lengths that share one rule (see {@link uniformRule}); `target` and the
 * length the rule was chosen for go into the provenance.
 */
export function uniformBaselinePlan(
  shape: ModelShape,
  rule: ElasticRule,
  lengths: number[],
  provenance: Record<string, unknown> = {},
): MoaPlan {
  const rules = Array.from({ length: shape.layers }, () =>
    Array.from({ length: shape.heads }, () => ({ ...rule })),
  );
  return makePlan(shape, rules, lengths, { baseline: "uniform", ...provenance });
}
