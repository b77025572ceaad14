// out[r, :] = x[r, :] / sqrt(mean(x[r, :]²) + eps) · weight; one block per row, fp32 reduction.
// Same signature and numerics as src/cpu/rms_norm.cc. When out holds an output pin (half_scale.cuh:
// pinHalfOutput) only its scaled fp16 copy is written, in two passes over x (the maximum, then the copy).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>

#include "cuda/check.cuh"
#include "cuda/cuda_ops.h"
#include "cuda/half_output.cuh"
#include "cuda/half_scale.cuh"

namespace moa::cuda {
namespace {

constexpr int kThreads = 256;

template <typename W>
__device__ inline float widen(W value);
template <>
__device__ inline float widen<float>(float value) {
  return value;
}
template <>
__device__ inline float widen<__nv_bfloat16>(__nv_bfloat16 value) {
  return __bfloat162float(value);
}
template <>
__device__ inline float widen<__half>(__half value) {
  return __half2float(value);
}

enum class Output { F32, Maximum, Half };

// F32: out = x · r · weight. Maximum: the maximum of |x · r · weight| into *maxBits. Half: its scaled fp16 copy
// into `half` (the row reduction is the same code in all three, so the values are the same bits). Thread t takes
// the row's elements t, t + kThreads, …: with N > 0 (dim ≤ N · kThreads) it reads them once and keeps them in
// registers for the second step; with N = 0 (any dim) it reads the row twice. Same elements, same order, same bits.
template <typename W, Output OUT, int N>
__global__ void rmsNormKernel(float* out, const float* x, const W* weight, int64_t rows, int64_t dim, float eps,
                              unsigned* maxBits, __half* half, float* scaleOut) {
  __shared__ float warpSums[kThreads / 32];
  const float s = OUT == Output::Half ? halfScaleFor(*maxBits) : 1.0f;
  unsigned m = 0;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float* xr = x + row * dim;
    float v[N > 0 ? N : 1];
    float sum = 0.0f;
    if constexpr (N > 0) {
#pragma unroll
      for (int j = 0; j < N; ++j) {
        const int64_t i = threadIdx.x + static_cast<int64_t>(j) * kThreads;
        v[j] = i < dim ? xr[i] : 0.0f;
        if (i < dim) sum += v[j] * v[j];
      }
    } else {
      for (int64_t i = threadIdx.x; i < dim; i += kThreads) sum += xr[i] * xr[i];
    }
    for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (threadIdx.x % 32 == 0) warpSums[threadIdx.x / 32] = sum;
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < kThreads / 32; ++w) total += warpSums[w];
    const float inv = 1.0f / sqrtf(total / static_cast<float>(dim) + eps);
    const auto emit = [&](int64_t i, float xi) {
      const float value = xi * inv * widen(weight[i]);
      if constexpr (OUT == Output::F32) out[row * dim + i] = value;
      if constexpr (OUT == Output::Maximum) m = max(m, magnitudeBits(value));
      if constexpr (OUT == Output::Half) half[row * dim + i] = __float2half_rn(value * s);
    };
    if constexpr (N > 0) {
#pragma unroll
      for (int j = 0; j < N; ++j) {
        const int64_t i = threadIdx.x + static_cast<int64_t>(j) * kThreads;
        if (i < dim) emit(i, v[j]);
      }
    } else {
      for (int64_t i = threadIdx.x; i < dim; i += kThreads) emit(i, xr[i]);
    }
    __syncthreads();  // warpSums is reused by the next row
  }
  if constexpr (OUT == Output::Maximum) blockMaxInto(m, maxBits);
  if constexpr (OUT == Output::Half) {
    if (blockIdx.x == 0 && threadIdx.x == 0) *scaleOut = s;
  }
}

template <typename W, Output OUT>
void launchOutput(float* out, const float* x, const W* weight, int64_t rows, int64_t dim, float eps,
                  const PinnedHalf* pin) {
  const unsigned grid = static_cast<unsigned>(rows < 65535 ? rows : 65535);
  unsigned* maxBits = pin != nullptr ? pin->maxBits : nullptr;
  __half* half = pin != nullptr ? static_cast<__half*>(pin->half) : nullptr;
  float* scale = pin != nullptr ? pin->scale : nullptr;
  const int64_t perThread = (dim + kThreads - 1) / kThreads;
  if (perThread > 32) {
    rmsNormKernel<W, OUT, 0><<<grid, kThreads>>>(out, x, weight, rows, dim, eps, maxBits, half, scale);
  } else if (perThread <= 4) {
    rmsNormKernel<W, OUT, 4><<<grid, kThreads>>>(out, x, weight, rows, dim, eps, maxBits, half, scale);
  } else if (perThread <= 8) {
    rmsNormKernel<W, OUT, 8><<<grid, kThreads>>>(out, x, weight, rows, dim, eps, maxBits, half, scale);
  } else if (perThread <= 16) {
    rmsNormKernel<W, OUT, 16><<<grid, kThreads>>>(out, x, weight, rows, dim, eps, maxBits, half, scale);
  } else {
    rmsNormKernel<W, OUT, 32><<<grid, kThreads>>>(out, x, weight, rows, dim, eps, maxBits, half, scale);
  }
}

template <typename W>
void launchRmsNorm(float* out, const float* x, const W* weight, int64_t rows, int64_t dim, float eps,
                   const PinnedHalf* pin) {
  if (pin == nullptr) {
    launchOutput<W, Output::F32>(out, x, weight, rows, dim, eps, nullptr);
    checkLaunch("rmsNorm");
    return;
  }
  const std::string sizes = dims({{"rows", rows}, {"dim", dim}});
  check("rmsNorm", cudaMemsetAsync(pin->maxBits, 0, sizeof(unsigned), 0), sizes);
  launchOutput<W, Output::Maximum>(out, x, weight, rows, dim, eps, pin);
  checkLaunch("rmsNorm", "maximum, " + sizes);
  launchOutput<W, Output::Half>(out, x, weight, rows, dim, eps, pin);
  checkLaunch("rmsNorm", "fp16 copy, " + sizes);
}

}  // namespace

void rmsNorm(float* out, const float* x, const void* weight, DType weightType, int64_t rows, int64_t dim, float eps) {
  if (rows == 0) return;
  // With an output pin (the profiler's input of the q/k/v or gate/up projections) only its fp16 copy is written.
  const PinnedHalf* pin = takePinnedOutput(out, rows * dim, "rmsNorm");
  switch (weightType) {
    case DType::BF16:
      launchRmsNorm(out, x, static_cast<const __nv_bfloat16*>(weight), rows, dim, eps, pin);
      break;
    case DType::F16:
      launchRmsNorm(out, x, static_cast<const __half*>(weight), rows, dim, eps, pin);
      break;
    default:
      launchRmsNorm(out, x, static_cast<const float*>(weight), rows, dim, eps, pin);
  }
}

}  // namespace moa::cuda
