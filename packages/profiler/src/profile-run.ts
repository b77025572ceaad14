/**
 * `profileModel`: DESIGN.md: Profile — at every profiled length, the attention influence `|E|` summed over each
 * causal B×B block, averaged over calibration samples whose loss is the dense model's answer. Samples are built
 * (calibration.ts, sample.ts), run through the backward pass, summed in float64 and — with a state folder —
 * saved after every sample, so a run can be interrupted and resumed (state.ts).
 */
import { createHash } from "node:crypto";
import { basename, resolve } from "node:path";
import { DEFAULT_GEOMETRY, MoaError, type MoaProfile } from "@moa/core";
import { type InfluenceOptions, type Model, profileInfluence, InfluenceSession } from "@moa/runtime";
import { type CalibrationSource, defaultCalibration, type SampleKind } from "./calibration.js";
import { modelFingerprint } from "./fingerprint.js";
import type { ProfileExtras } from "./profile-file.js";
import { type ChatMode, PromptFrame } from "./prompt-frame.js";
import { buildSample } from "./sample.js";
import { type LengthAccumulator, openState, type SampleRecord, saveAccumulator } from "./state.js";

/**
 * The backward pass: the mean cross-entropy over positions `[answerStart, n)` and the block sums of `|E|`,
 * `[layers, heads, nb, nb]` with `nb = ceil(n / B)` (DESIGN.md: Attention influence).
 */
export type InfluenceFn = (
  model: Model,
  ids: readonly number[],
  answerStart: number,
  options?: InfluenceOptions,
) => { loss: number; influence: Float32Array };

/** Defaults of a profiling run. */
export const DEFAULT_SAMPLES_PER_LENGTH = 8;
export const DEFAULT_ANSWER_TOKENS = 16;

export interface ProfileOptions {
  /** Lengths to profile, multiples of the block size (64), at most the model's context. */
  lengths: readonly number[];
  /** Samples averaged at each length (default 8). */
  samplesPerLength?: number;
  /** Where prompts come from (default: the built-in set). */
  source?: CalibrationSource;
  /** Answer tokens the dense model generates per sample (default 16). */
  answerTokens?: number;
  /** Seed of the sample streams (default "0"); runs on several machines use the same seed and other offsets. */
  seed?: string;
  /** Index of the first sample (default 0): machine k of m profiles samples `k·S … k·S + S − 1`. */
  sampleOffset?: number;
  /** Chat template for the prompts: when the checkpoint has one (auto, default), always, never. */
  chat?: ChatMode;
  /** A folder for resumable state; a rerun with the same settings continues the samples finished there. */
  stateDir?: string;
  onProgress?: (event: ProfileProgress) => void;
  /** The backward pass (default: @moa/runtime's `profileInfluence`). */
  influence?: InfluenceFn;
  /**
   * At most this many layers keep their forward activations for the backward (default: as many as the device's
   * free memory holds; 0: every layer recomputed, the least memory). The profile is the same either way.
   */
  keepLayers?: number;
}

export interface ProfileProgress {
  /** "begin": a sample starts; "end": it is done and saved; "resume": samples found in the state folder. */
  event: "begin" | "end" | "resume";
  /** Samples done (resumed ones included) and the total. */
  done: number;
  total: number;
  /** Samples that came from the state folder. */
  resumed: number;
  length: number;
  /** Sample index within its length (offset included). */
  index: number;
  kind?: SampleKind;
  /** Dense loss on the answer ("end" only). */
  loss?: number;
  elapsedSeconds: number;
  /** Seconds left, estimated from this run's samples (undefined before the first one ends). */
  etaSeconds?: number;
}

export interface ProfileResult {
  profile: MoaProfile;
  /** Metadata this package adds to the profile file. */
  extras: ProfileExtras;
  /** Every sample, by length then index. */
  samples: SampleRecord[];
  /** Identifies the run (model files + settings + calibration). */
  key: string;
  /** Samples taken from the state folder rather than computed. */
  resumed: number;
}

function argument(field: string, value: unknown, reason: string): never {
  throw new MoaError("E_ARGUMENT", `profileModel: ${field} = ${JSON.stringify(value)}: ${reason}`, {
    source: "profileModel",
    field,
  });
}

/** Whether a retrieval sample's answer contains the expected number (undefined for other samples). */
export function answerIsCorrect(record: Pick<SampleRecord, "answer" | "expected">): boolean | undefined {
  return record.expected === undefined ? undefined : record.answer.includes(record.expected);
}

/**
 * Profiles `model` (loaded dense, on a backend the backward pass supports) at each length. With `stateDir`,
 * finished samples survive an interruption: call again with the same options to resume, and the result equals
 * an uninterrupted run's bit for bit. The caller writes the profile and then removes the state folder.
 */
export async function profileModel(model: Model, options: ProfileOptions): Promise<ProfileResult> {
  const started = performance.now();
  const B = DEFAULT_GEOMETRY.blockSize;
  const lengths = [...options.lengths].sort((a, b) => a - b);
  if (lengths.length === 0) argument("lengths", lengths, "must list at least one length");
  for (const n of lengths) {
    if (!Number.isSafeInteger(n) || n < B || n % B !== 0) {
      argument(
        "lengths",
        options.lengths,
        `each length must be a positive multiple of ${B} (the block size)`,
      );
    }
    if (n > model.maxLength) {
      argument("lengths", options.lengths, `${n} exceeds the model's context (${model.maxLength} tokens)`);
    }
  }
  if (new Set(lengths).size !== lengths.length) argument("lengths", options.lengths, "lists a length twice");
  const samplesPerLength = options.samplesPerLength ?? DEFAULT_SAMPLES_PER_LENGTH;
  if (!Number.isSafeInteger(samplesPerLength) || samplesPerLength < 1) {
    argument("samplesPerLength", samplesPerLength, "must be a positive integer");
  }
  const answerTokens = options.answerTokens ?? DEFAULT_ANSWER_TOKENS;
  if (!Number.isSafeInteger(answerTokens) || answerTokens < 1) {
    argument("answerTokens", answerTokens, "must be a positive integer");
  }
  const sampleOffset = options.sampleOffset ?? 0;
  if (!Number.isSafeInteger(sampleOffset) || sampleOffset < 0) {
    argument("sampleOffset", sampleOffset, "must be an integer ≥ 0");
  }
  const seed = options.seed ?? "0";
  const source = options.source ?? defaultCalibration();
  const backward: InfluenceFn = options.influence ?? profileInfluence;
  const frame = PromptFrame.of(model, options.chat ?? "auto");
  const shape = model.config.shape();
  const modelName = basename(resolve(model.dir));

  const settings = {
    model: modelName,
    lengths,
    samplesPerLength,
    sampleOffset,
    answerTokens,
    seed,
    calibration: source.key,
    chatTemplate: frame.chat,
    blockSize: B,
  };
  const fingerprint = await modelFingerprint(model.dir);
  const key = createHash("sha256")
    .update(JSON.stringify({ version: 1, fingerprint, settings }))
    .digest("hex");
  const saved =
    options.stateDir === undefined
      ? new Map<number, LengthAccumulator>()
      : await openState(options.stateDir, { key, settings });

  const total = lengths.length * samplesPerLength;
  const accumulators = new Map<number, LengthAccumulator>();
  let resumed = 0;
  for (const n of lengths) {
    const nb = n / B;
    const acc: LengthAccumulator = saved.get(n) ?? {
      length: n,
      shape: [shape.layers, shape.heads, nb, nb],
      sum: new Float64Array(shape.layers * shape.heads * nb * nb),
      samples: [],
    };
    accumulators.set(n, acc);
    resumed += acc.samples.length;
  }
  let done = resumed;
  const timing = new Map<number, { seconds: number; count: number }>();
  const eta = (): number | undefined => etaSeconds(lengths, accumulators, samplesPerLength, timing);
  const elapsed = () => (performance.now() - started) / 1000;
  if (resumed > 0) {
    options.onProgress?.({
      event: "resume",
      done,
      total,
      resumed,
      length: lengths[0]!,
      index: sampleOffset,
      elapsedSeconds: elapsed(),
    });
  }

  // The weights' fp16 copies and the influence's host array live from the first sample to the last.
  const session = new InfluenceSession();
  try {
    for (const n of lengths) {
      const acc = accumulators.get(n)!;
      for (let s = acc.samples.length; s < samplesPerLength; s++) {
        const index = sampleOffset + s;
        const t0 = performance.now();
        options.onProgress?.({
          event: "begin",
          done,
          total,
          resumed,
          length: n,
          index,
          elapsedSeconds: elapsed(),
          ...etaField(eta()),
        });
        const sample = await buildSample(model, frame, source, {
          length: n,
          index,
          answerTokens,
          seedName: `${seed}/profile/${n}/${index}`,
        });
        const { loss, influence } = backward(model, sample.ids, sample.answerStart, {
          session,
          ...(options.keepLayers === undefined ? {} : { keepLayers: options.keepLayers }),
        });
        if (influence.length !== acc.sum.length) {
          throw new MoaError(
            "E_PROFILE",
            `profileModel: the backward pass returned ${influence.length} block values at length ${n}, expected ${acc.shape.join("·")} = ${acc.sum.length}`,
            { source: "profileModel", field: "influence" },
          );
        }
        for (let k = 0; k < influence.length; k++) {
          const v = influence[k]!;
          if (!(v >= 0 && v < Number.POSITIVE_INFINITY)) {
            throw new MoaError(
              "E_PROFILE",
              `profileModel: sample ${index} at length ${n} (${sample.kind}): block influence value ${k} is ${v}; influence must be finite and ≥ 0`,
              { source: "profileModel", field: "influence" },
            );
          }
          acc.sum[k]! += v;
        }
        const seconds = (performance.now() - t0) / 1000;
        acc.samples.push({
          length: n,
          index,
          kind: sample.kind,
          loss,
          answerTokens: n - sample.answerStart,
          answer: sample.answer,
          ...(sample.expected === undefined ? {} : { expected: sample.expected }),
          seconds,
        });
        if (options.stateDir !== undefined) await saveAccumulator(options.stateDir, key, acc);
        const t = timing.get(n) ?? { seconds: 0, count: 0 };
        timing.set(n, { seconds: t.seconds + seconds, count: t.count + 1 });
        done++;
        options.onProgress?.({
          event: "end",
          done,
          total,
          resumed,
          length: n,
          index,
          kind: sample.kind,
          loss,
          elapsedSeconds: elapsed(),
          ...etaField(eta()),
        });
      }
    }
  } finally {
    session.release();
  }

  const influence = new Map<number, Float32Array>();
  for (const n of lengths) {
    const acc = accumulators.get(n)!;
    const mean = new Float32Array(acc.sum.length);
    for (let k = 0; k < mean.length; k++) mean[k] = acc.sum[k]! / samplesPerLength;
    influence.set(n, mean);
  }
  const offsets =
    samplesPerLength === 1
      ? `sample ${sampleOffset}`
      : `samples ${sampleOffset}–${sampleOffset + samplesPerLength - 1}`;
  const profile: MoaProfile = {
    model: modelName,
    layers: shape.layers,
    heads: shape.heads,
    blockSize: B,
    sinkTokens: DEFAULT_GEOMETRY.sinkTokens,
    lengths,
    samplesPerLength,
    calibration:
      `${source.description}; seed ${seed}, ${offsets} per length; answers of up to ${answerTokens} tokens ` +
      `generated greedily by the dense model${frame.chat ? " (chat template)" : ""}`,
    influence,
  };
  return {
    profile,
    extras: {
      architecture: shape.architecture,
      kvHeads: String(shape.kvHeads),
      headDim: String(shape.headDim),
      profileKey: key,
    },
    samples: lengths.flatMap((n) => accumulators.get(n)!.samples),
    key,
    resumed,
  };
}

function etaField(seconds: number | undefined): { etaSeconds?: number } {
  return seconds === undefined ? {} : { etaSeconds: seconds };
}

/**
 * Seconds left: each remaining sample at the mean time this run measured at its length, or — for a length not
 * reached yet — at the nearest measured length scaled by (n / m)^1.5 (between the linear layers' and
 * attention's growth).
 */
function etaSeconds(
  lengths: readonly number[],
  accumulators: Map<number, LengthAccumulator>,
  samplesPerLength: number,
  timing: Map<number, { seconds: number; count: number }>,
): number | undefined {
  const measured = [...timing.entries()].filter(([, t]) => t.count > 0);
  if (measured.length === 0) return undefined;
  let left = 0;
  for (const n of lengths) {
    const remaining = samplesPerLength - accumulators.get(n)!.samples.length;
    if (remaining === 0) continue;
    const own = timing.get(n);
    let perSample: number;
    if (own !== undefined && own.count > 0) perSample = own.seconds / own.count;
    else {
      const [m, t] = measured.reduce((best, entry) =>
        Math.abs(Math.log(entry[0] / n)) < Math.abs(Math.log(best[0] / n)) ? entry : best,
      );
      perSample = (t.seconds / t.count) * (n / m) ** 1.5;
    }
    left += remaining * perSample;
  }
  return left;
}
