import { type MoaPlan, planKvBytes } from "@moa/core";
import { KvCache, loadModel, loadNamedBackend, type Model, readModelConfig } from "@moa/runtime";
import { describe, expect, it } from "vitest";
import {
  formatBytes,
  KV_CACHE_DTYPE_BYTES,
  KV_CACHE_ELEMENT_BYTES,
  kvBudget,
  parseByteSize,
  sequenceKvBytes,
  serve,
} from "../src/index.js";
import { MOA_NANO, nanoPlan, scrape } from "./helpers.js";

/** The CPU backend with its KV cache dtype switched to bf16: caches are allocated exactly as CUDA's are. */
function bf16CacheBackend(): Model["backend"] {
  return Object.create(loadNamedBackend("cpu"), { kvCacheDtype: { value: "bf16" } });
}

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
          expect(sequenceKvBytes(config.shape(), p, maxLength, model.cache.elementBytes)).toBe(
            model.cache.slotBytes(),
          );
          expect(model.cache.cacheBytes()).toBe(3 * model.cache.slotBytes());
          expect(model.cache.elementBytes).toBe(KV_CACHE_ELEMENT_BYTES);
          expect(model.cache.elementBytes).toBe(KV_CACHE_DTYPE_BYTES[model.backend.kvCacheDtype]);
        } finally {
          model.dispose();
        }
      }
    }
  });

  it("a MoA plan's per-sequence bytes are planKvBytes at the max length, below a dense cache's", async () => {
    const config = await readModelConfig(MOA_NANO);
    const plan = await nanoPlan();
    const withPlan = sequenceKvBytes(config.shape(), plan, 1000, 4);
    expect(withPlan).toBe(planKvBytes(plan, 1000, { bytesPerElement: 4 }));
    expect(withPlan).toBeLessThan(sequenceKvBytes(config.shape(), undefined, 1000, 4));
  });

  it("charges a bf16 cache (CUDA) 2 bytes per element and an f32 cache (CPU) 4, as planKvBytes does", async () => {
    const config = await readModelConfig(MOA_NANO);
    const plan = await nanoPlan();
    expect(KV_CACHE_DTYPE_BYTES).toEqual({ f32: 4, bf16: 2 });
    for (const maxLength of [64, 257, 1000, 2048]) {
      const [bf16, f32] = [KV_CACHE_DTYPE_BYTES.bf16, KV_CACHE_DTYPE_BYTES.f32].map((bytes) =>
        sequenceKvBytes(config.shape(), plan, maxLength, bytes),
      );
      expect(bf16).toBe(planKvBytes(plan, maxLength, { bytesPerElement: 2 }));
      expect(f32).toBe(planKvBytes(plan, maxLength, { bytesPerElement: 4 }));
      expect(f32).toBe(2 * bf16!);
      const { layers, kvHeads, headDim } = config.shape();
      expect(sequenceKvBytes(config.shape(), undefined, maxLength, 2)).toBe(
        layers * kvHeads * maxLength * headDim * 2 * 2,
      );
    }
    expect(() => sequenceKvBytes(config.shape(), plan, 64, 0)).toThrow(/elementBytes = 0/);
  });

  it("equals the slot bytes of a KvCache allocated as bf16, the CUDA cache's dtype (no GPU needed)", async () => {
    const config = await readModelConfig(MOA_NANO);
    const plan = await nanoPlan();
    const backend = bf16CacheBackend();
    for (const maxLength of [64, 200, 1000]) {
      for (const p of [plan, undefined] as Array<MoaPlan | undefined>) {
        const cache = new KvCache(backend, config, { maxLength, slots: 2, plan: p });
        try {
          expect(cache.elementBytes).toBe(2);
          expect(cache.layers[0]!.k.dtype).toBe("bf16");
          expect(sequenceKvBytes(config.shape(), p, maxLength, cache.elementBytes)).toBe(cache.slotBytes());
          // The f32 accounting the server used to apply everywhere is off by a factor of two here.
          expect(sequenceKvBytes(config.shape(), p, maxLength, KV_CACHE_ELEMENT_BYTES)).toBe(
            2 * cache.slotBytes(),
          );
        } finally {
          cache.dispose();
        }
      }
    }
  });

  it("serve() turns the budget into slots, admission and /metrics with a bf16 cache's bytes (as on CUDA)", async () => {
    const plan = await nanoPlan();
    const maxLength = 256;
    const bf16Bytes = planKvBytes(plan, maxLength, { bytesPerElement: 2 });
    // Room for 3.5 bf16 sequences (1.75 f32 ones): the server must give 3 slots and start.
    const kvBudgetBytes = 3 * bf16Bytes + bf16Bytes / 2;
    const running = await serve({
      modelDir: MOA_NANO,
      backend: bf16CacheBackend(),
      plan,
      maxLength,
      maxBatch: 8,
      kvBudgetBytes,
      port: 0,
    });
    try {
      expect(running.model.cache.elementBytes).toBe(2);
      expect(running.budget).toEqual({
        budgetBytes: kvBudgetBytes,
        sequenceBytes: bf16Bytes,
        slots: 3,
        capacityBytes: 3 * bf16Bytes,
      });
      expect(running.model.cache.slotBytes()).toBe(bf16Bytes);
      expect(running.model.cache.slots).toBe(3);
      const metrics = await scrape(running);
      expect(metrics.get("moa_kv_sequence_bytes")).toBe(bf16Bytes);
      expect(metrics.get("moa_kv_cache_capacity_bytes")).toBe(running.model.cache.cacheBytes());
      expect(metrics.get("moa_kv_cache_budget_bytes")).toBe(kvBudgetBytes);
      expect(metrics.get("moa_kv_cache_free_bytes")).toBe(3 * bf16Bytes);
    } finally {
      await running.close(0);
    }
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
