// out[r, :] = x[r, :] / sqrt(mean(x[r, :]²) + eps) · weight; one block per row, fp32 reduction.
// Same signature and numerics as src/cpu/rms_norm.cc.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "cuda/check.cuh"
#include "cuda/cuda_ops.h"

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

template <typename W>
__global__ void rmsNormKernel(float* out, const float* x, const W* weight, int64_t rows, int64_t dim, float eps) {
  __shared__ float warpSums[kThreads / 32];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float* xr = x + row * dim;
    float sum = 0.0f;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) sum += xr[i] * xr[i];
    for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (threadIdx.x % 32 == 0) warpSums[threadIdx.x / 32] = sum;
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < kThreads / 32; ++w) total += warpSums[w];
    const float inv = 1.0f / sqrtf(total / static_cast<float>(dim) + eps);
    float* o = out + row * dim;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) o[i] = xr[i] * inv * widen(weight[i]);
    __syncthreads();  // warpSums is reused by the next row
  }
}

}  // namespace

void rmsNorm(float* out, const float* x, const void* weight, DType weightType, int64_t rows, int64_t dim, float eps) {
  if (rows == 0) return;
  const unsigned grid = static_cast<unsigned>(rows < 65535 ? rows : 65535);
  switch (weightType) {
    case DType::BF16:
      rmsNormKernel<<<grid, kThreads>>>(out, x, static_cast<const __nv_bfloat16*>(weight), rows, dim, eps);
      break;
    case DType::F16:
      rmsNormKernel<<<grid, kThreads>>>(out, x, static_cast<const __half*>(weight), rows, dim, eps);
      break;
    default:
      rmsNormKernel<<<grid, kThreads>>>(out, x, static_cast<const float*>(weight), rows, dim, eps);
  }
  checkLaunch("rmsNorm");
}

}  // namespace moa::cuda
