// Host-side checks and index tables of the elastic KV cache shared by kvAppend and attentionDecode.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda/cuda_ops.h"

namespace moa::cuda {

// Entry of position p in its region: p < G → p, else G + (p − G) mod ringCap (cpu/ops.h: cacheEntry).
inline int64_t cacheEntry(int64_t position, int64_t sinkTokens, int64_t ringCap) {
  return position < sinkTokens ? position : sinkTokens + (position - sinkTokens) % ringCap;
}

inline void checkSlot(const char* op, const char* name, int64_t index, int32_t slot, int64_t slots) {
  if (slot < 0 || slot >= slots) {
    throw std::out_of_range(std::string(op) + ": " + name + "[" + std::to_string(index) + "] = " +
                            std::to_string(slot) + " is outside the cache's " + std::to_string(slots) + " slots");
  }
}

}  // namespace moa::cuda
