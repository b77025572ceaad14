import type { DType, MoaMask, Tensor } from "./backend.js";
import { describeTensor, NativeTensor } from "./tensor.js";

/** The float dtypes a weight may have; activations and caches are f32. */
export const WEIGHT_DTYPES: readonly DType[] = ["f32", "bf16", "f16"];

/**
 * Argument checks of one op call. Every error names the op and lists the tensors it was given, e.g.
 * `matmul: x's last dim (5) must equal w's last dim (6) — out f32[3, 4], x f32[3, 5], w bf16[4, 6]`.
 */
export class OpArgs {
  private readonly named: [string, unknown][];

  constructor(
    readonly op: string,
    readonly device: "cpu" | "cuda",
    tensors: Record<string, unknown>,
  ) {
    this.named = Object.entries(tensors).filter(([, t]) => t !== undefined);
  }

  fail(reason: string, ErrorType: new (message: string) => Error = Error): never {
    const list = this.named
      .map(([name, t]) => `${name} ${t instanceof NativeTensor ? describeTensor(t) : typeof t}`)
      .join(", ");
    throw new ErrorType(`${this.op}: ${reason}${list ? ` — ${list}` : ""}`);
  }

  /** A live tensor of this backend with one of the given dtypes. */
  tensor(name: string, t: unknown, dtypes: readonly DType[]): NativeTensor {
    if (!(t instanceof NativeTensor)) this.fail(`${name} is not a tensor of @moa/kernels-cuda`, TypeError);
    if (t.device !== this.device) this.fail(`${name} lives on ${t.device}, this backend is ${this.device}`);
    if (t.released || t.storage.freed) this.fail(`${name} was freed`);
    if (!dtypes.includes(t.dtype))
      this.fail(`${name} must be ${dtypes.join(" or ")}, got ${t.dtype}`, TypeError);
    return t;
  }

  rank(name: string, t: Tensor, ranks: number | readonly number[]): void {
    const allowed = typeof ranks === "number" ? [ranks] : ranks;
    if (!allowed.includes(t.shape.length)) {
      this.fail(`${name} must have ${allowed.join(" or ")} dims, got ${t.shape.length}`);
    }
  }

  minRank(name: string, t: Tensor, min: number): void {
    if (t.shape.length < min) this.fail(`${name} must have at least ${min} dim(s), got ${t.shape.length}`);
  }

  sameShape(nameA: string, a: Tensor, nameB: string, b: Tensor): void {
    if (!sameDims(a.shape, b.shape)) this.fail(`${nameA} and ${nameB} must have the same shape`);
  }

  shape(name: string, t: Tensor, expected: readonly number[]): void {
    if (!sameDims(t.shape, expected)) this.fail(`${name} must be [${expected.join(", ")}]`);
  }

  /** Outputs must not share bytes with inputs the op reads after writing (out = x would corrupt x). */
  noOverlap(nameA: string, a: NativeTensor, nameB: string, b: NativeTensor): void {
    if (
      a.storage === b.storage &&
      a.byteOffset < b.byteOffset + b.byteLength &&
      b.byteOffset < a.byteOffset + a.byteLength
    ) {
      this.fail(`${nameA} must not overlap ${nameB}`);
    }
  }

  finite(name: string, value: number): void {
    if (typeof value !== "number" || !Number.isFinite(value))
      this.fail(`${name} must be a finite number, got ${value}`);
  }

  int32Array(name: string, value: unknown, length?: number): Int32Array {
    if (!(value instanceof Int32Array)) this.fail(`${name} must be an Int32Array`, TypeError);
    if (length !== undefined && value.length !== length) {
      this.fail(`${name} must have ${length} entries, got ${value.length}`);
    }
    return value;
  }

  /** A MoaMask for `queryHeads` heads; `modes` lists the modes this op accepts. */
  mask(mask: MoaMask, queryHeads: number, modes: readonly MoaMask["mode"][]): void {
    if (typeof mask !== "object" || mask === null) this.fail("mask must be a MoaMask object", TypeError);
    if (!modes.includes(mask.mode)) this.fail(`mask.mode must be ${modes.map((m) => `"${m}"`).join(" or ")}`);
    for (const key of ["alpha", "beta"] as const) {
      const values = mask[key];
      if (!(values instanceof Float32Array)) this.fail(`mask.${key} must be a Float32Array`, TypeError);
      if (values.length !== queryHeads) {
        this.fail(`mask.${key} must have one entry per query head (${queryHeads}), got ${values.length}`);
      }
    }
    if (!Number.isInteger(mask.blockSize) || mask.blockSize < 1) {
      this.fail(`mask.blockSize must be an integer ≥ 1, got ${mask.blockSize}`);
    }
    if (!Number.isInteger(mask.sinkTokens) || mask.sinkTokens < 0) {
      this.fail(`mask.sinkTokens must be an integer ≥ 0, got ${mask.sinkTokens}`);
    }
  }
}

export function sameDims(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((dim, i) => dim === b[i]);
}

/** Product of the dims before the last (the row count of a tensor read as [rows, lastDim]). */
export function leadingCount(shape: readonly number[]): number {
  let count = 1;
  for (let i = 0; i < shape.length - 1; i++) count *= shape[i]!;
  return count;
}

export function lastDim(shape: readonly number[]): number {
  return shape[shape.length - 1]!;
}

/** Checks a shape given to empty/fromHost: integer dims ≥ 0. */
export function checkShape(op: string, shape: readonly number[]): void {
  if (!Array.isArray(shape) || !shape.every((dim) => Number.isSafeInteger(dim) && dim >= 0)) {
    throw new RangeError(`${op}: shape must be a list of integers ≥ 0, got [${String(shape)}]`);
  }
}
