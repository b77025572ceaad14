// One new query per sequence against the elastic KV cache (same arguments as src/cpu/attention_decode.cc).
//
// Split-K flash decoding, bandwidth-bound by design: a work item is (sequence, KV head, up to 4 of its query
// heads), so each cached key and value is read once per GQA group. The cached positions a head may read are
// the sink [0, min(G, n)) and the ring [firstRing, n − 1] (the last ringCap positions, cut further by the window
// mask per head); the host lays out each item's position range, and the range is split across CTAs so short
// batches still fill the GPU. Inside a CTA, D/8 lanes share a key (8 dims = one 16-byte bf16 load per lane),
// each lane group keeps its own online softmax over 4 keys per step, and the groups, warps and CTAs are merged
// at the end (split partials by a second small kernel). Head dims 16–256 in powers of two take this path;
// others run a simple warp-per-head kernel.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cuda/attention_common.cuh"
#include "cuda/check.cuh"
#include "cuda/cuda_ops.h"
#include "cuda/kv_cache.cuh"
#include "cuda/scratch.cuh"

namespace moa::cuda {
namespace {

constexpr int kHeadsPerItem = 4;
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;

// One (sequence, KV head, query-head chunk): positions idx ∈ [0, count) map to the sink (idx < sinkEnd) or to
// ring positions firstRing + (idx − sinkEnd).
struct DecodeItem {
  int32_t region;     // first entry of the (slot, KV head) region
  int32_t sinkEnd;    // min(G, n)
  int32_t firstRing;  // first ring position read by any head of the chunk
  int32_t count;      // sinkEnd + ring positions
  int32_t ringCap;
  int32_t ringPhase;  // (firstRing − G) mod ringCap: ring slot of firstRing
  int32_t batch;      // b
  int32_t head0;      // first query head of the chunk
  int32_t heads;      // query heads in the chunk (≤ 4)
  int32_t ringStart[kHeadsPerItem];  // per head: first ring position it keeps
  int32_t pad[3];
};

struct DecodeParams {
  const float* q;
  float* out;
  const void* k;
  const void* v;
  const DecodeItem* items;
  float* partialAcc;  // [items][splits][4][D]
  float* partialMl;   // [items][splits][4][2]
  int items_;
  int splits;
  int chunk;  // positions per split
  int queryHeads;
  int sinkTokens;
  float scaleLog2;
};

__device__ __forceinline__ void loadRow(const float* src, float (&dst)[8]) {
  const float4 a = *reinterpret_cast<const float4*>(src);
  const float4 b = *reinterpret_cast<const float4*>(src + 4);
  dst[0] = a.x, dst[1] = a.y, dst[2] = a.z, dst[3] = a.w, dst[4] = b.x, dst[5] = b.y, dst[6] = b.z, dst[7] = b.w;
}

__device__ __forceinline__ void cpAsync16(void* dst, const void* src, bool valid) {
  const uint32_t address = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  const int bytes = valid ? 16 : 0;  // 0: zero-fill, nothing read
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(address), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void cpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

// Eight cache elements of one row as this lane staged them in shared memory (bf16: one 16-byte piece, f32: two).
__device__ __forceinline__ void unpack(const __nv_bfloat16*, const uint4* piece, float (&dst)[8]) {
  const uint4 raw = piece[0];
  const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(pairs[i]);
    dst[2 * i] = f.x;
    dst[2 * i + 1] = f.y;
  }
}
__device__ __forceinline__ void unpack(const float*, const uint4* piece, float (&dst)[8]) {
  const float4 a = *reinterpret_cast<const float4*>(piece);
  const float4 b = *reinterpret_cast<const float4*>(piece + 32);  // the lane's second piece, one row of lanes on
  dst[0] = a.x, dst[1] = a.y, dst[2] = a.z, dst[3] = a.w, dst[4] = b.x, dst[5] = b.y, dst[6] = b.z, dst[7] = b.w;
}

__device__ __forceinline__ float widenValue(float value) { return value; }
__device__ __forceinline__ float widenValue(__nv_bfloat16 value) { return __bfloat162float(value); }

// Merges softmax state (m2, l2, acc2) into (m, l, acc).
__device__ __forceinline__ void mergeState(float& m, float& l, float (&acc)[8], float m2, float l2,
                                           const float (&acc2)[8]) {
  const float top = fmaxf(m, m2);
  if (top == -INFINITY) return;
  const float c1 = exp2f(m - top);
  const float c2 = exp2f(m2 - top);
  l = l * c1 + l2 * c2;
#pragma unroll
  for (int e = 0; e < 8; ++e) acc[e] = acc[e] * c1 + acc2[e] * c2;
  m = top;
}

constexpr int kStages = 4;  // cp.async pipeline depth per warp

// Keys per lane group per step: 4 bf16 rows or 2 f32 rows, 64 bytes of K and V per lane either way.
template <typename C>
__host__ __device__ constexpr int unrollOf() {
  return sizeof(C) == 2 ? 4 : 2;
}

// Dynamic shared memory of decodeKernel<C, D>: per warp, kStages steps of K and V pieces.
template <typename C>
constexpr size_t decodeSharedBytes() {
  return static_cast<size_t>(kWarps) * kStages * unrollOf<C>() * 2 * (sizeof(C) / 2) * 32 * 16;
}

template <typename C, int D>
__global__ void __launch_bounds__(kThreads) decodeKernel(DecodeParams p) {
  constexpr int kLanes = D / 8;                // lanes per key
  constexpr int kKeysPerWarp = 32 / kLanes;    // keys side by side in a warp
  constexpr int kUnroll = unrollOf<C>();       // keys per lane group per step
  constexpr int kWarpKeys = kKeysPerWarp * kUnroll;
  constexpr int kStep = kWarps * kWarpKeys;
  constexpr int kPieces = sizeof(C) / 2;       // 16-byte pieces per lane per row (bf16 1, f32 2)
  extern __shared__ uint4 ring[];              // [warp][stage][u][k|v][piece][lane]
  __shared__ float mergeAcc[kWarps][kHeadsPerItem][D];
  __shared__ float mergeMl[kWarps][kHeadsPerItem][2];

  const DecodeItem item = p.items[blockIdx.y];
  const int split = blockIdx.x;
  const int start = split * p.chunk;
  const int end = min(start + p.chunk, item.count);
  if (start >= end) return;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int keyLane = lane / kLanes;
  const int dimLane = lane % kLanes;
  const int d0 = dimLane * 8;
  const C* cacheK = static_cast<const C*>(p.k);
  const C* cacheV = static_cast<const C*>(p.v);

  float q[kHeadsPerItem][8];
  float acc[kHeadsPerItem][8];
  float m[kHeadsPerItem];
  float l[kHeadsPerItem];
#pragma unroll
  for (int i = 0; i < kHeadsPerItem; ++i) {
    const int h = item.head0 + min(i, item.heads - 1);
    loadRow(p.q + (static_cast<int64_t>(item.batch) * p.queryHeads + h) * D + d0, q[i]);
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      q[i][e] *= p.scaleLog2;
      acc[i][e] = 0.0f;
    }
    m[i] = -INFINITY;
    l[i] = 0.0f;
  }

  // Each warp walks steps of kWarpKeys positions, kStep apart; its lanes stage the K/V rows of a step into
  // their own shared-memory pieces with cp.async, kStages − 1 steps ahead of the one they compute on, so
  // many loads are in flight per SM without holding registers. A lane reads back only what it staged itself,
  // so the per-thread cp.async waits are all the ordering needed. Positions past the end are zero-filled.
  const int warpStart = start + warp * kWarpKeys;
  const int steps = warpStart < end ? (end - warpStart + kStep - 1) / kStep : 0;  // uniform across the warp
  auto piece = [&](int stage, int u, int kv) {
    return ring + ((((warp * kStages + stage) * kUnroll + u) * 2 + kv) * kPieces) * 32 + lane;
  };
  auto positionOf = [&](int idx) {
    return idx < item.sinkEnd ? idx : item.firstRing + (idx - item.sinkEnd);
  };
  auto issue = [&](int step) {
    if (step < steps) {
      const int base = warpStart + step * kStep + keyLane * kUnroll;
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int idx = base + u;
        const bool valid = idx < end;
        int entry = 0;
        if (valid) {
          if (idx < item.sinkEnd) {
            entry = idx;
          } else {
            int slot = item.ringPhase + (idx - item.sinkEnd);
            if (slot >= item.ringCap) slot -= item.ringCap;
            entry = p.sinkTokens + slot;
          }
        }
        const int64_t offset = (static_cast<int64_t>(item.region) + entry) * D + d0;
#pragma unroll
        for (int c = 0; c < kPieces; ++c) {
          cpAsync16(piece(step % kStages, u, 0) + 32 * c, reinterpret_cast<const char*>(cacheK + offset) + 16 * c,
                    valid);
          cpAsync16(piece(step % kStages, u, 1) + 32 * c, reinterpret_cast<const char*>(cacheV + offset) + 16 * c,
                    valid);
        }
      }
    }
    cpAsyncCommit();  // an empty group past the end keeps the wait count uniform
  };
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) issue(s);

  for (int step = 0; step < steps; ++step) {
    issue(step + kStages - 1);
    cpAsyncWait<kStages - 1>();
    const int stage = step % kStages;
    const int base = warpStart + step * kStep + keyLane * kUnroll;
    float kRow[kUnroll][8];
    int position[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      unpack(cacheK, piece(stage, u, 0), kRow[u]);
      position[u] = base + u < end ? positionOf(base + u) : -1;
    }
#pragma unroll
    for (int i = 0; i < kHeadsPerItem; ++i) {
      if (i >= item.heads) break;
      float score[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        float dot = 0.0f;
#pragma unroll
        for (int e = 0; e < 8; ++e) dot += q[i][e] * kRow[u][e];
#pragma unroll
        for (int offset = 1; offset < kLanes; offset <<= 1) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
        const bool kept = position[u] >= 0 && (position[u] < item.sinkEnd || position[u] >= item.ringStart[i]);
        score[u] = kept ? dot : -INFINITY;
      }
      float top = m[i];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) top = fmaxf(top, score[u]);
      if (top == -INFINITY) continue;
      const float corr = exp2f(m[i] - top);
      float weight[kUnroll];
      float sum = 0.0f;
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        weight[u] = exp2f(score[u] - top);
        sum += weight[u];
      }
      l[i] = l[i] * corr + sum;
      m[i] = top;
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[i][e] *= corr;
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        float vRow[8];
        unpack(cacheV, piece(stage, u, 1), vRow);
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[i][e] += weight[u] * vRow[e];
      }
    }
  }
  cpAsyncWait<0>();

  // Merge the lane groups of the warp (lanes with the same dimLane), then the warps through shared memory.
#pragma unroll
  for (int i = 0; i < kHeadsPerItem; ++i) {
#pragma unroll
    for (int offset = kLanes; offset < 32; offset <<= 1) {
      const float m2 = __shfl_xor_sync(0xffffffffu, m[i], offset);
      const float l2 = __shfl_xor_sync(0xffffffffu, l[i], offset);
      float acc2[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) acc2[e] = __shfl_xor_sync(0xffffffffu, acc[i][e], offset);
      mergeState(m[i], l[i], acc[i], m2, l2, acc2);
    }
    if (keyLane == 0) {
#pragma unroll
      for (int e = 0; e < 8; ++e) mergeAcc[warp][i][d0 + e] = acc[i][e];
      if (dimLane == 0) {
        mergeMl[warp][i][0] = m[i];
        mergeMl[warp][i][1] = l[i];
      }
    }
  }
  __syncthreads();
  for (int t = threadIdx.x; t < kHeadsPerItem * D; t += kThreads) {
    const int i = t / D;
    const int d = t % D;
    if (i >= item.heads) continue;
    float top = -INFINITY;
    for (int w = 0; w < kWarps; ++w) top = fmaxf(top, mergeMl[w][i][0]);
    float sum = 0.0f;
    float value = 0.0f;
    if (top != -INFINITY) {
      for (int w = 0; w < kWarps; ++w) {
        const float c = exp2f(mergeMl[w][i][0] - top);
        sum += mergeMl[w][i][1] * c;
        value += mergeAcc[w][i][d] * c;
      }
    }
    if (p.splits == 1) {
      p.out[(static_cast<int64_t>(item.batch) * p.queryHeads + item.head0 + i) * D + d] = sum > 0.0f ? value / sum : 0.0f;
    } else {
      const int64_t slot = (static_cast<int64_t>(blockIdx.y) * p.splits + split) * kHeadsPerItem + i;
      p.partialAcc[slot * D + d] = value;
      if (d == 0) {
        p.partialMl[slot * 2] = top;
        p.partialMl[slot * 2 + 1] = sum;
      }
    }
  }
}

// out = Σ_s acc_s·2^(m_s − M) / Σ_s l_s·2^(m_s − M) over the splits that had positions.
__global__ void combineKernel(DecodeParams p, int headDim) {
  const DecodeItem item = p.items[blockIdx.x];
  const int i = blockIdx.y;
  if (i >= item.heads) return;
  const int used = (item.count + p.chunk - 1) / p.chunk;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * p.splits * kHeadsPerItem + i;
  float top = -INFINITY;
  for (int s = 0; s < used; ++s) top = fmaxf(top, p.partialMl[(first + s * kHeadsPerItem) * 2]);
  for (int d = threadIdx.x; d < headDim; d += blockDim.x) {
    float sum = 0.0f;
    float value = 0.0f;
    if (top != -INFINITY) {
      for (int s = 0; s < used; ++s) {
        const int64_t slot = first + s * kHeadsPerItem;
        const float c = exp2f(p.partialMl[slot * 2] - top);
        sum += p.partialMl[slot * 2 + 1] * c;
        value += p.partialAcc[slot * headDim + d] * c;
      }
    }
    p.out[(static_cast<int64_t>(item.batch) * p.queryHeads + item.head0 + i) * headDim + d] =
        sum > 0.0f ? value / sum : 0.0f;
  }
}

// Any head dim up to 256: one warp per (item, head), positions one at a time, fp32.
template <typename C>
__global__ void decodeSimpleKernel(DecodeParams p, int headDim) {
  const DecodeItem item = p.items[blockIdx.x];
  const int i = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (i >= item.heads) return;
  const int h = item.head0 + i;
  const C* cacheK = static_cast<const C*>(p.k);
  const C* cacheV = static_cast<const C*>(p.v);
  float q[8];
  float acc[8];
  for (int e = 0; e < 8; ++e) {
    const int d = lane + 32 * e;
    q[e] = d < headDim ? p.q[(static_cast<int64_t>(item.batch) * p.queryHeads + h) * headDim + d] * p.scaleLog2 : 0.0f;
    acc[e] = 0.0f;
  }
  float m = -INFINITY;
  float l = 0.0f;
  for (int idx = 0; idx < item.count; ++idx) {
    int position;
    int entry;
    if (idx < item.sinkEnd) {
      position = idx;
      entry = idx;
    } else {
      position = item.firstRing + (idx - item.sinkEnd);
      entry = p.sinkTokens + (item.ringPhase + idx - item.sinkEnd) % item.ringCap;
    }
    if (position >= item.sinkEnd && position < item.ringStart[i]) continue;
    const int64_t row = (static_cast<int64_t>(item.region) + entry) * headDim;
    float dot = 0.0f;
    for (int e = 0; e < 8; ++e) {
      const int d = lane + 32 * e;
      if (d < headDim) dot += q[e] * widenValue(cacheK[row + d]);
    }
    for (int offset = 16; offset > 0; offset >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
    const float top = fmaxf(m, dot);
    const float corr = exp2f(m - top);
    const float w = exp2f(dot - top);
    l = l * corr + w;
    for (int e = 0; e < 8; ++e) {
      const int d = lane + 32 * e;
      acc[e] = acc[e] * corr + (d < headDim ? w * widenValue(cacheV[row + d]) : 0.0f);
    }
    m = top;
  }
  for (int e = 0; e < 8; ++e) {
    const int d = lane + 32 * e;
    if (d < headDim) p.out[(static_cast<int64_t>(item.batch) * p.queryHeads + h) * headDim + d] = acc[e] / l;
  }
}

template <typename C, int D>
void launchDecode(const DecodeParams& params, int items, const std::string& sizes) {
  constexpr size_t kShared = decodeSharedBytes<C>();
  static bool configured = false;
  if (!configured) {
    check("attentionDecode",
          cudaFuncSetAttribute(decodeKernel<C, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(kShared)),
          sizes);
    configured = true;
  }
  decodeKernel<C, D><<<dim3(params.splits, items), kThreads, kShared>>>(params);
  checkLaunch("attentionDecode", sizes);
  if (params.splits > 1) {
    combineKernel<<<dim3(items, kHeadsPerItem), D < 128 ? D : 128>>>(params, D);
    checkLaunch("attentionDecode", "combine, " + sizes);
  }
}

template <typename C>
void dispatchDecode(const DecodeParams& params, int items, int64_t headDim, const std::string& sizes) {
  switch (headDim) {
    case 16:
      return launchDecode<C, 16>(params, items, sizes);
    case 32:
      return launchDecode<C, 32>(params, items, sizes);
    case 64:
      return launchDecode<C, 64>(params, items, sizes);
    case 128:
      return launchDecode<C, 128>(params, items, sizes);
    case 256:
      return launchDecode<C, 256>(params, items, sizes);
    default:
      decodeSimpleKernel<C><<<items, 32 * kHeadsPerItem>>>(params, static_cast<int>(headDim));
      checkLaunch("attentionDecode", sizes);
  }
}

}  // namespace

void attentionDecode(float* out, const float* q, const KvCache& cache, const int32_t* slots, const int32_t* seqLens,
                     int64_t batch, int64_t queryHeads, float scale, const MaskRule& mask) {
  const std::string op = "attentionDecode";
  const int64_t hkv = cache.kvHeads;
  const int64_t group = queryHeads / hkv;
  const int64_t sink = cache.sinkTokens;
  const std::string sizes = dims({{"batch", batch}, {"queryHeads", queryHeads}, {"kvHeads", hkv},
                                  {"headDim", cache.headDim}, {"entries", cache.entries}});
  if (cache.headDim > 256) throw std::runtime_error(op + ": head dims above 256 are not supported [" + sizes + "]");
  for (int64_t b = 0; b < batch; ++b) {
    checkSlot("attentionDecode", "slots", b, slots[b], cache.slots);
    if (seqLens[b] < 1) {
      throw std::out_of_range("attentionDecode: seqLens[" + std::to_string(b) + "] = " + std::to_string(seqLens[b]) +
                              " (each sequence needs at least its new token)");
    }
  }
  if (batch == 0) return;

  // Work items: (sequence, KV head, chunk of ≤ 4 query heads), with the positions they read.
  std::vector<DecodeItem> items;
  int64_t maxCount = 0;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t n = seqLens[b];
    const int64_t p = n - 1;
    for (int64_t g = 0; g < hkv; ++g) {
      const int64_t ringCap = cache.ringCap[g];
      for (int64_t h0 = g * group; h0 < (g + 1) * group; h0 += kHeadsPerItem) {
        DecodeItem item{};
        item.region = cache.regionOffset[slots[b] * hkv + g];
        item.sinkEnd = static_cast<int32_t>(std::min(sink, n));
        item.ringCap = static_cast<int32_t>(ringCap);
        item.batch = static_cast<int32_t>(b);
        item.head0 = static_cast<int32_t>(h0);
        item.heads = static_cast<int32_t>(std::min<int64_t>(kHeadsPerItem, (g + 1) * group - h0));
        int64_t firstRing = p + 1;
        for (int i = 0; i < item.heads; ++i) {
          int64_t start = std::max(sink, p - ringCap + 1);
          if (mask.enabled) {
            const int64_t h = h0 + i;
            start = std::max(start, p - spanBlocks(mask.alpha[h], mask.beta[h], n, mask.blockSize) * mask.blockSize + 1);
          }
          item.ringStart[i] = static_cast<int32_t>(start);
          firstRing = std::min(firstRing, start);
        }
        item.firstRing = static_cast<int32_t>(firstRing);
        const int64_t ringCount = std::max<int64_t>(0, p - firstRing + 1);
        item.count = static_cast<int32_t>(item.sinkEnd + ringCount);
        item.ringPhase = firstRing >= sink ? static_cast<int32_t>((firstRing - sink) % ringCap) : 0;
        maxCount = std::max<int64_t>(maxCount, item.count);
        items.push_back(item);
      }
    }
  }
  const int64_t itemCount = static_cast<int64_t>(items.size());
  // Enough CTAs to fill the GPU many times over (three fit an SM), so the last wave is a small part; each
  // with at least 256 positions.
  const int64_t target = static_cast<int64_t>(multiprocessorCount()) * 16;
  int64_t splits = std::max<int64_t>(1, (target + itemCount - 1) / itemCount);
  splits = std::min<int64_t>(splits, std::max<int64_t>(1, maxCount / 256));
  int64_t chunk = (maxCount + splits - 1) / splits;
  chunk = (chunk + 63) / 64 * 64;
  splits = (maxCount + chunk - 1) / chunk;
  if (itemCount > 65535) throw std::runtime_error(op + ": too many sequences × KV heads for one launch [" + sizes + "]");

  const DecodeItem* deviceItems = uploadParams(items, op);
  float* partials = nullptr;
  if (splits > 1) {
    const size_t accFloats = static_cast<size_t>(itemCount * splits * kHeadsPerItem * cache.headDim);
    const size_t mlFloats = static_cast<size_t>(itemCount * splits * kHeadsPerItem * 2);
    partials = static_cast<float*>(scratch(ScratchSlot::Partials, (accFloats + mlFloats) * sizeof(float), op));
  }
  const size_t accFloats = static_cast<size_t>(itemCount * splits * kHeadsPerItem * cache.headDim);
  DecodeParams params{q,
                      out,
                      cache.k,
                      cache.v,
                      deviceItems,
                      partials,
                      partials == nullptr ? nullptr : partials + accFloats,
                      static_cast<int>(itemCount),
                      static_cast<int>(splits),
                      static_cast<int>(chunk),
                      static_cast<int>(queryHeads),
                      static_cast<int>(sink),
                      scale * 1.4426950408889634f};
  if (cache.type == DType::BF16) {
    dispatchDecode<__nv_bfloat16>(params, static_cast<int>(itemCount), cache.headDim, sizes);
  } else {
    dispatchDecode<float>(params, static_cast<int>(itemCount), cache.headDim, sizes);
  }
}

}  // namespace moa::cuda
