// Device query, memory and synchronisation for the CUDA backend.
#include <cuda_runtime.h>
#include <dlfcn.h>

#include "cuda/check.cuh"
#include "cuda/cuda_ops.h"

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

void* allocate(size_t bytes) {
  void* pointer = nullptr;
  // A zero-byte tensor still gets a distinct, valid address.
  check("empty", cudaMalloc(&pointer, bytes == 0 ? 1 : bytes));
  const cudaError_t status = cudaMemset(pointer, 0, bytes);
  if (status != cudaSuccess) {
    cudaFree(pointer);
    check("empty", status);
  }
  return pointer;
}

void release(void* pointer) { check("free", cudaFree(pointer)); }

void copyToDevice(void* destination, const void* source, size_t bytes) {
  check("write", cudaMemcpy(destination, source, bytes, cudaMemcpyHostToDevice));
}

void copyToHost(void* destination, const void* source, size_t bytes) {
  check("toHost", cudaMemcpy(destination, source, bytes, cudaMemcpyDeviceToHost));
}

void synchronize() { check("synchronize", cudaDeviceSynchronize()); }

}  // namespace moa::cuda
