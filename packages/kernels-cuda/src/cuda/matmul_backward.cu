// dx[m, k] = dy[m, n] · w (+ dx), w [n, k] in f32/bf16/f16: the input gradient of matmul (same signature as
// src/cpu/matmul_backward.cc), through cuBLAS with fp32 accumulation.
//
// Column-major, w [n, k] row-major is a k × n matrix and dy a n × m one, so dxᵀ = w · dyᵀ needs no transpose.
// Gradients are small and span many magnitudes, so dy is not simply rounded to the weights' type:
//   "f16" precision (default, backward_precision.cuh): dy and w as scaled fp16 copies, one GEMM;
//   otherwise:
//   bf16 weights: dy = hi + lo (backward_precision.cuh), two bf16 GEMMs into the same fp32 output;
//   f16 weights:  f16 cannot hold dy's range (gradients of 1e-7 flush to zero), so w is widened to fp32 in
//                 panels of rows and the product runs as fp32 GEMMs, one per panel, accumulating;
//   f32 weights:  one fp32 GEMM.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "cuda/backward_precision.cuh"
#include "cuda/check.cuh"
#include "cuda/cublas.cuh"
#include "cuda/cuda_ops.h"
#include "cuda/half_scale.cuh"
#include "cuda/scratch.cuh"

namespace moa::cuda {

void matmulBackward(float* dx, const float* dy, const void* w, DType wType, int64_t m, int64_t n, int64_t k,
                    bool accumulate) {
  const std::string op = "matmulBackward";
  const std::string sizes = dims({{"m", m}, {"n", n}, {"k", k}});
  if (m == 0 || k == 0) return;
  if (n == 0) {
    if (!accumulate) check(op, cudaMemsetAsync(dx, 0, static_cast<size_t>(m * k) * sizeof(float), 0), sizes);
    return;
  }
  const float beta = accumulate ? 1.0f : 0.0f;
  const BackwardPrecision precision = backwardPrecision();
  if ((wType == DType::BF16 || wType == DType::F16) && precision == BackwardPrecision::F16) {
    const HalfGemmOperands h = scaledGemmOperands(dy, m * n, w, wType == DType::F16, n * k, beta, op, sizes);
    gemmScaledHalf(op, sizes, false, k, m, n, h.w, k, h.x, n, h.alphaBeta, dx, k);
    return;
  }
  requireWritten(dy, m * n, op);
  if (wType == DType::BF16) {
    const bool split = precision == BackwardPrecision::Split;
    auto* hi = static_cast<__nv_bfloat16*>(scratch(ScratchSlot::Half, static_cast<size_t>(m * n) * (split ? 4 : 2), op));
    __nv_bfloat16* lo = split ? hi + m * n : nullptr;
    splitToBf16(hi, lo, dy, m * n, op, sizes);
    gemm(op, sizes, false, k, m, n, w, k, hi, n, GemmType::BF16, beta, dx, k);
    if (split) gemm(op, sizes, false, k, m, n, w, k, lo, n, GemmType::BF16, 1.0f, dx, k);
    return;
  }
  if (wType == DType::F16) {
    // Panels of w's rows (the GEMM's depth) of at most 64 MiB in fp32.
    const int64_t panel = std::max<int64_t>(1, std::min<int64_t>(n, (int64_t{16} << 20) / k));
    auto* wide = static_cast<float*>(scratch(ScratchSlot::Half, static_cast<size_t>(panel * k) * 4, op));
    for (int64_t p0 = 0; p0 < n; p0 += panel) {
      const int64_t rows = std::min(panel, n - p0);
      widenHalf(wide, static_cast<const __half*>(w) + p0 * k, rows * k, op, sizes);
      gemm(op, sizes, false, k, m, rows, wide, k, dy + p0, n, GemmType::F32, p0 == 0 ? beta : 1.0f, dx, k);
    }
    return;
  }
  gemm(op, sizes, false, k, m, n, w, k, dy, n, GemmType::F32, beta, dx, k);
}

}  // namespace moa::cuda
