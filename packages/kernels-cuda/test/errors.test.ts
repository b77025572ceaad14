import { describe, expect, it } from "vitest";
import type { KvCacheLayer, Tensor } from "../src/index.js";
import { backendUnderTest, maskOf } from "./reference.js";

const backend = backendUnderTest();
const f32 = (...shape: number[]) => backend.empty("f32", shape);

describe("bad arguments throw errors that name the op and the shapes (and never crash the process)", () => {
  it("matmul: k mismatch, wrong dtypes, wrong out and bias shapes, aliasing", () => {
    const w = backend.empty("bf16", [4, 6]);
    expect(() => backend.matmul(f32(3, 4), f32(3, 5), w)).toThrow(
      "matmul: x's last dim (5) must equal w's last dim (6) — out f32[3, 4], x f32[3, 5], w bf16[4, 6]",
    );
    expect(() => backend.matmul(f32(3, 4), backend.empty("bf16", [3, 6]), w)).toThrow(
      /^matmul: x must be f32, got bf16/,
    );
    expect(() => backend.matmul(f32(3, 4), f32(3, 6), backend.empty("i32", [4, 6]))).toThrow(
      /^matmul: w must be f32 or bf16 or f16, got i32/,
    );
    expect(() => backend.matmul(f32(3, 5), f32(3, 6), w)).toThrow(
      /^matmul: out must be \[3, 4\] — out f32\[3, 5\]/,
    );
    expect(() => backend.matmul(f32(3, 4), f32(3, 6), w, f32(5))).toThrow(
      /^matmul: bias must be \[4\].*bias f32\[5\]/,
    );
    const x = f32(4, 4);
    expect(() => backend.matmul(x, x, f32(4, 4))).toThrow(/^matmul: out must not overlap x/);
  });

  it("tensors from elsewhere and wrong host data are refused", () => {
    const fake = { dtype: "f32", shape: [2], device: "cpu", byteLength: 8 } as Tensor;
    expect(() => backend.add(fake, fake, fake)).toThrow(/^add: out is not a tensor of @moa\/kernels-cuda/);
    expect(() => backend.fromHost("f32", [2], Int32Array.of(1, 2))).toThrow(
      /fromHost: f32 data must be a Float32Array \(or a Uint8Array of raw bytes\), got Int32Array/,
    );
    expect(() => backend.fromHost("bf16", [3], new Uint16Array(2))).toThrow(
      /fromHost: bf16\[3\] needs 3 elements, got 2/,
    );
    expect(() => backend.empty("f64" as "f32", [2])).toThrow(/empty: unknown dtype f64/);
    expect(() => backend.empty("f32", [2, -1])).toThrow(/empty: shape must be a list of integers ≥ 0/);
    expect(() => backend.write(f32(2), Float32Array.of(1, 2), 1)).toThrow(
      /write: 2 elements at offset 1 overrun/,
    );
    expect(() => backend.rows(f32(3, 2), 2, 2)).toThrow(
      /rows: rows \[2, 4\) exceed the 3 rows — t f32\[3, 2\]/,
    );
  });

  it("elementwise ops, rmsNorm, rope, softmax, embedding", () => {
    expect(() => backend.add(f32(2, 3), f32(2, 3), f32(3, 2))).toThrow(
      "add: a and b must have the same shape — out f32[2, 3], a f32[2, 3], b f32[3, 2]",
    );
    expect(() => backend.siluMul(f32(4), f32(2, 2), f32(2, 2))).toThrow(
      /^siluMul: out and gate must have the same shape/,
    );
    expect(() => backend.rmsNorm(f32(2, 8), f32(2, 8), f32(7), 1e-5)).toThrow(
      /^rmsNorm: weight must be \[8\] — out f32\[2, 8\], x f32\[2, 8\], weight f32\[7\]/,
    );
    expect(() => backend.rmsNorm(f32(2, 8), f32(2, 8), f32(8), Number.NaN)).toThrow(
      /rmsNorm: eps must be a finite/,
    );
    const positions = backend.empty("i32", [3]);
    expect(() => backend.rope(f32(3, 2, 8), positions, f32(5), 1)).toThrow(
      /^rope: invFreq must have between 1 and headDim\/2 \(4\) entries, got 5/,
    );
    expect(() => backend.rope(f32(3, 2, 8), f32(3), f32(4), 1)).toThrow(
      /^rope: positions must be i32, got f32/,
    );
    expect(() => backend.softmax(f32(2, 3), f32(2, 4))).toThrow(
      /^softmax: out and x must have the same shape/,
    );
    const table = backend.empty("f16", [10, 4]);
    expect(() => backend.embedding(f32(2, 5), backend.empty("i32", [2]), table)).toThrow(
      /^embedding: out must be \[2, 4\]/,
    );
    const ids = backend.fromHost("i32", [2], Int32Array.of(3, 10));
    expect(() => backend.embedding(f32(2, 4), ids, table)).toThrow(
      "embedding: ids[1] = 10 is outside the table's 10 rows",
    );
  });

  it("attentionPrefill: shapes, GQA ratio, cuSeqlens, masks", () => {
    const q = f32(10, 4, 8);
    const kv = f32(10, 2, 8);
    const cu = Int32Array.of(0, 10);
    expect(() => backend.attentionPrefill(f32(10, 4, 8), q, f32(10, 3, 8), f32(10, 3, 8), cu, 1)).toThrow(
      /^attentionPrefill: query heads \(4\) must be a multiple of KV heads \(3\)/,
    );
    expect(() => backend.attentionPrefill(f32(10, 4, 8), q, f32(9, 2, 8), f32(9, 2, 8), cu, 1)).toThrow(
      /^attentionPrefill: k and v must be \[tokens, kvHeads, headDim\].*q f32\[10, 4, 8\], k f32\[9, 2, 8\]/,
    );
    expect(() =>
      backend.attentionPrefill(f32(10, 4, 8), q, kv, f32(10, 2, 8), Int32Array.of(0, 4, 9), 1),
    ).toThrow(/^attentionPrefill: cuSeqlens must run from 0 to the 10 tokens, got \[0, 4, 9\]/);
    expect(() =>
      backend.attentionPrefill(f32(10, 4, 8), q, kv, f32(10, 2, 8), Int32Array.of(0, 6, 4, 10), 1),
    ).toThrow(/cuSeqlens must not decrease/);
    const shortMask = maskOf("block", [{ alpha: 0, beta: 0 }]);
    expect(() => backend.attentionPrefill(f32(10, 4, 8), q, kv, f32(10, 2, 8), cu, 1, shortMask)).toThrow(
      /^attentionPrefill: mask.alpha must have one entry per query head \(4\), got 1/,
    );
    expect(() => backend.attentionPrefill(q, q, kv, f32(10, 2, 8), cu, 1)).toThrow(/out must not overlap q/);
  });

  function cache(): KvCacheLayer {
    return {
      k: f32(20, 8),
      v: f32(20, 8),
      kvHeads: 2,
      headDim: 8,
      sinkTokens: 4,
      ringCap: Int32Array.of(6, 6),
      regionOffset: Int32Array.of(0, 10), // one slot
    };
  }

  it("kvAppend and attentionDecode: cache layout, slots, positions, regions, mask mode", () => {
    const k = f32(1, 2, 8);
    expect(() =>
      backend.kvAppend(cache(), f32(1, 3, 8), f32(1, 3, 8), Int32Array.of(0), Int32Array.of(0)),
    ).toThrow(/^kvAppend: k and v must be \[tokens, 2, 8\]/);
    expect(() => backend.kvAppend(cache(), k, f32(1, 2, 8), Int32Array.of(1), Int32Array.of(0))).toThrow(
      "kvAppend: slots[0] = 1 is outside the cache's 1 slots",
    );
    expect(() => backend.kvAppend(cache(), k, f32(1, 2, 8), Int32Array.of(0), Int32Array.of(-3))).toThrow(
      "kvAppend: positions[0] = -3 is negative",
    );
    expect(() => backend.kvAppend(cache(), k, f32(1, 2, 8), Int32Array.of(0, 0), Int32Array.of(0))).toThrow(
      /^kvAppend: slots must have 1 entries, got 2/,
    );
    const overflowing = { ...cache(), regionOffset: Int32Array.of(0, 11) };
    expect(() => backend.kvAppend(overflowing, k, f32(1, 2, 8), Int32Array.of(0), Int32Array.of(0))).toThrow(
      "kvAppend: cache.regionOffset[1] = 11 puts the region [11, 21) outside the cache's 20 entries",
    );
    const q = f32(1, 4, 8);
    const window = maskOf("window", new Array(4).fill({ alpha: 0, beta: 0 }), 64, 4);
    expect(() =>
      backend.attentionDecode(f32(1, 4, 8), q, cache(), Int32Array.of(0), Int32Array.of(0), 1, window),
    ).toThrow(/^attentionDecode: seqLens\[0\] = 0/);
    const block = { ...window, mode: "block" as const };
    expect(() =>
      backend.attentionDecode(f32(1, 4, 8), q, cache(), Int32Array.of(0), Int32Array.of(1), 1, block),
    ).toThrow(/^attentionDecode: mask.mode must be "window"/);
    const otherSink = { ...window, sinkTokens: 64 };
    expect(() =>
      backend.attentionDecode(f32(1, 4, 8), q, cache(), Int32Array.of(0), Int32Array.of(1), 1, otherSink),
    ).toThrow(/^attentionDecode: mask.sinkTokens \(64\) must equal cache.sinkTokens \(4\)/);
    expect(() =>
      backend.attentionDecode(f32(1, 4, 4), f32(1, 4, 4), cache(), Int32Array.of(0), Int32Array.of(1), 1),
    ).toThrow(/^attentionDecode: q's headDim \(4\) must equal the cache's \(8\)/);
    expect(() =>
      backend.attentionDecode(
        f32(1, 4, 8),
        q,
        { ...cache(), ringCap: Int32Array.of(6, 0) },
        Int32Array.of(0),
        Int32Array.of(1),
        1,
      ),
    ).toThrow("attentionDecode: cache.ringCap[1] must be ≥ 1");
  });

  it("the process is still healthy after all of the above", () => {
    const t = backend.fromHost("f32", [2], Float32Array.of(1, 2));
    backend.add(t, t, t);
    expect(Array.from(backend.toHost(t))).toEqual([2, 4]);
  });
});
