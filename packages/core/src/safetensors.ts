/**
 * Reader and writer for the safetensors container (Hugging Face): an 8-byte
 * little-endian header length `N`, `N` bytes of JSON header, then the tensor data.
 * Profiles are safetensors files (DESIGN.md: Profile file) and so are checkpoints.
 */
import { fail } from "./errors.js";
import { setOwn } from "./own.js";

/** Bytes per element of each safetensors dtype. */
export const DTYPE_SIZES = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  I64: 8,
  U64: 8,
  F64: 8,
} as const;

export type SafetensorsDtype = keyof typeof DTYPE_SIZES;

/** One tensor of a safetensors file; `begin`/`end` are absolute byte offsets into the file. */
export interface TensorEntry {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  begin: number;
  end: number;
}

export interface SafetensorsFile {
  /** `__metadata__` (string values only, as the format requires); `{}` when absent. */
  metadata: Record<string, string>;
  /** Tensors in header order. */
  tensors: Map<string, TensorEntry>;
  /** Absolute offset of the data section: `8 + N`. */
  dataStart: number;
}

/** A tensor to write. `data` must hold exactly `product(shape) · elementSize` bytes. */
export interface TensorToWrite {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  data: Uint8Array;
}

/** Headers above this are rejected as corrupt (Hugging Face uses the same bound). */
export const MAX_HEADER_BYTES = 100_000_000;

const E = "E_SAFETENSORS";

function isDtype(value: unknown): value is SafetensorsDtype {
  return typeof value === "string" && Object.hasOwn(DTYPE_SIZES, value);
}

/**
 * Validates the first 8 bytes of a safetensors file of `fileSize` bytes and returns the
 * header length `N`. A streaming reader reads these 8 bytes, then `N` bytes, then calls
 * {@link parseSafetensorsHeader}.
 */
export function safetensorsHeaderLength(prefix: Uint8Array, fileSize: number, source: string): number {
  if (prefix.length < 8 || fileSize < 8) {
    fail(E, source, "file size", Math.min(prefix.length, fileSize), "a safetensors file is at least 8 bytes");
  }
  const view = new DataView(prefix.buffer, prefix.byteOffset, 8);
  const length = view.getBigUint64(0, true);
  if (length > BigInt(MAX_HEADER_BYTES)) {
    fail(E, source, "header length", length, `exceeds ${MAX_HEADER_BYTES} bytes: not a safetensors file`);
  }
  const n = Number(length);
  if (8 + n > fileSize) {
    fail(E, source, "header length", n, `extends beyond the end of the file (${fileSize} bytes)`);
  }
  return n;
}

/**
 * Parses and validates a safetensors JSON header (the `N` bytes after the 8-byte length)
 * of a file of `fileSize` bytes, without needing the tensor data.
 */
export function parseSafetensorsHeader(
  headerBytes: Uint8Array,
  fileSize: number,
  source: string,
): SafetensorsFile {
  const dataStart = 8 + headerBytes.length;
  if (dataStart > fileSize) {
    fail(
      E,
      source,
      "header length",
      headerBytes.length,
      `extends beyond the end of the file (${fileSize} bytes)`,
    );
  }
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(headerBytes));
  } catch (error) {
    const preview = new TextDecoder().decode(headerBytes.subarray(0, 40));
    fail(E, source, "header", preview, `is not valid UTF-8 JSON (${(error as Error).message})`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    fail(E, source, "header", header, "must be a JSON object");
  }
  const dataSize = fileSize - dataStart;
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorEntry>();
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
        fail(E, source, "__metadata__", raw, "must be an object of strings");
      }
      for (const [key, value] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof value !== "string") fail(E, source, `__metadata__.${key}`, value, "must be a string");
        setOwn(metadata, key, value);
      }
      continue;
    }
    tensors.set(name, parseTensorEntry(name, raw, dataStart, dataSize, source));
  }
  // Overlap check: in order of begin, each non-empty tensor must start at or after the
  // furthest end seen so far (empty tensors occupy no bytes and cannot overlap).
  const sorted = [...tensors.values()].filter((t) => t.end > t.begin).sort((a, b) => a.begin - b.begin);
  let furthest: TensorEntry | undefined;
  for (const cur of sorted) {
    if (furthest !== undefined && cur.begin < furthest.end) {
      fail(
        E,
        source,
        `${cur.name}.data_offsets`,
        [cur.begin - dataStart, cur.end - dataStart],
        `overlaps tensor ${JSON.stringify(furthest.name)} at [${furthest.begin - dataStart}, ${furthest.end - dataStart}]`,
      );
    }
    if (furthest === undefined || cur.end > furthest.end) furthest = cur;
  }
  return { metadata, tensors, dataStart };
}

function parseTensorEntry(
  name: string,
  raw: unknown,
  dataStart: number,
  dataSize: number,
  source: string,
): TensorEntry {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    fail(E, source, name, raw, "must be an object with dtype, shape and data_offsets");
  }
  const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
  if (!isDtype(dtype)) {
    fail(
      E,
      source,
      `${name}.dtype`,
      dtype,
      `unknown dtype (expected one of ${Object.keys(DTYPE_SIZES).join(", ")})`,
    );
  }
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    fail(E, source, `${name}.shape`, shape, "must be an array of non-negative integers");
  }
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) ||
    offsets[0] > offsets[1]
  ) {
    fail(E, source, `${name}.data_offsets`, offsets, "must be [begin, end] with 0 <= begin <= end");
  }
  const [begin, end] = offsets as [number, number];
  if (end > dataSize) {
    fail(E, source, `${name}.data_offsets`, offsets, `ends beyond the data section (${dataSize} bytes)`);
  }
  const elements = (shape as number[]).reduce((a, d) => a * d, 1);
  const expected = elements * DTYPE_SIZES[dtype];
  if (end - begin !== expected) {
    fail(
      E,
      source,
      `${name}.data_offsets`,
      offsets,
      `spans ${end - begin} bytes but shape ${JSON.stringify(shape)} of ${dtype} needs ${expected}`,
    );
  }
  return { name, dtype, shape: [...(shape as number[])], begin: dataStart + begin, end: dataStart + end };
}

/** Parses and validates a whole safetensors file held in memory. */
export function parseSafetensors(bytes: Uint8Array, source: string): SafetensorsFile {
  const n = safetensorsHeaderLength(bytes, bytes.length, source);
  return parseSafetensorsHeader(bytes.subarray(8, 8 + n), bytes.length, source);
}

/** The raw bytes of a tensor (a view into `bytes`, no copy). */
export function tensorBytes(bytes: Uint8Array, entry: TensorEntry): Uint8Array {
  return bytes.subarray(entry.begin, entry.end);
}

/**
 * A float32 tensor's values as a fresh Float32Array (copied, so the result is aligned
 * whatever the tensor's offset). Assumes a little-endian host, as every Node target is.
 */
export function readFloat32Tensor(bytes: Uint8Array, entry: TensorEntry, source: string): Float32Array {
  if (entry.dtype !== "F32") fail(E, source, `${entry.name}.dtype`, entry.dtype, "expected F32");
  // An explicit copy: Buffer#slice would return an (often unaligned) view, not a copy.
  const copy = new Uint8Array(entry.end - entry.begin);
  copy.set(bytes.subarray(entry.begin, entry.end));
  return new Float32Array(copy.buffer);
}

/**
 * Writes a safetensors file: header with `__metadata__` first, then tensors in the
 * given order with contiguous data; the header is padded with spaces to a multiple of
 * 8 bytes, as Hugging Face's writer does, so the data section starts 8-byte aligned.
 */
export function serializeSafetensors(
  tensors: TensorToWrite[],
  metadata?: Record<string, string>,
): Uint8Array {
  const where = "serializeSafetensors";
  const header: Record<string, unknown> = {};
  if (metadata !== undefined && Object.keys(metadata).length > 0) {
    for (const [key, value] of Object.entries(metadata)) {
      if (typeof value !== "string") fail("E_ARGUMENT", where, `metadata.${key}`, value, "must be a string");
    }
    const copy: Record<string, string> = {};
    for (const [key, value] of Object.entries(metadata)) setOwn(copy, key, value);
    header.__metadata__ = copy;
  }
  let offset = 0;
  for (const t of tensors) {
    if (t.name === "__metadata__" || Object.hasOwn(header, t.name)) {
      fail("E_ARGUMENT", where, "name", t.name, "tensor names must be unique and not __metadata__");
    }
    if (!isDtype(t.dtype)) fail("E_ARGUMENT", where, `${t.name}.dtype`, t.dtype, "unknown dtype");
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      fail("E_ARGUMENT", where, `${t.name}.shape`, t.shape, "must be non-negative integers");
    }
    const expected = t.shape.reduce((a, d) => a * d, 1) * DTYPE_SIZES[t.dtype];
    if (t.data.byteLength !== expected) {
      fail(
        "E_ARGUMENT",
        where,
        `${t.name}.data`,
        `${t.data.byteLength} bytes`,
        `shape needs ${expected} bytes`,
      );
    }
    setOwn(header, t.name, { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + expected] });
    offset += expected;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded !== json.length) {
    const withPad = new Uint8Array(padded).fill(0x20);
    withPad.set(json);
    json = withPad;
  }
  const out = new Uint8Array(8 + json.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  let at = 8 + json.length;
  for (const t of tensors) {
    out.set(t.data, at);
    at += t.data.byteLength;
  }
  return out;
}
