// Throughput of the heavy ops: matmul GFLOP/s and attention tokens/s (prefill dense vs MoA masks, decode).
// Prints a table and writes JSON to bench/results/. Not a test: it never fails on numbers.
//   pnpm bench                        # the backend loadBackend() picks (MOA_BACKEND=cpu|cuda to force)
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { type Backend, type DType, loadBackend, type MoaMask, type Tensor } from "../src/index.js";

const backend: Backend = loadBackend();
const rows: Record<string, string | number>[] = [];

function random(count: number, seed: number): Float32Array {
  const out = new Float32Array(count);
  let state = seed;
  for (let i = 0; i < count; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    out[i] = state / 2 ** 31 - 1;
  }
  return out;
}

function weights(dtype: DType, shape: number[], seed: number): Tensor {
  const count = shape.reduce((a, b) => a * b, 1);
  const values = random(count, seed);
  if (dtype === "f32") return backend.fromHost("f32", shape, values);
  // bf16 by truncation, f16 as values in [1, 2): enough for timing.
  const bits = new Uint16Array(count);
  const words = new Uint32Array(values.buffer);
  for (let i = 0; i < count; i++) bits[i] = dtype === "bf16" ? words[i]! >>> 16 : 0x3c00 | (i & 0x3ff);
  return backend.fromHost(dtype, shape, bits);
}

/** Median seconds of `run` over enough repetitions to fill ~0.5 s. */
function time(run: () => void): number {
  run();
  backend.synchronize();
  const samples: number[] = [];
  const budget = performance.now() + 500;
  while (samples.length < 3 || (performance.now() < budget && samples.length < 50)) {
    const start = performance.now();
    run();
    backend.synchronize();
    samples.push((performance.now() - start) / 1000);
  }
  samples.sort((a, b) => a - b);
  return samples[samples.length >> 1]!;
}

function benchMatmul(label: string, m: number, n: number, k: number, dtype: DType): void {
  const x = backend.fromHost("f32", [m, k], random(m * k, 1));
  const w = weights(dtype, [n, k], 2);
  const out = backend.empty("f32", [m, n]);
  const seconds = time(() => backend.matmul(out, x, w));
  rows.push({
    op: "matmul",
    case: `${label} m=${m} n=${n} k=${k} ${dtype}`,
    ms: +(seconds * 1000).toFixed(3),
    "GFLOP/s": +((2 * m * n * k) / seconds / 1e9).toFixed(1),
  });
  for (const t of [x, w, out]) backend.free(t);
}

function maskFor(heads: number, mode: MoaMask["mode"], alpha: number, beta: number): MoaMask {
  return {
    mode,
    alpha: new Float32Array(heads).fill(alpha),
    beta: new Float32Array(heads).fill(beta),
    blockSize: 64,
    sinkTokens: 64,
  };
}

/** Kept causal entries / all causal entries of the block mask (DESIGN.md: Density), for the table. */
function density(n: number, mask?: MoaMask): number {
  if (!mask) return 1;
  const B = 64;
  const span = Math.min(Math.max(mask.alpha[0]! + mask.beta[0]! * n, 0), n);
  const nb = Math.max(1, Math.floor(span / B));
  let kept = 0;
  for (let i = 0; i < n; i++) {
    const qb = Math.floor(i / B);
    for (let kb = 0; kb <= qb; kb++) {
      if (kb < 1 || kb >= qb - nb + 1) kept += Math.min(B, i + 1 - kb * B);
    }
  }
  return kept / ((n * (n + 1)) / 2);
}

function benchPrefill(n: number, queryHeads: number, kvHeads: number, headDim: number, mask?: MoaMask): void {
  const q = backend.fromHost("f32", [n, queryHeads, headDim], random(n * queryHeads * headDim, 3));
  const k = backend.fromHost("f32", [n, kvHeads, headDim], random(n * kvHeads * headDim, 4));
  const v = backend.fromHost("f32", [n, kvHeads, headDim], random(n * kvHeads * headDim, 5));
  const out = backend.empty("f32", [n, queryHeads, headDim]);
  const seconds = time(() => backend.attentionPrefill(out, q, k, v, Int32Array.of(0, n), 0.125, mask));
  rows.push({
    op: "attentionPrefill",
    case: `n=${n} Hq=${queryHeads} Hkv=${kvHeads} D=${headDim} ${mask ? `MoA density ${density(n, mask).toFixed(2)}` : "dense"}`,
    ms: +(seconds * 1000).toFixed(2),
    "tokens/s": Math.round(n / seconds),
  });
  for (const t of [q, k, v, out]) backend.free(t);
}

function benchDecode(
  batch: number,
  length: number,
  queryHeads: number,
  kvHeads: number,
  headDim: number,
): void {
  const ringCap = Int32Array.from({ length: kvHeads }, () => length);
  const regionOffset = Int32Array.from({ length: batch * kvHeads }, (_, r) => r * (64 + length));
  const entries = batch * kvHeads * (64 + length);
  const cache = {
    k: backend.fromHost("f32", [entries, headDim], random(entries * headDim, 6)),
    v: backend.fromHost("f32", [entries, headDim], random(entries * headDim, 7)),
    kvHeads,
    headDim,
    sinkTokens: 64,
    ringCap,
    regionOffset,
  };
  const q = backend.fromHost("f32", [batch, queryHeads, headDim], random(batch * queryHeads * headDim, 8));
  const out = backend.empty("f32", [batch, queryHeads, headDim]);
  const slots = Int32Array.from({ length: batch }, (_, b) => b);
  const seqLens = new Int32Array(batch).fill(length);
  const seconds = time(() => backend.attentionDecode(out, q, cache, slots, seqLens, 0.125));
  rows.push({
    op: "attentionDecode",
    case: `batch=${batch} cached=${length} Hq=${queryHeads} Hkv=${kvHeads} D=${headDim}`,
    ms: +(seconds * 1000).toFixed(3),
    "tokens/s": Math.round(batch / seconds),
  });
  for (const t of [cache.k, cache.v, q, out]) backend.free(t);
}

// A ~12M-parameter Llama (hidden 384, MLP 1024, 6 layers) prefilling 512 tokens, then larger shapes.
benchMatmul("12M-model qkv", 512, 3 * 384, 384, "f32");
benchMatmul("12M-model mlp", 512, 2 * 1024, 384, "bf16");
benchMatmul("square", 512, 512, 512, "f32");
benchMatmul("square", 512, 512, 512, "bf16");
benchMatmul("square", 1024, 1024, 1024, "f16");
benchMatmul("prefill 1B-like", 256, 2048, 2048, "bf16");
benchMatmul("decode", 1, 4096, 4096, "bf16");
benchMatmul("decode", 1, 4096, 4096, "f32");
for (const n of [1024, 4096]) {
  benchPrefill(n, 8, 2, 64);
  benchPrefill(n, 8, 2, 64, maskFor(8, "block", 0, 0.5));
  benchPrefill(n, 8, 2, 64, maskFor(8, "block", 512, 0));
}
benchDecode(1, 4096, 32, 8, 128);
benchDecode(8, 2048, 32, 8, 128);

console.table(rows);

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const resultsDir = join(root, "bench", "results");
mkdirSync(resultsDir, { recursive: true });
const stamp = new Date().toISOString().replace(/[:.]/g, "-");
const file = join(resultsDir, `kernels-${backend.name}-${stamp}.json`);
writeFileSync(
  file,
  `${JSON.stringify(
    {
      bench: "@moa/kernels-cuda kernels",
      command: "pnpm --filter @moa/kernels-cuda bench",
      date: new Date().toISOString(),
      backend: backend.name,
      device: backend.deviceName,
      machine: { cpu: cpus()[0]?.model ?? "unknown", cores: cpus().length, platform: process.platform },
      node: process.version,
      results: rows,
    },
    null,
    2,
  )}\n`,
);
console.log(`wrote ${file}`);
