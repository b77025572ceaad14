import type { GqaMode, MipStructure } from "./problem.js";
import type { RuleTable } from "./table.js";

/** More cap states than this and the group pricing is too slow: solve the compact MIP directly. */
export const MAX_CAP_STATES = 20_000;

/**
 * The cap lattice of a KV group: every vector of per-length cache sizes that the widest
 * rule of a group can reach, i.e. the componentwise maxima of sets of rules, plus the
 * empty group (state 0). `join[s·R + r]` is the state after adding a head with rule `r`.
 */
export interface CapStates {
  count: number;
  /** `tokens[s·K + k]`: the group's cache at `kvLengths[k]` in state `s`. */
  tokens: Int32Array;
  join: Int32Array;
}

/**
 * The MIP in solver terms. A *unit* is one (layer, KV head): the thing the KV density
 * counts. A *slot* is one decision: a query head (`per-query-head`, `slotsPerUnit` =
 * group size) or the whole KV head (`per-kv-head`, one slot with its heads' losses summed).
 * In `per-query-head` mode slot `s` is global head `layer·heads + head`.
 */
export interface Structure {
  table: RuleTable;
  gqa: GqaMode;
  layers: number;
  heads: number;
  kvHeads: number;
  group: number;
  R: number;
  K: number;
  m: number;
  units: number;
  slotsPerUnit: number;
  slots: number;
  maxRulesPerLayer: number | undefined;
  /** Loss normalisation per loss length: the summed loss of the narrowest choice per slot. */
  scale: Float64Array;
  /** `nloss[j][s·R + r]` = slot loss / `scale[j]`. */
  nloss: Float64Array[];
  /** `tok[r·K + k]`: tokens of rule `r` at `kvLengths[k]`. */
  tok: Int32Array;
  kvLengths: number[];
  /** Per KV length, the gcd of the differences between the rules' token counts. */
  tokenStep: Int32Array;
  /** `undefined` when the lattice exceeds {@link MAX_CAP_STATES}. */
  states: CapStates | undefined;
}

export function buildStructure(input: MipStructure): Structure {
  const { table, kvHeads } = input;
  const gqa = input.gqa ?? "per-query-head";
  const { layers, heads } = table;
  const R = table.rules.length;
  const K = table.kvLengths.length;
  const m = table.lossLengths.length;
  const group = heads / kvHeads;
  const units = layers * kvHeads;
  const slotsPerUnit = gqa === "per-query-head" ? group : 1;
  const slots = units * slotsPerUnit;

  const tok = new Int32Array(R * K);
  for (let r = 0; r < R; r++) for (let k = 0; k < K; k++) tok[r * K + k] = table.kvTokens[k]![r]!;

  const scale = new Float64Array(m);
  const nloss: Float64Array[] = [];
  for (let j = 0; j < m; j++) {
    const raw = table.loss[j]!;
    const slotLoss = new Float64Array(slots * R);
    if (slotsPerUnit === group) {
      slotLoss.set(raw);
    } else {
      // per-kv-head: the slot's loss is the sum over the query heads of its KV head.
      for (let u = 0; u < units; u++) {
        for (let i = 0; i < group; i++) {
          const head = u * group + i;
          for (let r = 0; r < R; r++) slotLoss[u * R + r]! += raw[head * R + r]!;
        }
      }
    }
    let total = 0;
    for (let s = 0; s < slots; s++) {
      let worst = 0;
      for (let r = 0; r < R; r++) worst = Math.max(worst, Math.abs(slotLoss[s * R + r]!));
      total += worst;
    }
    scale[j] = total > 0 ? total : 1;
    for (let i = 0; i < slotLoss.length; i++) slotLoss[i] = slotLoss[i]! / scale[j]!;
    nloss.push(slotLoss);
  }

  return {
    table,
    gqa,
    layers,
    heads,
    kvHeads,
    group,
    R,
    K,
    m,
    units,
    slotsPerUnit,
    slots,
    maxRulesPerLayer: input.maxRulesPerLayer,
    scale,
    nloss,
    tok,
    kvLengths: [...table.kvLengths],
    tokenStep: Int32Array.from(table.kvTokens, (row) => {
      let g = 0;
      for (const t of row) {
        let a = Math.abs(t - row[0]!);
        let b = g;
        while (b !== 0) [a, b] = [b, a % b];
        g = a;
      }
      return g === 0 ? 1 : g;
    }),
    states: buildCapStates(tok, R, K, MAX_CAP_STATES),
  };
}

/**
 * Closure of the rules' token vectors under componentwise max. A max over any set equals
 * the max over at most K of its members, so the closure is finite and usually small
 * (136 states for the reference grid at four lengths).
 */
export function buildCapStates(tok: Int32Array, R: number, K: number, limit: number): CapStates | undefined {
  const index = new Map<string, number>();
  const vectors: number[][] = [new Array<number>(K).fill(0)];
  index.set(vectors[0]!.join(","), 0);
  const joins: number[] = [];
  // Breadth-first: every state is joined with every rule exactly once.
  for (let s = 0; s < vectors.length; s++) {
    const v = vectors[s]!;
    for (let r = 0; r < R; r++) {
      const w = new Array<number>(K);
      for (let k = 0; k < K; k++) w[k] = Math.max(v[k]!, tok[r * K + k]!);
      const key = w.join(",");
      let t = index.get(key);
      if (t === undefined) {
        if (vectors.length >= limit) return undefined;
        t = vectors.length;
        index.set(key, t);
        vectors.push(w);
      }
      joins.push(t);
    }
  }
  const tokens = new Int32Array(vectors.length * K);
  vectors.forEach((v, s) => {
    for (let k = 0; k < K; k++) tokens[s * K + k] = v[k]!;
  });
  return { count: vectors.length, tokens, join: Int32Array.from(joins) };
}

/** Slot options after pruning, in CSR form: the rules of slot `s` are `rule[start[s] … start[s+1])`. */
export interface SlotOptions {
  start: Int32Array;
  rule: Int32Array;
}

/**
 * DESIGN.md: The optimisation — per-slot pruning of dominated rules. Rule `r` is dropped
 * when another rule `q` is no worse: tokens ≤ at every KV length, loss ≤ at every loss
 * length, and strictly better somewhere (or identical with a smaller index, so exactly
 * one of a set of twins survives). Swapping `r` for `q` keeps every upper bound and never
 * raises the objective or a group's cap, so an optimum survives. A lower bound breaks
 * that argument, so at the lengths in `exact` (those with an enforced lower bound) `q`
 * must cache exactly as many tokens as `r`. With `maxRulesPerLayer`, the swap must happen
 * in every slot of the layer at once, so dominance is tested on the whole layer.
 */
export function pruneOptions(st: Structure, exact: readonly boolean[]): SlotOptions {
  const { R, K, m, tok, nloss, slots } = st;
  // tokenOrder[q·R + r]: 0 = q not ≤ r; 1 = q ≤ r with some strict; 2 = identical tokens.
  const tokenOrder = new Uint8Array(R * R);
  for (let q = 0; q < R; q++) {
    for (let r = 0; r < R; r++) {
      let le = true;
      let strict = false;
      for (let k = 0; k < K && le; k++) {
        const a = tok[q * K + k]!;
        const b = tok[r * K + k]!;
        if (a > b || (exact[k] && a !== b)) le = false;
        else if (a < b) strict = true;
      }
      tokenOrder[q * R + r] = le ? (strict ? 1 : 2) : 0;
    }
  }
  const groups: number[][] = [];
  if (st.maxRulesPerLayer === undefined) {
    for (let s = 0; s < slots; s++) groups.push([s]);
  } else {
    const perLayer = slots / st.layers;
    for (let l = 0; l < st.layers; l++)
      groups.push(Array.from({ length: perLayer }, (_, i) => l * perLayer + i));
  }
  const keep = new Uint8Array(slots * R);
  for (const members of groups) {
    for (let r = 0; r < R; r++) {
      let dominated = false;
      for (let q = 0; q < R && !dominated; q++) {
        if (q === r) continue;
        const order = tokenOrder[q * R + r]!;
        if (order === 0) continue;
        let le = true;
        let strict = order === 1;
        for (const s of members) {
          for (let j = 0; j < m; j++) {
            const a = nloss[j]![s * R + q]!;
            const b = nloss[j]![s * R + r]!;
            if (a > b) {
              le = false;
              break;
            }
            if (a < b) strict = true;
          }
          if (!le) break;
        }
        if (le && (strict || q < r)) dominated = true;
      }
      if (!dominated) for (const s of members) keep[s * R + r] = 1;
    }
  }
  const start = new Int32Array(slots + 1);
  const rule: number[] = [];
  for (let s = 0; s < slots; s++) {
    for (let r = 0; r < R; r++) if (keep[s * R + r]) rule.push(r);
    start[s + 1] = rule.length;
  }
  return { start, rule: Int32Array.from(rule) };
}

/** Exact measures of an assignment (a rule index per slot). */
export interface Evaluation {
  /** Normalised loss per loss length. */
  nloss: Float64Array;
  /** Σ over units of the unit's cached tokens, per KV length (an integer). */
  tokens: Float64Array;
  /** The most distinct rules any layer uses. */
  distinctPerLayer: number;
}

export function evaluateAssignment(st: Structure, assign: Int32Array): Evaluation {
  const { R, K, m, tok, slotsPerUnit } = st;
  const nloss = new Float64Array(m);
  const tokens = new Float64Array(K);
  const cap = new Int32Array(K);
  for (let u = 0; u < st.units; u++) {
    cap.fill(0);
    for (let i = 0; i < slotsPerUnit; i++) {
      const s = u * slotsPerUnit + i;
      const r = assign[s]!;
      for (let j = 0; j < m; j++) nloss[j]! += st.nloss[j]![s * R + r]!;
      for (let k = 0; k < K; k++) cap[k] = Math.max(cap[k]!, tok[r * K + k]!);
    }
    for (let k = 0; k < K; k++) tokens[k]! += cap[k]!;
  }
  let distinctPerLayer = 0;
  const perLayer = st.slots / st.layers;
  const seen = new Int32Array(R).fill(-1);
  for (let l = 0; l < st.layers; l++) {
    let count = 0;
    for (let s = l * perLayer; s < (l + 1) * perLayer; s++) {
      if (seen[assign[s]!] !== l) {
        seen[assign[s]!] = l;
        count++;
      }
    }
    distinctPerLayer = Math.max(distinctPerLayer, count);
  }
  return { nloss, tokens, distinctPerLayer };
}

/** Rule index per (layer, query head), row-major, from a per-slot assignment. */
export function headRules(st: Structure, assign: Int32Array): Int32Array {
  if (st.slotsPerUnit === st.group) return Int32Array.from(assign);
  const out = new Int32Array(st.layers * st.heads);
  for (let u = 0; u < st.units; u++) for (let i = 0; i < st.group; i++) out[u * st.group + i] = assign[u]!;
  return out;
}
