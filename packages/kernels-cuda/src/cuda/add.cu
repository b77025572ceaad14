// out = a + b, elementwise (out may alias a or b). Same signature as src/cpu/add.cc.
#include <cuda_runtime.h>

#include "cuda/check.cuh"
#include "cuda/cuda_ops.h"

namespace moa::cuda {
namespace {

__global__ void addKernel(float* out, const float* a, const float* b, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = a[i] + b[i];
  }
}

}  // namespace

void add(float* out, const float* a, const float* b, int64_t count) {
  if (count == 0) return;
  addKernel<<<gridFor(count, 256), 256>>>(out, a, b, count);
  checkLaunch("add");
}

}  // namespace moa::cuda
