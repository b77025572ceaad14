// Pinned scaled-fp16 copies (half_scale.cuh: pinHalf). A copy is made once, in stream order, into memory of its
// own, with its scale in a device float beside it; the profiler's GEMMs find it by the source's address and
// element count. An output pin (pinHalfOutput) is made empty and filled by the op that writes its source. The registry is a short list: a pass pins a model's weights (a few hundred) and an activation
// or two at a time, and a lookup is a linear scan of pointers, far below a GEMM's launch cost.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <iterator>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>

#include "cuda/backward_precision.cuh"
#include "cuda/check.cuh"
#include "cuda/cuda_ops.h"
#include "cuda/half_scale.cuh"

namespace moa::cuda {
namespace {

std::mutex pinsMutex;
std::unordered_map<int64_t, PinnedHalf> pins;
// Source address → pin id, ordered: the lookup of every scaled GEMM, and of the pin holding a row view.
std::map<const void*, int64_t> bySource;
int64_t outputPins = 0;
int64_t nextId = 1;

SourceType sourceType(DType type, const std::string& op) {
  switch (type) {
    case DType::F32:
      return SourceType::F32;
    case DType::BF16:
      return SourceType::BF16;
    default:
      throw std::runtime_error(op + ": only f32 and bf16 tensors have scaled fp16 copies (f16 is used as it is)");
  }
}

// The halves, padded to 16 bytes, then the scale and the word the producer of an output pin gathers its maximum in.
PinnedHalf allocatePin(const void* source, int64_t count, bool output) {
  const size_t halfBytes = (static_cast<size_t>(count) * sizeof(__half) + 15) / 16 * 16;
  auto* base = static_cast<char*>(allocate(halfBytes + 16, false));
  return {source,
          count,
          base,
          reinterpret_cast<float*>(base + halfBytes),
          reinterpret_cast<unsigned*>(base + halfBytes + sizeof(float)),
          output,
          !output,
          4};
}

int64_t registerPin(const PinnedHalf& pin) {
  const int64_t id = nextId++;
  pins.emplace(id, pin);
  bySource.emplace(pin.source, id);
  return id;
}

}  // namespace

int64_t pinHalf(const void* source, int64_t count, DType type) {
  const std::string op = "pinHalfCopies";
  const std::string sizes = dims({{"count", count}});
  const SourceType kind = sourceType(type, op);
  // Only the default precision reads fp16 copies; under "split" or "bf16" a copy would never be read.
  if (backwardPrecision() != BackwardPrecision::F16) return 0;
  std::lock_guard<std::mutex> lock(pinsMutex);
  if (bySource.count(source) != 0) throw std::runtime_error(op + ": this tensor already has a pinned copy");
  PinnedHalf pin = allocatePin(source, count, false);
  pin.elementBytes = type == DType::F32 ? 4 : 2;
  char* base = static_cast<char*>(pin.half);
  try {
    const HalfJob job{source, pin.half, count, kind};
    const HalfScales scales = toScaledHalves(&job, 1, -1.0f, op, sizes);
    check(op, cudaMemcpyAsync(pin.scale, scales.scales, sizeof(float), cudaMemcpyDeviceToDevice, 0), sizes);
  } catch (...) {
    release(base);
    throw;
  }
  return registerPin(pin);
}

int64_t pinHalfOutput(const void* target, int64_t count) {
  const std::string op = "pinHalfOutputs";
  if (backwardPrecision() != BackwardPrecision::F16) return 0;
  std::lock_guard<std::mutex> lock(pinsMutex);
  if (bySource.count(target) != 0) throw std::runtime_error(op + ": this tensor already has a pinned copy");
  ++outputPins;
  return registerPin(allocatePin(target, count, true));
}

void unpinHalf(int64_t id) {
  std::lock_guard<std::mutex> lock(pinsMutex);
  const auto found = pins.find(id);
  if (found == pins.end()) return;
  bySource.erase(found->second.source);
  if (found->second.output) --outputPins;
  release(found->second.half);
  pins.erase(found);
}

PinnedHalf findPinnedHalf(const void* source, int64_t count) {
  std::lock_guard<std::mutex> lock(pinsMutex);
  if (pins.empty()) return {};
  const PinnedHalf* pin = nullptr;
  const auto id = bySource.find(source);
  if (id != bySource.end() && pins.at(id->second).count == count) {
    pin = &pins.at(id->second);
  } else {
    // A part of a pinned tensor (a row view): the pin starting last at or before it (pins do not overlap).
    auto after = bySource.upper_bound(source);
    if (after == bySource.begin()) return {};
    const PinnedHalf& candidate = pins.at(std::prev(after)->second);
    const char* begin = static_cast<const char*>(source);
    const char* start = static_cast<const char*>(candidate.source);
    const int64_t size = candidate.elementBytes;
    if ((begin - start) % size != 0 || begin + count * size > start + candidate.count * size) return {};
    pin = &candidate;
  }
  if (!pin->written) {
    throw std::runtime_error(
        "a GEMM read a tensor pinned by pinHalfOutputs before an op wrote it (siluMul, siluMulBackward, rmsNorm and "
        "rope write such copies; " + std::to_string(count) + " elements)");
  }
  PinnedHalf view = *pin;
  const int64_t offset = (static_cast<const char*>(source) - static_cast<const char*>(pin->source)) / pin->elementBytes;
  view.source = source;
  view.count = count;
  view.half = static_cast<__half*>(pin->half) + offset;
  return view;
}

void fillPinFrom(const PinnedHalf& pin, const float* source, const std::string& op, const std::string& sizes) {
  const HalfJob job{source, pin.half, pin.count, SourceType::F32};
  const HalfScales scales = toScaledHalves(&job, 1, -1.0f, op, sizes);
  check(op, cudaMemcpyAsync(pin.scale, scales.scales, sizeof(float), cudaMemcpyDeviceToDevice, 0), sizes);
}

const PinnedHalf* takePinnedOutput(const void* target, int64_t count, const std::string& op) {
  std::lock_guard<std::mutex> lock(pinsMutex);
  if (pins.empty()) return nullptr;
  const auto id = bySource.find(target);
  if (id == bySource.end()) return nullptr;
  PinnedHalf& pin = pins.at(id->second);
  if (!pin.output) return nullptr;
  if (pin.count != count) {
    throw std::runtime_error(op + ": the output is pinned by pinHalfOutputs with " + std::to_string(pin.count) +
                             " elements, the op writes " + std::to_string(count));
  }
  pin.written = true;
  return &pin;
}

void requireWritten(const void* source, int64_t count, const std::string& op) {
  std::lock_guard<std::mutex> lock(pinsMutex);
  if (outputPins == 0) return;
  const char* begin = static_cast<const char*>(source);
  const char* end = begin + count * sizeof(float);
  for (const auto& [key, pin] : pins) {
    if (!pin.output) continue;
    const char* start = static_cast<const char*>(pin.source);
    if (begin < start + pin.count * sizeof(float) && start < end) {
      throw std::runtime_error(op + ": reads a tensor pinned by pinHalfOutputs, which holds only its fp16 copy (" +
                               std::to_string(pin.count) + " elements): only the scaled fp16 GEMMs may read it");
    }
  }
}

}  // namespace moa::cuda
