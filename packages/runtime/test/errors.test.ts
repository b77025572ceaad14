/**
 * Bad checkpoints and bad requests: each gives a MoaError naming the file (or option) and the field; nothing
 * throws anything else, nothing takes the process down.
 */
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { densePlan, MoaError, parseSafetensors, serializeSafetensors, type TensorToWrite } from "@moa/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateText } from "../src/generate.js";
import { loadModel, type Model } from "../src/load.js";
import { fixtureDir } from "./fixtures.js";

const scratch = mkdtempSync(join(tmpdir(), "moa-runtime-errors-"));
const SOURCE = fixtureDir("random-llama");
const FILES = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"];

/** A copy of random-llama with its config and/or tensors changed. */
function variant(options: {
  config?: (json: Record<string, unknown>) => void;
  tensors?: (tensors: TensorToWrite[]) => TensorToWrite[];
  rawWeights?: Uint8Array;
}): string {
  const dir = mkdtempSync(join(scratch, "model-"));
  for (const file of FILES) copyFileSync(join(SOURCE, file), join(dir, file));
  if (options.config) {
    const json = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
    options.config(json);
    writeFileSync(join(dir, "config.json"), JSON.stringify(json));
  }
  const bytes = new Uint8Array(readFileSync(join(SOURCE, "model.safetensors")));
  let out: Uint8Array = bytes;
  if (options.tensors) {
    const parsed = parseSafetensors(bytes, "model.safetensors");
    const list: TensorToWrite[] = [...parsed.tensors.values()].map((t) => ({
      name: t.name,
      dtype: t.dtype,
      shape: t.shape,
      data: bytes.subarray(t.begin, t.end),
    }));
    out = serializeSafetensors(options.tensors(list));
  }
  writeFileSync(join(dir, "model.safetensors"), options.rawWeights ?? out);
  return dir;
}

async function loadError(dir: string, options: Parameters<typeof loadModel>[1] = {}): Promise<MoaError> {
  try {
    const model = await loadModel(dir, { backend: "cpu", ...options });
    model.dispose();
  } catch (error) {
    expect(error).toBeInstanceOf(MoaError);
    return error as MoaError;
  }
  throw new Error("expected loadModel to fail");
}

describe("bad checkpoints", () => {
  it("a missing tensor names the weights file and the tensor", async () => {
    const name = "model.layers.1.mlp.down_proj.weight";
    const dir = variant({ tensors: (list) => list.filter((t) => t.name !== name) });
    const error = await loadError(dir);
    expect(error.field).toBe(name);
    expect(error.message).toContain(join(dir, "model.safetensors"));
    expect(error.message).toContain("config.json");
  });

  it("a shape that contradicts config.json names the tensor's shape and the config fields", async () => {
    const dir = variant({ config: (json) => void (json.intermediate_size = 192) });
    const error = await loadError(dir);
    expect(error.field).toBe("model.layers.0.mlp.gate_proj.weight.shape");
    expect(error.message).toContain(join(dir, "model.safetensors"));
    expect(error.message).toMatch(/\[176,64\].*contradicts .*config\.json.*intermediate_size=192/);
  });

  it("a head count that contradicts the tensors is caught at the projection", async () => {
    const dir = variant({ config: (json) => void (json.num_key_value_heads = 2) });
    const error = await loadError(dir);
    expect(error.field).toBe("model.layers.0.self_attn.k_proj.weight.shape");
  });

  it("a weight of an unsupported dtype names the tensor's dtype", async () => {
    const name = "model.norm.weight";
    const dir = variant({
      tensors: (list) =>
        list.map((t) =>
          t.name === name ? { ...t, dtype: "I16" as const, data: new Uint8Array(t.data) } : t,
        ),
    });
    const error = await loadError(dir);
    expect(error.field).toBe(`${name}.dtype`);
    expect(error.message).toContain("model.safetensors");
  });

  it("a header length beyond the file names the file", async () => {
    const raw = new Uint8Array(readFileSync(join(SOURCE, "model.safetensors")));
    new DataView(raw.buffer).setBigUint64(0, BigInt(raw.length), true);
    const dir = variant({ rawWeights: raw });
    const error = await loadError(dir);
    expect(error.message).toContain(join(dir, "model.safetensors"));
    expect(error.field).toBe("header length");
  });

  it("a truncated file names the first tensor whose offsets run past its end", async () => {
    const raw = new Uint8Array(readFileSync(join(SOURCE, "model.safetensors")).subarray(0, 4096));
    const dir = variant({ rawWeights: raw });
    const error = await loadError(dir);
    expect(error.message).toContain(join(dir, "model.safetensors"));
    expect(error.field).toMatch(/\.data_offsets$/);
  });

  it("an unsupported architecture names config.json and model_type", async () => {
    const dir = variant({
      config: (json) => {
        json.model_type = "gpt_neox";
        json.architectures = ["GPTNeoXForCausalLM"];
      },
    });
    const error = await loadError(dir);
    expect(error.field).toBe("model_type");
    expect(error.source).toBe(join(dir, "config.json"));
  });

  it("a plan for another model names the plan's differing fields", async () => {
    const plan = densePlan({ architecture: "llama", layers: 3, heads: 4, kvHeads: 4, headDim: 16 }, [64]);
    const error = await loadError(SOURCE, { plan });
    expect(error.code).toBe("E_PLAN_SHAPE");
    expect(error.message).toContain("model.layers");
  });

  it("a plan file that is not JSON names the file", async () => {
    const path = join(scratch, "broken-plan.json");
    writeFileSync(path, "{ not json");
    const error = await loadError(SOURCE, { plan: path });
    expect(error.source).toBe(path);
  });

  it("a missing tokenizer.json names the file", async () => {
    const dir = variant({});
    rmSync(join(dir, "tokenizer.json"));
    const error = await loadError(dir);
    expect(error.message).toContain(join(dir, "tokenizer.json"));
  });

  it("a maxLength beyond the model's context names max_position_embeddings", async () => {
    const error = await loadError(SOURCE, { maxLength: 4096 });
    expect(error.field).toBe("maxLength");
    expect(error.message).toContain("max_position_embeddings = 2048");
  });
});

describe("bad requests", () => {
  let model: Model;
  let short: Model;
  beforeAll(async () => {
    model = await loadModel(SOURCE, { backend: "cpu" });
    short = await loadModel(SOURCE, { backend: "cpu", maxLength: 100 });
  });
  afterAll(() => {
    model.dispose();
    short.dispose();
  });

  it("a prompt longer than the context names config.json's max_position_embeddings", async () => {
    const prompt = Array.from({ length: 2049 }, (_, i) => 3 + (i % 100));
    const error = await generateText(model, prompt).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MoaError);
    expect((error as MoaError).code).toBe("E_CONTEXT");
    expect((error as MoaError).source).toBe(join(SOURCE, "config.json"));
    expect((error as MoaError).field).toBe("max_position_embeddings");
    expect(() => model.logits(prompt)).toThrow(/2049 tokens exceeds the context/);
    expect(model.cache.freeSlots()).toBe(1);
  });

  it("a prompt longer than maxLength names maxLength", async () => {
    const error = await generateText(short, "word ".repeat(200)).catch((e: unknown) => e);
    expect((error as MoaError).field).toBe("maxLength");
    expect(short.cache.freeSlots()).toBe(1);
  });

  it("token ids outside the vocabulary are refused before any kernel runs", async () => {
    await expect(generateText(model, [0, 5000])).rejects.toThrow(/prompt\[1\] = 5000/);
    await expect(generateText(model, [0, 1.5])).rejects.toThrow(MoaError);
  });

  it("bad sampling and length options name the option", async () => {
    await expect(generateText(model, [0, 5], { temperature: -1 })).rejects.toThrow(/temperature/);
    await expect(generateText(model, [0, 5], { maxNewTokens: -2 })).rejects.toThrow(/maxNewTokens/);
    await expect(generateText(model, [])).rejects.toThrow(/no tokens/);
  });

  it("more prompts than cache slots is refused with the fix named", async () => {
    const { generateBatch } = await import("../src/generate.js");
    const it = generateBatch(model, [
      [0, 5],
      [0, 6],
    ]);
    await expect(it.next()).rejects.toThrow(/slots/);
    expect(model.cache.freeSlots()).toBe(1);
  });
});
