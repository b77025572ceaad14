/**
 * The narrow core (session.ts, NARROW_CORE): on epsilon-constrained problems whose LP gap
 * needs the reduced-cost core, the decomposition's answer and proven bound must agree with
 * HiGHS' compact MIP over every option, on synthetic GQA profiles.
 */
import { candidateGrid } from "@moa/core";
import { describe, expect, it } from "vitest";
import { syntheticProfile } from "../bench/synthetic.js";
import { buildRuleTable, type MipProblem, solveMip } from "../src/index.js";

describe("narrow core against the compact MIP", () => {
  it("finds the same optimum, with a bound no higher than it, on epsilon points of GQA profiles", async () => {
    let cores = 0;
    for (const seed of [3]) {
      const lengths = [2048, 4096, 8192];
      const profile = syntheticProfile({ layers: 4, heads: 8, lengths, seed });
      const table = buildRuleTable(profile, {
        rules: candidateGrid({ lengths, extend: 16384 }),
        lossLengths: lengths,
        kvLengths: [...lengths, 16384],
      });
      const base = {
        table,
        kvHeads: 2,
        densityUpper: [0.5, 0.5, 0.5, 0.5],
        densityLower: [0.45, 0.45, 0.45, 0.45],
      };
      const lossAt = (plan: { loss: number[] }, j: number) => plan.loss[j]!;
      const first = await solveMip({ ...base, weights: [1, 1, 0] });
      const last = await solveMip({ ...base, weights: [0, 0, 1] });
      expect(first.status).toBe("optimal");
      expect(last.status).toBe("optimal");
      for (const t of [0.4, 0.7]) {
        // Bounds on the losses at 2048 and 4096 between their anchor values, as the front's grid.
        const bound = (j: number) => lossAt(first, j) + t * (lossAt(last, j) - lossAt(first, j));
        const problem: MipProblem = {
          ...base,
          weights: [0, 0, 1],
          lossUpper: [bound(0), bound(1), undefined],
        };
        const decomposed = await solveMip(problem);
        const compact = await solveMip(problem, { compactOnly: true, relGap: 1e-6 });
        expect(decomposed.status).toBe("optimal");
        expect(compact.status).toBe("optimal");
        if (decomposed.stats.certifiedBy === "core-mip") cores++;
        const tol = 1e-4 * Math.abs(compact.objective) + 1e-12;
        expect(decomposed.objective).toBeLessThanOrEqual(compact.objective + tol);
        expect(decomposed.bound).toBeLessThanOrEqual(compact.objective * (1 + 1e-9) + 1e-12);
        expect(compact.bound).toBeLessThanOrEqual(decomposed.objective * (1 + 1e-9) + 1e-12);
        expect(decomposed.gap).toBeLessThanOrEqual(1e-4);
      }
    }
    // The comparison is about the core: at least one point must have needed it.
    expect(cores).toBeGreaterThan(0);
  }, 120_000);
});
