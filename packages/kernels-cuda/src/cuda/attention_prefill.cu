// Causal self-attention over packed variable-length sequences, dense or with per-head MoA masks (same
// arguments as src/cpu/attention_prefill.cc, plus the element type of q/k/v/out: f32 or bf16).
//
// FlashAttention-2 style on the tensor cores (mma.sync m16n8k16 bf16, fp32 accumulate; sm_80 and later): a
// CTA of 8 warps owns 128 query rows of one head (16 rows per warp) and walks 64-key tiles, double-buffered in
// shared memory with cp.async (bf16 inputs) and XOR-swizzled rows so ldmatrix is conflict-free. S = Q·Kᵀ and
// O += P·V stay in registers; the softmax is online in fp32 (exp2 with the scale folded in), and P is rounded
// to bf16 for the P·V product, as FlashAttention does. f32 inputs are rounded to bf16 when they are staged.
//
// MoA: the kept keys of row i are [0, sinkEnd(i)) ∪ [bandStart(i), i] (attention_common.cuh). A CTA visits only
// the key tiles that hold a kept entry for one of its rows (the sink tiles and the band up to the diagonal), so
// tiles outside the band are never loaded and work falls with density; tiles kept whole by every row skip the
// element mask. Each CTA has its own head, so the heads of one launch may have different spans. CTAs are
// ordered by their tile count, longest first, so the causal tail does not leave the GPU idle.
//
// Head dims 16, 32, 64 and 128 take this path; any other head dim runs a simple warp-per-row kernel.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "cuda/attention_common.cuh"
#include "cuda/check.cuh"
#include "cuda/cuda_ops.h"
#include "cuda/mma.cuh"
#include "cuda/scratch.cuh"

namespace moa::cuda {
namespace {

constexpr int kBlockM = 128;  // query rows per CTA
constexpr int kBlockN = 64;   // keys per tile
constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;

// One CTA's work: rows [r0, r0 + 128) of the sequence at packed row seqStart with n tokens, query head h.
struct PrefillTask {
  int32_t seqStart;
  int32_t n;
  int32_t r0;
  int32_t head;
  int32_t blockSpan;  // nb(n) of the head (block mode)
  int32_t pad[3];
};

struct PrefillParams {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  const PrefillTask* tasks;
  const float* alpha;
  const float* beta;
  int queryHeads;
  int kvHeads;
  int mode;
  int blockSize;
  int sinkTokens;
  float scaleLog2;  // scale · log2(e)
};

// Stages rows [row0, row0 + ROWS) (sequence-relative; rows ≥ n are zero) of head `head` of a [T, heads, D]
// tensor into a bf16 tile.
template <typename T, int D, int ROWS>
__device__ __forceinline__ void stageTile(uint4* tile, const T* base, int64_t seqStart, int n, int row0, int heads,
                                          int head) {
  constexpr int kChunks = D / 8;
  for (int c = threadIdx.x; c < ROWS * kChunks; c += kThreads) {
    const int row = c / kChunks;
    const int chunk = c % kChunks;
    const int r = row0 + row;
    const bool valid = r < n;
    const T* src = base + ((seqStart + (valid ? r : 0)) * heads + head) * static_cast<int64_t>(D) + chunk * 8;
    uint4* dst = tile + chunkOffset<D>(row, chunk);
    if constexpr (sizeof(T) == 2) {
      cpAsync16(smemAddress(dst), src, valid);
    } else {
      uint4 packed = make_uint4(0, 0, 0, 0);
      if (valid) {
        const float4 lo = *reinterpret_cast<const float4*>(src);
        const float4 hi = *reinterpret_cast<const float4*>(src + 4);
        packed = make_uint4(packBf16(lo.x, lo.y), packBf16(lo.z, lo.w), packBf16(hi.x, hi.y), packBf16(hi.z, hi.w));
      }
      *dst = packed;
    }
  }
}

__device__ __forceinline__ void storePair(float* dst, float a, float b) { *reinterpret_cast<float2*>(dst) = {a, b}; }
__device__ __forceinline__ void storePair(__nv_bfloat16* dst, float a, float b) {
  *reinterpret_cast<__nv_bfloat162*>(dst) = __floats2bfloat162_rn(a, b);
}

template <typename T, int D>
__global__ void __launch_bounds__(kThreads, 1) prefillKernel(PrefillParams p) {
  constexpr int kSteps = D / 16;      // k-steps of Q·Kᵀ
  constexpr int kKeyTiles = kBlockN / 8;  // n8 tiles of S
  constexpr int kDimTiles = D / 8;    // n8 tiles of O
  extern __shared__ uint4 shared[];
  uint4* qTile = shared;
  uint4* kTiles = qTile + kBlockM * D / 8;
  uint4* vTiles = kTiles + 2 * kBlockN * D / 8;
  __shared__ int rangeInfo[4];  // sinkHi, bandLo, sinkLo, bandHi over the CTA's rows

  const PrefillTask task = p.tasks[blockIdx.x];
  const int h = task.head;
  const int g = h / (p.queryHeads / p.kvHeads);
  const int n = task.n;
  const int r0 = task.r0;
  const int rLast = min(r0 + kBlockM, n) - 1;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const float alpha = p.mode == kDense ? 0.0f : p.alpha[h];
  const float beta = p.mode == kDense ? 0.0f : p.beta[h];
  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);

  // Row ranges of the CTA (valid rows only).
  if (threadIdx.x == 0) {
    rangeInfo[0] = 0;
    rangeInfo[1] = 1 << 30;
    rangeInfo[2] = 1 << 30;
    rangeInfo[3] = 0;
  }
  __syncthreads();
  if (threadIdx.x < kBlockM && r0 + static_cast<int>(threadIdx.x) <= rLast) {
    const RowKeys keys =
        rowKeysDevice(p.mode, r0 + threadIdx.x, task.blockSpan, alpha, beta, p.blockSize, p.sinkTokens);
    atomicMax(&rangeInfo[0], static_cast<int>(keys.sinkEnd));
    atomicMin(&rangeInfo[1], static_cast<int>(keys.bandStart));
    atomicMin(&rangeInfo[2], static_cast<int>(keys.sinkEnd));
    atomicMax(&rangeInfo[3], static_cast<int>(keys.bandStart));
  }
  // This thread's two rows of the m16n8 fragments.
  const int rowA = r0 + warp * 16 + lane / 4;
  const int rowB = rowA + 8;
  const RowKeys keysA = rowKeysDevice(p.mode, rowA, task.blockSpan, alpha, beta, p.blockSize, p.sinkTokens);
  const RowKeys keysB = rowKeysDevice(p.mode, rowB, task.blockSpan, alpha, beta, p.blockSize, p.sinkTokens);
  __syncthreads();
  const int sinkHi = rangeInfo[0];
  const int bandLo = rangeInfo[1];
  const int sinkLo = rangeInfo[2];
  const int bandHi = rangeInfo[3];
  // Key tiles: [0, sinkTiles) then [bandFirst, lastTile].
  const int sinkTiles = (sinkHi + kBlockN - 1) / kBlockN;
  const int lastTile = rLast / kBlockN;
  const int bandFirst = max(bandLo / kBlockN, sinkTiles);
  const int tileCount = sinkTiles + max(0, lastTile - bandFirst + 1);
  auto tileAt = [&](int index) { return index < sinkTiles ? index : bandFirst + (index - sinkTiles); };

  stageTile<T, D, kBlockM>(qTile, q, task.seqStart, n, r0, p.queryHeads, h);
  stageTile<T, D, kBlockN>(kTiles, k, task.seqStart, n, tileAt(0) * kBlockN, p.kvHeads, g);
  stageTile<T, D, kBlockN>(vTiles, v, task.seqStart, n, tileAt(0) * kBlockN, p.kvHeads, g);
  cpAsyncCommit();

  uint32_t qFrag[kSteps][4];
  float o[kDimTiles][4];
  for (int j = 0; j < kDimTiles; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float mA = -INFINITY;
  float mB = -INFINITY;
  float lA = 0.0f;
  float lB = 0.0f;

  for (int index = 0; index < tileCount; ++index) {
    cpAsyncWaitAll();
    __syncthreads();
    if (index == 0) {
      for (int s = 0; s < kSteps; ++s) {
        const int row = warp * 16 + (lane % 16);
        ldmatrixX4(qFrag[s], smemAddress(qTile + chunkOffset<D>(row, 2 * s + lane / 16)));
      }
    }
    const int stage = index & 1;
    if (index + 1 < tileCount) {
      const int next = tileAt(index + 1) * kBlockN;
      stageTile<T, D, kBlockN>(kTiles + (stage ^ 1) * kBlockN * D / 8, k, task.seqStart, n, next, p.kvHeads, g);
      stageTile<T, D, kBlockN>(vTiles + (stage ^ 1) * kBlockN * D / 8, v, task.seqStart, n, next, p.kvHeads, g);
      cpAsyncCommit();
    }
    const uint4* kTile = kTiles + stage * kBlockN * D / 8;
    const uint4* vTile = vTiles + stage * kBlockN * D / 8;
    const int k0 = tileAt(index) * kBlockN;

    // S = Q · Kᵀ for this warp's 16 rows × 64 keys.
    float s[kKeyTiles][4];
    for (int j = 0; j < kKeyTiles; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
    for (int step = 0; step < kSteps; ++step) {
#pragma unroll
      for (int pair = 0; pair < kKeyTiles / 2; ++pair) {
        uint32_t b[4];
        const int key = pair * 16 + (lane % 8) + (lane / 16) * 8;
        ldmatrixX4(b, smemAddress(kTile + chunkOffset<D>(key, 2 * step + (lane / 8) % 2)));
        mma16816(s[2 * pair], qFrag[step], b[0], b[1]);
        mma16816(s[2 * pair + 1], qFrag[step], b[2], b[3]);
      }
    }

    // Mask (only where some row does not keep the whole tile), then the online softmax.
    const bool whole = k0 + kBlockN - 1 <= r0 && (k0 + kBlockN <= sinkLo || k0 >= bandHi);
    float tileMaxA = -INFINITY;
    float tileMaxB = -INFINITY;
#pragma unroll
    for (int j = 0; j < kKeyTiles; ++j) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        float value = s[j][c] * p.scaleLog2;
        if (!whole) {
          const int key = k0 + 8 * j + 2 * (lane % 4) + (c & 1);
          const int row = c < 2 ? rowA : rowB;
          const RowKeys& keys = c < 2 ? keysA : keysB;
          const bool kept = key <= row && (key < keys.sinkEnd || key >= keys.bandStart);
          if (!kept) value = -INFINITY;
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
    // A row with nothing kept so far keeps max −∞: use 0 as its shift so exp2 gives 0, not NaN.
    const float shiftA = newA == -INFINITY ? 0.0f : newA;
    const float shiftB = newB == -INFINITY ? 0.0f : newB;
    const float corrA = exp2f(mA - shiftA);
    const float corrB = exp2f(mB - shiftB);
    mA = newA;
    mB = newB;
    float sumA = 0.0f;
    float sumB = 0.0f;
#pragma unroll
    for (int j = 0; j < kKeyTiles; ++j) {
      s[j][0] = exp2f(s[j][0] - shiftA);
      s[j][1] = exp2f(s[j][1] - shiftA);
      s[j][2] = exp2f(s[j][2] - shiftB);
      s[j][3] = exp2f(s[j][3] - shiftB);
      sumA += s[j][0] + s[j][1];
      sumB += s[j][2] + s[j][3];
    }
    lA = lA * corrA + sumA;
    lB = lB * corrB + sumB;
#pragma unroll
    for (int j = 0; j < kDimTiles; ++j) {
      o[j][0] *= corrA;
      o[j][1] *= corrA;
      o[j][2] *= corrB;
      o[j][3] *= corrB;
    }

    // O += P · V: P's accumulator layout is the A-fragment layout of the next product.
#pragma unroll
    for (int step = 0; step < kBlockN / 16; ++step) {
      uint32_t a[4];
      a[0] = packBf16(s[2 * step][0], s[2 * step][1]);
      a[1] = packBf16(s[2 * step][2], s[2 * step][3]);
      a[2] = packBf16(s[2 * step + 1][0], s[2 * step + 1][1]);
      a[3] = packBf16(s[2 * step + 1][2], s[2 * step + 1][3]);
#pragma unroll
      for (int pair = 0; pair < kDimTiles / 2; ++pair) {
        uint32_t b[4];
        const int key = step * 16 + (lane % 8) + ((lane / 8) % 2) * 8;
        ldmatrixX4Trans(b, smemAddress(vTile + chunkOffset<D>(key, 2 * pair + lane / 16)));
        mma16816(o[2 * pair], a, b[0], b[1]);
        mma16816(o[2 * pair + 1], a, b[2], b[3]);
      }
    }
  }

  for (int offset = 1; offset < 4; offset <<= 1) {
    lA += __shfl_xor_sync(0xffffffffu, lA, offset);
    lB += __shfl_xor_sync(0xffffffffu, lB, offset);
  }
  const float invA = lA > 0.0f ? 1.0f / lA : 0.0f;
  const float invB = lB > 0.0f ? 1.0f / lB : 0.0f;
  T* out = static_cast<T*>(p.out);
  const int64_t rowStride = static_cast<int64_t>(p.queryHeads) * D;
#pragma unroll
  for (int j = 0; j < kDimTiles; ++j) {
    const int col = 8 * j + 2 * (lane % 4);
    if (rowA < n) storePair(out + (task.seqStart + rowA) * rowStride + h * D + col, o[j][0] * invA, o[j][1] * invA);
    if (rowB < n) storePair(out + (task.seqStart + rowB) * rowStride + h * D + col, o[j][2] * invB, o[j][3] * invB);
  }
}

// Any head dim: one warp per (token, query head), fp32 throughout, keys walked one at a time.
struct SimpleParams {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  const int32_t* rowInfo;  // per packed token: its sequence's first row and length (2 ints)
  const int32_t* blockSpan;  // [sequences · Hq], indexed through rowInfo's sequence
  const int32_t* tokenSequence;
  const float* alpha;
  const float* beta;
  int64_t tokens;
  int queryHeads;
  int kvHeads;
  int headDim;
  int mode;
  int blockSize;
  int sinkTokens;
  float scale;
};

__device__ __forceinline__ float load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void store(float* p, int64_t i, float value) { p[i] = value; }
__device__ __forceinline__ void store(__nv_bfloat16* p, int64_t i, float value) { p[i] = __float2bfloat16_rn(value); }

template <typename T>
__global__ void prefillSimpleKernel(SimpleParams p) {
  constexpr int kMaxPerLane = 8;  // head dims up to 256
  const int64_t warpId = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warpId >= p.tokens * p.queryHeads) return;
  const int64_t token = warpId / p.queryHeads;
  const int h = static_cast<int>(warpId % p.queryHeads);
  const int g = h / (p.queryHeads / p.kvHeads);
  const int64_t seqStart = p.rowInfo[2 * token];
  const int64_t i = token - seqStart;
  const int sequence = p.tokenSequence[token];
  const float alpha = p.mode == kDense ? 0.0f : p.alpha[h];
  const float beta = p.mode == kDense ? 0.0f : p.beta[h];
  const RowKeys keys = rowKeysDevice(p.mode, i, p.mode == kBlock ? p.blockSpan[sequence * p.queryHeads + h] : 0,
                                     alpha, beta, p.blockSize, p.sinkTokens);
  const T* q = static_cast<const T*>(p.q) + (token * p.queryHeads + h) * p.headDim;
  float qr[kMaxPerLane];
  float acc[kMaxPerLane];
  for (int e = 0; e < kMaxPerLane; ++e) {
    const int d = lane + 32 * e;
    qr[e] = d < p.headDim ? load(q, d) : 0.0f;
    acc[e] = 0.0f;
  }
  float m = -INFINITY;
  float l = 0.0f;
  const int64_t bandStart = keys.bandStart > keys.sinkEnd ? keys.bandStart : keys.sinkEnd;
  for (int64_t j = 0; j <= i; ++j) {
    if (j == keys.sinkEnd) j = bandStart;
    if (j > i) break;
    const int64_t kvRow = ((seqStart + j) * p.kvHeads + g) * p.headDim;
    const T* kr = static_cast<const T*>(p.k) + kvRow;
    const T* vr = static_cast<const T*>(p.v) + kvRow;
    float dot = 0.0f;
    for (int e = 0; e < kMaxPerLane; ++e) {
      const int d = lane + 32 * e;
      if (d < p.headDim) dot += qr[e] * load(kr, d);
    }
    for (int offset = 16; offset > 0; offset >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
    const float score = dot * p.scale;
    const float next = fmaxf(m, score);
    const float corr = expf(m - next);
    const float w = expf(score - next);
    l = l * corr + w;
    for (int e = 0; e < kMaxPerLane; ++e) {
      const int d = lane + 32 * e;
      acc[e] = acc[e] * corr + (d < p.headDim ? w * load(vr, d) : 0.0f);
    }
    m = next;
  }
  T* out = static_cast<T*>(p.out) + (token * p.queryHeads + h) * p.headDim;
  for (int e = 0; e < kMaxPerLane; ++e) {
    const int d = lane + 32 * e;
    if (d < p.headDim) store(out, d, acc[e] / l);
  }
}

template <typename T, int D>
void launchPrefill(const PrefillParams& params, int ctas, const std::string& sizes) {
  constexpr size_t kShared = static_cast<size_t>(kBlockM + 4 * kBlockN) * D * 2;
  static bool configured = false;
  if (!configured) {
    check("attentionPrefill",
          cudaFuncSetAttribute(prefillKernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(kShared)),
          sizes);
    configured = true;
  }
  prefillKernel<T, D><<<ctas, kThreads, kShared>>>(params);
}

// Key tiles a CTA of rows [r0, rLast] of a head walks (the kernel's own count, for ordering the CTAs).
int64_t tileCost(const MaskRule& mask, int64_t blockSpan, int64_t r0, int64_t rLast, float alpha,
                 float beta) {
  if (!mask.enabled) return rLast / kBlockN + 1;
  const int64_t B = mask.blockSize;
  int64_t sinkEnd;
  int64_t bandStart;
  if (mask.window) {
    sinkEnd = mask.sinkTokens;
    bandStart = r0 - spanBlocks(alpha, beta, r0 + 1, B) * B + 1;
  } else {
    sinkEnd = (mask.sinkTokens + B - 1) / B * B;
    bandStart = (r0 / B - blockSpan + 1) * B;
  }
  sinkEnd = std::min(sinkEnd, rLast + 1);
  bandStart = std::max<int64_t>(bandStart, 0);
  const int64_t sinkTiles = (sinkEnd + kBlockN - 1) / kBlockN;
  const int64_t bandFirst = std::max(bandStart / kBlockN, sinkTiles);
  return sinkTiles + std::max<int64_t>(0, rLast / kBlockN - bandFirst + 1);
}

}  // namespace

void attentionPrefill(void* out, const void* q, const void* k, const void* v, DType type, const int32_t* cuSeqlens,
                      int64_t sequences, const AttentionDims& dims, float scale, const MaskRule& mask) {
  const std::string op = "attentionPrefill";
  const int64_t tokens = cuSeqlens[sequences];
  const int64_t hq = dims.queryHeads;
  const std::string sizes = moa::cuda::dims({{"tokens", tokens}, {"sequences", sequences}, {"queryHeads", hq},
                                              {"kvHeads", dims.kvHeads}, {"headDim", dims.headDim}});
  if (tokens == 0) return;
  if (tokens > (int64_t{1} << 31) - kBlockM) throw std::runtime_error(op + ": too many tokens [" + sizes + "]");
  const int mode = !mask.enabled ? kDense : mask.window ? kWindow : kBlock;
  // nb(n) per (sequence, head) for the block mask, with the CPU reference's own function.
  std::vector<int32_t> blockSpan(static_cast<size_t>(sequences * hq), 0);
  if (mode == kBlock) {
    for (int64_t s = 0; s < sequences; ++s) {
      const int64_t n = cuSeqlens[s + 1] - cuSeqlens[s];
      for (int64_t h = 0; h < hq; ++h) {
        blockSpan[s * hq + h] = static_cast<int32_t>(spanBlocks(mask.alpha[h], mask.beta[h], n, mask.blockSize));
      }
    }
  }
  const int64_t d = dims.headDim;
  const bool tensorCores = d == 16 || d == 32 || d == 64 || d == 128;

  if (!tensorCores) {
    if (d > 256) throw std::runtime_error(op + ": head dims above 256 are not supported [" + sizes + "]");
    // Param block: rowInfo [T·2], tokenSequence [T], blockSpan [S·Hq], alpha [Hq], beta [Hq].
    std::vector<int32_t> block(static_cast<size_t>(3 * tokens + sequences * hq + 2 * hq));
    for (int64_t s = 0; s < sequences; ++s) {
      for (int64_t t = cuSeqlens[s]; t < cuSeqlens[s + 1]; ++t) {
        block[2 * t] = cuSeqlens[s];
        block[2 * t + 1] = cuSeqlens[s + 1] - cuSeqlens[s];
        block[2 * tokens + t] = static_cast<int32_t>(s);
      }
    }
    std::copy(blockSpan.begin(), blockSpan.end(), block.begin() + 3 * tokens);
    if (mode != kDense) {
      std::memcpy(block.data() + 3 * tokens + sequences * hq, mask.alpha, hq * sizeof(float));
      std::memcpy(block.data() + 3 * tokens + sequences * hq + hq, mask.beta, hq * sizeof(float));
    }
    const int32_t* device = uploadParams(block, op);
    SimpleParams params{q, k, v, out, device, device + 3 * tokens, device + 2 * tokens,
                        reinterpret_cast<const float*>(device + 3 * tokens + sequences * hq),
                        reinterpret_cast<const float*>(device + 3 * tokens + sequences * hq + hq), tokens,
                        static_cast<int>(hq), static_cast<int>(dims.kvHeads), static_cast<int>(d), mode,
                        static_cast<int>(mask.blockSize), static_cast<int>(mask.sinkTokens), scale};
    const int64_t warps = tokens * hq;
    const unsigned grid = static_cast<unsigned>((warps + 7) / 8);
    if (type == DType::BF16) {
      prefillSimpleKernel<__nv_bfloat16><<<grid, 256>>>(params);
    } else {
      prefillSimpleKernel<float><<<grid, 256>>>(params);
    }
    checkLaunch(op, sizes);
    return;
  }

  // One task per (128-row tile of a sequence, query head), longest first.
  struct Ordered {
    int64_t cost;
    PrefillTask task;
  };
  std::vector<Ordered> ordered;
  for (int64_t s = 0; s < sequences; ++s) {
    const int64_t n = cuSeqlens[s + 1] - cuSeqlens[s];
    for (int64_t r0 = 0; r0 < n; r0 += kBlockM) {
      const int64_t rLast = std::min(r0 + kBlockM, n) - 1;
      for (int64_t h = 0; h < hq; ++h) {
        const int32_t span = blockSpan[s * hq + h];
        const float alpha = mode == kDense ? 0.0f : mask.alpha[h];
        const float beta = mode == kDense ? 0.0f : mask.beta[h];
        PrefillTask task{static_cast<int32_t>(cuSeqlens[s]), static_cast<int32_t>(n), static_cast<int32_t>(r0),
                         static_cast<int32_t>(h), span, {0, 0, 0}};
        ordered.push_back({tileCost(mask, span, r0, rLast, alpha, beta), task});
      }
    }
  }
  std::stable_sort(ordered.begin(), ordered.end(), [](const Ordered& a, const Ordered& b) { return a.cost > b.cost; });
  // Param block: tasks, then alpha [Hq] and beta [Hq].
  const size_t taskBytes = ordered.size() * sizeof(PrefillTask);
  std::vector<char> block(taskBytes + 2 * hq * sizeof(float));
  for (size_t i = 0; i < ordered.size(); ++i) std::memcpy(block.data() + i * sizeof(PrefillTask), &ordered[i].task, sizeof(PrefillTask));
  if (mode != kDense) {
    std::memcpy(block.data() + taskBytes, mask.alpha, hq * sizeof(float));
    std::memcpy(block.data() + taskBytes + hq * sizeof(float), mask.beta, hq * sizeof(float));
  }
  const char* device = static_cast<const char*>(uploadParams(block.data(), block.size(), op));
  PrefillParams params{q, k, v, out, reinterpret_cast<const PrefillTask*>(device),
                       reinterpret_cast<const float*>(device + taskBytes),
                       reinterpret_cast<const float*>(device + taskBytes + hq * sizeof(float)), static_cast<int>(hq),
                       static_cast<int>(dims.kvHeads), mode, static_cast<int>(mask.blockSize),
                       static_cast<int>(mask.sinkTokens), scale * 1.4426950408889634f};
  const int ctas = static_cast<int>(ordered.size());
  const bool bf16 = type == DType::BF16;
  switch (d) {
    case 16:
      bf16 ? launchPrefill<__nv_bfloat16, 16>(params, ctas, sizes) : launchPrefill<float, 16>(params, ctas, sizes);
      break;
    case 32:
      bf16 ? launchPrefill<__nv_bfloat16, 32>(params, ctas, sizes) : launchPrefill<float, 32>(params, ctas, sizes);
      break;
    case 64:
      bf16 ? launchPrefill<__nv_bfloat16, 64>(params, ctas, sizes) : launchPrefill<float, 64>(params, ctas, sizes);
      break;
    default:
      bf16 ? launchPrefill<__nv_bfloat16, 128>(params, ctas, sizes) : launchPrefill<float, 128>(params, ctas, sizes);
  }
  checkLaunch(op, sizes);
}

}  // namespace moa::cuda
