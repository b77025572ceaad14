// The CUDA side of the ops, declared in plain C++ so the N-API binding (compiled by the host compiler) can call
// it without CUDA headers. Each op in src/cuda/<op>.cu takes the same arguments as its CPU reference in
// src/cpu/<op>.cc, with device pointers. Errors are thrown as std::runtime_error naming the op.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "cpu/common.h"

namespace moa::cuda {

struct Probe {
  int deviceCount = 0;
  std::string error;  // why deviceCount is 0 (no driver, no device), empty otherwise
};

// Never throws: with no driver (libcuda absent) or no device it returns deviceCount 0 and the reason.
Probe probe();

struct DeviceInfo {
  std::string name;
  size_t totalMemory = 0;
  int major = 0;
  int minor = 0;
  int multiprocessors = 0;
};
DeviceInfo deviceInfo(int device);

// Zero-initialised device memory.
void* allocate(size_t bytes);
void release(void* pointer);
void copyToDevice(void* destination, const void* source, size_t bytes);
void copyToHost(void* destination, const void* source, size_t bytes);
// Waits for all queued work and reports any error a kernel raised.
void synchronize();

void rmsNorm(float* out, const float* x, const void* weight, DType weightType, int64_t rows, int64_t dim, float eps);
void siluMul(float* out, const float* gate, const float* up, int64_t count);
void add(float* out, const float* a, const float* b, int64_t count);

}  // namespace moa::cuda
