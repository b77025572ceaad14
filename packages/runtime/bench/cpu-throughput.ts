/**
 * CPU throughput of the runtime on the trained fixtures: prefill and decode tokens/s, dense and with a MoA plan
 * at KV density 0.5, and KV-cache bytes at 2k and 8k tokens. Prints a table and writes
 * bench/results/cpu-throughput.json (machine, versions, command). Never fails a build: errors are reported.
 *
 *   pnpm --filter @moa/runtime bench            # prompt 1984 tokens, 64 decode steps, 3 runs
 *   node --import tsx bench/cpu-throughput.ts --prompt 1024 --decode 32 --repeat 5 --models moa-nano
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { type MoaPlan, makePlan, type ModelShape, planKvDensity } from "@moa/core";
import { loadBackend } from "@moa/kernels-cuda";
import { readModelConfig } from "../src/config.js";
import { KvCache } from "../src/kv-cache.js";
import { loadModel } from "../src/load.js";
import { argmax } from "../src/sampling.js";

const here = dirname(fileURLToPath(import.meta.url));
const fixtures = join(here, "../../../fixtures");
const { values } = parseArgs({
  options: {
    prompt: { type: "string", default: "1984" },
    decode: { type: "string", default: "64" },
    models: { type: "string", default: "moa-nano,moa-tiny" },
    repeat: { type: "string", default: "3" },
  },
});
const promptLength = Number(values.prompt);
const decodeSteps = Number(values.decode);
const models = values.models.split(",");
const repeat = Math.max(1, Number(values.repeat));

/** Every head keeps the sink plus a span of n/2 − 64 tokens: KV density exactly 0.5 at 2k and 8k. */
function halfDensityPlan(shape: ModelShape): MoaPlan {
  const rule = { alpha: -64, beta: 0.5 };
  const rules = Array.from({ length: shape.layers }, () =>
    Array.from({ length: shape.heads }, () => ({ ...rule })),
  );
  return makePlan(shape, rules, [2048, 8192], { bench: "uniform elastic rule alpha=-64 beta=0.5" });
}

/** A LongEval-style "lines" prompt (fixtures/README.md), long enough to cut `length` tokens from. */
function linesPrompt(): string {
  const words = [
    "amber",
    "basket",
    "candle",
    "dragon",
    "ember",
    "falcon",
    "garden",
    "harbor",
    "island",
    "jungle",
  ];
  let text =
    "Below is a record of lines I want you to remember. Each line begins with 'line <line index>' and contains a " +
    "'<REGISTER_CONTENT>' at the end of the line as a numerical value. For each line index, memorize its " +
    "corresponding <REGISTER_CONTENT>. At the end of the record, I will ask you to retrieve the corresponding " +
    "<REGISTER_CONTENT> of a certain line index. Now the record start:\n\n";
  for (let i = 0; i < 600; i++) {
    const key = `${words[i % 10]}-${words[(i * 7 + 3) % 10]}${i}`;
    text += `line ${key}: REGISTER_CONTENT is <${10000 + ((i * 7919) % 89999)}>\n`;
  }
  return text;
}

interface Row {
  model: string;
  mode: string;
  kvDensity: number;
  promptTokens: number;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
  cacheBytes2k: number;
  cacheBytes8k: number;
}

// Other processes on the machine slow every number down: the 1-minute load average is recorded with them.
const loadBefore = loadavg()[0]!;
const backend = loadBackend("cpu");
const rows: Row[] = [];
const errors: string[] = [];
for (const name of models) {
  const dir = join(fixtures, name);
  try {
    const config = await readModelConfig(dir);
    const plan = halfDensityPlan(config.shape());
    for (const [mode, modePlan] of [
      ["dense", undefined],
      ["MoA", plan],
    ] as const) {
      const model = await loadModel(dir, {
        backend,
        maxLength: Math.min(config.contextLength, promptLength + decodeSteps),
        ...(modePlan ? { plan: modePlan } : {}),
      });
      const ids = model.encode(linesPrompt()).slice(0, promptLength);
      if (ids.length < promptLength) throw new Error(`the bench prompt has only ${ids.length} tokens`);
      // Warm-up: thread pool, workspace allocation.
      model.logits(ids.slice(0, 64));
      // The machine may be shared: prefill is the best of `repeat` runs, decode the median step of all runs.
      let prefillSeconds = Number.POSITIVE_INFINITY;
      const steps: number[] = [];
      for (let run = 0; run < repeat; run++) {
        const slot = model.cache.allocateSlot();
        const start = performance.now();
        let [logits] = model.transformer.prefill([{ slot, tokens: ids }]);
        prefillSeconds = Math.min(prefillSeconds, (performance.now() - start) / 1000);
        for (let i = 0; i < decodeSteps; i++) {
          const step = performance.now();
          logits = model.transformer.decode(Int32Array.of(slot), [argmax(logits!)]);
          steps.push((performance.now() - step) / 1000);
        }
        model.cache.releaseSlot(slot);
      }
      steps.sort((a, b) => a - b);
      const decodeStepSeconds = steps[Math.floor(steps.length / 2)]!;
      model.dispose();

      const cacheBytes = (n: number): number => {
        const cache = new KvCache(backend, config.shape(), { maxLength: n, slots: 1, plan: modePlan });
        const bytes = cache.cacheBytes();
        cache.dispose();
        return bytes;
      };
      rows.push({
        model: name,
        mode,
        kvDensity: modePlan ? planKvDensity(modePlan, promptLength) : 1,
        promptTokens: promptLength,
        prefillTokensPerSecond: promptLength / prefillSeconds,
        decodeTokensPerSecond: 1 / decodeStepSeconds,
        cacheBytes2k: cacheBytes(2048),
        cacheBytes8k: cacheBytes(8192),
      });
    }
  } catch (error) {
    errors.push(`${name}: ${(error as Error).message}`);
  }
}

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(2)} MiB`;
const table = [
  ["model", "mode", "KV density", "prefill tok/s", "decode tok/s", "cache @2k", "cache @8k"],
  ...rows.map((r) => [
    r.model,
    r.mode,
    r.kvDensity.toFixed(3),
    r.prefillTokensPerSecond.toFixed(0),
    r.decodeTokensPerSecond.toFixed(1),
    mib(r.cacheBytes2k),
    mib(r.cacheBytes8k),
  ]),
];
const widths = table[0]!.map((_, c) => Math.max(...table.map((row) => row[c]!.length)));
console.log(
  `CPU throughput, ${backend.deviceName}: prefill of ${promptLength} tokens (best of ${repeat}), decode after it (median of ${repeat}×${decodeSteps} steps); batch 1, fp32 KV cache`,
);
for (const row of table) console.log(row.map((cell, c) => cell.padEnd(widths[c]!)).join("  "));
console.log(
  `load average (1 min) before/after: ${loadBefore.toFixed(2)} / ${loadavg()[0]!.toFixed(2)} on ${cpus().length} cores`,
);
for (const error of errors) console.log(`error: ${error}`);

const packageJson = JSON.parse(readFileSync(join(here, "../package.json"), "utf8")) as { version: string };
const results = join(here, "results");
mkdirSync(results, { recursive: true });
writeFileSync(
  join(results, "cpu-throughput.json"),
  `${JSON.stringify(
    {
      bench: "runtime cpu-throughput",
      date: new Date().toISOString(),
      command: `node --import tsx bench/cpu-throughput.ts ${process.argv.slice(2).join(" ")}`.trim(),
      machine: {
        cpu: cpus()[0]?.model ?? "unknown",
        cores: cpus().length,
        memoryBytes: totalmem(),
        loadAverageBefore: loadBefore,
        loadAverageAfter: loadavg()[0],
      },
      device: backend.deviceName,
      versions: { node: process.version, "@moa/runtime": packageJson.version },
      promptTokens: promptLength,
      decodeSteps,
      repeat,
      rows,
      errors,
    },
    null,
    2,
  )}\n`,
);
