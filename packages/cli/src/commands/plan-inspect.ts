import {
  computeDensity,
  kvHeadTokens,
  type MoaPlan,
  planComputeDensity,
  planKvDensity,
  spanAt,
} from "@moa/core";
import { booleanFlag, expectPositionals, numberFlag, stringFlag } from "../args.js";
import type { Command } from "../command.js";
import { writeFilesAtomically } from "../io.js";
import { readPlanFile } from "../plan-file.js";
import { renderHeatmapSvg } from "../svg-heatmap.js";
import { fixed, formatTable } from "../table.js";

export interface LayerSummary {
  layer: number;
  spanMin: number;
  spanMean: number;
  spanMax: number;
  computeDensity: number;
  kvDensity: number;
}

/** Per-layer spans and densities of a plan at one length (DESIGN.md: Density, KV density). */
export function summarisePlan(
  plan: MoaPlan,
  n: number,
): { layers: LayerSummary[]; computeDensity: number; kvDensity: number } {
  const geometry = { blockSize: plan.blockSize, sinkTokens: plan.sinkTokens };
  const layers = plan.rules.map((rules, layer) => {
    const spans = rules.map((rule) => spanAt(rule, n));
    let kv = 0;
    for (let g = 0; g < plan.model.kvHeads; g++) kv += kvHeadTokens(plan, layer, g, n) / n;
    return {
      layer,
      spanMin: Math.min(...spans),
      spanMean: spans.reduce((a, b) => a + b, 0) / spans.length,
      spanMax: Math.max(...spans),
      computeDensity: rules.reduce((a, rule) => a + computeDensity(rule, n, geometry), 0) / rules.length,
      kvDensity: kv / plan.model.kvHeads,
    };
  });
  return { layers, computeDensity: planComputeDensity(plan, n), kvDensity: planKvDensity(plan, n) };
}

export function spanHeatmap(plan: MoaPlan, n: number, title: string): string {
  return renderHeatmapSvg({
    title,
    rowLabel: "layer",
    colLabel: "query head",
    values: plan.rules.map((rules) => rules.map((rule) => spanAt(rule, n) / n)),
    tooltip: (layer, head) => {
      const rule = plan.rules[layer]![head]!;
      return `layer ${layer} head ${head}: span ${Math.round(spanAt(rule, n))} of ${n} (alpha ${rule.alpha}, beta ${rule.beta})`;
    },
    legend: `span / n at n = ${n}`,
  });
}

function defaultLength(plan: MoaPlan): number {
  const lengths = Object.keys(plan.density).map(Number).filter(Number.isFinite);
  return lengths.length > 0 ? Math.max(...lengths) : 8192;
}

export const planInspectCommand: Command = {
  name: "plan inspect",
  summary: "Print a plan's per-layer spans and densities at a length, and optionally draw its span heatmap.",
  usage: "moa plan inspect <plan.json> [--length n] [--svg out.svg] [--json] [--force]",
  flags: [
    ["--length <n>", "input length to evaluate spans at (default: the largest length in the plan's density)"],
    ["--svg <file>", "write an SVG heatmap of span/n (layers × heads)"],
    ["--json", "print machine-readable JSON instead of a table"],
    ["--force", "overwrite the SVG file if it exists"],
  ],
  examples: [
    "moa plan inspect plans/plan-0.json --length 4096",
    "moa plan inspect plans/plan-0.json --length 8192 --svg spans.svg",
  ],
  options: {
    length: { type: "string" },
    svg: { type: "string" },
    json: { type: "boolean" },
    force: { type: "boolean" },
  },
  async run(argv, io) {
    const [planPath] = expectPositionals(this.name, argv, ["plan.json"]);
    const plan = await readPlanFile(planPath!);
    const n = numberFlag(this.name, argv, "length", { integer: true, min: 1 }) ?? defaultLength(plan);
    const summary = summarisePlan(plan, n);
    const svgPath = stringFlag(argv, "svg");
    if (svgPath !== undefined) {
      const svg = spanHeatmap(
        plan,
        n,
        `MoA spans at n = ${n} (${plan.model.architecture}, ${plan.model.layers}×${plan.model.heads})`,
      );
      await writeFilesAtomically([{ path: svgPath, data: svg }], { force: booleanFlag(argv, "force") });
    }
    if (booleanFlag(argv, "json")) {
      io.stdout(`${JSON.stringify({ length: n, model: plan.model, ...summary }, null, 2)}\n`);
      return;
    }
    const m = plan.model;
    io.stdout(
      `${planPath}: ${m.architecture}, ${m.layers} layers, ${m.heads} query / ${m.kvHeads} KV heads, head dim ${m.headDim}; at n = ${n}\n\n`,
    );
    io.stdout(
      formatTable(
        ["layer", "span min", "span mean", "span max", "compute density", "KV density"],
        summary.layers.map((l) => [
          l.layer,
          Math.round(l.spanMin),
          Math.round(l.spanMean),
          Math.round(l.spanMax),
          fixed(l.computeDensity),
          fixed(l.kvDensity),
        ]),
      ),
    );
    io.stdout(
      `\nplan: compute density ${fixed(summary.computeDensity)}, KV density ${fixed(summary.kvDensity)}\n`,
    );
    if (svgPath !== undefined) io.stderr(`wrote ${svgPath}\n`);
  },
};
