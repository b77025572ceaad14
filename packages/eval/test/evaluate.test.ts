import { type ModelShape, makePlan, planKvDensity, uniformPlan } from "@moa/core";
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
  it("runs the baselines at the plan's KV density per length; uniform's density is core's", async () => {
    const plan = mixedPlan([256, 512]);
    expect(planKvDensity(plan, 256)).not.toBeCloseTo(planKvDensity(plan, 512), 3);
    const report = await evaluate({
      modelDir: MOA_NANO,
      plan,
      lengths: [512, 256],
      tasks: ["ppl"],
      methods: ["uniform", "h2o"],
      backend: "cpu",
    });
    expect(report.settings.lengths).toEqual([256, 512]);
    for (const n of [256, 512]) {
      const d = planKvDensity(plan, n);
      expect(report.density?.[String(n)]).toBe(d);
      const uniform = report.results.find((r) => r.method === "uniform" && r.length === n)!;
      expect(uniform.kvDensity).toBe(planKvDensity(uniformPlan(NANO, d, [n]), n));
      const h2o = report.results.find((r) => r.method === "h2o" && r.length === n)!;
      expect(h2o.kvDensity).toBe(h2oBudget(d, n).budget / n);
      expect(h2o.perplexity).toBeGreaterThan(1);
      expect(h2o.predicted).toBe(uniform.predicted);
    }
    expect(report.h2o).toBe(H2O_VARIANT);
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
