import { readFileSync } from "node:fs";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type MoaProfile,
  mergeProfiles,
  parseSafetensors,
  profileBlockInfluence,
  readProfile,
  serializeSafetensors,
  type TensorToWrite,
  writeProfile,
} from "../src/index.js";
import { expectMoaError, profileArb } from "./helpers.js";

const fixtureBytes = (name: string) => readFileSync(new URL(`../../../fixtures/${name}`, import.meta.url));

/** A fixed small profile: 2 layers, 2 heads, B = 4, G = 4, lengths 8 and 12. */
function smallProfile(): MoaProfile {
  const influence = new Map<number, Float32Array>();
  for (const n of [8, 12]) {
    const nb = n / 4;
    const data = new Float32Array(4 * nb * nb);
    for (let k = 0; k < data.length; k++) if (k % nb <= Math.floor(k / nb) % nb) data[k] = (k % 5) + 0.5;
    influence.set(n, data);
  }
  return {
    model: "small",
    layers: 2,
    heads: 2,
    blockSize: 4,
    sinkTokens: 4,
    lengths: [8, 12],
    samplesPerLength: 3,
    calibration: "unit test",
    influence,
  };
}

/** Overwrites one float of a written profile, bypassing writeProfile's own validation. */
function poke(bytes: Uint8Array, tensor: string, index: number, value: number): Uint8Array {
  const copy = bytes.slice();
  const entry = parseSafetensors(copy, "poke").tensors.get(tensor)!;
  new DataView(copy.buffer).setFloat32(entry.begin + index * 4, value, true);
  return copy;
}

const METADATA = {
  format: "moa-profile",
  version: "1",
  model: "small",
  blockSize: "4",
  sinkTokens: "4",
  lengths: "8",
  samplesPerLength: "3",
  calibration: "x",
};
function withMetadata(metadata: Record<string, string>, tensors?: TensorToWrite[]): Uint8Array {
  const t = tensors ?? [{ name: "influence.8", dtype: "F32", shape: [1, 1, 2, 2], data: new Uint8Array(16) }];
  return serializeSafetensors(t, metadata);
}

describe("profile round trip", () => {
  it("write → read returns the same profile (random small profiles)", () => {
    fc.assert(
      fc.property(profileArb, (profile) => {
        expect(readProfile(writeProfile(profile), "p.safetensors")).toEqual(profile);
      }),
      { numRuns: 200 },
    );
  });

  it("reads from a Node Buffer at an unaligned offset and copies the values out of it", () => {
    const bytes = writeProfile(smallProfile());
    const pool = Buffer.alloc(bytes.length + 3);
    pool.set(bytes, 3);
    const unaligned = pool.subarray(3);
    const profile = readProfile(unaligned, "unaligned");
    expect(profile).toEqual(smallProfile());
    unaligned.fill(0);
    expect(profile).toEqual(smallProfile());
  });

  it("writes exactly the metadata keys of DESIGN.md, all strings", () => {
    const file = parseSafetensors(writeProfile(smallProfile()), "small");
    expect(file.metadata).toEqual({
      format: "moa-profile",
      version: "1",
      model: "small",
      blockSize: "4",
      sinkTokens: "4",
      lengths: "8,12",
      samplesPerLength: "3",
      calibration: "unit test",
    });
    expect(file.tensors.get("influence.12")).toMatchObject({ dtype: "F32", shape: [2, 2, 3, 3] });
  });

  it("profileBlockInfluence is the [n/B, n/B] view of one (layer, head)", () => {
    const profile = smallProfile();
    const view = profileBlockInfluence(profile, 12, 1, 0);
    expect(view.length).toBe(9);
    expect(Array.from(view)).toEqual(Array.from(profile.influence.get(12)!.slice(2 * 9, 3 * 9)));
    expectMoaError(
      () => profileBlockInfluence(profile, 16, 0, 0),
      "E_ARGUMENT",
      "n = 16",
      "not profiled (lengths: 8,12)",
    );
    expectMoaError(() => profileBlockInfluence(profile, 8, 2, 0), "E_ARGUMENT", "layer = 2", "[0, 1]");
  });
});

describe("profile merge", () => {
  it("merge is the mean weighted by samplesPerLength, and counts all samples", () => {
    fc.assert(
      fc.property(
        profileArb,
        fc.array(fc.tuple(fc.integer({ min: 1, max: 20 }), fc.integer()), { minLength: 1, maxLength: 3 }),
        (base, others) => {
          const parts: MoaProfile[] = [base];
          for (const [samples, seed] of others) {
            const influence = new Map<number, Float32Array>();
            for (const [n, data] of base.influence) {
              influence.set(
                n,
                data.map((v, k) => v * (((seed + k) & 7) / 4)),
              );
            }
            parts.push({ ...base, samplesPerLength: samples, calibration: `part ${samples}`, influence });
          }
          const merged = mergeProfiles(parts);
          const total = parts.reduce((s, p) => s + p.samplesPerLength, 0);
          expect(merged.samplesPerLength).toBe(total);
          for (const n of base.lengths) {
            const got = merged.influence.get(n)!;
            for (let k = 0; k < got.length; k++) {
              let expected = 0;
              for (const p of parts) expected += p.samplesPerLength * p.influence.get(n)![k]!;
              expected /= total;
              if (Math.abs(got[k]! - expected) > 1e-6 * Math.abs(expected) + 1e-30) {
                expect.fail(`influence.${n}[${k}] = ${got[k]}, expected ${expected}`);
              }
            }
          }
          // The merged profile is itself valid and survives a write → read.
          expect(readProfile(writeProfile(merged), "merged")).toEqual(merged);
        },
      ),
      { numRuns: 100 },
    );
  });

  it("merging one profile returns an equal profile", () => {
    const p = smallProfile();
    expect(mergeProfiles([p])).toEqual(p);
  });

  it("refuses profiles of another model, shape or lengths, naming the field", () => {
    const p = smallProfile();
    expectMoaError(
      () => mergeProfiles([p, { ...p, model: "other" }]),
      "E_PROFILE",
      'profiles[1].model = "other"',
      'profiles[0].model = "small"',
    );
    expectMoaError(
      () => mergeProfiles([p, { ...p, sinkTokens: 0 }]),
      "E_PROFILE",
      "profiles[1].sinkTokens = 0",
      "profiles[0].sinkTokens = 4",
    );
    expectMoaError(
      () => mergeProfiles([p, { ...p, samplesPerLength: 0 }]),
      "E_ARGUMENT",
      "profiles[1]",
      "samplesPerLength = 0",
    );
    const q = { ...p, lengths: [8], influence: new Map([[8, p.influence.get(8)!]]) };
    expectMoaError(() => mergeProfiles([p, q]), "E_PROFILE", "profiles[1].lengths = [8]", "8,12");
    expectMoaError(() => mergeProfiles([]), "E_ARGUMENT", "profiles = []");
  });
});

describe("profile validation errors name the tensor, the index and the value", () => {
  const src = "bad.profile.safetensors";
  const bytes = writeProfile(smallProfile());

  it("NaN, infinity and negative influence", () => {
    // influence.12 is [2, 2, 3, 3]: index 9·3 + 3·2 + 1 = (layer 1, head 1, qb 2, kb 1).
    expectMoaError(
      () => readProfile(poke(bytes, "influence.12", 34, Number.NaN), src),
      "E_PROFILE",
      src,
      "influence.12[1,1,2,1] = NaN",
      "finite and >= 0",
    );
    expectMoaError(
      () => readProfile(poke(bytes, "influence.8", 0, Number.POSITIVE_INFINITY), src),
      "E_PROFILE",
      "influence.8[0,0,0,0] = Infinity",
    );
    expectMoaError(
      () => readProfile(poke(bytes, "influence.8", 3, -0.25), src),
      "E_PROFILE",
      "influence.8[0,0,1,1] = -0.25",
    );
  });

  it("non-zero upper triangle", () => {
    expectMoaError(
      () => readProfile(poke(bytes, "influence.12", 2, 0.5), src),
      "E_PROFILE",
      src,
      "influence.12[0,0,0,2] = 0.5",
      "upper triangle (kb > qb",
    );
  });

  it("metadata: format, version, blockSize, lengths", () => {
    expectMoaError(
      () => readProfile(withMetadata({ ...METADATA, format: "pt" }), src),
      "E_PROFILE",
      src,
      '__metadata__.format = "pt"',
      'must be "moa-profile"',
    );
    expectMoaError(
      () => readProfile(withMetadata({ ...METADATA, version: "2" }), src),
      "E_PROFILE",
      '__metadata__.version = "2"',
    );
    expectMoaError(
      () => readProfile(withMetadata({ ...METADATA, blockSize: "x4" }), src),
      "E_PROFILE",
      '__metadata__.blockSize = "x4"',
    );
    expectMoaError(
      () => readProfile(withMetadata({ ...METADATA, lengths: "8,abc" }), src),
      "E_PROFILE",
      '__metadata__.lengths[1] = "abc"',
    );
    expectMoaError(
      () => readProfile(withMetadata({ ...METADATA, lengths: "8,10" }), src),
      "E_PROFILE",
      '__metadata__.lengths[1] = "10"',
      "multiple of blockSize (4)",
    );
    const { blockSize: _omit, ...noBlockSize } = METADATA;
    expectMoaError(
      () => readProfile(withMetadata(noBlockSize), src),
      "E_PROFILE",
      "__metadata__.blockSize = undefined (missing)",
      "is required",
    );
  });

  it("accepts a file without model, samplesPerLength or calibration, with defaults", () => {
    const { model: _m, samplesPerLength: _s, calibration: _c, ...minimal } = METADATA;
    const profile = readProfile(withMetadata(minimal), src);
    expect(profile).toMatchObject({
      model: "unknown",
      samplesPerLength: 1,
      calibration: "",
      layers: 1,
      heads: 1,
    });
  });

  it("tensors: wrong dtype, wrong shape, missing length, unexpected name, layers differing across lengths", () => {
    const t = (name: string, shape: number[], dtype: "F32" | "F16" = "F32"): TensorToWrite => ({
      name,
      dtype,
      shape,
      data: new Uint8Array(shape.reduce((a, d) => a * d, 1) * (dtype === "F32" ? 4 : 2)),
    });
    expectMoaError(
      () => readProfile(withMetadata(METADATA, [t("influence.8", [1, 1, 2, 2], "F16")]), src),
      "E_PROFILE",
      src,
      'influence.8.dtype = "F16"',
      "must be F32",
    );
    expectMoaError(
      () => readProfile(withMetadata(METADATA, [t("influence.8", [1, 1, 3, 3])]), src),
      "E_PROFILE",
      "influence.8.shape = [1,1,3,3]",
      "8/4",
    );
    expectMoaError(
      () => readProfile(withMetadata(METADATA, [t("influence.8", [1, 4])]), src),
      "E_PROFILE",
      "influence.8.shape = [1,4]",
    );
    expectMoaError(
      () =>
        readProfile(withMetadata({ ...METADATA, lengths: "8,16" }, [t("influence.8", [1, 1, 2, 2])]), src),
      "E_PROFILE",
      "influence.16",
      "has no tensor",
    );
    expectMoaError(
      () => readProfile(withMetadata(METADATA, [t("influence.8", [1, 1, 2, 2]), t("attn", [1])]), src),
      "E_PROFILE",
      'tensor name = "attn"',
    );
    expectMoaError(
      () =>
        readProfile(
          withMetadata({ ...METADATA, lengths: "8,16" }, [
            t("influence.8", [1, 1, 2, 2]),
            t("influence.16", [2, 1, 4, 4]),
          ]),
          src,
        ),
      "E_PROFILE",
      "influence.16.shape = [2,1,4,4]",
      "1 layers and 1 heads",
    );
    expectMoaError(
      () => readProfile(withMetadata({ ...METADATA, layers: "2" }), src),
      "E_PROFILE",
      '__metadata__.layers = "2"',
      "disagrees",
    );
  });

  it("a truncated profile file is a safetensors error naming the file", () => {
    expectMoaError(
      () => readProfile(bytes.subarray(0, bytes.length - 4), src),
      "E_SAFETENSORS",
      src,
      "influence.12.data_offsets",
    );
  });
});

describe("real profile fixtures", () => {
  it("moa-nano.profile.safetensors: 4 layers × 4 heads at 512, 1024, 2048", () => {
    const p = readProfile(fixtureBytes("moa-nano.profile.safetensors"), "moa-nano.profile.safetensors");
    expect(p).toMatchObject({
      model: "moa-nano",
      layers: 4,
      heads: 4,
      blockSize: 64,
      sinkTokens: 64,
      samplesPerLength: 12,
    });
    expect(p.lengths).toEqual([512, 1024, 2048]);
    expect(p.calibration).toMatch(/lines/);
    expect(p.influence.get(2048)!.length).toBe(4 * 4 * 32 * 32);
    expect(readProfile(writeProfile(p), "again")).toEqual(p);
  });

  it("moa-tiny.profile.safetensors: 6 layers × 6 heads at 2048, 4096, 8192, every head with non-zero influence", () => {
    const p = readProfile(fixtureBytes("moa-tiny.profile.safetensors"), "moa-tiny.profile.safetensors");
    expect(p).toMatchObject({
      model: "moa-tiny",
      layers: 6,
      heads: 6,
      blockSize: 64,
      sinkTokens: 64,
      samplesPerLength: 12,
    });
    expect(p.lengths).toEqual([2048, 4096, 8192]);
    for (let layer = 0; layer < 6; layer++) {
      for (let head = 0; head < 6; head++) {
        const total = profileBlockInfluence(p, 8192, layer, head).reduce((a, v) => a + v, 0);
        expect(total).toBeGreaterThan(0);
      }
    }
  });
});
