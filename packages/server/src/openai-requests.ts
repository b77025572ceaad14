/**
 * Validation of OpenAI request bodies (POST /v1/completions, /v1/chat/completions) into plain typed objects.
 * Every problem becomes a 400 naming the parameter, as OpenAI's API does. Parameters this server cannot honour
 * (logprobs, penalties, logit bias, tools, images) are refused when they ask for something, never silently
 * ignored; unknown fields are ignored, as most OpenAI-compatible servers do, so SDKs that add fields keep working.
 */
import { type ApiError, invalidRequest, unsupportedParameter } from "./errors.js";

/** Most choices (`n`) per request and prompts per /v1/completions request. */
export const MAX_CHOICES = 16;
export const MAX_PROMPTS = 16;
/** OpenAI allows up to 4 stop sequences. */
export const MAX_STOP_SEQUENCES = 4;
export const MAX_STOP_LENGTH = 256;
/** Most chat messages per request. */
export const MAX_MESSAGES = 1024;

export interface SamplingParams {
  readonly model: string;
  /** Undefined: the endpoint's default (16 for completions, the rest of the context for chat). */
  readonly maxTokens: number | undefined;
  readonly temperature: number;
  readonly topP: number;
  readonly topK: number;
  /** Undefined: a fresh random seed per request. */
  readonly seed: number | undefined;
  readonly n: number;
  readonly stop: readonly string[];
  readonly stream: boolean;
  readonly includeUsage: boolean;
}

export type CompletionPrompt = { readonly text: string } | { readonly ids: readonly number[] };

export interface CompletionRequest extends SamplingParams {
  readonly prompts: readonly CompletionPrompt[];
  readonly echo: boolean;
}

export interface ChatRequestMessage {
  readonly role: string;
  readonly content: string;
  readonly name?: string;
}

export interface ChatRequest extends SamplingParams {
  readonly messages: readonly ChatRequestMessage[];
}

type Body = Record<string, unknown>;

function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  const t = typeof value;
  return t === "object" ? "an object" : `a ${t}`;
}

function invalidType(param: string, expected: string, value: unknown): ApiError {
  return invalidRequest(
    `Invalid type for '${param}': expected ${expected}, but got ${typeName(value)} instead.`,
    param,
    "invalid_type",
  );
}

function outOfRange(param: string, value: unknown, range: string): ApiError {
  return invalidRequest(
    `Invalid value for '${param}': ${JSON.stringify(value)}; ${range}.`,
    param,
    "invalid_value",
  );
}

/** A field that is absent or null reads as undefined. */
function optional(body: Body, param: string): unknown {
  const value = body[param];
  return value === null ? undefined : value;
}

function optionalNumber(
  body: Body,
  param: string,
  min: number,
  max: number,
  minExclusive = false,
): number | undefined {
  const value = optional(body, param);
  if (value === undefined) return undefined;
  if (typeof value !== "number" || !Number.isFinite(value)) throw invalidType(param, "a number", value);
  if ((minExclusive ? value <= min : value < min) || value > max) {
    throw outOfRange(param, value, `expected a number in ${minExclusive ? "(" : "["}${min}, ${max}]`);
  }
  return value;
}

function optionalInteger(
  body: Body,
  param: string,
  min: number,
  max = Number.MAX_SAFE_INTEGER,
): number | undefined {
  const value = optional(body, param);
  if (value === undefined) return undefined;
  if (typeof value !== "number" || !Number.isInteger(value)) throw invalidType(param, "an integer", value);
  if (value < min || value > max) {
    throw outOfRange(
      param,
      value,
      max === Number.MAX_SAFE_INTEGER ? `expected ≥ ${min}` : `expected ${min} to ${max}`,
    );
  }
  return value;
}

function optionalBoolean(body: Body, param: string): boolean | undefined {
  const value = optional(body, param);
  if (value === undefined) return undefined;
  if (typeof value !== "boolean") throw invalidType(param, "a boolean", value);
  return value;
}

function parseStop(body: Body): string[] {
  const value = optional(body, "stop");
  if (value === undefined) return [];
  const list = typeof value === "string" ? [value] : value;
  if (!Array.isArray(list) || list.some((s) => typeof s !== "string")) {
    throw invalidType("stop", "a string or an array of strings", value);
  }
  if (list.length > MAX_STOP_SEQUENCES) {
    throw outOfRange("stop", value, `at most ${MAX_STOP_SEQUENCES} stop sequences`);
  }
  for (const s of list as string[]) {
    if (s.length === 0 || s.length > MAX_STOP_LENGTH) {
      throw outOfRange("stop", s, `each stop sequence needs 1 to ${MAX_STOP_LENGTH} characters`);
    }
  }
  return list as string[];
}

/** Refuses a parameter unless it is absent, null, or one of the values that mean "off". */
function refuseUnlessDefault(
  body: Body,
  param: string,
  isDefault: (value: unknown) => boolean,
  why?: string,
): void {
  const value = optional(body, param);
  if (value !== undefined && !isDefault(value)) throw unsupportedParameter(param, why);
}

function isEmptyObject(value: unknown): boolean {
  return (
    typeof value === "object" && value !== null && !Array.isArray(value) && Object.keys(value).length === 0
  );
}

function checkUnsupportedCommon(body: Body): void {
  refuseUnlessDefault(body, "presence_penalty", (v) => v === 0, "is not supported by this server (only 0)");
  refuseUnlessDefault(body, "frequency_penalty", (v) => v === 0, "is not supported by this server (only 0)");
  refuseUnlessDefault(body, "logit_bias", isEmptyObject);
}

function parseSampling(body: Body): SamplingParams {
  const model = body.model;
  if (typeof model !== "string" || model.length === 0) {
    throw model === undefined
      ? invalidRequest("you must provide a model parameter", "model", "missing_required_parameter")
      : invalidType("model", "a string", model);
  }
  checkUnsupportedCommon(body);
  const stream = optionalBoolean(body, "stream") ?? false;
  const options = optional(body, "stream_options");
  let includeUsage = false;
  if (options !== undefined) {
    if (!stream) {
      throw invalidRequest(
        "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
        "stream_options",
        "invalid_value",
      );
    }
    if (typeof options !== "object" || Array.isArray(options))
      throw invalidType("stream_options", "an object", options);
    includeUsage = optionalBoolean(options as Body, "include_usage") ?? false;
  }
  const seed = optionalInteger(body, "seed", Number.MIN_SAFE_INTEGER);
  return {
    model,
    maxTokens: undefined,
    // OpenAI's defaults: temperature 1, top_p 1; temperature is capped at 2 as OpenAI does.
    temperature: optionalNumber(body, "temperature", 0, 2) ?? 1,
    topP: optionalNumber(body, "top_p", 0, 1, true) ?? 1,
    topK: optionalInteger(body, "top_k", 0) ?? 0,
    seed,
    n: optionalInteger(body, "n", 1, MAX_CHOICES) ?? 1,
    stop: parseStop(body),
    stream,
    includeUsage,
  };
}

function requireObject(body: unknown): Body {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw invalidRequest("the request body must be a JSON object", null, "invalid_json");
  }
  return body as Body;
}

function isTokenArray(value: unknown): value is number[] {
  return (
    Array.isArray(value) &&
    value.length > 0 &&
    value.every((t) => typeof t === "number" && Number.isInteger(t))
  );
}

function parsePrompts(value: unknown): CompletionPrompt[] {
  const expected = "a string, an array of strings, an array of token ids, or an array of token-id arrays";
  if (value === undefined || value === null) {
    throw invalidRequest("you must provide a prompt parameter", "prompt", "missing_required_parameter");
  }
  let prompts: CompletionPrompt[];
  if (typeof value === "string") prompts = [{ text: value }];
  else if (isTokenArray(value)) prompts = [{ ids: value }];
  else if (Array.isArray(value) && value.length > 0 && value.every((p) => typeof p === "string")) {
    prompts = (value as string[]).map((text) => ({ text }));
  } else if (Array.isArray(value) && value.length > 0 && value.every(isTokenArray)) {
    prompts = (value as number[][]).map((ids) => ({ ids }));
  } else {
    throw invalidType("prompt", expected, value);
  }
  if (prompts.length > MAX_PROMPTS)
    throw outOfRange("prompt", `${prompts.length} prompts`, `at most ${MAX_PROMPTS}`);
  return prompts;
}

export function parseCompletionRequest(raw: unknown): CompletionRequest {
  const body = requireObject(raw);
  const sampling = parseSampling(body);
  refuseUnlessDefault(body, "logprobs", (v) => v === 0, "is not supported by this server");
  refuseUnlessDefault(body, "best_of", (v) => v === 1, "is not supported by this server (only 1)");
  refuseUnlessDefault(body, "suffix", (v) => v === "", "(insertion) is not supported by this server");
  return {
    ...sampling,
    maxTokens: optionalInteger(body, "max_tokens", 1),
    prompts: parsePrompts(body.prompt),
    echo: optionalBoolean(body, "echo") ?? false,
  };
}

const CHAT_ROLES = new Set(["system", "developer", "user", "assistant", "tool"]);

function messageContent(content: unknown, param: string): string {
  if (typeof content === "string") return content;
  if (content === null || content === undefined) return "";
  if (!Array.isArray(content)) throw invalidType(param, "a string or an array of content parts", content);
  return content
    .map((part, k) => {
      const p = part as { type?: unknown; text?: unknown };
      if (typeof part !== "object" || part === null || p.type !== "text") {
        throw unsupportedParameter(
          `${param}[${k}]`,
          "is not supported: this server accepts text content parts only",
        );
      }
      if (typeof p.text !== "string") throw invalidType(`${param}[${k}].text`, "a string", p.text);
      return p.text;
    })
    .join("");
}

export function parseChatRequest(raw: unknown): ChatRequest {
  const body = requireObject(raw);
  const sampling = parseSampling(body);
  refuseUnlessDefault(body, "logprobs", (v) => v === false, "is not supported by this server");
  refuseUnlessDefault(body, "top_logprobs", (v) => v === 0, "is not supported by this server");
  refuseUnlessDefault(
    body,
    "tools",
    (v) => Array.isArray(v) && v.length === 0,
    "(tool calling) is not supported by this server",
  );
  refuseUnlessDefault(
    body,
    "functions",
    (v) => Array.isArray(v) && v.length === 0,
    "is not supported by this server",
  );
  refuseUnlessDefault(body, "tool_choice", (v) => v === "none", "is not supported by this server");
  refuseUnlessDefault(
    body,
    "response_format",
    (v) => typeof v === "object" && v !== null && (v as { type?: unknown }).type === "text",
    "is not supported by this server (only {type: 'text'})",
  );
  const messages = body.messages;
  if (messages === undefined || messages === null) {
    throw invalidRequest("you must provide a messages parameter", "messages", "missing_required_parameter");
  }
  if (!Array.isArray(messages)) throw invalidType("messages", "an array", messages);
  if (messages.length === 0)
    throw outOfRange("messages", messages, "expected an array with at least 1 message");
  if (messages.length > MAX_MESSAGES)
    throw outOfRange("messages", `${messages.length} messages`, `at most ${MAX_MESSAGES}`);
  const parsed = messages.map((m, i): ChatRequestMessage => {
    const param = `messages[${i}]`;
    if (typeof m !== "object" || m === null || Array.isArray(m)) throw invalidType(param, "an object", m);
    const { role, content, name } = m as { role?: unknown; content?: unknown; name?: unknown };
    if (typeof role !== "string" || !CHAT_ROLES.has(role)) {
      throw outOfRange(`${param}.role`, role, `expected one of ${[...CHAT_ROLES].join(", ")}`);
    }
    const message: ChatRequestMessage = { role, content: messageContent(content, `${param}.content`) };
    if (name !== undefined && name !== null) {
      if (typeof name !== "string") throw invalidType(`${param}.name`, "a string", name);
      return { ...message, name };
    }
    return message;
  });
  const maxCompletion = optionalInteger(body, "max_completion_tokens", 1);
  return {
    ...sampling,
    maxTokens: maxCompletion ?? optionalInteger(body, "max_tokens", 1),
    messages: parsed,
  };
}
