// out = a + b, elementwise (residual connections); out may alias a or b.
#include "cpu/ops.h"

namespace moa::cpu {

void add(float* out, const float* a, const float* b, int64_t count) {
  parallelFor(count, 65536, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) out[i] = a[i] + b[i];
  });
}

}  // namespace moa::cpu
