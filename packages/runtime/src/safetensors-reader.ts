/**
 * Reads Hugging Face checkpoints: one `model.safetensors`, or shards listed by `model.safetensors.index.json`.
 * Each file is read once: 8 bytes for the header length, the JSON header, then the data section in chunks of
 * consecutive tensors (at most {@link DEFAULT_CHUNK_BYTES} each unless one tensor is larger, one read and one
 * ArrayBuffer per chunk), because one buffer cannot hold a multi-GB shard (Node 20's typed arrays stop at
 * 4 GiB). Tensors are views into their chunk (no second copy through the JS heap); the backend copies them
 * into its own storage when the weights are uploaded.
 */
import { kMaxLength } from "node:buffer";
import { type FileHandle, open, readFile, stat } from "node:fs/promises";
import { isAbsolute, join, normalize } from "node:path";
import {
  DTYPE_SIZES,
  MoaError,
  parseSafetensorsHeader,
  type SafetensorsDtype,
  safetensorsHeaderLength,
} from "@moa/core";

export const E_CHECKPOINT = "E_CHECKPOINT";

/** Where a tensor lives: its file and absolute byte range there, from the file's header. */
export interface TensorInfo {
  readonly name: string;
  readonly dtype: SafetensorsDtype;
  readonly shape: readonly number[];
  /** The file it is in (as passed to the reader), for error messages. */
  readonly file: string;
  /** Absolute byte offsets in the file. */
  readonly begin: number;
  readonly end: number;
}

/** One tensor with its bytes: a view into the data section of the file it came from. */
export interface CheckpointTensor extends TensorInfo {
  /** Exactly the tensor's bytes. */
  readonly bytes: Uint8Array;
}

/** A validated safetensors header (read with two small reads; no tensor data). */
export interface SafetensorsHeader {
  readonly file: string;
  /** File size when the header was read. */
  readonly size: number;
  /** Absolute offset of the data section. */
  readonly dataStart: number;
  /** `__metadata__` (`{}` when absent). */
  readonly metadata: Readonly<Record<string, string>>;
  readonly tensors: ReadonlyMap<string, TensorInfo>;
}

export interface SafetensorsContents {
  readonly file: string;
  readonly metadata: Readonly<Record<string, string>>;
  readonly tensors: ReadonlyMap<string, CheckpointTensor>;
}

/** The headers of a checkpoint's files: enough to validate it against its config before reading data. */
export interface CheckpointIndex {
  readonly dir: string;
  /** One header per safetensors file, in the order they are read. */
  readonly files: readonly SafetensorsHeader[];
  /** The index file for sharded checkpoints. */
  readonly index?: string;
  /** Every tensor, from the file the index (or the single file) assigns it. */
  readonly tensors: ReadonlyMap<string, TensorInfo>;
}

export interface Checkpoint {
  readonly dir: string;
  readonly files: readonly string[];
  readonly index?: string;
  readonly tensors: ReadonlyMap<string, CheckpointTensor>;
}

/** Tensor element types the runtime computes with. */
export type FloatDtype = "bf16" | "f16" | "f32";

const FLOAT_DTYPES: Partial<Record<SafetensorsDtype, FloatDtype>> = { BF16: "bf16", F16: "f16", F32: "f32" };

/** The runtime dtype of a safetensors dtype, or undefined for types that are not bf16/f16/f32. */
export function floatDtype(dtype: SafetensorsDtype): FloatDtype | undefined {
  return FLOAT_DTYPES[dtype];
}

/** Throws, naming the file and tensor, unless the tensor is bf16, f16 or f32. */
export function checkFloatDtype(tensor: TensorInfo): FloatDtype {
  const dtype = floatDtype(tensor.dtype);
  if (dtype === undefined) {
    throw new MoaError(
      E_CHECKPOINT,
      `${tensor.file}: ${tensor.name}.dtype = ${JSON.stringify(tensor.dtype)}: weights must be BF16, F16 or F32`,
      { source: tensor.file, field: `${tensor.name}.dtype` },
    );
  }
  return dtype;
}

/**
 * The tensor's elements as a typed array: Uint16Array of raw bits for bf16/f16, Float32Array for f32.
 * A view when the tensor's offset is aligned to its element size (always, for files written by Hugging Face);
 * an aligned copy otherwise. Other dtypes are rejected with the file and tensor named.
 */
export function tensorElements(tensor: CheckpointTensor): Uint16Array | Float32Array {
  checkFloatDtype(tensor);
  const dtype = floatDtype(tensor.dtype)!;
  const size = DTYPE_SIZES[tensor.dtype];
  let bytes = tensor.bytes;
  if (bytes.byteOffset % size !== 0) bytes = bytes.slice();
  const length = bytes.byteLength / size;
  return dtype === "f32"
    ? new Float32Array(bytes.buffer, bytes.byteOffset, length)
    : new Uint16Array(bytes.buffer, bytes.byteOffset, length);
}

/** Reads `length` bytes at `position` into `target`, looping over short reads; fails if the file ends early. */
async function readExactly(
  handle: FileHandle,
  target: Uint8Array,
  position: number,
  file: string,
  field: string,
): Promise<void> {
  const CHUNK = 1 << 30; // one read call is limited to 2 GiB
  let done = 0;
  while (done < target.byteLength) {
    const want = Math.min(CHUNK, target.byteLength - done);
    const { bytesRead } = await handle.read(target, done, want, position + done);
    if (bytesRead === 0) {
      throw new MoaError(
        E_CHECKPOINT,
        `${file}: ${field}: file ended after ${position + done} bytes (expected ${position + target.byteLength})`,
        { source: file, field },
      );
    }
    done += bytesRead;
  }
}

/** Wraps anything that is not already a MoaError (I/O errors) so callers see one error type naming the file. */
function asMoaError(error: unknown, file: string, field: string): MoaError {
  if (error instanceof MoaError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new MoaError(E_CHECKPOINT, `${file}: ${field}: ${message}`, { source: file, field });
}

/**
 * Reads and validates a safetensors header: 8 bytes of length, then the JSON, checked by @moa/core (length
 * within the file, known dtypes, offsets inside the data section and not overlapping, sizes matching shapes).
 */
export async function readSafetensorsHeader(file: string): Promise<SafetensorsHeader> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(file, "r");
    const { size } = await handle.stat();
    const prefix = new Uint8Array(8);
    if (size >= 8) await readExactly(handle, prefix, 0, file, "header length");
    const headerLength = safetensorsHeaderLength(prefix, size, file);
    const headerBytes = new Uint8Array(headerLength);
    await readExactly(handle, headerBytes, 8, file, "header");
    const parsed = parseSafetensorsHeader(headerBytes, size, file);
    const tensors = new Map<string, TensorInfo>();
    for (const [name, entry] of parsed.tensors) {
      tensors.set(name, {
        name,
        dtype: entry.dtype,
        shape: entry.shape,
        file,
        begin: entry.begin,
        end: entry.end,
      });
    }
    return { file, size, dataStart: parsed.dataStart, metadata: parsed.metadata, tensors };
  } catch (error) {
    throw asMoaError(error, file, "file");
  } finally {
    await handle?.close();
  }
}

/** Largest chunk of a data section read into one buffer, unless a single tensor is larger (1 GiB). */
export const DEFAULT_CHUNK_BYTES = 1 << 30;

/** How a data section is read. */
export interface ReadDataOptions {
  /**
   * Largest buffer (bytes) one chunk of consecutive tensors is read into; a tensor larger than this is read
   * alone into a buffer of its own size. Default {@link DEFAULT_CHUNK_BYTES}.
   */
  readonly chunkBytes?: number;
}

/** A byte range of a file's data section that is read in one read into one buffer. */
export interface DataChunkRange {
  /** Absolute offsets in the file: from the first tensor's begin to the last tensor's end. */
  readonly begin: number;
  readonly end: number;
  /**
   * Bytes left free at the start of the chunk's buffer, `(begin - dataStart) % 8`, so every tensor has the
   * same alignment in its buffer as in the data section (8-aligned in the file).
   */
  readonly pad: number;
}

/** One chunk of a data section as read: `bytes[i]` is the file's byte `begin + i`. */
export interface DataChunk extends DataChunkRange {
  /** A view at offset `pad` into a fresh ArrayBuffer holding only this chunk. */
  readonly bytes: Uint8Array;
}

/** A file's data section as read by {@link readSafetensorsData}: its tensors' bytes, in chunks. */
export interface SafetensorsData {
  readonly file: string;
  /** In file order; together they cover every non-empty tensor, each byte read once. */
  readonly chunks: readonly DataChunk[];
}

/**
 * Splits a file's data section into chunks of consecutive tensors (in file order, gaps between them included)
 * whose buffers (`pad` + bytes) hold at most `chunkBytes`; a tensor larger than that gets a chunk of its own.
 * Empty tensors need no bytes and start no chunk. Throws if one tensor is larger than the biggest buffer Node
 * can allocate.
 */
export function planDataChunks(
  header: SafetensorsHeader,
  chunkBytes = DEFAULT_CHUNK_BYTES,
): DataChunkRange[] {
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes < 1) {
    throw new RangeError(`chunkBytes = ${chunkBytes}: must be a positive integer`);
  }
  const sorted = [...header.tensors.values()]
    .filter((t) => t.end > t.begin)
    .sort((a, b) => a.begin - b.begin);
  const chunks: DataChunkRange[] = [];
  let current: { begin: number; end: number; pad: number } | undefined;
  for (const tensor of sorted) {
    if (current !== undefined && current.pad + (tensor.end - current.begin) <= chunkBytes) {
      current.end = Math.max(current.end, tensor.end);
      continue;
    }
    const pad = (tensor.begin - header.dataStart) % 8;
    if (pad + (tensor.end - tensor.begin) > kMaxLength) {
      throw new MoaError(
        E_CHECKPOINT,
        `${header.file}: ${tensor.name}: ${tensor.end - tensor.begin} bytes: larger than the largest buffer Node can allocate (${kMaxLength} bytes)`,
        { source: header.file, field: `${tensor.name}.data_offsets` },
      );
    }
    current = { begin: tensor.begin, end: tensor.end, pad };
    chunks.push(current);
  }
  return chunks;
}

/**
 * Reads a file's data section, chunk by chunk as {@link planDataChunks} splits it (one read and one fresh
 * buffer per chunk), after checking that the file still has the size its header was read with.
 */
export async function readSafetensorsData(
  header: SafetensorsHeader,
  options: ReadDataOptions = {},
): Promise<SafetensorsData> {
  const { file } = header;
  const plan = planDataChunks(header, options.chunkBytes);
  let handle: FileHandle | undefined;
  try {
    handle = await open(file, "r");
    const { size } = await handle.stat();
    if (size !== header.size) {
      throw new MoaError(
        E_CHECKPOINT,
        `${file}: file size = ${size}: changed since its header was read (${header.size} bytes)`,
        { source: file, field: "file size" },
      );
    }
    const chunks: DataChunk[] = [];
    for (const range of plan) {
      const bytes = new Uint8Array(range.pad + (range.end - range.begin)).subarray(range.pad);
      await readExactly(handle, bytes, range.begin, file, "data");
      chunks.push({ ...range, bytes });
    }
    return { file, chunks };
  } catch (error) {
    throw asMoaError(error, file, "data");
  } finally {
    await handle?.close();
  }
}

/** A tensor's bytes as a view into the chunk of its file's data (as returned by readSafetensorsData) holding it. */
export function tensorWithBytes(info: TensorInfo, data: SafetensorsData): CheckpointTensor {
  if (info.end === info.begin) return { ...info, bytes: new Uint8Array(0) };
  const chunk = data.chunks.find((c) => c.begin <= info.begin && info.end <= c.end);
  if (chunk === undefined || data.file !== info.file) {
    throw new Error(`${info.file}: ${info.name}: not in the data read from ${data.file}`);
  }
  return { ...info, bytes: chunk.bytes.subarray(info.begin - chunk.begin, info.end - chunk.begin) };
}

/** Reads one safetensors file: the header, then the data section in chunks; tensors are views into them. */
export async function readSafetensors(
  file: string,
  options: ReadDataOptions = {},
): Promise<SafetensorsContents> {
  const header = await readSafetensorsHeader(file);
  const data = await readSafetensorsData(header, options);
  const tensors = new Map<string, CheckpointTensor>();
  for (const [name, info] of header.tensors) tensors.set(name, tensorWithBytes(info, data));
  return { file, metadata: header.metadata, tensors };
}

async function exists(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

export const SINGLE_FILE = "model.safetensors";
export const INDEX_FILE = "model.safetensors.index.json";

/** Parses `model.safetensors.index.json`: tensor name → shard file name (relative to the checkpoint). */
export function parseShardIndex(json: unknown, source: string): Map<string, string> {
  const bad = (field: string, reason: string): never => {
    throw new MoaError(E_CHECKPOINT, `${source}: ${field}: ${reason}`, { source, field });
  };
  if (typeof json !== "object" || json === null || Array.isArray(json))
    bad("(root)", "must be a JSON object");
  const weightMap = (json as Record<string, unknown>).weight_map;
  if (typeof weightMap !== "object" || weightMap === null || Array.isArray(weightMap)) {
    bad("weight_map", "must be an object mapping tensor names to shard files");
  }
  const map = new Map<string, string>();
  for (const [name, shard] of Object.entries(weightMap as Record<string, unknown>)) {
    if (typeof shard !== "string" || shard.length === 0) {
      bad(`weight_map.${name}`, `must be a shard file name, got ${JSON.stringify(shard)}`);
    }
    const file = shard as string;
    if (isAbsolute(file) || normalize(file).split(/[\\/]/).includes("..")) {
      bad(
        `weight_map.${name}`,
        `shard ${JSON.stringify(file)} must be a path inside the checkpoint directory`,
      );
    }
    map.set(name, file);
  }
  if (map.size === 0) bad("weight_map", "lists no tensors");
  return map;
}

/**
 * Reads the headers of a checkpoint directory: `model.safetensors`, or every shard of
 * `model.safetensors.index.json` (each tensor the index names must be in its shard). No tensor data is read.
 */
export async function openCheckpoint(dir: string): Promise<CheckpointIndex> {
  const indexPath = join(dir, INDEX_FILE);
  const singlePath = join(dir, SINGLE_FILE);
  if (await exists(indexPath)) {
    let json: unknown;
    try {
      json = JSON.parse(await readFile(indexPath, "utf8"));
    } catch (error) {
      throw asMoaError(error, indexPath, "(root)");
    }
    const weightMap = parseShardIndex(json, indexPath);
    const headers = new Map<string, SafetensorsHeader>();
    for (const shard of new Set(weightMap.values())) {
      const path = join(dir, shard);
      if (!(await exists(path))) {
        const first = [...weightMap].find(([, s]) => s === shard)![0];
        throw new MoaError(
          E_CHECKPOINT,
          `${indexPath}: weight_map.${first}: shard ${JSON.stringify(shard)} does not exist in ${dir}`,
          { source: indexPath, field: `weight_map.${first}` },
        );
      }
      headers.set(shard, await readSafetensorsHeader(path));
    }
    const tensors = new Map<string, TensorInfo>();
    for (const [name, shard] of weightMap) {
      const tensor = headers.get(shard)!.tensors.get(name);
      if (tensor === undefined) {
        throw new MoaError(
          E_CHECKPOINT,
          `${indexPath}: weight_map.${name}: tensor is not in shard ${join(dir, shard)}`,
          { source: indexPath, field: `weight_map.${name}` },
        );
      }
      tensors.set(name, tensor);
    }
    return { dir, files: [...headers.values()], index: indexPath, tensors };
  }
  if (await exists(singlePath)) {
    const header = await readSafetensorsHeader(singlePath);
    return { dir, files: [header], tensors: header.tensors };
  }
  throw new MoaError(
    E_CHECKPOINT,
    `${dir}: neither ${SINGLE_FILE} nor ${INDEX_FILE} found: not a Hugging Face safetensors checkpoint`,
    { source: dir, field: SINGLE_FILE },
  );
}

/** Reads a whole checkpoint into memory: every file once, tensors as views (for tools that need all of it). */
export async function readCheckpoint(dir: string, options: ReadDataOptions = {}): Promise<Checkpoint> {
  const opened = await openCheckpoint(dir);
  const tensors = new Map<string, CheckpointTensor>();
  for (const header of opened.files) {
    const data = await readSafetensorsData(header, options);
    for (const [name, info] of opened.tensors) {
      if (info.file === header.file) tensors.set(name, tensorWithBytes(info, data));
    }
  }
  return {
    dir,
    files: opened.files.map((h) => h.file),
    ...(opened.index !== undefined ? { index: opened.index } : {}),
    tensors,
  };
}
