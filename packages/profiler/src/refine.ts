/**
 * Head probes and pinned candidates for `moa compress`.
 *
 * The solver ranks rules by the profile's first-order influence. A head that spreads its attention thinly over
 * every block (layer 0 of moa-tiny) collects a large summed |E|, while a head that retrieves one far block
 * collects little — yet dropping the latter loses the answer. On moa-tiny at KV density 0.25 every Pareto plan
 * spent the budget on layer 0 and answered no passkey in the middle of a 4k context, while the same budget with
 * layer 4's second KV head kept whole answered all of them.
 *
 * So compress asks the model directly: starting from the candidate with the lowest validation loss, it widens
 * one KV head at a time to the whole context (a probe; over budget, never a candidate itself) and measures how
 * much validation loss that recovers. The heads that recover the most are then *pinned* — their query heads
 * keep every block, as far as the budget allows — and the solver re-optimises the rest of the budget around
 * them; those plans join the candidates and go through the same validation and selection.
 */
import { type ElasticRule, type ModelShape, type MoaPlan, type MoaProfile, ruleLossTable } from "@moa/core";

/** A KV head of a layer. */
export interface KvHeadRef {
  layer: number;
  kvHead: number;
}

/** The rule that keeps every block at every length. */
export const FULL_RULE: ElasticRule = { alpha: 0, beta: 1 };

/** Span of a rule at length n, clamped to [0, n] (DESIGN.md: Elastic rule). */
function span(rule: ElasticRule, n: number): number {
  return Math.min(n, Math.max(0, rule.alpha + rule.beta * n));
}

/** The KV heads of `plan` whose widest query head keeps less than the whole context at length `n`. */
export function narrowKvHeads(plan: MoaPlan, n: number): KvHeadRef[] {
  const group = plan.model.heads / plan.model.kvHeads;
  const out: KvHeadRef[] = [];
  plan.rules.forEach((heads, layer) => {
    for (let kvHead = 0; kvHead < plan.model.kvHeads; kvHead++) {
      const widest = Math.max(...heads.slice(kvHead * group, (kvHead + 1) * group).map((r) => span(r, n)));
      if (widest < n) out.push({ layer, kvHead });
    }
  });
  return out;
}

/** `plan`'s rules with every query head of the given KV heads at {@link FULL_RULE}. */
export function widenKvHeads(plan: MoaPlan, heads: readonly KvHeadRef[]): ElasticRule[][] {
  const group = plan.model.heads / plan.model.kvHeads;
  const rules = plan.rules.map((layer) => layer.map((r) => ({ ...r })));
  for (const { layer, kvHead } of heads) {
    for (let h = kvHead * group; h < (kvHead + 1) * group; h++) rules[layer]![h] = { ...FULL_RULE };
  }
  return rules;
}

/**
 * A copy of `profile` in which every causal block of the query heads of `heads` weighs ten times the whole
 * profile at that length: any rule that drops a block of a pinned head costs more than every other head's loss
 * together, so the solver keeps pinned heads whole at every profiled length whenever the budget can hold them
 * (when it cannot — two whole KV heads of moa-tiny's twelve exceed KV density 0.25 — it narrows them as little
 * as it must) and spends the rest of the budget as it would. Ten times (not more) keeps the objective's range
 * small for the MIP's tolerances.
 */
export function pinProfile(profile: MoaProfile, shape: ModelShape, heads: readonly KvHeadRef[]): MoaProfile {
  const group = shape.heads / shape.kvHeads;
  const influence = new Map<number, Float32Array>();
  for (const [n, data] of profile.influence) {
    const nb = n / profile.blockSize;
    let total = 0;
    for (const v of data) total += v;
    const weight = 10 * (total > 0 ? total : 1);
    const copy = Float32Array.from(data);
    for (const { layer, kvHead } of heads) {
      for (let h = kvHead * group; h < (kvHead + 1) * group; h++) {
        const base = (layer * profile.heads + h) * nb * nb;
        for (let qb = 0; qb < nb; qb++) copy.fill(weight, base + qb * nb, base + qb * nb + qb + 1);
      }
    }
    influence.set(n, copy);
  }
  return { ...profile, influence };
}

/** The summed rule loss of `rules` under `profile` at each profiled length (DESIGN.md: Rule loss). */
export function rulesProfileLoss(
  profile: MoaProfile,
  rules: readonly (readonly ElasticRule[])[],
): Record<string, number> {
  const flat = rules.flat();
  const keys = flat.map((r) => `${r.alpha}/${r.beta}`);
  const distinct = [...new Set(keys)];
  const column = keys.map((k) => distinct.indexOf(k));
  const distinctRules = distinct.map((k) => flat[keys.indexOf(k)]!);
  const loss: Record<string, number> = {};
  for (const n of profile.lengths) {
    // Row `layer·heads + head`, one column per distinct rule.
    const table = ruleLossTable(profile, n, distinctRules);
    let sum = 0;
    for (let i = 0; i < flat.length; i++) sum += table[i * distinct.length + column[i]!]!;
    loss[String(n)] = sum;
  }
  return loss;
}
