// Rotate-half rotary position embedding (Hugging Face `apply_rotary_pos_emb`), in place on x[T, H, D]:
// for i < R (R = rotaryHalf, = D/2 unless partial rotary), angle = float(pos) · invFreq[i] in fp32,
//   x[i]     ← x[i] · cos − x[i + R] · sin
//   x[i + R] ← x[i + R] · cos + x[i] · sin
// with cos/sin multiplied by attentionScale. Dims ≥ 2R are left as they are.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/ops.h"

namespace moa::cpu {

void rope(float* x, const int32_t* positions, const float* invFreq, int64_t tokens, int64_t heads, int64_t headDim,
          int64_t rotaryHalf, float attentionScale) {
  parallelFor(tokens, std::max<int64_t>(1, 4096 / std::max<int64_t>(heads * headDim, 1)),
              [&](int64_t t0, int64_t t1) {
                std::vector<float> cosines(static_cast<size_t>(rotaryHalf));
                std::vector<float> sines(static_cast<size_t>(rotaryHalf));
                for (int64_t t = t0; t < t1; ++t) {
                  const float position = static_cast<float>(positions[t]);
                  for (int64_t i = 0; i < rotaryHalf; ++i) {
                    // Like torch: the angle is rounded to fp32, cos/sin are then accurate to fp32.
                    const float angle = position * invFreq[i];
                    cosines[i] = static_cast<float>(std::cos(static_cast<double>(angle))) * attentionScale;
                    sines[i] = static_cast<float>(std::sin(static_cast<double>(angle))) * attentionScale;
                  }
                  for (int64_t h = 0; h < heads; ++h) {
                    float* head = x + (t * heads + h) * headDim;
                    for (int64_t i = 0; i < rotaryHalf; ++i) {
                      const float a = head[i];
                      const float b = head[i + rotaryHalf];
                      head[i] = a * cosines[i] - b * sines[i];
                      head[i + rotaryHalf] = b * cosines[i] + a * sines[i];
                    }
                  }
                }
              });
}

}  // namespace moa::cpu
