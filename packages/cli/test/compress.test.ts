import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { densePlan, parsePlanText, planKvBytes, readProfile } from "@moa/core";
import { describe, expect, it } from "vitest";
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE } from "../src/errors.js";
import { fixture, runCli, tempDir } from "./run-cli.js";

const NANO = fixture("moa-nano");
const SHAPE = { architecture: "llama", layers: 4, heads: 4, kvHeads: 4, headDim: 64 };
/** Dense KV bytes of moa-nano: 4 layers · 4 KV heads · n · 64 · (K, V) · 4-byte elements · batch. */
const denseBytes = (n: number, batch: number) => 4 * 4 * n * 64 * 2 * 4 * batch;
const TINY = [
  "--lengths",
  "256,512",
  "--samples",
  "2",
  "--answer-tokens",
  "8",
  "--validation-samples",
  "1",
  "--validation-length",
  "1024",
  "--pareto-points",
  "1",
  "--backend",
  "cpu",
];

describe("moa compress on moa-nano (tiny settings)", () => {
  let out = "";

  it("writes a plan within the KV budget, candidates, the profile, a report with three SVGs and a summary", async () => {
    out = join(await tempDir(), "nano-moa");
    const budget = Math.floor(0.55 * denseBytes(1024, 2));
    const run = await runCli([
      "compress",
      NANO,
      "--kv-budget",
      String(budget),
      "--max-length",
      "1024",
      "--batch",
      "2",
      ...TINY,
      "--out",
      out,
    ]);
    expect(run.code, run.stderr).toBe(EXIT_OK);
    expect(run.stdout).toContain("chosen → plan.json");
    expect(run.stderr).toContain("sample 4/4");

    const plan = parsePlanText(await readFile(join(out, "plan.json"), "utf8"), "plan.json");
    expect(plan.model).toEqual(SHAPE);
    const bytes = planKvBytes(plan, 1024, { batch: 2, bytesPerElement: 4 });
    expect(bytes).toBeLessThanOrEqual(budget);
    expect(planKvBytes(densePlan(SHAPE, [1024]), 1024, { batch: 2, bytesPerElement: 4 })).toBe(
      denseBytes(1024, 2),
    );
    // Validated at 1024 and at the longest profiled length below it (512), one sample each.
    expect(plan.provenance).toMatchObject({
      validation: { length: 1024, lengths: [512, 1024], samples: 2 },
      kvBudget: { bytes: budget },
    });

    const summary = JSON.parse(await readFile(join(out, "summary.json"), "utf8"));
    expect(summary.density).toBeCloseTo(budget / denseBytes(1024, 2), 12);
    // The selection rule (profiler select.ts): the chosen plan is within the budget and tied with the lowest score.
    expect(summary.selection.chosen).toBe(summary.chosen);
    expect(summary.selection.tied).toContain(summary.chosen);
    expect(summary.candidates[summary.chosen].withinBudget).toBe(true);
    const scores = summary.candidates
      .filter((c: { withinBudget: boolean }) => c.withinBudget)
      .map((c: { score: number }) => c.score);
    expect(summary.candidates[summary.selection.lowest].score).toBe(Math.min(...scores));
    expect(run.stdout).toContain(`selection: candidate ${summary.chosen}: `);
    const chosen = parsePlanText(
      await readFile(join(out, summary.candidates[summary.chosen].file), "utf8"),
      "c",
    );
    expect(chosen.rules).toEqual(plan.rules);

    const report = await readFile(join(out, "report.md"), "utf8");
    for (const svg of ["pareto.svg", "spans.svg", "validation.svg"]) {
      expect(report).toContain(`](${svg})`);
      const text = await readFile(join(out, svg), "utf8");
      expect(text.startsWith("<svg")).toBe(true);
      expect(text.trimEnd().endsWith("</svg>")).toBe(true);
    }
    expect(report).toContain("**chosen**");

    const profile = readProfile(new Uint8Array(await readFile(join(out, "profile.safetensors"))), "profile");
    expect(profile.lengths).toEqual([256, 512]);
    expect(profile.samplesPerLength).toBe(2);
    expect(await readdir(out)).not.toContain("profile.partial");
  });

  it("reuses a profile (--profile) and writes one HTML report with the SVGs inline", async () => {
    const dir = join(await tempDir(), "html");
    const run = await runCli([
      "compress",
      NANO,
      "--density",
      "0.6",
      "--profile",
      join(out, "profile.safetensors"),
      "--validation-samples",
      "1",
      "--validation-length",
      "1024",
      "--pareto-points",
      "1",
      "--answer-tokens",
      "8",
      "--report",
      "html",
      "--out",
      dir,
    ]);
    expect(run.code, run.stderr).toBe(EXIT_OK);
    expect(run.stderr).toContain("using the profile");
    expect(run.stderr).not.toMatch(/^ {2}sample \d/m);
    const html = await readFile(join(dir, "report.html"), "utf8");
    expect(html.match(/<svg /g)?.length).toBe(3);
    expect((await readdir(dir)).sort()).toEqual(["candidates", "plan.json", "report.html", "summary.json"]);
  });

  it("refuses a budget that holds the dense cache, before loading anything", async () => {
    const dir = await tempDir();
    const run = await runCli([
      "compress",
      NANO,
      "--kv-budget",
      String(denseBytes(2048, 1)),
      "--out",
      join(dir, "o"),
    ]);
    expect(run.code).toBe(EXIT_FAILURE);
    expect(run.stderr).toContain(`holds the dense cache of 1 × 2048 tokens (${denseBytes(2048, 1)} bytes)`);
    expect(await readdir(dir)).toEqual([]);
  });

  it("refuses an infeasible density before profiling, with the reachable range", async () => {
    const dir = await tempDir();
    const started = performance.now();
    const run = await runCli(["compress", NANO, "--density", "0.02", ...TINY, "--out", join(dir, "o")]);
    expect(run.code).toBe(EXIT_FAILURE);
    expect(run.stderr).toContain("below the least the candidate rules reach");
    expect(run.stderr).toMatch(/1024: 0\.\d{4}–/);
    expect(performance.now() - started).toBeLessThan(5000);
    expect(await readdir(dir)).toEqual([]);
  });

  it("rejects bad command lines and a missing model folder", async () => {
    const dir = await tempDir();
    const both = await runCli(["compress", NANO, "--density", "0.5", "--kv-budget", "1MiB"]);
    expect(both.code).toBe(EXIT_USAGE);
    expect(both.stderr).toContain("--density <d> or --kv-budget <bytes>");
    const size = await runCli(["compress", NANO, "--kv-budget", "lots", "--out", join(dir, "o")]);
    expect(size.code).toBe(EXIT_FAILURE);
    expect(size.stderr).toContain("--kv-budget");
    const missing = await runCli([
      "compress",
      join(dir, "nope"),
      "--density",
      "0.5",
      "--out",
      join(dir, "o"),
    ]);
    expect(missing.code).toBe(EXIT_FAILURE);
    expect(missing.stderr).toContain("config.json");
    await expect(stat(join(dir, "o"))).rejects.toThrow();
  });
});
