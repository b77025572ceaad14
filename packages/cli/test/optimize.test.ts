import { copyFile, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  candidateGrid,
  parsePlanText,
  parseSafetensors,
  planKvDensity,
  readProfile,
  ruleKey,
  ruleLossTable,
} from "@moa/core";
import { type ProfileExtras, writeProfileWithExtras } from "@moa/profiler";
import { describe, expect, it } from "vitest";
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE } from "../src/errors.js";
import { fixture, runCli, tempDir } from "./run-cli.js";

const TINY_PROFILE = fixture("moa-tiny.profile.safetensors");

/** Σ over heads of the rule loss of each head's rule, computed from the profile independently of the solver. */
function planLoss(profileBytes: Uint8Array, rules: { alpha: number; beta: number }[][], n: number): number {
  const profile = readProfile(profileBytes, "profile");
  const flat = rules.flat();
  const unique = [...new Map(flat.map((r) => [ruleKey(r), r])).values()];
  const table = ruleLossTable(profile, n, unique);
  const index = new Map(unique.map((r, i) => [ruleKey(r), i]));
  return flat.reduce((sum, rule, head) => sum + table[head * unique.length + index.get(ruleKey(rule))!]!, 0);
}

describe("moa optimize on the moa-tiny profile", () => {
  for (const [label, extra] of [
    ["assuming MHA", []],
    ["with the GQA shape from config.json", ["--model", fixture("moa-tiny")]],
  ] as const) {
    it(`writes plans with KV density in [0.45, 0.50] at 2k/4k/8k/16k and the losses it reports (${label})`, {
      timeout: 900_000,
    }, async () => {
      const out = await tempDir();
      const run = await runCli([
        "optimize",
        "--profile",
        TINY_PROFILE,
        "--density",
        "0.5",
        "--out",
        out,
        ...extra,
      ]);
      expect(run.code, run.stderr).toBe(EXIT_OK);
      const summary = JSON.parse(await readFile(join(out, "summary.json"), "utf8"));
      expect(summary.points.length).toBeGreaterThan(0);
      const bytes = new Uint8Array(await readFile(TINY_PROFILE));
      const grid = new Set(candidateGrid({ lengths: [2048, 4096, 8192], extend: 16384 }).map(ruleKey));
      for (const point of summary.points) {
        const path = join(out, point.file);
        const plan = parsePlanText(await readFile(path, "utf8"), path);
        if (extra.length > 0) expect(plan.model.kvHeads).toBe(2);
        for (const n of [2048, 4096, 8192, 16384]) {
          const d = planKvDensity(plan, n);
          expect(d).toBeGreaterThanOrEqual(0.45 - 1e-12);
          expect(d).toBeLessThanOrEqual(0.5 + 1e-12);
          expect(plan.density[String(n)]).toBeCloseTo(d, 12);
        }
        for (const rule of plan.rules.flat()) expect(grid.has(ruleKey(rule))).toBe(true);
        for (const n of [2048, 4096, 8192]) {
          expect(point.loss[String(n)]).toBeCloseTo(planLoss(bytes, plan.rules, n), 9);
        }
      }
    });
  }
});

describe("moa optimize rejects bad input with a clear message and writes nothing", () => {
  async function expectFailure(args: string[], code: number, ...needles: string[]) {
    const out = await tempDir();
    const run = await runCli(["optimize", ...args, "--out", join(out, "plans")]);
    expect(run.code).toBe(code);
    for (const needle of needles) expect(run.stderr).toContain(needle);
    expect(await readdir(out)).toEqual([]);
    return run;
  }

  it("truncated safetensors", async () => {
    const dir = await tempDir();
    const path = join(dir, "truncated.safetensors");
    const bytes = await readFile(TINY_PROFILE);
    await writeFile(path, bytes.subarray(0, bytes.length - 1000));
    await expectFailure(["--profile", path, "--density", "0.5"], EXIT_FAILURE, path);
  });

  it("corrupt header", async () => {
    const dir = await tempDir();
    const path = join(dir, "corrupt.safetensors");
    const bytes = new Uint8Array(await readFile(TINY_PROFILE));
    bytes.set(new TextEncoder().encode("}}}}"), 8);
    await writeFile(path, bytes);
    await expectFailure(["--profile", path, "--density", "0.5"], EXIT_FAILURE, path);
  });

  it("NaN in a profile, naming the tensor", async () => {
    const dir = await tempDir();
    const path = join(dir, "nan.safetensors");
    // writeProfile refuses NaN, so corrupt one float of a valid file in place, as a broken writer would.
    const bytes = new Uint8Array(await readFile(TINY_PROFILE));
    const entry = parseSafetensors(bytes, "tiny").tensors.get("influence.4096")!;
    new DataView(bytes.buffer, bytes.byteOffset).setFloat32(entry.begin + (5 * 64 + 3) * 4, Number.NaN, true);
    await writeFile(path, bytes);
    await expectFailure(["--profile", path, "--density", "0.5"], EXIT_FAILURE, path, "influence.4096", "NaN");
  });

  it("a profile for another model than --model", async () => {
    await expectFailure(
      ["--profile", TINY_PROFILE, "--density", "0.5", "--model", fixture("moa-nano")],
      EXIT_FAILURE,
      "another model",
    );
  });

  it("an infeasible density, naming the least density reachable at each length", async () => {
    const run = await expectFailure(["--profile", TINY_PROFILE, "--density", "0.01"], EXIT_FAILURE, "16384");
    expect(run.stderr).toMatch(/2048/);
  });

  it("an unknown flag", async () => {
    await expectFailure(
      ["--profile", TINY_PROFILE, "--density", "0.5", "--densty", "0.4"],
      EXIT_USAGE,
      "--densty",
    );
  });

  it("a density out of range", async () => {
    await expectFailure(["--profile", TINY_PROFILE, "--density", "1.5"], EXIT_USAGE, "--density");
  });

  it("existing plans are not overwritten without --force", async () => {
    const out = await tempDir();
    await copyFile(TINY_PROFILE, join(out, "keep.safetensors"));
    await writeFile(join(out, "plan-0.json"), "mine");
    const run = await runCli(["optimize", "--profile", TINY_PROFILE, "--density", "0.5", "--out", out]);
    expect(run.code).toBe(EXIT_FAILURE);
    expect(run.stderr).toContain("already exists");
    expect(await readFile(join(out, "plan-0.json"), "utf8")).toBe("mine");
    expect((await readdir(out)).sort()).toEqual(["keep.safetensors", "plan-0.json"]);
  });
});

describe("moa optimize reads the GQA shape that moa profile stores in the profile", () => {
  const NANO_PROFILE = fixture("moa-nano.profile.safetensors");

  async function profileWithExtras(extras: ProfileExtras): Promise<string> {
    const dir = await tempDir();
    const path = join(dir, "with-extras.safetensors");
    const bytes = new Uint8Array(await readFile(NANO_PROFILE));
    await writeFile(path, writeProfileWithExtras(readProfile(bytes, NANO_PROFILE), extras));
    return path;
  }

  it("sizes KV caches per KV head from __metadata__.kvHeads without --model", {
    timeout: 300_000,
  }, async () => {
    const path = await profileWithExtras({ architecture: "llama", kvHeads: "2", headDim: "64" });
    const out = await tempDir();
    const run = await runCli(["optimize", "--profile", path, "--density", "0.5", "--out", out]);
    expect(run.code, run.stderr).toBe(EXIT_OK);
    expect(run.stderr).toContain("from the profile's metadata");
    expect(run.stderr).not.toContain("assuming");
    const plan = parsePlanText(await readFile(join(out, "plan-0.json"), "utf8"), "plan-0.json");
    expect(plan.model.kvHeads).toBe(2);
    expect(plan.model.headDim).toBe(64);
    for (const n of [512, 1024, 2048]) expect(planKvDensity(plan, n)).toBeLessThanOrEqual(0.5 + 1e-12);
  });

  /** Runs optimize on a profile with these extras and expects a failure naming `needles`, with nothing written. */
  async function expectRefused(extras: ProfileExtras, flags: string[], ...needles: string[]) {
    const path = await profileWithExtras(extras);
    const out = await tempDir();
    const run = await runCli([
      "optimize",
      "--profile",
      path,
      "--density",
      "0.5",
      ...flags,
      "--out",
      join(out, "plans"),
    ]);
    expect(run.code).toBe(EXIT_FAILURE);
    for (const needle of needles) expect(run.stderr).toContain(needle);
    expect(await readdir(out)).toEqual([]);
  }

  it("a malformed __metadata__.kvHeads is named, and nothing is written", async () => {
    await expectRefused({ kvHeads: "two" }, [], "__metadata__.kvHeads", '"two"');
  });

  it("a --model whose KV heads differ from the profile's is refused", async () => {
    await expectRefused({ kvHeads: "2" }, ["--model", fixture("moa-nano")], "another model");
  });
});
