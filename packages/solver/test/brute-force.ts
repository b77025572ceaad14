/**
 * An independent oracle for the solver tests: small random profiles built in memory, and
 * exhaustive enumeration of every rule assignment, measured straight from the definitions
 * (DESIGN.md: Definitions, The optimisation) with @moa/core's rule loss and KV tokens —
 * none of the solver's pruning, normalisation, decomposition or HiGHS.
 */
import {
  type ElasticRule,
  kvTokens,
  type MaskGeometry,
  MoaError,
  type MoaProfile,
  makePlan,
  type ModelShape,
  type MoaPlan,
  ruleLossTable,
} from "@moa/core";
import fc from "fast-check";
import type { GqaMode } from "../src/index.js";

/** mulberry32: a small seeded generator, so every property run is reproducible from its seed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function pick<T>(random: () => number, items: readonly T[]): T {
  return items[Math.floor(random() * items.length)]!;
}

export interface RandomProfileSpec {
  layers: number;
  heads: number;
  lengths: number[];
  seed: number;
  geometry?: MaskGeometry;
}

/**
 * A profile with non-negative random block influence at each length (upper triangle zero).
 * Heads differ in scale and in how fast influence falls off with the distance to the
 * diagonal, some blocks are exactly zero and now and then a whole head is, so losses tie.
 */
export function randomProfile(spec: RandomProfileSpec): MoaProfile {
  const { layers, heads, lengths } = spec;
  const geometry = spec.geometry ?? { blockSize: 64, sinkTokens: 64 };
  const B = geometry.blockSize;
  const random = seededRandom(spec.seed);
  const influence = new Map<number, Float32Array>();
  const character = Array.from({ length: layers * heads }, () => ({
    scale: random() < 0.08 ? 0 : 10 ** (2 * random() - 1),
    decay: 0.05 + 2 * random(),
    zeros: 0.3 * random(),
  }));
  for (const n of lengths) {
    const nb = n / B;
    const data = new Float32Array(layers * heads * nb * nb);
    for (let h = 0; h < layers * heads; h++) {
      // A head keeps its scale across lengths only roughly, so losses at different lengths
      // disagree and the fronts have several points.
      const base = character[h]!;
      const c = {
        ...base,
        scale: base.scale * 10 ** (4 * random() - 2),
        decay: base.decay * (0.3 + 1.4 * random()),
      };
      for (let qb = 0; qb < nb; qb++) {
        for (let kb = 0; kb <= qb; kb++) {
          if (random() < c.zeros) continue;
          const distance = (qb - kb) / nb;
          data[(h * nb + qb) * nb + kb] =
            c.scale * -Math.log(1 - random()) * Math.exp(-c.decay * distance * 4);
        }
      }
    }
    // Normalised so a head's influence sums to about 1 on average, as a loss increase would.
    let total = 0;
    for (const x of data) total += x;
    if (total > 0) {
      const factor = (layers * heads) / total;
      for (let i = 0; i < data.length; i++) data[i] = data[i]! * factor;
    }
    influence.set(n, data);
  }
  return {
    model: "random",
    layers,
    heads,
    blockSize: B,
    sinkTokens: geometry.sinkTokens,
    lengths: [...lengths],
    samplesPerLength: 1,
    calibration: `random seed ${spec.seed}`,
    influence,
  };
}

/**
 * `count` distinct rules shaped like the candidate grid's (DESIGN.md: Definitions) but
 * narrower: alpha a multiple of 16 in [−minLen/4, minLen/2], beta a multiple of 1/16 in
 * [0, 1/2], `S(minLen) > 0`, so that densities below 1 are reachable at every length.
 */
export function randomGrid(random: () => number, lengths: number[], count: number): ElasticRule[] {
  const minLen = Math.min(...lengths);
  const chosen: ElasticRule[] = [];
  const keys = new Set<string>();
  while (chosen.length < count) {
    const alpha = 16 * Math.round((minLen * (0.75 * random() - 0.25)) / 16);
    const beta = Math.floor(9 * random()) / 16;
    if (!(alpha + beta * minLen > 0) || keys.has(`${alpha},${beta}`)) continue;
    keys.add(`${alpha},${beta}`);
    chosen.push({ alpha, beta });
  }
  return chosen;
}

export function shapeOf(profile: MoaProfile, kvHeads: number): ModelShape {
  return { architecture: "llama", layers: profile.layers, heads: profile.heads, kvHeads, headDim: 64 };
}

/** Everything the enumeration needs, computed with @moa/core only. */
export interface Oracle {
  layers: number;
  heads: number;
  kvHeads: number;
  group: number;
  gqa: GqaMode;
  rules: ElasticRule[];
  R: number;
  lossLengths: number[];
  kvLengths: number[];
  geometry: MaskGeometry;
  /** `headLoss[j][(layer·heads + head)·R + r]` = ruleLossTable at `lossLengths[j]`. */
  headLoss: Float64Array[];
  /** `tokens[k][r]` = kvTokens of rule `r` at `kvLengths[k]`. */
  tokens: Int32Array[];
  /** Decisions: query heads, or KV heads in `per-kv-head` mode. */
  slots: number;
}

export interface OracleSpec {
  rules: ElasticRule[];
  lossLengths: number[];
  kvLengths: number[];
  kvHeads: number;
  gqa: GqaMode;
}

export function makeOracle(profile: MoaProfile, spec: OracleSpec): Oracle {
  const geometry = { blockSize: profile.blockSize, sinkTokens: profile.sinkTokens };
  const group = profile.heads / spec.kvHeads;
  return {
    layers: profile.layers,
    heads: profile.heads,
    kvHeads: spec.kvHeads,
    group,
    gqa: spec.gqa,
    rules: spec.rules,
    R: spec.rules.length,
    lossLengths: spec.lossLengths,
    kvLengths: spec.kvLengths,
    geometry,
    headLoss: spec.lossLengths.map((n) => ruleLossTable(profile, n, spec.rules)),
    tokens: spec.kvLengths.map((n) => Int32Array.from(spec.rules, (rule) => kvTokens(rule, n, geometry))),
    slots: spec.gqa === "per-query-head" ? profile.layers * profile.heads : profile.layers * spec.kvHeads,
  };
}

/** One assignment, measured. */
export interface Measured {
  /** Rule index per (layer, query head), row-major. */
  headRules: Int32Array;
  /** Summed rule loss per loss length. */
  loss: Float64Array;
  /** Mean over (layer, KV head) of the widest query head's cache / n, per KV length. */
  kvDensity: Float64Array;
  /** The most distinct rule indices any layer uses. */
  distinctPerLayer: number;
}

/** Measures a rule index per (layer, query head) from the definitions. */
export function measure(o: Oracle, headRules: Int32Array): Measured {
  const { layers, heads, kvHeads, group, R } = o;
  const loss = new Float64Array(o.lossLengths.length);
  for (let j = 0; j < loss.length; j++) {
    let sum = 0;
    for (let h = 0; h < layers * heads; h++) sum += o.headLoss[j]![h * R + headRules[h]!]!;
    loss[j] = sum;
  }
  const kvDensity = new Float64Array(o.kvLengths.length);
  for (let k = 0; k < kvDensity.length; k++) {
    let tokens = 0;
    for (let l = 0; l < layers; l++) {
      for (let kv = 0; kv < kvHeads; kv++) {
        let widest = 0;
        for (let i = 0; i < group; i++) {
          widest = Math.max(widest, o.tokens[k]![headRules[l * heads + kv * group + i]!]!);
        }
        tokens += widest;
      }
    }
    kvDensity[k] = tokens / (o.kvLengths[k]! * layers * kvHeads);
  }
  let distinctPerLayer = 0;
  for (let l = 0; l < layers; l++) {
    let distinct = 0;
    for (let h = l * heads; h < (l + 1) * heads; h++) {
      let seen = false;
      for (let g = l * heads; g < h && !seen; g++) seen = headRules[g] === headRules[h];
      if (!seen) distinct++;
    }
    distinctPerLayer = Math.max(distinctPerLayer, distinct);
  }
  return { headRules, loss, kvDensity, distinctPerLayer };
}

/** Assignments the enumeration would visit (`R^slots`). */
export function assignmentCount(o: Oracle): number {
  return o.R ** o.slots;
}

/**
 * Calls `visit` with every assignment of a rule to each slot (query head, or KV head with
 * its query heads sharing the rule). `visit` gets a fresh object it may keep.
 */
export function forEachAssignment(o: Oracle, visit: (a: Measured) => void): void {
  const count = assignmentCount(o);
  if (count > 2_000_000) throw new Error(`brute force: ${count} assignments is too many for a test`);
  const slotRules = new Int32Array(o.slots);
  for (let index = 0; index < count; index++) {
    let rest = index;
    for (let s = 0; s < o.slots; s++) {
      slotRules[s] = rest % o.R;
      rest = Math.floor(rest / o.R);
    }
    visit(measure(o, expandSlots(o, slotRules)));
  }
}

/** Rule per query head from a rule per slot. */
export function expandSlots(o: Oracle, slotRules: Int32Array): Int32Array {
  if (o.gqa === "per-query-head") return Int32Array.from(slotRules);
  const out = new Int32Array(o.layers * o.heads);
  for (let h = 0; h < out.length; h++) out[h] = slotRules[Math.floor(h / o.group)]!;
  return out;
}

/**
 * A random assignment (a rule per slot), for witnesses of feasibility; with
 * `maxRulesPerLayer`, each layer draws from that many rules only.
 */
export function randomAssignment(o: Oracle, random: () => number, maxRulesPerLayer?: number): Measured {
  const perLayer = o.slots / o.layers;
  const slotRules = new Int32Array(o.slots);
  for (let l = 0; l < o.layers; l++) {
    const palette = Array.from({ length: maxRulesPerLayer ?? o.R }, () => Math.floor(random() * o.R));
    for (let s = l * perLayer; s < (l + 1) * perLayer; s++) slotRules[s] = pick(random, palette);
  }
  return measure(o, expandSlots(o, slotRules));
}

export interface Constraints {
  densityUpper: readonly number[];
  densityLower?: readonly number[];
  lossUpper?: readonly (number | undefined)[];
  maxRulesPerLayer?: number | undefined;
}

/** Relative slack of the density comparisons: far below one token's worth at these sizes. */
const DENSITY_TOLERANCE = 1e-12;

/**
 * Feasibility from the definitions. `lossSlack[j]` (absolute) loosens the loss bound at
 * `lossLengths[j]`: the solver may accept a loss a hair above its bound, so the tests
 * bracket its answer between the strict and the loosened optimum.
 */
export function isFeasible(a: Measured, c: Constraints, lossSlack?: readonly number[]): boolean {
  for (let k = 0; k < c.densityUpper.length; k++) {
    const d = a.kvDensity[k]!;
    if (d > c.densityUpper[k]! * (1 + DENSITY_TOLERANCE)) return false;
    const lower = c.densityLower?.[k] ?? 0;
    if (d < lower * (1 - DENSITY_TOLERANCE)) return false;
  }
  if (c.lossUpper !== undefined) {
    for (let j = 0; j < c.lossUpper.length; j++) {
      const e = c.lossUpper[j];
      if (e !== undefined && a.loss[j]! > e + (lossSlack?.[j] ?? 0)) return false;
    }
  }
  return c.maxRulesPerLayer === undefined || a.distinctPerLayer <= c.maxRulesPerLayer;
}

export function weighted(a: Measured, weights: readonly number[]): number {
  let z = 0;
  for (let j = 0; j < weights.length; j++) z += weights[j]! * a.loss[j]!;
  return z;
}

export interface BruteOptimum {
  /** The least objective among feasible assignments (+∞ when none is feasible). */
  value: number;
  best: Measured | undefined;
  feasibleCount: number;
}

/**
 * The optimum with the loss bounds as given (`strict`) and loosened by `lossSlack`
 * (`lenient`), in one enumeration: a correct solver lands between the two.
 */
export function bruteBracket(
  o: Oracle,
  weights: readonly number[],
  c: Constraints,
  lossSlack: readonly number[],
): { strict: BruteOptimum; lenient: BruteOptimum } {
  const list = feasibleAssignments(o, c, lossSlack);
  return { strict: listMinimum(list, weights, c), lenient: listMinimum(list, weights, c, lossSlack) };
}

/** Minimises `Σ weights[j]·loss[j]` over every feasible assignment. */
export function bruteMinimum(
  o: Oracle,
  weights: readonly number[],
  c: Constraints,
  lossSlack?: readonly number[],
): BruteOptimum {
  let value = Number.POSITIVE_INFINITY;
  let best: Measured | undefined;
  let feasibleCount = 0;
  forEachAssignment(o, (a) => {
    if (!isFeasible(a, c, lossSlack)) return;
    feasibleCount++;
    const z = weighted(a, weights);
    if (z < value) {
      value = z;
      best = a;
    }
  });
  return { value, best, feasibleCount };
}

/** The least objective among assignments of a list that meet `c` (+∞ when none does). */
export function listMinimum(
  list: readonly Measured[],
  weights: readonly number[],
  c: Constraints,
  lossSlack?: readonly number[],
): BruteOptimum {
  let value = Number.POSITIVE_INFINITY;
  let best: Measured | undefined;
  let feasibleCount = 0;
  for (const a of list) {
    if (!isFeasible(a, c, lossSlack)) continue;
    feasibleCount++;
    const z = weighted(a, weights);
    if (z < value) {
      value = z;
      best = a;
    }
  }
  return { value, best, feasibleCount };
}

/** Every feasible assignment (for Pareto checks). */
export function feasibleAssignments(o: Oracle, c: Constraints, lossSlack?: readonly number[]): Measured[] {
  const out: Measured[] = [];
  forEachAssignment(o, (a) => {
    if (isFeasible(a, c, lossSlack)) out.push(a);
  });
  return out;
}

/** The least and most KV density any assignment reaches at each KV length, each on its own. */
export function bruteDensityRange(o: Oracle): { least: number[]; most: number[] } {
  const least = o.kvLengths.map(() => Number.POSITIVE_INFINITY);
  const most = o.kvLengths.map(() => 0);
  forEachAssignment(o, (a) => {
    a.kvDensity.forEach((d, k) => {
      least[k] = Math.min(least[k]!, d);
      most[k] = Math.max(most[k]!, d);
    });
  });
  return { least, most };
}

/**
 * `a` dominates `b`: no worse at every length and better at one, each beyond a relative
 * tolerance, so float summation order can neither make nor hide a domination.
 */
export function dominates(a: ArrayLike<number>, b: ArrayLike<number>, rel = 1e-9): boolean {
  let strict = false;
  for (let j = 0; j < a.length; j++) {
    const tol = rel * Math.max(Math.abs(a[j]!), Math.abs(b[j]!), 1e-300);
    if (a[j]! > b[j]! + tol) return false;
    if (a[j]! < b[j]! - tol) strict = true;
  }
  return strict;
}

/** Rule index per (layer, query head) of a plan, looked up in the grid (exact alpha and beta). */
export function planHeadRules(plan: MoaPlan, rules: readonly ElasticRule[]): Int32Array {
  const out = new Int32Array(plan.model.layers * plan.model.heads);
  for (const [l, row] of plan.rules.entries()) {
    for (const [h, rule] of row.entries()) {
      const r = rules.findIndex((g) => g.alpha === rule.alpha && g.beta === rule.beta);
      if (r < 0)
        throw new Error(`plan rule (${rule.alpha}, ${rule.beta}) at [${l}][${h}] is not in the grid`);
      out[l * plan.model.heads + h] = r;
    }
  }
  return out;
}

/** A plan of a rule index per (layer, query head), to measure with @moa/core's plan functions. */
export function planOf(o: Oracle, shape: ModelShape, headRules: Int32Array): MoaPlan {
  const rules: ElasticRule[][] = [];
  for (let l = 0; l < o.layers; l++) {
    rules.push(Array.from({ length: o.heads }, (_, h) => ({ ...o.rules[headRules[l * o.heads + h]!]! })));
  }
  return makePlan(shape, rules, o.kvLengths, undefined, o.geometry);
}

/** `|actual − expected| ≤ rel·max(|expected|, floor)`. */
export function closeTo(actual: number, expected: number, rel: number, floor = 1e-300): boolean {
  if (actual === expected) return true;
  return Math.abs(actual - expected) <= rel * Math.max(Math.abs(expected), floor);
}

/** Awaits `promise` and returns the MoaError it rejects with (fails if it resolves or throws another error). */
export async function moaErrorOf(promise: Promise<unknown>): Promise<MoaError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof MoaError) return error;
    throw new Error(`expected a MoaError, got ${String(error)}`);
  }
  throw new Error("expected a MoaError, but the promise resolved");
}

/**
 * Per loss length, `Σ_slots max_r loss(slot, r)` (a slot's loss summed over its query heads
 * in `per-kv-head` mode), or 1 when that is 0: the normalisation pareto.ts documents for its
 * anchor objective `Σ_j (1 or AUGMENT) · loss_j / scale_j`.
 */
export function lossScale(o: Oracle): number[] {
  const perSlot = o.gqa === "per-query-head" ? 1 : o.group;
  return o.headLoss.map((table) => {
    let total = 0;
    for (let s = 0; s < o.slots; s++) {
      let worst = 0;
      for (let r = 0; r < o.R; r++) {
        let sum = 0;
        for (let i = 0; i < perSlot; i++) sum += table[(s * perSlot + i) * o.R + r]!;
        worst = Math.max(worst, Math.abs(sum));
      }
      total += worst;
    }
    return total > 0 ? total : 1;
  });
}

/**
 * The relative gap the tests ask for when they want the optimum: tight enough for 1e-9
 * agreement with brute force, above float noise (a gap of exactly 0 is rarely provable).
 */
export const TIGHT_GAP = 1e-9;

/** Most assignments a test enumerates. */
export const MAX_ASSIGNMENTS = 70_000;

export interface ScenarioParams {
  seed: number;
  layers: number;
  heads: number;
  /** Index into the divisors of `heads` (taken modulo their count). */
  kvChoice: number;
  gqa: GqaMode;
  /** Rules wanted (4–7), cut down until `R^slots ≤ MAX_ASSIGNMENTS`. */
  rules: number;
  /** How many of 256, 512, 1024 are profiled (from the shortest). */
  lengthCount: number;
  maxRulesPerLayer: number | undefined;
}

export interface Scenario {
  profile: MoaProfile;
  shape: ModelShape;
  grid: ElasticRule[];
  lengths: number[];
  extend: number;
  kvHeads: number;
  gqa: GqaMode;
  maxRulesPerLayer: number | undefined;
  random: () => number;
}

function divisors(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i + 1).filter((d) => n % d === 0);
}

/** A random profile, grid and model shape small enough to enumerate. */
export function makeScenario(p: ScenarioParams): Scenario {
  const random = seededRandom(p.seed);
  const lengths = [256, 512, 1024].slice(0, p.lengthCount);
  const ds = divisors(p.heads);
  const kvHeads = ds[p.kvChoice % ds.length]!;
  const slots = p.gqa === "per-query-head" ? p.layers * p.heads : p.layers * kvHeads;
  let R = p.rules;
  while (R > 2 && R ** slots > MAX_ASSIGNMENTS) R--;
  // Blocks finer than the default 64 so that rules differ at the short lengths profiled here.
  const geometry = pick(random, [
    { blockSize: 16, sinkTokens: 16 },
    { blockSize: 16, sinkTokens: 32 },
    { blockSize: 32, sinkTokens: 32 },
    { blockSize: 64, sinkTokens: 64 },
  ]);
  const profile = randomProfile({ layers: p.layers, heads: p.heads, lengths, seed: p.seed, geometry });
  return {
    profile,
    shape: shapeOf(profile, kvHeads),
    grid: randomGrid(random, lengths, R),
    lengths,
    extend: 2 * lengths[lengths.length - 1]!,
    kvHeads,
    gqa: p.gqa,
    maxRulesPerLayer: p.maxRulesPerLayer,
    random,
  };
}

/** Scenario parameters; `gqa` and `maxRulesPerLayer` may be pinned by a test. */
export function scenarioArb(
  overrides: { gqa?: GqaMode; maxRulesPerLayer?: number | undefined; lengthCount?: number } = {},
): fc.Arbitrary<ScenarioParams> {
  return fc.record({
    seed: fc.integer({ min: 1, max: 0x7fffffff }),
    layers: fc.integer({ min: 1, max: 2 }),
    heads: fc.integer({ min: 2, max: 4 }),
    kvChoice: fc.nat(3),
    gqa:
      "gqa" in overrides
        ? fc.constant(overrides.gqa!)
        : fc.constantFrom<GqaMode>("per-query-head", "per-kv-head"),
    rules: fc.integer({ min: 4, max: 7 }),
    lengthCount:
      overrides.lengthCount !== undefined
        ? fc.constant(overrides.lengthCount)
        : fc.integer({ min: 2, max: 3 }),
    maxRulesPerLayer:
      "maxRulesPerLayer" in overrides
        ? fc.constant(overrides.maxRulesPerLayer)
        : fc.constantFrom<number | undefined>(undefined, 1, 2),
  });
}

/**
 * Slack per loss length that covers the solver's own tolerance on loss bounds (about
 * 1e-9 of the bound, or of the loss scale near zero) with room to spare.
 */
export function lossBoundSlack(o: Oracle, lossUpper: readonly (number | undefined)[] | undefined): number[] {
  const scale = lossScale(o);
  return o.lossLengths.map((_, j) => 1e-8 * Math.max(Math.abs(lossUpper?.[j] ?? 0), scale[j]!));
}
