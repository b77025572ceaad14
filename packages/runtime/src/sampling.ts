/**
 * Token sampling: greedy (temperature 0) or temperature → top-k → top-p → draw, in the order Hugging Face
 * `generate()` applies its logits warpers. Draws come from a seeded xoshiro128** generator, and candidate
 * order is fully determined (logit descending, then token id ascending), so a seed reproduces a run exactly.
 */

export interface SamplingOptions {
  /** 0 (default) picks the argmax; otherwise logits are divided by it before top-k/top-p and the draw. */
  readonly temperature?: number;
  /** Keep only the k most likely tokens (and any tied with the k-th); 0 or undefined = no limit. */
  readonly topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches p; 1 or undefined = no limit. */
  readonly topP?: number;
  /** Seed of the generator (an integer; `Sampler` defaults to 0, `generate` to a random one); same seed, same logits → same tokens. */
  readonly seed?: number;
}

/** xoshiro128** (Blackman & Vigna), seeded through splitmix32 so that nearby seeds give unrelated streams. */
export class Xoshiro128 {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: number) {
    let x = seed >>> 0;
    const splitmix = (): number => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s0 = splitmix();
    this.s1 = splitmix();
    this.s2 = splitmix();
    this.s3 = splitmix();
  }

  /** Next 32-bit unsigned integer. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3 >>> 0, 11);
    this.s0 >>>= 0;
    this.s1 >>>= 0;
    this.s2 >>>= 0;
    return result;
  }

  /** Uniform double in [0, 1) with 53 random bits. */
  nextFloat(): number {
    const hi = this.nextUint32() >>> 5; // 27 bits
    const lo = this.nextUint32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** Index of the largest value; the first one on ties (as `torch.argmax`). */
export function argmax(values: Float32Array): number {
  let best = 0;
  let bestValue = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (v > bestValue) {
      bestValue = v;
      best = i;
    }
  }
  return best;
}

/** Checks sampling options at the API boundary; returns a message naming the bad field, or undefined. */
export function samplingOptionsProblem(options: SamplingOptions): string | undefined {
  const { temperature, topK, topP, seed } = options;
  if (temperature !== undefined && !(Number.isFinite(temperature) && temperature >= 0)) {
    return `temperature must be a finite number ≥ 0, got ${temperature}`;
  }
  if (topK !== undefined && !(Number.isInteger(topK) && topK >= 0)) {
    return `topK must be an integer ≥ 0, got ${topK}`;
  }
  if (topP !== undefined && !(Number.isFinite(topP) && topP > 0 && topP <= 1)) {
    return `topP must be in (0, 1], got ${topP}`;
  }
  if (seed !== undefined && !Number.isInteger(seed)) return `seed must be an integer, got ${seed}`;
  return undefined;
}

/** Logits this far below the best (in units of the temperature) are never drawn: e^-40 ≈ 4e-18. */
const TAIL_MARGIN = 40;

/** Draws tokens from logit rows. One sampler per sequence keeps each sequence's stream reproducible. */
export class Sampler {
  readonly temperature: number;
  readonly topK: number;
  readonly topP: number;
  private readonly rng: Xoshiro128;
  private order: Int32Array = new Int32Array(0);
  private probs: Float64Array = new Float64Array(0);

  constructor(options: SamplingOptions = {}) {
    const problem = samplingOptionsProblem(options);
    if (problem !== undefined) throw new RangeError(problem);
    this.temperature = options.temperature ?? 0;
    this.topK = options.topK ?? 0;
    this.topP = options.topP ?? 1;
    this.rng = new Xoshiro128(options.seed ?? 0);
  }

  get greedy(): boolean {
    return this.temperature === 0;
  }

  /** Picks the next token from one row of logits. */
  sample(logits: Float32Array): number {
    if (this.greedy) return argmax(logits);
    const vocab = logits.length;
    if (this.order.length < vocab) {
      this.order = new Int32Array(vocab);
      this.probs = new Float64Array(vocab);
    }
    // Candidates: tokens within TAIL_MARGIN·T of the best logit. The rest have probability below e^-40 ≈ 4e-18
    // of the best token's, so no 53-bit draw can land on them; skipping them keeps each step O(candidates)
    // instead of sorting a 128k vocabulary.
    const best = logits[argmax(logits)]!;
    const cutoff = best - TAIL_MARGIN * this.temperature;
    const order = this.order;
    let count = 0;
    for (let i = 0; i < vocab; i++) if (logits[i]! >= cutoff) order[count++] = i;
    const candidates = order.subarray(0, count);
    // Descending logit, ascending id on ties: a total order, so the result never depends on sort stability.
    candidates.sort((a, b) => logits[b]! - logits[a]! || a - b);

    // top-k keeps every token whose logit is ≥ the k-th largest (HF's `scores < topk[..., -1]` removal).
    let kept = count;
    if (this.topK > 0 && this.topK < count) {
      const threshold = logits[candidates[this.topK - 1]!]!;
      kept = this.topK;
      while (kept < count && logits[candidates[kept]!]! >= threshold) kept++;
    }

    const probs = this.probs;
    let total = 0;
    for (let r = 0; r < kept; r++) {
      const p = Math.exp((logits[candidates[r]!]! - best) / this.temperature);
      probs[r] = p;
      total += p;
    }

    // top-p keeps the shortest prefix whose probability mass reaches p (at least one token).
    if (this.topP < 1) {
      const target = this.topP * total;
      let mass = 0;
      let r = 0;
      while (r < kept) {
        mass += probs[r]!;
        r++;
        if (mass >= target) break;
      }
      kept = r;
      total = mass;
    }

    const u = this.rng.nextFloat() * total;
    let acc = 0;
    for (let r = 0; r < kept; r++) {
      acc += probs[r]!;
      if (u < acc) return candidates[r]!;
    }
    return candidates[kept - 1]!;
  }
}
