/**
 * Load test, bounded in time for CI (2 cores, no GPU): 500 streaming requests from 64 concurrent openai-client
 * streams against a server with 16 KV slots, so the queue, admission mid-flight and slot reuse are all busy.
 * Every response must equal the greedy single-sequence generation of the runtime for its prompt; afterwards the
 * KV cache is empty, the slot pool free, memory back at its baseline, and /metrics counts what was sent.
 */
import type { MoaPlan } from "@moa/core";
import { generateText, type Model } from "@moa/runtime";
import type OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RunningServer, type SchedulerStats, sequenceKvBytes } from "../src/index.js";
import { clientFor, MAX_LENGTH, nanoPlan, referenceModel, scrape, startServer } from "./helpers.js";

const REQUESTS = 500;
const CONCURRENCY = 64;
const SLOTS = 16;
const PROMPTS = [
  "def fibonacci(n):",
  "import numpy as np\n",
  "class Node:",
  "for i in range(10):",
  "x = [",
  "while True:",
  "print(",
  "# Load the data\n",
  "if __name__ == ",
  "return sorted(",
  "with open(",
  "try:\n    ",
  "lambda x:",
  "def __init__(self",
  "from typing import",
  "assert len(",
];
const MAX_TOKENS = [3, 5, 7, 9];

interface Expected {
  readonly text: string;
  readonly completionTokens: number;
  readonly promptTokens: number;
  readonly finishReason: string;
}

let plan: MoaPlan;
let reference: Model;
let running: RunningServer;
let client: OpenAI;
const expected = new Map<string, Expected>();
const key = (prompt: number, maxTokens: number): string => `${prompt}/${maxTokens}`;

/** Smallest gap between the best and second-best logit over the generated positions. */
function minMargin(model: Model, promptIds: number[], tokens: readonly number[]): number {
  const ids = [...promptIds, ...tokens];
  const logits = model.logits(ids);
  const vocab = model.config.vocabSize;
  let margin = Number.POSITIVE_INFINITY;
  for (let k = 0; k < tokens.length; k++) {
    const row = logits.subarray((promptIds.length - 1 + k) * vocab, (promptIds.length + k) * vocab);
    let best = Number.NEGATIVE_INFINITY;
    let second = Number.NEGATIVE_INFINITY;
    for (const v of row) {
      if (v > best) {
        second = best;
        best = v;
      } else if (v > second) second = v;
    }
    margin = Math.min(margin, best - second);
  }
  return margin;
}

beforeAll(async () => {
  plan = await nanoPlan();
  reference = await referenceModel(plan);
  for (const [p, prompt] of PROMPTS.entries()) {
    for (const maxTokens of MAX_TOKENS) {
      const result = await generateText(reference, prompt, { maxNewTokens: maxTokens });
      // Batched and single-sequence logits differ in the last float bits (the CPU matmul sums in another order
      // for other batch sizes); a greedy token is only batch-invariant when its lead is far above that noise.
      const margin = minMargin(reference, reference.encode(prompt), result.tokens);
      expect(margin, `greedy lead of ${JSON.stringify(prompt)} (max ${maxTokens})`).toBeGreaterThan(1e-3);
      expected.set(key(p, maxTokens), {
        text: result.text,
        completionTokens: result.tokens.length,
        promptTokens: result.promptTokens,
        finishReason: result.finishReason,
      });
    }
  }
  const config = reference.config;
  const sequenceBytes = sequenceKvBytes(config.shape(), plan, MAX_LENGTH, reference.cache.elementBytes);
  // A budget that is not a multiple of one sequence: the server must round down to 16 slots.
  running = await startServer({
    plan,
    maxBatch: 64,
    kvBudgetBytes: SLOTS * sequenceBytes + Math.floor(sequenceBytes / 2),
    maxQueue: CONCURRENCY,
  });
  client = clientFor(running);
});

afterAll(async () => {
  await running?.close();
  reference?.dispose();
});

function collectGarbage(): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined)
    throw new Error("run with --expose-gc (vitest.config.ts passes it to the test workers)");
  gc();
  gc();
}

interface Outcome {
  readonly text: string;
  readonly finishReason: string | null;
  readonly usage: OpenAI.Completions.CompletionUsage | null | undefined;
}

async function streamOne(prompt: string, maxTokens: number): Promise<Outcome> {
  const stream = await client.completions.create({
    model: "moa-nano",
    prompt,
    max_tokens: maxTokens,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = "";
  let finishReason: string | null = null;
  let usage: OpenAI.Completions.CompletionUsage | null | undefined;
  for await (const chunk of stream) {
    for (const choice of chunk.choices) {
      text += choice.text;
      if (choice.finish_reason !== null) finishReason = choice.finish_reason;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  return { text, finishReason, usage };
}

/** Runs `total` requests from `concurrency` workers; request i uses prompt i mod 16 and max tokens by i. */
async function drive(
  total: number,
  concurrency: number,
  onResult: (i: number, outcome: Outcome) => void,
): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < total; i = next++) {
      const maxTokens = MAX_TOKENS[Math.floor(i / PROMPTS.length) % MAX_TOKENS.length]!;
      onResult(i, await streamOne(PROMPTS[i % PROMPTS.length]!, maxTokens));
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

describe("load", () => {
  it(`${REQUESTS} requests over ${CONCURRENCY} concurrent streams all complete correctly; memory and metrics agree`, async () => {
    expect(running.budget.slots).toBe(SLOTS);
    // Warm up (JIT, scratch buffers at the largest batch) before taking the memory baseline.
    await drive(CONCURRENCY, CONCURRENCY, () => undefined);
    collectGarbage();
    const baseline = process.memoryUsage();
    const before = await scrape(running);

    const seen: SchedulerStats[] = [];
    const sampler = setInterval(() => seen.push(running.server.scheduler.stats()), 2);
    const failures: string[] = [];
    let promptTokens = 0;
    let completionTokens = 0;
    const started = performance.now();
    await drive(REQUESTS, CONCURRENCY, (i, outcome) => {
      const maxTokens = MAX_TOKENS[Math.floor(i / PROMPTS.length) % MAX_TOKENS.length]!;
      const want = expected.get(key(i % PROMPTS.length, maxTokens))!;
      const got = [
        outcome.text,
        outcome.finishReason,
        outcome.usage?.prompt_tokens,
        outcome.usage?.completion_tokens,
      ];
      const wanted = [want.text, want.finishReason, want.promptTokens, want.completionTokens];
      if (JSON.stringify(got) !== JSON.stringify(wanted)) {
        failures.push(`request ${i}: got ${JSON.stringify(got)}, expected ${JSON.stringify(wanted)}`);
      }
      promptTokens += outcome.usage?.prompt_tokens ?? 0;
      completionTokens += outcome.usage?.completion_tokens ?? 0;
    });
    const seconds = (performance.now() - started) / 1000;
    clearInterval(sampler);
    expect(failures).toEqual([]);

    // Admission never went past the KV budget; the queue and the full batch were both exercised.
    const sequenceBytes = running.budget.sequenceBytes;
    expect(Math.max(...seen.map((s) => s.running))).toBe(SLOTS);
    expect(Math.max(...seen.map((s) => s.queued))).toBeGreaterThan(0);
    for (const s of seen) {
      expect(s.kvUsedBytes).toBe(s.running * sequenceBytes);
      expect(s.kvUsedBytes).toBeLessThanOrEqual(running.budget.budgetBytes);
    }

    // Back to baseline: no sequence holds KV memory, every slot is free, the heap is where it was.
    const stats = running.server.scheduler.stats();
    expect(stats).toMatchObject({ queued: 0, running: 0, kvUsedBytes: 0, freeSlots: SLOTS });
    expect(running.model.cache.freeSlots()).toBe(SLOTS);
    collectGarbage();
    const after = process.memoryUsage();
    const heapGrowth = after.heapUsed - baseline.heapUsed;
    const rssGrowth = after.rss - baseline.rss;
    expect(heapGrowth).toBeLessThan(16 * 1024 * 1024);
    expect(rssGrowth).toBeLessThan(64 * 1024 * 1024);

    // /metrics agrees with what the clients sent and received.
    const metrics = await scrape(running);
    const delta = (name: string): number => (metrics.get(name) ?? 0) - (before.get(name) ?? 0);
    expect(delta('moa_requests_total{route="/v1/completions",code="200"}')).toBe(REQUESTS);
    expect(delta('moa_request_duration_seconds_count{route="/v1/completions"}')).toBe(REQUESTS);
    expect(delta("moa_time_to_first_token_seconds_count")).toBe(REQUESTS);
    expect(delta("moa_queue_wait_seconds_count")).toBe(REQUESTS);
    expect(
      delta('moa_sequences_finished_total{reason="length"}') +
        delta('moa_sequences_finished_total{reason="stop"}'),
    ).toBe(REQUESTS);
    expect(delta("moa_prompt_tokens_total")).toBe(promptTokens);
    expect(delta("moa_generation_tokens_total")).toBe(completionTokens);
    expect(delta("moa_inter_token_latency_seconds_count")).toBe(completionTokens - REQUESTS);
    expect(metrics.get("moa_kv_cache_used_bytes")).toBe(0);
    expect(metrics.get("moa_kv_cache_free_bytes")).toBe(SLOTS * sequenceBytes);
    expect(metrics.get("moa_kv_cache_budget_bytes")).toBe(running.budget.budgetBytes);
    expect(metrics.get("moa_queue_depth")).toBe(0);
    expect(metrics.get("moa_running_sequences")).toBe(0);
    expect(metrics.get("moa_requests_in_flight")).toBe(0); // a scrape is answered synchronously, uncounted

    console.log(
      `load: ${REQUESTS} streams (${CONCURRENCY} concurrent, ${SLOTS} KV slots) in ${seconds.toFixed(2)} s: ` +
        `${(REQUESTS / seconds).toFixed(1)} req/s, ${(completionTokens / seconds).toFixed(0)} generated tok/s, ` +
        `${promptTokens} prompt + ${completionTokens} generated tokens; ` +
        `heap ${(heapGrowth / 2 ** 20).toFixed(1)} MiB, rss ${(rssGrowth / 2 ** 20).toFixed(1)} MiB vs baseline; ` +
        `max queue ${Math.max(...seen.map((s) => s.queued))}`,
    );
    expect(seconds).toBeLessThan(90);
  });
});
