/**
 * DESIGN.md: Plan (GQA) — a KV head's cache is sized by the widest rule among its query
 * heads and the KV density counts that (`kvHeadTokens`); `per-kv-head` gives all query
 * heads of a KV head one rule, their losses summed. Never converted to MHA.
 */
import { kvHeadTokens, type MoaProfile, planKvDensity } from "@moa/core";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { buildRuleTable, type GqaMode, optimizePlans, solveMip } from "../src/index.js";
import {
  closeTo,
  forEachAssignment,
  isFeasible,
  lossScale,
  makeOracle,
  makeScenario,
  type Measured,
  type Oracle,
  planOf,
  randomAssignment,
  shapeOf,
  weighted,
  TIGHT_GAP,
} from "./brute-force.js";

const NARROW = { alpha: 64, beta: 0 }; // one block: caches sink + 64 = 128 tokens at any length ≥ 128
const WIDE = { alpha: 0, beta: 1 }; // the whole input

/**
 * One layer, four query heads on two KV heads ({0,1}, {2,3}), profiled at 256 (4 blocks of
 * 64). Head h's only influence sits in block (3, 2), which NARROW drops and WIDE keeps, so
 * its loss is `v[h]` narrow and 0 wide.
 */
function handProfile(v: number[]): MoaProfile {
  const nb = 4;
  const data = new Float32Array(v.length * nb * nb);
  v.forEach((x, h) => {
    data[(h * nb + 3) * nb + 2] = x;
  });
  return {
    model: "hand",
    layers: 1,
    heads: v.length,
    blockSize: 64,
    sinkTokens: 64,
    lengths: [256],
    samplesPerLength: 1,
    calibration: "hand-made",
    influence: new Map([[256, data]]),
  };
}

describe("GQA: a KV head costs its widest query head", () => {
  // Budget 0.75 at 256 (and 512): one KV head wide (256 + 128 tokens of 512), the other narrow.
  // Widening KV head {0,1} saves 10 + 1, widening {2,3} saves 6 + 6 = 12: the optimum keeps
  // {0,1} narrow, loss 11. Counting query heads as if the model were MHA would allow two wide
  // query heads anywhere, pick heads 0 and 2 (loss 7) and really cache 1.0 at 256.
  const profile = handProfile([10, 1, 6, 6]);
  const shape = shapeOf(profile, 2);

  for (const gqa of ["per-query-head", "per-kv-head"] as GqaMode[]) {
    it(`${gqa}: optimizePlans picks the KV head whose query heads together lose most`, async () => {
      const result = await optimizePlans(profile, {
        shape,
        density: 0.75,
        lowerRatio: 0,
        grid: [NARROW, WIDE],
        gqa,
        relGap: TIGHT_GAP,
      });
      expect(result.points).toHaveLength(1);
      const point = result.points[0]!;
      expect(point.plan.model.kvHeads).toBe(2);
      expect(point.plan.rules).toEqual([[NARROW, NARROW, WIDE, WIDE]]);
      expect(point.loss).toEqual({ 256: 11 });
      expect(point.kvDensity).toEqual({ 256: 0.75, 512: 0.625 });
      expect(point.plan.density).toEqual({ 256: 0.75, 512: 0.625 });
      expect(kvHeadTokens(point.plan, 0, 0, 256)).toBe(128);
      expect(kvHeadTokens(point.plan, 0, 1, 256)).toBe(256);
    });
  }

  it("per-query-head: a narrow query head beside a wide one may widen for free", async () => {
    // v = [10, 1, 3, 3]: KV head {0,1} goes wide for head 0, and head 1 then costs nothing more.
    const p = handProfile([10, 1, 3, 3]);
    const table = buildRuleTable(p, { rules: [NARROW, WIDE], lossLengths: [256], kvLengths: [256, 512] });
    const sol = await solveMip(
      { table, kvHeads: 2, gqa: "per-query-head", weights: [1], densityUpper: [0.75, 0.75] },
      { relGap: TIGHT_GAP },
    );
    expect(sol.status).toBe("optimal");
    expect(Array.from(sol.headRules!)).toEqual([1, 1, 0, 0]);
    expect(sol.loss).toEqual([6]);
    expect(sol.kvDensity).toEqual([0.75, 0.625]);
  });
});

describe("GQA: per-query-head may mix rules that are wider at different lengths", () => {
  // X spans 256 tokens at every length; Y spans n − 192. At 256, X keeps all 4 blocks and Y
  // one; at 512 (8 blocks), X keeps 4 and Y 5. Neither caches fewer tokens than the other at
  // every length: X = (256, 320, 320) and Y = (128, 384, 896) tokens at 256, 512, 1024.
  const X = { alpha: 256, beta: 0 };
  const Y = { alpha: -192, beta: 1 };
  // Head 0's influence is at 256 in block (3, 1) (Y drops it), head 1's at 512 in block
  // (7, 3) (X drops it), so head 0 wants X and head 1 wants Y.
  const data256 = new Float32Array(2 * 4 * 4);
  data256[(0 * 4 + 3) * 4 + 1] = 5;
  const data512 = new Float32Array(2 * 8 * 8);
  data512[(1 * 8 + 7) * 8 + 3] = 2;
  const profile: MoaProfile = {
    model: "hand",
    layers: 1,
    heads: 2,
    blockSize: 64,
    sinkTokens: 64,
    lengths: [256, 512],
    samplesPerLength: 1,
    calibration: "hand-made",
    influence: new Map([
      [256, data256],
      [512, data512],
    ]),
  };
  const table = buildRuleTable(profile, {
    rules: [X, Y],
    lossLengths: [256, 512],
    kvLengths: [256, 512, 1024],
  });

  it("one KV head: per-query-head gives each query head its rule, per-kv-head must pick one", async () => {
    expect(Array.from(table.loss[0]!)).toEqual([0, 5, 0, 0]);
    expect(Array.from(table.loss[1]!)).toEqual([0, 0, 2, 0]);
    const problem = { table, kvHeads: 1, weights: [1, 1], densityUpper: [1, 1, 1] };
    const q = await solveMip({ ...problem, gqa: "per-query-head" }, { relGap: TIGHT_GAP });
    expect(Array.from(q.headRules!)).toEqual([0, 1]);
    expect(q.objective).toBe(0);
    // The KV head caches the widest of the two at each length.
    expect(q.kvDensity).toEqual([256 / 256, 384 / 512, 896 / 1024]);
    const kv = await solveMip({ ...problem, gqa: "per-kv-head" }, { relGap: TIGHT_GAP });
    expect(Array.from(kv.headRules!)).toEqual([0, 0]); // both X loses 2 (head 1), both Y 5 (head 0)
    expect(kv.objective).toBe(2);
    // Capping the KV head at X's size at 1024 rules Y out in per-query-head mode too.
    const capped = await solveMip(
      { ...problem, gqa: "per-query-head", densityUpper: [1, 1, 320 / 1024] },
      { relGap: TIGHT_GAP },
    );
    expect(Array.from(capped.headRules!)).toEqual([0, 0]);
    expect(capped.objective).toBe(2);
  });
});

/** KV density at each KV length if every query head had its own cache (the MHA conversion we never do). */
function mhaDensity(o: Oracle, a: Measured): number[] {
  return o.kvLengths.map((n, k) => {
    let tokens = 0;
    for (const r of a.headRules) tokens += o.tokens[k]![r]!;
    return tokens / (n * o.layers * o.heads);
  });
}

const gqaArb = fc
  .record({
    seed: fc.integer({ min: 1, max: 0x7fffffff }),
    layers: fc.integer({ min: 1, max: 2 }),
    shape: fc.constantFrom([2, 1], [3, 1], [4, 1], [4, 2]),
    rules: fc.integer({ min: 4, max: 6 }),
    lengthCount: fc.integer({ min: 1, max: 2 }),
  })
  .map((p) => ({
    seed: p.seed,
    layers: p.layers,
    heads: p.shape[0]!,
    kvChoice: [1, 2].indexOf(p.shape[1]!),
    rules: p.rules,
    lengthCount: p.lengthCount,
  }));

describe("GQA accounting against exhaustive enumeration", () => {
  it("per-query-head caps each KV head at its widest query head; per-kv-head shares one rule; both optimal", async () => {
    let mhaWouldDiffer = 0;
    await fc.assert(
      fc.asyncProperty(gqaArb, async (p) => {
        const qSc = makeScenario({ ...p, gqa: "per-query-head", maxRulesPerLayer: undefined });
        expect(qSc.kvHeads).toBeLessThan(qSc.profile.heads);
        const { profile, grid, random } = qSc;
        const lossLengths = qSc.lengths;
        const kvLengths = [...qSc.lengths, qSc.extend];
        const spec = { rules: grid, lossLengths, kvLengths, kvHeads: qSc.kvHeads };
        const oq = makeOracle(profile, { ...spec, gqa: "per-query-head" });
        const ok = makeOracle(profile, { ...spec, gqa: "per-kv-head" });
        const witness = randomAssignment(ok, random);
        const densityUpper = kvLengths.map(
          (_, k) => witness.kvDensity[k]! + 0.1 * random() * (1 - witness.kvDensity[k]!),
        );
        const weights = lossLengths.map(() => 0.1 + random());
        const c = { densityUpper };

        // Brute force over every per-query-head assignment, under the right accounting and the MHA one.
        let bestQ = Number.POSITIVE_INFINITY;
        let bestMha = Number.POSITIVE_INFINITY;
        forEachAssignment(oq, (a) => {
          const z = weighted(a, weights);
          if (isFeasible(a, c)) bestQ = Math.min(bestQ, z);
          if (mhaDensity(oq, a).every((d, k) => d <= densityUpper[k]! * (1 + 1e-12)))
            bestMha = Math.min(bestMha, z);
        });
        let bestKv = Number.POSITIVE_INFINITY;
        forEachAssignment(ok, (a) => {
          if (isFeasible(a, c)) bestKv = Math.min(bestKv, weighted(a, weights));
        });
        expect(bestKv).toBeLessThan(Number.POSITIVE_INFINITY); // the witness is feasible

        const table = buildRuleTable(profile, { rules: grid, lossLengths, kvLengths });
        const solve = (gqa: GqaMode) =>
          solveMip({ table, kvHeads: qSc.kvHeads, gqa, weights, densityUpper }, { relGap: TIGHT_GAP });
        const q = await solve("per-query-head");
        const kv = await solve("per-kv-head");
        const floor = 1e-12 * weights.reduce((acc, w, j) => acc + w * lossScale(oq)[j]!, 0) + 1e-300;
        expect(q.status).toBe("optimal");
        expect(kv.status).toBe("optimal");
        expect(closeTo(q.objective, bestQ, 1e-9, floor), `per-query-head ${q.objective} vs ${bestQ}`).toBe(
          true,
        );
        expect(closeTo(kv.objective, bestKv, 1e-9, floor), `per-kv-head ${kv.objective} vs ${bestKv}`).toBe(
          true,
        );
        expect(q.objective).toBeLessThanOrEqual(kv.objective + 1e-9 * Math.abs(kv.objective) + floor);

        for (const [sol, o] of [
          [q, oq],
          [kv, ok],
        ] as const) {
          const plan = planOf(o, qSc.shape, sol.headRules!);
          expect(plan.model.kvHeads).toBe(qSc.kvHeads);
          kvLengths.forEach((n, k) => {
            // The solver's density is the mean over (layer, KV head) of the widest query head.
            let tokens = 0;
            for (let l = 0; l < o.layers; l++)
              for (let g = 0; g < o.kvHeads; g++) tokens += kvHeadTokens(plan, l, g, n);
            expect(sol.kvDensity[k]).toBe(tokens / (n * o.layers * o.kvHeads));
            expect(closeTo(sol.kvDensity[k]!, planKvDensity(plan, n), 1e-15)).toBe(true);
            expect(sol.kvDensity[k]!).toBeLessThanOrEqual(densityUpper[k]! * (1 + 1e-12));
          });
        }
        const rules = Array.from(kv.headRules!);
        for (const [h, r] of rules.entries()) expect(r).toBe(rules[Math.floor(h / ok.group) * ok.group]);

        if (bestMha < bestQ * (1 - 1e-9)) mhaWouldDiffer++;
      }),
      { seed: 0x9a0001, numRuns: 30 },
    );
    // The sample has cases where the accounting decides the answer.
    expect(mhaWouldDiffer).toBeGreaterThan(0);
  });

  it("MHA (kvHeads = heads): both modes are the same problem and reach the same optimum", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 0x7fffffff }),
        fc.integer({ min: 2, max: 3 }),
        fc.constantFrom<number | undefined>(undefined, 1, 2),
        async (seed, heads, maxRulesPerLayer) => {
          // kvChoice 1: the second divisor of 2 or 3 is the number itself.
          const sc = makeScenario({
            seed,
            layers: 2,
            heads,
            kvChoice: 1,
            gqa: "per-query-head",
            rules: 5,
            lengthCount: 2,
            maxRulesPerLayer,
          });
          expect(sc.kvHeads).toBe(heads);
          const kvLengths = [...sc.lengths, sc.extend];
          const o = makeOracle(sc.profile, {
            rules: sc.grid,
            lossLengths: sc.lengths,
            kvLengths,
            kvHeads: heads,
            gqa: "per-query-head",
          });
          const witness = randomAssignment(o, sc.random, maxRulesPerLayer);
          const table = buildRuleTable(sc.profile, { rules: sc.grid, lossLengths: sc.lengths, kvLengths });
          const problem = {
            table,
            kvHeads: heads,
            weights: [1, 0.5],
            densityUpper: Array.from(witness.kvDensity),
            ...(maxRulesPerLayer === undefined ? {} : { maxRulesPerLayer }),
          };
          const q = await solveMip({ ...problem, gqa: "per-query-head" }, { relGap: TIGHT_GAP });
          const kv = await solveMip({ ...problem, gqa: "per-kv-head" }, { relGap: TIGHT_GAP });
          expect(q.status).toBe("optimal");
          expect(kv.status).toBe("optimal");
          expect(closeTo(kv.objective, q.objective, 1e-9)).toBe(true);
        },
      ),
      { seed: 0x9a0002, numRuns: 15 },
    );
  });
});
