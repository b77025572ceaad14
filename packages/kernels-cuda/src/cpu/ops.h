// The C++ CPU reference of every op in backend.ts. Each op lives in src/cpu/<op>.cc; its CUDA twin in
// src/cuda/<op>.cu takes the same arguments (device pointers instead of host pointers).
//
// Conventions: row-major, shapes outermost first; activations, KV caches and outputs are fp32; "weights"
// (matmul w and bias, embedding table, RMSNorm weight) may be f32, bf16 or f16 and are widened on the fly;
// accumulation is fp32. Arguments have been checked by the binding: the ops trust shapes and sizes, and
// only check index values they read from tensors (token ids, slots, positions).
#pragma once

#include <cstdint>

#include "cpu/common.h"

namespace moa::cpu {

// out[m, n] = x[m, k] · wᵀ (+ bias[n]); w is [n, k] (Hugging Face Linear layout). bias may be null.
void matmul(float* out, const float* x, const void* w, DType wType, const void* bias, DType biasType, int64_t m,
            int64_t n, int64_t k);

// out[t, :] = table[ids[t], :] for t < tokens; throws std::out_of_range for an id outside [0, vocab).
void embedding(float* out, const int32_t* ids, int64_t tokens, const void* table, DType tableType, int64_t vocab,
               int64_t dim);

// out[r, :] = x[r, :] / sqrt(mean(x[r, :]²) + eps) · weight.
void rmsNorm(float* out, const float* x, const void* weight, DType weightType, int64_t rows, int64_t dim,
             float eps);

// In place on x[tokens, heads, headDim]: Hugging Face rotate-half RoPE on the first 2·rotaryHalf dims of each
// head (the rest pass through), angle = positions[t] · invFreq[i] in fp32, cos/sin scaled by attentionScale.
void rope(float* x, const int32_t* positions, const float* invFreq, int64_t tokens, int64_t heads, int64_t headDim,
          int64_t rotaryHalf, float attentionScale);

// out = silu(gate) · up = gate / (1 + e^(−gate)) · up, elementwise.
void siluMul(float* out, const float* gate, const float* up, int64_t count);

// out = a + b, elementwise; out may alias a or b.
void add(float* out, const float* a, const float* b, int64_t count);

// Row-wise softmax of x[rows, cols] with max subtraction; out may alias x.
void softmax(float* out, const float* x, int64_t rows, int64_t cols);

struct AttentionDims {
  int64_t queryHeads;
  int64_t kvHeads;
  int64_t headDim;
};

// Causal attention over packed sequences: sequence s owns rows [cuSeqlens[s], cuSeqlens[s+1]) of
// q[T, Hq, D], k/v[T, Hkv, D] and out[T, Hq, D]. Query head h reads KV head h·Hkv/Hq. With a block mask,
// each sequence uses its own length n; blocks outside the mask are skipped, so work falls with density.
// stats, when not null, receives each row's softmax statistics [T, Hq, 2]: the max of the kept scaled scores
// and Σ e^(score − max), which attentionBackward recomputes the probabilities from.
void attentionPrefill(float* out, const float* q, const float* k, const float* v, const int32_t* cuSeqlens,
                      int64_t sequences, const AttentionDims& dims, float scale, const MaskRule& mask,
                      float* stats = nullptr);

// Column sums of dense causal attention (the heavy-hitter scores of H2O): out[t, g] = Σ over the query heads h of
// KV head g and the rows i ≥ t of t's sequence of softmax_j(scale · q[i, h]·k[j, g], j ≤ i) at j = t. out is
// [T, Hkv]. Rows are processed in fixed blocks and summed in a fixed order, so results do not depend on threads.
void attentionColumnSums(float* out, const float* q, const float* k, const int32_t* cuSeqlens, int64_t sequences,
                         const AttentionDims& dims, float scale);

// One layer of the elastic KV cache (backend.ts: KvCacheLayer), host pointers.
struct KvCache {
  float* k;                     // [entries, headDim]
  float* v;                     // [entries, headDim]
  int64_t entries;
  int64_t kvHeads;
  int64_t headDim;
  int64_t sinkTokens;
  const int32_t* ringCap;       // [kvHeads]
  const int32_t* regionOffset;  // [slots · kvHeads]
  int64_t slots;
};

// Entry of position p in its region: p < G → p, else G + (p − G) mod ringCap.
inline int64_t cacheEntry(int64_t position, int64_t sinkTokens, int64_t ringCap) {
  return position < sinkTokens ? position : sinkTokens + (position - sinkTokens) % ringCap;
}

// Stores k/v[tokens, Hkv, D] of tokens at positions[t] of sequence slots[t]. Throws std::out_of_range for a
// slot or position outside the cache.
void kvAppend(const KvCache& cache, const float* k, const float* v, const int32_t* slots, const int32_t* positions,
              int64_t tokens);

// One query per sequence: q[B, Hq, D] → out[B, Hq, D] over the cached tokens of slots[b] at length seqLens[b].
// Reads only entries that still hold their token: the sink and the last ringCap positions, intersected with
// the head's window when the mask is on. Throws std::out_of_range for a slot outside the cache.
void attentionDecode(float* out, const float* q, const KvCache& cache, const int32_t* slots, const int32_t* seqLens,
                     int64_t batch, int64_t queryHeads, float scale, const MaskRule& mask);

// ---- backward for profiling: activation gradients only (DESIGN.md: Kernels) ----

// dx[m, k] = dy[m, n] · w (+ dx when accumulate): the input gradient of matmul (w [n, k] in f32/bf16/f16).
void matmulBackward(float* dx, const float* dy, const void* w, DType wType, int64_t m, int64_t n, int64_t k,
                    bool accumulate);

// dx of out = x · r · weight, r = 1/sqrt(mean(x²) + eps), given dy:
// dx = r · (weight ⊙ dy) − x · r³ / dim · Σ(x ⊙ weight ⊙ dy), per row.
void rmsNormBackward(float* dx, const float* dy, const float* x, const void* weight, DType weightType,
                     int64_t rows, int64_t dim, float eps, bool accumulate = false);

// Gradients of out = silu(gate) · up: dUp = dOut · silu(gate), dGate = dOut · up · σ(gate)(1 + gate(1 − σ(gate))).
void siluMulBackward(float* dGate, float* dUp, const float* dOut, const float* gate, const float* up, int64_t count);

// Backward of dense causal attentionPrefill (q/k/v/out/cuSeqlens as there, stats from its `stats` output, dOut
// the output gradient): writes dq [T, Hq, D] and dk/dv [T, Hkv, D] (GQA: summed over each group's query
// heads). influence, when not null, is [sequences, Hq, blocks, blocks]: the MoA attention influence Σ|E_ij|
// of every causal 64×64 block (DESIGN.md: Attention influence) is added to it.
// dOut is read from row `queryStart` of each sequence on (the rows before count as zero); without
// `gradients` dq, dk and dv are not written (only the influence).
void attentionBackward(float* dq, float* dk, float* dv, float* influence, const float* dOut, const float* q,
                       const float* k, const float* v, const float* out, const float* stats,
                       const int32_t* cuSeqlens, int64_t sequences, const AttentionDims& dims, float scale,
                       int64_t blocks, int32_t queryStart = 0, bool gradients = true);

// Cross-entropy of rows of logits[rows, vocab] against targets[rows]: losses[r] = logsumexp(row) − row[target]
// and dLogits[r] = (softmax(row) − onehot(target)) · gradScale. Throws std::out_of_range for a target outside
// [0, vocab).
void crossEntropy(float* losses, float* dLogits, const float* logits, const int32_t* targets, int64_t rows,
                  int64_t vocab, float gradScale);

}  // namespace moa::cpu
