import { kMaxLength } from "node:buffer";
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DTYPE_SIZES, MoaError, serializeSafetensors } from "@moa/core";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type CheckpointTensor,
  DEFAULT_CHUNK_BYTES,
  openCheckpoint,
  planDataChunks,
  readCheckpoint,
  readSafetensors,
  readSafetensorsData,
  readSafetensorsHeader,
  type SafetensorsHeader,
  type TensorInfo,
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

/** Name, dtype, shape, offsets and bytes of every tensor, for comparing two reads of the same file. */
function snapshot(tensors: ReadonlyMap<string, CheckpointTensor>) {
  return [...tensors.values()].map((t) => ({
    name: t.name,
    dtype: t.dtype,
    shape: t.shape,
    file: t.file,
    begin: t.begin,
    end: t.end,
    bytes: Buffer.from(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength).toString("base64"),
  }));
}

/** A header for a file that does not exist: a data section of the given tensors laid out back to back. */
function virtualHeader(tensors: ReadonlyArray<readonly [string, number]>): SafetensorsHeader {
  const dataStart = 8 + 4096;
  const infos = new Map<string, TensorInfo>();
  let at = dataStart;
  for (const [name, bytes] of tensors) {
    infos.set(name, {
      name,
      dtype: "BF16",
      shape: [bytes / 2],
      file: "virtual.safetensors",
      begin: at,
      end: at + bytes,
    });
    at += bytes;
  }
  return { file: "virtual.safetensors", size: at, dataStart, metadata: {}, tensors: infos };
}

describe("reading the data section in chunks", () => {
  const nano = join(fixtureDir("moa-nano"), "model.safetensors");

  it("gives exactly the tensors of a single read when the data section is read in many chunks", async () => {
    const single = await readSafetensors(nano);
    const chunkBytes = 1 << 20; // 1 MiB: moa-nano's 8 MiB data section takes several chunks
    const chunked = await readSafetensors(nano, { chunkBytes });
    expect(snapshot(chunked.tensors)).toEqual(snapshot(single.tensors));
    expect(chunked.metadata).toEqual(single.metadata);
    const buffers = new Map<ArrayBufferLike, CheckpointTensor[]>();
    for (const t of chunked.tensors.values())
      buffers.set(t.bytes.buffer, [...(buffers.get(t.bytes.buffer) ?? []), t]);
    expect(buffers.size).toBeGreaterThan(2);
    for (const [buffer, members] of buffers) {
      // Every buffer stays within the limit unless it holds one tensor larger than the limit.
      if (members.length > 1) expect(buffer.byteLength).toBeLessThanOrEqual(chunkBytes);
    }
    // Together the buffers hold the data section once (moa-nano has no gaps, so nothing more).
    const header = await readSafetensorsHeader(nano);
    const total = [...buffers.keys()].reduce((sum, b) => sum + b.byteLength, 0);
    expect(total).toBe(header.size - header.dataStart);
  });

  it("reads a tensor larger than the chunk limit alone, into a buffer of its own size", async () => {
    const chunkBytes = 1 << 20;
    const { tensors } = await readSafetensors(nano, { chunkBytes });
    const embed = tensors.get("model.embed_tokens.weight")!;
    expect(embed.bytes.byteLength).toBe(4096 * 256 * 2);
    expect(embed.bytes.byteLength).toBeGreaterThan(chunkBytes);
    expect(embed.bytes.buffer.byteLength).toBe(embed.bytes.byteLength);
    const sharing = [...tensors.values()].filter((t) => t !== embed && t.bytes.buffer === embed.bytes.buffer);
    expect(sharing).toEqual([]);
    const file = readFileSync(nano);
    expect(Buffer.from(embed.bytes).equals(file.subarray(embed.begin, embed.end))).toBe(true);
  });

  it("gives a sharded checkpoint the same tensors whatever the chunk size", async () => {
    const whole = await readCheckpoint(fixtureDir("moa-tiny"));
    const chunked = await readCheckpoint(fixtureDir("moa-tiny"), { chunkBytes: 300_000 });
    expect(snapshot(chunked.tensors)).toEqual(snapshot(whole.tensors));
    const buffers = new Set([...chunked.tensors.values()].map((t) => t.bytes.buffer));
    expect(buffers.size).toBeGreaterThan(3);
  });

  it("keeps each tensor's alignment from the data section when a chunk starts at an unaligned tensor", async () => {
    // a: 18 bytes; b: bf16 at offset 18 (2 mod 8); x: f32 at offset 24. With a 16-byte limit, a is read alone
    // and b + x together; x must still be a 4-aligned view, not a copy.
    const header = JSON.stringify({
      a: { dtype: "U8", shape: [18], data_offsets: [0, 18] },
      b: { dtype: "BF16", shape: [3], data_offsets: [18, 24] },
      x: { dtype: "F32", shape: [2], data_offsets: [24, 32] },
    });
    const padded = header + " ".repeat((8 - (header.length % 8)) % 8);
    const bytes = rawFile(padded, 32);
    const data = new Uint8Array(32);
    data.set(new Uint8Array(new Uint16Array([0x3f80, 0x4000, 0x4040]).buffer), 18);
    data.set(new Uint8Array(new Float32Array([7, -8]).buffer), 24);
    bytes.set(data, 8 + padded.length);
    const file = writeTemp(bytes);
    const parsed = await readSafetensorsHeader(file);
    expect(
      planDataChunks(parsed, 16).map((c) => [c.begin - parsed.dataStart, c.end - parsed.dataStart, c.pad]),
    ).toEqual([
      [0, 18, 0],
      [18, 32, 2],
    ]);
    const { tensors } = await readSafetensors(file, { chunkBytes: 16 });
    const x = tensors.get("x")!;
    expect(x.bytes.buffer).toBe(tensors.get("b")!.bytes.buffer);
    expect(x.bytes.buffer).not.toBe(tensors.get("a")!.bytes.buffer);
    const elements = tensorElements(x);
    expect(elements.buffer).toBe(x.bytes.buffer);
    expect(Array.from(elements)).toEqual([7, -8]);
    expect(Array.from(tensorElements(tensors.get("b")!))).toEqual([0x3f80, 0x4000, 0x4040]);
  });

  it("splits a 5 GB Llama-3-8B shard into chunks that each fit one buffer, covering every byte once", () => {
    // The first shard of Meta-Llama-3-8B: embeddings and layers 0–8, bf16 (about 4.98 GB: more than a
    // Node 20 typed array can hold in one piece).
    const d = 4096;
    const kv = 1024;
    const ff = 14336;
    const list: Array<[string, number]> = [["model.embed_tokens.weight", 128256 * d * 2]];
    for (let l = 0; l < 9; l++) {
      const p = `model.layers.${l}.`;
      list.push(
        [`${p}input_layernorm.weight`, d * 2],
        [`${p}self_attn.q_proj.weight`, d * d * 2],
        [`${p}self_attn.k_proj.weight`, kv * d * 2],
        [`${p}self_attn.v_proj.weight`, kv * d * 2],
        [`${p}self_attn.o_proj.weight`, d * d * 2],
        [`${p}post_attention_layernorm.weight`, d * 2],
        [`${p}mlp.gate_proj.weight`, ff * d * 2],
        [`${p}mlp.up_proj.weight`, ff * d * 2],
        [`${p}mlp.down_proj.weight`, d * ff * 2],
      );
    }
    const header = virtualHeader(list);
    expect(header.size - header.dataStart).toBeGreaterThan(kMaxLength);
    const chunks = planDataChunks(header);
    expect(chunks.length).toBeGreaterThan(1);
    expect(chunks[0]!.begin).toBe(header.dataStart);
    expect(chunks.at(-1)!.end).toBe(header.size);
    for (let i = 0; i < chunks.length; i++) {
      const c = chunks[i]!;
      expect(c.pad + c.end - c.begin).toBeLessThanOrEqual(DEFAULT_CHUNK_BYTES);
      if (i > 0) expect(c.begin).toBe(chunks[i - 1]!.end);
    }
    for (const t of header.tensors.values()) {
      expect(chunks.filter((c) => c.begin <= t.begin && t.end <= c.end)).toHaveLength(1);
    }
  });

  it("rejects a single tensor larger than the largest buffer Node can allocate, naming it", () => {
    const header = virtualHeader([
      ["small", 16],
      ["huge", kMaxLength + 16],
    ]);
    let caught: unknown;
    try {
      planDataChunks(header);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(MoaError);
    expect((caught as MoaError).field).toBe("huge.data_offsets");
    expect((caught as MoaError).message).toContain("virtual.safetensors");
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

  it("opens a checkpoint from its headers alone, then reads a small file's data section in one piece", async () => {
    const opened = await openCheckpoint(fixtureDir("moa-tiny"));
    expect(opened.files).toHaveLength(3);
    const embed = opened.tensors.get("model.embed_tokens.weight")!;
    expect(embed).not.toHaveProperty("bytes");
    const header = opened.files.find((h) => h.file === embed.file)!;
    const data = await readSafetensorsData(header);
    expect(data.chunks).toHaveLength(1);
    const [chunk] = data.chunks;
    expect(chunk!.bytes.byteOffset).toBe(0);
    expect(chunk!.begin).toBe(header.dataStart);
    expect(chunk!.end).toBe(header.size);
    expect(chunk!.bytes.byteLength).toBe(header.size - header.dataStart);
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
