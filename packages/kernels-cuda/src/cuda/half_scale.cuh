// Scaled fp16 copies of fp32/bf16/f16 tensors for the profiler's "f16" precision (backward_precision.cuh).
// dst = f16(src · s) with s = 2^(15 − e), e the exponent of max|src| (max|src| < 2^e), so the largest value
// lands just under 2^15 and fp16's 29 binades of normal numbers hold everything within 2^-29 of it at full
// precision. Powers of two make s exact: a product of scaled copies divided by the scales is the product of
// the rounded values. The maximum is found on the device (no host round trip) and s stays on the device.
#pragma once

#include <cstdint>
#include <string>

namespace moa::cuda {

enum class SourceType : int { F32 = 0, BF16 = 1, F16 = 2 };

struct HalfJob {
  const void* src = nullptr;
  void* dst = nullptr;  // __half[count]
  int64_t count = 0;
  SourceType type = SourceType::F32;
};

// The device floats of one conversion: scales[j] of job j, and (for a GEMM) alpha = 1 / (scales[0] · scales[1])
// and beta, as cuBLAS reads them in device pointer mode.
struct HalfScales {
  const float* scales;
  const float* alphaBeta;
};

// Converts up to 4 tensors in two launches on the stream (maximum, then copy). With `gemmBeta` ≥ 0 it also
// writes alpha/beta for a GEMM of jobs 0 and 1 (one job: of job 0 and `otherScale`, a device float, or 1 when
// null).
HalfScales toScaledHalves(const HalfJob* jobs, int count, float gemmBeta, const std::string& op,
                          const std::string& sizes, const float* otherScale = nullptr);

// A scaled fp16 copy kept until unpinned (cuda_ops.h: pinHalf, pinHalfOutput): `half` holds the copy of
// `count` elements of `source`, `scale` (device) its power of two. An output pin is filled by the op that
// writes `source` (`maxBits`: the device word its maximum is gathered in), which then writes only the copy.
struct PinnedHalf {
  const void* source;
  int64_t count;
  void* half;
  float* scale;
  unsigned* maxBits;
  bool output;
  bool written;
  int elementBytes;  // of the source: 4 (f32) or 2 (bf16)
};

// The pinned copy of these `count` elements at `source`: a pin of exactly them, or the part of a pin that holds
// them (a row view of a pinned tensor: its copy at that offset, with the whole tensor's scale); `half` is null
// when there is none. Throws for an output pin whose op has not run yet (the copy holds nothing).
PinnedHalf findPinnedHalf(const void* source, int64_t count);

// For an op about to write `count` elements at `target`: the output pin there (marked written: the op must
// fill its copy and may leave `target` unwritten), or null when there is none and the op writes `target`.
const PinnedHalf* takePinnedOutput(const void* target, int64_t count, const std::string& op);

// Fills an output pin from `source`, f32 values its op wrote in full (a layout the op's own copy does not take).
void fillPinFrom(const PinnedHalf& pin, const float* source, const std::string& op, const std::string& sizes);

// Throws when any of the `count` f32 elements at `source` are only held as an output pin's copy: a reader of
// full precision (a GEMM of f32 weights, a conversion of a part of the tensor) would read what was never written.
void requireWritten(const void* source, int64_t count, const std::string& op);

// The operands of one GEMM against a 16-bit weight (bf16 or f16, `halfWeight` true for f16): an fp32 activation of
// `xCount` elements as a scaled fp16 copy in the Half scratch buffer, a bf16 weight of `wCount` too (an f16 weight
// is used as it is, s_w = 1), with alpha = 1 / (s_x · s_w) and beta on the device. An operand with a pinned copy
// (pinHalf) is not converted again: the pin's copy and scale are the same bits a conversion would give.
struct HalfGemmOperands {
  const void* x;
  const void* w;
  const float* alphaBeta;
};
HalfGemmOperands scaledGemmOperands(const float* x, int64_t xCount, const void* w, bool halfWeight, int64_t wCount,
                                    float beta, const std::string& op, const std::string& sizes);

}  // namespace moa::cuda
