import { planKvBytes } from "@moa/core";
import { loadModel, readModelConfig } from "@moa/runtime";
import { describe, expect, it } from "vitest";
import {
  formatBytes,
  KV_CACHE_ELEMENT_BYTES,
  kvBudget,
  parseByteSize,
  sequenceKvBytes,
  serve,
} from "../src/index.js";
import { MOA_NANO, nanoPlan } from "./helpers.js";

describe("KV budget", () => {
  it("sequenceKvBytes equals what the runtime's KvCache allocates per slot, with a plan and dense", async () => {
    const config = await readModelConfig(MOA_NANO);
    const plan = await nanoPlan();
    for (const maxLength of [64, 200, 256, 1000]) {
      for (const p of [plan, undefined]) {
        const model = await loadModel(MOA_NANO, {
          backend: "cpu",
          maxLength,
          slots: 3,
          ...(p ? { plan: p } : {}),
        });
        try {
          expect(sequenceKvBytes(config.shape(), p, maxLength)).toBe(model.cache.slotBytes());
          expect(model.cache.cacheBytes()).toBe(3 * model.cache.slotBytes());
          expect(model.cache.elementBytes).toBe(KV_CACHE_ELEMENT_BYTES);
        } finally {
          model.dispose();
        }
      }
    }
  });

  it("a MoA plan's per-sequence bytes are planKvBytes at the max length, below a dense cache's", async () => {
    const config = await readModelConfig(MOA_NANO);
    const plan = await nanoPlan();
    const withPlan = sequenceKvBytes(config.shape(), plan, 1000);
    expect(withPlan).toBe(planKvBytes(plan, 1000, { bytesPerElement: 4 }));
    expect(withPlan).toBeLessThan(sequenceKvBytes(config.shape(), undefined, 1000));
  });

  it("admits ⌊budget / sequence bytes⌋ sequences, capped by maxBatch", () => {
    expect(kvBudget(1000, 8)).toEqual({
      budgetBytes: 8000,
      sequenceBytes: 1000,
      slots: 8,
      capacityBytes: 8000,
    });
    expect(kvBudget(1000, 8, 3500)).toEqual({
      budgetBytes: 3500,
      sequenceBytes: 1000,
      slots: 3,
      capacityBytes: 3000,
    });
    expect(kvBudget(1000, 2, 1_000_000).slots).toBe(2);
  });

  it("serve() refuses a max length beyond the model's context and a budget below one sequence, before loading", async () => {
    await expect(serve({ modelDir: MOA_NANO, backend: "cpu", maxLength: 4096, port: 0 })).rejects.toThrow(
      /maxLength = 4096: must be an integer in \[2, 2048\].*max_position_embeddings = 2048/,
    );
    await expect(
      serve({ modelDir: MOA_NANO, backend: "cpu", maxLength: 256, kvBudgetBytes: 1000, port: 0 }),
    ).rejects.toThrow(/kvBudget = 1000 bytes is less than one sequence needs \(2097152 bytes/);
  });

  it("refuses a budget below one sequence, naming the bytes one needs", () => {
    expect(() => kvBudget(1000, 8, 999)).toThrow(/less than one sequence needs \(1000 bytes/);
    expect(() => kvBudget(1000, 0)).toThrow(/maxBatch/);
  });
});

describe("byte sizes", () => {
  it("parses plain bytes, SI and IEC units, and refuses anything else", () => {
    expect(parseByteSize("1048576")).toBe(1048576);
    expect(parseByteSize("512MiB")).toBe(512 * 2 ** 20);
    expect(parseByteSize("1.5 GiB")).toBe(1.5 * 2 ** 30);
    expect(parseByteSize("2GB")).toBe(2e9);
    expect(parseByteSize("64kib")).toBe(65536);
    for (const bad of ["", "0", "-5", "12 parsecs", "1e9", "GiB"]) {
      expect(() => parseByteSize(bad, "--kv-budget")).toThrow(/--kv-budget/);
    }
  });

  it("formats bytes for logs", () => {
    expect(formatBytes(512)).toBe("512 B");
    expect(formatBytes(2097152)).toBe("2.00 MiB");
    expect(formatBytes(1.5 * 2 ** 30)).toBe("1.50 GiB");
  });
});
