/**
 * `evaluate()`: retrieval accuracy (LongEval lines, passkey) and perplexity of a checkpoint under several
 * attention methods at the same KV density — dense, a MoA plan, the StreamingLLM-style uniform plan and H2O —
 * at several input lengths. Every method sees the same prompts and the same text. The uniform baseline keeps the
 * sink and the widest whole-block window whose KV density is at most the target at each length (uniform.ts).
 */
import {
  assertPlanMatchesModel,
  type ElasticRule,
  MoaError,
  type ModelShape,
  type MoaPlan,
  planKvDensity,
  ruleKey,
} from "@moa/core";
import { generateBatch, type Model, type ModelConfig, loadModel, readModelConfig } from "@moa/runtime";
import { type H2oBudget, H2oModel, h2oBudget, h2oGenerate } from "./h2o.js";
import { heldoutText, negativeLogLikelihood, perplexityWindows } from "./perplexity.js";
import { type RetrievalPrompt, type RetrievalTask, retrievalPrompt } from "./prompts.js";
import { promptSeed } from "./random.js";
import { isCorrect, parseAnswer } from "./score.js";
import { uniformBaselinePlan, uniformRule } from "./uniform.js";

export const TASKS = ["lines", "passkey", "ppl"] as const;
export type EvalTask = (typeof TASKS)[number];
export const METHODS = ["dense", "plan", "uniform", "h2o"] as const;
export type EvalMethod = (typeof METHODS)[number];

export const DEFAULT_LENGTHS: readonly number[] = [512, 1024, 2048];
/**
 * Needle depths: the midpoints of five equal strata of [0, 1], a stratified sample of LongEval's uniformly drawn
 * line. A grid with both ends (0, ¼, ½, ¾, 1) spends two of five prompts where a sink or a recent window sees the
 * needle by construction, which favours the uniform-window baseline; `--depths 0,0.25,0.5,0.75,1` still runs it.
 */
export const DEFAULT_DEPTHS: readonly number[] = [0.1, 0.3, 0.5, 0.7, 0.9];
/** Prompts per (task, length): two per default depth (moa-nano: about 2–3 minutes on 2 CPU cores, all tasks and methods). */
export const DEFAULT_PROMPTS = 10;
export const DEFAULT_BATCH = 10;
/** Shortest length: the lines header and question alone take about 100 tokens. */
export const MIN_LENGTH = 256;
/** Windows of the longest length scored for perplexity; shorter lengths score the same text in more windows. */
export const DEFAULT_PPL_WINDOWS = 1;
/**
 * Tokens generated per retrieval prompt: the 5-digit answer is 5 tokens (the tokenizers split digits) plus
 * its closing `>` or `.`; generation also stops at that character. Prompts leave this much room below the length.
 */
export const ANSWER_TOKENS = 8;

/** What H2O means here (see h2o.ts). */
export const H2O_VARIANT =
  "H2O real-drop cache per (sequence, layer, KV head): budget = round(d·n) tokens, recent = ceil(budget/2), " +
  "heavy = budget − recent; scores = attention probabilities accumulated over all queries (summed over a KV " +
  "head's query heads); prefill attends densely, then keeps the last `recent` prompt tokens and the top " +
  "`heavy` by score; each decode step appends, attends, adds its probabilities, and evicts the lowest-score " +
  "token outside the recent window once the cache exceeds the budget; no sink. Perplexity: each window is " +
  "read token by token through the cache (the first `budget` tokens in one dense prefill, which is identical).";

export interface EvalOptions {
  /** Hugging Face checkpoint directory. */
  readonly modelDir: string;
  /** A MoA plan: the `plan` method, and (without `density`) the KV density of the baselines at each length. */
  readonly plan?: MoaPlan;
  /** Where the plan came from, for messages and the report. */
  readonly planSource?: string;
  /** KV density of the baselines at every length (default: the plan's KV density at each length). */
  readonly density?: number;
  readonly lengths?: readonly number[];
  /** Prompts per (retrieval task, length). */
  readonly prompts?: number;
  /** Needle depths, cycled over the prompts. */
  readonly depths?: readonly number[];
  readonly tasks?: readonly EvalTask[];
  /** Default: every method the inputs allow (plan needs a plan; uniform and h2o a plan or a density). */
  readonly methods?: readonly EvalMethod[];
  readonly seed?: number;
  /** Prompts generated together (KV cache slots). */
  readonly batch?: number;
  readonly backend?: "cpu" | "cuda";
  /** Text for perplexity (default: the held-out text shipped with the package). */
  readonly pplText?: string;
  readonly pplWindows?: number;
  /** Progress lines (no newline), for stderr. */
  readonly onProgress?: (line: string) => void;
}

export interface DepthResult {
  readonly depth: number;
  readonly correct: number;
  readonly total: number;
}

export interface TaskResult {
  readonly method: EvalMethod;
  readonly task: EvalTask;
  readonly length: number;
  /** The method's KV density at this length (cached tokens per KV head / n). */
  readonly kvDensity: number;
  /** Retrieval: share of prompts answered exactly. Perplexity: undefined. */
  readonly accuracy?: number;
  readonly correct?: number;
  readonly total?: number;
  readonly byDepth?: readonly DepthResult[];
  /** Perplexity task: exp(mean NLL) over `predicted` tokens. */
  readonly perplexity?: number;
  readonly predicted?: number;
  /** Mean prompt (or window) tokens. */
  readonly tokens: number;
  readonly seconds: number;
}

export interface SampleResult {
  readonly method: EvalMethod;
  readonly task: RetrievalTask;
  readonly length: number;
  readonly index: number;
  readonly depth: number;
  readonly promptTokens: number;
  readonly answer: string;
  readonly output: string;
  readonly parsed: string | null;
  readonly correct: boolean;
}

export interface EvalReport {
  readonly format: "moa-eval";
  readonly version: 1;
  readonly model: string;
  readonly plan: string | null;
  readonly device: string;
  readonly settings: {
    readonly lengths: readonly number[];
    readonly tasks: readonly EvalTask[];
    readonly methods: readonly EvalMethod[];
    readonly prompts: number;
    readonly depths: readonly number[];
    readonly seed: number;
    readonly batch: number;
    readonly answerTokens: number;
    readonly pplWindows: number;
    readonly pplText: string;
  };
  /** Target KV density of the baselines per length (null when only dense and plan run without one). */
  readonly density: Record<string, number> | null;
  readonly h2o: string;
  readonly results: readonly TaskResult[];
  readonly samples: readonly SampleResult[];
  readonly seconds: number;
}

function argumentError(field: string, value: unknown, reason: string): MoaError {
  return new MoaError("E_ARGUMENT", `evaluate: ${field} = ${JSON.stringify(value)}: ${reason}`, {
    source: "evaluate",
    field,
  });
}

/** The methods a run uses when none are named: all that its inputs allow. */
export function defaultMethods(hasPlan: boolean, hasDensity: boolean): EvalMethod[] {
  if (hasPlan) return [...METHODS];
  return hasDensity ? ["dense", "uniform", "h2o"] : ["dense"];
}

interface Settings {
  readonly lengths: number[];
  readonly tasks: EvalTask[];
  readonly methods: EvalMethod[];
  readonly prompts: number;
  readonly depths: number[];
  readonly seed: number;
  readonly batch: number;
  readonly pplWindows: number;
}

function checkOptions(options: EvalOptions, config: ModelConfig): Settings {
  const lengths = [...(options.lengths ?? DEFAULT_LENGTHS)];
  const tasks = [...(options.tasks ?? TASKS)];
  const methods = [
    ...(options.methods ?? defaultMethods(options.plan !== undefined, options.density !== undefined)),
  ];
  const depths = [...(options.depths ?? DEFAULT_DEPTHS)];
  const prompts = options.prompts ?? DEFAULT_PROMPTS;
  const seed = options.seed ?? 0;
  const batch = options.batch ?? DEFAULT_BATCH;
  const pplWindows = options.pplWindows ?? DEFAULT_PPL_WINDOWS;
  if (lengths.length === 0) throw argumentError("lengths", lengths, "give at least one length");
  for (const n of lengths) {
    if (!Number.isSafeInteger(n) || n < MIN_LENGTH) {
      throw argumentError("lengths", n, `every length must be an integer ≥ ${MIN_LENGTH}`);
    }
    if (n > config.contextLength) {
      throw argumentError(
        "lengths",
        n,
        `exceeds the model's context: ${config.source}: ${config.contextField} = ${config.contextLength}`,
      );
    }
  }
  if (new Set(lengths).size !== lengths.length) throw argumentError("lengths", lengths, "lengths repeat");
  lengths.sort((a, b) => a - b);
  for (const task of tasks) {
    if (!(TASKS as readonly string[]).includes(task)) {
      throw argumentError("tasks", task, `unknown task; expected ${TASKS.join(", ")}`);
    }
  }
  if (tasks.length === 0) throw argumentError("tasks", tasks, "give at least one task");
  for (const method of methods) {
    if (!(METHODS as readonly string[]).includes(method)) {
      throw argumentError("methods", method, `unknown method; expected ${METHODS.join(", ")}`);
    }
  }
  if (methods.length === 0) throw argumentError("methods", methods, "give at least one method");
  if (methods.includes("plan") && options.plan === undefined) {
    throw argumentError("methods", "plan", "the plan method needs a plan");
  }
  const baselines = methods.filter((m) => m === "uniform" || m === "h2o");
  if (baselines.length > 0 && options.plan === undefined && options.density === undefined) {
    throw argumentError(
      "methods",
      baselines.join(","),
      "equal-KV-density baselines need a plan (its KV density at each length) or a density",
    );
  }
  if (options.density !== undefined && !(options.density > 0 && options.density <= 1)) {
    throw argumentError("density", options.density, "must be in (0, 1]");
  }
  if (!Number.isSafeInteger(prompts) || prompts < 1)
    throw argumentError("prompts", prompts, "must be an integer ≥ 1");
  if (depths.length === 0 || depths.some((d) => !(d >= 0 && d <= 1))) {
    throw argumentError("depths", depths, "must be numbers in [0, 1]");
  }
  if (!Number.isSafeInteger(seed)) throw argumentError("seed", seed, "must be an integer");
  if (!Number.isSafeInteger(batch) || batch < 1)
    throw argumentError("batch", batch, "must be an integer ≥ 1");
  if (!Number.isSafeInteger(pplWindows) || pplWindows < 1) {
    throw argumentError("pplWindows", pplWindows, "must be an integer ≥ 1");
  }
  return { lengths, tasks, methods, prompts, depths, seed, batch, pplWindows };
}

/** Generates token outputs for prompts and next-token losses for windows, for one method at one length. */
interface MethodRunner {
  /** KV density of the method at this length. */
  readonly kvDensity: number;
  generate(prompts: readonly (readonly number[])[], stop: string): Promise<string[]>;
  /** Σ NLL over windows (every token after the first of each). */
  nll(windows: readonly (readonly number[])[]): number;
}

function runtimeRunner(model: Model, kvDensity: number): MethodRunner {
  return {
    kvDensity,
    async generate(prompts, stop) {
      const it = generateBatch(model, prompts, {
        maxNewTokens: ANSWER_TOKENS,
        temperature: 0,
        stopStrings: [stop],
      });
      for (;;) {
        const step = await it.next();
        if (step.done) return step.value.map((r) => r.text);
      }
    },
    nll(windows) {
      let sum = 0;
      for (const window of windows) for (const value of model.nll(window)) sum += value;
      return sum;
    },
  };
}

function h2oRunner(h2o: H2oModel, density: number, length: number): MethodRunner {
  const model = h2o.model;
  return {
    kvDensity: h2oBudget(density, length).budget / length,
    async generate(prompts, stop) {
      const budgets = prompts.map((p) => h2oBudget(density, p.length));
      return h2oGenerate(h2o, prompts, budgets, { maxNewTokens: ANSWER_TOKENS, stopString: stop }).map(
        (g) => g.text,
      );
    },
    nll(windows) {
      const vocab = model.config.vocabSize;
      let sum = 0;
      const n = windows[0]!.length;
      const budget: H2oBudget = h2oBudget(density, n);
      // The first `budget` tokens never evict anything, so one dense prefill equals reading them one by one.
      const prefix = Math.min(budget.budget, n);
      const seqs = windows.map((window) => {
        const seq = h2o.sequence(budget);
        h2o.prefill(seq, window.slice(0, prefix), (row, logits) => {
          if (row + 1 < n) sum += negativeLogLikelihood(logits, window[row + 1]!);
        });
        return seq;
      });
      for (let p = prefix; p + 1 < n; p++) {
        const logits = h2o.decode(
          seqs,
          windows.map((w) => w[p]!),
        );
        windows.forEach((w, i) => {
          sum += negativeLogLikelihood(logits.subarray(i * vocab, (i + 1) * vocab), w[p + 1]!);
        });
      }
      return sum;
    },
  };
}

function seconds(since: number): number {
  return (performance.now() - since) / 1000;
}

/**
 * Runs every (method, task, length) of the options and returns the report. Retrieval prompts are generated once
 * per (task, length) from the seed and shared by all methods.
 */
export async function evaluate(options: EvalOptions): Promise<EvalReport> {
  const started = performance.now();
  const progress = options.onProgress ?? (() => {});
  const config = await readModelConfig(options.modelDir);
  const shape: ModelShape = config.shape();
  if (options.plan !== undefined) assertPlanMatchesModel(options.plan, shape, options.planSource ?? "plan");
  const settings = checkOptions(options, config);
  const { lengths, tasks, methods } = settings;
  const maxLength = lengths[lengths.length - 1]!;

  const targetDensity = (n: number): number => {
    if (options.density !== undefined) return options.density;
    if (options.plan !== undefined) return planKvDensity(options.plan, n);
    throw argumentError("density", undefined, "needed for the baselines");
  };
  const needsDensity = methods.some((m) => m === "uniform" || m === "h2o");
  const density =
    needsDensity || options.density !== undefined
      ? Object.fromEntries(lengths.map((n) => [String(n), targetDensity(n)]))
      : null;

  // The dense model: it tokenizes, runs the dense method and carries H2O; other methods share its backend.
  const base = await loadModel(options.modelDir, {
    ...(options.backend !== undefined ? { backend: options.backend } : {}),
    slots: settings.batch,
    maxLength,
  });
  const load = (plan: MoaPlan, length: number): Promise<Model> =>
    loadModel(options.modelDir, { plan, backend: base.backend, slots: settings.batch, maxLength: length });

  const encode = (text: string): number[] => base.encode(text);
  const promptCache = new Map<string, { prompts: RetrievalPrompt[]; ids: number[][] }>();
  const promptsFor = (task: RetrievalTask, n: number) => {
    const key = `${task}@${n}`;
    let entry = promptCache.get(key);
    if (entry === undefined) {
      const prompts = Array.from({ length: settings.prompts }, (_, i) =>
        retrievalPrompt(
          task,
          {
            maxTokens: n - ANSWER_TOKENS,
            depth: settings.depths[i % settings.depths.length]!,
            seed: promptSeed(settings.seed, task, n, i),
          },
          (text) => encode(text).length,
        ),
      );
      entry = { prompts, ids: prompts.map((p) => encode(p.text)) };
      promptCache.set(key, entry);
    }
    return entry;
  };
  const pplText = options.pplText ?? heldoutText();
  const textIds = tasks.includes("ppl") ? base.encode(pplText, { addSpecialTokens: false }) : [];
  const bos = config.bosTokenId;
  const span = settings.pplWindows * (maxLength - (bos === undefined ? 0 : 1));
  const windowsFor = (n: number) => perplexityWindows(textIds, bos, n, span);
  if (tasks.includes("ppl")) for (const n of lengths) windowsFor(n);

  const results: TaskResult[] = [];
  const samples: SampleResult[] = [];

  const runLength = async (method: EvalMethod, n: number, runner: MethodRunner): Promise<void> => {
    for (const task of tasks) {
      const t0 = performance.now();
      if (task === "ppl") {
        const { windows, predicted } = windowsFor(n);
        progress(`${method} ppl @${n}: ${windows.length} window(s) of ${n} tokens`);
        const nll = runner.nll(windows);
        const perplexity = Math.exp(nll / predicted);
        results.push({
          method,
          task,
          length: n,
          kvDensity: runner.kvDensity,
          perplexity,
          predicted,
          tokens: n,
          seconds: seconds(t0),
        });
        progress(`${method} ppl @${n}: ${perplexity.toFixed(3)} (${seconds(t0).toFixed(1)} s)`);
        continue;
      }
      const { prompts, ids } = promptsFor(task, n);
      const stop = task === "lines" ? ">" : ".";
      const outputs: string[] = [];
      for (let start = 0; start < ids.length; start += settings.batch) {
        const chunk = ids.slice(start, start + settings.batch);
        outputs.push(...(await runner.generate(chunk, stop)));
        progress(`${method} ${task} @${n}: ${outputs.length}/${ids.length} prompts`);
      }
      let correct = 0;
      const byDepth = new Map<number, { correct: number; total: number }>();
      prompts.forEach((prompt, index) => {
        const output = outputs[index]!;
        const ok = isCorrect(output, prompt.answer);
        if (ok) correct++;
        const d = byDepth.get(prompt.depth) ?? { correct: 0, total: 0 };
        d.total++;
        if (ok) d.correct++;
        byDepth.set(prompt.depth, d);
        samples.push({
          method,
          task,
          length: n,
          index,
          depth: prompt.depth,
          promptTokens: prompt.tokens,
          answer: prompt.answer,
          output,
          parsed: parseAnswer(output) ?? null,
          correct: ok,
        });
      });
      const accuracy = correct / prompts.length;
      results.push({
        method,
        task,
        length: n,
        kvDensity: runner.kvDensity,
        accuracy,
        correct,
        total: prompts.length,
        byDepth: [...byDepth.entries()].sort((a, b) => a[0] - b[0]).map(([depth, d]) => ({ depth, ...d })),
        tokens: prompts.reduce((s, p) => s + p.tokens, 0) / prompts.length,
        seconds: seconds(t0),
      });
      progress(
        `${method} ${task} @${n}: accuracy ${accuracy.toFixed(3)} (${correct}/${prompts.length}, ${seconds(t0).toFixed(1)} s)`,
      );
    }
  };

  try {
    for (const method of methods) {
      if (method === "dense") {
        for (const n of lengths) await runLength(method, n, runtimeRunner(base, 1));
      } else if (method === "plan") {
        const plan = options.plan!;
        progress(`plan: loading ${options.modelDir} with ${options.planSource ?? "the plan"}`);
        const model = await load(plan, maxLength);
        try {
          for (const n of lengths) await runLength(method, n, runtimeRunner(model, planKvDensity(plan, n)));
        } finally {
          model.dispose();
        }
      } else if (method === "uniform") {
        // Each length gets the widest window whose KV density is at most the target there; lengths that get the
        // same window share one plan and one model.
        const byRule = new Map<string, { rule: ElasticRule; group: number[] }>();
        for (const n of lengths) {
          const rule = uniformRule(targetDensity(n), n);
          const entry = byRule.get(ruleKey(rule)) ?? { rule, group: [] };
          entry.group.push(n);
          byRule.set(ruleKey(rule), entry);
        }
        for (const { rule, group } of byRule.values()) {
          const plan = uniformBaselinePlan(shape, rule, group, {
            targetKvDensity: Object.fromEntries(group.map((n) => [String(n), targetDensity(n)])),
          });
          const densities = group.map(
            (n) => `${planKvDensity(plan, n).toFixed(4)} @${n} (target ${targetDensity(n).toFixed(4)})`,
          );
          progress(
            `uniform: loading ${options.modelDir} with sink + window ${rule.alpha}: KV density ${densities.join(", ")}`,
          );
          const model = await load(plan, group[group.length - 1]!);
          try {
            for (const n of group) await runLength(method, n, runtimeRunner(model, planKvDensity(plan, n)));
          } finally {
            model.dispose();
          }
        }
      } else {
        const h2o = new H2oModel(base);
        for (const n of lengths) await runLength(method, n, h2oRunner(h2o, targetDensity(n), n));
      }
    }
  } finally {
    base.dispose();
  }

  return {
    format: "moa-eval",
    version: 1,
    model: options.modelDir,
    plan: options.planSource ?? (options.plan !== undefined ? "plan" : null),
    device: base.backend.deviceName,
    settings: {
      ...settings,
      answerTokens: ANSWER_TOKENS,
      pplText: options.pplText === undefined ? "@moa/eval data/heldout.txt" : "custom",
    },
    density,
    h2o: H2O_VARIANT,
    results,
    samples,
    seconds: seconds(started),
  };
}
