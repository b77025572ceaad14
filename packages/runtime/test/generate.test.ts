import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type GenerationResult, generate, generateBatch, generateText } from "../src/generate.js";
import { loadModel, type Model } from "../src/load.js";
import { fixtureDir, referenceVectors } from "./fixtures.js";

const PROMPTS = [
  "def fibonacci(n):\n    ",
  "line quick-brown: REGISTER_CONTENT is <31415>\nline lazy-dog: REGISTER_CONTENT is <27182>\n",
  "The pass key is 12345. Remember it. 12345 is the pass key. What is the pass key? The pass key is ",
];

describe("generate on moa-nano", () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(fixtureDir("moa-nano"), { backend: "cpu", slots: 3, maxLength: 512 });
  });
  afterAll(() => model.dispose());

  it("streams tokens whose text pieces add up to the decoded continuation", async () => {
    const stream = generate(model, PROMPTS[0]!, { maxNewTokens: 20, ignoreEos: true });
    const tokens: number[] = [];
    let text = "";
    for (;;) {
      const step = await stream.next();
      if (step.done) {
        expect(step.value.tokens).toEqual(tokens);
        expect(step.value.text).toBe(text);
        expect(step.value.finishReason).toBe("length");
        break;
      }
      tokens.push(step.value.token);
      text += step.value.text;
    }
    expect(tokens).toHaveLength(20);
    expect(text).toBe(model.decode(tokens));
  });

  it("continues the line-retrieval prompt of the reference with the reference's greedy tokens", async () => {
    const { input_ids, greedy } = referenceVectors().models["moa-nano"];
    const big = await loadModel(fixtureDir("moa-nano"), { backend: "cpu" });
    try {
      const result = await generateText(big, big.decode(input_ids), { maxNewTokens: 6 });
      expect(result.tokens).toEqual(greedy.slice(0, 6));
    } finally {
      big.dispose();
    }
  });

  it("stops at a stop string, cutting the text right before it", async () => {
    const free = await generateText(model, PROMPTS[0]!, { maxNewTokens: 30, ignoreEos: true });
    const stop = free.text.slice(8, 11);
    expect(stop.length).toBe(3);
    const cut = free.text.indexOf(stop);
    const stopped = await generateText(model, PROMPTS[0]!, {
      maxNewTokens: 30,
      ignoreEos: true,
      stopStrings: [stop],
    });
    expect(stopped.finishReason).toBe("stop");
    expect(stopped.text).toBe(free.text.slice(0, cut));
    expect(stopped.tokens).toEqual(free.tokens.slice(0, stopped.tokens.length));
    // The streamed pieces never contain the stop string either.
    let streamed = "";
    for await (const piece of generate(model, PROMPTS[0]!, {
      maxNewTokens: 30,
      ignoreEos: true,
      stopStrings: [stop],
    })) {
      streamed += piece.text;
    }
    expect(streamed).toBe(stopped.text);
  });

  it("stops at a stop token and includes it in the tokens", async () => {
    const free = await generateText(model, PROMPTS[1]!, { maxNewTokens: 10, ignoreEos: true });
    const stopToken = free.tokens[4]!;
    const first = free.tokens.indexOf(stopToken);
    const stopped = await generateText(model, PROMPTS[1]!, { maxNewTokens: 10, stopTokens: [stopToken] });
    expect(stopped.finishReason).toBe("stop");
    expect(stopped.tokens).toEqual(free.tokens.slice(0, first + 1));
  });

  it("stops when the context is full", async () => {
    const prompt = model.encode(PROMPTS[2]!);
    const small = await loadModel(fixtureDir("moa-nano"), { backend: "cpu", maxLength: prompt.length + 3 });
    try {
      const result = await generateText(small, prompt, { ignoreEos: true });
      expect(result.tokens).toHaveLength(3);
      expect(result.finishReason).toBe("length");
    } finally {
      small.dispose();
    }
  });

  it("reproduces a seeded sampled run and varies with the seed", async () => {
    const options = { maxNewTokens: 16, temperature: 1.2, topK: 50, topP: 0.95, ignoreEos: true };
    const a = await generateText(model, PROMPTS[0]!, { ...options, seed: 7 });
    const b = await generateText(model, PROMPTS[0]!, { ...options, seed: 7 });
    const c = await generateText(model, PROMPTS[0]!, { ...options, seed: 8 });
    expect(a.tokens).toEqual(b.tokens);
    expect(c.tokens).not.toEqual(a.tokens);
  });

  it("a batch of prompts of different lengths gives each prompt's own greedy continuation", async () => {
    const alone: GenerationResult[] = [];
    for (const prompt of PROMPTS)
      alone.push(await generateText(model, prompt, { maxNewTokens: 12, ignoreEos: true }));
    const batch = generateBatch(model, PROMPTS, { maxNewTokens: 12, ignoreEos: true });
    const streamed: number[][] = PROMPTS.map(() => []);
    let step = await batch.next();
    while (!step.done) {
      streamed[step.value.index]!.push(step.value.token);
      step = await batch.next();
    }
    const results = step.value;
    results.forEach((r, i) => {
      expect(r.tokens).toEqual(alone[i]!.tokens);
      expect(streamed[i]).toEqual(alone[i]!.tokens);
    });
    expect(model.cache.freeSlots()).toBe(3);
  });

  it("sequences leave the batch when they finish and free their slot", async () => {
    const batch = generateBatch(model, PROMPTS.slice(0, 2), {
      maxNewTokens: 12,
      ignoreEos: true,
      stopStrings: ["\n"],
    });
    let step = await batch.next();
    while (!step.done) step = await batch.next();
    for (const r of step.value) expect(["stop", "length"]).toContain(r.finishReason);
    expect(model.cache.freeSlots()).toBe(3);
  });

  it("a consumer that breaks early frees the slot", async () => {
    for await (const _ of generate(model, PROMPTS[0]!, { maxNewTokens: 50 })) break;
    expect(model.cache.freeSlots()).toBe(3);
  });

  it("an abort signal ends generation with finish reason abort", async () => {
    const controller = new AbortController();
    const stream = generate(model, PROMPTS[0]!, {
      maxNewTokens: 50,
      ignoreEos: true,
      signal: controller.signal,
    });
    let count = 0;
    for (;;) {
      const step = await stream.next();
      if (step.done) {
        expect(step.value.finishReason).toBe("abort");
        break;
      }
      if (++count === 3) controller.abort();
    }
    expect(count).toBe(3);
    expect(model.cache.freeSlots()).toBe(3);
    const early = await generateText(model, PROMPTS[0]!, { signal: AbortSignal.abort() });
    expect(early).toMatchObject({ tokens: [], finishReason: "abort" });
  });

  it("unseeded sampling differs between runs, greedy does not", async () => {
    const options = { maxNewTokens: 16, temperature: 1.5, ignoreEos: true };
    const runs = await Promise.all([1, 2, 3].map(() => generateText(model, PROMPTS[0]!, options)));
    expect(new Set(runs.map((r) => r.tokens.join(","))).size).toBeGreaterThan(1);
    const greedy = await Promise.all([1, 2].map(() => generateText(model, PROMPTS[0]!, { maxNewTokens: 8 })));
    expect(greedy[0]!.tokens).toEqual(greedy[1]!.tokens);
  });
});
