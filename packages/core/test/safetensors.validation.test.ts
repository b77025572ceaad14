import { openSync, readFileSync, readSync, closeSync, statSync } from "node:fs";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  DTYPE_SIZES,
  parseSafetensors,
  parseSafetensorsHeader,
  type SafetensorsDtype,
  safetensorsHeaderLength,
  serializeSafetensors,
  tensorBytes,
} from "../src/index.js";
import { expectMoaError } from "./helpers.js";

const fixture = (path: string) => fileURLToPath(new URL(`../../../fixtures/${path}`, import.meta.url));

/** A file with the given header object and `dataBytes` bytes of data. */
function fileWithHeader(header: unknown, dataBytes: number): Uint8Array {
  const json = new TextEncoder().encode(typeof header === "string" ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  return out;
}

describe("safetensors round trip", () => {
  it("serialize → parse returns every tensor's dtype, shape and bytes, and metadata", () => {
    const tensorArb = fc
      .record({
        dtype: fc.constantFrom(...(Object.keys(DTYPE_SIZES) as SafetensorsDtype[])),
        shape: fc.array(fc.integer({ min: 0, max: 5 }), { maxLength: 3 }),
        seed: fc.integer({ min: 0, max: 255 }),
      })
      .map(({ dtype, shape, seed }) => {
        const size = shape.reduce((a, d) => a * d, 1) * DTYPE_SIZES[dtype];
        return { dtype, shape, data: Uint8Array.from({ length: size }, (_, k) => (seed + k * 7) & 255) };
      });
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.tuple(fc.string({ minLength: 1, maxLength: 12 }), tensorArb), {
          selector: ([name]) => name,
          maxLength: 5,
        }),
        fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ maxLength: 20 })),
        (entries, metadata) => {
          const tensors = entries
            .filter(([name]) => name !== "__metadata__")
            .map(([name, t]) => ({ name, ...t }));
          const bytes = serializeSafetensors(tensors, metadata);
          const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
          expect(headerLength % 8).toBe(0);
          const file = parseSafetensors(bytes, "roundtrip.safetensors");
          expect(file.dataStart).toBe(8 + headerLength);
          expect(file.metadata).toEqual(metadata);
          expect([...file.tensors.keys()].sort()).toEqual(tensors.map((t) => t.name).sort());
          for (const t of tensors) {
            const entry = file.tensors.get(t.name)!;
            expect(entry.dtype).toBe(t.dtype);
            expect(entry.shape).toEqual(t.shape);
            expect(tensorBytes(bytes, entry)).toEqual(t.data);
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it("keeps a metadata key named __proto__ (an own key, not the prototype)", () => {
    const metadata = JSON.parse('{"__proto__": "x", "format": "pt"}') as Record<string, string>;
    const file = parseSafetensors(serializeSafetensors([], metadata), "proto.safetensors");
    expect(Object.keys(file.metadata)).toEqual(["__proto__", "format"]);
    expect(file.metadata).toEqual(metadata);
  });

  it("pads the header with spaces to a multiple of 8 bytes, as Hugging Face does", () => {
    const bytes = serializeSafetensors([{ name: "x", dtype: "F32", shape: [1], data: new Uint8Array(4) }]);
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    const header = new TextDecoder().decode(bytes.subarray(8, 8 + n));
    expect(n % 8).toBe(0);
    expect(header).toMatch(/^\{.*\} *$/);
    expect(JSON.parse(header)).toEqual({ x: { dtype: "F32", shape: [1], data_offsets: [0, 4] } });
  });
});

describe("real fixture files parse", () => {
  it("moa-nano/model.safetensors: 38 BF16 tensors covering the whole data section", () => {
    const bytes = readFileSync(fixture("moa-nano/model.safetensors"));
    const file = parseSafetensors(bytes, "model.safetensors");
    expect(file.metadata).toEqual({ format: "pt" });
    expect(file.tensors.size).toBe(38);
    const embed = file.tensors.get("model.embed_tokens.weight")!;
    expect(embed).toMatchObject({ dtype: "BF16", shape: [4096, 256], begin: file.dataStart });
    const end = Math.max(...[...file.tensors.values()].map((t) => t.end));
    expect(end).toBe(bytes.length);
  });

  it("the header-only path reads the moa-tiny shards without loading their data", () => {
    for (const shard of [1, 2, 3]) {
      const path = fixture(`moa-tiny/model-0000${shard}-of-00003.safetensors`);
      const size = statSync(path).size;
      const fd = openSync(path, "r");
      try {
        const prefix = new Uint8Array(8);
        readSync(fd, prefix, 0, 8, 0);
        const n = safetensorsHeaderLength(prefix, size, path);
        const header = new Uint8Array(n);
        readSync(fd, header, 0, n, 8);
        const file = parseSafetensorsHeader(header, size, path);
        expect(file.tensors.size).toBeGreaterThan(0);
        const whole = parseSafetensors(readFileSync(path), path);
        expect(file).toEqual(whole);
      } finally {
        closeSync(fd);
      }
    }
  });

  it("the profile fixtures parse as safetensors with their influence tensors", () => {
    const file = parseSafetensors(readFileSync(fixture("moa-tiny.profile.safetensors")), "moa-tiny.profile");
    expect(file.tensors.get("influence.8192")).toMatchObject({ dtype: "F32", shape: [6, 6, 128, 128] });
  });
});

describe("safetensors validation errors name the file, the field and the value", () => {
  const src = "broken.safetensors";
  const good = serializeSafetensors([
    { name: "a", dtype: "F32", shape: [2, 2], data: new Uint8Array(16) },
    { name: "b", dtype: "U8", shape: [3], data: new Uint8Array(3) },
  ]);

  it("file shorter than 8 bytes", () => {
    expectMoaError(
      () => parseSafetensors(new Uint8Array(5), src),
      "E_SAFETENSORS",
      src,
      "file size = 5",
      "at least 8 bytes",
    );
  });

  it("truncated file: header length beyond the file", () => {
    expectMoaError(
      () => parseSafetensors(good.subarray(0, 20), src),
      "E_SAFETENSORS",
      src,
      "header length =",
      "beyond the end of the file (20 bytes)",
    );
  });

  it("absurd header length", () => {
    const bytes = new Uint8Array(16);
    new DataView(bytes.buffer).setBigUint64(0, 2n ** 40n, true);
    expectMoaError(
      () => parseSafetensors(bytes, src),
      "E_SAFETENSORS",
      src,
      `header length = ${2n ** 40n}n`,
      "exceeds 100000000",
    );
  });

  it("truncated data: a tensor ends beyond the data section", () => {
    const e = expectMoaError(
      () => parseSafetensors(good.subarray(0, good.length - 1), src),
      "E_SAFETENSORS",
      src,
      "b.data_offsets = [16,19]",
      "beyond the data section (18 bytes)",
    );
    expect(e.source).toBe(src);
    expect(e.field).toBe("b.data_offsets");
  });

  it("header not JSON, or not an object", () => {
    expectMoaError(
      () => parseSafetensors(fileWithHeader("{not json", 0), src),
      "E_SAFETENSORS",
      src,
      'header = "{not json"',
      "not valid UTF-8 JSON",
    );
    expectMoaError(
      () => parseSafetensors(fileWithHeader([1, 2], 0), src),
      "E_SAFETENSORS",
      src,
      "header = [1,2]",
      "must be a JSON object",
    );
  });

  it("unknown dtype", () => {
    const bytes = fileWithHeader({ w: { dtype: "F33", shape: [1], data_offsets: [0, 4] } }, 4);
    expectMoaError(
      () => parseSafetensors(bytes, src),
      "E_SAFETENSORS",
      src,
      'w.dtype = "F33"',
      "unknown dtype",
    );
  });

  it("shape not an array of non-negative integers", () => {
    for (const shape of [[-1], [1.5], "3", [null]]) {
      const bytes = fileWithHeader({ w: { dtype: "U8", shape, data_offsets: [0, 0] } }, 4);
      expectMoaError(
        () => parseSafetensors(bytes, src),
        "E_SAFETENSORS",
        src,
        `w.shape = ${JSON.stringify(shape)}`,
        "non-negative integers",
      );
    }
  });

  it("data_offsets not [begin, end] in order", () => {
    for (const offsets of [[4, 0], [0], [0, "4"], [-1, 3]]) {
      const bytes = fileWithHeader({ w: { dtype: "U8", shape: [4], data_offsets: offsets } }, 4);
      expectMoaError(
        () => parseSafetensors(bytes, src),
        "E_SAFETENSORS",
        src,
        `w.data_offsets = ${JSON.stringify(offsets)}`,
        "[begin, end]",
      );
    }
  });

  it("size differs from product(shape) · element size", () => {
    const bytes = fileWithHeader({ w: { dtype: "F16", shape: [2, 3], data_offsets: [0, 8] } }, 12);
    expectMoaError(
      () => parseSafetensors(bytes, src),
      "E_SAFETENSORS",
      src,
      "w.data_offsets = [0,8]",
      "spans 8 bytes but shape [2,3] of F16 needs 12",
    );
  });

  it("overlapping tensors", () => {
    const bytes = fileWithHeader(
      {
        a: { dtype: "F32", shape: [4], data_offsets: [0, 16] },
        b: { dtype: "U8", shape: [0], data_offsets: [8, 8] },
        c: { dtype: "F32", shape: [2], data_offsets: [12, 20] },
      },
      20,
    );
    expectMoaError(
      () => parseSafetensors(bytes, src),
      "E_SAFETENSORS",
      src,
      "c.data_offsets = [12,20]",
      'overlaps tensor "a" at [0, 16]',
    );
  });

  it("metadata values must be strings", () => {
    const bytes = fileWithHeader({ __metadata__: { version: 1 } }, 0);
    expectMoaError(
      () => parseSafetensors(bytes, src),
      "E_SAFETENSORS",
      src,
      "__metadata__.version = 1",
      "must be a string",
    );
  });

  it("serializing data of the wrong size is an argument error", () => {
    expectMoaError(
      () => serializeSafetensors([{ name: "w", dtype: "F32", shape: [3], data: new Uint8Array(8) }]),
      "E_ARGUMENT",
      'w.data = "8 bytes"',
      "shape needs 12 bytes",
    );
  });
});
