// Causal self-attention over packed variable-length sequences, dense or with per-head MoA masks.
//
// Tiled like FlashAttention: a task is (sequence, query head, tile of kTile queries). It walks only the key
// tiles that hold a kept entry for some row of its query tile (the sink tiles and the band before the
// diagonal), so the work falls with the mask's density. Scores are fp32 with an online softmax (running max
// and sum per row, max subtraction before every exp).
//
// Kept keys of query row i form at most two intervals, [0, sinkEnd(i)) ∪ [bandStart(i), i]:
//   dense:  sinkEnd = 0, bandStart = 0
//   block:  (DESIGN.md: Block mask, at the sequence's own length n) block kb = floor(j/B) is kept iff
//           kb < G/B (j < ceil(G/B)·B) or kb ≥ qb − nb(n) + 1 with qb = floor(i/B)
//   window: (decode mask) j < G or j > i − nb(i+1)·B
#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "cpu/ops.h"

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
  std::vector<float> keysT;   // [D][kTile]: the key tile transposed, so scores vectorise over keys
  std::vector<float> scores;  // [kTile][kTile]
  std::vector<float> acc;     // [kTile][D]
  std::vector<float> rowMax;
  std::vector<float> rowSum;
  std::vector<RowKeys> keys;
  explicit Scratch(int64_t d)
      : keysT(static_cast<size_t>(d * kTile)),
        scores(static_cast<size_t>(kTile * kTile)),
        acc(static_cast<size_t>(kTile * d)),
        rowMax(kTile),
        rowSum(kTile),
        keys(kTile) {}
};

}  // namespace

void attentionPrefill(float* out, const float* q, const float* k, const float* v, const int32_t* cuSeqlens,
                      int64_t sequences, const AttentionDims& dims, float scale, const MaskRule& mask) {
  const int64_t hq = dims.queryHeads;
  const int64_t hkv = dims.kvHeads;
  const int64_t d = dims.headDim;
  const int64_t qStride = hq * d;   // between tokens in q and out
  const int64_t kvStride = hkv * d;  // between tokens in k and v

  // Every (sequence, query tile); each is then split over the query heads.
  std::vector<std::pair<int64_t, int64_t>> tiles;
  for (int64_t s = 0; s < sequences; ++s) {
    const int64_t n = cuSeqlens[s + 1] - cuSeqlens[s];
    for (int64_t t = 0; t * kTile < n; ++t) tiles.emplace_back(s, t);
  }
  const float negInf = -std::numeric_limits<float>::infinity();

  parallelFor(static_cast<int64_t>(tiles.size()) * hq, 1, [&](int64_t task0, int64_t task1) {
    Scratch scratch(d);
    for (int64_t task = task0; task < task1; ++task) {
      const auto [s, tile] = tiles[static_cast<size_t>(task / hq)];
      const int64_t h = task % hq;
      const int64_t g = h * hkv / hq;  // GQA: the KV head of query head h
      const int64_t base = cuSeqlens[s];
      const int64_t n = cuSeqlens[s + 1] - base;
      const int64_t q0 = tile * kTile;
      const int64_t rows = std::min(kTile, n - q0);

      // Key range touched by any row of this tile: [0, sinkEndMax) ∪ [bandStartMin, q0 + rows).
      int64_t sinkEndMax = 0;
      int64_t bandStartMin = q0 + rows;
      for (int64_t r = 0; r < rows; ++r) {
        scratch.keys[r] = rowKeys(mask, h, n, q0 + r);
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

        // keysT[c][..] ← K[k0 + c] of KV head g, transposed.
        for (int64_t c = 0; c < cols; ++c) {
          const float* key = k + (base + k0 + c) * kvStride + g * d;
          for (int64_t e = 0; e < d; ++e) scratch.keysT[e * kTile + c] = key[e];
        }
        for (int64_t c = cols; c < kTile; ++c) {
          for (int64_t e = 0; e < d; ++e) scratch.keysT[e * kTile + c] = 0.0f;
        }

        for (int64_t r = 0; r < rows; ++r) {
          const int64_t i = q0 + r;
          const RowKeys keys = scratch.keys[r];
          // Columns of this tile kept for row i: [cLo, cHi) of the band, plus [0, sinkHi) of the sink.
          const int64_t sinkHi = std::clamp<int64_t>(keys.sinkEnd - k0, 0, cols);
          const int64_t cLo = std::clamp<int64_t>(keys.bandStart - k0, 0, cols);
          const int64_t cHi = std::clamp<int64_t>(i + 1 - k0, 0, cols);
          if (sinkHi == 0 && cLo >= cHi) continue;

          float* score = scratch.scores.data() + r * kTile;
          const float* query = q + (base + i) * qStride + h * d;
          for (int64_t c = 0; c < kTile; ++c) score[c] = 0.0f;
          for (int64_t e = 0; e < d; ++e) {
            const float qe = query[e];
            const float* kRow = scratch.keysT.data() + e * kTile;
            for (int64_t c = 0; c < kTile; ++c) score[c] += qe * kRow[c];
          }
          float tileMax = negInf;
          for (int64_t c = 0; c < cols; ++c) {
            const bool kept = c < sinkHi || (c >= cLo && c < cHi);
            score[c] = kept ? score[c] * scale : negInf;
            tileMax = std::max(tileMax, score[c]);
          }
          const float newMax = std::max(scratch.rowMax[r], tileMax);
          const float correction = std::exp(scratch.rowMax[r] - newMax);  // exp(−∞) = 0 on the first tile
          float* acc = scratch.acc.data() + r * d;
          if (correction != 1.0f) {
            for (int64_t e = 0; e < d; ++e) acc[e] *= correction;
          }
          float sum = scratch.rowSum[r] * correction;
          for (int64_t c = 0; c < cols; ++c) {
            if (score[c] == negInf) continue;
            const float p = std::exp(score[c] - newMax);
            sum += p;
            const float* value = v + (base + k0 + c) * kvStride + g * d;
            for (int64_t e = 0; e < d; ++e) acc[e] += p * value[e];
          }
          scratch.rowMax[r] = newMax;
          scratch.rowSum[r] = sum;
        }
      }

      for (int64_t r = 0; r < rows; ++r) {
        float* o = out + (base + q0 + r) * qStride + h * d;
        const float inv = 1.0f / scratch.rowSum[r];  // every row keeps at least its own key
        const float* acc = scratch.acc.data() + r * d;
        for (int64_t e = 0; e < d; ++e) o[e] = acc[e] * inv;
      }
    }
  });
}

}  // namespace moa::cpu
