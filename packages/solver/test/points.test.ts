/**
 * PointPool: every point is solved from the same session state, so the results cannot
 * depend on how many threads share the points, nor on a worker that is lost on the way.
 */
import { candidateGrid } from "@moa/core";
import { describe, expect, it } from "vitest";
import { syntheticProfile } from "../bench/synthetic.js";
import { buildRuleTable } from "../src/index.js";
import { highsRuntime } from "../src/highs.js";
import { PointPool } from "../src/points.js";
import type { MipStructure, MipTargets } from "../src/problem.js";
import { MipSession, type SessionResult } from "../src/session.js";
import { buildStructure } from "../src/structure.js";

describe("PointPool", () => {
  it("gives each point the same plan, bound and gap in this thread, on workers, and when its workers die", async () => {
    const lengths = [2048, 4096, 8192];
    const profile = syntheticProfile({ layers: 2, heads: 8, lengths, seed: 5 });
    const table = buildRuleTable(profile, {
      rules: candidateGrid({ lengths, extend: 16384 }),
      lossLengths: lengths,
      kvLengths: [...lengths, 16384],
    });
    const structure: MipStructure = { table, kvHeads: 2 };
    const st = buildStructure(structure);
    const highs = await highsRuntime();
    const options = { relGap: 1e-4, proofNodes: 5000, deadline: Number.POSITIVE_INFINITY };
    const window = { densityUpper: [0.5, 0.5, 0.5, 0.5], densityLower: [0.45, 0.45, 0.45, 0.45] };
    // The state after one anchor, then points that weight the lengths differently.
    const session = new MipSession(highs, st);
    const anchor = session.solve({ ...window, weights: [1, 0.001, 0.001] }, options);
    expect(anchor.status).toBe("optimal");
    const state = session.snapshot();
    session.dispose();
    const tasks: MipTargets[] = [
      [0.001, 0.001, 1],
      [0.001, 1, 0.001],
      [1, 1, 1],
      [0.3, 0, 1],
      [0, 1, 0.2],
    ].map((weights) => ({ ...window, weights }));
    const run = async (pool: PointPool) => {
      const seen: number[] = [];
      try {
        const results = await pool.solve(state, tasks, options, (id) => seen.push(id));
        // Every point reported once.
        expect([...seen].sort()).toEqual(tasks.map((_, i) => i));
        return results.map((r: SessionResult) => ({
          assign: Array.from(r.assign!),
          objective: r.objective,
          bound: r.bound,
          gap: r.gap,
        }));
      } finally {
        await pool.close();
      }
    };
    const here = await run(new PointPool(highs, st, structure, 1));
    for (const r of here) expect(r.gap).toBeLessThanOrEqual(1e-4);
    expect(await run(new PointPool(highs, st, structure, 3))).toEqual(here);
    // Workers handed a structure they cannot build exit at start-up: this thread solves their points.
    const broken = { table: undefined } as unknown as MipStructure;
    expect(await run(new PointPool(highs, st, broken, 3))).toEqual(here);
  }, 120_000);
});
