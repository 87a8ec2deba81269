// attention: the softmax halves of causal self-attention (llm.c's attention.cuh, our
// numerics). The launcher (src/kernels/attention.rs) sequences them with the strided-batched
// tensor-core GEMMs of gemm.cu, which read Q, K, V straight out of the (B*T, 3C) qkv buffer
// by strides, so no permute copies are made:
//
//   forward:   S = scale * Q K^T                   (B, NH, T, T) f32   gemm, alpha = scale
//              P = causal_softmax(S)               (B, NH, T, T) half  attention_softmax_forward_<h>
//              out[:, h*hs..] = P V                (B*T, C) half       gemm
//   backward:  dP = dout V^T                       (B, NH, T, T) f32   gemm
//              dS = P * (dP - D), D = sum P dP     (B, NH, T, T) half  attention_softmax_backward_<h>
//              dQ = scale dS K, dK = scale dS^T Q, dV = P^T dout       gemm, into dqkv
//
// The GEMMs skip what causality makes zero or unread (gemm.cu, GemmTriangle): S and dP
// tiles wholly above the diagonal, and the K ranges of P and dS beyond it.
//
// scale = 1 / sqrt(hs) is applied by the GEMMs, never here. Each row r of a (rows, T)
// matrix (rows = B * NH * T) is query position t = r % T, and only its columns j <= t are
// read; the causal mask is the loop bound, not a -inf fill, so entries of S above the
// diagonal may hold anything.
//
//   forward, row t:   m = max_{j<=t} S_j, e_j = expf(S_j - m), P_j = half(e_j / sum_{j<=t} e_j);
//                     P_j = 0 for j > t (stored: the P V GEMM runs over the full square)
//   backward, row t:  D = sum_{j<=t} float(P_j) * dP_j,
//                     dS_j = half(float(P_j) * (dP_j - D)) for j <= t, 0 above
//
// Precision: S and dP f32, P and dS the half type (f16 or bf16; one templated body,
// kernels `_f16` and `_bf16`), all arithmetic f32, one rounding at each store. exp is
// expf, the accurate function (2 ulp, argument reduced with a split log2(e)), not the
// __expf intrinsic (ex2.approx of a rounded product, error growing with |S - m|): the
// same choice, for the same reasons, as loss.cu's softmax (measured there). The division
// e_j / sum is IEEE division (div.rn.f32), as written above, not a multiply by 1/sum.
//
// Layout: one warp per row (8 rows per block of 256 threads); lane l handles columns
// l, l + 32, ... and the max and sums are warp shuffle trees: fixed order, deterministic,
// no shared memory. A row of T = 1024 costs each lane 32 elements per pass.

// ptx-targets: sm_75 sm_80

#include <stdint.h>

#include "half.cuh"

// ----------------------------------------------------------------------------
// kernels

#define ATTN_WARPS 8

__device__ __forceinline__ float attn_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float attn_warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// fmaxf ignores NaN, so a NaN score is carried by the sum instead (expf(NaN - m) is NaN)
// and poisons its row, as it would in PyTorch.
template <typename H>
__device__ __forceinline__ void attention_softmax_forward(const float* __restrict__ s, H* __restrict__ p, int64_t rows,
                                                          int64_t t) {
    const int64_t r = (int64_t)blockIdx.x * ATTN_WARPS + threadIdx.x / 32;
    if (r >= rows) return;
    const int lane = threadIdx.x % 32;
    const int64_t q = r % t;  // the query position: columns 0..=q are visible
    const float* sr = s + r * t;
    H* pr = p + r * t;
    float m = -INFINITY;
    for (int64_t j = lane; j <= q; j += 32) m = fmaxf(m, sr[j]);
    m = attn_warp_max(m);
    float sum = 0.0f;
    for (int64_t j = lane; j <= q; j += 32) sum += expf(sr[j] - m);
    sum = attn_warp_sum(sum);
    for (int64_t j = lane; j < t; j += 32) pr[j] = from_f32<H>(j <= q ? expf(sr[j] - m) / sum : 0.0f);
}

template <typename H>
__device__ __forceinline__ void attention_softmax_backward(const H* __restrict__ p, const float* __restrict__ dp,
                                                           H* __restrict__ ds, int64_t rows, int64_t t) {
    const int64_t r = (int64_t)blockIdx.x * ATTN_WARPS + threadIdx.x / 32;
    if (r >= rows) return;
    const int lane = threadIdx.x % 32;
    const int64_t q = r % t;
    const H* pr = p + r * t;
    const float* dpr = dp + r * t;
    H* dsr = ds + r * t;
    float d = 0.0f;
    for (int64_t j = lane; j <= q; j += 32) d += to_f32(pr[j]) * dpr[j];
    d = attn_warp_sum(d);
    for (int64_t j = lane; j < t; j += 32) dsr[j] = from_f32<H>(j <= q ? to_f32(pr[j]) * (dpr[j] - d) : 0.0f);
}

#define ATTENTION_KERNELS(h, H)                                                                                   \
    extern "C" __global__ void attention_softmax_forward_##h(const float* __restrict__ s, H* __restrict__ p,      \
                                                             int64_t rows, int64_t t) {                           \
        attention_softmax_forward(s, p, rows, t);                                                                 \
    }                                                                                                             \
    extern "C" __global__ void attention_softmax_backward_##h(const H* __restrict__ p, const float* __restrict__ dp, \
                                                              H* __restrict__ ds, int64_t rows, int64_t t) {      \
        attention_softmax_backward(p, dp, ds, rows, t);                                                           \
    }

ATTENTION_KERNELS(f16, __half)
ATTENTION_KERNELS(bf16, bf16_t)
