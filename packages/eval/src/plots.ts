/** The plots of an evaluation report: one SVG per task, a line per method over the lengths. */
import type { EvalReport, EvalTask } from "./evaluate.js";
import { renderLinePlot } from "./svg-plot.js";

/** The method's KV density over the lengths, e.g. "0.50" or "0.53–0.63". */
function kvRange(report: EvalReport, method: string): string {
  const values = report.results.filter((r) => r.method === method).map((r) => r.kvDensity);
  const lo = Math.min(...values).toFixed(2);
  const hi = Math.max(...values).toFixed(2);
  return lo === hi ? lo : `${lo}–${hi}`;
}

/** `{ task → SVG }` for every task the report holds: accuracy vs length, or perplexity vs length. */
export function reportPlots(report: EvalReport, modelName: string): Map<EvalTask, string> {
  const plots = new Map<EvalTask, string>();
  const { lengths, methods, tasks } = report.settings;
  for (const task of tasks) {
    const ppl = task === "ppl";
    const series = methods.map((method) => ({
      name: method,
      label: `${method} (KV ${kvRange(report, method)})`,
      values: lengths.map((n) => {
        const r = report.results.find((x) => x.method === method && x.task === task && x.length === n);
        return (ppl ? r?.perplexity : r?.accuracy) ?? Number.NaN;
      }),
    }));
    plots.set(
      task,
      renderLinePlot({
        title: ppl ? `perplexity vs length — ${modelName}` : `${task}: accuracy vs length — ${modelName}`,
        xLabel: "input length (tokens)",
        yLabel: ppl ? "perplexity (lower is better)" : "accuracy (exact match)",
        xs: lengths,
        series,
        ...(ppl ? {} : { yRange: [0, 1] as const }),
      }),
    );
  }
  return plots;
}
