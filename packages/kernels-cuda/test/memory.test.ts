import { describe, expect, it } from "vitest";
import { backendUnderTest, randomBf16, randomF32, rng } from "./reference.js";

const backend = backendUnderTest();

describe("tensors", () => {
  it("empty is zero-initialised with the requested dtype, shape and byteLength", () => {
    for (const [dtype, size] of [
      ["f32", 4],
      ["bf16", 2],
      ["f16", 2],
      ["i32", 4],
    ] as const) {
      const t = backend.empty(dtype, [3, 5]);
      expect(t.dtype).toBe(dtype);
      expect(t.shape).toEqual([3, 5]);
      expect(t.device).toBe(backend.name);
      expect(t.byteLength).toBe(15 * size);
      expect(Array.from(backend.toHost(t))).toEqual(new Array(15).fill(0));
    }
  });

  it("an uninitialized tensor has the requested dtype and shape and holds what is written to it", () => {
    const t = backend.empty("f32", [2, 3], { uninitialized: true });
    expect(t.shape).toEqual([2, 3]);
    const values = Float32Array.of(1, -2, 3.5, 0, 1e-30, 7);
    backend.write(t, values);
    expect(backend.toHost(t)).toEqual(values);
  });

  it("pinHalfCopies checks its tensors and leaves ops' results unchanged; releasing twice is harmless", () => {
    const x = backend.fromHost("f32", [2, 3], Float32Array.of(1, 2, 3, 4, 5, 6));
    const w = backend.fromHost("f32", [2, 3], Float32Array.of(0.5, -1, 2, 3, 0.25, -4));
    const unpinned = backend.empty("f32", [2, 2]);
    backend.matmul(unpinned, x, w, undefined, true);
    const release = backend.pinHalfCopies([x, w]);
    const pinned = backend.empty("f32", [2, 2]);
    backend.matmul(pinned, x, w, undefined, true);
    release();
    release();
    expect(backend.toHost(pinned)).toEqual(backend.toHost(unpinned));
    expect(backend.halfCopyBytes([x, w])).toBe(backend.name === "cpu" ? 0 : 24);
    expect(() => backend.pinHalfCopies([{} as never])).toThrow(/pinHalfCopies.*tensors\[0\]/);
    const freed = backend.empty("f32", [1]);
    backend.free(freed);
    expect(() => backend.pinHalfCopies([freed])).toThrow(/pinHalfCopies/);
  });

  describe("pinHalfOutputs", () => {
    const random = rng(5);
    // 16-bit weights: the exact GEMMs read their inputs' fp16 copies (CUDA), the ones these pins hold.
    const bf16 = (rows: number, cols: number) =>
      backend.fromHost("bf16", [rows, cols], randomBf16(random, rows * cols));
    const f32 = (rows: number, cols: number, lo = -2, hi = 2) =>
      backend.fromHost("f32", [rows, cols], randomF32(random, rows * cols, lo, hi));

    /** The GEMMs' output when `produce` writes `outputs` in f32 (then pinned), and when it writes only the copies. */
    function bothWays(
      outputs: () => ReturnType<typeof backend.empty>[],
      produce: (outs: ReturnType<typeof backend.empty>[]) => void,
      consume: (outs: ReturnType<typeof backend.empty>[]) => ReturnType<typeof backend.empty>,
    ): [Float32Array, Float32Array] {
      const plain = outputs();
      produce(plain);
      const unpinPlain = backend.pinHalfCopies(plain);
      const expected = backend.toHost(consume(plain)) as Float32Array;
      unpinPlain();
      const pinned = outputs();
      const unpin = backend.pinHalfOutputs(pinned);
      produce(pinned);
      const actual = backend.toHost(consume(pinned)) as Float32Array;
      unpin();
      unpin();
      return [actual, expected];
    }

    for (const [rows, ff] of [
      [8, 32],
      [3, 5], // not a multiple of 4 elements: the op writes f32 and converts it into the pin
    ] as const) {
      it(`siluMul and siluMulBackward write the same copies as a conversion of their outputs (${rows}×${ff})`, () => {
        const gate = f32(rows, ff, -6, 6);
        const up = f32(rows, ff);
        const down = bf16(16, ff);
        const [forward, forwardExpected] = bothWays(
          () => [backend.empty("f32", [rows, ff])],
          ([act]) => backend.siluMul(act!, gate, up),
          ([act]) => {
            const out = backend.empty("f32", [rows, 16]);
            backend.matmul(out, act!, down, undefined, true);
            return out;
          },
        );
        expect(forward).toEqual(forwardExpected);
        const dAct = f32(rows, ff, -1e-3, 1e-3);
        const wGate = bf16(ff, 16);
        const wUp = bf16(ff, 16);
        const [backward, backwardExpected] = bothWays(
          () => [backend.empty("f32", [rows, ff]), backend.empty("f32", [rows, ff])],
          ([dGate, dUp]) => backend.siluMulBackward(dGate!, dUp!, dAct, gate, up),
          ([dGate, dUp]) => {
            const dh = backend.empty("f32", [rows, 16]);
            backend.matmulBackward(dh, dGate!, wGate);
            backend.matmulBackward(dh, dUp!, wUp, true);
            return dh;
          },
        );
        expect(backward).toEqual(backwardExpected);
      });
    }

    it("rmsNorm writes the same copy as a conversion of its output", () => {
      const [rows, dim] = [5, 48];
      const x = f32(rows, dim);
      const norm = backend.fromHost("bf16", [dim], randomBf16(random, dim));
      const q = bf16(24, dim);
      const [actual, expected] = bothWays(
        () => [backend.empty("f32", [rows, dim])],
        ([h]) => backend.rmsNorm(h!, x, norm, 1e-5),
        ([h]) => {
          const out = backend.empty("f32", [rows, 24]);
          backend.matmul(out, h!, q, undefined, true);
          return out;
        },
      );
      expect(actual).toEqual(expected);
    });

    it("refuses tensors that are not f32, and on CUDA any read before the op or by a reader of f32", () => {
      expect(() => backend.pinHalfOutputs([bf16(2, 4)])).toThrow(
        /pinHalfOutputs: ops write f32 tensors, got bf16/,
      );
      if (backend.name !== "cuda") return; // the CPU reference keeps no copies: the ops write f32 as always
      const act = backend.empty("f32", [4, 8]);
      const unpin = backend.pinHalfOutputs([act]);
      const out = backend.empty("f32", [4, 2]);
      expect(() => backend.matmul(out, act, bf16(2, 8), undefined, true)).toThrow(/before an op wrote it/);
      backend.siluMul(act, f32(4, 8), f32(4, 8));
      expect(() => backend.matmul(out, act, f32(2, 8), undefined, true)).toThrow(
        /only the scaled fp16 GEMMs/,
      );
      unpin();
    });
  });

  it("fromHost → toHost round-trips every dtype, typed or as raw bytes", () => {
    const f32 = randomF32(rng(1), 12);
    expect(backend.toHost(backend.fromHost("f32", [3, 4], f32))).toEqual(f32);
    const i32 = Int32Array.from({ length: 6 }, (_, i) => i * 1000 - 2500);
    expect(backend.toHost(backend.fromHost("i32", [6], i32))).toEqual(i32);
    const half = Uint16Array.from({ length: 8 }, (_, i) => i * 4099);
    expect(backend.toHost(backend.fromHost("bf16", [2, 4], half))).toEqual(half);
    expect(backend.toHost(backend.fromHost("f16", [8], new Uint8Array(half.buffer)))).toEqual(half);
    expect(backend.toHost(backend.fromHost("f32", [12], new Uint8Array(f32.buffer)))).toEqual(f32);
  });

  it("toHost into a given array fills and returns it; a wrong size or type is refused", () => {
    const values = Float32Array.of(1.5, -2, 3, 4e-20);
    const t = backend.fromHost("f32", [2, 2], values);
    const into = new Float32Array(4).fill(9);
    expect(backend.toHost(t, into)).toBe(into);
    expect(into).toEqual(values);
    const raw = new Uint8Array(16);
    backend.toHost(t, raw);
    expect(new Float32Array(raw.buffer)).toEqual(values);
    expect(() => backend.toHost(t, new Float32Array(5))).toThrow(
      /toHost: into holds 20 bytes, the tensor 16/,
    );
    expect(() => backend.toHost(t, new Int32Array(4))).toThrow(/toHost: f32 data must be a Float32Array/);
  });

  it("toHost returns a copy, and fromHost copies its input", () => {
    const data = Float32Array.of(1, 2, 3);
    const t = backend.fromHost("f32", [3], data);
    data[0] = 99;
    const back = backend.toHost(t) as Float32Array;
    back[1] = 99;
    expect(Array.from(backend.toHost(t))).toEqual([1, 2, 3]);
  });

  it("write stores host data at an element offset", () => {
    const t = backend.empty("f32", [2, 3]);
    backend.write(t, Float32Array.of(7, 8), 2);
    backend.write(t, Float32Array.of(9));
    expect(Array.from(backend.toHost(t))).toEqual([9, 0, 7, 8, 0, 0]);
  });

  it("rows() views share storage: writes and op outputs through a view land in the parent", () => {
    const t = backend.fromHost("f32", [4, 2], Float32Array.of(0, 1, 2, 3, 4, 5, 6, 7));
    const middle = backend.rows(t, 1, 2);
    expect(middle.shape).toEqual([2, 2]);
    expect(middle.byteLength).toBe(16);
    expect(Array.from(backend.toHost(middle))).toEqual([2, 3, 4, 5]);
    backend.write(middle, Float32Array.of(-1), 3);
    backend.add(backend.rows(t, 3, 1), backend.rows(t, 0, 1), backend.rows(t, 3, 1));
    expect(Array.from(backend.toHost(t))).toEqual([0, 1, 2, 3, 4, -1, 6, 8]);
    expect(Array.from(backend.toHost(backend.rows(middle, 1, 1)))).toEqual([4, -1]);
  });

  it("a freed tensor, and the views of a freed tensor, are refused with an error", () => {
    const t = backend.empty("f32", [2, 2]);
    const view = backend.rows(t, 0, 1);
    backend.free(view);
    expect(() => backend.toHost(view)).toThrow(/toHost: t was freed/);
    expect(Array.from(backend.toHost(t))).toEqual([0, 0, 0, 0]); // freeing a view keeps the parent
    const other = backend.rows(t, 1, 1);
    backend.free(t);
    backend.free(t); // idempotent
    expect(() => backend.toHost(other)).toThrow(/toHost: t was freed/);
    expect(() => backend.add(other, other, other)).toThrow(/add: out was freed/);
  });

  it("synchronize returns once the queued work is done", () => {
    const t = backend.fromHost("f32", [2], Float32Array.of(1, 2));
    backend.add(t, t, t);
    backend.synchronize();
    expect(Array.from(backend.toHost(t))).toEqual([2, 4]);
  });
});
