// adam: AdamW (and Adam with L2 decay) on fp32 master weights, writing the fp16 working
// copy in the same pass.
//
// Per element, in the order and precision of torch's fused Adam/AdamW
// (aten/src/ATen/native/cuda/fused_adam_utils.cuh), so results compare element by element:
//   g  = grad / scale                     (if scale != nullptr; f64 divide, stored as f32)
//   AdamW: p -= lr * wd * p               Adam: g += wd * p        (if wd != 0)
//   m  = beta1 * m + (1 - beta1) * g
//   v  = beta2 * v + (1 - beta2) * g * g
//   step_size = lr / (1 - beta1^step)     bc2_sqrt = sqrt(1 - beta2^step)
//   p -= step_size * m / (sqrt(v) / bc2_sqrt + eps)
//   copy = (f16) p                        (if copy != nullptr; round to nearest even)
// Hyper-parameters are f64 kernel arguments and the mixed f64/f32 arithmetic follows torch:
// each f32 state value is updated in f64 and rounded once.
//
// Skipping: when *found_inf != 0 the kernel returns before touching anything, so master
// weights, moments and copies stay bit-identical. The step counter is an f32 on the device
// (exact to 2^24 steps, as torch's state_steps); adam_count_step advances it only when
// found_inf is clear, and runs first, so every block of adamw_step reads the new count.
// Unlike torch, the unscaled gradient is not written back: the next backward overwrites
// it, and skipping the write keeps the pass at its byte minimum.
//
// Layouts: contiguous ranges of n elements for p, g, m, v and copy.
// Minimum bytes per element: f32 grads 30 (read p g m v 16, write p m v 12, copy 2);
// f16 grads 28. 16-byte accesses on the f32 arrays (8 on the f16 ones) when every
// pointer is aligned, scalar otherwise.

#include <cuda_fp16.h>
#include <stdint.h>

#include "multi_tensor.cuh"

// ----------------------------------------------------------------------------
// kernels

// mode: 0 = AdamW (decoupled decay), 1 = Adam (L2 decay added to the gradient)
struct AdamHyper {
    double lr, beta1, beta2, eps, weight_decay;
    int32_t mode;
};

// Per-launch constants every thread derives from the step count.
struct AdamStep {
    float step_size, bc2_sqrt;
};

__device__ __forceinline__ AdamStep adam_step_consts(const AdamHyper& h, const float* step) {
    // torch keeps both bias corrections as f32 before using them; so do we.
    const double s = (double)*step;
    const float bc1 = (float)(1.0 - pow(h.beta1, s));
    const float bc2 = (float)(1.0 - pow(h.beta2, s));
    AdamStep c;
    c.step_size = (float)(h.lr / (double)bc1);
    c.bc2_sqrt = sqrtf(bc2);
    return c;
}

__device__ __forceinline__ float grad_value(const float* g, uint64_t i) { return g[i]; }
__device__ __forceinline__ float grad_value(const __half* g, uint64_t i) { return __half2float(g[i]); }

__device__ __forceinline__ void adam_math(float& p, float g, float& m, float& v, const AdamHyper& h,
                                          const AdamStep& c, const float* scale) {
    if (scale) g = (float)((double)g / (double)*scale);
    if (h.weight_decay != 0.0) {
        if (h.mode == 0) p = (float)(p - h.lr * h.weight_decay * p);
        else g = (float)(g + p * h.weight_decay);
    }
    m = (float)(h.beta1 * m + (1.0 - h.beta1) * g);
    v = (float)(h.beta2 * v + (1.0 - h.beta2) * g * g);
    const float denom = (float)(sqrtf(v) / c.bc2_sqrt + h.eps);
    p -= c.step_size * m / denom;
}

// Updates elements [begin, end); this thread takes first, first + stride, ... (in units of
// 4 elements on the vector path).
template <typename G>
__device__ __forceinline__ void adam_range(float* p, const G* g, float* m, float* v, __half* copy, uint64_t begin,
                                           uint64_t end, uint64_t first, uint64_t stride, const AdamHyper& h,
                                           const AdamStep& c, const float* scale) {
    const uintptr_t wide = reinterpret_cast<uintptr_t>(p + begin) | reinterpret_cast<uintptr_t>(m + begin) |
                           reinterpret_cast<uintptr_t>(v + begin) |
                           (sizeof(G) == 4 ? reinterpret_cast<uintptr_t>(g + begin) : 0);
    const uintptr_t narrow = (copy ? reinterpret_cast<uintptr_t>(copy + begin) : 0) |
                             (sizeof(G) == 2 ? reinterpret_cast<uintptr_t>(g + begin) : 0);
    uint64_t tail = begin;
    if ((wide & 15) == 0 && (narrow & 7) == 0) {
        const uint64_t nvec = (end - begin) / 4;
        for (uint64_t q = first; q < nvec; q += stride) {
            const uint64_t i = begin + 4 * q;
            float4 pv = *reinterpret_cast<const float4*>(p + i);
            float4 mv = *reinterpret_cast<const float4*>(m + i);
            float4 vv = *reinterpret_cast<const float4*>(v + i);
            float gs[4];
            if (sizeof(G) == 4) {
                const float4 gv = *reinterpret_cast<const float4*>(g + i);
                gs[0] = gv.x; gs[1] = gv.y; gs[2] = gv.z; gs[3] = gv.w;
            } else {
                union { uint2 u; __half2 h[2]; } gv;
                gv.u = *reinterpret_cast<const uint2*>(g + i);
                const float2 a = __half22float2(gv.h[0]), b = __half22float2(gv.h[1]);
                gs[0] = a.x; gs[1] = a.y; gs[2] = b.x; gs[3] = b.y;
            }
            adam_math(pv.x, gs[0], mv.x, vv.x, h, c, scale);
            adam_math(pv.y, gs[1], mv.y, vv.y, h, c, scale);
            adam_math(pv.z, gs[2], mv.z, vv.z, h, c, scale);
            adam_math(pv.w, gs[3], mv.w, vv.w, h, c, scale);
            *reinterpret_cast<float4*>(p + i) = pv;
            *reinterpret_cast<float4*>(m + i) = mv;
            *reinterpret_cast<float4*>(v + i) = vv;
            if (copy) {
                union { uint2 u; __half2 h[2]; } out;
                out.h[0] = __floats2half2_rn(pv.x, pv.y);
                out.h[1] = __floats2half2_rn(pv.z, pv.w);
                *reinterpret_cast<uint2*>(copy + i) = out.u;
            }
        }
        tail = begin + 4 * nvec;
    }
    for (uint64_t i = tail + first; i < end; i += stride) {
        float pi = p[i], mi = m[i], vi = v[i];
        adam_math(pi, grad_value(g, i), mi, vi, h, c, scale);
        p[i] = pi; m[i] = mi; v[i] = vi;
        if (copy) copy[i] = __float2half_rn(pi);
    }
}

// One thread: advance the step count unless this step overflowed.
extern "C" __global__ void adam_count_step(float* step, const float* found_inf) {
    if (blockIdx.x == 0 && threadIdx.x == 0 && !(found_inf && *found_inf != 0.0f)) *step += 1.0f;
}

#define ADAM_FLAT(name, G)                                                                                     \
    extern "C" __global__ void name(float* p, const G* g, float* m, float* v, __half* copy, uint64_t n,         \
                                    const float* step, const float* scale, const float* found_inf, AdamHyper h) { \
        if (found_inf && *found_inf != 0.0f) return;                                                            \
        const AdamStep c = adam_step_consts(h, step);                                                           \
        adam_range(p, g, m, v, copy, 0, n, (uint64_t)blockIdx.x * blockDim.x + threadIdx.x,                     \
                   (uint64_t)gridDim.x * blockDim.x, h, c, scale);                                              \
    }

ADAM_FLAT(adamw_step_f32, float)
ADAM_FLAT(adamw_step_f16, __half)

// Multi-tensor: up to ADAM_MT_TENSORS tensors per launch, each with its own pointers.
#define ADAM_MT_TENSORS 32

struct AdamList {
    uint64_t p[ADAM_MT_TENSORS], g[ADAM_MT_TENSORS], m[ADAM_MT_TENSORS], v[ADAM_MT_TENSORS];
    uint64_t copy[ADAM_MT_TENSORS];  // 0 where a tensor has no fp16 copy
    uint64_t len[ADAM_MT_TENSORS];
    MtBlocks blocks;
};

#define ADAM_MULTI(name, G)                                                                                     \
    extern "C" __global__ void name(AdamList list, const float* step, const float* scale, const float* found_inf, \
                                    AdamHyper h) {                                                              \
        if (found_inf && *found_inf != 0.0f) return;                                                            \
        const AdamStep c = adam_step_consts(h, step);                                                           \
        const int t = list.blocks.tensor[blockIdx.x];                                                           \
        uint64_t begin, end;                                                                                    \
        mt_chunk_range(list.blocks, list.len[t], &begin, &end);                                                 \
        adam_range(reinterpret_cast<float*>(list.p[t]), reinterpret_cast<const G*>(list.g[t]),                  \
                   reinterpret_cast<float*>(list.m[t]), reinterpret_cast<float*>(list.v[t]),                    \
                   reinterpret_cast<__half*>(list.copy[t]), begin, end, threadIdx.x, blockDim.x, h, c, scale);  \
    }

ADAM_MULTI(adamw_step_multi_f32, float)
ADAM_MULTI(adamw_step_multi_f16, __half)
