// Argument conversion and checks for the N-API layer. No math here: every check is about memory safety
// (a buffer large enough for the dims it is used with, an index inside its table), and every error names the
// op. Shape and dtype agreement is checked in TypeScript first (src/checks.ts), with friendlier messages.
#pragma once

#include <napi.h>

#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>

#include "cpu/common.h"
#include "cpu/ops.h"

namespace moa::binding {

// A tensor argument: a host TypedArray (CPU storage) or a BigInt device address (CUDA storage).
struct Ref {
  void* data = nullptr;
  size_t bytes = 0;  // unknown (SIZE_MAX) for device addresses: TypeScript owns their sizes
  bool device = false;
};

[[noreturn]] inline void fail(const std::string& op, const std::string& message) {
  throw std::invalid_argument(op + ": " + message);
}

inline Ref hostRef(napi_env env, napi_value value, napi_typedarray_type* type) {
  size_t length = 0;
  void* data = nullptr;
  napi_value arrayBuffer;
  size_t byteOffset = 0;
  if (napi_get_typedarray_info(env, value, type, &length, &data, &arrayBuffer, &byteOffset) != napi_ok) {
    return {};
  }
  size_t elementSize = 1;
  switch (*type) {
    case napi_int16_array:
    case napi_uint16_array:
      elementSize = 2;
      break;
    case napi_int32_array:
    case napi_uint32_array:
    case napi_float32_array:
      elementSize = 4;
      break;
    case napi_float64_array:
    case napi_bigint64_array:
    case napi_biguint64_array:
      elementSize = 8;
      break;
    default:
      elementSize = 1;
  }
  return {data, length * elementSize, false};
}

// Tensor argument `name` of `op` at position `index`, which must hold at least `needBytes` bytes.
inline Ref tensorArg(const Napi::CallbackInfo& info, size_t index, const std::string& op, const char* name,
                     size_t needBytes) {
  Napi::Value value = info[index];
  if (value.IsTypedArray()) {
    napi_typedarray_type type;
    Ref ref = hostRef(info.Env(), value, &type);
    if (needBytes > 0 && ref.data == nullptr) fail(op, std::string(name) + "'s storage is detached");
    if (ref.bytes < needBytes) {
      fail(op, std::string(name) + " holds " + std::to_string(ref.bytes) + " bytes but the op needs " +
                   std::to_string(needBytes));
    }
    return ref;
  }
  if (value.IsBigInt()) {
    bool lossless = false;
    const uint64_t address = value.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless || address == 0) fail(op, std::string(name) + " is not a valid device address");
    return {reinterpret_cast<void*>(static_cast<uintptr_t>(address)), SIZE_MAX, true};
  }
  fail(op, std::string(name) + " must be a tensor's storage (TypedArray or device address)");
}

// An optional tensor argument (null/undefined → data == nullptr).
inline Ref optionalTensorArg(const Napi::CallbackInfo& info, size_t index, const std::string& op, const char* name,
                             size_t needBytes) {
  if (info[index].IsNull() || info[index].IsUndefined()) return {};
  return tensorArg(info, index, op, name, needBytes);
}

// A host array of a given element type (Int32Array for index lists, Float32Array for per-head rules).
template <typename T>
inline const T* hostArrayArg(const Napi::CallbackInfo& info, size_t index, const std::string& op, const char* name,
                             napi_typedarray_type wanted, size_t needElements) {
  Napi::Value value = info[index];
  napi_typedarray_type type;
  if (!value.IsTypedArray()) fail(op, std::string(name) + " must be a typed array");
  Ref ref = hostRef(info.Env(), value, &type);
  if (type != wanted) fail(op, std::string(name) + " has the wrong element type");
  if (ref.bytes < needElements * sizeof(T)) {
    fail(op, std::string(name) + " has " + std::to_string(ref.bytes / sizeof(T)) + " elements, needs " +
                 std::to_string(needElements));
  }
  return static_cast<const T*>(ref.data);
}

inline int64_t intArg(const Napi::CallbackInfo& info, size_t index, const std::string& op, const char* name,
                      int64_t min = 0) {
  Napi::Value value = info[index];
  if (!value.IsNumber()) fail(op, std::string(name) + " must be a number");
  const double number = value.As<Napi::Number>().DoubleValue();
  if (!(number >= static_cast<double>(min)) || number > 9007199254740991.0 ||
      number != static_cast<double>(static_cast<int64_t>(number))) {
    fail(op, std::string(name) + " must be an integer ≥ " + std::to_string(min));
  }
  return static_cast<int64_t>(number);
}

inline float floatArg(const Napi::CallbackInfo& info, size_t index, const std::string& op, const char* name) {
  Napi::Value value = info[index];
  if (!value.IsNumber()) fail(op, std::string(name) + " must be a number");
  return value.As<Napi::Number>().FloatValue();
}

inline DType dtypeArg(const Napi::CallbackInfo& info, size_t index, const std::string& op, const char* name) {
  const int64_t code = intArg(info, index, op, name);
  if (code > static_cast<int64_t>(DType::I32)) fail(op, std::string(name) + " is not a dtype code");
  return static_cast<DType>(code);
}

// a · b for element counts, refusing overflow (a wrapped count would defeat the size checks).
inline int64_t mul(const std::string& op, int64_t a, int64_t b) {
  constexpr int64_t kLimit = int64_t{1} << 52;
  if (a < 0 || b < 0 || (a != 0 && b > kLimit / a)) fail(op, "sizes overflow");
  return a * b;
}

inline int64_t mul(const std::string& op, int64_t a, int64_t b, int64_t c) { return mul(op, mul(op, a, b), c); }

inline size_t elementBytes(DType type) { return type == DType::BF16 || type == DType::F16 ? 2 : 4; }

inline size_t bytesOf(int64_t elements, DType type) { return static_cast<size_t>(elements) * elementBytes(type); }

// True when the op's tensors live on the GPU; mixing host and device storage is refused.
inline bool onDevice(const std::string& op, std::initializer_list<Ref> refs) {
  bool any = false;
  bool all = true;
  for (const Ref& ref : refs) {
    if (ref.data == nullptr) continue;
    any = any || ref.device;
    all = all && ref.device;
  }
  if (any && !all) fail(op, "mixes host and device tensors");
#ifndef MOA_WITH_CUDA
  if (any) fail(op, "got device tensors, but this is the CPU addon");
#endif
  return any;
}

// Runs an op body, turning C++ exceptions into JS errors that keep the op's message.
template <typename Body>
Napi::Value guarded(const Napi::CallbackInfo& info, Body body) {
  try {
    body();
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::out_of_range& error) {
    throw Napi::RangeError::New(info.Env(), error.what());
  } catch (const std::exception& error) {
    throw Napi::Error::New(info.Env(), error.what());
  }
  return info.Env().Undefined();
}

// Registration hooks of the binding's source files.
void registerOps(Napi::Env env, Napi::Object exports);
void registerDevice(Napi::Env env, Napi::Object exports);
void registerBackwardOps(Napi::Env env, Napi::Object exports);

// Reads cuSeqlens (host Int32Array of sequences + 1 entries rising from ≥ 0 to ≤ tokens) at `index`.
inline const int32_t* cuSeqlensArg(const Napi::CallbackInfo& info, size_t index, const std::string& op,
                                   int64_t sequences, int64_t tokens) {
  const int32_t* cuSeqlens =
      hostArrayArg<int32_t>(info, index, op, "cuSeqlens", napi_int32_array, static_cast<size_t>(sequences) + 1);
  for (int64_t s = 0; s <= sequences; ++s) {
    const int32_t previous = s == 0 ? 0 : cuSeqlens[s - 1];
    if (cuSeqlens[s] < previous || cuSeqlens[s] > tokens) {
      fail(op, "cuSeqlens must rise from ≥ 0 to ≤ " + std::to_string(tokens) + " tokens; cuSeqlens[" +
                   std::to_string(s) + "] = " + std::to_string(cuSeqlens[s]));
    }
  }
  return cuSeqlens;
}

// queryHeads, kvHeads, headDim at `first` … first + 2, the query heads a multiple of the KV heads.
inline cpu::AttentionDims attentionDimsArg(const Napi::CallbackInfo& info, size_t first, const std::string& op) {
  const cpu::AttentionDims dims{intArg(info, first, op, "queryHeads", 1), intArg(info, first + 1, op, "kvHeads", 1),
                                intArg(info, first + 2, op, "headDim", 1)};
  if (dims.queryHeads % dims.kvHeads != 0) fail(op, "queryHeads must be a multiple of kvHeads");
  return dims;
}

}  // namespace moa::binding
