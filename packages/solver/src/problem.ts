import { MoaError } from "@moa/core";
import type { RuleTable } from "./table.js";

/**
 * How GQA models are planned (DESIGN.md: Plan). Neither converts GQA to MHA.
 * - `per-query-head`: every query head gets its own rule; a KV head's cache is sized by
 *   the widest rule of its group at each length, and the KV-density constraint counts that.
 * - `per-kv-head`: all query heads of a KV head share one rule; its loss is theirs summed.
 * For MHA (`kvHeads = heads`) both are the same problem.
 */
export type GqaMode = "per-query-head" | "per-kv-head";

/** The fixed part of a MIP: what is chosen and how it is counted. */
export interface MipStructure {
  table: RuleTable;
  /** KV heads per layer; divides `table.heads`. */
  kvHeads: number;
  /** Default `per-query-head`. */
  gqa?: GqaMode;
  /** At most this many distinct rules among the (query or KV) heads of each layer. */
  maxRulesPerLayer?: number;
}

/** The part of a MIP that changes between the points of a Pareto front. */
export interface MipTargets {
  /** Weight of the summed rule loss at each `table.lossLengths[j]` in the objective (≥ 0). */
  weights: readonly number[];
  /** Optional epsilon constraints: summed rule loss at `lossLengths[j]` ≤ `lossUpper[j]`. */
  lossUpper?: readonly (number | undefined)[];
  /** Mean KV density over (layer, KV head) at `table.kvLengths[k]` must be ≤ `densityUpper[k]`. */
  densityUpper: readonly number[];
  /** … and ≥ `densityLower[k]` (default 0). */
  densityLower?: readonly number[];
}

/**
 * One multiple-choice MIP (DESIGN.md: The optimisation): pick one rule per head,
 * minimise `Σ_j weights[j] · Σ_heads loss(h, r_h, n_j)` subject to the KV-density
 * window at every KV length and the optional loss bounds.
 */
export type MipProblem = MipStructure & MipTargets;

function argument(message: string, field: string): never {
  throw new MoaError("E_ARGUMENT", message, { field });
}

export function checkStructure(structure: MipStructure): void {
  const { table, kvHeads } = structure;
  const R = table.rules.length;
  if (!Number.isSafeInteger(table.layers) || table.layers <= 0)
    argument("table.layers must be a positive integer", "layers");
  if (!Number.isSafeInteger(table.heads) || table.heads <= 0)
    argument("table.heads must be a positive integer", "heads");
  if (!Number.isSafeInteger(kvHeads) || kvHeads <= 0 || table.heads % kvHeads !== 0) {
    argument(`kvHeads = ${kvHeads} must be a positive integer dividing heads = ${table.heads}`, "kvHeads");
  }
  if (R === 0) argument("the candidate grid is empty", "rules");
  if (table.loss.length !== table.lossLengths.length)
    argument("table.loss needs one table per loss length", "loss");
  for (const [j, loss] of table.loss.entries()) {
    if (loss.length !== table.layers * table.heads * R) {
      argument(
        `table.loss[${j}] has ${loss.length} values, expected layers·heads·rules = ${table.layers * table.heads * R}`,
        "loss",
      );
    }
    for (let i = 0; i < loss.length; i++) {
      if (!Number.isFinite(loss[i]!)) argument(`table.loss[${j}][${i}] = ${loss[i]} is not finite`, "loss");
    }
  }
  if (table.kvTokens.length !== table.kvLengths.length || table.kvLengths.length === 0) {
    argument("table.kvTokens needs one row per KV length, and at least one KV length", "kvTokens");
  }
  for (const [k, tokens] of table.kvTokens.entries()) {
    if (tokens.length !== R) argument(`table.kvTokens[${k}] must have one value per rule`, "kvTokens");
    const n = table.kvLengths[k]!;
    for (const t of tokens) {
      if (!Number.isInteger(t) || t < 0 || t > n)
        argument(`table.kvTokens[${k}] holds ${t}, not in [0, ${n}]`, "kvTokens");
    }
  }
  const gqa = structure.gqa ?? "per-query-head";
  if (gqa !== "per-query-head" && gqa !== "per-kv-head")
    argument(`gqa = ${String(gqa)} must be "per-query-head" or "per-kv-head"`, "gqa");
  const k = structure.maxRulesPerLayer;
  if (k !== undefined && (!Number.isSafeInteger(k) || k < 1)) {
    argument(`maxRulesPerLayer = ${k} must be a positive integer`, "maxRulesPerLayer");
  }
}

export function checkTargets(table: RuleTable, targets: MipTargets): void {
  const m = table.lossLengths.length;
  const K = table.kvLengths.length;
  if (targets.weights.length !== m) argument(`weights needs ${m} values (one per loss length)`, "weights");
  for (const w of targets.weights)
    if (!(w >= 0) || !Number.isFinite(w)) argument(`weight ${w} must be finite and >= 0`, "weights");
  if (targets.lossUpper !== undefined) {
    if (targets.lossUpper.length !== m) argument(`lossUpper needs ${m} entries`, "lossUpper");
    for (const e of targets.lossUpper)
      if (e !== undefined && Number.isNaN(e)) argument("lossUpper holds NaN", "lossUpper");
  }
  if (targets.densityUpper.length !== K)
    argument(`densityUpper needs ${K} values (one per KV length)`, "densityUpper");
  for (const d of targets.densityUpper)
    if (!(d >= 0)) argument(`density upper bound ${d} must be >= 0`, "densityUpper");
  if (targets.densityLower !== undefined) {
    if (targets.densityLower.length !== K) argument(`densityLower needs ${K} values`, "densityLower");
    for (const d of targets.densityLower)
      if (!(d >= 0) || !Number.isFinite(d))
        argument(`density lower bound ${d} must be finite and >= 0`, "densityLower");
  }
}
