import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

/** Storage as the addon sees it: host bytes, or a device address (CUDA addon). */
export type NativeRef = Uint8Array | bigint;

/** A MoaMask as the addon reads it. */
export interface NativeMask {
  window: boolean;
  alpha: Float32Array;
  beta: Float32Array;
  blockSize: number;
  sinkTokens: number;
}

/** The functions both addons export (src/binding/*.cc). Dims are passed explicitly; dtypes as codes. */
export interface NativeAddon {
  readonly backend: "cpu" | "cuda";
  readonly abiVersion: number;
  threadCount(): number;
  matmul(
    out: NativeRef,
    x: NativeRef,
    w: NativeRef,
    wType: number,
    bias: NativeRef | null,
    biasType: number,
    m: number,
    n: number,
    k: number,
    exact: boolean,
  ): void;
  embedding(
    out: NativeRef,
    ids: NativeRef,
    tokens: number,
    table: NativeRef,
    tableType: number,
    vocab: number,
    dim: number,
  ): void;
  rmsNorm(
    out: NativeRef,
    x: NativeRef,
    weight: NativeRef,
    weightType: number,
    rows: number,
    dim: number,
    eps: number,
  ): void;
  rope(
    x: NativeRef,
    positions: NativeRef,
    invFreq: NativeRef,
    tokens: number,
    heads: number,
    headDim: number,
    rotaryHalf: number,
    attentionScale: number,
  ): void;
  siluMul(out: NativeRef, gate: NativeRef, up: NativeRef, count: number): void;
  add(out: NativeRef, a: NativeRef, b: NativeRef, count: number): void;
  softmax(out: NativeRef, x: NativeRef, rows: number, cols: number): void;
  attentionPrefill(
    out: NativeRef,
    q: NativeRef,
    k: NativeRef,
    v: NativeRef,
    cuSeqlens: Int32Array,
    sequences: number,
    tokens: number,
    queryHeads: number,
    kvHeads: number,
    headDim: number,
    scale: number,
    mask: NativeMask | null,
  ): void;
  attentionColumnSums(
    out: NativeRef,
    q: NativeRef,
    k: NativeRef,
    cuSeqlens: Int32Array,
    sequences: number,
    tokens: number,
    queryHeads: number,
    kvHeads: number,
    headDim: number,
    scale: number,
  ): void;
  attentionPrefillStats(
    out: NativeRef,
    stats: NativeRef,
    q: NativeRef,
    k: NativeRef,
    v: NativeRef,
    cuSeqlens: Int32Array,
    sequences: number,
    tokens: number,
    queryHeads: number,
    kvHeads: number,
    headDim: number,
    scale: number,
    queryStart: number,
  ): void;
  matmulBackward(
    dx: NativeRef,
    dy: NativeRef,
    w: NativeRef,
    wType: number,
    m: number,
    n: number,
    k: number,
    accumulate: boolean,
  ): void;
  rmsNormBackward(
    dx: NativeRef,
    dy: NativeRef,
    x: NativeRef,
    weight: NativeRef,
    weightType: number,
    rows: number,
    dim: number,
    eps: number,
    accumulate: boolean,
  ): void;
  siluMulBackward(
    dGate: NativeRef,
    dUp: NativeRef,
    dOut: NativeRef,
    gate: NativeRef,
    up: NativeRef,
    count: number,
  ): void;
  attentionBackward(
    dq: NativeRef,
    dk: NativeRef,
    dv: NativeRef,
    influence: NativeRef | null,
    dOut: NativeRef,
    q: NativeRef,
    k: NativeRef,
    v: NativeRef,
    out: NativeRef,
    stats: NativeRef,
    cuSeqlens: Int32Array,
    sequences: number,
    tokens: number,
    queryHeads: number,
    kvHeads: number,
    headDim: number,
    scale: number,
    blocks: number,
    queryStart: number,
    gradients: boolean,
  ): void;
  crossEntropy(
    losses: NativeRef,
    dLogits: NativeRef,
    logits: NativeRef,
    targets: NativeRef,
    rows: number,
    vocab: number,
    gradScale: number,
  ): void;
  kvAppend(
    ...args: [
      ...cache: NativeCacheArgs,
      k: NativeRef,
      v: NativeRef,
      slots: Int32Array,
      positions: Int32Array,
      tokens: number,
      cacheType?: number,
    ]
  ): void;
  attentionDecode(
    ...args: [
      ...cache: NativeCacheArgs,
      out: NativeRef,
      q: NativeRef,
      slots: Int32Array,
      seqLens: Int32Array,
      batch: number,
      queryHeads: number,
      scale: number,
      mask: NativeMask | null,
      cacheType?: number,
    ]
  ): void;
}

/** cacheK, cacheV, entries, kvHeads, headDim, sinkTokens, ringCap, regionOffset, slot count. */
export type NativeCacheArgs = [
  k: NativeRef,
  v: NativeRef,
  entries: number,
  kvHeads: number,
  headDim: number,
  sinkTokens: number,
  ringCap: Int32Array,
  regionOffset: Int32Array,
  slots: number,
];

/** The CUDA addon adds the device query and device memory. */
export interface CudaAddon extends NativeAddon {
  probe(): { count: number; error: string | null };
  deviceInfo(device: number): {
    name: string;
    totalMemory: number;
    major: number;
    minor: number;
    multiprocessors: number;
  };
  /** Device memory from the tensor pool, zero-filled unless `zero` is false. */
  allocate(bytes: number, zero?: boolean): bigint;
  /** A scaled fp16 copy of an f32 or bf16 tensor for the profiler-precision GEMMs (src/cuda/half_pins.cu). */
  pinHalf(source: bigint, count: number, dtype: number): number;
  pinHalfOutput(target: bigint, count: number): number;
  unpinHalf(id: number): void;
  release(address: bigint): void;
  copyToDevice(destination: bigint, source: Uint8Array, bytes: number): void;
  copyToHost(destination: Uint8Array, source: bigint, bytes: number): void;
  /** Device-to-device copy, ordered with the ops. */
  copyDevice(destination: bigint, source: bigint, bytes: number): void;
  memoryInfo(): { free: number; total: number };
  /** Frees the ops' scratch buffers (allocated again on demand). */
  releaseScratch(): void;
  /** null when cuBLAS loads, else why it does not. */
  cublasStatus(): string | null;
  synchronize(): void;
}

/** The calling convention this JS expects (src/binding/addon.cc: kAbiVersion). */
export const ABI_VERSION = 3;

/** build/Release beside src/ (vitest, tsx) and beside dist/ (the published package). */
export function addonPath(name: "moa_cpu" | "moa_cuda"): string {
  return fileURLToPath(new URL(`../build/Release/${name}.node`, import.meta.url));
}

export const REBUILD_HINT =
  "The addon is compiled when @moa/kernels-cuda is installed. It needs a C++17 compiler, make and python3 " +
  "(Debian/Ubuntu: `apt-get install -y build-essential python3`; Fedora: `dnf install gcc-c++ make python3`; " +
  "macOS: `xcode-select --install`) and Node.js's headers (shipped with Node.js). Then rebuild it with " +
  "`pnpm rebuild @moa/kernels-cuda` (npm: `npm rebuild @moa/kernels-cuda`; in the moa repository: " +
  "`pnpm --filter @moa/kernels-cuda build:native`).";

export const CUDA_BUILD_HINT =
  "The CUDA addon is built at install time when nvcc is found (CUDA toolkit 12 or newer, on PATH or in " +
  "$CUDA_HOME/bin) and MOA_SKIP_CUDA is not set; install the toolkit and run `pnpm rebuild @moa/kernels-cuda`.";

const require = createRequire(import.meta.url);

/** Loads an addon file, or returns why it cannot be loaded. */
export function requireAddon<T extends NativeAddon>(
  name: "moa_cpu" | "moa_cuda",
): { addon: T; path: string } | { error: string; path: string; missing: boolean } {
  const path = addonPath(name);
  if (!existsSync(path)) return { error: `${path} does not exist`, path, missing: true };
  let addon: T;
  try {
    addon = require(path) as T;
  } catch (error) {
    return { error: `${path} failed to load: ${(error as Error).message}`, path, missing: false };
  }
  if (addon.abiVersion !== ABI_VERSION) {
    return {
      error: `${path} is a stale build (ABI ${addon.abiVersion}, this package needs ${ABI_VERSION})`,
      path,
      missing: false,
    };
  }
  return { addon, path };
}
