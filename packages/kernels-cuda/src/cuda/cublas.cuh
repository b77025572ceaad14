// The one cuBLAS entry the ops share (matmul.cu opens the library at run time; see there).
#pragma once

#include <cstdint>
#include <string>

namespace moa::cuda {

enum class GemmType { F32, BF16, F16 };

// Column-major c[m, n] = op(a)[m, k] · b[k, n] + beta · c with fp32 output and accumulation; a and b share
// `type`, op(a) = aᵀ when transA. Throws naming `op` and `sizes` when cuBLAS is missing or fails.
void gemm(const std::string& op, const std::string& sizes, bool transA, int64_t m, int64_t n, int64_t k,
          const void* a, int64_t lda, const void* b, int64_t ldb, GemmType type, float beta, float* c, int64_t ldc);

// The same product with a and b scaled fp16 copies (half_scale.cuh) and alphaBeta = {alpha, beta} on the device.
void gemmScaledHalf(const std::string& op, const std::string& sizes, bool transA, int64_t m, int64_t n, int64_t k,
                    const void* a, int64_t lda, const void* b, int64_t ldb, const float* alphaBeta, float* c,
                    int64_t ldc);

// hi[i] = bf16(x[i]), lo[i] = bf16(x[i] − hi[i]) for `count` elements (lo null: hi only), on the stream.
void splitToBf16(void* hi, void* lo, const float* x, int64_t count, const std::string& op, const std::string& sizes);
// out[i] = f16 w[i] widened to fp32.
void widenHalf(float* out, const void* w, int64_t count, const std::string& op, const std::string& sizes);

}  // namespace moa::cuda
