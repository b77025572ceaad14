// One query per sequence against the elastic KV cache.
//
// Query head h of sequence b (length n = seqLens[b], query position p = n − 1) reads KV head g = h·Hkv/Hq of
// slot slots[b]. The cache holds positions [0, min(G, n)) in its sink and the last ringCap[g] positions ≥ G in
// its ring; an older ring position's slot has been overwritten, so it is never read. With the window mask the
// keys are further limited to j < G or j > p − nb(n)·B (DESIGN.md: decode mask), which equals prefill with
// the window mask row by row.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/ops.h"

namespace moa::cpu {

void attentionDecode(float* out, const float* q, const KvCache& cache, const int32_t* slots, const int32_t* seqLens,
                     int64_t batch, int64_t queryHeads, float scale, const MaskRule& mask) {
  const int64_t hkv = cache.kvHeads;
  const int64_t d = cache.headDim;
  const int64_t sink = cache.sinkTokens;
  for (int64_t b = 0; b < batch; ++b) {
    if (slots[b] < 0 || slots[b] >= cache.slots) {
      throw std::out_of_range("attentionDecode: slots[" + std::to_string(b) + "] = " + std::to_string(slots[b]) +
                              " is outside the cache's " + std::to_string(cache.slots) + " slots");
    }
    if (seqLens[b] < 1) {
      throw std::out_of_range("attentionDecode: seqLens[" + std::to_string(b) + "] = " + std::to_string(seqLens[b]) +
                              " (each sequence needs at least its new token)");
    }
  }

  parallelFor(batch * queryHeads, 1, [&](int64_t i0, int64_t i1) {
    std::vector<float> scores;
    std::vector<float> acc(static_cast<size_t>(d));
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / queryHeads;
      const int64_t h = i % queryHeads;
      const int64_t g = h * hkv / queryHeads;
      const int64_t n = seqLens[b];
      const int64_t p = n - 1;
      const int64_t ringCap = cache.ringCap[g];
      const int64_t region = cache.regionOffset[slots[b] * hkv + g];

      // Kept positions: [0, sinkEnd) ∪ [ringStart, p].
      const int64_t sinkEnd = std::min(sink, n);
      int64_t ringStart = std::max(sink, p - ringCap + 1);
      if (mask.enabled) {
        ringStart = std::max(ringStart, p - spanBlocks(mask.alpha[h], mask.beta[h], n, mask.blockSize) *
                                                mask.blockSize + 1);
      }
      const int64_t ringCount = std::max<int64_t>(0, p - ringStart + 1);
      scores.resize(static_cast<size_t>(sinkEnd + ringCount));

      const float* query = q + i * d;
      auto keyOf = [&](int64_t position) {
        return region + cacheEntry(position, sink, ringCap);
      };
      auto dot = [&](const float* key) {
        float lanes[8] = {};
        int64_t e = 0;
        for (; e + 8 <= d; e += 8) {
          for (int l = 0; l < 8; ++l) lanes[l] += query[e + l] * key[e + l];
        }
        float sum = 0.0f;
        for (; e < d; ++e) sum += query[e] * key[e];
        for (float lane : lanes) sum += lane;
        return sum * scale;
      };

      float maxScore = -INFINITY;
      for (int64_t j = 0; j < sinkEnd; ++j) {
        scores[j] = dot(cache.k + keyOf(j) * d);
        maxScore = std::max(maxScore, scores[j]);
      }
      for (int64_t r = 0; r < ringCount; ++r) {
        float& score = scores[sinkEnd + r];
        score = dot(cache.k + keyOf(ringStart + r) * d);
        maxScore = std::max(maxScore, score);
      }

      std::fill(acc.begin(), acc.end(), 0.0f);
      float sum = 0.0f;
      for (int64_t idx = 0; idx < sinkEnd + ringCount; ++idx) {
        const int64_t position = idx < sinkEnd ? idx : ringStart + (idx - sinkEnd);
        const float w = std::exp(scores[idx] - maxScore);
        sum += w;
        const float* value = cache.v + keyOf(position) * d;
        for (int64_t e = 0; e < d; ++e) acc[e] += w * value[e];
      }
      float* o = out + i * d;
      const float inv = 1.0f / sum;  // the new token itself is always kept
      for (int64_t e = 0; e < d; ++e) o[e] = acc[e] * inv;
    }
  });
}

}  // namespace moa::cpu
