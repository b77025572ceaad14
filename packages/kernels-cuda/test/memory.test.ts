import { describe, expect, it } from "vitest";
import { backendUnderTest, randomF32, rng } from "./reference.js";

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
