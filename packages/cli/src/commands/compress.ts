import { join, resolve } from "node:path";
import { serializePlan } from "@moa/core";
import {
  type CompressProgress,
  type CompressResult,
  compressModel,
  DEFAULT_PIN_HEADS,
  DEFAULT_VALIDATION_SAMPLES,
  DEFAULT_VALIDATION_SAMPLES_CUDA,
  readProfileWithExtras,
  removeState,
  validationWarning,
  writeProfileWithExtras,
} from "@moa/profiler";
import { loadNamedBackend } from "@moa/runtime";
import { KV_CACHE_DTYPE_BYTES, parseByteSize } from "@moa/server";
import type { GqaMode } from "@moa/solver";
import {
  booleanFlag,
  expectPositionals,
  integerListFlag,
  numberFlag,
  type ParsedArgs,
  stringFlag,
} from "../args.js";
import type { Command } from "../command.js";
import { CliError, usageError, userFacing, userFacingAsync } from "../errors.js";
import { exists, type Io, readInputFile, writeFilesAtomically } from "../io.js";
import { buildCompressReport, candidateFile, type ReportFormat } from "../report/compress-report.js";
import { formatDuration, ProgressBar, profileProgressPrinter } from "../report/progress-bar.js";
import { fixed, formatTable } from "../table.js";
import { CALIBRATION_FLAGS, CALIBRATION_OPTIONS, calibrationSettings, readConfigOrFail } from "./profile.js";

/** The command as typed, for the report (flags in a stable order). */
function commandLine(name: string, argv: ParsedArgs): string {
  const parts = [`moa ${name}`, ...argv.positionals];
  for (const [key, value] of Object.entries(argv.values)) {
    if (value === true) parts.push(`--${key}`);
    else if (typeof value === "string")
      parts.push(`--${key} ${/^[\w./:,+-]+$/.test(value) ? value : JSON.stringify(value)}`);
  }
  return parts.join(" ");
}

function progressPrinter(io: Io, stateDir: string): (event: CompressProgress) => void {
  const bar = new ProgressBar(io, "profile");
  const printProfile = profileProgressPrinter(bar, stateDir);
  let phase = "";
  const started = performance.now();
  const elapsed = () => (performance.now() - started) / 1000;
  return (event) => {
    if (event.phase !== phase) {
      bar.finish();
      phase = event.phase;
      if (event.phase === "optimize") io.stderr("optimising: Pareto-optimal plans under the KV budget\n");
      if (event.phase === "validation-samples")
        io.stderr("validating: dense-model answers at the validation lengths\n");
      if (event.phase === "probe") io.stderr("probing: each KV head of the best candidate widened alone\n");
    }
    switch (event.phase) {
      case "note":
        bar.line(`note: ${event.message}`);
        break;
      case "profile":
        printProfile(event.progress);
        break;
      case "optimize":
        bar.update(event.progress.done, event.progress.total, `solve (${event.progress.kind})`, elapsed());
        break;
      case "validation-samples":
        bar.line(`  validation sample ${event.done}/${event.total} (${formatDuration(elapsed())} elapsed)`);
        break;
      case "validation-plans":
        bar.line(`  scored plan ${event.done}/${event.total} (${formatDuration(elapsed())} elapsed)`);
        break;
      case "probe":
        bar.line(`  probe ${event.done}/${event.total} (${formatDuration(elapsed())} elapsed)`);
        break;
      case "pin":
        bar.line(
          `  re-solving with ${event.heads.map((h) => `layer ${h.layer} KV head ${h.kvHead}`).join(", ")} kept whole`,
        );
        break;
    }
  };
}

/** The report's summary with what the selection rule saw: per-sample excess, ties, the reason, probes, pins. */
function withSelection(summary: Record<string, unknown>, result: CompressResult): Record<string, unknown> {
  const candidates = (summary.candidates as Array<Record<string, unknown>>).map((c, i) => {
    const cand = result.candidates[i]!;
    return {
      ...c,
      validationLossByLength: cand.validationLossByLength,
      excess: cand.excess,
      ...(cand.pinned === undefined ? {} : { pinned: cand.pinned }),
      score: result.selection.score[i],
      regret: result.selection.regret[i],
    };
  });
  return {
    ...summary,
    candidates,
    validationLengths: result.validation.lengths,
    validationSource: result.validation.source,
    denseValidationLossByLength: result.validation.denseLossByLength,
    selection: {
      chosen: result.selection.chosen,
      lowest: result.selection.lowest,
      tied: result.selection.tied,
      reason: result.selection.reason,
    },
    probes: result.probes,
  };
}

export const compressCommand: Command = {
  name: "compress",
  summary:
    "Compress a checkpoint with MoA: calibrate, profile, Pareto-optimal plans, validate at an unseen longer length, pick the best, report.",
  usage:
    "moa compress <model-dir> (--density <d> | --kv-budget <bytes> [--max-length N] [--batch N]) [--out dir] [--report md|html] [calibration flags] [--json]",
  flags: [
    ["--density <d>", "KV density budget in (0, 1) at every profiled length and the extend length"],
    [
      "--kv-budget <bytes>",
      "or a KV cache budget (e.g. 6GiB), turned into the density for --max-length and --batch",
    ],
    ["--max-length <N>", "sequence length the KV budget must hold (default: the model's context)"],
    ["--batch <N>", "sequences the KV budget must hold at once (default 1)"],
    [
      "--kv-dtype <dtype>",
      "f32 or bf16: the KV cache the budget is for (default: this machine's backend's, CPU f32, CUDA bf16)",
    ],
    ...CALIBRATION_FLAGS,
    [
      "--profile <file>",
      "use this moa-profile of the model instead of profiling (e.g. from `moa profile merge`)",
    ],
    [
      "--validation-length <N>",
      "unseen length to validate at (default 2 × the longest profiled, at most the context)",
    ],
    [
      "--validation-lengths <list>",
      "every length to validate at (default the validation length and the longest profiled length below it)",
    ],
    [
      "--validation-samples <N>",
      `validation samples per validation length (default ${DEFAULT_VALIDATION_SAMPLES} on the CPU, ${DEFAULT_VALIDATION_SAMPLES_CUDA} on CUDA; built in: lines and passkey, needles mid-context)`,
    ],
    [
      "--pin-heads <k>",
      `probe each KV head of the best candidate, re-solve with the k most useful kept whole (default ${DEFAULT_PIN_HEADS}; 0: off)`,
    ],
    [
      "--extend <n>",
      "longer length where the density is constrained too (default max(2 × longest, validation/budget length))",
    ],
    ["--lower-ratio <r>", "KV density must also be ≥ r × budget (default 0.9; 0 disables)"],
    ["--pareto-points <k>", "epsilon values per secondary length in the Pareto grid (default 3)"],
    ["--gqa <mode>", "per-query-head (default) or per-kv-head"],
    ["--max-rules-per-layer <k>", "at most k distinct rules among the heads of a layer"],
    ["--time-limit <s>", "give up the optimisation after this many seconds"],
    [
      "--out <dir>",
      "where to write plan.json, report, SVGs, candidates/, profile.safetensors (default ./<model>-moa)",
    ],
    ["--report <format>", "md (default: report.md with linked SVGs) or html (one file, SVGs inline)"],
    ["--restart", "discard the finished samples of an interrupted profiling run (<out>/profile.partial/)"],
    ["--force", "overwrite files in --out"],
    ["--json", "print the summary as JSON instead of a table"],
  ],
  examples: [
    "moa compress fixtures/moa-nano --density 0.5 --samples 4 --validation-samples 2 --out moa-nano-moa",
    "moa compress ./Llama-3-8B-Instruct --kv-budget 6GiB --max-length 8192 --batch 8 --report html",
  ],
  options: {
    density: { type: "string" },
    "kv-budget": { type: "string" },
    "max-length": { type: "string" },
    batch: { type: "string" },
    "kv-dtype": { type: "string" },
    ...CALIBRATION_OPTIONS,
    profile: { type: "string" },
    "validation-length": { type: "string" },
    "validation-samples": { type: "string" },
    "validation-lengths": { type: "string" },
    "pin-heads": { type: "string" },
    extend: { type: "string" },
    "lower-ratio": { type: "string" },
    "pareto-points": { type: "string" },
    gqa: { type: "string" },
    "max-rules-per-layer": { type: "string" },
    "time-limit": { type: "string" },
    out: { type: "string" },
    report: { type: "string" },
    restart: { type: "boolean" },
    force: { type: "boolean" },
    json: { type: "boolean" },
  },
  async run(argv, io) {
    const c = this.name;
    const [modelDir] = expectPositionals(c, argv, ["model-dir"]) as [string];
    const density = numberFlag(c, argv, "density", { min: 0, max: 1, exclusiveMin: true });
    const budgetText = stringFlag(argv, "kv-budget");
    if ((density === undefined) === (budgetText === undefined)) {
      throw usageError(`moa ${c}: give --density <d> or --kv-budget <bytes> (one of them)`);
    }
    const budgetFlags = ["max-length", "batch", "kv-dtype"].filter(
      (name) => stringFlag(argv, name) !== undefined,
    );
    if (budgetText === undefined && budgetFlags.length > 0) {
      throw usageError(`moa ${c}: --${budgetFlags[0]} sizes a --kv-budget; pass one`);
    }
    const kvDtype = stringFlag(argv, "kv-dtype");
    if (kvDtype !== undefined && kvDtype !== "f32" && kvDtype !== "bf16") {
      throw usageError(`moa ${c}: --kv-dtype ${JSON.stringify(kvDtype)}: expected f32 or bf16`);
    }
    const format = stringFlag(argv, "report") ?? "md";
    if (format !== "md" && format !== "html") {
      throw usageError(`moa ${c}: --report ${JSON.stringify(format)}: expected md or html`);
    }
    const gqa = stringFlag(argv, "gqa");
    if (gqa !== undefined && gqa !== "per-query-head" && gqa !== "per-kv-head") {
      throw usageError(`moa ${c}: --gqa ${JSON.stringify(gqa)}: expected "per-query-head" or "per-kv-head"`);
    }
    const settings = await calibrationSettings(c, argv);
    const validationLength = numberFlag(c, argv, "validation-length", { integer: true, min: 1 });
    const validationSamples = numberFlag(c, argv, "validation-samples", { integer: true, min: 1 });
    const validationLengths = integerListFlag(c, argv, "validation-lengths");
    const pinHeads = numberFlag(c, argv, "pin-heads", { integer: true, min: 0 });
    const extend = numberFlag(c, argv, "extend", { integer: true, min: 1 });
    const lowerRatio = numberFlag(c, argv, "lower-ratio", { min: 0, max: 1 });
    const paretoPoints = numberFlag(c, argv, "pareto-points", { integer: true, min: 0 });
    const maxRulesPerLayer = numberFlag(c, argv, "max-rules-per-layer", { integer: true, min: 1 });
    const timeLimitSeconds = numberFlag(c, argv, "time-limit", { min: 0, exclusiveMin: true });
    const force = booleanFlag(argv, "force");

    const config = await readConfigOrFail(modelDir);
    const outDir = stringFlag(argv, "out") ?? `${resolve(modelDir).split(/[\\/]/).pop()}-moa`;
    const profilePath = stringFlag(argv, "profile");
    const profileFile = profilePath ?? join(outDir, "profile.safetensors");
    const reportFile = format === "md" ? "report.md" : "report.html";
    if (!force) {
      const outputs = [
        "plan.json",
        reportFile,
        "summary.json",
        "candidates",
        "pareto.svg",
        "spans.svg",
        "validation.svg",
      ];
      for (const name of [...outputs, ...(profilePath ? [] : ["profile.safetensors"])]) {
        const path = join(outDir, name);
        if (await exists(path)) {
          throw new CliError(`${path} already exists; pass --force to overwrite it or choose another --out`);
        }
      }
    }
    let kvBudget: Parameters<typeof compressModel>[1]["kvBudget"];
    if (budgetText !== undefined) {
      const bytes = userFacing(() => parseByteSize(budgetText, "--kv-budget"));
      const maxLength =
        numberFlag(c, argv, "max-length", { integer: true, min: 1, max: config.contextLength }) ??
        config.contextLength;
      const batch = numberFlag(c, argv, "batch", { integer: true, min: 1 }) ?? 1;
      // The budget is bytes of the cache `moa serve` would allocate: its element size is the backend's.
      const dtype =
        (kvDtype as "f32" | "bf16" | undefined) ??
        userFacing(() => loadNamedBackend(settings.backend).kvCacheDtype);
      kvBudget = { bytes, maxLength, batch, bytesPerElement: KV_CACHE_DTYPE_BYTES[dtype] };
    }
    let given: Parameters<typeof compressModel>[1]["profile"];
    if (profilePath !== undefined) {
      const bytes = await readInputFile(profilePath);
      given = { ...userFacing(() => readProfileWithExtras(bytes, profilePath)), source: profilePath };
    }
    const stateDir = join(outDir, "profile.partial");
    if (booleanFlag(argv, "restart")) await removeState(stateDir);

    const target = density !== undefined ? `KV density ≤ ${density}` : `a KV budget of ${budgetText}`;
    io.stderr(
      `compressing ${modelDir} (context ${config.contextLength}) to ${target}; ` +
        (profilePath === undefined
          ? `interrupt any time, the same command resumes the profiling from ${stateDir}/\n`
          : `using the profile ${profilePath}\n`),
    );
    const result: CompressResult = await userFacingAsync(() =>
      compressModel(modelDir, {
        ...(density === undefined ? {} : { density }),
        ...(kvBudget === undefined ? {} : { kvBudget }),
        ...(settings.lengths === undefined ? {} : { lengths: settings.lengths }),
        ...(settings.samplesPerLength === undefined ? {} : { samplesPerLength: settings.samplesPerLength }),
        ...(settings.answerTokens === undefined ? {} : { answerTokens: settings.answerTokens }),
        ...(settings.chat === undefined ? {} : { chat: settings.chat }),
        ...(settings.backend === undefined ? {} : { backend: settings.backend }),
        ...(settings.keepLayers === undefined ? {} : { keepLayers: settings.keepLayers }),
        ...(validationLength === undefined ? {} : { validationLength }),
        ...(validationSamples === undefined ? {} : { validationSamples }),
        ...(validationLengths === undefined ? {} : { validationLengths }),
        ...(pinHeads === undefined ? {} : { pinHeads }),
        ...(extend === undefined ? {} : { extend }),
        ...(lowerRatio === undefined ? {} : { lowerRatio }),
        ...(paretoPoints === undefined ? {} : { paretoPoints }),
        ...(gqa === undefined ? {} : { gqa: gqa as GqaMode }),
        ...(maxRulesPerLayer === undefined ? {} : { maxRulesPerLayer }),
        ...(timeLimitSeconds === undefined ? {} : { timeLimitSeconds }),
        ...(given === undefined ? { stateDir } : { profile: given }),
        seed: settings.seed,
        source: settings.source,
        onProgress: progressPrinter(io, stateDir),
      }),
    );

    const report = buildCompressReport(result, {
      format: format as ReportFormat,
      command: commandLine(c, argv),
      profileFile: profilePath ?? "profile.safetensors",
    });
    const summary = withSelection(report.summary as Record<string, unknown>, result);
    const files: Array<{ path: string; data: string | Uint8Array }> = [
      { path: join(outDir, "plan.json"), data: serializePlan(result.plan) },
      ...result.candidates.map((candidate, i) => ({
        path: join(outDir, candidateFile(i)),
        data: serializePlan(candidate.point.plan),
      })),
      { path: join(outDir, reportFile), data: report.report },
      ...(format === "md"
        ? Object.entries(report.svgs).map(([name, svg]) => ({ path: join(outDir, name), data: svg }))
        : []),
      { path: join(outDir, "summary.json"), data: `${JSON.stringify(summary, null, 2)}\n` },
    ];
    if (profilePath === undefined) {
      files.push({
        path: profileFile,
        data: userFacing(() => writeProfileWithExtras(result.profile, result.profileExtras)),
      });
    }
    await writeFilesAtomically(files, { force });
    if (profilePath === undefined) await removeState(stateDir);

    const warning = validationWarning(result);
    if (warning !== undefined) io.stderr(`warning: ${warning}\n`);
    if (booleanFlag(argv, "json")) {
      io.stdout(`${JSON.stringify(summary, null, 2)}\n`);
      return;
    }
    const V = result.validation.length;
    const VL = result.validation.lengths;
    const origin = (cand: CompressResult["candidates"][number]) =>
      cand.pinned !== undefined
        ? `pinned ${cand.pinned.map((h) => `L${h.layer}/kv${h.kvHead}`).join(" ")}`
        : cand.point.origin.kind === "anchor"
          ? `min loss@${cand.point.origin.length}`
          : "epsilon";
    io.stdout(
      formatTable(
        [
          "plan",
          ...result.lengths.map((n) => `loss@${n}`),
          `kv@${V}`,
          ...(result.budget === undefined ? [] : ["KV bytes"]),
          ...VL.map((n) => `val@${n}`),
          "val loss",
          "origin",
          "",
        ],
        [
          ...result.candidates.map((cand, i) => [
            candidateFile(i),
            ...result.lengths.map((n) => fixed(cand.point.loss[String(n)]!, 5)),
            fixed(cand.kvDensity),
            ...(cand.kvBytes === undefined ? [] : [`${cand.kvBytes}${cand.withinBudget ? "" : " over"}`]),
            ...VL.map((n) => fixed(cand.validationLossByLength[String(n)]!)),
            fixed(cand.validationLoss),
            origin(cand),
            i === result.chosen ? "chosen → plan.json" : result.selection.tied.includes(i) ? "tied" : "",
          ]),
          [
            "dense",
            ...result.lengths.map(() => "–"),
            "1.0000",
            ...(result.budget ? ["–"] : []),
            ...VL.map((n) => fixed(result.validation.denseLossByLength[String(n)]!)),
            fixed(result.validation.denseLoss),
            "",
            "",
          ],
          [
            "uniform span",
            ...result.lengths.map(() => "–"),
            fixed(result.validation.uniform.kvDensity),
            ...(result.budget ? ["–"] : []),
            ...VL.map(() => "–"),
            fixed(result.validation.uniform.loss),
            "",
            "",
          ],
        ],
      ),
    );
    if (result.probes !== null) {
      const useful = result.probes.heads.filter((h) => h.gain > 0).sort((a, b) => b.gain - a.gain);
      io.stdout(
        `\nprobes (candidate ${result.probes.base} with one KV head widened to the whole context, ${result.probes.heads.length} heads): ` +
          (useful.length === 0
            ? "no head recovers validation loss"
            : useful
                .slice(0, 4)
                .map((h) => `L${h.layer}/kv${h.kvHead} −${h.gain.toFixed(4)}`)
                .join(", ")) +
          "\n",
      );
    }
    io.stdout(`selection: candidate ${result.chosen}: ${result.selection.reason}\n`);
    io.stdout(
      `\nwrote ${join(outDir, "plan.json")} (candidate ${result.chosen} of ${result.candidates.length}, KV density ` +
        `${fixed(result.candidates[result.chosen]!.kvDensity)} at ${V} tokens) and ${join(outDir, reportFile)} ` +
        `in ${formatDuration(result.seconds.total)}\n`,
    );
  },
};
