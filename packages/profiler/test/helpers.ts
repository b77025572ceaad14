import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { loadModel, type Model, TextTokenizer } from "@moa/runtime";

export const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), "../../../fixtures");
export const NANO = join(FIXTURES, "moa-nano");

let nano: Promise<Model> | undefined;

/** moa-nano on the CPU backend, loaded once per test file (dense, full context). */
export function nanoModel(): Promise<Model> {
  nano ??= loadModel(NANO, { backend: "cpu" });
  return nano;
}

export function nanoTokenizer(): Promise<TextTokenizer> {
  return TextTokenizer.fromDir(NANO);
}

export function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), "moa-profiler-"));
}
