// Device side of the scaled fp16 copies (half_scale.cuh), shared by the conversion kernels (half_scale.cu) and
// the ops that write an output pin's copy themselves (silu_mul.cu, silu_mul_backward.cu, rms_norm.cu): one
// definition of the maximum and of s, so a copy written by its producer is the same bits as a conversion of
// the fp32 values that producer would have written.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace moa::cuda {

// s = 2^(15 − e) with max < 2^e; 1 when the maximum is 0, infinite or NaN (those values pass through as they are).
__device__ __forceinline__ float halfScaleFor(unsigned bits) {
  const float m = __uint_as_float(bits);
  if (!(m > 0.0f) || isinf(m)) return 1.0f;
  int e = 0;
  frexpf(m, &e);
  const int shift = min(max(15 - e, -126), 126);
  return ldexpf(1.0f, shift);
}

// The bits of |x|: non-negative floats order like unsigned integers, and NaN > inf > every finite value.
__device__ __forceinline__ unsigned magnitudeBits(float x) { return __float_as_uint(fabsf(x)); }

// Folds this warp's maxima into *target (which starts at 0).
__device__ __forceinline__ void warpMaxInto(unsigned m, unsigned* target) {
  for (int offset = 16; offset > 0; offset >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, offset));
  if (threadIdx.x % 32 == 0 && m > 0) atomicMax(target, m);
}

// Folds this block's maxima into *target with one atomic: every thread of the block calls it (after its loop).
__device__ __forceinline__ void blockMaxInto(unsigned m, unsigned* target) {
  __shared__ unsigned warpMax[32];
  for (int offset = 16; offset > 0; offset >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, offset));
  if (threadIdx.x % 32 == 0) warpMax[threadIdx.x / 32] = m;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (unsigned w = 1; w < (blockDim.x + 31) / 32; ++w) m = max(m, warpMax[w]);
    if (m > 0) atomicMax(target, m);
  }
}

// Two scaled values as one packed fp16 pair (round to nearest, as a conversion does).
__device__ __forceinline__ uint32_t packScaledHalves(float a, float b, float s) {
  const __half2 pair = __floats2half2_rn(a * s, b * s);
  return *reinterpret_cast<const uint32_t*>(&pair);
}

}  // namespace moa::cuda
