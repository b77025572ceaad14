/**
 * optimizePlans' front against every feasible assignment (test/brute-force.ts): the
 * epsilon-constraint grid finds only some Pareto-optimal plans, but each one it returns
 * must be feasible, measured as reported, and dominated by no feasible assignment.
 */
import { MoaError, planKvDensity, serializePlan } from "@moa/core";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type OptimizeOptions, optimizePlans } from "../src/index.js";
import {
  type Constraints,
  closeTo,
  dominates,
  feasibleAssignments,
  isFeasible,
  lossScale,
  makeOracle,
  makeScenario,
  measure,
  planHeadRules,
  randomAssignment,
  randomGrid,
  randomProfile,
  scenarioArb,
  seededRandom,
  shapeOf,
  TIGHT_GAP,
} from "./brute-force.js";

describe("optimizePlans: the Pareto front", () => {
  it("returns feasible, distinct, mutually non-dominated plans that no feasible assignment dominates", async () => {
    let fronts = 0;
    let infeasible = 0;
    let multiPoint = 0;
    await fc.assert(
      fc.asyncProperty(
        scenarioArb(),
        fc.constantFrom(0, 2, 3, 3),
        fc.nat(3),
        async (p, paretoPoints, lowerMode) => {
          const defaultLower = lowerMode === 0;
          const sc = makeScenario(p);
          const random = sc.random;
          const kvLengths = [...sc.lengths, sc.extend];
          const o = makeOracle(sc.profile, {
            rules: sc.grid,
            lossLengths: sc.lengths,
            kvLengths,
            kvHeads: sc.kvHeads,
            gqa: sc.gqa,
          });
          // The budget a random witness meets; the default lower ratio 0.9 is often infeasible.
          const witness = randomAssignment(o, random, sc.maxRulesPerLayer);
          const density = Math.max(...witness.kvDensity);
          const lowerRatio = defaultLower
            ? 0.9
            : (Math.min(...witness.kvDensity) / density) * (1 - 1e-9) * random();
          const options: OptimizeOptions = {
            shape: sc.shape,
            density,
            ...(defaultLower ? {} : { lowerRatio }),
            grid: sc.grid,
            gqa: sc.gqa,
            ...(sc.maxRulesPerLayer === undefined ? {} : { maxRulesPerLayer: sc.maxRulesPerLayer }),
            paretoPoints,
            relGap: TIGHT_GAP,
          };
          const c: Constraints = {
            densityUpper: kvLengths.map(() => density),
            densityLower: kvLengths.map(() => lowerRatio * density),
            maxRulesPerLayer: sc.maxRulesPerLayer,
          };
          const feasible = feasibleAssignments(o, c);
          if (feasible.length === 0) {
            infeasible++;
            const error = await optimizePlans(sc.profile, options).then(
              () => undefined,
              (e: unknown) => e,
            );
            expect(error, "no assignment is feasible").toBeInstanceOf(MoaError);
            expect((error as MoaError).code).toBe("E_INFEASIBLE");
            return;
          }
          const result = await optimizePlans(sc.profile, options);
          fronts++;
          const { points } = result;
          expect(points.length).toBeGreaterThan(0);
          if (points.length > 1) multiPoint++;
          const measured = points.map((point) => {
            const a = measure(o, planHeadRules(point.plan, sc.grid));
            expect(point.plan.model).toEqual(sc.shape);
            expect(isFeasible(a, c), "a point breaks the density window or the rule cap").toBe(true);
            if (sc.gqa === "per-kv-head") {
              for (const [h, r] of a.headRules.entries()) expect(r).toBe(a.headRules[h - (h % o.group)]);
            }
            for (const [j, n] of sc.lengths.entries()) {
              expect(closeTo(point.loss[String(n)]!, a.loss[j]!, 1e-12), `loss at ${n}`).toBe(true);
            }
            expect(Object.keys(point.kvDensity).map(Number)).toEqual(kvLengths);
            for (const [k, n] of kvLengths.entries()) {
              const d = planKvDensity(point.plan, n);
              expect(closeTo(point.kvDensity[String(n)]!, d, 1e-12), `KV density at ${n}`).toBe(true);
              expect(closeTo(point.plan.density[String(n)]!, d, 1e-12)).toBe(true);
              expect(closeTo(a.kvDensity[k]!, d, 1e-12)).toBe(true);
            }
            expect(point.gap).toBeLessThanOrEqual(TIGHT_GAP);
            return a;
          });
          // Dominated by no feasible assignment: no plan is as good at every length and better
          // at one. Each point is optimal to a relative gap of 1e-9 on an objective that weighs
          // the other lengths by 1e-3/scale, so "better" must exceed 1e-5 of that length's loss
          // scale (far below any difference that matters, far above what the gap allows).
          const slack = lossScale(o).map((x) => 1e-5 * x);
          const materiallyDominates = (b: ArrayLike<number>, a: ArrayLike<number>) => {
            let strict = false;
            for (let j = 0; j < a.length; j++) {
              if (b[j]! > a[j]! + 1e-12 * slack[j]!) return false;
              if (b[j]! < a[j]! - slack[j]!) strict = true;
            }
            return strict;
          };
          for (const [i, a] of measured.entries()) {
            const better = feasible.find((b) => materiallyDominates(b.loss, a.loss));
            expect(
              better,
              `point ${i} (${points[i]!.origin.kind}) with losses ${Array.from(a.loss)} is dominated by ${better ? Array.from(better.loss) : ""}`,
            ).toBeUndefined();
          }
          // Mutually non-dominated, distinct plans with distinct losses (one plan per Pareto point), ordered by
          // the loss at the longest length.
          const keys = points.map((point) => JSON.stringify(point.plan.rules));
          expect(new Set(keys).size).toBe(points.length);
          for (const [i, a] of measured.entries()) {
            for (const b of measured.slice(i + 1)) {
              const same = Array.from(a.loss).every((x, j) => closeTo(x, b.loss[j]!, 1e-12));
              expect(same, "two points with the same loss at every length").toBe(false);
            }
          }
          for (const a of measured) for (const b of measured) expect(dominates(a.loss, b.loss)).toBe(false);
          const longest = String(sc.lengths[sc.lengths.length - 1]);
          for (let i = 1; i < points.length; i++) {
            expect(points[i]!.loss[longest]!).toBeGreaterThanOrEqual(points[i - 1]!.loss[longest]!);
          }
        },
      ),
      { seed: 0xfa0001, numRuns: 40 },
    );
    expect(fronts).toBeGreaterThan(15);
    expect(infeasible).toBeGreaterThan(2);
    expect(multiPoint).toBeGreaterThan(6);
  });

  it("is deterministic: the same input gives byte-identical plans, also after other solves", async () => {
    // Larger than the enumerated cases: 2 layers × 6 query heads on 2 KV heads, 8 rules, at
    // most 2 rules per layer; each solve takes well under the default proof budget.
    const make = (seed: number) => {
      const lengths = [256, 512, 1024];
      const geometry = { blockSize: 32, sinkTokens: 32 };
      const profile = randomProfile({ layers: 2, heads: 6, lengths, seed, geometry });
      const grid = randomGrid(seededRandom(seed), lengths, 8);
      return { profile, grid, shape: shapeOf(profile, 2) };
    };
    const options = (sc: ReturnType<typeof make>): OptimizeOptions => ({
      shape: sc.shape,
      density: 0.5,
      lowerRatio: 0.5,
      grid: sc.grid,
      maxRulesPerLayer: 2,
    });
    const a = make(4);
    const b = make(5);
    const run = async (sc: ReturnType<typeof make>, profile = sc.profile) => {
      const result = await optimizePlans(profile, options(sc));
      return result.points.map((point) => serializePlan(point.plan));
    };
    const first = await run(a);
    expect(first.length).toBeGreaterThan(2);
    await run(b);
    expect(await run(a)).toEqual(first);
    // A fresh copy of the same profile (no state shared through the object) too.
    const copy = {
      ...a.profile,
      influence: new Map([...a.profile.influence].map(([n, t]) => [n, t.slice()])),
    };
    expect(await run(a, copy)).toEqual(first);
  });

  it("gives the same plans whether the epsilon points are solved in this thread or on worker threads", async () => {
    // Every epsilon point starts from the state after the anchors, so neither the thread
    // that solves it nor the points solved before it there can change its plan.
    const lengths = [256, 512, 1024];
    const geometry = { blockSize: 32, sinkTokens: 32 };
    const profile = randomProfile({ layers: 2, heads: 6, lengths, seed: 4, geometry });
    const grid = randomGrid(seededRandom(4), lengths, 8);
    const options: OptimizeOptions = {
      shape: shapeOf(profile, 2),
      density: 0.5,
      lowerRatio: 0.5,
      grid,
      paretoPoints: 3,
    };
    const plans = async (threads: number) => {
      const result = await optimizePlans(profile, { ...options, threads });
      expect(result.stats.solves).toBe(3 + 9);
      return result.points.map((point) => serializePlan(point.plan));
    };
    const inThread = await plans(1);
    expect(inThread.length).toBeGreaterThan(3);
    expect(await plans(2)).toEqual(inThread);
    expect(await plans(4)).toEqual(inThread);
  });
});
