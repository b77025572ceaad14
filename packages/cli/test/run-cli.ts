import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { main } from "../src/main.js";

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `moa` in-process with captured output. */
export async function runCli(argv: string[]): Promise<CliRun> {
  let stdout = "";
  let stderr = "";
  const code = await main(argv, {
    stdout: (text) => {
      stdout += text;
    },
    stderr: (text) => {
      stderr += text;
    },
    cwd: process.cwd(),
  });
  return { code, stdout, stderr };
}

export function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), "moa-cli-"));
}

export function fixture(path: string): string {
  return new URL(`../../../fixtures/${path}`, import.meta.url).pathname;
}
