// The scaled fp16 copies of half_scale.cuh: one launch takes max|x| of every job (atomicMax on the bits of
// non-negative floats, which order like unsigned integers), one launch writes the copies, each thread deriving
// s from the maximum itself.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "cuda/check.cuh"
#include "cuda/half_output.cuh"
#include "cuda/half_scale.cuh"
#include "cuda/scratch.cuh"
#include "cuda/widen.cuh"

namespace moa::cuda {
namespace {

constexpr int kMaxJobs = 4;
constexpr int kThreads = 256;

struct Jobs {
  HalfJob job[kMaxJobs];
  int count;
  int blocksPerJob;
  unsigned* maxBits;  // [kMaxJobs]
  float* scales;      // [kMaxJobs]
  float* alphaBeta;   // [2] or null
  float beta;
  const float* otherScale;  // the second GEMM operand's scale when it is not a job here (a pin), or null
};

__device__ __forceinline__ float load(const HalfJob& job, int64_t i) {
  switch (job.type) {
    case SourceType::BF16:
      return widen(static_cast<const __nv_bfloat16*>(job.src)[i]);
    case SourceType::F16:
      return widen(static_cast<const __half*>(job.src)[i]);
    default:
      return static_cast<const float*>(job.src)[i];
  }
}

// Eight elements from i on (i a multiple of 8, source aligned for it: see vectorised).
__device__ __forceinline__ void load8(const HalfJob& job, int64_t i, float (&v)[8]) {
  if (job.type == SourceType::F32) {
    const float4 a = *reinterpret_cast<const float4*>(static_cast<const float*>(job.src) + i);
    const float4 b = *reinterpret_cast<const float4*>(static_cast<const float*>(job.src) + i + 4);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
    return;
  }
  const uint4 raw = *reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(job.src) + i);
  const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int w = 0; w < 4; ++w) {
    if (job.type == SourceType::BF16) {
      v[2 * w] = __uint_as_float(words[w] << 16);
      v[2 * w + 1] = __uint_as_float(words[w] & 0xffff0000u);
    } else {
      const __half2 pair = *reinterpret_cast<const __half2*>(&words[w]);
      v[2 * w] = __low2float(pair);
      v[2 * w + 1] = __high2float(pair);
    }
  }
}

// Whether a job can go eight elements at a time: 16-byte aligned source (32 for fp32) and destination.
__device__ __forceinline__ bool vectorised(const HalfJob& job) {
  const uintptr_t align = job.type == SourceType::F32 ? 32 : 16;
  return reinterpret_cast<uintptr_t>(job.src) % align == 0 && reinterpret_cast<uintptr_t>(job.dst) % 16 == 0;
}

__device__ __forceinline__ float scaleFor(unsigned bits) { return halfScaleFor(bits); }

// This thread's elements of a job: groups of eight (`group(first, values)`) where the job is aligned for
// them, then one at a time (`one(index, value)`), grid-stride over the job's blocks.
template <typename Group, typename One>
__device__ __forceinline__ void walk(const Jobs& jobs, const HalfJob& job, Group group, One one) {
  const int64_t thread = (blockIdx.x % jobs.blocksPerJob) * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t threads = static_cast<int64_t>(jobs.blocksPerJob) * blockDim.x;
  int64_t tail = 0;
  if (vectorised(job)) {
    const int64_t groups = job.count / 8;
    for (int64_t g = thread; g < groups; g += threads) {
      float v[8];
      load8(job, g * 8, v);
      group(g * 8, v);
    }
    tail = groups * 8;
  }
  for (int64_t i = tail + thread; i < job.count; i += threads) one(i, load(job, i));
}

__global__ void maxKernel(Jobs jobs) {
  const int j = blockIdx.x / jobs.blocksPerJob;
  // The bits of |x|: NaN > inf > every finite value, so a NaN or inf tensor keeps s = 1 and passes through.
  unsigned m = 0;
  walk(
      jobs, jobs.job[j],
      [&](int64_t, const float (&v)[8]) {
#pragma unroll
        for (int e = 0; e < 8; ++e) m = max(m, magnitudeBits(v[e]));
      },
      [&](int64_t, float value) { m = max(m, magnitudeBits(value)); });
  warpMaxInto(m, jobs.maxBits + j);
}

__global__ void copyKernel(Jobs jobs) {
  const int j = blockIdx.x / jobs.blocksPerJob;
  const float s = scaleFor(jobs.maxBits[j]);
  auto* dst = static_cast<__half*>(jobs.job[j].dst);
  walk(
      jobs, jobs.job[j],
      [&](int64_t first, const float (&v)[8]) {
        uint4 out;
        uint32_t* words = reinterpret_cast<uint32_t*>(&out);
#pragma unroll
        for (int w = 0; w < 4; ++w) words[w] = packScaledHalves(v[2 * w], v[2 * w + 1], s);
        *reinterpret_cast<uint4*>(dst + first) = out;
      },
      [&](int64_t i, float value) { dst[i] = __float2half_rn(value * s); });
  if (blockIdx.x % jobs.blocksPerJob == 0 && threadIdx.x == 0) {
    jobs.scales[j] = s;
    if (j == 0 && jobs.alphaBeta != nullptr) {
      // With one job maxBits[1] = 0, whose scale is 1.
      const float other = jobs.otherScale != nullptr ? *jobs.otherScale : scaleFor(jobs.maxBits[1]);
      jobs.alphaBeta[0] = 1.0f / (s * other);
      jobs.alphaBeta[1] = jobs.beta;
    }
  }
}

// alpha = 1 / (s_x · s_w) and beta for a GEMM whose operands are both pinned.
__global__ void gemmScalarsKernel(float* alphaBeta, const float* xScale, const float* wScale, float beta) {
  alphaBeta[0] = 1.0f / (*xScale * (wScale != nullptr ? *wScale : 1.0f));
  alphaBeta[1] = beta;
}

}  // namespace

HalfScales toScaledHalves(const HalfJob* list, int count, float gemmBeta, const std::string& op,
                          const std::string& sizes, const float* otherScale) {
  if (count < 1 || count > kMaxJobs) throw std::runtime_error(op + ": toScaledHalves takes 1 to 4 tensors");
  // [0, 4): maxima, [4, 8): scales, [8, 10): alpha, beta. One fixed buffer: every op uses it in stream order.
  auto* base = static_cast<float*>(scratch(ScratchSlot::Scales, 16 * sizeof(float), op));
  Jobs jobs{};
  int64_t largest = 0;
  for (int j = 0; j < count; ++j) {
    jobs.job[j] = list[j];
    largest = std::max(largest, list[j].count);
  }
  jobs.count = count;
  jobs.maxBits = reinterpret_cast<unsigned*>(base);
  jobs.scales = base + 4;
  jobs.alphaBeta = gemmBeta >= 0.0f ? base + 8 : nullptr;
  jobs.beta = gemmBeta;
  jobs.otherScale = count == 1 ? otherScale : nullptr;
  // Enough blocks per job to fill the GPU with the largest one; small tensors leave some idle.
  jobs.blocksPerJob = static_cast<int>(std::min<int64_t>(
      std::max<int64_t>(1, (largest + kThreads * 32 - 1) / (kThreads * 32)), 4 * multiprocessorCount()));
  check(op, cudaMemsetAsync(base, 0, kMaxJobs * sizeof(unsigned), 0), sizes);
  const unsigned grid = static_cast<unsigned>(jobs.blocksPerJob * count);
  maxKernel<<<grid, kThreads>>>(jobs);
  checkLaunch(op, "scaling to f16 (maximum), " + sizes);
  copyKernel<<<grid, kThreads>>>(jobs);
  checkLaunch(op, "scaling to f16, " + sizes);
  return {jobs.scales, jobs.alphaBeta};
}

HalfGemmOperands scaledGemmOperands(const float* x, int64_t xCount, const void* w, bool halfWeight, int64_t wCount,
                                    float beta, const std::string& op, const std::string& sizes) {
  // An f16 weight is used as it is (s_w = 1): its values are already the checkpoint's, so a copy would only cost
  // a pass over it.
  const PinnedHalf xFound = findPinnedHalf(x, xCount);
  const PinnedHalf wFound = halfWeight ? PinnedHalf{} : findPinnedHalf(w, wCount);
  const PinnedHalf* xPin = xFound.half != nullptr ? &xFound : nullptr;
  const PinnedHalf* wPin = wFound.half != nullptr ? &wFound : nullptr;
  if (xPin == nullptr) requireWritten(x, xCount, op);
  const int64_t xSlots = xPin != nullptr ? 0 : (xCount + 7) / 8 * 8;  // keeps the weight's copy 16-byte aligned
  const int64_t wSlots = halfWeight || wPin != nullptr ? 0 : wCount;
  auto* buffer = xSlots + wSlots == 0 ? nullptr
                                      : static_cast<__half*>(scratch(ScratchSlot::Half,
                                                                     static_cast<size_t>(xSlots + wSlots) * 2, op));
  const void* xHalf = xPin != nullptr ? xPin->half : buffer;
  const void* wHalf = halfWeight ? w : wPin != nullptr ? wPin->half : buffer + xSlots;
  HalfJob jobs[2];
  int count = 0;
  if (xPin == nullptr) jobs[count++] = {x, buffer, xCount, SourceType::F32};
  if (wSlots > 0) jobs[count++] = {w, buffer + xSlots, wCount, SourceType::BF16};
  if (count == 2) return {xHalf, wHalf, toScaledHalves(jobs, 2, beta, op, sizes).alphaBeta};
  if (count == 1) {
    const float* other = xPin != nullptr ? xPin->scale : wPin != nullptr ? wPin->scale : nullptr;
    return {xHalf, wHalf, toScaledHalves(jobs, 1, beta, op, sizes, other).alphaBeta};
  }
  auto* alphaBeta = static_cast<float*>(scratch(ScratchSlot::Scales, 16 * sizeof(float), op)) + 8;
  gemmScalarsKernel<<<1, 1>>>(alphaBeta, xPin->scale, wPin != nullptr ? wPin->scale : nullptr, beta);
  checkLaunch(op, "GEMM scales, " + sizes);
  return {xHalf, wHalf, alphaBeta};
}

}  // namespace moa::cuda
