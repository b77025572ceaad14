// Row-wise softmax in fp32 with max subtraction: out[r, j] = e^(x[r, j] − max_r) / Σ_j e^(x[r, j] − max_r).
#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu/ops.h"

namespace moa::cpu {

void softmax(float* out, const float* x, int64_t rows, int64_t cols) {
  parallelFor(rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * cols;
      float* o = out + r * cols;
      float maxValue = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < cols; ++j) maxValue = std::max(maxValue, xr[j]);
      // A row of −∞ (fully masked) gives zeros rather than NaN.
      const float shift = std::isinf(maxValue) && maxValue < 0 ? 0.0f : maxValue;
      float sum = 0.0f;
      for (int64_t j = 0; j < cols; ++j) {
        o[j] = std::exp(xr[j] - shift);
        sum += o[j];
      }
      const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
      for (int64_t j = 0; j < cols; ++j) o[j] *= inv;
    }
  });
}

}  // namespace moa::cpu
