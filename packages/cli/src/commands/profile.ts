import { basename, resolve } from "node:path";
import {
  answerIsCorrect,
  type CalibrationSource,
  type ChatMode,
  DEFAULT_ANSWER_TOKENS,
  DEFAULT_SAMPLES_PER_LENGTH,
  defaultCalibration,
  defaultProfileLengths,
  parseCalibrationJsonl,
  profileModel,
  removeState,
  userCalibration,
  writeProfileWithExtras,
} from "@moa/profiler";
import { loadModel, readModelConfig } from "@moa/runtime";
import {
  booleanFlag,
  expectPositionals,
  integerListFlag,
  numberFlag,
  type OptionSpec,
  type ParsedArgs,
  stringFlag,
} from "../args.js";
import type { Command } from "../command.js";
import { CliError, usageError, userFacing, userFacingAsync } from "../errors.js";
import { exists, readInputFile, writeFilesAtomically } from "../io.js";
import { ProgressBar, profileProgressPrinter } from "../report/progress-bar.js";
import { fixed, formatTable } from "../table.js";

/** Flags `moa profile` and `moa compress` share: what to profile and with which calibration data. */
export const CALIBRATION_OPTIONS: OptionSpec = {
  lengths: { type: "string" },
  samples: { type: "string" },
  data: { type: "string" },
  "answer-tokens": { type: "string" },
  seed: { type: "string" },
  chat: { type: "string" },
  backend: { type: "string" },
  "low-memory": { type: "boolean" },
};

export const CALIBRATION_FLAGS: ReadonlyArray<[string, string]> = [
  [
    "--lengths <list>",
    "lengths to profile, multiples of 64 (default V/4,V/2,V with V = min(context, 16384))",
  ],
  ["--samples <N>", `calibration samples per length (default ${DEFAULT_SAMPLES_PER_LENGTH})`],
  [
    "--data <file.jsonl>",
    'your calibration data, lines of {"context": "...", "question": "..."} (default: built-in set)',
  ],
  [
    "--answer-tokens <N>",
    `answer tokens the dense model generates per sample (default ${DEFAULT_ANSWER_TOKENS})`,
  ],
  ["--seed <s>", "seed of the sample generators (default 0)"],
  ["--chat <mode>", "auto (default: the chat template when the checkpoint has one), on or off"],
  ["--backend <name>", "cpu or cuda (default: cuda when a GPU is present)"],
  [
    "--low-memory",
    "recompute every layer's activations in the backward instead of keeping those that fit in free memory (less memory, slower; same profile)",
  ],
];

export interface CalibrationSettings {
  lengths: number[] | undefined;
  samplesPerLength: number | undefined;
  answerTokens: number | undefined;
  seed: string;
  chat: ChatMode | undefined;
  backend: "cpu" | "cuda" | undefined;
  source: CalibrationSource;
  /** --low-memory: 0 (no layer keeps its activations); else undefined (as memory allows). */
  keepLayers: number | undefined;
}

/** Reads the shared calibration flags; `--data` is read and validated here (errors name the line). */
export async function calibrationSettings(command: string, args: ParsedArgs): Promise<CalibrationSettings> {
  const chat = stringFlag(args, "chat");
  if (chat !== undefined && chat !== "auto" && chat !== "on" && chat !== "off") {
    throw usageError(`moa ${command}: --chat ${JSON.stringify(chat)}: expected auto, on or off`);
  }
  const backend = stringFlag(args, "backend");
  if (backend !== undefined && backend !== "cpu" && backend !== "cuda") {
    throw usageError(`moa ${command}: --backend ${JSON.stringify(backend)}: expected "cpu" or "cuda"`);
  }
  const seed = stringFlag(args, "seed") ?? "0";
  if (seed === "") throw usageError(`moa ${command}: --seed must not be empty`);
  const data = stringFlag(args, "data");
  let source = defaultCalibration();
  if (data !== undefined) {
    const text = new TextDecoder().decode(await readInputFile(data));
    const records = userFacing(() => parseCalibrationJsonl(text, data));
    source = userCalibration(records, data, text);
  }
  return {
    lengths: integerListFlag(command, args, "lengths"),
    samplesPerLength: numberFlag(command, args, "samples", { integer: true, min: 1 }),
    answerTokens: numberFlag(command, args, "answer-tokens", { integer: true, min: 1 }),
    seed,
    chat: chat as ChatMode | undefined,
    backend: backend as "cpu" | "cuda" | undefined,
    source,
    keepLayers: booleanFlag(args, "low-memory") ? 0 : undefined,
  };
}

/** The checkpoint's config, or one line saying what is wrong with the folder. */
export async function readConfigOrFail(modelDir: string) {
  return userFacingAsync(() => readModelConfig(modelDir));
}

export const profileCommand: Command = {
  name: "profile",
  summary:
    "Profile a checkpoint's attention influence at several lengths into a moa-profile; resumable after an interruption.",
  usage:
    "moa profile <model-dir> [--lengths 256,512,1024] [--samples N] [--data file.jsonl] [--out file] [--sample-offset K] [--restart] [--force] [--json]",
  flags: [
    ...CALIBRATION_FLAGS,
    [
      "--sample-offset <K>",
      "index of the first sample (default 0); give each machine its own range, then merge",
    ],
    ["--out <file>", "the profile to write (default ./<model>.profile.safetensors)"],
    [
      "--restart",
      "discard the finished samples of an earlier, interrupted run (<out>.partial/) and start over",
    ],
    ["--force", "overwrite --out if it exists"],
    ["--json", "print a JSON summary instead of a table"],
  ],
  examples: [
    "moa profile fixtures/moa-nano --lengths 256,512,1024 --samples 8 --out moa-nano.profile.safetensors",
    "moa profile ./Llama-3-8B-Instruct --data calib.jsonl --samples 8 --sample-offset 8 --out part-2.profile.safetensors",
    "moa profile merge part-1.profile.safetensors part-2.profile.safetensors --out llama3.profile.safetensors",
  ],
  options: {
    ...CALIBRATION_OPTIONS,
    "sample-offset": { type: "string" },
    out: { type: "string" },
    restart: { type: "boolean" },
    force: { type: "boolean" },
    json: { type: "boolean" },
  },
  async run(argv, io) {
    const c = this.name;
    const [modelDir] = expectPositionals(c, argv, ["model-dir"]) as [string];
    const settings = await calibrationSettings(c, argv);
    const sampleOffset = numberFlag(c, argv, "sample-offset", { integer: true, min: 0 }) ?? 0;
    const out = stringFlag(argv, "out") ?? `${basename(resolve(modelDir))}.profile.safetensors`;
    const force = booleanFlag(argv, "force");
    if (!force && (await exists(out))) {
      throw new CliError(`${out} already exists; pass --force to overwrite it or choose another --out`);
    }
    const config = await readConfigOrFail(modelDir);
    const lengths = settings.lengths ?? defaultProfileLengths(config.contextLength);
    const stateDir = `${out}.partial`;
    if (booleanFlag(argv, "restart")) await removeState(stateDir);

    const result = await userFacingAsync(async () => {
      const model = await loadModel(modelDir, {
        maxLength: Math.min(config.contextLength, Math.max(...lengths)),
        ...(settings.backend === undefined ? {} : { backend: settings.backend }),
      });
      try {
        io.stderr(
          `profiling ${modelDir} on ${model.backend.deviceName} at ${lengths.join(", ")} tokens; ` +
            `interrupt any time, the same command resumes from ${stateDir}/\n`,
        );
        const bar = new ProgressBar(io, "profile");
        try {
          return await profileModel(model, {
            lengths,
            source: settings.source,
            seed: settings.seed,
            sampleOffset,
            stateDir,
            ...(settings.samplesPerLength === undefined
              ? {}
              : { samplesPerLength: settings.samplesPerLength }),
            ...(settings.answerTokens === undefined ? {} : { answerTokens: settings.answerTokens }),
            ...(settings.chat === undefined ? {} : { chat: settings.chat }),
            ...(settings.keepLayers === undefined ? {} : { keepLayers: settings.keepLayers }),
            onProgress: profileProgressPrinter(bar, stateDir),
          });
        } finally {
          bar.finish();
        }
      } finally {
        model.dispose();
      }
    });

    const bytes = userFacing(() => writeProfileWithExtras(result.profile, result.extras));
    await writeFilesAtomically([{ path: out, data: bytes }], { force });
    await removeState(stateDir);

    const rows = result.profile.lengths.map((n) => {
      const at = result.samples.filter((s) => s.length === n);
      const judged = at.map(answerIsCorrect).filter((x) => x !== undefined);
      return {
        length: n,
        samples: at.length,
        meanLoss: at.reduce((a, s) => a + s.loss, 0) / at.length,
        retrieval: judged.length === 0 ? "–" : `${judged.filter(Boolean).length}/${judged.length}`,
        seconds: at.reduce((a, s) => a + s.seconds, 0),
      };
    });
    if (booleanFlag(argv, "json")) {
      io.stdout(
        `${JSON.stringify(
          {
            profile: out,
            model: result.profile.model,
            lengths: result.profile.lengths,
            samplesPerLength: result.profile.samplesPerLength,
            calibration: result.profile.calibration,
            resumedSamples: result.resumed,
            perLength: rows,
            samples: result.samples,
          },
          null,
          2,
        )}\n`,
      );
      return;
    }
    io.stdout(
      formatTable(
        ["length", "samples", "mean answer loss", "retrieval correct (dense)", "seconds"],
        rows.map((r) => [r.length, r.samples, fixed(r.meanLoss), r.retrieval, fixed(r.seconds, 1)]),
      ),
    );
    io.stdout(
      `\nwrote ${out}: ${result.profile.layers} layers × ${result.profile.heads} heads at ${result.profile.lengths.join(", ")} tokens, ` +
        `${result.profile.samplesPerLength} samples per length${result.resumed > 0 ? ` (${result.resumed} resumed)` : ""}\n`,
    );
  },
};
