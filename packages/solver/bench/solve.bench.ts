/**
 * Solve-time benchmark of @moa/solver (printed, not a test; never fails a build).
 *
 *   pnpm bench                    # all instances
 *   BENCH_ONLY=8b,70b pnpm bench  # some of: nano, tiny, 8b, 70b
 *
 * For each instance: the Pareto front at KV density 0.5 with the default options (lengths
 * 2k/4k/8k + extend 16k for the tiny and synthetic profiles, 512/1k/2k + 4k for nano, the
 * reference candidate grid), then one equal-weight solve without lower bounds against the
 * greedy baseline. Writes bench/results/solver-<date>.json (solver-<date>-2.json, … when taken).
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { candidateGrid, type ModelShape, type MoaProfile, readProfile } from "@moa/core";
import { buildRuleTable, greedyPlan, highsVersion, optimizePlans, solveMip } from "../src/index.js";
import { syntheticProfile } from "./synthetic.js";

interface Instance {
  id: string;
  name: string;
  shape: ModelShape;
  profile: () => MoaProfile;
}

const fixture = (name: string) => () =>
  readProfile(readFileSync(new URL(`../../../fixtures/${name}.profile.safetensors`, import.meta.url)), name);

const instances: Instance[] = [
  {
    id: "nano",
    name: "moa-nano (fixture, 4×4 MHA)",
    shape: { architecture: "llama", layers: 4, heads: 4, kvHeads: 4, headDim: 64 },
    profile: fixture("moa-nano"),
  },
  {
    id: "tiny",
    name: "moa-tiny (fixture, 6×6, 2 KV heads)",
    shape: { architecture: "llama", layers: 6, heads: 6, kvHeads: 2, headDim: 64 },
    profile: fixture("moa-tiny"),
  },
  {
    id: "8b",
    name: "synthetic Llama-3-8B size (32×32, 8 KV heads)",
    shape: { architecture: "llama", layers: 32, heads: 32, kvHeads: 8, headDim: 128 },
    profile: () => syntheticProfile({ layers: 32, heads: 32, lengths: [2048, 4096, 8192], seed: 1 }),
  },
  {
    id: "70b",
    name: "synthetic Llama-3-70B size (80×64, 8 KV heads)",
    shape: { architecture: "llama", layers: 80, heads: 64, kvHeads: 8, headDim: 128 },
    profile: () => syntheticProfile({ layers: 80, heads: 64, lengths: [2048, 4096, 8192], seed: 2 }),
  },
];

const only = process.env.BENCH_ONLY?.split(",");
const density = 0.5;
const rows: Record<string, unknown>[] = [];

for (const instance of instances) {
  if (only !== undefined && !only.includes(instance.id)) continue;
  const t0 = performance.now();
  const profile = instance.profile();
  const profileSeconds = (performance.now() - t0) / 1000;
  const front = await optimizePlans(profile, { shape: instance.shape, density });
  const { stats } = front;
  const anchorSeconds = stats.perSolve.slice(0, stats.lengths.length).map((s) => s.seconds);
  const gridSeconds = stats.perSolve.slice(stats.lengths.length).map((s) => s.seconds);

  // Greedy baseline against the MIP on one problem: equal normalised weights, upper bounds only.
  const lengths = stats.lengths;
  const kvLengths = stats.kvLengths;
  const table = buildRuleTable(profile, {
    rules: candidateGrid({ lengths, extend: kvLengths[kvLengths.length - 1]! }),
    lossLengths: lengths,
    kvLengths,
  });
  const R = table.rules.length;
  const weights = table.loss.map((loss) => {
    let total = 0;
    for (let h = 0; h < table.layers * table.heads; h++) {
      let worst = 0;
      for (let r = 0; r < R; r++) worst = Math.max(worst, loss[h * R + r]!);
      total += worst;
    }
    return 1 / total;
  });
  const problem = {
    table,
    kvHeads: instance.shape.kvHeads,
    weights,
    densityUpper: kvLengths.map(() => density),
  };
  const tg = performance.now();
  const greedy = greedyPlan(problem);
  const greedySeconds = (performance.now() - tg) / 1000;
  const tm = performance.now();
  const mip = await solveMip(problem);
  const mipSeconds = (performance.now() - tm) / 1000;

  const row = {
    instance: instance.name,
    shape: instance.shape,
    lengths,
    kvLengths,
    rulesInGrid: stats.rulesInGrid,
    slots: stats.slots,
    variablesBeforePruning: stats.variablesBeforePruning,
    variablesAfterPruning: stats.variablesAfterPruning,
    solves: stats.solves,
    frontPoints: front.points.length,
    anchorSecondsMean: mean(anchorSeconds),
    gridSecondsMean: mean(gridSeconds),
    secondsPerSolveMax: Math.max(...stats.perSolve.map((s) => s.seconds)),
    frontSeconds: stats.totalSeconds,
    tableSeconds: stats.tableSeconds,
    profileSeconds,
    maxGapAnchors: Math.max(...front.points.filter((p) => p.origin.kind === "anchor").map((p) => p.gap)),
    maxGap: stats.maxGap,
    perSolve: stats.perSolve,
    greedy: {
      objective: greedy.objective,
      feasible: greedy.feasible,
      seconds: greedySeconds,
      mipObjective: mip.objective,
      mipGap: mip.gap,
      mipSeconds,
      greedyExcess: (greedy.objective - mip.objective) / mip.objective,
    },
  };
  rows.push(row);
  console.error(`done: ${instance.name} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

function mean(values: number[]): number {
  return values.length === 0 ? 0 : values.reduce((a, b) => a + b, 0) / values.length;
}

const fmt = (x: number, digits = 2) => x.toFixed(digits);
const sci = (x: number) => (x === 0 ? "0" : x.toExponential(1));
const header = [
  "instance",
  "rules",
  "binaries (pruned)",
  "solves",
  "s/anchor",
  "s/grid point",
  "front s",
  "max gap anchors",
  "max gap",
  "greedy excess",
];
const table = rows.map((r) => {
  const g = r.greedy as { greedyExcess: number; feasible: boolean };
  return [
    String(r.instance),
    String(r.rulesInGrid),
    `${r.variablesBeforePruning} (${r.variablesAfterPruning})`,
    String(r.solves),
    fmt(r.anchorSecondsMean as number),
    fmt(r.gridSecondsMean as number),
    fmt(r.frontSeconds as number, 1),
    sci(r.maxGapAnchors as number),
    sci(r.maxGap as number),
    `${(100 * g.greedyExcess).toFixed(2)}%${g.feasible ? "" : " (infeasible)"}`,
  ];
});
const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i]!.length)));
const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
console.log(line(header));
console.log(`|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`);
for (const row of table) console.log(line(row));

const highsPackage = JSON.parse(
  readFileSync(new URL("../node_modules/highs/package.json", import.meta.url), "utf8"),
) as { version: string };
const date = new Date().toISOString().slice(0, 10);
const result = {
  benchmark: "@moa/solver solve time",
  date: new Date().toISOString(),
  command: `${process.env.BENCH_ONLY ? `BENCH_ONLY=${process.env.BENCH_ONLY} ` : ""}pnpm bench (node --import tsx bench/solve.bench.ts)`,
  machine: {
    cpu: cpus()[0]?.model ?? "unknown",
    cores: cpus().length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
  },
  node: process.version,
  highs: { package: highsPackage.version, solver: await highsVersion() },
  options: {
    density,
    lowerRatio: 0.9,
    paretoPoints: 2,
    relGap: 1e-4,
    proofNodes: 5000,
    gqa: "per-query-head",
  },
  results: rows,
};
mkdirSync(new URL("./results/", import.meta.url), { recursive: true });
// Earlier results of the same day are kept: the next free name solver-<date>[-N].json.
let out = new URL(`./results/solver-${date}.json`, import.meta.url);
for (let n = 2; existsSync(out); n++) out = new URL(`./results/solver-${date}-${n}.json`, import.meta.url);
writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
console.log(`\nwrote ${out.pathname}`);
