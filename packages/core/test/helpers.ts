/**
 * Independent re-statements of DESIGN.md: Definitions, written token by token without
 * the closed forms of src/, plus fast-check arbitraries shared by the tests.
 */
import fc from "fast-check";
import type { ElasticRule, MaskGeometry, MoaError, MoaProfile } from "../src/index.js";

/** `nb` straight from the definition. */
export function bruteNb(rule: ElasticRule, n: number, B: number): number {
  const span = Math.min(n, Math.max(0, rule.alpha + rule.beta * n));
  return Math.max(1, Math.floor(span / B));
}

/** Block-mask token entry (i, j) at length n, from the definition. */
export function bruteTokenKept(
  rule: ElasticRule,
  n: number,
  i: number,
  j: number,
  geom: MaskGeometry,
): boolean {
  if (j > i) return false;
  const B = geom.blockSize;
  const qb = Math.floor(i / B);
  const kb = Math.floor(j / B);
  return kb < geom.sinkTokens / B || kb >= qb - bruteNb(rule, n, B) + 1;
}

/** Decode-mask entry: query i (length i + 1) attends j. */
export function bruteInWindow(rule: ElasticRule, i: number, j: number, geom: MaskGeometry): boolean {
  if (j > i) return false;
  return j < geom.sinkTokens || j > i - bruteNb(rule, i + 1, geom.blockSize) * geom.blockSize;
}

export function bruteKeptEntries(rule: ElasticRule, n: number, geom: MaskGeometry): number {
  let kept = 0;
  for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) if (bruteTokenKept(rule, n, i, j, geom)) kept++;
  return kept;
}

/** Beta values that matter most: the ends of [0, 1] and anything between. */
export const betaArb = fc.oneof(fc.constant(0), fc.constant(1), fc.double({ min: 0, max: 1, noNaN: true }));

/** Rules with negative, zero and large alpha; -0 normalised to 0 (JSON cannot hold -0). */
export const ruleArb: fc.Arbitrary<ElasticRule> = fc.record({
  alpha: fc.oneof(
    fc.integer({ min: -1024, max: 1024 }),
    fc.double({ min: -3000, max: 3000, noNaN: true }).map((a) => (a === 0 ? 0 : a)),
  ),
  beta: betaArb.map((b) => (b === 0 ? 0 : b)),
});

/** Small blocks so short sequences still have many blocks; sinks of 0, 1 or 2 blocks. */
export const geometryArb: fc.Arbitrary<MaskGeometry> = fc
  .record({ blockSize: fc.constantFrom(1, 4, 8, 16, 64), sinkBlocks: fc.integer({ min: 0, max: 2 }) })
  .map(({ blockSize, sinkBlocks }) => ({ blockSize, sinkTokens: blockSize * sinkBlocks }));

/** A random valid profile with small shapes. */
export const profileArb: fc.Arbitrary<MoaProfile> = fc
  .record({
    layers: fc.integer({ min: 1, max: 3 }),
    heads: fc.integer({ min: 1, max: 3 }),
    blockSize: fc.constantFrom(4, 16, 64),
    sinkBlocks: fc.integer({ min: 0, max: 2 }),
    blockCounts: fc.uniqueArray(fc.integer({ min: 1, max: 12 }), { minLength: 1, maxLength: 3 }),
    samplesPerLength: fc.integer({ min: 1, max: 50 }),
    seed: fc.integer(),
    model: fc.constantFrom("moa-nano", "llama-3-8b", "m"),
    calibration: fc.string({ maxLength: 30 }),
  })
  .map((p) => {
    const lengths = p.blockCounts.map((nb) => nb * p.blockSize);
    const influence = new Map<number, Float32Array>();
    let state = p.seed >>> 0 || 1;
    for (const nb of p.blockCounts) {
      const data = new Float32Array(p.layers * p.heads * nb * nb);
      for (let k = 0; k < data.length; k++) {
        const qb = Math.floor(k / nb) % nb;
        const kb = k % nb;
        state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
        data[k] = kb <= qb ? (state / 2 ** 32) * 10 ** ((state % 7) - 4) : 0;
      }
      influence.set(nb * p.blockSize, data);
    }
    return {
      model: p.model,
      layers: p.layers,
      heads: p.heads,
      blockSize: p.blockSize,
      sinkTokens: p.sinkBlocks * p.blockSize,
      lengths,
      samplesPerLength: p.samplesPerLength,
      calibration: p.calibration,
      influence,
    };
  });

/** Runs `action`, asserts it throws a MoaError with `code` whose message contains every part. */
export function expectMoaError(action: () => unknown, code: string, ...parts: string[]): MoaError {
  let thrown: unknown;
  try {
    action();
  } catch (error) {
    thrown = error;
  }
  if (thrown === undefined) throw new Error(`expected ${code}, nothing was thrown`);
  const error = thrown as MoaError;
  if (error.name !== "MoaError" || error.code !== code) {
    throw new Error(`expected MoaError ${code}, got ${error.name} ${error.code}: ${error.message}`);
  }
  for (const part of parts) {
    if (!error.message.includes(part))
      throw new Error(`message ${JSON.stringify(error.message)} lacks ${JSON.stringify(part)}`);
  }
  return error;
}
