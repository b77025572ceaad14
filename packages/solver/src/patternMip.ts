import type { Highs } from "highs";
import type { CompactResult, SideBounds } from "./compact.js";
import type { Pattern } from "./master.js";
import type { Structure } from "./structure.js";

/**
 * The MIP over explicit unit patterns: one binary per pattern, one pattern per unit, the
 * KV and loss rows, and (with `maxRulesPerLayer`) a binary per (layer, rule) that every
 * pattern using the rule switches on. Its LP relaxation is the Dantzig–Wolfe bound, far
 * tighter than the compact model's, so HiGHS closes the gap with little branching. Used
 * on the master's columns (a heuristic) and on the enumerated core (a proof).
 */
export function solvePatternMip(
  highs: Highs,
  st: Structure,
  unitPatterns: readonly (readonly Pattern[])[],
  bounds: SideBounds,
  options: {
    relGap: number;
    timeLimit: number;
    start?: Int32Array | undefined;
    /** Branch-and-bound node limit (a deterministic work limit). */
    maxNodes?: number;
    /** Units whose choice is integral; the others are relaxed to their convex hull (default: all). */
    integerUnits?: Uint8Array | undefined;
    /**
     * Let HiGHS restart (re-presolve) when reduced-cost fixing removes many columns (default
     * true). On the master's thousands of columns that pays (70B-size: 4 s with, 38 s
     * without); on a reduced-cost core, already fixed, it repeats the root for little
     * (moa-tiny epsilon cores: about half the time without).
     */
    restarts?: boolean;
    /**
     * Stop (status `limit`, with the plan) as soon as HiGHS holds a plan whose objective lies
     * strictly between the two values.
     */
    stopBetween?: readonly [number, number];
  },
): CompactResult {
  const { K, m, units, slotsPerUnit: spu, kvLengths } = st;
  const INF = Number.POSITIVE_INFINITY;
  const start = options.start;
  const assign = new Int32Array(st.slots);
  const kvConst = new Float64Array(K);
  const lossConst = new Float64Array(m);
  let offset = 0;
  const columns: Pattern[] = [];
  const freeUnits: number[] = [];
  for (let u = 0; u < units; u++) {
    const list = unitPatterns[u]!;
    if (list.length === 0) {
      return { status: "infeasible", assign: undefined, objective: INF, bound: INF, variables: 0, rows: 0 };
    }
    if (list.length === 1) {
      const p = list[0]!;
      assign.set(p.rules, u * spu);
      for (let k = 0; k < K; k++) kvConst[k]! += p.tokens[k]! / kvLengths[k]!;
      for (let j = 0; j < m; j++) {
        lossConst[j]! += p.nloss[j]!;
        offset += bounds.weights[j]! * p.nloss[j]!;
      }
      continue;
    }
    freeUnits.push(u);
    for (const p of list) columns.push(p);
  }
  const nPatterns = columns.length;
  if (nPatterns === 0) {
    // Everything fixed: a plan iff the constants satisfy the rows.
    let ok = true;
    for (let k = 0; k < K; k++) ok &&= kvConst[k]! >= bounds.kvLower[k]! && kvConst[k]! <= bounds.kvUpper[k]!;
    for (let j = 0; j < m; j++) ok &&= lossConst[j]! <= bounds.lossUpper[j]!;
    return ok
      ? { status: "optimal", assign, objective: offset, bound: offset, variables: 0, rows: 0 }
      : { status: "infeasible", assign: undefined, objective: INF, bound: INF, variables: 0, rows: 0 };
  }
  const perLayer = units / st.layers;
  const layerOf = (u: number) => Math.floor(u / perLayer);
  // Rule indicators per layer for maxRulesPerLayer; rules of fixed units are forced on.
  const ruleColumn = new Map<number, number>();
  const forced: Set<number>[] = Array.from({ length: st.layers }, () => new Set<number>());
  const kMax = st.maxRulesPerLayer;
  if (kMax !== undefined) {
    for (let u = 0; u < units; u++) {
      if (unitPatterns[u]!.length === 1)
        for (const r of unitPatterns[u]![0]!.rules) forced[layerOf(u)]!.add(r);
    }
    for (const p of columns) {
      const l = layerOf(p.unit);
      for (const r of p.rules) {
        const key = l * st.R + r;
        if (!forced[l]!.has(r) && !ruleColumn.has(key)) ruleColumn.set(key, nPatterns + ruleColumn.size);
      }
    }
  }
  const numCols = nPatterns + ruleColumn.size;

  const rowLower: number[] = [];
  const rowUpper: number[] = [];
  const starts: number[] = [0];
  const index: number[] = [];
  const value: number[] = [];
  const row = (lo: number, up: number, idx: number[], val: number[]) => {
    rowLower.push(lo);
    rowUpper.push(up);
    for (let i = 0; i < idx.length; i++) {
      index.push(idx[i]!);
      value.push(val[i]!);
    }
    starts.push(index.length);
  };
  let c = 0;
  for (const u of freeUnits) {
    const n = unitPatterns[u]!.length;
    row(
      1,
      1,
      Array.from({ length: n }, (_, i) => c + i),
      new Array<number>(n).fill(1),
    );
    c += n;
  }
  for (let k = 0; k < K; k++) {
    const idx: number[] = [];
    const val: number[] = [];
    columns.forEach((p, i) => {
      if (p.tokens[k] !== 0) {
        idx.push(i);
        val.push(p.tokens[k]! / kvLengths[k]!);
      }
    });
    row(bounds.kvLower[k]! - kvConst[k]!, bounds.kvUpper[k]! - kvConst[k]!, idx, val);
  }
  for (let j = 0; j < m; j++) {
    if (!(bounds.lossUpper[j]! < INF)) continue;
    const idx: number[] = [];
    const val: number[] = [];
    columns.forEach((p, i) => {
      if (p.nloss[j] !== 0) {
        idx.push(i);
        val.push(p.nloss[j]!);
      }
    });
    row(-INF, bounds.lossUpper[j]! - lossConst[j]!, idx, val);
  }
  if (kMax !== undefined) {
    // Σ_{patterns of unit u using r} x ≤ w[layer, r], then Σ_r w ≤ room per layer.
    c = 0;
    for (const u of freeUnits) {
      const list = unitPatterns[u]!;
      const l = layerOf(u);
      const users = new Map<number, number[]>();
      list.forEach((p, i) => {
        for (const r of new Set(p.rules)) {
          if (forced[l]!.has(r)) continue;
          let arr = users.get(r);
          if (arr === undefined) {
            arr = [];
            users.set(r, arr);
          }
          arr.push(c + i);
        }
      });
      for (const r of [...users.keys()].sort((a, b) => a - b)) {
        const idx = users.get(r)!;
        row(-INF, 0, [...idx, ruleColumn.get(l * st.R + r)!], [...idx.map(() => 1), -1]);
      }
      c += list.length;
    }
    for (let l = 0; l < st.layers; l++) {
      const room = kMax - forced[l]!.size;
      if (room < 0)
        return { status: "infeasible", assign: undefined, objective: INF, bound: INF, variables: 0, rows: 0 };
      const idx: number[] = [];
      for (const [key, col] of ruleColumn) if (Math.floor(key / st.R) === l) idx.push(col);
      idx.sort((a, b) => a - b);
      if (idx.length > room)
        row(
          -INF,
          room,
          idx,
          idx.map(() => 1),
        );
    }
  }

  const colCost = new Float64Array(numCols);
  columns.forEach((p, i) => {
    for (let j = 0; j < m; j++) colCost[i]! += bounds.weights[j]! * p.nloss[j]!;
  });
  const numRows = rowLower.length;
  const integrality = new Int32Array(numCols).fill(1);
  let integers = numCols - nPatterns;
  if (options.integerUnits !== undefined) {
    columns.forEach((p, i) => {
      integrality[i] = options.integerUnits![p.unit]!;
      integers += integrality[i]!;
    });
  } else {
    integers = numCols;
  }
  const model = highs.createModel({
    numCols,
    numRows,
    offset,
    colCost,
    colLower: new Float64Array(numCols),
    colUpper: new Float64Array(numCols).fill(1),
    rowLower: Float64Array.from(rowLower),
    rowUpper: Float64Array.from(rowUpper),
    matrix: {
      format: "csr",
      numRows,
      numCols,
      starts: Int32Array.from(starts),
      indices: Int32Array.from(index),
      values: Float64Array.from(value),
    },
    integrality,
  });
  try {
    model.options.set({
      output_flag: false,
      small_matrix_value: 1e-12,
      random_seed: 0,
      mip_rel_gap: options.relGap,
      mip_abs_gap: 1e-12,
      // The loss rows are ~0.03 with coefficients down to 1e-9: at HiGHS' default 1e-6 a plan
      // that breaks a loss bound by 1e-6 passes as feasible, and the exact check then rejects
      // it (a 70B-size epsilon point lost its only good plan that way).
      mip_feasibility_tolerance: 1e-9,
      primal_feasibility_tolerance: 1e-9,
      mip_allow_restart: options.restarts ?? true,
      time_limit: Math.max(options.timeLimit, 0.001),
      ...(options.maxNodes === undefined ? {} : { mip_max_nodes: options.maxNodes }),
    });
    if (start !== undefined) {
      // A full start: the matching pattern of every free unit and the rules it uses.
      const x = new Float64Array(numCols);
      let complete = true;
      c = 0;
      for (const u of freeUnits) {
        const list = unitPatterns[u]!;
        let hit = -1;
        for (let i = 0; i < list.length && hit < 0; i++) {
          let same = true;
          for (let s = 0; s < spu && same; s++) same = list[i]!.rules[s] === start[u * spu + s];
          if (same) hit = i;
        }
        if (hit < 0) complete = false;
        else {
          x[c + hit] = 1;
          const l = layerOf(u);
          for (const r of list[hit]!.rules) {
            const w = ruleColumn.get(l * st.R + r);
            if (w !== undefined) x[w] = 1;
          }
        }
        c += list.length;
      }
      if (complete) model.setSolution({ colValue: x });
    }
    const stop = options.stopBetween;
    let stopped = false;
    const { modelStatus } = model.run(
      stop === undefined
        ? undefined
        : {
            [highs.constants.callbackType.mipInterrupt]: (event) => {
              const z = event.data.mip_primal_bound ?? Number.POSITIVE_INFINITY;
              if (z > stop[0] && z < stop[1]) {
                stopped = true;
                event.interrupt();
              }
              return undefined;
            },
          },
    );
    const codes = highs.constants.modelStatus;
    const sizes = { variables: integers, rows: numRows };
    // Binaries cannot be unbounded: "infeasible or unbounded" from presolve means infeasible.
    if (modelStatus === codes.infeasible || modelStatus === codes.unboundedOrInfeasible) {
      return { status: "infeasible", assign: undefined, objective: INF, bound: INF, ...sizes };
    }
    // An LP (nothing integral) has no MIP bound: at optimality its value is the bound.
    const optimal = modelStatus === codes.optimal;
    const bound =
      integers > 0 ? Number(model.info.get("mip_dual_bound")) : optimal ? model.getObjectiveValue() : -INF;
    if (Number(model.info.get("primal_solution_status")) !== 2) {
      return { status: "limit", assign: undefined, objective: INF, bound, ...sizes };
    }
    const x = model.getSolution().colValue;
    c = 0;
    for (const u of freeUnits) {
      const list = unitPatterns[u]!;
      let pick = 0;
      for (let i = 1; i < list.length; i++) if (x[c + i]! > x[c + pick]!) pick = i;
      assign.set(list[pick]!.rules, u * spu);
      c += list.length;
    }
    return {
      status: optimal ? "optimal" : "limit",
      ...(stopped && !optimal ? { stopped: true } : {}),
      assign,
      objective: model.getObjectiveValue(),
      bound: Number.isNaN(bound) ? -INF : bound,
      ...sizes,
    };
  } finally {
    model.dispose();
  }
}
