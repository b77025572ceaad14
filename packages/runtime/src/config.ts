/**
 * `config.json` (+ `generation_config.json`) of a Hugging Face checkpoint, normalised into one shape for the
 * three supported decoder families. Llama: top-level `rope_theta`/`rope_scaling` (transformers 4.x) or
 * `rope_parameters` (5.x), llama3 and linear scaling, optional `attention_bias`/`mlp_bias`. Mistral: explicit
 * `head_dim`, `sliding_window`. Qwen2: bias on q/k/v (not o). Tied embeddings for all.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { MoaError, type ModelShape } from "@moa/core";
import type { RopeConfig, RopeScaling } from "./rope.js";

export const E_CONFIG = "E_CONFIG";

export type Architecture = "llama" | "mistral" | "qwen2";

const ARCHITECTURE_CLASSES: Record<Architecture, string> = {
  llama: "LlamaForCausalLM",
  mistral: "MistralForCausalLM",
  qwen2: "Qwen2ForCausalLM",
};

export interface ModelConfig {
  /** The file the config was read from (for error messages). */
  readonly source: string;
  readonly architecture: Architecture;
  readonly hiddenSize: number;
  readonly intermediateSize: number;
  readonly layers: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly vocabSize: number;
  /** `max_position_embeddings`. */
  readonly maxPositionEmbeddings: number;
  /**
   * Longest sequence the runtime runs with dense-equivalent semantics: `max_position_embeddings`, or the
   * sliding window of Mistral/Qwen2 checkpoints that enable one (within it, sliding-window attention is dense).
   */
  readonly contextLength: number;
  /** The config field `contextLength` comes from, for error messages. */
  readonly contextField: "max_position_embeddings" | "sliding_window";
  readonly rmsNormEps: number;
  readonly rope: RopeConfig;
  /** Bias on q/k/v projections (qwen2; llama with `attention_bias`). */
  readonly qkvBias: boolean;
  /** Bias on o_proj (llama with `attention_bias`). */
  readonly oBias: boolean;
  /** Bias on gate/up/down (llama with `mlp_bias`). */
  readonly mlpBias: boolean;
  readonly tieWordEmbeddings: boolean;
  readonly bosTokenId: number | undefined;
  /** End-of-sequence ids: `generation_config.json` when it names them, else `config.json`. */
  readonly eosTokenIds: readonly number[];
  readonly padTokenId: number | undefined;
  /** The plan-facing shape (DESIGN.md: Plan file, `model`). */
  shape(): ModelShape;
}

type Json = Record<string, unknown>;

class ConfigReader {
  constructor(
    readonly json: Json,
    readonly source: string,
  ) {}

  fail(field: string, reason: string): never {
    const value = field in this.json ? ` = ${JSON.stringify(this.json[field])}` : "";
    throw new MoaError(E_CONFIG, `${this.source}: ${field}${value}: ${reason}`, {
      source: this.source,
      field,
    });
  }

  has(field: string): boolean {
    return this.json[field] !== undefined && this.json[field] !== null;
  }

  positiveInt(field: string, fallback?: number): number {
    const value = this.json[field] ?? fallback;
    if (value === undefined || value === null) this.fail(field, "is required");
    if (!Number.isSafeInteger(value) || (value as number) <= 0)
      this.fail(field, "must be a positive integer");
    return value as number;
  }

  positiveNumber(field: string, fallback?: number): number {
    const value = this.json[field] ?? fallback;
    if (value === undefined || value === null) this.fail(field, "is required");
    if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
      this.fail(field, "must be a positive number");
    }
    return value;
  }

  bool(field: string, fallback: boolean): boolean {
    const value = this.json[field] ?? fallback;
    if (typeof value !== "boolean") this.fail(field, "must be true or false");
    return value;
  }

  tokenIds(field: string): number[] {
    const value = this.json[field];
    if (value === undefined || value === null) return [];
    const ids = Array.isArray(value) ? value : [value];
    if (!ids.every((id) => Number.isSafeInteger(id) && id >= 0)) {
      this.fail(field, "must be a token id or a list of token ids");
    }
    return ids as number[];
  }
}

function parseArchitecture(reader: ConfigReader): Architecture {
  const modelType = reader.json.model_type;
  if (modelType === "llama" || modelType === "mistral" || modelType === "qwen2") {
    const classes = reader.json.architectures;
    if (Array.isArray(classes) && classes.length > 0 && !classes.includes(ARCHITECTURE_CLASSES[modelType])) {
      reader.fail(
        "architectures",
        `model_type ${modelType} is run as ${ARCHITECTURE_CLASSES[modelType]}; other heads are not supported`,
      );
    }
    return modelType;
  }
  return reader.fail(
    "model_type",
    `unsupported architecture (supported: ${Object.keys(ARCHITECTURE_CLASSES).join(", ")})`,
  );
}

/** Reads `rope_parameters` (transformers ≥ 5) or top-level `rope_theta` + `rope_scaling` (4.x). */
function parseRope(reader: ConfigReader, headDim: number): RopeConfig {
  const { json } = reader;
  let params: Json;
  let where: string;
  if (json.rope_parameters !== undefined && json.rope_parameters !== null) {
    if (typeof json.rope_parameters !== "object" || Array.isArray(json.rope_parameters)) {
      reader.fail("rope_parameters", "must be an object");
    }
    params = { rope_theta: json.rope_theta, ...(json.rope_parameters as Json) };
    where = "rope_parameters";
  } else {
    const scaling = json.rope_scaling;
    if (
      scaling !== undefined &&
      scaling !== null &&
      (typeof scaling !== "object" || Array.isArray(scaling))
    ) {
      reader.fail("rope_scaling", "must be an object or null");
    }
    params = { rope_theta: json.rope_theta, ...((scaling as Json | null | undefined) ?? {}) };
    where = "rope_scaling";
  }
  const subFail = (field: string, reason: string): never =>
    reader.fail(`${where}.${field}`, `${JSON.stringify(params[field])}: ${reason}`);
  const theta = params.rope_theta ?? 10000;
  if (typeof theta !== "number" || !Number.isFinite(theta) || theta <= 0) {
    subFail("rope_theta", "must be a positive number");
  }
  const partial = params.partial_rotary_factor ?? json.partial_rotary_factor ?? 1;
  if (partial !== 1) subFail("partial_rotary_factor", "partial rotary embeddings are not supported");
  const type = params.rope_type ?? params.type ?? "default";
  const factor = (field: string): number => {
    const value = params[field];
    if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
      subFail(field, "must be a positive number");
    }
    return value as number;
  };
  let scaling: RopeScaling;
  switch (type) {
    case "default":
      scaling = { type: "default" };
      break;
    case "linear":
      scaling = { type: "linear", factor: factor("factor") };
      break;
    case "llama3": {
      scaling = {
        type: "llama3",
        factor: factor("factor"),
        lowFreqFactor: factor("low_freq_factor"),
        highFreqFactor: factor("high_freq_factor"),
        originalMaxPositionEmbeddings: factor("original_max_position_embeddings"),
      };
      if (scaling.highFreqFactor <= scaling.lowFreqFactor) {
        subFail("high_freq_factor", "must be greater than low_freq_factor");
      }
      break;
    }
    default:
      subFail(
        params.rope_type !== undefined ? "rope_type" : "type",
        "unsupported RoPE type (default, linear, llama3)",
      );
  }
  return { theta: theta as number, dim: headDim, scaling: scaling! };
}

function parseSlidingWindow(reader: ConfigReader, architecture: Architecture): number | undefined {
  const { json } = reader;
  if (architecture === "llama") return undefined;
  if (architecture === "qwen2") {
    if (json.use_sliding_window !== true) return undefined;
    const types = json.layer_types;
    if (Array.isArray(types) && types.every((t) => t === "full_attention")) return undefined;
  }
  if (!reader.has("sliding_window")) return undefined;
  return reader.positiveInt("sliding_window");
}

/** Normalises a parsed `config.json` (and optionally `generation_config.json`). `source` names the file. */
export function parseModelConfig(json: unknown, source: string, generationConfig?: unknown): ModelConfig {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new MoaError(E_CONFIG, `${source}: (root): must be a JSON object`, { source, field: "(root)" });
  }
  const reader = new ConfigReader(json as Json, source);
  const architecture = parseArchitecture(reader);
  const hiddenAct = reader.json.hidden_act ?? "silu";
  if (hiddenAct !== "silu" && hiddenAct !== "swish")
    reader.fail("hidden_act", "only silu MLPs are supported");

  const hiddenSize = reader.positiveInt("hidden_size");
  const heads = reader.positiveInt("num_attention_heads");
  const kvHeads = reader.positiveInt("num_key_value_heads", heads);
  if (heads % kvHeads !== 0) reader.fail("num_key_value_heads", `must divide num_attention_heads (${heads})`);
  let headDim: number;
  if (reader.has("head_dim")) {
    headDim = reader.positiveInt("head_dim");
  } else {
    if (hiddenSize % heads !== 0) {
      reader.fail(
        "hidden_size",
        `is not divisible by num_attention_heads (${heads}) and head_dim is not given`,
      );
    }
    headDim = hiddenSize / heads;
  }
  if (headDim % 2 !== 0) reader.fail("head_dim", `${headDim}: RoPE needs an even head dimension`);
  const maxPositionEmbeddings = reader.positiveInt("max_position_embeddings");
  const slidingWindow = parseSlidingWindow(reader, architecture);
  const windowed = slidingWindow !== undefined && slidingWindow < maxPositionEmbeddings;

  const attentionBias = architecture === "llama" ? reader.bool("attention_bias", false) : false;
  const config: Omit<ModelConfig, "shape"> = {
    source,
    architecture,
    hiddenSize,
    intermediateSize: reader.positiveInt("intermediate_size"),
    layers: reader.positiveInt("num_hidden_layers"),
    heads,
    kvHeads,
    headDim,
    vocabSize: reader.positiveInt("vocab_size"),
    maxPositionEmbeddings,
    contextLength: windowed ? slidingWindow : maxPositionEmbeddings,
    contextField: windowed ? "sliding_window" : "max_position_embeddings",
    rmsNormEps: reader.positiveNumber("rms_norm_eps", 1e-6),
    rope: parseRope(reader, headDim),
    qkvBias: architecture === "qwen2" || attentionBias,
    oBias: attentionBias,
    mlpBias: architecture === "llama" ? reader.bool("mlp_bias", false) : false,
    tieWordEmbeddings: reader.bool("tie_word_embeddings", false),
    bosTokenId: reader.tokenIds("bos_token_id")[0],
    eosTokenIds: reader.tokenIds("eos_token_id"),
    padTokenId: reader.tokenIds("pad_token_id")[0],
  };
  let eosTokenIds = config.eosTokenIds;
  if (typeof generationConfig === "object" && generationConfig !== null && !Array.isArray(generationConfig)) {
    const gen = new ConfigReader(
      generationConfig as Json,
      source.replace(/config\.json$/, "generation_config.json"),
    );
    const ids = gen.tokenIds("eos_token_id");
    if (ids.length > 0) eosTokenIds = ids;
  }
  const shape: ModelShape = {
    architecture,
    layers: config.layers,
    heads: config.heads,
    kvHeads: config.kvHeads,
    headDim: config.headDim,
  };
  return { ...config, eosTokenIds, shape: () => ({ ...shape }) };
}

async function readJson(path: string, field: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    throw new MoaError(E_CONFIG, `${path}: ${(error as Error).message}`, { source: path, field });
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new MoaError(E_CONFIG, `${path}: (root): not valid JSON (${(error as Error).message})`, {
      source: path,
      field: "(root)",
    });
  }
}

/** Reads `config.json` and, when present, `generation_config.json` of a checkpoint directory. */
export async function readModelConfig(dir: string): Promise<ModelConfig> {
  const configPath = join(dir, "config.json");
  const json = await readJson(configPath, "(file)");
  const generationPath = join(dir, "generation_config.json");
  let generation: unknown;
  try {
    generation = JSON.parse(await readFile(generationPath, "utf8"));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") {
      throw new MoaError(E_CONFIG, `${generationPath}: (root): ${(error as Error).message}`, {
        source: generationPath,
        field: "(root)",
      });
    }
  }
  return parseModelConfig(json, configPath, generation);
}
