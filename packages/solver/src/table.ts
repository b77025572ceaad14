import { type ElasticRule, kvTokens, MoaError, type MoaProfile, ruleLossTable } from "@moa/core";

/**
 * Everything the optimisation needs from a profile and a candidate grid, as plain typed
 * arrays: the rule loss of every (layer, query head, rule) at each profiled length and
 * the tokens a head caches under each rule at each constrained length.
 */
export interface RuleTable {
  layers: number;
  /** Query heads per layer. */
  heads: number;
  /** The candidate rules, indexed `r` below. */
  rules: readonly ElasticRule[];
  /** Profiled lengths with a loss (objective) each. */
  lossLengths: readonly number[];
  /** `loss[j][(layer·heads + head)·R + r]`: DESIGN.md rule loss at `lossLengths[j]`. */
  loss: readonly Float64Array[];
  /** Lengths where the KV density is constrained (profiled lengths and the extend length). */
  kvLengths: readonly number[];
  /** `kvTokens[k][r]`: tokens a head with rule `r` caches at `kvLengths[k]`, `min(n, G + nb·B)`. */
  kvTokens: readonly Int32Array[];
}

export interface RuleTableOptions {
  rules: readonly ElasticRule[];
  lossLengths: readonly number[];
  kvLengths: readonly number[];
}

/**
 * Builds the {@link RuleTable} of a profile: `ruleLossTable` (DESIGN.md: Rule loss) at
 * each loss length and `kvTokens` at each KV length, with the profile's mask geometry.
 */
export function buildRuleTable(profile: MoaProfile, options: RuleTableOptions): RuleTable {
  const { rules, lossLengths, kvLengths } = options;
  if (rules.length === 0) {
    throw new MoaError("E_ARGUMENT", "buildRuleTable: rules is empty: the candidate grid has no rule", {
      field: "rules",
    });
  }
  for (const n of lossLengths) {
    if (!profile.influence.has(n)) {
      throw new MoaError(
        "E_ARGUMENT",
        `buildRuleTable: length ${n} is not profiled (the profile has ${profile.lengths.join(", ")})`,
        { field: "lengths" },
      );
    }
  }
  for (const n of kvLengths) {
    if (!Number.isSafeInteger(n) || n <= 0) {
      throw new MoaError("E_ARGUMENT", `buildRuleTable: KV length ${n} must be a positive integer`, {
        field: "kvLengths",
      });
    }
  }
  const geom = { blockSize: profile.blockSize, sinkTokens: profile.sinkTokens };
  const ruleList = [...rules];
  return {
    layers: profile.layers,
    heads: profile.heads,
    rules: ruleList,
    lossLengths: [...lossLengths],
    loss: lossLengths.map((n) => ruleLossTable(profile, n, ruleList)),
    kvLengths: [...kvLengths],
    kvTokens: kvLengths.map((n) => Int32Array.from(ruleList, (rule) => kvTokens(rule, n, geom))),
  };
}
