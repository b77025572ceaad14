// Cross-entropy of logit rows against target ids, and its gradient (the profiling loss, DESIGN.md: Profile):
//   losses[r]  = log Σ_j e^(row_j) − row[target]           (max subtracted first, sum in double)
//   dLogits[r] = (softmax(row) − onehot(target)) · gradScale
// with the probabilities rounded to fp32 before the one-hot is subtracted, as fp32 autograd computes them. For
// a target the model is nearly sure of (1 − p ≈ 1e-5) that rounding moves 1 − p by ~1e-3 relative, and a profile
// is compared against exactly that gradient (fixtures: reference-vectors.json, influence).
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "cpu/ops.h"

namespace moa::cpu {

void crossEntropy(float* losses, float* dLogits, const float* logits, const int32_t* targets, int64_t rows,
                  int64_t vocab, float gradScale) {
  for (int64_t r = 0; r < rows; ++r) {
    if (targets[r] < 0 || targets[r] >= vocab) {
      throw std::out_of_range("crossEntropy: targets[" + std::to_string(r) + "] = " + std::to_string(targets[r]) +
                              " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
    }
  }
  parallelFor(rows, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* row = logits + r * vocab;
      float* grad = dLogits + r * vocab;
      const float max = *std::max_element(row, row + vocab);
      double sum = 0.0;
      for (int64_t j = 0; j < vocab; ++j) sum += std::exp(static_cast<double>(row[j]) - max);
      const double logSum = std::log(sum) + max;
      const int32_t target = targets[r];
      losses[r] = static_cast<float>(logSum - row[target]);
      for (int64_t j = 0; j < vocab; ++j) {
        const float p = static_cast<float>(std::exp(static_cast<double>(row[j]) - logSum));
        grad[j] = (j == target ? p - 1.0f : p) * gradScale;
      }
    }
  });
}

}  // namespace moa::cpu
