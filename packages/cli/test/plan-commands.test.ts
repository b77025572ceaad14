import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type ModelShape, makePlan, parsePlanText, planKvDensity, serializePlan, spanAt } from "@moa/core";
import { describe, expect, it } from "vitest";
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE } from "../src/errors.js";
import { fixture, runCli, tempDir } from "./run-cli.js";

const tinyShape: ModelShape = { architecture: "llama", layers: 6, heads: 6, kvHeads: 2, headDim: 64 };

async function writeTinyPlan(dir: string): Promise<string> {
  const rules = Array.from({ length: tinyShape.layers }, (_, l) =>
    Array.from({ length: tinyShape.heads }, (_, h) => ({
      alpha: 512 * ((l + h) % 3),
      beta: 0.125 * (h % 4),
    })),
  );
  const path = join(dir, "plan.json");
  await writeFile(path, serializePlan(makePlan(tinyShape, rules, [2048, 4096, 8192])));
  return path;
}

describe("moa plan inspect", () => {
  it("reports the same plan KV density as core computes, and per-layer span extremes", async () => {
    const dir = await tempDir();
    const path = await writeTinyPlan(dir);
    const run = await runCli(["plan", "inspect", path, "--length", "4096", "--json"]);
    expect(run.code).toBe(EXIT_OK);
    const report = JSON.parse(run.stdout);
    const plan = parsePlanText(await readFile(path, "utf8"), path);
    expect(report.kvDensity).toBeCloseTo(planKvDensity(plan, 4096), 12);
    const layer2Spans = plan.rules[2]!.map((rule) => spanAt(rule, 4096));
    expect(report.layers[2].spanMax).toBe(Math.max(...layer2Spans));
    expect(report.layers[2].spanMin).toBe(Math.min(...layer2Spans));
  });

  it("writes an SVG heatmap with one cell per (layer, head) and refuses to overwrite it without --force", async () => {
    const dir = await tempDir();
    const path = await writeTinyPlan(dir);
    const svg = join(dir, "spans.svg");
    const first = await runCli(["plan", "inspect", path, "--svg", svg]);
    expect(first.code).toBe(EXIT_OK);
    const text = await readFile(svg, "utf8");
    expect(text.startsWith("<svg")).toBe(true);
    expect(text.match(/<rect [^>]*><title>layer/g)).toHaveLength(tinyShape.layers * tinyShape.heads);
    const second = await runCli(["plan", "inspect", path, "--svg", svg]);
    expect(second.code).toBe(EXIT_FAILURE);
    expect(second.stderr).toContain("already exists");
    expect(await runCli(["plan", "inspect", path, "--svg", svg, "--force"])).toMatchObject({ code: EXIT_OK });
  });

  it("names the file and field of an invalid plan and exits non-zero", async () => {
    const dir = await tempDir();
    const path = join(dir, "bad.json");
    const plan = JSON.parse(await readFile(await writeTinyPlan(dir), "utf8"));
    plan.rules[3][1].beta = -0.5;
    await writeFile(path, JSON.stringify(plan));
    const run = await runCli(["plan", "inspect", path]);
    expect(run.code).toBe(EXIT_FAILURE);
    expect(run.stderr).toContain(path);
    expect(run.stderr).toContain("rules[3][1].beta");
  });
});

describe("moa plan convert", () => {
  it("round-trips moa → reference → moa to the same rules", async () => {
    const dir = await tempDir();
    const path = await writeTinyPlan(dir);
    const ref = join(dir, "ref.json");
    const back = join(dir, "back.json");
    expect((await runCli(["plan", "convert", path, "--to", "reference", "--out", ref])).code).toBe(EXIT_OK);
    const refJson = JSON.parse(await readFile(ref, "utf8"));
    expect(refJson.alphas).toHaveLength(6);
    const run = await runCli([
      "plan",
      "convert",
      ref,
      "--to",
      "moa",
      "--kv-heads",
      "2",
      "--head-dim",
      "64",
      "--lengths",
      "2048,4096,8192",
      "--out",
      back,
    ]);
    expect(run.code).toBe(EXIT_OK);
    const original = parsePlanText(await readFile(path, "utf8"), path);
    const converted = parsePlanText(await readFile(back, "utf8"), back);
    expect(converted.rules).toEqual(original.rules);
    expect(converted.density).toEqual(original.density);
  });

  it("reads the model shape from a checkpoint's config.json", async () => {
    const dir = await tempDir();
    const ref = join(dir, "ref.json");
    const rules = {
      alphas: [
        [0, 64, 128, 256],
        [1, 2, 3, 4],
      ],
      betas: [
        [0, 0.5, 1, 0.25],
        [0, 0, 0, 0],
      ],
    };
    await writeFile(ref, JSON.stringify(rules));
    const out = join(dir, "plan.json");
    const run = await runCli([
      "plan",
      "convert",
      ref,
      "--to",
      "moa",
      "--model",
      fixture("random-llama31"),
      "--out",
      out,
    ]);
    expect(run.code, run.stderr).toBe(EXIT_OK);
    const plan = JSON.parse(await readFile(out, "utf8"));
    expect(plan.model).toMatchObject({ layers: 2, heads: 4, kvHeads: 2 });
  });

  it("rejects a reference plan for another model shape and writes nothing", async () => {
    const dir = await tempDir();
    const ref = join(dir, "ref.json");
    await writeFile(ref, JSON.stringify({ alphas: [[0, 1, 2]], betas: [[0, 0, 0]] }));
    const out = join(dir, "plan.json");
    const run = await runCli([
      "plan",
      "convert",
      ref,
      "--to",
      "moa",
      "--model",
      fixture("random-llama31"),
      "--out",
      out,
    ]);
    expect(run.code).toBe(EXIT_FAILURE);
    expect(run.stderr).toContain("alphas");
    expect(await readdir(dir)).toEqual(["ref.json"]);
  });
});

describe("moa command line", () => {
  it("exits with a usage error naming an unknown flag", async () => {
    const run = await runCli(["plan", "inspect", "x.json", "--frobnicate"]);
    expect(run.code).toBe(EXIT_USAGE);
    expect(run.stderr).toContain("--frobnicate");
  });

  it("exits with a usage error for an unknown command", async () => {
    const run = await runCli(["transmogrify"]);
    expect(run.code).toBe(EXIT_USAGE);
    expect(run.stderr).toContain("transmogrify");
  });

  it("prints help with an example for every command", async () => {
    const { commands } = await import("../src/registry.js");
    for (const command of commands) {
      const run = await runCli([...command.name.split(" "), "--help"]);
      expect(run.code).toBe(EXIT_OK);
      expect(run.stdout).toContain("Examples:");
      expect(run.stdout).toContain(`moa ${command.name}`);
    }
  });
});
