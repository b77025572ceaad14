// Row-wise softmax in fp32 with max subtraction (same signature as src/cpu/softmax.cc); a row of −∞ gives
// zeros. One block per row.
#include <cuda_runtime.h>

#include <cmath>

#include "cuda/check.cuh"
#include "cuda/cuda_ops.h"

namespace moa::cuda {
namespace {

constexpr int kThreads = 256;

template <bool kMax>
__device__ float blockReduce(float value, float* shared) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float other = __shfl_xor_sync(0xffffffffu, value, offset);
    value = kMax ? fmaxf(value, other) : value + other;
  }
  if (threadIdx.x % 32 == 0) shared[threadIdx.x / 32] = value;
  __syncthreads();
  float total = shared[0];
  for (int w = 1; w < kThreads / 32; ++w) total = kMax ? fmaxf(total, shared[w]) : total + shared[w];
  __syncthreads();
  return total;
}

__global__ void softmaxKernel(float* out, const float* x, int64_t rows, int64_t cols) {
  __shared__ float shared[kThreads / 32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * cols;
    float* o = out + r * cols;
    float m = -INFINITY;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) m = fmaxf(m, xr[j]);
    m = blockReduce<true>(m, shared);
    const float shift = isinf(m) && m < 0 ? 0.0f : m;
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      const float e = expf(xr[j] - shift);
      o[j] = e;
      sum += e;
    }
    sum = blockReduce<false>(sum, shared);
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) o[j] *= inv;
  }
}

}  // namespace

void softmax(float* out, const float* x, int64_t rows, int64_t cols) {
  if (rows == 0 || cols == 0) return;
  const unsigned grid = static_cast<unsigned>(rows < 65535 ? rows : 65535);
  softmaxKernel<<<grid, kThreads>>>(out, x, rows, cols);
  checkLaunch("softmax", dims({{"rows", rows}, {"cols", cols}}));
}

}  // namespace moa::cuda
