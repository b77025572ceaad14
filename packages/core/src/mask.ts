/**
 * The two masks of a head, both from DESIGN.md: Definitions.
 *
 * - The **block mask** (`blockMask`, `isBlockKept`, `isTokenKept`) is the prefill and
 *   profile mask: the whole prompt of length `n` is processed at once, every query uses
 *   the span `nb(n)` of the full length, and whole `B×B` blocks are kept or skipped.
 * - The **window mask** (`isTokenInWindow`, `windowTokens`) is the decode mask: query
 *   `i` is generated when the sequence has length `i + 1`, so it uses `nb(i + 1)`, and
 *   its window is the last `nb·B` tokens, not aligned to blocks. The decode cache holds
 *   exactly the tokens of this window plus the sink.
 *
 * Relationship: for the last query of a length `n` (i = n − 1) the window contains the
 * block-mask row (the band's first kept block starts at or after `n − nb·B`), and they
 * are equal when `n` is a multiple of `B`; the window holds `B − 1 − ((n − 1) mod B)`
 * more recent tokens otherwise. For earlier rows the prefill mask uses `nb(n) ≥ nb(i + 1)`
 * (beta ≥ 0), so prefill rows may keep more than decode would.
 */
import { DEFAULT_GEOMETRY, type MaskGeometry } from "./constants.js";
import { checkInteger } from "./errors.js";
import { type ElasticRule, spanBlocks } from "./rule.js";

/** Number of blocks covering `n` tokens: `ceil(n / B)` (the last block may be partial). */
export function blockCount(n: number, blockSize: number = DEFAULT_GEOMETRY.blockSize): number {
  return Math.ceil(n / blockSize);
}

/** Number of sink blocks, the `kb` with `kb < G/B`. */
export function sinkBlockCount(geom: MaskGeometry = DEFAULT_GEOMETRY): number {
  return Math.ceil(geom.sinkTokens / geom.blockSize);
}

/**
 * DESIGN.md: Definitions — block mask. Block `(qb, kb)` is kept iff `kb ≤ qb` and
 * (`kb < G/B` or `kb ≥ qb − nb + 1`), where `nb` is the rule's span in blocks.
 */
export function isBlockKept(
  qb: number,
  kb: number,
  nb: number,
  geom: MaskGeometry = DEFAULT_GEOMETRY,
): boolean {
  return kb <= qb && (kb < geom.sinkTokens / geom.blockSize || kb >= qb - nb + 1);
}

/**
 * DESIGN.md: Definitions — the block mask of a head at length `n` as an
 * `nBlocks × nBlocks` row-major array (`[qb * nBlocks + kb]`), 1 = kept.
 */
export function blockMask(rule: ElasticRule, n: number, geom: MaskGeometry = DEFAULT_GEOMETRY): Uint8Array {
  checkInteger(n, "n", 1, "blockMask");
  const nBlocks = blockCount(n, geom.blockSize);
  const nb = spanBlocks(rule, n, geom.blockSize);
  const mask = new Uint8Array(nBlocks * nBlocks);
  for (let qb = 0; qb < nBlocks; qb++) {
    for (let kb = 0; kb <= qb; kb++) {
      if (isBlockKept(qb, kb, nb, geom)) mask[qb * nBlocks + kb] = 1;
    }
  }
  return mask;
}

/**
 * DESIGN.md: Definitions — token mask: the causal part of kept blocks. Whether query
 * `i` attends key `j` when a prompt of length `n` is prefilled (or profiled).
 */
export function isTokenKept(
  rule: ElasticRule,
  n: number,
  i: number,
  j: number,
  geom: MaskGeometry = DEFAULT_GEOMETRY,
): boolean {
  if (j > i || i >= n || j < 0) return false;
  const B = geom.blockSize;
  return isBlockKept(Math.floor(i / B), Math.floor(j / B), spanBlocks(rule, n, B), geom);
}

/** Tokens in the decode window (without the sink) at length `n`: `nb(n) · B`. */
export function windowTokens(rule: ElasticRule, n: number, geom: MaskGeometry = DEFAULT_GEOMETRY): number {
  return spanBlocks(rule, n, geom.blockSize) * geom.blockSize;
}

/**
 * First position of the recent window of the query generated at length `n` (position
 * `n − 1`): `max(0, n − nb(n)·B)`; the query attends the sink and `[windowStart, n)`.
 * Because `nb` is floored to whole blocks, this start moves back by up to `B − 1` tokens
 * when `nb` grows (for beta in [0, 1] never more), so a decode ring buffer that must
 * serve later windows keeps `B − 1` tokens beyond the current window, or is sized for
 * the longest length it will serve.
 */
export function windowStart(rule: ElasticRule, n: number, geom: MaskGeometry = DEFAULT_GEOMETRY): number {
  return Math.max(0, n - windowTokens(rule, n, geom));
}

/**
 * The decode mask: query `i` (generated at length `i + 1`) attends key `j ≤ i` iff
 * `j < G` (sink) or `j > i − nb(i + 1) · B` (the last `nb·B` tokens, itself included).
 */
export function isTokenInWindow(
  rule: ElasticRule,
  i: number,
  j: number,
  geom: MaskGeometry = DEFAULT_GEOMETRY,
): boolean {
  if (j > i || j < 0) return false;
  return j < geom.sinkTokens || j > i - windowTokens(rule, i + 1, geom);
}
