// Half-precision helpers: the f16 → f32 table and row widening used by every op that reads weights.
#include <cmath>
#include <vector>

#include "cpu/common.h"

namespace moa {
namespace {

float halfBitsToFloat(uint16_t h) {
  const int sign = (h >> 15) & 1;
  const int exponent = (h >> 10) & 0x1f;
  const int mantissa = h & 0x3ff;
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = (static_cast<uint32_t>(sign) << 31) | 0x7f800000u | (static_cast<uint32_t>(mantissa) << 13);
  } else if (exponent == 0) {
    // Zero or subnormal: mantissa · 2^-24, exact in float.
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  } else {
    bits = (static_cast<uint32_t>(sign) << 31) | (static_cast<uint32_t>(exponent - 15 + 127) << 23) |
           (static_cast<uint32_t>(mantissa) << 13);
  }
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

const float* buildHalfTable() {
  static std::vector<float> table(65536);
  for (uint32_t i = 0; i < 65536; ++i) table[i] = halfBitsToFloat(static_cast<uint16_t>(i));
  return table.data();
}

}  // namespace

const float* const kHalfToFloat = buildHalfTable();

void widenRow(const void* src, DType type, int64_t count, float* out) {
  switch (type) {
    case DType::BF16: {
      const uint16_t* in = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < count; ++i) out[i] = bf16ToFloat(in[i]);
      break;
    }
    case DType::F16: {
      const uint16_t* in = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < count; ++i) out[i] = kHalfToFloat[in[i]];
      break;
    }
    default:
      std::memcpy(out, src, static_cast<size_t>(count) * sizeof(float));
  }
}

}  // namespace moa
