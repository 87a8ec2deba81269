// add: elementwise sum of two f16 ranges, for residual connections and for the autograd's
// gradient accumulation (a value used twice receives the sum of both gradients).
//
//   add_f16:  y[i] = (f16) ((f32) a[i] + (f32) b[i])
//
// y may be the same range as a (accumulation, acc += x): each element is read and written
// by the same thread, so a and y carry no __restrict__. b never overlaps y.
// Bytes moved per element: 6. 16-byte loads and stores when every pointer is 16-byte
// aligned, 8 elements per thread per iteration; the last n % 8 take the scalar path.

// ptx-targets: sm_75

#include <cuda_fp16.h>
#include <stdint.h>

// ----------------------------------------------------------------------------
// kernels

#define ADD_VEC 8

union AddHalf8 {
    uint4 u;
    __half h[ADD_VEC];
};

extern "C" __global__ void add_f16(const __half* a, const __half* __restrict__ b, __half* y, uint64_t n) {
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    const uint64_t tid = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const bool aligned = ((reinterpret_cast<uintptr_t>(a) | reinterpret_cast<uintptr_t>(b) |
                           reinterpret_cast<uintptr_t>(y)) & 15) == 0;
    const uint64_t tail = aligned ? n - n % ADD_VEC : 0;
    for (uint64_t v = tid; v < tail / ADD_VEC; v += stride) {
        AddHalf8 x0, x1, out;
        x0.u = reinterpret_cast<const uint4*>(a)[v];
        x1.u = reinterpret_cast<const uint4*>(b)[v];
#pragma unroll
        for (int j = 0; j < ADD_VEC; j++) out.h[j] = __float2half_rn(__half2float(x0.h[j]) + __half2float(x1.h[j]));
        reinterpret_cast<uint4*>(y)[v] = out.u;
    }
    for (uint64_t i = tail + tid; i < n; i += stride) y[i] = __float2half_rn(__half2float(a[i]) + __half2float(b[i]));
}
