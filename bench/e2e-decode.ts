/**
 * End-to-end decode throughput of the moa runtime on CUDA (bundled by packages/kernels-cuda/scripts/gpu-suite.mjs
 * --bundle into dist-gpu/e2e-decode.mjs; run with node on the GPU machine):
 *
 *   node packages/kernels-cuda/dist-gpu/e2e-decode.mjs <checkpoint-dir> <out.json> [contexts=8192,32768] [steps=8]
 *
 * For each context n and each of dense and MoA (KV density ~0.5, spans differing per KV head): one real prompt
 * of n random tokens is prefilled into slot 0 (timed after an untimed warm-up prefill), its working memory is released, its
 * cache is copied into every other slot, and decode steps run over the whole batch (each step returns the
 * batch's logits to the host, as `TransformerModel.decode` does). Batch: the dense cache takes as many slots
 * as fit next to the weights and a prefill's workspace; MoA gets the same KV bytes ("the same memory") and so
 * more slots. Reports decode tokens/s, the step time, the batch and the peak device memory in use.
 */
import { writeFileSync } from "node:fs";
import { type ElasticRule, makePlan, type MoaPlan, planKvDensity } from "@moa/core";
import { loadBackend } from "@moa/kernels-cuda";
import { KvCache, ringCapacities } from "../packages/runtime/src/kv-cache.js";
import { loadModel } from "../packages/runtime/src/load.js";
import { TransformerModel } from "../packages/runtime/src/model.js";

interface CudaExtras {
  memoryInfo(): { free: number; total: number };
  copy(to: unknown, from: unknown): void;
}

const [dir, outPath, contextList = "8192,32768", stepArg = "8"] = process.argv.slice(2);
if (dir === undefined || outPath === undefined) {
  console.error("usage: e2e-decode.mjs <checkpoint-dir> <out.json> [contexts] [steps]");
  process.exit(2);
}
const contexts = contextList.split(",").map(Number);
const steps = Number(stepArg);
const backend = loadBackend("cuda");
const cuda = backend as unknown as CudaExtras;
const GiB = 2 ** 30;

let peakUsed = 0;
function sampleMemory(): number {
  backend.synchronize();
  const { free, total } = cuda.memoryInfo();
  peakUsed = Math.max(peakUsed, total - free);
  return total - free;
}

const base = await loadModel(dir, { backend, maxLength: 64, slots: 1 });
const { config } = base;
const weights = base.transformer.weights;
const shape = config.shape();
const weightBytes = weights.all.reduce((sum, t) => sum + t.byteLength, 0);
const afterWeights = sampleMemory();
console.log(
  `${backend.deviceName}: ${config.layers} layers, d ${config.hiddenSize}, weights ${(weightBytes / GiB).toFixed(2)} GiB`,
);

/** MoA plan with KV density ~0.5: every query head of KV head g gets beta from a fixed list averaging 0.5. */
function moaPlan(n: number): MoaPlan {
  const betas = [0.25, 0.375, 0.5, 0.625, 0.75, 0.5, 0.375, 0.625];
  const group = shape.heads / shape.kvHeads;
  const rules: ElasticRule[][] = Array.from({ length: shape.layers }, (_, l) =>
    Array.from({ length: shape.heads }, (_, h) => ({
      alpha: 0,
      beta: betas[(Math.floor(h / group) + l) % betas.length]! - 64 / n,
    })),
  );
  return makePlan(shape, rules, [n], { bench: "e2e-decode, KV density ~0.5" });
}

function slotBytes(maxLength: number, plan: MoaPlan | undefined, elementBytes: number): number {
  let entries = 0;
  for (let l = 0; l < shape.layers; l++) {
    const { sinkTokens, ringCap } = ringCapacities(shape, l, maxLength, plan);
    for (const cap of ringCap) entries += sinkTokens + cap;
  }
  return entries * shape.headDim * 2 * elementBytes;
}

const results: unknown[] = [];
for (const n of contexts) {
  const maxLength = n + steps + 8;
  // Working memory of one n-token prefill (model.ts Workspace: f32 rows) plus GEMM/attention scratch and slack.
  const rowBytes =
    4 *
    (2 * config.hiddenSize +
      2 * shape.heads * shape.headDim +
      2 * shape.kvHeads * shape.headDim +
      3 * config.intermediateSize);
  const reserve = n * rowBytes + n * config.intermediateSize * 3 + 3 * GiB;
  const { total } = cuda.memoryInfo();
  const kvBudget = total - afterWeights - reserve;
  const elementBytes = backend.kvCacheDtype === "bf16" ? 2 : 4;
  for (const name of ["dense", "moa"] as const) {
    const plan = name === "moa" ? moaPlan(n) : undefined;
    const perSlot = slotBytes(maxLength, plan, elementBytes);
    const batch = Math.max(1, Math.floor(kvBudget / perSlot));
    peakUsed = 0;
    const cache = new KvCache(backend, shape, { maxLength, slots: batch, plan });
    const model = new TransformerModel(backend, config, weights, cache, {
      length: maxLength,
      source: "e2e-decode",
      field: "maxLength",
    });
    try {
      const prompt = Array.from({ length: n }, (_, i) => (i * 7919 + 13) % config.vocabSize);
      // One untimed prefill first: cuBLAS handles, kernel attributes and the workspace are set up once.
      const warm = cache.allocateSlot();
      model.prefill([{ slot: warm, tokens: prompt }]);
      cache.releaseSlot(warm);
      const slot0 = cache.allocateSlot();
      let start = performance.now();
      model.prefill([{ slot: slot0, tokens: prompt }]);
      backend.synchronize();
      const prefillMs = performance.now() - start;
      sampleMemory();
      model.releaseScratch();
      // Every other slot starts from slot 0's cache (regions are laid out slot by slot in each layer).
      for (let s = 1; s < batch; s++) {
        const slot = cache.allocateSlot();
        for (const layer of cache.layers) {
          const per = layer.k.shape[0]! / batch;
          cuda.copy(backend.rows(layer.k, slot * per, per), backend.rows(layer.k, 0, per));
          cuda.copy(backend.rows(layer.v, slot * per, per), backend.rows(layer.v, 0, per));
        }
        cache.setLength(slot, n);
      }
      const slots = Int32Array.from({ length: batch }, (_, s) => s);
      const next = Array.from({ length: batch }, (_, s) => (s * 31 + 7) % config.vocabSize);
      for (let w = 0; w < 2; w++) model.decode(slots, next);
      sampleMemory();
      start = performance.now();
      for (let step = 0; step < steps; step++) model.decode(slots, next);
      const decodeMs = performance.now() - start;
      sampleMemory();
      // The part of a step that is the logits' trip to the host ([batch, vocab] f32, as decode returns them).
      const logits = backend.empty("f32", [batch, config.vocabSize]);
      backend.toHost(logits);
      start = performance.now();
      for (let i = 0; i < 3; i++) backend.toHost(logits);
      const logitsToHostMs = (performance.now() - start) / 3;
      backend.free(logits);
      const row = {
        context: n,
        plan: name,
        kvDensity: plan === undefined ? 1 : planKvDensity(plan, maxLength),
        batch,
        kvCacheGiB: cache.cacheBytes() / GiB,
        prefillTokensPerSecond: n / (prefillMs / 1000),
        prefillMs,
        decodeStepMs: decodeMs / steps,
        decodeTokensPerSecond: (batch * steps) / (decodeMs / 1000),
        logitsToHostMs,
        peakMemoryGiB: peakUsed / GiB,
      };
      console.log(
        `n=${n} ${name.padEnd(5)} batch ${String(batch).padStart(3)}  KV ${row.kvCacheGiB.toFixed(1)} GiB  prefill ${row.prefillTokensPerSecond.toFixed(0)} tok/s  decode step ${row.decodeStepMs.toFixed(1)} ms (logits to host ${logitsToHostMs.toFixed(1)} ms) = ${row.decodeTokensPerSecond.toFixed(0)} tok/s  peak ${row.peakMemoryGiB.toFixed(1)} GiB`,
      );
      results.push(row);
    } finally {
      model.releaseScratch();
      cache.dispose();
      backend.synchronize();
    }
  }
}
writeFileSync(
  outPath,
  JSON.stringify(
    {
      device: backend.deviceName,
      weightsGiB: weightBytes / GiB,
      kvCacheDtype: backend.kvCacheDtype,
      steps,
      results,
    },
    null,
    1,
  ),
);
base.dispose();
