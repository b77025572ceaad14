import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { kvDensity, type ModelShape, makePlan, serializePlan } from "@moa/core";
import { uniformRule } from "@moa/eval";
import { describe, expect, it } from "vitest";
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE } from "../src/errors.js";
import { fixture, runCli, tempDir } from "./run-cli.js";

const NANO: ModelShape = { architecture: "llama", layers: 4, heads: 4, kvHeads: 4, headDim: 64 };

async function writeNanoPlan(dir: string, shape: ModelShape = NANO): Promise<string> {
  const rules = Array.from({ length: shape.layers }, (_, l) =>
    Array.from({ length: shape.heads }, (_, h) =>
      (l + h) % 2 === 0 ? { alpha: 128, beta: 0.25 } : { alpha: 0, beta: 0.5 },
    ),
  );
  const path = join(dir, "plan.json");
  await writeFile(path, serializePlan(makePlan(shape, rules, [256, 512])));
  return path;
}

describe("moa eval", () => {
  it("prints the method × task × length table and writes results.json and one SVG per task", async () => {
    const dir = await tempDir();
    const plan = await writeNanoPlan(dir);
    const out = join(dir, "eval");
    const run = await runCli([
      "eval",
      "--model",
      fixture("moa-nano"),
      "--plan",
      plan,
      "--lengths",
      "256,512",
      "--prompts",
      "2",
      "--backend",
      "cpu",
      "--out",
      out,
    ]);
    expect(run.stderr).not.toContain("error");
    expect(run.code).toBe(EXIT_OK);
    for (const method of ["dense", "plan", "uniform", "h2o"]) {
      for (const task of ["lines (acc)", "passkey (acc)", "ppl"]) {
        expect(run.stdout).toMatch(
          new RegExp(`${task.replace(/[()]/g, "\\$&")}\\s+${method}\\s+[\\d.]+\\s+[\\d.]+`),
        );
      }
    }
    expect(run.stderr).toContain("h2o ppl @512");
    const report = JSON.parse(await readFile(join(out, "results.json"), "utf8"));
    expect(report.format).toBe("moa-eval");
    expect(report.results).toHaveLength(4 * 3 * 2);
    const planJson = JSON.parse(await readFile(plan, "utf8"));
    for (const n of [256, 512]) {
      const d = planJson.density[String(n)];
      expect(report.density[String(n)]).toBeCloseTo(d, 12);
      const uniform = report.results.find(
        (r: { method: string; length: number }) => r.method === "uniform" && r.length === n,
      );
      // The uniform baseline never caches more than the plan: the widest whole-block window at most d.
      expect(uniform.kvDensity).toBe(kvDensity(uniformRule(d, n), n));
      expect(uniform.kvDensity).toBeLessThanOrEqual(d);
    }
    for (const task of ["lines", "passkey", "ppl"]) {
      const svg = await readFile(join(out, `${task}.svg`), "utf8");
      expect(svg.startsWith("<svg")).toBe(true);
      // One line and two markers (one per length) per method, plus a legend entry each.
      expect(svg.match(/<polyline /g)).toHaveLength(4);
      for (const method of ["dense", "plan", "uniform", "h2o"]) expect(svg).toContain(`>${method} @512: `);
    }
    const again = await runCli([
      "eval",
      "--model",
      fixture("moa-nano"),
      "--plan",
      plan,
      "--lengths",
      "256",
      "--out",
      out,
    ]);
    expect(again.code).toBe(EXIT_FAILURE);
    expect(again.stderr).toContain("already exists");
  });

  it("rejects unknown tasks and methods, missing inputs and lengths beyond the context as usage errors", async () => {
    const dir = await tempDir();
    const model = fixture("moa-nano");
    const cases: Array<[string[], RegExp]> = [
      [["--tasks", "lines,summaries"], /unknown "summaries"/],
      [["--methods", "dense,quest"], /unknown "quest"/],
      [["--methods", "plan"], /--methods plan needs --plan/],
      [["--methods", "uniform"], /pass --plan <file> or --density/],
      [["--lengths", "4096"], /exceeds the model's context/],
      [["--density", "1.5"], /--density "1.5": must be ≤ 1/],
      [["--depths", "0,2"], /--depths/],
    ];
    for (const [flags, message] of cases) {
      const run = await runCli(["eval", "--model", model, "--out", join(dir, "x"), ...flags]);
      expect(run.code, flags.join(" ")).toBe(EXIT_USAGE);
      expect(run.stderr).toMatch(message);
    }
  });

  it("refuses a plan made for another model, naming the differing fields", async () => {
    const dir = await tempDir();
    const plan = await writeNanoPlan(dir, {
      architecture: "llama",
      layers: 6,
      heads: 6,
      kvHeads: 2,
      headDim: 64,
    });
    const run = await runCli([
      "eval",
      "--model",
      fixture("moa-nano"),
      "--plan",
      plan,
      "--out",
      join(dir, "x"),
    ]);
    expect(run.code).toBe(EXIT_FAILURE);
    expect(run.stderr).toContain("the plan is for another model");
    expect(run.stderr).toContain("model.layers = 6 (the model has 4)");
  });
});
