// Hopper warpgroup products (wgmma, sm_90a) for the attention kernels: 64-row tiles of fp16 in shared memory
// with the 128-byte swizzle the tensor cores read directly, instead of ldmatrix into registers (which the
// mma.sync kernels do for every product, and which bounds them by shared-memory bandwidth: each warp reads the
// whole 64 × D operand tile for its 16 rows).
//
// Tile layout (gmmaChunk): a 64 × D tile of 16-bit values is D/64 column blocks of 64 rows × 128 bytes, each
// 16-byte chunk c of row r at chunk c ^ (r mod 8) of its row: the SWIZZLE_128B pattern, which the hardware
// applies to address bits, so every tile starts 1024-byte aligned. The same tile is read two ways:
//   K-major (the operand's rows are M or N, the reduction runs along the row): S = q·kᵀ-shaped products;
//   MN-major (the operand's rows are the reduction index): o += p·v-shaped products, B transposed.
// The wrappers below list one asm operand per accumulator (c[j][i] is operand 4j + i); the accumulator layout
// of m64nNk16 is, per warp w, the mma.sync m16n8 layout of rows 16w…16w+15, so the kernels' element code is
// the same on both paths.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

// The wgmma instructions exist only in the sm_90a device pass; elsewhere (sm_80, the host pass) the wrappers
// trap, and the host never launches a kernel that reaches them (useHopperAttention).
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define MOA_WGMMA 1
#else
#define MOA_WGMMA 0
#endif

namespace moa::cuda {

constexpr int kGmmaAlign = 1024;  // a 128-byte-swizzle atom: 8 rows × 128 bytes

// Byte offset of 16-byte chunk `chunk` of row `row` in a 64-row gmma tile.
__device__ __forceinline__ int gmmaChunk(int row, int chunk) {
  return (chunk >> 3) * (64 * 128) + row * 128 + (((chunk & 7) ^ (row & 7)) << 4);
}

// Shared-memory matrix descriptor, SWIZZLE_128B: start address, leading and stride byte offsets (>> 4).
__device__ __forceinline__ uint64_t gmmaDescriptor(uint32_t address, uint32_t leadingBytes, uint32_t strideBytes) {
  return static_cast<uint64_t>((address & 0x3FFFF) >> 4) | (static_cast<uint64_t>(leadingBytes >> 4) << 16) |
         (static_cast<uint64_t>(strideBytes >> 4) << 32) | (uint64_t{1} << 62);
}

// K-major operand, k-step t (16 values of the row): column block t / 4, 32 bytes per step inside it; the
// 8-row groups are 1024 bytes apart (the leading offset is unused with this swizzle).
__device__ __forceinline__ uint64_t gmmaKMajor(uint32_t tile, int t) {
  return gmmaDescriptor(tile + (t >> 2) * (64 * 128) + (t & 3) * 32, 16, 1024);
}

// MN-major operand, k-step t (16 rows): 2048 bytes per step; the 64-value column blocks (leading) 8 KiB apart,
// the 8-row groups (stride) 1024 bytes apart.
__device__ __forceinline__ uint64_t gmmaMNMajor(uint32_t tile, int t) {
  return gmmaDescriptor(tile + t * 2048, 64 * 128, 1024);
}

__device__ __forceinline__ void wgmmaFence() {
#if MOA_WGMMA
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmmaCommit() {
#if MOA_WGMMA
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmmaWaitAll() {
#if MOA_WGMMA
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
#endif
}

// Shared memory written by cp.async (the generic proxy) is read by wgmma (the async proxy): each writing
// thread fences before the barrier that publishes it.
__device__ __forceinline__ void fenceProxyAsync() {
#if MOA_WGMMA
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// Keeps the compiler from moving reads or writes of an accumulator across a wgmma wait.
template <int N>
__device__ __forceinline__ void fenceAccumulators(float (&c)[N][4]) {
#pragma unroll
  for (int j = 0; j < N; ++j) {
#pragma unroll
    for (int i = 0; i < 4; ++i) asm volatile("" : "+f"(c[j][i])::"memory");
  }
}

// c[64 × 64] = (accumulate ? c : 0) + A[64 × 16] · B[64 × 16]ᵀ, A and B K-major in shared memory.
__device__ __forceinline__ void wgmmaSS64(float (&c)[8][4], uint64_t a, uint64_t b, int accumulate) {
#if MOA_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
      "}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(c[0][0]), "+f"(c[0][1]), "+f"(c[0][2]), "+f"(c[0][3]),
        "+f"(c[1][0]), "+f"(c[1][1]), "+f"(c[1][2]), "+f"(c[1][3]),
        "+f"(c[2][0]), "+f"(c[2][1]), "+f"(c[2][2]), "+f"(c[2][3]),
        "+f"(c[3][0]), "+f"(c[3][1]), "+f"(c[3][2]), "+f"(c[3][3]),
        "+f"(c[4][0]), "+f"(c[4][1]), "+f"(c[4][2]), "+f"(c[4][3]),
        "+f"(c[5][0]), "+f"(c[5][1]), "+f"(c[5][2]), "+f"(c[5][3]),
        "+f"(c[6][0]), "+f"(c[6][1]), "+f"(c[6][2]), "+f"(c[6][3]),
        "+f"(c[7][0]), "+f"(c[7][1]), "+f"(c[7][2]), "+f"(c[7][3])
      : "l"(a), "l"(b), "r"(accumulate));
#else
  __trap();
#endif
}

// c[64 × 64] += A[64 × 16] · B[16 × 64]: A in registers (each warp its 16 rows, in the mma.sync
// m16n8k16 A-fragment layout), B MN-major in shared memory (its rows are the K index).
__device__ __forceinline__ void wgmmaRS64(float (&c)[8][4], const uint32_t (&a)[4], uint64_t b) {
#if MOA_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
      "}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
      : "+f"(c[0][0]), "+f"(c[0][1]), "+f"(c[0][2]), "+f"(c[0][3]),
        "+f"(c[1][0]), "+f"(c[1][1]), "+f"(c[1][2]), "+f"(c[1][3]),
        "+f"(c[2][0]), "+f"(c[2][1]), "+f"(c[2][2]), "+f"(c[2][3]),
        "+f"(c[3][0]), "+f"(c[3][1]), "+f"(c[3][2]), "+f"(c[3][3]),
        "+f"(c[4][0]), "+f"(c[4][1]), "+f"(c[4][2]), "+f"(c[4][3]),
        "+f"(c[5][0]), "+f"(c[5][1]), "+f"(c[5][2]), "+f"(c[5][3]),
        "+f"(c[6][0]), "+f"(c[6][1]), "+f"(c[6][2]), "+f"(c[6][3]),
        "+f"(c[7][0]), "+f"(c[7][1]), "+f"(c[7][2]), "+f"(c[7][3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
#else
  __trap();
#endif
}

// c[64 × 128] += A[64 × 16] · B[16 × 128]: A in registers (each warp its 16 rows, in the mma.sync
// m16n8k16 A-fragment layout), B MN-major in shared memory (its rows are the K index).
__device__ __forceinline__ void wgmmaRS128(float (&c)[16][4], const uint32_t (&a)[4], uint64_t b) {
#if MOA_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,"
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
      "}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
      : "+f"(c[0][0]), "+f"(c[0][1]), "+f"(c[0][2]), "+f"(c[0][3]),
        "+f"(c[1][0]), "+f"(c[1][1]), "+f"(c[1][2]), "+f"(c[1][3]),
        "+f"(c[2][0]), "+f"(c[2][1]), "+f"(c[2][2]), "+f"(c[2][3]),
        "+f"(c[3][0]), "+f"(c[3][1]), "+f"(c[3][2]), "+f"(c[3][3]),
        "+f"(c[4][0]), "+f"(c[4][1]), "+f"(c[4][2]), "+f"(c[4][3]),
        "+f"(c[5][0]), "+f"(c[5][1]), "+f"(c[5][2]), "+f"(c[5][3]),
        "+f"(c[6][0]), "+f"(c[6][1]), "+f"(c[6][2]), "+f"(c[6][3]),
        "+f"(c[7][0]), "+f"(c[7][1]), "+f"(c[7][2]), "+f"(c[7][3]),
        "+f"(c[8][0]), "+f"(c[8][1]), "+f"(c[8][2]), "+f"(c[8][3]),
        "+f"(c[9][0]), "+f"(c[9][1]), "+f"(c[9][2]), "+f"(c[9][3]),
        "+f"(c[10][0]), "+f"(c[10][1]), "+f"(c[10][2]), "+f"(c[10][3]),
        "+f"(c[11][0]), "+f"(c[11][1]), "+f"(c[11][2]), "+f"(c[11][3]),
        "+f"(c[12][0]), "+f"(c[12][1]), "+f"(c[12][2]), "+f"(c[12][3]),
        "+f"(c[13][0]), "+f"(c[13][1]), "+f"(c[13][2]), "+f"(c[13][3]),
        "+f"(c[14][0]), "+f"(c[14][1]), "+f"(c[14][2]), "+f"(c[14][3]),
        "+f"(c[15][0]), "+f"(c[15][1]), "+f"(c[15][2]), "+f"(c[15][3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
#else
  __trap();
#endif
}

}  // namespace moa::cuda
