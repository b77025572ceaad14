// out[m, n] = x[m, k] · wᵀ (+ bias[n]) through cuBLAS (same signature as src/cpu/matmul.cc).
//
// w is [n, k] row-major (Hugging Face Linear), which cuBLAS (column-major) reads as a k × n matrix, so the
// product is out (n × m, column-major = [m, n] row-major) = op_T(w) · x. bf16/f16 weights: x is rounded to the
// weights' 16-bit type in a scratch buffer and the GEMM accumulates in fp32 (tensor cores), as PyTorch does
// for a bf16 Linear; f32 weights: an fp32 GEMM. A bias is broadcast into out first and added by beta = 1.
// `exact` (the profiler's forward) follows backward_precision.cuh: "f16" (default) copies x and w to scaled fp16
// and runs one GEMM; "split"/"bf16" keep x at about fp32's precision: for bf16 weights x = hi + lo in bf16 and two
// GEMMs accumulate into out; for f16 weights (f16 cannot carry x's range as two halves) w is widened to fp32 in
// panels of rows and each panel runs an fp32 GEMM.
//
// cuBLAS is opened at run time (dlopen), so the addon builds where only nvcc and cudart are installed and
// loads where the library lives in a Python wheel: MOA_CUBLAS_PATH names the library file, else the system
// search path, the CUDA toolkit and the nvidia-cublas wheels of the usual Python installs are tried.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <glob.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "cuda/backward_precision.cuh"
#include "cuda/check.cuh"
#include "cuda/cublas.cuh"
#include "cuda/cuda_ops.h"
#include "cuda/half_scale.cuh"
#include "cuda/scratch.cuh"
#include "cuda/widen.cuh"

namespace moa::cuda {
namespace {

// The slice of the cuBLAS v2 API used here (cublas_api.h; enums are plain ints in the C ABI).
using cublasHandle = void*;
using CreateFn = int (*)(cublasHandle*);
using GemmExFn = int (*)(cublasHandle, int, int, int, int, int, const void*, const void*, int, int, const void*, int,
                         int, const void*, void*, int, int, int, int);
using StatusStringFn = const char* (*)(int);
using PointerModeFn = int (*)(cublasHandle, int);
constexpr int kOpN = 0;
constexpr int kOpT = 1;
constexpr int kR32F = 0;    // CUDA_R_32F
constexpr int kR16F = 2;    // CUDA_R_16F
constexpr int kR16BF = 14;  // CUDA_R_16BF
constexpr int kCompute32F = 68;  // CUBLAS_COMPUTE_32F
constexpr int kGemmDefault = -1;  // CUBLAS_GEMM_DEFAULT

struct Cublas {
  bool tried = false;
  std::string error;
  cublasHandle handle = nullptr;
  GemmExFn gemmEx = nullptr;
  StatusStringFn statusString = nullptr;
  PointerModeFn setPointerMode = nullptr;
};
Cublas cublas;
std::mutex cublasMutex;

std::vector<std::string> cublasCandidates() {
  std::vector<std::string> names;
  if (const char* path = std::getenv("MOA_CUBLAS_PATH"); path != nullptr && path[0] != '\0') names.push_back(path);
  const std::string version = std::to_string(CUDART_VERSION / 1000);
  names.push_back("libcublas.so." + version);
  const char* homes[] = {std::getenv("CUDA_HOME"), std::getenv("CUDA_PATH"), "/usr/local/cuda"};
  for (const char* home : homes) {
    if (home != nullptr) names.push_back(std::string(home) + "/lib64/libcublas.so." + version);
  }
  // nvidia-cublas wheels (PyTorch's dependency): nvidia/cu13/lib or nvidia/cublas/lib under site-packages.
  const char* patterns[] = {"/usr/local/lib/python3*/dist-packages/nvidia/cu*/lib/libcublas.so.*",
        "/usr/local/lib/python3*/site-packages/nvidia/cu*/lib/libcublas.so.*",
        "/usr/lib/python3*/dist-packages/nvidia/cu*/lib/libcublas.so.*",
        "/usr/local/lib/python3*/dist-packages/nvidia/cublas/lib/libcublas.so.*",
        "/usr/local/lib/python3*/site-packages/nvidia/cublas/lib/libcublas.so.*",
        "/opt/conda/lib/python3*/site-packages/nvidia/cu*/lib/libcublas.so.*",
        "/opt/conda/lib/python3*/site-packages/nvidia/cublas/lib/libcublas.so.*"};
  for (const char* pattern : patterns) {
    glob_t found{};
    if (glob(pattern, 0, nullptr, &found) == 0) {
      for (size_t i = 0; i < found.gl_pathc; ++i) {
        const std::string path = found.gl_pathv[i];
        if (path.find("libcublas.so." + version) != std::string::npos) names.push_back(path);
      }
    }
    globfree(&found);
  }
  return names;
}

Cublas& openCublas() {
  std::lock_guard<std::mutex> lock(cublasMutex);
  if (cublas.tried) return cublas;
  cublas.tried = true;
  std::string tried;
  void* library = nullptr;
  for (const std::string& name : cublasCandidates()) {
    // libcublasLt sits beside libcublas; load it first so the dependency resolves from the same folder.
    const size_t slash = name.rfind('/');
    if (slash != std::string::npos) {
      const std::string lt = name.substr(0, slash + 1) + "libcublasLt.so." + std::to_string(CUDART_VERSION / 1000);
      dlopen(lt.c_str(), RTLD_NOW | RTLD_GLOBAL);
    }
    library = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (library != nullptr) break;
    tried += (tried.empty() ? "" : ", ") + name;
  }
  if (library == nullptr) {
    cublas.error = "cuBLAS " + std::to_string(CUDART_VERSION / 1000) +
                   " was not found (tried " + tried +
                   "); install the CUDA toolkit's libcublas or the nvidia-cublas wheel, or set MOA_CUBLAS_PATH";
    return cublas;
  }
  const auto create = reinterpret_cast<CreateFn>(dlsym(library, "cublasCreate_v2"));
  cublas.gemmEx = reinterpret_cast<GemmExFn>(dlsym(library, "cublasGemmEx"));
  cublas.statusString = reinterpret_cast<StatusStringFn>(dlsym(library, "cublasGetStatusString"));
  cublas.setPointerMode = reinterpret_cast<PointerModeFn>(dlsym(library, "cublasSetPointerMode_v2"));
  if (create == nullptr || cublas.gemmEx == nullptr || cublas.setPointerMode == nullptr) {
    cublas.error = "the cuBLAS library found lacks cublasCreate_v2/cublasGemmEx/cublasSetPointerMode_v2";
    return cublas;
  }
  const int status = create(&cublas.handle);
  if (status != 0) {
    cublas.error = "cublasCreate failed with status " + std::to_string(status);
    cublas.handle = nullptr;
  }
  return cublas;
}

template <typename H>
__device__ inline H narrow(float value);
template <>
__device__ inline __nv_bfloat16 narrow<__nv_bfloat16>(float value) {
  return __float2bfloat16_rn(value);
}
template <>
__device__ inline __half narrow<__half>(float value) {
  return __float2half_rn(value);
}

// Rounds x (f32) to the 16-bit type H, four elements per thread.
template <typename H>
__global__ void narrowKernel(H* out, const float* x, int64_t count) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) * 4; i < count; i += stride * 4) {
    if (i + 4 <= count && (reinterpret_cast<uintptr_t>(x + i) & 15) == 0) {
      const float4 v = *reinterpret_cast<const float4*>(x + i);
      out[i] = narrow<H>(v.x);
      out[i + 1] = narrow<H>(v.y);
      out[i + 2] = narrow<H>(v.z);
      out[i + 3] = narrow<H>(v.w);
    } else {
      for (int64_t j = i; j < i + 4 && j < count; ++j) out[j] = narrow<H>(x[j]);
    }
  }
}

__global__ void splitKernel(__nv_bfloat16* hi, __nv_bfloat16* lo, const float* x, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float value = x[i];
    const __nv_bfloat16 rounded = __float2bfloat16_rn(value);
    hi[i] = rounded;
    if (lo != nullptr) lo[i] = __float2bfloat16_rn(value - __bfloat162float(rounded));
  }
}

__global__ void widenHalfKernel(float* out, const __half* w, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = __half2float(w[i]);
  }
}

template <typename W>
__global__ void broadcastBiasKernel(float* out, const W* bias, int64_t m, int64_t n) {
  const int64_t count = m * n;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = widen(bias[i % n]);
  }
}

}  // namespace

void gemm(const std::string& op, const std::string& sizes, bool transA, int64_t m, int64_t n, int64_t k,
          const void* a, int64_t lda, const void* b, int64_t ldb, GemmType type, float beta, float* c, int64_t ldc) {
  constexpr int64_t kIntMax = 2147483647;
  if (m > kIntMax || n > kIntMax || k > kIntMax) throw std::runtime_error(op + ": sizes exceed cuBLAS's int [" + sizes + "]");
  Cublas& library = openCublas();
  if (library.handle == nullptr) throw std::runtime_error(op + ": " + library.error);
  const float alpha = 1.0f;
  const int code = type == GemmType::BF16 ? kR16BF : type == GemmType::F16 ? kR16F : kR32F;
  const int status = library.gemmEx(library.handle, transA ? kOpT : kOpN, kOpN, static_cast<int>(m),
                                    static_cast<int>(n), static_cast<int>(k), &alpha, a, code, static_cast<int>(lda),
                                    b, code, static_cast<int>(ldb), &beta, c, kR32F, static_cast<int>(ldc),
                                    kCompute32F, kGemmDefault);
  if (status != 0) {
    cudaGetLastError();
    const char* name = library.statusString != nullptr ? library.statusString(status) : "";
    throw std::runtime_error(op + ": cuBLAS error " + std::to_string(status) + " (" + name + ") [" + sizes + "]");
  }
  checkLaunch(op, sizes);
}

void gemmScaledHalf(const std::string& op, const std::string& sizes, bool transA, int64_t m, int64_t n, int64_t k,
                    const void* a, int64_t lda, const void* b, int64_t ldb, const float* alphaBeta, float* c,
                    int64_t ldc) {
  constexpr int64_t kIntMax = 2147483647;
  if (m > kIntMax || n > kIntMax || k > kIntMax) throw std::runtime_error(op + ": sizes exceed cuBLAS's int [" + sizes + "]");
  Cublas& library = openCublas();
  if (library.handle == nullptr) throw std::runtime_error(op + ": " + library.error);
  // alpha and beta live on the device (written by toScaledHalves on the stream): device pointer mode for this
  // call only, so no host round trip is needed to learn the scales.
  constexpr int kPointerHost = 0;
  constexpr int kPointerDevice = 1;
  library.setPointerMode(library.handle, kPointerDevice);
  const int status = library.gemmEx(library.handle, transA ? kOpT : kOpN, kOpN, static_cast<int>(m),
                                    static_cast<int>(n), static_cast<int>(k), alphaBeta, a, kR16F,
                                    static_cast<int>(lda), b, kR16F, static_cast<int>(ldb), alphaBeta + 1, c, kR32F,
                                    static_cast<int>(ldc), kCompute32F, kGemmDefault);
  library.setPointerMode(library.handle, kPointerHost);
  if (status != 0) {
    cudaGetLastError();
    const char* name = library.statusString != nullptr ? library.statusString(status) : "";
    throw std::runtime_error(op + ": cuBLAS error " + std::to_string(status) + " (" + name + ") [" + sizes + "]");
  }
  checkLaunch(op, sizes);
}

void splitToBf16(void* hi, void* lo, const float* x, int64_t count, const std::string& op, const std::string& sizes) {
  if (count == 0) return;
  splitKernel<<<gridFor(count, 256), 256>>>(static_cast<__nv_bfloat16*>(hi), static_cast<__nv_bfloat16*>(lo), x,
                                            count);
  checkLaunch(op, "splitting to bf16, " + sizes);
}

void widenHalf(float* out, const void* w, int64_t count, const std::string& op, const std::string& sizes) {
  if (count == 0) return;
  widenHalfKernel<<<gridFor(count, 256), 256>>>(out, static_cast<const __half*>(w), count);
  checkLaunch(op, "widening f16, " + sizes);
}

std::string cublasStatus() {
  const Cublas& library = openCublas();
  return library.error;
}

void matmul(float* out, const float* x, const void* w, DType wType, const void* bias, DType biasType, int64_t m,
            int64_t n, int64_t k, bool exact) {
  const std::string op = "matmul";
  const std::string sizes = dims({{"m", m}, {"n", n}, {"k", k}});
  if (m == 0 || n == 0) return;
  constexpr int64_t kIntMax = 2147483647;
  if (m > kIntMax || n > kIntMax || k > kIntMax) throw std::runtime_error(op + ": sizes exceed cuBLAS's int [" + sizes + "]");
  Cublas& library = openCublas();
  if (library.handle == nullptr) throw std::runtime_error(op + ": " + library.error);

  float beta = 0.0f;
  if (bias != nullptr) {
    const unsigned grid = gridFor(m * n, 256);
    switch (biasType) {
      case DType::BF16:
        broadcastBiasKernel<<<grid, 256>>>(out, static_cast<const __nv_bfloat16*>(bias), m, n);
        break;
      case DType::F16:
        broadcastBiasKernel<<<grid, 256>>>(out, static_cast<const __half*>(bias), m, n);
        break;
      default:
        broadcastBiasKernel<<<grid, 256>>>(out, static_cast<const float*>(bias), m, n);
    }
    checkLaunch(op, "bias, " + sizes);
    beta = 1.0f;
  } else if (k == 0) {
    check(op, cudaMemsetAsync(out, 0, static_cast<size_t>(m * n) * sizeof(float), 0), sizes);
    return;
  }
  if (k == 0) return;

  if (exact && (wType == DType::BF16 || wType == DType::F16) && backwardPrecision() == BackwardPrecision::F16) {
    // Both operands as scaled fp16 (half_scale.cuh): one GEMM, alpha = 1 / (s_x · s_w) on the device.
    const HalfGemmOperands h = scaledGemmOperands(x, m * k, w, wType == DType::F16, n * k, beta, op, sizes);
    gemmScaledHalf(op, sizes, true, n, m, k, h.w, k, h.x, k, h.alphaBeta, out, n);
    return;
  }
  requireWritten(x, m * k, op);
  if (exact && wType == DType::BF16) {
    auto* hi = static_cast<__nv_bfloat16*>(scratch(ScratchSlot::Half, static_cast<size_t>(m * k) * 4, op));
    __nv_bfloat16* lo = hi + m * k;
    splitToBf16(hi, lo, x, m * k, op, sizes);
    gemm(op, sizes, true, n, m, k, w, k, hi, k, GemmType::BF16, beta, out, n);
    gemm(op, sizes, true, n, m, k, w, k, lo, k, GemmType::BF16, 1.0f, out, n);
    return;
  }
  if (exact && wType == DType::F16) {
    // Panels of w's rows (out's columns) of at most 64 MiB in fp32.
    const int64_t panel = std::max<int64_t>(1, std::min<int64_t>(n, (int64_t{16} << 20) / k));
    auto* wide = static_cast<float*>(scratch(ScratchSlot::Half, static_cast<size_t>(panel * k) * 4, op));
    for (int64_t p0 = 0; p0 < n; p0 += panel) {
      const int64_t rows = std::min(panel, n - p0);
      widenHalf(wide, static_cast<const __half*>(w) + p0 * k, rows * k, op, sizes);
      gemm(op, sizes, true, rows, m, k, wide, k, x, k, GemmType::F32, beta, out + p0, n);
    }
    return;
  }

  const float alpha = 1.0f;
  int type = kR32F;
  const void* input = x;
  if (wType == DType::BF16 || wType == DType::F16) {
    void* half = scratch(ScratchSlot::Half, static_cast<size_t>(m * k) * 2, op);
    const unsigned grid = gridFor((m * k + 3) / 4, 256);
    if (wType == DType::BF16) {
      narrowKernel<<<grid, 256>>>(static_cast<__nv_bfloat16*>(half), x, m * k);
      type = kR16BF;
    } else {
      narrowKernel<<<grid, 256>>>(static_cast<__half*>(half), x, m * k);
      type = kR16F;
    }
    checkLaunch(op, "rounding x, " + sizes);
    input = half;
  }
  const int status = library.gemmEx(library.handle, kOpT, kOpN, static_cast<int>(n), static_cast<int>(m),
                                    static_cast<int>(k), &alpha, w, type, static_cast<int>(k), input, type,
                                    static_cast<int>(k), &beta, out, kR32F, static_cast<int>(n), kCompute32F,
                                    kGemmDefault);
  if (status != 0) {
    cudaGetLastError();
    const char* name = library.statusString != nullptr ? library.statusString(status) : "";
    throw std::runtime_error(op + ": cuBLAS error " + std::to_string(status) + " (" + name + ") [" + sizes + "]");
  }
  checkLaunch(op, sizes);
}

}  // namespace moa::cuda
