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
 * repeatedly make the single change (one head, or one KV head's shared rule, to another
 * rule, widening no length) that gives up the least objective per token saved at the lengths
 * still over budget, until every KV-density upper bound holds or no such move is left. GQA groups pay for their widest head,
 * exactly as in the MIP. Deterministic; ignores lower bounds, loss bounds and
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
  const capOf = (u: number, k: number, slot: number, rule: number) => {
    let cap = 0;
    for (let i = 0; i < spu; i++) {
      const s = u * spu + i;
      cap = Math.max(cap, tok[(s === slot ? rule : assign[s]!) * K + k]!);
    }
    return cap;
  };
  const total = new Float64Array(K);
  const caps = new Int32Array(units * K);
  for (let u = 0; u < units; u++) {
    for (let k = 0; k < K; k++) {
      caps[u * K + k] = capOf(u, k, -1, 0);
      total[k]! += caps[u * K + k]!;
    }
  }
  // Best move per unit under the current set of lengths over budget.
  const moveSlot = new Int32Array(units);
  const moveRule = new Int32Array(units);
  const moveScore = new Float64Array(units);
  const over = new Uint8Array(K);
  const bestMove = (u: number) => {
    moveScore[u] = Number.POSITIVE_INFINITY;
    for (let i = 0; i < spu; i++) {
      const s = u * spu + i;
      for (let r = 0; r < R; r++) {
        if (r === assign[s]) continue;
        // Only moves that widen no length: the summed caps then fall strictly, so the loop ends
        // (moves trading one length for another could cycle).
        let saved = 0;
        let widens = false;
        for (let k = 0; k < K; k++) {
          const delta = caps[u * K + k]! - capOf(u, k, s, r);
          if (delta < 0) widens = true;
          if (over[k]) saved += delta / kvLengths[k]!;
        }
        if (widens || !(saved > 0)) continue;
        const score = (cost[s * R + r]! - cost[s * R + assign[s]!]!) / saved;
        if (score < moveScore[u]!) {
          moveScore[u] = score;
          moveSlot[u] = s;
          moveRule[u] = r;
        }
      }
    }
  };
  const refreshOver = (): boolean => {
    let changed = false;
    for (let k = 0; k < K; k++) {
      const now = total[k]! > up[k]! ? 1 : 0;
      if (now !== over[k]) changed = true;
      over[k] = now;
    }
    return changed;
  };
  refreshOver();
  for (let u = 0; u < units; u++) bestMove(u);
  while (over.some((o) => o === 1)) {
    let pick = -1;
    for (let u = 0; u < units; u++)
      if (moveScore[u]! < Number.POSITIVE_INFINITY && (pick < 0 || moveScore[u]! < moveScore[pick]!))
        pick = u;
    if (pick < 0) break;
    assign[moveSlot[pick]!] = moveRule[pick]!;
    for (let k = 0; k < K; k++) {
      const cap = capOf(pick, k, -1, 0);
      total[k]! += cap - caps[pick * K + k]!;
      caps[pick * K + k] = cap;
    }
    if (refreshOver()) for (let u = 0; u < units; u++) bestMove(u);
    else bestMove(pick);
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
