// Input gradient of RMSNorm (Hugging Face LlamaRMSNorm, out = x · r · weight with r = 1/sqrt(mean(x²) + eps)):
//   dx = r · (weight ⊙ dy) − x · r³ / dim · Σ_j x_j · weight_j · dy_j
// per row, with the two row sums in double; `accumulate` adds dx to what the output holds (dx_out += dx, the
// same fp32 sum as a separate add).
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/ops.h"

namespace moa::cpu {

void rmsNormBackward(float* dx, const float* dy, const float* x, const void* weight, DType weightType,
                     int64_t rows, int64_t dim, float eps, bool accumulate) {
  std::vector<float> w(static_cast<size_t>(dim));
  widenRow(weight, weightType, dim, w.data());
  parallelFor(rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(dim, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * dim;
      const float* dyr = dy + r * dim;
      float* out = dx + r * dim;
      double squares = 0.0;
      double dot = 0.0;
      for (int64_t j = 0; j < dim; ++j) {
        squares += static_cast<double>(xr[j]) * xr[j];
        dot += static_cast<double>(xr[j]) * w[j] * dyr[j];
      }
      // r as the forward computes it (fp32), so dx is the gradient of the function that ran.
      const float inv = 1.0f / std::sqrt(static_cast<float>(squares) / static_cast<float>(dim) + eps);
      const float coefficient = static_cast<float>(dot * inv * inv * inv / static_cast<double>(dim));
      if (accumulate) {
        for (int64_t j = 0; j < dim; ++j) out[j] += inv * w[j] * dyr[j] - xr[j] * coefficient;
      } else {
        for (int64_t j = 0; j < dim; ++j) out[j] = inv * w[j] * dyr[j] - xr[j] * coefficient;
      }
    }
  });
}

}  // namespace moa::cpu
