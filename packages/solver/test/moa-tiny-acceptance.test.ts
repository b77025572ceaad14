/**
 * The acceptance case on the real GQA fixture: plans at KV density 0.5 keep the
 * KV density in [0.45, 0.50] at 2048, 4096, 8192 and the extend length 16384, and every
 * number the solver reports matches an independent recomputation from the profile.
 */
import { candidateGrid, planKvDensity } from "@moa/core";
import { beforeAll, describe, expect, it } from "vitest";
import { buildRuleTable, type ParetoResult, optimizePlans, solveMip } from "../src/index.js";
import { fixtureProfile, fixtureShape, independentKvDensity, independentPlanLoss } from "./fixtures.js";

const profile = fixtureProfile("moa-tiny");
const shape = fixtureShape("moa-tiny");
let front: ParetoResult;

beforeAll(async () => {
  front = await optimizePlans(profile, { shape, density: 0.5, paretoPoints: 1 });
}, 180_000);

describe("optimizePlans on moa-tiny at density 0.5", () => {
  it("keeps every plan's KV density within [0.45, 0.50] at 2048, 4096, 8192 and 16384", () => {
    expect(front.points.length).toBeGreaterThan(0);
    for (const point of front.points) {
      for (const n of [2048, 4096, 8192, 16384]) {
        const independent = independentKvDensity(point.plan, n);
        expect(independent).toBeGreaterThanOrEqual(0.45);
        expect(independent).toBeLessThanOrEqual(0.5);
        expect(planKvDensity(point.plan, n)).toBeCloseTo(independent, 12);
        expect(point.kvDensity[String(n)]).toBeCloseTo(independent, 12);
        expect(point.plan.density[String(n)]).toBeCloseTo(independent, 12);
      }
    }
  });

  it("reports each plan's loss at every profiled length as the block-by-block recomputation gives it", () => {
    for (const point of front.points) {
      for (const n of profile.lengths) {
        const independent = independentPlanLoss(profile, point.plan, n);
        expect(Math.abs(point.loss[String(n)]! - independent)).toBeLessThanOrEqual(
          1e-9 * Math.max(1, independent),
        );
      }
    }
  });

  it("returns only non-dominated, distinct plans, each with a proven gap", () => {
    const keys = front.points.map((p) => JSON.stringify(p.plan.rules));
    expect(new Set(keys).size).toBe(keys.length);
    for (const a of front.points) {
      for (const b of front.points) {
        if (a === b) continue;
        const la = profile.lengths.map((n) => a.loss[String(n)]!);
        const lb = profile.lengths.map((n) => b.loss[String(n)]!);
        const dominates = la.every((v, j) => v <= lb[j]!) && la.some((v, j) => v < lb[j]!);
        expect(dominates).toBe(false);
      }
      expect(a.gap).toBeGreaterThanOrEqual(0);
      expect(Number.isFinite(a.gap)).toBe(true);
    }
    // Every point — the anchors and the epsilon-constraint point — is proven to the default gap.
    expect(front.points.some((p) => p.origin.kind === "epsilon")).toBe(true);
    for (const a of front.points) expect(a.gap).toBeLessThanOrEqual(1e-4);
  });

  it("the objective solveMip reports equals the independent loss of its plan, weighted", async () => {
    const lengths = profile.lengths;
    const kvLengths = [...lengths, 16384];
    const rules = candidateGrid({ lengths, extend: 16384 });
    const table = buildRuleTable(profile, { rules, lossLengths: lengths, kvLengths });
    const weights = [0.25, 0.5, 1];
    const sol = await solveMip({
      table,
      kvHeads: shape.kvHeads,
      weights,
      densityUpper: kvLengths.map(() => 0.5),
      densityLower: kvLengths.map(() => 0.45),
    });
    expect(sol.status).toBe("optimal");
    const planRules = Array.from({ length: shape.layers }, (_, l) =>
      Array.from({ length: shape.heads }, (_, h) => rules[sol.headRules![l * shape.heads + h]!]!),
    );
    const plan = { ...front.points[0]!.plan, rules: planRules };
    const independent = lengths.reduce(
      (acc, n, j) => acc + weights[j]! * independentPlanLoss(profile, plan, n),
      0,
    );
    expect(Math.abs(sol.objective - independent)).toBeLessThanOrEqual(1e-9 * independent);
    expect(sol.bound).toBeLessThanOrEqual(sol.objective);
    expect((sol.objective - sol.bound) / sol.objective).toBeLessThanOrEqual(1e-4);
    for (const [k, n] of kvLengths.entries())
      expect(sol.kvDensity[k]).toBeCloseTo(independentKvDensity(plan, n), 12);
  });
});
