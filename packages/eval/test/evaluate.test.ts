import { kvDensity, type ModelShape, makePlan, planKvDensity, uniformPlan } from "@moa/core";
import { describe, expect, it } from "vitest";
import { evaluate, H2O_VARIANT, h2oBudget, reportPlots } from "../src/index.js";
import { MOA_NANO } from "./fixtures.js";

const NANO: ModelShape = { architecture: "llama", layers: 4, heads: 4, kvHeads: 4, headDim: 64 };

/** A plan whose KV density differs between lengths (fixed windows and growing spans mixed). */
function mixedPlan(lengths: number[]) {
  const rules = Array.from({ length: NANO.layers }, (_, l) =>
    Array.from({ length: NANO.heads }, (_, h) =>
      (l + h) % 2 === 0 ? { alpha: 128, beta: 0 } : { alpha: 0, beta: 0.5 },
    ),
  );
  return makePlan(NANO, rules, lengths);
}

describe("evaluate", () => {
  it("runs the baselines at the plan's KV density per length; uniform's is at most it, within one block", async () => {
    const plan = mixedPlan([256, 512]);
    expect(planKvDensity(plan, 256)).not.toBeCloseTo(planKvDensity(plan, 512), 3);
    const report = await evaluate({
      modelDir: MOA_NANO,
      plan,
      lengths: [512, 256, 384],
      tasks: ["ppl"],
      methods: ["uniform", "h2o"],
      backend: "cpu",
    });
    expect(report.settings.lengths).toEqual([256, 384, 512]);
    for (const n of [256, 384, 512]) {
      const d = planKvDensity(plan, n);
      expect(report.density?.[String(n)]).toBe(d);
      const uniform = report.results.find((r) => r.method === "uniform" && r.length === n)!;
      // Never more KV than the plan it is compared with, and not a whole block less.
      expect(uniform.kvDensity).toBeLessThanOrEqual(d);
      expect(uniform.kvDensity).toBeGreaterThan(d - 64 / n);
      // The table shows the density the uniform model really has: sink + a whole-block window, as core counts it.
      const window = uniform.kvDensity * n - 64;
      expect(window % 64).toBe(0);
      expect(uniform.kvDensity).toBe(kvDensity({ alpha: window, beta: 0 }, n));
      const h2o = report.results.find((r) => r.method === "h2o" && r.length === n)!;
      expect(h2o.kvDensity).toBe(h2oBudget(d, n).budget / n);
      expect(h2o.perplexity).toBeGreaterThan(1);
      expect(h2o.predicted).toBe(uniform.predicted);
    }
    // At n = 512 the plan's density is 0.5, where core's sink + span d·n would cache 0.625 of the tokens.
    expect(planKvDensity(plan, 512)).toBe(0.5);
    expect(planKvDensity(uniformPlan(NANO, 0.5, [512]), 512)).toBe(0.625);
    expect(report.results.find((r) => r.method === "uniform" && r.length === 512)!.kvDensity).toBe(0.5);
    expect(report.h2o).toBe(H2O_VARIANT);
  });

  it("keeps a given density's uniform baseline at or below it at every length", async () => {
    const density = 0.3;
    const lengths = [256, 448, 640];
    const report = await evaluate({
      modelDir: MOA_NANO,
      density,
      lengths,
      tasks: ["ppl"],
      methods: ["uniform"],
      backend: "cpu",
    });
    // 0.3 · 256 = 76.8 tokens: below the sink and one block (128), the least a rule caches; the others fit.
    const got = lengths.map((n) => report.results.find((r) => r.length === n)!.kvDensity);
    expect(got).toEqual([128 / 256, 128 / 448, 192 / 640]);
    for (const [i, n] of lengths.entries()) {
      if (n === 256) continue;
      expect(got[i]).toBeLessThanOrEqual(density);
      expect(got[i]).toBeGreaterThan(density - 64 / n);
    }
  });

  it("gives every method the same prompts and records every answer", async () => {
    const report = await evaluate({
      modelDir: MOA_NANO,
      plan: mixedPlan([256]),
      lengths: [256],
      prompts: 3,
      depths: [0, 1],
      tasks: ["lines", "passkey"],
      batch: 2,
      backend: "cpu",
    });
    expect(report.settings.methods).toEqual(["dense", "plan", "uniform", "h2o"]);
    expect(report.results).toHaveLength(4 * 2);
    for (const task of ["lines", "passkey"] as const) {
      const byMethod = report.settings.methods.map((m) =>
        report.samples
          .filter((s) => s.method === m && s.task === task)
          .map((s) => [s.answer, s.depth, s.promptTokens]),
      );
      expect(byMethod[0]).toHaveLength(3);
      for (const other of byMethod.slice(1)) expect(other).toEqual(byMethod[0]);
      expect(byMethod[0]!.map((x) => x[1])).toEqual([0, 1, 0]);
    }
    for (const r of report.results) {
      const samples = report.samples.filter((s) => s.method === r.method && s.task === r.task);
      expect(r.correct).toBe(samples.filter((s) => s.correct).length);
      expect(r.accuracy).toBe(r.correct! / 3);
      expect(r.byDepth!.reduce((s, d) => s + d.total, 0)).toBe(3);
      expect(r.tokens).toBeLessThanOrEqual(256 - 8);
    }
    // Dense moa-nano answers short passkey prompts.
    expect(report.results.find((r) => r.method === "dense" && r.task === "passkey")!.accuracy).toBe(1);
    const plots = reportPlots(report, "moa-nano");
    expect([...plots.keys()]).toEqual(["lines", "passkey"]);
  });

  it("rejects unknown tasks and methods, a plan for another model, and lengths beyond the context", async () => {
    const base = { modelDir: MOA_NANO, backend: "cpu" as const, lengths: [256] };
    await expect(evaluate({ ...base, tasks: ["lines", "summaries" as never] })).rejects.toThrow(
      /unknown task/,
    );
    await expect(evaluate({ ...base, methods: ["dense", "quest" as never] })).rejects.toThrow(
      /unknown method/,
    );
    await expect(evaluate({ ...base, methods: ["plan"] })).rejects.toThrow(/needs a plan/);
    await expect(evaluate({ ...base, methods: ["h2o"] })).rejects.toThrow(/plan .* or a density/);
    await expect(evaluate({ ...base, lengths: [4096] })).rejects.toThrow(/context/);
    await expect(evaluate({ ...base, lengths: [100] })).rejects.toThrow(/≥ 256/);
    const tiny = uniformPlan({ ...NANO, layers: 6, heads: 6, kvHeads: 2 }, 0.5, [256]);
    await expect(evaluate({ ...base, plan: tiny })).rejects.toThrow(/another model/);
  });
});
