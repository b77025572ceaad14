// out = silu(gate) · up, elementwise. Same signature and numerics as src/cpu/silu_mul.cc.
#include <cuda_runtime.h>

#include "cuda/check.cuh"
#include "cuda/cuda_ops.h"

namespace moa::cuda {
namespace {

__global__ void siluMulKernel(float* out, const float* gate, const float* up, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

}  // namespace

void siluMul(float* out, const float* gate, const float* up, int64_t count) {
  if (count == 0) return;
  siluMulKernel<<<gridFor(count, 256), 256>>>(out, gate, up, count);
  checkLaunch("siluMul");
}

}  // namespace moa::cuda
