// cast: elementwise precision conversion over a flat range, for both half types H
// (f16, bf16; cuda/half.cuh).
//
//   cast_f32_f16:   y[i] = (f16) x[i]    round to nearest even; |x| >= 65520 gives +-inf
//                                         (as PyTorch's .half()); NaN stays NaN
//   cast_f32_bf16:  y[i] = (bf16) x[i]   round to nearest even (as PyTorch's .bfloat16());
//                                         overflows only past the f32 range; NaN stays NaN
//   cast_f16_f32, cast_bf16_f32:  y[i] = (f32) x[i]   exact
//
// Layout: contiguous 1-D ranges of n elements; x and y do not overlap.
// Bytes moved per element: 6 (read 4, write 2; or read 2, write 4).
// Each thread converts 4 elements per iteration: one 16-byte access on the f32 side and
// one 8-byte access on the half side, so the lanes of a warp touch one contiguous run of
// memory per instruction on both sides (every 32-byte sector they touch fully used; with
// 8 elements per thread, the f32 side's two 16-byte accesses were 32 bytes apart, and
// each instruction used half of every sector it touched: the emulator's cost model
// counted 60% coalescing). When either pointer is not 16-byte aligned (a view at an odd
// offset) the whole range takes the scalar path, and the last n % 4 elements always do.

// ptx-targets: sm_75 sm_80

#include <stdint.h>

#include "half.cuh"

// ----------------------------------------------------------------------------
// kernels

#define CAST_VEC 4

__device__ __forceinline__ bool aligned16(const void* a, const void* b) {
    return ((reinterpret_cast<uintptr_t>(a) | reinterpret_cast<uintptr_t>(b)) & 15) == 0;
}

template <typename H>
__device__ __forceinline__ void cast_to_half(const float* __restrict__ x, H* __restrict__ y, uint64_t n) {
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    const uint64_t tid = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    // Elements before `tail` go through the vector path (when aligned).
    const uint64_t tail = aligned16(x, y) ? n - n % CAST_VEC : 0;

    for (uint64_t v = tid; v < tail / CAST_VEC; v += stride) {
        const float4 a = reinterpret_cast<const float4*>(x)[v];
        reinterpret_cast<uint2*>(y)[v] = make_uint2(pack2<H>(a.x, a.y), pack2<H>(a.z, a.w));
    }
    for (uint64_t i = tail + tid; i < n; i += stride) {
        y[i] = from_f32<H>(x[i]);
    }
}

template <typename H>
__device__ __forceinline__ void cast_from_half(const H* __restrict__ x, float* __restrict__ y, uint64_t n) {
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    const uint64_t tid = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const uint64_t tail = aligned16(x, y) ? n - n % CAST_VEC : 0;

    for (uint64_t v = tid; v < tail / CAST_VEC; v += stride) {
        const uint2 in = reinterpret_cast<const uint2*>(x)[v];
        const float2 f0 = unpack2<H>(in.x);
        const float2 f1 = unpack2<H>(in.y);
        reinterpret_cast<float4*>(y)[v] = make_float4(f0.x, f0.y, f1.x, f1.y);
    }
    for (uint64_t i = tail + tid; i < n; i += stride) {
        y[i] = to_f32(x[i]);
    }
}

extern "C" __global__ void cast_f32_f16(const float* __restrict__ x, __half* __restrict__ y, uint64_t n) {
    cast_to_half(x, y, n);
}
extern "C" __global__ void cast_f16_f32(const __half* __restrict__ x, float* __restrict__ y, uint64_t n) {
    cast_from_half(x, y, n);
}
extern "C" __global__ void cast_f32_bf16(const float* __restrict__ x, bf16_t* __restrict__ y, uint64_t n) {
    cast_to_half(x, y, n);
}
extern "C" __global__ void cast_bf16_f32(const bf16_t* __restrict__ x, float* __restrict__ y, uint64_t n) {
    cast_from_half(x, y, n);
}
