/**
 * Shared helpers of the solver tests: the fixture profiles and an independent loss
 * computation straight from DESIGN.md (block by block, no prefix sums, no ruleLossTable).
 */
import { readFileSync } from "node:fs";
import { type ElasticRule, type ModelShape, type MoaPlan, type MoaProfile, readProfile } from "@moa/core";

export function fixtureProfile(name: "moa-nano" | "moa-tiny"): MoaProfile {
  const url = new URL(`../../../fixtures/${name}.profile.safetensors`, import.meta.url);
  return readProfile(readFileSync(url), `${name}.profile.safetensors`);
}

/** moa-nano: 4 layers × 4 heads, MHA; moa-tiny: 6 layers × 6 query heads, 2 KV heads (fixtures/README.md). */
export function fixtureShape(name: "moa-nano" | "moa-tiny"): ModelShape {
  return name === "moa-nano"
    ? { architecture: "llama", layers: 4, heads: 4, kvHeads: 4, headDim: 64 }
    : { architecture: "llama", layers: 6, heads: 6, kvHeads: 2, headDim: 64 };
}

/**
 * DESIGN.md: Rule loss, restated: the head's block influence summed over the causal
 * blocks the rule does not keep. `nb = max(1, floor(clamp(α + βn, 0, n) / B))`; block
 * (qb, kb), kb ≤ qb, is kept iff kb < G/B or kb ≥ qb − nb + 1.
 */
export function independentLoss(
  profile: MoaProfile,
  rule: ElasticRule,
  layer: number,
  head: number,
  n: number,
): number {
  const B = profile.blockSize;
  const nBlocks = n / B;
  const span = Math.min(n, Math.max(0, rule.alpha + rule.beta * n));
  const nb = Math.max(1, Math.floor(span / B));
  const data = profile.influence.get(n)!;
  const base = (layer * profile.heads + head) * nBlocks * nBlocks;
  let dropped = 0;
  for (let qb = 0; qb < nBlocks; qb++) {
    for (let kb = 0; kb <= qb; kb++) {
      const kept = kb < profile.sinkTokens / B || kb >= qb - nb + 1;
      if (!kept) dropped += data[base + qb * nBlocks + kb]!;
    }
  }
  return dropped;
}

/** A plan's summed rule loss at `n`, computed with {@link independentLoss}. */
export function independentPlanLoss(profile: MoaProfile, plan: MoaPlan, n: number): number {
  let sum = 0;
  plan.rules.forEach((row, layer) => {
    row.forEach((rule, head) => {
      sum += independentLoss(profile, rule, layer, head, n);
    });
  });
  return sum;
}

/** Tokens a KV head caches at n, from DESIGN.md: the widest `min(n, G + nb·B)` of its query heads. */
export function independentKvDensity(plan: MoaPlan, n: number): number {
  const { layers, heads, kvHeads } = plan.model;
  const group = heads / kvHeads;
  const B = plan.blockSize;
  let tokens = 0;
  for (let l = 0; l < layers; l++) {
    for (let kv = 0; kv < kvHeads; kv++) {
      let widest = 0;
      for (let h = kv * group; h < (kv + 1) * group; h++) {
        const rule = plan.rules[l]![h]!;
        const span = Math.min(n, Math.max(0, rule.alpha + rule.beta * n));
        const nb = Math.max(1, Math.floor(span / B));
        widest = Math.max(widest, Math.min(n, plan.sinkTokens + nb * B));
      }
      tokens += widest;
    }
  }
  return tokens / (n * layers * kvHeads);
}
