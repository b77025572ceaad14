// Error checks for CUDA calls: every runtime call is checked, and every launch is checked for launch errors.
// Kernels run asynchronously, so a fault inside one is reported at the next synchronising call; with
// MOA_CUDA_SYNC=1 in the environment (or a MOA_CUDA_DEBUG build) each launch is synchronised, so a faulting
// kernel is reported by its own op. Messages name the op and its sizes.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <utility>

namespace moa::cuda {

inline std::string errorText(cudaError_t status) {
  return "CUDA error " + std::to_string(static_cast<int>(status)) + " (" + cudaGetErrorName(status) +
         "): " + cudaGetErrorString(status);
}

inline void check(const std::string& op, cudaError_t status, const std::string& detail = "") {
  if (status != cudaSuccess) {
    // A launch or allocation error is not sticky: clear it so the process can free memory and go on.
    cudaGetLastError();
    throw std::runtime_error(op + ": " + errorText(status) + (detail.empty() ? "" : " [" + detail + "]"));
  }
}

inline bool syncEveryLaunch() {
#ifdef MOA_CUDA_DEBUG
  return true;
#else
  static const bool enabled = [] {
    const char* value = std::getenv("MOA_CUDA_SYNC");
    return value != nullptr && value[0] != '\0' && value[0] != '0';
  }();
  return enabled;
#endif
}

inline void checkLaunch(const std::string& op, const std::string& detail = "") {
  check(op, cudaGetLastError(), detail);
  if (syncEveryLaunch()) check(op, cudaDeviceSynchronize(), detail);
}

// Grid size for a grid-stride loop over `count` elements.
inline unsigned gridFor(int64_t count, int threads) {
  const int64_t blocks = (count + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 * 16 ? 65535 * 16 : blocks));
}

inline std::string dims(std::initializer_list<std::pair<const char*, int64_t>> values) {
  std::string text;
  for (const auto& [name, value] : values) {
    if (!text.empty()) text += ", ";
    text += std::string(name) + "=" + std::to_string(value);
  }
  return text;
}

}  // namespace moa::cuda
