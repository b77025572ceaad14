// Backward of dense causal attention over packed sequences, with the MoA attention influence (profiling).
//
// With x_ij = scale · q_i·k_j (j ≤ i), P = softmax_j(x), O_i = Σ_j P_ij v_j and the output gradient dO:
//   dP_ij = dO_i · v_j                      (G = dL/dA of DESIGN.md: Attention influence)
//   D_i   = dO_i · O_i = Σ_j P_ij dP_ij     (S_i of DESIGN.md)
//   dS_ij = P_ij (dP_ij − D_i)              (the score gradient)
//   dq_i  = scale Σ_j dS_ij k_j,  dk_j = scale Σ_i dS_ij q_i,  dv_j = Σ_i P_ij dO_i
//   E_ij  = −dS_ij / (1 − P_ij + eps), row 0: E_0j = dP_0j P_0j, eps = fp32 machine epsilon
// and the influence adds Σ|E_ij| over each causal 64×64 block. Nothing n×n is materialised: P is recomputed
// tile by tile from q, k and the forward's softmax statistics (row max m_i and l_i = Σ_j e^(x_ij − m_i), from
// attentionPrefill) as P_ij = e^(x_ij − m_i) / l_i, the way the forward's softmax computes it.
//
// Where P_ij is close to 1, 1 − P_ij and dP_ij − D_i both cancel in fp32 (relative error ~1e-7 / (1 − P_ij)),
// and E divides one by the other. A row has at most one entry with P_ij > 1/2; that entry waits for the end of
// the row and is evaluated from sums over the row's other entries, which do not cancel:
//   1 − P_ij = Σ_{n≠j} P_in,   dP_ij − D_i = dP_ij (1 − P_ij) − Σ_{n≠j} P_in dP_in.
//
// Two passes, each race-free and deterministic:
//   A (query-major): a task is (sequence, query tile, query head); it walks the key tiles up to the diagonal,
//     accumulates dq in registers and owns the influence row of blocks (query tile, ·) of its head.
//   B (key-major): a task is (sequence, key tile, KV head); it walks the query heads of the group and the query
//     tiles from the diagonal on, and accumulates dk and dv (GQA: summed over the group's query heads).
// Both recompute x and dP with the same register-tiled products as attentionPrefill.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "cpu/ops.h"
#include "cpu/simd.h"

namespace moa::cpu {
namespace {

constexpr int64_t kTile = 64;  // = the influence block size B (DESIGN.md: Definitions)
constexpr float kEps = std::numeric_limits<float>::epsilon();

// out[r][0..kTile) = a[r] · bT for MR rows of a (rows `aStride` apart); bT is [d][kTile].
template <int MR>
MOA_INLINE void dotRows(const float* a, int64_t aStride, const float* bT, int64_t d, float* out) {
  Vec16 acc[MR][4];
  for (int r = 0; r < MR; ++r) {
    for (int j = 0; j < 4; ++j) acc[r][j] = Vec16{};
  }
  for (int64_t e = 0; e < d; ++e) {
    const float* bRow = bT + e * kTile;
    const Vec16 b0 = load16(bRow);
    const Vec16 b1 = load16(bRow + 16);
    const Vec16 b2 = load16(bRow + 32);
    const Vec16 b3 = load16(bRow + 48);
    for (int r = 0; r < MR; ++r) {
      const float ae = a[r * aStride + e];
      acc[r][0] += ae * b0;
      acc[r][1] += ae * b1;
      acc[r][2] += ae * b2;
      acc[r][3] += ae * b3;
    }
  }
  for (int r = 0; r < MR; ++r) {
    for (int j = 0; j < 4; ++j) store16(out + r * kTile + 16 * j, acc[r][j]);
  }
}

// acc[r] += Σ_c coef[r][c] · rows[c] for MR rows (coef rows kTile apart, rows [cols][dPad]).
template <int MR>
MOA_INLINE void accumulateRows(const float* coef, int64_t cols, const float* rows, int64_t dPad, float* acc) {
  for (int64_t e0 = 0; e0 < dPad; e0 += 32) {
    Vec16 a[MR][2];
    for (int r = 0; r < MR; ++r) {
      a[r][0] = load16(acc + r * dPad + e0);
      a[r][1] = load16(acc + r * dPad + e0 + 16);
    }
    for (int64_t c = 0; c < cols; ++c) {
      const Vec16 v0 = load16(rows + c * dPad + e0);
      const Vec16 v1 = load16(rows + c * dPad + e0 + 16);
      for (int r = 0; r < MR; ++r) {
        const float p = coef[r * kTile + c];
        a[r][0] += p * v0;
        a[r][1] += p * v1;
      }
    }
    for (int r = 0; r < MR; ++r) {
      store16(acc + r * dPad + e0, a[r][0]);
      store16(acc + r * dPad + e0 + 16, a[r][1]);
    }
  }
}

// dotRows over `rows` rows, MR at a time, the remainder one by one.
template <int MR>
MOA_INLINE void dotAll(const float* a, int64_t aStride, int64_t rows, const float* bT, int64_t d, float* out) {
  int64_t r = 0;
  for (; r + MR <= rows; r += MR) dotRows<MR>(a + r * aStride, aStride, bT, d, out + r * kTile);
  for (; r < rows; ++r) dotRows<1>(a + r * aStride, aStride, bT, d, out + r * kTile);
}

template <int MR>
MOA_INLINE void accumulateAll(const float* coef, int64_t rows, int64_t cols, const float* values, int64_t dPad,
                              float* acc) {
  int64_t r = 0;
  for (; r + MR <= rows; r += MR) accumulateRows<MR>(coef + r * kTile, cols, values, dPad, acc + r * dPad);
  for (; r < rows; ++r) accumulateRows<1>(coef + r * kTile, cols, values, dPad, acc + r * dPad);
}

// Copies `count` rows of `d` floats (`stride` apart) transposed into dst[e][c] (kTile columns), zero-padded.
void transposeTile(const float* src, int64_t stride, int64_t count, int64_t d, float* dst) {
  std::fill(dst, dst + d * kTile, 0.0f);
  for (int64_t c = 0; c < count; ++c) {
    const float* row = src + c * stride;
    for (int64_t e = 0; e < d; ++e) dst[e * kTile + c] = row[e];
  }
}

// Copies `count` rows of `d` floats into dst[c][0..dPad), zero-padded.
void copyTile(const float* src, int64_t stride, int64_t count, int64_t d, int64_t dPad, float* dst) {
  std::fill(dst, dst + kTile * dPad, 0.0f);
  for (int64_t c = 0; c < count; ++c) std::memcpy(dst + c * dPad, src + c * stride, static_cast<size_t>(d) * 4);
}

MOA_INLINE Vec16 iota16() {
  Vec16 v;
  for (int l = 0; l < 16; ++l) v[l] = static_cast<float>(l);
  return v;
}

MOA_INLINE Vec16 abs16(Vec16 v) { return v < 0.0f ? -v : v; }

struct Tile {
  int64_t sequence;
  int64_t index;  // query tile (pass A) or key tile (pass B) within the sequence
};

// The entry of a query row with P > 1/2, if any (at most one per row).
struct Dominant {
  int64_t block = -1;  // its key tile, −1 for none
  float p = 0.0f;
  float grad = 0.0f;  // dP = G
};

struct BackwardJob {
  float* dq;
  float* dk;
  float* dv;
  float* influence;  // [sequences, Hq, blocks, blocks] or null
  const float* dOut;
  const float* q;
  const float* k;
  const float* v;
  const float* stats;  // [T, Hq, 2]: row max m of the scaled scores and Σ e^(score − m) (attentionPrefill)
  const float* delta;  // [T, Hq]: D_i = dO_i · O_i
  const int32_t* cuSeqlens;
  AttentionDims dims;
  float scale;
  int64_t blocks;
  const std::vector<Tile>* tiles;
};

// Pass A: tasks [task0, task1) of (tile, query head): dq of one query tile and its row of influence blocks.
template <int MR>
MOA_INLINE void queryTasks(const BackwardJob& job, int64_t task0, int64_t task1) {
  const int64_t hq = job.dims.queryHeads;
  const int64_t hkv = job.dims.kvHeads;
  const int64_t d = job.dims.headDim;
  const int64_t dPad = (d + 31) / 32 * 32;
  const int64_t qStride = hq * d;
  const int64_t kvStride = hkv * d;
  std::vector<float> keysT(static_cast<size_t>(d * kTile));
  std::vector<float> valuesT(static_cast<size_t>(d * kTile));
  std::vector<float> keys(static_cast<size_t>(kTile * dPad));
  std::vector<float> scores(static_cast<size_t>(kTile * kTile));  // x, then dS
  std::vector<float> dP(static_cast<size_t>(kTile * kTile));
  std::vector<float> acc(static_cast<size_t>(kTile * dPad));
  // Per query row, for its dominant entry (see below): Σ P and Σ P·dP over the other entries, and the entry.
  std::vector<double> rest(kTile);
  std::vector<double> restGrad(kTile);
  std::vector<Dominant> dominant(kTile);
  const Vec16 lanes = iota16();

  for (int64_t task = task0; task < task1; ++task) {
    const Tile tile = (*job.tiles)[static_cast<size_t>(task / hq)];
    const int64_t h = task % hq;
    const int64_t g = h * hkv / hq;
    const int64_t base = job.cuSeqlens[tile.sequence];
    const int64_t n = job.cuSeqlens[tile.sequence + 1] - base;
    const int64_t q0 = tile.index * kTile;
    const int64_t rows = std::min(kTile, n - q0);
    const float* qTile = job.q + (base + q0) * qStride + h * d;
    const float* dOTile = job.dOut + (base + q0) * qStride + h * d;
    float* influenceRow = job.influence == nullptr
                              ? nullptr
                              : job.influence + ((tile.sequence * hq + h) * job.blocks + tile.index) * job.blocks;
    std::fill(acc.begin(), acc.end(), 0.0f);
    std::fill(rest.begin(), rest.end(), 0.0);
    std::fill(restGrad.begin(), restGrad.end(), 0.0);
    std::fill(dominant.begin(), dominant.end(), Dominant{});

    for (int64_t kt = 0; kt <= tile.index; ++kt) {
      const int64_t k0 = kt * kTile;
      const int64_t cols = std::min(kTile, n - k0);
      const float* kTileStart = job.k + (base + k0) * kvStride + g * d;
      const float* vTileStart = job.v + (base + k0) * kvStride + g * d;
      transposeTile(kTileStart, kvStride, cols, d, keysT.data());
      transposeTile(vTileStart, kvStride, cols, d, valuesT.data());
      copyTile(kTileStart, kvStride, cols, d, dPad, keys.data());
      dotAll<MR>(qTile, qStride, rows, keysT.data(), d, scores.data());
      dotAll<MR>(dOTile, qStride, rows, valuesT.data(), d, dP.data());

      double blockSum = 0.0;
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t i = q0 + r;
        const int64_t row = (base + i) * hq + h;
        const float* stat = job.stats + row * 2;
        const Vec16 max = Vec16{} + stat[0];
        const Vec16 invSum = Vec16{} + 1.0f / stat[1];
        const Vec16 delta = Vec16{} + job.delta[row];
        const Vec16 last = Vec16{} + static_cast<float>(i - k0);  // columns c ≤ i − k0 are causal
        float* x = scores.data() + r * kTile;
        const float* dp = dP.data() + r * kTile;
        Vec16 sumE{};
        Vec16 sumP{};
        Vec16 sumPGrad{};
        for (int64_t c = 0; c < kTile; c += 16) {
          const Int16x causal = lanes + static_cast<float>(c) <= last;
          const Vec16 p = causal ? exp16(load16(x + c) * job.scale - max) * invSum : Vec16{};
          const Vec16 grad = load16(dp + c);
          const Vec16 ds = p * (grad - delta);
          store16(x + c, ds);
          // Entries with P ≤ 1/2: 1 − P is well conditioned. The one entry a row may have above 1/2 waits
          // for the row's end.
          const Int16x minor = p <= 0.5f;
          sumE += minor ? abs16(ds) / (1.0f - p + kEps) : Vec16{};
          sumP += minor ? p : Vec16{};
          sumPGrad += minor ? p * grad : Vec16{};
          for (int l = 0; l < 16; ++l) {
            if (!minor[l]) dominant[r] = {kt, p[l], grad[l]};
          }
        }
        if (influenceRow == nullptr) continue;
        float rowE = 0.0f;
        float rowP = 0.0f;
        float rowPGrad = 0.0f;
        for (int l = 0; l < 16; ++l) {
          rowE += sumE[l];
          rowP += sumP[l];
          rowPGrad += sumPGrad[l];
        }
        if (i > 0) blockSum += rowE;  // row 0 holds only its dominant entry
        rest[r] += rowP;
        restGrad[r] += rowPGrad;
      }
      if (influenceRow != nullptr) influenceRow[kt] += static_cast<float>(blockSum);
      accumulateAll<MR>(scores.data(), rows, cols, keys.data(), dPad, acc.data());
    }

    // The dominant entry j of a row (P_ij > 1/2), with R = 1 − P_ij = Σ_{n≠j} P_in and
    // G_ij − S_i = G_ij·R − Σ_{n≠j} P_in G_in, both free of the cancellation of 1 − P_ij and dP_ij − D_i when P_ij
    // is close to 1 (where E divides by 1 − P_ij): E_ij = −P_ij (G_ij − S_i) / (R + eps).
    for (int64_t r = 0; influenceRow != nullptr && r < rows; ++r) {
      const Dominant& entry = dominant[r];
      if (entry.block < 0) continue;
      const double e = q0 + r == 0 ? static_cast<double>(entry.grad) * entry.p  // row 0: E_00 = G_00 · A_00
                                   : entry.p * (entry.grad * rest[r] - restGrad[r]) / (rest[r] + kEps);
      influenceRow[entry.block] += static_cast<float>(std::fabs(e));
    }

    for (int64_t r = 0; r < rows; ++r) {
      float* out = job.dq + (base + q0 + r) * qStride + h * d;
      for (int64_t e = 0; e < d; ++e) out[e] = acc[r * dPad + e] * job.scale;
    }
  }
}

// Pass B: tasks [task0, task1) of (tile, KV head): dk and dv of one key tile, over every query head of the group
// and every query tile at or below the diagonal.
template <int MR>
MOA_INLINE void keyTasks(const BackwardJob& job, int64_t task0, int64_t task1) {
  const int64_t hq = job.dims.queryHeads;
  const int64_t hkv = job.dims.kvHeads;
  const int64_t group = hq / hkv;
  const int64_t d = job.dims.headDim;
  const int64_t dPad = (d + 31) / 32 * 32;
  const int64_t qStride = hq * d;
  const int64_t kvStride = hkv * d;
  std::vector<float> queriesT(static_cast<size_t>(d * kTile));
  std::vector<float> gradsT(static_cast<size_t>(d * kTile));
  std::vector<float> queries(static_cast<size_t>(kTile * dPad));
  std::vector<float> grads(static_cast<size_t>(kTile * dPad));
  std::vector<float> scores(static_cast<size_t>(kTile * kTile));  // xᵀ, then Pᵀ
  std::vector<float> dP(static_cast<size_t>(kTile * kTile));      // dPᵀ, then dSᵀ
  std::vector<float> accK(static_cast<size_t>(kTile * dPad));
  std::vector<float> accV(static_cast<size_t>(kTile * dPad));
  alignas(64) float max[kTile];
  alignas(64) float invSum[kTile];
  alignas(64) float delta[kTile];
  const Vec16 lanes = iota16();

  for (int64_t task = task0; task < task1; ++task) {
    const Tile tile = (*job.tiles)[static_cast<size_t>(task / hkv)];
    const int64_t g = task % hkv;
    const int64_t base = job.cuSeqlens[tile.sequence];
    const int64_t n = job.cuSeqlens[tile.sequence + 1] - base;
    const int64_t k0 = tile.index * kTile;
    const int64_t cols = std::min(kTile, n - k0);  // keys of this tile
    const float* kTileStart = job.k + (base + k0) * kvStride + g * d;
    const float* vTileStart = job.v + (base + k0) * kvStride + g * d;
    std::fill(accK.begin(), accK.end(), 0.0f);
    std::fill(accV.begin(), accV.end(), 0.0f);

    for (int64_t h = g * group; h < (g + 1) * group; ++h) {
      for (int64_t q0 = k0; q0 < n; q0 += kTile) {
        const int64_t rows = std::min(kTile, n - q0);  // queries of this tile
        const float* qTile = job.q + (base + q0) * qStride + h * d;
        const float* dOTile = job.dOut + (base + q0) * qStride + h * d;
        transposeTile(qTile, qStride, rows, d, queriesT.data());
        transposeTile(dOTile, qStride, rows, d, gradsT.data());
        copyTile(qTile, qStride, rows, d, dPad, queries.data());
        copyTile(dOTile, qStride, rows, d, dPad, grads.data());
        for (int64_t r = 0; r < kTile; ++r) {
          if (r < rows) {
            const int64_t row = (base + q0 + r) * hq + h;
            max[r] = job.stats[row * 2];
            invSum[r] = 1.0f / job.stats[row * 2 + 1];
            delta[r] = job.delta[row];
          } else {
            max[r] = 0.0f;
            invSum[r] = 0.0f;
            delta[r] = 0.0f;
          }
        }
        dotAll<MR>(kTileStart, kvStride, cols, queriesT.data(), d, scores.data());
        dotAll<MR>(vTileStart, kvStride, cols, gradsT.data(), d, dP.data());
        for (int64_t c = 0; c < cols; ++c) {
          // Query column r holds position q0 + r; it sees key k0 + c when r ≥ k0 + c − q0 (and r < rows).
          const Vec16 first = Vec16{} + static_cast<float>(k0 + c - q0);
          const Vec16 end = Vec16{} + static_cast<float>(rows);
          float* x = scores.data() + c * kTile;
          float* dp = dP.data() + c * kTile;
          for (int64_t r = 0; r < kTile; r += 16) {
            const Vec16 index = lanes + static_cast<float>(r);
            const Int16x causal = (index >= first) & (index < end);
            const Vec16 p =
                causal ? exp16(load16(x + r) * job.scale - load16(max + r)) * load16(invSum + r) : Vec16{};
            store16(x + r, p);
            store16(dp + r, p * (load16(dp + r) - load16(delta + r)));
          }
        }
        accumulateAll<MR>(scores.data(), cols, rows, grads.data(), dPad, accV.data());
        accumulateAll<MR>(dP.data(), cols, rows, queries.data(), dPad, accK.data());
      }
    }

    for (int64_t c = 0; c < cols; ++c) {
      float* outK = job.dk + (base + k0 + c) * kvStride + g * d;
      float* outV = job.dv + (base + k0 + c) * kvStride + g * d;
      for (int64_t e = 0; e < d; ++e) {
        outK[e] = accK[c * dPad + e] * job.scale;
        outV[e] = accV[c * dPad + e];
      }
    }
  }
}

void queryPortable(const BackwardJob& job, int64_t t0, int64_t t1) { queryTasks<1>(job, t0, t1); }
void keyPortable(const BackwardJob& job, int64_t t0, int64_t t1) { keyTasks<1>(job, t0, t1); }
#ifdef MOA_X86_DISPATCH
MOA_TARGET_AVX2 void queryAvx2(const BackwardJob& job, int64_t t0, int64_t t1) { queryTasks<2>(job, t0, t1); }
MOA_TARGET_AVX2 void keyAvx2(const BackwardJob& job, int64_t t0, int64_t t1) { keyTasks<2>(job, t0, t1); }
MOA_TARGET_AVX512 void queryAvx512(const BackwardJob& job, int64_t t0, int64_t t1) { queryTasks<4>(job, t0, t1); }
MOA_TARGET_AVX512 void keyAvx512(const BackwardJob& job, int64_t t0, int64_t t1) { keyTasks<4>(job, t0, t1); }
#endif

}  // namespace

void attentionBackward(float* dq, float* dk, float* dv, float* influence, const float* dOut, const float* q,
                       const float* k, const float* v, const float* out, const float* stats,
                       const int32_t* cuSeqlens, int64_t sequences, const AttentionDims& dims, float scale,
                       int64_t blocks, int32_t queryStart, bool gradients) {
  const int64_t tokens = cuSeqlens[sequences];
  const int64_t hq = dims.queryHeads;
  const int64_t d = dims.headDim;
  // Rows before queryStart count as zero: the reference reads a copy of dOut with those rows zeroed.
  std::vector<float> zeroed;
  if (queryStart > 0) {
    zeroed.assign(dOut, dOut + tokens * hq * d);
    for (int64_t s = 0; s < sequences; ++s) {
      const int64_t rows = std::min<int64_t>(queryStart, cuSeqlens[s + 1] - cuSeqlens[s]);
      std::fill_n(zeroed.begin() + cuSeqlens[s] * hq * d, rows * hq * d, 0.0f);
    }
    dOut = zeroed.data();
  }

  // D_i = dO_i · O_i per (token, query head), in double.
  std::vector<float> delta(static_cast<size_t>(tokens * hq));
  parallelFor(tokens * hq, std::max<int64_t>(1, 4096 / std::max<int64_t>(d, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      double sum = 0.0;
      for (int64_t e = 0; e < d; ++e) sum += static_cast<double>(dOut[r * d + e]) * out[r * d + e];
      delta[static_cast<size_t>(r)] = static_cast<float>(sum);
    }
  });

  // Tiles in decreasing order of work (the longest causal rows or columns first) for the dynamic scheduler.
  std::vector<Tile> queryTiles;
  std::vector<Tile> keyTiles;
  for (int64_t s = 0; s < sequences; ++s) {
    const int64_t n = cuSeqlens[s + 1] - cuSeqlens[s];
    const int64_t count = (n + kTile - 1) / kTile;
    for (int64_t t = 0; t < count; ++t) {
      queryTiles.push_back({s, count - 1 - t});
      keyTiles.push_back({s, t});
    }
  }
  std::stable_sort(queryTiles.begin(), queryTiles.end(),
                   [](const Tile& a, const Tile& b) { return a.index > b.index; });
  const auto keysAfter = [&](const Tile& t) {
    return cuSeqlens[t.sequence + 1] - cuSeqlens[t.sequence] - t.index * kTile;
  };
  std::stable_sort(keyTiles.begin(), keyTiles.end(),
                   [&](const Tile& a, const Tile& b) { return keysAfter(a) > keysAfter(b); });

  // Without gradients the query pass still computes dq (the reference keeps one code path): into scratch.
  std::vector<float> dqScratch(gradients ? 0 : static_cast<size_t>(tokens * hq * d));
  BackwardJob job{gradients ? dq : dqScratch.data(), dk, dv, influence, dOut, q, k, v, stats, delta.data(),
                  cuSeqlens, dims, scale, blocks, &queryTiles};
  void (*runQueries)(const BackwardJob&, int64_t, int64_t) = queryPortable;
  void (*runKeys)(const BackwardJob&, int64_t, int64_t) = keyPortable;
#ifdef MOA_X86_DISPATCH
  if (bestIsa() == Isa::Avx2) {
    runQueries = queryAvx2;
    runKeys = keyAvx2;
  }
  if (bestIsa() == Isa::Avx512) {
    runQueries = queryAvx512;
    runKeys = keyAvx512;
  }
#endif
  parallelFor(static_cast<int64_t>(queryTiles.size()) * hq, 1,
              [&](int64_t t0, int64_t t1) { runQueries(job, t0, t1); });
  if (!gradients) return;
  job.tiles = &keyTiles;
  parallelFor(static_cast<int64_t>(keyTiles.size()) * dims.kvHeads, 1,
              [&](int64_t t0, int64_t t1) { runKeys(job, t0, t1); });
}

}  // namespace moa::cpu
