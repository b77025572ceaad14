import { describe, expect, it } from "vitest";
import {
  densePlan,
  fixedWindowPlan,
  type ModelShape,
  parsePlanText,
  planComputeDensity,
  planKvDensity,
  serializePlan,
  uniformPlan,
} from "../src/index.js";
import { expectMoaError } from "./helpers.js";

const TINY: ModelShape = { architecture: "llama", layers: 6, heads: 6, kvHeads: 2, headDim: 64 };
const LENGTHS = [2048, 4096, 8192, 16384];

describe("baselines as plans", () => {
  it("dense plan: KV and compute density 1 at every length", () => {
    const plan = densePlan(TINY, LENGTHS);
    expect(plan.density).toEqual({ "2048": 1, "4096": 1, "8192": 1, "16384": 1 });
    for (const n of [1, 100, 5000]) expect(planComputeDensity(plan, n)).toBe(1);
    expect(parsePlanText(serializePlan(plan), "dense.json")).toEqual(plan);
  });

  it("uniform plan: sink + span d·n, KV density (G + floor(d·n/B)·B) / n", () => {
    const plan = uniformPlan(TINY, 0.5, LENGTHS);
    expect(plan.rules.flat().every((r) => r.alpha === 0 && r.beta === 0.5)).toBe(true);
    for (const n of LENGTHS) expect(plan.density[String(n)]).toBe((64 + Math.floor((0.5 * n) / 64) * 64) / n);
    // The README's "uniform span 0.5·n + sink" row reports 0.51 at the lengths it used.
    expect(plan.density["8192"]).toBeCloseTo(0.508, 3);
    expectMoaError(() => uniformPlan(TINY, 1.5, LENGTHS), "E_ARGUMENT", "uniformPlan: density = 1.5");
  });

  it("fixed window plan: sink + w tokens at every length", () => {
    const plan = fixedWindowPlan(TINY, 1024, LENGTHS);
    for (const n of LENGTHS) expect(planKvDensity(plan, n)).toBe((64 + 1024) / n);
    expectMoaError(() => fixedWindowPlan(TINY, 0, LENGTHS), "E_ARGUMENT", "windowTokens = 0");
  });
});
