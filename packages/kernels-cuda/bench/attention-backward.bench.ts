/**
 * GPU timing of the profiling attention: the stats prefill and attentionBackward with influence, one sequence of
 * n tokens, in the three operand modes (MOA_CUDA_BACKWARD_PRECISION: f16, the default; split; bf16). Prints one line per
 * configuration and writes the table as JSON to the path given as the first argument (if any).
 *
 * TFLOP/s counts the FlashAttention convention for causal attention: forward 4·n²/2·d·Hq, backward 2.5× that
 * (5 products) — not the products this implementation actually runs (it recomputes S and dP in both passes
 * and, split, runs three bf16 products for each fp32 one).
 *
 *   node dist-gpu/attention-backward.mjs [out.json] [n,n,…]
 */
import { writeFileSync } from "node:fs";
import { loadBackend } from "../src/index.js";

const backend = loadBackend("cuda");
const lengths = (process.argv[3] ?? "4096,8192,32768").split(",").map(Number);
const shapes = [
  { name: "8B (32/8, head 128)", hq: 32, hkv: 8, d: 128 },
  { name: "32/8, head 64", hq: 32, hkv: 8, d: 64 },
  { name: "moa-tiny-like (6/2, head 64)", hq: 6, hkv: 2, d: 64 },
];

function random(count: number): Float32Array {
  const out = new Float32Array(count);
  let seed = 12345;
  for (let i = 0; i < count; i++) {
    seed = (Math.imul(seed, 1103515245) + 12345) | 0;
    out[i] = ((seed >>> 8) / 2 ** 24) * 2 - 1;
  }
  return out;
}

const rows: Record<string, unknown>[] = [];
for (const shape of shapes) {
  for (const n of lengths) {
    if (shape.hq === 6 && n > 8192) continue;
    const qShape = [n, shape.hq, shape.d];
    const kvShape = [n, shape.hkv, shape.d];
    const qData = random(n * shape.hq * shape.d);
    const kvData = qData.subarray(0, n * shape.hkv * shape.d);
    const q = backend.fromHost("f32", qShape, qData);
    const k = backend.fromHost("f32", kvShape, kvData);
    const v = backend.fromHost("f32", kvShape, kvData);
    const dOut = backend.fromHost("f32", qShape, qData);
    const out = backend.empty("f32", qShape);
    const stats = backend.empty("f32", [n, shape.hq, 2]);
    const dq = backend.empty("f32", qShape);
    const dk = backend.empty("f32", kvShape);
    const dv = backend.empty("f32", kvShape);
    const nb = Math.ceil(n / 64);
    const influence = backend.empty("f32", [1, shape.hq, nb, nb]);
    const cu = Int32Array.of(0, n);
    const scale = 1 / Math.sqrt(shape.d);
    const forwardFlops = 4 * ((n * n) / 2) * shape.d * shape.hq;
    // "f16 mma.sync": the fp16 kernels without wgmma (MOA_CUDA_WGMMA=0), to compare the two paths on Hopper.
    for (const mode of ["f16", "f16 mma.sync", "split", "bf16"] as const) {
      process.env.MOA_CUDA_BACKWARD_PRECISION = mode.split(" ")[0];
      process.env.MOA_CUDA_WGMMA = mode === "f16 mma.sync" ? "0" : "";
      const time = (body: () => void, reps: number) => {
        body();
        backend.synchronize();
        const started = performance.now();
        for (let i = 0; i < reps; i++) body();
        backend.synchronize();
        return (performance.now() - started) / reps;
      };
      const reps = n >= 32768 ? 2 : 5;
      const forward = time(() => backend.attentionPrefill(out, q, k, v, cu, scale, undefined, stats), reps);
      const backward = time(
        () => backend.attentionBackward(dq, dk, dv, dOut, q, k, v, out, stats, cu, scale, influence),
        reps,
      );
      const row = {
        shape: shape.name,
        n,
        mode,
        forwardMs: Number(forward.toFixed(3)),
        forwardTflops: Number((forwardFlops / forward / 1e9).toFixed(1)),
        backwardMs: Number(backward.toFixed(3)),
        backwardTflops: Number(((2.5 * forwardFlops) / backward / 1e9).toFixed(1)),
      };
      rows.push(row);
      console.log(
        `${shape.name.padEnd(30)} n=${String(n).padStart(6)} ${mode.padEnd(12)} prefill+stats ${forward.toFixed(2)} ms (${row.forwardTflops} TFLOP/s)  backward ${backward.toFixed(2)} ms (${row.backwardTflops} TFLOP/s)`,
      );
    }
    delete process.env.MOA_CUDA_BACKWARD_PRECISION;
    for (const t of [q, k, v, dOut, out, stats, dq, dk, dv, influence]) backend.free(t);
  }
}
const outPath = process.argv[2];
if (outPath) writeFileSync(outPath, `${JSON.stringify({ device: backend.deviceName, rows }, null, 2)}\n`);
