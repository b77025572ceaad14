// out = silu(gate) · up, elementwise. Same signature and numerics as src/cpu/silu_mul.cc.
//
// When `out` holds an output pin (half_scale.cuh: pinHalfOutput, the profiler's input of the down projection),
// only its scaled fp16 copy is written, in two passes over gate and up: the maximum of the products, then the
// copy with s from it — the same bits as writing out and converting it, without out's write and two reads.
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "cuda/check.cuh"
#include "cuda/cuda_ops.h"
#include "cuda/half_output.cuh"
#include "cuda/half_scale.cuh"
#include "cuda/scratch.cuh"

namespace moa::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float siluMulValue(float g, float u) { return g / (1.0f + expf(-g)) * u; }

__global__ void siluMulKernel(float* out, const float* gate, const float* up, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = siluMulValue(gate[i], up[i]);
  }
}

// Pass 1 (STORE false): the maximum of |silu(gate)·up| into *maxBits. Pass 2 (STORE true): the scaled copy.
// Four elements per thread and step (count % 4 == 0 and 16-byte aligned inputs: see siluMul).
template <bool STORE>
__global__ void siluMulHalfKernel(const float* gate, const float* up, int64_t count, unsigned* maxBits,
                                  __half* half, float* scaleOut) {
  const float s = STORE ? halfScaleFor(*maxBits) : 1.0f;
  unsigned m = 0;
  const int64_t quads = count / 4;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < quads;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float4 g = reinterpret_cast<const float4*>(gate)[i];
    const float4 u = reinterpret_cast<const float4*>(up)[i];
    const float v0 = siluMulValue(g.x, u.x);
    const float v1 = siluMulValue(g.y, u.y);
    const float v2 = siluMulValue(g.z, u.z);
    const float v3 = siluMulValue(g.w, u.w);
    if constexpr (STORE) {
      reinterpret_cast<uint2*>(half)[i] = make_uint2(packScaledHalves(v0, v1, s), packScaledHalves(v2, v3, s));
    } else {
      m = max(max(m, magnitudeBits(v0)), max(magnitudeBits(v1), max(magnitudeBits(v2), magnitudeBits(v3))));
    }
  }
  if constexpr (STORE) {
    if (blockIdx.x == 0 && threadIdx.x == 0) *scaleOut = s;
  } else {
    blockMaxInto(m, maxBits);
  }
}

}  // namespace

void siluMul(float* out, const float* gate, const float* up, int64_t count) {
  if (count == 0) return;
  const PinnedHalf* pin = takePinnedOutput(out, count, "siluMul");
  if (pin == nullptr) {
    siluMulKernel<<<gridFor(count, kThreads), kThreads>>>(out, gate, up, count);
    checkLaunch("siluMul");
    return;
  }
  const std::string sizes = dims({{"count", count}});
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (count % 4 != 0 || !aligned(gate) || !aligned(up)) {
    // Not the profiler's layout (rows of a multiple of 4 floats): out is written, then converted into the pin.
    siluMulKernel<<<gridFor(count, kThreads), kThreads>>>(out, gate, up, count);
    checkLaunch("siluMul");
    fillPinFrom(*pin, out, "siluMul", sizes);
    return;
  }
  check("siluMul", cudaMemsetAsync(pin->maxBits, 0, sizeof(unsigned), 0), sizes);
  // Few blocks, striding: every block adds one atomicMax on the same word.
  const unsigned grid = std::min<unsigned>(gridFor(count / 4, kThreads), 4 * multiprocessorCount());
  auto* half = static_cast<__half*>(pin->half);
  siluMulHalfKernel<false><<<grid, kThreads>>>(gate, up, count, pin->maxBits, half, pin->scale);
  checkLaunch("siluMul", "maximum, " + sizes);
  siluMulHalfKernel<true><<<grid, kThreads>>>(gate, up, count, pin->maxBits, half, pin->scale);
  checkLaunch("siluMul", "fp16 copy, " + sizes);
}

}  // namespace moa::cuda
