// N-API entry points for the machine: CPU thread count, and in the CUDA addon the device query, device
// memory (allocation, copies) and synchronisation.
#include <string>

#include "binding/args.h"
#ifdef MOA_WITH_CUDA
#include "cuda/cuda_ops.h"
#endif

namespace moa::binding {
namespace {

Napi::Value ThreadCount(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), threadCount()); }

#ifdef MOA_WITH_CUDA

Napi::Value AddressValue(Napi::Env env, void* pointer) {
  return Napi::BigInt::New(env, static_cast<uint64_t>(reinterpret_cast<uintptr_t>(pointer)));
}

// { count, error }: count is 0 (never an exception) when no driver or no device is present.
Napi::Value Probe(const Napi::CallbackInfo& info) {
  const cuda::Probe probe = cuda::probe();
  Napi::Object result = Napi::Object::New(info.Env());
  result.Set("count", Napi::Number::New(info.Env(), probe.deviceCount));
  result.Set("error", probe.error.empty() ? info.Env().Null() : Napi::String::New(info.Env(), probe.error));
  return result;
}

Napi::Value DeviceInfo(const Napi::CallbackInfo& info) {
  Napi::Object result = Napi::Object::New(info.Env());
  guarded(info, [&] {
    const cuda::DeviceInfo device = cuda::deviceInfo(static_cast<int>(intArg(info, 0, "deviceInfo", "device")));
    result.Set("name", Napi::String::New(info.Env(), device.name));
    result.Set("totalMemory", Napi::Number::New(info.Env(), static_cast<double>(device.totalMemory)));
    result.Set("major", Napi::Number::New(info.Env(), device.major));
    result.Set("minor", Napi::Number::New(info.Env(), device.minor));
    result.Set("multiprocessors", Napi::Number::New(info.Env(), device.multiprocessors));
  });
  return result;
}

// allocate(bytes, zero = true)
Napi::Value Allocate(const Napi::CallbackInfo& info) {
  void* pointer = nullptr;
  guarded(info, [&] {
    const bool zero = info.Length() < 2 || !info[1].IsBoolean() || info[1].As<Napi::Boolean>().Value();
    pointer = cuda::allocate(static_cast<size_t>(intArg(info, 0, "empty", "bytes")), zero);
  });
  return AddressValue(info.Env(), pointer);
}

// pinHalf(deviceAddress, elementCount, dtypeCode) → id
Napi::Value PinHalf(const Napi::CallbackInfo& info) {
  const std::string op = "pinHalfCopies";
  int64_t id = 0;
  guarded(info, [&] {
    const int64_t count = intArg(info, 1, op, "count");
    const DType type = dtypeArg(info, 2, op, "dtype");
    const Ref source = tensorArg(info, 0, op, "source", bytesOf(count, type));
    if (!source.device) fail(op, "pinHalf takes a device address");
    id = cuda::pinHalf(source.data, count, type);
  });
  return Napi::Number::New(info.Env(), static_cast<double>(id));
}

// pinHalfOutput(deviceAddress, elementCount) → id
Napi::Value PinHalfOutput(const Napi::CallbackInfo& info) {
  const std::string op = "pinHalfOutputs";
  int64_t id = 0;
  guarded(info, [&] {
    const int64_t count = intArg(info, 1, op, "count");
    const Ref target = tensorArg(info, 0, op, "target", bytesOf(count, DType::F32));
    if (!target.device) fail(op, "pinHalfOutput takes a device address");
    id = cuda::pinHalfOutput(target.data, count);
  });
  return Napi::Number::New(info.Env(), static_cast<double>(id));
}

Napi::Value UnpinHalf(const Napi::CallbackInfo& info) {
  return guarded(info, [&] { cuda::unpinHalf(intArg(info, 0, "pinHalfCopies", "id")); });
}

Napi::Value Release(const Napi::CallbackInfo& info) {
  return guarded(info, [&] { cuda::release(tensorArg(info, 0, "free", "pointer", 0).data); });
}

// copyToDevice(deviceAddress, hostTypedArray, bytes)
Napi::Value CopyToDevice(const Napi::CallbackInfo& info) {
  const std::string op = "write";
  return guarded(info, [&] {
    const int64_t bytes = intArg(info, 2, op, "bytes");
    const Ref dst = tensorArg(info, 0, op, "destination", 0);
    const Ref src = tensorArg(info, 1, op, "source", static_cast<size_t>(bytes));
    if (!dst.device || src.device) fail(op, "copyToDevice takes a device destination and a host source");
    cuda::copyToDevice(dst.data, src.data, static_cast<size_t>(bytes));
  });
}

// copyToHost(hostTypedArray, deviceAddress, bytes)
Napi::Value CopyToHost(const Napi::CallbackInfo& info) {
  const std::string op = "toHost";
  return guarded(info, [&] {
    const int64_t bytes = intArg(info, 2, op, "bytes");
    const Ref dst = tensorArg(info, 0, op, "destination", static_cast<size_t>(bytes));
    const Ref src = tensorArg(info, 1, op, "source", 0);
    if (dst.device || !src.device) fail(op, "copyToHost takes a host destination and a device source");
    cuda::copyToHost(dst.data, src.data, static_cast<size_t>(bytes));
  });
}

Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  return guarded(info, [&] { cuda::synchronize(); });
}

// copyDevice(destinationAddress, sourceAddress, bytes): a device-to-device copy ordered with the ops.
Napi::Value CopyDevice(const Napi::CallbackInfo& info) {
  const std::string op = "copy";
  return guarded(info, [&] {
    const int64_t bytes = intArg(info, 2, op, "bytes");
    const Ref dst = tensorArg(info, 0, op, "destination", 0);
    const Ref src = tensorArg(info, 1, op, "source", 0);
    if (!dst.device || !src.device) fail(op, "copyDevice takes two device addresses");
    cuda::copyDevice(dst.data, src.data, static_cast<size_t>(bytes));
  });
}

// { free, total } bytes of device memory.
Napi::Value MemoryInfo(const Napi::CallbackInfo& info) {
  Napi::Object result = Napi::Object::New(info.Env());
  guarded(info, [&] {
    const cuda::MemoryInfo memory = cuda::memoryInfo();
    result.Set("free", Napi::Number::New(info.Env(), static_cast<double>(memory.free)));
    result.Set("total", Napi::Number::New(info.Env(), static_cast<double>(memory.total)));
  });
  return result;
}

Napi::Value ReleaseScratch(const Napi::CallbackInfo& info) {
  return guarded(info, [&] { cuda::releaseScratch(); });
}

// null when cuBLAS loads, else why it does not.
Napi::Value CublasStatus(const Napi::CallbackInfo& info) {
  std::string error;
  guarded(info, [&] { error = cuda::cublasStatus(); });
  return error.empty() ? info.Env().Null() : Napi::String::New(info.Env(), error);
}

#endif

}  // namespace

void registerDevice(Napi::Env env, Napi::Object exports) {
  exports.Set("threadCount", Napi::Function::New(env, ThreadCount, "threadCount"));
#ifdef MOA_WITH_CUDA
  exports.Set("probe", Napi::Function::New(env, Probe, "probe"));
  exports.Set("deviceInfo", Napi::Function::New(env, DeviceInfo, "deviceInfo"));
  exports.Set("allocate", Napi::Function::New(env, Allocate, "allocate"));
  exports.Set("release", Napi::Function::New(env, Release, "release"));
  exports.Set("copyToDevice", Napi::Function::New(env, CopyToDevice, "copyToDevice"));
  exports.Set("copyToHost", Napi::Function::New(env, CopyToHost, "copyToHost"));
  exports.Set("synchronize", Napi::Function::New(env, Synchronize, "synchronize"));
  exports.Set("copyDevice", Napi::Function::New(env, CopyDevice, "copyDevice"));
  exports.Set("memoryInfo", Napi::Function::New(env, MemoryInfo, "memoryInfo"));
  exports.Set("releaseScratch", Napi::Function::New(env, ReleaseScratch, "releaseScratch"));
  exports.Set("pinHalf", Napi::Function::New(env, PinHalf, "pinHalf"));
  exports.Set("pinHalfOutput", Napi::Function::New(env, PinHalfOutput, "pinHalfOutput"));
  exports.Set("unpinHalf", Napi::Function::New(env, UnpinHalf, "unpinHalf"));
  exports.Set("cublasStatus", Napi::Function::New(env, CublasStatus, "cublasStatus"));
#endif
}

}  // namespace moa::binding
