import { freemem, totalmem } from "node:os";
import { NativeBackend, type RefOf } from "./native-backend.js";
import type { NativeAddon, NativeRef } from "./native.js";
import type { HostStorage, NativeTensor, Storage } from "./tensor.js";

/**
 * The C++ CPU reference (moa_cpu.node, or the same ops inside moa_cuda.node). Tensors are JS-owned
 * ArrayBuffers, zero-initialised by JS; every op runs on a thread pool over all cores (MOA_NUM_THREADS caps it).
 */
export class CpuBackend extends NativeBackend {
  readonly name = "cpu" as const;
  readonly kvCacheDtype = "f32" as const;
  readonly deviceName: string;

  constructor(addon: NativeAddon) {
    super(addon);
    this.deviceName = `CPU (${addon.threadCount()} threads)`;
  }

  memoryInfo(): { free: number; total: number } {
    return { free: freemem(), total: totalmem() };
  }

  protected allocate(byteLength: number, _zero: boolean): Storage {
    return { kind: "host", bytes: new Uint8Array(byteLength), freed: false };
  }

  protected handleOf(storage: Storage, byteOffset: number, byteLength: number): NativeRef {
    return (storage as HostStorage).bytes.subarray(byteOffset, byteOffset + byteLength);
  }

  protected readBytes(t: NativeTensor, into?: Uint8Array): Uint8Array {
    if (into === undefined) return (t.handle as Uint8Array).slice();
    into.set(t.handle as Uint8Array);
    return into;
  }

  protected writeBytes(t: NativeTensor, byteOffset: number, data: Uint8Array): void {
    (t.handle as Uint8Array).set(data, byteOffset);
  }

  protected releaseStorage(): void {
    // The ArrayBuffer goes with its last reference; `free` has already made the tensor unusable.
  }

  synchronize(): void {
    // Every CPU op has finished when it returns.
  }

  protected execute(
    _hasKernel: boolean,
    _inputs: readonly NativeTensor[],
    _outputs: readonly NativeTensor[],
    call: (ref: RefOf) => void,
  ): void {
    call((t) => t.handle);
  }
}
