import type { DType, HostArray, Tensor } from "./backend.js";

/** Bytes per element. */
export const DTYPE_BYTES: Readonly<Record<DType, number>> = { f32: 4, bf16: 2, f16: 2, i32: 4 };

/** The addon's dtype codes (src/cpu/common.h: DType). */
export const DTYPE_CODE: Readonly<Record<DType, number>> = { f32: 0, bf16: 1, f16: 2, i32: 3 };

export const DTYPES: readonly DType[] = ["f32", "bf16", "f16", "i32"];

/** Host bytes owned by JS (CPU backend), shared by a tensor and its row views. */
export interface HostStorage {
  readonly kind: "host";
  readonly bytes: Uint8Array;
  freed: boolean;
}

/** A device allocation (CUDA backend), shared by a tensor and its row views. */
export interface DeviceStorage {
  readonly kind: "device";
  readonly address: bigint;
  readonly byteLength: number;
  freed: boolean;
}

export type Storage = HostStorage | DeviceStorage;

/**
 * A tensor of this package: shape, dtype and a window [byteOffset, byteOffset + byteLength) of a storage.
 * `rows()` views share the storage. Backends accept only their own tensors.
 */
export class NativeTensor implements Tensor {
  /** Set by `free`: the tensor (and, for an owner, its views) may no longer be used. */
  released = false;

  constructor(
    readonly dtype: DType,
    readonly shape: readonly number[],
    readonly device: "cpu" | "cuda",
    readonly byteLength: number,
    readonly storage: Storage,
    readonly byteOffset: number,
    /** True for a tensor made by `rows()`: freeing it does not free the storage. */
    readonly isView: boolean,
    /** What the addon receives: the tensor's bytes (host) or its device address. */
    readonly handle: Uint8Array | bigint,
  ) {}

  get elementCount(): number {
    return this.byteLength / DTYPE_BYTES[this.dtype];
  }
}

export function elementCount(shape: readonly number[]): number {
  let count = 1;
  for (const dim of shape) count *= dim;
  return count;
}

/** `f32[2, 3]`: how errors print a tensor. */
export function describeTensor(t: Tensor): string {
  return `${t.dtype}[${t.shape.join(", ")}]`;
}

/** The host array type of a dtype (toHost's result), over `bytes` (which must start its own buffer). */
export function hostArrayOf(dtype: DType, bytes: Uint8Array): HostArray {
  switch (dtype) {
    case "f32":
      return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    case "i32":
      return new Int32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    default:
      return new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
  }
}

/** The bytes of host data for `dtype` (its element type must match; Uint8Array is raw bytes of any dtype). */
export function hostBytes(op: string, dtype: DType, data: HostArray): Uint8Array {
  const expected = dtype === "f32" ? Float32Array : dtype === "i32" ? Int32Array : Uint16Array;
  if (!(data instanceof Uint8Array) && !(data instanceof expected)) {
    throw new TypeError(
      `${op}: ${dtype} data must be a ${expected.name} (or a Uint8Array of raw bytes), got ${data.constructor.name}`,
    );
  }
  if (data.byteLength % DTYPE_BYTES[dtype] !== 0) {
    throw new RangeError(
      `${op}: ${data.byteLength} raw bytes are not a whole number of ${dtype} elements (${DTYPE_BYTES[dtype]} bytes each)`,
    );
  }
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}
