// out[t, :] = table[ids[t], :], widening bf16/f16 tables to fp32 (same signature as src/cpu/embedding.cc).
// The ids are read back and checked on the host first (a few bytes), so a bad id is an out_of_range error
// naming it, as on the CPU, rather than a read outside the table.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/check.cuh"
#include "cuda/cuda_ops.h"
#include "cuda/widen.cuh"

namespace moa::cuda {
namespace {

template <typename W>
__global__ void embeddingKernel(float* out, const int32_t* ids, const W* table, int64_t tokens, int64_t dim) {
  for (int64_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    const W* row = table + static_cast<int64_t>(ids[t]) * dim;
    float* o = out + t * dim;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) o[i] = widen(row[i]);
  }
}

}  // namespace

void embedding(float* out, const int32_t* ids, int64_t tokens, const void* table, DType tableType, int64_t vocab,
               int64_t dim) {
  if (tokens == 0) return;
  std::vector<int32_t> hostIds(static_cast<size_t>(tokens));
  check("embedding", cudaMemcpy(hostIds.data(), ids, hostIds.size() * sizeof(int32_t), cudaMemcpyDeviceToHost),
        "reading ids");
  for (int64_t t = 0; t < tokens; ++t) {
    if (hostIds[t] < 0 || hostIds[t] >= vocab) {
      throw std::out_of_range("embedding: ids[" + std::to_string(t) + "] = " + std::to_string(hostIds[t]) +
                              " is outside the table's " + std::to_string(vocab) + " rows");
    }
  }
  const unsigned grid = static_cast<unsigned>(tokens < 65535 ? tokens : 65535);
  switch (tableType) {
    case DType::BF16:
      embeddingKernel<<<grid, 256>>>(out, ids, static_cast<const __nv_bfloat16*>(table), tokens, dim);
      break;
    case DType::F16:
      embeddingKernel<<<grid, 256>>>(out, ids, static_cast<const __half*>(table), tokens, dim);
      break;
    default:
      embeddingKernel<<<grid, 256>>>(out, ids, static_cast<const float*>(table), tokens, dim);
  }
  checkLaunch("embedding", dims({{"tokens", tokens}, {"vocab", vocab}, {"dim", dim}}));
}

}  // namespace moa::cuda
