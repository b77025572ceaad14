// Run-time choice of the instruction set for the hot loops. The addon is compiled for a portable baseline
// (x86-64-v2: SSE4.2) and never with -march=native, since the binary may travel. Hot loops are written once as
// always-inline templates and instantiated inside functions marked with wider targets (AVX2+FMA, AVX-512); the
// op picks the best one the CPU supports when it runs.
#pragma once

#define MOA_INLINE inline __attribute__((always_inline))

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MOA_X86_DISPATCH 1
#define MOA_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define MOA_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx2,fma,prefer-vector-width=512")))
#endif

namespace moa {

enum class Isa { Portable, Avx2, Avx512 };

inline Isa bestIsa() {
#ifdef MOA_X86_DISPATCH
  static const Isa isa = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")) return Isa::Avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::Avx2;
    return Isa::Portable;
  }();
  return isa;
#else
  return Isa::Portable;
#endif
}

}  // namespace moa

#include <cstdint>
#include <cstring>

namespace moa {

// 16 floats as a GCC/Clang vector: one zmm (AVX-512), two ymm (AVX2) or four xmm (SSE) registers, so one
// source serves every target the hot loops are compiled for.
typedef float Vec16 __attribute__((vector_size(16 * sizeof(float))));
typedef int32_t Int16x __attribute__((vector_size(16 * sizeof(int32_t))));

MOA_INLINE Vec16 load16(const float* p) {
  Vec16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

MOA_INLINE void store16(float* p, Vec16 v) { std::memcpy(p, &v, sizeof v); }

// e^x for 16 lanes (Cephes expf: range reduction by ln 2, degree-6 polynomial; relative error < 2e-7 for
// x in [−87, 88]). Lanes below −87 give 0, like a masked score.
MOA_INLINE Vec16 exp16(Vec16 x) {
  const Vec16 below = x < -87.0f ? Vec16{} + 1.0f : Vec16{};
  x = x < -87.0f ? Vec16{} - 87.0f : x;
  x = x > 88.0f ? Vec16{} + 88.0f : x;
  // k = round(x / ln 2) as floor(x·log2(e) + 0.5).
  const Vec16 t = x * 1.44269504088896341f + 0.5f;
  Vec16 k = __builtin_convertvector(__builtin_convertvector(t, Int16x), Vec16);
  k = k > t ? k - 1.0f : k;
  const Vec16 r = x - k * 0.693359375f - k * -2.12194440e-4f;
  Vec16 p = Vec16{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const Int16x bits = (__builtin_convertvector(k, Int16x) + 127) << 23;
  Vec16 scale;
  std::memcpy(&scale, &bits, sizeof scale);
  const Vec16 result = p * scale;
  return below != 0.0f ? Vec16{} : result;
}

}  // namespace moa
