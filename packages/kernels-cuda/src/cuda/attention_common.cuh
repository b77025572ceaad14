// Pieces shared by the attention kernels: the MoA span rule evaluated on the device exactly as the CPU
// reference does (double, no fused multiply-add), the kept-key intervals of a query row, and bf16 packing.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace moa::cuda {

// Mask modes of the attention kernels.
enum MaskMode : int { kDense = 0, kBlock = 1, kWindow = 2 };

// nb = max(1, floor(clamp(alpha + beta·n, 0, n) / B)) in double, like cpu/common.h: spanBlocks.
__device__ __forceinline__ int64_t spanBlocksDevice(float alpha, float beta, int64_t n, int64_t blockSize) {
  double span = __dadd_rn(static_cast<double>(alpha), __dmul_rn(static_cast<double>(beta), static_cast<double>(n)));
  if (span < 0) span = 0;
  if (span > static_cast<double>(n)) span = static_cast<double>(n);
  const int64_t blocks = static_cast<int64_t>(__ddiv_rn(span, static_cast<double>(blockSize)));
  return blocks < 1 ? 1 : blocks;
}

// Kept keys of query row i are [0, sinkEnd) ∪ [bandStart, i] (cpu/attention_prefill.cc: rowKeys).
struct RowKeys {
  int64_t sinkEnd;
  int64_t bandStart;
};

// blockSpan: nb of the head at the sequence's length (block mode, computed on the host); alpha/beta: the head's
// rule (window mode evaluates nb at i + 1 per row).
__device__ __forceinline__ RowKeys rowKeysDevice(int mode, int64_t i, int64_t blockSpan, float alpha, float beta,
                                                 int64_t blockSize, int64_t sinkTokens) {
  if (mode == kDense) return {0, 0};
  int64_t sinkEnd;
  int64_t bandStart;
  if (mode == kWindow) {
    sinkEnd = sinkTokens;
    bandStart = i - spanBlocksDevice(alpha, beta, i + 1, blockSize) * blockSize + 1;
  } else {
    sinkEnd = (sinkTokens + blockSize - 1) / blockSize * blockSize;
    bandStart = (i / blockSize - blockSpan + 1) * blockSize;
  }
  return {sinkEnd < i + 1 ? sinkEnd : i + 1, bandStart > 0 ? bandStart : 0};
}

__device__ __forceinline__ uint32_t packBf16(float lo, float hi) {
  const __nv_bfloat162 pair = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&pair);
}

__device__ __forceinline__ uint32_t packHalf(float lo, float hi) {
  const __half2 pair = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&pair);
}

template <bool HALF>
__device__ __forceinline__ uint32_t packTyped(float lo, float hi) {
  if constexpr (HALF) {
    return packHalf(lo, hi);
  } else {
    return packBf16(lo, hi);
  }
}

}  // namespace moa::cuda
