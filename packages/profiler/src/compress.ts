/**
 * `compressModel`: the whole MoA pipeline for one checkpoint (DESIGN.md: The optimisation) — calibrate and
 * profile at several lengths, enumerate Pareto-optimal plans under the KV-density budget (@moa/solver), validate
 * every candidate at an unseen longer length (loss on dense-model answers), and pick the one with the lowest
 * validation loss. I/O is the caller's: it gets every intermediate result to write and report.
 */
import {
  DEFAULT_GEOMETRY,
  MoaError,
  type ModelShape,
  type MoaPlan,
  type MoaProfile,
  makePlan,
  planKvBytes,
  planKvDensity,
  uniformPlan,
} from "@moa/core";
import { type LoadOptions, loadModel, readModelConfig } from "@moa/runtime";
import {
  type GqaMode,
  optimizePlans,
  type ParetoPoint,
  type ParetoStats,
  type ProgressEvent,
} from "@moa/solver";
import {
  checkDensityFeasible,
  defaultProfileLengths,
  defaultValidationLength,
  gridDensityRange,
  type KvBudget,
  kvBudgetDensity,
} from "./budget.js";
import { type CalibrationSource, defaultCalibration, type SampleKind } from "./calibration.js";
import type { ProfileExtras } from "./profile-file.js";
import {
  DEFAULT_ANSWER_TOKENS,
  DEFAULT_SAMPLES_PER_LENGTH,
  type InfluenceFn,
  type ProfileProgress,
  profileModel,
} from "./profile-run.js";
import type { ChatMode } from "./prompt-frame.js";
import type { SampleRecord } from "./state.js";
import { answerLoss, buildValidationSet, planLosses } from "./validate.js";

export const DEFAULT_VALIDATION_SAMPLES = 4;
const DEFAULT_LOWER_RATIO = 0.9;

export interface CompressOptions {
  /** KV density budget in (0, 1); or give `kvBudget`. */
  density?: number;
  /** A KV budget in bytes, turned into the density for its max length and batch. */
  kvBudget?: KvBudget;
  /** Profiled lengths (default {@link defaultProfileLengths} of the model's context). */
  lengths?: number[];
  /** Validation length (default {@link defaultValidationLength}). */
  validationLength?: number;
  /** Longer length where the KV density is constrained too (default max(2 · longest, validation length, budget length)). */
  extend?: number;
  samplesPerLength?: number;
  /** Validation samples (default 4). */
  validationSamples?: number;
  answerTokens?: number;
  seed?: string;
  chat?: ChatMode;
  source?: CalibrationSource;
  lowerRatio?: number;
  paretoPoints?: number;
  gqa?: GqaMode;
  maxRulesPerLayer?: number;
  timeLimitSeconds?: number;
  backend?: LoadOptions["backend"];
  /** Resumable profiling state folder (see `profileModel`). */
  stateDir?: string;
  /** An existing profile of this model to use instead of profiling. */
  profile?: { profile: MoaProfile; extras: ProfileExtras; source: string };
  /** The backward pass (default: @moa/runtime's `profileInfluence`). */
  influence?: InfluenceFn;
  onProgress?: (event: CompressProgress) => void;
}

export type CompressProgress =
  | { phase: "note"; message: string }
  | { phase: "profile"; progress: ProfileProgress }
  | { phase: "optimize"; progress: ProgressEvent }
  | { phase: "validation-samples"; done: number; total: number }
  | { phase: "validation-plans"; done: number; total: number };

export interface CandidateResult {
  point: ParetoPoint;
  /** Mean cross-entropy of the dense model's answers at the validation length under this plan. */
  validationLoss: number;
  /** KV density at the validation length. */
  kvDensity: number;
  /** KV bytes at the budget's max length and batch (with a KV budget). */
  kvBytes?: number;
  /** Whether the plan fits the byte budget (always true without one). */
  withinBudget: boolean;
}

export interface ValidationSummary {
  length: number;
  samples: Array<{ kind: SampleKind; answerTokens: number; answer: string; expected?: string }>;
  /** Dense model's loss on its own answers (the floor every plan is compared with). */
  denseLoss: number;
  /** Sink + a uniform span (alpha 0, one beta for every head) at no more KV density than the budget. */
  uniform: { plan: MoaPlan; loss: number; kvDensity: number };
}

export interface CompressResult {
  modelDir: string;
  shape: ModelShape;
  context: number;
  lengths: number[];
  extend: number;
  density: number;
  budget?: KvBudget & { denseBytes: number };
  profile: MoaProfile;
  profileExtras: ProfileExtras;
  /** Samples of this profiling run (empty when a profile was given). */
  profileSamples: SampleRecord[];
  /** Samples resumed from the state folder. */
  profileResumed: number;
  /** The given profile's file, when one was given. */
  profileSource?: string;
  stats: ParetoStats;
  candidates: CandidateResult[];
  /** Index into `candidates` of the chosen plan. */
  chosen: number;
  /** The chosen plan, its density recorded at every relevant length and validation in its provenance. */
  plan: MoaPlan;
  validation: ValidationSummary;
  seconds: { profile: number; optimize: number; validate: number; total: number };
}

function argument(message: string, field: string): never {
  throw new MoaError("E_ARGUMENT", `compress: ${message}`, { source: "compress", field });
}

/** Runs calibration → profile → Pareto plans → validation → selection for the checkpoint in `dir`. */
export async function compressModel(dir: string, options: CompressOptions): Promise<CompressResult> {
  const started = performance.now();
  const note = (message: string) => options.onProgress?.({ phase: "note", message });
  const config = await readModelConfig(dir);
  const shape = config.shape();
  const context = config.contextLength;

  const given = options.profile;
  if (given !== undefined) {
    if (given.profile.layers !== shape.layers || given.profile.heads !== shape.heads) {
      argument(
        `${given.source} has ${given.profile.layers} layers × ${given.profile.heads} heads but ${dir} has ${shape.layers} × ${shape.heads}: the profile is of another model`,
        "profile",
      );
    }
    if (options.lengths !== undefined)
      argument("give either lengths or a profile (its lengths are used)", "lengths");
  }
  const lengths = [...(given?.profile.lengths ?? options.lengths ?? defaultProfileLengths(context))].sort(
    (a, b) => a - b,
  );
  const longest = lengths[lengths.length - 1]!;
  if (longest > context)
    argument(`length ${longest} exceeds the model's context (${context} tokens)`, "lengths");
  const validationLength = options.validationLength ?? defaultValidationLength(lengths, context);
  if (!Number.isSafeInteger(validationLength) || validationLength < longest || validationLength > context) {
    argument(
      `validation length ${validationLength} must be an integer from the longest profiled length (${longest}) to the model's context (${context})`,
      "validationLength",
    );
  }
  if (validationLength === longest) {
    note(
      `validating at ${validationLength} tokens, a profiled length (the context allows nothing longer): the samples are unseen, the length is not`,
    );
  }

  if ((options.density === undefined) === (options.kvBudget === undefined)) {
    argument("give exactly one of density and kvBudget", "density");
  }
  let density: number;
  let budget: CompressResult["budget"];
  if (options.kvBudget !== undefined) {
    const converted = kvBudgetDensity(shape, options.kvBudget);
    density = converted.density;
    budget = { ...options.kvBudget, denseBytes: converted.denseBytes };
  } else {
    density = options.density!;
    if (!(density > 0 && density < 1)) argument(`density ${density} must be in (0, 1)`, "density");
  }
  const extend = options.extend ?? Math.max(2 * longest, validationLength, budget?.maxLength ?? 0);
  const lowerRatio = options.lowerRatio ?? DEFAULT_LOWER_RATIO;
  checkDensityFeasible(gridDensityRange(lengths, extend), density, lowerRatio);

  const source = options.source ?? defaultCalibration();
  const answerTokens = options.answerTokens ?? DEFAULT_ANSWER_TOKENS;
  const seed = options.seed ?? "0";
  const backend = options.backend === undefined ? {} : { backend: options.backend };
  const dense = await loadModel(dir, { ...backend, maxLength: Math.max(validationLength, longest) });
  let profiled: { profile: MoaProfile; extras: ProfileExtras; samples: SampleRecord[]; resumed: number };
  let validationSamples: Awaited<ReturnType<typeof buildValidationSet>>;
  let denseLoss: number;
  const tProfile = performance.now();
  let tOptimize: number;
  let tValidate: number;
  let points: ParetoPoint[];
  let stats: ParetoStats;
  try {
    if (given !== undefined) {
      profiled = { profile: given.profile, extras: given.extras, samples: [], resumed: 0 };
    } else {
      profiled = await profileModel(dense, {
        lengths,
        samplesPerLength: options.samplesPerLength ?? DEFAULT_SAMPLES_PER_LENGTH,
        source,
        answerTokens,
        seed,
        ...(options.chat === undefined ? {} : { chat: options.chat }),
        ...(options.stateDir === undefined ? {} : { stateDir: options.stateDir }),
        ...(options.influence === undefined ? {} : { influence: options.influence }),
        onProgress: (progress) => options.onProgress?.({ phase: "profile", progress }),
      });
    }
    tOptimize = performance.now();
    ({ points, stats } = await optimizePlans(profiled.profile, {
      shape,
      density,
      lengths,
      extend,
      lowerRatio,
      ...(options.paretoPoints === undefined ? {} : { paretoPoints: options.paretoPoints }),
      ...(options.gqa === undefined ? {} : { gqa: options.gqa }),
      ...(options.maxRulesPerLayer === undefined ? {} : { maxRulesPerLayer: options.maxRulesPerLayer }),
      ...(options.timeLimitSeconds === undefined ? {} : { timeLimitSeconds: options.timeLimitSeconds }),
      onProgress: (progress) => options.onProgress?.({ phase: "optimize", progress }),
    }));
    tValidate = performance.now();
    validationSamples = await buildValidationSet(dense, {
      length: validationLength,
      samples: options.validationSamples ?? DEFAULT_VALIDATION_SAMPLES,
      source,
      answerTokens,
      seed,
      ...(options.chat === undefined ? {} : { chat: options.chat }),
      onSample: (done, total) => options.onProgress?.({ phase: "validation-samples", done, total }),
    });
    denseLoss = answerLoss(dense, validationSamples);
  } finally {
    dense.dispose();
  }

  // The uniform baseline: one beta for every head, as wide as the KV density at the validation length allows.
  const sink = DEFAULT_GEOMETRY.sinkTokens;
  const uniform = uniformPlan(shape, Math.max(0, (density * validationLength - sink) / validationLength), [
    validationLength,
  ]);
  const losses = await planLosses(dir, [...points.map((p) => p.plan), uniform], validationSamples, {
    ...backend,
    onPlan: (done, total) => options.onProgress?.({ phase: "validation-plans", done, total }),
  });
  const candidates: CandidateResult[] = points.map((point, i) => {
    const kvBytes =
      budget === undefined
        ? undefined
        : planKvBytes(point.plan, budget.maxLength, {
            batch: budget.batch,
            bytesPerElement: budget.bytesPerElement,
          });
    return {
      point,
      validationLoss: losses[i]!,
      kvDensity: planKvDensity(point.plan, validationLength),
      ...(kvBytes === undefined ? {} : { kvBytes }),
      withinBudget: budget === undefined || kvBytes! <= budget.bytes,
    };
  });
  let chosen = -1;
  candidates.forEach((c, i) => {
    if (!c.withinBudget) return;
    const best = candidates[chosen];
    if (
      best === undefined ||
      c.validationLoss < best.validationLoss ||
      (c.validationLoss === best.validationLoss && c.kvDensity < best.kvDensity)
    ) {
      chosen = i;
    }
  });
  if (chosen < 0) {
    throw new MoaError(
      "E_BUDGET",
      `compress: none of the ${candidates.length} Pareto plans fits ${budget!.bytes} bytes at ${budget!.batch} × ${budget!.maxLength} tokens (their KV density there exceeds the budget's ${density.toFixed(4)}); lower the budget slightly or pass --extend ${budget!.maxLength}`,
      { source: "compress", field: "kvBudget" },
    );
  }
  const best = candidates[chosen]!;
  const validation: ValidationSummary = {
    length: validationLength,
    samples: validationSamples.map((s) => ({
      kind: s.kind,
      answerTokens: s.length - s.answerStart,
      answer: s.answer,
      ...(s.expected === undefined ? {} : { expected: s.expected }),
    })),
    denseLoss,
    uniform: {
      plan: uniform,
      loss: losses[points.length]!,
      kvDensity: planKvDensity(uniform, validationLength),
    },
  };
  const densityLengths = [
    ...new Set([...stats.kvLengths, validationLength, ...(budget ? [budget.maxLength] : [])]),
  ];
  const plan = makePlan(
    shape,
    best.point.plan.rules,
    densityLengths,
    {
      ...best.point.plan.provenance,
      validation: {
        length: validationLength,
        samples: validationSamples.length,
        loss: best.validationLoss,
        denseLoss,
        candidates: candidates.length,
        chosen,
      },
      ...(budget === undefined
        ? {}
        : {
            kvBudget: {
              bytes: budget.bytes,
              maxLength: budget.maxLength,
              batch: budget.batch,
              bytesPerElement: budget.bytesPerElement,
              planBytes: best.kvBytes,
            },
          }),
    },
    { blockSize: best.point.plan.blockSize, sinkTokens: best.point.plan.sinkTokens },
  );
  const end = performance.now();
  return {
    modelDir: dir,
    shape,
    context,
    lengths,
    extend,
    density,
    ...(budget === undefined ? {} : { budget }),
    profile: profiled.profile,
    profileExtras: profiled.extras,
    profileSamples: profiled.samples,
    profileResumed: profiled.resumed,
    ...(given === undefined ? {} : { profileSource: given.source }),
    stats,
    candidates,
    chosen,
    plan,
    validation,
    seconds: {
      profile: (tOptimize - tProfile) / 1000,
      optimize: (tValidate - tOptimize) / 1000,
      validate: (end - tValidate) / 1000,
      total: (end - started) / 1000,
    },
  };
}

/** Validation loss above the dense model's by more than this (nats per answer token) earns a warning. */
export const VALIDATION_WARNING_NATS = 0.1;

/**
 * A warning when even the chosen plan loses much of the dense model's answers at the validation length — the
 * budget is too tight there, or the profile does not reach far enough to tell the rules apart — with what to try.
 */
export function validationWarning(result: CompressResult): string | undefined {
  const best = result.candidates[result.chosen]!;
  const { denseLoss, length } = result.validation;
  if (best.validationLoss - denseLoss <= VALIDATION_WARNING_NATS) return undefined;
  const longest = result.lengths[result.lengths.length - 1]!;
  const reach =
    longest < length
      ? `profile up to the validation length (e.g. --lengths ${[...result.lengths.slice(1), length].join(",")}) or `
      : "";
  return (
    `the chosen plan's validation loss at ${length} tokens (${best.validationLoss.toFixed(4)}) is far above the dense ` +
    `model's (${denseLoss.toFixed(4)}): the plans drop attention the model needs there; ${reach}raise the density`
  );
}
