import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  BLOCK_SIZE,
  blockCount,
  blockMask,
  computeDensity,
  DEFAULT_GEOMETRY,
  type ElasticRule,
  isBlockKept,
  isTokenInWindow,
  isTokenKept,
  keptEntries,
  kvDensity,
  kvTokens,
  SINK_TOKENS,
  spanAt,
  spanBlocks,
  windowStart,
  windowTokens,
} from "../src/index.js";
import { bruteInWindow, bruteKeptEntries, bruteNb, bruteTokenKept, geometryArb, ruleArb } from "./helpers.js";

const lengthArb = fc.integer({ min: 1, max: 300 });

describe("spans", () => {
  it("defaults are B = 64 and G = 64", () => {
    expect(BLOCK_SIZE).toBe(64);
    expect(SINK_TOKENS).toBe(64);
    expect(DEFAULT_GEOMETRY).toEqual({ blockSize: 64, sinkTokens: 64 });
  });

  it("spanAt clamps alpha + beta·n into [0, n] and spanBlocks is max(1, floor(S/B))", () => {
    expect(spanAt({ alpha: 1024, beta: 0.25 }, 4096)).toBe(2048);
    expect(spanAt({ alpha: -2048, beta: 0.5 }, 2048)).toBe(0);
    expect(spanAt({ alpha: 8192, beta: 0 }, 2048)).toBe(2048);
    expect(spanBlocks({ alpha: 100, beta: 0 }, 4096)).toBe(1);
    expect(spanBlocks({ alpha: 10, beta: 0 }, 4096)).toBe(1);
    expect(spanBlocks({ alpha: 1024, beta: 0.25 }, 4096)).toBe(32);
    fc.assert(
      fc.property(ruleArb, lengthArb, (rule, n) => {
        const s = spanAt(rule, n);
        expect(s).toBeGreaterThanOrEqual(0);
        expect(s).toBeLessThanOrEqual(n);
        expect(spanBlocks(rule, n)).toBe(bruteNb(rule, n, 64));
      }),
    );
  });
});

describe("block mask", () => {
  it("blockMask matches isBlockKept and the definition for every block", () => {
    fc.assert(
      fc.property(ruleArb, lengthArb, geometryArb, (rule, n, geom) => {
        const B = geom.blockSize;
        const nBlocks = blockCount(n, B);
        expect(nBlocks).toBe(Math.ceil(n / B));
        const mask = blockMask(rule, n, geom);
        expect(mask.length).toBe(nBlocks * nBlocks);
        const nb = bruteNb(rule, n, B);
        const wrong: string[] = [];
        for (let qb = 0; qb < nBlocks; qb++) {
          for (let kb = 0; kb < nBlocks; kb++) {
            const expected = kb <= qb && (kb < geom.sinkTokens / B || kb >= qb - nb + 1);
            if (
              mask[qb * nBlocks + kb] !== (expected ? 1 : 0) ||
              isBlockKept(qb, kb, nb, geom) !== expected
            ) {
              wrong.push(`(${qb},${kb})`);
            }
          }
        }
        expect(wrong).toEqual([]);
      }),
      { numRuns: 200 },
    );
  });

  it("token mask is the causal part of kept blocks", () => {
    fc.assert(
      fc.property(ruleArb, fc.integer({ min: 1, max: 150 }), geometryArb, (rule, n, geom) => {
        const B = geom.blockSize;
        const nBlocks = blockCount(n, B);
        const mask = blockMask(rule, n, geom);
        const wrong: string[] = [];
        for (let i = 0; i < n; i++) {
          for (let j = 0; j < n; j++) {
            const expected = j <= i && mask[Math.floor(i / B) * nBlocks + Math.floor(j / B)] === 1;
            const kept = isTokenKept(rule, n, i, j, geom);
            if (kept !== expected || kept !== bruteTokenKept(rule, n, i, j, geom)) wrong.push(`(${i},${j})`);
          }
        }
        expect(wrong).toEqual([]);
      }),
      { numRuns: 100 },
    );
  });
});

describe("compute density", () => {
  it("closed form equals brute-force counting over all (i, j) for random rules, lengths and geometries", () => {
    fc.assert(
      fc.property(ruleArb, lengthArb, geometryArb, (rule, n, geom) => {
        const brute = bruteKeptEntries(rule, n, geom);
        expect(keptEntries(rule, n, geom)).toBe(brute);
        expect(computeDensity(rule, n, geom)).toBeCloseTo(brute / ((n * (n + 1)) / 2), 12);
      }),
      { numRuns: 300 },
    );
  });

  const corners: [string, ElasticRule, number][] = [
    ["n < B", { alpha: 0, beta: 0.5 }, 37],
    ["n = 1", { alpha: 100, beta: 0 }, 1],
    ["n not a multiple of B", { alpha: 130, beta: 0.3 }, 1000],
    ["negative alpha with zero span", { alpha: -2048, beta: 0.5 }, 2048],
    ["negative alpha opening late", { alpha: -512, beta: 0.75 }, 1283],
    ["beta 0 fixed window", { alpha: 256, beta: 0 }, 777],
    ["beta 1 dense", { alpha: 0, beta: 1 }, 641],
    ["span beyond n", { alpha: 5000, beta: 1 }, 300],
  ];
  for (const [label, rule, n] of corners) {
    it(`closed form equals brute force at default geometry: ${label}`, () => {
      expect(keptEntries(rule, n)).toBe(bruteKeptEntries(rule, n, DEFAULT_GEOMETRY));
    });
  }

  it("a rule spanning the whole input has density 1", () => {
    for (const n of [1, 63, 64, 65, 1000, 8192]) expect(computeDensity({ alpha: 0, beta: 1 }, n)).toBe(1);
  });

  it("closed form equals the count over blockMask at long lengths (n up to 20000)", () => {
    fc.assert(
      fc.property(ruleArb, fc.integer({ min: 1, max: 20000 }), (rule, n) => {
        const B = 64;
        const nBlocks = blockCount(n, B);
        const mask = blockMask(rule, n);
        let kept = 0;
        for (let qb = 0; qb < nBlocks; qb++) {
          const rows = Math.min(B, n - qb * B);
          for (let kb = 0; kb < qb; kb++) if (mask[qb * nBlocks + kb]) kept += rows * B;
          kept += (rows * (rows + 1)) / 2;
        }
        expect(keptEntries(rule, n)).toBe(kept);
      }),
      { numRuns: 50 },
    );
  });
});

describe("decode window and KV density", () => {
  it("isTokenInWindow matches the definition: j < G or j > i − nb(i+1)·B", () => {
    fc.assert(
      fc.property(ruleArb, fc.integer({ min: 1, max: 200 }), geometryArb, (rule, n, geom) => {
        const wrong: string[] = [];
        for (let i = 0; i < n; i++) {
          for (let j = 0; j <= i + 1; j++) {
            if (isTokenInWindow(rule, i, j, geom) !== bruteInWindow(rule, i, j, geom))
              wrong.push(`(${i},${j})`);
          }
        }
        expect(wrong).toEqual([]);
      }),
      { numRuns: 100 },
    );
  });

  it("kvTokens = min(n, G + nb·B) = distinct keys the query at n − 1 attends under the window mask", () => {
    fc.assert(
      fc.property(ruleArb, fc.integer({ min: 1, max: 3000 }), geometryArb, (rule, n, geom) => {
        let attended = 0;
        for (let j = 0; j < n; j++) if (bruteInWindow(rule, n - 1, j, geom)) attended++;
        expect(kvTokens(rule, n, geom)).toBe(attended);
        expect(kvTokens(rule, n, geom)).toBe(Math.min(n, geom.sinkTokens + windowTokens(rule, n, geom)));
        expect(kvDensity(rule, n, geom)).toBe(attended / n);
      }),
      { numRuns: 300 },
    );
  });

  it("for the last query the window contains the block-mask row, equal when B divides n, at most B − 1 more keys otherwise", () => {
    fc.assert(
      fc.property(ruleArb, fc.integer({ min: 1, max: 2000 }), geometryArb, (rule, n, geom) => {
        const i = n - 1;
        let block = 0;
        let window = 0;
        const outside: number[] = [];
        for (let j = 0; j <= i; j++) {
          const inBlock = bruteTokenKept(rule, n, i, j, geom);
          const inWindow = bruteInWindow(rule, i, j, geom);
          if (inBlock && !inWindow) outside.push(j);
          block += inBlock ? 1 : 0;
          window += inWindow ? 1 : 0;
        }
        expect(outside).toEqual([]);
        expect(window - block).toBeLessThanOrEqual(geom.blockSize - 1);
        if (n % geom.blockSize === 0) expect(window).toBe(block);
      }),
      { numRuns: 300 },
    );
  });

  it("prefill rows before the last may keep more than decode would (nb(n) ≥ nb(i + 1)): an example", () => {
    // rule (0, 0.5) at n = 1024: nb(1024) = 8 blocks; query 200 at decode has nb(201) = 1.
    const rule = { alpha: 0, beta: 0.5 };
    expect(isTokenKept(rule, 1024, 200, 100)).toBe(true);
    expect(isTokenInWindow(rule, 200, 100)).toBe(false);
  });

  // Exact arithmetic only (integer alpha, beta a multiple of 1/1024): with arbitrary doubles,
  // alpha + beta·n can round onto a block boundary (e.g. alpha = −1e−16, beta = 1, B = 1), and
  // the bound is off by one there. Implementations must take nb from spanBlocks, not recompute it.
  const exactRuleArb = fc.record({
    alpha: fc.integer({ min: -3000, max: 3000 }),
    beta: fc.integer({ min: 0, max: 1024 }).map((k) => k / 1024),
  });

  it("for beta in [0, 1] the window start never moves back by B or more, so a ring of G + nb·B + B − 1 tokens suffices", () => {
    fc.assert(
      fc.property(exactRuleArb, geometryArb, (rule, geom) => {
        const B = geom.blockSize;
        let latest = Number.NEGATIVE_INFINITY;
        let worstStepBack = 0;
        const wrong: number[] = [];
        for (let length = 1; length <= 1500; length++) {
          const start = windowStart(rule, length, geom);
          if (start !== Math.max(0, length - bruteNb(rule, length, B) * B)) wrong.push(length);
          worstStepBack = Math.max(worstStepBack, latest - start);
          latest = Math.max(latest, start);
        }
        expect(wrong).toEqual([]);
        expect(worstStepBack).toBeLessThanOrEqual(B - 1);
      }),
      { numRuns: 100 },
    );
  });

  it("the window start does step back by B − 1 when nb grows: rule (0, 0.5) at lengths 255 → 256", () => {
    const rule = { alpha: 0, beta: 0.5 };
    expect(windowStart(rule, 255, DEFAULT_GEOMETRY)).toBe(191);
    expect(windowStart(rule, 256, DEFAULT_GEOMETRY)).toBe(128);
    expect(windowStart(rule, 255, DEFAULT_GEOMETRY) - windowStart(rule, 256, DEFAULT_GEOMETRY)).toBe(64 - 1);
  });

  it("a negative beta would move the window start back without bound (why plans forbid it)", () => {
    const rule = { alpha: 4096, beta: -0.5 };
    expect(windowStart(rule, 4096, DEFAULT_GEOMETRY)).toBe(2048);
    expect(windowStart(rule, 8192, DEFAULT_GEOMETRY)).toBe(8192 - 64);
  });
});
