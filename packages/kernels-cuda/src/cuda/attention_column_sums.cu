// Column sums of dense causal attention probabilities (cpu/ops.h: attentionColumnSums; the CPU reference is
// src/cpu/attention_column_sums.cc), for H2O's heavy-hitter scores: nothing n×n leaves the GPU.
//
// Two kernels over 64×64 tiles of S = scale · Q·Kᵀ in fp32 (SIMT; the sums feed a ranking, not a gradient):
//   1. per (query tile, query head): each row's softmax max m and sum l over its causal keys, online;
//   2. per (key tile, KV head): for every query head of the group and every query tile from the diagonal on,
//      the probabilities e^(x − m)/l added to the tile's 64 columns.
// A thread owns a 4×4 block of each tile; the head dim is staged through shared memory 32 at a time. Every sum has
// a fixed order (the rows of a column are reduced across threads in thread order), so results are deterministic.
#include <cuda_runtime.h>

#include <cmath>
#include <string>
#include <vector>

#include "cuda/check.cuh"
#include "cuda/cuda_ops.h"
#include "cuda/scratch.cuh"

namespace moa::cuda {
namespace {

constexpr int kTile = 64;
constexpr int kChunk = 32;
constexpr int kThreads = 256;

struct Task {
  int32_t start;  // first token of the sequence
  int32_t n;      // its length
  int32_t tile;   // query tile (kernel 1) or key tile (kernel 2)
};

struct Params {
  const float* q;  // [T, Hq, D]
  const float* k;  // [T, Hkv, D]
  float* stats;    // [T, Hq, 2]: m, l
  float* out;      // [T, Hkv]
  const Task* tasks;
  int queryHeads;
  int kvHeads;
  int headDim;
  float scale;
};

// s[r][c] = q[row0 + 4·ty + r] · k[key0 + 4·tx + c] of one head pair (rows and keys past n read as 0).
__device__ __forceinline__ void scoreTile(const Params& p, const Task& task, int h, int g, int row0, int key0,
                                          float (&qs)[kTile][kChunk + 1], float (&ks)[kTile][kChunk + 1],
                                          float (&s)[4][4]) {
  const int tx = threadIdx.x & 15;
  const int ty = threadIdx.x >> 4;
#pragma unroll
  for (int r = 0; r < 4; ++r) {
#pragma unroll
    for (int c = 0; c < 4; ++c) s[r][c] = 0.0f;
  }
  for (int e0 = 0; e0 < p.headDim; e0 += kChunk) {
    for (int idx = threadIdx.x; idx < kTile * kChunk; idx += kThreads) {
      const int row = idx / kChunk;
      const int e = idx % kChunk;
      const bool inDim = e0 + e < p.headDim;
      const int i = row0 + row;
      const int j = key0 + row;
      qs[row][e] = inDim && i < task.n
                       ? p.q[(static_cast<int64_t>(task.start + i) * p.queryHeads + h) * p.headDim + e0 + e]
                       : 0.0f;
      ks[row][e] = inDim && j < task.n
                       ? p.k[(static_cast<int64_t>(task.start + j) * p.kvHeads + g) * p.headDim + e0 + e]
                       : 0.0f;
    }
    __syncthreads();
#pragma unroll 8
    for (int e = 0; e < kChunk; ++e) {
      float a[4];
      float b[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) a[r] = qs[4 * ty + r][e];
#pragma unroll
      for (int c = 0; c < 4; ++c) b[c] = ks[4 * tx + c][e];
#pragma unroll
      for (int r = 0; r < 4; ++r) {
#pragma unroll
        for (int c = 0; c < 4; ++c) s[r][c] = fmaf(a[r], b[c], s[r][c]);
      }
    }
    __syncthreads();
  }
}

// A row's maximum or sum over the 16 threads that share it (lanes differing in the low four bits).
__device__ __forceinline__ float rowMax(float v) {
  for (int offset = 8; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}
__device__ __forceinline__ float rowSum(float v) {
  for (int offset = 8; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__global__ void __launch_bounds__(kThreads) rowStatsKernel(Params p) {
  __shared__ float qs[kTile][kChunk + 1];
  __shared__ float ks[kTile][kChunk + 1];
  const Task task = p.tasks[blockIdx.x];
  const int h = blockIdx.y;
  const int g = h / (p.queryHeads / p.kvHeads);
  const int tx = threadIdx.x & 15;
  const int ty = threadIdx.x >> 4;
  const int row0 = task.tile * kTile;
  float m[4];
  float l[4];
#pragma unroll
  for (int r = 0; r < 4; ++r) m[r] = -INFINITY, l[r] = 0.0f;
  for (int kt = 0; kt <= task.tile; ++kt) {
    float s[4][4];
    scoreTile(p, task, h, g, row0, kt * kTile, qs, ks, s);
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int i = row0 + 4 * ty + r;
      float x[4];
      float tileMax = -INFINITY;
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int j = kt * kTile + 4 * tx + c;
        x[c] = j <= i && i < task.n ? s[r][c] * p.scale : -INFINITY;
        tileMax = fmaxf(tileMax, x[c]);
      }
      tileMax = rowMax(tileMax);
      const float next = fmaxf(m[r], tileMax);
      float sum = 0.0f;
      if (next != -INFINITY) {
#pragma unroll
        for (int c = 0; c < 4; ++c) sum += expf(x[c] - next);
      }
      sum = rowSum(sum);
      if (next != -INFINITY) {
        l[r] = (m[r] == -INFINITY ? 0.0f : l[r] * expf(m[r] - next)) + sum;
        m[r] = next;
      }
    }
  }
  if (tx == 0) {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int i = row0 + 4 * ty + r;
      if (i < task.n) {
        float* stat = p.stats + (static_cast<int64_t>(task.start + i) * p.queryHeads + h) * 2;
        stat[0] = m[r];
        stat[1] = l[r];
      }
    }
  }
}

__global__ void __launch_bounds__(kThreads) columnSumsKernel(Params p) {
  __shared__ float qs[kTile][kChunk + 1];
  __shared__ float ks[kTile][kChunk + 1];
  __shared__ float partial[kTile / 4][kTile];
  const Task task = p.tasks[blockIdx.x];
  const int g = blockIdx.y;
  const int perGroup = p.queryHeads / p.kvHeads;
  const int tx = threadIdx.x & 15;
  const int ty = threadIdx.x >> 4;
  const int key0 = task.tile * kTile;
  const int tiles = (task.n + kTile - 1) / kTile;
  float column[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int h = g * perGroup; h < (g + 1) * perGroup; ++h) {
    for (int qt = task.tile; qt < tiles; ++qt) {
      float s[4][4];
      scoreTile(p, task, h, g, qt * kTile, key0, qs, ks, s);
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int i = qt * kTile + 4 * ty + r;
        if (i >= task.n) continue;
        const float* stat = p.stats + (static_cast<int64_t>(task.start + i) * p.queryHeads + h) * 2;
        const float m = stat[0];
        const float inv = 1.0f / stat[1];
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int j = key0 + 4 * tx + c;
          if (j <= i) column[c] += expf(s[r][c] * p.scale - m) * inv;
        }
      }
    }
  }
#pragma unroll
  for (int c = 0; c < 4; ++c) partial[ty][4 * tx + c] = column[c];
  __syncthreads();
  if (threadIdx.x < kTile) {
    const int j = key0 + threadIdx.x;
    float sum = 0.0f;
    for (int row = 0; row < kTile / 4; ++row) sum += partial[row][threadIdx.x];
    if (j < task.n) p.out[static_cast<int64_t>(task.start + j) * p.kvHeads + g] = sum;
  }
}

}  // namespace

void attentionColumnSums(float* out, const float* q, const float* k, const int32_t* cuSeqlens, int64_t sequences,
                         int64_t queryHeads, int64_t kvHeads, int64_t headDim, float scale) {
  const std::string op = "attentionColumnSums";
  const int64_t tokens = cuSeqlens[sequences];
  const std::string sizes =
      dims({{"tokens", tokens}, {"queryHeads", queryHeads}, {"kvHeads", kvHeads}, {"headDim", headDim}});
  std::vector<Task> tasks;
  for (int64_t s = 0; s < sequences; ++s) {
    const int32_t start = cuSeqlens[s];
    const int32_t n = cuSeqlens[s + 1] - start;
    for (int32_t tile = 0; tile * kTile < n; ++tile) tasks.push_back({start, n, tile});
  }
  if (tasks.empty() || headDim == 0) return;
  auto* stats = static_cast<float*>(scratch(ScratchSlot::Attention, static_cast<size_t>(tokens * queryHeads * 2) * 4, op));
  const auto* deviceTasks = static_cast<const Task*>(uploadParams(tasks.data(), tasks.size() * sizeof(Task), op));
  const Params params{q, k, stats, out, deviceTasks, static_cast<int>(queryHeads), static_cast<int>(kvHeads),
                      static_cast<int>(headDim), scale};
  const unsigned count = static_cast<unsigned>(tasks.size());
  rowStatsKernel<<<dim3(count, static_cast<unsigned>(queryHeads)), kThreads>>>(params);
  checkLaunch(op, "row statistics, " + sizes);
  columnSumsKernel<<<dim3(count, static_cast<unsigned>(kvHeads)), kThreads>>>(params);
  checkLaunch(op, sizes);
}

}  // namespace moa::cuda
