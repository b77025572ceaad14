import { NativeBackend, type RefOf } from "./native-backend.js";
import type { CudaAddon, NativeRef } from "./native.js";
import { DTYPE_CODE, type DeviceStorage, NativeTensor, type Storage } from "./tensor.js";

/** Environment override of the CUDA backend's KV-cache dtype ("f32" for bit-level comparisons with the CPU). */
function cacheDtypeFromEnv(): "f32" | "bf16" {
  const value = process.env.MOA_CUDA_KV_DTYPE?.trim().toLowerCase();
  if (value === undefined || value === "" || value === "bf16") return "bf16";
  if (value === "f32") return "f32";
  throw new Error(
    `@moa/kernels-cuda: MOA_CUDA_KV_DTYPE must be bf16 or f32, got "${process.env.MOA_CUDA_KV_DTYPE}"`,
  );
}

/**
 * The CUDA backend (moa_cuda.node): tensors live in device memory (cudaMalloc, zeroed), ops run on the
 * default stream in call order and return before the GPU has finished; `toHost` and `synchronize` wait.
 * Every forward op has a CUDA kernel (src/cuda/<op>.cu): matmul through cuBLAS (bf16/f16 weights multiply x
 * rounded to the same type, fp32 accumulation), fused elementwise kernels, tensor-core flash attention for
 * prefill with MoA band skipping, split-K decode over the bf16 ring-buffer cache. The profiling backward runs on
 * the GPU too (src/cuda/*_backward.cu, cross_entropy.cu, and attention_backward.cu for the stats prefill and the
 * attention backward with its influence), so a profile leaves the device only as its losses and influence. An
 * op without a kernel for its arguments (`execute` with hasKernel false: the profiling attention at head dims
 * other than 64 and 128) runs the CPU reference on host copies of its tensors.
 *
 * Errors: a failed launch, allocation or cuBLAS call throws a JS Error naming the op and its sizes; a fault
 * inside a kernel surfaces at the next synchronising call (MOA_CUDA_SYNC=1 synchronises after every launch so
 * the faulting op names itself). Out-of-memory is recoverable: free tensors (or a model) and go on.
 */
export class CudaBackend extends NativeBackend {
  readonly name = "cuda" as const;
  readonly kvCacheDtype = cacheDtypeFromEnv();
  // Device memory of tensors that were never freed is released when their storage is collected.
  private readonly collector: FinalizationRegistry<bigint>;

  constructor(
    private readonly cuda: CudaAddon,
    readonly deviceName: string,
  ) {
    super(cuda);
    this.collector = new FinalizationRegistry((address) => {
      try {
        cuda.release(address);
      } catch {
        // The context may already be gone at exit; nothing left to release then.
      }
    });
  }

  /** Free and total device memory in bytes. */
  memoryInfo(): { free: number; total: number } {
    return this.cuda.memoryInfo();
  }

  /** Releases the ops' scratch buffers (GEMM input copies, split-K partials); they are reallocated on demand. */
  releaseScratch(): void {
    this.cuda.releaseScratch();
  }

  /**
   * Copies all of `from` into `to` on the device (same dtype and element count; the shapes may differ),
   * ordered with the ops: e.g. one sequence slot's cache region into another's.
   */
  copy(to: NativeTensor, from: NativeTensor): void {
    for (const [name, t] of [
      ["to", to],
      ["from", from],
    ] as const) {
      if (!(t instanceof NativeTensor) || t.device !== "cuda" || t.released || t.storage.freed) {
        throw new TypeError(`copy: ${name} is not a live tensor of the cuda backend`);
      }
    }
    if (to.dtype !== from.dtype || to.byteLength !== from.byteLength) {
      throw new RangeError(
        `copy: ${from.dtype}[${from.shape.join(", ")}] does not fit ${to.dtype}[${to.shape.join(", ")}]`,
      );
    }
    this.cuda.copyDevice(to.handle as bigint, from.handle as bigint, from.byteLength);
  }

  protected allocate(byteLength: number, zero: boolean): Storage {
    const storage: DeviceStorage = {
      kind: "device",
      address: this.cuda.allocate(byteLength, zero),
      byteLength,
      freed: false,
    };
    this.collector.register(storage, storage.address, storage);
    return storage;
  }

  protected handleOf(storage: Storage, byteOffset: number): NativeRef {
    return (storage as DeviceStorage).address + BigInt(byteOffset);
  }

  protected readBytes(t: NativeTensor, into?: Uint8Array): Uint8Array {
    // Every byte is overwritten by the copy, so skip zero-filling the buffer (a decode step's logits are
    // batch × vocab floats, tens of MB); allocUnsafeSlow gives the copy an ArrayBuffer of its own.
    const bytes = into ?? new Uint8Array(Buffer.allocUnsafeSlow(t.byteLength).buffer, 0, t.byteLength);
    if (t.byteLength > 0) this.cuda.copyToHost(bytes, t.handle as bigint, t.byteLength);
    return bytes;
  }

  protected writeBytes(t: NativeTensor, byteOffset: number, data: Uint8Array): void {
    if (data.byteLength > 0)
      this.cuda.copyToDevice((t.handle as bigint) + BigInt(byteOffset), data, data.byteLength);
  }

  /** Pinned copies by source address; a tensor pinned by two callers is copied once and kept for both. */
  private readonly pins = new Map<bigint, { id: number; count: number; refs: number; storage: Storage }>();

  protected override pin(tensors: readonly NativeTensor[]): () => void {
    return this.pinWith(tensors, false);
  }

  protected override pinOutputs(tensors: readonly NativeTensor[]): () => void {
    return this.pinWith(tensors, true);
  }

  private pinWith(tensors: readonly NativeTensor[], output: boolean): () => void {
    const taken: bigint[] = [];
    const release = () => {
      for (const address of taken.splice(0)) {
        const entry = this.pins.get(address);
        if (entry === undefined) continue;
        if (--entry.refs === 0) {
          this.pins.delete(address);
          this.cuda.unpinHalf(entry.id);
        }
      }
    };
    try {
      for (const t of tensors) {
        const address = t.handle as bigint;
        const entry = this.pins.get(address);
        if (entry !== undefined && entry.count !== t.elementCount) {
          throw new RangeError(
            `pinHalfCopies: ${t.dtype}[${t.shape.join(", ")}] starts where a pinned tensor of ${entry.count} elements does`,
          );
        }
        if (entry !== undefined && output) {
          throw new RangeError(
            `pinHalfOutputs: ${t.dtype}[${t.shape.join(", ")}] already has a pinned copy (an output pin is written once, by its op)`,
          );
        }
        if (entry !== undefined) entry.refs++;
        else {
          const id = output
            ? this.cuda.pinHalfOutput(address, t.elementCount)
            : this.cuda.pinHalf(address, t.elementCount, DTYPE_CODE[t.dtype]);
          this.pins.set(address, { id, count: t.elementCount, refs: 1, storage: t.storage });
        }
        taken.push(address);
      }
    } catch (error) {
      release();
      throw error;
    }
    return release;
  }

  protected releaseStorage(storage: Storage): void {
    // A freed tensor's copy goes too: a later tensor at the same address must not find it.
    for (const [address, entry] of this.pins) {
      if (entry.storage === storage) {
        this.pins.delete(address);
        this.cuda.unpinHalf(entry.id);
      }
    }
    this.collector.unregister(storage);
    this.cuda.release((storage as DeviceStorage).address);
  }

  synchronize(): void {
    this.cuda.synchronize();
  }

  protected execute(
    hasKernel: boolean,
    inputs: readonly NativeTensor[],
    outputs: readonly NativeTensor[],
    call: (ref: RefOf) => void,
  ): void {
    if (hasKernel) {
      call((t) => t.handle);
      return;
    }
    // No CUDA kernel for this op: run the CPU reference on host copies (outputs too, for ops that accumulate
    // into them), then copy the outputs back.
    const staged = new Map<NativeTensor, Uint8Array>();
    for (const t of [...inputs, ...outputs]) {
      if (!staged.has(t)) staged.set(t, this.readBytes(t));
    }
    call((t) => staged.get(t)!);
    for (const t of outputs) this.writeBytes(t, 0, staged.get(t)!);
  }
}
