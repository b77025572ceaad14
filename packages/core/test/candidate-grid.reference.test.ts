import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { candidateGrid, type ElasticRule } from "../src/index.js";

/**
 * The reference grid written out by hand from DESIGN.md: Definitions (lengths 2048, 4096,
 * 8192, extend 16384): for each alpha the betas with S(8192) ≤ 8192, S(16384) ≤ 16384 and
 * S(2048) > 0.
 */
const REFERENCE_BETAS: [number, number[]][] = [
  [-2048, []], // −2048 + 2048·beta > 0 needs beta > 1
  [-1024, [0.625, 0.75, 0.875, 1]],
  [0, [0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1]],
  [1024, [0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875]],
  [2048, [0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75]],
  [3072, [0, 0.125, 0.25, 0.375, 0.5, 0.625]],
  [4096, [0, 0.125, 0.25, 0.375, 0.5]],
  [5120, [0, 0.125, 0.25, 0.375]],
  [6144, [0, 0.125, 0.25]],
  [7168, [0, 0.125]],
  [8192, [0]],
];
const REFERENCE_GRID: ElasticRule[] = REFERENCE_BETAS.flatMap(([alpha, betas]) =>
  betas.map((beta) => ({ alpha, beta })),
);

describe("candidate grid", () => {
  it("the default call for lengths {2048, 4096, 8192} reproduces the reference grid exactly (48 rules)", () => {
    expect(REFERENCE_GRID).toHaveLength(48);
    expect(candidateGrid({ lengths: [2048, 4096, 8192] })).toEqual(REFERENCE_GRID);
    expect(
      candidateGrid({ lengths: [8192, 2048, 4096], extend: 16384, alphaCount: 11, betaStep: 0.125 }),
    ).toEqual(REFERENCE_GRID);
  });

  it("scales with the lengths profiled: {512, 1024, 2048} gives the reference grid with alpha / 4", () => {
    const scaled = REFERENCE_GRID.map(({ alpha, beta }) => ({ alpha: alpha / 4, beta }));
    expect(candidateGrid({ lengths: [512, 1024, 2048] })).toEqual(scaled);
  });

  it("every rule satisfies the three constraints, the order is by alpha then beta, and none is missing", () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.integer({ min: 64, max: 65536 }), { minLength: 1, maxLength: 4 }),
        fc.integer({ min: 1, max: 20 }),
        fc.constantFrom(0.5, 0.25, 0.2, 0.125, 0.1, 0.0625),
        fc.double({ min: 1, max: 4, noNaN: true }),
        (lengths, alphaCount, betaStep, extendFactor) => {
          const maxLen = Math.max(...lengths);
          const minLen = Math.min(...lengths);
          const extend = Math.round(maxLen * extendFactor);
          const grid = candidateGrid({ lengths, extend, alphaCount, betaStep });
          for (const { alpha, beta } of grid) {
            expect(alpha + beta * maxLen).toBeLessThanOrEqual(maxLen);
            expect(alpha + beta * extend).toBeLessThanOrEqual(extend);
            expect(alpha + beta * minLen).toBeGreaterThan(0);
            expect(alpha).toBeGreaterThanOrEqual(-maxLen / 4);
            expect(alpha).toBeLessThanOrEqual(maxLen);
          }
          for (let k = 1; k < grid.length; k++) {
            const a = grid[k - 1]!;
            const b = grid[k]!;
            expect(a.alpha < b.alpha || (a.alpha === b.alpha && a.beta < b.beta)).toBe(true);
          }
          const betas = new Set(grid.map((r) => r.beta));
          for (const beta of betas)
            expect(Math.abs(beta / betaStep - Math.round(beta / betaStep))).toBeLessThan(1e-9);
          const alphas = [...new Set(grid.map((r) => r.alpha))];
          expect(alphas.length).toBeLessThanOrEqual(alphaCount);
          // None missing: count the admissible pairs of the full alpha × beta product.
          const step = alphaCount === 1 ? 0 : (maxLen * 1.25) / (alphaCount - 1);
          let admissible = 0;
          for (let a = 0; a < alphaCount; a++) {
            const alpha = a === alphaCount - 1 && alphaCount > 1 ? maxLen : -maxLen / 4 + a * step;
            for (let b = 0; b <= Math.round(1 / betaStep); b++) {
              const beta = b / Math.round(1 / betaStep);
              const ok =
                alpha + beta * maxLen <= maxLen &&
                alpha + beta * extend <= extend &&
                alpha + beta * minLen > 0;
              admissible += ok ? 1 : 0;
            }
          }
          expect(grid.length).toBe(admissible);
        },
      ),
    );
  });

  it("rejects bad arguments with a message naming the option and value", () => {
    expect(() => candidateGrid({ lengths: [] })).toThrow(/candidateGrid: lengths = \[\]/);
    expect(() => candidateGrid({ lengths: [2048, -1] })).toThrow(/lengths\[1\] = -1/);
    expect(() => candidateGrid({ lengths: [2048], extend: 1024 })).toThrow(/extend = 1024/);
    expect(() => candidateGrid({ lengths: [2048], betaStep: 0.3 })).toThrow(/betaStep = 0.3/);
    expect(() => candidateGrid({ lengths: [2048], alphaCount: 0 })).toThrow(/alphaCount = 0/);
  });
});
