// Error checks for CUDA calls: every runtime call is checked; launches are checked for launch errors always
// and, in debug builds (MOA_CUDA_DEBUG), synchronised so a faulting kernel is reported by its own op.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace moa::cuda {

inline void check(const char* op, cudaError_t status) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string(op) + ": CUDA error " + std::to_string(static_cast<int>(status)) + " (" +
                             cudaGetErrorName(status) + "): " + cudaGetErrorString(status));
  }
}

inline void checkLaunch(const char* op) {
  check(op, cudaGetLastError());
#ifdef MOA_CUDA_DEBUG
  check(op, cudaDeviceSynchronize());
#endif
}

// Grid size for a grid-stride loop over `count` elements.
inline unsigned gridFor(int64_t count, int threads) {
  const int64_t blocks = (count + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 * 16 ? 65535 * 16 : blocks));
}

}  // namespace moa::cuda
