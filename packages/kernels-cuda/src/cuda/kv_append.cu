// Writes new keys/values into the elastic KV cache (same signature as src/cpu/kv_append.cc): token p of slot s,
// KV head g goes to entry regionOffset[s·Hkv + g] + (p < G ? p : G + (p − G) mod ringCap[g]). The entry of
// every (token, KV head) is computed and checked on the host and uploaded with the op; one warp copies a row,
// rounding to bf16 for a bf16 cache.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <vector>

#include "cuda/check.cuh"
#include "cuda/cuda_ops.h"
#include "cuda/kv_cache.cuh"
#include "cuda/scratch.cuh"

namespace moa::cuda {
namespace {

__device__ __forceinline__ void store(float* dst, float value) { *dst = value; }
__device__ __forceinline__ void store(__nv_bfloat16* dst, float value) { *dst = __float2bfloat16_rn(value); }

template <typename C>
__global__ void kvAppendKernel(C* cacheK, C* cacheV, const float* k, const float* v, const int32_t* entries,
                               int64_t rows, int64_t headDim) {
  const int64_t warp = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * blockDim.x / 32;
  const int lane = threadIdx.x % 32;
  for (int64_t row = warp; row < rows; row += warps) {
    const int64_t entry = entries[row];
    const float* kr = k + row * headDim;
    const float* vr = v + row * headDim;
    C* kd = cacheK + entry * headDim;
    C* vd = cacheV + entry * headDim;
    for (int64_t e = lane; e < headDim; e += 32) {
      store(kd + e, kr[e]);
      store(vd + e, vr[e]);
    }
  }
}

}  // namespace

void kvAppend(const KvCache& cache, const float* k, const float* v, const int32_t* slots, const int32_t* positions,
              int64_t tokens) {
  const int64_t hkv = cache.kvHeads;
  std::vector<int32_t> entries(static_cast<size_t>(tokens * hkv));
  for (int64_t t = 0; t < tokens; ++t) {
    checkSlot("kvAppend", "slots", t, slots[t], cache.slots);
    if (positions[t] < 0) {
      throw std::out_of_range("kvAppend: positions[" + std::to_string(t) + "] = " + std::to_string(positions[t]) +
                              " is negative");
    }
    for (int64_t g = 0; g < hkv; ++g) {
      entries[t * hkv + g] = static_cast<int32_t>(cache.regionOffset[slots[t] * hkv + g] +
                                                  cacheEntry(positions[t], cache.sinkTokens, cache.ringCap[g]));
    }
  }
  if (tokens == 0) return;
  const int32_t* deviceEntries = uploadParams(entries, "kvAppend");
  const int64_t rows = tokens * hkv;
  const unsigned grid = gridFor(rows, 8);  // 8 warps per block of 256 threads
  if (cache.type == DType::BF16) {
    kvAppendKernel<<<grid, 256>>>(static_cast<__nv_bfloat16*>(cache.k), static_cast<__nv_bfloat16*>(cache.v), k, v,
                                  deviceEntries, rows, cache.headDim);
  } else {
    kvAppendKernel<<<grid, 256>>>(static_cast<float*>(cache.k), static_cast<float*>(cache.v), k, v, deviceEntries,
                                  rows, cache.headDim);
  }
  checkLaunch("kvAppend", dims({{"tokens", tokens}, {"kvHeads", hkv}, {"headDim", cache.headDim}}));
}

}  // namespace moa::cuda
