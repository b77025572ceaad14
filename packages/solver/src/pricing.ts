import type { SlotOptions, Structure } from "./structure.js";

/**
 * Exact pricing of a unit (one layer's KV head): the cheapest choice of a rule for each
 * of its slots when each slot has a cost per rule and the unit pays for the *widest* rule
 * of its slots at every KV length (`capCost` per cap state, any sign). A dynamic program
 * over the slots whose state is the cap so far; `deltas` runs it forwards and backwards
 * to give, for each (slot, rule), the least excess over the optimum of any choice that
 * uses it — the reduced cost used to fix variables.
 */
export class UnitPricer {
  private readonly st: Structure;
  private readonly C: number;
  private readonly join: Int32Array;
  private readonly spu: number;
  private readonly val: Float64Array;
  private readonly list: Int32Array;
  private readonly listLen: Int32Array;
  private readonly arg: Int32Array;
  private readonly back: Float64Array;
  private readonly optRule: Int32Array;
  private readonly optCost: Float64Array;

  constructor(st: Structure) {
    if (st.states === undefined) throw new Error("UnitPricer needs the cap states of the structure");
    this.st = st;
    this.C = st.states.count;
    this.join = st.states.join;
    this.spu = st.slotsPerUnit;
    const layersOfStates = this.spu + 1;
    this.val = new Float64Array(layersOfStates * this.C);
    this.list = new Int32Array(layersOfStates * this.C);
    this.listLen = new Int32Array(layersOfStates);
    this.arg = new Int32Array(layersOfStates * this.C);
    this.back = new Float64Array(layersOfStates * this.C);
    this.optRule = new Int32Array(st.R);
    this.optCost = new Float64Array(st.R);
  }

  /** Forward pass; fills step lists and values. Returns the best final state. */
  private forward(u: number, opts: SlotOptions, slotCost: Float64Array, capCost: Float64Array): number {
    const { C, join, spu, val, list, listLen, arg, optRule, optCost } = this;
    const R = this.st.R;
    val[0] = 0;
    list[0] = 0;
    listLen[0] = 1;
    for (let i = 0; i < spu; i++) {
      const s = u * spu + i;
      const cur = i * C;
      const nxt = (i + 1) * C;
      // Unreached states of the next step hold +∞ (slot costs are finite).
      val.fill(Number.POSITIVE_INFINITY, nxt, nxt + C);
      let n = 0;
      const o0 = opts.start[s]!;
      const count = opts.start[s + 1]! - o0;
      for (let o = 0; o < count; o++) {
        const r = opts.rule[o0 + o]!;
        optRule[o] = r;
        optCost[o] = slotCost[s * R + r]!;
      }
      for (let a = 0; a < listLen[i]!; a++) {
        const state = list[cur + a]!;
        const base = val[cur + state]!;
        const row = state * R;
        for (let o = 0; o < count; o++) {
          const r = optRule[o]!;
          const next = join[row + r]!;
          const v = base + optCost[o]!;
          const at = nxt + next;
          const known = val[at]!;
          if (v < known) {
            if (known === Number.POSITIVE_INFINITY) list[nxt + n++] = next;
            val[at] = v;
            arg[at] = state * R + r;
          }
        }
      }
      listLen[i + 1] = n;
    }
    const last = spu * C;
    let best = -1;
    let bestValue = Number.POSITIVE_INFINITY;
    for (let a = 0; a < listLen[spu]!; a++) {
      const state = list[last + a]!;
      const v = val[last + state]! + capCost[state]!;
      if (v < bestValue) {
        bestValue = v;
        best = state;
      }
    }
    return best;
  }

  /**
   * Every cap the unit can end in, with the least value of a choice ending there
   * (`Σ slot costs + capCost`). {@link backtrack} recovers that choice until the next call.
   */
  finals(
    u: number,
    opts: SlotOptions,
    slotCost: Float64Array,
    capCost: Float64Array,
  ): { states: Int32Array; values: Float64Array } {
    const { C, spu, val, list, listLen } = this;
    this.forward(u, opts, slotCost, capCost);
    const n = listLen[spu]!;
    const states = Int32Array.from(list.subarray(spu * C, spu * C + n));
    const values = Float64Array.from(states, (state) => val[spu * C + state]! + capCost[state]!);
    return { states, values };
  }

  /** The choice (rule per slot) that reached `state` in the last forward pass. */
  backtrack(state: number, pattern: Int32Array): void {
    const { C, spu, arg } = this;
    const R = this.st.R;
    let at = state;
    for (let i = spu - 1; i >= 0; i--) {
      const a = arg[(i + 1) * C + at]!;
      const r = a % R;
      pattern[i] = r;
      at = (a - r) / R;
    }
  }

  /**
   * Minimum over the unit's choices of Σ slot costs + capCost(cap); writes the choice
   * (rule per slot) to `pattern` and returns its value.
   */
  price(
    u: number,
    opts: SlotOptions,
    slotCost: Float64Array,
    capCost: Float64Array,
    pattern: Int32Array,
  ): number {
    const { C, spu, val, arg } = this;
    const R = this.st.R;
    const best = this.forward(u, opts, slotCost, capCost);
    if (best < 0) return Number.POSITIVE_INFINITY;
    const value = val[spu * C + best]! + capCost[best]!;
    let state = best;
    for (let i = spu - 1; i >= 0; i--) {
      const a = arg[(i + 1) * C + state]!;
      const r = a % R;
      pattern[i] = r;
      state = (a - r) / R;
    }
    return value;
  }

  /**
   * The core of unit `u`: its choices whose reduced value (`slotCost`, `capCost`) is within
   * `slack` of the unit's optimum, minus dominated ones. Choices ending in the same cap use
   * the same KV budget, so among them only the Pareto-minimal ones in (objective,
   * `guarded` losses) matter — dominance is applied to partial choices with the same cap
   * too, since their completions are the same. Without guarded rows this leaves at most
   * one choice per cap. With `dominance` off (maxRulesPerLayer, where the rules used
   * matter) every choice within the slack is kept. Returns false past `limit` labels.
   */
  core(
    u: number,
    opts: SlotOptions,
    slotCost: Float64Array,
    capCost: Float64Array,
    objective: Float64Array,
    guarded: readonly Float64Array[],
    slack: number,
    limit: number,
    dominance: boolean,
    emit: (rules: Int32Array) => void,
    finalLimit?: Float64Array,
  ): boolean {
    const { C, join, spu, back } = this;
    const R = this.st.R;
    const g = guarded.length;
    // With `finalLimit`, the bound depends on the cap the choice ends in (the budget DP's
    // fixing): the backward values then hold the least excess over that limit of any
    // completion, so a partial choice survives only if some cap it can reach is in reach.
    const optimum = this.backward(u, opts, slotCost, capCost, finalLimit);
    const threshold = finalLimit === undefined ? optimum + slack : 0;
    interface Label {
      state: number;
      reduced: number;
      cost: number;
      use: Float64Array;
      prev: Label | undefined;
      rule: number;
      alive: boolean;
    }
    const dominates = (a: Label, b: Label): boolean => {
      if (a.cost > b.cost) return false;
      for (let j = 0; j < g; j++) if (a.use[j]! > b.use[j]!) return false;
      return true;
    };
    let created = 0;
    let buckets = new Map<number, Label[]>();
    buckets.set(0, [
      { state: 0, reduced: 0, cost: 0, use: new Float64Array(g), prev: undefined, rule: -1, alive: true },
    ]);
    for (let i = 0; i < spu; i++) {
      const s = u * spu + i;
      const next = new Map<number, Label[]>();
      for (const [state, labels] of buckets) {
        for (const label of labels) {
          if (!label.alive) continue;
          for (let o = opts.start[s]!; o < opts.start[s + 1]!; o++) {
            const r = opts.rule[o]!;
            const to = join[state * R + r]!;
            const reduced = label.reduced + slotCost[s * R + r]!;
            if (reduced + back[(i + 1) * C + to]! > threshold) continue;
            const use = new Float64Array(g);
            for (let j = 0; j < g; j++) use[j] = label.use[j]! + guarded[j]![s * R + r]!;
            const fresh: Label = {
              state: to,
              reduced,
              cost: label.cost + objective[s * R + r]!,
              use,
              prev: label,
              rule: r,
              alive: true,
            };
            let bucket = next.get(to);
            if (bucket === undefined) {
              bucket = [];
              next.set(to, bucket);
            }
            if (dominance) {
              let beaten = false;
              for (const other of bucket) {
                if (other.alive && dominates(other, fresh)) {
                  beaten = true;
                  break;
                }
              }
              if (beaten) continue;
              for (const other of bucket) if (other.alive && dominates(fresh, other)) other.alive = false;
            }
            bucket.push(fresh);
            if (++created > limit) return false;
          }
        }
      }
      for (const [state, labels] of next) {
        next.set(
          state,
          labels.filter((l) => l.alive),
        );
      }
      buckets = next;
    }
    const rules = new Int32Array(spu);
    const states = [...buckets.keys()].sort((a, b) => a - b);
    for (const state of states) {
      for (const label of buckets.get(state)!) {
        if (finalLimit !== undefined && label.reduced + capCost[state]! > finalLimit[state]!) continue;
        let at: Label | undefined = label;
        for (let i = spu - 1; i >= 0; i--) {
          rules[i] = at!.rule;
          at = at!.prev;
        }
        emit(rules);
      }
    }
    return true;
  }

  /**
   * Forward pass, then `back[i·C + state]` = least cost of slots i… plus the cap, from `state`
   * (less the final cap's limit, with `finalLimit`).
   */
  private backward(
    u: number,
    opts: SlotOptions,
    slotCost: Float64Array,
    capCost: Float64Array,
    finalLimit?: Float64Array,
  ): number {
    const { C, join, spu, val, list, listLen, back } = this;
    const R = this.st.R;
    const best = this.forward(u, opts, slotCost, capCost);
    const optimum = val[spu * C + best]! + capCost[best]!;
    const last = spu * C;
    for (let a = 0; a < listLen[spu]!; a++) {
      const state = list[last + a]!;
      back[last + state] = capCost[state]! - (finalLimit === undefined ? 0 : finalLimit[state]!);
    }
    for (let i = spu - 1; i >= 0; i--) {
      const s = u * spu + i;
      const cur = i * C;
      const nxt = (i + 1) * C;
      for (let a = 0; a < listLen[i]!; a++) {
        const state = list[cur + a]!;
        let rest = Number.POSITIVE_INFINITY;
        for (let o = opts.start[s]!; o < opts.start[s + 1]!; o++) {
          const r = opts.rule[o]!;
          const c = slotCost[s * R + r]! + back[nxt + join[state * R + r]!]!;
          if (c < rest) rest = c;
        }
        back[cur + state] = rest;
      }
    }
    return optimum;
  }

  /**
   * For every option `o` of every slot of unit `u`: the least value of a choice using it,
   * minus the unit's optimum `price` (≥ 0 up to rounding). Written to `out[o]`.
   */
  deltas(
    u: number,
    opts: SlotOptions,
    slotCost: Float64Array,
    capCost: Float64Array,
    out: Float64Array,
  ): number {
    const { C, join, spu, val, list, listLen, back } = this;
    const R = this.st.R;
    const best = this.forward(u, opts, slotCost, capCost);
    const optimum = val[spu * C + best]! + capCost[best]!;
    const last = spu * C;
    for (let a = 0; a < listLen[spu]!; a++) {
      const state = list[last + a]!;
      back[last + state] = capCost[state]!;
    }
    for (let i = spu - 1; i >= 0; i--) {
      const s = u * spu + i;
      const cur = i * C;
      const nxt = (i + 1) * C;
      const o0 = opts.start[s]!;
      const o1 = opts.start[s + 1]!;
      for (let o = o0; o < o1; o++) out[o] = Number.POSITIVE_INFINITY;
      for (let a = 0; a < listLen[i]!; a++) {
        const state = list[cur + a]!;
        const before = val[cur + state]!;
        let rest = Number.POSITIVE_INFINITY;
        for (let o = o0; o < o1; o++) {
          const r = opts.rule[o]!;
          const c = slotCost[s * R + r]! + back[nxt + join[state * R + r]!]!;
          if (c < rest) rest = c;
          const through = before + c - optimum;
          if (through < out[o]!) out[o] = through;
        }
        back[cur + state] = rest;
      }
    }
    return optimum;
  }
}
