// gemm: tensor-core GEMM with half-precision operands (f16, or bf16 on sm_80 and newer) and
// fp32 accumulation, with the epilogue a linear layer needs.
//
//   v = alpha * op(A) op(B) + beta * C        (C not read when beta == 0)
//   v += bias[n]                              (optional, f32 or the operands' half type)
//   pre[m, n] = (half) v                      (optional: the pre-activation, kept for backward)
//   C[m, n] = act(v)                          act: none, ReLU, or GELU (tanh form)
//   *found_inf = 1 if any C[m, n] as stored is inf or NaN   (optional; never cleared)
//
// found_inf is how a training step checks its weight gradients for overflow without a
// separate pass over them: the weight-gradient GEMM (beta = 1 over micro-batches) raises
// the flag as it writes. A value that ends non-finite was non-finite when last written
// (inf and NaN survive every later accumulation), so checking at each write finds exactly
// the gradients a pass after the backward would.
//
// Layouts, all row-major, M x N output:
//   op(A) is M x K: A stored M x K (lda >= K) when not transposed, K x M (lda >= M) when it is
//   op(B) is K x N: B stored K x N (ldb >= N) when not transposed, N x K (ldb >= K) when it is
//   C and pre are M x N with leading dimension ldc >= N
// so a linear layer's forward X W^T is (N, T), its input gradient dY W is (N, N) and its
// weight gradient dY^T X is (T, N): no transpose copies. Kernel names: gemm_<ta><tb>_<out>
// for f16 operands (gemm_nt_f16, gemm_tn_f32) and gemm_bf16_<ta><tb>_<out> for bf16
// operands (gemm_bf16_nt_bf16, gemm_bf16_tn_f32).
//
// Precision: A and B f16 or bf16; products and sums in f32 (tensor cores, then the
// epilogue); C is f32 or the operands' half type (rounded to nearest even at the store);
// pre is the half type. Deterministic: every output element is written by exactly one
// thread, no atomics, no split-K. bf16 tensor cores (wmma .bf16) exist from sm_80: the
// bf16 kernels are compiled into the sm_80 PTX only, and the launcher refuses a bf16 GEMM
// on sm_75 with Error::Unsupported before anything is queued.
//
// Tiling: a block of 8 warps computes a 128 x 128 tile of C, each warp a 64 x 32 tile as
// 4 x 2 WMMA 16x16x16 fragments with f32 accumulators. K advances 32 at a time through two
// shared-memory stages: on sm_80 and newer, cp.async fills the next stage while the
// tensor cores work on the current one. Tiles are copied in their stored orientation and
// the fragment layout (row or column major) absorbs the transpose. Shared rows are padded
// by 8 halves (16 bytes) so that the eight rows a fragment load touches fall in
// different banks. The fast path moves 16-byte chunks and needs M, N, K, lda and ldb to be
// multiples of 8 and A and B 16-byte aligned; any other shape takes the element-wise
// loading path, with the same tiles and the same arithmetic.
//
// Strided-batched (gemm_batched_<ta><tb>_<out>, gemm_bf16_batched_<ta><tb>_<out>): the same
// GEMM for every batch (o, i), o < outer, i < inner, each operand X (A, B, C and pre)
// starting at X + o * X_outer + i * X_inner elements; bias and found_inf are shared. Two
// batch levels so that attention's (batch, head) permutes fold into strides: head h of Q
// inside a (B*T, 3C) qkv buffer is A + b * T*3C + h * hs with lda = 3C, and no copy is
// made. Batch z = o * inner + i is blockIdx.z. A triangle mode (GemmTriangle, below) skips
// the work causal attention never needs. These are separate entry points, so the
// single GEMM's kernels and their PTX are what they were. They are bound to one block per
// SM (__launch_bounds__(256, 1)): the single GEMM's kernels already use all 128 registers
// the two-block bound allows, and the batch-offset operand pointers, live across the main
// loop, add to that (with the one-block bound ptxas gives them 151 to 166, no spills);
// the two-block bound was not tried, for fear of the spills the bf16 kernels once had.

// ptx-targets: sm_75 sm_80

#include <mma.h>
#include <stdint.h>

#include "half.cuh"

using namespace nvcuda;

// ----------------------------------------------------------------------------
// kernels

#define GEMM_BM 128
#define GEMM_BN 128
#define GEMM_BK 32
#define GEMM_WARPS 8
#define GEMM_THREADS (GEMM_WARPS * 32)
#define GEMM_PAD 8

enum GemmAct : int32_t { GEMM_ACT_NONE = 0, GEMM_ACT_RELU = 1, GEMM_ACT_GELU = 2 };

struct GemmParams {
    const void* a;       // the kernel's operand type T (f16 or bf16)
    const void* b;       // T
    void* c;             // f32 or T, by kernel
    const void* bias;    // nullptr, or N values of f32 or T (bias_f16: bias is of type T)
    void* pre;           // nullptr, or M x N values of T with leading dimension ldc
    float* found_inf;    // nullptr, or set to 1 when a value written to C is inf or NaN
    int64_t m, n, k, lda, ldb, ldc;
    float alpha, beta;
    int32_t act;
    int32_t bias_f16;
};

// Shared memory of one stage, in stored orientation:
//   A not transposed: [BM][BK + PAD]   (m rows, k contiguous)
//   A transposed:     [BK][BM + PAD]   (k rows, m contiguous)
//   B not transposed: [BK][BN + PAD]   (k rows, n contiguous)
//   B transposed:     [BN][BK + PAD]   (n rows, k contiguous)
// Both orientations of each operand hold the same number of halves, give or take padding.
#define GEMM_A_STAGE ((GEMM_BM * (GEMM_BK + GEMM_PAD)) > (GEMM_BK * (GEMM_BM + GEMM_PAD)) \
                          ? (GEMM_BM * (GEMM_BK + GEMM_PAD)) : (GEMM_BK * (GEMM_BM + GEMM_PAD)))
#define GEMM_B_STAGE ((GEMM_BN * (GEMM_BK + GEMM_PAD)) > (GEMM_BK * (GEMM_BN + GEMM_PAD)) \
                          ? (GEMM_BN * (GEMM_BK + GEMM_PAD)) : (GEMM_BK * (GEMM_BN + GEMM_PAD)))

__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
#if __CUDA_ARCH__ >= 800
    const unsigned dst = (unsigned)__cvta_generic_to_shared(smem);
    const int src_bytes = valid ? 16 : 0;  // 0: the 16 bytes are zero-filled
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(src_bytes));
#else
    *reinterpret_cast<uint4*>(smem) = valid ? *reinterpret_cast<const uint4*>(gmem) : make_uint4(0, 0, 0, 0);
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}

// Waits until at most `pending` committed groups are still in flight.
template <int pending>
__device__ __forceinline__ void cp_async_wait() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(pending));
#endif
}

// Copies the stored tile rows [row0, row0 + ROWS) x cols [col0, col0 + COLS) of a
// row-major matrix with `rows` x `cols` valid elements and leading dimension ld into
// shared memory with row stride COLS + PAD; out-of-range elements become zero.
template <int ROWS, int COLS, bool VEC, typename T>
__device__ __forceinline__ void load_tile(T* smem, const T* g, int64_t ld, int64_t rows, int64_t cols,
                                          int64_t row0, int64_t col0) {
    constexpr int STRIDE = COLS + GEMM_PAD;
    if (VEC) {
        // Chunks of 8 halves; with cols a multiple of 8, a chunk is all in or all out.
        constexpr int CHUNKS = ROWS * COLS / 8;
        for (int c = threadIdx.x; c < CHUNKS; c += GEMM_THREADS) {
            const int r = c / (COLS / 8);
            const int k = (c % (COLS / 8)) * 8;
            const int64_t gr = row0 + r, gc = col0 + k;
            const bool valid = gr < rows && gc < cols;
            const T* src = valid ? g + gr * ld + gc : g;
            cp_async_16(smem + r * STRIDE + k, src, valid);
        }
    } else {
        for (int e = threadIdx.x; e < ROWS * COLS; e += GEMM_THREADS) {
            const int r = e / COLS;
            const int k = e % COLS;
            const int64_t gr = row0 + r, gc = col0 + k;
            smem[r * STRIDE + k] = (gr < rows && gc < cols) ? g[gr * ld + gc] : from_f32<T>(0.0f);
        }
    }
}

// A fragment load from shared memory. f16: the library's load_matrix_sync, which nvcc
// emits as wmma.load...shared.f16 with 32-bit shared addresses. bf16: nvcc 13.0 emits the
// library's bf16 loads with generic 64-bit addresses, which cost the registers that made
// ptxas spill at the 128-register bound (16-24 bytes per kernel); the same instruction
// with the .shared state space, written out, does not (fragment layout: 4 registers of
// two bf16 each for m16n16k16 a and b, PTX ISA "Matrix fragments for WMMA").
template <typename Frag>
__device__ __forceinline__ void load_frag(Frag& f, const __half* src, unsigned ldm) {
    wmma::load_matrix_sync(f, src, ldm);
}

#if __CUDA_ARCH__ >= 800
#define GEMM_BF16_LOAD(ab, layout)                                                                        \
    asm volatile("wmma.load." ab ".sync.aligned." layout ".m16n16k16.shared.bf16 {%0, %1, %2, %3}, [%4], %5;\n" \
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])                                         \
                 : "r"(addr), "r"(ldm))

template <typename Use, typename Layout>
__device__ __forceinline__ void load_frag(wmma::fragment<Use, 16, 16, 16, bf16_t, Layout>& f, const bf16_t* src,
                                          unsigned ldm) {
    static_assert(sizeof(f.x) == 16, "m16n16k16 bf16 a/b fragments are four 32-bit registers");
    const unsigned addr = (unsigned)__cvta_generic_to_shared(src);
    unsigned* r = reinterpret_cast<unsigned*>(&f.x[0]);
    constexpr bool is_a = __is_same(Use, wmma::matrix_a);
    constexpr bool col = __is_same(Layout, wmma::col_major);
    if (is_a && !col) GEMM_BF16_LOAD("a", "row");
    else if (is_a) GEMM_BF16_LOAD("a", "col");
    else if (!col) GEMM_BF16_LOAD("b", "row");
    else GEMM_BF16_LOAD("b", "col");
}
#endif

__device__ __forceinline__ float gelu_tanh(float x) {
    // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), PyTorch's approximate='tanh'
    const float k0 = 0.7978845608028654f, k1 = 0.044715f;
    return 0.5f * x * (1.0f + tanhf(k0 * (x + k1 * x * x * x)));
}

// store_out returns the value as stored (f16 rounding included), for the found_inf check.
__device__ __forceinline__ float store_out(float* c, int64_t i, float v) {
    c[i] = v;
    return v;
}
template <typename H>
__device__ __forceinline__ float store_out(H* c, int64_t i, float v) {
    const H h = from_f32<H>(v);
    c[i] = h;
    return to_f32(h);
}
__device__ __forceinline__ float load_out(const float* c, int64_t i) { return c[i]; }
template <typename H>
__device__ __forceinline__ float load_out(const H* c, int64_t i) { return to_f32(c[i]); }

// std::conditional without the host standard library.
template <bool C, typename T, typename F> struct pick { using type = T; };
template <typename T, typename F> struct pick<false, T, F> { using type = F; };

// smem: two stages of A and B (GEMM_SMEM halves); after the main loop the same memory
// holds each warp's 16 x 16 f32 epilogue scratch (8 warps x 1 KiB, well inside).
#define GEMM_SMEM (2 * (GEMM_A_STAGE + GEMM_B_STAGE))

template <bool TA, bool TB, bool VEC, typename T, typename OutT>
__device__ __forceinline__ void gemm_body(const GemmParams& p, T* smem) {
    // Stage s of A at smem + s * A_STAGE, of B after both A stages. Pointer arithmetic, not
    // arrays of pointers: a runtime index into a local array would spill it to local memory.
    auto As = [&](int s) { return smem + s * GEMM_A_STAGE; };
    auto Bs = [&](int s) { return smem + 2 * GEMM_A_STAGE + s * GEMM_B_STAGE; };

    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const int wm = (warp / 4) * 64;  // 2 warps along M
    const int wn = (warp % 4) * 32;  // 4 warps along N
    const int64_t bm = (int64_t)blockIdx.y * GEMM_BM;
    const int64_t bn = (int64_t)blockIdx.x * GEMM_BN;

    using LayoutA = typename pick<TA, wmma::col_major, wmma::row_major>::type;
    using LayoutB = typename pick<TB, wmma::col_major, wmma::row_major>::type;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[4][2];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 2; j++) wmma::fill_fragment(acc[i][j], 0.0f);

    // Operands cast at each use, not held in locals: two more pointers live across the
    // main loop made ptxas spill at the 128-register bound.
    auto load_stage = [&](int s, int64_t k0) {
        if (TA) load_tile<GEMM_BK, GEMM_BM, VEC>(As(s), static_cast<const T*>(p.a), p.lda, p.k, p.m, k0, bm);
        else load_tile<GEMM_BM, GEMM_BK, VEC>(As(s), static_cast<const T*>(p.a), p.lda, p.m, p.k, bm, k0);
        if (TB) load_tile<GEMM_BN, GEMM_BK, VEC>(Bs(s), static_cast<const T*>(p.b), p.ldb, p.n, p.k, bn, k0);
        else load_tile<GEMM_BK, GEMM_BN, VEC>(Bs(s), static_cast<const T*>(p.b), p.ldb, p.k, p.n, k0, bn);
        cp_async_commit();
    };

    const int64_t tiles = (p.k + GEMM_BK - 1) / GEMM_BK;
    if (tiles > 0) load_stage(0, 0);
    for (int64_t t = 0; t < tiles; t++) {
        const int s = t & 1;
        if (t + 1 < tiles) {
            load_stage(s ^ 1, (t + 1) * GEMM_BK);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < GEMM_BK; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, T, LayoutA> fa[4];
            wmma::fragment<wmma::matrix_b, 16, 16, 16, T, LayoutB> fb[2];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int mr = wm + i * 16;
                // element (m, k) of the tile: row-major at m * (BK + PAD) + k,
                // column-major (stored k-major) at k * (BM + PAD) + m
                const T* src = TA ? As(s) + kk * (GEMM_BM + GEMM_PAD) + mr : As(s) + mr * (GEMM_BK + GEMM_PAD) + kk;
                load_frag(fa[i], src, TA ? GEMM_BM + GEMM_PAD : GEMM_BK + GEMM_PAD);
            }
#pragma unroll
            for (int j = 0; j < 2; j++) {
                const int nc = wn + j * 16;
                // element (k, n): row-major at k * (BN + PAD) + n, column-major at n * (BK + PAD) + k
                const T* src = TB ? Bs(s) + nc * (GEMM_BK + GEMM_PAD) + kk : Bs(s) + kk * (GEMM_BN + GEMM_PAD) + nc;
                load_frag(fb[j], src, TB ? GEMM_BK + GEMM_PAD : GEMM_BN + GEMM_PAD);
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 2; j++) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
        }
        __syncthreads();  // the stage is refilled next iteration
    }

    // Epilogue, one fragment at a time through the warp's scratch.
    float* scratch = reinterpret_cast<float*>(smem) + warp * 256;
    OutT* c = reinterpret_cast<OutT*>(p.c);
    const float* bias32 = reinterpret_cast<const float*>(p.bias);
    const T* bias16 = reinterpret_cast<const T*>(p.bias);
#pragma unroll
    for (int i = 0; i < 4; i++) {
#pragma unroll
        for (int j = 0; j < 2; j++) {
            wmma::store_matrix_sync(scratch, acc[i][j], 16, wmma::mem_row_major);
            __syncwarp();
            // Rolled on purpose: unrolled, the 64 element epilogues per thread (each with
            // an inlined tanhf) made the PTX 24 MB and every binary 50 MB, and cost the
            // driver's JIT seconds per load; the loop reads shared memory only, so
            // keeping it rolled forces no fragment into local memory.
            // Element idx = e * 32 + lane: each pass of the warp covers two whole rows of
            // the fragment, so the scratch reads are 32 consecutive words (conflict-free)
            // and the C stores two contiguous 16-element runs. With idx = lane * 8 + e
            // the emulator's cost model counted 12.5% coalesced stores and 8-way bank
            // conflicts on the scratch (bench/results/2026-11-23-emulated/cost.md).
            const int64_t gn = bn + wn + j * 16 + lane % 16;  // the same column every pass
#pragma unroll 1
            for (int e = 0; e < 8; e++) {
                const int idx = e * 32 + lane;
                const int64_t gm = bm + wm + i * 16 + idx / 16;
                if (gm < p.m && gn < p.n) {
                    const int64_t o = gm * p.ldc + gn;
                    float v = p.alpha * scratch[idx];
                    if (p.beta != 0.0f) v += p.beta * load_out(c, o);
                    if (p.bias) v += p.bias_f16 ? to_f32(bias16[gn]) : bias32[gn];
                    if (p.pre) static_cast<T*>(p.pre)[o] = from_f32<T>(v);
                    if (p.act == GEMM_ACT_RELU) v = v < 0.0f ? 0.0f : v;  // NaN passes through, as torch.relu
                    else if (p.act == GEMM_ACT_GELU) v = gelu_tanh(v);
                    const float stored = store_out(c, o, v);
                    // Sticky: only ever raised. Every writer writes the same value, so no
                    // atomic is needed. Written at once rather than carried to the end of
                    // the kernel: a flag live across the loop made ptxas spill on sm_90.
                    if (p.found_inf && !isfinite(stored)) *p.found_inf = 1.0f;
                }
            }
            __syncwarp();
        }
    }
}

// One entry point per (operand type, layout pair, output type); the fast or element-wise
// loading path is a uniform branch on a launch argument.
#define GEMM_KERNEL(name, TA, TB, T, OutT)                                                    \
    extern "C" __global__ void __launch_bounds__(GEMM_THREADS, 2) name(GemmParams p, int32_t vec) {  \
        __shared__ __align__(128) T smem[GEMM_SMEM];                                          \
        if (vec) gemm_body<TA, TB, true, T, OutT>(p, smem);                                   \
        else gemm_body<TA, TB, false, T, OutT>(p, smem);                                      \
    }

GEMM_KERNEL(gemm_nn_f32, false, false, __half, float)
GEMM_KERNEL(gemm_nt_f32, false, true, __half, float)
GEMM_KERNEL(gemm_tn_f32, true, false, __half, float)
GEMM_KERNEL(gemm_tt_f32, true, true, __half, float)
GEMM_KERNEL(gemm_nn_f16, false, false, __half, __half)
GEMM_KERNEL(gemm_nt_f16, false, true, __half, __half)
GEMM_KERNEL(gemm_tn_f16, true, false, __half, __half)
GEMM_KERNEL(gemm_tt_f16, true, true, __half, __half)

#if __CUDA_ARCH__ >= 800
GEMM_KERNEL(gemm_bf16_nn_f32, false, false, bf16_t, float)
GEMM_KERNEL(gemm_bf16_nt_f32, false, true, bf16_t, float)
GEMM_KERNEL(gemm_bf16_tn_f32, true, false, bf16_t, float)
GEMM_KERNEL(gemm_bf16_tt_f32, true, true, bf16_t, float)
GEMM_KERNEL(gemm_bf16_nn_bf16, false, false, bf16_t, bf16_t)
GEMM_KERNEL(gemm_bf16_nt_bf16, false, true, bf16_t, bf16_t)
GEMM_KERNEL(gemm_bf16_tn_bf16, true, false, bf16_t, bf16_t)
GEMM_KERNEL(gemm_bf16_tt_bf16, true, true, bf16_t, bf16_t)
#endif

// Per-operand element strides of the two batch levels (see the header).
struct GemmBatch {
    int64_t a_outer, a_inner, b_outer, b_inner, c_outer, c_inner;
    uint32_t inner;    // batches per outer index: blockIdx.z = o * inner + i
    int32_t triangle;  // GemmTriangle
};

// Causal attention's work halving, per block of BM rows [bm, bm + BM):
//   LOWER_C: only C on and below the diagonal is wanted: a block whose columns all lie
//            right of its rows (bn >= bm + BM) writes nothing (S = Q K^T, dP = dout V^T).
//   LOWER_A: op(A)[i][k] = 0 for k > i (P, dS): the reduction stops at k = bm + BM.
//   UPPER_A: op(A)[i][k] = 0 for k < i (P^T, dS^T): the reduction starts at k = bm.
// The skipped products are exact zeros and the skipped K tiles are whole tiles at either
// end (bm is a multiple of BK), so every value written is the bits the full GEMM writes.
enum GemmTriangle : int32_t { GEMM_FULL = 0, GEMM_LOWER_C = 1, GEMM_LOWER_A = 2, GEMM_UPPER_A = 3 };

#define GEMM_BATCHED_KERNEL(name, TA, TB, T, OutT)                                                         \
    extern "C" __global__ void __launch_bounds__(GEMM_THREADS, 1) name(GemmParams p, GemmBatch s, int32_t vec) { \
        __shared__ __align__(128) T smem[GEMM_SMEM];                                                       \
        const uint32_t o = blockIdx.z / s.inner, i = blockIdx.z - o * s.inner;                             \
        p.a = static_cast<const T*>(p.a) + o * s.a_outer + i * s.a_inner;                                  \
        p.b = static_cast<const T*>(p.b) + o * s.b_outer + i * s.b_inner;                                  \
        p.c = static_cast<OutT*>(p.c) + o * s.c_outer + i * s.c_inner;                                     \
        if (p.pre) p.pre = static_cast<T*>(p.pre) + o * s.c_outer + i * s.c_inner;                         \
        const int64_t bm = (int64_t)blockIdx.y * GEMM_BM;                                                  \
        if (s.triangle == GEMM_LOWER_C && (int64_t)blockIdx.x * GEMM_BN >= bm + GEMM_BM) return;           \
        if (s.triangle == GEMM_LOWER_A && p.k > bm + GEMM_BM) p.k = bm + GEMM_BM;                          \
        if (s.triangle == GEMM_UPPER_A) {                                                                  \
            const int64_t k0 = bm < p.k ? bm : p.k;                                                        \
            p.a = static_cast<const T*>(p.a) + (TA ? k0 * p.lda : k0);                                     \
            p.b = static_cast<const T*>(p.b) + (TB ? k0 : k0 * p.ldb);                                     \
            p.k -= k0;                                                                                     \
        }                                                                                                  \
        if (vec) gemm_body<TA, TB, true, T, OutT>(p, smem);                                                \
        else gemm_body<TA, TB, false, T, OutT>(p, smem);                                                   \
    }

GEMM_BATCHED_KERNEL(gemm_batched_nn_f32, false, false, __half, float)
GEMM_BATCHED_KERNEL(gemm_batched_nt_f32, false, true, __half, float)
GEMM_BATCHED_KERNEL(gemm_batched_tn_f32, true, false, __half, float)
GEMM_BATCHED_KERNEL(gemm_batched_tt_f32, true, true, __half, float)
GEMM_BATCHED_KERNEL(gemm_batched_nn_f16, false, false, __half, __half)
GEMM_BATCHED_KERNEL(gemm_batched_nt_f16, false, true, __half, __half)
GEMM_BATCHED_KERNEL(gemm_batched_tn_f16, true, false, __half, __half)
GEMM_BATCHED_KERNEL(gemm_batched_tt_f16, true, true, __half, __half)

#if __CUDA_ARCH__ >= 800
GEMM_BATCHED_KERNEL(gemm_bf16_batched_nn_f32, false, false, bf16_t, float)
GEMM_BATCHED_KERNEL(gemm_bf16_batched_nt_f32, false, true, bf16_t, float)
GEMM_BATCHED_KERNEL(gemm_bf16_batched_tn_f32, true, false, bf16_t, float)
GEMM_BATCHED_KERNEL(gemm_bf16_batched_tt_f32, true, true, bf16_t, float)
GEMM_BATCHED_KERNEL(gemm_bf16_batched_nn_bf16, false, false, bf16_t, bf16_t)
GEMM_BATCHED_KERNEL(gemm_bf16_batched_nt_bf16, false, true, bf16_t, bf16_t)
GEMM_BATCHED_KERNEL(gemm_bf16_batched_tn_bf16, true, false, bf16_t, bf16_t)
GEMM_BATCHED_KERNEL(gemm_bf16_batched_tt_bf16, true, true, bf16_t, bf16_t)
#endif
