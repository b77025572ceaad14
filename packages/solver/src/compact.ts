import type { Highs } from "highs";
import type { SlotOptions, Structure } from "./structure.js";

/** Bounds of one MIP, in the units of the master rows (Σ tokens/n; Σ normalised loss). */
export interface SideBounds {
  kvLower: Float64Array;
  kvUpper: Float64Array;
  lossUpper: Float64Array;
  weights: Float64Array;
  /** KV lengths whose lower bound is enforced: the group cap must then equal the widest rule. */
  exactCap: readonly boolean[];
}

export interface CompactResult {
  /** `optimal`: within the gap; `infeasible`: proven; `limit`: stopped with or without a solution. */
  status: "optimal" | "infeasible" | "limit";
  /** Stopped on request (`stopBetween`) with a plan, before the work limit. */
  stopped?: boolean;
  assign: Int32Array | undefined;
  /** Objective of `assign` as HiGHS reports it (the caller re-evaluates exactly). */
  objective: number;
  /** HiGHS' dual bound for this (restricted) model. */
  bound: number;
  variables: number;
  rows: number;
}

interface RowBuffer {
  lower: number[];
  upper: number[];
  starts: number[];
  index: number[];
  value: number[];
}

function pushRow(rows: RowBuffer, lower: number, upper: number, index: number[], value: number[]): void {
  rows.lower.push(lower);
  rows.upper.push(upper);
  for (let i = 0; i < index.length; i++) {
    rows.index.push(index[i]!);
    rows.value.push(value[i]!);
  }
  rows.starts.push(rows.index.length);
}

/**
 * The compact MIP over the given slot options: a binary per (slot, rule), and in
 * per-query-head groups a cumulative binary per (unit, KV length, cache level) — "the
 * group's cache is at least this level" — linked to every slot, so a group's cache is the
 * widest rule of its slots exactly (DESIGN.md: Plan, GQA). Slots with a single option
 * are constants. Used on the small core left after reduced-cost fixing, and on the whole
 * problem when the decomposition does not apply.
 */
export function solveCompact(
  highs: Highs,
  st: Structure,
  opts: SlotOptions,
  bounds: SideBounds,
  options: { relGap: number; timeLimit: number; start?: Int32Array | undefined; maxNodes?: number },
): CompactResult {
  const { R, K, m, tok, slotsPerUnit: spu, kvLengths } = st;
  const INF = Number.POSITIVE_INFINITY;
  const colCost: number[] = [];
  const colUpper: number[] = [];
  const startValue: number[] = [];
  const start = options.start;
  let offset = 0;
  // Slot option → column (−1 when the slot is fixed).
  const optCol = new Int32Array(opts.rule.length).fill(-1);
  const kvConst = new Float64Array(K);
  const lossConst = new Float64Array(m);
  const rows: RowBuffer = { lower: [], upper: [], starts: [0], index: [], value: [] };
  const kvIndex: number[][] = Array.from({ length: K }, () => []);
  const kvValue: number[][] = Array.from({ length: K }, () => []);
  const lossIndex: number[][] = Array.from({ length: m }, () => []);
  const lossValue: number[][] = Array.from({ length: m }, () => []);

  for (let s = 0; s < st.slots; s++) {
    const o0 = opts.start[s]!;
    const o1 = opts.start[s + 1]!;
    if (o1 - o0 === 0) {
      return { status: "infeasible", assign: undefined, objective: INF, bound: INF, variables: 0, rows: 0 };
    }
    if (o1 - o0 === 1) {
      const r = opts.rule[o0]!;
      for (let j = 0; j < m; j++) {
        const l = st.nloss[j]![s * R + r]!;
        lossConst[j]! += l;
        offset += bounds.weights[j]! * l;
      }
      if (spu === 1) for (let k = 0; k < K; k++) kvConst[k]! += tok[r * K + k]! / kvLengths[k]!;
      continue;
    }
    const index: number[] = [];
    const value: number[] = [];
    for (let o = o0; o < o1; o++) {
      const r = opts.rule[o]!;
      const c = colCost.length;
      optCol[o] = c;
      let cost = 0;
      for (let j = 0; j < m; j++) {
        const l = st.nloss[j]![s * R + r]!;
        cost += bounds.weights[j]! * l;
        if (l !== 0) {
          lossIndex[j]!.push(c);
          lossValue[j]!.push(l);
        }
      }
      colCost.push(cost);
      colUpper.push(1);
      startValue.push(start !== undefined && start[s] === r ? 1 : 0);
      if (spu === 1) {
        for (let k = 0; k < K; k++) {
          const t = tok[r * K + k]!;
          if (t !== 0) {
            kvIndex[k]!.push(c);
            kvValue[k]!.push(t / kvLengths[k]!);
          }
        }
      }
      index.push(c);
      value.push(1);
    }
    pushRow(rows, 1, 1, index, value);
  }

  if (spu > 1) {
    for (let u = 0; u < st.units; u++) {
      for (let k = 0; k < K; k++) {
        // Cache levels reachable by this unit at length k and the level it cannot go below.
        const levelSet = new Set<number>();
        let forced = 0;
        let startCap = 0;
        for (let i = 0; i < spu; i++) {
          const s = u * spu + i;
          let least = INF;
          for (let o = opts.start[s]!; o < opts.start[s + 1]!; o++) {
            const t = tok[opts.rule[o]! * K + k]!;
            levelSet.add(t);
            least = Math.min(least, t);
          }
          forced = Math.max(forced, least);
          if (start !== undefined) startCap = Math.max(startCap, tok[start[s]! * K + k]!);
        }
        const levels = [...levelSet].filter((t) => t > forced).sort((a, b) => a - b);
        kvConst[k]! += forced / kvLengths[k]!;
        let previous = forced;
        let previousZ = -1;
        for (const level of levels) {
          const z = colCost.length;
          colCost.push(0);
          colUpper.push(1);
          startValue.push(startCap >= level ? 1 : 0);
          kvIndex[k]!.push(z);
          kvValue[k]!.push((level - previous) / kvLengths[k]!);
          previous = level;
          // Every slot at or above this level forces z = 1.
          const anyIndex: number[] = [z];
          const anyValue: number[] = [1];
          for (let i = 0; i < spu; i++) {
            const s = u * spu + i;
            const index: number[] = [];
            const value: number[] = [];
            for (let o = opts.start[s]!; o < opts.start[s + 1]!; o++) {
              if (tok[opts.rule[o]! * K + k]! >= level && optCol[o]! >= 0) {
                index.push(optCol[o]!);
                value.push(1);
                anyIndex.push(optCol[o]!);
                anyValue.push(-1);
              }
            }
            if (index.length > 0) {
              index.push(z);
              value.push(-1);
              pushRow(rows, -INF, 0, index, value);
            }
          }
          // Lower bound enforced: z = 1 only if some slot reaches the level (cap = max exactly).
          if (bounds.exactCap[k]) pushRow(rows, -INF, 0, anyIndex, anyValue);
          if (previousZ >= 0) pushRow(rows, -INF, 0, [z, previousZ], [1, -1]);
          previousZ = z;
        }
      }
    }
  }

  for (let k = 0; k < K; k++) {
    pushRow(
      rows,
      bounds.kvLower[k]! - kvConst[k]!,
      bounds.kvUpper[k]! - kvConst[k]!,
      kvIndex[k]!,
      kvValue[k]!,
    );
  }
  for (let j = 0; j < m; j++) {
    if (bounds.lossUpper[j]! < INF) {
      pushRow(rows, -INF, bounds.lossUpper[j]! - lossConst[j]!, lossIndex[j]!, lossValue[j]!);
    }
  }

  const kMax = st.maxRulesPerLayer;
  if (kMax !== undefined) {
    const perLayer = st.slots / st.layers;
    for (let l = 0; l < st.layers; l++) {
      const forcedRules = new Set<number>();
      for (let s = l * perLayer; s < (l + 1) * perLayer; s++) {
        if (opts.start[s + 1]! - opts.start[s]! === 1) forcedRules.add(opts.rule[opts.start[s]!]!);
      }
      const used = new Map<number, number>();
      const usedIndex: number[] = [];
      const usedValue: number[] = [];
      for (let s = l * perLayer; s < (l + 1) * perLayer; s++) {
        for (let o = opts.start[s]!; o < opts.start[s + 1]!; o++) {
          const r = opts.rule[o]!;
          if (optCol[o]! < 0 || forcedRules.has(r)) continue;
          let w = used.get(r);
          if (w === undefined) {
            w = colCost.length;
            colCost.push(0);
            colUpper.push(1);
            let inStart = 0;
            if (start !== undefined) {
              for (let t = l * perLayer; t < (l + 1) * perLayer; t++) if (start[t] === r) inStart = 1;
            }
            startValue.push(inStart);
            used.set(r, w);
            usedIndex.push(w);
            usedValue.push(1);
          }
          pushRow(rows, -INF, 0, [optCol[o]!, w], [1, -1]);
        }
      }
      const room = kMax - forcedRules.size;
      if (room < 0) {
        return { status: "infeasible", assign: undefined, objective: INF, bound: INF, variables: 0, rows: 0 };
      }
      if (usedIndex.length > room) pushRow(rows, -INF, room, usedIndex, usedValue);
    }
  }

  const numCols = colCost.length;
  const numRows = rows.lower.length;
  const assign = new Int32Array(st.slots);
  const decode = (colValue: Float64Array | undefined): Int32Array => {
    for (let s = 0; s < st.slots; s++) {
      const o0 = opts.start[s]!;
      const o1 = opts.start[s + 1]!;
      let best = o0;
      if (colValue !== undefined && o1 - o0 > 1) {
        for (let o = o0; o < o1; o++) if (colValue[optCol[o]!]! > colValue[optCol[best]!]!) best = o;
      }
      assign[s] = opts.rule[best]!;
    }
    return assign;
  };
  if (numCols === 0) {
    // Everything fixed: a plan iff every (constant) row holds.
    let ok = true;
    for (let i = 0; i < numRows; i++) ok &&= rows.lower[i]! <= 0 && rows.upper[i]! >= 0;
    return ok
      ? {
          status: "optimal",
          assign: decode(undefined),
          objective: offset,
          bound: offset,
          variables: 0,
          rows: 0,
        }
      : { status: "infeasible", assign: undefined, objective: INF, bound: INF, variables: 0, rows: 0 };
  }
  const model = highs.createModel({
    numCols,
    numRows,
    offset,
    colCost: Float64Array.from(colCost),
    colLower: new Float64Array(numCols),
    colUpper: Float64Array.from(colUpper),
    rowLower: Float64Array.from(rows.lower),
    rowUpper: Float64Array.from(rows.upper),
    matrix: {
      format: "csr",
      numRows,
      numCols,
      starts: Int32Array.from(rows.starts),
      indices: Int32Array.from(rows.index),
      values: Float64Array.from(rows.value),
    },
    integrality: new Int32Array(numCols).fill(1),
  });
  try {
    model.options.set({
      output_flag: false,
      small_matrix_value: 1e-12,
      random_seed: 0,
      mip_rel_gap: options.relGap,
      mip_abs_gap: 1e-12,
      time_limit: Math.max(options.timeLimit, 0.001),
      ...(options.maxNodes === undefined ? {} : { mip_max_nodes: options.maxNodes }),
    });
    if (start !== undefined) model.setSolution({ colValue: Float64Array.from(startValue) });
    const { modelStatus } = model.run();
    const codes = highs.constants.modelStatus;
    const hasSolution = Number(model.info.get("primal_solution_status")) === 2;
    // Binaries cannot be unbounded: "infeasible or unbounded" from presolve means infeasible.
    if (modelStatus === codes.infeasible || modelStatus === codes.unboundedOrInfeasible) {
      return {
        status: "infeasible",
        assign: undefined,
        objective: INF,
        bound: INF,
        variables: numCols,
        rows: numRows,
      };
    }
    const bound = Number(model.info.get("mip_dual_bound"));
    if (!hasSolution) {
      return { status: "limit", assign: undefined, objective: INF, bound, variables: numCols, rows: numRows };
    }
    return {
      status: modelStatus === codes.optimal ? "optimal" : "limit",
      assign: decode(model.getSolution().colValue),
      objective: model.getObjectiveValue(),
      bound,
      variables: numCols,
      rows: numRows,
    };
  } finally {
    model.dispose();
  }
}
