/**
 * solveInWorker runs the same solve in a worker thread: same front as in-thread (the
 * solver is deterministic), progress events arrive, and the time limit is enforced by
 * terminating the worker.
 */
import { MoaError } from "@moa/core";
import { describe, expect, it } from "vitest";
import { optimizePlans, type ProgressEvent, solveInWorker } from "../src/index.js";
import { fixtureProfile, fixtureShape } from "./fixtures.js";

const profile = fixtureProfile("moa-nano");
const shape = fixtureShape("moa-nano");
const options = { shape, density: 0.5, paretoPoints: 1, proofNodes: 50 };

describe("solveInWorker", () => {
  it("returns the same plans as optimizePlans in this thread and reports progress per solve", async () => {
    const events: ProgressEvent[] = [];
    const inWorker = await solveInWorker(profile, { ...options, onProgress: (e) => events.push(e) });
    const here = await optimizePlans(profile, options);
    expect(inWorker.points.map((p) => p.plan.rules)).toEqual(here.points.map((p) => p.plan.rules));
    expect(inWorker.points.map((p) => p.loss)).toEqual(here.points.map((p) => p.loss));
    expect(events.length).toBe(inWorker.stats.solves);
    expect(events.map((e) => e.done)).toEqual(events.map((_, i) => i + 1));
    expect(events.every((e) => e.total === inWorker.stats.solves)).toBe(true);
  }, 60_000);

  it("terminates the worker at the time limit and rejects with E_TIMEOUT naming the limit", async () => {
    const started = performance.now();
    const tiny = fixtureProfile("moa-tiny");
    const error = await solveInWorker(tiny, {
      shape: fixtureShape("moa-tiny"),
      density: 0.5,
      paretoPoints: 4,
      timeLimitSeconds: 0.3,
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MoaError);
    expect((error as MoaError).code).toBe("E_TIMEOUT");
    expect((error as MoaError).message).toContain("0.3 s");
    // Rejected at the limit, not when the solve would have finished.
    expect(performance.now() - started).toBeLessThan(5_000);
  }, 30_000);

  it("passes solver errors through as MoaError with their code", async () => {
    await expect(solveInWorker(profile, { ...options, density: 0.01 })).rejects.toMatchObject({
      code: "E_INFEASIBLE",
      field: "density",
    });
  }, 30_000);
});
