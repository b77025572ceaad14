/**
 * The official `openai` npm client against a real server on moa-nano (CPU) with a per-head MoA plan. Expected
 * texts come from @moa/runtime's generateText on a separately loaded model: the server's scheduler, text
 * streaming and stop handling are checked against an independent implementation.
 */
import { once } from "node:events";
import { connect } from "node:net";
import type { MoaPlan } from "@moa/core";
import { generateText, type Model } from "@moa/runtime";
import OpenAI, { type APIError } from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RunningServer } from "../src/index.js";
import {
  clientFor,
  MAX_LENGTH,
  nanoPlan,
  PLAIN_CHAT_TEMPLATE,
  referenceModel,
  scrape,
  startServer,
  waitFor,
} from "./helpers.js";

let plan: MoaPlan;
let reference: Model;
let running: RunningServer;
let client: OpenAI;

const PROMPT = "def fibonacci(n):";

beforeAll(async () => {
  plan = await nanoPlan();
  reference = await referenceModel(plan);
  running = await startServer({ plan, chatTemplate: PLAIN_CHAT_TEMPLATE, maxBodyBytes: 64 * 1024 });
  client = clientFor(running);
});

afterAll(async () => {
  await running?.close();
  reference?.dispose();
});

async function collectCompletion(stream: AsyncIterable<OpenAI.Completions.Completion>) {
  const texts = new Map<number, string>();
  const finish = new Map<number, string | null>();
  const chunks: OpenAI.Completions.Completion[] = [];
  for await (const chunk of stream) {
    chunks.push(chunk);
    for (const choice of chunk.choices) {
      texts.set(choice.index, (texts.get(choice.index) ?? "") + choice.text);
      if (choice.finish_reason !== null) finish.set(choice.index, choice.finish_reason);
    }
  }
  return { texts, finish, chunks };
}

describe("POST /v1/completions", () => {
  it("non-streaming greedy text equals the runtime's single-sequence generation, with usage", async () => {
    const expected = await generateText(reference, PROMPT, { maxNewTokens: 24 });
    const response = await client.completions.create({
      model: "moa-nano",
      prompt: PROMPT,
      max_tokens: 24,
      temperature: 0,
    });
    expect(response.object).toBe("text_completion");
    expect(response.model).toBe("moa-nano");
    expect(response.id).toMatch(/^cmpl-/);
    expect(response.choices).toHaveLength(1);
    expect(response.choices[0]!.text).toBe(expected.text);
    expect(response.choices[0]!.finish_reason).toBe("length");
    expect(response.usage).toEqual({
      prompt_tokens: expected.promptTokens,
      completion_tokens: 24,
      total_tokens: expected.promptTokens + 24,
    });
  });

  it("streams the same text in chunks, ends with [DONE], and sends a usage chunk when asked", async () => {
    const plain = await client.completions.create({
      model: "moa-nano",
      prompt: PROMPT,
      max_tokens: 24,
      temperature: 0,
    });
    const stream = await client.completions.create({
      model: "moa-nano",
      prompt: PROMPT,
      max_tokens: 24,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    const { texts, finish, chunks } = await collectCompletion(stream);
    expect(texts.get(0)).toBe(plain.choices[0]!.text);
    expect(finish.get(0)).toBe("length");
    expect(chunks.length).toBeGreaterThan(5);
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage).toEqual(plain.usage);
    // Before the usage chunk, every chunk says usage: null (OpenAI's include_usage contract).
    for (const chunk of chunks.slice(0, -1)) expect(chunk.usage).toBeNull();
  });

  it("streams raw SSE lines ending in 'data: [DONE]', without usage unless asked", async () => {
    const response = await fetch(`${running.url}/v1/completions`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        model: "moa-nano",
        prompt: "x = ",
        max_tokens: 4,
        temperature: 0,
        stream: true,
      }),
    });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const events = (await response.text()).split("\n\n").filter((e) => e !== "");
    expect(events.at(-1)).toBe("data: [DONE]");
    for (const event of events.slice(0, -1)) {
      expect(event.startsWith("data: ")).toBe(true);
      expect(JSON.parse(event.slice(6))).not.toHaveProperty("usage");
    }
  });

  it("stops before a stop sequence, in both modes, exactly where the runtime stops", async () => {
    const free = await generateText(reference, PROMPT, { maxNewTokens: 40 });
    // A stop string taken from the middle of the free-running text, so it is certain to appear.
    const stop = free.text.slice(12, 16);
    const expected = await generateText(reference, PROMPT, { maxNewTokens: 40, stopStrings: [stop] });
    expect(expected.text.length).toBeLessThan(free.text.length);
    const plain = await client.completions.create({
      model: "moa-nano",
      prompt: PROMPT,
      max_tokens: 40,
      temperature: 0,
      stop: [stop, "never-appears"],
    });
    expect(plain.choices[0]!.text).toBe(expected.text);
    expect(plain.choices[0]!.text).not.toContain(stop);
    expect(plain.choices[0]!.finish_reason).toBe("stop");
    expect(plain.usage!.completion_tokens).toBe(expected.tokens.length);
    const streamed = await collectCompletion(
      await client.completions.create({
        model: "moa-nano",
        prompt: PROMPT,
        max_tokens: 40,
        temperature: 0,
        stop,
        stream: true,
      }),
    );
    expect(streamed.texts.get(0)).toBe(expected.text);
    expect(streamed.finish.get(0)).toBe("stop");
  });

  it("a seed reproduces a sampled completion, streaming or not, batched or alone, and matches the runtime", async () => {
    const options = { temperature: 1, top_p: 0.95, max_tokens: 24, seed: 1234 } as const;
    const expected = await generateText(reference, PROMPT, {
      temperature: 1,
      topP: 0.95,
      maxNewTokens: 24,
      seed: 1234,
    });
    const alone = await client.completions.create({ model: "moa-nano", prompt: PROMPT, ...options });
    // The same request again while other sequences share the batch.
    const [batched] = await Promise.all([
      client.completions.create({ model: "moa-nano", prompt: PROMPT, ...options }),
      client.completions.create({
        model: "moa-nano",
        prompt: "import sys\n",
        max_tokens: 24,
        temperature: 0.7,
        seed: 9,
      }),
      client.completions.create({ model: "moa-nano", prompt: "class A:", max_tokens: 24, temperature: 0 }),
    ]);
    const streamed = await collectCompletion(
      await client.completions.create({ model: "moa-nano", prompt: PROMPT, ...options, stream: true }),
    );
    expect(alone.choices[0]!.text).toBe(expected.text);
    expect(batched.choices[0]!.text).toBe(expected.text);
    expect(streamed.texts.get(0)).toBe(expected.text);
    expect(alone.system_fingerprint).toBe(batched.system_fingerprint);
    const others = await Promise.all(
      [1, 2, 3].map((seed) =>
        client.completions.create({ model: "moa-nano", prompt: PROMPT, ...options, seed }),
      ),
    );
    expect(others.some((o) => o.choices[0]!.text !== expected.text)).toBe(true);
  });

  it("n choices and several prompts: choice i is prompt ⌊i/n⌋ with seed + i", async () => {
    const prompts = ["x = [", "for i in"];
    const response = await client.completions.create({
      model: "moa-nano",
      prompt: prompts,
      n: 2,
      max_tokens: 10,
      temperature: 0.8,
      seed: 50,
    });
    expect(response.choices.map((c) => c.index)).toEqual([0, 1, 2, 3]);
    for (const [i, choice] of response.choices.entries()) {
      const expected = await generateText(reference, prompts[Math.floor(i / 2)]!, {
        temperature: 0.8,
        maxNewTokens: 10,
        seed: 50 + i,
      });
      expect(choice.text).toBe(expected.text);
    }
    const promptTokens = prompts.reduce((sum, p) => sum + reference.encode(p).length, 0);
    expect(response.usage).toEqual({
      prompt_tokens: promptTokens,
      completion_tokens: 40,
      total_tokens: promptTokens + 40,
    });
  });

  it("takes token-id prompts and echoes the prompt when asked", async () => {
    const ids = reference.encode(PROMPT);
    const expected = await generateText(reference, ids, { maxNewTokens: 8 });
    const response = await client.completions.create({
      model: "moa-nano",
      prompt: ids,
      max_tokens: 8,
      temperature: 0,
      echo: true,
    });
    expect(response.choices[0]!.text).toBe(PROMPT + expected.text);
  });

  it("defaults max_tokens to 16, as OpenAI's completions endpoint does", async () => {
    const response = await client.completions.create({
      model: "moa-nano",
      prompt: "while True:",
      temperature: 0,
    });
    const expected = await generateText(reference, "while True:", { maxNewTokens: 16 });
    expect(response.usage!.completion_tokens).toBe(expected.tokens.length);
    expect(response.choices[0]!.text).toBe(expected.text);
  });
});

describe("POST /v1/chat/completions", () => {
  const messages = [
    { role: "system" as const, content: "You write Python." },
    { role: "user" as const, content: "def add(a, b):" },
  ];
  // What the plain template of this test renders, written out by hand.
  const rendered = "<s>system: You write Python.\nuser: def add(a, b):\nassistant:";

  it("renders the conversation with the configured template and answers like the runtime on that prompt", async () => {
    const expected = await generateText(reference, rendered, { maxNewTokens: 20, addSpecialTokens: false });
    const response = await client.chat.completions.create({
      model: "moa-nano",
      messages,
      max_tokens: 20,
      temperature: 0,
    });
    expect(response.object).toBe("chat.completion");
    expect(response.id).toMatch(/^chatcmpl-/);
    expect(response.choices[0]!.message).toMatchObject({ role: "assistant", content: expected.text });
    expect(response.usage).toEqual({
      prompt_tokens: expected.promptTokens,
      completion_tokens: expected.tokens.length,
      total_tokens: expected.promptTokens + expected.tokens.length,
    });
    expect(response.usage!.prompt_tokens).toBe(
      reference.tokenizer.encode(rendered, { addSpecialTokens: false }).length,
    );
  });

  it("streams a role delta, content deltas, a finish reason and the usage chunk", async () => {
    const expected = await generateText(reference, rendered, { maxNewTokens: 20, addSpecialTokens: false });
    const stream = await client.chat.completions.create({
      model: "moa-nano",
      messages,
      max_completion_tokens: 20,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(chunks[0]!.object).toBe("chat.completion.chunk");
    expect(chunks[0]!.choices[0]!.delta).toEqual({ role: "assistant", content: "" });
    const content = chunks.map((c) => c.choices[0]?.delta.content ?? "").join("");
    expect(content).toBe(expected.text);
    const finishes = chunks.flatMap((c) => c.choices.map((ch) => ch.finish_reason)).filter((f) => f !== null);
    expect(finishes).toEqual(["length"]);
    expect(chunks.at(-1)!.usage).toMatchObject({
      completion_tokens: 20,
      prompt_tokens: expected.promptTokens,
    });
  });

  it("accepts text content parts and stop sequences", async () => {
    const free = await generateText(reference, rendered, { maxNewTokens: 30, addSpecialTokens: false });
    const stop = free.text.slice(8, 11);
    const expected = await generateText(reference, rendered, {
      maxNewTokens: 30,
      addSpecialTokens: false,
      stopStrings: [stop],
    });
    const response = await client.chat.completions.create({
      model: "moa-nano",
      messages: [
        messages[0]!,
        {
          role: "user",
          content: [
            { type: "text", text: "def add(" },
            { type: "text", text: "a, b):" },
          ],
        },
      ],
      max_tokens: 30,
      temperature: 0,
      stop,
    });
    expect(response.choices[0]!.message.content).toBe(expected.text);
    expect(response.choices[0]!.finish_reason).toBe("stop");
  });

  it("answers 400 with a clear message when the model has no chat template and none was configured", async () => {
    const bare = await startServer({ plan });
    try {
      const error = await clientFor(bare)
        .chat.completions.create({ model: "moa-nano", messages: [{ role: "user", content: "hi" }] })
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(OpenAI.BadRequestError);
      expect((error as APIError).code).toBe("chat_template_missing");
      expect((error as APIError).message).toMatch(/no chat template.*--chat-template/);
    } finally {
      await bare.close();
    }
  });
});

describe("models, health, metrics", () => {
  it("lists the served model and fetches it by id", async () => {
    const list = await client.models.list();
    expect(list.data.map((m) => m.id)).toEqual(["moa-nano"]);
    expect((await client.models.retrieve("moa-nano")).id).toBe("moa-nano");
    await expect(client.models.retrieve("gpt-4o")).rejects.toBeInstanceOf(OpenAI.NotFoundError);
  });

  it("GET /health is 200 with the model and free KV bytes", async () => {
    const response = await fetch(`${running.url}/health`);
    expect(response.status).toBe(200);
    const body = (await response.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ status: "ok", model: "moa-nano", running: 0, queued: 0 });
    expect(body.kv_free_bytes).toBe(running.budget.capacityBytes);
  });

  it("GET /metrics reports the exact KV accounting of the plan", async () => {
    const metrics = await scrape(running);
    expect(metrics.get("moa_kv_sequence_bytes")).toBe(running.model.cache.slotBytes());
    expect(metrics.get("moa_kv_cache_capacity_bytes")).toBe(running.model.cache.cacheBytes());
    expect(metrics.get("moa_kv_cache_budget_bytes")).toBe(4 * running.model.cache.slotBytes());
    expect(metrics.get("moa_kv_cache_used_bytes")).toBe(0);
    expect(metrics.get('moa_kv_slots{state="free"}')).toBe(4);
    expect(metrics.get("moa_queue_depth")).toBe(0);
    expect(metrics.get("moa_running_sequences")).toBe(0);
    expect(metrics.has("moa_time_to_first_token_seconds_count")).toBe(true);
    expect(metrics.has('moa_request_duration_seconds_bucket{route="/v1/completions",le="+Inf"}')).toBe(true);
  });
});

describe("errors in OpenAI's shape", () => {
  async function post(path: string, body: unknown, headers: Record<string, string> = {}) {
    const response = await fetch(`${running.url}${path}`, {
      method: "POST",
      headers: { "Content-Type": "application/json", ...headers },
      body: typeof body === "string" ? body : JSON.stringify(body),
    });
    return { status: response.status, body: (await response.json()) as { error: Record<string, unknown> } };
  }

  it("400 names the bad parameter", async () => {
    const bad = await post("/v1/completions", { model: "moa-nano", prompt: "x", temperature: 3 });
    expect(bad.status).toBe(400);
    expect(bad.body.error).toMatchObject({ type: "invalid_request_error", param: "temperature" });
    expect(typeof bad.body.error.message).toBe("string");
    expect((await post("/v1/completions", { model: "moa-nano" })).body.error.param).toBe("prompt");
    expect((await post("/v1/completions", "{not json")).status).toBe(400);
    const logprobs = await post("/v1/chat/completions", {
      model: "moa-nano",
      messages: [{ role: "user", content: "x" }],
      logprobs: true,
    });
    expect(logprobs.body.error).toMatchObject({ param: "logprobs", code: "unsupported_parameter" });
    const tooLong = await post("/v1/completions", { model: "moa-nano", prompt: "x", max_tokens: MAX_LENGTH });
    expect(tooLong.body.error).toMatchObject({ param: "max_tokens", code: "context_length_exceeded" });
    const badIds = await post("/v1/completions", { model: "moa-nano", prompt: [1, 2, 99999] });
    expect(badIds.body.error.message).toMatch(/token ids must be in \[0, 4095\]/);
  });

  it("a model failure answers 500 server_error, and the next request is served", async () => {
    const transformer = running.model.transformer;
    const prefill = transformer.prefill;
    transformer.prefill = () => {
      throw new Error("injected device fault");
    };
    try {
      const failed = await client.completions
        .create({ model: "moa-nano", prompt: "x", max_tokens: 2 })
        .catch((e: unknown) => e);
      expect(failed).toBeInstanceOf(OpenAI.InternalServerError);
      expect((failed as APIError).type).toBe("server_error");
      expect((failed as APIError).message).toMatch(/injected device fault/);
    } finally {
      transformer.prefill = prefill;
    }
    expect(running.model.cache.freeSlots()).toBe(running.model.cache.slots);
    const ok = await client.completions.create({ model: "moa-nano", prompt: "x", max_tokens: 2 });
    expect(ok.choices[0]!.finish_reason).toBe("length");
  });

  it("the openai client raises its typed errors", async () => {
    await expect(
      client.completions.create({ model: "moa-nano", prompt: "x", top_p: 0 }),
    ).rejects.toBeInstanceOf(OpenAI.BadRequestError);
    const notFound = await client.completions
      .create({ model: "other-model", prompt: "x" })
      .catch((e: unknown) => e);
    expect(notFound).toBeInstanceOf(OpenAI.NotFoundError);
    expect((notFound as APIError).code).toBe("model_not_found");
  });

  it("413 for a body over the limit, 415 for a non-JSON body, 404 and 405 for wrong routes", async () => {
    const big = await post("/v1/completions", { model: "moa-nano", prompt: "x".repeat(100 * 1024) });
    expect(big.status).toBe(413);
    expect(big.body.error.code).toBe("request_too_large");
    const form = await fetch(`${running.url}/v1/completions`, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: "model=moa-nano",
    });
    expect(form.status).toBe(415);
    expect((await post("/v1/embeddings", {})).status).toBe(404);
    const get = await fetch(`${running.url}/v1/completions`);
    expect(get.status).toBe(405);
    expect(((await get.json()) as { error: { type: string } }).error.type).toBe("invalid_request_error");
  });

  it("a prompt over the prompt limit is refused with context_length_exceeded", async () => {
    const long = await post("/v1/completions", {
      model: "moa-nano",
      prompt: "word ".repeat(400),
      max_tokens: 1,
    });
    expect(long.status).toBe(400);
    expect(long.body.error.code).toBe("context_length_exceeded");
  });
});

describe("API key, queue bound, disconnects and shutdown", () => {
  it("with --api-key, /v1 needs the bearer key; /health and /metrics stay open", async () => {
    const secured = await startServer({ plan, apiKey: "s3cret" });
    try {
      await expect(clientFor(secured, "wrong").models.list()).rejects.toBeInstanceOf(
        OpenAI.AuthenticationError,
      );
      const none = await fetch(`${secured.url}/v1/models`);
      expect(none.status).toBe(401);
      expect(((await none.json()) as { error: { code: string } }).error.code).toBe("invalid_api_key");
      expect((await clientFor(secured, "s3cret").models.list()).data[0]!.id).toBe("moa-nano");
      expect((await fetch(`${secured.url}/health`)).status).toBe(200);
      expect((await fetch(`${secured.url}/metrics`)).status).toBe(200);
    } finally {
      await secured.close();
    }
  });

  it("429 when every KV slot is busy and the queue is full; the next request after that succeeds", async () => {
    const small = await startServer({ plan, maxBatch: 1, maxQueue: 1 });
    const smallClient = clientFor(small);
    try {
      const hold = await smallClient.completions.create({
        model: "moa-nano",
        prompt: "while True:",
        max_tokens: 200,
        temperature: 0,
        stream: true,
      });
      const iterator = hold[Symbol.asyncIterator]();
      await iterator.next();
      const queued = smallClient.completions.create({
        model: "moa-nano",
        prompt: "x",
        max_tokens: 2,
        temperature: 0,
      });
      await waitFor(() => small.server.scheduler.stats().queued === 1, "the second request to queue");
      const refused = await smallClient.completions
        .create({ model: "moa-nano", prompt: "y", max_tokens: 2 })
        .catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(OpenAI.RateLimitError);
      expect((refused as APIError).code).toBe("queue_full");
      expect((refused as APIError).headers?.get("retry-after")).toBe("1");
      hold.controller.abort();
      expect((await queued).choices[0]!.finish_reason).toBe("length");
      const metrics = await scrape(small);
      expect(metrics.get('moa_requests_rejected_total{reason="queue_full"}')).toBe(1);
      expect(metrics.get('moa_requests_total{route="/v1/completions",code="429"}')).toBe(1);
    } finally {
      await small.close();
    }
  });

  it("a client that disconnects mid-stream is cancelled and its KV slot is freed", async () => {
    const before = await scrape(running);
    const stream = await client.completions.create({
      model: "moa-nano",
      prompt: "while True:",
      max_tokens: 200,
      temperature: 0,
      stream: true,
    });
    let chunks = 0;
    for await (const _ of stream) {
      if (++chunks === 3) break; // break aborts the HTTP request
    }
    await waitFor(
      () => running.server.scheduler.stats().running === 0,
      "the cancelled sequence to leave the batch",
    );
    expect(running.model.cache.freeSlots()).toBe(running.model.cache.slots);
    const after = await scrape(running);
    expect(after.get("moa_kv_cache_used_bytes")).toBe(0);
    const cancelled = 'moa_sequences_finished_total{reason="cancelled"}';
    expect((after.get(cancelled) ?? 0) - (before.get(cancelled) ?? 0)).toBe(1);
    await waitFor(
      async () => (await scrape(running)).get('moa_requests_total{route="/v1/completions",code="499"}') === 1,
      "the 499 count",
    );
    expect(
      after.get("moa_generation_tokens_total")! - before.get("moa_generation_tokens_total")!,
    ).toBeLessThan(200);
  });

  it("graceful shutdown finishes in-flight requests, then refuses connections", async () => {
    const server = await startServer({ plan, maxBatch: 2 });
    const c = clientFor(server);
    const stream = await c.completions.create({
      model: "moa-nano",
      prompt: "import os\n",
      max_tokens: 40,
      temperature: 0,
      stream: true,
    });
    const iterator = stream[Symbol.asyncIterator]();
    const first = await iterator.next();
    const pending = c.completions.create({
      model: "moa-nano",
      prompt: "x = 1",
      max_tokens: 30,
      temperature: 0,
    });
    await waitFor(() => server.server.scheduler.stats().running === 2, "both requests to run");
    // A request already on the wire when shutdown starts (its body still arriving) is refused with 503.
    const probe = connect(server.port, "127.0.0.1");
    await once(probe, "connect");
    const body = JSON.stringify({ model: "moa-nano", prompt: "late", max_tokens: 2 });
    probe.write(
      `POST /v1/completions HTTP/1.1\r\nHost: moa\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 5)}`,
    );
    await waitFor(() => server.server.requestsInFlight === 3, "the probe to be in flight");
    const closing = server.close(30_000);
    let probed = "";
    probe.on("data", (chunk: Buffer) => {
      probed += chunk.toString();
    });
    probe.write(body.slice(5));
    await waitFor(() => probed.includes("server_shutting_down"), "the probe's answer");
    expect(probed.startsWith("HTTP/1.1 503")).toBe(true);
    expect(probed.toLowerCase()).toContain("connection: close");
    probe.destroy();
    let text = first.value?.choices[0]?.text ?? "";
    for (let next = await iterator.next(); !next.done; next = await iterator.next())
      text += next.value.choices[0]?.text ?? "";
    const expected = await generateText(reference, "import os\n", { maxNewTokens: 40 });
    expect(text).toBe(expected.text);
    expect((await pending).usage!.completion_tokens).toBe(30);
    await closing;
    await expect(fetch(`${server.url}/health`)).rejects.toThrow();
  });

  it("a shutdown cut short cancels what is left: 503 for plain requests, an error event for streams", async () => {
    const server = await startServer({ plan, maxBatch: 2 });
    const c = clientFor(server);
    const stream = await c.completions.create({
      model: "moa-nano",
      prompt: "import os\n",
      max_tokens: 250,
      temperature: 0,
      stream: true,
    });
    const iterator = stream[Symbol.asyncIterator]();
    await iterator.next();
    const plain = c.completions
      .create({ model: "moa-nano", prompt: "x = 1", max_tokens: 250, temperature: 0 })
      .catch((e: unknown) => e);
    await waitFor(() => server.server.scheduler.stats().running === 2, "both requests to run");
    const closing = server.server.close(60_000);
    server.server.abort(); // what a second SIGINT does
    await closing;
    expect(server.model.cache.freeSlots()).toBe(server.model.cache.slots);
    expect(server.server.scheduler.stats().kvUsedBytes).toBe(0);
    await server.close();
    const streamError = await (async () => {
      for (let next = await iterator.next(); !next.done; next = await iterator.next()) {
        // drain what was sent before the cancellation
      }
    })().catch((e: unknown) => e);
    expect(streamError).toBeInstanceOf(OpenAI.APIError);
    expect((streamError as APIError).message).toMatch(/shutting down/);
    const plainError = await plain;
    expect(plainError).toBeInstanceOf(OpenAI.InternalServerError);
    expect((plainError as APIError).status).toBe(503);
  });
});
