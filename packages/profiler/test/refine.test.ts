import { type MoaProfile, makePlan, planKvDensity } from "@moa/core";
import { optimizePlans } from "@moa/solver";
import { describe, expect, it } from "vitest";
import { FULL_RULE, narrowKvHeads, pinProfile, rulesProfileLoss, widenKvHeads } from "../src/index.js";

const shape = { architecture: "llama", layers: 2, heads: 4, kvHeads: 2, headDim: 64 };
const lengths = [512, 1024];

/**
 * Layer 0 spreads its influence over every block (a large sum); layer 1's second KV head puts a little on one
 * far block (a retrieval head); everything else is local.
 */
function syntheticProfile(): MoaProfile {
  const influence = new Map<number, Float32Array>();
  for (const n of lengths) {
    const nb = n / 64;
    const data = new Float32Array(shape.layers * shape.heads * nb * nb);
    for (let layer = 0; layer < shape.layers; layer++) {
      for (let head = 0; head < shape.heads; head++) {
        const base = (layer * shape.heads + head) * nb * nb;
        for (let qb = 0; qb < nb; qb++) {
          for (let kb = 0; kb <= qb; kb++) {
            let v = qb - kb < 2 ? 1 : 0;
            if (layer === 0) v += 0.05;
            if (layer === 1 && head >= 2 && kb === 1 && qb === nb - 1) v += 0.2;
            data[base + qb * nb + kb] = v;
          }
        }
      }
    }
    influence.set(n, data);
  }
  return {
    model: "synthetic",
    layers: shape.layers,
    heads: shape.heads,
    blockSize: 64,
    sinkTokens: 64,
    lengths,
    samplesPerLength: 1,
    calibration: "synthetic",
    influence,
  };
}

describe("head probes and pinning", () => {
  it("list the KV heads narrower than the context, and widen a KV head's query heads to the whole context", () => {
    const narrow = { alpha: 0, beta: 0.25 };
    const rules = [
      [FULL_RULE, FULL_RULE, narrow, narrow],
      [narrow, { alpha: 2048, beta: 0 }, narrow, narrow],
    ];
    const plan = makePlan(shape, rules, [1024]);
    // Layer 1 KV head 0 keeps 2048 ≥ 1024 tokens through its second query head: whole at 1024.
    expect(narrowKvHeads(plan, 1024)).toEqual([
      { layer: 0, kvHead: 1 },
      { layer: 1, kvHead: 1 },
    ]);
    expect(narrowKvHeads(plan, 4096)).toHaveLength(3);
    const wide = widenKvHeads(plan, [{ layer: 1, kvHead: 1 }]);
    expect(wide[1]).toEqual([narrow, { alpha: 2048, beta: 0 }, FULL_RULE, FULL_RULE]);
    expect(wide[0]).toEqual(rules[0]);
    expect(plan.rules[1]![2]).toEqual(narrow);
  });

  it("a pinned KV head keeps every block at every profiled length, within the same KV budget", async () => {
    const profile = syntheticProfile();
    const options = { shape, density: 0.45, lengths, extend: 2048, lowerRatio: 0, paretoPoints: 0 };
    const free = await optimizePlans(profile, options);
    const pinnedHead = { layer: 1, kvHead: 1 };
    const retrievalKept = (rules: { alpha: number; beta: number }[][]) =>
      lengths.every((n) => rules[1]!.slice(2).every((r) => r.alpha + r.beta * n >= n));
    // The profile alone spends the budget on layer 0's diffuse influence.
    expect(free.points.some((p) => retrievalKept(p.plan.rules))).toBe(false);
    const pinned = await optimizePlans(pinProfile(profile, shape, [pinnedHead]), options);
    expect(pinned.points.length).toBeGreaterThan(0);
    for (const point of pinned.points) {
      expect(retrievalKept(point.plan.rules)).toBe(true);
      for (const n of [...lengths, 2048])
        expect(planKvDensity(point.plan, n)).toBeLessThanOrEqual(0.45 + 1e-12);
      // Under the original profile the pinned plan drops none of the retrieval block.
      const loss = rulesProfileLoss(profile, point.plan.rules);
      expect(Object.keys(loss)).toEqual(["512", "1024"]);
    }
    // The original profile's rule loss of a plan is what the solver reported for it.
    const p = free.points[0]!;
    const loss = rulesProfileLoss(profile, p.plan.rules);
    for (const n of lengths) expect(loss[String(n)]).toBeCloseTo(p.loss[String(n)]!, 6);
  });

  it("pinning leaves the profile's other heads and the upper triangle untouched", () => {
    const profile = syntheticProfile();
    const pinned = pinProfile(profile, shape, [{ layer: 0, kvHead: 0 }]);
    const nb = 8;
    const before = profile.influence.get(512)!;
    const after = pinned.influence.get(512)!;
    let total = 0;
    for (const v of before) total += v;
    for (let head = 0; head < shape.layers * shape.heads; head++) {
      for (let qb = 0; qb < nb; qb++) {
        for (let kb = 0; kb < nb; kb++) {
          const k = head * nb * nb + qb * nb + kb;
          if (kb > qb) expect(after[k]).toBe(0);
          else if (head < 2) expect(after[k]).toBeCloseTo(10 * total, 0);
          else expect(after[k]).toBe(before[k]);
        }
      }
    }
  });
});
