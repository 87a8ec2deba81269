// layernorm: the fused residual add + layer normalisation of a transformer block, in f16 or
// bf16 (every half kernel below exists as `_f16` and `_bf16`, one templated body), with f32
// statistics, and its backward; the gamma/beta gradients go into the f32 gradient arena,
// deterministic and without atomics.
//
//   layernorm_forward_<h>:   r = (h) (x + y)                  (only with y; without it r is x)
//                            mean = sum_c r / C,  var = sum_c (r - mean)^2 / C   (two passes)
//                            rstd = 1 / sqrt(var + eps)
//                            out[c] = (h) ((r[c] - mean) * rstd * gamma[c] + beta[c])
//   layernorm_backward_<h>:  n = (r - mean) * rstd,  g = gamma * dh
//                            dr = (h) (dres + rstd * (g - mean_c(g) - n * mean_c(g n)))
//                            (dres only when given; dr may be dres itself: in place)
//   layernorm_dparams_partial_<h>, layernorm_dparams_total:
//                            dgamma[c] += sum_rows dh * n,  dbeta[c] += sum_rows dh
//                            *found_inf = 1 if any value stored is inf or NaN (optional; sticky)
//
// Layouts, row-major: x, y, r, out, dh, dres, dr (rows, C) half; gamma, beta (C) half (the
// working copy); mean, rstd (rows) f32; dgamma, dbeta (C) f32 (the arena; += accumulates
// micro-batches). Every operand is converted to f32 and all the arithmetic is f32; the
// statistics are computed from r as stored (rounded to the half type).
//
// Each f32 operation above is one IEEE operation rounded to nearest, written with the _rn
// intrinsics (__fadd_rn, __fmul_rn, __fdiv_rn, __fsqrt_rn, __frcp_rn), which nvcc never
// contracts into an fma and never replaces by an approximation, whatever the flags: the
// expressions are evaluated exactly as written left to right, e.g.
// ((r - mean) * rstd) * gamma + beta, rstd * ((g - mean_g) - n * mean_gn). sqrt is sqrt.rn
// and 1/x is rcp.rn, both correctly rounded (not the .approx forms of rsqrtf or
// __fdividef). A reference that does the same operations differs only through the order of
// the row sums below.
//
// Forward and backward: one warp per row, LN_WARPS rows per block. Lane l owns the groups of
// 8 adjacent columns l, l + 32, l + 64, ... (16-byte loads and stores when C % 8 == 0 and
// every pointer is 16-byte aligned; the same columns one element at a time otherwise), adds
// its columns in ascending order, and the 32 lane sums are combined by an xor butterfly, which
// gives every lane the same bits. Both paths therefore add in the same order and give the
// same bits. Rows are read three times (forward) or twice (backward); r, written by the
// same lane in the forward's first pass, is read back by that lane only.
//
// Parameter gradients, two launches in a fixed order (so the same inputs give the same bits
// on any GPU: nothing depends on the SM count):
//   partial: block (k, j) of 32 x 8 threads owns columns 32 j .. 32 j + 31 of the row chunk
//            k (rows 128 k .. 128 k + 127); thread (x, y) adds rows y, y + 8, ... of its
//            chunk in ascending order, then thread (x, 0) adds the 8 partial sums y = 0..7 in
//            order and stores them to scratch[k, c] (dgamma's) and scratch[chunks + k, c]
//            (dbeta's). scratch is f32 (2 chunks, C), chunks = ceil(rows / 128).
//   total:   thread c adds scratch[k, c] over k = 0 .. chunks - 1 in order, from 0, and adds
//            that once to dgamma[c] (dbeta likewise).

// ptx-targets: sm_75 sm_80

#include <stdint.h>

#include "half.cuh"

// ----------------------------------------------------------------------------
// kernels

#define LN_WARPS 8
#define LN_VEC 8
#define LN_DP_COLS 32
#define LN_DP_ROWS 8
#define LN_CHUNK_ROWS 128
#define LN_TOTAL_THREADS 256

__device__ __forceinline__ bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o /= 2) v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// The 8 columns c0 .. c0 + 7 of a row as f32; columns past C read as 0 (and are never added).
template <typename H> __device__ __forceinline__ void load8(const H* p, int64_t c0, int64_t C, bool vec, float v[8]) {
    if (vec) {
        Half8 h;
        h.u = *reinterpret_cast<const uint4*>(p + c0);
#pragma unroll
        for (int e = 0; e < LN_VEC; e++) v[e] = half8_get<H>(h, e);
    } else {
#pragma unroll
        for (int e = 0; e < LN_VEC; e++) v[e] = c0 + e < C ? to_f32(p[c0 + e]) : 0.0f;
    }
}

template <typename H> __device__ __forceinline__ void store8(H* p, int64_t c0, int64_t C, bool vec, const float v[8]) {
    if (vec) {
        Half8 h;
#pragma unroll
        for (int k = 0; k < LN_VEC / 2; k++) h.w[k] = pack2<H>(v[2 * k], v[2 * k + 1]);
        *reinterpret_cast<uint4*>(p + c0) = h.u;
    } else {
#pragma unroll
        for (int e = 0; e < LN_VEC; e++) {
            if (c0 + e < C) p[c0 + e] = from_f32<H>(v[e]);
        }
    }
}

template <typename H>
__device__ __forceinline__ void layernorm_forward(const H* __restrict__ x, const H* __restrict__ y,
                                                  const H* __restrict__ gamma, const H* __restrict__ beta, H* r,
                                                  H* __restrict__ out, float* __restrict__ mean,
                                                  float* __restrict__ rstd, int64_t rows, int64_t C, float eps) {
    const int64_t row = (int64_t)blockIdx.x * LN_WARPS + threadIdx.x / 32;
    if (row >= rows) return;  // the whole warp: the shuffles below see all 32 lanes
    const int lane = threadIdx.x % 32;
    const bool vec = C % LN_VEC == 0 && aligned16(x) && aligned16(y) && aligned16(gamma) && aligned16(beta) &&
                     aligned16(r) && aligned16(out);
    const int64_t off = row * C;
    const H* src = y != nullptr ? r + off : x + off;
    const float fc = (float)C;

    float s = 0.0f;
    for (int64_t c0 = (int64_t)lane * LN_VEC; c0 < C; c0 += 32 * LN_VEC) {
        float v[LN_VEC];
        load8(x + off, c0, C, vec, v);
        if (y != nullptr) {
            float w[LN_VEC];
            load8(y + off, c0, C, vec, w);
#pragma unroll
            for (int e = 0; e < LN_VEC; e++) v[e] = to_f32(from_f32<H>(__fadd_rn(v[e], w[e])));
            store8(r + off, c0, C, vec, v);
        }
#pragma unroll
        for (int e = 0; e < LN_VEC; e++) {
            if (c0 + e < C) s = __fadd_rn(s, v[e]);
        }
    }
    const float m = __fdiv_rn(warp_sum(s), fc);

    float q = 0.0f;
    for (int64_t c0 = (int64_t)lane * LN_VEC; c0 < C; c0 += 32 * LN_VEC) {
        float v[LN_VEC];
        load8(src, c0, C, vec, v);
#pragma unroll
        for (int e = 0; e < LN_VEC; e++) {
            const float d = __fsub_rn(v[e], m);
            if (c0 + e < C) q = __fadd_rn(q, __fmul_rn(d, d));
        }
    }
    const float rs = __frcp_rn(__fsqrt_rn(__fadd_rn(__fdiv_rn(warp_sum(q), fc), eps)));

    for (int64_t c0 = (int64_t)lane * LN_VEC; c0 < C; c0 += 32 * LN_VEC) {
        float v[LN_VEC], g[LN_VEC], b[LN_VEC];
        load8(src, c0, C, vec, v);
        load8(gamma, c0, C, vec, g);
        load8(beta, c0, C, vec, b);
#pragma unroll
        for (int e = 0; e < LN_VEC; e++) v[e] = __fadd_rn(__fmul_rn(__fmul_rn(__fsub_rn(v[e], m), rs), g[e]), b[e]);
        store8(out + off, c0, C, vec, v);
    }
    if (lane == 0) {
        mean[row] = m;
        rstd[row] = rs;
    }
}

// dres and dr carry no __restrict__: dr may be dres (each element is read and written by the
// same lane, read first).
template <typename H>
__device__ __forceinline__ void layernorm_backward(const H* __restrict__ dh, const H* __restrict__ r,
                                                   const float* __restrict__ mean, const float* __restrict__ rstd,
                                                   const H* __restrict__ gamma, const H* dres, H* dr, int64_t rows,
                                                   int64_t C) {
    const int64_t row = (int64_t)blockIdx.x * LN_WARPS + threadIdx.x / 32;
    if (row >= rows) return;  // the whole warp
    const int lane = threadIdx.x % 32;
    const bool vec = C % LN_VEC == 0 && aligned16(dh) && aligned16(r) && aligned16(gamma) && aligned16(dres) &&
                     aligned16(dr);
    const int64_t off = row * C;
    const float m = mean[row], rs = rstd[row], fc = (float)C;

    float sg = 0.0f, sgn = 0.0f;
    for (int64_t c0 = (int64_t)lane * LN_VEC; c0 < C; c0 += 32 * LN_VEC) {
        float d[LN_VEC], v[LN_VEC], g[LN_VEC];
        load8(dh + off, c0, C, vec, d);
        load8(r + off, c0, C, vec, v);
        load8(gamma, c0, C, vec, g);
#pragma unroll
        for (int e = 0; e < LN_VEC; e++) {
            const float n = __fmul_rn(__fsub_rn(v[e], m), rs);
            const float gd = __fmul_rn(g[e], d[e]);
            if (c0 + e < C) {
                sg = __fadd_rn(sg, gd);
                sgn = __fadd_rn(sgn, __fmul_rn(gd, n));
            }
        }
    }
    const float mg = __fdiv_rn(warp_sum(sg), fc), mgn = __fdiv_rn(warp_sum(sgn), fc);

    for (int64_t c0 = (int64_t)lane * LN_VEC; c0 < C; c0 += 32 * LN_VEC) {
        float d[LN_VEC], v[LN_VEC], g[LN_VEC], o[LN_VEC];
        load8(dh + off, c0, C, vec, d);
        load8(r + off, c0, C, vec, v);
        load8(gamma, c0, C, vec, g);
        if (dres != nullptr) {
            load8(dres + off, c0, C, vec, o);
        }
#pragma unroll
        for (int e = 0; e < LN_VEC; e++) {
            const float n = __fmul_rn(__fsub_rn(v[e], m), rs);
            const float gd = __fmul_rn(g[e], d[e]);
            const float t = __fmul_rn(rs, __fsub_rn(__fsub_rn(gd, mg), __fmul_rn(n, mgn)));
            o[e] = dres != nullptr ? __fadd_rn(o[e], t) : t;
        }
        store8(dr + off, c0, C, vec, o);
    }
}

template <typename H>
__device__ __forceinline__ void layernorm_dparams_partial(const H* __restrict__ dh, const H* __restrict__ r,
                                                          const float* __restrict__ mean,
                                                          const float* __restrict__ rstd, float* __restrict__ scratch,
                                                          int64_t rows, int64_t C) {
    __shared__ float pg[LN_DP_ROWS][LN_DP_COLS + 1], pb[LN_DP_ROWS][LN_DP_COLS + 1];
    const int64_t chunks = gridDim.x, k = blockIdx.x;
    const int64_t c = (int64_t)blockIdx.y * LN_DP_COLS + threadIdx.x;
    const int64_t begin = k * LN_CHUNK_ROWS, end = min(rows, begin + LN_CHUNK_ROWS);
    float a = 0.0f, b = 0.0f;
    if (c < C) {
        for (int64_t row = begin + threadIdx.y; row < end; row += LN_DP_ROWS) {
            const float d = to_f32(dh[row * C + c]);
            const float n = __fmul_rn(__fsub_rn(to_f32(r[row * C + c]), mean[row]), rstd[row]);
            a = __fadd_rn(a, __fmul_rn(d, n));
            b = __fadd_rn(b, d);
        }
    }
    pg[threadIdx.y][threadIdx.x] = a;
    pb[threadIdx.y][threadIdx.x] = b;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float ta = 0.0f, tb = 0.0f;
#pragma unroll
        for (int y = 0; y < LN_DP_ROWS; y++) {
            ta = __fadd_rn(ta, pg[y][threadIdx.x]);
            tb = __fadd_rn(tb, pb[y][threadIdx.x]);
        }
        scratch[k * C + c] = ta;
        scratch[(chunks + k) * C + c] = tb;
    }
}

extern "C" __global__ void layernorm_dparams_total(const float* __restrict__ scratch, float* __restrict__ dgamma,
                                                   float* __restrict__ dbeta, int64_t chunks, int64_t C,
                                                   float* __restrict__ found_inf) {
    const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float a = 0.0f, b = 0.0f;
    for (int64_t k = 0; k < chunks; k++) {
        a = __fadd_rn(a, scratch[k * C + c]);
        b = __fadd_rn(b, scratch[(chunks + k) * C + c]);
    }
    const float ga = __fadd_rn(dgamma[c], a), gb = __fadd_rn(dbeta[c], b);
    dgamma[c] = ga;
    dbeta[c] = gb;
    // Sticky, same value from every writer: no atomic needed.
    if (found_inf != nullptr && !(isfinite(ga) && isfinite(gb))) *found_inf = 1.0f;
}

#define LAYERNORM_KERNELS(h, H)                                                                                     \
    extern "C" __global__ void layernorm_forward_##h(const H* __restrict__ x, const H* __restrict__ y,              \
                                                     const H* __restrict__ gamma, const H* __restrict__ beta, H* r, \
                                                     H* __restrict__ out, float* __restrict__ mean,                 \
                                                     float* __restrict__ rstd, int64_t rows, int64_t C, float eps) { \
        layernorm_forward(x, y, gamma, beta, r, out, mean, rstd, rows, C, eps);                                     \
    }                                                                                                               \
    extern "C" __global__ void layernorm_backward_##h(const H* __restrict__ dh, const H* __restrict__ r,            \
                                                      const float* __restrict__ mean,                               \
                                                      const float* __restrict__ rstd, const H* __restrict__ gamma,  \
                                                      const H* dres, H* dr, int64_t rows, int64_t C) {              \
        layernorm_backward(dh, r, mean, rstd, gamma, dres, dr, rows, C);                                            \
    }                                                                                                               \
    extern "C" __global__ void layernorm_dparams_partial_##h(const H* __restrict__ dh, const H* __restrict__ r,     \
                                                             const float* __restrict__ mean,                        \
                                                             const float* __restrict__ rstd,                        \
                                                             float* __restrict__ scratch, int64_t rows, int64_t C) { \
        layernorm_dparams_partial(dh, r, mean, rstd, scratch, rows, C);                                             \
    }

LAYERNORM_KERNELS(f16, __half)
LAYERNORM_KERNELS(bf16, bf16_t)
