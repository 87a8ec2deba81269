// classifier: llm.c's fused_classifier. The softmax cross-entropy loss of each row and its
// gradient with respect to the logits in one kernel, without storing the probabilities:
//
//   z = logits[r, :V]   (the row is Vp wide; columns V..Vp are padding, never read)
//   m = max_j z_j,  s = sum_j expf(z_j - m)
//   losses[r]     = logf(s) + m - z[label[r]]                                f32
//   dlogits[r, j] = half((expf(z_j - m) / s - [j == label[r]]) * g)          j < V
//   dlogits[r, j] = 0                                                        V <= j < Vp
//   g = weight * scale[0] / rows     (f32; scale may be null: loss scaling off, 1)
//
// g is the gradient seed of the mean loss times `weight`, with the loss scale read from the
// device (DESIGN.md, step 4) exactly as loss.cu's cross_entropy_backward reads it; rows is
// converted to f32 (exact below 2^24). The mean itself is reduce.cu's sum_f32 over `losses`,
// launched after this kernel by the launcher, as for the cross-entropy.
//
// In place: dlogits may be logits (llm.c writes the gradient over the logits). Every
// element is read before it is written: z[label] by thread 0 and the row's max and sum by
// all threads before the block reductions' barriers, and in the last pass each thread reads
// z_j before it writes dlogits[r, j] of the same j. So neither pointer is __restrict__.
//
// A label outside [0, V) (as i32: negative too) gives a NaN loss and NaN gradients in
// columns < V for that row, never an out-of-bounds read, so found_inf skips the step;
// the padding columns are still zero.
//
// Precision: logits and dlogits half (f16 or bf16; kernels `_f16` and `_bf16`), everything
// else f32, one rounding at the store. expf and logf, the accurate functions, as loss.cu
// (whose header measures the alternative, __expf); the division by s is IEEE division.
//
// Layout: one block of 256 threads per row (a vocabulary of 50257 is 200 elements per
// thread); thread k handles columns k, k + 256, ... and the block max and sum are a warp
// shuffle tree then the 8 warp partials added in order by every thread: fixed order,
// deterministic. The row is read three times (max, sum, gradient); the second and third
// reads mostly hit L2.

// ptx-targets: sm_75 sm_80

#include <stdint.h>

#include "half.cuh"

// ----------------------------------------------------------------------------
// kernels

#define CLASSIFIER_THREADS 256
#define CLASSIFIER_WARPS (CLASSIFIER_THREADS / 32)

// The block's max or sum of v, in every thread, in a fixed order. `red` is the block's
// CLASSIFIER_WARPS floats of scratch; the barrier at the end lets the next call reuse it.
template <bool MAX>
__device__ __forceinline__ float classifier_block_reduce(float v, float* red) {
#pragma unroll
    for (int o = 16; o > 0; o /= 2) {
        const float w = __shfl_xor_sync(0xffffffffu, v, o);
        v = MAX ? fmaxf(v, w) : v + w;
    }
    if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
    __syncthreads();
    float total = red[0];
#pragma unroll
    for (int w = 1; w < CLASSIFIER_WARPS; w++) total = MAX ? fmaxf(total, red[w]) : total + red[w];
    __syncthreads();
    return total;
}

template <typename H>
__device__ __forceinline__ void fused_classifier(const H* logits, H* dlogits, const int32_t* __restrict__ labels,
                                                 const float* __restrict__ scale, float* __restrict__ losses,
                                                 int64_t rows, int64_t v, int64_t vp, float weight) {
    __shared__ float red[CLASSIFIER_WARPS];
    const int64_t r = blockIdx.x;
    if (r >= rows) return;  // uniform across the block: no barrier is skipped by part of it
    const H* z = logits + r * vp;
    H* dz = dlogits + r * vp;
    const int32_t y = labels[r];
    const bool valid = y >= 0 && y < v;
    // Read before the barriers below, so before any thread overwrites it in place.
    const float zy = (threadIdx.x == 0 && valid) ? to_f32(z[y]) : 0.0f;

    // fmaxf ignores NaN; a NaN logit is carried by the sum instead.
    float m = -INFINITY;
    for (int64_t j = threadIdx.x; j < v; j += CLASSIFIER_THREADS) m = fmaxf(m, to_f32(z[j]));
    m = classifier_block_reduce<true>(m, red);
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j < v; j += CLASSIFIER_THREADS) s += expf(to_f32(z[j]) - m);
    s = classifier_block_reduce<false>(s, red);

    if (threadIdx.x == 0) losses[r] = valid ? logf(s) + m - zy : NAN;
    const float g = weight * (scale != nullptr ? *scale : 1.0f) / (float)rows;
    for (int64_t j = threadIdx.x; j < vp; j += CLASSIFIER_THREADS) {
        float d = 0.0f;
        if (j < v) d = valid ? (expf(to_f32(z[j]) - m) / s - (j == y ? 1.0f : 0.0f)) * g : NAN;
        dz[j] = from_f32<H>(d);
    }
}

#define CLASSIFIER_KERNELS(h, H)                                                                             \
    extern "C" __global__ void __launch_bounds__(CLASSIFIER_THREADS)                                         \
        fused_classifier_##h(const H* logits, H* dlogits, const int32_t* __restrict__ labels,                \
                             const float* __restrict__ scale, float* __restrict__ losses, int64_t rows, int64_t v, \
                             int64_t vp, float weight) {                                                     \
        fused_classifier(logits, dlogits, labels, scale, losses, rows, v, vp, weight);                       \
    }

CLASSIFIER_KERNELS(f16, __half)
CLASSIFIER_KERNELS(bf16, bf16_t)
