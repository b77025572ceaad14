// The profiling attention on the GPU (same arguments and definitions as src/cpu/attention_backward.cc and the
// stats path of src/cpu/attention_prefill.cc): a dense causal prefill that also writes each row's softmax
// statistics (m, l), and the backward that writes dq, dk, dv and adds the MoA influence Σ|E_ij| of every causal
// 64×64 block. Read the header of the CPU reference first: this is the same algorithm, on tensor cores.
//
// Why not the forward prefill kernel with a stats output: the backward recomputes P = e^(x − m)/l from its own
// scores, and the influence divides by 1 − P and subtracts D_i = dO_i·O_i from dP_ij, so x, O and dP must be
// consistent with each other to well below bf16's 2⁻⁹. Both kernels here compute x the same way and, by
// default, carry every fp32 operand of x = q·k, dP = dO·v and O = P·v as two bf16 halves (hi = bf16(a),
// lo = bf16(a − hi); a·b ≈ hi·hi + hi·lo + lo·hi, three mma.sync), about fp32 precision
// (backward_precision.cuh; MOA_CUDA_BACKWARD_PRECISION=bf16 rounds each operand once instead, to measure the
// difference). The gradient products dq = dS·k, dk = dSᵀ·q and dv = Pᵀ·dO round dS, P and the operand once
// (bf16, fp32 accumulation): their errors average out over the sum and feed only the layers below.
//
// Layout of the work (FlashAttention-2 style, nothing T×T is stored, memory linear in T):
//   0. the fp32 operands are split into bf16 hi/lo copies once per call (scratch), so every tile after that is
//      a cp.async copy, double-buffered against the products;
//   F. forward: a CTA of 4 warps owns 64 query rows of a query head (16 rows per warp), walks the key tiles up
//      to the diagonal with the online softmax, writes O and (m, l);
//   A. query-major backward: a CTA owns 64 query rows of a query head: D_i = dO_i·O_i (kept for pass B with the
//      row's m·log2(e) and 1/l, one float4 per row), then
//      per key tile S, dP, dS = P(dP − D), dq += dS·k, and the influence row of blocks (query tile, ·) — which
//      only this CTA writes, so the sums need no atomics: each tile's block sum is reduced in a fixed order and
//      added by one thread, and the dominant entry of each row (P > 1/2, evaluated at the row's end from the
//      other entries' sums, exactly as the CPU reference does) is added last, row by row;
//   B. key-major backward: a CTA owns 64 keys and one query head and walks the query tiles from the diagonal
//      on, dk and dv in registers. With GQA each query head writes its own fp32 partial ([T, Hq, D] scratch) and
//      a last kernel sums each group in a fixed order: a CTA per KV head would leave a model with few KV heads
//      (moa-tiny: 2) with too few CTAs, and the first key tile's CTA would walk every query tile of every head
//      of its group alone.
// Every sum has a fixed order, so results are deterministic. CTAs are ordered longest first.
//
// On compute capability 9.0 with fp16 operands (the default precision) the three kernels multiply with wgmma
// (wgmma.cuh): the same CTAs, tiles and element code, the products issued by the CTA's warpgroup on tiles in the
// tensor cores' swizzle (GMMA template flag); elsewhere, and with MOA_CUDA_WGMMA=0, with mma.sync.
//
// Head dims 64 and 128 (the TypeScript backend stages other head dims through the CPU reference).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/attention_common.cuh"
#include "cuda/backward_precision.cuh"
#include "cuda/check.cuh"
#include "cuda/cublas.cuh"
#include "cuda/cuda_ops.h"
#include "cuda/half_scale.cuh"
#include "cuda/mma.cuh"
#include "cuda/scratch.cuh"
#include "cuda/wgmma.cuh"

namespace moa::cuda {
namespace {

constexpr int kTile = 64;  // query rows or keys per CTA and per tile; = the influence block size B
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kEps = FLT_EPSILON;

struct Task {
  int32_t seqStart;
  int32_t n;
  int32_t tile;      // query tile (F, A) or key tile (B) within the sequence
  int32_t head;      // query head (F, A) or KV head (B)
  int32_t sequence;  // index into influence
  int32_t pad[3];
};

struct Params {
  // bf16 copies [T, heads, D]; the lo halves are null without the split.
  const __nv_bfloat16* qHi;
  const __nv_bfloat16* qLo;
  const __nv_bfloat16* kHi;
  const __nv_bfloat16* kLo;
  const __nv_bfloat16* vHi;
  const __nv_bfloat16* vLo;
  const __nv_bfloat16* dOHi;
  const __nv_bfloat16* dOLo;
  const float* out;    // O, fp32 [T, Hq, D] (backward)
  const float* dOut;   // dO, fp32 [T, Hq, D] (backward)
  const float* stats;  // [T, Hq, 2] (backward)
  const float* scales;  // HALF: the powers of two of the fp16 copies of q, k, v, dO (half_scale.cuh); else null
  float* outF;         // O (forward)
  float* statsOut;     // (forward)
  float* dq;
  float* dk;
  float* dv;
  float* influence;  // [sequences, Hq, blocks, blocks] or null
  float4* rowStats;  // [T, Hq]: (m·log2(e), 1/l, D_i, 0) of each row, written by pass A, read by pass B
  float* dkOut;      // pass B's output: dk itself [T, Hkv, D] (MHA), else per-query-head partials [T, Hq, D]
  float* dvOut;
  int outHeads;      // heads of dkOut/dvOut: Hkv or Hq
  int queryStart;    // backward: dO is read from this row of each sequence on (the rows before count as zero)
  const Task* tasks;
  int queryHeads;
  int kvHeads;
  int64_t blocks;
  float scale;
  float scaleLog2;
};

// The factors that undo the operand scales of the fp16 copies (all 1 without HALF), in one place for the three
// kernels: x = (q̂·k̂)/(s_q s_k) (folded into the softmax's log2 scale), dP = (dÔ·v̂)/(s_dO s_v), and the scale
// dS goes to fp16 with, s_dO·s_v/(2^17·D), which bounds it by 2^14 (|dP − D| ≤ 2·D·max|dO|·max|v|).
template <int D, bool HALF>
struct OperandScales {
  float score;     // multiplies q̂·k̂ into log2 units
  float grad;      // multiplies dÔ·v̂ into dP
  float ds;        // multiplies dS before its fp16 rounding
  float invQ;      // 1/s_q, 1/s_k, 1/s_v, 1/s_dO
  float invK;
  float invV;
  float invDO;
  __device__ __forceinline__ explicit OperandScales(const Params& p) {
    const float sq = HALF ? p.scales[0] : 1.0f;
    const float sk = HALF ? p.scales[1] : 1.0f;
    const float sv = HALF ? p.scales[2] : 1.0f;
    const float sdo = HALF ? p.scales[3] : 1.0f;
    score = p.scaleLog2 / (sq * sk);
    grad = 1.0f / (sdo * sv);
    ds = HALF ? sdo * sv * (1.0f / (131072.0f * D)) : 1.0f;
    invQ = 1.0f / sq;
    invK = 1.0f / sk;
    invV = 1.0f / sv;
    invDO = 1.0f / sdo;
  }
};

// 2^x by the SFU alone: exp2f's extra steps keep results below 2^-126 as subnormals, which the probabilities
// and gradients here never need (they flush to zero); every normal result has the same bits.
__device__ __forceinline__ float fastExp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Stages rows [row0, row0 + 64) (sequence-relative; rows ≥ n and rows before `first` are zero) of head `head`
// of a bf16 [T, heads, D] tensor into a swizzled tile.
template <int D, bool GMMA = false>
__device__ __forceinline__ void stage(uint4* tile, const __nv_bfloat16* base, int64_t seqStart, int n, int row0,
                                      int heads, int head, int first = 0) {
  // Each thread copies one chunk column, every kRows-th row: its source advances by a row stride and its
  // destination by a fixed offset (row mod 8, which both swizzles read, is the same for all its rows), so the
  // addresses are computed once instead of per chunk.
  constexpr int kChunks = D / 8;
  constexpr int kRows = kThreads / kChunks;
  static_assert(kRows % 8 == 0, "a thread's rows share row mod 8");
  const int chunk = threadIdx.x % kChunks;
  const int firstRow = threadIdx.x / kChunks;
  const int64_t rowStride = static_cast<int64_t>(heads) * D;
  const __nv_bfloat16* source = base + (seqStart * heads + head) * static_cast<int64_t>(D) + chunk * 8;
  const uint32_t destination = GMMA ? smemAddress(tile) + gmmaChunk(firstRow, chunk)
                                    : smemAddress(tile + chunkOffset<D>(firstRow, chunk));
  // Bytes between a thread's rows: whole rows, or in the gmma layout rows of its 128-byte column block.
  constexpr uint32_t kStep = GMMA ? kRows * 128 : kRows * D * 2;
#pragma unroll
  for (int i = 0; i < kTile / kRows; ++i) {
    const int r = row0 + firstRow + i * kRows;
    const bool valid = r < n && r >= first;
    cpAsync16(destination + i * kStep, source + (valid ? r : 0) * rowStride, valid);
  }
}

// c[16 × 64] += a[this warp's 16 rows] · b[64 rows]ᵀ over D: the score-shaped products (S = q·kᵀ, dP = dO·vᵀ
// and their transposes). With SPLIT, a and b are hi/lo pairs and three products are summed.
template <int D, bool SPLIT, bool HALF>
__device__ __forceinline__ void mmaProductNT(float (&c)[8][4], const uint4* aHi, const uint4* aLo, const uint4* bHi,
                                             const uint4* bLo, int warp, int lane) {
#pragma unroll
  for (int step = 0; step < D / 16; ++step) {
    uint32_t ah[4];
    uint32_t al[4];
    const int aRow = warp * 16 + (lane % 16);
    ldmatrixX4(ah, smemAddress(aHi + chunkOffset<D>(aRow, 2 * step + lane / 16)));
    if constexpr (SPLIT) ldmatrixX4(al, smemAddress(aLo + chunkOffset<D>(aRow, 2 * step + lane / 16)));
#pragma unroll
    for (int pair = 0; pair < 4; ++pair) {
      const int bRow = pair * 16 + (lane % 8) + (lane / 16) * 8;
      const int bChunk = 2 * step + (lane / 8) % 2;
      uint32_t bh[4];
      ldmatrixX4(bh, smemAddress(bHi + chunkOffset<D>(bRow, bChunk)));
      if constexpr (SPLIT) {
        uint32_t bl[4];
        ldmatrixX4(bl, smemAddress(bLo + chunkOffset<D>(bRow, bChunk)));
        mma16816(c[2 * pair], al, bh[0], bh[1]);
        mma16816(c[2 * pair + 1], al, bh[2], bh[3]);
        mma16816(c[2 * pair], ah, bl[0], bl[1]);
        mma16816(c[2 * pair + 1], ah, bl[2], bl[3]);
      }
      mmaTyped<HALF>(c[2 * pair], ah, bh[0], bh[1]);
      mmaTyped<HALF>(c[2 * pair + 1], ah, bh[2], bh[3]);
    }
  }
}

__device__ __forceinline__ void splitPack(float x0, float x1, uint32_t& hi, uint32_t& lo) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(x0, x1);
  hi = *reinterpret_cast<const uint32_t*>(&h);
  lo = packBf16(x0 - __low2float(h), x1 - __high2float(h));
}

// o[16 × D] += p[16 × 64] · b[64 rows × D]: p in the accumulator layout of productNT, which is the A-fragment
// layout of this product. With SPLIT, p and b are split into hi/lo (three products).
template <int D, bool SPLIT, bool HALF>
__device__ __forceinline__ void mmaProductNN(float (&o)[D / 8][4], const float (&p)[8][4], const uint4* bHi,
                                             const uint4* bLo, int lane) {
#pragma unroll
  for (int step = 0; step < kTile / 16; ++step) {
    uint32_t ah[4];
    uint32_t al[4];
    if constexpr (SPLIT) {
      splitPack(p[2 * step][0], p[2 * step][1], ah[0], al[0]);
      splitPack(p[2 * step][2], p[2 * step][3], ah[1], al[1]);
      splitPack(p[2 * step + 1][0], p[2 * step + 1][1], ah[2], al[2]);
      splitPack(p[2 * step + 1][2], p[2 * step + 1][3], ah[3], al[3]);
    } else {
      ah[0] = packTyped<HALF>(p[2 * step][0], p[2 * step][1]);
      ah[1] = packTyped<HALF>(p[2 * step][2], p[2 * step][3]);
      ah[2] = packTyped<HALF>(p[2 * step + 1][0], p[2 * step + 1][1]);
      ah[3] = packTyped<HALF>(p[2 * step + 1][2], p[2 * step + 1][3]);
    }
#pragma unroll
    for (int pair = 0; pair < D / 16; ++pair) {
      const int row = step * 16 + (lane % 8) + ((lane / 8) % 2) * 8;
      uint32_t bh[4];
      ldmatrixX4Trans(bh, smemAddress(bHi + chunkOffset<D>(row, 2 * pair + lane / 16)));
      if constexpr (SPLIT) {
        uint32_t bl[4];
        ldmatrixX4Trans(bl, smemAddress(bLo + chunkOffset<D>(row, 2 * pair + lane / 16)));
        mma16816(o[2 * pair], al, bh[0], bh[1]);
        mma16816(o[2 * pair + 1], al, bh[2], bh[3]);
        mma16816(o[2 * pair], ah, bl[0], bl[1]);
        mma16816(o[2 * pair + 1], ah, bl[2], bl[3]);
      }
      mmaTyped<HALF>(o[2 * pair], ah, bh[0], bh[1]);
      mmaTyped<HALF>(o[2 * pair + 1], ah, bh[2], bh[3]);
    }
  }
}

// The warpgroup's products on the wgmma path (wgmma.cuh), the same shapes as the two above over the whole
// 64-row tiles: issued only, awaitProducts completes them. Tiles in the gmma layout, fp16.
template <int D>
__device__ __forceinline__ void gmmaProductNT(float (&c)[8][4], const uint4* aTile, const uint4* bTile) {
  const uint32_t a = smemAddress(aTile);
  const uint32_t b = smemAddress(bTile);
  wgmmaFence();
#pragma unroll
  for (int t = 0; t < D / 16; ++t) wgmmaSS64(c, gmmaKMajor(a, t), gmmaKMajor(b, t), t > 0 ? 1 : 0);
}

template <int D>
__device__ __forceinline__ void gmmaProductNN(float (&o)[D / 8][4], const float (&p)[8][4], const uint4* bTile) {
  uint32_t a[kTile / 16][4];
#pragma unroll
  for (int step = 0; step < kTile / 16; ++step) {
    a[step][0] = packHalf(p[2 * step][0], p[2 * step][1]);
    a[step][1] = packHalf(p[2 * step][2], p[2 * step][3]);
    a[step][2] = packHalf(p[2 * step + 1][0], p[2 * step + 1][1]);
    a[step][3] = packHalf(p[2 * step + 1][2], p[2 * step + 1][3]);
  }
  const uint32_t b = smemAddress(bTile);
  wgmmaFence();
#pragma unroll
  for (int step = 0; step < kTile / 16; ++step) {
    if constexpr (D == 128) {
      wgmmaRS128(o, a[step], gmmaMNMajor(b, step));
    } else {
      wgmmaRS64(o, a[step], gmmaMNMajor(b, step));
    }
  }
}

template <int D, bool SPLIT, bool HALF, bool GMMA>
__device__ __forceinline__ void productNT(float (&c)[8][4], const uint4* aHi, const uint4* aLo, const uint4* bHi,
                                          const uint4* bLo, int warp, int lane) {
  static_assert(!GMMA || (HALF && !SPLIT), "the wgmma path takes fp16 operands");
  if constexpr (GMMA) {
    gmmaProductNT<D>(c, aHi, bHi);
  } else {
    mmaProductNT<D, SPLIT, HALF>(c, aHi, aLo, bHi, bLo, warp, lane);
  }
}

template <int D, bool SPLIT, bool HALF, bool GMMA>
__device__ __forceinline__ void productNN(float (&o)[D / 8][4], const float (&p)[8][4], const uint4* bHi,
                                          const uint4* bLo, int lane) {
  static_assert(!GMMA || (HALF && !SPLIT), "the wgmma path takes fp16 operands");
  if constexpr (GMMA) {
    gmmaProductNN<D>(o, p, bHi);
  } else {
    mmaProductNN<D, SPLIT, HALF>(o, p, bHi, bLo, lane);
  }
}

// GMMA: waits for the products issued since the last wait and pins their accumulators after the wait.
template <bool GMMA, typename... Accumulators>
__device__ __forceinline__ void awaitProducts(Accumulators&... accumulators) {
  if constexpr (GMMA) {
    wgmmaCommit();
    wgmmaWaitAll();
    (fenceAccumulators(accumulators), ...);
  }
}

// Publishes the tiles this thread's cp.async copies wrote: to the async proxy too on the wgmma path.
template <bool GMMA>
__device__ __forceinline__ void tilesArrived() {
  cpAsyncWaitAll();
  if constexpr (GMMA) fenceProxyAsync();
  __syncthreads();
}

// The dynamic shared memory of a kernel: 1024-byte aligned on the wgmma path (its swizzle is on address bits).
template <bool GMMA>
__device__ __forceinline__ uint4* tileMemory(uint4* shared) {
  if constexpr (GMMA) {
    const uint32_t address = smemAddress(shared);
    const uint32_t pad = (kGmmaAlign - (address & (kGmmaAlign - 1))) & (kGmmaAlign - 1);
    return shared + pad / 16;
  }
  return shared;
}

template <int D>
__device__ __forceinline__ void zero(float (&c)[D / 8][4]) {
#pragma unroll
  for (int j = 0; j < D / 8; ++j) c[j][0] = c[j][1] = c[j][2] = c[j][3] = 0.0f;
}

template <int D>
__host__ __device__ constexpr int tileChunks() {
  return kTile * D / 8;  // uint4 per bf16 tile
}

// Streamed key tiles in flight in the query-major pass: two (cp.async double buffering), except for fp16
// operands of head dim 128, where one stage leaves 64 KiB of shared memory per CTA so three CTAs share an SM
// (ncu: with two stages it ran 2 warps per scheduler, stalled on fixed-latency dependencies; at 168 registers it
// spills ~100 bytes). The key-major pass keeps two stages: its dk and dv accumulators would spill a kilobyte.
// The wgmma path keeps two stages: its accumulators and operands are fewer registers (no ldmatrix fragments),
// and two CTAs of 96 KiB share an SM.
template <int D, bool HALF, bool GMMA = false>
__host__ __device__ constexpr int queryStages() {
  return HALF && D == 128 && !GMMA ? 1 : 2;
}

template <int D, bool HALF, bool GMMA = false>
__host__ __device__ constexpr int queryCtasPerSm() {
  return GMMA ? 2 : HALF ? 3 : 1;
}

// Head dim 64 with fp16 operands: 48 KiB of shared memory, so registers alone decide; three CTAs per SM.
template <int D, bool HALF, bool GMMA = false>
__host__ __device__ constexpr int keyCtasPerSm() {
  return GMMA ? 2 : HALF && D == 64 ? 3 : 1;
}

// Stages both bf16 halves of an fp32 operand (hi, and with SPLIT lo one tile further) like `stage`.
template <int D, bool SPLIT, bool HALF, bool GMMA = false>
__device__ __forceinline__ void stageHalves(uint4* tile, const __nv_bfloat16* hi, const __nv_bfloat16* lo,
                                            int64_t seqStart, int n, int row0, int heads, int head, int first = 0) {
  stage<D, GMMA>(tile, hi, seqStart, n, row0, heads, head, first);
  if constexpr (SPLIT) stage<D>(tile + tileChunks<D>(), lo, seqStart, n, row0, heads, head, first);
}

// ---- F: forward with statistics ----

template <int D, bool SPLIT, bool HALF, bool GMMA>
__global__ void __launch_bounds__(kThreads, GMMA ? 2 : 1) forwardKernel(Params p) {
  constexpr int kT = tileChunks<D>();
  constexpr int kHalves = SPLIT ? 2 : 1;
  extern __shared__ uint4 dynamicShared[];
  uint4* shared = tileMemory<GMMA>(dynamicShared);
  uint4* qTile = shared;                      // [halves]
  uint4* kTiles = qTile + kHalves * kT;       // [2 stages][halves]
  uint4* vTiles = kTiles + 2 * kHalves * kT;  // [2 stages][halves]

  const Task task = p.tasks[blockIdx.x];
  const int h = task.head;
  const int g = h / (p.queryHeads / p.kvHeads);
  const int n = task.n;
  const int q0 = task.tile * kTile;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;

  stageHalves<D, SPLIT, HALF, GMMA>(qTile, p.qHi, p.qLo, task.seqStart, n, q0, p.queryHeads, h);
  auto stageKeys = [&](int stageIndex, int k0) {
    uint4* kt = kTiles + stageIndex * kHalves * kT;
    uint4* vt = vTiles + stageIndex * kHalves * kT;
    stageHalves<D, SPLIT, HALF, GMMA>(kt, p.kHi, p.kLo, task.seqStart, n, k0, p.kvHeads, g);
    stageHalves<D, SPLIT, HALF, GMMA>(vt, p.vHi, p.vLo, task.seqStart, n, k0, p.kvHeads, g);
  };
  stageKeys(0, 0);
  cpAsyncCommit();

  const int rowA = q0 + warp * 16 + lane / 4;
  const int rowB = rowA + 8;
  // HALF: O = (P·v̂)/s_v, exact since the scales are powers of two.
  const OperandScales<D, HALF> scales(p);
  const float scoreScale = scales.score;
  const float outScale = scales.invV;
  float o[D / 8][4];
  zero<D>(o);
  float mA = -INFINITY;
  float mB = -INFINITY;
  float lA = 0.0f;
  float lB = 0.0f;

  for (int kt = 0; kt <= task.tile; ++kt) {
    tilesArrived<GMMA>();
    const int stageIndex = kt & 1;
    if (kt < task.tile) {
      stageKeys(stageIndex ^ 1, (kt + 1) * kTile);
      cpAsyncCommit();
    }
    const uint4* kt0 = kTiles + stageIndex * kHalves * kT;
    const uint4* vt0 = vTiles + stageIndex * kHalves * kT;
    const int k0 = kt * kTile;

    float s[8][4];
#pragma unroll
    for (int j = 0; j < 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
    productNT<D, SPLIT, HALF, GMMA>(s, qTile, qTile + kT, kt0, kt0 + kT, warp, lane);
    awaitProducts<GMMA>(s);

    const bool diagonal = kt == task.tile;
    float tileMaxA = -INFINITY;
    float tileMaxB = -INFINITY;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        float value = s[j][c] * scoreScale;
        if (diagonal) {
          const int key = k0 + 8 * j + 2 * (lane % 4) + (c & 1);
          if (key > (c < 2 ? rowA : rowB)) value = -INFINITY;
        }
        s[j][c] = value;
      }
      tileMaxA = fmaxf(tileMaxA, fmaxf(s[j][0], s[j][1]));
      tileMaxB = fmaxf(tileMaxB, fmaxf(s[j][2], s[j][3]));
    }
    for (int offset = 1; offset < 4; offset <<= 1) {
      tileMaxA = fmaxf(tileMaxA, __shfl_xor_sync(0xffffffffu, tileMaxA, offset));
      tileMaxB = fmaxf(tileMaxB, __shfl_xor_sync(0xffffffffu, tileMaxB, offset));
    }
    const float newA = fmaxf(mA, tileMaxA);
    const float newB = fmaxf(mB, tileMaxB);
    const float shiftA = newA == -INFINITY ? 0.0f : newA;
    const float shiftB = newB == -INFINITY ? 0.0f : newB;
    const float corrA = fastExp2(mA - shiftA);
    const float corrB = fastExp2(mB - shiftB);
    mA = newA;
    mB = newB;
    float sumA = 0.0f;
    float sumB = 0.0f;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      s[j][0] = fastExp2(s[j][0] - shiftA);
      s[j][1] = fastExp2(s[j][1] - shiftA);
      s[j][2] = fastExp2(s[j][2] - shiftB);
      s[j][3] = fastExp2(s[j][3] - shiftB);
      sumA += s[j][0] + s[j][1];
      sumB += s[j][2] + s[j][3];
    }
    lA = lA * corrA + sumA;
    lB = lB * corrB + sumB;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      o[j][0] *= corrA;
      o[j][1] *= corrA;
      o[j][2] *= corrB;
      o[j][3] *= corrB;
    }
    productNN<D, SPLIT, HALF, GMMA>(o, s, vt0, vt0 + kT, lane);
    awaitProducts<GMMA>(o);
  }

  for (int offset = 1; offset < 4; offset <<= 1) {
    lA += __shfl_xor_sync(0xffffffffu, lA, offset);
    lB += __shfl_xor_sync(0xffffffffu, lB, offset);
  }
  const float invA = outScale / lA;
  const float invB = outScale / lB;
  const int64_t rowStride = static_cast<int64_t>(p.queryHeads) * D;
#pragma unroll
  for (int j = 0; j < D / 8; ++j) {
    const int col = 8 * j + 2 * (lane % 4);
    if (rowA < n) {
      *reinterpret_cast<float2*>(p.outF + (task.seqStart + rowA) * rowStride + h * D + col) =
          make_float2(o[j][0] * invA, o[j][1] * invA);
    }
    if (rowB < n) {
      *reinterpret_cast<float2*>(p.outF + (task.seqStart + rowB) * rowStride + h * D + col) =
          make_float2(o[j][2] * invB, o[j][3] * invB);
    }
  }
  if (lane % 4 == 0) {
    // m in the units of the scaled scores (the contract's), l = Σ e^(x − m).
    if (rowA < n) {
      *reinterpret_cast<float2*>(p.statsOut + ((task.seqStart + rowA) * static_cast<int64_t>(p.queryHeads) + h) * 2) =
          make_float2(mA * kLn2, lA);
    }
    if (rowB < n) {
      *reinterpret_cast<float2*>(p.statsOut + ((task.seqStart + rowB) * static_cast<int64_t>(p.queryHeads) + h) * 2) =
          make_float2(mB * kLn2, lB);
    }
  }
}

// ---- A: query-major backward (dq, D_i, influence) ----

template <int D, bool SPLIT, bool HALF, bool GMMA>
__global__ void __launch_bounds__(kThreads, (queryCtasPerSm<D, HALF, GMMA>())) queryKernel(Params p) {
  constexpr int kT = tileChunks<D>();
  constexpr int kHalves = SPLIT ? 2 : 1;
  constexpr int kStages = queryStages<D, HALF, GMMA>();
  extern __shared__ uint4 dynamicShared[];
  uint4* shared = tileMemory<GMMA>(dynamicShared);
  uint4* qTile = shared;                            // [halves]
  uint4* dOTile = qTile + kHalves * kT;             // [halves]
  uint4* kTiles = dOTile + kHalves * kT;            // [stages][halves]
  uint4* vTiles = kTiles + kStages * kHalves * kT;  // [stages][halves]
  __shared__ float rowMax[kTile];  // m · log2(e)
  __shared__ float rowInv[kTile];  // 1 / l
  __shared__ float rowDelta[kTile];
  __shared__ float warpE[2][kWarps];
  __shared__ float dominantE[kTile];
  __shared__ int dominantBlock[kTile];

  const Task task = p.tasks[blockIdx.x];
  const int h = task.head;
  const int g = h / (p.queryHeads / p.kvHeads);
  const int n = task.n;
  const int q0 = task.tile * kTile;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int64_t rowStride = static_cast<int64_t>(p.queryHeads) * D;
  float* influenceRow = p.influence == nullptr
                            ? nullptr
                            : p.influence + ((static_cast<int64_t>(task.sequence) * p.queryHeads + h) * p.blocks +
                                             task.tile) * p.blocks;

  stageHalves<D, SPLIT, HALF, GMMA>(qTile, p.qHi, p.qLo, task.seqStart, n, q0, p.queryHeads, h);
  stageHalves<D, SPLIT, HALF, GMMA>(dOTile, p.dOHi, p.dOLo, task.seqStart, n, q0, p.queryHeads, h, p.queryStart);
  auto stageKeys = [&](int stageIndex, int k0) {
    uint4* kt = kTiles + stageIndex * kHalves * kT;
    uint4* vt = vTiles + stageIndex * kHalves * kT;
    stageHalves<D, SPLIT, HALF, GMMA>(kt, p.kHi, p.kLo, task.seqStart, n, k0, p.kvHeads, g);
    stageHalves<D, SPLIT, HALF, GMMA>(vt, p.vHi, p.vLo, task.seqStart, n, k0, p.kvHeads, g);
  };
  stageKeys(0, 0);
  cpAsyncCommit();

  // D_i = dO_i · O_i in fp32 from the fp32 tensors; rows past the sequence get P = 0 through 1/l = 0, rows
  // before queryStart D_i = 0 (their dO counts as zero).
  for (int r = warp; r < kTile; r += kWarps) {
    const int row = q0 + r;
    const bool valid = row < n;
    float sum = 0.0f;
    if (valid && row >= p.queryStart) {
      const float* dO = p.dOut + (task.seqStart + row) * rowStride + h * D;
      const float* o = p.out + (task.seqStart + row) * rowStride + h * D;
      for (int e = lane; e < D; e += 32) sum += dO[e] * o[e];
    }
    for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (lane == 0) {
      const int64_t index = (task.seqStart + row) * static_cast<int64_t>(p.queryHeads) + h;
      rowDelta[r] = sum;
      rowMax[r] = valid ? p.stats[index * 2] * kLog2e : 0.0f;
      rowInv[r] = valid ? 1.0f / p.stats[index * 2 + 1] : 0.0f;
      dominantBlock[r] = -1;
      if (valid) p.rowStats[index] = make_float4(rowMax[r], rowInv[r], sum, 0.0f);
    }
  }
  __syncthreads();

  const int localA = warp * 16 + lane / 4;
  const int localB = localA + 8;
  const int rowA = q0 + localA;
  const int rowB = q0 + localB;
  const float maxA = rowMax[localA];
  const float maxB = rowMax[localB];
  const float invA = rowInv[localA];
  const float invB = rowInv[localB];
  const float deltaA = rowDelta[localA];
  const float deltaB = rowDelta[localB];
  // dq = (dŜ·k̂)/(dsScale·s_k).
  const OperandScales<D, HALF> scales(p);
  const float scoreScale = scales.score;
  const float gradScale = scales.grad;
  const float dsScale = scales.ds;
  const float dqScale = p.scale / dsScale * scales.invK;
  // Per row, over its entries with P ≤ 1/2: Σ P and Σ P·dP; and the row's entry with P > 1/2, if any.
  float restA = 0.0f;
  float restB = 0.0f;
  float restGradA = 0.0f;
  float restGradB = 0.0f;
  int dominantTileA = -1;
  int dominantTileB = -1;
  float dominantPA = 0.0f;
  float dominantPB = 0.0f;
  float dominantGradA = 0.0f;
  float dominantGradB = 0.0f;

  float dq[D / 8][4];
  zero<D>(dq);
  // Thread 0 adds each tile's block sum to the influence row one tile later, with the block's old value loaded a
  // tile ahead, so the read's latency hides behind the tile's products instead of stalling the barrier.
  const bool adder = influenceRow != nullptr && threadIdx.x == 0;
  float previous = adder ? influenceRow[0] : 0.0f;

  for (int kt = 0; kt <= task.tile; ++kt) {
    tilesArrived<GMMA>();
    if (adder && kt > 0) {
      const float* sums = warpE[(kt - 1) & 1];
      influenceRow[kt - 1] = previous + ((sums[0] + sums[1]) + (sums[2] + sums[3]));
      previous = influenceRow[kt];
    }
    const int stageIndex = kStages == 2 ? kt & 1 : 0;
    if (kStages == 2 && kt < task.tile) {
      stageKeys(stageIndex ^ 1, (kt + 1) * kTile);
      cpAsyncCommit();
    }
    const uint4* kt0 = kTiles + stageIndex * kHalves * kT;
    const uint4* vt0 = vTiles + stageIndex * kHalves * kT;
    const int k0 = kt * kTile;

    float s[8][4];
    float dp[8][4];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
      dp[j][0] = dp[j][1] = dp[j][2] = dp[j][3] = 0.0f;
    }
    productNT<D, SPLIT, HALF, GMMA>(s, qTile, qTile + kT, kt0, kt0 + kT, warp, lane);
    productNT<D, SPLIT, HALF, GMMA>(dp, dOTile, dOTile + kT, vt0, vt0 + kT, warp, lane);
    awaitProducts<GMMA>(s, dp);

    float sumE = 0.0f;
    const bool diagonal = kt == task.tile;  // only there can a key lie after the row
#pragma unroll
    for (int j = 0; j < 8; ++j) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const bool first = c < 2;
        const int row = first ? rowA : rowB;
        const int key = k0 + 8 * j + 2 * (lane % 4) + (c & 1);
        float prob = fastExp2(s[j][c] * scoreScale - (first ? maxA : maxB)) * (first ? invA : invB);
        if (diagonal && key > row) prob = 0.0f;
        const float grad = dp[j][c] * gradScale;
        const float ds = prob * (grad - (first ? deltaA : deltaB));
        // Entries with P ≤ 1/2: 1 − P is well conditioned; row 0 holds only its dominant entry. The divisor
        // lies in [1/2, 1 + eps] there: the fast reciprocal is within 2 ulp. Written as selects that add zero
        // for the row's dominant entry (P > 1/2, at most one per row), which is taken at the row's end: the
        // same sums without a branch per entry.
        const bool small = prob <= 0.5f;
        const float e = __fdividef(fabsf(ds), 1.0f - prob + kEps);
        sumE += small && row > 0 ? e : 0.0f;
        const float kept = small ? prob : 0.0f;
        if (first) {
          restA += kept;
          restGradA += kept * grad;
        } else {
          restB += kept;
          restGradB += kept * grad;
        }
        if (!small) {
          if (first) {
            dominantTileA = kt;
            dominantPA = prob;
            dominantGradA = grad;
          } else {
            dominantTileB = kt;
            dominantPB = prob;
            dominantGradB = grad;
          }
        }
        s[j][c] = ds * dsScale;
      }
    }
    if (influenceRow != nullptr) {
      for (int offset = 16; offset > 0; offset >>= 1) sumE += __shfl_xor_sync(0xffffffffu, sumE, offset);
      if (lane == 0) warpE[kt & 1][warp] = sumE;
    }
    if (p.dq != nullptr) {
      productNN<D, false, HALF, GMMA>(dq, s, kt0, nullptr, lane);
      awaitProducts<GMMA>(dq);
    }
    if (kStages == 1 && kt < task.tile) {
      __syncthreads();  // every warp is done with the tile before it is overwritten
      stageKeys(0, (kt + 1) * kTile);
      cpAsyncCommit();
    }
  }
  __syncthreads();

  if (influenceRow != nullptr) {
    if (adder) {
      const float* sums = warpE[task.tile & 1];
      influenceRow[task.tile] = previous + ((sums[0] + sums[1]) + (sums[2] + sums[3]));
    }
    // The dominant entry j of a row: with R = 1 − P_ij = Σ_{n≠j} P_in and G_ij − S_i = G_ij·R − Σ_{n≠j} P_in G_in,
    // E_ij = −P_ij (G_ij − S_i) / (R + eps), free of the cancellation in 1 − P_ij and dP_ij − D_i.
    for (int offset = 1; offset < 4; offset <<= 1) {
      restA += __shfl_xor_sync(0xffffffffu, restA, offset);
      restB += __shfl_xor_sync(0xffffffffu, restB, offset);
      restGradA += __shfl_xor_sync(0xffffffffu, restGradA, offset);
      restGradB += __shfl_xor_sync(0xffffffffu, restGradB, offset);
    }
    if (dominantTileA >= 0) {
      const float e = rowA == 0 ? dominantGradA * dominantPA
                                : dominantPA * (dominantGradA * restA - restGradA) / (restA + kEps);
      dominantE[localA] = fabsf(e);
      dominantBlock[localA] = dominantTileA;
    }
    if (dominantTileB >= 0) {
      const float e = rowB == 0 ? dominantGradB * dominantPB
                                : dominantPB * (dominantGradB * restB - restGradB) / (restB + kEps);
      dominantE[localB] = fabsf(e);
      dominantBlock[localB] = dominantTileB;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int r = 0; r < kTile; ++r) {
        if (dominantBlock[r] >= 0) influenceRow[dominantBlock[r]] += dominantE[r];
      }
    }
  }

  if (p.dq == nullptr) return;
#pragma unroll
  for (int j = 0; j < D / 8; ++j) {
    const int col = 8 * j + 2 * (lane % 4);
    if (rowA < n) {
      *reinterpret_cast<float2*>(p.dq + (task.seqStart + rowA) * rowStride + h * D + col) =
          make_float2(dq[j][0] * dqScale, dq[j][1] * dqScale);
    }
    if (rowB < n) {
      *reinterpret_cast<float2*>(p.dq + (task.seqStart + rowB) * rowStride + h * D + col) =
          make_float2(dq[j][2] * dqScale, dq[j][3] * dqScale);
    }
  }
}

// ---- B: key-major backward (dk, dv) ----

template <int D, bool SPLIT, bool HALF, bool GMMA>
__global__ void __launch_bounds__(kThreads, (keyCtasPerSm<D, HALF, GMMA>())) keyKernel(Params p) {
  constexpr int kT = tileChunks<D>();
  constexpr int kHalves = SPLIT ? 2 : 1;
  constexpr int kStages = 2;
  extern __shared__ uint4 dynamicShared[];
  uint4* shared = tileMemory<GMMA>(dynamicShared);
  uint4* kTile0 = shared;                             // [halves]
  uint4* vTile0 = kTile0 + kHalves * kT;              // [halves]
  uint4* qTiles = vTile0 + kHalves * kT;              // [stages][halves]
  uint4* dOTiles = qTiles + kStages * kHalves * kT;   // [stages][halves]
  __shared__ float4 colStats[2][kTile];  // pass A's rowStats of the staged query tile

  const Task task = p.tasks[blockIdx.x];
  const int h = task.head;
  const int g = h / (p.queryHeads / p.kvHeads);
  const int n = task.n;
  const int k0 = task.tile * kTile;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int items = (n + kTile - 1) / kTile - task.tile;  // query tiles from the diagonal on
  // Query tiles wholly before queryStart have dO = 0 and add nothing: the walk starts at queryStart's tile.
  const int firstItem = max(0, p.queryStart / kTile - task.tile);

  stageHalves<D, SPLIT, HALF, GMMA>(kTile0, p.kHi, p.kLo, task.seqStart, n, k0, p.kvHeads, g);
  stageHalves<D, SPLIT, HALF, GMMA>(vTile0, p.vHi, p.vLo, task.seqStart, n, k0, p.kvHeads, g);
  auto stageQueries = [&](int stageIndex, int item) {
    const int q0 = (task.tile + item) * kTile;
    uint4* qt = qTiles + stageIndex * kHalves * kT;
    uint4* dt = dOTiles + stageIndex * kHalves * kT;
    stageHalves<D, SPLIT, HALF, GMMA>(qt, p.qHi, p.qLo, task.seqStart, n, q0, p.queryHeads, h);
    stageHalves<D, SPLIT, HALF, GMMA>(dt, p.dOHi, p.dOLo, task.seqStart, n, q0, p.queryHeads, h, p.queryStart);
    // Rows past the sequence read zeros (their q is zero too, so P = e^0 · 0 = 0); rows before queryStart hold
    // D_i = 0 (pass A wrote them so), like their zero dO.
    if (threadIdx.x < kTile) {
      const int row = q0 + threadIdx.x;
      const bool valid = row < n;
      const int64_t index = (task.seqStart + (valid ? row : 0)) * static_cast<int64_t>(p.queryHeads) + h;
      cpAsync16(smemAddress(&colStats[stageIndex][threadIdx.x]), p.rowStats + index, valid);
    }
  };
  stageQueries(0, firstItem);
  cpAsyncCommit();

  const int keyA = k0 + warp * 16 + lane / 4;
  const int keyB = keyA + 8;
  // dv = (P·dÔ)/s_dO, dk = (dŜ·q̂)/(dsScale·s_q).
  const OperandScales<D, HALF> scales(p);
  const float scoreScale = scales.score;
  const float gradScale = scales.grad;
  const float dsScale = scales.ds;
  const float dkScale = p.scale / dsScale * scales.invQ;
  const float dvScale = scales.invDO;
  float dk[D / 8][4];
  float dv[D / 8][4];
  zero<D>(dk);
  zero<D>(dv);

  for (int item = firstItem; item < items; ++item) {
    tilesArrived<GMMA>();
    const int stageIndex = kStages == 2 ? (item - firstItem) & 1 : 0;
    if (kStages == 2 && item + 1 < items) {
      stageQueries(stageIndex ^ 1, item + 1);
      cpAsyncCommit();
    }
    const uint4* qt = qTiles + stageIndex * kHalves * kT;
    const uint4* dt = dOTiles + stageIndex * kHalves * kT;
    const int q0 = (task.tile + item) * kTile;

    // Sᵀ and dPᵀ: this warp's 16 keys × the tile's 64 queries.
    float s[8][4];
    float dp[8][4];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
      dp[j][0] = dp[j][1] = dp[j][2] = dp[j][3] = 0.0f;
    }
    productNT<D, SPLIT, HALF, GMMA>(s, kTile0, kTile0 + kT, qt, qt + kT, warp, lane);
    productNT<D, SPLIT, HALF, GMMA>(dp, vTile0, vTile0 + kT, dt, dt + kT, warp, lane);
    awaitProducts<GMMA>(s, dp);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int column = 8 * j + 2 * (lane % 4) + (c & 1);
        const int key = c < 2 ? keyA : keyB;
        const float4 stats = colStats[stageIndex][column];
        // Computed for every entry and then masked: a select, where a condition around the exponential
        // branched per entry.
        float prob = fastExp2(s[j][c] * scoreScale - stats.x) * stats.y;
        if (item == 0 && q0 + column < key) prob = 0.0f;
        dp[j][c] = prob * (dp[j][c] * gradScale - stats.z) * dsScale;
        s[j][c] = prob;
      }
    }
    productNN<D, false, HALF, GMMA>(dv, s, dt, nullptr, lane);
    productNN<D, false, HALF, GMMA>(dk, dp, qt, nullptr, lane);
    awaitProducts<GMMA>(dv, dk);
    if (kStages == 1 && item + 1 < items) {
      __syncthreads();  // every warp is done with the tiles and column statistics before they are overwritten
      stageQueries(0, item + 1);
      cpAsyncCommit();
    }
  }

  const int64_t rowStride = static_cast<int64_t>(p.outHeads) * D;
  const int outHead = p.outHeads == p.queryHeads ? h : g;
#pragma unroll
  for (int j = 0; j < D / 8; ++j) {
    const int col = 8 * j + 2 * (lane % 4);
    if (keyA < n) {
      const int64_t offset = (task.seqStart + keyA) * rowStride + outHead * D + col;
      *reinterpret_cast<float2*>(p.dkOut + offset) = make_float2(dk[j][0] * dkScale, dk[j][1] * dkScale);
      *reinterpret_cast<float2*>(p.dvOut + offset) = make_float2(dv[j][0] * dvScale, dv[j][1] * dvScale);
    }
    if (keyB < n) {
      const int64_t offset = (task.seqStart + keyB) * rowStride + outHead * D + col;
      *reinterpret_cast<float2*>(p.dkOut + offset) = make_float2(dk[j][2] * dkScale, dk[j][3] * dkScale);
      *reinterpret_cast<float2*>(p.dvOut + offset) = make_float2(dv[j][2] * dvScale, dv[j][3] * dvScale);
    }
  }
}

// dk[t, g, e] = Σ_{j < group} partial[t, g·group + j, e] in that order (and dv alike): the GQA sum of pass B.
__global__ void groupSumKernel(float* dk, float* dv, const float* partialK, const float* partialV, int64_t rows,
                               int group, int64_t headDim) {
  const int64_t count = rows * headDim;  // rows = T · Hkv
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / headDim;
    const int64_t e = i % headDim;
    const int64_t first = row * group * headDim + e;
    float sumK = 0.0f;
    float sumV = 0.0f;
    for (int j = 0; j < group; ++j) {
      sumK += partialK[first + j * headDim];
      sumV += partialV[first + j * headDim];
    }
    dk[i] = sumK;
    dv[i] = sumV;
  }
}

// Dynamic shared memory of each kernel: 16-bit tiles of 64 × D, halves × (fixed + stages × streamed tiles).
template <int D>
constexpr size_t sharedBytes(bool split, int fixedTiles, int streamedTiles, int stages = 2) {
  return static_cast<size_t>(split ? 2 : 1) * (fixedTiles + stages * streamedTiles) * kTile * D * 2;
}

template <typename Kernel>
void launch(Kernel kernel, size_t shared, int ctas, const Params& params, const std::string& op,
            const std::string& sizes) {
  if (ctas == 0) return;
  check(op, cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared)),
        sizes);
  kernel<<<ctas, kThreads, shared>>>(params);
  checkLaunch(op, sizes);
}

// Whether a pass ("forward", "query", "key") runs its wgmma kernel: fp16 operands (the caller checks) on a GPU
// of compute capability 9.0, whose sm_90a code holds them, unless MOA_CUDA_WGMMA says otherwise: "0" none, or a
// comma list of the passes that do (to compare the two paths). Read at every call, like the precision.
bool wgmmaPass(const char* pass) {
  if (computeCapabilityMajor() != 9) return false;
  const char* value = std::getenv("MOA_CUDA_WGMMA");
  if (value == nullptr || value[0] == '\0' || std::strcmp(value, "1") == 0) return true;
  if (std::strcmp(value, "0") == 0) return false;
  return std::string(",").append(value).append(",").find(std::string(",") + pass + ",") != std::string::npos;
}

// Launches of the three kernels in each operand mode; the wgmma kernels only with fp16 operands.
template <int D>
void launchForward(BackwardPrecision precision, bool gmma, int ctas, const Params& params, const std::string& op,
                   const std::string& sizes) {
  const size_t shared = sharedBytes<D>(precision == BackwardPrecision::Split, 1, 2);
  if (precision == BackwardPrecision::Split) {
    launch(forwardKernel<D, true, false, false>, shared, ctas, params, op, sizes);
  } else if (precision == BackwardPrecision::Bf16) {
    launch(forwardKernel<D, false, false, false>, shared, ctas, params, op, sizes);
  } else if (gmma) {
    launch(forwardKernel<D, false, true, true>, shared + kGmmaAlign, ctas, params, op, sizes);
  } else {
    launch(forwardKernel<D, false, true, false>, shared, ctas, params, op, sizes);
  }
}

template <int D>
void launchQuery(BackwardPrecision precision, bool gmma, int ctas, const Params& params, const std::string& op,
                 const std::string& sizes) {
  if (precision == BackwardPrecision::Split) {
    launch(queryKernel<D, true, false, false>, sharedBytes<D>(true, 2, 2), ctas, params, op, sizes);
  } else if (precision == BackwardPrecision::Bf16) {
    launch(queryKernel<D, false, false, false>, sharedBytes<D>(false, 2, 2), ctas, params, op, sizes);
  } else if (gmma) {
    launch(queryKernel<D, false, true, true>, sharedBytes<D>(false, 2, 2, queryStages<D, true, true>()) + kGmmaAlign,
           ctas, params, op, sizes);
  } else {
    launch(queryKernel<D, false, true, false>, sharedBytes<D>(false, 2, 2, queryStages<D, true, false>()), ctas,
           params, op, sizes);
  }
}

template <int D>
void launchKey(BackwardPrecision precision, bool gmma, int ctas, const Params& params, const std::string& op,
               const std::string& sizes) {
  const size_t shared = sharedBytes<D>(precision == BackwardPrecision::Split, 2, 2);
  if (precision == BackwardPrecision::Split) {
    launch(keyKernel<D, true, false, false>, shared, ctas, params, op, sizes);
  } else if (precision == BackwardPrecision::Bf16) {
    launch(keyKernel<D, false, false, false>, shared, ctas, params, op, sizes);
  } else if (gmma) {
    launch(keyKernel<D, false, true, true>, shared + kGmmaAlign, ctas, params, op, sizes);
  } else {
    launch(keyKernel<D, false, true, false>, shared, ctas, params, op, sizes);
  }
}

struct Layout {
  int64_t tokens;
  int64_t qCount;   // T · Hq · D
  int64_t kvCount;  // T · Hkv · D
};

// Carves the scratch block: bf16 halves of q, k, v (and dO), then the row statistics [T, Hq] (float4) and, with GQA, pass B's
// per-query-head partials of dk and dv [T, Hq, D].
struct Scratch {
  __nv_bfloat16* qHi;
  __nv_bfloat16* qLo;
  __nv_bfloat16* kHi;
  __nv_bfloat16* kLo;
  __nv_bfloat16* vHi;
  __nv_bfloat16* vLo;
  __nv_bfloat16* dOHi;
  __nv_bfloat16* dOLo;
  float4* rowStats;
  float* partialK;
  float* partialV;
};

Scratch carve(const Layout& layout, int64_t queryHeads, bool split, bool withGrad, bool partials,
              const std::string& op) {
  const int64_t halves = split ? 2 : 1;
  const int64_t elements = halves * ((withGrad ? 2 : 1) * layout.qCount + 2 * layout.kvCount);
  // delta goes after the bf16 copies, 16-byte aligned.
  const size_t deltaOffset = (static_cast<size_t>(elements) * 2 + 15) / 16 * 16;
  const size_t deltaBytes = withGrad ? static_cast<size_t>(layout.tokens * queryHeads) * sizeof(float4) : 0;
  const size_t partialBytes = partials ? static_cast<size_t>(layout.qCount) * 4 : 0;
  const size_t bytes = deltaOffset + deltaBytes + 2 * partialBytes;
  char* base = static_cast<char*>(scratch(ScratchSlot::Attention, bytes, op));
  auto* cursor = reinterpret_cast<__nv_bfloat16*>(base);
  auto take = [&](int64_t count) {
    __nv_bfloat16* at = cursor;
    cursor += count;
    return at;
  };
  Scratch s{};
  s.qHi = take(layout.qCount);
  s.qLo = split ? take(layout.qCount) : nullptr;
  s.kHi = take(layout.kvCount);
  s.kLo = split ? take(layout.kvCount) : nullptr;
  s.vHi = take(layout.kvCount);
  s.vLo = split ? take(layout.kvCount) : nullptr;
  if (withGrad) {
    s.dOHi = take(layout.qCount);
    s.dOLo = split ? take(layout.qCount) : nullptr;
    s.rowStats = reinterpret_cast<float4*>(base + deltaOffset);
  }
  if (partials) {
    s.partialK = reinterpret_cast<float*>(base + deltaOffset + deltaBytes);
    s.partialV = reinterpret_cast<float*>(base + deltaOffset + deltaBytes + partialBytes);
  }
  return s;
}

__global__ void gatherScalesKernel(float* scales, const float* q, const float* k, const float* v, const float* dO) {
  scales[0] = *q;
  scales[1] = *k;
  scales[2] = *v;
  if (dO != nullptr) scales[3] = *dO;
}

// The 16-bit copies of q, k, v (and dO when given) into the carved scratch: bf16 halves (split/bf16), or scaled
// fp16 whose scales the kernels read from the returned device array (f16; null otherwise). An operand with a
// pinned fp16 copy (pinHalfCopies: the profiler pins q, k and v from a layer's forward to its backward) is read
// from the pin instead: the same bits a conversion would give, so `s` points there.
const float* copyOperands(Scratch& s, BackwardPrecision precision, const float* q, const float* k, const float* v,
                          const float* dOut, const Layout& layout, const std::string& op, const std::string& sizes) {
  if (precision == BackwardPrecision::F16) {
    const PinnedHalf found[3] = {findPinnedHalf(q, layout.qCount), findPinnedHalf(k, layout.kvCount),
                                 findPinnedHalf(v, layout.kvCount)};
    const PinnedHalf* pins[3];
    for (int i = 0; i < 3; ++i) pins[i] = found[i].half != nullptr ? &found[i] : nullptr;
    if (pins[0] == nullptr && pins[1] == nullptr && pins[2] == nullptr) {
      const HalfJob jobs[4] = {{q, s.qHi, layout.qCount, SourceType::F32},
                               {k, s.kHi, layout.kvCount, SourceType::F32},
                               {v, s.vHi, layout.kvCount, SourceType::F32},
                               {dOut, s.dOHi, layout.qCount, SourceType::F32}};
      return toScaledHalves(jobs, dOut == nullptr ? 3 : 4, -1.0f, op, sizes).scales;
    }
    __nv_bfloat16** halves[3] = {&s.qHi, &s.kHi, &s.vHi};
    const float* sources[3] = {q, k, v};
    const int64_t counts[3] = {layout.qCount, layout.kvCount, layout.kvCount};
    HalfJob jobs[4];
    int slot[4] = {-1, -1, -1, -1};  // each operand's job, or -1 when pinned
    int count = 0;
    for (int i = 0; i < 3; ++i) {
      if (pins[i] != nullptr) {
        *halves[i] = static_cast<__nv_bfloat16*>(pins[i]->half);
      } else {
        slot[i] = count;
        jobs[count++] = {sources[i], *halves[i], counts[i], SourceType::F32};
      }
    }
    if (dOut != nullptr) {
      slot[3] = count;
      jobs[count++] = {dOut, s.dOHi, layout.qCount, SourceType::F32};
    }
    const float* converted = count > 0 ? toScaledHalves(jobs, count, -1.0f, op, sizes).scales : nullptr;
    const auto scaleOf = [&](int i) { return pins[i] != nullptr ? pins[i]->scale : converted + slot[i]; };
    // [12, 16) of the scales scratch: toScaledHalves uses [0, 10).
    auto* gathered = static_cast<float*>(scratch(ScratchSlot::Scales, 16 * sizeof(float), op)) + 12;
    gatherScalesKernel<<<1, 1>>>(gathered, scaleOf(0), scaleOf(1), scaleOf(2),
                                 dOut != nullptr ? converted + slot[3] : nullptr);
    checkLaunch(op, "operand scales, " + sizes);
    return gathered;
  }
  splitToBf16(s.qHi, s.qLo, q, layout.qCount, op, sizes);
  splitToBf16(s.kHi, s.kLo, k, layout.kvCount, op, sizes);
  splitToBf16(s.vHi, s.vLo, v, layout.kvCount, op, sizes);
  if (dOut != nullptr) splitToBf16(s.dOHi, s.dOLo, dOut, layout.qCount, op, sizes);
  return nullptr;
}

void checkDims(const std::string& op, const AttentionDims& dims, int64_t tokens, const std::string& sizes) {
  if (dims.headDim != 64 && dims.headDim != 128) {
    throw std::runtime_error(op + ": the CUDA kernel takes head dims 64 and 128 (the backend runs others on the CPU "
                                  "reference) [" + sizes + "]");
  }
  if (tokens > (int64_t{1} << 31) - kTile) throw std::runtime_error(op + ": too many tokens [" + sizes + "]");
}

// Query tiles of every sequence × query heads, longest first (F and A).
// The query tiles of every sequence from `firstTile` on, longest first.
std::vector<Task> queryTasks(const int32_t* cuSeqlens, int64_t sequences, int64_t queryHeads, int32_t firstTile = 0) {
  std::vector<Task> tasks;
  for (int64_t s = 0; s < sequences; ++s) {
    const int32_t n = cuSeqlens[s + 1] - cuSeqlens[s];
    for (int32_t t = firstTile; t * kTile < n; ++t) {
      for (int32_t h = 0; h < queryHeads; ++h) {
        tasks.push_back({cuSeqlens[s], n, t, h, static_cast<int32_t>(s), {0, 0, 0}});
      }
    }
  }
  std::stable_sort(tasks.begin(), tasks.end(), [](const Task& a, const Task& b) { return a.tile > b.tile; });
  return tasks;
}

}  // namespace

void attentionPrefillStats(float* out, float* stats, const float* q, const float* k, const float* v,
                           const int32_t* cuSeqlens, int64_t sequences, const AttentionDims& dims, float scale,
                           int32_t queryStart) {
  const std::string op = "attentionPrefill";
  const int64_t tokens = cuSeqlens[sequences];
  const std::string sizes = moa::cuda::dims({{"tokens", tokens}, {"sequences", sequences},
                                              {"queryHeads", dims.queryHeads}, {"kvHeads", dims.kvHeads},
                                              {"headDim", dims.headDim}});
  checkDims(op, dims, tokens, sizes);
  if (tokens == 0) return;
  const BackwardPrecision precision = backwardPrecision();
  const bool splitOperands = precision == BackwardPrecision::Split;
  const Layout layout{tokens, tokens * dims.queryHeads * dims.headDim, tokens * dims.kvHeads * dims.headDim};
  Scratch s = carve(layout, dims.queryHeads, splitOperands, false, false, op);
  const float* scales = copyOperands(s, precision, q, k, v, nullptr, layout, op, sizes);
  // Rows before queryStart's tile are not needed: their tiles are not run (out and stats left as they are).
  const std::vector<Task> tasks = queryTasks(cuSeqlens, sequences, dims.queryHeads, queryStart / kTile);
  Params params{};
  params.qHi = s.qHi;
  params.qLo = s.qLo;
  params.kHi = s.kHi;
  params.kLo = s.kLo;
  params.vHi = s.vHi;
  params.vLo = s.vLo;
  params.outF = out;
  params.statsOut = stats;
  params.scales = scales;
  params.tasks = uploadParams(tasks, op);
  params.queryHeads = static_cast<int>(dims.queryHeads);
  params.kvHeads = static_cast<int>(dims.kvHeads);
  params.scale = scale;
  params.scaleLog2 = scale * kLog2e;
  const int ctas = static_cast<int>(tasks.size());
  const bool gmma = precision == BackwardPrecision::F16 && wgmmaPass("forward");
  if (dims.headDim == 64) {
    launchForward<64>(precision, gmma, ctas, params, op, sizes);
  } else {
    launchForward<128>(precision, gmma, ctas, params, op, sizes);
  }
}

void attentionBackward(float* dq, float* dk, float* dv, float* influence, const float* dOut, const float* q,
                       const float* k, const float* v, const float* out, const float* stats,
                       const int32_t* cuSeqlens, int64_t sequences, const AttentionDims& dims, float scale,
                       int64_t blocks, int32_t queryStart, bool gradients) {
  const std::string op = "attentionBackward";
  const int64_t tokens = cuSeqlens[sequences];
  const std::string sizes = moa::cuda::dims({{"tokens", tokens}, {"sequences", sequences},
                                              {"queryHeads", dims.queryHeads}, {"kvHeads", dims.kvHeads},
                                              {"headDim", dims.headDim}});
  checkDims(op, dims, tokens, sizes);
  if (tokens == 0) return;
  const BackwardPrecision precision = backwardPrecision();
  const bool splitOperands = precision == BackwardPrecision::Split;
  const Layout layout{tokens, tokens * dims.queryHeads * dims.headDim, tokens * dims.kvHeads * dims.headDim};
  const bool grouped = dims.queryHeads != dims.kvHeads;
  Scratch s = carve(layout, dims.queryHeads, splitOperands, true, grouped, op);
  const float* scales = copyOperands(s, precision, q, k, v, dOut, layout, op, sizes);

  // Query tiles wholly before queryStart: dq = 0 and no influence (their dO counts as zero), nothing to run.
  const int32_t firstTile = queryStart / kTile;
  for (int64_t seq = 0; seq < sequences && firstTile > 0 && gradients; ++seq) {
    const int64_t rows = std::min<int64_t>(int64_t{firstTile} * kTile, cuSeqlens[seq + 1] - cuSeqlens[seq]);
    const size_t rowFloats = static_cast<size_t>(dims.queryHeads * dims.headDim);
    check(op, cudaMemsetAsync(dq + cuSeqlens[seq] * rowFloats, 0, rows * rowFloats * sizeof(float), 0), sizes);
  }
  // One upload: pass A's tasks, then pass B's (key tiles × query heads, the most query tiles below them first).
  std::vector<Task> tasks = queryTasks(cuSeqlens, sequences, dims.queryHeads, firstTile);
  const size_t queryCount = tasks.size();
  std::vector<Task> keyTasks;
  for (int64_t seq = 0; seq < sequences && gradients; ++seq) {
    const int32_t n = cuSeqlens[seq + 1] - cuSeqlens[seq];
    for (int32_t t = 0; t * kTile < n; ++t) {
      for (int32_t h = 0; h < dims.queryHeads; ++h) {
        keyTasks.push_back({cuSeqlens[seq], n, t, h, static_cast<int32_t>(seq), {0, 0, 0}});
      }
    }
  }
  std::stable_sort(keyTasks.begin(), keyTasks.end(),
                   [](const Task& a, const Task& b) { return a.n - a.tile * kTile > b.n - b.tile * kTile; });
  tasks.insert(tasks.end(), keyTasks.begin(), keyTasks.end());
  const Task* device = uploadParams(tasks, op);

  Params params{};
  params.qHi = s.qHi;
  params.qLo = s.qLo;
  params.kHi = s.kHi;
  params.kLo = s.kLo;
  params.vHi = s.vHi;
  params.vLo = s.vLo;
  params.dOHi = s.dOHi;
  params.dOLo = s.dOLo;
  params.out = out;
  params.dOut = dOut;
  params.stats = stats;
  params.scales = scales;
  params.dq = gradients ? dq : nullptr;  // null: the query pass skips dq's product
  params.dk = dk;
  params.dv = dv;
  params.influence = influence;
  params.rowStats = s.rowStats;
  params.dkOut = grouped ? s.partialK : dk;
  params.dvOut = grouped ? s.partialV : dv;
  params.outHeads = static_cast<int>(grouped ? dims.queryHeads : dims.kvHeads);
  params.queryStart = queryStart;
  params.tasks = device;
  params.queryHeads = static_cast<int>(dims.queryHeads);
  params.kvHeads = static_cast<int>(dims.kvHeads);
  params.blocks = blocks;
  params.scale = scale;
  params.scaleLog2 = scale * kLog2e;
  const int queryCtas = static_cast<int>(queryCount);
  const int keyCtas = static_cast<int>(keyTasks.size());
  Params keyParams = params;
  keyParams.tasks = device + queryCount;
  const bool f16 = precision == BackwardPrecision::F16;
  const bool gmmaQuery = f16 && wgmmaPass("query");
  const bool gmmaKey = f16 && wgmmaPass("key");
  if (dims.headDim == 64) {
    launchQuery<64>(precision, gmmaQuery, queryCtas, params, op, sizes);
    launchKey<64>(precision, gmmaKey, keyCtas, keyParams, op, sizes);
  } else {
    launchQuery<128>(precision, gmmaQuery, queryCtas, params, op, sizes);
    launchKey<128>(precision, gmmaKey, keyCtas, keyParams, op, sizes);
  }
  if (grouped && gradients) {
    const int64_t rows = tokens * dims.kvHeads;
    groupSumKernel<<<gridFor(rows * dims.headDim, 256), 256>>>(dk, dv, s.partialK, s.partialV, rows,
                                                               static_cast<int>(dims.queryHeads / dims.kvHeads),
                                                               dims.headDim);
    checkLaunch(op, "summing the GQA groups, " + sizes);
  }
}

}  // namespace moa::cuda
