import type { UnitPricer } from "./pricing.js";
import type { SlotOptions, Structure } from "./structure.js";

/** Above this many DP cells (units × budget steps) the budget DP is skipped. */
const MAX_CELLS = 60_000_000;

function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b];
  return Math.abs(a);
}

/** Float32 copy that never exceeds the values, so bounds built from it stay valid. */
function toFloat32Below(values: Float64Array): Float32Array {
  const out = new Float32Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const x = values[i]!;
    const f = Math.fround(x);
    out[i] = f <= x ? f : Math.fround(x - Math.abs(x) * 2.4e-7);
  }
  return out;
}

interface Level {
  tokens: number;
  value: number;
  state: number;
}

/**
 * The Lagrangian bound with one KV row kept exact. A KV row counts whole tokens, in steps
 * of `g` (1024 tokens at 8192 for the reference grid): one unit is a coarse step of the
 * budget, and the LP bound, blind to that, sits a step's worth of dual price below the
 * integer optimum — often more than the gap to prove. Keeping that row and relaxing the
 * others gives a multiple-choice knapsack over the units' cache sizes at that length,
 * solved exactly by dynamic programming over the budget. Forward and backward tables then
 * give, per unit and cache size, the best value of the rest: the fixing test of the core.
 */
export class BudgetDp {
  readonly bound: number;
  readonly assign: Int32Array;
  private readonly st: Structure;
  private readonly levels: Level[][];
  private readonly forward: Float32Array[];
  /** `reach[u]`: the last cell the units before u can reach (F_u is +∞ beyond it). */
  private readonly reach: Int32Array;
  private readonly cells: number;
  private readonly loCell: number;
  private readonly step: number;
  private readonly base: Int32Array;
  private readonly k: number;
  private rests: Map<number, number>[] | undefined;

  private constructor(
    st: Structure,
    k: number,
    levels: Level[][],
    forward: Float32Array[],
    reach: Int32Array,
    cells: number,
    loCell: number,
    step: number,
    base: Int32Array,
    bound: number,
    assign: Int32Array,
  ) {
    this.st = st;
    this.k = k;
    this.levels = levels;
    this.forward = forward;
    this.reach = reach;
    this.cells = cells;
    this.loCell = loCell;
    this.step = step;
    this.base = base;
    this.bound = bound;
    this.assign = assign;
  }

  /**
   * Solves the knapsack at KV row `k` with window [lo, up] (tokens). `capCost` must not
   * price row `k`. Returns undefined when the table would be too large, and a bound of
   * +∞ when the row alone is infeasible.
   */
  static solve(
    st: Structure,
    pricer: UnitPricer,
    opts: SlotOptions,
    slotCost: Float64Array,
    capCost: Float64Array,
    k: number,
    lo: number,
    up: number,
  ): BudgetDp | undefined {
    const { K, units, slotsPerUnit: spu } = st;
    const stateTokens = st.states!.tokens;
    const levels: Level[][] = [];
    const patterns: Int32Array[][] = [];
    const pattern = new Int32Array(spu);
    let step = 0;
    const base = new Int32Array(units);
    let baseSum = 0;
    for (let u = 0; u < units; u++) {
      const { states, values } = pricer.finals(u, opts, slotCost, capCost);
      const byTokens = new Map<number, Level>();
      for (let i = 0; i < states.length; i++) {
        const tokens = stateTokens[states[i]! * K + k]!;
        const known = byTokens.get(tokens);
        if (known === undefined || values[i]! < known.value) {
          byTokens.set(tokens, { tokens, value: values[i]!, state: states[i]! });
        }
      }
      const list = [...byTokens.values()].sort((a, b) => a.tokens - b.tokens);
      const unitPatterns: Int32Array[] = [];
      for (const level of list) {
        pricer.backtrack(level.state, pattern);
        unitPatterns.push(Int32Array.from(pattern));
      }
      levels.push(list);
      patterns.push(unitPatterns);
      base[u] = list[0]!.tokens;
      baseSum += list[0]!.tokens;
      for (const level of list) step = gcd(step, level.tokens - list[0]!.tokens);
    }
    if (step === 0) step = 1;
    if (up < baseSum) {
      return new BudgetDp(
        st,
        k,
        levels,
        [],
        new Int32Array(0),
        0,
        0,
        step,
        base,
        Number.POSITIVE_INFINITY,
        new Int32Array(st.slots),
      );
    }
    const cells = Math.floor((up - baseSum) / step) + 1;
    const loCell = Math.max(0, Math.ceil((lo - baseSum) / step));
    if (loCell >= cells) {
      return new BudgetDp(
        st,
        k,
        levels,
        [],
        new Int32Array(0),
        0,
        0,
        step,
        base,
        Number.POSITIVE_INFINITY,
        new Int32Array(st.slots),
      );
    }
    if ((units + 1) * cells > MAX_CELLS) return undefined;

    // Forward: F_u[c] = least value of units < u using c steps above their minimum.
    const forward: Float32Array[] = [];
    const reaches = new Int32Array(units + 1);
    const choice = new Uint16Array(units * cells);
    let current = new Float64Array(cells).fill(Number.POSITIVE_INFINITY);
    current[0] = 0;
    let next = new Float64Array(cells);
    forward.push(toFloat32Below(current));
    // Cells beyond the sum of the units' largest steps so far are unreachable.
    let reach = 0;
    for (let u = 0; u < units; u++) {
      reaches[u] = reach;
      next.fill(Number.POSITIVE_INFINITY);
      const list = levels[u]!;
      for (let li = 0; li < list.length; li++) {
        const shift = (list[li]!.tokens - base[u]!) / step;
        const value = list[li]!.value;
        const last = Math.min(reach, cells - 1 - shift);
        // Views shifted by the level: the inner loop indexes both with c alone.
        const to = next.subarray(shift);
        const picked = choice.subarray(u * cells + shift);
        for (let c = 0; c <= last; c++) {
          const v = current[c]! + value;
          if (v < to[c]!) {
            to[c] = v;
            picked[c] = li;
          }
        }
      }
      reach = Math.min(cells - 1, reach + (list[list.length - 1]!.tokens - base[u]!) / step);
      [current, next] = [next, current];
      forward.push(toFloat32Below(current));
    }
    reaches[units] = reach;
    let bound = Number.POSITIVE_INFINITY;
    let end = -1;
    for (let c = loCell; c < cells; c++) {
      if (current[c]! < bound) {
        bound = current[c]!;
        end = c;
      }
    }
    const assign = new Int32Array(st.slots);
    if (end >= 0) {
      let c = end;
      for (let u = units - 1; u >= 0; u--) {
        const li = choice[u * cells + c]!;
        assign.set(patterns[u]![li]!, u * spu);
        c -= (levels[u]![li]!.tokens - base[u]!) / step;
      }
    }
    return new BudgetDp(st, k, levels, forward, reaches, cells, loCell, step, base, bound, assign);
  }

  /**
   * Per cap state of unit `u`: the largest unit value (`pricer` value under the same
   * costs) a choice ending in that state can have and still be part of a solution whose
   * knapsack value is below `bound + slack`. Calls `visit(u, limits)` for every unit in
   * turn (a backward sweep), reusing one array.
   */
  limits(slack: number, visit: (u: number, limit: Float64Array) => void): void {
    const { st, k } = this;
    const { units, K } = st;
    const C = st.states!.count;
    const stateTokens = st.states!.tokens;
    // The backward sweep does not depend on the slack: later calls (wider cores) reuse it.
    this.rests ??= this.sweep();
    const limit = new Float64Array(C);
    for (let u = units - 1; u >= 0; u--) {
      const rest = this.rests[u]!;
      limit.fill(Number.NEGATIVE_INFINITY);
      for (let s = 0; s < C; s++) {
        const r = rest.get(stateTokens[s * K + k]!);
        if (r !== undefined) limit[s] = this.bound + slack - r;
      }
      visit(u, limit);
    }
  }

  /** Per unit, per cache size at row k: the least knapsack value of the other units. */
  private sweep(): Map<number, number>[] {
    const { st, cells, step, levels, forward, base, loCell, reach } = this;
    const rests: Map<number, number>[] = new Array(st.units);
    // back[c] = least value of units > u given c steps used before them, ending in the window.
    let back = new Float64Array(cells).fill(Number.POSITIVE_INFINITY);
    for (let c = loCell; c < cells; c++) back[c] = 0;
    let next = new Float64Array(cells);
    for (let u = st.units - 1; u >= 0; u--) {
      const F = forward[u]!;
      const rest = new Map<number, number>();
      // Only cells the units before u can reach are ever read from `back` again.
      next.fill(Number.POSITIVE_INFINITY);
      for (const level of levels[u]!) {
        const shift = (level.tokens - base[u]!) / step;
        const value = level.value;
        let best = Number.POSITIVE_INFINITY;
        const last = Math.min(reach[u]!, cells - 1 - shift);
        // One pass for both: the best of the units before u with this level, and `back` one unit earlier.
        const from = back.subarray(shift);
        for (let c = 0; c <= last; c++) {
          const b = from[c]!;
          const v = F[c]! + b;
          if (v < best) best = v;
          const w = value + b;
          if (w < next[c]!) next[c] = w;
        }
        rest.set(level.tokens, best);
      }
      rests[u] = rest;
      [back, next] = [next, back];
    }
    return rests;
  }
}
