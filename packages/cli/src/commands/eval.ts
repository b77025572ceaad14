import { readFile } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import { assertPlanMatchesModel, type MoaPlan } from "@moa/core";
import {
  DEFAULT_BATCH,
  DEFAULT_DEPTHS,
  DEFAULT_LENGTHS,
  DEFAULT_PPL_WINDOWS,
  DEFAULT_PROMPTS,
  defaultMethods,
  type EvalMethod,
  type EvalReport,
  type EvalTask,
  evaluate,
  METHODS,
  reportPlots,
  TASKS,
} from "@moa/eval";
import { readModelConfig } from "@moa/runtime";
import {
  booleanFlag,
  integerListFlag,
  numberFlag,
  type ParsedArgs,
  requireString,
  stringFlag,
} from "../args.js";
import type { Command } from "../command.js";
import { CliError, usageError, userFacingAsync } from "../errors.js";
import { exists, writeFilesAtomically } from "../io.js";
import { readPlanFile } from "../plan-file.js";
import { fixed, formatTable } from "../table.js";

function listFlag<T extends string>(
  command: string,
  args: ParsedArgs,
  name: string,
  allowed: readonly T[],
): T[] | undefined {
  const raw = stringFlag(args, name);
  if (raw === undefined) return undefined;
  const items = raw.split(",").map((item) => item.trim());
  for (const item of items) {
    if (!(allowed as readonly string[]).includes(item)) {
      throw usageError(
        `moa ${command}: --${name} ${JSON.stringify(raw)}: unknown ${JSON.stringify(item)}; expected a comma-separated list of ${allowed.join(", ")}`,
      );
    }
  }
  if (new Set(items).size !== items.length)
    throw usageError(`moa ${command}: --${name} ${JSON.stringify(raw)}: repeats an item`);
  return items as T[];
}

function depthsFlag(command: string, args: ParsedArgs): number[] | undefined {
  const raw = stringFlag(args, "depths");
  if (raw === undefined) return undefined;
  return raw.split(",").map((part) => {
    const value = Number(part.trim());
    if (part.trim() === "" || !(value >= 0 && value <= 1)) {
      throw usageError(
        `moa ${command}: --depths ${JSON.stringify(raw)}: expected comma-separated numbers in [0, 1]`,
      );
    }
    return value;
  });
}

export const evalCommand: Command = {
  name: "eval",
  summary:
    "Measure retrieval accuracy (LongEval lines, passkey) and perplexity of dense, a MoA plan, and StreamingLLM/H2O at equal KV density.",
  usage:
    "moa eval --model <dir> [--plan plan.json] [--density d] [--lengths 512,1024,2048] [--prompts N] [--tasks lines,passkey,ppl] [--methods dense,plan,uniform,h2o] [--out dir] [--json]",
  flags: [
    ["--model <dir>", "Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer.json)"],
    [
      "--plan <file>",
      "a moa-plan for the model: the `plan` method, and the baselines' KV density per length",
    ],
    ["--density <d>", "KV density of the uniform and h2o baselines at every length (default: the plan's)"],
    ["--lengths <list>", "input lengths in tokens (default 512,1024,2048, those within the model's context)"],
    ["--prompts <N>", `prompts per (task, length) (default ${DEFAULT_PROMPTS})`],
    [
      "--depths <list>",
      `needle depths in [0, 1], cycled over the prompts (default ${DEFAULT_DEPTHS.join(",")})`,
    ],
    ["--tasks <list>", `any of ${TASKS.join(", ")} (default all)`],
    [
      "--methods <list>",
      `any of ${METHODS.join(", ")} (default: all the inputs allow — plan needs --plan; uniform, h2o need --plan or --density)`,
    ],
    ["--seed <S>", "seed of the prompts (default 0): same seed, same prompts"],
    ["--batch <N>", `prompts generated together (default ${DEFAULT_BATCH})`],
    ["--ppl-text <file>", "text for perplexity (default: the held-out text shipped with @moa/eval)"],
    [
      "--ppl-windows <k>",
      `windows of the longest length scored for perplexity (default ${DEFAULT_PPL_WINDOWS}; shorter lengths split the same text)`,
    ],
    ["--backend <name>", "cpu or cuda (default: cuda when a GPU is present)"],
    ["--out <dir>", "where to write results.json and one SVG plot per task (default ./moa-eval)"],
    ["--force", "overwrite files in --out"],
    ["--json", "print the results JSON instead of the table"],
  ],
  examples: [
    "moa eval --model fixtures/moa-nano --plan moa-nano-plans/plan-0.json --out moa-nano-eval",
    "moa eval --model fixtures/moa-nano --density 0.5 --methods dense,uniform,h2o --tasks passkey --prompts 40",
    "moa eval --model ./Llama-3-8B --plan plan.json --lengths 4096,8192 --backend cuda --out eval-8b",
  ],
  options: {
    model: { type: "string" },
    plan: { type: "string" },
    density: { type: "string" },
    lengths: { type: "string" },
    prompts: { type: "string" },
    depths: { type: "string" },
    tasks: { type: "string" },
    methods: { type: "string" },
    seed: { type: "string" },
    batch: { type: "string" },
    "ppl-text": { type: "string" },
    "ppl-windows": { type: "string" },
    backend: { type: "string" },
    out: { type: "string" },
    force: { type: "boolean" },
    json: { type: "boolean" },
  },
  async run(argv, io) {
    const c = this.name;
    const modelDir = requireString(c, argv, "model");
    const planPath = stringFlag(argv, "plan");
    const density = numberFlag(c, argv, "density", { min: 0, max: 1, exclusiveMin: true });
    const tasks = listFlag<EvalTask>(c, argv, "tasks", TASKS) ?? [...TASKS];
    const methods =
      listFlag<EvalMethod>(c, argv, "methods", METHODS) ??
      defaultMethods(planPath !== undefined, density !== undefined);
    if (methods.includes("plan") && planPath === undefined) {
      throw usageError(`moa ${c}: --methods plan needs --plan <file>`);
    }
    const baselines = methods.filter((m) => m === "uniform" || m === "h2o");
    if (baselines.length > 0 && planPath === undefined && density === undefined) {
      throw usageError(
        `moa ${c}: --methods ${baselines.join(",")} compare at equal KV density: pass --plan <file> or --density <d>`,
      );
    }
    const prompts = numberFlag(c, argv, "prompts", { integer: true, min: 1 }) ?? DEFAULT_PROMPTS;
    const depths = depthsFlag(c, argv) ?? [...DEFAULT_DEPTHS];
    const seed = numberFlag(c, argv, "seed", { integer: true }) ?? 0;
    const batch = numberFlag(c, argv, "batch", { integer: true, min: 1 }) ?? DEFAULT_BATCH;
    const pplWindows = numberFlag(c, argv, "ppl-windows", { integer: true, min: 1 }) ?? DEFAULT_PPL_WINDOWS;
    const backend = stringFlag(argv, "backend");
    if (backend !== undefined && backend !== "cpu" && backend !== "cuda") {
      throw usageError(`moa ${c}: --backend ${JSON.stringify(backend)}: expected "cpu" or "cuda"`);
    }
    const outDir = stringFlag(argv, "out") ?? "moa-eval";
    const force = booleanFlag(argv, "force");
    let lengths = integerListFlag(c, argv, "lengths");

    // Everything that can fail fast does, before minutes of generation.
    const config = await userFacingAsync(() => readModelConfig(modelDir));
    let plan: MoaPlan | undefined;
    if (planPath !== undefined) {
      plan = await readPlanFile(planPath);
      const loaded = plan;
      await userFacingAsync(async () => assertPlanMatchesModel(loaded, config.shape(), planPath));
    }
    if (lengths === undefined) {
      lengths = DEFAULT_LENGTHS.filter((n) => n <= config.contextLength);
      if (lengths.length === 0) lengths = [config.contextLength];
    }
    for (const n of lengths) {
      if (n > config.contextLength) {
        throw usageError(
          `moa ${c}: --lengths ${n} exceeds the model's context (${config.source}: ${config.contextField} = ${config.contextLength})`,
        );
      }
    }
    let pplText: string | undefined;
    const pplPath = stringFlag(argv, "ppl-text");
    if (pplPath !== undefined) {
      try {
        pplText = await readFile(pplPath, "utf8");
      } catch (error) {
        throw new CliError(
          `${pplPath}: cannot read file (${(error as NodeJS.ErrnoException).code ?? error})`,
        );
      }
    }
    const outputs = [join(outDir, "results.json"), ...tasks.map((task) => join(outDir, `${task}.svg`))];
    if (!force) {
      for (const path of outputs) {
        if (await exists(path)) {
          throw new CliError(`${path} already exists; pass --force to overwrite it or choose another --out`);
        }
      }
    }

    const started = performance.now();
    io.stderr(
      `evaluating ${modelDir}: ${methods.join(", ")} × ${tasks.join(", ")} at ${lengths.join(", ")} tokens, ` +
        `${prompts} prompts each${plan !== undefined ? `, plan ${planPath}` : ""}` +
        `${density !== undefined ? `, KV density ${density}` : ""}\n`,
    );
    const report = await userFacingAsync(() =>
      evaluate({
        modelDir,
        ...(plan !== undefined ? { plan, planSource: planPath! } : {}),
        ...(density !== undefined ? { density } : {}),
        lengths,
        prompts,
        depths,
        tasks,
        methods,
        seed,
        batch,
        pplWindows,
        ...(backend !== undefined ? { backend: backend as "cpu" | "cuda" } : {}),
        ...(pplText !== undefined ? { pplText } : {}),
        onProgress: (line) => {
          const elapsed = (performance.now() - started) / 1000;
          io.stderr(`[${elapsed.toFixed(0).padStart(4)} s] ${line}\n`);
        },
      }),
    );
    const plots = reportPlots(report, basename(resolve(modelDir)));
    await writeFilesAtomically(
      [
        { path: join(outDir, "results.json"), data: `${JSON.stringify(report, null, 2)}\n` },
        ...[...plots].map(([task, svg]) => ({ path: join(outDir, `${task}.svg`), data: svg })),
      ],
      { force },
    );
    if (booleanFlag(argv, "json")) {
      io.stdout(`${JSON.stringify(report, null, 2)}\n`);
      return;
    }
    io.stdout(renderTables(report));
    io.stdout(
      `\n${report.device}, ${report.seconds.toFixed(1)} s; results.json and ${[...plots.keys()].map((t) => `${t}.svg`).join(", ")} in ${outDir}/\n`,
    );
  },
};

/** The KV density of each method per length, then accuracy (retrieval) or perplexity per (task, method, length). */
export function renderTables(report: EvalReport): string {
  const { lengths, methods, tasks } = report.settings;
  const find = (method: string, task: string, n: number) =>
    report.results.find((r) => r.method === method && r.task === task && r.length === n);
  const kvRows = methods.map((method) => [
    method,
    ...lengths.map((n) => {
      const r = report.results.find((x) => x.method === method && x.length === n);
      return r === undefined ? "–" : fixed(r.kvDensity, 3);
    }),
  ]);
  const kv = formatTable(["KV density", ...lengths.map(String)], kvRows);
  const rows = tasks.flatMap((task) =>
    methods.map((method) => [
      task === "ppl" ? "ppl" : `${task} (acc)`,
      method,
      ...lengths.map((n) => {
        const r = find(method, task, n);
        if (r === undefined) return "–";
        return task === "ppl" ? fixed(r.perplexity ?? Number.NaN, 3) : fixed(r.accuracy ?? Number.NaN, 3);
      }),
    ]),
  );
  const results = formatTable(["task", "method", ...lengths.map(String)], rows);
  const prompts = report.settings.prompts;
  return `${kv}\n${results}\naccuracy: greedy exact match of the 5-digit number over ${prompts} prompts per cell; ppl: lower is better\n`;
}
