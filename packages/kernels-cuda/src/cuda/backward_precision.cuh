// How the backward ops (profiling) feed fp32 values to bf16 tensor cores. "split" (default): a value v is
// carried as hi = bf16(v) and lo = bf16(v − hi), and a product a·b as hi·hi + hi·lo + lo·hi (or hi·b + lo·b
// against exact bf16 weights), about fp32's precision at two or three times the tensor-core work. "bf16": each
// value rounded once, as the forward ops do. MOA_CUDA_BACKWARD_PRECISION=bf16 selects it, so the difference can
// be measured on a real profile; it is read at every call.
#pragma once

#include <cstdlib>
#include <cstring>

namespace moa::cuda {

inline bool backwardSplit() {
  const char* value = std::getenv("MOA_CUDA_BACKWARD_PRECISION");
  return value == nullptr || std::strcmp(value, "bf16") != 0;
}

}  // namespace moa::cuda
