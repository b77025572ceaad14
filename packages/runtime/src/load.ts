/**
 * `loadModel(dir)`: a Hugging Face checkpoint directory → a ready model (config, tokenizer, chat template,
 * weights on the backend, KV cache sized for the plan). Everything read from files is validated here, with
 * errors that name the file and the field.
 */
import { readFile } from "node:fs/promises";
import { assertPlanMatchesModel, MoaError, type MoaPlan, parsePlanText } from "@moa/core";
import { type Backend, loadBackend } from "@moa/kernels-cuda";
import {
  type ChatMessage,
  type ChatTemplate,
  E_CHAT_TEMPLATE,
  type RenderOptions,
  readChatTemplate,
} from "./chat-template.js";
import { type ModelConfig, readModelConfig } from "./config.js";
import { KvCache } from "./kv-cache.js";
import { type ContextLimit, type MaskMode, TransformerModel } from "./model.js";
import { openCheckpoint } from "./safetensors-reader.js";
import { type EncodeOptions, TextTokenizer } from "./tokenizer.js";
import { uploadWeights } from "./weights.js";

export interface LoadOptions {
  /** A MoA plan (object, or path of a `moa-plan` JSON file); omitted = dense attention and a dense cache. */
  readonly plan?: MoaPlan | string;
  /** A backend, or which one to load ("cpu", "cuda"); default: CUDA when a GPU is there, else CPU. */
  readonly backend?: Backend | "cpu" | "cuda";
  /** Longest sequence (prompt + generated) to serve; default and upper bound: the model's context. */
  readonly maxLength?: number;
  /** Sequences that can be in flight at once (KV cache slots); default 1. */
  readonly slots?: number;
}

export class Model {
  constructor(
    readonly dir: string,
    readonly config: ModelConfig,
    readonly tokenizer: TextTokenizer,
    readonly chatTemplate: ChatTemplate | undefined,
    readonly backend: Backend,
    readonly transformer: TransformerModel,
  ) {}

  get plan(): MoaPlan | undefined {
    return this.transformer.plan;
  }

  get cache(): KvCache {
    return this.transformer.cache;
  }

  /** Longest sequence (prompt + generated tokens) a slot holds. */
  get maxLength(): number {
    return this.cache.maxLength;
  }

  /** Token ids of a text (BOS added by default, as the tokenizer's post-processor says). */
  encode(text: string, options?: EncodeOptions): number[] {
    return this.tokenizer.encode(text, options);
  }

  /** Text of token ids, special tokens skipped. */
  decode(ids: readonly number[] | Int32Array): string {
    return this.tokenizer.decode(ids);
  }

  /** The prompt text of a conversation, rendered with the checkpoint's chat template. */
  renderChat(messages: readonly ChatMessage[], options?: RenderOptions): string {
    if (this.chatTemplate === undefined) {
      throw new MoaError(
        E_CHAT_TEMPLATE,
        `${this.dir}: chat_template: the checkpoint has no chat template (tokenizer_config.json or chat_template.jinja); prompt it with plain text`,
        { source: this.dir, field: "chat_template" },
      );
    }
    return this.chatTemplate.render(messages, options);
  }

  /** Token ids of a conversation: the rendered template, encoded without adding special tokens again. */
  encodeChat(messages: readonly ChatMessage[], options?: RenderOptions): number[] {
    return this.tokenizer.encode(this.renderChat(messages, options), { addSpecialTokens: false });
  }

  /**
   * Logits at every position of `tokens` (`[n·vocab]`, row p predicts token p+1) from one prefill in a
   * temporary cache slot. With a plan, `maskMode` picks the block (default) or window mask.
   */
  logits(tokens: ArrayLike<number>, options: { maskMode?: MaskMode } = {}): Float32Array {
    const slot = this.cache.allocateSlot();
    try {
      const maskMode = options.maskMode ?? "block";
      return this.transformer.prefill([{ slot, tokens }], { logits: "all", maskMode })[0]!;
    } finally {
      this.cache.releaseSlot(slot);
    }
  }

  /**
   * Negative log-likelihood of each next token of `tokens` from position `from` on (default 0), from one prefill
   * in a temporary cache slot: `nll[p − from] = −log p(tokens[p + 1] | tokens[0..p])`. The log-softmax runs on
   * the backend, so the n × vocab logits never reach the host. With a plan, `maskMode` as in `logits`.
   */
  nll(tokens: ArrayLike<number>, options: { from?: number; maskMode?: MaskMode } = {}): Float64Array {
    const slot = this.cache.allocateSlot();
    try {
      return this.transformer.prefillNll({ slot, tokens }, options.from ?? 0, options.maskMode ?? "block");
    } finally {
      this.cache.releaseSlot(slot);
    }
  }

  /** Bytes of the KV cache (all slots), exactly as allocated. */
  cacheBytes(): number {
    return this.cache.cacheBytes();
  }

  /** Frees weights, scratch and cache on the backend. */
  dispose(): void {
    this.transformer.dispose();
  }
}

async function readPlan(plan: MoaPlan | string): Promise<{ plan: MoaPlan; source: string }> {
  if (typeof plan !== "string") return { plan, source: "plan" };
  let text: string;
  try {
    text = await readFile(plan, "utf8");
  } catch (error) {
    throw new MoaError("E_PLAN", `${plan}: ${(error as Error).message}`, { source: plan, field: "(file)" });
  }
  return { plan: parsePlanText(text, plan), source: plan };
}

function contextLimit(config: ModelConfig, maxLength: number | undefined): ContextLimit {
  if (maxLength === undefined) {
    return { length: config.contextLength, source: config.source, field: config.contextField };
  }
  if (!Number.isSafeInteger(maxLength) || maxLength < 1) {
    throw new MoaError("E_ARGUMENT", `loadModel: maxLength = ${maxLength}: must be a positive integer`, {
      source: "loadModel",
      field: "maxLength",
    });
  }
  if (maxLength > config.contextLength) {
    throw new MoaError(
      "E_ARGUMENT",
      `loadModel: maxLength = ${maxLength} exceeds the model's context: ${config.source}: ${config.contextField} = ${config.contextLength}`,
      { source: "loadModel", field: "maxLength" },
    );
  }
  return { length: maxLength, source: "loadModel", field: "maxLength" };
}

/**
 * The backend `loadModel` uses for `backend: "cpu" | "cuda"` or none (CUDA when a GPU is there, else CPU), with
 * load failures as MoaError E_BACKEND. For callers that must know the backend before loading a model, e.g. its
 * KV cache dtype to size the cache (@moa/server); pass it on as `LoadOptions.backend`.
 */
export function loadNamedBackend(name: "cpu" | "cuda" | undefined): Backend {
  try {
    return loadBackend(name);
  } catch (error) {
    throw new MoaError("E_BACKEND", (error as Error).message, {
      source: "@moa/kernels-cuda",
      field: "backend",
    });
  }
}

/**
 * Loads a checkpoint directory: `config.json` (+ `generation_config.json`), `tokenizer.json`
 * (+ `tokenizer_config.json`, chat template), `model.safetensors` or a sharded index.
 */
export async function loadModel(dir: string, options: LoadOptions = {}): Promise<Model> {
  const config = await readModelConfig(dir);
  const limit = contextLimit(config, options.maxLength);
  const slots = options.slots ?? 1;
  if (!Number.isSafeInteger(slots) || slots < 1) {
    throw new MoaError("E_ARGUMENT", `loadModel: slots = ${slots}: must be a positive integer`, {
      source: "loadModel",
      field: "slots",
    });
  }
  let plan: MoaPlan | undefined;
  if (options.plan !== undefined) {
    const read = await readPlan(options.plan);
    assertPlanMatchesModel(read.plan, config.shape(), read.source);
    plan = read.plan;
  }
  const tokenizer = await TextTokenizer.fromDir(dir);
  const chatTemplate = await readChatTemplate(dir, tokenizer.tokenizerConfig);
  const checkpoint = await openCheckpoint(dir);
  const backend = typeof options.backend === "object" ? options.backend : loadNamedBackend(options.backend);
  const weights = await uploadWeights(backend, config, checkpoint);
  let cache: KvCache | undefined;
  try {
    cache = new KvCache(backend, config, { maxLength: limit.length, slots, plan });
    const transformer = new TransformerModel(backend, config, weights, cache, limit);
    return new Model(dir, config, tokenizer, chatTemplate, backend, transformer);
  } catch (error) {
    cache?.dispose();
    for (const t of weights.all) backend.free(t);
    throw error;
  }
}
