// Input gradient of RMSNorm (same signature and numerics as src/cpu/rms_norm_backward.cc): per row, with
// r = 1/sqrt(mean(x²) + eps) computed in fp32 as the forward does,
//   dx = r · (weight ⊙ dy) − x · r³ / dim · Σ_j x_j · weight_j · dy_j   (with `accumulate`: dx_out += dx).
// One block per row; the two row sums are accumulated in double, as the reference does, so a row of
// thousands of mixed-sign products does not lose the small difference dx often is.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "cuda/check.cuh"
#include "cuda/cuda_ops.h"
#include "cuda/widen.cuh"

namespace moa::cuda {
namespace {

constexpr int kThreads = 256;

template <typename W>
__global__ void rmsNormBackwardKernel(float* dx, const float* dy, const float* x, const W* weight, int64_t rows,
                                      int64_t dim, float eps, bool accumulate) {
  __shared__ double warpSums[2][kThreads / 32];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float* xr = x + row * dim;
    const float* dyr = dy + row * dim;
    double squares = 0.0;
    double dot = 0.0;
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) {
      const double xv = xr[j];
      squares += xv * xv;
      dot += xv * static_cast<double>(widen(weight[j])) * dyr[j];
    }
    for (int offset = 16; offset > 0; offset >>= 1) {
      squares += __shfl_xor_sync(0xffffffffu, squares, offset);
      dot += __shfl_xor_sync(0xffffffffu, dot, offset);
    }
    if (threadIdx.x % 32 == 0) {
      warpSums[0][threadIdx.x / 32] = squares;
      warpSums[1][threadIdx.x / 32] = dot;
    }
    __syncthreads();
    squares = 0.0;
    dot = 0.0;
    for (int w = 0; w < kThreads / 32; ++w) {
      squares += warpSums[0][w];
      dot += warpSums[1][w];
    }
    const float inv = 1.0f / sqrtf(static_cast<float>(squares) / static_cast<float>(dim) + eps);
    const float coefficient = static_cast<float>(dot * inv * inv * inv / static_cast<double>(dim));
    float* out = dx + row * dim;
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) {
      const float value = inv * widen(weight[j]) * dyr[j] - xr[j] * coefficient;
      // __fadd_rn: the same rounding as a separate add, never fused with the products above.
      out[j] = accumulate ? __fadd_rn(out[j], value) : value;
    }
    __syncthreads();  // warpSums is reused by the next row
  }
}

// The same for rows of dim ≤ N · kThreads: each thread reads its elements of x and dy once (the same elements in
// the same order as rmsNormBackwardKernel, so the same bits) and keeps them in registers for the second step.
template <typename W, int N>
__global__ void rmsNormBackwardRowsKernel(float* dx, const float* dy, const float* x, const W* weight, int64_t rows,
                                          int64_t dim, float eps, bool accumulate) {
  __shared__ double warpSums[2][kThreads / 32];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float* xr = x + row * dim;
    const float* dyr = dy + row * dim;
    float xv[N];
    float gv[N];
    double squares = 0.0;
    double dot = 0.0;
#pragma unroll
    for (int j = 0; j < N; ++j) {
      const int64_t i = threadIdx.x + static_cast<int64_t>(j) * kThreads;
      xv[j] = i < dim ? xr[i] : 0.0f;
      gv[j] = i < dim ? dyr[i] : 0.0f;
      if (i < dim) {
        const double xd = xv[j];
        squares += xd * xd;
        dot += xd * static_cast<double>(widen(weight[i])) * gv[j];
      }
    }
    for (int offset = 16; offset > 0; offset >>= 1) {
      squares += __shfl_xor_sync(0xffffffffu, squares, offset);
      dot += __shfl_xor_sync(0xffffffffu, dot, offset);
    }
    if (threadIdx.x % 32 == 0) {
      warpSums[0][threadIdx.x / 32] = squares;
      warpSums[1][threadIdx.x / 32] = dot;
    }
    __syncthreads();
    squares = 0.0;
    dot = 0.0;
    for (int w = 0; w < kThreads / 32; ++w) {
      squares += warpSums[0][w];
      dot += warpSums[1][w];
    }
    const float inv = 1.0f / sqrtf(static_cast<float>(squares) / static_cast<float>(dim) + eps);
    const float coefficient = static_cast<float>(dot * inv * inv * inv / static_cast<double>(dim));
    float* out = dx + row * dim;
#pragma unroll
    for (int j = 0; j < N; ++j) {
      const int64_t i = threadIdx.x + static_cast<int64_t>(j) * kThreads;
      if (i >= dim) continue;
      const float value = inv * widen(weight[i]) * gv[j] - xv[j] * coefficient;
      // __fadd_rn: the same rounding as a separate add, never fused with the products above.
      out[i] = accumulate ? __fadd_rn(out[i], value) : value;
    }
    __syncthreads();  // warpSums is reused by the next row
  }
}

template <typename W>
void launchBackward(float* dx, const float* dy, const float* x, const W* weight, int64_t rows, int64_t dim, float eps,
                    bool accumulate) {
  const unsigned grid = static_cast<unsigned>(rows < 65535 ? rows : 65535);
  const int64_t perThread = (dim + kThreads - 1) / kThreads;
  if (perThread > 32) {
    rmsNormBackwardKernel<<<grid, kThreads>>>(dx, dy, x, weight, rows, dim, eps, accumulate);
  } else if (perThread <= 4) {
    rmsNormBackwardRowsKernel<W, 4><<<grid, kThreads>>>(dx, dy, x, weight, rows, dim, eps, accumulate);
  } else if (perThread <= 8) {
    rmsNormBackwardRowsKernel<W, 8><<<grid, kThreads>>>(dx, dy, x, weight, rows, dim, eps, accumulate);
  } else if (perThread <= 16) {
    rmsNormBackwardRowsKernel<W, 16><<<grid, kThreads>>>(dx, dy, x, weight, rows, dim, eps, accumulate);
  } else {
    rmsNormBackwardRowsKernel<W, 32><<<grid, kThreads>>>(dx, dy, x, weight, rows, dim, eps, accumulate);
  }
}

}  // namespace

void rmsNormBackward(float* dx, const float* dy, const float* x, const void* weight, DType weightType, int64_t rows,
                     int64_t dim, float eps, bool accumulate) {
  if (rows == 0) return;
  switch (weightType) {
    case DType::BF16:
      launchBackward(dx, dy, x, static_cast<const __nv_bfloat16*>(weight), rows, dim, eps, accumulate);
      break;
    case DType::F16:
      launchBackward(dx, dy, x, static_cast<const __half*>(weight), rows, dim, eps, accumulate);
      break;
    default:
      launchBackward(dx, dy, x, static_cast<const float*>(weight), rows, dim, eps, accumulate);
  }
  checkLaunch("rmsNormBackward", dims({{"rows", rows}, {"dim", dim}}));
}

}  // namespace moa::cuda
