/**
 * The OpenAI-compatible HTTP server over node:http: routes, bearer-key check, body limits, request validation,
 * prompt encoding, non-streaming JSON and SSE streaming responses, client-disconnect cancellation, metrics and
 * graceful shutdown. Generation itself is the Scheduler's (continuous batching with KV-budget admission).
 *
 * Nothing in a request names a file: the model, plan and chat template are fixed when the server starts, and a
 * request's `model` is only compared with the served model's name.
 */
import { createHash, randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { basename } from "node:path";
import { MoaError } from "@moa/core";
import { type ChatTemplate, chatTemplateFromConfig, type Model } from "@moa/runtime";
import { ApiError, invalidRequest } from "./errors.js";
import {
  type ChatRequest,
  type CompletionRequest,
  parseChatRequest,
  parseCompletionRequest,
  type SamplingParams,
} from "./openai-requests.js";
import {
  AdmissionError,
  Scheduler,
  type SequenceListener,
  type SequenceResult,
  type SequenceSpec,
  type Submission,
} from "./scheduler.js";
import { ServerMetrics } from "./server-metrics.js";

export interface MoaServerOptions {
  /** The model id clients send and `/v1/models` lists; default: the checkpoint folder's name. */
  readonly modelName?: string;
  /** When set, every /v1 request needs `Authorization: Bearer <apiKey>`. /health and /metrics stay open. */
  readonly apiKey?: string;
  /** Sequences that may wait for a KV slot beyond those a free slot is ready for; more get 429 (default 256). */
  readonly maxQueue?: number;
  /** Largest request body in bytes; larger ones get 413 (default 1 MiB). */
  readonly maxBodyBytes?: number;
  /** Longest prompt in tokens (default: the max length − 1, leaving room for one generated token). */
  readonly maxPromptTokens?: number;
  /** Prompt tokens prefilled together per scheduler iteration (default max(2048, max length)). */
  readonly maxPrefillTokens?: number;
  /** A Jinja chat template (its text) used instead of the checkpoint's own. */
  readonly chatTemplate?: string;
  /** Where the chat template came from, for error messages (default "--chat-template"). */
  readonly chatTemplateSource?: string;
  /** The KV budget reported on /metrics (default: the allocated cache). */
  readonly kvBudgetBytes?: number;
  /** How long `close()` lets running requests finish before cancelling them (default 30 s). */
  readonly shutdownGraceMs?: number;
  /** Receives one line per notable event (server errors); default: nothing is logged. */
  readonly log?: (line: string) => void;
}

export const DEFAULT_MAX_QUEUE = 256;
export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;
export const DEFAULT_SHUTDOWN_GRACE_MS = 30_000;
/** Default completion length of /v1/completions when max_tokens is omitted (OpenAI's default). */
export const DEFAULT_COMPLETION_TOKENS = 16;

type Route = "/v1/completions" | "/v1/chat/completions" | "/v1/models" | "/health" | "/metrics" | "other";

interface PreparedPrompt {
  readonly ids: number[];
  /** The prompt as text, for `echo`. */
  readonly text: string;
  readonly maxTokens: number;
}

function sha256(text: string): Buffer {
  return createHash("sha256").update(text).digest();
}

function now(): number {
  return Math.floor(Date.now() / 1000);
}

function finishReasonOf(result: SequenceResult): "stop" | "length" {
  return result.finishReason === "length" ? "length" : "stop";
}

export class MoaServer {
  readonly http: Server;
  readonly scheduler: Scheduler;
  readonly metrics: ServerMetrics;
  readonly modelName: string;
  readonly kvBudgetBytes: number;
  /** Identifies the model, plan and max length (OpenAI's `system_fingerprint`): same fingerprint + seed, same text. */
  readonly fingerprint: string;
  private readonly chatTemplate: ChatTemplate | undefined;
  private readonly apiKeyDigest: Buffer | undefined;
  private readonly maxBodyBytes: number;
  private readonly maxPromptTokens: number;
  private readonly shutdownGraceMs: number;
  private readonly created = now();
  private readonly inFlight = new Set<Promise<void>>();
  private closing = false;
  private closed: Promise<void> | undefined;

  constructor(
    readonly model: Model,
    private readonly options: MoaServerOptions = {},
  ) {
    const maxLength = model.maxLength;
    this.modelName = options.modelName ?? basename(model.dir);
    this.maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
    this.maxPromptTokens = Math.min(options.maxPromptTokens ?? maxLength - 1, maxLength - 1);
    this.shutdownGraceMs = options.shutdownGraceMs ?? DEFAULT_SHUTDOWN_GRACE_MS;
    if (!Number.isSafeInteger(this.maxBodyBytes) || this.maxBodyBytes < 1) {
      throw new MoaError(
        "E_ARGUMENT",
        `server: maxBodyBytes = ${this.maxBodyBytes}: must be a positive integer`,
        {
          source: "server",
          field: "maxBodyBytes",
        },
      );
    }
    if (!Number.isSafeInteger(this.maxPromptTokens) || this.maxPromptTokens < 1) {
      throw new MoaError(
        "E_ARGUMENT",
        `server: maxPromptTokens = ${this.maxPromptTokens}: must be an integer in [1, ${maxLength - 1}] (max length ${maxLength})`,
        { source: "server", field: "maxPromptTokens" },
      );
    }
    this.apiKeyDigest =
      options.apiKey !== undefined && options.apiKey !== "" ? sha256(options.apiKey) : undefined;
    this.chatTemplate =
      options.chatTemplate !== undefined
        ? chatTemplateFromConfig(
            { ...model.tokenizer.tokenizerConfig, chat_template: options.chatTemplate },
            options.chatTemplateSource ?? "--chat-template",
          )
        : model.chatTemplate;
    // Admission charges each sequence the bytes its cache slot really occupies (the runtime's own accounting).
    const sequenceBytes = model.cache.slotBytes();
    this.kvBudgetBytes = options.kvBudgetBytes ?? sequenceBytes * model.cache.slots;
    this.metrics = new ServerMetrics({
      stats: () => this.scheduler.stats(),
      kvBudgetBytes: this.kvBudgetBytes,
      requestsInFlight: () => this.inFlight.size,
    });
    this.scheduler = new Scheduler(model, {
      sequenceBytes,
      maxQueue: options.maxQueue ?? DEFAULT_MAX_QUEUE,
      maxPrefillTokens: options.maxPrefillTokens ?? Math.max(2048, maxLength),
      observer: this.metrics.observer(),
    });
    this.fingerprint = `fp_${createHash("sha256")
      .update(JSON.stringify({ model: this.modelName, plan: model.plan ?? null, maxLength }))
      .digest("hex")
      .slice(0, 12)}`;
    this.http = createServer((req, res) => {
      const handled = this.handle(req, res).catch((error: unknown) => {
        this.options.log?.(`moa serve: unhandled error: ${(error as Error).stack ?? String(error)}`);
        if (!res.headersSent) this.sendError(res, new ApiError(500, "server_error", "internal server error"));
        else res.destroy();
      });
      this.inFlight.add(handled);
      void handled.finally(() => this.inFlight.delete(handled));
    });
    // Slow clients cannot hold a connection open forever while sending a request.
    this.http.headersTimeout = 30_000;
    this.http.requestTimeout = 60_000;
  }

  /** Starts listening; resolves with the bound address (port 0 picks a free port). */
  listen(port: number, host = "127.0.0.1"): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      const onError = (error: Error): void => reject(error);
      this.http.once("error", onError);
      this.http.listen(port, host, () => {
        this.http.off("error", onError);
        resolve(this.http.address() as AddressInfo);
      });
    });
  }

  /** Requests being answered now. */
  get requestsInFlight(): number {
    return this.inFlight.size;
  }

  /**
   * Graceful shutdown: stops accepting connections (new requests on open ones get 503 and /health turns 503),
   * lets queued and running requests finish for up to `graceMs`, cancels what is left (non-streaming requests
   * get 503, streams an error event), then closes every connection. The model stays loaded (its owner frees it).
   */
  close(graceMs = this.shutdownGraceMs): Promise<void> {
    if (this.closed !== undefined) return this.closed;
    this.closing = true;
    this.closed = (async () => {
      const stopped = new Promise<void>((resolve) => {
        if (!this.http.listening) resolve();
        else this.http.close(() => resolve());
      });
      this.http.closeIdleConnections();
      await this.scheduler.shutdown(graceMs);
      // Handlers now only write their last bytes; a client still sending a body is cut off after a second.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([...this.inFlight]),
        new Promise((resolve) => {
          timer = setTimeout(resolve, 1000);
        }),
      ]);
      clearTimeout(timer);
      this.http.closeAllConnections();
      await stopped;
    })();
    return this.closed;
  }

  /**
   * Cuts a graceful shutdown short: every queued and running request ends now (503, or an error event on a
   * stream). Call after `close()` to stop waiting for the grace period.
   */
  abort(): void {
    this.closing = true;
    this.scheduler.cancelAll();
  }

  private routeOf(path: string): Route {
    switch (path) {
      case "/v1/completions":
      case "/v1/chat/completions":
      case "/v1/models":
      case "/health":
      case "/metrics":
        return path;
      default:
        return path.startsWith("/v1/models/") ? "/v1/models" : "other";
    }
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    const path = (req.url ?? "/").split("?")[0]!;
    const route = this.routeOf(path);
    res.setHeader("X-Content-Type-Options", "nosniff");
    res.once("close", () => {
      // A response cut short by the client is counted as nginx does, 499.
      const code = res.writableFinished ? String(res.statusCode) : "499";
      this.metrics.requests.inc({ route, code });
      if (route === "/v1/completions" || route === "/v1/chat/completions") {
        this.metrics.requestDuration.observe((performance.now() - started) / 1000, { route });
      }
    });
    try {
      if (route === "/health") return this.health(req, res);
      if (route === "/metrics")
        return this.expect(req, "GET", () =>
          this.send(res, 200, this.metrics.render(), "text/plain; version=0.0.4; charset=utf-8"),
        );
      if (path.startsWith("/v1/") || path === "/v1") this.checkAuth(req);
      if (route === "/v1/models") return this.expect(req, "GET", () => this.models(res, path));
      if (route === "/v1/completions" || route === "/v1/chat/completions") {
        this.expect(req, "POST", () => undefined);
        if (this.closing) throw this.closingError();
        const body = await this.readJson(req);
        if (route === "/v1/completions") await this.completions(parseCompletionRequest(body), res);
        else await this.chatCompletions(parseChatRequest(body), res);
        return;
      }
      throw new ApiError(
        404,
        "invalid_request_error",
        `Unknown request URL: ${req.method} ${path}.`,
        null,
        "unknown_url",
      );
    } catch (error) {
      if (error instanceof ApiError) {
        if (error.status === 413 || error.status === 415) res.setHeader("Connection", "close");
        return this.sendError(res, error);
      }
      throw error;
    }
  }

  private expect(req: IncomingMessage, method: string, then: () => void): void {
    if (req.method !== method && !(method === "GET" && req.method === "HEAD")) {
      throw new ApiError(
        405,
        "invalid_request_error",
        `Method ${req.method} is not allowed here; use ${method}.`,
        null,
        "method_not_allowed",
      );
    }
    then();
  }

  private health(req: IncomingMessage, res: ServerResponse): void {
    this.expect(req, "GET", () => {
      const stats = this.scheduler.stats();
      const body = JSON.stringify({
        status: this.closing ? "shutting_down" : "ok",
        model: this.modelName,
        running: stats.running,
        queued: stats.queued,
        kv_free_bytes: stats.kvFreeBytes,
      });
      this.send(res, this.closing ? 503 : 200, body, "application/json");
    });
  }

  private models(res: ServerResponse, path: string): void {
    const card = {
      id: this.modelName,
      object: "model",
      created: this.created,
      owned_by: "moa",
      max_model_len: this.model.maxLength,
    };
    if (path === "/v1/models") {
      this.send(res, 200, JSON.stringify({ object: "list", data: [card] }), "application/json");
      return;
    }
    let id: string;
    try {
      id = decodeURIComponent(path.slice("/v1/models/".length));
    } catch {
      id = path.slice("/v1/models/".length);
    }
    if (id !== this.modelName) throw this.modelNotFound(id);
    this.send(res, 200, JSON.stringify(card), "application/json");
  }

  private modelNotFound(id: string): ApiError {
    return new ApiError(
      404,
      "invalid_request_error",
      `The model \`${id}\` does not exist. This server serves \`${this.modelName}\`.`,
      "model",
      "model_not_found",
    );
  }

  private closingError(): ApiError {
    return new ApiError(
      503,
      "server_error",
      "The server is shutting down; retry on another instance.",
      null,
      "server_shutting_down",
      1,
    );
  }

  private checkAuth(req: IncomingMessage): void {
    if (this.apiKeyDigest === undefined) return;
    const header = req.headers.authorization ?? "";
    const match = /^Bearer\s+(.+)$/i.exec(header);
    if (match === null || !timingSafeEqual(sha256(match[1]!.trim()), this.apiKeyDigest)) {
      throw new ApiError(
        401,
        "invalid_request_error",
        match === null
          ? "You didn't provide an API key. Provide it in an Authorization header: 'Authorization: Bearer YOUR_KEY'."
          : "Incorrect API key provided.",
        null,
        "invalid_api_key",
      );
    }
  }

  private async readJson(req: IncomingMessage): Promise<unknown> {
    const type = req.headers["content-type"];
    if (type !== undefined && !/^application\/(.+\+)?json\b/i.test(type)) {
      throw new ApiError(
        415,
        "invalid_request_error",
        `Content-Type must be application/json, got ${JSON.stringify(type)}.`,
        null,
        "unsupported_media_type",
      );
    }
    const tooLarge = (): ApiError =>
      new ApiError(
        413,
        "invalid_request_error",
        `The request body exceeds ${this.maxBodyBytes} bytes.`,
        null,
        "request_too_large",
      );
    const declared = Number(req.headers["content-length"]);
    if (Number.isFinite(declared) && declared > this.maxBodyBytes) throw tooLarge();
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > this.maxBodyBytes) throw tooLarge();
      chunks.push(chunk as Buffer);
    }
    try {
      return JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch {
      throw invalidRequest(
        "We could not parse the JSON body of your request. The OpenAI API expects a JSON payload.",
        null,
        "invalid_json",
      );
    }
  }

  /** Checks a prompt against the limits and sizes its completion. */
  private prepare(
    ids: number[],
    text: string,
    requested: number | undefined,
    fallback: number,
    param: string,
  ): PreparedPrompt {
    const maxLength = this.model.maxLength;
    if (ids.length === 0) throw invalidRequest("The prompt has no tokens.", param, "invalid_value");
    if (ids.length > this.maxPromptTokens) {
      throw invalidRequest(
        `This server accepts prompts of at most ${this.maxPromptTokens} tokens (max length ${maxLength}). However, your prompt has ${ids.length} tokens. Please reduce the length of the prompt.`,
        param,
        "context_length_exceeded",
      );
    }
    const room = maxLength - ids.length;
    if (requested !== undefined && requested > room) {
      throw invalidRequest(
        `This model's maximum context length is ${maxLength} tokens. However, you requested ${ids.length + requested} tokens (${ids.length} in the prompt, ${requested} for the completion). Please reduce the prompt or the completion length.`,
        "max_tokens",
        "context_length_exceeded",
      );
    }
    return { ids, text, maxTokens: requested ?? Math.min(fallback, room) };
  }

  private checkModel(params: SamplingParams): void {
    if (params.model !== this.modelName) throw this.modelNotFound(params.model);
  }

  private async completions(request: CompletionRequest, res: ServerResponse): Promise<void> {
    this.checkModel(request);
    const vocab = this.model.config.vocabSize;
    const prompts = request.prompts.map((prompt, p) => {
      const param = request.prompts.length > 1 ? `prompt[${p}]` : "prompt";
      if ("text" in prompt) {
        return this.prepare(
          this.model.encode(prompt.text),
          prompt.text,
          request.maxTokens,
          DEFAULT_COMPLETION_TOKENS,
          param,
        );
      }
      const bad = prompt.ids.findIndex((t) => t < 0 || t >= vocab);
      if (bad >= 0) {
        throw invalidRequest(
          `${param}[${bad}] = ${prompt.ids[bad]}: token ids must be in [0, ${vocab - 1}].`,
          param,
          "invalid_value",
        );
      }
      return this.prepare(
        [...prompt.ids],
        this.model.decode(prompt.ids),
        request.maxTokens,
        DEFAULT_COMPLETION_TOKENS,
        param,
      );
    });
    await this.run("text_completion", request, prompts, res);
  }

  private async chatCompletions(request: ChatRequest, res: ServerResponse): Promise<void> {
    this.checkModel(request);
    if (this.chatTemplate === undefined) {
      throw invalidRequest(
        `The model \`${this.modelName}\` has no chat template (tokenizer_config.json chat_template or chat_template.jinja), so /v1/chat/completions cannot format a conversation. Start the server with --chat-template <file>, or use /v1/completions with a plain prompt.`,
        "messages",
        "chat_template_missing",
      );
    }
    let text: string;
    try {
      text = this.chatTemplate.render(
        request.messages.map((m) => ({ ...m })),
        { addGenerationPrompt: true },
      );
    } catch (error) {
      throw invalidRequest(
        `The chat template rejected the messages: ${(error as Error).message}`,
        "messages",
        "invalid_value",
      );
    }
    // The template writes special tokens (BOS, turn markers) itself: encode without adding them again.
    const ids = this.model.tokenizer.encode(text, { addSpecialTokens: false });
    const prompt = this.prepare(ids, text, request.maxTokens, Number.POSITIVE_INFINITY, "messages");
    await this.run("chat.completion", request, [prompt], res);
  }

  /** Submits every (prompt, choice) sequence and answers as one JSON body or one SSE stream. */
  private async run(
    kind: "text_completion" | "chat.completion",
    request: SamplingParams & { readonly echo?: boolean },
    prompts: readonly PreparedPrompt[],
    res: ServerResponse,
  ): Promise<void> {
    const id = `${kind === "chat.completion" ? "chatcmpl" : "cmpl"}-${randomUUID().replace(/-/g, "")}`;
    const created = now();
    // Choice i = prompt ⌊i/n⌋, sample i mod n, seeded seed + i (as @moa/runtime's generateBatch seeds a batch).
    const baseSeed = request.seed ?? randomBytes(4).readUInt32LE(0);
    const specs: SequenceSpec[] = [];
    const promptOf: PreparedPrompt[] = [];
    for (const prompt of prompts) {
      for (let j = 0; j < request.n; j++) {
        specs.push({
          promptIds: prompt.ids,
          maxTokens: prompt.maxTokens,
          temperature: request.temperature,
          topP: request.topP,
          topK: request.topK,
          seed: baseSeed + specs.length,
          stopStrings: request.stop,
        });
        promptOf.push(prompt);
      }
    }
    const echo = kind === "text_completion" && request.echo === true;
    const chat = kind === "chat.completion";
    const results: Array<SequenceResult | undefined> = specs.map(() => undefined);
    let remaining = specs.length;
    let allDone: () => void = () => undefined;
    const done = new Promise<void>((resolve) => {
      allDone = resolve;
    });
    const stream = request.stream;
    const base = {
      id,
      object: chat ? "chat.completion.chunk" : "text_completion",
      created,
      model: this.modelName,
      system_fingerprint: this.fingerprint,
    };
    const usageField = request.includeUsage ? { usage: null } : {};
    const writeEvent = (payload: unknown): void => {
      if (!res.destroyed) res.write(`data: ${JSON.stringify(payload)}\n\n`);
    };
    // Chat chunks carry a `delta` (the role first, then content, then {} with the finish reason); completion
    // chunks carry `text`. With include_usage every chunk has `usage: null` until the final usage chunk.
    const chunk = (index: number, choice: Record<string, unknown>, finish: string | null): unknown => ({
      ...base,
      choices: [{ index, ...choice, logprobs: null, finish_reason: finish }],
      ...usageField,
    });
    const textChunk = (index: number, text: string): unknown =>
      chunk(index, chat ? { delta: { content: text } } : { text }, null);
    const finishChunk = (index: number, reason: string): unknown =>
      chunk(index, chat ? { delta: {} } : { text: "" }, reason);

    const listeners: SequenceListener[] = specs.map((_, index) => ({
      ...(stream ? { onText: (delta: string) => writeEvent(textChunk(index, delta)) } : {}),
      onFinish: (result) => {
        results[index] = result;
        if (stream && (result.finishReason === "stop" || result.finishReason === "length")) {
          writeEvent(finishChunk(index, finishReasonOf(result)));
        }
        if (--remaining === 0) allDone();
      },
    }));
    let submission: Submission;
    try {
      submission = this.scheduler.submit(specs, listeners);
    } catch (error) {
      if (error instanceof AdmissionError) throw this.admissionError(error);
      throw error;
    }
    // A client that goes away cancels its sequences; their KV slots are free for the next iteration.
    res.once("close", () => {
      if (!res.writableFinished) submission.cancel();
    });

    if (stream) {
      res.writeHead(200, {
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache",
        Connection: this.closing ? "close" : "keep-alive",
        "X-Accel-Buffering": "no",
      });
      specs.forEach((_, index) => {
        if (chat) writeEvent(chunk(index, { delta: { role: "assistant", content: "" } }, null));
        else if (echo) writeEvent(textChunk(index, promptOf[index]!.text));
      });
    }
    await done;
    const finished = results as SequenceResult[];
    const failure = finished.find((r) => r.finishReason === "error" || r.finishReason === "shutdown");
    if (res.destroyed || finished.some((r) => r.finishReason === "cancelled")) return;
    if (failure !== undefined) {
      const error =
        failure.finishReason === "shutdown"
          ? this.closingError()
          : new ApiError(
              500,
              "server_error",
              `generation failed: ${failure.error?.message ?? "unknown error"}`,
            );
      if (failure.finishReason === "error") this.options.log?.(`moa serve: ${error.message}`);
      if (stream) {
        writeEvent(error.body());
        res.end();
      } else {
        this.sendError(res, error);
      }
      return;
    }
    const promptTokens = prompts.reduce((sum, p) => sum + p.ids.length, 0);
    const completionTokens = finished.reduce((sum, r) => sum + r.completionTokens, 0);
    const usage = {
      prompt_tokens: promptTokens,
      completion_tokens: completionTokens,
      total_tokens: promptTokens + completionTokens,
    };
    if (stream) {
      if (request.includeUsage) writeEvent({ ...base, choices: [], usage });
      res.end("data: [DONE]\n\n");
      return;
    }
    const choices = finished.map((r, index) =>
      chat
        ? {
            index,
            message: { role: "assistant", content: r.text, refusal: null },
            logprobs: null,
            finish_reason: finishReasonOf(r),
          }
        : {
            index,
            text: echo ? promptOf[index]!.text + r.text : r.text,
            logprobs: null,
            finish_reason: finishReasonOf(r),
          },
    );
    const body = {
      id,
      object: kind,
      created,
      model: this.modelName,
      system_fingerprint: this.fingerprint,
      choices,
      usage,
    };
    this.send(res, 200, JSON.stringify(body), "application/json");
  }

  private admissionError(error: AdmissionError): ApiError {
    this.metrics.rejected.inc({ reason: error.reason });
    switch (error.reason) {
      case "queue_full":
        return new ApiError(
          429,
          "rate_limit_error",
          `The server is at capacity: ${error.message}.`,
          null,
          "queue_full",
          1,
        );
      case "closing":
        return this.closingError();
      case "too_many":
        return invalidRequest(`${error.message}. Lower n or send fewer prompts.`, "n", "invalid_value");
    }
  }

  private send(res: ServerResponse, status: number, body: string, type: string): void {
    // While shutting down, no connection is kept alive for another request.
    if (this.closing) res.setHeader("Connection", "close");
    res.writeHead(status, { "Content-Type": type, "Content-Length": Buffer.byteLength(body) });
    res.end(body);
  }

  private sendError(res: ServerResponse, error: ApiError): void {
    if (error.status >= 500) this.options.log?.(`moa serve: ${error.status} ${error.message}`);
    if (error.retryAfter !== undefined) res.setHeader("Retry-After", String(error.retryAfter));
    if (error.status === 401) res.setHeader("WWW-Authenticate", "Bearer");
    this.send(res, error.status, JSON.stringify(error.body()), "application/json");
  }
}
