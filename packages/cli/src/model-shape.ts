import { join } from "node:path";
import type { ModelShape } from "@moa/core";
import { CliError } from "./errors.js";
import { readJsonFile } from "./io.js";

/** The attention shape a plan must match, read from a Hugging Face config.json. */
export async function readModelShape(modelDir: string): Promise<ModelShape> {
  const path = join(modelDir, "config.json");
  const config = (await readJsonFile(path)) as Record<string, unknown>;
  const int = (field: string, fallback?: number): number => {
    const value = config[field] ?? fallback;
    if (typeof value !== "number" || !Number.isInteger(value) || value < 1) {
      throw new CliError(`${path}: ${field} = ${JSON.stringify(value)}: expected a positive integer`);
    }
    return value;
  };
  const heads = int("num_attention_heads");
  const hidden = int("hidden_size");
  return {
    architecture: typeof config.model_type === "string" ? config.model_type : "llama",
    layers: int("num_hidden_layers"),
    heads,
    kvHeads: int("num_key_value_heads", heads),
    headDim: int("head_dim", hidden / heads),
  };
}
