// Scratch memory of the ops: one growing device buffer per purpose, and a pinned staging ring through which
// each op uploads its index lists (slots, positions, region offsets, tile lists) without stalling the stream.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace moa::cuda {

// Attention: the bf16 operand copies and per-row sums of attentionBackward and the stats prefill. Scales: the
// maxima, scales and GEMM alpha/beta of half_scale.cuh (a few floats, never reallocated).
enum class ScratchSlot : int { Params = 0, Half = 1, Partials = 2, Attention = 3, Scales = 4, Count = 5 };

// A device buffer of at least `bytes` for `slot`, reused across calls (its contents are not kept when it grows).
void* scratch(ScratchSlot slot, size_t bytes, const std::string& op);

// Copies `bytes` of host data into the Params scratch buffer, ordered on the stream after earlier ops (which
// may still be reading the previous upload), and returns its device address. One upload per op call.
void* uploadParams(const void* host, size_t bytes, const std::string& op);

template <typename T>
T* uploadParams(const std::vector<T>& host, const std::string& op) {
  return static_cast<T*>(uploadParams(host.data(), host.size() * sizeof(T), op));
}

// Multiprocessors of the current device (cached).
int multiprocessorCount();
// The major compute capability of the current device (9 on Hopper, whose sm_90a code holds the wgmma kernels).
int computeCapabilityMajor();

}  // namespace moa::cuda
