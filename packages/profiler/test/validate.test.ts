import { readFileSync } from "node:fs";
import { join } from "node:path";
import { densePlan, uniformPlan } from "@moa/core";
import { describe, expect, it } from "vitest";
import { answerLoss, type CalibrationSample, planLosses } from "../src/index.js";
import { FIXTURES, NANO, nanoModel } from "./helpers.js";

const model = await nanoModel();
const vectors = JSON.parse(readFileSync(join(FIXTURES, "reference-vectors.json"), "utf8")) as {
  models: Record<string, { input_ids: number[]; nll: number[] }>;
};

describe("the answer loss", () => {
  const { input_ids: ids, nll } = vectors.models["moa-nano"]!;
  const sample = (answerStart: number): CalibrationSample => ({
    kind: "user",
    length: ids.length,
    index: 0,
    ids,
    answerStart,
    answer: "",
  });

  it("is the mean of Hugging Face's per-position NLL over the answer tokens (fixtures' reference vectors)", () => {
    for (const answerStart of [1, Math.floor(ids.length / 2), ids.length - 3]) {
      // nll[p] = −log p(token p+1 | ≤ p): answer token t is nll[t − 1].
      const expected = nll.slice(answerStart - 1, ids.length - 1);
      const mean = expected.reduce((a, b) => a + b, 0) / expected.length;
      expect(answerLoss(model, [sample(answerStart)])).toBeCloseTo(mean, 4);
    }
  });

  it("pools tokens over samples (a weighted mean by answer length)", () => {
    const a = sample(ids.length - 2);
    const b = sample(ids.length - 6);
    const pooled = (2 * answerLoss(model, [a]) + 6 * answerLoss(model, [b])) / 8;
    expect(answerLoss(model, [a, b])).toBeCloseTo(pooled, 10);
  });

  it("under a plan loads the model with that plan: the dense plan scores as dense, a narrow plan worse", async () => {
    const shape = model.config.shape();
    const s = sample(ids.length - 8);
    const [dense, narrow] = await planLosses(
      NANO,
      [densePlan(shape, []), uniformPlan(shape, 0.05, [])],
      [s],
      {
        backend: "cpu",
      },
    );
    expect(dense).toBeCloseTo(answerLoss(model, [s]), 5);
    expect(narrow).toBeGreaterThan(dense!);
  });
});
