import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type MoaError, readProfile } from "@moa/core";
import { profileInfluence } from "@moa/runtime";
import { describe, expect, it } from "vitest";
import {
  buildSample,
  defaultCalibration,
  type InfluenceFn,
  PromptFrame,
  profileModel,
  readProfileWithExtras,
  writeProfileWithExtras,
} from "../src/index.js";
import { nanoModel, tempDir } from "./helpers.js";

const model = await nanoModel();
const settings = { lengths: [256, 512], samplesPerLength: 2, answerTokens: 8, seed: "t" };

describe("profileModel", () => {
  it("averages the backward pass's block influence over the samples at each length", async () => {
    const result = await profileModel(model, settings);
    const frame = PromptFrame.of(model);
    for (const n of settings.lengths) {
      const expected = new Float64Array((n / 64) ** 2 * 16);
      const losses: number[] = [];
      for (let index = 0; index < 2; index++) {
        const sample = await buildSample(model, frame, defaultCalibration(), {
          length: n,
          index,
          answerTokens: 8,
          seedName: `t/profile/${n}/${index}`,
        });
        const { loss, influence } = profileInfluence(model, sample.ids, sample.answerStart);
        influence.forEach((v, k) => {
          expected[k]! += v / 2;
        });
        losses.push(loss);
      }
      expect(Array.from(result.profile.influence.get(n)!)).toEqual(Array.from(Float32Array.from(expected)));
      expect(result.samples.filter((s) => s.length === n).map((s) => s.loss)).toEqual(losses);
    }
    expect(result.profile.samplesPerLength).toBe(2);
    expect(result.profile.model).toBe("moa-nano");
    expect(result.profile.calibration).toContain("built-in set v1");
    expect(result.extras).toMatchObject({ architecture: "llama", kvHeads: "4", headDim: "64" });
  });

  it("resumes after an interruption and ends bit-identical to an uninterrupted run", async () => {
    const whole = await profileModel(model, settings);
    const stateDir = join(await tempDir(), "state");
    let calls = 0;
    const interrupted: InfluenceFn = (m, ids, answerStart) => {
      if (++calls === 3) throw new Error("interrupted");
      return profileInfluence(m, ids, answerStart);
    };
    await expect(profileModel(model, { ...settings, stateDir, influence: interrupted })).rejects.toThrow(
      "interrupted",
    );
    expect((await readdir(stateDir)).sort()).toEqual(["length-256.bin", "run.json"]);
    const events: string[] = [];
    const resumed = await profileModel(model, {
      ...settings,
      stateDir,
      onProgress: (e) => events.push(`${e.event} ${e.done}/${e.total}`),
    });
    expect(resumed.resumed).toBe(2);
    expect(events).toEqual(["resume 2/4", "begin 2/4", "end 3/4", "begin 3/4", "end 4/4"]);
    const a = writeProfileWithExtras(whole.profile, whole.extras);
    const b = writeProfileWithExtras(resumed.profile, resumed.extras);
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true);
    expect(resumed.samples).toEqual(whole.samples.map((s) => ({ ...s, seconds: expect.any(Number) })));
  });

  it("refuses a state folder made with other settings and says which differ", async () => {
    const stateDir = join(await tempDir(), "state");
    await profileModel(model, { ...settings, lengths: [256], samplesPerLength: 1, stateDir });
    const error = await profileModel(model, {
      ...settings,
      lengths: [256],
      samplesPerLength: 1,
      seed: "u",
      stateDir,
    })
      .then(() => undefined)
      .catch((e: MoaError) => e);
    expect(error?.code).toBe("E_PROFILE_STATE");
    expect(error?.message).toContain('seed: "t" then, "u" now');
  });

  it("refuses a damaged accumulator instead of averaging garbage", async () => {
    const stateDir = join(await tempDir(), "state");
    await profileModel(model, { ...settings, lengths: [256], samplesPerLength: 1, stateDir });
    const file = join(stateDir, "length-256.bin");
    const bytes = await readFile(file);
    await writeFile(file, bytes.subarray(0, bytes.length - 8));
    await expect(
      profileModel(model, { ...settings, lengths: [256], samplesPerLength: 1, stateDir }),
    ).rejects.toThrow(/length-256\.bin: is damaged/);
  });

  it("rejects lengths that are not multiples of 64 or exceed the context", async () => {
    await expect(profileModel(model, { lengths: [300] })).rejects.toThrow(/multiple of 64/);
    await expect(profileModel(model, { lengths: [4096] })).rejects.toThrow(/exceeds the model's context/);
  });

  it("writes the GQA shape into the profile's metadata, readable by core's reader", async () => {
    const result = await profileModel(model, { ...settings, lengths: [256], samplesPerLength: 1 });
    const bytes = writeProfileWithExtras(result.profile, result.extras);
    expect(readProfile(bytes, "p").lengths).toEqual([256]);
    expect(readProfileWithExtras(bytes, "p").extras).toEqual(result.extras);
  });
});
