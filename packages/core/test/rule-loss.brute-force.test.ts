import { readFileSync } from "node:fs";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  candidateGrid,
  computeDensity,
  type ElasticRule,
  kvDensity,
  type MoaProfile,
  profileBlockInfluence,
  readProfile,
  ruleDensityTable,
  ruleLossTable,
} from "../src/index.js";
import { bruteNb, profileArb, ruleArb } from "./helpers.js";

/** DESIGN.md: Rule loss, block by block: influence summed over causal blocks the rule drops. */
function bruteRuleLoss(
  profile: MoaProfile,
  n: number,
  layer: number,
  head: number,
  rule: ElasticRule,
): number {
  const B = profile.blockSize;
  const nBlocks = n / B;
  const nb = bruteNb(rule, n, B);
  const blocks = profileBlockInfluence(profile, n, layer, head);
  let loss = 0;
  for (let qb = 0; qb < nBlocks; qb++) {
    for (let kb = 0; kb <= qb; kb++) {
      const kept = kb < profile.sinkTokens / B || kb >= qb - nb + 1;
      if (!kept) loss += blocks[qb * nBlocks + kb]!;
    }
  }
  return loss;
}

describe("rule loss", () => {
  it("ruleLossTable equals the block-by-block sum over dropped causal blocks (random profiles and rules)", () => {
    fc.assert(
      fc.property(
        profileArb,
        fc.array(ruleArb, { minLength: 1, maxLength: 12 }),
        fc.nat(),
        (profile, rules, pick) => {
          const n = profile.lengths[pick % profile.lengths.length]!;
          const table = ruleLossTable(profile, n, rules);
          expect(table.length).toBe(profile.layers * profile.heads * rules.length);
          for (let layer = 0; layer < profile.layers; layer++) {
            for (let head = 0; head < profile.heads; head++) {
              rules.forEach((rule, r) => {
                const got = table[(layer * profile.heads + head) * rules.length + r]!;
                const expected = bruteRuleLoss(profile, n, layer, head, rule);
                expect(Math.abs(got - expected)).toBeLessThanOrEqual(1e-9 * Math.max(1, expected));
              });
            }
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it("a rule that keeps every block has loss exactly 0, and loss never increases as the span widens", () => {
    const profile = readProfile(
      readFileSync(new URL("../../../fixtures/moa-tiny.profile.safetensors", import.meta.url)),
      "moa-tiny.profile.safetensors",
    );
    for (const n of profile.lengths) {
      const spans = Array.from({ length: n / 64 + 1 }, (_, k) => ({ alpha: k * 64, beta: 0 }));
      const table = ruleLossTable(profile, n, [{ alpha: 0, beta: 1 }, ...spans]);
      const width = spans.length + 1;
      for (let h = 0; h < profile.layers * profile.heads; h++) {
        const row = table.subarray(h * width, (h + 1) * width);
        expect(row[0]).toBe(0);
        expect(row[width - 1]).toBe(0);
        for (let k = 2; k < width; k++) expect(row[k]!).toBeLessThanOrEqual(row[k - 1]!);
        expect(row[1]!).toBeGreaterThan(0);
      }
    }
  });

  it("is fast: a 70B-size profile (80 layers × 64 heads, n = 8192) with the candidate grid runs in under 3 s", () => {
    const layers = 80;
    const heads = 64;
    const n = 8192;
    const nBlocks = n / 64;
    const data = new Float32Array(layers * heads * nBlocks * nBlocks);
    let k = 0;
    for (let head = 0; head < layers * heads; head++) {
      for (let qb = 0; qb < nBlocks; qb++, k += nBlocks) {
        for (let kb = 0; kb <= qb; kb++) data[k + kb] = 1 / (1 + qb - kb) + ((head + kb) & 3) * 1e-3;
      }
    }
    const profile: MoaProfile = {
      model: "synthetic-70b",
      layers,
      heads,
      blockSize: 64,
      sinkTokens: 64,
      lengths: [n],
      samplesPerLength: 1,
      calibration: "",
      influence: new Map([[n, data]]),
    };
    const rules = candidateGrid({ lengths: [2048, 4096, 8192], alphaCount: 14 });
    expect(rules.length).toBeGreaterThanOrEqual(55);
    const t0 = performance.now();
    const table = ruleLossTable(profile, n, rules);
    const ms = performance.now() - t0;
    expect(table.length).toBe(layers * heads * rules.length);
    expect(ms).toBeLessThan(3000);
    // Spot check one head against the brute force.
    for (const [r, rule] of rules.entries()) {
      const expected = bruteRuleLoss(profile, n, 79, 63, rule);
      expect(table[(79 * 64 + 63) * rules.length + r]).toBeCloseTo(expected, 6);
    }
  });
});

describe("rule density table", () => {
  it("holds computeDensity and kvDensity of each rule", () => {
    fc.assert(
      fc.property(fc.array(ruleArb, { maxLength: 20 }), fc.integer({ min: 1, max: 20000 }), (rules, n) => {
        const geom = { blockSize: 64, sinkTokens: 64 };
        const table = ruleDensityTable(rules, n, geom);
        expect(Array.from(table.compute)).toEqual(rules.map((r) => computeDensity(r, n, geom)));
        expect(Array.from(table.kv)).toEqual(rules.map((r) => kvDensity(r, n, geom)));
      }),
    );
  });
});
