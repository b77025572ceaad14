// Device query, memory, synchronisation and the ops' scratch memory for the CUDA backend.
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <cstdint>
#include <cstring>
#include <mutex>

#include "cuda/check.cuh"
#include "cuda/cuda_ops.h"
#include "cuda/half_scale.cuh"
#include "cuda/scratch.cuh"

namespace moa::cuda {

Probe probe() {
  Probe result;
  // Without the driver library the runtime only says "driver insufficient"; say what is actually missing.
  void* driver = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
  if (driver == nullptr) {
    result.error = "the NVIDIA driver library libcuda.so.1 was not found (no GPU driver installed)";
    return result;
  }
  dlclose(driver);
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls are not blamed for it
    result.error = std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status);
    if (status == cudaErrorInsufficientDriver) {
      result.error += " (this build uses CUDA " + std::to_string(CUDART_VERSION / 1000) + "." +
                      std::to_string(CUDART_VERSION % 1000 / 10) + "; update the NVIDIA driver)";
    }
    return result;
  }
  result.deviceCount = count;
  if (count == 0) result.error = "the driver reports no CUDA device";
  return result;
}

DeviceInfo deviceInfo(int device) {
  cudaDeviceProp properties{};
  check("deviceInfo", cudaGetDeviceProperties(&properties, device));
  DeviceInfo info;
  info.name = properties.name;
  info.totalMemory = properties.totalGlobalMem;
  info.major = properties.major;
  info.minor = properties.minor;
  info.multiprocessors = properties.multiProcessorCount;
  return info;
}

namespace {

// Tensors come from the device's default memory pool, stream-ordered (cudaMallocAsync / cudaFreeAsync on the
// one stream every op uses): a free neither waits for the GPU nor returns the memory, and the next allocation
// reuses it, where cudaMalloc/cudaFree cost tens of microseconds each and cudaFree drains the stream. The pool
// keeps what it holds (release threshold: all), memoryInfo counts its unused part as free, and a failed
// allocation (pool or cudaMalloc) hands that part back to the device and tries once more.
cudaMemPool_t tensorPool() {
  static const cudaMemPool_t pool = [] {
    int device = 0;
    check("empty", cudaGetDevice(&device));
    cudaMemPool_t handle = nullptr;
    check("empty", cudaDeviceGetDefaultMemPool(&handle, device));
    uint64_t threshold = UINT64_MAX;
    check("empty", cudaMemPoolSetAttribute(handle, cudaMemPoolAttrReleaseThreshold, &threshold));
    return handle;
  }();
  return pool;
}

void trimPool() {
  check("trimPool", cudaDeviceSynchronize());
  check("trimPool", cudaMemPoolTrimTo(tensorPool(), 0));
}

}  // namespace

MemoryInfo memoryInfo() {
  MemoryInfo info;
  check("memoryInfo", cudaMemGetInfo(&info.free, &info.total));
  uint64_t reserved = 0;
  uint64_t used = 0;
  check("memoryInfo", cudaMemPoolGetAttribute(tensorPool(), cudaMemPoolAttrReservedMemCurrent, &reserved));
  check("memoryInfo", cudaMemPoolGetAttribute(tensorPool(), cudaMemPoolAttrUsedMemCurrent, &used));
  if (reserved > used) info.free += reserved - used;
  return info;
}

namespace {

int currentDeviceAttribute(cudaDeviceAttr attribute) {
  int device = 0;
  int value = 0;
  check("deviceInfo", cudaGetDevice(&device));
  check("deviceInfo", cudaDeviceGetAttribute(&value, attribute, device));
  return value;
}

}  // namespace

int multiprocessorCount() {
  static const int count = currentDeviceAttribute(cudaDevAttrMultiProcessorCount);
  return count;
}

int computeCapabilityMajor() {
  static const int major = currentDeviceAttribute(cudaDevAttrComputeCapabilityMajor);
  return major;
}

namespace {

std::string megabytes(size_t bytes) { return std::to_string((bytes + (1u << 20) - 1) >> 20) + " MiB"; }

// cudaMalloc with an error that says how much was asked for and how much is free.
void* deviceMalloc(size_t bytes, const std::string& op) {
  void* pointer = nullptr;
  cudaError_t status = cudaMalloc(&pointer, bytes == 0 ? 1 : bytes);
  if (status == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    trimPool();
    status = cudaMalloc(&pointer, bytes == 0 ? 1 : bytes);
  }
  if (status != cudaSuccess) {
    cudaGetLastError();
    size_t free = 0;
    size_t total = 0;
    std::string detail = std::to_string(bytes) + " bytes requested";
    if (cudaMemGetInfo(&free, &total) == cudaSuccess) {
      detail += "; " + megabytes(free) + " free of " + megabytes(total);
    }
    cudaGetLastError();
    check(op, status, detail);
  }
  return pointer;
}

struct ScratchBuffer {
  void* pointer = nullptr;
  size_t bytes = 0;
};

std::mutex scratchMutex;
ScratchBuffer scratchBuffers[static_cast<int>(ScratchSlot::Count)];

// Pinned staging ring for uploads, in two halves: an upload that enters a half first waits for the copies
// issued from it a lap earlier (recorded by an event when the ring left that half).
constexpr size_t kRingBytes = size_t{8} << 20;
struct StagingRing {
  char* host = nullptr;
  int half = 0;       // the half being written
  size_t offset = 0;  // next free byte in it
  cudaEvent_t halfDone[2] = {nullptr, nullptr};
  bool pending[2] = {false, false};
};
StagingRing ring;

}  // namespace

void* scratch(ScratchSlot slot, size_t bytes, const std::string& op) {
  ScratchBuffer& buffer = scratchBuffers[static_cast<int>(slot)];
  if (buffer.bytes >= bytes && buffer.pointer != nullptr) return buffer.pointer;
  if (buffer.pointer != nullptr) {
    check(op, cudaFree(buffer.pointer));  // synchronises: no queued kernel still reads it
    buffer.pointer = nullptr;
    buffer.bytes = 0;
  }
  // Grow by half again, so a slowly rising size does not reallocate every call.
  const size_t size = bytes + bytes / 2 + 256;
  buffer.pointer = deviceMalloc(size, op + " (scratch)");
  buffer.bytes = size;
  return buffer.pointer;
}

void* uploadParams(const void* host, size_t bytes, const std::string& op) {
  std::lock_guard<std::mutex> lock(scratchMutex);
  void* device = scratch(ScratchSlot::Params, bytes, op);
  if (bytes == 0) return device;
  const size_t half = kRingBytes / 2;
  if (bytes > half) {
    // Too large to stage: a plain copy (synchronises with the stream, fine for large prefill lists).
    check(op, cudaMemcpy(device, host, bytes, cudaMemcpyHostToDevice), "uploading " + std::to_string(bytes) + " bytes");
    return device;
  }
  if (ring.host == nullptr) {
    check(op, cudaMallocHost(reinterpret_cast<void**>(&ring.host), kRingBytes), "pinned staging buffer");
    for (cudaEvent_t& event : ring.halfDone) check(op, cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  }
  const size_t aligned = (bytes + 255) & ~size_t{255};
  if (ring.offset + aligned > half) {
    // Leave this half (its copies are marked by an event) for the other, once the copies of its last lap ran.
    check(op, cudaEventRecord(ring.halfDone[ring.half], 0));
    ring.pending[ring.half] = true;
    ring.half = 1 - ring.half;
    ring.offset = 0;
    if (ring.pending[ring.half]) {
      check(op, cudaEventSynchronize(ring.halfDone[ring.half]));
      ring.pending[ring.half] = false;
    }
  }
  char* staged = ring.host + static_cast<size_t>(ring.half) * half + ring.offset;
  ring.offset += aligned;
  std::memcpy(staged, host, bytes);
  check(op, cudaMemcpyAsync(device, staged, bytes, cudaMemcpyHostToDevice, 0));
  return device;
}

void releaseScratch() {
  std::lock_guard<std::mutex> lock(scratchMutex);
  check("releaseScratch", cudaDeviceSynchronize());
  for (ScratchBuffer& buffer : scratchBuffers) {
    if (buffer.pointer != nullptr) check("releaseScratch", cudaFree(buffer.pointer));
    buffer = ScratchBuffer{};
  }
}

void* allocate(size_t bytes, bool zero) {
  const size_t size = bytes == 0 ? 1 : bytes;
  void* pointer = nullptr;
  cudaError_t status = cudaMallocAsync(&pointer, size, tensorPool(), 0);
  if (status == cudaErrorMemoryAllocation) {
    // Memory the pool holds but no tensor uses may be what is missing: return it and try once more.
    cudaGetLastError();
    trimPool();
    status = cudaMallocAsync(&pointer, size, tensorPool(), 0);
  }
  if (status != cudaSuccess) {
    cudaGetLastError();
    size_t free = 0;
    size_t total = 0;
    std::string detail = std::to_string(bytes) + " bytes requested";
    if (cudaMemGetInfo(&free, &total) == cudaSuccess) detail += "; " + megabytes(free) + " free of " + megabytes(total);
    cudaGetLastError();
    check("empty", status, detail);
  }
  status = zero ? cudaMemsetAsync(pointer, 0, bytes, 0) : cudaSuccess;
  if (status != cudaSuccess) {
    cudaFreeAsync(pointer, 0);
    check("empty", status, std::to_string(bytes) + " bytes");
  }
  return pointer;
}

void release(void* pointer) { check("free", cudaFreeAsync(pointer, 0)); }

void copyToDevice(void* destination, const void* source, size_t bytes) {
  check("write", cudaMemcpy(destination, source, bytes, cudaMemcpyHostToDevice), std::to_string(bytes) + " bytes");
}

void copyToHost(void* destination, const void* source, size_t bytes) {
  // A tensor held only as an output pin's fp16 copy has nothing to read (also: the CPU reference's host copies).
  requireWritten(source, static_cast<int64_t>(bytes / sizeof(float)), "toHost");
  check("toHost", cudaMemcpy(destination, source, bytes, cudaMemcpyDeviceToHost), std::to_string(bytes) + " bytes");
}

void copyDevice(void* destination, const void* source, size_t bytes) {
  if (bytes == 0) return;
  check("copy", cudaMemcpyAsync(destination, source, bytes, cudaMemcpyDeviceToDevice, 0),
        std::to_string(bytes) + " bytes");
}

void synchronize() { check("synchronize", cudaDeviceSynchronize()); }

}  // namespace moa::cuda
