import type { SideBounds } from "./compact.js";
import type { Pattern } from "./master.js";
import type { Structure } from "./structure.js";

/**
 * A primal heuristic on unit patterns: from a start (one candidate per unit, e.g. the LP
 * rounded), first restore feasibility by the single-unit changes that remove the most
 * violation per objective given up, then take every single-unit change that lowers the
 * objective and keeps the plan feasible, best first, until none is left. The LP optimum
 * has only a handful of fractional units, so its rounding is usually a few changes away
 * from a plan within the gap — found here in milliseconds instead of a MIP.
 * Returns the chosen candidate index per unit, or undefined when feasibility was not reached.
 */
export function repairPatterns(
  st: Structure,
  candidates: readonly (readonly Pattern[])[],
  start: Int32Array,
  bounds: SideBounds,
): Int32Array | undefined {
  const { K, m, units, kvLengths } = st;
  const pick = Int32Array.from(start);
  const rows = K + m;
  const activity = new Float64Array(rows);
  const lower = new Float64Array(rows);
  const upper = new Float64Array(rows);
  const scale = new Float64Array(rows);
  for (let k = 0; k < K; k++) {
    lower[k] = bounds.kvLower[k]!;
    upper[k] = bounds.kvUpper[k]!;
    scale[k] = 1 / units;
  }
  for (let j = 0; j < m; j++) {
    lower[K + j] = Number.NEGATIVE_INFINITY;
    upper[K + j] = bounds.lossUpper[j]!;
    scale[K + j] = Number.isFinite(upper[K + j]!) ? 1 / Math.max(Math.abs(upper[K + j]!), 1e-12) : 0;
  }
  const rowValue = (p: Pattern, i: number) => (i < K ? p.tokens[i]! / kvLengths[i]! : p.nloss[i - K]!);
  const cost = (p: Pattern) => {
    let c = 0;
    for (let j = 0; j < m; j++) c += bounds.weights[j]! * p.nloss[j]!;
    return c;
  };
  for (let u = 0; u < units; u++) {
    const p = candidates[u]![pick[u]!]!;
    for (let i = 0; i < rows; i++) activity[i]! += rowValue(p, i);
  }
  const violationOf = (i: number, value: number) =>
    (Math.max(0, value - upper[i]!) + Math.max(0, lower[i]! - value)) * scale[i]!;
  let violation = 0;
  for (let i = 0; i < rows; i++) violation += violationOf(i, activity[i]!);

  const apply = (u: number, c: number) => {
    const from = candidates[u]![pick[u]!]!;
    const to = candidates[u]![c]!;
    violation = 0;
    for (let i = 0; i < rows; i++) {
      activity[i]! += rowValue(to, i) - rowValue(from, i);
      violation += violationOf(i, activity[i]!);
    }
    pick[u] = c;
  };
  const violationAfter = (from: Pattern, to: Pattern) => {
    let v = 0;
    for (let i = 0; i < rows; i++) v += violationOf(i, activity[i]! + rowValue(to, i) - rowValue(from, i));
    return v;
  };

  // Repair: most violation removed per objective given up.
  for (let step = 0; violation > 1e-12 && step < 4 * units + 100; step++) {
    let bestU = -1;
    let bestC = -1;
    let bestScore = Number.POSITIVE_INFINITY;
    for (let u = 0; u < units; u++) {
      const list = candidates[u]!;
      const from = list[pick[u]!]!;
      const base = cost(from);
      for (let c = 0; c < list.length; c++) {
        if (c === pick[u]) continue;
        const removed = violation - violationAfter(from, list[c]!);
        if (!(removed > 1e-15)) continue;
        const score = (cost(list[c]!) - base) / removed;
        if (score < bestScore) {
          bestScore = score;
          bestU = u;
          bestC = c;
        }
      }
    }
    if (bestU < 0) return undefined;
    apply(bestU, bestC);
  }
  if (violation > 1e-12) return undefined;

  // Improve: best feasible single-unit change, while one lowers the objective.
  for (let step = 0; step < 10 * units + 100; step++) {
    let bestU = -1;
    let bestC = -1;
    let bestGain = 1e-15;
    for (let u = 0; u < units; u++) {
      const list = candidates[u]!;
      const from = list[pick[u]!]!;
      const base = cost(from);
      for (let c = 0; c < list.length; c++) {
        if (c === pick[u]) continue;
        const gain = base - cost(list[c]!);
        if (gain <= bestGain) continue;
        if (violationAfter(from, list[c]!) > 1e-12) continue;
        bestGain = gain;
        bestU = u;
        bestC = c;
      }
    }
    if (bestU < 0) break;
    apply(bestU, bestC);
  }
  return pick;
}
