import { type ChildProcess, spawn } from "node:child_process";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { readProfile } from "@moa/core";
import { describe, expect, it } from "vitest";
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE } from "../src/errors.js";
import { fixture, runCli, tempDir } from "./run-cli.js";

const NANO = fixture("moa-nano");
const BIN = fileURLToPath(new URL("../src/bin.ts", import.meta.url));
const SMALL = ["--lengths", "256,512", "--samples", "2", "--answer-tokens", "8", "--backend", "cpu"];

/** `moa profile` in a child process (so it can be killed), from the sources. */
function spawnProfile(out: string): {
  child: ChildProcess;
  stderr: () => string;
  exit: Promise<number | null>;
} {
  const child = spawn(process.execPath, ["--import", "tsx", BIN, "profile", NANO, ...SMALL, "--out", out], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr!.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const exit = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return { child, stderr: () => stderr, exit };
}

/** Kills the child with `signal` once its stderr reports `line` (a finished, saved sample). */
async function killAfter(line: string, out: string, signal: NodeJS.Signals): Promise<string> {
  const run = spawnProfile(out);
  await new Promise<void>((resolve, reject) => {
    const timer = setInterval(() => {
      if (run.stderr().includes(line)) {
        clearInterval(timer);
        run.child.kill(signal);
        resolve();
      } else if (run.child.exitCode !== null) {
        clearInterval(timer);
        reject(new Error(`exited before "${line}": ${run.stderr()}`));
      }
    }, 20);
  });
  await run.exit;
  return run.stderr();
}

describe("moa profile", () => {
  it("resumes after SIGINT and SIGKILL and writes the same bytes as an uninterrupted run", async () => {
    const dir = await tempDir();
    const whole = join(dir, "whole.safetensors");
    // The uninterrupted run also recomputes every layer (--low-memory) where the others keep them: same bytes.
    const uninterrupted = await runCli(["profile", NANO, ...SMALL, "--low-memory", "--out", whole]);
    expect(uninterrupted.code, uninterrupted.stderr).toBe(EXIT_OK);
    expect(uninterrupted.stdout).toContain(`wrote ${whole}`);

    const out = join(dir, "resumed.safetensors");
    await killAfter("sample 1/4", out, "SIGINT");
    expect(await readdir(dir)).not.toContain("resumed.safetensors");
    expect((await readdir(`${out}.partial`)).filter((f) => !f.endsWith(".tmp")).sort()).toEqual([
      "length-256.bin",
      "run.json",
    ]);
    const second = await killAfter("sample 2/4", out, "SIGKILL");
    expect(second).toContain("resuming: 1 of 4 samples already profiled");

    const last = spawnProfile(out);
    expect(await last.exit).toBe(EXIT_OK);
    expect(last.stderr()).toMatch(/resuming: [23] of 4 samples already profiled/);
    const a = await readFile(whole);
    const b = await readFile(out);
    expect(b.equals(a)).toBe(true);
    expect(await readdir(dir)).not.toContain("resumed.safetensors.partial");
  });

  it("writes the moa-profile format with the model's GQA shape in the metadata", async () => {
    const out = join(await tempDir(), "p.safetensors");
    const run = await runCli(["profile", NANO, "--lengths", "256", "--samples", "1", "--out", out, "--json"]);
    expect(run.code, run.stderr).toBe(EXIT_OK);
    const summary = JSON.parse(run.stdout);
    expect(summary).toMatchObject({ lengths: [256], samplesPerLength: 1, model: "moa-nano" });
    const bytes = new Uint8Array(await readFile(out));
    const profile = readProfile(bytes, out);
    expect([profile.layers, profile.heads, profile.lengths]).toEqual([4, 4, [256]]);
    const header = JSON.parse(
      new TextDecoder().decode(
        bytes.subarray(8, 8 + Number(new DataView(bytes.buffer).getBigUint64(0, true))),
      ),
    );
    expect(header.__metadata__).toMatchObject({ architecture: "llama", kvHeads: "4", headDim: "64" });
  });

  it("merges profiles made on two machines (sample offsets 0 and 1) into one run of both samples, bit for bit", async () => {
    const dir = await tempDir();
    const part = (i: number) => join(dir, `part-${i}.safetensors`);
    for (const i of [0, 1]) {
      const run = await runCli([
        "profile",
        NANO,
        "--lengths",
        "256,512",
        "--samples",
        "1",
        "--answer-tokens",
        "8",
        "--sample-offset",
        String(i),
        "--out",
        part(i),
      ]);
      expect(run.code, run.stderr).toBe(EXIT_OK);
    }
    const merged = join(dir, "merged.safetensors");
    const run = await runCli(["profile", "merge", part(0), part(1), "--out", merged]);
    expect(run.code, run.stderr).toBe(EXIT_OK);
    expect(run.stdout).toContain("0.5000");
    const both = join(dir, "both.safetensors");
    expect((await runCli(["profile", NANO, ...SMALL, "--seed", "0", "--out", both])).code).toBe(EXIT_OK);

    const read = async (path: string) => readProfile(new Uint8Array(await readFile(path)), path);
    const [m, p0, p1, whole] = await Promise.all([read(merged), read(part(0)), read(part(1)), read(both)]);
    expect(m.samplesPerLength).toBe(2);
    for (const n of [256, 512]) {
      // The weighted mean, computed here from the two parts…
      const mean = Float32Array.from(
        p0.influence.get(n)!,
        (v, k) => 0.5 * v + 0.5 * p1.influence.get(n)![k]!,
      );
      expect(Buffer.from(m.influence.get(n)!.buffer).equals(Buffer.from(mean.buffer))).toBe(true);
      // …is what one machine profiling both samples gets.
      expect(
        Buffer.from(m.influence.get(n)!.buffer).equals(Buffer.from(whole.influence.get(n)!.buffer)),
      ).toBe(true);
    }
  });

  it("refuses to merge profiles of other lengths, or fewer than two", async () => {
    const dir = await tempDir();
    const a = join(dir, "a.safetensors");
    const b = join(dir, "b.safetensors");
    expect((await runCli(["profile", NANO, "--lengths", "256", "--samples", "1", "--out", a])).code).toBe(
      EXIT_OK,
    );
    expect((await runCli(["profile", NANO, "--lengths", "512", "--samples", "1", "--out", b])).code).toBe(
      EXIT_OK,
    );
    const mismatch = await runCli(["profile", "merge", a, b, "--out", join(dir, "m.safetensors")]);
    expect(mismatch.code).toBe(EXIT_FAILURE);
    expect(mismatch.stderr).toContain("lengths");
    const one = await runCli(["profile", "merge", a, "--out", join(dir, "m.safetensors")]);
    expect(one.code).toBe(EXIT_USAGE);
    expect(await readdir(dir)).not.toContain("m.safetensors");
  });

  it("says what is wrong with the input in one line", async () => {
    const dir = await tempDir();
    const missing = await runCli([
      "profile",
      join(dir, "no-such-model"),
      "--out",
      join(dir, "p.safetensors"),
    ]);
    expect(missing.code).toBe(EXIT_FAILURE);
    expect(missing.stderr).toContain("config.json");

    const data = join(dir, "calib.jsonl");
    await writeFile(data, '{"context": "fine"}\n{"context": "fine", "question": 4}\n');
    const bad = await runCli(["profile", NANO, "--data", data, "--out", join(dir, "p.safetensors")]);
    expect(bad.code).toBe(EXIT_FAILURE);
    expect(bad.stderr).toContain(`${data}:2: "question" must be a string`);

    const odd = await runCli(["profile", NANO, "--lengths", "300", "--out", join(dir, "p.safetensors")]);
    expect(odd.code).toBe(EXIT_FAILURE);
    expect(odd.stderr).toContain("multiple of 64");
    expect(await readdir(dir)).toEqual(["calib.jsonl"]);
  });
});
