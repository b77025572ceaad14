// N-API entry points of the backward ops used for profiling (activation gradients only) and of the prefill that
// also returns the softmax statistics they need: convert arguments, check buffer sizes, dispatch to the CPU
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

// attentionPrefillStats(out, stats, q, k, v, cuSeqlens, sequences, tokens, queryHeads, kvHeads, headDim, scale,
//                       queryStart)
Napi::Value AttentionPrefillStats(const Napi::CallbackInfo& info) {
  const std::string op = "attentionPrefill";
  return guarded(info, [&] {
    const int64_t sequences = intArg(info, 6, op, "sequences");
    const int64_t tokens = intArg(info, 7, op, "tokens");
    const cpu::AttentionDims dims = attentionDimsArg(info, 8, op);
    const float scale = floatArg(info, 11, op, "scale");
    const int64_t queryStart = intArg(info, 12, op, "queryStart");
    if (queryStart > 2147483647) fail(op, "queryStart exceeds int32");
    const int32_t* cuSeqlens = cuSeqlensArg(info, 5, op, sequences, tokens);
    const size_t qBytes = mul(op, tokens, dims.queryHeads, dims.headDim) * F32;
    const size_t kvBytes = mul(op, tokens, dims.kvHeads, dims.headDim) * F32;
    const Ref out = tensorArg(info, 0, op, "out", qBytes);
    const Ref stats = tensorArg(info, 1, op, "stats", mul(op, tokens, dims.queryHeads, 2) * F32);
    const Ref q = tensorArg(info, 2, op, "q", qBytes);
    const Ref k = tensorArg(info, 3, op, "k", kvBytes);
    const Ref v = tensorArg(info, 4, op, "v", kvBytes);
    if (onDevice(op, {out, stats, q, k, v})) {
#ifdef MOA_WITH_CUDA
      cuda::attentionPrefillStats(static_cast<float*>(out.data), static_cast<float*>(stats.data),
                                  static_cast<const float*>(q.data), static_cast<const float*>(k.data),
                                  static_cast<const float*>(v.data), cuSeqlens, sequences,
                                  {dims.queryHeads, dims.kvHeads, dims.headDim}, scale,
                                  static_cast<int32_t>(queryStart));
#endif
      return;
    }
    cpu::attentionPrefill(static_cast<float*>(out.data), static_cast<const float*>(q.data),
                          static_cast<const float*>(k.data), static_cast<const float*>(v.data), cuSeqlens, sequences,
                          dims, scale, MaskRule{}, static_cast<float*>(stats.data));
  });
}

// matmulBackward(dx, dy, w, wType, m, n, k, accumulate)
Napi::Value MatmulBackward(const Napi::CallbackInfo& info) {
  const std::string op = "matmulBackward";
  return guarded(info, [&] {
    const DType wType = dtypeArg(info, 3, op, "wType");
    const int64_t m = intArg(info, 4, op, "m");
    const int64_t n = intArg(info, 5, op, "n");
    const int64_t k = intArg(info, 6, op, "k");
    const bool accumulate = info[7].ToBoolean().Value();
    const Ref dx = tensorArg(info, 0, op, "dx", mul(op, m, k) * F32);
    const Ref dy = tensorArg(info, 1, op, "dy", mul(op, m, n) * F32);
    const Ref w = tensorArg(info, 2, op, "w", bytesOf(mul(op, n, k), wType));
    if (onDevice(op, {dx, dy, w})) {
#ifdef MOA_WITH_CUDA
      cuda::matmulBackward(static_cast<float*>(dx.data), static_cast<const float*>(dy.data), w.data, wType, m, n, k,
                           accumulate);
#endif
      return;
    }
    cpu::matmulBackward(static_cast<float*>(dx.data), static_cast<const float*>(dy.data), w.data, wType, m, n, k,
                        accumulate);
  });
}

// rmsNormBackward(dx, dy, x, weight, weightType, rows, dim, eps, accumulate)
Napi::Value RmsNormBackward(const Napi::CallbackInfo& info) {
  const std::string op = "rmsNormBackward";
  return guarded(info, [&] {
    const DType weightType = dtypeArg(info, 4, op, "weightType");
    const int64_t rows = intArg(info, 5, op, "rows");
    const int64_t dim = intArg(info, 6, op, "dim");
    const float eps = floatArg(info, 7, op, "eps");
    const bool accumulate = info[8].ToBoolean().Value();
    const size_t bytes = mul(op, rows, dim) * F32;
    const Ref dx = tensorArg(info, 0, op, "dx", bytes);
    const Ref dy = tensorArg(info, 1, op, "dy", bytes);
    const Ref x = tensorArg(info, 2, op, "x", bytes);
    const Ref weight = tensorArg(info, 3, op, "weight", bytesOf(dim, weightType));
    if (onDevice(op, {dx, dy, x, weight})) {
#ifdef MOA_WITH_CUDA
      cuda::rmsNormBackward(static_cast<float*>(dx.data), static_cast<const float*>(dy.data),
                            static_cast<const float*>(x.data), weight.data, weightType, rows, dim, eps, accumulate);
#endif
      return;
    }
    cpu::rmsNormBackward(static_cast<float*>(dx.data), static_cast<const float*>(dy.data),
                         static_cast<const float*>(x.data), weight.data, weightType, rows, dim, eps, accumulate);
  });
}

// siluMulBackward(dGate, dUp, dOut, gate, up, count)
Napi::Value SiluMulBackward(const Napi::CallbackInfo& info) {
  const std::string op = "siluMulBackward";
  return guarded(info, [&] {
    const int64_t count = intArg(info, 5, op, "count");
    const size_t bytes = mul(op, count, 1) * F32;
    const Ref dGate = tensorArg(info, 0, op, "dGate", bytes);
    const Ref dUp = tensorArg(info, 1, op, "dUp", bytes);
    const Ref dOut = tensorArg(info, 2, op, "dOut", bytes);
    const Ref gate = tensorArg(info, 3, op, "gate", bytes);
    const Ref up = tensorArg(info, 4, op, "up", bytes);
    if (onDevice(op, {dGate, dUp, dOut, gate, up})) {
#ifdef MOA_WITH_CUDA
      cuda::siluMulBackward(static_cast<float*>(dGate.data), static_cast<float*>(dUp.data),
                            static_cast<const float*>(dOut.data), static_cast<const float*>(gate.data),
                            static_cast<const float*>(up.data), count);
#endif
      return;
    }
    cpu::siluMulBackward(static_cast<float*>(dGate.data), static_cast<float*>(dUp.data),
                         static_cast<const float*>(dOut.data), static_cast<const float*>(gate.data),
                         static_cast<const float*>(up.data), count);
  });
}

// attentionBackward(dq, dk, dv, influence, dOut, q, k, v, out, stats, cuSeqlens, sequences, tokens, queryHeads,
//                   kvHeads, headDim, scale, blocks, queryStart, gradients)
Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
  const std::string op = "attentionBackward";
  return guarded(info, [&] {
    const int64_t sequences = intArg(info, 11, op, "sequences");
    const int64_t tokens = intArg(info, 12, op, "tokens");
    const cpu::AttentionDims dims = attentionDimsArg(info, 13, op);
    const float scale = floatArg(info, 16, op, "scale");
    const int64_t blocks = intArg(info, 17, op, "blocks");
    const int64_t queryStart = intArg(info, 18, op, "queryStart");
    if (queryStart > 2147483647) fail(op, "queryStart exceeds int32");
    const bool gradients = info[19].ToBoolean().Value();
    const int32_t* cuSeqlens = cuSeqlensArg(info, 10, op, sequences, tokens);
    if (cuSeqlens[0] != 0 || cuSeqlens[sequences] != tokens) fail(op, "cuSeqlens must run from 0 to tokens");
    for (int64_t s = 0; s < sequences; ++s) {
      if ((cuSeqlens[s + 1] - cuSeqlens[s] + 63) / 64 > blocks) {
        fail(op, "sequence " + std::to_string(s) + " has more 64-token blocks than influence's " +
                     std::to_string(blocks));
      }
    }
    const size_t qBytes = mul(op, tokens, dims.queryHeads, dims.headDim) * F32;
    const size_t kvBytes = mul(op, tokens, dims.kvHeads, dims.headDim) * F32;
    const Ref dq = tensorArg(info, 0, op, "dq", qBytes);
    const Ref dk = tensorArg(info, 1, op, "dk", kvBytes);
    const Ref dv = tensorArg(info, 2, op, "dv", kvBytes);
    const Ref influence =
        optionalTensorArg(info, 3, op, "influence", mul(op, mul(op, sequences, dims.queryHeads), blocks, blocks) * F32);
    const Ref dOut = tensorArg(info, 4, op, "dOut", qBytes);
    const Ref q = tensorArg(info, 5, op, "q", qBytes);
    const Ref k = tensorArg(info, 6, op, "k", kvBytes);
    const Ref v = tensorArg(info, 7, op, "v", kvBytes);
    const Ref out = tensorArg(info, 8, op, "out", qBytes);
    const Ref stats = tensorArg(info, 9, op, "stats", mul(op, tokens, dims.queryHeads, 2) * F32);
    if (onDevice(op, {dq, dk, dv, influence, dOut, q, k, v, out, stats})) {
#ifdef MOA_WITH_CUDA
      cuda::attentionBackward(static_cast<float*>(dq.data), static_cast<float*>(dk.data), static_cast<float*>(dv.data),
                              static_cast<float*>(influence.data), static_cast<const float*>(dOut.data),
                              static_cast<const float*>(q.data), static_cast<const float*>(k.data),
                              static_cast<const float*>(v.data), static_cast<const float*>(out.data),
                              static_cast<const float*>(stats.data), cuSeqlens, sequences,
                              {dims.queryHeads, dims.kvHeads, dims.headDim}, scale, blocks,
                              static_cast<int32_t>(queryStart), gradients);
#endif
      return;
    }
    cpu::attentionBackward(static_cast<float*>(dq.data), static_cast<float*>(dk.data), static_cast<float*>(dv.data),
                           static_cast<float*>(influence.data), static_cast<const float*>(dOut.data),
                           static_cast<const float*>(q.data), static_cast<const float*>(k.data),
                           static_cast<const float*>(v.data), static_cast<const float*>(out.data),
                           static_cast<const float*>(stats.data), cuSeqlens, sequences, dims, scale, blocks,
                           static_cast<int32_t>(queryStart), gradients);
  });
}

// crossEntropy(losses, dLogits, logits, targets, rows, vocab, gradScale)
Napi::Value CrossEntropy(const Napi::CallbackInfo& info) {
  const std::string op = "crossEntropy";
  return guarded(info, [&] {
    const int64_t rows = intArg(info, 4, op, "rows");
    const int64_t vocab = intArg(info, 5, op, "vocab", 1);
    const float gradScale = floatArg(info, 6, op, "gradScale");
    const Ref losses = tensorArg(info, 0, op, "losses", static_cast<size_t>(rows) * F32);
    const Ref dLogits = tensorArg(info, 1, op, "dLogits", mul(op, rows, vocab) * F32);
    const Ref logits = tensorArg(info, 2, op, "logits", mul(op, rows, vocab) * F32);
    const Ref targets = tensorArg(info, 3, op, "targets", static_cast<size_t>(rows) * 4);
    if (onDevice(op, {losses, dLogits, logits, targets})) {
#ifdef MOA_WITH_CUDA
      cuda::crossEntropy(static_cast<float*>(losses.data), static_cast<float*>(dLogits.data),
                         static_cast<const float*>(logits.data), static_cast<const int32_t*>(targets.data), rows, vocab,
                         gradScale);
#endif
      return;
    }
    cpu::crossEntropy(static_cast<float*>(losses.data), static_cast<float*>(dLogits.data),
                      static_cast<const float*>(logits.data), static_cast<const int32_t*>(targets.data), rows, vocab,
                      gradScale);
  });
}

}  // namespace

void registerBackwardOps(Napi::Env env, Napi::Object exports) {
  exports.Set("attentionPrefillStats", Napi::Function::New(env, AttentionPrefillStats, "attentionPrefillStats"));
  exports.Set("matmulBackward", Napi::Function::New(env, MatmulBackward, "matmulBackward"));
  exports.Set("rmsNormBackward", Napi::Function::New(env, RmsNormBackward, "rmsNormBackward"));
  exports.Set("siluMulBackward", Napi::Function::New(env, SiluMulBackward, "siluMulBackward"));
  exports.Set("attentionBackward", Napi::Function::New(env, AttentionBackward, "attentionBackward"));
  exports.Set("crossEntropy", Napi::Function::New(env, CrossEntropy, "crossEntropy"));
}

}  // namespace moa::binding
