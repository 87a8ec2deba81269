// adam: AdamW (and Adam with L2 decay) on fp32 master weights, writing the half-precision
// working copy (f16 or bf16) in the same pass; and the pure-bf16 variant with no master copy.
//
// Per element, in the order and precision of torch's fused Adam/AdamW
// (aten/src/ATen/native/cuda/fused_adam_utils.cuh), so results compare element by element:
//   g  = grad / scale                     (if scale != nullptr; f64 divide, stored as f32)
//   AdamW: p -= lr * wd * p               Adam: g += wd * p        (if wd != 0)
//   m  = beta1 * m + (1 - beta1) * g
//   v  = beta2 * v + (1 - beta2) * g * g
//   step_size = lr / (1 - beta1^step)     bc2_sqrt = sqrt(1 - beta2^step)
//   p -= step_size * m / (sqrt(v) / bc2_sqrt + eps)
//   copy = (half) p                       (if copy != nullptr; round to nearest even; f16 or
//                                         bf16 as AdamHyper::copy_bf16 says)
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
// Pure bf16 (adamw_pure_<grad>, issue 19's `master_weights: false`): the parameters are
// bf16 and are the only copy; they are read as f32, updated by the same arithmetic, and
// written back with stochastic rounding: the f32 result's 16 low bits (those bf16 drops)
// plus 16 random bits, truncated, so a weight moves up with probability equal to the
// dropped fraction and updates smaller than half a bf16 ulp still move weights in
// expectation (round to nearest would drop them every step). The random bits are a
// splitmix64 hash of (seed, step, element index): deterministic for a given seed and step,
// so runs and checkpoint reloads reproduce bit for bit, and the same on every launch
// configuration. inf and NaN round to nearest (stay what they are). Moments stay f32:
// 10 bytes of state per parameter (bf16 p 2 + m 4 + v 4) against 14 with a master copy
// (master 4 + m 4 + v 4 + bf16 copy 2).
//
// Layouts: contiguous ranges of n elements for p, g, m, v and copy.
// Minimum bytes per element: f32 grads 30 (read p g m v 16, write p m v 12, copy 2);
// half grads 28; pure bf16 with f32 grads 24 (read p 2 g 4 m v 8, write p 2 m v 8), with
// bf16 grads 22. 16-byte accesses on the f32 arrays (8 on the half ones) when every
// pointer is aligned, scalar otherwise.

// ptx-targets: sm_75 sm_80

#include <stdint.h>

#include "half.cuh"
#include "multi_tensor.cuh"

// ----------------------------------------------------------------------------
// kernels

// mode: 0 = AdamW (decoupled decay), 1 = Adam (L2 decay added to the gradient)
// copy_bf16: the working copy is bf16 (1) or f16 (0); unused by the pure-bf16 kernels.
// sched: 0 = constant lr; 1 = linear warmup over `warmup` steps then cosine decay to
// min_lr at step `decay` (nanoGPT's get_lr; issue 20): the lr of a step is derived on the
// device from the step count this launch reads, so a captured graph replays with the
// right lr and a skipped step (whose count does not advance) does not advance it either.
struct AdamHyper {
    double lr, beta1, beta2, eps, weight_decay;
    int32_t mode;
    int32_t copy_bf16;
    int32_t sched, warmup, decay, reserved;
    double min_lr;
};

// Per-launch constants every thread derives from the step count.
struct AdamStep {
    double lr;  // this step's learning rate
    float step_size, bc2_sqrt;
};

// cos(pi r) for r in [0, 1], by a fixed polynomial rather than cospi: cospi reads a table
// from module-scope global memory, and a fixed sequence of fmas is what the CPU reference
// (cpu::cos_pi_unit) can repeat bit for bit. Folded to |pi r| <= pi / 2, where the Taylor
// series to t^20 is within 2e-17 of the cosine (the next term, (pi/2)^22 / 22!); with the
// rounding of pi and of pi r, within 4e-16 absolute (tests/adam.rs).
__device__ __forceinline__ double cos_pi_unit(double r) {
    const bool upper = r > 0.5;
    const double t = 3.141592653589793 * (upper ? 1.0 - r : r);
    const double t2 = t * t;
    double c = 1.0 / 2432902008176640000.0;  // 1 / 20!
    c = fma(c, t2, -1.0 / 6402373705728000.0);
    c = fma(c, t2, 1.0 / 20922789888000.0);
    c = fma(c, t2, -1.0 / 87178291200.0);
    c = fma(c, t2, 1.0 / 479001600.0);
    c = fma(c, t2, -1.0 / 3628800.0);
    c = fma(c, t2, 1.0 / 40320.0);
    c = fma(c, t2, -1.0 / 720.0);
    c = fma(c, t2, 1.0 / 24.0);
    c = fma(c, t2, -0.5);
    c = fma(c, t2, 1.0);
    return upper ? -c : c;
}

// nanoGPT's schedule at iteration it = s - 1 (s: the step count after this step's
// increment, 1 for the first step): lr (it + 1) / warmup during warmup, min_lr after
// `decay`, cosine in between. src/kernels/adam.rs (LrSchedule) and the CPU reference
// (cpu::scheduled_lr) say the same.
__device__ __forceinline__ double scheduled_lr(const AdamHyper& h, double s) {
    if (h.sched == 0) return h.lr;
    const double it = s - 1.0;
    if (it < (double)h.warmup) return h.lr * (it + 1.0) / (double)h.warmup;
    if (it > (double)h.decay) return h.min_lr;
    const double span = (double)(h.decay - h.warmup);
    const double ratio = span > 0.0 ? (it - (double)h.warmup) / span : 1.0;
    const double coeff = 0.5 * (1.0 + cos_pi_unit(ratio));
    return fma(coeff, h.lr - h.min_lr, h.min_lr);
}

__device__ __forceinline__ AdamStep adam_step_consts(const AdamHyper& h, const float* step) {
    // torch keeps both bias corrections as f32 before using them; so do we.
    const double s = (double)*step;
    const float bc1 = (float)(1.0 - pow(h.beta1, s));
    const float bc2 = (float)(1.0 - pow(h.beta2, s));
    AdamStep c;
    c.lr = scheduled_lr(h, s);
    c.step_size = (float)(c.lr / (double)bc1);
    c.bc2_sqrt = sqrtf(bc2);
    return c;
}

__device__ __forceinline__ float grad_value(const float* g, uint64_t i) { return g[i]; }
__device__ __forceinline__ float grad_value(const __half* g, uint64_t i) { return __half2float(g[i]); }
__device__ __forceinline__ float grad_value(const bf16_t* g, uint64_t i) { return __bfloat162float(g[i]); }

// Four gradients from one aligned 16-byte (f32) or 8-byte (half) load.
__device__ __forceinline__ void grad_values4(const float* g, uint64_t i, float* gs) {
    const float4 gv = *reinterpret_cast<const float4*>(g + i);
    gs[0] = gv.x; gs[1] = gv.y; gs[2] = gv.z; gs[3] = gv.w;
}
template <typename H>
__device__ __forceinline__ void grad_values4(const H* g, uint64_t i, float* gs) {
    const uint2 gv = *reinterpret_cast<const uint2*>(g + i);
    const float2 a = unpack2<H>(gv.x), b = unpack2<H>(gv.y);
    gs[0] = a.x; gs[1] = a.y; gs[2] = b.x; gs[3] = b.y;
}

// Where the updated weights go. Master: f32 master weights plus an optional half copy.
struct MasterStore {
    float* p;
    void* copy;  // nullptr, or n halves (f16, or bf16 when copy_bf16)
    int32_t copy_bf16;

    __device__ __forceinline__ uintptr_t wide_bits(uint64_t b) const { return reinterpret_cast<uintptr_t>(p + b); }
    __device__ __forceinline__ uintptr_t narrow_bits(uint64_t b) const {
        return copy ? reinterpret_cast<uintptr_t>(reinterpret_cast<uint16_t*>(copy) + b) : 0;
    }
    __device__ __forceinline__ float4 load4(uint64_t i) const { return *reinterpret_cast<const float4*>(p + i); }
    __device__ __forceinline__ float load1(uint64_t i) const { return p[i]; }
    __device__ __forceinline__ void store4(uint64_t i, float4 pv) const {
        *reinterpret_cast<float4*>(p + i) = pv;
        if (copy) {
            const uint2 out = copy_bf16 ? make_uint2(pack2<bf16_t>(pv.x, pv.y), pack2<bf16_t>(pv.z, pv.w))
                                        : make_uint2(pack2<__half>(pv.x, pv.y), pack2<__half>(pv.z, pv.w));
            *reinterpret_cast<uint2*>(reinterpret_cast<uint16_t*>(copy) + i) = out;
        }
    }
    __device__ __forceinline__ void store1(uint64_t i, float pi) const {
        p[i] = pi;
        if (copy) {
            if (copy_bf16) reinterpret_cast<bf16_t*>(copy)[i] = __float2bfloat16_rn(pi);
            else reinterpret_cast<__half*>(copy)[i] = __float2half_rn(pi);
        }
    }
};

// The stochastic-rounding bits of element i at (seed, step): splitmix64's finalizer over
// a mix of the three, low 16 bits. src/backend/cpu.rs (sr_bits) computes the same.
__device__ __forceinline__ uint32_t sr_bits(uint64_t seed, uint32_t step, uint64_t i) {
    uint64_t z = seed + 0x9E3779B97F4A7C15ull * (i + 1) + 0xC2B2AE3D27D4EB4Full * (uint64_t)step;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (uint32_t)z & 0xffffu;
}

// x rounded to bf16 stochastically with the 16 random bits r (see the header).
__device__ __forceinline__ bf16_t round_bf16_stochastic(float x, uint32_t r) {
    if (!isfinite(x)) return __float2bfloat16_rn(x);
    const uint32_t b = (__float_as_uint(x) + r) & 0xffff0000u;
    return __ushort_as_bfloat16((unsigned short)(b >> 16));
}

// Pure bf16: the bf16 parameters are the weights; stores round stochastically.
struct PureBf16Store {
    bf16_t* p;
    uint64_t seed;
    uint32_t step;

    __device__ __forceinline__ uintptr_t wide_bits(uint64_t) const { return 0; }
    __device__ __forceinline__ uintptr_t narrow_bits(uint64_t b) const { return reinterpret_cast<uintptr_t>(p + b); }
    __device__ __forceinline__ float4 load4(uint64_t i) const {
        const uint2 w = *reinterpret_cast<const uint2*>(p + i);
        const float2 a = unpack2<bf16_t>(w.x), b = unpack2<bf16_t>(w.y);
        return make_float4(a.x, a.y, b.x, b.y);
    }
    __device__ __forceinline__ float load1(uint64_t i) const { return __bfloat162float(p[i]); }
    __device__ __forceinline__ void store4(uint64_t i, float4 pv) const {
        union { uint2 u; bf16_t h[4]; } out;
        out.h[0] = round_bf16_stochastic(pv.x, sr_bits(seed, step, i));
        out.h[1] = round_bf16_stochastic(pv.y, sr_bits(seed, step, i + 1));
        out.h[2] = round_bf16_stochastic(pv.z, sr_bits(seed, step, i + 2));
        out.h[3] = round_bf16_stochastic(pv.w, sr_bits(seed, step, i + 3));
        *reinterpret_cast<uint2*>(p + i) = out.u;
    }
    __device__ __forceinline__ void store1(uint64_t i, float pi) const {
        p[i] = round_bf16_stochastic(pi, sr_bits(seed, step, i));
    }
};

__device__ __forceinline__ void adam_math(float& p, float g, float& m, float& v, const AdamHyper& h,
                                          const AdamStep& c, const float* scale) {
    if (scale) g = (float)((double)g / (double)*scale);
    if (h.weight_decay != 0.0) {
        if (h.mode == 0) p = (float)(p - c.lr * h.weight_decay * p);
        else g = (float)(g + p * h.weight_decay);
    }
    m = (float)(h.beta1 * m + (1.0 - h.beta1) * g);
    v = (float)(h.beta2 * v + (1.0 - h.beta2) * g * g);
    const float denom = (float)(sqrtf(v) / c.bc2_sqrt + h.eps);
    p -= c.step_size * m / denom;
}

// Updates elements [begin, end); this thread takes first, first + stride, ... (in units of
// 4 elements on the vector path).
template <typename G, typename Store>
__device__ __forceinline__ void adam_range(const Store& st, const G* g, float* m, float* v, uint64_t begin,
                                           uint64_t end, uint64_t first, uint64_t stride, const AdamHyper& h,
                                           const AdamStep& c, const float* scale) {
    const uintptr_t wide = st.wide_bits(begin) | reinterpret_cast<uintptr_t>(m + begin) |
                           reinterpret_cast<uintptr_t>(v + begin) |
                           (sizeof(G) == 4 ? reinterpret_cast<uintptr_t>(g + begin) : 0);
    const uintptr_t narrow = st.narrow_bits(begin) | (sizeof(G) == 2 ? reinterpret_cast<uintptr_t>(g + begin) : 0);
    uint64_t tail = begin;
    if ((wide & 15) == 0 && (narrow & 7) == 0) {
        const uint64_t nvec = (end - begin) / 4;
        for (uint64_t q = first; q < nvec; q += stride) {
            const uint64_t i = begin + 4 * q;
            float4 pv = st.load4(i);
            float4 mv = *reinterpret_cast<const float4*>(m + i);
            float4 vv = *reinterpret_cast<const float4*>(v + i);
            float gs[4];
            grad_values4(g, i, gs);
            adam_math(pv.x, gs[0], mv.x, vv.x, h, c, scale);
            adam_math(pv.y, gs[1], mv.y, vv.y, h, c, scale);
            adam_math(pv.z, gs[2], mv.z, vv.z, h, c, scale);
            adam_math(pv.w, gs[3], mv.w, vv.w, h, c, scale);
            st.store4(i, pv);
            *reinterpret_cast<float4*>(m + i) = mv;
            *reinterpret_cast<float4*>(v + i) = vv;
        }
        tail = begin + 4 * nvec;
    }
    for (uint64_t i = tail + first; i < end; i += stride) {
        float pi = st.load1(i), mi = m[i], vi = v[i];
        adam_math(pi, grad_value(g, i), mi, vi, h, c, scale);
        st.store1(i, pi);
        m[i] = mi; v[i] = vi;
    }
}

// One thread: advance the step count unless this step overflowed.
extern "C" __global__ void adam_count_step(float* step, const float* found_inf) {
    if (blockIdx.x == 0 && threadIdx.x == 0 && !(found_inf && *found_inf != 0.0f)) *step += 1.0f;
}

#define ADAM_FLAT(name, G)                                                                                     \
    extern "C" __global__ void name(float* p, const G* g, float* m, float* v, void* copy, uint64_t n,           \
                                    const float* step, const float* scale, const float* found_inf, AdamHyper h) { \
        if (found_inf && *found_inf != 0.0f) return;                                                            \
        const AdamStep c = adam_step_consts(h, step);                                                           \
        const MasterStore st = {p, copy, h.copy_bf16};                                                          \
        adam_range(st, g, m, v, 0, n, (uint64_t)blockIdx.x * blockDim.x + threadIdx.x,                          \
                   (uint64_t)gridDim.x * blockDim.x, h, c, scale);                                              \
    }

ADAM_FLAT(adamw_step_f32, float)
ADAM_FLAT(adamw_step_f16, __half)
ADAM_FLAT(adamw_step_bf16, bf16_t)

// Pure bf16: p is the bf16 weights (no master, no copy); `seed` seeds the stochastic
// rounding, whose stream also depends on the step count after this step's increment.
#define ADAM_PURE(name, G)                                                                                      \
    extern "C" __global__ void name(bf16_t* p, const G* g, float* m, float* v, uint64_t n, const float* step,  \
                                    const float* scale, const float* found_inf, AdamHyper h, uint64_t seed) {   \
        if (found_inf && *found_inf != 0.0f) return;                                                            \
        const AdamStep c = adam_step_consts(h, step);                                                           \
        const PureBf16Store st = {p, seed, (uint32_t)*step};                                                    \
        adam_range(st, g, m, v, 0, n, (uint64_t)blockIdx.x * blockDim.x + threadIdx.x,                          \
                   (uint64_t)gridDim.x * blockDim.x, h, c, scale);                                              \
    }

ADAM_PURE(adamw_pure_f32, float)
ADAM_PURE(adamw_pure_bf16, bf16_t)

// Multi-tensor: up to ADAM_MT_TENSORS tensors per launch, each with its own pointers.
#define ADAM_MT_TENSORS 32

struct AdamList {
    uint64_t p[ADAM_MT_TENSORS], g[ADAM_MT_TENSORS], m[ADAM_MT_TENSORS], v[ADAM_MT_TENSORS];
    uint64_t copy[ADAM_MT_TENSORS];  // 0 where a tensor has no half copy
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
        const MasterStore st = {reinterpret_cast<float*>(list.p[t]), reinterpret_cast<void*>(list.copy[t]),     \
                                h.copy_bf16};                                                                   \
        adam_range(st, reinterpret_cast<const G*>(list.g[t]), reinterpret_cast<float*>(list.m[t]),              \
                   reinterpret_cast<float*>(list.v[t]), begin, end, threadIdx.x, blockDim.x, h, c, scale);      \
    }

ADAM_MULTI(adamw_step_multi_f32, float)
ADAM_MULTI(adamw_step_multi_f16, __half)
ADAM_MULTI(adamw_step_multi_bf16, bf16_t)

// ----------------------------------------------------------------------------
// Gradient clipping by global norm (PyTorch's clip_grad_norm_ after GradScaler.unscale_,
// as nanoGPT and llm.c clip at 1.0), on the device with no host synchronization:
//   norm = sqrt(sum g^2) / scale                (the norm of the unscaled gradients)
//   coef = max_norm / (norm + 1e-6)             (PyTorch's formula, clamped to 1)
//   eff  = coef < 1 ? scale / coef : scale      (f32)
// and AdamW then divides the gradients by eff instead of scale: g / (scale / coef) is the
// clipped, unscaled gradient (one division instead of torch's division then product: the
// two differ in the last bit). Two launches: adam_grad_sumsq_<g> writes one f64 partial
// sum of squares per block (grid-stride, a fixed tree in shared memory), adam_clip_scale
// (one block) sums the partials in a fixed order: deterministic for a given grid, which
// the launcher sizes from the SM count. Extra traffic: one read of the gradients (4 bytes
// per parameter with f32 gradients).

#define CLIP_THREADS 256

template <typename G>
__device__ __forceinline__ void grad_sumsq(const G* g, uint64_t n, double* partial) {
    __shared__ double sums[CLIP_THREADS];
    double acc = 0.0;
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const double x = (double)grad_value(g, i);
        acc += x * x;
    }
    sums[threadIdx.x] = acc;
    __syncthreads();
    for (int w = CLIP_THREADS / 2; w > 0; w /= 2) {
        if (threadIdx.x < w) sums[threadIdx.x] += sums[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[blockIdx.x] = sums[0];
}

extern "C" __global__ void __launch_bounds__(CLIP_THREADS) adam_grad_sumsq_f32(const float* g, uint64_t n, double* partial) {
    grad_sumsq(g, n, partial);
}
extern "C" __global__ void __launch_bounds__(CLIP_THREADS) adam_grad_sumsq_f16(const __half* g, uint64_t n, double* partial) {
    grad_sumsq(g, n, partial);
}
extern "C" __global__ void __launch_bounds__(CLIP_THREADS) adam_grad_sumsq_bf16(const bf16_t* g, uint64_t n, double* partial) {
    grad_sumsq(g, n, partial);
}

// One block: the partials' sum in a fixed order, then eff (see above) into *eff_scale.
extern "C" __global__ void __launch_bounds__(CLIP_THREADS) adam_clip_scale(const double* partial, uint32_t blocks,
                                                                           const float* scale, double max_norm,
                                                                           float* eff_scale) {
    __shared__ double sums[CLIP_THREADS];
    double acc = 0.0;
    for (uint32_t b = threadIdx.x; b < blocks; b += CLIP_THREADS) acc += partial[b];
    sums[threadIdx.x] = acc;
    __syncthreads();
    for (int w = CLIP_THREADS / 2; w > 0; w /= 2) {
        if (threadIdx.x < w) sums[threadIdx.x] += sums[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        const double s = scale ? (double)*scale : 1.0;
        const double norm = sqrt(sums[0]) / s;
        const double coef = max_norm / (norm + 1e-6);
        *eff_scale = coef < 1.0 ? (float)(s / coef) : (float)s;
    }
}
