/**
 * The report `moa compress` writes beside its plan: what was chosen and why (validation losses of every Pareto
 * candidate at the unseen length, against the dense model and a uniform span at the same KV density), the Pareto
 * front, the chosen plan's spans, the calibration, and timings — as Markdown with linked SVGs or one HTML file
 * with the SVGs inline.
 */
import { answerIsCorrect, type CompressResult, type SampleRecord, validationWarning } from "@moa/profiler";
import { formatBytes } from "@moa/server";
import { spanHeatmap } from "../commands/plan-inspect.js";
import { fixed } from "../table.js";
import { renderBarChartSvg, renderScatterSvg } from "./charts.js";
import { formatDuration } from "./progress-bar.js";

export type ReportFormat = "md" | "html";

type Block =
  | { kind: "heading"; text: string }
  | { kind: "paragraph"; text: string }
  | { kind: "table"; header: string[]; rows: string[][] }
  | { kind: "figure"; file: string; alt: string };

export interface ReportFiles {
  /** Report text (report.md or report.html). */
  report: string;
  /** SVG files by name (linked from Markdown; also inlined in HTML). */
  svgs: Record<string, string>;
  /** summary.json content. */
  summary: unknown;
}

export function candidateFile(index: number): string {
  return `candidates/plan-${index}.json`;
}

function bytesText(bytes: number): string {
  return bytes < 1024 ? `${bytes} B` : `${formatBytes(bytes)} (${bytes} B)`;
}

function retrievalScore(records: ReadonlyArray<Pick<SampleRecord, "answer" | "expected">>): string {
  const judged = records.map(answerIsCorrect).filter((c) => c !== undefined);
  return judged.length === 0 ? "–" : `${judged.filter(Boolean).length}/${judged.length}`;
}

/** Everything `moa compress` writes besides the plans and the profile. */
export function buildCompressReport(
  result: CompressResult,
  options: { format: ReportFormat; command: string; profileFile: string },
): ReportFiles {
  const { shape, lengths, validation, candidates, chosen, stats } = result;
  const V = validation.length;
  const best = candidates[chosen]!;
  const modelName = result.profile.model;
  const svgs: Record<string, string> = {};
  const warning = validationWarning(result);

  // Pareto front: rule loss at the shortest and longest profiled length (or validation loss vs KV density when
  // only one length was profiled).
  const first = lengths[0]!;
  const last = lengths[lengths.length - 1]!;
  const twoLengths = lengths.length > 1;
  svgs["pareto.svg"] = renderScatterSvg({
    title: twoLengths
      ? `Pareto front: profile loss at ${first} vs ${last} tokens (KV density ≤ ${fixed(result.density)})`
      : `Candidates: validation loss vs KV density at ${V} tokens`,
    xLabel: twoLengths ? `summed rule loss at ${first} tokens` : `KV density at ${V} tokens`,
    yLabel: twoLengths ? `summed rule loss at ${last} tokens` : `validation loss at ${V} tokens`,
    points: candidates.map((c, i) => ({
      x: twoLengths ? c.point.loss[String(first)]! : c.kvDensity,
      y: twoLengths ? c.point.loss[String(last)]! : c.validationLoss,
      label: `${i}`,
      highlight: i === chosen,
      tooltip: `plan-${i}: validation loss ${fixed(c.validationLoss)}, KV density ${fixed(c.kvDensity)} at ${V}`,
    })),
  });
  svgs["spans.svg"] = spanHeatmap(result.plan, V, `Spans at n = ${V}`);
  svgs["validation.svg"] = renderBarChartSvg({
    title: `Validation loss at ${V} tokens (dense-model answers, ${validation.samples.length} samples)`,
    xLabel: "candidate plan (Pareto point)",
    yLabel: "mean cross-entropy (nats)",
    bars: candidates.map((c, i) => ({
      label: `${i}`,
      value: c.validationLoss,
      highlight: i === chosen,
      tooltip: `plan-${i}: ${fixed(c.validationLoss)}${c.withinBudget ? "" : " (over the byte budget)"}`,
    })),
    references: [
      { value: validation.denseLoss, label: `dense ${fixed(validation.denseLoss)}` },
      {
        value: validation.uniform.loss,
        label: `uniform span, KV ${fixed(validation.uniform.kvDensity, 3)}: ${fixed(validation.uniform.loss)}`,
      },
    ],
  });

  const budgetText =
    result.budget === undefined
      ? `KV density ≤ ${result.density} at ${stats.kvLengths.join(", ")} tokens`
      : `KV budget ${bytesText(result.budget.bytes)} for ${result.budget.batch} × ${result.budget.maxLength} tokens ` +
        `(${result.budget.bytesPerElement}-byte elements; the dense cache needs ${bytesText(result.budget.denseBytes)}) ` +
        `→ KV density ≤ ${fixed(result.density)} at ${stats.kvLengths.join(", ")} tokens`;
  const blocks: Block[] = [
    { kind: "heading", text: `MoA compression report: ${modelName}` },
    {
      kind: "paragraph",
      text:
        `Model \`${result.modelDir}\`: ${shape.architecture}, ${shape.layers} layers × ${shape.heads} query heads ` +
        `(${shape.kvHeads} KV heads), head dim ${shape.headDim}, context ${result.context}. Budget: ${budgetText}.`,
    },
    {
      kind: "paragraph",
      text:
        `Chosen: **plan.json** = candidate ${chosen} of ${candidates.length}, the lowest validation loss at ${V} tokens: ` +
        `${fixed(best.validationLoss)} (dense ${fixed(validation.denseLoss)}, uniform span at KV density ` +
        `${fixed(validation.uniform.kvDensity)}: ${fixed(validation.uniform.loss)}); KV density ${fixed(best.kvDensity)} at ${V}` +
        `${best.kvBytes === undefined ? "" : `, ${bytesText(best.kvBytes)} of KV cache at the budget's length and batch`}.`,
    },
    ...(warning === undefined ? [] : [{ kind: "paragraph" as const, text: `**Warning**: ${warning}.` }]),
    { kind: "heading", text: `Validation at ${V} tokens` },
    {
      kind: "paragraph",
      text:
        `${validation.samples.length} samples no profile saw, answered by the dense model ` +
        `(${validation.samples.map((s) => s.kind).join(", ")}; retrieval answered correctly by the dense model: ` +
        `${retrievalScore(validation.samples)}); each candidate's loss is the mean cross-entropy of those answers ` +
        "with the model running under the candidate's MoA masks.",
    },
    { kind: "figure", file: "validation.svg", alt: "validation loss per candidate" },
    {
      kind: "table",
      header: [
        "plan",
        ...lengths.map((n) => `rule loss @${n}`),
        `KV density @${V}`,
        ...(result.budget === undefined ? [] : ["KV bytes"]),
        `validation loss @${V}`,
        "",
      ],
      rows: [
        ...candidates.map((c, i) => [
          `[plan-${i}](${candidateFile(i)})`,
          ...lengths.map((n) => fixed(c.point.loss[String(n)]!, 5)),
          fixed(c.kvDensity),
          ...(c.kvBytes === undefined ? [] : [`${c.kvBytes}${c.withinBudget ? "" : " (over)"}`]),
          fixed(c.validationLoss),
          i === chosen ? "**chosen**" : "",
        ]),
        [
          "dense",
          ...lengths.map(() => "–"),
          "1.0000",
          ...(result.budget ? ["–"] : []),
          fixed(validation.denseLoss),
          "",
        ],
        [
          "uniform span",
          ...lengths.map(() => "–"),
          fixed(validation.uniform.kvDensity),
          ...(result.budget ? ["–"] : []),
          fixed(validation.uniform.loss),
          "",
        ],
      ],
    },
    { kind: "heading", text: "Pareto front" },
    {
      kind: "paragraph",
      text:
        `${candidates.length} Pareto-optimal plans from ${stats.solves} MIP solves (${stats.rulesInGrid} candidate rules, ` +
        `${stats.variablesAfterPruning} of ${stats.variablesBeforePruning} variables after pruning); ` +
        `the loss is the summed rule loss of DESIGN.md at each profiled length.`,
    },
    { kind: "figure", file: "pareto.svg", alt: "Pareto front" },
    { kind: "heading", text: `Chosen plan's spans at ${V} tokens` },
    { kind: "figure", file: "spans.svg", alt: "span heatmap of the chosen plan" },
    { kind: "heading", text: "Calibration" },
    {
      kind: "paragraph",
      text:
        `Profile \`${options.profileFile}\`${result.profileSource === undefined ? "" : ` (given: ${result.profileSource})`}: ` +
        `lengths ${lengths.join(", ")}, ${result.profile.samplesPerLength} samples per length; ${result.profile.calibration}.`,
    },
  ];
  if (result.profileSamples.length > 0) {
    blocks.push({
      kind: "table",
      header: ["length", "samples", "kinds", "mean dense answer loss", "retrieval correct (dense)"],
      rows: lengths.map((n) => {
        const at = result.profileSamples.filter((s) => s.length === n);
        const kinds = [...new Set(at.map((s) => s.kind))].join(", ");
        const mean = at.reduce((a, s) => a + s.loss, 0) / at.length;
        return [String(n), String(at.length), kinds, fixed(mean), retrievalScore(at)];
      }),
    });
  }
  blocks.push(
    { kind: "heading", text: "Time" },
    {
      kind: "paragraph",
      text:
        `profile ${formatDuration(result.seconds.profile)}` +
        `${result.profileResumed > 0 ? ` (${result.profileResumed} samples resumed)` : ""}, ` +
        `optimise ${formatDuration(result.seconds.optimize)}, validate ${formatDuration(result.seconds.validate)}, ` +
        `total ${formatDuration(result.seconds.total)}.`,
    },
    { kind: "paragraph", text: `Command: \`${options.command}\`` },
  );

  const report = options.format === "md" ? renderMarkdown(blocks) : renderHtml(blocks, svgs, modelName);
  const summary = {
    model: result.modelDir,
    shape,
    context: result.context,
    lengths,
    extend: result.extend,
    validationLength: V,
    density: result.density,
    ...(result.budget === undefined ? {} : { kvBudget: result.budget }),
    plan: "plan.json",
    chosen,
    candidates: candidates.map((c, i) => ({
      file: candidateFile(i),
      loss: c.point.loss,
      kvDensity: c.point.kvDensity,
      validationLoss: c.validationLoss,
      kvDensityAtValidation: c.kvDensity,
      ...(c.kvBytes === undefined ? {} : { kvBytes: c.kvBytes }),
      withinBudget: c.withinBudget,
      origin: c.point.origin,
      gap: c.point.gap,
    })),
    dense: { validationLoss: validation.denseLoss },
    uniform: {
      validationLoss: validation.uniform.loss,
      kvDensityAtValidation: validation.uniform.kvDensity,
      rule: validation.uniform.plan.rules[0]![0],
    },
    validationSamples: validation.samples,
    profile: {
      file: options.profileFile,
      ...(result.profileSource === undefined ? {} : { source: result.profileSource }),
      samplesPerLength: result.profile.samplesPerLength,
      calibration: result.profile.calibration,
      resumedSamples: result.profileResumed,
      samples: result.profileSamples,
    },
    solver: { ...stats, perSolve: undefined },
    seconds: result.seconds,
    ...(warning === undefined ? {} : { warning }),
  };
  return { report, svgs, summary };
}

function markdownCell(text: string): string {
  return text.replaceAll("|", "\\|");
}

function renderMarkdown(blocks: readonly Block[]): string {
  const out: string[] = [];
  blocks.forEach((block, i) => {
    switch (block.kind) {
      case "heading":
        out.push(`${i === 0 ? "#" : "##"} ${block.text}`);
        break;
      case "paragraph":
        out.push(block.text);
        break;
      case "figure":
        out.push(`![${block.alt}](${block.file})`);
        break;
      case "table":
        out.push(
          [
            `| ${block.header.map(markdownCell).join(" | ")} |`,
            `| ${block.header.map(() => "---").join(" | ")} |`,
            ...block.rows.map((row) => `| ${row.map(markdownCell).join(" | ")} |`),
          ].join("\n"),
        );
        break;
    }
  });
  return `${out.join("\n\n")}\n`;
}

function escapeHtml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** The little Markdown the blocks use (`code`, **bold**, [text](link)) as HTML. */
function inlineHtml(text: string): string {
  return escapeHtml(text)
    .replace(/`([^`]+)`/g, "<code>$1</code>")
    .replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>")
    .replace(/\[([^\]]+)\]\(([^)]+)\)/g, '<a href="$2">$1</a>');
}

function renderHtml(blocks: readonly Block[], svgs: Record<string, string>, title: string): string {
  const out: string[] = [
    "<!doctype html>",
    '<html lang="en"><head><meta charset="utf-8">',
    `<title>MoA compression report: ${escapeHtml(title)}</title>`,
    "<style>body{font-family:sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}" +
      "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}" +
      "td:first-child,th:first-child{text-align:left}figure{margin:1em 0}</style>",
    "</head><body>",
  ];
  blocks.forEach((block, i) => {
    switch (block.kind) {
      case "heading":
        out.push(i === 0 ? `<h1>${inlineHtml(block.text)}</h1>` : `<h2>${inlineHtml(block.text)}</h2>`);
        break;
      case "paragraph":
        out.push(`<p>${inlineHtml(block.text)}</p>`);
        break;
      case "figure":
        out.push(
          `<figure>${svgs[block.file]!.replace(/^<svg /, `<svg role="img" aria-label="${escapeHtml(block.alt)}" `)}</figure>`,
        );
        break;
      case "table":
        out.push(
          "<table>",
          `<tr>${block.header.map((h) => `<th>${inlineHtml(h)}</th>`).join("")}</tr>`,
          ...block.rows.map((row) => `<tr>${row.map((c) => `<td>${inlineHtml(c)}</td>`).join("")}</tr>`),
          "</table>",
        );
        break;
    }
  });
  out.push("</body></html>");
  return `${out.join("\n")}\n`;
}
