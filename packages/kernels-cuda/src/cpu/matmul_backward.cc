// dx[m, k] = dy[m, n] · w (+ dx), w [n, k] in f32/bf16/f16: the input gradient of matmul (out = x · wᵀ), fp32
// accumulate. A bias adds nothing to dx.
//
// The same blocked GEMM as matmul.cc with the roles of w's dims swapped: the depth runs over w's rows n, the
// output columns over its columns k. Each task owns a block of up to kNC output columns and a range of rows;
// per depth chunk of kKC it widens w[p0 .. p0 + kc, c0 .. c0 + nc) — contiguous runs of w's rows — into an
// fp32 panel [column group][depth][kNR] and runs a kMR × kNR register-tile micro-kernel over its rows.
#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/ops.h"
#include "cpu/simd.h"

namespace moa::cpu {
namespace {

constexpr int64_t kNR = 16;   // columns per micro-tile
constexpr int64_t kNC = 64;   // columns per task
constexpr int64_t kKC = 256;  // depth per packed panel

// panel[(j / kNR) · kc · kNR + p · kNR + j % kNR] = w[p0 + p, c0 + j] for j < nc, zero up to a multiple of kNR.
void packPanel(const void* w, DType type, int64_t k, int64_t c0, int64_t nc, int64_t p0, int64_t kc, float* panel) {
  float row[kNC];
  const int64_t padded = (nc + kNR - 1) / kNR * kNR;
  const int64_t elementSize = type == DType::F32 ? 4 : 2;
  for (int64_t p = 0; p < kc; ++p) {
    const char* src = static_cast<const char*>(w) + ((p0 + p) * k + c0) * elementSize;
    widenRow(src, type, nc, row);
    for (int64_t j = nc; j < padded; ++j) row[j] = 0.0f;
    for (int64_t j = 0; j < padded; j += kNR) {
      std::memcpy(panel + (j / kNR) * kc * kNR + p * kNR, row + j, sizeof(float) * kNR);
    }
  }
}

static_assert(kNR == 16, "a micro-tile row is one Vec16");

// acc[MR] = dy[MR rows, kc] · panel group (kc × kNR); then out (+)= acc for the first `cols` columns.
template <int MR>
MOA_INLINE void microKernel(const float* dy, int64_t ldy, const float* panel, int64_t kc, float* out, int64_t ldo,
                            int64_t cols, bool accumulate) {
  Vec16 acc[MR];
  for (int r = 0; r < MR; ++r) acc[r] = Vec16{};
  for (int64_t p = 0; p < kc; ++p) {
    const Vec16 b = load16(panel + p * kNR);
    for (int r = 0; r < MR; ++r) acc[r] += dy[r * ldy + p] * b;
  }
  for (int r = 0; r < MR; ++r) {
    float* o = out + r * ldo;
    if (cols == kNR) {
      store16(o, accumulate ? acc[r] + load16(o) : acc[r]);
    } else {
      float lanes[kNR];
      std::memcpy(lanes, &acc[r], sizeof lanes);
      for (int64_t c = 0; c < cols; ++c) o[c] = accumulate ? o[c] + lanes[c] : lanes[c];
    }
  }
}

struct PanelJob {
  const float* dy;  // first row of the task, at depth p0
  int64_t ldy;
  const float* panel;
  int64_t kc;
  float* out;  // first row of the task, column c0
  int64_t ldo;
  int64_t rows;
  int64_t cols;
  bool accumulate;
};

template <int MR>
MOA_INLINE void panelBody(const PanelJob& job) {
  int64_t r = 0;
  for (; r + MR <= job.rows; r += MR) {
    for (int64_t c0 = 0; c0 < job.cols; c0 += kNR) {
      microKernel<MR>(job.dy + r * job.ldy, job.ldy, job.panel + (c0 / kNR) * job.kc * kNR, job.kc,
                      job.out + r * job.ldo + c0, job.ldo, std::min(kNR, job.cols - c0), job.accumulate);
    }
  }
  for (; r < job.rows; ++r) {
    for (int64_t c0 = 0; c0 < job.cols; c0 += kNR) {
      microKernel<1>(job.dy + r * job.ldy, job.ldy, job.panel + (c0 / kNR) * job.kc * kNR, job.kc,
                     job.out + r * job.ldo + c0, job.ldo, std::min(kNR, job.cols - c0), job.accumulate);
    }
  }
}

void panelPortable(const PanelJob& job) { panelBody<2>(job); }
#ifdef MOA_X86_DISPATCH
MOA_TARGET_AVX2 void panelAvx2(const PanelJob& job) { panelBody<4>(job); }
MOA_TARGET_AVX512 void panelAvx512(const PanelJob& job) { panelBody<8>(job); }
#endif

}  // namespace

void matmulBackward(float* dx, const float* dy, const void* w, DType wType, int64_t m, int64_t n, int64_t k,
                    bool accumulate) {
  if (m <= 0 || k <= 0) return;
  if (n == 0) {
    if (!accumulate) std::fill(dx, dx + m * k, 0.0f);
    return;
  }
  void (*panel)(const PanelJob&) = panelPortable;
#ifdef MOA_X86_DISPATCH
  if (bestIsa() == Isa::Avx2) panel = panelAvx2;
  if (bestIsa() == Isa::Avx512) panel = panelAvx512;
#endif

  const int64_t columnBlocks = (k + kNC - 1) / kNC;
  // Split rows too when there are few column blocks, keeping ≥ 32 rows per task so packing stays cheap.
  const int64_t wantTasks = 4 * threadCount();
  int64_t rowSplits = std::max<int64_t>(1, (wantTasks + columnBlocks - 1) / columnBlocks);
  rowSplits = std::min(rowSplits, std::max<int64_t>(1, m / 32));
  const int64_t rowsPerSplit = (m + rowSplits - 1) / rowSplits;

  parallelFor(columnBlocks * rowSplits, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> buffer(static_cast<size_t>(kNC * kKC));
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t block = t / rowSplits;
      const int64_t split = t % rowSplits;
      const int64_t c0 = block * kNC;
      const int64_t cols = std::min(kNC, k - c0);
      const int64_t m0 = split * rowsPerSplit;
      const int64_t rows = std::min(rowsPerSplit, m - m0);
      if (rows <= 0) continue;
      for (int64_t p0 = 0; p0 < n; p0 += kKC) {
        const int64_t kc = std::min(kKC, n - p0);
        packPanel(w, wType, k, c0, cols, p0, kc, buffer.data());
        const PanelJob job{dy + m0 * n + p0, n, buffer.data(), kc, dx + m0 * k + c0, k, rows, cols,
                           accumulate || p0 > 0};
        panel(job);
      }
    }
  });
}

}  // namespace moa::cpu
