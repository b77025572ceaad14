import { NativeBackend, type RefOf } from "./native-backend.js";
import type { CudaAddon, NativeRef } from "./native.js";
import type { DeviceStorage, NativeTensor, Storage } from "./tensor.js";

/**
 * The CUDA backend (moa_cuda.node): tensors live in device memory (cudaMalloc, zeroed), ops run on the
 * default stream. Ops with a CUDA kernel (rmsNorm, siluMul, add so far) run on the GPU; the others run the
 * CPU reference on host copies of their tensors and write the results back, so the whole Backend works
 * today and each op moves to the GPU as its kernel lands (src/cuda/<op>.cu).
 */
export class CudaBackend extends NativeBackend {
  readonly name = "cuda" as const;
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

  protected allocate(byteLength: number): Storage {
    const storage: DeviceStorage = {
      kind: "device",
      address: this.cuda.allocate(byteLength),
      byteLength,
      freed: false,
    };
    this.collector.register(storage, storage.address, storage);
    return storage;
  }

  protected handleOf(storage: Storage, byteOffset: number): NativeRef {
    return (storage as DeviceStorage).address + BigInt(byteOffset);
  }

  protected readBytes(t: NativeTensor): Uint8Array {
    const bytes = new Uint8Array(t.byteLength);
    if (t.byteLength > 0) this.cuda.copyToHost(bytes, t.handle as bigint, t.byteLength);
    return bytes;
  }

  protected writeBytes(t: NativeTensor, byteOffset: number, data: Uint8Array): void {
    if (data.byteLength > 0)
      this.cuda.copyToDevice((t.handle as bigint) + BigInt(byteOffset), data, data.byteLength);
  }

  protected releaseStorage(storage: Storage): void {
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
    // No CUDA kernel for this op yet: run the CPU reference on host copies (outputs too: rope works in place,
    // kvAppend fills part of the cache), then copy the outputs back.
    const staged = new Map<NativeTensor, Uint8Array>();
    for (const t of [...inputs, ...outputs]) {
      if (!staged.has(t)) staged.set(t, this.readBytes(t));
    }
    call((t) => staged.get(t)!);
    for (const t of outputs) this.writeBytes(t, 0, staged.get(t)!);
  }
}
