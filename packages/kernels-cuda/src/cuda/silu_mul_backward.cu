// Gradients of out = silu(gate) · up given dOut, elementwise (same signature and numerics as
// src/cpu/silu_mul_backward.cc): dUp = dOut · g · σ(g), dGate = dOut · up · σ(g) · (1 + g · (1 − σ(g))).
#include <cuda_runtime.h>

#include "cuda/check.cuh"
#include "cuda/cuda_ops.h"

namespace moa::cuda {
namespace {

__global__ void siluMulBackwardKernel(float* dGate, float* dUp, const float* dOut, const float* gate, const float* up,
                                      int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    const float d = dOut[i];
    const float sigmoid = 1.0f / (1.0f + expf(-g));
    dUp[i] = d * g * sigmoid;
    dGate[i] = d * up[i] * sigmoid * (1.0f + g * (1.0f - sigmoid));
  }
}

}  // namespace

void siluMulBackward(float* dGate, float* dUp, const float* dOut, const float* gate, const float* up,
                     int64_t count) {
  if (count == 0) return;
  siluMulBackwardKernel<<<gridFor(count, 256), 256>>>(dGate, dUp, dOut, gate, up, count);
  checkLaunch("siluMulBackward", dims({{"count", count}}));
}

}  // namespace moa::cuda
