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

// Thread t takes the row's elements t, t + kThreads, …: with N > 0 (dim ≤ N · kThreads) it reads x and dy once and
// keeps them in registers for the second step; with N = 0 (any dim) it reads them twice. Same bits either way.
template <typename W, int N>
__global__ void rmsNormBackwardKernel(float* dx, const float* dy, const float* x, const W* weight, int64_t rows,
                                      int64_t dim, float eps, bool accumulate) {
  __shared__ double warpSums[2][kThreads / 32];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float* xr = x + row * dim;
    const float* dyr = dy + row * dim;
    float xv[N > 0 ? N : 1];
    float gv[N > 0 ? N : 1];
    double squares = 0.0;
    double dot = 0.0;
    const auto gather = [&](int64_t i, float xi, float gi) {
      const double xd = xi;
      squares += xd * xd;
      dot += xd * static_cast<double>(widen(weight[i])) * gi;
    };
    if constexpr (N > 0) {
#pragma unroll
      for (int j = 0; j < N; ++j) {
        const int64_t i = threadIdx.x + static_cast<int64_t>(j) * kThreads;
        xv[j] = i < dim ? xr[i] : 0.0f;
        gv[j] = i < dim ? dyr[i] : 0.0f;
        if (i < dim) gather(i, xv[j], gv[j]);
      }
    } else {
      for (int64_t i = threadIdx.x; i < dim; i += kThreads) gather(i, xr[i], dyr[i]);
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
    const auto emit = [&](int64_t i, float xi, float gi) {
      const float value = inv * widen(weight[i]) * gi - xi * coefficient;
      // __fadd_rn: the same rounding as a separate add, never fused with the products above.
      out[i] = accumulate ? __fadd_rn(out[i], value) : value;
    };
    if constexpr (N > 0) {
#pragma unroll
      for (int j = 0; j < N; ++j) {
        const int64_t i = threadIdx.x + static_cast<int64_t>(j) * kThreads;
        if (i < dim) emit(i, xv[j], gv[j]);
      }
    } else {
      for (int64_t i = threadIdx.x; i < dim; i += kThreads) emit(i, xr[i], dyr[i]);
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
    rmsNormBackwardKernel<W, 0><<<grid, kThreads>>>(dx, dy, x, weight, rows, dim, eps, accumulate);
  } else if (perThread <= 4) {
    rmsNormBackwardKernel<W, 4><<<grid, kThreads>>>(dx, dy, x, weight, rows, dim, eps, accumulate);
  } else if (perThread <= 8) {
    rmsNormBackwardKernel<W, 8><<<grid, kThreads>>>(dx, dy, x, weight, rows, dim, eps, accumulate);
  } else if (perThread <= 16) {
    rmsNormBackwardKernel<W, 16><<<grid, kThreads>>>(dx, dy, x, weight, rows, dim, eps, accumulate);
  } else {
    rmsNormBackwardKernel<W, 32><<<grid, kThreads>>>(dx, dy, x, weight, rows, dim, eps, accumulate);
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
