// Gradients of out = silu(gate) · up (the SwiGLU MLP), elementwise, with σ(g) = 1 / (1 + e^(−g)):
//   dUp   = dOut · g · σ(g)
//   dGate = dOut · up · σ(g) · (1 + g · (1 − σ(g)))
// 16 lanes at a time with the vector exp of simd.h, compiled per instruction set like the other hot loops.
#include <cmath>

#include "cpu/ops.h"
#include "cpu/simd.h"

namespace moa::cpu {
namespace {

struct Job {
  float* dGate;
  float* dUp;
  const float* dOut;
  const float* gate;
  const float* up;
};

MOA_INLINE void body(const Job& job, int64_t i0, int64_t i1) {
  int64_t i = i0;
  for (; i + 16 <= i1; i += 16) {
    const Vec16 g = load16(job.gate + i);
    const Vec16 d = load16(job.dOut + i);
    const Vec16 sigmoid = 1.0f / (1.0f + exp16(-g));
    store16(job.dUp + i, d * g * sigmoid);
    store16(job.dGate + i, d * load16(job.up + i) * sigmoid * (1.0f + g * (1.0f - sigmoid)));
  }
  for (; i < i1; ++i) {
    const float g = job.gate[i];
    const float sigmoid = 1.0f / (1.0f + std::exp(-g));
    job.dUp[i] = job.dOut[i] * g * sigmoid;
    job.dGate[i] = job.dOut[i] * job.up[i] * sigmoid * (1.0f + g * (1.0f - sigmoid));
  }
}

void portable(const Job& job, int64_t i0, int64_t i1) { body(job, i0, i1); }
#ifdef MOA_X86_DISPATCH
MOA_TARGET_AVX2 void avx2(const Job& job, int64_t i0, int64_t i1) { body(job, i0, i1); }
MOA_TARGET_AVX512 void avx512(const Job& job, int64_t i0, int64_t i1) { body(job, i0, i1); }
#endif

}  // namespace

void siluMulBackward(float* dGate, float* dUp, const float* dOut, const float* gate, const float* up,
                     int64_t count) {
  const Job job{dGate, dUp, dOut, gate, up};
  void (*run)(const Job&, int64_t, int64_t) = portable;
#ifdef MOA_X86_DISPATCH
  if (bestIsa() == Isa::Avx2) run = avx2;
  if (bestIsa() == Isa::Avx512) run = avx512;
#endif
  parallelFor(count, 16384, [&](int64_t i0, int64_t i1) { run(job, i0, i1); });
}

}  // namespace moa::cpu
