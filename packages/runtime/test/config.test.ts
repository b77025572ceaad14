import { readFileSync } from "node:fs";
import { join } from "node:path";
import { assertPlanMatchesModel, densePlan, MoaError } from "@moa/core";
import { describe, expect, it } from "vitest";
import { parseModelConfig, readModelConfig } from "../src/config.js";
import { fixtureDir } from "./fixtures.js";

function fixtureJson(name: Parameters<typeof fixtureDir>[0]): Record<string, unknown> {
  return JSON.parse(readFileSync(join(fixtureDir(name), "config.json"), "utf8"));
}

function configError(json: Record<string, unknown>): MoaError {
  try {
    parseModelConfig(json, "model/config.json");
  } catch (error) {
    expect(error).toBeInstanceOf(MoaError);
    return error as MoaError;
  }
  throw new Error("expected the config to be rejected");
}

describe("config normalisation", () => {
  it("reads rope_parameters (transformers 5) on moa-nano: MHA, tied embeddings, default RoPE", async () => {
    const config = await readModelConfig(fixtureDir("moa-nano"));
    expect(config).toMatchObject({
      architecture: "llama",
      hiddenSize: 256,
      layers: 4,
      heads: 4,
      kvHeads: 4,
      headDim: 64,
      contextLength: 2048,
      tieWordEmbeddings: true,
      qkvBias: false,
      rope: { theta: 10000, dim: 64, scaling: { type: "default" } },
      eosTokenIds: [1],
      bosTokenId: 0,
    });
  });

  it("reads top-level rope_theta with llama3 rope_scaling on random-llama31", async () => {
    const config = await readModelConfig(fixtureDir("random-llama31"));
    expect(config.rope).toEqual({
      theta: 500000,
      dim: 16,
      scaling: {
        type: "llama3",
        factor: 8,
        lowFreqFactor: 1,
        highFreqFactor: 4,
        originalMaxPositionEmbeddings: 256,
      },
    });
    expect(config.kvHeads).toBe(2);
    expect(config.tieWordEmbeddings).toBe(false);
  });

  it("reads the same llama3 scaling written as rope_parameters", () => {
    const legacy = fixtureJson("random-llama31");
    const { rope_theta, rope_scaling, ...rest } = legacy;
    const modern = parseModelConfig(
      { ...rest, rope_parameters: { rope_theta, ...(rope_scaling as object) } },
      "config.json",
    );
    expect(modern.rope).toEqual(parseModelConfig(legacy, "config.json").rope);
  });

  it("takes mistral's explicit head_dim", async () => {
    const config = await readModelConfig(fixtureDir("random-mistral"));
    expect(config).toMatchObject({
      architecture: "mistral",
      headDim: 16,
      heads: 4,
      kvHeads: 2,
      qkvBias: false,
    });
    expect(config.rope.theta).toBe(1e6);
    const wide = parseModelConfig({ ...fixtureJson("random-mistral"), head_dim: 32 }, "config.json");
    expect(wide.headDim).toBe(32);
  });

  it("gives qwen2 q/k/v bias but no o bias, and tied embeddings", async () => {
    const config = await readModelConfig(fixtureDir("random-qwen2"));
    expect(config).toMatchObject({
      architecture: "qwen2",
      qkvBias: true,
      oBias: false,
      tieWordEmbeddings: true,
    });
    expect(config.headDim).toBe(16);
  });

  it("applies llama's attention_bias to q/k/v/o and mlp_bias to the MLP", () => {
    const config = parseModelConfig(
      { ...fixtureJson("random-llama"), attention_bias: true, mlp_bias: true },
      "config.json",
    );
    expect(config).toMatchObject({ qkvBias: true, oBias: true, mlpBias: true });
  });

  it("limits the context to mistral's sliding window when one is set", () => {
    const config = parseModelConfig({ ...fixtureJson("random-mistral"), sliding_window: 512 }, "config.json");
    expect(config.contextLength).toBe(512);
    expect(config.contextField).toBe("sliding_window");
  });

  it("prefers generation_config's eos ids", () => {
    const config = parseModelConfig(fixtureJson("moa-nano"), "config.json", { eos_token_id: [1, 7] });
    expect(config.eosTokenIds).toEqual([1, 7]);
  });

  it("gives a shape that plans made for the model match", async () => {
    const config = await readModelConfig(fixtureDir("moa-tiny"));
    expect(config.shape()).toEqual({ architecture: "llama", layers: 6, heads: 6, kvHeads: 2, headDim: 64 });
    expect(() =>
      assertPlanMatchesModel(densePlan(config.shape(), [1024]), config.shape(), "plan.json"),
    ).not.toThrow();
  });

  it("rejects an unsupported architecture, naming config.json and model_type", () => {
    const error = configError({
      ...fixtureJson("random-llama"),
      model_type: "gpt2",
      architectures: ["GPT2LMHeadModel"],
    });
    expect(error.field).toBe("model_type");
    expect(error.message).toContain("model/config.json");
    expect(error.message).toContain("gpt2");
  });

  it("rejects an architecture class the runtime does not run", () => {
    const error = configError({
      ...fixtureJson("random-llama"),
      architectures: ["LlamaForSequenceClassification"],
    });
    expect(error.field).toBe("architectures");
  });

  it("rejects unsupported RoPE types, non-silu MLPs and bad head counts", () => {
    const base = fixtureJson("random-llama");
    expect(
      configError({ ...base, rope_parameters: { rope_type: "yarn", rope_theta: 1e4, factor: 4 } }).field,
    ).toBe("rope_parameters.rope_type");
    expect(configError({ ...base, hidden_act: "gelu" }).field).toBe("hidden_act");
    expect(configError({ ...base, num_key_value_heads: 3 }).field).toBe("num_key_value_heads");
    expect(configError({ ...base, hidden_size: undefined }).field).toBe("hidden_size");
    expect(configError({ ...base, vocab_size: -1 }).field).toBe("vocab_size");
    expect(
      configError({ ...base, rope_parameters: { rope_type: "llama3", rope_theta: 1e4, factor: 8 } }).field,
    ).toBe("rope_parameters.low_freq_factor");
  });

  it("names the file when config.json is missing or not JSON", async () => {
    await expect(readModelConfig(join(fixtureDir("moa-nano"), "no-such-dir"))).rejects.toThrow(
      /config\.json/,
    );
  });
});
