// Causal self-attention over packed variable-length sequences, dense or with per-head MoA masks.
//
// Tiled like FlashAttention: a task is (sequence, query head, tile of kTile queries). It walks only the key
// tiles that hold a kept entry for some row of its query tile (the sink tiles and the band before the
// diagonal), so the work falls with the mask's density. Per key tile, S = Q·Kᵀ and O += P·V run as small
// register-tiled products (like matmul's micro-kernel); the softmax is fp32 and online (running max and sum
// per row, max subtraction before every exp).
//
// Kept keys of query row i form at most two intervals, [0, sinkEnd(i)) ∪ [bandStart(i), i]:
//   dense:  sinkEnd = 0, bandStart = 0
//   block:  (DESIGN.md: Block mask, at the sequence's own length n) block kb = floor(j/B) is kept iff
//           kb < G/B (j < ceil(G/B)·B) or kb ≥ qb − nb(n) + 1 with qb = floor(i/B)
//   window: (decode mask) j < G or j > i − nb(i+1)·B
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "cpu/ops.h"
#include "cpu/simd.h"

namespace moa::cpu {
namespace {

constexpr int64_t kTile = 64;

struct RowKeys {
  int64_t sinkEnd;    // keys [0, sinkEnd) are kept (clamped to ≤ i + 1)
  int64_t bandStart;  // keys [bandStart, i] are kept
};

RowKeys rowKeys(const MaskRule& mask, int64_t head, int64_t n, int64_t i) {
  if (!mask.enabled) return {0, 0};
  const int64_t B = mask.blockSize;
  int64_t sinkEnd;
  int64_t bandStart;
  if (mask.window) {
    sinkEnd = mask.sinkTokens;
    bandStart = i - spanBlocks(mask.alpha[head], mask.beta[head], i + 1, B) * B + 1;
  } else {
    sinkEnd = (mask.sinkTokens + B - 1) / B * B;
    bandStart = (i / B - spanBlocks(mask.alpha[head], mask.beta[head], n, B) + 1) * B;
  }
  return {std::min(sinkEnd, i + 1), std::max<int64_t>(bandStart, 0)};
}

struct Scratch {
  int64_t dPad;                // headDim rounded up to 32 (the P·V kernel's width)
  std::vector<float> keysT;    // [D][kTile]: the key tile transposed, so scores vectorise over keys
  std::vector<float> values;   // [kTile][dPad]: the value tile, zero-padded
  std::vector<float> scores;   // [kTile][kTile]: scores, then probabilities
  std::vector<float> acc;      // [kTile][dPad]: unnormalised output rows
  std::vector<float> rowMax;
  std::vector<float> rowSum;
  std::vector<float> correction;
  std::vector<RowKeys> keys;
  explicit Scratch(int64_t d)
      : dPad((d + 31) / 32 * 32),
        keysT(static_cast<size_t>(d * kTile)),
        values(static_cast<size_t>(kTile * dPad)),
        scores(static_cast<size_t>(kTile * kTile)),
        acc(static_cast<size_t>(kTile * dPad)),
        rowMax(kTile),
        rowSum(kTile),
        correction(kTile),
        keys(kTile) {}
};

// scores[r][0..kTile) = Q[r] · keysT for MR rows: MR × 4 vector accumulators.
template <int MR>
MOA_INLINE void scoreRows(const float* q, int64_t qStride, const float* keysT, int64_t d, float* scores) {
  Vec16 acc[MR][4];
  for (int r = 0; r < MR; ++r) {
    for (int j = 0; j < 4; ++j) acc[r][j] = Vec16{};
  }
  for (int64_t e = 0; e < d; ++e) {
    const float* kRow = keysT + e * kTile;
    const Vec16 k0 = load16(kRow);
    const Vec16 k1 = load16(kRow + 16);
    const Vec16 k2 = load16(kRow + 32);
    const Vec16 k3 = load16(kRow + 48);
    for (int r = 0; r < MR; ++r) {
      const float qe = q[r * qStride + e];
      acc[r][0] += qe * k0;
      acc[r][1] += qe * k1;
      acc[r][2] += qe * k2;
      acc[r][3] += qe * k3;
    }
  }
  for (int r = 0; r < MR; ++r) {
    for (int j = 0; j < 4; ++j) store16(scores + r * kTile + 16 * j, acc[r][j]);
  }
}

// acc[r] = acc[r] · correction[r] + P[r][0..cols) · values for MR rows, 32 output dims at a time.
template <int MR>
MOA_INLINE void accumulateRows(const float* probabilities, int64_t cols, const float* values, int64_t dPad,
                               const float* correction, float* acc) {
  for (int64_t e0 = 0; e0 < dPad; e0 += 32) {
    Vec16 a[MR][2];
    for (int r = 0; r < MR; ++r) {
      a[r][0] = load16(acc + r * dPad + e0) * correction[r];
      a[r][1] = load16(acc + r * dPad + e0 + 16) * correction[r];
    }
    for (int64_t c = 0; c < cols; ++c) {
      const Vec16 v0 = load16(values + c * dPad + e0);
      const Vec16 v1 = load16(values + c * dPad + e0 + 16);
      for (int r = 0; r < MR; ++r) {
        const float p = probabilities[r * kTile + c];
        a[r][0] += p * v0;
        a[r][1] += p * v1;
      }
    }
    for (int r = 0; r < MR; ++r) {
      store16(acc + r * dPad + e0, a[r][0]);
      store16(acc + r * dPad + e0 + 16, a[r][1]);
    }
  }
}

struct PrefillJob {
  float* out;
  const float* q;
  const float* k;
  const float* v;
  const int32_t* cuSeqlens;
  const std::vector<std::pair<int64_t, int64_t>>* tiles;  // (sequence, query tile)
  AttentionDims dims;
  float scale;
  const MaskRule* mask;
  float* stats;  // [T, Hq, 2]: each row's max scaled score and Σ e^(score − max), or null
};

// Tasks [task0, task1): task t is query tile t / Hq of the tile list, query head t % Hq. MR rows of a query
// tile go through the micro-kernels together.
template <int MR>
MOA_INLINE void prefillTasks(const PrefillJob& job, int64_t task0, int64_t task1) {
  const int64_t hq = job.dims.queryHeads;
  const int64_t hkv = job.dims.kvHeads;
  const int64_t d = job.dims.headDim;
  const int64_t qStride = hq * d;    // between tokens in q and out
  const int64_t kvStride = hkv * d;  // between tokens in k and v
  const float negInf = -std::numeric_limits<float>::infinity();
  Scratch scratch(d);
  const int64_t dPad = scratch.dPad;
  for (int64_t task = task0; task < task1; ++task) {
    const auto [s, tile] = (*job.tiles)[static_cast<size_t>(task / hq)];
    const int64_t h = task % hq;
    const int64_t g = h * hkv / hq;  // GQA: the KV head of query head h
    const int64_t base = job.cuSeqlens[s];
    const int64_t n = job.cuSeqlens[s + 1] - base;
    const int64_t q0 = tile * kTile;
    const int64_t rows = std::min(kTile, n - q0);
    const float* qTile = job.q + (base + q0) * qStride + h * d;

    // Key range touched by any row of this tile: [0, sinkEndMax) ∪ [bandStartMin, q0 + rows).
    int64_t sinkEndMax = 0;
    int64_t bandStartMin = q0 + rows;
    for (int64_t r = 0; r < rows; ++r) {
      scratch.keys[r] = rowKeys(*job.mask, h, n, q0 + r);
      sinkEndMax = std::max(sinkEndMax, scratch.keys[r].sinkEnd);
      bandStartMin = std::min(bandStartMin, scratch.keys[r].bandStart);
      scratch.rowMax[r] = negInf;
      scratch.rowSum[r] = 0.0f;
    }
    std::fill(scratch.acc.begin(), scratch.acc.end(), 0.0f);

    const int64_t keyTiles = (q0 + rows + kTile - 1) / kTile;
    for (int64_t kt = 0; kt < keyTiles; ++kt) {
      const int64_t k0 = kt * kTile;
      const int64_t cols = std::min(kTile, q0 + rows - k0);
      if (k0 >= sinkEndMax && k0 + cols <= bandStartMin) continue;  // masked out for every row

      // keysT[e][c] ← K[k0 + c][e] and values[c][e] ← V[k0 + c][e] of KV head g; padding stays zero.
      std::fill(scratch.keysT.begin(), scratch.keysT.end(), 0.0f);
      std::fill(scratch.values.begin(), scratch.values.end(), 0.0f);
      for (int64_t c = 0; c < cols; ++c) {
        const float* key = job.k + (base + k0 + c) * kvStride + g * d;
        const float* value = job.v + (base + k0 + c) * kvStride + g * d;
        for (int64_t e = 0; e < d; ++e) scratch.keysT[e * kTile + c] = key[e];
        std::memcpy(scratch.values.data() + c * dPad, value, static_cast<size_t>(d) * sizeof(float));
      }

      for (int64_t r0 = 0; r0 < rows; r0 += MR) {
        const int64_t group = std::min<int64_t>(MR, rows - r0);
        float* scores = scratch.scores.data() + r0 * kTile;
        if (group == MR) {
          scoreRows<MR>(qTile + r0 * qStride, qStride, scratch.keysT.data(), d, scores);
        } else {
          for (int64_t r = 0; r < group; ++r) {
            scoreRows<1>(qTile + (r0 + r) * qStride, qStride, scratch.keysT.data(), d, scores + r * kTile);
          }
        }
        // Mask, scale and turn scores into probabilities against the updated running max.
        for (int64_t r = r0; r < r0 + group; ++r) {
          const int64_t i = q0 + r;
          const RowKeys keys = scratch.keys[r];
          const int64_t sinkHi = std::clamp<int64_t>(keys.sinkEnd - k0, 0, cols);
          const int64_t bandLo = std::clamp<int64_t>(keys.bandStart - k0, 0, cols);
          const int64_t bandHi = std::clamp<int64_t>(i + 1 - k0, 0, cols);
          float* row = scratch.scores.data() + r * kTile;
          float tileMax = negInf;
          for (int64_t c = 0; c < kTile; ++c) {
            const bool kept = c < sinkHi || (c >= bandLo && c < bandHi);
            row[c] = kept ? row[c] * job.scale : negInf;
            tileMax = std::max(tileMax, row[c]);
          }
          if (tileMax == negInf) {  // nothing kept in this tile for row i
            for (int64_t c = 0; c < kTile; ++c) row[c] = 0.0f;
            scratch.correction[r] = 1.0f;
            continue;
          }
          const float newMax = std::max(scratch.rowMax[r], tileMax);
          scratch.correction[r] = std::exp(scratch.rowMax[r] - newMax);  // 0 on the row's first kept tile
          // e^(−∞ − max) = 0 for masked columns.
          Vec16 sums{};
          for (int64_t c = 0; c < kTile; c += 16) {
            const Vec16 p = exp16(load16(row + c) - newMax);
            store16(row + c, p);
            sums += p;
          }
          float sum = 0.0f;
          for (int l = 0; l < 16; ++l) sum += sums[l];
          scratch.rowSum[r] = scratch.rowSum[r] * scratch.correction[r] + sum;
          scratch.rowMax[r] = newMax;
        }
        float* acc = scratch.acc.data() + r0 * dPad;
        if (group == MR) {
          accumulateRows<MR>(scores, cols, scratch.values.data(), dPad, scratch.correction.data() + r0, acc);
        } else {
          for (int64_t r = 0; r < group; ++r) {
            accumulateRows<1>(scores + r * kTile, cols, scratch.values.data(), dPad,
                              scratch.correction.data() + r0 + r, acc + r * dPad);
          }
        }
      }
    }

    for (int64_t r = 0; r < rows; ++r) {
      float* o = job.out + (base + q0 + r) * qStride + h * d;
      const float inv = 1.0f / scratch.rowSum[r];  // every row keeps at least its own key
      const float* acc = scratch.acc.data() + r * dPad;
      for (int64_t e = 0; e < d; ++e) o[e] = acc[e] * inv;
      if (job.stats != nullptr) {
        float* stat = job.stats + ((base + q0 + r) * hq + h) * 2;
        stat[0] = scratch.rowMax[r];
        stat[1] = scratch.rowSum[r];
      }
    }
  }
}

void prefillPortable(const PrefillJob& job, int64_t t0, int64_t t1) { prefillTasks<1>(job, t0, t1); }
#ifdef MOA_X86_DISPATCH
MOA_TARGET_AVX2 void prefillAvx2(const PrefillJob& job, int64_t t0, int64_t t1) { prefillTasks<2>(job, t0, t1); }
MOA_TARGET_AVX512 void prefillAvx512(const PrefillJob& job, int64_t t0, int64_t t1) { prefillTasks<4>(job, t0, t1); }
#endif

}  // namespace

void attentionPrefill(float* out, const float* q, const float* k, const float* v, const int32_t* cuSeqlens,
                      int64_t sequences, const AttentionDims& dims, float scale, const MaskRule& mask,
                      float* stats) {
  // Every (sequence, query tile); each is then split over the query heads.
  std::vector<std::pair<int64_t, int64_t>> tiles;
  for (int64_t s = 0; s < sequences; ++s) {
    const int64_t n = cuSeqlens[s + 1] - cuSeqlens[s];
    for (int64_t t = 0; t * kTile < n; ++t) tiles.emplace_back(s, t);
  }
  const PrefillJob job{out, q, k, v, cuSeqlens, &tiles, dims, scale, &mask, stats};
  void (*run)(const PrefillJob&, int64_t, int64_t) = prefillPortable;
#ifdef MOA_X86_DISPATCH
  if (bestIsa() == Isa::Avx2) run = prefillAvx2;
  if (bestIsa() == Isa::Avx512) run = prefillAvx512;
#endif
  parallelFor(static_cast<int64_t>(tiles.size()) * dims.queryHeads, 1,
              [&](int64_t task0, int64_t task1) { run(job, task0, task1); });
}

}  // namespace moa::cpu
