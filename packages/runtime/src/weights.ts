/**
 * Maps a checkpoint's tensors onto the transformer graph: every tensor the config implies must be there with
 * the shape the config implies, then it is uploaded to the backend. Matrices stay in their stored dtype
 * (bf16/f16/f32; the matmul widens to fp32 as Hugging Face's fp32 math on bf16 weights does); norm weights
 * and biases are widened to f32 here, which is exact.
 */
import { MoaError } from "@moa/core";
import type { Backend, DType, Tensor } from "@moa/kernels-cuda";
import type { ModelConfig } from "./config.js";
import {
  type CheckpointIndex,
  type CheckpointTensor,
  checkFloatDtype,
  E_CHECKPOINT,
  readSafetensorsData,
  tensorElements,
  tensorWithBytes,
} from "./safetensors-reader.js";

export interface LayerWeights {
  readonly inputNorm: Tensor;
  readonly q: Tensor;
  readonly k: Tensor;
  readonly v: Tensor;
  readonly o: Tensor;
  readonly qBias?: Tensor;
  readonly kBias?: Tensor;
  readonly vBias?: Tensor;
  readonly oBias?: Tensor;
  readonly postNorm: Tensor;
  readonly gate: Tensor;
  readonly up: Tensor;
  readonly down: Tensor;
  readonly gateBias?: Tensor;
  readonly upBias?: Tensor;
  readonly downBias?: Tensor;
}

export interface ModelWeights {
  readonly embed: Tensor;
  readonly layers: readonly LayerWeights[];
  readonly norm: Tensor;
  /** `lm_head.weight`, or the embedding table itself when embeddings are tied. */
  readonly lmHead: Tensor;
  /** Every tensor uploaded (each once), for disposal. */
  readonly all: readonly Tensor[];
}

/** One expected tensor: its name, the shape the config implies, and the config fields behind that shape. */
interface Expected {
  readonly name: string;
  readonly shape: readonly number[];
  readonly because: string;
  readonly kind: "matrix" | "vector";
}

/** The tensors a config implies, in graph order (the weights contract with Hugging Face's module names). */
export function expectedTensors(config: ModelConfig): Expected[] {
  const { hiddenSize: d, heads, kvHeads, headDim, intermediateSize: ff, vocabSize } = config;
  const qOut = heads * headDim;
  const kvOut = kvHeads * headDim;
  const list: Expected[] = [
    {
      name: "model.embed_tokens.weight",
      shape: [vocabSize, d],
      because: `vocab_size=${vocabSize}, hidden_size=${d}`,
      kind: "matrix",
    },
  ];
  const qBecause = `num_attention_heads=${heads} × head_dim=${headDim}, hidden_size=${d}`;
  const kvBecause = `num_key_value_heads=${kvHeads} × head_dim=${headDim}, hidden_size=${d}`;
  for (let l = 0; l < config.layers; l++) {
    const p = `model.layers.${l}.`;
    list.push(
      { name: `${p}input_layernorm.weight`, shape: [d], because: `hidden_size=${d}`, kind: "vector" },
      { name: `${p}self_attn.q_proj.weight`, shape: [qOut, d], because: qBecause, kind: "matrix" },
      { name: `${p}self_attn.k_proj.weight`, shape: [kvOut, d], because: kvBecause, kind: "matrix" },
      { name: `${p}self_attn.v_proj.weight`, shape: [kvOut, d], because: kvBecause, kind: "matrix" },
      { name: `${p}self_attn.o_proj.weight`, shape: [d, qOut], because: qBecause, kind: "matrix" },
    );
    if (config.qkvBias) {
      list.push(
        { name: `${p}self_attn.q_proj.bias`, shape: [qOut], because: qBecause, kind: "vector" },
        { name: `${p}self_attn.k_proj.bias`, shape: [kvOut], because: kvBecause, kind: "vector" },
        { name: `${p}self_attn.v_proj.bias`, shape: [kvOut], because: kvBecause, kind: "vector" },
      );
    }
    if (config.oBias) {
      list.push({
        name: `${p}self_attn.o_proj.bias`,
        shape: [d],
        because: `hidden_size=${d}`,
        kind: "vector",
      });
    }
    const mlpBecause = `intermediate_size=${ff}, hidden_size=${d}`;
    list.push(
      {
        name: `${p}post_attention_layernorm.weight`,
        shape: [d],
        because: `hidden_size=${d}`,
        kind: "vector",
      },
      { name: `${p}mlp.gate_proj.weight`, shape: [ff, d], because: mlpBecause, kind: "matrix" },
      { name: `${p}mlp.up_proj.weight`, shape: [ff, d], because: mlpBecause, kind: "matrix" },
      { name: `${p}mlp.down_proj.weight`, shape: [d, ff], because: mlpBecause, kind: "matrix" },
    );
    if (config.mlpBias) {
      list.push(
        { name: `${p}mlp.gate_proj.bias`, shape: [ff], because: `intermediate_size=${ff}`, kind: "vector" },
        { name: `${p}mlp.up_proj.bias`, shape: [ff], because: `intermediate_size=${ff}`, kind: "vector" },
        { name: `${p}mlp.down_proj.bias`, shape: [d], because: `hidden_size=${d}`, kind: "vector" },
      );
    }
  }
  list.push({ name: "model.norm.weight", shape: [d], because: `hidden_size=${d}`, kind: "vector" });
  if (!config.tieWordEmbeddings) {
    list.push({
      name: "lm_head.weight",
      shape: [vocabSize, d],
      because: `vocab_size=${vocabSize}, hidden_size=${d} (tie_word_embeddings=false)`,
      kind: "matrix",
    });
  }
  return list;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function checkpointName(checkpoint: CheckpointIndex): string {
  return checkpoint.index ?? checkpoint.files[0]?.file ?? checkpoint.dir;
}

/**
 * Checks every tensor the config implies against the checkpoint, before anything is uploaded:
 * missing tensors, shapes that contradict config.json, dtypes other than bf16/f16/f32.
 */
export function validateCheckpoint(config: ModelConfig, checkpoint: CheckpointIndex): void {
  for (const expected of expectedTensors(config)) {
    const tensor = checkpoint.tensors.get(expected.name);
    if (tensor === undefined) {
      const where = checkpointName(checkpoint);
      throw new MoaError(
        E_CHECKPOINT,
        `${where}: ${expected.name}: tensor missing (${config.source} implies it: ${expected.because})`,
        { source: where, field: expected.name },
      );
    }
    if (!sameShape(tensor.shape, expected.shape)) {
      throw new MoaError(
        E_CHECKPOINT,
        `${tensor.file}: ${expected.name}.shape = ${JSON.stringify(tensor.shape)} contradicts ${config.source}: ` +
          `expected ${JSON.stringify(expected.shape)} from ${expected.because}`,
        { source: tensor.file, field: `${expected.name}.shape` },
      );
    }
    checkFloatDtype(tensor);
  }
}

function widenToF32(tensor: CheckpointTensor): Float32Array {
  const elements = tensorElements(tensor);
  if (elements instanceof Float32Array) return elements;
  const out = new Float32Array(elements.length);
  if (tensor.dtype === "BF16") {
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < elements.length; i++) bits[i] = elements[i]! << 16;
  } else {
    for (let i = 0; i < elements.length; i++) out[i] = halfToFloat(elements[i]!);
  }
  return out;
}

/** IEEE 754 binary16 → number (exact). */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa === 0 ? sign * Number.POSITIVE_INFINITY : Number.NaN;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

/**
 * Validates the checkpoint's headers against the config, then reads the files one at a time (each byte once,
 * in chunks of at most 1 GiB unless one tensor is larger) and uploads their tensors, so at most one file's data
 * is held besides what the backend already has.
 */
export async function uploadWeights(
  backend: Backend,
  config: ModelConfig,
  checkpoint: CheckpointIndex,
): Promise<ModelWeights> {
  validateCheckpoint(config, checkpoint);
  const expected = expectedTensors(config);
  const all: Tensor[] = [];
  const byName = new Map<string, Tensor>();
  try {
    for (const header of checkpoint.files) {
      const wanted = expected.filter((e) => checkpoint.tensors.get(e.name)!.file === header.file);
      if (wanted.length === 0) continue;
      const data = await readSafetensorsData(header);
      for (const e of wanted) {
        const tensor = tensorWithBytes(checkpoint.tensors.get(e.name)!, data);
        const uploaded =
          e.kind === "vector"
            ? backend.fromHost("f32", e.shape, widenToF32(tensor))
            : backend.fromHost(checkFloatDtype(tensor) as DType, e.shape, tensorElements(tensor));
        all.push(uploaded);
        byName.set(e.name, uploaded);
      }
    }
  } catch (error) {
    for (const t of all) backend.free(t);
    throw error;
  }
  const get = (name: string): Tensor => byName.get(name)!;
  /** `{ [key]: tensor }` when the checkpoint has it (biases), else `{}`. */
  const optional = <K extends string>(key: K, name: string): Partial<Record<K, Tensor>> => {
    const t = byName.get(name);
    return t === undefined ? {} : ({ [key]: t } as Record<K, Tensor>);
  };
  const layers: LayerWeights[] = [];
  for (let l = 0; l < config.layers; l++) {
    const p = `model.layers.${l}.`;
    layers.push({
      inputNorm: get(`${p}input_layernorm.weight`),
      q: get(`${p}self_attn.q_proj.weight`),
      k: get(`${p}self_attn.k_proj.weight`),
      v: get(`${p}self_attn.v_proj.weight`),
      o: get(`${p}self_attn.o_proj.weight`),
      ...optional("qBias", `${p}self_attn.q_proj.bias`),
      ...optional("kBias", `${p}self_attn.k_proj.bias`),
      ...optional("vBias", `${p}self_attn.v_proj.bias`),
      ...optional("oBias", `${p}self_attn.o_proj.bias`),
      postNorm: get(`${p}post_attention_layernorm.weight`),
      gate: get(`${p}mlp.gate_proj.weight`),
      up: get(`${p}mlp.up_proj.weight`),
      down: get(`${p}mlp.down_proj.weight`),
      ...optional("gateBias", `${p}mlp.gate_proj.bias`),
      ...optional("upBias", `${p}mlp.up_proj.bias`),
      ...optional("downBias", `${p}mlp.down_proj.bias`),
    });
  }
  const embed = get("model.embed_tokens.weight");
  return {
    embed,
    layers,
    norm: get("model.norm.weight"),
    lmHead: config.tieWordEmbeddings ? embed : get("lm_head.weight"),
    all,
  };
}
