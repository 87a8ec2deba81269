// loss: the losses of a training step in fp32 from half-precision outputs (f16 or bf16:
// every kernel below exists as `_f16` and `_bf16`, one templated body), and their gradients with
// the loss-scale seed fused in (DESIGN.md, step 4).
//
//   cross_entropy_forward_f16:   losses[r] = logsumexp(z[r, :]) - z[r, label[r]]
//   cross_entropy_backward_f16:  dz[r, c] = (f16) (seed * (softmax(z[r, :])[c] - [c == label[r]]))
//   mse_forward_f16:             losses[r] = sum_c (p[r, c] - t[r, c])^2
//   mse_backward_f16:            dp[r, c] = (f16) (seed * 2 (p[r, c] - t[r, c]))
//
// seed = factor * scale[0] (scale may be null: 1). The caller passes factor = 1 / rows for
// the mean cross-entropy and 1 / (rows * cols) for the mean squared error, divided again by
// the number of micro-batches; the mean itself is reduce.cu's sum_f32 over `losses`.
// Everything is computed in f32 and rounded once at the store. Labels are i32 and are
// checked against cols on the host; a label outside [0, cols) still gives a NaN loss and
// NaN gradients here rather than an out-of-bounds read, so found_inf skips the step.
//
// Layout: z, p, t, dz, dp are rows x cols row-major f16. One warp per row (8 rows per block
// of 256 threads); the row max and sums are warp shuffles, so no shared memory is needed.
//
// exp is expf, the function PyTorch's softmax / log_softmax kernels call (issue 14,
// item 8), not the __expf intrinsic: __expf compiles to ex2.approx.f32 of x * log2(e) with
// the product rounded to f32, so its error grows with |x| (ex2.approx: 2 ulp, PTX ISA;
// the rounded product: up to about 1.2 |x| ulp more), while expf splits log2(e) to reduce
// the argument and stays within 2 ulp (CUDA C++ Programming Guide). Measured on the CPU
// (tests/loss.rs, cpu_expf_against_fast_expf; ex2.approx and expf modelled as correctly
// rounded, and again moved by +-2 ulp) over logits uniform in [-30, 30] rounded to f16,
// so exp arguments in [-60, 0], 10, 100 and 1000 classes, 200000 logits each:
//   loss - f64 reference, max:       expf 3.0e-6, __expf 3.0e-6 (+-2 ulp: 3.2e-6 both),
//                                    dominated by the final f32 additions (u |m| = 1.8e-6);
//   loss, __expf against expf, max:  3.8e-6, one f32 ulp at 32..64 (that addition);
//   softmax, max relative error:     expf 2.7e-7, __expf 1.0e-6;
//   f16 gradients that change:       2 to 10 in 200000.
// So the loss does not depend on the choice; expf gives PyTorch's exp and a bound that does
// not grow with the logits. Cost: about 10 f32 instructions per logit instead of 2, in
// kernels that move a few bytes per logit; not yet timed on a GPU.
//
// Error bound, to first order in u = 2^-24 (tests/loss.rs, loss_bound), with
// s = sum_c exp(z[c] - m) in [1, cols], m the row max and depth = ceil(cols / 32) + 5 the
// additions on the longest path of the sum:
//   |loss - loss_f64| <= 1.01 u (4 + ln cols + depth + 2 |ln s| + |ln s + m| + |loss|)
// (exp 2 ulp, the rounded arguments z - m, the sum, logf 1 ulp, the two additions; 1% for
// the second-order terms). The CPU reference's sequential sum has depth cols - 1.

// ptx-targets: sm_75 sm_80

#include <stdint.h>

#include "half.cuh"

// ----------------------------------------------------------------------------
// kernels

#define LOSS_WARPS 8

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// max and sum of exp(z - max) over one row, in every lane. fmaxf ignores NaN, so a NaN
// logit is carried by the sum instead (exp(NaN - max) is NaN).
template <typename H>
__device__ __forceinline__ void row_softmax_stats(const H* z, int64_t cols, float* max_out, float* sum_out) {
    const int lane = threadIdx.x % 32;
    float m = -INFINITY;
    for (int64_t c = lane; c < cols; c += 32) m = fmaxf(m, to_f32(z[c]));
    m = warp_max(m);
    float s = 0.0f;
    for (int64_t c = lane; c < cols; c += 32) s += expf(to_f32(z[c]) - m);
    *max_out = m;
    *sum_out = warp_sum(s);
}

template <typename H>
__device__ __forceinline__ void cross_entropy_forward(const H* __restrict__ z, const int32_t* __restrict__ labels,
                                                     float* __restrict__ losses, int64_t rows, int64_t cols) {
    const int64_t r = (int64_t)blockIdx.x * LOSS_WARPS + threadIdx.x / 32;
    if (r >= rows) return;
    const H* zr = z + r * cols;
    float m, s;
    row_softmax_stats(zr, cols, &m, &s);
    if (threadIdx.x % 32 == 0) {
        const int32_t y = labels[r];
        losses[r] = (y >= 0 && y < cols) ? logf(s) + m - to_f32(zr[y]) : NAN;
    }
}

template <typename H>
__device__ __forceinline__ void cross_entropy_backward(const H* __restrict__ z, const int32_t* __restrict__ labels,
                                                      const float* __restrict__ scale, H* __restrict__ dz,
                                                      int64_t rows, int64_t cols, float factor) {
    const int64_t r = (int64_t)blockIdx.x * LOSS_WARPS + threadIdx.x / 32;
    if (r >= rows) return;
    const H* zr = z + r * cols;
    float m, s;
    row_softmax_stats(zr, cols, &m, &s);
    const float seed = factor * (scale != nullptr ? *scale : 1.0f);
    const int32_t y = labels[r];
    const bool valid = y >= 0 && y < cols;
    const float inv = 1.0f / s;
    for (int64_t c = threadIdx.x % 32; c < cols; c += 32) {
        const float p = expf(to_f32(zr[c]) - m) * inv;
        const float g = valid ? seed * (p - (c == y ? 1.0f : 0.0f)) : NAN;
        dz[r * cols + c] = from_f32<H>(g);
    }
}

template <typename H>
__device__ __forceinline__ void mse_forward(const H* __restrict__ p, const H* __restrict__ t,
                                           float* __restrict__ losses, int64_t rows, int64_t cols) {
    const int64_t r = (int64_t)blockIdx.x * LOSS_WARPS + threadIdx.x / 32;
    if (r >= rows) return;
    float s = 0.0f;
    for (int64_t c = threadIdx.x % 32; c < cols; c += 32) {
        const float d = to_f32(p[r * cols + c]) - to_f32(t[r * cols + c]);
        s += d * d;
    }
    s = warp_sum(s);
    if (threadIdx.x % 32 == 0) losses[r] = s;
}

template <typename H>
__device__ __forceinline__ void mse_backward(const H* __restrict__ p, const H* __restrict__ t,
                                            const float* __restrict__ scale, H* __restrict__ dp, int64_t rows,
                                            int64_t cols, float factor) {
    const int64_t r = (int64_t)blockIdx.x * LOSS_WARPS + threadIdx.x / 32;
    if (r >= rows) return;
    const float seed = factor * (scale != nullptr ? *scale : 1.0f);
    for (int64_t c = threadIdx.x % 32; c < cols; c += 32) {
        const int64_t i = r * cols + c;
        dp[i] = from_f32<H>(seed * 2.0f * (to_f32(p[i]) - to_f32(t[i])));
    }
}

#define LOSS_KERNELS(h, H)                                                                                      \
    extern "C" __global__ void cross_entropy_forward_##h(const H* __restrict__ z, const int32_t* __restrict__ labels, \
                                                         float* __restrict__ losses, int64_t rows, int64_t cols) {  \
        cross_entropy_forward(z, labels, losses, rows, cols);                                                   \
    }                                                                                                           \
    extern "C" __global__ void cross_entropy_backward_##h(const H* __restrict__ z,                              \
                                                          const int32_t* __restrict__ labels,                   \
                                                          const float* __restrict__ scale, H* __restrict__ dz,  \
                                                          int64_t rows, int64_t cols, float factor) {           \
        cross_entropy_backward(z, labels, scale, dz, rows, cols, factor);                                       \
    }                                                                                                           \
    extern "C" __global__ void mse_forward_##h(const H* __restrict__ p, const H* __restrict__ t,                \
                                               float* __restrict__ losses, int64_t rows, int64_t cols) {        \
        mse_forward(p, t, losses, rows, cols);                                                                  \
    }                                                                                                           \
    extern "C" __global__ void mse_backward_##h(const H* __restrict__ p, const H* __restrict__ t,               \
                                                const float* __restrict__ scale, H* __restrict__ dp, int64_t rows, \
                                                int64_t cols, float factor) {                                   \
        mse_backward(p, t, scale, dp, rows, cols, factor);                                                      \
    }

LOSS_KERNELS(f16, __half)
LOSS_KERNELS(bf16, bf16_t)
