import { candidateGrid, kvDensity, type ModelShape } from "@moa/core";
import { describe, expect, it } from "vitest";
import {
  checkDensityFeasible,
  defaultProfileLengths,
  defaultValidationLength,
  gridDensityRange,
  kvBudgetDensity,
} from "../src/index.js";

const tiny: ModelShape = { architecture: "llama", layers: 6, heads: 6, kvHeads: 2, headDim: 64 };

describe("defaults", () => {
  it("profile V/4, V/2, V with V = min(context, 16384); validate at twice the longest, at most the context", () => {
    expect(defaultProfileLengths(2048)).toEqual([512, 1024, 2048]);
    expect(defaultValidationLength([512, 1024, 2048], 2048)).toBe(2048);
    expect(defaultProfileLengths(8192)).toEqual([2048, 4096, 8192]);
    expect(defaultProfileLengths(131072)).toEqual([4096, 8192, 16384]);
    expect(defaultValidationLength([4096, 8192, 16384], 131072)).toBe(32768);
    expect(defaultValidationLength([256, 512, 1024], 2048)).toBe(2048);
    expect(defaultValidationLength([1024, 2048], 3000)).toBe(3000);
  });
});

describe("a KV budget in bytes", () => {
  it("is the density budget / dense KV bytes, dense bytes = layers · kvHeads · n · headDim · 2 · bytes · batch", () => {
    const dense = 6 * 2 * 4096 * 64 * 2 * 4 * 3;
    const { density, denseBytes } = kvBudgetDensity(tiny, {
      bytes: dense / 4,
      maxLength: 4096,
      batch: 3,
      bytesPerElement: 4,
    });
    expect(denseBytes).toBe(dense);
    expect(density).toBe(0.25);
  });

  it("holding the whole dense cache is an error: nothing to compress", () => {
    expect(() =>
      kvBudgetDensity(tiny, { bytes: 10 ** 9, maxLength: 4096, batch: 1, bytesPerElement: 4 }),
    ).toThrow(/holds the dense cache .* nothing to compress/);
  });
});

describe("the KV density the candidate grid reaches", () => {
  it("is every head at its narrowest and widest rule, at the profiled lengths and the extend length", () => {
    const range = gridDensityRange([256, 512, 1024], 2048);
    const grid = candidateGrid({ lengths: [256, 512, 1024], extend: 2048 });
    expect(range.lengths).toEqual([256, 512, 1024, 2048]);
    range.lengths.forEach((n, i) => {
      const each = grid.map((rule) => kvDensity(rule, n));
      expect(range.least[i]).toBe(Math.min(...each));
      expect(range.most[i]).toBe(Math.max(...each));
    });
  });

  it("rejects a density below the least reachable, or whose lower bound is above the most, before any profiling", () => {
    const range = gridDensityRange([256, 512, 1024], 2048);
    const floor = Math.max(...range.least);
    expect(() => checkDensityFeasible(range, floor - 0.01, 0.9)).toThrow(
      /below the least the candidate rules reach/,
    );
    expect(() => checkDensityFeasible(range, floor, 0.9)).not.toThrow();
    expect(() => checkDensityFeasible(range, 0.5, 0.9)).not.toThrow();
  });
});
