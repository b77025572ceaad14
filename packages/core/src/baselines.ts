/**
 * Baselines expressed as plans, so every comparison runs through the same masks,
 * caches and density accounting as MoA plans.
 */
import { fail } from "./errors.js";
import { makePlan, type ModelShape, type MoaPlan } from "./plan.js";
import type { ElasticRule } from "./rule.js";

function everyHead(shape: ModelShape, rule: ElasticRule): ElasticRule[][] {
  return Array.from({ length: shape.layers }, () => Array.from({ length: shape.heads }, () => ({ ...rule })));
}

/** Dense attention: every head spans the whole input (`alpha 0, beta 1` gives `S(n) = n`). */
export function densePlan(shape: ModelShape, lengths: number[]): MoaPlan {
  return makePlan(shape, everyHead(shape, { alpha: 0, beta: 1 }), lengths, { baseline: "dense" });
}

/**
 * StreamingLLM-style uniform plan: every head keeps the sink plus a span of `density · n`
 * (`alpha 0, beta density`), so its KV density is about `density + G/n`.
 */
export function uniformPlan(shape: ModelShape, density: number, lengths: number[]): MoaPlan {
  if (!(density >= 0 && density <= 1))
    fail("E_ARGUMENT", "uniformPlan", "density", density, "must be in [0, 1]");
  return makePlan(shape, everyHead(shape, { alpha: 0, beta: density }), lengths, {
    baseline: "uniform",
    density,
  });
}

/** Fixed sliding window: every head keeps the sink plus `windowTokens` (`alpha w, beta 0`). */
export function fixedWindowPlan(shape: ModelShape, windowTokens: number, lengths: number[]): MoaPlan {
  if (!Number.isFinite(windowTokens) || windowTokens <= 0) {
    fail(
      "E_ARGUMENT",
      "fixedWindowPlan",
      "windowTokens",
      windowTokens,
      "must be a positive number of tokens",
    );
  }
  return makePlan(shape, everyHead(shape, { alpha: windowTokens, beta: 0 }), lengths, {
    baseline: "fixed-window",
    windowTokens,
  });
}
