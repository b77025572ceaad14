// out[t, :] = table[ids[t], :], widening bf16/f16 tables to fp32.
#include <stdexcept>
#include <string>

#include "cpu/ops.h"

namespace moa::cpu {

void embedding(float* out, const int32_t* ids, int64_t tokens, const void* table, DType tableType, int64_t vocab,
               int64_t dim) {
  for (int64_t t = 0; t < tokens; ++t) {
    if (ids[t] < 0 || ids[t] >= vocab) {
      throw std::out_of_range("embedding: ids[" + std::to_string(t) + "] = " + std::to_string(ids[t]) +
                              " is outside the table's " + std::to_string(vocab) + " rows");
    }
  }
  const int64_t elementSize = tableType == DType::F32 ? 4 : 2;
  parallelFor(tokens, std::max<int64_t>(1, 65536 / std::max<int64_t>(dim, 1)), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const char* row = static_cast<const char*>(table) + static_cast<int64_t>(ids[t]) * dim * elementSize;
      widenRow(row, tableType, dim, out + t * dim);
    }
  });
}

}  // namespace moa::cpu
