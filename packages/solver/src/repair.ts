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
/** Changes examined in pairs: the best this many single changes. */
const PAIR_POOL = 300;
/** The LP's rounding is a few changes from a good plan; more steps than this rarely pay. */
const REPAIR_STEPS = 60;
const IMPROVE_STEPS = 120;

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
  // Cost and row values of every candidate, computed once: unit u's candidate c at
  // values[u][c·rows + i] (the moves below are evaluated many thousand times).
  const costs: Float64Array[] = [];
  const values: Float64Array[] = [];
  for (let u = 0; u < units; u++) {
    const list = candidates[u]!;
    const cu = new Float64Array(list.length);
    const vu = new Float64Array(list.length * rows);
    list.forEach((p, c) => {
      let z = 0;
      for (let j = 0; j < m; j++) z += bounds.weights[j]! * p.nloss[j]!;
      cu[c] = z;
      for (let i = 0; i < rows; i++)
        vu[c * rows + i] = i < K ? p.tokens[i]! / kvLengths[i]! : p.nloss[i - K]!;
    });
    costs.push(cu);
    values.push(vu);
  }
  for (let u = 0; u < units; u++) {
    const vu = values[u]!;
    const at = pick[u]! * rows;
    for (let i = 0; i < rows; i++) activity[i]! += vu[at + i]!;
  }
  const violationOf = (i: number, value: number) =>
    (Math.max(0, value - upper[i]!) + Math.max(0, lower[i]! - value)) * scale[i]!;
  let violation = 0;
  for (let i = 0; i < rows; i++) violation += violationOf(i, activity[i]!);

  const apply = (u: number, c: number) => {
    const vu = values[u]!;
    const from = pick[u]! * rows;
    const to = c * rows;
    violation = 0;
    for (let i = 0; i < rows; i++) {
      activity[i]! += vu[to + i]! - vu[from + i]!;
      violation += violationOf(i, activity[i]!);
    }
    pick[u] = c;
  };
  const violationAfter = (u: number, c: number) => {
    const vu = values[u]!;
    const from = pick[u]! * rows;
    const to = c * rows;
    let v = 0;
    for (let i = 0; i < rows; i++) v += violationOf(i, activity[i]! + vu[to + i]! - vu[from + i]!);
    return v;
  };

  interface Move {
    u: number;
    c: number;
    cost: number;
    violation: number;
  }
  /** Every single-unit change with its objective change and the violation after it. */
  const moves = (): Move[] => {
    const out: Move[] = [];
    for (let u = 0; u < units; u++) {
      const cu = costs[u]!;
      const base = cu[pick[u]!]!;
      for (let c = 0; c < cu.length; c++) {
        if (c === pick[u]) continue;
        out.push({ u, c, cost: cu[c]! - base, violation: violationAfter(u, c) });
      }
    }
    return out;
  };
  /** Violation after two changes in different units. */
  const pairViolation = (a: Move, b: Move) => {
    const va = values[a.u]!;
    const vb = values[b.u]!;
    const fa = pick[a.u]! * rows;
    const ta = a.c * rows;
    const fb = pick[b.u]! * rows;
    const tb = b.c * rows;
    let v = 0;
    for (let i = 0; i < rows; i++) {
      v += violationOf(i, activity[i]! + va[ta + i]! - va[fa + i]! + vb[tb + i]! - vb[fb + i]!);
    }
    return v;
  };

  // Repair: most violation removed per objective given up; a pair of changes when no
  // single one removes any (one row can often only be eased at another's expense).
  for (let step = 0; violation > 1e-12 && step < REPAIR_STEPS; step++) {
    const all = moves();
    let best: Move[] | undefined;
    let bestScore = Number.POSITIVE_INFINITY;
    for (const mv of all) {
      const removed = violation - mv.violation;
      if (!(removed > 1e-15)) continue;
      const score = mv.cost / removed;
      if (score < bestScore) {
        bestScore = score;
        best = [mv];
      }
    }
    if (best === undefined) {
      const pool = all.sort((x, y) => x.violation - y.violation || x.cost - y.cost).slice(0, PAIR_POOL);
      for (let i = 0; i < pool.length; i++) {
        for (let j = i + 1; j < pool.length; j++) {
          const a = pool[i]!;
          const b = pool[j]!;
          if (a.u === b.u) continue;
          const removed = violation - pairViolation(a, b);
          if (!(removed > 1e-15)) continue;
          const score = (a.cost + b.cost) / removed;
          if (score < bestScore) {
            bestScore = score;
            best = [a, b];
          }
        }
      }
    }
    if (best === undefined) return undefined;
    for (const mv of best) apply(mv.u, mv.c);
  }
  if (violation > 1e-12) return undefined;

  // Improve: the best feasible change that lowers the objective — one unit, or a pair
  // (one change that gains but breaks a row, one that pays a little to restore it).
  for (let step = 0; step < IMPROVE_STEPS; step++) {
    const all = moves();
    let best: Move[] | undefined;
    let bestGain = 1e-15;
    for (const mv of all) {
      if (-mv.cost > bestGain && mv.violation <= 1e-12) {
        bestGain = -mv.cost;
        best = [mv];
      }
    }
    if (best === undefined) {
      const gainers = all
        .filter((mv) => mv.cost < 0 && mv.violation > 1e-12)
        .sort((x, y) => x.cost - y.cost)
        .slice(0, PAIR_POOL);
      const payers = all
        .filter((mv) => mv.cost >= 0)
        .sort((x, y) => x.cost - y.cost)
        .slice(0, PAIR_POOL);
      // Both lists are sorted by cost, so once a pair gains too little every later one does.
      for (const a of gainers) {
        if (payers.length === 0 || -(a.cost + payers[0]!.cost) <= bestGain) break;
        for (const b of payers) {
          if (-(a.cost + b.cost) <= bestGain) break;
          if (a.u === b.u) continue;
          if (pairViolation(a, b) > 1e-12) continue;
          bestGain = -(a.cost + b.cost);
          best = [a, b];
        }
      }
    }
    if (best === undefined) break;
    for (const mv of best) apply(mv.u, mv.c);
  }
  return pick;
}
