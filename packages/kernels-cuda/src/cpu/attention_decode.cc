// One query per sequence against the elastic KV cache.
//
// Query head h of sequence b (length n = seqLens[b], query position p = n − 1) reads KV head g = h·Hkv/Hq of
// slot slots[b]. The cache holds positions [0, min(G, n)) in its sink and the last ringCap[g] positions ≥ G in
// its ring; an older ring position's slot has been overwritten, so it is never read. With the window mask the
// keys are further limited to j < G or j > p − nb(n)·B (DESIGN.md: decode mask), which equals prefill with
// the window mask row by row. Query heads sharing a KV head are processed together (GQA).
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/ops.h"
#include "cpu/simd.h"

namespace moa::cpu {
namespace {

struct DecodeJob {
  float* out;
  const float* q;
  const KvCache* cache;
  const int32_t* slots;
  const int32_t* seqLens;
  int64_t queryHeads;
  float scale;
  const MaskRule* mask;
};

MOA_INLINE float dot(const float* a, const float* b, int64_t d) {
  float lanes[16] = {};
  int64_t e = 0;
  for (; e + 16 <= d; e += 16) {
    for (int l = 0; l < 16; ++l) lanes[l] += a[e + l] * b[e + l];
  }
  float sum = 0.0f;
  for (; e < d; ++e) sum += a[e] * b[e];
  for (float lane : lanes) sum += lane;
  return sum;
}

// Tasks [t0, t1): task t is sequence t / Hkv, KV head t % Hkv, with all the query heads that read it, so each
// cached key and value is loaded once per group (GQA) rather than once per query head.
MOA_INLINE void decodeTasks(const DecodeJob& job, int64_t t0, int64_t t1) {
  const KvCache& cache = *job.cache;
  const MaskRule& mask = *job.mask;
  const int64_t hkv = cache.kvHeads;
  const int64_t d = cache.headDim;
  const int64_t sink = cache.sinkTokens;
  const int64_t group = job.queryHeads / hkv;
  std::vector<float> scores;
  std::vector<float> acc(static_cast<size_t>(group * d));
  std::vector<int64_t> ringStart(static_cast<size_t>(group));
  std::vector<float> maxScore(static_cast<size_t>(group));
  std::vector<float> sum(static_cast<size_t>(group));
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t b = t / hkv;
    const int64_t g = t % hkv;
    const int64_t h0 = g * group;  // query heads h0 … h0 + group − 1 read KV head g
    const int64_t n = job.seqLens[b];
    const int64_t p = n - 1;
    const int64_t ringCap = cache.ringCap[g];
    const int64_t region = cache.regionOffset[job.slots[b] * hkv + g];

    // Kept positions of head h0 + i: [0, sinkEnd) ∪ [ringStart[i], p]; the group walks the union.
    const int64_t sinkEnd = std::min(sink, n);
    int64_t firstRing = p + 1;
    for (int64_t i = 0; i < group; ++i) {
      int64_t start = std::max(sink, p - ringCap + 1);
      if (mask.enabled) {
        const int64_t h = h0 + i;
        start = std::max(start, p - spanBlocks(mask.alpha[h], mask.beta[h], n, mask.blockSize) * mask.blockSize + 1);
      }
      ringStart[i] = start;
      firstRing = std::min(firstRing, start);
    }
    const int64_t ringCount = std::max<int64_t>(0, p - firstRing + 1);
    const int64_t count = sinkEnd + ringCount;
    scores.assign(static_cast<size_t>(group * count), -INFINITY);
    auto positionOf = [&](int64_t idx) { return idx < sinkEnd ? idx : firstRing + (idx - sinkEnd); };
    auto entryOf = [&](int64_t position) { return region + cacheEntry(position, sink, ringCap); };

    for (int64_t idx = 0; idx < count; ++idx) {
      const int64_t position = positionOf(idx);
      const float* key = cache.k + entryOf(position) * d;
      for (int64_t i = 0; i < group; ++i) {
        if (position >= sinkEnd && position < ringStart[i]) continue;
        const float* query = job.q + (b * job.queryHeads + h0 + i) * d;
        scores[i * count + idx] = dot(query, key, d) * job.scale;
      }
    }
    for (int64_t i = 0; i < group; ++i) {
      float m = -INFINITY;
      for (int64_t idx = 0; idx < count; ++idx) m = std::max(m, scores[i * count + idx]);
      float total = 0.0f;
      for (int64_t idx = 0; idx < count; ++idx) {
        float& w = scores[i * count + idx];
        w = std::exp(w - m);  // masked: e^(−∞) = 0
        total += w;
      }
      maxScore[i] = m;
      sum[i] = total;  // ≥ 1: the new token itself is always kept
    }
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int64_t idx = 0; idx < count; ++idx) {
      const float* value = cache.v + entryOf(positionOf(idx)) * d;
      for (int64_t i = 0; i < group; ++i) {
        const float w = scores[i * count + idx];
        if (w == 0.0f) continue;
        float* a = acc.data() + i * d;
        for (int64_t e = 0; e < d; ++e) a[e] += w * value[e];
      }
    }
    for (int64_t i = 0; i < group; ++i) {
      float* o = job.out + (b * job.queryHeads + h0 + i) * d;
      const float inv = 1.0f / sum[i];
      for (int64_t e = 0; e < d; ++e) o[e] = acc[i * d + e] * inv;
    }
  }
}

void decodePortable(const DecodeJob& job, int64_t t0, int64_t t1) { decodeTasks(job, t0, t1); }
#ifdef MOA_X86_DISPATCH
MOA_TARGET_AVX2 void decodeAvx2(const DecodeJob& job, int64_t t0, int64_t t1) { decodeTasks(job, t0, t1); }
MOA_TARGET_AVX512 void decodeAvx512(const DecodeJob& job, int64_t t0, int64_t t1) { decodeTasks(job, t0, t1); }
#endif

}  // namespace

void attentionDecode(float* out, const float* q, const KvCache& cache, const int32_t* slots, const int32_t* seqLens,
                     int64_t batch, int64_t queryHeads, float scale, const MaskRule& mask) {
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

  const DecodeJob job{out, q, &cache, slots, seqLens, queryHeads, scale, &mask};
  void (*run)(const DecodeJob&, int64_t, int64_t) = decodePortable;
#ifdef MOA_X86_DISPATCH
  if (bestIsa() == Isa::Avx2) run = decodeAvx2;
  if (bestIsa() == Isa::Avx512) run = decodeAvx512;
#endif
  parallelFor(batch * cache.kvHeads, 1, [&](int64_t t0, int64_t t1) { run(job, t0, t1); });
}

}  // namespace moa::cpu
