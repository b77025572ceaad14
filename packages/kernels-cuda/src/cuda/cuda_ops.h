// The CUDA side of the ops, declared in plain C++ so the N-API binding (compiled by the host compiler) can call
// it without CUDA headers. Each op in src/cuda/<op>.cu takes the same arguments as its CPU reference in
// src/cpu/<op>.cc, with device pointers for tensors and host pointers for index lists (slots, positions,
// cuSeqlens, region offsets), which the op checks on the host before anything is launched. Errors are thrown
// as std::runtime_error (CUDA failures) or std::out_of_range (bad indices), naming the op and its sizes.
//
// All work runs on the legacy default stream, in call order. Scratch memory (index lists, bf16 copies of GEMM
// inputs, split-K partials) is kept per purpose and only grows, so a steady decode loop allocates nothing.
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

struct MemoryInfo {
  size_t free = 0;
  size_t total = 0;
};
MemoryInfo memoryInfo();

// Device memory from the stream-ordered pool, zero-initialised unless `zero` is false.
void* allocate(size_t bytes, bool zero = true);
void release(void* pointer);
void copyToDevice(void* destination, const void* source, size_t bytes);
void copyToHost(void* destination, const void* source, size_t bytes);
// Device-to-device copy, ordered with the ops.
void copyDevice(void* destination, const void* source, size_t bytes);
// Waits for all queued work and reports any error a kernel raised.
void synchronize();
// Frees the ops' scratch buffers (they are allocated again on demand).
void releaseScratch();

// A scaled fp16 copy of an f32 or bf16 tensor (half_scale.cuh), made now in stream order and read by the
// profiler-precision GEMMs (exact matmul, matmulBackward) in place of a fresh conversion until `unpinHalf(id)`.
// The caller must not change the tensor meanwhile. Returns the pin's id: 0, and no copy, when the profiling
// precision is not "f16" (MOA_CUDA_BACKWARD_PRECISION), which reads no fp16 copies.
int64_t pinHalf(const void* source, int64_t count, DType type);
// An empty scaled fp16 copy for an f32 tensor an op is about to write: the next siluMul, siluMulBackward,
// rmsNorm or rope writing exactly these `count` elements at `target` writes the copy instead of the tensor (the GEMMs
// then read the copy; any other reader of the tensor is refused). Returns 0, and pins nothing, when the
// profiling precision is not "f16".
int64_t pinHalfOutput(const void* target, int64_t count);
void unpinHalf(int64_t id);

// out[m, n] = x[m, k] · wᵀ (+ bias[n]) through cuBLAS: bf16/f16 weights multiply x rounded to the same 16-bit
// type with fp32 accumulation (exact: x as bf16 hi + lo for bf16 weights, fp32 GEMMs over widened panels for f16
// weights); f32 weights run an fp32 GEMM.
void matmul(float* out, const float* x, const void* w, DType wType, const void* bias, DType biasType, int64_t m,
            int64_t n, int64_t k, bool exact = false);
// Whether cuBLAS could be loaded, and if not, why (the library is opened on first use).
std::string cublasStatus();

void embedding(float* out, const int32_t* ids, int64_t tokens, const void* table, DType tableType, int64_t vocab,
               int64_t dim);
void rmsNorm(float* out, const float* x, const void* weight, DType weightType, int64_t rows, int64_t dim, float eps);
void rope(float* x, const int32_t* positions, const float* invFreq, int64_t tokens, int64_t heads, int64_t headDim,
          int64_t rotaryHalf, float attentionScale);
void siluMul(float* out, const float* gate, const float* up, int64_t count);
void add(float* out, const float* a, const float* b, int64_t count);
void softmax(float* out, const float* x, int64_t rows, int64_t cols);

// q/k/v/out element type of the attention kernels: f32 (the runtime's activations) or bf16.
struct AttentionDims {
  int64_t queryHeads;
  int64_t kvHeads;
  int64_t headDim;
};

// Column sums of dense causal attention probabilities, out [T, Hkv] (cpu/ops.h: attentionColumnSums); cuSeqlens
// is a host array.
void attentionColumnSums(float* out, const float* q, const float* k, const int32_t* cuSeqlens, int64_t sequences,
                         int64_t queryHeads, int64_t kvHeads, int64_t headDim, float scale);

// Causal attention over packed sequences (cpu/ops.h: attentionPrefill); `type` is the element type of
// q, k, v and out (F32 or BF16). cuSeqlens is a host array. Tiles outside a head's mask are never loaded.
void attentionPrefill(void* out, const void* q, const void* k, const void* v, DType type, const int32_t* cuSeqlens,
                      int64_t sequences, const AttentionDims& dims, float scale, const MaskRule& mask);

// One layer of the elastic KV cache with device storage (cpu/ops.h: KvCache); k/v are F32 or BF16.
struct KvCache {
  void* k;
  void* v;
  DType type;
  int64_t entries;
  int64_t kvHeads;
  int64_t headDim;
  int64_t sinkTokens;
  const int32_t* ringCap;       // host [kvHeads]
  const int32_t* regionOffset;  // host [slots · kvHeads]
  int64_t slots;
};

// k/v are f32 [tokens, Hkv, D]; slots and positions are host arrays.
void kvAppend(const KvCache& cache, const float* k, const float* v, const int32_t* slots, const int32_t* positions,
              int64_t tokens);

// q/out f32 [B, Hq, D]; slots and seqLens are host arrays. Split-K over the cached positions.
void attentionDecode(float* out, const float* q, const KvCache& cache, const int32_t* slots, const int32_t* seqLens,
                     int64_t batch, int64_t queryHeads, float scale, const MaskRule& mask);

// ---- backward, for profiling (cpu/ops.h; activation gradients only) ----

// dx = dy · w (+ dx) through cuBLAS; bf16 weights multiply dy split into bf16 hi + lo (backward_precision.cuh).
void matmulBackward(float* dx, const float* dy, const void* w, DType wType, int64_t m, int64_t n, int64_t k,
                    bool accumulate);
void rmsNormBackward(float* dx, const float* dy, const float* x, const void* weight, DType weightType, int64_t rows,
                     int64_t dim, float eps, bool accumulate = false);
void siluMulBackward(float* dGate, float* dUp, const float* dOut, const float* gate, const float* up, int64_t count);
// Checks the targets on the host first (a small device-to-host copy) and throws std::out_of_range like the CPU.
void crossEntropy(float* losses, float* dLogits, const float* logits, const int32_t* targets, int64_t rows,
                  int64_t vocab, float gradScale);
// Dense causal prefill over packed f32 sequences that also writes stats [T, Hq, 2] = (m, l) for
// attentionBackward, with the backward's own score products. Head dims 64 and 128.
// Rows of a sequence before `queryStart` may be left unwritten (the 64-row tiles before its tile are not run).
void attentionPrefillStats(float* out, float* stats, const float* q, const float* k, const float* v,
                           const int32_t* cuSeqlens, int64_t sequences, const AttentionDims& dims, float scale,
                           int32_t queryStart = 0);
// dq, dk, dv of dense causal attention, adding the block influence into influence (null: none). Head dims 64
// and 128. Scratch linear in T (bf16 operand copies and one float per row and query head). dOut is read from
// row `queryStart` of each sequence on (the rows before count as zero); without `gradients` dq, dk and dv are
// not written (only the influence).
void attentionBackward(float* dq, float* dk, float* dv, float* influence, const float* dOut, const float* q,
                       const float* k, const float* v, const float* out, const float* stats,
                       const int32_t* cuSeqlens, int64_t sequences, const AttentionDims& dims, float scale,
                       int64_t blocks, int32_t queryStart = 0, bool gradients = true);

}  // namespace moa::cuda
