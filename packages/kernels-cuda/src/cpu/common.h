// Shared pieces of the CPU reference: element types, half-precision conversion, the MoA span rule and the
// thread pool every op runs on.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>

namespace moa {

// Element types of tensors, in the order of backend.ts's DType.
enum class DType : int32_t { F32 = 0, BF16 = 1, F16 = 2, I32 = 3 };

inline float bf16ToFloat(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &wide, sizeof value);
  return value;
}

// IEEE half → float through a 64K-entry table built once (exact for every input, NaN payloads included).
extern const float* const kHalfToFloat;
inline float f16ToFloat(uint16_t bits) { return kHalfToFloat[bits]; }

// Widens one row of `count` elements of a float-typed tensor (f32, bf16 or f16) into `out`.
void widenRow(const void* src, DType type, int64_t count, float* out);

// Reads element `index` of a float-typed tensor as fp32.
inline float loadFloat(const void* src, DType type, int64_t index) {
  switch (type) {
    case DType::BF16:
      return bf16ToFloat(static_cast<const uint16_t*>(src)[index]);
    case DType::F16:
      return f16ToFloat(static_cast<const uint16_t*>(src)[index]);
    default:
      return static_cast<const float*>(src)[index];
  }
}

// MoA attention rule of one query head as the kernels see it (DESIGN.md: Elastic rule, Block mask).
struct MaskRule {
  bool enabled = false;   // false: dense causal attention
  bool window = false;    // true: decode (window) mask, false: prefill (block) mask
  const float* alpha = nullptr;  // [queryHeads]
  const float* beta = nullptr;   // [queryHeads]
  int64_t blockSize = 64;
  int64_t sinkTokens = 64;
};

// nb = max(1, floor(clamp(alpha + beta·n, 0, n) / B)), evaluated in double like @moa/core's spanBlocks.
inline int64_t spanBlocks(float alpha, float beta, int64_t n, int64_t blockSize) {
  double span = static_cast<double>(alpha) + static_cast<double>(beta) * static_cast<double>(n);
  if (span < 0) span = 0;
  if (span > static_cast<double>(n)) span = static_cast<double>(n);
  const int64_t blocks = static_cast<int64_t>(span / static_cast<double>(blockSize));
  return blocks < 1 ? 1 : blocks;
}

// Number of worker threads (all cores, or MOA_NUM_THREADS), the calling thread included.
int threadCount();

// Runs body(begin, end) over [0, count) split into chunks of at least `grain` items, on all threads.
// Calls from several JS threads are serialised. Work too small to split runs on the calling thread.
void parallelFor(int64_t count, int64_t grain, const std::function<void(int64_t, int64_t)>& body);

}  // namespace moa
