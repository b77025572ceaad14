/** Bad input: budgets no plan can meet are rejected with a message that says what is possible. */
import { candidateGrid, kvDensity, MoaError } from "@moa/core";
import { describe, expect, it } from "vitest";
import { optimizePlans, solveMip, buildRuleTable } from "../src/index.js";
import { fixtureProfile, fixtureShape } from "./fixtures.js";

const profile = fixtureProfile("moa-tiny");
const shape = fixtureShape("moa-tiny");
const lengths = profile.lengths;
const kvLengths = [...lengths, 16384];
const grid = candidateGrid({ lengths, extend: 16384 });
const geom = { blockSize: profile.blockSize, sinkTokens: profile.sinkTokens };

async function rejection(density: number, lowerRatio?: number): Promise<MoaError> {
  try {
    await optimizePlans(profile, { shape, density, ...(lowerRatio === undefined ? {} : { lowerRatio }) });
  } catch (error) {
    if (error instanceof MoaError) return error;
    throw error;
  }
  throw new Error(`density ${density} was accepted`);
}

describe("infeasible budgets", () => {
  it("names the minimum achievable KV density at each length when the density is too low", async () => {
    const error = await rejection(0.02);
    expect(error.code).toBe("E_INFEASIBLE");
    expect(error.field).toBe("density");
    for (const n of kvLengths) {
      // The narrowest rule of the grid at n, as core computes it.
      const least = Math.min(...grid.map((r) => kvDensity(r, n, geom)));
      expect(error.message).toContain(`${n}: ${least.toFixed(4)}`);
    }
    expect(error.message).toMatch(/below the minimum achievable KV density at 2048/);
  });

  it("explains a window that no plan meets at all lengths at once", async () => {
    // 0.13 is above the least density at every length, but with lowerRatio 1 the window
    // is a single value that the token steps of the grid cannot hit at every length.
    const error = await rejection(0.13, 1);
    expect(error.code).toBe("E_INFEASIBLE");
    expect(error.message).toMatch(/infeasible budget/);
  });

  it("solveMip reports infeasible (not an error) and agrees with optimizePlans", async () => {
    const table = buildRuleTable(profile, { rules: grid, lossLengths: lengths, kvLengths });
    const sol = await solveMip({
      table,
      kvHeads: shape.kvHeads,
      weights: [1, 1, 1],
      densityUpper: kvLengths.map(() => 0.02),
    });
    expect(sol.status).toBe("infeasible");
    expect(sol.headRules).toBeUndefined();
  });

  it("rejects a density outside (0, 1] and a shape that does not match the profile", async () => {
    await expect(optimizePlans(profile, { shape, density: 0 })).rejects.toMatchObject({
      code: "E_ARGUMENT",
      field: "density",
    });
    await expect(optimizePlans(profile, { shape, density: 1.5 })).rejects.toMatchObject({
      code: "E_ARGUMENT",
    });
    await expect(
      optimizePlans(profile, { shape: { ...shape, layers: 5 }, density: 0.5 }),
    ).rejects.toMatchObject({
      code: "E_ARGUMENT",
      field: "shape",
    });
    await expect(
      optimizePlans(profile, { shape: { ...shape, kvHeads: 4 }, density: 0.5 }),
    ).rejects.toMatchObject({
      code: "E_ARGUMENT",
      field: "shape.kvHeads",
    });
  });
});
