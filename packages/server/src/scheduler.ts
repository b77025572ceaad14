/**
 * Continuous batching over @moa/runtime's TransformerModel. Each iteration of the loop
 *   1. admits waiting sequences, first come first served, while the KV cache has room for their exact bytes
 *      (a sequence holds one cache slot of `sequenceBytes`, known from the plan and the max length) and the
 *      prompts admitted together stay within `maxPrefillTokens`;
 *   2. prefills the admitted prompts in one batch and samples each one's first token;
 *   3. runs one batched decode step over every live sequence and samples its next token;
 * then yields to the event loop so the HTTP server can stream what was produced and accept new requests.
 * A sequence leaves the batch as soon as it finishes or is cancelled, and its cache slot is free at once for the
 * next iteration's admissions. Model calls are synchronous, so a cancellation (which runs between iterations, or
 * from a listener inside one) never frees a slot that a kernel is still using.
 */
import { MoaError } from "@moa/core";
import { type Model, Sampler, TextStream } from "@moa/runtime";

export interface SequenceSpec {
  /** Prompt token ids (≥ 1); `promptIds.length + maxTokens` must not exceed the model's max length. */
  readonly promptIds: readonly number[];
  /** Most tokens to generate (≥ 1). */
  readonly maxTokens: number;
  /** 0 = greedy. */
  readonly temperature: number;
  /** Nucleus sampling mass in (0, 1]. */
  readonly topP: number;
  /** 0 = no top-k limit. */
  readonly topK: number;
  /** Seed of this sequence's sampler: same seed, same prompt, same options → same tokens. */
  readonly seed: number;
  /** The text ends right before the first of these. */
  readonly stopStrings: readonly string[];
}

/**
 * "stop": a stop token or stop string; "length": max tokens or the max length; "cancelled": the client went
 * away; "shutdown": cancelled by a shutdown's deadline; "error": the model failed (see `error`).
 */
export type SequenceFinishReason = "stop" | "length" | "cancelled" | "shutdown" | "error";

export interface SequenceResult {
  readonly promptTokens: number;
  /** Tokens generated, a final stop token included (as OpenAI and vLLM count them). */
  readonly completionTokens: number;
  readonly text: string;
  readonly finishReason: SequenceFinishReason;
  readonly error?: Error;
}

export interface SequenceListener {
  /** Text that is now final (complete characters, no pending stop-string prefix); never "". */
  onText?(delta: string): void;
  /** Called exactly once. */
  onFinish(result: SequenceResult): void;
}

/** Timings the scheduler reports, in seconds. */
export interface SchedulerObserver {
  admitted?(queueWaitSeconds: number): void;
  firstToken?(secondsSinceSubmit: number): void;
  tokenGap?(seconds: number): void;
  /** Tokens produced by one iteration (prefill first tokens + decode tokens). */
  tokens?(count: number, prefillTokens: number): void;
  finished?(reason: SequenceFinishReason): void;
}

export interface SchedulerOptions {
  /** Exact KV bytes one sequence holds (a cache slot at the model's max length). */
  readonly sequenceBytes: number;
  /** Sequences that may wait beyond those a free slot is ready for; more are rejected ("queue_full"). */
  readonly maxQueue: number;
  /** Prompt tokens prefilled together in one iteration (a single longer prompt still goes alone). */
  readonly maxPrefillTokens: number;
  readonly observer?: SchedulerObserver;
}

export type AdmissionFailure = "queue_full" | "closing" | "too_many";

/** A submission the scheduler cannot take; the HTTP layer answers 429, 503 or 400. */
export class AdmissionError extends Error {
  constructor(
    readonly reason: AdmissionFailure,
    message: string,
  ) {
    super(message);
    this.name = "AdmissionError";
  }
}

export interface SchedulerStats {
  /** Sequences waiting for a cache slot. */
  readonly queued: number;
  /** Sequences holding a cache slot (prefilled or decoding). */
  readonly running: number;
  readonly slots: number;
  readonly freeSlots: number;
  readonly sequenceBytes: number;
  /** Bytes of the allocated KV cache (`slots · sequenceBytes`). */
  readonly kvCapacityBytes: number;
  readonly kvUsedBytes: number;
  readonly kvFreeBytes: number;
}

type SequenceState = "queued" | "running" | "finished";

class Sequence {
  state: SequenceState = "queued";
  slot = -1;
  /** Sampled but not yet fed to the model. */
  pending = -1;
  readonly stream: TextStream;
  readonly sampler: Sampler;
  readonly submittedAt = performance.now();
  lastTokenAt = 0;

  constructor(
    readonly spec: SequenceSpec,
    readonly listener: SequenceListener,
    model: Model,
  ) {
    this.stream = new TextStream(model.tokenizer, spec.stopStrings);
    this.sampler = new Sampler({
      temperature: spec.temperature,
      topP: spec.topP,
      topK: spec.topK,
      seed: spec.seed,
    });
  }
}

/** A group of sequences submitted together (one HTTP request); cancelling it frees all their slots at once. */
export interface Submission {
  cancel(): void;
}

export class Scheduler {
  private readonly queue: Sequence[] = [];
  private active: Sequence[] = [];
  private readonly stopTokens: ReadonlySet<number>;
  private looping = false;
  private closing = false;
  private kvUsedBytes = 0;
  private readonly idleWaiters: Array<() => void> = [];

  constructor(
    readonly model: Model,
    private readonly options: SchedulerOptions,
  ) {
    const { sequenceBytes, maxQueue, maxPrefillTokens } = options;
    const check = (field: string, value: number, min: number): void => {
      if (!Number.isSafeInteger(value) || value < min) {
        throw new MoaError("E_ARGUMENT", `Scheduler: ${field} = ${value}: must be an integer ≥ ${min}`, {
          source: "Scheduler",
          field,
        });
      }
    };
    check("sequenceBytes", sequenceBytes, 1);
    check("maxQueue", maxQueue, 0);
    check("maxPrefillTokens", maxPrefillTokens, 1);
    this.stopTokens = new Set(model.config.eosTokenIds);
  }

  get slots(): number {
    return this.model.cache.slots;
  }

  get kvCapacityBytes(): number {
    return this.slots * this.options.sequenceBytes;
  }

  stats(): SchedulerStats {
    const running = this.active.length;
    return {
      queued: this.queue.length,
      running,
      slots: this.slots,
      freeSlots: this.slots - running,
      sequenceBytes: this.options.sequenceBytes,
      kvCapacityBytes: this.kvCapacityBytes,
      kvUsedBytes: this.kvUsedBytes,
      kvFreeBytes: this.kvCapacityBytes - this.kvUsedBytes,
    };
  }

  /**
   * Queues sequences (all or none). Throws AdmissionError when the server is closing, when the queue would
   * overflow, or when the group is larger than the server could ever hold at once.
   */
  submit(specs: readonly SequenceSpec[], listeners: readonly SequenceListener[]): Submission {
    if (specs.length !== listeners.length || specs.length === 0) {
      throw new MoaError("E_ARGUMENT", "Scheduler.submit: one listener per sequence, at least one sequence", {
        source: "Scheduler",
        field: "specs",
      });
    }
    if (this.closing) throw new AdmissionError("closing", "the server is shutting down");
    const room = this.options.maxQueue + this.slots;
    if (specs.length > room) {
      throw new AdmissionError(
        "too_many",
        `${specs.length} sequences in one request, but this server holds at most ${room} (max queue ${this.options.maxQueue} + ${this.slots} KV slots)`,
      );
    }
    const ready = this.slots - this.active.length;
    if (this.queue.length + specs.length > this.options.maxQueue + ready) {
      throw new AdmissionError(
        "queue_full",
        `the request queue is full (${this.queue.length} sequences waiting, limit ${this.options.maxQueue}); retry later`,
      );
    }
    for (const spec of specs) this.checkSpec(spec);
    const sequences = specs.map((spec, i) => new Sequence(spec, listeners[i]!, this.model));
    this.queue.push(...sequences);
    this.wake();
    return {
      cancel: () => {
        for (const s of sequences) this.finish(s, "cancelled");
      },
    };
  }

  /** Resolves when no sequence is queued or running. */
  whenIdle(): Promise<void> {
    if (!this.looping && this.queue.length === 0 && this.active.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Stops taking submissions, lets queued and running sequences finish for up to `graceMs`, then ends the rest
   * with finish reason "shutdown" (their slots freed). Resolves once nothing holds a slot.
   */
  async shutdown(graceMs: number): Promise<void> {
    this.closing = true;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), Math.max(0, graceMs));
    });
    const outcome = await Promise.race([this.whenIdle().then(() => "idle" as const), deadline]);
    clearTimeout(timer);
    if (outcome === "timeout") this.cancelAll();
    await this.whenIdle();
  }

  /** Ends every queued and running sequence now (reason "shutdown"), freeing their slots. */
  cancelAll(): void {
    for (const s of [...this.queue, ...this.active]) this.finish(s, "shutdown");
  }

  get isClosing(): boolean {
    return this.closing;
  }

  private checkSpec(spec: SequenceSpec): void {
    const n = spec.promptIds.length;
    const fail = (field: string, why: string): never => {
      throw new MoaError("E_ARGUMENT", `Scheduler.submit: ${field}: ${why}`, { source: "Scheduler", field });
    };
    if (n < 1) fail("promptIds", "a prompt needs at least one token");
    if (!Number.isSafeInteger(spec.maxTokens) || spec.maxTokens < 1)
      fail("maxTokens", "must be an integer ≥ 1");
    if (n + spec.maxTokens > this.model.maxLength) {
      fail(
        "maxTokens",
        `${n} prompt + ${spec.maxTokens} new tokens exceed the max length ${this.model.maxLength}`,
      );
    }
  }

  private wake(): void {
    if (this.looping) return;
    this.looping = true;
    void this.loop();
  }

  private async loop(): Promise<void> {
    try {
      // Each iteration starts from the event loop, never inside submit(): the caller gets to set up its
      // response before tokens arrive, and requests arriving in the same tick are admitted together.
      do {
        await new Promise<void>((resolve) => setImmediate(resolve));
        try {
          this.iterate();
        } catch (error) {
          // Model failures are handled per batch inside iterate(); anything else ends the running sequences
          // rather than the process, and the loop goes on with the queue.
          for (const s of [...this.active]) this.finish(s, "error", error as Error);
        }
      } while (this.queue.length > 0 || this.active.length > 0);
    } finally {
      this.looping = false;
      for (const resolve of this.idleWaiters.splice(0)) resolve();
    }
  }

  private iterate(): void {
    const observer = this.options.observer;
    let produced = 0;
    let prefilled = 0;
    const admitted = this.admit();
    if (admitted.length > 0) {
      prefilled = admitted.reduce((sum, s) => sum + s.spec.promptIds.length, 0);
      let logits: Float32Array[] | undefined;
      try {
        logits = this.model.transformer.prefill(
          admitted.map((s) => ({ slot: s.slot, tokens: s.spec.promptIds })),
          { logits: "last" },
        );
      } catch (error) {
        for (const s of admitted) this.finish(s, "error", error as Error);
      }
      if (logits !== undefined) {
        const now = performance.now();
        admitted.forEach((s, row) => {
          if (s.state !== "running") return;
          observer?.firstToken?.((now - s.submittedAt) / 1000);
          s.lastTokenAt = now;
          this.accept(s, s.sampler.sample(logits[row]!));
          produced++;
        });
      }
    }
    const decoding = this.active.filter((s) => s.state === "running" && s.pending >= 0);
    if (decoding.length > 0) {
      let flat: Float32Array | undefined;
      try {
        flat = this.model.transformer.decode(
          Int32Array.from(decoding, (s) => s.slot),
          decoding.map((s) => s.pending),
        );
      } catch (error) {
        for (const s of decoding) this.finish(s, "error", error as Error);
      }
      if (flat !== undefined) {
        const vocab = this.model.config.vocabSize;
        const now = performance.now();
        decoding.forEach((s, row) => {
          if (s.state !== "running") return;
          observer?.tokenGap?.((now - s.lastTokenAt) / 1000);
          s.lastTokenAt = now;
          this.accept(s, s.sampler.sample(flat.subarray(row * vocab, (row + 1) * vocab)));
          produced++;
        });
      }
    }
    this.active = this.active.filter((s) => s.state === "running");
    if (produced > 0 || prefilled > 0) observer?.tokens?.(produced, prefilled);
  }

  /** Moves sequences from the queue into free cache slots, charging each its exact KV bytes. */
  private admit(): Sequence[] {
    const admitted: Sequence[] = [];
    let prefillTokens = 0;
    const { sequenceBytes, maxPrefillTokens } = this.options;
    while (this.queue.length > 0) {
      const next = this.queue[0]!;
      if (this.kvUsedBytes + sequenceBytes > this.kvCapacityBytes) break;
      const tokens = next.spec.promptIds.length;
      if (admitted.length > 0 && prefillTokens + tokens > maxPrefillTokens) break;
      this.queue.shift();
      next.slot = this.model.cache.allocateSlot();
      next.state = "running";
      this.kvUsedBytes += sequenceBytes;
      prefillTokens += tokens;
      admitted.push(next);
      this.active.push(next);
      this.options.observer?.admitted?.((performance.now() - next.submittedAt) / 1000);
    }
    return admitted;
  }

  /** Takes a sampled token: streams its text and ends the sequence on a stop or at its length limit. */
  private accept(s: Sequence, token: number): void {
    const generated = s.stream.ids.length + 1;
    const isStop = this.stopTokens.has(token);
    const atLength =
      generated >= s.spec.maxTokens || s.spec.promptIds.length + generated >= this.model.maxLength;
    const delta = s.stream.push(token, isStop || atLength);
    if (delta !== "") this.notify(s, () => s.listener.onText?.(delta));
    if (s.state !== "running") return; // cancelled from inside onText
    if (isStop || s.stream.stopped) this.finish(s, "stop");
    else if (atLength) this.finish(s, "length");
    else s.pending = token;
  }

  /** Ends a sequence once: frees its slot (if it holds one), leaves the queue, tells the listener. */
  private finish(s: Sequence, reason: SequenceFinishReason, error?: Error): void {
    if (s.state === "finished") return;
    if (s.state === "queued") {
      const at = this.queue.indexOf(s);
      if (at >= 0) this.queue.splice(at, 1);
    } else {
      this.model.cache.releaseSlot(s.slot);
      this.kvUsedBytes -= this.options.sequenceBytes;
      const at = this.active.indexOf(s);
      if (at >= 0) this.active.splice(at, 1);
    }
    s.state = "finished";
    s.pending = -1;
    this.options.observer?.finished?.(reason);
    const result: SequenceResult = {
      promptTokens: s.spec.promptIds.length,
      completionTokens: s.stream.ids.length,
      text: s.stream.fullText,
      finishReason: reason,
      ...(error !== undefined ? { error } : {}),
    };
    this.notify(s, () => s.listener.onFinish(result));
    if (!this.looping && this.queue.length === 0 && this.active.length === 0) {
      for (const resolve of this.idleWaiters.splice(0)) resolve();
    }
  }

  /** A listener that throws must not stall the batch: its sequence is cancelled instead. */
  private notify(s: Sequence, call: () => void): void {
    try {
      call();
    } catch (error) {
      if (s.state !== "finished") this.finish(s, "error", error as Error);
    }
  }
}
