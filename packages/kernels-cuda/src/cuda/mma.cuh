// Tensor-core building blocks of the attention kernels (sm_80 and later): ldmatrix, mma.sync m16n8k16 bf16 (and
// fp16) with fp32 accumulation, cp.async, and the XOR swizzle of bf16 tiles in shared memory.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace moa::cuda {

__device__ __forceinline__ uint32_t smemAddress(const void* pointer) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(pointer));
}

__device__ __forceinline__ void ldmatrixX4(uint32_t (&r)[4], uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

__device__ __forceinline__ void ldmatrixX4Trans(uint32_t (&r)[4], uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// The same product on fp16 operands.
__device__ __forceinline__ void mma16816Half(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// bf16 (HALF false) or fp16 (HALF true) operands.
template <bool HALF>
__device__ __forceinline__ void mmaTyped(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (HALF) {
    mma16816Half(c, a, b0, b1);
  } else {
    mma16816(c, a, b0, b1);
  }
}

__device__ __forceinline__ void cpAsync16(uint32_t dst, const void* src, bool valid) {
  const int bytes = valid ? 16 : 0;  // 0: zero-fill, nothing read
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cpAsyncWaitAll() { asm volatile("cp.async.wait_group 0;\n" ::); }

// Offset (in 16-byte chunks) of chunk c of row r in a tile with D/8 chunks per row; rows of ≥ 8 chunks are
// XOR-swizzled so the 8 rows an ldmatrix reads hit 8 different bank groups.
template <int D>
__device__ __forceinline__ int chunkOffset(int row, int chunk) {
  constexpr int kChunks = D / 8;
  if constexpr (kChunks >= 8) {
    return row * kChunks + (chunk ^ (row & 7));
  } else {
    return row * kChunks + chunk;
  }
}

}  // namespace moa::cuda
