/**
 * DESIGN.md: Profile file — `moa-profile`, a safetensors file with one float32 tensor
 * `influence.<n>` of shape `[layers, heads, n/B, n/B]` per profiled length `n`: the
 * attention influence summed over each causal `B×B` block and averaged over samples.
 */
import { fail } from "./errors.js";
import {
  parseSafetensors,
  readFloat32Tensor,
  serializeSafetensors,
  type TensorToWrite,
} from "./safetensors.js";

export interface MoaProfile {
  /** The model profiled (metadata `model`; "unknown" when a file lacks it). */
  model: string;
  layers: number;
  heads: number;
  blockSize: number;
  sinkTokens: number;
  /** Profiled lengths, each a multiple of `blockSize`, in file order. */
  lengths: number[];
  /** Calibration samples averaged at each length (the weight of this profile in a merge). */
  samplesPerLength: number;
  /** What the samples were. */
  calibration: string;
  /** Length `n` → block influence `[layers, heads, n/B, n/B]` row-major; upper triangle zero. */
  influence: Map<number, Float32Array>;
}

export const PROFILE_FORMAT = "moa-profile";
export const PROFILE_VERSION = 1;

const E = "E_PROFILE";
const TENSOR_NAME = /^influence\.(\d+)$/;

/** Tensor name of the profile at length `n`. */
export function influenceTensorName(n: number): string {
  return `influence.${n}`;
}

function metaInt(
  metadata: Record<string, string>,
  key: string,
  source: string,
  min: number,
  fallback?: number,
): number {
  const raw = metadata[key];
  if (raw === undefined) {
    if (fallback !== undefined) return fallback;
    fail(E, source, `__metadata__.${key}`, raw, `is required (an integer >= ${min}, as a string)`);
  }
  const value = Number(raw.trim());
  if (!/^\s*\d+\s*$/.test(raw) || !Number.isSafeInteger(value) || value < min) {
    fail(E, source, `__metadata__.${key}`, raw, `must be an integer >= ${min}, as a string`);
  }
  return value;
}

/** Parses a profile file and validates metadata, shapes and every value. */
export function readProfile(bytes: Uint8Array, source: string): MoaProfile {
  const file = parseSafetensors(bytes, source);
  const meta = file.metadata;
  if (meta.format !== PROFILE_FORMAT) {
    fail(E, source, "__metadata__.format", meta.format, `must be "${PROFILE_FORMAT}"`);
  }
  if (meta.version !== String(PROFILE_VERSION)) {
    fail(
      E,
      source,
      "__metadata__.version",
      meta.version,
      `must be "${PROFILE_VERSION}" (this reader's version)`,
    );
  }
  const blockSize = metaInt(meta, "blockSize", source, 1);
  const sinkTokens = metaInt(meta, "sinkTokens", source, 0);
  if (sinkTokens % blockSize !== 0) {
    fail(
      E,
      source,
      "__metadata__.sinkTokens",
      meta.sinkTokens,
      `must be a multiple of blockSize (${blockSize})`,
    );
  }
  const samplesPerLength = metaInt(meta, "samplesPerLength", source, 1, 1);
  if (meta.lengths === undefined || meta.lengths.trim() === "") {
    fail(
      E,
      source,
      "__metadata__.lengths",
      meta.lengths,
      'is required: comma-separated lengths, e.g. "2048,4096"',
    );
  }
  const lengths = meta.lengths.split(",").map((part, k) => {
    const value = Number(part.trim());
    if (!/^\s*\d+\s*$/.test(part) || !Number.isSafeInteger(value) || value <= 0) {
      fail(E, source, `__metadata__.lengths[${k}]`, part, "must be a positive integer");
    }
    if (value % blockSize !== 0) {
      fail(
        E,
        source,
        `__metadata__.lengths[${k}]`,
        part,
        `must be a multiple of blockSize (${blockSize}) so n/B is an integer`,
      );
    }
    return value;
  });

  const influence = new Map<number, Float32Array>();
  let layers = -1;
  let heads = -1;
  for (const entry of file.tensors.values()) {
    const match = TENSOR_NAME.exec(entry.name);
    const n = match === null ? Number.NaN : Number(match[1]);
    if (!lengths.includes(n)) {
      fail(
        E,
        source,
        "tensor name",
        entry.name,
        `expected influence.<n> for n in lengths (${lengths.join(",")})`,
      );
    }
    if (entry.dtype !== "F32") fail(E, source, `${entry.name}.dtype`, entry.dtype, "must be F32");
    if (entry.shape.length !== 4) {
      fail(E, source, `${entry.name}.shape`, entry.shape, "must be [layers, heads, n/B, n/B]");
    }
    const [l, h] = entry.shape as [number, number, number, number];
    if (layers < 0) {
      layers = l;
      heads = h;
    } else if (l !== layers || h !== heads) {
      fail(
        E,
        source,
        `${entry.name}.shape`,
        entry.shape,
        `must have ${layers} layers and ${heads} heads as the other lengths`,
      );
    }
    influence.set(n, readFloat32Tensor(bytes, entry, source));
    const nBlocks = n / blockSize;
    if (entry.shape[2] !== nBlocks || entry.shape[3] !== nBlocks) {
      fail(
        E,
        source,
        `${entry.name}.shape`,
        entry.shape,
        `must be [layers, heads, ${n}/${blockSize}, ${n}/${blockSize}]`,
      );
    }
  }
  for (const key of ["layers", "heads"] as const) {
    const declared = meta[key] === undefined ? undefined : metaInt(meta, key, source, 1);
    const actual = key === "layers" ? layers : heads;
    if (declared !== undefined && declared !== actual) {
      fail(E, source, `__metadata__.${key}`, meta[key], `disagrees with the tensors' shape (${actual})`);
    }
  }
  const profile: MoaProfile = {
    model: meta.model ?? "unknown",
    layers,
    heads,
    blockSize,
    sinkTokens,
    lengths,
    samplesPerLength,
    calibration: meta.calibration ?? "",
    influence,
  };
  validateProfile(profile, source, E);
  return profile;
}

/**
 * Checks a profile object: geometry, lengths (unique multiples of `B`), one tensor of
 * `layers·heads·(n/B)²` values per length, every value finite and ≥ 0, and the upper
 * triangle (`kb > qb`) zero. Errors name the tensor, the index and the value.
 */
export function validateProfile(profile: MoaProfile, source: string, code: string = E): void {
  const { blockSize, sinkTokens, layers, heads, lengths } = profile;
  if (!Number.isSafeInteger(blockSize) || blockSize < 1)
    fail(code, source, "blockSize", blockSize, "must be a positive integer");
  if (!Number.isSafeInteger(sinkTokens) || sinkTokens < 0 || sinkTokens % blockSize !== 0) {
    fail(
      code,
      source,
      "sinkTokens",
      sinkTokens,
      `must be a non-negative multiple of blockSize (${blockSize})`,
    );
  }
  if (!Number.isSafeInteger(layers) || layers < 1)
    fail(code, source, "layers", layers, "must be a positive integer");
  if (!Number.isSafeInteger(heads) || heads < 1)
    fail(code, source, "heads", heads, "must be a positive integer");
  if (!Number.isSafeInteger(profile.samplesPerLength) || profile.samplesPerLength < 1) {
    fail(code, source, "samplesPerLength", profile.samplesPerLength, "must be a positive integer");
  }
  if (lengths.length === 0) fail(code, source, "lengths", lengths, "must list at least one length");
  const seen = new Set<number>();
  lengths.forEach((n, k) => {
    if (!Number.isSafeInteger(n) || n <= 0 || n % blockSize !== 0) {
      fail(
        code,
        source,
        `lengths[${k}]`,
        n,
        `must be a positive multiple of blockSize (${blockSize}) so n/B is an integer`,
      );
    }
    if (seen.has(n)) fail(code, source, `lengths[${k}]`, n, "is listed twice");
    seen.add(n);
  });
  for (const n of profile.influence.keys()) {
    if (!seen.has(n)) fail(code, source, "influence", influenceTensorName(n), "has no entry in lengths");
  }
  for (const n of lengths) {
    const name = influenceTensorName(n);
    const data = profile.influence.get(n);
    if (data === undefined) fail(code, source, name, data, `length ${n} is in lengths but has no tensor`);
    const nb = n / blockSize;
    const expected = layers * heads * nb * nb;
    if (data.length !== expected) {
      fail(
        code,
        source,
        `${name}.length`,
        data.length,
        `must be layers·heads·(n/B)² = ${layers}·${heads}·${nb}² = ${expected}`,
      );
    }
    checkValues(data, name, layers, heads, nb, source, code);
  }
}

function checkValues(
  data: Float32Array,
  name: string,
  layers: number,
  heads: number,
  nb: number,
  source: string,
  code: string,
): void {
  let k = 0;
  for (let l = 0; l < layers; l++) {
    for (let h = 0; h < heads; h++) {
      for (let qb = 0; qb < nb; qb++) {
        for (let kb = 0; kb < nb; kb++, k++) {
          const v = data[k]!;
          // One comparison on the hot path: finite non-negative values below the diagonal pass.
          if (v >= 0 && v < Number.POSITIVE_INFINITY && (kb <= qb || v === 0)) continue;
          const field = `${name}[${l},${h},${qb},${kb}]`;
          if (!(v >= 0) || v === Number.POSITIVE_INFINITY) {
            fail(code, source, field, v, "influence must be finite and >= 0");
          }
          fail(code, source, field, v, "the upper triangle (kb > qb, non-causal blocks) must be 0");
        }
      }
    }
  }
}

/** Writes a profile as a `moa-profile` safetensors file (metadata values are strings). */
export function writeProfile(profile: MoaProfile): Uint8Array {
  validateProfile(profile, "writeProfile", "E_ARGUMENT");
  const metadata: Record<string, string> = {
    format: PROFILE_FORMAT,
    version: String(PROFILE_VERSION),
    model: profile.model,
    blockSize: String(profile.blockSize),
    sinkTokens: String(profile.sinkTokens),
    lengths: profile.lengths.join(","),
    samplesPerLength: String(profile.samplesPerLength),
    calibration: profile.calibration,
  };
  const nBlocks = (n: number) => n / profile.blockSize;
  const tensors: TensorToWrite[] = profile.lengths.map((n) => {
    const data = profile.influence.get(n)!;
    return {
      name: influenceTensorName(n),
      dtype: "F32",
      shape: [profile.layers, profile.heads, nBlocks(n), nBlocks(n)],
      data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
    };
  });
  return serializeSafetensors(tensors, metadata);
}

/**
 * DESIGN.md: Profile file — partial profiles (same model, shape, geometry and lengths)
 * merge by the mean weighted by `samplesPerLength`; the result counts all samples.
 */
export function mergeProfiles(profiles: MoaProfile[]): MoaProfile {
  const where = "mergeProfiles";
  const first = profiles[0];
  if (first === undefined) fail("E_ARGUMENT", where, "profiles", profiles, "must hold at least one profile");
  profiles.forEach((p, k) => {
    validateProfile(p, `${where}: profiles[${k}]`, "E_ARGUMENT");
    for (const key of ["model", "layers", "heads", "blockSize", "sinkTokens"] as const) {
      if (p[key] !== first[key]) {
        fail(
          E,
          where,
          `profiles[${k}].${key}`,
          p[key],
          `differs from profiles[0].${key} = ${JSON.stringify(first[key])}`,
        );
      }
    }
    const same =
      p.lengths.length === first.lengths.length && p.lengths.every((n) => first.lengths.includes(n));
    if (!same) {
      fail(
        E,
        where,
        `profiles[${k}].lengths`,
        p.lengths,
        `differs from profiles[0].lengths = ${first.lengths.join(",")}`,
      );
    }
  });
  const total = profiles.reduce((s, p) => s + p.samplesPerLength, 0);
  const influence = new Map<number, Float32Array>();
  for (const n of first.lengths) {
    const size = first.influence.get(n)!.length;
    const acc = new Float64Array(size);
    for (const p of profiles) {
      const data = p.influence.get(n)!;
      const w = p.samplesPerLength / total;
      for (let k = 0; k < size; k++) acc[k]! += w * data[k]!;
    }
    influence.set(n, Float32Array.from(acc));
  }
  const calibrations = [...new Set(profiles.map((p) => p.calibration).filter((c) => c !== ""))];
  return {
    model: first.model,
    layers: first.layers,
    heads: first.heads,
    blockSize: first.blockSize,
    sinkTokens: first.sinkTokens,
    lengths: [...first.lengths],
    samplesPerLength: total,
    calibration: calibrations.join("; "),
    influence,
  };
}

/** The `[n/B, n/B]` block influence of one head at length `n` (a view, not a copy). */
export function profileBlockInfluence(
  profile: MoaProfile,
  n: number,
  layer: number,
  head: number,
): Float32Array {
  const where = "profileBlockInfluence";
  const data = profile.influence.get(n);
  if (data === undefined)
    fail("E_ARGUMENT", where, "n", n, `not profiled (lengths: ${profile.lengths.join(",")})`);
  if (!Number.isInteger(layer) || layer < 0 || layer >= profile.layers) {
    fail("E_ARGUMENT", where, "layer", layer, `must be an integer in [0, ${profile.layers - 1}]`);
  }
  if (!Number.isInteger(head) || head < 0 || head >= profile.heads) {
    fail("E_ARGUMENT", where, "head", head, `must be an integer in [0, ${profile.heads - 1}]`);
  }
  const nb = n / profile.blockSize;
  const begin = (layer * profile.heads + head) * nb * nb;
  return data.subarray(begin, begin + nb * nb);
}
