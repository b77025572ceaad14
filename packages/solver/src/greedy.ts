import { checkStructure, checkTargets, type MipProblem } from "./problem.js";
import { buildStructure, evaluateAssignment, headRules } from "./structure.js";

export interface GreedyPlan {
  /** Rule index per (layer, query head), row-major. */
  headRules: Int32Array;
  /** `Σ_j weights[j] · loss[j]`. */
  objective: number;
  loss: number[];
  kvDensity: number[];
  /** Whether the plan meets every constraint of the problem (the greedy ignores lower bounds and loss bounds). */
  feasible: boolean;
}

/**
 * A baseline to measure the MIP against: start every head at its least-loss rule, then
 * repeatedly make the one change to a KV head's cache that gives up the least objective per
 * token saved at the lengths still over budget, until every KV-density upper bound holds
 * (or no change helps). A change lowers the KV head's cache to a smaller reachable size
 * (never larger at any length) and moves each of its query heads to the least-loss rule
 * that fits — in `per-query-head` mode narrowing one head alone would save nothing while
 * another head of the group is wider. Deterministic; ignores lower bounds, loss bounds and
 * `maxRulesPerLayer` (and says so in `feasible`).
 */
export function greedyPlan(problem: MipProblem): GreedyPlan {
  checkStructure(problem);
  checkTargets(problem.table, problem);
  const st = buildStructure(problem);
  const { R, K, m, tok, units, slotsPerUnit: spu, kvLengths } = st;
  const weights = Float64Array.from(problem.weights, (w, j) => w * st.scale[j]!);
  const cost = new Float64Array(st.slots * R);
  for (let j = 0; j < m; j++)
    for (let i = 0; i < cost.length; i++) cost[i]! += weights[j]! * st.nloss[j]![i]!;
  const assign = new Int32Array(st.slots);
  for (let s = 0; s < st.slots; s++) {
    let best = 0;
    for (let r = 1; r < R; r++) if (cost[s * R + r]! < cost[s * R + best]!) best = r;
    assign[s] = best;
  }
  const up = Float64Array.from(problem.densityUpper, (d, k) => Math.floor(d * kvLengths[k]! * units + 1e-6));
  // Target caches: every rule's own token vector (a cache size some head reaches).
  const fits = new Uint8Array(R * R);
  for (let c = 0; c < R; c++) {
    for (let r = 0; r < R; r++) {
      let ok = 1;
      for (let k = 0; k < K && ok; k++) if (tok[r * K + k]! > tok[c * K + k]!) ok = 0;
      fits[c * R + r] = ok;
    }
  }
  const caps = new Int32Array(units * K);
  const total = new Float64Array(K);
  const recap = (u: number) => {
    for (let k = 0; k < K; k++) {
      let cap = 0;
      for (let i = 0; i < spu; i++) cap = Math.max(cap, tok[assign[u * spu + i]! * K + k]!);
      total[k]! += cap - caps[u * K + k]!;
      caps[u * K + k] = cap;
    }
  };
  for (let u = 0; u < units; u++) recap(u);
  const over = new Uint8Array(K);
  const refreshOver = (): boolean => {
    let changed = false;
    for (let k = 0; k < K; k++) {
      const now = total[k]! > up[k]! ? 1 : 0;
      if (now !== over[k]) changed = true;
      over[k] = now;
    }
    return changed;
  };
  // Best change per unit: target cache `moveCap` (a rule index), under the current `over`.
  const moveCap = new Int32Array(units).fill(-1);
  const moveScore = new Float64Array(units);
  const bestMove = (u: number) => {
    moveScore[u] = Number.POSITIVE_INFINITY;
    moveCap[u] = -1;
    for (let c = 0; c < R; c++) {
      let saved = 0;
      let widens = false;
      for (let k = 0; k < K; k++) {
        const delta = caps[u * K + k]! - tok[c * K + k]!;
        if (delta < 0) widens = true;
        if (over[k]) saved += delta / kvLengths[k]!;
      }
      if (widens || !(saved > 0)) continue;
      let change = 0;
      for (let i = 0; i < spu; i++) {
        const s = u * spu + i;
        const now = assign[s]!;
        if (fits[c * R + now]) continue;
        let best = -1;
        for (let r = 0; r < R; r++) {
          if (fits[c * R + r] && (best < 0 || cost[s * R + r]! < cost[s * R + best]!)) best = r;
        }
        change += cost[s * R + best]! - cost[s * R + now]!;
      }
      const score = change / saved;
      if (score < moveScore[u]!) {
        moveScore[u] = score;
        moveCap[u] = c;
      }
    }
  };
  refreshOver();
  for (let u = 0; u < units; u++) bestMove(u);
  // Every change lowers the summed cache at some length and raises it at none: it ends.
  for (let step = 0; step < units * R * K && over.some((o) => o === 1); step++) {
    let pick = -1;
    for (let u = 0; u < units; u++)
      if (moveCap[u]! >= 0 && (pick < 0 || moveScore[u]! < moveScore[pick]!)) pick = u;
    if (pick < 0) break;
    const c = moveCap[pick]!;
    for (let i = 0; i < spu; i++) {
      const s = pick * spu + i;
      if (fits[c * R + assign[s]!]) continue;
      let best = -1;
      for (let r = 0; r < R; r++) {
        if (fits[c * R + r] && (best < 0 || cost[s * R + r]! < cost[s * R + best]!)) best = r;
      }
      assign[s] = best;
    }
    recap(pick);
    if (refreshOver()) for (let u = 0; u < units; u++) bestMove(u);
    else bestMove(pick);
  }
  // Then spend what is left: the single-head change that buys the most loss per token
  // added, while every length stays within budget.
  const wideSlot = new Int32Array(units).fill(-1);
  const wideRule = new Int32Array(units);
  const wideScore = new Float64Array(units);
  const capWith = (u: number, slot: number, rule: number, k: number) => {
    let cap = 0;
    for (let i = 0; i < spu; i++) {
      const s = u * spu + i;
      cap = Math.max(cap, tok[(s === slot ? rule : assign[s]!) * K + k]!);
    }
    return cap;
  };
  const bestWidening = (u: number) => {
    wideSlot[u] = -1;
    wideScore[u] = 0;
    for (let i = 0; i < spu; i++) {
      const s = u * spu + i;
      for (let r = 0; r < R; r++) {
        const change = cost[s * R + r]! - cost[s * R + assign[s]!]!;
        if (!(change < 0)) continue;
        let added = 0;
        let fitsBudget = true;
        for (let k = 0; k < K && fitsBudget; k++) {
          const delta = capWith(u, s, r, k) - caps[u * K + k]!;
          if (total[k]! + delta > up[k]!) fitsBudget = false;
          added += Math.max(0, delta) / kvLengths[k]!;
        }
        if (!fitsBudget) continue;
        const score = added > 0 ? change / added : Number.NEGATIVE_INFINITY;
        if (wideSlot[u]! < 0 || score < wideScore[u]!) {
          wideSlot[u] = s;
          wideRule[u] = r;
          wideScore[u] = score;
        }
      }
    }
  };
  if (!over.some((o) => o === 1)) {
    for (let u = 0; u < units; u++) bestWidening(u);
    for (let step = 0; step < units * R * spu; step++) {
      let pick = -1;
      for (let u = 0; u < units; u++)
        if (wideSlot[u]! >= 0 && (pick < 0 || wideScore[u]! < wideScore[pick]!)) pick = u;
      if (pick < 0) break;
      // Totals moved since this move was found: check it still fits.
      let fitsBudget = true;
      for (let k = 0; k < K; k++) {
        if (total[k]! + capWith(pick, wideSlot[pick]!, wideRule[pick]!, k) - caps[pick * K + k]! > up[k]!)
          fitsBudget = false;
      }
      if (fitsBudget) {
        assign[wideSlot[pick]!] = wideRule[pick]!;
        recap(pick);
      }
      bestWidening(pick);
    }
  }
  const e = evaluateAssignment(st, assign);
  const rules = headRules(st, assign);
  const loss = problem.table.loss.map((table) => {
    let sum = 0;
    for (let h = 0; h < rules.length; h++) sum += table[h * R + rules[h]!]!;
    return sum;
  });
  const kvDensity = Array.from(e.tokens, (t, k) => t / (kvLengths[k]! * units));
  let feasible = true;
  for (let k = 0; k < K; k++) {
    const lo = Math.ceil((problem.densityLower?.[k] ?? 0) * kvLengths[k]! * units - 1e-6);
    if (e.tokens[k]! > up[k]! || e.tokens[k]! < lo) feasible = false;
  }
  problem.lossUpper?.forEach((bound, j) => {
    if (bound !== undefined && loss[j]! > bound) feasible = false;
  });
  if (problem.maxRulesPerLayer !== undefined && e.distinctPerLayer > problem.maxRulesPerLayer)
    feasible = false;
  return {
    headRules: rules,
    objective: loss.reduce((acc, l, j) => acc + problem.weights[j]! * l, 0),
    loss,
    kvDensity,
    feasible,
  };
}
