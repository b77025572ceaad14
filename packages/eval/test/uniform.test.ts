import { kvDensity, type ModelShape, planKvDensity, SINK_TOKENS, spanBlocks, uniformPlan } from "@moa/core";
import { describe, expect, it } from "vitest";
import { uniformBaselinePlan, uniformRule } from "../src/index.js";

const B = 64;
const NANO: ModelShape = { architecture: "llama", layers: 4, heads: 4, kvHeads: 4, headDim: 64 };
const LENGTHS = [256, 300, 384, 500, 512, 1000, 1024, 2048, 3000, 4096, 8192, 32768];
const TARGETS = [0.05, 0.1, 0.125, 0.2, 0.25, 0.3, 1 / 3, 0.4, 0.5, 0.6, 0.625, 0.75, 0.9, 0.99, 1];

describe("uniformRule", () => {
  it("core's sink + span d·n overshoots the density it is named for", () => {
    expect(kvDensity({ alpha: 0, beta: 0.5 }, 512)).toBe(0.625);
    expect(planKvDensity(uniformPlan(NANO, 0.5, [512]), 512)).toBe(0.625);
    expect(kvDensity(uniformRule(0.5, 512), 512)).toBe(0.5);
  });

  it("gives the largest KV density ≤ the target, within one block of it, at every length", () => {
    for (const n of LENGTHS) {
      const least = kvDensity({ alpha: B, beta: 0 }, n);
      for (const target of TARGETS) {
        const rule = uniformRule(target, n);
        expect(rule.beta).toBe(0);
        expect(rule.alpha % B).toBe(0);
        const density = kvDensity(rule, n);
        if (least > target) {
          // Below the sink and one block no rule goes: the narrowest one.
          expect(rule).toEqual({ alpha: B, beta: 0 });
          continue;
        }
        expect(density, `target ${target} @${n}`).toBeLessThanOrEqual(target);
        expect(density, `target ${target} @${n}`).toBeGreaterThan(target - B / n);
        // One block more would exceed the target (or there is no more room).
        const blocks = spanBlocks(rule, n, B);
        if ((blocks + 1) * B <= n) {
          expect(kvDensity({ alpha: rule.alpha + B, beta: 0 }, n)).toBeGreaterThan(target);
        } else {
          expect(density).toBe(1);
        }
      }
    }
  });

  it("reaches density 1 at a dense target, even where n is not a whole number of blocks", () => {
    for (const n of [256, 300, 1000]) expect(kvDensity(uniformRule(1, n), n)).toBe(1);
    // n = 300: the sink and four blocks would be 320 tokens, capped at n.
    expect(SINK_TOKENS + spanBlocks(uniformRule(1, 300), 300, B) * B).toBeGreaterThanOrEqual(300);
  });

  it("accepts a tie: a target that is exactly a sink plus whole blocks", () => {
    for (const [n, blocks] of [
      [512, 3],
      [1024, 7],
      [2048, 10],
    ] as const) {
      const target = (SINK_TOKENS + blocks * B) / n;
      expect(uniformRule(target, n)).toEqual({ alpha: blocks * B, beta: 0 });
    }
  });

  it("refuses a target outside (0, 1] and a length that is not a positive integer", () => {
    expect(() => uniformRule(0, 512)).toThrow(/target/);
    expect(() => uniformRule(1.5, 512)).toThrow(/target/);
    expect(() => uniformRule(0.5, 0)).toThrow(/n = 0/);
    expect(() => uniformRule(0.5, 12.5)).toThrow(/n = 12.5/);
  });
});

describe("uniformBaselinePlan", () => {
  it("puts the rule on every head, so the plan's KV density is the rule's", () => {
    const rule = uniformRule(0.4, 1000);
    const plan = uniformBaselinePlan(NANO, rule, [1000], { targetKvDensity: 0.4 });
    for (const row of plan.rules) for (const r of row) expect(r).toEqual(rule);
    expect(planKvDensity(plan, 1000)).toBe(kvDensity(rule, 1000));
    expect(planKvDensity(plan, 1000)).toBeLessThanOrEqual(0.4);
    expect(plan.provenance).toMatchObject({ baseline: "uniform", targetKvDensity: 0.4 });
  });
});
