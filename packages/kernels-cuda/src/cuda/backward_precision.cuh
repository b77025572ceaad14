// How the profiler's products (matmul `exact`, matmulBackward, the stats prefill and attentionBackward) feed
// fp32 values to 16-bit tensor cores. MOA_CUDA_BACKWARD_PRECISION selects it; it is read at every call.
//   "f16" (default): each operand is copied to fp16 times a power of two s = 2^(15 − e) that brings its largest
//         magnitude just under 2^15 (half_scale.cuh), one product per pair, and the fp32 result is divided by
//         the scales, which is exact. fp16 keeps 11 significant bits (bf16: 8) and the scale gives it the range
//         (gradients of 1e-7 stay normal), so one product runs at the cost of the bf16 forward.
//   "split": a value v is carried as hi = bf16(v) and lo = bf16(v − hi), and a product a·b as hi·hi + hi·lo +
//         lo·hi (or hi·b + lo·b against exact bf16 weights): about fp32's precision, at two or three times the
//         tensor-core work.
//   "bf16": each value rounded once to bf16, as the forward ops do (to measure what the other two buy).
#pragma once

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

namespace moa::cuda {

enum class BackwardPrecision { F16, Split, Bf16 };

inline BackwardPrecision backwardPrecision() {
  const char* value = std::getenv("MOA_CUDA_BACKWARD_PRECISION");
  if (value == nullptr || value[0] == '\0' || std::strcmp(value, "f16") == 0) return BackwardPrecision::F16;
  if (std::strcmp(value, "split") == 0) return BackwardPrecision::Split;
  if (std::strcmp(value, "bf16") == 0) return BackwardPrecision::Bf16;
  throw std::runtime_error(std::string("MOA_CUDA_BACKWARD_PRECISION=") + value +
                           ": unknown precision (use f16, split or bf16)");
}

}  // namespace moa::cuda
