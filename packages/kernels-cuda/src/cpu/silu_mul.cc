// out = silu(gate) · up, elementwise (the SwiGLU MLP's gate).
#include <cmath>

#include "cpu/ops.h"

namespace moa::cpu {

void siluMul(float* out, const float* gate, const float* up, int64_t count) {
  parallelFor(count, 16384, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const float g = gate[i];
      out[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
  });
}

}  // namespace moa::cpu
