/**
 * Validation of candidate plans (DESIGN.md: The optimisation — "validate each candidate at an unseen longer
 * length (dense-model-answer loss) and pick the best"): fresh samples at a length no profile saw, answered by the
 * dense model, then the mean cross-entropy of those answers when the model runs with each plan's MoA masks
 * (prefill under the block mask at the sample's length).
 */
import type { MoaPlan } from "@moa/core";
import { type LoadOptions, loadModel, type Model } from "@moa/runtime";
import type { CalibrationSource } from "./calibration.js";
import { type ChatMode, PromptFrame } from "./prompt-frame.js";
import { type CalibrationSample, buildSample } from "./sample.js";

export interface ValidationSetOptions {
  length: number;
  samples: number;
  source: CalibrationSource;
  answerTokens: number;
  seed: string;
  chat?: ChatMode;
  /** Called after each sample is built. */
  onSample?: (done: number, total: number) => void;
}

/**
 * Validation samples at `length`, answered by the dense `model`. Their random streams are named
 * `<seed>/validation/<length>/<i>`, apart from every profiling sample's.
 */
export async function buildValidationSet(
  model: Model,
  options: ValidationSetOptions,
): Promise<CalibrationSample[]> {
  const frame = PromptFrame.of(model, options.chat ?? "auto");
  const samples: CalibrationSample[] = [];
  for (let i = 0; i < options.samples; i++) {
    samples.push(
      await buildSample(model, frame, options.source, {
        length: options.length,
        index: i,
        answerTokens: options.answerTokens,
        seedName: `${options.seed}/validation/${options.length}/${i}`,
      }),
    );
    options.onSample?.(i + 1, options.samples);
  }
  return samples;
}

/**
 * Mean cross-entropy (nats) over the answer tokens of all samples pooled, under the model's own attention
 * (dense, or its plan's block masks). Logit row `p` predicts token `p + 1`, so answer token `t` is scored by row
 * `t − 1`; the log-softmax runs on the backend (`Model.nll`, sums in double), only the answer rows.
 */
export function answerLoss(model: Model, samples: readonly CalibrationSample[]): number {
  let sum = 0;
  let count = 0;
  for (const sample of samples) {
    for (const value of model.nll(sample.ids, { from: sample.answerStart - 1 })) {
      sum += value;
      count++;
    }
  }
  return sum / count;
}

/** Each sample's own mean cross-entropy (nats) over its answer tokens, under the model's attention. */
export function sampleLosses(model: Model, samples: readonly CalibrationSample[]): number[] {
  return samples.map((sample) => answerLoss(model, [sample]));
}

type PlanScoringOptions = {
  backend?: LoadOptions["backend"];
  onPlan?: (done: number, total: number) => void;
};

/** `score` of each plan: the checkpoint loaded with the plan at the longest sample's length, then disposed. */
async function scoreEachPlan<T>(
  dir: string,
  plans: readonly MoaPlan[],
  samples: readonly CalibrationSample[],
  options: PlanScoringOptions,
  score: (model: Model) => T,
): Promise<T[]> {
  const maxLength = Math.max(...samples.map((s) => s.length));
  const results: T[] = [];
  for (const [i, plan] of plans.entries()) {
    const model = await loadModel(dir, {
      plan,
      maxLength,
      ...(options.backend === undefined ? {} : { backend: options.backend }),
    });
    try {
      results.push(score(model));
    } finally {
      model.dispose();
    }
    options.onPlan?.(i + 1, plans.length);
  }
  return results;
}

/**
 * Per-sample answer losses of each plan (`[plan][sample]`): the checkpoint loaded with the plan (its masks and
 * elastic cache) at the longest sample's length, then every sample scored.
 */
export function planSampleLosses(
  dir: string,
  plans: readonly MoaPlan[],
  samples: readonly CalibrationSample[],
  options: PlanScoringOptions = {},
): Promise<number[][]> {
  return scoreEachPlan(dir, plans, samples, options, (model) => sampleLosses(model, samples));
}

/** The answer loss of each plan: the checkpoint loaded with the plan (its masks and elastic cache), then scored. */
export function planLosses(
  dir: string,
  plans: readonly MoaPlan[],
  samples: readonly CalibrationSample[],
  options: PlanScoringOptions = {},
): Promise<number[]> {
  return scoreEachPlan(dir, plans, samples, options, (model) => answerLoss(model, samples));
}
