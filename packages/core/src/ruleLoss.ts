import { DEFAULT_GEOMETRY, type MaskGeometry } from "./constants.js";
import { computeDensity, kvDensity } from "./density.js";
import { checkInteger, fail } from "./errors.js";
import { sinkBlockCount } from "./mask.js";
import type { MoaProfile } from "./profile.js";
import { type ElasticRule, spanBlocks } from "./rule.js";

/**
 * DESIGN.md: Rule loss — `loss(h, r, n)`: the sum of head `h`'s block influence over the
 * causal blocks not kept by rule `r` at length `n`. Returns `[layers·heads, rules.length]`
 * row-major (row `layer·heads + head`).
 *
 * A rule only matters through its span in blocks `nb`, so per head this builds per-row
 * prefix sums once (O((n/B)²)) and then costs O(n/B) per distinct `nb`. Row `qb` keeps
 * the sink `[0, s)` and the band `[max(qb − nb + 1, s), qb]` with `s = min(g, qb + 1)`,
 * so it drops exactly `[s, max(qb − nb + 1, s))`: loss = Σ_qb prefix(lo) − prefix(s).
 * Summing the dropped part directly (rather than total − kept) makes a rule that drops
 * nothing exactly 0.
 */
export function ruleLossTable(profile: MoaProfile, n: number, rules: ElasticRule[]): Float64Array {
  const data = profile.influence.get(n);
  if (data === undefined) {
    fail("E_ARGUMENT", "ruleLossTable", "n", n, `not profiled (lengths: ${profile.lengths.join(",")})`);
  }
  const B = profile.blockSize;
  const nBlocks = n / B;
  const g = Math.min(nBlocks, sinkBlockCount({ blockSize: B, sinkTokens: profile.sinkTokens }));
  const heads = profile.layers * profile.heads;
  const ruleNb = Int32Array.from(rules, (r) => Math.min(nBlocks, spanBlocks(r, n, B)));
  const distinct = [...new Set(ruleNb)];
  const lossByNb = new Float64Array(nBlocks + 1);
  // prefix[qb * (nBlocks + 1) + k] = Σ_{kb < k} influence[qb][kb]
  const stride = nBlocks + 1;
  const prefix = new Float64Array(nBlocks * stride);
  const table = new Float64Array(heads * rules.length);
  for (let head = 0; head < heads; head++) {
    const base = head * nBlocks * nBlocks;
    for (let qb = 0; qb < nBlocks; qb++) {
      const row = base + qb * nBlocks;
      const p = qb * stride;
      let acc = 0;
      prefix[p] = 0;
      for (let kb = 0; kb <= qb; kb++) {
        acc += data[row + kb]!;
        prefix[p + kb + 1] = acc;
      }
    }
    for (const nb of distinct) {
      let dropped = 0;
      for (let qb = nb; qb < nBlocks; qb++) {
        // Rows qb < nb keep every causal block, so the loop starts at nb.
        const p = qb * stride;
        const s = Math.min(g, qb + 1);
        const lo = Math.max(qb - nb + 1, s);
        dropped += prefix[p + lo]! - prefix[p + s]!;
      }
      lossByNb[nb] = dropped;
    }
    const out = head * rules.length;
    for (let r = 0; r < rules.length; r++) table[out + r] = lossByNb[ruleNb[r]!]!;
  }
  return table;
}

/** Compute density and KV density of each rule at length `n` (DESIGN.md: Definitions). */
export function ruleDensityTable(
  rules: ElasticRule[],
  n: number,
  geom: MaskGeometry = DEFAULT_GEOMETRY,
): { compute: Float64Array; kv: Float64Array } {
  checkInteger(n, "n", 1, "ruleDensityTable");
  return {
    compute: Float64Array.from(rules, (r) => computeDensity(r, n, geom)),
    kv: Float64Array.from(rules, (r) => kvDensity(r, n, geom)),
  };
}
