import { mkdtempSync, readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DTYPE_SIZES, MoaError, serializeSafetensors } from "@moa/core";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  openCheckpoint,
  readCheckpoint,
  readSafetensors,
  readSafetensorsData,
  readSafetensorsHeader,
  tensorElements,
} from "../src/safetensors-reader.js";
import { fixtureDir } from "./fixtures.js";

const scratch = mkdtempSync(join(tmpdir(), "moa-safetensors-"));
let counter = 0;
function writeTemp(bytes: Uint8Array, name = `f${counter++}.safetensors`): string {
  const path = join(scratch, name);
  writeFileSync(path, bytes);
  return path;
}

/** A file with the given JSON header (as text) and `dataBytes` zero bytes of data. */
function rawFile(header: string, dataBytes: number, declaredLength?: number): Uint8Array {
  const json = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + json.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(declaredLength ?? json.length), true);
  out.set(json, 8);
  return out;
}

async function rejection(promise: Promise<unknown>): Promise<MoaError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(MoaError);
    return error as MoaError;
  }
  throw new Error("expected a rejection");
}

describe("readSafetensors", () => {
  it("reads every tensor of moa-nano as views into one buffer holding exactly the data section", async () => {
    const file = join(fixtureDir("moa-nano"), "model.safetensors");
    const contents = await readSafetensors(file);
    const bytes = readFileSync(file);
    const headerLength = Number(bytes.readBigUInt64LE(0));
    const buffers = new Set([...contents.tensors.values()].map((t) => t.bytes.buffer));
    expect(buffers.size).toBe(1);
    expect([...buffers][0]!.byteLength).toBe(bytes.length - 8 - headerLength);
    const embed = contents.tensors.get("model.embed_tokens.weight")!;
    expect(embed.dtype).toBe("BF16");
    expect(embed.shape).toEqual([4096, 256]);
    // Same bytes as in the file at the header's offsets.
    const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString("utf8"));
    const [begin, end] = header["model.embed_tokens.weight"].data_offsets as [number, number];
    expect(
      Buffer.from(embed.bytes).equals(bytes.subarray(8 + headerLength + begin, 8 + headerLength + end)),
    ).toBe(true);
  });

  it("gives bf16/f16 as raw Uint16 bits and f32 as Float32Array, views when aligned", async () => {
    const f32 = new Float32Array([1.5, -2.25, 3e-8]);
    const bf16 = new Uint16Array([0x3f80, 0xc000, 0x7f80]);
    const f16 = new Uint16Array([0x3c00, 0xc000, 0x0001]);
    const file = writeTemp(
      serializeSafetensors([
        { name: "b", dtype: "F32", shape: [3], data: new Uint8Array(f32.buffer) },
        { name: "a", dtype: "BF16", shape: [3], data: new Uint8Array(bf16.buffer) },
        { name: "c", dtype: "F16", shape: [1, 3], data: new Uint8Array(f16.buffer) },
      ]),
    );
    const { tensors } = await readSafetensors(file);
    const a = tensorElements(tensors.get("a")!);
    const b = tensorElements(tensors.get("b")!);
    const c = tensorElements(tensors.get("c")!);
    expect(a).toBeInstanceOf(Uint16Array);
    expect(Array.from(a)).toEqual(Array.from(bf16));
    expect(b).toBeInstanceOf(Float32Array);
    expect(Array.from(b)).toEqual(Array.from(f32));
    expect(b.buffer).toBe(tensors.get("b")!.bytes.buffer);
    expect(Array.from(c)).toEqual(Array.from(f16));
  });

  it("copies a tensor whose offset is not aligned to its element size instead of failing", async () => {
    const f32 = new Float32Array([7, 8]);
    const data = new Uint8Array(10);
    data.set(new Uint8Array(f32.buffer), 2);
    const header = JSON.stringify({
      pad: { dtype: "U8", shape: [2], data_offsets: [0, 2] },
      x: { dtype: "F32", shape: [2], data_offsets: [2, 10] },
    });
    const padded = header + " ".repeat((8 - (header.length % 8)) % 8);
    const bytes = rawFile(padded, 10);
    bytes.set(data, 8 + padded.length);
    const { tensors } = await readSafetensors(writeTemp(bytes));
    expect(Array.from(tensorElements(tensors.get("x")!))).toEqual([7, 8]);
  });

  it("rejects a header length beyond the file, naming the file and the field", async () => {
    const file = writeTemp(rawFile("{}", 0, 1000));
    const error = await rejection(readSafetensors(file));
    expect(error.message).toContain(file);
    expect(error.field).toBe("header length");
  });

  it("rejects a file shorter than the 8-byte length prefix", async () => {
    const file = writeTemp(new Uint8Array(3));
    const error = await rejection(readSafetensors(file));
    expect(error.message).toContain(file);
  });

  it("rejects data offsets outside the data section", async () => {
    const file = writeTemp(
      rawFile(JSON.stringify({ w: { dtype: "F32", shape: [4], data_offsets: [0, 16] } }), 8),
    );
    const error = await rejection(readSafetensors(file));
    expect(error.message).toContain(file);
    expect(error.field).toBe("w.data_offsets");
  });

  it("rejects overlapping tensors", async () => {
    const header = JSON.stringify({
      a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
      b: { dtype: "F32", shape: [2], data_offsets: [4, 12] },
    });
    const error = await rejection(readSafetensors(writeTemp(rawFile(header, 12))));
    expect(error.field).toBe("b.data_offsets");
    expect(error.message).toMatch(/overlaps/);
  });

  it("rejects an unknown dtype", async () => {
    const header = JSON.stringify({ w: { dtype: "Q4_K", shape: [2], data_offsets: [0, 1] } });
    const file = writeTemp(rawFile(header, 1));
    const error = await rejection(readSafetensors(file));
    expect(error.field).toBe("w.dtype");
    expect(error.message).toContain(file);
  });

  it("rejects a weight of a known but non-float dtype when its elements are asked for", async () => {
    const file = writeTemp(
      serializeSafetensors([{ name: "ids", dtype: "I64", shape: [1], data: new Uint8Array(8) }]),
    );
    const { tensors } = await readSafetensors(file);
    let caught: unknown;
    try {
      tensorElements(tensors.get("ids")!);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(MoaError);
    expect((caught as MoaError).field).toBe("ids.dtype");
    expect((caught as MoaError).message).toContain(file);
  });

  it("rejects a header that is not JSON", async () => {
    const error = await rejection(readSafetensors(writeTemp(rawFile("{not json", 0))));
    expect(error.field).toBe("header");
  });

  it("rejects a missing file with the path in the message", async () => {
    const file = join(scratch, "does-not-exist.safetensors");
    const error = await rejection(readSafetensors(file));
    expect(error.message).toContain(file);
  });

  it("never throws anything but MoaError on corrupted headers (fuzz)", async () => {
    const valid = serializeSafetensors([
      { name: "a", dtype: "BF16", shape: [2, 3], data: new Uint8Array(12) },
      { name: "b", dtype: "F32", shape: [4], data: new Uint8Array(16) },
    ]);
    const headerEnd = 8 + Number(new DataView(valid.buffer).getBigUint64(0, true));
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.nat(headerEnd - 1), fc.integer({ min: 0, max: 255 })), {
          minLength: 1,
          maxLength: 8,
        }),
        fc.nat(valid.length),
        async (edits, truncateAt) => {
          const bytes = valid.slice(0, Math.max(truncateAt, 1));
          for (const [at, value] of edits) if (at < bytes.length) bytes[at] = value;
          const file = writeTemp(bytes, "fuzz.safetensors");
          try {
            const { tensors } = await readSafetensors(file);
            for (const t of tensors.values()) {
              // Whatever was accepted is internally consistent.
              expect(t.bytes.byteLength).toBe(t.shape.reduce((a, d) => a * d, 1) * DTYPE_SIZES[t.dtype]);
            }
          } catch (error) {
            expect(error).toBeInstanceOf(MoaError);
            expect((error as MoaError).message).toContain(file);
          }
        },
      ),
      { numRuns: 300, seed: 20240611 },
    );
  });

  it("never throws anything but MoaError on random JSON headers (fuzz)", async () => {
    const entry = fc.record(
      {
        dtype: fc.oneof(fc.constantFrom("F32", "BF16", "F16", "I64", "U8", "F8_E4M3"), fc.string()),
        shape: fc.oneof(fc.array(fc.integer({ min: -2, max: 6 }), { maxLength: 3 }), fc.anything()),
        data_offsets: fc.oneof(
          fc.tuple(fc.integer({ min: -4, max: 80 }), fc.integer({ min: -4, max: 80 })),
          fc.anything(),
        ),
      },
      { requiredKeys: [] },
    );
    await fc.assert(
      fc.asyncProperty(
        fc.dictionary(fc.string({ maxLength: 6 }), entry, { maxKeys: 4 }),
        fc.nat(64),
        async (header, data) => {
          const file = writeTemp(rawFile(JSON.stringify(header), data), "fuzz-json.safetensors");
          try {
            await readSafetensors(file);
          } catch (error) {
            expect(error).toBeInstanceOf(MoaError);
            expect((error as MoaError).message).toContain(file);
          }
        },
      ),
      { numRuns: 300, seed: 7 },
    );
  });
});

describe("readCheckpoint", () => {
  it("reads the three shards of moa-tiny once each and finds every tensor the index names", async () => {
    const checkpoint = await readCheckpoint(fixtureDir("moa-tiny"));
    const index = JSON.parse(
      readFileSync(join(fixtureDir("moa-tiny"), "model.safetensors.index.json"), "utf8"),
    );
    expect(checkpoint.files).toHaveLength(3);
    expect(new Set(checkpoint.tensors.keys())).toEqual(new Set(Object.keys(index.weight_map)));
    const buffers = new Set([...checkpoint.tensors.values()].map((t) => t.bytes.buffer));
    expect(buffers.size).toBe(3);
    for (const [name, tensor] of checkpoint.tensors) {
      expect(tensor.file).toBe(join(fixtureDir("moa-tiny"), index.weight_map[name]));
    }
  });

  it("opens a checkpoint from its headers alone, then reads each file's data in one piece", async () => {
    const opened = await openCheckpoint(fixtureDir("moa-tiny"));
    expect(opened.files).toHaveLength(3);
    const embed = opened.tensors.get("model.embed_tokens.weight")!;
    expect(embed).not.toHaveProperty("bytes");
    const header = opened.files.find((h) => h.file === embed.file)!;
    const data = await readSafetensorsData(header);
    expect(data.byteOffset).toBe(0);
    expect(data.byteLength).toBe(header.size - header.dataStart);
  });

  it("refuses data whose file changed size since its header was read", async () => {
    const file = writeTemp(
      serializeSafetensors([{ name: "w", dtype: "F32", shape: [2], data: new Uint8Array(8) }]),
    );
    const header = await readSafetensorsHeader(file);
    writeFileSync(file, new Uint8Array(header.size + 8));
    const error = await rejection(readSafetensorsData(header));
    expect(error.message).toContain(file);
    expect(error.field).toBe("file size");
  });

  it("reads a single-file checkpoint", async () => {
    const checkpoint = await readCheckpoint(fixtureDir("random-qwen2"));
    expect(checkpoint.files).toEqual([join(fixtureDir("random-qwen2"), "model.safetensors")]);
    expect(checkpoint.tensors.get("model.layers.0.self_attn.q_proj.bias")?.shape).toEqual([64]);
  });

  function shardedCopy(mutate: (index: { weight_map: Record<string, string> }) => void): string {
    const dir = mkdtempSync(join(scratch, "sharded-"));
    const source = fixtureDir("moa-tiny");
    const index = JSON.parse(readFileSync(join(source, "model.safetensors.index.json"), "utf8"));
    for (const shard of new Set(Object.values(index.weight_map) as string[])) {
      writeFileSync(join(dir, shard), readFileSync(join(source, shard)));
    }
    mutate(index);
    writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify(index));
    return dir;
  }

  it("rejects an index that names a tensor its shard lacks", async () => {
    const dir = shardedCopy((index) => {
      index.weight_map["model.layers.9.mlp.up_proj.weight"] = "model-00001-of-00003.safetensors";
    });
    const error = await rejection(readCheckpoint(dir));
    expect(error.source).toBe(join(dir, "model.safetensors.index.json"));
    expect(error.field).toBe("weight_map.model.layers.9.mlp.up_proj.weight");
  });

  it("rejects an index that names a missing shard", async () => {
    const dir = shardedCopy((index) => {
      index.weight_map["lm_head.weight"] = "model-00004-of-00003.safetensors";
    });
    const error = await rejection(readCheckpoint(dir));
    expect(error.field).toBe("weight_map.lm_head.weight");
    expect(error.message).toMatch(/does not exist/);
  });

  it("rejects shard paths that leave the checkpoint directory", async () => {
    const dir = shardedCopy((index) => {
      index.weight_map["lm_head.weight"] = "../model-00003-of-00003.safetensors";
    });
    const error = await rejection(readCheckpoint(dir));
    expect(error.field).toBe("weight_map.lm_head.weight");
  });

  it("rejects an index without weight_map", async () => {
    const dir = mkdtempSync(join(scratch, "noindex-"));
    writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: {} }));
    const error = await rejection(readCheckpoint(dir));
    expect(error.field).toBe("weight_map");
  });

  it("rejects a directory without safetensors files", async () => {
    const dir = mkdtempSync(join(scratch, "empty-"));
    mkdirSync(join(dir, "sub"));
    const error = await rejection(readCheckpoint(dir));
    expect(error.message).toContain(dir);
    expect(error.message).toMatch(/model\.safetensors/);
  });
});
