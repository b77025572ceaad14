#!/usr/bin/env node
// Compares every op of the CUDA backend with the CPU reference on random inputs, on a machine with a GPU
// (CI has none, so the vitest suite runs the CPU backend). Run after `pnpm build`:
//   node scripts/cuda-check.mjs
// Exits non-zero when CUDA is unavailable or any op differs.
import { loadBackend, nativeStatus } from "../dist/index.js";

const status = nativeStatus();
console.log(JSON.stringify(status, null, 2));
if (status.cuda.devices < 1) {
  console.error(`CUDA unavailable: ${status.cuda.error}`);
  process.exit(1);
}
const cuda = loadBackend("cuda");
const cpu = loadBackend("cpu");
if (loadBackend("auto") !== cuda) throw new Error('loadBackend("auto") did not pick CUDA on a GPU machine');
console.log(`CUDA device: ${cuda.deviceName}; CPU: ${cpu.deviceName}`);

let seed = 12345;
function random(count, lo = -1, hi = 1) {
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    out[i] = lo + ((hi - lo) * seed) / 2 ** 32;
  }
  return out;
}
function bf16(count) {
  const words = new Uint32Array(random(count).buffer);
  return Uint16Array.from(words, (w) => w >>> 16);
}

/** The same host data on both backends. */
function pair(dtype, shape, data) {
  return { cpu: cpu.fromHost(dtype, shape, data), cuda: cuda.fromHost(dtype, shape, data) };
}
function emptyPair(dtype, shape) {
  return { cpu: cpu.empty(dtype, shape), cuda: cuda.empty(dtype, shape) };
}

let failures = 0;
function compare(name, out, tolerance = 1e-5) {
  const a = cpu.toHost(out.cpu);
  const b = cuda.toHost(out.cuda);
  let worst = 0;
  for (let i = 0; i < a.length; i++)
    worst = Math.max(worst, Math.abs(a[i] - b[i]) || (a[i] === b[i] ? 0 : Infinity));
  const ok = worst <= tolerance;
  if (!ok) failures++;
  console.log(`${ok ? "ok  " : "FAIL"} ${name}: max |cpu − cuda| = ${worst.toExponential(2)}`);
}
function both(op, ...args) {
  cpu[op](...args.map((a) => (a && typeof a === "object" && "cpu" in a ? a.cpu : a)));
  cuda[op](...args.map((a) => (a && typeof a === "object" && "cuda" in a ? a.cuda : a)));
}

// Kernels on the GPU: rmsNorm (all weight dtypes), siluMul, add.
for (const [rows, dim] of [
  [1, 1],
  [7, 300],
  [130, 4096],
]) {
  const x = pair("f32", [rows, dim], random(rows * dim, -3, 3));
  for (const [dtype, data] of [
    ["f32", random(dim)],
    ["bf16", bf16(dim)],
  ]) {
    const w = pair(dtype, [dim], data);
    const out = emptyPair("f32", [rows, dim]);
    both("rmsNorm", out, x, w, 1e-5);
    compare(`rmsNorm ${rows}×${dim} ${dtype}`, out, 2e-5);
  }
  const gate = pair("f32", [rows, dim], random(rows * dim, -8, 8));
  const out = emptyPair("f32", [rows, dim]);
  both("siluMul", out, gate, x);
  compare(`siluMul ${rows}×${dim}`, out, 2e-5);
  both("add", out, out, x);
  compare(`add (in place) ${rows}×${dim}`, out, 2e-5);
}

// Ops staged through the CPU reference on the CUDA backend: same results, device memory round trips.
{
  const x = pair("f32", [37, 96], random(37 * 96));
  const w = pair("bf16", [80, 96], bf16(80 * 96));
  const bias = pair("f32", [80], random(80));
  const out = emptyPair("f32", [37, 80]);
  both("matmul", out, x, w, bias);
  compare("matmul 37×80×96 bf16 + bias", out, 1e-4);
  const ids = pair("i32", [5], Int32Array.of(0, 3, 79, 3, 1));
  const emb = emptyPair("f32", [5, 96]);
  both("embedding", emb, ids, w);
  compare("embedding", emb, 0);
  const q = pair("f32", [20, 4, 16], random(20 * 64));
  const positions = pair(
    "i32",
    [20],
    Int32Array.from({ length: 20 }, (_, i) => i * 3),
  );
  const invFreq = pair(
    "f32",
    [8],
    Float32Array.from({ length: 8 }, (_, i) => 1 / 10000 ** (i / 8)),
  );
  both("rope", q, positions, invFreq, 1);
  compare("rope", q, 1e-6);
  const sm = emptyPair("f32", [20, 64]);
  const scores = pair("f32", [20, 64], random(20 * 64, -20, 20));
  both("softmax", sm, scores);
  compare("softmax", sm, 1e-6);
}

// Attention: prefill with a block mask, then decode over a ring cache.
{
  const tokens = 300;
  const q = pair("f32", [tokens, 4, 32], random(tokens * 128));
  const k = pair("f32", [tokens, 2, 32], random(tokens * 64));
  const v = pair("f32", [tokens, 2, 32], random(tokens * 64));
  const out = emptyPair("f32", [tokens, 4, 32]);
  const mask = {
    mode: "block",
    alpha: Float32Array.of(64, 0, 128, 32),
    beta: Float32Array.of(0.25, 0, 0, 0.5),
    blockSize: 64,
    sinkTokens: 64,
  };
  both("attentionPrefill", out, q, k, v, Int32Array.of(0, 100, tokens), 0.17, mask);
  compare("attentionPrefill block mask, 2 sequences, GQA", out, 1e-5);

  const ringCap = Int32Array.of(96, 96);
  const regionOffset = Int32Array.of(0, 160);
  const cacheOf = (backend) => ({
    k: backend.empty("f32", [320, 32]),
    v: backend.empty("f32", [320, 32]),
    kvHeads: 2,
    headDim: 32,
    sinkTokens: 64,
    ringCap,
    regionOffset,
  });
  const cache = { cpu: cacheOf(cpu), cuda: cacheOf(cuda) };
  const window = {
    ...mask,
    mode: "window",
    alpha: Float32Array.of(32, 0, 64, 16),
    beta: Float32Array.of(0, 0, 0, 0),
  };
  const step = emptyPair("f32", [1, 4, 32]);
  for (let p = 0; p < 200; p++) {
    for (const [name, backend] of [
      ["cpu", cpu],
      ["cuda", cuda],
    ]) {
      backend.kvAppend(
        cache[name],
        backend.rows(k[name], p, 1),
        backend.rows(v[name], p, 1),
        Int32Array.of(0),
        Int32Array.of(p),
      );
      backend.attentionDecode(
        step[name],
        backend.rows(q[name], p, 1),
        cache[name],
        Int32Array.of(0),
        Int32Array.of(p + 1),
        0.17,
        window,
      );
    }
  }
  compare("kvAppend ring cache (k)", { cpu: cache.cpu.k, cuda: cache.cuda.k }, 0);
  compare("attentionDecode window mask after 200 tokens", step, 1e-5);
}

// Memory: views, writes, free.
{
  const t = cuda.fromHost("f32", [4, 2], Float32Array.of(0, 1, 2, 3, 4, 5, 6, 7));
  cuda.write(cuda.rows(t, 2, 1), Float32Array.of(-1, -2));
  const back = Array.from(cuda.toHost(cuda.rows(t, 1, 2)));
  const ok = JSON.stringify(back) === JSON.stringify([2, 3, -1, -2]);
  if (!ok) failures++;
  console.log(`${ok ? "ok  " : "FAIL"} rows/write/toHost on device memory: ${JSON.stringify(back)}`);
  cuda.free(t);
  let refused = false;
  try {
    cuda.toHost(t);
  } catch {
    refused = true;
  }
  if (!refused) failures++;
  console.log(`${refused ? "ok  " : "FAIL"} a freed device tensor is refused`);
}

// Throughput of the GPU kernels (elementwise, memory bound).
{
  const n = 64 * 1024 * 1024;
  const a = cuda.fromHost("f32", [n], random(n));
  const b = cuda.empty("f32", [n]);
  cuda.add(b, a, a);
  cuda.synchronize();
  const start = performance.now();
  for (let i = 0; i < 20; i++) cuda.add(b, a, b);
  cuda.synchronize();
  const seconds = (performance.now() - start) / 1000 / 20;
  console.log(`add over ${n} floats: ${((3 * 4 * n) / seconds / 1e9).toFixed(0)} GB/s`);
}

console.log(failures === 0 ? "CUDA check passed" : `CUDA check: ${failures} failure(s)`);
process.exit(failures === 0 ? 0 : 1);
