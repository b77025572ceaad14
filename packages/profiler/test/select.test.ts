import { describe, expect, it } from "vitest";
import { DEFAULT_TIE_NATS, type SelectionCandidate, selectCandidate } from "../src/index.js";

const candidate = (
  excess: number[],
  profileLoss: Record<string, number>,
  extra: Partial<SelectionCandidate> = {},
): SelectionCandidate => ({ withinBudget: true, kvDensity: 0.5, excess, profileLoss, ...extra });

describe("the plan selection rule", () => {
  it("takes the lowest validation loss when it leads by more than the noise", () => {
    const s = selectCandidate([
      candidate([0.5, 0.6, 0.55, 0.52], { 512: 1, 1024: 1 }),
      candidate([0.01, 0.02, 0.015, 0.012], { 512: 2, 1024: 3 }),
    ]);
    expect(s.chosen).toBe(1);
    expect(s.tied).toEqual([1]);
    expect(s.reason).toMatch(/ahead of every other candidate/);
  });

  it("breaks a near-tie by the least profile regret, not by the validation loss (moa-nano's 0.0006-nat lead)", () => {
    // Profile losses of moa-nano's run at density 0.5 (docs): candidate 0 led validation by 0.0006 nats but lost 65% more
    // profile influence than the best at 512 tokens; candidate 4 is within 14% of the best at every length.
    const s = selectCandidate([
      candidate([0.0, 0.001, -0.002, 0.0], { 512: 0.14297, 1024: 0.03131, 2048: 0.06808 }),
      candidate([0.002, 0.003, 0.0, 0.0025], { 512: 0.11153, 1024: 0.02983, 2048: 0.07454 }),
      candidate([0.001, 0.0, 0.0, 0.003], { 512: 0.09605, 1024: 0.02698, 2048: 0.07739 }),
      candidate([0.003, 0.002, 0.001, 0.002], { 512: 0.08667, 1024: 0.03095, 2048: 0.13526 }),
    ]);
    expect(s.lowest).toBe(0);
    expect(s.tied).toEqual([0, 1, 2, 3]);
    // Regret: c0 0.14297/0.08667 = 1.65, c1 1.29, c2 max(1.108, 1, 1.137) = 1.137, c3 1.99.
    expect(s.regret[0]).toBeCloseTo(0.14297 / 0.08667, 6);
    expect(s.regret[2]).toBeCloseTo(0.07739 / 0.06808, 6);
    expect(s.chosen).toBe(2);
    expect(s.reason).toMatch(/within the noise of the lowest validation loss \(candidate 0\)/);
  });

  it("counts a difference as noise when the per-sample differences disagree, and as real when they agree", () => {
    // Same mean lead (0.03 nats, above the 0.01 floor and below the cap), different spreads.
    const noisy = selectCandidate([
      candidate([0.0, 0.0, 0.0, 0.0], { 8192: 2 }),
      candidate([0.5, -0.4, 0.2, -0.18], { 8192: 1 }),
    ]);
    expect(noisy.lowest).toBe(0);
    expect(noisy.tied).toEqual([0, 1]);
    expect(noisy.chosen).toBe(1);
    const consistent = selectCandidate([
      candidate([0.0, 0.0, 0.0, 0.0], { 8192: 2 }),
      candidate([0.03, 0.031, 0.029, 0.03], { 8192: 1 }),
    ]);
    expect(consistent.tied).toEqual([0]);
    expect(consistent.chosen).toBe(0);
  });

  it("never ties a candidate that is behind by more than the cap, however spread its differences (one lost fact)", () => {
    // moa-tiny at 0.5 on an H100: 4 samples at 4096 and 4 at 8192; candidate 1 lost one 8k retrieval sample.
    const best = [0.005, 0.006, 0.004, 0.006, 0.004, 0.006, 0.005, 0.009];
    const lost = [0.001, 0.002, 0.001, 0.002, 0.004, 0.006, 1.3, 0.009];
    const s = selectCandidate([
      candidate(best, { 4096: 0.18, 8192: 0.37 }),
      candidate(lost, { 4096: 0.15, 8192: 0.38 }),
    ]);
    expect(s.lowest).toBe(0);
    expect(s.tied).toEqual([0]);
    expect(s.chosen).toBe(0);
    // Without the cap the one-sample loss is inside 1 SE and the better profile regret would win.
    expect(
      selectCandidate(
        [candidate(best, { 4096: 0.18, 8192: 0.37 }), candidate(lost, { 4096: 0.15, 8192: 0.38 })],
        { cap: 10 },
      ).chosen,
    ).toBe(1);
  });

  it("treats differences up to the tolerance as ties however many samples agree", () => {
    const lead = DEFAULT_TIE_NATS / 2;
    const s = selectCandidate([
      candidate([0, 0, 0, 0, 0, 0], { 4096: 1.5 }),
      candidate(Array(6).fill(lead), { 4096: 1 }),
    ]);
    expect(s.tied).toEqual([0, 1]);
    expect(s.chosen).toBe(1);
    expect(
      selectCandidate(
        s.score.map(() => candidate([0], { 4096: 1 })),
        { tolerance: 0 },
      ).chosen,
    ).toBe(0);
  });

  it("ignores candidates over the budget, and chooses none when all are", () => {
    const s = selectCandidate([
      candidate([0], { 1024: 1 }, { withinBudget: false }),
      candidate([0.5], { 1024: 2 }),
    ]);
    expect(s.chosen).toBe(1);
    expect(Number.isNaN(s.score[0]!)).toBe(true);
    expect(selectCandidate([candidate([0], { 1024: 1 }, { withinBudget: false })]).chosen).toBe(-1);
  });

  it("breaks a full tie by the lower KV density, then the lower index", () => {
    const s = selectCandidate([
      candidate([0.1], { 1024: 1 }, { kvDensity: 0.5 }),
      candidate([0.1], { 1024: 1 }, { kvDensity: 0.45 }),
      candidate([0.1], { 1024: 1 }, { kvDensity: 0.45 }),
    ]);
    expect(s.chosen).toBe(1);
  });

  it("refuses candidates validated on different samples", () => {
    expect(() => selectCandidate([candidate([0, 1], { 1: 1 }), candidate([0], { 1: 1 })])).toThrow(
      /validation samples/,
    );
  });
});
