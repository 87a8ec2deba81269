// embedding: GPT's input layer, the sum of a token and a position embedding, in f16 or bf16
// (every kernel below exists as `_f16` and `_bf16`, one templated body), and its backward into
// the f32 gradient arena, deterministic and without atomics.
//
//   embedding_forward_<h>:   out[r, c] = (h) ((f32) wte[tok[r], c] + (f32) wpe[r % T, c])
//   embedding_backward_<h>:  dwte[v, c] += S[v, c],  S[v, c] = sum of (f32) dout[r, c] over the
//                                                    rows r with tok[r] == v, r ascending
//                            dwpe[t, c] += P[t, c],  P[t, c] = sum of (f32) dout[b T + t, c]
//                                                    over b = 0 .. B-1, ascending
//                            *found_inf = 1 if any value stored is inf or NaN (optional; sticky)
//
// Layouts, row-major: tok (B T) u32, wte (V, C) and wpe (maxT, C) half (the working copy),
// out and dout (B T, C) half, dwte (V, C) and dwpe (maxT, C) f32. Rows r = b T + t.
// S and P are f32 accumulators that start at 0 and take the terms in the order above; each is
// added to the arena once (all parameter gradients use +=: micro-batches accumulate). That
// fixed order is what makes the result bit-identical to the CPU reference and run to run:
// each (token, column) sum belongs to one thread, so no float atomics are needed. Rows of
// dwte whose token does not occur in the batch are not touched.
//
// The token index (src/kernels/embedding.rs, `Tokens`), built on the host when the ids are
// written and uploaded with them into one fixed-size u32 buffer of 4n + 2 words, n = B T:
//   [0, n)            tok: the ids, each < V (checked on the host)
//   [n]               count: the number of distinct tokens (buckets)
//   [n + 1, 2n + 1)   bucket_token[k]: the k-th distinct token, ascending
//   [2n + 1, 3n + 2)  bucket_start[k]: where bucket k's rows begin in bucket_rows (k <= count)
//   [3n + 2, 4n + 2)  bucket_rows: every row, grouped by token, ascending within a bucket
// The buffer's size and the launch configuration depend only on (B, T, C), never on the ids,
// so a captured graph replays on new ids written into the same buffer; blocks past `count`
// find no bucket and do nothing.
//
// Forward: a grid-stride loop over (row, 8 columns) with 16-byte loads and stores when C is
// a multiple of 8 and wte, wpe and out are 16-byte aligned, else over single elements.
// Bytes per output element: 6. An id >= V (impossible through `Tokens`) gives NaN, never an
// out-of-bounds read.
//
// Backward: one launch, grid (G, 2). Blocks with blockIdx.y == 0 take buckets k =
// blockIdx.x, + G, ...; blockIdx.y == 1 take positions t likewise. The block's threads split
// the C columns (8 adjacent columns per thread when dout, dwte and dwpe are 16-byte aligned
// and C % 8 == 0, else one); each thread runs the bucket's rows (or the B rows of a position)
// in ascending order for its columns. Both paths add the same terms in the same order, so
// they give the same bits. Parallelism within one bucket is over columns only: a token that
// fills the whole batch is summed by one block (the fixed order asks for that).

// ptx-targets: sm_75 sm_80

#include <stdint.h>

#include "half.cuh"

// ----------------------------------------------------------------------------
// kernels

#define EMB_VEC 8

__device__ __forceinline__ bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

template <typename H>
__device__ __forceinline__ void embedding_forward(const uint32_t* __restrict__ tok, const H* __restrict__ wte,
                                                  const H* __restrict__ wpe, H* __restrict__ out, int64_t rows,
                                                  int64_t T, int64_t C, int64_t V) {
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    const uint64_t tid = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (C % EMB_VEC == 0 && aligned16(wte) && aligned16(wpe) && aligned16(out)) {
        const uint64_t per_row = C / EMB_VEC, total = (uint64_t)rows * per_row;
        for (uint64_t v = tid; v < total; v += stride) {
            const uint64_t r = v / per_row, k = v % per_row;
            const uint32_t id = tok[r];
            const uint64_t t = r % T;
            Half8 o;
            if (id < V) {
                Half8 a, b;
                a.u = reinterpret_cast<const uint4*>(wte)[id * per_row + k];
                b.u = reinterpret_cast<const uint4*>(wpe)[t * per_row + k];
#pragma unroll
                for (int j = 0; j < EMB_VEC / 2; j++) {
                    const float2 fa = unpack2<H>(a.w[j]), fb = unpack2<H>(b.w[j]);
                    o.w[j] = pack2<H>(fa.x + fb.x, fa.y + fb.y);
                }
            } else {
#pragma unroll
                for (int j = 0; j < EMB_VEC / 2; j++) o.w[j] = pack2<H>(NAN, NAN);
            }
            reinterpret_cast<uint4*>(out)[v] = o.u;
        }
    } else {
        const uint64_t total = (uint64_t)rows * C;
        for (uint64_t i = tid; i < total; i += stride) {
            const uint64_t r = i / C, c = i % C;
            const uint32_t id = tok[r];
            const uint64_t t = r % T;
            out[i] = id < V ? from_f32<H>(to_f32(wte[id * C + c]) + to_f32(wpe[t * C + c])) : from_f32<H>(NAN);
        }
    }
}

// dst[c] += sum_{j < count} dout[row(j) * C + c] for this block's columns, j ascending, the sum
// an f32 accumulator from 0. Returns true if a value stored is not finite.
template <typename H, typename Rows>
__device__ __forceinline__ bool add_column_sums(const H* __restrict__ dout, int64_t C, Rows row, int64_t count,
                                                float* __restrict__ dst, bool vec) {
    bool bad = false;
    if (vec) {
        for (int64_t k = threadIdx.x; k < C / EMB_VEC; k += blockDim.x) {
            float s[EMB_VEC];
#pragma unroll
            for (int e = 0; e < EMB_VEC; e++) s[e] = 0.0f;
            for (int64_t j = 0; j < count; j++) {
                Half8 d;
                d.u = reinterpret_cast<const uint4*>(dout + row(j) * C)[k];
#pragma unroll
                for (int e = 0; e < EMB_VEC; e++) s[e] += half8_get<H>(d, e);
            }
            float4* p = reinterpret_cast<float4*>(dst) + 2 * k;
            float4 lo = p[0], hi = p[1];
            lo.x += s[0], lo.y += s[1], lo.z += s[2], lo.w += s[3];
            hi.x += s[4], hi.y += s[5], hi.z += s[6], hi.w += s[7];
            p[0] = lo;
            p[1] = hi;
            bad |= !(isfinite(lo.x) && isfinite(lo.y) && isfinite(lo.z) && isfinite(lo.w) && isfinite(hi.x) &&
                     isfinite(hi.y) && isfinite(hi.z) && isfinite(hi.w));
        }
    } else {
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
            float s = 0.0f;
            for (int64_t j = 0; j < count; j++) s += to_f32(dout[row(j) * C + c]);
            const float v = dst[c] + s;
            dst[c] = v;
            bad |= !isfinite(v);
        }
    }
    return bad;
}

template <typename H>
__device__ __forceinline__ void embedding_backward(const uint32_t* __restrict__ index, const H* __restrict__ dout,
                                                   float* __restrict__ dwte, float* __restrict__ dwpe, int64_t B,
                                                   int64_t T, int64_t C, float* __restrict__ found_inf) {
    const int64_t n = B * T;
    const bool vec = C % EMB_VEC == 0 && aligned16(dout) && aligned16(dwte) && aligned16(dwpe);
    bool bad = false;
    if (blockIdx.y == 0) {
        const uint32_t count = index[n];
        const uint32_t* bucket_token = index + n + 1;
        const uint32_t* bucket_start = index + 2 * n + 1;
        const uint32_t* bucket_rows = index + 3 * n + 2;
        for (int64_t k = blockIdx.x; k < count; k += gridDim.x) {
            const uint32_t begin = bucket_start[k], end = bucket_start[k + 1];
            const uint32_t* rows = bucket_rows + begin;
            bad |= add_column_sums(
                dout, C, [rows](int64_t j) { return (int64_t)rows[j]; }, end - begin,
                dwte + (int64_t)bucket_token[k] * C, vec);
        }
    } else {
        for (int64_t t = blockIdx.x; t < T; t += gridDim.x) {
            bad |= add_column_sums(dout, C, [t, T](int64_t b) { return b * T + t; }, B, dwpe + t * C, vec);
        }
    }
    // Sticky, same value from every writer: no atomic needed.
    if (bad && found_inf) *found_inf = 1.0f;
}

#define EMBEDDING_KERNELS(h, H)                                                                                   \
    extern "C" __global__ void embedding_forward_##h(const uint32_t* __restrict__ tok, const H* __restrict__ wte,  \
                                                     const H* __restrict__ wpe, H* __restrict__ out, int64_t rows,  \
                                                     int64_t T, int64_t C, int64_t V) {                           \
        embedding_forward(tok, wte, wpe, out, rows, T, C, V);                                                     \
    }                                                                                                             \
    extern "C" __global__ void embedding_backward_##h(const uint32_t* __restrict__ index,                         \
                                                      const H* __restrict__ dout, float* __restrict__ dwte,       \
                                                      float* __restrict__ dwpe, int64_t B, int64_t T, int64_t C,  \
                                                      float* __restrict__ found_inf) {                            \
        embedding_backward(index, dout, dwte, dwpe, B, T, C, found_inf);                                          \
    }

EMBEDDING_KERNELS(f16, __half)
EMBEDDING_KERNELS(bf16, bf16_t)
