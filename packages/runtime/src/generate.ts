/**
 * Text generation over a loaded model: prompts are prefilled together, then every live sequence advances one
 * token per decode step (one batched attentionDecode per layer). Tokens stream out as an async iterator;
 * generation stops at a stop token (EOS from generation_config.json/config.json, plus any given), at a stop
 * string, at `maxNewTokens`, or when the context is full.
 */
import { randomInt } from "node:crypto";
import { MoaError } from "@moa/core";
import type { Model } from "./load.js";
import { Sampler, type SamplingOptions, samplingOptionsProblem } from "./sampling.js";
import type { TextTokenizer } from "./tokenizer.js";

/** Sampling options apply per sequence; sequence i of a batch samples with seed `seed + i` (random when unset). */
export interface GenerateOptions extends SamplingOptions {
  /** Most tokens to generate per sequence (default: until the context is full). */
  readonly maxNewTokens?: number;
  /** Token ids that end a sequence, in addition to the checkpoint's EOS ids. */
  readonly stopTokens?: readonly number[];
  /** Do not stop at the checkpoint's EOS ids (only at `stopTokens`). */
  readonly ignoreEos?: boolean;
  /** Strings that end a sequence; the text stops right before the first one found. */
  readonly stopStrings?: readonly string[];
  /** When a prompt is text: add the tokenizer's special tokens (BOS) — default true. */
  readonly addSpecialTokens?: boolean;
  /** Ends generation early (finish reason "abort"). */
  readonly signal?: AbortSignal;
}

/** One generated token and the text it releases (may be "" while a character or stop string is incomplete). */
export interface GeneratedToken {
  readonly token: number;
  readonly text: string;
}

/** A generated token of sequence `index` of a batch. */
export interface BatchToken extends GeneratedToken {
  readonly index: number;
}

export type FinishReason = "stop" | "length" | "abort";

export interface GenerationResult {
  readonly promptTokens: number;
  /** Every generated token, the stop token included. */
  readonly tokens: readonly number[];
  /** The generated text (special tokens skipped, cut before a stop string). */
  readonly text: string;
  readonly finishReason: FinishReason;
}

export type Prompt = string | readonly number[];

/**
 * Incremental detokenization: turns generated ids into text pieces that are always complete characters, holding
 * back any tail that could still become a stop string. The pieces concatenate to `decode(ids)` (cut before the
 * first stop string).
 */
export class TextStream {
  readonly ids: number[] = [];
  private prefixOffset = 0;
  private readOffset = 0;
  /** Complete text decoded so far. */
  private text = "";
  private released = 0;
  stopped = false;

  constructor(
    private readonly tokenizer: TextTokenizer,
    private readonly stopStrings: readonly string[],
  ) {}

  /** Adds a token; returns the text it releases. `final` releases everything held (no stop string matched). */
  push(token: number, final: boolean): string {
    this.ids.push(token);
    // Decode a window of recent ids (as transformers' TextStreamer / TGI do) so each step is O(window).
    const prefix = this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const window = this.tokenizer.decode(this.ids.slice(this.prefixOffset));
    const complete = window.length > prefix.length && (final || !window.endsWith("\uFFFD"));
    if (complete) {
      this.text += window.slice(prefix.length);
      this.prefixOffset = this.readOffset;
      this.readOffset = this.ids.length;
    }
    // A window held for an incomplete character may already hold a stop string before that character.
    const pending = complete ? "" : window.slice(prefix.length).replace(/\uFFFD+$/, "");
    const visible = this.text + pending;
    const searchFrom = Math.max(0, this.released - this.longestStop() + 1);
    let cut = -1;
    for (const stop of this.stopStrings) {
      const at = visible.indexOf(stop, searchFrom);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.stopped = true;
      this.text = visible.slice(0, cut);
      return this.release(Math.max(this.released, cut));
    }
    if (final) return this.release(this.text.length);
    return this.release(this.text.length - this.heldBack());
  }

  /** Text so far (the released part and anything still held). */
  get fullText(): string {
    return this.text;
  }

  private release(upTo: number): string {
    const out = this.text.slice(this.released, upTo);
    this.released = Math.max(this.released, upTo);
    return out;
  }

  private longestStop(): number {
    let longest = 0;
    for (const s of this.stopStrings) longest = Math.max(longest, s.length);
    return longest;
  }

  /** Length of the longest suffix of the text that starts some stop string. */
  private heldBack(): number {
    let held = 0;
    for (const stop of this.stopStrings) {
      for (let n = Math.min(stop.length - 1, this.text.length); n > held; n--) {
        if (this.text.endsWith(stop.slice(0, n))) {
          held = n;
          break;
        }
      }
    }
    return Math.min(held, this.text.length - this.released);
  }
}

interface SequenceState {
  readonly index: number;
  readonly slot: number;
  readonly promptTokens: number;
  readonly sampler: Sampler;
  readonly stream: TextStream;
  finishReason: FinishReason | undefined;
  /** Whether this generation still holds `slot` (released as soon as the sequence finishes). */
  holdsSlot: boolean;
}

function checkOptions(options: GenerateOptions): void {
  const problem = samplingOptionsProblem(options);
  const fail = (field: string, reason: string): never => {
    throw new MoaError("E_ARGUMENT", `generate: ${field}: ${reason}`, { source: "generate", field });
  };
  if (problem !== undefined) fail(problem.split(" ")[0]!, problem);
  const { maxNewTokens, stopStrings, stopTokens } = options;
  if (maxNewTokens !== undefined && !(Number.isSafeInteger(maxNewTokens) && maxNewTokens >= 0)) {
    fail("maxNewTokens", `must be an integer ≥ 0, got ${maxNewTokens}`);
  }
  if (stopStrings?.some((s) => typeof s !== "string" || s.length === 0)) {
    fail("stopStrings", "must be non-empty strings");
  }
  if (stopTokens?.some((t) => !Number.isSafeInteger(t) || t < 0)) fail("stopTokens", "must be token ids");
}

function promptIds(model: Model, prompt: Prompt, options: GenerateOptions, index: number): number[] {
  if (typeof prompt === "string") {
    return model.tokenizer.encode(prompt, { addSpecialTokens: options.addSpecialTokens ?? true });
  }
  if (!Array.isArray(prompt) && !(prompt instanceof Int32Array)) {
    throw new MoaError("E_ARGUMENT", `generate: prompts[${index}]: must be text or an array of token ids`, {
      source: "generate",
      field: `prompts[${index}]`,
    });
  }
  return Array.from(prompt);
}

/** Lets other work on the event loop (an HTTP server, timers) run between decode steps. */
function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Generates for several prompts at once; sequences that finish leave the batch and free their cache slot.
 * Yields each token with the index of its prompt; returns one result per prompt, in prompt order.
 * The model needs a free cache slot per prompt (`loadModel(dir, { slots })`).
 */
export async function* generateBatch(
  model: Model,
  prompts: readonly Prompt[],
  options: GenerateOptions = {},
): AsyncGenerator<BatchToken, GenerationResult[], void> {
  checkOptions(options);
  const ids = prompts.map((p, i) => promptIds(model, p, options, i));
  ids.forEach((prompt, i) => {
    if (prompt.length === 0) {
      throw new MoaError("E_ARGUMENT", `generate: prompts[${i}] has no tokens`, {
        source: "generate",
        field: `prompts[${i}]`,
      });
    }
    model.transformer.checkLength(prompt.length, "prompt");
  });
  if (ids.length > model.cache.freeSlots()) {
    throw new MoaError(
      "E_CAPACITY",
      `generate: ${ids.length} prompts but ${model.cache.freeSlots()} free KV cache slots; load the model with slots ≥ ${ids.length}`,
      { source: "generate", field: "prompts" },
    );
  }
  const stopTokens = new Set<number>(options.stopTokens ?? []);
  if (!options.ignoreEos) for (const id of model.config.eosTokenIds) stopTokens.add(id);
  const stopStrings = options.stopStrings ?? [];
  const maxLength = model.maxLength;
  // Unseeded sampling draws a fresh seed (as an API user expects two identical requests to differ).
  const seed = options.seed ?? randomInt(0, 2 ** 31);
  const states: SequenceState[] = [];
  const release = (s: SequenceState): void => {
    if (!s.holdsSlot) return;
    s.holdsSlot = false;
    model.cache.releaseSlot(s.slot);
  };
  try {
    for (const [index, prompt] of ids.entries()) {
      states.push({
        index,
        slot: model.cache.allocateSlot(),
        promptTokens: prompt.length,
        sampler: new Sampler({ ...options, seed: seed + index }),
        stream: new TextStream(model.tokenizer, stopStrings),
        finishReason: undefined,
        holdsSlot: true,
      });
    }
    const maxNew = options.maxNewTokens ?? Number.POSITIVE_INFINITY;
    // A sequence ends once prompt + generated tokens fill the context or maxNewTokens are out.
    const atLimit = (s: SequenceState): boolean =>
      s.stream.ids.length >= maxNew || s.promptTokens + s.stream.ids.length >= maxLength;

    for (const s of states) {
      if (options.signal?.aborted || atLimit(s)) {
        s.finishReason = options.signal?.aborted ? "abort" : "length";
        release(s);
      }
    }
    const live = states.filter((s) => s.finishReason === undefined);
    let logits: Float32Array[] = model.transformer.prefill(
      live.map((s) => ({ slot: s.slot, tokens: ids[s.index]! })),
      { logits: "last" },
    );
    let active = live;
    while (active.length > 0) {
      const next: SequenceState[] = [];
      const nextTokens: number[] = [];
      for (const [row, s] of active.entries()) {
        if (options.signal?.aborted) {
          s.finishReason = "abort";
          continue;
        }
        const token = s.sampler.sample(logits[row]!);
        const isStop = stopTokens.has(token);
        const final =
          isStop ||
          s.stream.ids.length + 1 >= maxNew ||
          s.promptTokens + s.stream.ids.length + 1 >= maxLength;
        const text = s.stream.push(token, final);
        yield { index: s.index, token, text };
        if (isStop || s.stream.stopped) s.finishReason = "stop";
        else if (atLimit(s)) s.finishReason = "length";
        else {
          next.push(s);
          nextTokens.push(token);
        }
      }
      for (const s of active) if (s.finishReason !== undefined) release(s);
      active = next;
      if (active.length === 0) break;
      await yieldToEventLoop();
      const flat = model.transformer.decode(
        Int32Array.from(active, (s) => s.slot),
        nextTokens,
      );
      const vocab = model.config.vocabSize;
      logits = active.map((_, row) => flat.subarray(row * vocab, (row + 1) * vocab));
    }
    return states.map((s) => ({
      promptTokens: s.promptTokens,
      tokens: [...s.stream.ids],
      text: s.stream.fullText,
      finishReason: s.finishReason ?? "abort",
    }));
  } finally {
    for (const s of states) release(s);
  }
}

/**
 * Generates a continuation of one prompt (text, or token ids), streaming `{ token, text }` as it goes.
 * The iterator's return value (`for await` discards it; call `next()` or use `generateText`) holds the whole result.
 */
export async function* generate(
  model: Model,
  prompt: Prompt,
  options: GenerateOptions = {},
): AsyncGenerator<GeneratedToken, GenerationResult, void> {
  const batch = generateBatch(model, [prompt], options);
  try {
    for (;;) {
      const step = await batch.next();
      if (step.done) return step.value[0]!;
      yield { token: step.value.token, text: step.value.text };
    }
  } finally {
    // A consumer that stops early (break) must still free the KV cache slot.
    await batch.return([]);
  }
}

/** Runs `generate` to the end and returns the result. */
export async function generateText(
  model: Model,
  prompt: Prompt,
  options: GenerateOptions = {},
): Promise<GenerationResult> {
  const it = generate(model, prompt, options);
  for (;;) {
    const step = await it.next();
    if (step.done) return step.value;
  }
}
