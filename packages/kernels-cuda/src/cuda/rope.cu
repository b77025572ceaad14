// Rotate-half RoPE in place on x[T, H, D] (same signature and numerics as src/cpu/rope.cc): the angle is
// float(pos) · invFreq[i] rounded to fp32, then cos/sin are taken in double and rounded to fp32, as the CPU
// reference (and torch's fp32 cos/sin) do; llama3 scaling is already folded into invFreq.
#include <cuda_runtime.h>

#include "cuda/check.cuh"
#include "cuda/cuda_ops.h"

namespace moa::cuda {
namespace {

// One block per token: cos/sin of its rotary dims once in shared memory, then every head.
__global__ void ropeKernel(float* x, const int32_t* positions, const float* invFreq, int64_t tokens, int64_t heads,
                           int64_t headDim, int64_t rotaryHalf, float attentionScale) {
  extern __shared__ float table[];  // [rotaryHalf] cos, then [rotaryHalf] sin
  for (int64_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    const float position = static_cast<float>(positions[t]);
    for (int64_t i = threadIdx.x; i < rotaryHalf; i += blockDim.x) {
      const float angle = __fmul_rn(position, invFreq[i]);
      double s;
      double c;
      sincos(static_cast<double>(angle), &s, &c);
      table[i] = static_cast<float>(c) * attentionScale;
      table[rotaryHalf + i] = static_cast<float>(s) * attentionScale;
    }
    __syncthreads();
    float* row = x + t * heads * headDim;
    for (int64_t idx = threadIdx.x; idx < heads * rotaryHalf; idx += blockDim.x) {
      const int64_t h = idx / rotaryHalf;
      const int64_t i = idx % rotaryHalf;
      float* head = row + h * headDim;
      const float a = head[i];
      const float b = head[i + rotaryHalf];
      const float c = table[i];
      const float s = table[rotaryHalf + i];
      head[i] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
      head[i + rotaryHalf] = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
    }
    __syncthreads();  // the table is rewritten for the next token
  }
}

}  // namespace

void rope(float* x, const int32_t* positions, const float* invFreq, int64_t tokens, int64_t heads, int64_t headDim,
          int64_t rotaryHalf, float attentionScale) {
  if (tokens == 0 || heads == 0 || rotaryHalf == 0) return;
  const unsigned grid = static_cast<unsigned>(tokens < 65535 ? tokens : 65535);
  const size_t shared = static_cast<size_t>(rotaryHalf) * 2 * sizeof(float);
  ropeKernel<<<grid, 128, shared>>>(x, positions, invFreq, tokens, heads, headDim, rotaryHalf, attentionScale);
  checkLaunch("rope", dims({{"tokens", tokens}, {"heads", heads}, {"headDim", headDim}, {"rotaryHalf", rotaryHalf}}));
}

}  // namespace moa::cuda
