import type { Backend } from "./backend.js";
import { CpuBackend } from "./cpu-backend.js";
import { CudaBackend } from "./cuda-backend.js";
import { CUDA_BUILD_HINT, type CudaAddon, type NativeAddon, REBUILD_HINT, requireAddon } from "./native.js";

/** Which backend to load: "auto" takes CUDA when its addon is built and a GPU is present, else the CPU. */
export type BackendPreference = "auto" | "cpu" | "cuda";

/** What the native builds on this machine can do (for diagnostics such as `moa bench`). */
export interface NativeStatus {
  readonly cpu: { readonly path: string; readonly available: boolean; readonly error?: string };
  readonly cuda: {
    readonly path: string;
    /** The CUDA addon exists and loads. */
    readonly built: boolean;
    /** CUDA devices the driver reports (0 without a driver or GPU). */
    readonly devices: number;
    /** Why CUDA cannot be used, when it cannot. */
    readonly error?: string;
  };
}

let cpuBackend: CpuBackend | undefined;
let cudaBackend: CudaBackend | undefined;

function probeCuda():
  | { ok: true; addon: CudaAddon; path: string }
  | { ok: false; path: string; built: boolean; error: string } {
  const loaded = requireAddon<CudaAddon>("moa_cuda");
  if ("error" in loaded) {
    const why = loaded.missing
      ? `the CUDA addon is not built (${loaded.error}). ${CUDA_BUILD_HINT}`
      : loaded.error;
    return { ok: false, path: loaded.path, built: false, error: why };
  }
  const probe = loaded.addon.probe();
  if (probe.count < 1) {
    return {
      ok: false,
      path: loaded.path,
      built: true,
      error: `no CUDA device: ${probe.error ?? "none found"}`,
    };
  }
  return { ok: true, addon: loaded.addon, path: loaded.path };
}

export function nativeStatus(): NativeStatus {
  const cpu = requireAddon<NativeAddon>("moa_cpu");
  const cuda = probeCuda();
  return {
    cpu:
      "error" in cpu
        ? { path: cpu.path, available: false, error: cpu.error }
        : { path: cpu.path, available: true },
    cuda: cuda.ok
      ? { path: cuda.path, built: true, devices: cuda.addon.probe().count }
      : { path: cuda.path, built: cuda.built, devices: 0, error: cuda.error },
  };
}

function loadCpu(): CpuBackend {
  if (cpuBackend) return cpuBackend;
  const loaded = requireAddon<NativeAddon>("moa_cpu");
  if ("error" in loaded) {
    throw new Error(`@moa/kernels-cuda: cannot load the CPU addon: ${loaded.error}. ${REBUILD_HINT}`);
  }
  cpuBackend = new CpuBackend(loaded.addon);
  return cpuBackend;
}

function loadCuda(required: boolean): CudaBackend | undefined {
  if (cudaBackend) return cudaBackend;
  const probe = probeCuda();
  if (!probe.ok) {
    if (required) throw new Error(`@moa/kernels-cuda: the CUDA backend is unavailable: ${probe.error}`);
    return undefined;
  }
  cudaBackend = new CudaBackend(probe.addon, probe.addon.deviceInfo(0).name);
  return cudaBackend;
}

function preferenceFromEnv(): BackendPreference | undefined {
  const value = process.env.MOA_BACKEND?.trim().toLowerCase();
  if (value === undefined || value === "") return undefined;
  if (value === "auto" || value === "cpu" || value === "cuda") return value;
  throw new Error(
    `@moa/kernels-cuda: MOA_BACKEND must be auto, cpu or cuda, got "${process.env.MOA_BACKEND}"`,
  );
}

/**
 * The ops backend. `prefer` (default: the MOA_BACKEND environment variable, else "auto"):
 * - "auto": CUDA when moa_cuda.node is built and the driver reports a GPU, otherwise the CPU reference;
 * - "cpu": always the CPU reference;
 * - "cuda": CUDA or an error saying why not.
 * Backends are created once per process. Throws with install instructions when no addon can be loaded.
 */
export function loadBackend(prefer?: BackendPreference): Backend {
  const choice = prefer ?? preferenceFromEnv() ?? "auto";
  if (choice !== "auto" && choice !== "cpu" && choice !== "cuda") {
    throw new Error(
      `@moa/kernels-cuda: loadBackend(prefer) takes "auto", "cpu" or "cuda", got "${String(choice)}"`,
    );
  }
  if (choice === "cuda") return loadCuda(true)!;
  if (choice === "auto") {
    const cuda = loadCuda(false);
    if (cuda) return cuda;
  }
  return loadCpu();
}
