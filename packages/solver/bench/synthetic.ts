import type { MoaProfile } from "@moa/core";

/** mulberry32: a small seeded generator, so every run builds the same profile. */
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

export interface SyntheticProfileOptions {
  layers: number;
  heads: number;
  lengths: number[];
  seed?: number;
  blockSize?: number;
}

/**
 * A profile with the structure real ones show (compare the fixtures): most heads are
 * *local* (influence falls off with the distance to the diagonal over a few blocks), some
 * are *retrieval* heads (mass spread over the whole past, with a few hot blocks), some mix
 * both, every head puts mass on the sink, and heads differ in overall importance by
 * orders of magnitude. A head keeps its character at every length.
 */
export function syntheticProfile(options: SyntheticProfileOptions): MoaProfile {
  const { layers, heads, lengths } = options;
  const B = options.blockSize ?? 64;
  const random = seededRandom(options.seed ?? 1);
  interface Head {
    kind: number;
    scale: number;
    reach: number;
    spread: number;
    hot: number[];
  }
  const params: Head[] = [];
  for (let h = 0; h < layers * heads; h++) {
    const u = random();
    const kind = u < 0.6 ? 0 : u < 0.85 ? 1 : 2;
    params.push({
      kind,
      scale: 10 ** (-3 * random()),
      reach: 0.5 + 12 * random() ** 2,
      spread: 0.05 + 0.5 * random(),
      hot: Array.from({ length: 3 }, () => random()),
    });
  }
  const influence = new Map<number, Float32Array>();
  for (const n of lengths) {
    const nb = n / B;
    const data = new Float32Array(layers * heads * nb * nb);
    const noise = seededRandom((options.seed ?? 1) * 7919 + n);
    for (let h = 0; h < layers * heads; h++) {
      const p = params[h]!;
      const base = h * nb * nb;
      const hotBlocks = p.hot.map((x) => Math.floor(x * nb));
      for (let qb = 0; qb < nb; qb++) {
        const row = base + qb * nb;
        for (let kb = 0; kb <= qb; kb++) {
          const distance = qb - kb;
          const local = Math.exp(-distance / p.reach);
          const far = p.spread / (qb + 1);
          let v: number;
          if (p.kind === 0) v = local + 0.02 * far;
          else if (p.kind === 1) v = 0.2 * local + far * (hotBlocks.includes(kb) ? 20 : 1);
          else v = 0.6 * local + 0.5 * far * (hotBlocks.includes(kb) ? 8 : 1);
          if (kb === 0) v += 0.5;
          data[row + kb] = p.scale * v * (0.5 + noise()) * 1e-3;
        }
      }
    }
    influence.set(n, data);
  }
  return {
    model: `synthetic-${layers}x${heads}`,
    layers,
    heads,
    blockSize: B,
    sinkTokens: 64,
    lengths: [...lengths],
    samplesPerLength: 1,
    calibration: `synthetic (seed ${options.seed ?? 1})`,
    influence,
  };
}
