/**
 * Failure modes: budgets no plan meets (the error must say what is achievable, checked by
 * enumeration), bad options (a MoaError naming the field, before any solve), time limits.
 */
import { Worker } from "node:worker_threads";
import type { MoaProfile } from "@moa/core";
import fc from "fast-check";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  buildRuleTable,
  type MipProblem,
  type OptimizeOptions,
  optimizePlans,
  solveInWorker,
  solveMip,
} from "../src/index.js";
import {
  bruteDensityRange,
  makeOracle,
  makeScenario,
  moaErrorOf,
  randomGrid,
  randomProfile,
  scenarioArb,
  seededRandom,
  shapeOf,
} from "./brute-force.js";

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

describe("infeasible budgets", () => {
  it("a density below the least achievable names the minimum (and maximum) KV density at every constrained length", async () => {
    await fc.assert(
      fc.asyncProperty(scenarioArb(), fc.double({ min: 0.05, max: 1, noNaN: true }), async (p, below) => {
        const sc = makeScenario(p);
        const kvLengths = [...sc.lengths, sc.extend];
        const o = makeOracle(sc.profile, {
          rules: sc.grid,
          lossLengths: sc.lengths,
          kvLengths,
          kvHeads: sc.kvHeads,
          gqa: sc.gqa,
        });
        const { least, most } = bruteDensityRange(o);
        // Below the minimum at the length where it is highest, maybe at others too.
        const highest = Math.max(...least);
        const density = highest * (1 - 0.999 * below) * (1 - 1e-9);
        const tooLow = kvLengths.filter((_, k) => least[k]! > density);
        const error = await moaErrorOf(
          optimizePlans(sc.profile, {
            shape: sc.shape,
            density,
            lowerRatio: 0,
            grid: sc.grid,
            gqa: sc.gqa,
            ...(sc.maxRulesPerLayer === undefined ? {} : { maxRulesPerLayer: sc.maxRulesPerLayer }),
          }),
        );
        expect(error.code).toBe("E_INFEASIBLE");
        expect(error.field).toBe("density");
        for (const [k, n] of kvLengths.entries()) {
          // "<n>: <min>–<max>", four decimals.
          const range = new RegExp(
            `\\b${n}\\b\\D{1,4}${escapeRegExp(least[k]!.toFixed(4))}\\D{1,4}${escapeRegExp(most[k]!.toFixed(4))}`,
          );
          expect(error.message, `length ${n}: least ${least[k]}, most ${most[k]}`).toMatch(range);
        }
        // The lengths said to be out of reach are exactly those where even the narrowest plan is too wide.
        const named = /below the minimum achievable KV density at ([\d, ]+)/.exec(error.message);
        expect(named, error.message).not.toBeNull();
        expect(named![1]!.split(",").map((s) => Number(s.trim()))).toEqual(tooLow);
      }),
      { seed: 0x1f0001, numRuns: 20 },
    );
  });

  it("a lower bound above the most achievable names the maximum KV density", async () => {
    const sc = makeScenario({
      seed: 7,
      layers: 2,
      heads: 2,
      kvChoice: 0,
      gqa: "per-query-head",
      rules: 5,
      lengthCount: 2,
      maxRulesPerLayer: undefined,
    });
    const kvLengths = [...sc.lengths, sc.extend];
    const o = makeOracle(sc.profile, {
      rules: sc.grid,
      lossLengths: sc.lengths,
      kvLengths,
      kvHeads: sc.kvHeads,
      gqa: sc.gqa,
    });
    const { least, most } = bruteDensityRange(o);
    // Density 1 is above every minimum; a lower ratio of 1 asks for a full cache everywhere,
    // which the narrow rules of this grid cannot give at the longer lengths.
    const density = 1;
    const lowerRatio = 1;
    const tooHigh = kvLengths.filter((_, k) => most[k]! < lowerRatio * density);
    expect(tooHigh.length).toBeGreaterThan(0);
    const error = await moaErrorOf(
      optimizePlans(sc.profile, { shape: sc.shape, density, lowerRatio, grid: sc.grid }),
    );
    expect(error.code).toBe("E_INFEASIBLE");
    for (const [k, n] of kvLengths.entries()) {
      expect(error.message).toContain(`${n}: ${least[k]!.toFixed(4)}–${most[k]!.toFixed(4)}`);
    }
    const named = /above the maximum achievable KV density at ([\d, ]+)/.exec(error.message);
    expect(named, error.message).not.toBeNull();
    expect(named![1]!.split(",").map((s) => Number(s.trim()))).toEqual(tooHigh);
  });
});

describe("validation: bad options are MoaErrors naming the field, before any solve", () => {
  const profile = randomProfile({ layers: 2, heads: 4, lengths: [256, 512], seed: 3 });
  const grid = randomGrid(seededRandom(3), [256, 512], 5);
  const base: OptimizeOptions = { shape: shapeOf(profile, 2), density: 0.5, grid, lowerRatio: 0 };

  // [case, change, field, text the message must name (default: the field's last part)].
  // density 0, a shape with other layers and kvHeads not dividing heads: see infeasible.test.ts.
  const cases: [
    string,
    Partial<OptimizeOptions> | ((o: OptimizeOptions) => OptimizeOptions),
    string,
    string?,
  ][] = [
    ["density < 0", { density: -0.25 }, "density"],
    ["density > 1", { density: 1.0000001 }, "density"],
    ["density NaN", { density: Number.NaN }, "density"],
    ["density as a string", { density: "0.5" as unknown as number }, "density"],
    ["a length not profiled", { lengths: [256, 1024] }, "lengths", "length 1024 is not profiled"],
    ["no length", { lengths: [] }, "lengths"],
    ["a length twice", { lengths: [512, 512] }, "lengths"],
    ["shape with other heads", (o) => ({ ...o, shape: { ...o.shape, heads: 8, kvHeads: 8 } }), "shape"],
    ["kvHeads 0", (o) => ({ ...o, shape: { ...o.shape, kvHeads: 0 } }), "shape.kvHeads"],
    ["kvHeads fractional", (o) => ({ ...o, shape: { ...o.shape, kvHeads: 1.5 } }), "shape.kvHeads"],
    ["extend below the longest length", { extend: 256 }, "extend"],
    ["lowerRatio > 1", { lowerRatio: 1.5 }, "lowerRatio"],
    ["lowerRatio < 0", { lowerRatio: -0.1 }, "lowerRatio"],
    ["maxRulesPerLayer 0", { maxRulesPerLayer: 0 }, "maxRulesPerLayer"],
    ["maxRulesPerLayer fractional", { maxRulesPerLayer: 1.5 }, "maxRulesPerLayer"],
    ["an unknown gqa mode", { gqa: "per-layer" as never }, "gqa"],
    ["paretoPoints < 0", { paretoPoints: -1 }, "paretoPoints"],
    ["relGap 1", { relGap: 1 }, "relGap"],
    ["relGap < 0", { relGap: -1e-6 }, "relGap"],
    ["timeLimitSeconds 0", { timeLimitSeconds: 0 }, "timeLimitSeconds"],
    ["threads 0", { threads: 0 }, "threads"],
    ["threads fractional", { threads: 1.5 }, "threads"],
    ["an empty grid", { grid: [] }, "grid"],
  ];

  for (const [name, change, field, text] of cases) {
    it(`${name} → field ${field}`, async () => {
      const onProgress = vi.fn();
      const options = typeof change === "function" ? change(base) : { ...base, ...change };
      const error = await moaErrorOf(optimizePlans(profile, { ...options, onProgress }));
      expect(error.code).toBe("E_ARGUMENT");
      expect(error.field).toBe(field);
      expect(error.message).toContain(text ?? field.split(".").pop()!);
      expect(onProgress).not.toHaveBeenCalled();
    });
  }

  it("density exactly 1 is allowed", async () => {
    const result = await optimizePlans(profile, { ...base, density: 1 });
    expect(result.points.length).toBeGreaterThan(0);
  });

  it("solveMip checks its problem too", async () => {
    const table = buildRuleTable(profile, {
      rules: grid,
      lossLengths: [256, 512],
      kvLengths: [256, 512, 1024],
    });
    const good: MipProblem = { table, kvHeads: 2, weights: [1, 1], densityUpper: [0.5, 0.5, 0.5] };
    expect((await solveMip(good)).status).toMatch(/optimal|infeasible/);
    const bad: [Partial<MipProblem>, string][] = [
      [{ kvHeads: 3 }, "kvHeads"],
      [{ kvHeads: 0 }, "kvHeads"],
      [{ weights: [1] }, "weights"],
      [{ weights: [1, -1] }, "weights"],
      [{ weights: [1, Number.NaN] }, "weights"],
      [{ densityUpper: [0.5, 0.5] }, "densityUpper"],
      [{ densityUpper: [0.5, -0.5, 0.5] }, "densityUpper"],
      [{ densityLower: [0.1, Number.NaN, 0.1] }, "densityLower"],
      [{ lossUpper: [1] }, "lossUpper"],
      [{ maxRulesPerLayer: 0 }, "maxRulesPerLayer"],
      [{ gqa: "mha" as never }, "gqa"],
      [
        { table: { ...table, loss: [table.loss[0]!, Float64Array.from(table.loss[1]!, () => Number.NaN)] } },
        "loss",
      ],
    ];
    for (const [change, field] of bad) {
      const error = await moaErrorOf(solveMip({ ...good, ...change }));
      expect(error.code, JSON.stringify(change)).toBe("E_ARGUMENT");
      expect(error.field, JSON.stringify(change)).toBe(field);
    }
  });
});

/** A front big enough that solving it takes far longer than the time limits below. */
function largeCase(): { profile: MoaProfile; options: OptimizeOptions } {
  const lengths = [1024, 2048, 4096];
  const profile = randomProfile({ layers: 4, heads: 8, lengths, seed: 42 });
  return { profile, options: { shape: shapeOf(profile, 2), density: 0.35, lengths, maxRulesPerLayer: 3 } };
}

describe("time limits", () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it("optimizePlans: past timeLimitSeconds it throws E_TIMEOUT naming the limit", async () => {
    const { profile, options } = largeCase();
    const error = await moaErrorOf(optimizePlans(profile, { ...options, timeLimitSeconds: 1e-6 }));
    expect(error.code).toBe("E_TIMEOUT");
    expect(error.field).toBe("timeLimitSeconds");
    expect(error.message).toContain("timeLimitSeconds");
  });

  it("solveInWorker: a tiny time limit rejects with E_TIMEOUT and the worker is terminated", async () => {
    const terminate = vi.spyOn(Worker.prototype, "terminate");
    const { profile, options } = largeCase();
    const started = performance.now();
    const error = await moaErrorOf(solveInWorker(profile, { ...options, timeLimitSeconds: 0.2 }));
    const elapsed = performance.now() - started;
    expect(error.code).toBe("E_TIMEOUT");
    expect(error.field).toBe("timeLimitSeconds");
    expect(error.message).toContain("0.2");
    expect(error.message).toContain("timeLimitSeconds");
    // Rejected at the limit, not when the solve would have ended.
    expect(elapsed).toBeLessThan(5000);
    // The worker was told to stop and has exited.
    expect(terminate).toHaveBeenCalledTimes(1);
    const exited = terminate.mock.results[0]!.value as Promise<number>;
    const outcome = await Promise.race([
      exited.then(() => "exited"),
      new Promise((resolve) => setTimeout(() => resolve("still running"), 5000)),
    ]);
    expect(outcome).toBe("exited");
    expect((terminate.mock.contexts[0] as Worker).threadId).toBe(-1);
  });
});
