import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { type ModelShape, type MoaProfile, serializePlan } from "@moa/core";
import { type ProfileExtras, readProfileWithExtras } from "@moa/profiler";
import { type GqaMode, optimizePlans, type ParetoResult } from "@moa/solver";
import { booleanFlag, integerListFlag, numberFlag, requireString, stringFlag } from "../args.js";
import type { Command } from "../command.js";
import { CliError, usageError, userFacing, userFacingAsync } from "../errors.js";
import { type Io, readInputFile, writeFilesAtomically } from "../io.js";
import { readModelShape } from "../model-shape.js";
import { fixed, formatTable } from "../table.js";

export const optimizeCommand: Command = {
  name: "optimize",
  summary: "Turn a profile into Pareto-optimal MoA plans under a KV-density budget (HiGHS MIP).",
  usage:
    "moa optimize --profile <file> --density <d> [--model <dir> | --kv-heads N --head-dim N] [--lengths …] [--extend n] [--out dir] [--json]",
  flags: [
    ["--profile <file>", "a moa-profile (safetensors) made by `moa profile`"],
    ["--density <d>", "KV density budget in (0, 1] at every profiled length and the extend length"],
    ["--model <dir>", "read the model shape (KV heads, head dim) from <dir>/config.json"],
    [
      "--kv-heads <N>",
      "KV heads of the model (GQA); default: the profile's metadata (moa profile stores it)",
    ],
    ["--head-dim <N>", "attention head dimension; default: the profile's metadata"],
    ["--lengths <list>", "profiled lengths to optimise (default: all in the profile)"],
    ["--extend <n>", "longer length where the density is constrained too (default 2 × the longest)"],
    ["--lower-ratio <r>", "density must also be ≥ r × budget (default 0.9; 0 disables)"],
    ["--max-rules-per-layer <k>", "at most k distinct rules among the heads of a layer"],
    ["--gqa <mode>", "per-query-head (default: each KV head sized by its widest query head) or per-kv-head"],
    ["--pareto-points <k>", "epsilon values per secondary length in the Pareto grid (default 3)"],
    ["--time-limit <s>", "give up after this many seconds"],
    ["--out <dir>", "where to write plan-<i>.json and summary.json (default ./moa-plans)"],
    ["--force", "overwrite files in --out"],
    ["--json", "print the summary as JSON instead of a table"],
  ],
  examples: [
    "moa optimize --profile fixtures/moa-nano.profile.safetensors --density 0.5 --out plans",
    "moa optimize --profile llama3.profile.safetensors --model ./Llama-3-8B --density 0.25 --extend 32768",
  ],
  options: {
    profile: { type: "string" },
    density: { type: "string" },
    model: { type: "string" },
    "kv-heads": { type: "string" },
    "head-dim": { type: "string" },
    lengths: { type: "string" },
    extend: { type: "string" },
    "lower-ratio": { type: "string" },
    "max-rules-per-layer": { type: "string" },
    gqa: { type: "string" },
    "pareto-points": { type: "string" },
    "time-limit": { type: "string" },
    out: { type: "string" },
    force: { type: "boolean" },
    json: { type: "boolean" },
  },
  async run(argv, io) {
    const c = this.name;
    const profilePath = requireString(c, argv, "profile");
    const densityRaw = numberFlag(c, argv, "density", { min: 0, max: 1, exclusiveMin: true });
    if (densityRaw === undefined)
      throw usageError("moa optimize: --density is required (e.g. --density 0.5)");
    const density = densityRaw;
    const gqa = stringFlag(argv, "gqa") ?? "per-query-head";
    if (gqa !== "per-query-head" && gqa !== "per-kv-head") {
      throw usageError(
        `moa optimize: --gqa ${JSON.stringify(gqa)}: expected "per-query-head" or "per-kv-head"`,
      );
    }
    const lengths = integerListFlag(c, argv, "lengths");
    const extend = numberFlag(c, argv, "extend", { integer: true, min: 1 });
    const lowerRatio = numberFlag(c, argv, "lower-ratio", { min: 0, max: 1 });
    const maxRulesPerLayer = numberFlag(c, argv, "max-rules-per-layer", { integer: true, min: 1 });
    const paretoPoints = numberFlag(c, argv, "pareto-points", { integer: true, min: 0 });
    const timeLimitSeconds = numberFlag(c, argv, "time-limit", { min: 0, exclusiveMin: true });
    const outDir = stringFlag(argv, "out") ?? "moa-plans";

    if (!booleanFlag(argv, "force")) await refuseExistingPlans(outDir);
    const bytes = await readInputFile(profilePath);
    const { profile: parsed, extras } = userFacing(() => readProfileWithExtras(bytes, profilePath));
    const shape = await resolveShape(c, argv, parsed, extras, profilePath, io);

    io.stderr(
      `optimising ${parsed.layers}×${parsed.heads} heads (${shape.kvHeads} KV heads) of ${parsed.model || profilePath} ` +
        `at KV density ≤ ${density}, lengths ${(lengths ?? parsed.lengths).join(", ")}\n`,
    );
    const started = performance.now();
    const result: ParetoResult = await userFacingAsync(() =>
      optimizePlans(parsed, {
        shape,
        density,
        gqa: gqa as GqaMode,
        ...(lengths !== undefined ? { lengths } : {}),
        ...(extend !== undefined ? { extend } : {}),
        ...(lowerRatio !== undefined ? { lowerRatio } : {}),
        ...(maxRulesPerLayer !== undefined ? { maxRulesPerLayer } : {}),
        ...(paretoPoints !== undefined ? { paretoPoints } : {}),
        ...(timeLimitSeconds !== undefined ? { timeLimitSeconds } : {}),
        onProgress: (event) => {
          io.stderr(
            `  solve ${event.done}/${event.total} (${event.kind}) ${event.feasible ? "feasible" : "infeasible"} ` +
              `in ${event.seconds.toFixed(2)} s\n`,
          );
        },
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    const summary = summarise(result, profilePath, density, seconds);
    const files = result.points.map((point, i) => ({
      path: join(outDir, `plan-${i}.json`),
      data: serializePlan(point.plan),
    }));
    files.push({ path: join(outDir, "summary.json"), data: `${JSON.stringify(summary, null, 2)}\n` });
    await writeFilesAtomically(files, { force: booleanFlag(argv, "force") });

    if (booleanFlag(argv, "json")) {
      io.stdout(`${JSON.stringify(summary, null, 2)}\n`);
      return;
    }
    const kvLengths = result.stats.kvLengths;
    io.stdout(
      formatTable(
        [
          "plan",
          ...result.stats.lengths.map((n) => `loss@${n}`),
          ...kvLengths.map((n) => `kv@${n}`),
          "gap",
          "origin",
        ],
        result.points.map((point, i) => [
          `plan-${i}.json`,
          ...result.stats.lengths.map((n) => fixed(point.loss[String(n)] ?? Number.NaN, 5)),
          ...kvLengths.map((n) => fixed(point.kvDensity[String(n)] ?? Number.NaN, 4)),
          point.gap.toExponential(1),
          point.origin.kind === "anchor" ? `min loss@${point.origin.length}` : "epsilon",
        ]),
      ),
    );
    io.stdout(
      `\n${result.points.length} Pareto-optimal plans in ${outDir}/ (${result.stats.solves} solves, ` +
        `${result.stats.variablesAfterPruning} of ${result.stats.variablesBeforePruning} variables after pruning, ${seconds.toFixed(2)} s)\n`,
    );
  },
};

function summarise(result: ParetoResult, profilePath: string, density: number, seconds: number) {
  return {
    profile: profilePath,
    density,
    seconds,
    lengths: result.stats.lengths,
    kvLengths: result.stats.kvLengths,
    points: result.points.map((point, i) => ({
      file: `plan-${i}.json`,
      loss: point.loss,
      kvDensity: point.kvDensity,
      objective: point.objective,
      gap: point.gap,
      origin: point.origin,
      solveSeconds: point.solveSeconds,
    })),
    stats: { ...result.stats, perSolve: undefined },
  };
}

async function resolveShape(
  command: string,
  argv: Parameters<typeof stringFlag>[0],
  profile: MoaProfile,
  extras: ProfileExtras,
  profilePath: string,
  io: Io,
) {
  const modelDir = stringFlag(argv, "model");
  if (modelDir !== undefined) {
    const shape = await readModelShape(modelDir);
    if (shape.layers !== profile.layers || shape.heads !== profile.heads) {
      throw new CliError(
        `${modelDir}/config.json has ${shape.layers} layers × ${shape.heads} heads but the profile has ` +
          `${profile.layers} × ${profile.heads}: the profile was made for another model`,
      );
    }
    const storedKvHeads = extraInteger(extras, "kvHeads", profilePath);
    if (storedKvHeads !== undefined && storedKvHeads !== shape.kvHeads) {
      throw new CliError(
        `${modelDir}/config.json has ${shape.kvHeads} KV heads but ${profilePath} was profiled on a model with ` +
          `${storedKvHeads} (__metadata__.kvHeads): the profile was made for another model`,
      );
    }
    return shape;
  }
  const flagKvHeads = numberFlag(command, argv, "kv-heads", { integer: true, min: 1 });
  const flagHeadDim = numberFlag(command, argv, "head-dim", { integer: true, min: 1 });
  if (flagKvHeads !== undefined && profile.heads % flagKvHeads !== 0) {
    throw usageError(
      `moa optimize: --kv-heads ${flagKvHeads} must divide the profile's ${profile.heads} heads`,
    );
  }
  // `moa profile` records the GQA shape in the profile's metadata, so its own output needs no --model.
  const storedKvHeads = extraInteger(extras, "kvHeads", profilePath);
  const storedHeadDim = extraInteger(extras, "headDim", profilePath);
  if (storedKvHeads !== undefined && profile.heads % storedKvHeads !== 0) {
    throw new CliError(
      `${profilePath}: __metadata__.kvHeads = "${extras.kvHeads}" does not divide the profile's ${profile.heads} heads`,
    );
  }
  const kvHeads = flagKvHeads ?? storedKvHeads;
  const headDim = flagHeadDim ?? storedHeadDim;
  if (kvHeads === undefined) {
    io.stderr(
      `warning: the model's KV heads are unknown (pass --model <dir> or --kv-heads); assuming ${profile.heads} (no GQA)\n`,
    );
  } else if (flagKvHeads === undefined) {
    io.stderr(`KV heads: ${kvHeads}, head dim: ${headDim ?? 128} (from the profile's metadata)\n`);
  }
  const shape: ModelShape = {
    architecture: extras.architecture ?? "llama",
    layers: profile.layers,
    heads: profile.heads,
    kvHeads: kvHeads ?? profile.heads,
    headDim: headDim ?? 128,
  };
  return shape;
}

/** A positive integer stored as a string in the profile's metadata, or undefined when absent. */
function extraInteger(
  extras: ProfileExtras,
  key: "kvHeads" | "headDim",
  profilePath: string,
): number | undefined {
  const raw = extras[key];
  if (raw === undefined) return undefined;
  const value = Number(raw);
  if (!/^[0-9]+$/.test(raw) || !Number.isSafeInteger(value) || value < 1) {
    throw new CliError(`${profilePath}: __metadata__.${key} = "${raw}": expected a positive integer`);
  }
  return value;
}

/** Fails before any solving when --out already holds plans, so a long run never ends in a refused write. */
async function refuseExistingPlans(outDir: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(outDir);
  } catch {
    return;
  }
  const existing = names.find((name) => name === "summary.json" || /^plan-\d+\.json$/.test(name));
  if (existing !== undefined) {
    throw new CliError(
      `${join(outDir, existing)} already exists; pass --force to overwrite it or choose another --out`,
    );
  }
}
