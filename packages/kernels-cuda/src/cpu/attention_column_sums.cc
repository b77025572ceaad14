// Column sums of dense causal attention probabilities (ops.h: attentionColumnSums), the scores H2O ranks cached
// tokens by. Per row: scores x_j = scale · q·k_j for j ≤ i (fp32, accumulated over the head dim in order), the
// softmax with max subtraction (exp in fp32, the row sum in double), and each probability added to its column in
// double. The keys of a KV head are transposed once so the score loop runs over contiguous keys and vectorises.
// Work items are (sequence, KV head, block of kRows rows); each writes its own partial column sums, which are
// then added block by block in order, so the result is the same with any number of threads.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/ops.h"

namespace moa::cpu {
namespace {

constexpr int64_t kRows = 256;

struct Item {
  int64_t start;  // first token of the sequence
  int64_t n;      // its length
  int64_t group;  // KV head
  int64_t row0;   // first row of the block (sequence-relative)
  size_t partial;  // offset of the block's partial sums in `partials` (one per key ≤ the block's last row)
};

}  // namespace

void attentionColumnSums(float* out, const float* q, const float* k, const int32_t* cuSeqlens, int64_t sequences,
                         const AttentionDims& dims, float scale) {
  const int64_t hq = dims.queryHeads;
  const int64_t hkv = dims.kvHeads;
  const int64_t d = dims.headDim;
  const int64_t perGroup = hq / hkv;
  std::vector<Item> items;
  size_t partialSize = 0;
  for (int64_t s = 0; s < sequences; ++s) {
    const int64_t start = cuSeqlens[s];
    const int64_t n = cuSeqlens[s + 1] - start;
    for (int64_t g = 0; g < hkv; ++g) {
      for (int64_t row0 = 0; row0 < n; row0 += kRows) {
        items.push_back({start, n, g, row0, partialSize});
        partialSize += static_cast<size_t>(std::min(n, row0 + kRows));
      }
    }
  }
  std::vector<double> partials(partialSize, 0.0);
  parallelFor(static_cast<int64_t>(items.size()), 1, [&](int64_t first, int64_t last) {
    std::vector<float> keysT;
    std::vector<float> x;
    for (int64_t it = first; it < last; ++it) {
      const Item& item = items[static_cast<size_t>(it)];
      const int64_t rowEnd = std::min(item.n, item.row0 + kRows);
      // Keys 0 … rowEnd − 1 of the group, transposed: keysT[e * rowEnd + j].
      keysT.assign(static_cast<size_t>(d * rowEnd), 0.0f);
      for (int64_t j = 0; j < rowEnd; ++j) {
        const float* key = k + ((item.start + j) * hkv + item.group) * d;
        for (int64_t e = 0; e < d; ++e) keysT[static_cast<size_t>(e * rowEnd + j)] = key[e];
      }
      x.resize(static_cast<size_t>(rowEnd));
      double* sums = partials.data() + item.partial;
      for (int64_t h = item.group * perGroup; h < (item.group + 1) * perGroup; ++h) {
        for (int64_t i = item.row0; i < rowEnd; ++i) {
          const int64_t count = i + 1;
          const float* query = q + ((item.start + i) * hq + h) * d;
          std::fill(x.begin(), x.begin() + count, 0.0f);
          for (int64_t e = 0; e < d; ++e) {
            const float qe = query[e];
            const float* row = keysT.data() + e * rowEnd;
            for (int64_t j = 0; j < count; ++j) x[static_cast<size_t>(j)] += qe * row[j];
          }
          float max = -INFINITY;
          for (int64_t j = 0; j < count; ++j) {
            x[static_cast<size_t>(j)] *= scale;
            max = std::max(max, x[static_cast<size_t>(j)]);
          }
          double sum = 0.0;
          for (int64_t j = 0; j < count; ++j) {
            const float e = std::exp(x[static_cast<size_t>(j)] - max);
            x[static_cast<size_t>(j)] = e;
            sum += e;
          }
          const double inv = 1.0 / sum;
          for (int64_t j = 0; j < count; ++j) sums[j] += x[static_cast<size_t>(j)] * inv;
        }
      }
    }
  });
  // The blocks of each (sequence, group) are consecutive items: add them in order, then write the column.
  std::vector<double> column;
  int64_t previousKey = -1;
  for (size_t it = 0; it <= items.size(); ++it) {
    const bool flush = it == items.size() || items[it].start * hkv + items[it].group != previousKey;
    if (flush && previousKey >= 0) {
      const Item& done = items[it - 1];
      for (int64_t j = 0; j < done.n; ++j) out[(done.start + j) * hkv + done.group] = static_cast<float>(column[j]);
    }
    if (it == items.size()) break;
    const Item& item = items[it];
    if (flush) {
      column.assign(static_cast<size_t>(item.n), 0.0);
      previousKey = item.start * hkv + item.group;
    }
    const double* sums = partials.data() + item.partial;
    const int64_t keys = std::min(item.n, item.row0 + kRows);
    for (int64_t j = 0; j < keys; ++j) column[static_cast<size_t>(j)] += sums[j];
  }
}

}  // namespace moa::cpu
