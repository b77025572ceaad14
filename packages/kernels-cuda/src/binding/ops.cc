// N-API entry points of the ops: convert arguments, check buffer sizes and index tables, dispatch to the CPU
// reference (host storage) or the CUDA kernel (device storage, CUDA addon only). No math here.
#include <initializer_list>
#include <string>

#include "binding/args.h"
#include "cpu/ops.h"
#ifdef MOA_WITH_CUDA
#include "cuda/cuda_ops.h"
#endif

namespace moa::binding {
namespace {

constexpr size_t F32 = 4;

// Reads a MoaMask object ({ window, alpha, beta, blockSize, sinkTokens }) or null (dense).
MaskRule maskArg(const Napi::CallbackInfo& info, size_t index, const std::string& op, int64_t queryHeads) {
  MaskRule mask;
  Napi::Value value = info[index];
  if (value.IsNull() || value.IsUndefined()) return mask;
  if (!value.IsObject()) fail(op, "mask must be an object or null");
  Napi::Object object = value.As<Napi::Object>();
  auto need = [&](const char* key) {
    Napi::Value field = object.Get(key);
    if (field.IsUndefined()) fail(op, std::string("mask.") + key + " is missing");
    return field;
  };
  mask.enabled = true;
  mask.window = need("window").ToBoolean().Value();
  auto floats = [&](const char* key) {
    Napi::Value field = need(key);
    napi_typedarray_type type;
    if (!field.IsTypedArray()) fail(op, std::string("mask.") + key + " must be a Float32Array");
    Ref ref = hostRef(info.Env(), field, &type);
    if (type != napi_float32_array || ref.bytes < static_cast<size_t>(queryHeads) * 4) {
      fail(op, std::string("mask.") + key + " must be a Float32Array with one entry per query head (" +
                   std::to_string(queryHeads) + ")");
    }
    return static_cast<const float*>(ref.data);
  };
  mask.alpha = floats("alpha");
  mask.beta = floats("beta");
  auto positive = [&](const char* key, int64_t min) {
    Napi::Value field = need(key);
    const double number = field.IsNumber() ? field.As<Napi::Number>().DoubleValue() : -1;
    if (!(number >= static_cast<double>(min)) || number != static_cast<double>(static_cast<int64_t>(number))) {
      fail(op, std::string("mask.") + key + " must be an integer ≥ " + std::to_string(min));
    }
    return static_cast<int64_t>(number);
  };
  mask.blockSize = positive("blockSize", 1);
  mask.sinkTokens = positive("sinkTokens", 0);
  return mask;
}

Napi::Value Matmul(const Napi::CallbackInfo& info) {
  const std::string op = "matmul";
  return guarded(info, [&] {
    const DType wType = dtypeArg(info, 3, op, "wType");
    const DType biasType = dtypeArg(info, 5, op, "biasType");
    const int64_t m = intArg(info, 6, op, "m");
    const int64_t n = intArg(info, 7, op, "n");
    const int64_t k = intArg(info, 8, op, "k");
    const Ref out = tensorArg(info, 0, op, "out", mul(op, m, n) * F32);
    const Ref x = tensorArg(info, 1, op, "x", mul(op, m, k) * F32);
    const Ref w = tensorArg(info, 2, op, "w", bytesOf(mul(op, n, k), wType));
    const Ref bias = optionalTensorArg(info, 4, op, "bias", bytesOf(n, biasType));
    const bool exact = info.Length() > 9 && info[9].ToBoolean().Value();
    if (onDevice(op, {out, x, w, bias})) {
#ifdef MOA_WITH_CUDA
      cuda::matmul(static_cast<float*>(out.data), static_cast<const float*>(x.data), w.data, wType, bias.data,
                   biasType, m, n, k, exact);
#endif
      return;
    }
    cpu::matmul(static_cast<float*>(out.data), static_cast<const float*>(x.data), w.data, wType, bias.data, biasType,
                m, n, k);
  });
}

Napi::Value Embedding(const Napi::CallbackInfo& info) {
  const std::string op = "embedding";
  return guarded(info, [&] {
    const int64_t tokens = intArg(info, 2, op, "tokens");
    const DType tableType = dtypeArg(info, 4, op, "tableType");
    const int64_t vocab = intArg(info, 5, op, "vocab");
    const int64_t dim = intArg(info, 6, op, "dim");
    const Ref out = tensorArg(info, 0, op, "out", mul(op, tokens, dim) * F32);
    const Ref ids = tensorArg(info, 1, op, "ids", static_cast<size_t>(tokens) * 4);
    const Ref table = tensorArg(info, 3, op, "table", bytesOf(mul(op, vocab, dim), tableType));
    if (onDevice(op, {out, ids, table})) {
#ifdef MOA_WITH_CUDA
      cuda::embedding(static_cast<float*>(out.data), static_cast<const int32_t*>(ids.data), tokens, table.data,
                      tableType, vocab, dim);
#endif
      return;
    }
    cpu::embedding(static_cast<float*>(out.data), static_cast<const int32_t*>(ids.data), tokens, table.data,
                   tableType, vocab, dim);
  });
}

Napi::Value RmsNorm(const Napi::CallbackInfo& info) {
  const std::string op = "rmsNorm";
  return guarded(info, [&] {
    const DType weightType = dtypeArg(info, 3, op, "weightType");
    const int64_t rows = intArg(info, 4, op, "rows");
    const int64_t dim = intArg(info, 5, op, "dim");
    const float eps = floatArg(info, 6, op, "eps");
    const Ref out = tensorArg(info, 0, op, "out", mul(op, rows, dim) * F32);
    const Ref x = tensorArg(info, 1, op, "x", mul(op, rows, dim) * F32);
    const Ref weight = tensorArg(info, 2, op, "weight", bytesOf(dim, weightType));
    if (onDevice(op, {out, x, weight})) {
#ifdef MOA_WITH_CUDA
      cuda::rmsNorm(static_cast<float*>(out.data), static_cast<const float*>(x.data), weight.data, weightType, rows,
                    dim, eps);
#endif
      return;
    }
    cpu::rmsNorm(static_cast<float*>(out.data), static_cast<const float*>(x.data), weight.data, weightType, rows, dim,
                 eps);
  });
}

Napi::Value Rope(const Napi::CallbackInfo& info) {
  const std::string op = "rope";
  return guarded(info, [&] {
    const int64_t tokens = intArg(info, 3, op, "tokens");
    const int64_t heads = intArg(info, 4, op, "heads");
    const int64_t headDim = intArg(info, 5, op, "headDim");
    const int64_t rotaryHalf = intArg(info, 6, op, "rotaryHalf");
    const float attentionScale = floatArg(info, 7, op, "attentionScale");
    if (2 * rotaryHalf > headDim) fail(op, "rotary dims exceed headDim");
    const Ref x = tensorArg(info, 0, op, "x", mul(op, tokens, heads, headDim) * F32);
    const Ref positions = tensorArg(info, 1, op, "positions", static_cast<size_t>(tokens) * 4);
    const Ref invFreq = tensorArg(info, 2, op, "invFreq", static_cast<size_t>(rotaryHalf) * F32);
    if (onDevice(op, {x, positions, invFreq})) {
#ifdef MOA_WITH_CUDA
      cuda::rope(static_cast<float*>(x.data), static_cast<const int32_t*>(positions.data),
                 static_cast<const float*>(invFreq.data), tokens, heads, headDim, rotaryHalf, attentionScale);
#endif
      return;
    }
    cpu::rope(static_cast<float*>(x.data), static_cast<const int32_t*>(positions.data),
              static_cast<const float*>(invFreq.data), tokens, heads, headDim, rotaryHalf, attentionScale);
  });
}

Napi::Value SiluMul(const Napi::CallbackInfo& info) {
  const std::string op = "siluMul";
  return guarded(info, [&] {
    const int64_t count = intArg(info, 3, op, "count");
    const Ref out = tensorArg(info, 0, op, "out", mul(op, count, 1) * F32);
    const Ref gate = tensorArg(info, 1, op, "gate", static_cast<size_t>(count) * F32);
    const Ref up = tensorArg(info, 2, op, "up", static_cast<size_t>(count) * F32);
    if (onDevice(op, {out, gate, up})) {
#ifdef MOA_WITH_CUDA
      cuda::siluMul(static_cast<float*>(out.data), static_cast<const float*>(gate.data),
                    static_cast<const float*>(up.data), count);
#endif
      return;
    }
    cpu::siluMul(static_cast<float*>(out.data), static_cast<const float*>(gate.data),
                 static_cast<const float*>(up.data), count);
  });
}

Napi::Value Add(const Napi::CallbackInfo& info) {
  const std::string op = "add";
  return guarded(info, [&] {
    const int64_t count = intArg(info, 3, op, "count");
    const Ref out = tensorArg(info, 0, op, "out", mul(op, count, 1) * F32);
    const Ref a = tensorArg(info, 1, op, "a", static_cast<size_t>(count) * F32);
    const Ref b = tensorArg(info, 2, op, "b", static_cast<size_t>(count) * F32);
    if (onDevice(op, {out, a, b})) {
#ifdef MOA_WITH_CUDA
      cuda::add(static_cast<float*>(out.data), static_cast<const float*>(a.data), static_cast<const float*>(b.data),
                count);
#endif
      return;
    }
    cpu::add(static_cast<float*>(out.data), static_cast<const float*>(a.data), static_cast<const float*>(b.data),
             count);
  });
}

Napi::Value Softmax(const Napi::CallbackInfo& info) {
  const std::string op = "softmax";
  return guarded(info, [&] {
    const int64_t rows = intArg(info, 2, op, "rows");
    const int64_t cols = intArg(info, 3, op, "cols");
    const Ref out = tensorArg(info, 0, op, "out", mul(op, rows, cols) * F32);
    const Ref x = tensorArg(info, 1, op, "x", mul(op, rows, cols) * F32);
    if (onDevice(op, {out, x})) {
#ifdef MOA_WITH_CUDA
      cuda::softmax(static_cast<float*>(out.data), static_cast<const float*>(x.data), rows, cols);
#endif
      return;
    }
    cpu::softmax(static_cast<float*>(out.data), static_cast<const float*>(x.data), rows, cols);
  });
}

// attentionPrefill(out, q, k, v, cuSeqlens, sequences, tokens, queryHeads, kvHeads, headDim, scale, mask)
Napi::Value AttentionPrefill(const Napi::CallbackInfo& info) {
  const std::string op = "attentionPrefill";
  return guarded(info, [&] {
    const int64_t sequences = intArg(info, 5, op, "sequences");
    const int64_t tokens = intArg(info, 6, op, "tokens");
    const cpu::AttentionDims dims = attentionDimsArg(info, 7, op);
    const float scale = floatArg(info, 10, op, "scale");
    const MaskRule mask = maskArg(info, 11, op, dims.queryHeads);
    const int32_t* cuSeqlens = cuSeqlensArg(info, 4, op, sequences, tokens);
    const size_t qBytes = mul(op, tokens, dims.queryHeads, dims.headDim) * F32;
    const size_t kvBytes = mul(op, tokens, dims.kvHeads, dims.headDim) * F32;
    const Ref out = tensorArg(info, 0, op, "out", qBytes);
    const Ref q = tensorArg(info, 1, op, "q", qBytes);
    const Ref k = tensorArg(info, 2, op, "k", kvBytes);
    const Ref v = tensorArg(info, 3, op, "v", kvBytes);
    if (onDevice(op, {out, q, k, v})) {
#ifdef MOA_WITH_CUDA
      cuda::attentionPrefill(out.data, q.data, k.data, v.data, DType::F32, cuSeqlens, sequences,
                             {dims.queryHeads, dims.kvHeads, dims.headDim}, scale, mask);
#endif
      return;
    }
    cpu::attentionPrefill(static_cast<float*>(out.data), static_cast<const float*>(q.data),
                          static_cast<const float*>(k.data), static_cast<const float*>(v.data), cuSeqlens, sequences,
                          dims, scale, mask);
  });
}

// attentionColumnSums(out, q, k, cuSeqlens, sequences, tokens, queryHeads, kvHeads, headDim, scale)
Napi::Value AttentionColumnSums(const Napi::CallbackInfo& info) {
  const std::string op = "attentionColumnSums";
  return guarded(info, [&] {
    const int64_t sequences = intArg(info, 4, op, "sequences");
    const int64_t tokens = intArg(info, 5, op, "tokens");
    const cpu::AttentionDims dims = attentionDimsArg(info, 6, op);
    const float scale = floatArg(info, 9, op, "scale");
    const int32_t* cuSeqlens = cuSeqlensArg(info, 3, op, sequences, tokens);
    const Ref out = tensorArg(info, 0, op, "out", mul(op, tokens, dims.kvHeads) * F32);
    const Ref q = tensorArg(info, 1, op, "q", mul(op, tokens, dims.queryHeads, dims.headDim) * F32);
    const Ref k = tensorArg(info, 2, op, "k", mul(op, tokens, dims.kvHeads, dims.headDim) * F32);
    if (onDevice(op, {out, q, k})) {
#ifdef MOA_WITH_CUDA
      cuda::attentionColumnSums(static_cast<float*>(out.data), static_cast<const float*>(q.data),
                                static_cast<const float*>(k.data), cuSeqlens, sequences, dims.queryHeads,
                                dims.kvHeads, dims.headDim, scale);
#endif
      return;
    }
    cpu::attentionColumnSums(static_cast<float*>(out.data), static_cast<const float*>(q.data),
                             static_cast<const float*>(k.data), cuSeqlens, sequences, dims, scale);
  });
}

// Reads the cache arguments starting at `first`:
// cacheK, cacheV, entries, kvHeads, headDim, sinkTokens, ringCap, regionOffset, slots (count of slot regions).
// `cacheType` is the element type of cacheK/cacheV (F32; BF16 on the GPU only).
cpu::KvCache cacheArgs(const Napi::CallbackInfo& info, size_t first, const std::string& op, Ref* kRef, Ref* vRef,
                       DType cacheType) {
  cpu::KvCache cache{};
  cache.entries = intArg(info, first + 2, op, "cache entries");
  cache.kvHeads = intArg(info, first + 3, op, "cache.kvHeads", 1);
  cache.headDim = intArg(info, first + 4, op, "cache.headDim", 1);
  cache.sinkTokens = intArg(info, first + 5, op, "cache.sinkTokens");
  cache.ringCap = hostArrayArg<int32_t>(info, first + 6, op, "cache.ringCap", napi_int32_array,
                                        static_cast<size_t>(cache.kvHeads));
  cache.slots = intArg(info, first + 8, op, "cache slots");
  cache.regionOffset = hostArrayArg<int32_t>(info, first + 7, op, "cache.regionOffset", napi_int32_array,
                                             static_cast<size_t>(mul(op, cache.slots, cache.kvHeads)));
  const size_t cacheBytes = bytesOf(mul(op, cache.entries, cache.headDim), cacheType);
  *kRef = tensorArg(info, first, op, "cache.k", cacheBytes);
  *vRef = tensorArg(info, first + 1, op, "cache.v", cacheBytes);
  if (cacheType != DType::F32 && cacheType != DType::BF16) fail(op, "the cache must be f32 or bf16");
  if (cacheType == DType::BF16 && !kRef->device) fail(op, "bf16 KV caches need the CUDA backend");
  cache.k = static_cast<float*>(kRef->data);
  cache.v = static_cast<float*>(vRef->data);
  // Every region must lie inside the cache: this is what keeps appends and reads in bounds.
  for (int64_t g = 0; g < cache.kvHeads; ++g) {
    if (cache.ringCap[g] < 1) fail(op, "cache.ringCap[" + std::to_string(g) + "] must be ≥ 1");
  }
  for (int64_t r = 0; r < cache.slots * cache.kvHeads; ++r) {
    const int64_t offset = cache.regionOffset[r];
    const int64_t end = offset + cache.sinkTokens + cache.ringCap[r % cache.kvHeads];
    if (offset < 0 || end > cache.entries) {
      fail(op, "cache.regionOffset[" + std::to_string(r) + "] = " + std::to_string(offset) + " puts the region [" +
                   std::to_string(offset) + ", " + std::to_string(end) + ") outside the cache's " +
                   std::to_string(cache.entries) + " entries");
    }
  }
  return cache;
}

// The optional trailing cache dtype argument (default F32).
DType cacheTypeArg(const Napi::CallbackInfo& info, size_t index, const std::string& op) {
  if (info.Length() <= index || info[index].IsUndefined() || info[index].IsNull()) return DType::F32;
  return dtypeArg(info, index, op, "cacheType");
}

#ifdef MOA_WITH_CUDA
cuda::KvCache deviceCache(const cpu::KvCache& cache, DType type) {
  return {cache.k, cache.v, type, cache.entries, cache.kvHeads, cache.headDim, cache.sinkTokens, cache.ringCap,
          cache.regionOffset, cache.slots};
}
#endif

// kvAppend(cacheK, cacheV, entries, kvHeads, headDim, sinkTokens, ringCap, regionOffset, slotCount,
//          k, v, slots, positions, tokens, cacheType?)
Napi::Value KvAppend(const Napi::CallbackInfo& info) {
  const std::string op = "kvAppend";
  return guarded(info, [&] {
    Ref cacheK;
    Ref cacheV;
    const DType cacheType = cacheTypeArg(info, 14, op);
    const cpu::KvCache cache = cacheArgs(info, 0, op, &cacheK, &cacheV, cacheType);
    const int64_t tokens = intArg(info, 13, op, "tokens");
    const size_t bytes = mul(op, tokens, cache.kvHeads, cache.headDim) * F32;
    const Ref k = tensorArg(info, 9, op, "k", bytes);
    const Ref v = tensorArg(info, 10, op, "v", bytes);
    const int32_t* slots =
        hostArrayArg<int32_t>(info, 11, op, "slots", napi_int32_array, static_cast<size_t>(tokens));
    const int32_t* positions =
        hostArrayArg<int32_t>(info, 12, op, "positions", napi_int32_array, static_cast<size_t>(tokens));
    if (onDevice(op, {cacheK, cacheV, k, v})) {
#ifdef MOA_WITH_CUDA
      cuda::kvAppend(deviceCache(cache, cacheType), static_cast<const float*>(k.data),
                     static_cast<const float*>(v.data), slots, positions, tokens);
#endif
      return;
    }
    cpu::kvAppend(cache, static_cast<const float*>(k.data), static_cast<const float*>(v.data), slots, positions,
                  tokens);
  });
}

// attentionDecode(cacheK, cacheV, entries, kvHeads, headDim, sinkTokens, ringCap, regionOffset, slotCount,
//                 out, q, slots, seqLens, batch, queryHeads, scale, mask, cacheType?)
Napi::Value AttentionDecode(const Napi::CallbackInfo& info) {
  const std::string op = "attentionDecode";
  return guarded(info, [&] {
    Ref cacheK;
    Ref cacheV;
    const DType cacheType = cacheTypeArg(info, 17, op);
    const cpu::KvCache cache = cacheArgs(info, 0, op, &cacheK, &cacheV, cacheType);
    const int64_t batch = intArg(info, 13, op, "batch");
    const int64_t queryHeads = intArg(info, 14, op, "queryHeads", 1);
    if (queryHeads % cache.kvHeads != 0) fail(op, "queryHeads must be a multiple of cache.kvHeads");
    const float scale = floatArg(info, 15, op, "scale");
    const MaskRule mask = maskArg(info, 16, op, queryHeads);
    if (mask.enabled && mask.sinkTokens != cache.sinkTokens) fail(op, "mask.sinkTokens differs from the cache's");
    const size_t bytes = mul(op, batch, queryHeads, cache.headDim) * F32;
    const Ref out = tensorArg(info, 9, op, "out", bytes);
    const Ref q = tensorArg(info, 10, op, "q", bytes);
    const int32_t* slots = hostArrayArg<int32_t>(info, 11, op, "slots", napi_int32_array, static_cast<size_t>(batch));
    const int32_t* seqLens =
        hostArrayArg<int32_t>(info, 12, op, "seqLens", napi_int32_array, static_cast<size_t>(batch));
    if (onDevice(op, {cacheK, cacheV, out, q})) {
#ifdef MOA_WITH_CUDA
      cuda::attentionDecode(static_cast<float*>(out.data), static_cast<const float*>(q.data),
                            deviceCache(cache, cacheType), slots, seqLens, batch, queryHeads, scale, mask);
#endif
      return;
    }
    cpu::attentionDecode(static_cast<float*>(out.data), static_cast<const float*>(q.data), cache, slots, seqLens,
                         batch, queryHeads, scale, mask);
  });
}

}  // namespace

void registerOps(Napi::Env env, Napi::Object exports) {
  exports.Set("matmul", Napi::Function::New(env, Matmul, "matmul"));
  exports.Set("embedding", Napi::Function::New(env, Embedding, "embedding"));
  exports.Set("rmsNorm", Napi::Function::New(env, RmsNorm, "rmsNorm"));
  exports.Set("rope", Napi::Function::New(env, Rope, "rope"));
  exports.Set("siluMul", Napi::Function::New(env, SiluMul, "siluMul"));
  exports.Set("add", Napi::Function::New(env, Add, "add"));
  exports.Set("softmax", Napi::Function::New(env, Softmax, "softmax"));
  exports.Set("attentionPrefill", Napi::Function::New(env, AttentionPrefill, "attentionPrefill"));
  exports.Set("attentionColumnSums", Napi::Function::New(env, AttentionColumnSums, "attentionColumnSums"));
  exports.Set("kvAppend", Napi::Function::New(env, KvAppend, "kvAppend"));
  exports.Set("attentionDecode", Napi::Function::New(env, AttentionDecode, "attentionDecode"));
}

}  // namespace moa::binding
