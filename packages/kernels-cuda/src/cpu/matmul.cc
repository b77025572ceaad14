// out[m, n] = x[m, k] · wᵀ (+ bias[n]), w in f32/bf16/f16, fp32 accumulate.
//
// Blocked like a textbook GEMM: each task owns a block of up to kNC output columns (rows of w) and a range of
// rows of x. For every depth chunk of kKC, the task widens its slice of w once into an fp32 panel laid out
// [column group][depth][kNR] and runs a kMR × kNR register-tile micro-kernel over its rows. The micro-kernel
// is compiled three times (portable SSE baseline, AVX2+FMA, AVX-512) and the best one for the CPU is picked
// at run time, so the binary stays portable. Small m (decode) takes a dot-product path without packing.
#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/ops.h"
#include "cpu/simd.h"

namespace moa::cpu {
namespace {

constexpr int64_t kNR = 16;   // columns per micro-tile (packed panel width)
constexpr int64_t kNC = 64;   // columns per task
constexpr int64_t kKC = 256;  // depth per packed panel

// Widens w[n0 + j, k0 .. k0 + kc) for j < nc into panel[(j / kNR) · kc · kNR + p · kNR + j % kNR],
// zero-padding the columns up to a multiple of kNR.
void packPanel(const void* w, DType type, int64_t k, int64_t n0, int64_t nc, int64_t k0, int64_t kc, float* panel) {
  float row[kKC];
  const int64_t padded = (nc + kNR - 1) / kNR * kNR;
  const int64_t elementSize = type == DType::F32 ? 4 : 2;
  for (int64_t j = 0; j < padded; ++j) {
    float* dst = panel + (j / kNR) * kc * kNR + j % kNR;
    if (j < nc) {
      const char* src = static_cast<const char*>(w) + ((n0 + j) * k + k0) * elementSize;
      widenRow(src, type, kc, row);
      for (int64_t p = 0; p < kc; ++p) dst[p * kNR] = row[p];
    } else {
      for (int64_t p = 0; p < kc; ++p) dst[p * kNR] = 0.0f;
    }
  }
}

static_assert(kNR == 16, "a micro-tile row is one Vec16");

// acc[MR] = x[MR rows, kc] · panel group (kc × kNR); then out (+)= acc for the first `cols` columns.
template <int MR>
MOA_INLINE void microKernel(const float* x, int64_t ldx, const float* panel, int64_t kc, float* out, int64_t ldo,
                            int64_t cols, bool accumulate) {
  Vec16 acc[MR];
  for (int r = 0; r < MR; ++r) acc[r] = Vec16{};
  for (int64_t p = 0; p < kc; ++p) {
    const Vec16 b = load16(panel + p * kNR);
    for (int r = 0; r < MR; ++r) acc[r] += x[r * ldx + p] * b;
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
  const float* x;  // first row of the task, at depth k0
  int64_t ldx;
  const float* panel;
  int64_t kc;
  float* out;  // first row of the task, column n0
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
      microKernel<MR>(job.x + r * job.ldx, job.ldx, job.panel + (c0 / kNR) * job.kc * kNR, job.kc,
                      job.out + r * job.ldo + c0, job.ldo, std::min(kNR, job.cols - c0), job.accumulate);
    }
  }
  for (; r < job.rows; ++r) {
    for (int64_t c0 = 0; c0 < job.cols; c0 += kNR) {
      microKernel<1>(job.x + r * job.ldx, job.ldx, job.panel + (c0 / kNR) * job.kc * kNR, job.kc,
                     job.out + r * job.ldo + c0, job.ldo, std::min(kNR, job.cols - c0), job.accumulate);
    }
  }
}

// Dot products of `rows` rows of x with w[j] for j in [j0, j1): the decode path (no packing).
template <typename Widen>
MOA_INLINE void dotBody(const float* x, int64_t rows, const uint16_t* w, int64_t k, int64_t j0, int64_t j1,
                        float* out, int64_t ldo, Widen widen) {
  constexpr int kLanes = 16;
  for (int64_t j = j0; j < j1; ++j) {
    const uint16_t* wj = w + j * k;
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = x + r * k;
      float acc[kLanes] = {};
      int64_t p = 0;
      for (; p + kLanes <= k; p += kLanes) {
        for (int l = 0; l < kLanes; ++l) acc[l] += xr[p + l] * widen(wj[p + l]);
      }
      float sum = 0.0f;
      for (; p < k; ++p) sum += xr[p] * widen(wj[p]);
      for (int l = 0; l < kLanes; ++l) sum += acc[l];
      out[r * ldo + j] = sum;
    }
  }
}

MOA_INLINE float widenBf16(uint16_t bits) { return bf16ToFloat(bits); }
MOA_INLINE float widenF16(uint16_t bits) { return f16ToFloat(bits); }

MOA_INLINE void dotF32Body(const float* x, int64_t rows, const float* w, int64_t k, int64_t j0, int64_t j1, float* out,
                           int64_t ldo) {
  constexpr int kLanes = 16;
  for (int64_t j = j0; j < j1; ++j) {
    const float* wj = w + j * k;
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = x + r * k;
      float acc[kLanes] = {};
      int64_t p = 0;
      for (; p + kLanes <= k; p += kLanes) {
        for (int l = 0; l < kLanes; ++l) acc[l] += xr[p + l] * wj[p + l];
      }
      float sum = 0.0f;
      for (; p < k; ++p) sum += xr[p] * wj[p];
      for (int l = 0; l < kLanes; ++l) sum += acc[l];
      out[r * ldo + j] = sum;
    }
  }
}

struct DotJob {
  const float* x;
  int64_t rows;
  const void* w;
  DType type;
  int64_t k;
  float* out;
  int64_t ldo;
};

MOA_INLINE void dotDispatch(const DotJob& job, int64_t j0, int64_t j1) {
  switch (job.type) {
    case DType::BF16:
      dotBody(job.x, job.rows, static_cast<const uint16_t*>(job.w), job.k, j0, j1, job.out, job.ldo, widenBf16);
      break;
    case DType::F16:
      dotBody(job.x, job.rows, static_cast<const uint16_t*>(job.w), job.k, j0, j1, job.out, job.ldo, widenF16);
      break;
    default:
      dotF32Body(job.x, job.rows, static_cast<const float*>(job.w), job.k, j0, j1, job.out, job.ldo);
  }
}

void panelPortable(const PanelJob& job) { panelBody<2>(job); }
void dotPortable(const DotJob& job, int64_t j0, int64_t j1) { dotDispatch(job, j0, j1); }

#ifdef MOA_X86_DISPATCH
MOA_TARGET_AVX2 void panelAvx2(const PanelJob& job) { panelBody<4>(job); }
MOA_TARGET_AVX2 void dotAvx2(const DotJob& job, int64_t j0, int64_t j1) { dotDispatch(job, j0, j1); }
MOA_TARGET_AVX512 void panelAvx512(const PanelJob& job) { panelBody<8>(job); }
#endif

struct Kernels {
  void (*panel)(const PanelJob&) = panelPortable;
  void (*dot)(const DotJob&, int64_t, int64_t) = dotPortable;
};

const Kernels& kernels() {
  static const Kernels selected = [] {
    Kernels k;
#ifdef MOA_X86_DISPATCH
    if (bestIsa() != Isa::Portable) {
      k.panel = panelAvx2;
      k.dot = dotAvx2;
    }
    if (bestIsa() == Isa::Avx512) k.panel = panelAvx512;
#endif
    return k;
  }();
  return selected;
}

void addBias(float* out, int64_t rows, int64_t ldo, int64_t n0, int64_t cols, const void* bias, DType biasType) {
  if (bias == nullptr) return;
  float b[kNC];
  for (int64_t c = 0; c < cols; ++c) b[c] = loadFloat(bias, biasType, n0 + c);
  for (int64_t r = 0; r < rows; ++r) {
    float* o = out + r * ldo + n0;
    for (int64_t c = 0; c < cols; ++c) o[c] += b[c];
  }
}

}  // namespace

void matmul(float* out, const float* x, const void* w, DType wType, const void* bias, DType biasType, int64_t m,
            int64_t n, int64_t k) {
  if (m <= 0 || n <= 0) return;
  if (k == 0) {
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t c = 0; c < n; ++c) out[r * n + c] = bias ? loadFloat(bias, biasType, c) : 0.0f;
    }
    return;
  }
  const Kernels& kern = kernels();

  if (m < 4) {
    // Decode-sized: each weight row is read once, widened in registers; parallel over output columns.
    const DotJob job{x, m, w, wType, k, out, n};
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(k, 1));
    parallelFor(n, grain, [&](int64_t j0, int64_t j1) {
      kern.dot(job, j0, j1);
      for (int64_t j = j0; j < j1; j += kNC) addBias(out, m, n, j, std::min(kNC, j1 - j), bias, biasType);
    });
    return;
  }

  const int64_t columnBlocks = (n + kNC - 1) / kNC;
  // Split rows too when there are few column blocks, keeping ≥ 32 rows per task so packing stays cheap.
  const int64_t wantTasks = 4 * threadCount();
  int64_t rowSplits = std::max<int64_t>(1, (wantTasks + columnBlocks - 1) / columnBlocks);
  rowSplits = std::min(rowSplits, std::max<int64_t>(1, m / 32));
  const int64_t rowsPerSplit = (m + rowSplits - 1) / rowSplits;

  parallelFor(columnBlocks * rowSplits, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> panel(static_cast<size_t>(kNC * kKC));
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t block = t / rowSplits;
      const int64_t split = t % rowSplits;
      const int64_t n0 = block * kNC;
      const int64_t cols = std::min(kNC, n - n0);
      const int64_t m0 = split * rowsPerSplit;
      const int64_t rows = std::min(rowsPerSplit, m - m0);
      if (rows <= 0) continue;
      for (int64_t k0 = 0; k0 < k; k0 += kKC) {
        const int64_t kc = std::min(kKC, k - k0);
        packPanel(w, wType, k, n0, cols, k0, kc, panel.data());
        const PanelJob job{x + m0 * k + k0, k, panel.data(), kc, out + m0 * n + n0, n, rows, cols, k0 > 0};
        kern.panel(job);
      }
      addBias(out + m0 * n, rows, n, n0, cols, bias, biasType);
    }
  });
}

}  // namespace moa::cpu
