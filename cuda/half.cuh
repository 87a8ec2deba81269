// half: the two working half types, f16 (__half) and bf16 (__nv_bfloat16), behind one set
// of overloads, so every kernel family is written once with the half type as a template
// parameter (DESIGN.md, "Two half types") and instantiated under two names, `<family>_f16`
// and `<family>_bf16`.
//
// Conversions round to nearest even (cvt.rn); NaN stays NaN; f32 -> f16 overflows to +-inf
// at |x| >= 65520, f32 -> bf16 only past the f32 range bf16 shares. On sm_80 and newer the
// bf16 conversions are single cvt instructions; in sm_75 PTX cuda_bf16.h does the same
// rounding with integer instructions, so the sm_75 variants of the elementwise kernels are
// correct (if slower) on every GPU and the files that carry bf16 kernels also build an
// sm_80 variant.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

typedef __nv_bfloat16 bf16_t;

__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(bf16_t x) { return __bfloat162float(x); }

template <typename H> __device__ H from_f32(float x);
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ bf16_t from_f32<bf16_t>(float x) { return __float2bfloat16_rn(x); }

// Two values in one 32-bit word, element 0 in the low half (memory order).
__device__ __forceinline__ uint32_t pack2(float a, float b, __half) {
    const __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<const uint32_t*>(&h);
}
__device__ __forceinline__ uint32_t pack2(float a, float b, bf16_t) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<const uint32_t*>(&h);
}
template <typename H> __device__ __forceinline__ uint32_t pack2(float a, float b) { return pack2(a, b, H()); }

__device__ __forceinline__ float2 unpack2(uint32_t w, __half) {
    return __half22float2(*reinterpret_cast<const __half2*>(&w));
}
__device__ __forceinline__ float2 unpack2(uint32_t w, bf16_t) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&w));
}
template <typename H> __device__ __forceinline__ float2 unpack2(uint32_t w) { return unpack2(w, H()); }

// 8 halves in one 16-byte access; `w[k]` holds elements 2k (low) and 2k + 1 (high).
union Half8 {
    uint4 u;
    uint32_t w[4];
};

template <typename H> __device__ __forceinline__ float half8_get(const Half8& v, int j) {
    const float2 f = unpack2<H>(v.w[j / 2]);
    return (j & 1) ? f.y : f.x;
}
