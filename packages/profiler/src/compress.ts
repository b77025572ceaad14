/**
 * `compressModel`: the whole MoA pipeline for one checkpoint (DESIGN.md: The optimisation) — calibrate and
 * profile at several lengths, enumerate Pareto-optimal plans under the KV-density budget (@moa/solver), validate
 * every candidate on unseen retrieval samples at the longest lengths (loss on dense-model answers), probe which
 * KV heads the best candidate should keep whole and re-solve with them pinned (refine.ts), and pick a plan by
 * the rule of select.ts. I/O is the caller's: it gets every intermediate result to write and report.
 */
import {
  DEFAULT_GEOMETRY,
  type ElasticRule,
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
import {
  type CalibrationSource,
  defaultCalibration,
  type SampleKind,
  validationCalibration,
} from "./calibration.js";
import type { ProfileExtras } from "./profile-file.js";
import {
  DEFAULT_ANSWER_TOKENS,
  DEFAULT_SAMPLES_PER_LENGTH,
  type InfluenceFn,
  type ProfileProgress,
  profileModel,
} from "./profile-run.js";
import type { ChatMode } from "./prompt-frame.js";
import {
  FULL_RULE,
  type KvHeadRef,
  narrowKvHeads,
  pinProfile,
  rulesProfileLoss,
  widenKvHeads,
} from "./refine.js";
import type { CalibrationSample } from "./sample.js";
import { DEFAULT_TIE_NATS, type Selection, selectCandidate } from "./select.js";
import type { SampleRecord } from "./state.js";
import { buildValidationSet, planSampleLosses, sampleLosses } from "./validate.js";

/** Validation samples per validation length on the CPU (kept small so `pnpm demo` takes minutes). */
export const DEFAULT_VALIDATION_SAMPLES = 4;
/**
 * Validation samples per validation length on CUDA, where they cost seconds. Four were too few on moa-tiny at
 * density 0.5 (H100): the two candidates that lost a fifth of dense's retrieval accuracy at 4k validated within
 * noise of the good ones; with 16 (needles at 16 depths) their validation loss was 2.3–3.6× the others'.
 */
export const DEFAULT_VALIDATION_SAMPLES_CUDA = 16;
/** KV heads pinned at most (plans re-solved with the 1, 2, … most useful heads kept whole). */
export const DEFAULT_PIN_HEADS = 2;
/** KV heads probed at most (the narrowest-kept first, by the profile's loss of their rules). */
export const DEFAULT_PROBE_HEADS = 64;
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
  /**
   * Every length validated at (default: the validation length and the longest profiled length below it, or
   * the second-longest when the validation length is the longest): plans must hold at more than one length.
   */
  validationLengths?: number[];
  /** Validation prompts (default: the built-in retrieval validation set, or `source` when that is user data). */
  validationSource?: CalibrationSource;
  /** Head probes and pinned re-solves: at most this many KV heads pinned (default 2; 0 disables probing). */
  pinHeads?: number;
  /** At most this many KV heads probed (default 64). */
  probeHeads?: number;
  /** Longer length where the KV density is constrained too (default max(2 · longest, validation length, budget length)). */
  extend?: number;
  samplesPerLength?: number;
  /** Validation samples per validation length (default 4 on the CPU, 16 on CUDA). */
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
  /** Layers that keep their activations while profiling (ProfileOptions.keepLayers; default: as memory allows). */
  keepLayers?: number;
  onProgress?: (event: CompressProgress) => void;
}

export type CompressProgress =
  | { phase: "note"; message: string }
  | { phase: "profile"; progress: ProfileProgress }
  | { phase: "optimize"; progress: ProgressEvent }
  | { phase: "validation-samples"; done: number; total: number }
  | { phase: "validation-plans"; done: number; total: number }
  | { phase: "probe"; done: number; total: number }
  | { phase: "pin"; heads: KvHeadRef[] };

export interface CandidateResult {
  /** The plan and its rule loss under the profile (for a pinned candidate: under the original profile). */
  point: ParetoPoint;
  /** Mean cross-entropy of the dense model's answers on the validation samples under this plan. */
  validationLoss: number;
  /** Per validation sample (ValidationSummary.samples order): this plan's answer loss − the dense model's. */
  excess: number[];
  /** Validation loss per validation length. */
  validationLossByLength: Record<string, number>;
  /** KV heads this candidate was solved with pinned whole (absent for the Pareto plans of the profile). */
  pinned?: KvHeadRef[];
  /** KV density at the validation length. */
  kvDensity: number;
  /** KV bytes at the budget's max length and batch (with a KV budget). */
  kvBytes?: number;
  /** Whether the plan fits the byte budget (always true without one). */
  withinBudget: boolean;
}

export interface ValidationSummary {
  /** The longest validation length. */
  length: number;
  /** Every validation length. */
  lengths: number[];
  /** What the validation prompts were. */
  source: string;
  samples: Array<{
    kind: SampleKind;
    length: number;
    answerTokens: number;
    answer: string;
    expected?: string;
    denseLoss: number;
  }>;
  /** Dense model's loss on its own answers (the floor every plan is compared with). */
  denseLoss: number;
  denseLossByLength: Record<string, number>;
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
  /** The selection rule's scores, ties and reason (select.ts). */
  selection: Selection;
  /** Head probes: each KV head of the probed candidate widened alone, and the validation loss that recovers. */
  probes: { base: number; heads: Array<KvHeadRef & { validationLoss: number; gain: number }> } | null;
  /** The chosen plan, its density recorded at every relevant length and validation in its provenance. */
  plan: MoaPlan;
  validation: ValidationSummary;
  seconds: { profile: number; optimize: number; validate: number; total: number };
}

function argument(message: string, field: string): never {
  throw new MoaError("E_ARGUMENT", `compress: ${message}`, { source: "compress", field });
}

function mean(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}

function describeHeads(heads: readonly KvHeadRef[]): string {
  return heads.map((h) => `layer ${h.layer} KV head ${h.kvHead}`).join(", ");
}

/**
 * The lengths validated at: `given`, or the validation length and the longest profiled length below it (the
 * second-longest profiled length when the validation length is the longest), each at most the context.
 */
export function resolveValidationLengths(
  given: readonly number[] | undefined,
  lengths: readonly number[],
  validationLength: number,
  context: number,
): number[] {
  if (given !== undefined) {
    if (given.length === 0) argument("give at least one validation length", "validationLengths");
    for (const n of given) {
      if (!Number.isSafeInteger(n) || n < 1 || n > context) {
        argument(`validation length ${n} must be an integer in [1, ${context}]`, "validationLengths");
      }
    }
    return [...new Set(given)].sort((a, b) => a - b);
  }
  const below = lengths.filter((n) => n < validationLength);
  const extra = below.length > 0 ? [below[below.length - 1]!] : [];
  return [...new Set([...extra, validationLength])].sort((a, b) => a - b);
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

  const validationLengths = resolveValidationLengths(
    options.validationLengths,
    lengths,
    validationLength,
    context,
  );
  const source = options.source ?? defaultCalibration();
  const validationSource =
    options.validationSource ??
    (options.source === undefined || options.source.key.startsWith("builtin-")
      ? validationCalibration()
      : source);
  const pinHeads = options.pinHeads ?? DEFAULT_PIN_HEADS;
  const probeHeads = options.probeHeads ?? DEFAULT_PROBE_HEADS;
  if (!Number.isSafeInteger(pinHeads) || pinHeads < 0)
    argument(`pinHeads ${pinHeads} must be an integer ≥ 0`, "pinHeads");
  if (!Number.isSafeInteger(probeHeads) || probeHeads < 1) {
    argument(`probeHeads ${probeHeads} must be an integer ≥ 1`, "probeHeads");
  }
  const answerTokens = options.answerTokens ?? DEFAULT_ANSWER_TOKENS;
  const seed = options.seed ?? "0";
  const backend = options.backend === undefined ? {} : { backend: options.backend };
  const dense = await loadModel(dir, { ...backend, maxLength: Math.max(validationLength, longest) });
  let profiled: { profile: MoaProfile; extras: ProfileExtras; samples: SampleRecord[]; resumed: number };
  const validationSamples: CalibrationSample[] = [];
  let denseByS: number[];
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
        ...(options.keepLayers === undefined ? {} : { keepLayers: options.keepLayers }),
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
    const perLength =
      options.validationSamples ??
      (dense.backend.name === "cuda" ? DEFAULT_VALIDATION_SAMPLES_CUDA : DEFAULT_VALIDATION_SAMPLES);
    for (const [j, length] of validationLengths.entries()) {
      validationSamples.push(
        ...(await buildValidationSet(dense, {
          length,
          samples: perLength,
          source: validationSource,
          answerTokens,
          seed,
          ...(options.chat === undefined ? {} : { chat: options.chat }),
          onSample: (done, total) =>
            options.onProgress?.({
              phase: "validation-samples",
              done: j * perLength + done,
              total: validationLengths.length * total,
            }),
        })),
      );
    }
    denseByS = sampleLosses(dense, validationSamples);
  } finally {
    dense.dispose();
  }

  const pooled = (bySample: readonly number[], only?: number): number => {
    let sum = 0;
    let count = 0;
    validationSamples.forEach((sample, i) => {
      if (only !== undefined && sample.length !== only) return;
      const tokens = sample.length - sample.answerStart;
      sum += bySample[i]! * tokens;
      count += tokens;
    });
    return sum / count;
  };
  const byLength = (bySample: readonly number[]) =>
    Object.fromEntries(validationLengths.map((n) => [String(n), pooled(bySample, n)]));
  const denseLoss = pooled(denseByS);
  const scorePlans = (plans: readonly MoaPlan[], phase: "validation-plans" | "probe") =>
    planSampleLosses(dir, plans, validationSamples, {
      ...backend,
      onPlan: (done, total) => options.onProgress?.({ phase, done, total }),
    });
  const candidateOf = (
    point: ParetoPoint,
    bySample: readonly number[],
    pinned?: KvHeadRef[],
  ): CandidateResult => {
    const kvBytes =
      budget === undefined
        ? undefined
        : planKvBytes(point.plan, budget.maxLength, {
            batch: budget.batch,
            bytesPerElement: budget.bytesPerElement,
          });
    return {
      point,
      validationLoss: pooled(bySample),
      excess: bySample.map((loss, i) => loss - denseByS[i]!),
      validationLossByLength: byLength(bySample),
      ...(pinned === undefined ? {} : { pinned }),
      kvDensity: planKvDensity(point.plan, validationLength),
      ...(kvBytes === undefined ? {} : { kvBytes }),
      withinBudget: budget === undefined || kvBytes! <= budget.bytes,
    };
  };
  const select = (all: readonly CandidateResult[]) =>
    selectCandidate(
      all.map((c) => ({
        withinBudget: c.withinBudget,
        excess: c.excess,
        profileLoss: c.point.loss,
        kvDensity: c.kvDensity,
      })),
    );

  // The uniform baseline: one beta for every head, as wide as the KV density at the validation length allows.
  const sink = DEFAULT_GEOMETRY.sinkTokens;
  const uniform = uniformPlan(shape, Math.max(0, (density * validationLength - sink) / validationLength), [
    validationLength,
  ]);
  const losses = await scorePlans([...points.map((p) => p.plan), uniform], "validation-plans");
  const candidates: CandidateResult[] = points.map((point, i) => candidateOf(point, losses[i]!));

  // Head probes around the candidate the validation prefers, then re-solves with the most useful heads pinned.
  let probes: CompressResult["probes"] = null;
  const first = select(candidates);
  if (pinHeads > 0 && first.lowest >= 0) {
    const base = candidates[first.lowest]!;
    const profileLoss = (rules: ElasticRule[][]) => rulesProfileLoss(profiled.profile, rules);
    // The heads whose current rules lose the most profile influence first, when there are too many to probe.
    const narrow = narrowKvHeads(base.point.plan, validationLength);
    const group = shape.heads / shape.kvHeads;
    const headLoss = (h: KvHeadRef) => {
      const rules = base.point.plan.rules.map((layer, l) =>
        layer.map((r, q) => (l === h.layer && Math.floor(q / group) === h.kvHead ? r : FULL_RULE)),
      );
      return profileLoss(rules)[String(longest)]!;
    };
    const probed = (
      narrow.length > probeHeads
        ? narrow
            .map((h) => ({ h, loss: headLoss(h) }))
            .sort((x, y) => y.loss - x.loss)
            .slice(0, probeHeads)
            .map((x) => x.h)
        : narrow
    ).sort((x, y) => x.layer - y.layer || x.kvHead - y.kvHead);
    if (probed.length > 0) {
      const probeLosses = await scorePlans(
        probed.map((h) => makePlan(shape, widenKvHeads(base.point.plan, [h]), [validationLength])),
        "probe",
      );
      const baseScore = mean(base.excess);
      const heads = probed.map((h, i) => {
        const score = mean(probeLosses[i]!.map((loss, s) => loss - denseByS[s]!));
        return { ...h, validationLoss: pooled(probeLosses[i]!), gain: baseScore - score };
      });
      probes = { base: first.lowest, heads };
      const useful = [...heads].filter((h) => h.gain > DEFAULT_TIE_NATS).sort((x, y) => y.gain - x.gain);
      const seen = new Set(candidates.map((c) => JSON.stringify(c.point.plan.rules)));
      for (let k = 1; k <= Math.min(pinHeads, useful.length); k++) {
        const pinned = useful.slice(0, k).map(({ layer, kvHead }) => ({ layer, kvHead }));
        options.onProgress?.({ phase: "pin", heads: pinned });
        let solved: ParetoPoint[];
        try {
          ({ points: solved } = await optimizePlans(pinProfile(profiled.profile, shape, pinned), {
            shape,
            density,
            lengths,
            extend,
            lowerRatio,
            paretoPoints: 0,
            ...(options.gqa === undefined ? {} : { gqa: options.gqa }),
            ...(options.maxRulesPerLayer === undefined ? {} : { maxRulesPerLayer: options.maxRulesPerLayer }),
            ...(options.timeLimitSeconds === undefined ? {} : { timeLimitSeconds: options.timeLimitSeconds }),
            onProgress: (progress) => options.onProgress?.({ phase: "optimize", progress }),
          }));
        } catch (error) {
          // Pinned heads may leave no feasible plan under the budget: then there is nothing to add.
          if (error instanceof MoaError) {
            note(`pinning ${describeHeads(pinned)} whole: ${error.message}`);
            continue;
          }
          throw error;
        }
        const fresh = solved.filter((p) => {
          const key = JSON.stringify(p.plan.rules);
          if (seen.has(key)) return false;
          seen.add(key);
          return true;
        });
        if (fresh.length === 0) continue;
        const freshLosses = await scorePlans(
          fresh.map((p) => p.plan),
          "validation-plans",
        );
        fresh.forEach((p, i) => {
          const point: ParetoPoint = { ...p, loss: profileLoss(p.plan.rules) };
          candidates.push(candidateOf(point, freshLosses[i]!, pinned));
        });
      }
    }
  }

  const selection = select(candidates);
  const chosen = selection.chosen;
  if (chosen < 0) {
    throw new MoaError(
      "E_BUDGET",
      `compress: none of the ${candidates.length} Pareto plans fits ${budget!.bytes} bytes at ${budget!.batch} × ${budget!.maxLength} tokens (their KV density there exceeds the budget's ${density.toFixed(4)}); lower the budget slightly or pass --extend ${budget!.maxLength}`,
      { source: "compress", field: "kvBudget" },
    );
  }
  const best = candidates[chosen]!;
  const uniformLosses = losses[points.length]!;
  const validation: ValidationSummary = {
    length: validationLength,
    lengths: validationLengths,
    source: validationSource.description,
    samples: validationSamples.map((s, i) => ({
      kind: s.kind,
      length: s.length,
      answerTokens: s.length - s.answerStart,
      answer: s.answer,
      ...(s.expected === undefined ? {} : { expected: s.expected }),
      denseLoss: denseByS[i]!,
    })),
    denseLoss,
    denseLossByLength: byLength(denseByS),
    uniform: {
      plan: uniform,
      loss: pooled(uniformLosses),
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
        lengths: validationLengths,
        samples: validationSamples.length,
        loss: best.validationLoss,
        denseLoss,
        candidates: candidates.length,
        chosen,
        selection: selection.reason,
        ...(best.pinned === undefined ? {} : { pinned: best.pinned }),
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
    selection,
    probes,
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
