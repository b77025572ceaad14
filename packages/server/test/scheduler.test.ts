import type { MoaPlan } from "@moa/core";
import { generateText, loadModel, type Model } from "@moa/runtime";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  AdmissionError,
  Scheduler,
  type SchedulerStats,
  type SequenceResult,
  type SequenceSpec,
} from "../src/index.js";
import { MAX_LENGTH, MOA_NANO, nanoPlan, referenceModel, waitFor } from "./helpers.js";

let plan: MoaPlan;
let model: Model;
let reference: Model;

beforeAll(async () => {
  plan = await nanoPlan();
  model = await loadModel(MOA_NANO, { backend: "cpu", maxLength: MAX_LENGTH, slots: 2, plan });
  reference = await referenceModel(plan);
});

afterAll(() => {
  model.dispose();
  reference.dispose();
});

function spec(prompt: string, maxTokens: number, extra: Partial<SequenceSpec> = {}): SequenceSpec {
  return {
    promptIds: model.encode(prompt),
    maxTokens,
    temperature: 0,
    topP: 1,
    topK: 0,
    seed: 0,
    stopStrings: [],
    ...extra,
  };
}

interface Tracked {
  readonly texts: string[];
  readonly result: Promise<SequenceResult>;
  readonly listener: { onText(delta: string): void; onFinish(result: SequenceResult): void };
}

function track(onText?: (delta: string) => void): Tracked {
  const texts: string[] = [];
  let resolve: (r: SequenceResult) => void = () => undefined;
  const result = new Promise<SequenceResult>((r) => {
    resolve = r;
  });
  return {
    texts,
    result,
    listener: {
      onText: (delta) => {
        texts.push(delta);
        onText?.(delta);
      },
      onFinish: resolve,
    },
  };
}

describe("Scheduler", () => {
  it("admits a sequence into a free slot while another is decoding, and both equal single-sequence decode", async () => {
    const scheduler = new Scheduler(model, {
      sequenceBytes: model.cache.slotBytes(),
      maxQueue: 4,
      maxPrefillTokens: 512,
    });
    const long = track();
    scheduler.submit([spec("def fibonacci(n):", 40)], [long.listener]);
    await waitFor(() => long.texts.length >= 3, "the first sequence to be decoding");
    const late = track();
    scheduler.submit([spec("import numpy as np\n", 12)], [late.listener]);
    const lateResult = await late.result;
    // The late sequence finished while the first one was still running: it joined the live batch.
    expect(scheduler.stats().running).toBe(1);
    const longResult = await long.result;
    expect(longResult.text).toBe(
      (await generateText(reference, "def fibonacci(n):", { maxNewTokens: 40 })).text,
    );
    expect(lateResult.text).toBe(
      (await generateText(reference, "import numpy as np\n", { maxNewTokens: 12 })).text,
    );
    expect(longResult.completionTokens).toBe(40);
    expect(longResult.finishReason).toBe("length");
  });

  it("admits by exact KV bytes: never more running than the budget holds, the rest wait and then run", async () => {
    const bytes = model.cache.slotBytes();
    const scheduler = new Scheduler(model, { sequenceBytes: bytes, maxQueue: 8, maxPrefillTokens: 512 });
    const seen: SchedulerStats[] = [];
    const runs = ["a = 1", "b = 2", "c = 3", "d = 4", "e = 5"].map(() =>
      track(() => seen.push(scheduler.stats())),
    );
    scheduler.submit(
      runs.map((_, i) => spec(`x${i} = [`, 6)),
      runs.map((r) => r.listener),
    );
    expect(scheduler.stats().queued).toBe(5);
    const results = await Promise.all(runs.map((r) => r.result));
    expect(results.every((r) => r.finishReason === "length" && r.completionTokens === 6)).toBe(true);
    expect(Math.max(...seen.map((s) => s.running))).toBe(2);
    for (const s of seen) {
      expect(s.kvUsedBytes).toBe(s.running * bytes);
      expect(s.kvUsedBytes + s.kvFreeBytes).toBe(2 * bytes);
    }
    expect(seen.some((s) => s.queued > 0)).toBe(true);
    expect(scheduler.stats()).toMatchObject({
      queued: 0,
      running: 0,
      kvUsedBytes: 0,
      kvFreeBytes: 2 * bytes,
    });
    expect(model.cache.freeSlots()).toBe(2);
  });

  it("cancelling frees the cache slot at once, and the queue moves on", async () => {
    const scheduler = new Scheduler(model, {
      sequenceBytes: model.cache.slotBytes(),
      maxQueue: 4,
      maxPrefillTokens: 512,
    });
    const first = track();
    const submission = scheduler.submit([spec("while True:", 200)], [first.listener]);
    await waitFor(() => first.texts.length > 2, "tokens from the first sequence");
    expect(model.cache.freeSlots()).toBe(1);
    submission.cancel();
    // Synchronously: the slot and its bytes are back before any other work runs.
    expect(model.cache.freeSlots()).toBe(2);
    expect(scheduler.stats()).toMatchObject({ running: 0, kvUsedBytes: 0 });
    const result = await first.result;
    expect(result.finishReason).toBe("cancelled");
    expect(result.completionTokens).toBeLessThan(200);
    const next = track();
    scheduler.submit([spec("x = 1", 3)], [next.listener]);
    expect((await next.result).finishReason).toBe("length");
  });

  it("rejects submissions beyond the queue bound, and groups larger than it could ever hold", async () => {
    const scheduler = new Scheduler(model, {
      sequenceBytes: model.cache.slotBytes(),
      maxQueue: 1,
      maxPrefillTokens: 512,
    });
    const held = [track(), track(), track()];
    // 2 free slots + 1 queue place: three sequences fit, a fourth does not.
    const submission = scheduler.submit(
      held.map(() => spec("for i in range(", 100)),
      held.map((t) => t.listener),
    );
    const extra = track();
    expect(() => scheduler.submit([spec("y", 2)], [extra.listener])).toThrow(AdmissionError);
    try {
      scheduler.submit([spec("y", 2)], [extra.listener]);
    } catch (error) {
      expect((error as AdmissionError).reason).toBe("queue_full");
    }
    const many = [1, 2, 3, 4].map(() => track());
    expect(() =>
      scheduler.submit(
        many.map(() => spec("z", 2)),
        many.map((t) => t.listener),
      ),
    ).toThrow(/holds at most 3/);
    submission.cancel();
    await Promise.all(held.map((t) => t.result));
    expect(scheduler.stats()).toMatchObject({ queued: 0, running: 0, kvUsedBytes: 0 });
  });

  it("shutdown lets running sequences finish within the grace period and refuses new ones", async () => {
    const scheduler = new Scheduler(model, {
      sequenceBytes: model.cache.slotBytes(),
      maxQueue: 4,
      maxPrefillTokens: 512,
    });
    const run = track();
    scheduler.submit([spec("class Node:", 30)], [run.listener]);
    const closing = scheduler.shutdown(60_000);
    expect(() => scheduler.submit([spec("x", 1)], [track().listener])).toThrow(/shutting down/);
    await closing;
    expect((await run.result).finishReason).toBe("length");
  });

  it("shutdown past its grace period ends what is left with reason 'shutdown' and frees every slot", async () => {
    const scheduler = new Scheduler(model, {
      sequenceBytes: model.cache.slotBytes(),
      maxQueue: 4,
      maxPrefillTokens: 512,
    });
    const runs = [track(), track(), track()];
    scheduler.submit(
      runs.map(() => spec("import os\n", 250)),
      runs.map((t) => t.listener),
    );
    await waitFor(() => runs[0]!.texts.length > 0, "decoding to start");
    await scheduler.shutdown(0);
    const results = await Promise.all(runs.map((t) => t.result));
    expect(results.map((r) => r.finishReason)).toEqual(["shutdown", "shutdown", "shutdown"]);
    expect(model.cache.freeSlots()).toBe(2);
    expect(scheduler.stats().kvUsedBytes).toBe(0);
  });
  it("a model failure ends the sequences of that step with 'error', frees their slots, and serving goes on", async () => {
    const scheduler = new Scheduler(model, {
      sequenceBytes: model.cache.slotBytes(),
      maxQueue: 4,
      maxPrefillTokens: 512,
    });
    const transformer = model.transformer;
    const decode = transformer.decode;
    let failures = 0;
    transformer.decode = (...args: Parameters<typeof decode>) => {
      if (failures++ === 0) throw new Error("injected device fault");
      return decode.apply(transformer, args);
    };
    try {
      const broken = track();
      scheduler.submit([spec("x = 1", 10)], [broken.listener]);
      const result = await broken.result;
      expect(result.finishReason).toBe("error");
      expect(result.error?.message).toBe("injected device fault");
      expect(model.cache.freeSlots()).toBe(2);
      const next = track();
      scheduler.submit([spec("x = 1", 10)], [next.listener]);
      expect((await next.result).text).toBe(
        (await generateText(reference, "x = 1", { maxNewTokens: 10 })).text,
      );
    } finally {
      transformer.decode = decode;
    }
  });
});
