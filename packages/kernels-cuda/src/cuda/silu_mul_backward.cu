// Gradients of out = silu(gate) · up given dOut, elementwise (same signature and numerics as
// src/cpu/silu_mul_backward.cc): dUp = dOut · g · σ(g), dGate = dOut · up · σ(g) · (1 + g · (1 − σ(g))).
//
// When dGate and dUp hold output pins (half_scale.cuh: pinHalfOutput, the profiler's inputs of the gate and up
// projections' backward), only their scaled fp16 copies are written, in two passes over dOut, gate and up: the
// two maxima, then the copies — the same bits as writing both and converting them, without their fp32 writes
// and two reads each.
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "cuda/check.cuh"
#include "cuda/cuda_ops.h"
#include "cuda/half_output.cuh"
#include "cuda/half_scale.cuh"
#include "cuda/scratch.cuh"

namespace moa::cuda {
namespace {

constexpr int kThreads = 256;

struct SiluGrads {
  float gate;
  float up;
};

__device__ __forceinline__ SiluGrads siluMulGrads(float d, float g, float u) {
  const float sigmoid = 1.0f / (1.0f + expf(-g));
  return {d * u * sigmoid * (1.0f + g * (1.0f - sigmoid)), d * g * sigmoid};
}

__global__ void siluMulBackwardKernel(float* dGate, float* dUp, const float* dOut, const float* gate, const float* up,
                                      int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const SiluGrads grads = siluMulGrads(dOut[i], gate[i], up[i]);
    dUp[i] = grads.up;
    dGate[i] = grads.gate;
  }
}

// Pass 1 (STORE false): the maxima of |dGate| and |dUp| into maxGate and maxUp. Pass 2 (STORE true): the copies.
// Four elements per thread and step (count % 4 == 0 and 16-byte aligned inputs: see siluMulBackward).
template <bool STORE>
__global__ void siluMulBackwardHalfKernel(const float* dOut, const float* gate, const float* up, int64_t count,
                                          unsigned* maxGate, unsigned* maxUp, __half* halfGate, __half* halfUp,
                                          float* scaleGate, float* scaleUp) {
  const float sGate = STORE ? halfScaleFor(*maxGate) : 1.0f;
  const float sUp = STORE ? halfScaleFor(*maxUp) : 1.0f;
  unsigned mGate = 0;
  unsigned mUp = 0;
  const int64_t quads = count / 4;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < quads;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float4 d = reinterpret_cast<const float4*>(dOut)[i];
    const float4 g = reinterpret_cast<const float4*>(gate)[i];
    const float4 u = reinterpret_cast<const float4*>(up)[i];
    const SiluGrads r0 = siluMulGrads(d.x, g.x, u.x);
    const SiluGrads r1 = siluMulGrads(d.y, g.y, u.y);
    const SiluGrads r2 = siluMulGrads(d.z, g.z, u.z);
    const SiluGrads r3 = siluMulGrads(d.w, g.w, u.w);
    if constexpr (STORE) {
      reinterpret_cast<uint2*>(halfGate)[i] =
          make_uint2(packScaledHalves(r0.gate, r1.gate, sGate), packScaledHalves(r2.gate, r3.gate, sGate));
      reinterpret_cast<uint2*>(halfUp)[i] =
          make_uint2(packScaledHalves(r0.up, r1.up, sUp), packScaledHalves(r2.up, r3.up, sUp));
    } else {
      mGate = max(max(mGate, magnitudeBits(r0.gate)),
                  max(magnitudeBits(r1.gate), max(magnitudeBits(r2.gate), magnitudeBits(r3.gate))));
      mUp = max(max(mUp, magnitudeBits(r0.up)),
                max(magnitudeBits(r1.up), max(magnitudeBits(r2.up), magnitudeBits(r3.up))));
    }
  }
  if constexpr (STORE) {
    if (blockIdx.x == 0 && threadIdx.x == 0) {
      *scaleGate = sGate;
      *scaleUp = sUp;
    }
  } else {
    blockMaxInto(mGate, maxGate);
    __syncthreads();  // blockMaxInto's shared words are used again
    blockMaxInto(mUp, maxUp);
  }
}

}  // namespace

void siluMulBackward(float* dGate, float* dUp, const float* dOut, const float* gate, const float* up,
                     int64_t count) {
  const std::string op = "siluMulBackward";
  if (count == 0) return;
  const std::string sizes = dims({{"count", count}});
  const PinnedHalf* pinGate = takePinnedOutput(dGate, count, op);
  const PinnedHalf* pinUp = takePinnedOutput(dUp, count, op);
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  const bool fused = pinGate != nullptr && pinUp != nullptr && count % 4 == 0 && aligned(dOut) && aligned(gate) &&
                     aligned(up);
  if (!fused) {
    // No pins, one of the two, or not the profiler's layout: both outputs are written and the pinned converted.
    siluMulBackwardKernel<<<gridFor(count, kThreads), kThreads>>>(dGate, dUp, dOut, gate, up, count);
    checkLaunch(op, sizes);
    if (pinGate != nullptr) fillPinFrom(*pinGate, dGate, op, sizes);
    if (pinUp != nullptr) fillPinFrom(*pinUp, dUp, op, sizes);
    return;
  }
  check(op, cudaMemsetAsync(pinGate->maxBits, 0, sizeof(unsigned), 0), sizes);
  check(op, cudaMemsetAsync(pinUp->maxBits, 0, sizeof(unsigned), 0), sizes);
  // Few blocks, striding: every block adds one atomicMax per output on the same word.
  const unsigned grid = std::min<unsigned>(gridFor(count / 4, kThreads), 4 * multiprocessorCount());
  auto* halfGate = static_cast<__half*>(pinGate->half);
  auto* halfUp = static_cast<__half*>(pinUp->half);
  siluMulBackwardHalfKernel<false><<<grid, kThreads>>>(dOut, gate, up, count, pinGate->maxBits, pinUp->maxBits,
                                                       halfGate, halfUp, pinGate->scale, pinUp->scale);
  checkLaunch(op, "maxima, " + sizes);
  siluMulBackwardHalfKernel<true><<<grid, kThreads>>>(dOut, gate, up, count, pinGate->maxBits, pinUp->maxBits,
                                                      halfGate, halfUp, pinGate->scale, pinUp->scale);
  checkLaunch(op, "fp16 copies, " + sizes);
}

}  // namespace moa::cuda
