// Attention microbenchmarks of the moa CUDA kernels (packages/kernels-cuda/src/cuda), bf16 operands:
//   prefill: 32 query / 8 KV heads, head 128, batch 1, n = 8k, 32k, 128k: dense causal, MoA uniform density 0.5
//            and 0.25, and a mixed per-head plan (block masks, DESIGN.md), timed with CUDA events (median);
//   decode:  the same heads, one query per sequence over a bf16 cache, batch 1–64, context 8k–128k, dense and
//            MoA (KV density ~0.5); achieved bandwidth = cache bytes read / time, against a measured
//            device-to-device copy and the card's datasheet peak.
// Build (bench/run.sh does it): nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a
//   -I packages/kernels-cuda/src bench/attention_bench.cu packages/kernels-cuda/src/cuda/{attention_prefill,
//   attention_decode,device}.cu -ldl -o attention_bench
// Usage: attention_bench <out.json> [--quick]
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cuda/cuda_ops.h"

using moa::DType;
using moa::MaskRule;

#define CHECK(call)                                                                                \
  do {                                                                                             \
    cudaError_t status_ = (call);                                                                  \
    if (status_ != cudaSuccess) {                                                                  \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(status_)); \
      std::exit(1);                                                                                \
    }                                                                                              \
  } while (0)

__global__ void fillRandom(__nv_bfloat16* out, size_t count, uint32_t seed, float scale) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    uint32_t x = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    out[i] = __float2bfloat16((static_cast<float>(x) / 4294967296.0f * 2.0f - 1.0f) * scale);
  }
}

__global__ void fillRandomF32(float* out, size_t count, uint32_t seed) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    uint32_t x = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    x ^= x >> 15;
    x *= 0x2c1b3c6du;
    x ^= x >> 12;
    out[i] = static_cast<float>(x) / 4294967296.0f * 2.0f - 1.0f;
  }
}

template <typename F>
double medianMs(F&& body, int warmup, int reps) {
  cudaEvent_t start, stop;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  for (int i = 0; i < warmup; ++i) body();
  CHECK(cudaDeviceSynchronize());
  std::vector<double> times;
  for (int i = 0; i < reps; ++i) {
    CHECK(cudaEventRecord(start));
    body();
    CHECK(cudaEventRecord(stop));
    CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    CHECK(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  std::sort(times.begin(), times.end());
  CHECK(cudaEventDestroy(start));
  CHECK(cudaEventDestroy(stop));
  return times[times.size() / 2];
}

// Kept causal entries of one head under the block mask at length n (DESIGN.md: Block mask, Density).
double keptEntries(float alpha, float beta, int64_t n, bool dense) {
  const int64_t B = 64;
  const int64_t blocks = (n + B - 1) / B;
  const int64_t nb = dense ? blocks : moa::spanBlocks(alpha, beta, n, B);
  double kept = 0;
  for (int64_t qb = 0; qb < blocks; ++qb) {
    const int64_t rows = std::min(B, n - qb * B);
    for (int64_t kb = 0; kb <= qb; ++kb) {
      if (!(dense || kb < 1 || kb >= qb - nb + 1)) continue;
      kept += kb == qb ? rows * (rows + 1) / 2.0 : rows * static_cast<double>(B);
    }
  }
  return kept;
}

struct PlanCase {
  std::string name;
  std::vector<float> alpha;
  std::vector<float> beta;
  bool dense;
};

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: attention_bench <out.json> [--quick]\n");
    return 2;
  }
  const bool quick = argc > 2 && std::string(argv[2]) == "--quick";
  FILE* json = std::fopen(argv[1], "w");
  cudaDeviceProp props{};
  CHECK(cudaGetDeviceProperties(&props, 0));
  int runtime = 0;
  int driver = 0;
  CHECK(cudaRuntimeGetVersion(&runtime));
  CHECK(cudaDriverGetVersion(&driver));
  std::printf("device: %s, runtime %d, driver %d\n", props.name, runtime, driver);
  std::fprintf(json, "{\"device\": \"%s\", \"cudaRuntime\": %d, \"cudaDriver\": %d,\n", props.name, runtime, driver);

  const int hq = 32;
  const int hkv = 8;
  const int d = 128;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));

  // Measured copy bandwidth (read + write) of a 4 GiB buffer.
  {
    const size_t bytes = size_t{4} << 30;
    void* a;
    void* b;
    CHECK(cudaMalloc(&a, bytes));
    CHECK(cudaMalloc(&b, bytes));
    CHECK(cudaMemset(a, 1, bytes));
    const double ms = medianMs([&] { CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice)); }, 2, 10);
    const double gbps = 2.0 * bytes / (ms * 1e-3) / 1e9;
    std::printf("device-to-device copy: %.0f GB/s (read + write)\n", gbps);
    std::fprintf(json, "\"copyBandwidthGBs\": %.1f,\n", gbps);
    CHECK(cudaFree(a));
    CHECK(cudaFree(b));
  }

  // ---- prefill ----
  std::fprintf(json, "\"prefill\": [\n");
  bool firstRow = true;
  std::vector<int64_t> lengths = quick ? std::vector<int64_t>{8192} : std::vector<int64_t>{8192, 32768, 131072};
  for (int64_t n : lengths) {
    __nv_bfloat16 *q, *k, *v, *out;
    CHECK(cudaMalloc(&q, n * hq * d * 2));
    CHECK(cudaMalloc(&k, n * hkv * d * 2));
    CHECK(cudaMalloc(&v, n * hkv * d * 2));
    CHECK(cudaMalloc(&out, n * hq * d * 2));
    fillRandom<<<4096, 256>>>(q, n * hq * d, 1, 1.0f);
    fillRandom<<<4096, 256>>>(k, n * hkv * d, 2, 1.0f);
    fillRandom<<<4096, 256>>>(v, n * hkv * d, 3, 1.0f);
    CHECK(cudaDeviceSynchronize());
    std::vector<PlanCase> plans;
    plans.push_back({"dense", std::vector<float>(hq, 0), std::vector<float>(hq, 1), true});
    plans.push_back({"moa-uniform-0.5", std::vector<float>(hq, 0), std::vector<float>(hq, 0.5f), false});
    plans.push_back({"moa-uniform-0.25", std::vector<float>(hq, 0), std::vector<float>(hq, 0.25f), false});
    {
      // Mixed plan: per KV group, heads with spans 1024 + {1, 1/2, 1/4, 1/8}·n — one launch, four span sizes.
      PlanCase mixed{"moa-mixed", std::vector<float>(hq, 1024), std::vector<float>(hq), false};
      const float betas[4] = {1.0f, 0.5f, 0.25f, 0.125f};
      for (int h = 0; h < hq; ++h) mixed.beta[h] = betas[h % 4];
      plans.push_back(mixed);
    }
    const int64_t cu[2] = {0, n};
    const int32_t cuSeqlens[2] = {0, static_cast<int32_t>(n)};
    (void)cu;
    for (const PlanCase& plan : plans) {
      MaskRule mask;
      mask.enabled = !plan.dense;
      mask.window = false;
      mask.alpha = plan.alpha.data();
      mask.beta = plan.beta.data();
      mask.blockSize = 64;
      mask.sinkTokens = 64;
      double kept = 0;
      for (int h = 0; h < hq; ++h) kept += keptEntries(plan.alpha[h], plan.beta[h], n, plan.dense);
      const double causal = static_cast<double>(n) * (n + 1) / 2.0 * hq;
      const double density = kept / causal;
      const double flops = 4.0 * d * kept;
      const int reps = n >= 131072 ? 3 : n >= 32768 ? 5 : 20;
      const double ms = medianMs(
          [&] {
            moa::cuda::attentionPrefill(out, q, k, v, DType::BF16, cuSeqlens, 1, {hq, hkv, d}, scale, mask);
          },
          1, reps);
      const double tflops = flops / (ms * 1e-3) / 1e12;
      std::printf("prefill n=%-7lld %-17s density %.3f  %9.3f ms  %6.1f TFLOP/s (kept entries)\n",
                  static_cast<long long>(n), plan.name.c_str(), density, ms, tflops);
      std::fprintf(json, "%s  {\"n\": %lld, \"plan\": \"%s\", \"density\": %.4f, \"ms\": %.4f, \"tflops\": %.2f}",
                   firstRow ? "" : ",\n", static_cast<long long>(n), plan.name.c_str(), density, ms, tflops);
      firstRow = false;
    }
    CHECK(cudaFree(q));
    CHECK(cudaFree(k));
    CHECK(cudaFree(v));
    CHECK(cudaFree(out));
  }
  std::fprintf(json, "\n],\n\"decode\": [\n");

  // ---- decode ----
  firstRow = true;
  std::vector<int> batches = quick ? std::vector<int>{1, 16} : std::vector<int>{1, 4, 16, 32, 64};
  std::vector<int64_t> contexts = quick ? std::vector<int64_t>{8192} : std::vector<int64_t>{8192, 32768, 131072};
  for (int64_t ctx : contexts) {
    for (int batch : batches) {
      for (int moaCase = 0; moaCase < 2; ++moaCase) {
        // Dense: one region of ctx entries per (sequence, KV head), no sink. MoA: sink 64 + ring ctx/2.
        const int64_t sink = moaCase ? 64 : 0;
        const int64_t ring = moaCase ? ctx / 2 : ctx;
        const int64_t perRegion = sink + ring;
        const int64_t entries = static_cast<int64_t>(batch) * hkv * perRegion;
        const size_t cacheBytes = static_cast<size_t>(entries) * d * 2;
        if (2 * cacheBytes > (size_t{56} << 30)) continue;
        __nv_bfloat16 *ck, *cv;
        float *qd, *od;
        CHECK(cudaMalloc(&ck, cacheBytes));
        CHECK(cudaMalloc(&cv, cacheBytes));
        CHECK(cudaMalloc(&qd, static_cast<size_t>(batch) * hq * d * 4));
        CHECK(cudaMalloc(&od, static_cast<size_t>(batch) * hq * d * 4));
        fillRandom<<<8192, 256>>>(ck, entries * d, 4, 1.0f);
        fillRandom<<<8192, 256>>>(cv, entries * d, 5, 1.0f);
        fillRandomF32<<<256, 256>>>(qd, static_cast<size_t>(batch) * hq * d, 6);
        CHECK(cudaDeviceSynchronize());
        std::vector<int32_t> ringCap(hkv, static_cast<int32_t>(ring));
        std::vector<int32_t> regionOffset(static_cast<size_t>(batch) * hkv);
        for (size_t r = 0; r < regionOffset.size(); ++r) regionOffset[r] = static_cast<int32_t>(r * perRegion);
        std::vector<int32_t> slots(batch);
        std::vector<int32_t> seqLens(batch, static_cast<int32_t>(ctx));
        for (int b = 0; b < batch; ++b) slots[b] = b;
        moa::cuda::KvCache cache{ck, cv, DType::BF16, entries, hkv, d, sink, ringCap.data(), regionOffset.data(), batch};
        // MoA: every head keeps sink + ~half the context (alpha 0, beta 0.5 under the window mask).
        std::vector<float> alpha(hq, 0.0f);
        std::vector<float> beta(hq, 0.5f);
        MaskRule mask;
        mask.enabled = moaCase != 0;
        mask.window = true;
        mask.alpha = alpha.data();
        mask.beta = beta.data();
        mask.blockSize = 64;
        mask.sinkTokens = 64;
        // Bytes the kernel must read: every cached K and V row it attends (sink + ring part in the window).
        const int64_t readPerRegion = moaCase ? std::min<int64_t>(perRegion, sink + moa::spanBlocks(0, 0.5f, ctx, 64) * 64) : ctx;
        const double bytes = static_cast<double>(batch) * hkv * readPerRegion * d * 2 * 2;
        const double ms = medianMs(
            [&] {
              moa::cuda::attentionDecode(od, qd, cache, slots.data(), seqLens.data(), batch, hq, scale, mask);
            },
            3, 20);
        const double gbps = bytes / (ms * 1e-3) / 1e9;
        std::printf("decode ctx=%-7lld batch=%-3d %-6s %8.3f ms  %6.0f GB/s\n", static_cast<long long>(ctx), batch,
                    moaCase ? "moa" : "dense", ms, gbps);
        std::fprintf(json, "%s  {\"context\": %lld, \"batch\": %d, \"plan\": \"%s\", \"bytes\": %.0f, \"ms\": %.4f, \"GBs\": %.1f}",
                     firstRow ? "" : ",\n", static_cast<long long>(ctx), batch, moaCase ? "moa-0.5" : "dense", bytes,
                     ms, gbps);
        firstRow = false;
        CHECK(cudaFree(ck));
        CHECK(cudaFree(cv));
        CHECK(cudaFree(qd));
        CHECK(cudaFree(od));
      }
    }
  }
  std::fprintf(json, "\n]}\n");
  std::fclose(json);
  return 0;
}
