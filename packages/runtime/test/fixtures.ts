/** Paths and reference vectors shared by the tests (fixtures/README.md describes them). */
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), "../../../fixtures");

export const MODEL_NAMES = [
  "moa-nano",
  "moa-tiny",
  "random-llama",
  "random-llama31",
  "random-qwen2",
  "random-mistral",
] as const;
export type FixtureName = (typeof MODEL_NAMES)[number];

export function fixtureDir(name: FixtureName): string {
  return join(FIXTURES, name);
}

export interface ModelVectors {
  input_ids: number[];
  nll: number[];
  argmax: number[];
  logits_at: Record<string, number[]>;
  greedy: number[];
}

export interface ReferenceVectors {
  tokenizer: Array<{ text: string; ids: number[]; decoded: string }>;
  models: Record<FixtureName, ModelVectors>;
}

let cached: ReferenceVectors | undefined;

export function referenceVectors(): ReferenceVectors {
  cached ??= JSON.parse(readFileSync(join(FIXTURES, "reference-vectors.json"), "utf8")) as ReferenceVectors;
  return cached;
}
