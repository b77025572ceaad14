/**
 * Rotary position embedding frequencies, computed the way Hugging Face transformers computes them
 * (`modeling_rope_utils.py`): float32 arithmetic at every step, so the inverse frequencies match bit for bit
 * up to the last ulp of `pow`. Scaling variants that only change the frequencies (linear, llama3) are folded
 * in here; the kernels apply plain rotate-half RoPE with these frequencies and an attention scale of 1.
 */

const f32 = Math.fround;

export type RopeScaling =
  | { readonly type: "default" }
  | { readonly type: "linear"; readonly factor: number }
  | {
      readonly type: "llama3";
      readonly factor: number;
      readonly lowFreqFactor: number;
      readonly highFreqFactor: number;
      readonly originalMaxPositionEmbeddings: number;
    };

export interface RopeConfig {
  /** Base of the geometric frequency progression (`rope_theta`). */
  readonly theta: number;
  /** Number of leading dimensions of each head that rotate (`head_dim · partial_rotary_factor`). */
  readonly dim: number;
  readonly scaling: RopeScaling;
}

/**
 * `_compute_default_rope_parameters`: inv_freq[i] = 1 / base^(2i / dim), in float32
 * (`torch.arange(0, dim, 2, dtype=int64).float() / dim`, then `base ** x`, then `1.0 / y`).
 */
export function defaultInvFreq(theta: number, dim: number): Float32Array {
  const half = dim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    const exponent = f32(f32(2 * i) / f32(dim));
    inv[i] = f32(1 / f32(f32(theta) ** exponent));
  }
  return inv;
}

/**
 * `_compute_llama3_parameters`: wavelengths shorter than original/high_freq_factor keep their frequency,
 * longer than original/low_freq_factor are divided by `factor`, and the band in between is interpolated.
 */
export function llama3InvFreq(
  theta: number,
  dim: number,
  scaling: Extract<RopeScaling, { type: "llama3" }>,
): Float32Array {
  const inv = defaultInvFreq(theta, dim);
  const factor = f32(scaling.factor);
  const low = f32(scaling.lowFreqFactor);
  const oldContext = f32(scaling.originalMaxPositionEmbeddings);
  // Python-float expressions in transformers are evaluated in double, then meet the float32 tensor.
  const bandWidth = f32(scaling.highFreqFactor - scaling.lowFreqFactor);
  const lowFreqWavelen = f32(scaling.originalMaxPositionEmbeddings / scaling.lowFreqFactor);
  const highFreqWavelen = f32(scaling.originalMaxPositionEmbeddings / scaling.highFreqFactor);
  const twoPi = f32(2 * Math.PI);
  const out = new Float32Array(inv.length);
  for (let i = 0; i < inv.length; i++) {
    const freq = inv[i]!;
    const wavelen = f32(twoPi / freq);
    let scaled = wavelen > lowFreqWavelen ? f32(freq / factor) : freq;
    const isMedium = !(wavelen < highFreqWavelen) && !(wavelen > lowFreqWavelen);
    if (isMedium) {
      const smooth = f32(f32(f32(oldContext / wavelen) - low) / bandWidth);
      // (1 - smooth) * inv_freq_llama / factor + smooth * inv_freq_llama, evaluated left to right in float32.
      const a = f32(f32(f32(1 - smooth) * scaled) / factor);
      const b = f32(smooth * scaled);
      scaled = f32(a + b);
    }
    out[i] = scaled;
  }
  return out;
}

/** Inverse frequencies for a RoPE configuration, scaling folded in (attention scaling is 1 for these types). */
export function ropeInvFreq(rope: RopeConfig): Float32Array {
  switch (rope.scaling.type) {
    case "default":
      return defaultInvFreq(rope.theta, rope.dim);
    case "linear": {
      const inv = defaultInvFreq(rope.theta, rope.dim);
      const factor = f32(rope.scaling.factor);
      for (let i = 0; i < inv.length; i++) inv[i] = f32(inv[i]! / factor);
      return inv;
    }
    case "llama3":
      return llama3InvFreq(rope.theta, rope.dim, rope.scaling);
  }
}
