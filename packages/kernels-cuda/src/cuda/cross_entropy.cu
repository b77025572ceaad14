// Cross-entropy of logit rows against target ids and its gradient (same signature and numerics as
// src/cpu/cross_entropy.cc): losses[r] = log Σ_j e^(row_j) − row[target] with the max subtracted first and the
// sum in double; dLogits = (p − onehot(target)) · gradScale with p rounded to fp32 before the one-hot is
// subtracted, as fp32 autograd computes it. One block per row.
//
// The targets are checked on the host before anything is launched (one small copy, rows × 4 bytes), so an id
// outside the vocabulary throws the reference's error instead of reading out of bounds.
#include <cuda_runtime.h>

#include <cfloat>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/check.cuh"
#include "cuda/cuda_ops.h"

namespace moa::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void crossEntropyKernel(float* losses, float* dLogits, const float* logits, const int32_t* targets,
                                   int64_t rows, int64_t vocab, float gradScale) {
  __shared__ float warpMax[kThreads / 32];
  __shared__ double warpSum[kThreads / 32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* row = logits + r * vocab;
    float max = -FLT_MAX;
    for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) max = fmaxf(max, row[j]);
    for (int offset = 16; offset > 0; offset >>= 1) max = fmaxf(max, __shfl_xor_sync(0xffffffffu, max, offset));
    if (threadIdx.x % 32 == 0) warpMax[threadIdx.x / 32] = max;
    __syncthreads();
    max = warpMax[0];
    for (int w = 1; w < kThreads / 32; ++w) max = fmaxf(max, warpMax[w]);
    double sum = 0.0;
    for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) sum += exp(static_cast<double>(row[j]) - max);
    for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (threadIdx.x % 32 == 0) warpSum[threadIdx.x / 32] = sum;
    __syncthreads();
    sum = 0.0;
    for (int w = 0; w < kThreads / 32; ++w) sum += warpSum[w];
    const double logSum = log(sum) + max;
    const int32_t target = targets[r];
    if (threadIdx.x == 0) losses[r] = static_cast<float>(logSum - row[target]);
    float* grad = dLogits + r * vocab;
    for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) {
      const float p = static_cast<float>(exp(static_cast<double>(row[j]) - logSum));
      grad[j] = (j == target ? p - 1.0f : p) * gradScale;
    }
    __syncthreads();  // warpMax/warpSum are reused by the next row
  }
}

}  // namespace

void crossEntropy(float* losses, float* dLogits, const float* logits, const int32_t* targets, int64_t rows,
                  int64_t vocab, float gradScale) {
  const std::string op = "crossEntropy";
  if (rows == 0) return;
  std::vector<int32_t> host(static_cast<size_t>(rows));
  check(op, cudaMemcpy(host.data(), targets, host.size() * sizeof(int32_t), cudaMemcpyDeviceToHost),
        "reading targets");
  for (int64_t r = 0; r < rows; ++r) {
    if (host[r] < 0 || host[r] >= vocab) {
      throw std::out_of_range(op + ": targets[" + std::to_string(r) + "] = " + std::to_string(host[r]) +
                              " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
    }
  }
  const unsigned grid = static_cast<unsigned>(rows < 65535 ? rows : 65535);
  crossEntropyKernel<<<grid, kThreads>>>(losses, dLogits, logits, targets, rows, vocab, gradScale);
  checkLaunch(op, dims({{"rows", rows}, {"vocab", vocab}}));
}

}  // namespace moa::cuda
