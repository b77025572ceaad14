/**
 * Profile files with the optional metadata this package adds to DESIGN.md's `moa-profile` format: the model's
 * `architecture`, `kvHeads` and `headDim` (so a solver can read the GQA shape from the profile alone) and the
 * `profileKey` of the run that made it. Core's reader ignores keys it does not know, so these files stay
 * readable by every `moa-profile` reader; core's writer is the one that lays the file out.
 */
import {
  type MoaProfile,
  mergeProfiles,
  parseSafetensors,
  readProfile,
  serializeSafetensors,
  writeProfile,
} from "@moa/core";

/** Optional `__metadata__` keys of a profile (all strings, as safetensors metadata is). */
export interface ProfileExtras {
  architecture?: string;
  kvHeads?: string;
  headDim?: string;
  profileKey?: string;
}

const EXTRA_KEYS = ["architecture", "kvHeads", "headDim", "profileKey"] as const;

/** `writeProfile` plus the extras in `__metadata__`. */
export function writeProfileWithExtras(profile: MoaProfile, extras: ProfileExtras): Uint8Array {
  const bytes = writeProfile(profile);
  const present = EXTRA_KEYS.filter((key) => extras[key] !== undefined);
  if (present.length === 0) return bytes;
  const file = parseSafetensors(bytes, "writeProfile");
  const metadata = { ...file.metadata };
  for (const key of present) metadata[key] = extras[key]!;
  const tensors = [...file.tensors.values()].map((entry) => ({
    name: entry.name,
    dtype: entry.dtype,
    shape: entry.shape,
    data: bytes.subarray(entry.begin, entry.end),
  }));
  return serializeSafetensors(tensors, metadata);
}

/** Reads a profile and its extras. */
export function readProfileWithExtras(
  bytes: Uint8Array,
  source: string,
): { profile: MoaProfile; extras: ProfileExtras } {
  const profile = readProfile(bytes, source);
  const metadata = parseSafetensors(bytes, source).metadata;
  const extras: ProfileExtras = {};
  for (const key of EXTRA_KEYS) if (metadata[key] !== undefined) extras[key] = metadata[key];
  return { profile, extras };
}

/**
 * DESIGN.md: Profile file — partial profiles merge by the mean weighted by their samples (core's
 * `mergeProfiles`). Shape extras are kept where every input agrees; the run key is dropped (the merge is no
 * single run).
 */
export function mergeProfileFiles(inputs: ReadonlyArray<{ profile: MoaProfile; extras: ProfileExtras }>): {
  profile: MoaProfile;
  extras: ProfileExtras;
} {
  const profile = mergeProfiles(inputs.map((input) => input.profile));
  const extras: ProfileExtras = {};
  for (const key of ["architecture", "kvHeads", "headDim"] as const) {
    const values = new Set(inputs.map((input) => input.extras[key]));
    const only = [...values][0];
    if (values.size === 1 && only !== undefined) extras[key] = only;
  }
  return { profile, extras };
}
