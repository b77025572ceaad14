// Element conversions shared by the kernels: any float-typed tensor element (f32, bf16, f16) read as fp32.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace moa::cuda {

__device__ __forceinline__ float widen(float value) { return value; }
__device__ __forceinline__ float widen(__nv_bfloat16 value) { return __bfloat162float(value); }
__device__ __forceinline__ float widen(__half value) { return __half2float(value); }

}  // namespace moa::cuda
