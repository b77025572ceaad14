// Gradients of out = silu(gate) · up (the SwiGLU MLP), elementwise, with σ(g) = 1 / (1 + e^(−g)):
//   dUp   = dOut · g · σ(g)
//   dGate = dOut · up · σ(g) · (1 + g · (1 − σ(g)))
#include <cmath>

#include "cpu/ops.h"

namespace moa::cpu {

void siluMulBackward(float* dGate, float* dUp, const float* dOut, const float* gate, const float* up,
                     int64_t count) {
  parallelFor(count, 16384, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const float g = gate[i];
      const float sigmoid = 1.0f / (1.0f + std::exp(-g));
      const float d = dOut[i];
      dUp[i] = d * g * sigmoid;
      dGate[i] = d * up[i] * sigmoid * (1.0f + g * (1.0f - sigmoid));
    }
  });
}

}  // namespace moa::cpu
