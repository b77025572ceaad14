/**
 * The solver's answers against exhaustive enumeration of every rule assignment of small
 * random profiles (test/brute-force.ts): the optimum, feasibility, infeasibility, the
 * reported measures and the proven bound, in both GQA modes, with and without a cap on
 * the distinct rules per layer, through the decomposition and the compact MIP.
 */
import { planKvDensity } from "@moa/core";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { buildRuleTable, DEFAULT_REL_GAP, type MipProblem, optimizePlans, solveMip } from "../src/index.js";
import {
  bruteBracket,
  bruteMinimum,
  type Constraints,
  closeTo,
  feasibleAssignments,
  isFeasible,
  lossBoundSlack,
  listMinimum,
  lossScale,
  makeOracle,
  makeScenario,
  type Measured,
  measure,
  type Oracle,
  pick,
  planHeadRules,
  planOf,
  randomAssignment,
  scenarioArb,
  weighted,
  TIGHT_GAP,
} from "./brute-force.js";

/** Relative agreement demanded of an objective with the brute-force optimum. */
const REL = 1e-9;

/** Absolute floor for comparisons of objectives that may be 0. */
function objectiveFloor(o: Oracle, weights: readonly number[]): number {
  const scale = lossScale(o);
  return 1e-12 * weights.reduce((acc, w, j) => acc + w * scale[j]!, 0) + 1e-300;
}

function expectGroupsShareRules(o: Oracle, headRules: Int32Array): void {
  if (o.gqa !== "per-kv-head") return;
  for (let h = 0; h < headRules.length; h++) {
    const first = Math.floor(h / o.group) * o.group;
    expect(headRules[h], `per-kv-head: query head ${h} differs from its group's first head ${first}`).toBe(
      headRules[first],
    );
  }
}

describe("solveMip against exhaustive enumeration", () => {
  it("finds the brute-force optimum, or reports infeasible exactly when no assignment is feasible", async () => {
    let feasibleRuns = 0;
    let infeasibleRuns = 0;
    await fc.assert(
      fc.asyncProperty(
        scenarioArb(),
        fc.constantFrom(TIGHT_GAP, 1e-6, 1e-4),
        fc.boolean(),
        async (params, relGap, compactOnly) => {
          const sc = makeScenario(params);
          const random = sc.random;
          let lossLengths = sc.lengths.filter(() => random() < 0.7);
          if (lossLengths.length === 0) lossLengths = [sc.lengths[sc.lengths.length - 1]!];
          const kvLengths = [...sc.lengths, sc.extend];
          const o = makeOracle(sc.profile, {
            rules: sc.grid,
            lossLengths,
            kvLengths,
            kvHeads: sc.kvHeads,
            gqa: sc.gqa,
          });
          // Bounds around a random witness: exactly its density (a tie the solver must accept),
          // a little above, or below it (often infeasible).
          const witness = randomAssignment(o, random, sc.maxRulesPerLayer);
          const densityUpper = kvLengths.map((_, k) => {
            const w = witness.kvDensity[k]!;
            const u = random();
            return u < 0.35
              ? w
              : u < 0.75
                ? Math.min(1, w + 0.3 * random() * (1 - w))
                : w * (0.6 + 0.4 * random());
          });
          const densityLower =
            random() < 0.4
              ? undefined
              : densityUpper.map((d, k) =>
                  random() < 0.5 ? 0.9 * d : Math.min(d, witness.kvDensity[k]!) * random(),
                );
          const lossUpper =
            random() < 0.5
              ? undefined
              : lossLengths.map((_, j) =>
                  random() < 0.3 ? undefined : witness.loss[j]! * (0.7 + 0.6 * random()) + 1e-3 * random(),
                );
          const weights = lossLengths.map(() =>
            pick<number>(random, [0, 1, random(), 1e-3 * random() + 1e-9]),
          );
          if (!weights.some((w) => w > 0)) weights[weights.length - 1] = 1;
          const c: Constraints = {
            densityUpper,
            ...(densityLower ? { densityLower } : {}),
            ...(lossUpper ? { lossUpper } : {}),
            maxRulesPerLayer: sc.maxRulesPerLayer,
          };
          const slack = lossBoundSlack(o, lossUpper);
          const { strict, lenient } = bruteBracket(o, weights, c, slack);

          const problem: MipProblem = {
            table: buildRuleTable(sc.profile, { rules: sc.grid, lossLengths, kvLengths }),
            kvHeads: sc.kvHeads,
            gqa: sc.gqa,
            ...(sc.maxRulesPerLayer === undefined ? {} : { maxRulesPerLayer: sc.maxRulesPerLayer }),
            weights,
            densityUpper,
            ...(densityLower ? { densityLower } : {}),
            ...(lossUpper ? { lossUpper } : {}),
          };
          const sol = await solveMip(problem, { relGap, compactOnly });

          if (lenient.feasibleCount === 0) {
            infeasibleRuns++;
            expect(sol.status, "no assignment is feasible, yet the solver found one").toBe("infeasible");
            expect(sol.headRules).toBeUndefined();
            return;
          }
          if (strict.feasibleCount > 0) {
            expect(sol.status, `${strict.feasibleCount} assignments are feasible`).toBe("optimal");
          }
          if (sol.status !== "optimal") return;
          feasibleRuns++;
          const a: Measured = measure(o, sol.headRules!);
          expect(isFeasible(a, c, slack), "the returned assignment breaks a constraint").toBe(true);
          expectGroupsShareRules(o, a.headRules);
          // Reported measures are the assignment's, counted as @moa/core counts them.
          const plan = planOf(o, sc.shape, a.headRules);
          for (const [j, l] of sol.loss.entries()) expect(closeTo(l, a.loss[j]!, 1e-12)).toBe(true);
          for (const [k, n] of kvLengths.entries()) {
            expect(closeTo(sol.kvDensity[k]!, planKvDensity(plan, n), 1e-12)).toBe(true);
          }
          const floor = objectiveFloor(o, weights);
          expect(closeTo(sol.objective, weighted(a, weights), 1e-12, floor)).toBe(true);
          // Optimal within the gap it was asked to prove; never better than any feasible assignment.
          const best = strict.feasibleCount > 0 ? strict.value : lenient.value;
          const tol = REL * Math.max(Math.abs(best), floor);
          expect(sol.objective).toBeGreaterThanOrEqual(lenient.value - tol);
          if (strict.feasibleCount > 0) {
            expect(
              sol.objective,
              `objective ${sol.objective} vs brute-force optimum ${strict.value} (relGap ${relGap})`,
            ).toBeLessThanOrEqual(strict.value + relGap * Math.abs(sol.objective) + tol);
          }
          // The proven bound is a true lower bound, and the gap is what was asked.
          expect(sol.bound).toBeLessThanOrEqual(lenient.value + tol);
          expect(sol.gap).toBeLessThanOrEqual(relGap + 1e-12);
        },
      ),
      { seed: 0x5eed01, numRuns: 60 },
    );
    // The sample must exercise both outcomes.
    expect(feasibleRuns).toBeGreaterThan(10);
    expect(infeasibleRuns).toBeGreaterThan(3);
  });
});

describe("solveMip: the scale of the objective does not matter", () => {
  it("weights of any magnitude give the brute-force optimum, a finite proven bound and the gap asked", async () => {
    await fc.assert(
      fc.asyncProperty(
        scenarioArb(),
        fc.constantFrom(-6, -3, 3, 6, 9),
        fc.constantFrom(TIGHT_GAP, 1e-6),
        async (params, exponent, relGap) => {
          const sc = makeScenario(params);
          const random = sc.random;
          const kvLengths = [...sc.lengths, sc.extend];
          const o = makeOracle(sc.profile, {
            rules: sc.grid,
            lossLengths: sc.lengths,
            kvLengths,
            kvHeads: sc.kvHeads,
            gqa: sc.gqa,
          });
          const witness = randomAssignment(o, random, sc.maxRulesPerLayer);
          const densityUpper = Array.from(witness.kvDensity, (d) => d + 0.1 * random() * (1 - d));
          const weights = sc.lengths.map(() => 10 ** exponent * (0.1 + random()));
          const c: Constraints = { densityUpper, maxRulesPerLayer: sc.maxRulesPerLayer };
          const brute = bruteMinimum(o, weights, c);
          expect(brute.feasibleCount).toBeGreaterThan(0);
          const sol = await solveMip(
            {
              table: buildRuleTable(sc.profile, { rules: sc.grid, lossLengths: sc.lengths, kvLengths }),
              kvHeads: sc.kvHeads,
              gqa: sc.gqa,
              ...(sc.maxRulesPerLayer === undefined ? {} : { maxRulesPerLayer: sc.maxRulesPerLayer }),
              weights,
              densityUpper,
            },
            { relGap },
          );
          expect(sol.status).toBe("optimal");
          const a = measure(o, sol.headRules!);
          expect(isFeasible(a, c)).toBe(true);
          const floor = objectiveFloor(o, weights);
          const tol = REL * Math.max(brute.value, floor);
          expect(sol.objective, `objective ${sol.objective} vs ${brute.value}`).toBeLessThanOrEqual(
            brute.value + relGap * sol.objective + tol,
          );
          expect(sol.objective).toBeGreaterThanOrEqual(brute.value - tol);
          expect(Number.isFinite(sol.bound), `bound ${sol.bound}`).toBe(true);
          expect(sol.bound).toBeLessThanOrEqual(brute.value + tol);
          expect(sol.gap).toBeLessThanOrEqual(relGap + 1e-12);
        },
      ),
      { seed: 0x5eed04, numRuns: 30 },
    );
  });

  it("small weights: 2 layers × 2 heads, 4 rules, one length — the optimum at every scale, by both paths", async () => {
    // Budget floor(0.2666 · 512 · 4) = 545 tokens. The optimum (checked by hand and by the
    // enumeration below) is rules [3, 1, 1, 0]: 208 + 128 + 128 + 80 = 544 tokens, loss
    // 0.7978 + 0.0253 + 0.0718 + 0 = 0.8949.
    const table = {
      layers: 2,
      heads: 2,
      rules: [
        { alpha: 0, beta: 0.125 },
        { alpha: 48, beta: 0.125 },
        { alpha: 32, beta: 0.25 },
        { alpha: 32, beta: 0.3125 },
      ],
      lossLengths: [512],
      loss: [
        Float64Array.from([
          2.2587, 1.6737, 1.064, 0.7978, 0.0567, 0.0253, 0.0117, 0.0065, 0.0998, 0.0718, 0.0544, 0.0412, 0, 0,
          0, 0,
        ]),
      ],
      kvLengths: [512],
      kvTokens: [Int32Array.from([80, 128, 176, 208])],
    };
    let best = Number.POSITIVE_INFINITY;
    for (let i = 0; i < 4 ** 4; i++) {
      const rules = [0, 1, 2, 3].map((h) => Math.floor(i / 4 ** h) % 4);
      if (rules.reduce((t, r) => t + table.kvTokens[0]![r]!, 0) > 545) continue;
      best = Math.min(
        best,
        rules.reduce((z, r, h) => z + table.loss[0]![h * 4 + r]!, 0),
      );
    }
    expect(best).toBeCloseTo(0.8949, 12);
    const wrong: string[] = [];
    for (const weight of [1, 1e-3, 1e-5, 1e-6, 1e-7]) {
      for (const compactOnly of [false, true]) {
        const sol = await solveMip(
          { table, kvHeads: 2, weights: [weight], densityUpper: [0.2666] },
          { relGap: TIGHT_GAP, compactOnly },
        );
        const loss = sol.loss[0]!;
        if (Math.abs(loss - best) > 1e-12 || sol.bound / weight > best * (1 + 1e-9)) {
          wrong.push(
            `weight ${weight}${compactOnly ? " compactOnly" : ""}: ${sol.status}, rules ${Array.from(sol.headRules!)}, loss ${loss}, bound/weight ${sol.bound / weight}`,
          );
        }
      }
    }
    expect(wrong).toEqual([]);
  });

  it("large weights: the master LP gets the objective in its own units, not a raw HighsError", async () => {
    // MHA, 1 layer × 5 heads, 4 rules, 3 lengths; found by the property above (weights 1e9).
    const table = {
      layers: 1,
      heads: 5,
      rules: [
        { alpha: 96, beta: 0.5 },
        { alpha: 48, beta: 0.1875 },
        { alpha: 64, beta: 0.4375 },
        { alpha: 0, beta: 0.1875 },
      ],
      lossLengths: [256, 512, 1024],
      loss: [
        [
          0, 0.0002007, 0.00001005, 0.0002007, 0, 0.09502, 0.01714, 0.09502, 0, 0.2425, 0.02938, 0.2425, 0,
          0.01685, 0.002422, 0.01685, 0, 0.005542, 0.0006393, 0.005542,
        ],
        [
          0.00006253, 0.002867, 0.0003675, 0.007479, 0.007808, 0.09696, 0.009718, 0.2731, 0, 0.003301,
          0.0002952, 0.01271, 0.04577, 0.9907, 0.4369, 1.29, 0.004154, 0.4983, 0.03737, 0.9244,
        ],
        [
          0.1358, 1.984, 0.2226, 1.984, 0.0003699, 0.006247, 0.0005447, 0.006247, 0.000008395, 0.001372,
          0.00003839, 0.001372, 0.01347, 0.05693, 0.0181, 0.05693, 0.004478, 0.1576, 0.008134, 0.1576,
        ],
      ].map((row) => Float64Array.from(row)),
      kvLengths: [256, 512, 2048],
      kvTokens: [
        [256, 128, 192, 128],
        [384, 192, 320, 128],
        [1152, 448, 1024, 448],
      ].map((row) => Int32Array.from(row)),
    };
    const weights = [0.69, 0.88, 0.16];
    const problem = { table, kvHeads: 5, densityUpper: [0.655, 0.487, 0.39] };
    // The optimum by enumeration (MHA: every head caches its own rule).
    let best = { z: Number.POSITIVE_INFINITY, rules: [] as number[] };
    for (let i = 0; i < 4 ** 5; i++) {
      const rules = [0, 1, 2, 3, 4].map((h) => Math.floor(i / 4 ** h) % 4);
      const fits = table.kvLengths.every(
        (n, k) => rules.reduce((t, r) => t + table.kvTokens[k]![r]!, 0) / (5 * n) <= problem.densityUpper[k]!,
      );
      if (!fits) continue;
      const z = weights.reduce(
        (acc, w, j) => acc + w * rules.reduce((t, r, h) => t + table.loss[j]![h * 4 + r]!, 0),
        0,
      );
      if (z < best.z) best = { z, rules };
    }
    expect(best.rules).toEqual([3, 1, 1, 0, 2]);
    const reference = await solveMip({ ...problem, weights }, { relGap: TIGHT_GAP });
    expect(Array.from(reference.headRules!)).toEqual(best.rules);
    expect(reference.objective).toBeCloseTo(best.z, 12);
    const outcomes: string[] = [];
    for (const scale of [1e3, 1e6, 1e9, 1e12]) {
      const outcome = await solveMip(
        { ...problem, weights: weights.map((w) => w * scale) },
        { relGap: TIGHT_GAP },
      ).then(
        (sol) => `${sol.status} ${Array.from(sol.headRules ?? [])} ${(sol.objective / scale).toFixed(8)}`,
        (error: unknown) => `throws ${error instanceof Error ? error.name : ""}: ${String(error)}`,
      );
      outcomes.push(`×${scale}: ${outcome}`);
    }
    const expected = `optimal 3,1,1,0,2 ${reference.objective.toFixed(8)}`;
    expect(outcomes).toEqual([1e3, 1e6, 1e9, 1e12].map((scale) => `×${scale}: ${expected}`));
  });

  it("a single feasible plan and raw losses of 1e4 (regression: the master LP's penalty did not scale)", async () => {
    // One KV head over two query heads; only [narrow, narrow] fits 0.5 at 1024.
    const table = {
      layers: 1,
      heads: 2,
      rules: [
        { alpha: 64, beta: 0 },
        { alpha: 0, beta: 1 },
      ],
      lossLengths: [1024],
      loss: [Float64Array.from([10000, 1000, 10, 1])],
      kvLengths: [1024],
      kvTokens: [Int32Array.from([128, 1024])],
    };
    for (const weight of [1e-3, 1, 1e6]) {
      const sol = await solveMip({ table, kvHeads: 1, weights: [weight], densityUpper: [0.5] });
      expect(sol.status).toBe("optimal");
      expect(Array.from(sol.headRules!)).toEqual([0, 0]);
      expect(sol.objective).toBe(10010 * weight);
      expect(sol.bound).toBeCloseTo(10010 * weight, 6);
      expect(sol.gap).toBeLessThanOrEqual(1e-6);
      expect(sol.stats.rounds).toBeLessThan(100);
    }
  });
});

describe("optimizePlans against exhaustive enumeration", () => {
  it("every point minimises the objective it reports: anchors and epsilon-constraint points", async () => {
    let points = 0;
    await fc.assert(
      fc.asyncProperty(scenarioArb(), fc.integer({ min: 1, max: 3 }), async (p, count) => {
        const sc = makeScenario({ ...p, lengthCount: count });
        const random = sc.random;
        const kvLengths = [...sc.lengths, sc.extend];
        const o = makeOracle(sc.profile, {
          rules: sc.grid,
          lossLengths: sc.lengths,
          kvLengths,
          kvHeads: sc.kvHeads,
          gqa: sc.gqa,
        });
        // A budget a random witness meets, with a lower ratio it meets too.
        const witness = randomAssignment(o, random, sc.maxRulesPerLayer);
        const density = Math.max(...witness.kvDensity);
        const lowerRatio =
          random() < 0.3 ? 0 : (Math.min(...witness.kvDensity) / density) * (1 - 1e-9) * random();
        const result = await optimizePlans(sc.profile, {
          shape: sc.shape,
          density,
          lowerRatio,
          grid: sc.grid,
          gqa: sc.gqa,
          ...(sc.maxRulesPerLayer === undefined ? {} : { maxRulesPerLayer: sc.maxRulesPerLayer }),
          paretoPoints: 2,
          relGap: TIGHT_GAP,
        });
        const c: Constraints = {
          densityUpper: kvLengths.map(() => density),
          densityLower: kvLengths.map(() => lowerRatio * density),
          maxRulesPerLayer: sc.maxRulesPerLayer,
        };
        const scale = lossScale(o);
        const m = sc.lengths.length;
        const feasible = feasibleAssignments(o, c);
        for (const point of result.points) {
          points++;
          const a = measure(o, planHeadRules(point.plan, sc.grid));
          expect(isFeasible(a, c)).toBe(true);
          // pareto.ts: minimise loss/scale at one length (the anchor's, or the longest for an
          // epsilon point) plus 1e-3·loss/scale at the others.
          const main = point.origin.kind === "anchor" ? sc.lengths.indexOf(point.origin.length) : m - 1;
          expect(main).toBeGreaterThanOrEqual(0);
          const weights = sc.lengths.map((_, j) => (j === main ? 1 : 1e-3) / scale[j]!);
          expect(
            closeTo(point.objective, weighted(a, weights), 1e-9),
            "the reported objective is not Σ (1 or 1e-3)·loss/scale of the plan",
          ).toBe(true);
          const lossUpper =
            point.origin.kind === "epsilon"
              ? sc.lengths.map((n) =>
                  point.origin.kind === "epsilon" ? point.origin.lossUpper[String(n)] : undefined,
                )
              : undefined;
          const bounded: Constraints = { ...c, ...(lossUpper ? { lossUpper } : {}) };
          const slack = lossBoundSlack(o, lossUpper);
          const strict = listMinimum(feasible, weights, bounded);
          const lenient = listMinimum(feasible, weights, bounded, slack);
          expect(lenient.feasibleCount).toBeGreaterThan(0);
          const tol = REL * Math.max(Math.abs(lenient.value), 1e-300);
          expect(point.objective).toBeGreaterThanOrEqual(lenient.value - tol);
          if (strict.feasibleCount > 0) {
            expect(
              point.objective,
              `${point.origin.kind} point: objective ${point.objective} vs brute-force ${strict.value}`,
            ).toBeLessThanOrEqual(strict.value + tol);
          }
        }
      }),
      { seed: 0x5eed02, numRuns: 25 },
    );
    expect(points).toBeGreaterThan(25);
  });

  it("with one profiled length the single point has the least loss any feasible plan has", async () => {
    await fc.assert(
      fc.asyncProperty(scenarioArb({ lengthCount: 1 }), async (p) => {
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
        const witness = randomAssignment(o, random, sc.maxRulesPerLayer);
        const density = Math.max(...witness.kvDensity);
        const options = {
          shape: sc.shape,
          density,
          lowerRatio: 0,
          grid: sc.grid,
          gqa: sc.gqa,
          ...(sc.maxRulesPerLayer === undefined ? {} : { maxRulesPerLayer: sc.maxRulesPerLayer }),
        };
        const c: Constraints = {
          densityUpper: kvLengths.map(() => density),
          maxRulesPerLayer: sc.maxRulesPerLayer,
        };
        const brute = bruteMinimum(o, [1], c);
        const n = String(sc.lengths[0]);
        // Within the tight gap, and within the default gap otherwise.
        for (const relGap of [TIGHT_GAP, undefined]) {
          const result = await optimizePlans(sc.profile, {
            ...options,
            ...(relGap === undefined ? {} : { relGap }),
          });
          expect(result.points).toHaveLength(1);
          const point = result.points[0]!;
          expect(point.origin).toEqual({ kind: "anchor", length: sc.lengths[0] });
          const a = measure(o, planHeadRules(point.plan, sc.grid));
          expect(isFeasible(a, c)).toBe(true);
          expect(closeTo(point.loss[n]!, a.loss[0]!, 1e-12)).toBe(true);
          const allowed = (relGap ?? DEFAULT_REL_GAP) + REL;
          expect(point.loss[n]!, `loss ${point.loss[n]} vs brute-force ${brute.value}`).toBeLessThanOrEqual(
            brute.value + allowed * Math.max(brute.value, 1e-300),
          );
          expect(point.loss[n]!).toBeGreaterThanOrEqual(brute.value * (1 - REL));
        }
      }),
      { seed: 0x5eed03, numRuns: 25 },
    );
  });
});
