// Rotate-half RoPE in place on x[T, H, D] (same signature and numerics as src/cpu/rope.cc): the angle is
// float(pos) · invFreq[i] rounded to fp32, then cos/sin are taken in double and rounded to fp32, as the CPU
// reference (and torch's fp32 cos/sin) do; llama3 scaling is already folded into invFreq. With an output pin on x
// (half_scale.cuh: pinHalfOutput) only the rotated values' scaled fp16 copy is written.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>

#include "cuda/check.cuh"
#include "cuda/cuda_ops.h"
#include "cuda/half_output.cuh"
#include "cuda/half_scale.cuh"

namespace moa::cuda {
namespace {

enum class Output { F32, Maximum, Half };

// One block per token: cos/sin of its rotary dims once in shared memory, then every head. F32: x rotated in
// place. Maximum: the maximum of |rotated x| (every element: rotated dims and the others) into *maxBits. Half:
// the scaled fp16 copy of rotated x into `half`, x left as it is.
template <Output OUT>
__global__ void ropeKernel(float* x, const int32_t* positions, const float* invFreq, int64_t tokens, int64_t heads,
                           int64_t headDim, int64_t rotaryHalf, float attentionScale, unsigned* maxBits,
                           __half* half, float* scaleOut) {
  extern __shared__ float table[];  // [rotaryHalf] cos, then [rotaryHalf] sin
  const float scale = OUT == Output::Half ? halfScaleFor(*maxBits) : 1.0f;
  const int64_t rest = headDim - 2 * rotaryHalf;  // dims the rotation leaves as they are
  unsigned m = 0;
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
    __half* halfRow = OUT == Output::Half ? half + t * heads * headDim : nullptr;
    for (int64_t idx = threadIdx.x; idx < heads * rotaryHalf; idx += blockDim.x) {
      const int64_t h = idx / rotaryHalf;
      const int64_t i = idx % rotaryHalf;
      float* head = row + h * headDim;
      const float a = head[i];
      const float b = head[i + rotaryHalf];
      const float c = table[i];
      const float s = table[rotaryHalf + i];
      const float first = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
      const float second = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
      if constexpr (OUT == Output::F32) {
        head[i] = first;
        head[i + rotaryHalf] = second;
      }
      if constexpr (OUT == Output::Maximum) m = max(m, max(magnitudeBits(first), magnitudeBits(second)));
      if constexpr (OUT == Output::Half) {
        halfRow[h * headDim + i] = __float2half_rn(first * scale);
        halfRow[h * headDim + i + rotaryHalf] = __float2half_rn(second * scale);
      }
    }
    if constexpr (OUT != Output::F32) {
      for (int64_t idx = threadIdx.x; idx < heads * rest; idx += blockDim.x) {
        const int64_t offset = (idx / rest) * headDim + 2 * rotaryHalf + idx % rest;
        if constexpr (OUT == Output::Maximum) m = max(m, magnitudeBits(row[offset]));
        if constexpr (OUT == Output::Half) halfRow[offset] = __float2half_rn(row[offset] * scale);
      }
    }
    __syncthreads();  // the table is rewritten for the next token
  }
  if constexpr (OUT == Output::Maximum) blockMaxInto(m, maxBits);
  if constexpr (OUT == Output::Half) {
    if (blockIdx.x == 0 && threadIdx.x == 0) *scaleOut = scale;
  }
}

}  // namespace

void rope(float* x, const int32_t* positions, const float* invFreq, int64_t tokens, int64_t heads, int64_t headDim,
          int64_t rotaryHalf, float attentionScale) {
  if (tokens == 0 || heads == 0 || headDim == 0) return;
  const std::string sizes =
      dims({{"tokens", tokens}, {"heads", heads}, {"headDim", headDim}, {"rotaryHalf", rotaryHalf}});
  const unsigned grid = static_cast<unsigned>(tokens < 65535 ? tokens : 65535);
  const size_t shared = static_cast<size_t>(rotaryHalf) * 2 * sizeof(float);
  // With an output pin (the profiler's dq and dk before their projections' backward) only its fp16 copy is
  // written, in two passes (the maximum, then the copy); x keeps its values.
  const PinnedHalf* pin = takePinnedOutput(x, tokens * heads * headDim, "rope");
  if (pin == nullptr) {
    if (rotaryHalf == 0) return;
    ropeKernel<Output::F32><<<grid, 128, shared>>>(x, positions, invFreq, tokens, heads, headDim, rotaryHalf,
                                                   attentionScale, nullptr, nullptr, nullptr);
    checkLaunch("rope", sizes);
    return;
  }
  auto* half = static_cast<__half*>(pin->half);
  check("rope", cudaMemsetAsync(pin->maxBits, 0, sizeof(unsigned), 0), sizes);
  ropeKernel<Output::Maximum><<<grid, 128, shared>>>(x, positions, invFreq, tokens, heads, headDim, rotaryHalf,
                                                     attentionScale, pin->maxBits, half, pin->scale);
  checkLaunch("rope", "maximum, " + sizes);
  ropeKernel<Output::Half><<<grid, 128, shared>>>(x, positions, invFreq, tokens, heads, headDim, rotaryHalf,
                                                  attentionScale, pin->maxBits, half, pin->scale);
  checkLaunch("rope", "fp16 copy, " + sizes);
}

}  // namespace moa::cuda
