import { describe, expect, it } from "vitest";
import { defaultInvFreq, llama3InvFreq, ropeInvFreq } from "../src/rope.js";

/** transformers' formulas evaluated in float64, as an independent check of the float32 implementation. */
function referenceDefault(theta: number, dim: number): number[] {
  return Array.from({ length: dim / 2 }, (_, i) => 1 / theta ** ((2 * i) / dim));
}

describe("RoPE inverse frequencies", () => {
  it("match 1 / theta^(2i/dim) to float32 precision", () => {
    for (const [theta, dim] of [
      [10000, 64],
      [500000, 128],
      [1e6, 16],
    ] as const) {
      const inv = defaultInvFreq(theta, dim);
      referenceDefault(theta, dim).forEach((expected, i) => {
        expect(Math.abs(inv[i]! - expected) / expected).toBeLessThan(2e-7);
      });
    }
  });

  it("llama3 keeps high frequencies, divides low ones by the factor and interpolates in between", () => {
    const scaling = {
      type: "llama3",
      factor: 8,
      lowFreqFactor: 1,
      highFreqFactor: 4,
      originalMaxPositionEmbeddings: 256,
    } as const;
    const base = referenceDefault(500000, 16);
    const inv = llama3InvFreq(500000, 16, scaling);
    let seen = { high: 0, low: 0, medium: 0 };
    base.forEach((freq, i) => {
      const wavelen = (2 * Math.PI) / freq;
      let expected: number;
      if (wavelen < 256 / 4) {
        expected = freq;
        seen = { ...seen, high: seen.high + 1 };
      } else if (wavelen > 256 / 1) {
        expected = freq / 8;
        seen = { ...seen, low: seen.low + 1 };
      } else {
        const smooth = (256 / wavelen - 1) / (4 - 1);
        expected = ((1 - smooth) * freq) / 8 + smooth * freq;
        seen = { ...seen, medium: seen.medium + 1 };
      }
      expect(Math.abs(inv[i]! - expected) / expected).toBeLessThan(1e-6);
    });
    // The fixture's parameters exercise all three bands.
    expect(seen.high).toBeGreaterThan(0);
    expect(seen.low).toBeGreaterThan(0);
    expect(seen.medium).toBeGreaterThan(0);
  });

  it("linear scaling divides every frequency by the factor", () => {
    const plain = ropeInvFreq({ theta: 10000, dim: 8, scaling: { type: "default" } });
    const linear = ropeInvFreq({ theta: 10000, dim: 8, scaling: { type: "linear", factor: 4 } });
    expect(Array.from(linear)).toEqual(Array.from(plain, (f) => Math.fround(f / 4)));
  });
});
