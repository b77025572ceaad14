// out[r, :] = x[r, :] / sqrt(mean(x[r, :]²) + eps) · weight, in fp32 (Hugging Face LlamaRMSNorm).
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/ops.h"

namespace moa::cpu {

void rmsNorm(float* out, const float* x, const void* weight, DType weightType, int64_t rows, int64_t dim,
             float eps) {
  std::vector<float> w(static_cast<size_t>(dim));
  widenRow(weight, weightType, dim, w.data());
  parallelFor(rows, std::max<int64_t>(1, 32768 / std::max<int64_t>(dim, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * dim;
      float* o = out + r * dim;
      float lanes[8] = {};
      int64_t i = 0;
      for (; i + 8 <= dim; i += 8) {
        for (int l = 0; l < 8; ++l) lanes[l] += xr[i + l] * xr[i + l];
      }
      float sum = 0.0f;
      for (; i < dim; ++i) sum += xr[i] * xr[i];
      for (float lane : lanes) sum += lane;
      const float inv = 1.0f / std::sqrt(sum / static_cast<float>(dim) + eps);
      for (int64_t j = 0; j < dim; ++j) o[j] = xr[j] * inv * w[j];
    }
  });
}

}  // namespace moa::cpu
