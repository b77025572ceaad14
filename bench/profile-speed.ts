/**
 * Profiling speed of the moa runtime on CUDA (issue 5): `profileInfluence` (packages/runtime/src/backward.ts)
 * over one sequence per length, on the same token ids as bench/eager_profiler.py, its PyTorch eager opponent.
 * Bundled by packages/kernels-cuda/scripts/gpu-suite.mjs --bundle into dist-gpu/profile-speed.mjs; run with node
 * on the GPU machine (bench/profile-bench.sh runs both sides):
 *
 *   node packages/kernels-cuda/dist-gpu/profile-speed.mjs <checkpoint-dir> <out.json> [lengths=4096,8192] [runs=3] [--cpu]
 *
 * Per length n: one untimed warm-up profile (cuBLAS handles, kernel attributes, scratch), then `runs` timed
 * profiles; each ends with the block influence on the host (profileInfluence returns it so), tokens/s = n /
 * median seconds. The weights' fp16 copies and the influence's host array are kept from one call to the next
 * (InfluenceSession), as `moa profile` keeps them from one sample to the next: a timed run converts no weights
 * when the warm-up's copies still fit, and reads the influence into an array it has already touched. Peak
 * device memory: cudaMemGetInfo (CudaBackend.memoryInfo) sampled after every tensor
 * allocation of the warm-up profile and after it (the pass frees what it allocates, so a sample at the end alone
 * would miss the peak); it counts everything on the device (CUDA context, weights, scratch), and `contextGiB` is
 * what was in use before the weights were loaded. The JSON is rewritten after every length, so a later failure
 * (or out-of-memory, recorded as the result) keeps the earlier numbers.
 *
 * Token ids (identical in bench/eager_profiler.py): id 0 (BOS in the benchmarked checkpoints), then
 * 3 + (x >>> 8) mod (vocab − 3) with x ← (1664525 x + 1013904223) mod 2³², x₀ = 12345; the last 16 tokens are the
 * answer. `--cpu` runs the CPU backend: a smoke test of this script, not a number to report.
 */
import { writeFileSync } from "node:fs";
import { loadBackend } from "@moa/kernels-cuda";
import { profileInfluence, InfluenceSession } from "../packages/runtime/src/backward.js";
import { loadModel } from "../packages/runtime/src/load.js";
import { TransformerModel } from "../packages/runtime/src/model.js";

const ANSWER_TOKENS = 16;
const GiB = 2 ** 30;

interface CudaExtras {
  memoryInfo(): { free: number; total: number };
}

/** The benchmark's token ids (see above); bench/eager_profiler.py `bench_ids` derives the same. */
export function benchIds(n: number, vocab: number): Int32Array {
  const ids = new Int32Array(n);
  let x = 12345;
  for (let i = 1; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    ids[i] = 3 + ((x >>> 8) % (vocab - 3));
  }
  return ids;
}

/** [n, Σ id, Σ p·id], recorded by both sides so the merge can check that they profiled the same tokens. */
function idsDigest(ids: Int32Array): number[] {
  let sum = 0;
  let weighted = 0;
  for (let p = 0; p < ids.length; p++) {
    sum += ids[p]!;
    weighted += p * ids[p]!;
  }
  return [ids.length, sum, weighted];
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

const positional = process.argv.slice(2).filter((a) => !a.startsWith("--"));
const onCpu = process.argv.includes("--cpu");
const [dir, outPath, lengthList = "4096,8192", runArg = "3"] = positional;
if (dir === undefined || outPath === undefined) {
  console.error("usage: profile-speed.mjs <checkpoint-dir> <out.json> [lengths=4096,8192] [runs=3] [--cpu]");
  process.exit(2);
}
const lengths = lengthList.split(",").map(Number);
const runs = Number(runArg);
const backend = loadBackend(onCpu ? "cpu" : "cuda");
const cuda = onCpu ? undefined : (backend as unknown as CudaExtras);

function usedBytes(): number {
  if (cuda === undefined) return 0;
  const { free, total } = cuda.memoryInfo();
  return total - free;
}

/**
 * Runs `body` with a sample of device memory in use after every tensor allocation of the backend (the pass
 * allocates its buffers and frees them before it returns) and after it; returns the largest sample.
 */
function peakDuring(body: () => void): number {
  if (cuda === undefined) {
    body();
    return 0;
  }
  // NativeBackend.allocate is protected; the benchmark wraps it on this one instance.
  const target = backend as unknown as { allocate(byteLength: number): unknown };
  const allocate = target.allocate;
  let peak = usedBytes();
  target.allocate = function (this: unknown, byteLength: number) {
    const storage = allocate.call(this, byteLength);
    peak = Math.max(peak, usedBytes());
    return storage;
  };
  try {
    body();
    backend.synchronize();
    peak = Math.max(peak, usedBytes());
  } finally {
    target.allocate = allocate;
  }
  return peak;
}

const contextUsed = usedBytes();
let start = performance.now();
const base = await loadModel(dir, { backend, maxLength: 64, slots: 1 });
backend.synchronize();
const loadSeconds = (performance.now() - start) / 1000;
const { config } = base;
const shape = config.shape();
const weights = base.transformer.weights;
const weightBytes = weights.all.reduce((sum, t) => sum + t.byteLength, 0);
// The profile needs no KV cache: the model keeps the 64-token one of the load, with a limit of the longest length.
const model = new TransformerModel(backend, config, weights, base.cache, {
  length: Math.max(...lengths),
  source: "profile-speed",
  field: "lengths",
});
console.log(
  `${backend.deviceName}: ${shape.layers} layers, ${shape.heads}/${shape.kvHeads} heads, head ${shape.headDim}, weights ${(weightBytes / GiB).toFixed(2)} GiB`,
);

/**
 * Where one profile's time goes (OPS=1): every backend call of `body` timed with a synchronise on each side, so
 * the sum is a little above the profile's own time; ms and calls per op.
 */
const INTERNAL = new Set([
  "constructor",
  "synchronize",
  "execute",
  "allocate",
  "handleOf",
  "readBytes",
  "writeBytes",
  "releaseStorage",
]);
function opBreakdown(body: () => void): Record<string, [number, number]> {
  const target = backend as unknown as Record<string, unknown>;
  const spent: Record<string, [number, number]> = {};
  const names = Object.getOwnPropertyNames(Object.getPrototypeOf(Object.getPrototypeOf(backend)))
    .concat(Object.getOwnPropertyNames(Object.getPrototypeOf(backend)))
    .filter((key) => !INTERNAL.has(key) && typeof target[key] === "function");
  for (const key of names) {
    const original = target[key] as (...a: unknown[]) => unknown;
    target[key] = (...args: unknown[]) => {
      backend.synchronize();
      const t0 = performance.now();
      const value = original.apply(backend, args);
      backend.synchronize();
      const entry = (spent[key] ??= [0, 0]);
      entry[0] += performance.now() - t0;
      entry[1]++;
      return value;
    };
  }
  try {
    body();
  } finally {
    for (const key of names) delete target[key];
  }
  const line = Object.entries(spent)
    .sort((a, b) => b[1][0] - a[1][0])
    .map(([key, [ms, calls]]) => `${key} ${ms.toFixed(1)}/${calls}`)
    .join(", ");
  console.log(`  time per op (ms/calls): ${line}`);
  return spent;
}

const session = new InfluenceSession();
const profile1 = (ids: Int32Array, answerStart: number) =>
  profileInfluence(model, ids, answerStart, { session });

const results: Record<string, unknown>[] = [];
function write(): void {
  const label = dir!.replace(/\/+$/, "").split("/").pop();
  const out = {
    mode: "bench",
    side: "ours",
    device: backend.deviceName,
    backend: backend.name,
    checkpoint: dir,
    label,
    layers: shape.layers,
    heads: shape.heads,
    kvHeads: shape.kvHeads,
    headDim: shape.headDim,
    runs,
    weightsGiB: weightBytes / GiB,
    contextGiB: contextUsed / GiB,
    loadSeconds,
    command: `node ${process.argv.slice(1).join(" ")}`,
    results,
  };
  writeFileSync(outPath!, JSON.stringify(out, null, 1));
}

for (const n of lengths) {
  const ids = benchIds(n, config.vocabSize);
  const answerStart = n - ANSWER_TOKENS;
  const row: Record<string, unknown> = { n, answerStart, idsDigest: idsDigest(ids) };
  try {
    const peak = peakDuring(() => profile1(ids, answerStart));
    const times: number[] = [];
    let profile: ReturnType<typeof profileInfluence> | undefined;
    for (let r = 0; r < runs; r++) {
      backend.synchronize();
      start = performance.now();
      profile = profile1(ids, answerStart);
      backend.synchronize();
      times.push((performance.now() - start) / 1000);
    }
    const seconds = median(times);
    const perLayer = profile!.influence.length / shape.layers;
    const sums = Array.from({ length: shape.layers }, (_, l) => {
      let sum = 0;
      for (let i = l * perLayer; i < (l + 1) * perLayer; i++) sum += profile!.influence[i]!;
      return sum;
    });
    Object.assign(row, {
      precision: process.env.MOA_CUDA_BACKWARD_PRECISION || "f16",
      keptLayers: profile!.keptLayers,
      opBreakdownMs: process.env.OPS === "1" ? opBreakdown(() => profile1(ids, answerStart)) : undefined,
      seconds,
      runSeconds: times,
      tokensPerSecond: n / seconds,
      loss: profile!.loss,
      influenceSumPerLayer: sums,
      peakDeviceUsedGiB: cuda === undefined ? null : peak / GiB,
      peakAboveContextGiB: cuda === undefined ? null : (peak - contextUsed) / GiB,
    });
    console.log(
      `ours ${shape.layers}L n=${n}: ${(n / seconds).toFixed(0)} tok/s (median ${seconds.toFixed(3)} s of ${runs}), loss ${profile!.loss.toFixed(6)}, ${profile!.keptLayers} layers kept, peak device memory ${(peak / GiB).toFixed(2)} GiB on ${backend.deviceName}`,
    );
  } catch (error) {
    const message = (error as Error).message ?? String(error);
    row.error = message.split("\n")[0];
    row.oom = /out of memory|cudaErrorMemoryAllocation/i.test(message);
    console.log(`ours n=${n}: failed: ${row.error}`);
  }
  results.push(row);
  write();
}
session.release();
// `model` shares the weights and the cache of `base`: disposing base frees them once.
base.dispose();
