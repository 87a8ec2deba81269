// activation: elementwise activation and its derivative, for the autograd ops that are
// not fused into a GEMM epilogue and for every linear layer's backward.
//
//   activation_forward_<h>:   y[i]  = (h) act((f32) x[i])
//   activation_backward_<h>:  dx[i] = (h) grad(pre[i], dy[i])          in f32, rounded once
// for h = f16 and bf16 (cuda/half.cuh): one body, two instantiations.
//
// act: 0 none, 1 ReLU, 2 GELU (tanh form, PyTorch's approximate='tanh'), the same codes
// and the same formula as the GEMM epilogue (cuda/gemm.cu), so the derivative is taken at
// exactly the pre-activation the forward used.
//   none: grad(x, dy) = dy
//   ReLU: grad(x, dy) = x <= 0 ? 0 : dy        a select, not dy * relu'(x)
//   GELU: grad(x, dy) = dy * GELU'(x),
//         GELU'(x) = 0.5 (1 + t) + 0.5 x (1 - t^2) k0 (1 + 3 k1 x^2),  t = tanh(k0 (x + k1 x^3))
//
// Non-finite values (issue 14, item 7). ReLU backward is PyTorch's threshold_backward
// (grad_input = x <= threshold ? 0 : grad, threshold 0), not the product dy * relu'(x):
//  - an inf or NaN dy at a dead unit (x <= 0, ReLU'(0) = 0 included) gives 0, where the
//    product gives inf * 0 = NaN. The choice decides which steps are skipped: an fp16
//    input gradient that overflows only at dead units reaches no parameter's gradient,
//    so with the select the step goes on (as in PyTorch AMP), while the product would
//    turn it into NaN, set found_inf and skip a step PyTorch takes. We follow PyTorch: the
//    output does not depend on x at a dead unit, so 0 is the exact gradient there, and a
//    run then skips the same steps as its PyTorch twin. A live unit (x > 0) passes dy
//    through, inf and NaN included, so those still reach the weight gradients.
//  - NaN x: the comparison x <= 0 is false, so dy passes through (as in PyTorch, whose
//    relu keeps NaN in the forward as well). A NaN pre-activation has already made the
//    forward output NaN, so the loss and the gradients are NaN and the step is skipped.
// GELU keeps the product (as PyTorch's gelu_backward does): a non-finite dy always gives a
// non-finite dx (inf * GELU'(x) is +-inf, or NaN where GELU'(x) is 0, which in f32 it is
// for x below about -5.2), and an inf or NaN x gives NaN (inf * 0 and NaN propagate in
// GELU'), so a non-finite value anywhere through a GELU skips the step.
//
// Layout: contiguous 1-D ranges of n elements; outputs do not overlap inputs.
// Bytes moved per element: forward 4, backward 6. Each thread handles 8 elements per
// iteration with 16-byte loads and stores when every pointer is 16-byte aligned; the last
// n % 8 elements (and every element of an unaligned range) take the scalar path.

// ptx-targets: sm_75 sm_80

#include <stdint.h>

#include "half.cuh"

// ----------------------------------------------------------------------------
// kernels

#define ACT_VEC 8

enum ActKind : int32_t { ACT_NONE = 0, ACT_RELU = 1, ACT_GELU = 2 };

__device__ __forceinline__ float act_forward(float x, int32_t act) {
    const float k0 = 0.7978845608f, k1 = 0.044715f;
    if (act == ACT_RELU) return x < 0.0f ? 0.0f : x;  // NaN passes through, as torch.relu
    if (act == ACT_GELU) return 0.5f * x * (1.0f + tanhf(k0 * (x + k1 * x * x * x)));
    return x;
}

// The gradient of act at x given the incoming gradient dy (the header's grad(x, dy)).
__device__ __forceinline__ float act_backward(float x, float dy, int32_t act) {
    const float k0 = 0.7978845608f, k1 = 0.044715f;
    if (act == ACT_RELU) return x <= 0.0f ? 0.0f : dy;  // threshold_backward: no inf * 0
    if (act == ACT_GELU) {
        const float t = tanhf(k0 * (x + k1 * x * x * x));
        return dy * (0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * k0 * (1.0f + 3.0f * k1 * x * x));
    }
    return dy;
}

__device__ __forceinline__ bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

template <typename H>
__device__ __forceinline__ void activation_forward(const H* __restrict__ x, H* __restrict__ y, uint64_t n,
                                                   int32_t act) {
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    const uint64_t tid = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const uint64_t tail = aligned16(x) && aligned16(y) ? n - n % ACT_VEC : 0;
    for (uint64_t v = tid; v < tail / ACT_VEC; v += stride) {
        Half8 in, out;
        in.u = reinterpret_cast<const uint4*>(x)[v];
#pragma unroll
        for (int k = 0; k < ACT_VEC / 2; k++) {
            const float2 f = unpack2<H>(in.w[k]);
            out.w[k] = pack2<H>(act_forward(f.x, act), act_forward(f.y, act));
        }
        reinterpret_cast<uint4*>(y)[v] = out.u;
    }
    for (uint64_t i = tail + tid; i < n; i += stride) y[i] = from_f32<H>(act_forward(to_f32(x[i]), act));
}

template <typename H>
__device__ __forceinline__ void activation_backward(const H* __restrict__ pre, const H* __restrict__ dy,
                                                    H* __restrict__ dx, uint64_t n, int32_t act) {
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    const uint64_t tid = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const uint64_t tail = aligned16(pre) && aligned16(dy) && aligned16(dx) ? n - n % ACT_VEC : 0;
    for (uint64_t v = tid; v < tail / ACT_VEC; v += stride) {
        Half8 p, g, out;
        p.u = reinterpret_cast<const uint4*>(pre)[v];
        g.u = reinterpret_cast<const uint4*>(dy)[v];
#pragma unroll
        for (int k = 0; k < ACT_VEC / 2; k++) {
            const float2 x = unpack2<H>(p.w[k]), d = unpack2<H>(g.w[k]);
            out.w[k] = pack2<H>(act_backward(x.x, d.x, act), act_backward(x.y, d.y, act));
        }
        reinterpret_cast<uint4*>(dx)[v] = out.u;
    }
    for (uint64_t i = tail + tid; i < n; i += stride)
        dx[i] = from_f32<H>(act_backward(to_f32(pre[i]), to_f32(dy[i]), act));
}

#define ACTIVATION_KERNELS(h, H)                                                                               \
    extern "C" __global__ void activation_forward_##h(const H* __restrict__ x, H* __restrict__ y, uint64_t n,  \
                                                      int32_t act) {                                           \
        activation_forward(x, y, n, act);                                                                      \
    }                                                                                                          \
    extern "C" __global__ void activation_backward_##h(const H* __restrict__ pre, const H* __restrict__ dy,    \
                                                       H* __restrict__ dx, uint64_t n, int32_t act) {          \
        activation_backward(pre, dy, dx, n, act);                                                              \
    }

ACTIVATION_KERNELS(f16, __half)
ACTIVATION_KERNELS(bf16, bf16_t)
