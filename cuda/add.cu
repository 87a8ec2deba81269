// add: elementwise sum of two half ranges (f16 or bf16), for residual connections and for the autograd's
// gradient accumulation (a value used twice receives the sum of both gradients).
//
//   add_f16, add_bf16:  y[i] = (h) ((f32) a[i] + (f32) b[i])
//
// y may be the same range as a (accumulation, acc += x): each element is read and written
// by the same thread, so a and y carry no __restrict__. b never overlaps y.
// Bytes moved per element: 6. 16-byte loads and stores when every pointer is 16-byte
// aligned, 8 elements per thread per iteration; the last n % 8 take the scalar path.

// ptx-targets: sm_75 sm_80

#include <stdint.h>

#include "half.cuh"

// ----------------------------------------------------------------------------
// kernels

#define ADD_VEC 8

template <typename H>
__device__ __forceinline__ void add_range(const H* a, const H* __restrict__ b, H* y, uint64_t n) {
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    const uint64_t tid = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const bool aligned = ((reinterpret_cast<uintptr_t>(a) | reinterpret_cast<uintptr_t>(b) |
                           reinterpret_cast<uintptr_t>(y)) & 15) == 0;
    const uint64_t tail = aligned ? n - n % ADD_VEC : 0;
    for (uint64_t v = tid; v < tail / ADD_VEC; v += stride) {
        Half8 x0, x1, out;
        x0.u = reinterpret_cast<const uint4*>(a)[v];
        x1.u = reinterpret_cast<const uint4*>(b)[v];
#pragma unroll
        for (int k = 0; k < ADD_VEC / 2; k++) {
            const float2 f0 = unpack2<H>(x0.w[k]), f1 = unpack2<H>(x1.w[k]);
            out.w[k] = pack2<H>(f0.x + f1.x, f0.y + f1.y);
        }
        reinterpret_cast<uint4*>(y)[v] = out.u;
    }
    for (uint64_t i = tail + tid; i < n; i += stride) y[i] = from_f32<H>(to_f32(a[i]) + to_f32(b[i]));
}

extern "C" __global__ void add_f16(const __half* a, const __half* __restrict__ b, __half* y, uint64_t n) {
    add_range(a, b, y, n);
}
extern "C" __global__ void add_bf16(const bf16_t* a, const bf16_t* __restrict__ b, bf16_t* y, uint64_t n) {
    add_range(a, b, y, n);
}
