// Writes new keys/values into the elastic KV cache (backend.ts: KvCacheLayer): token p of slot s, KV head g
// goes to entry regionOffset[s·Hkv + g] + (p < G ? p : G + (p − G) mod ringCap[g]).
#include <cstring>
#include <stdexcept>
#include <string>

#include "cpu/ops.h"

namespace moa::cpu {

void kvAppend(const KvCache& cache, const float* k, const float* v, const int32_t* slots, const int32_t* positions,
              int64_t tokens) {
  const int64_t hkv = cache.kvHeads;
  const int64_t d = cache.headDim;
  for (int64_t t = 0; t < tokens; ++t) {
    if (slots[t] < 0 || slots[t] >= cache.slots) {
      throw std::out_of_range("kvAppend: slots[" + std::to_string(t) + "] = " + std::to_string(slots[t]) +
                              " is outside the cache's " + std::to_string(cache.slots) + " slots");
    }
    if (positions[t] < 0) {
      throw std::out_of_range("kvAppend: positions[" + std::to_string(t) + "] = " + std::to_string(positions[t]) +
                              " is negative");
    }
  }
  parallelFor(tokens * hkv, std::max<int64_t>(1, 8192 / std::max<int64_t>(d, 1)), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t t = i / hkv;
      const int64_t g = i % hkv;
      const int64_t region = cache.regionOffset[slots[t] * hkv + g];
      const int64_t entry = region + cacheEntry(positions[t], cache.sinkTokens, cache.ringCap[g]);
      std::memcpy(cache.k + entry * d, k + i * d, static_cast<size_t>(d) * sizeof(float));
      std::memcpy(cache.v + entry * d, v + i * d, static_cast<size_t>(d) * sizeof(float));
    }
  });
}

}  // namespace moa::cpu
