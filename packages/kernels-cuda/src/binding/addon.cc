// Module entry of both addons: moa_cpu.node (CPU reference only) and moa_cuda.node (MOA_WITH_CUDA: the same ops,
// plus device memory and the CUDA kernels written so far).
#include <napi.h>

#include "binding/args.h"

namespace {

// Bumped when the JS ↔ native calling convention changes, so a stale build is reported, not misused.
constexpr int kAbiVersion = 3;

Napi::Object Init(Napi::Env env, Napi::Object exports) {
#ifdef MOA_WITH_CUDA
  exports.Set("backend", Napi::String::New(env, "cuda"));
#else
  exports.Set("backend", Napi::String::New(env, "cpu"));
#endif
  exports.Set("abiVersion", Napi::Number::New(env, kAbiVersion));
  moa::binding::registerOps(env, exports);
  moa::binding::registerDevice(env, exports);
  moa::binding::registerBackwardOps(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(NODE_GYP_MODULE_NAME, Init)
