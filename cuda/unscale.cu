// unscale: the gradient unscale with the inf/NaN check of mixed-precision training.
//
//   g[i] *= inv_scale       in place, inv_scale = (float)(1.0 / (double)*scale), as
//                           PyTorch's GradScaler computes it (exact for powers of two)
//   *found_inf = 1.0f       if any g[i] was inf or NaN before scaling; never cleared here
//
// With scale == nullptr the pass only checks: nothing is written but found_inf. That is
// the pass a training step uses when adamw_step applies the scale itself (it divides by
// the scale as torch's fused AdamW does), so the gradients are read once here and once
// there and never written.
//
// Layouts: contiguous ranges. Gradients f32, f16 or bf16 (kernels `_f32`, `_f16`,
// `_bf16`); arithmetic in f32; half results are rounded to nearest even.
// Minimum bytes per element: unscale f32 8 (read 4 + write 4), f16 and bf16 4; check only
// f32 4, f16 and bf16 2. 16-byte loads and stores when the range is 16-byte aligned, scalar otherwise.
// found_inf: one write per block at most, after a block-wide OR (__syncthreads_or).

// ptx-targets: sm_75 sm_80

#include <stdint.h>

#include "half.cuh"
#include "multi_tensor.cuh"

// ----------------------------------------------------------------------------
// kernels

__device__ __forceinline__ float inv_scale_of(const float* scale) {
    return scale ? (float)(1.0 / (double)*scale) : 1.0f;
}

__device__ __forceinline__ bool nonfinite(float x) { return !isfinite(x); }

// Unscales or checks g[begin, end) with the threads of this block striding by `step`
// from `first`; returns whether this thread saw a non-finite value. 16-byte vectors
// when `vec` (the caller checked alignment of g + begin and that begin is a multiple of
// the vector width).
__device__ __forceinline__ bool unscale_range_f32(float* g, uint64_t begin, uint64_t end, uint64_t first,
                                                  uint64_t step, float inv, bool write) {
    bool bad = false;
    const bool vec = ((reinterpret_cast<uintptr_t>(g + begin) & 15) == 0);
    uint64_t tail = begin;
    if (vec) {
        const uint64_t nvec = (end - begin) / 4;
        float4* gv = reinterpret_cast<float4*>(g + begin);
        for (uint64_t i = first; i < nvec; i += step) {
            float4 v = gv[i];
            bad |= nonfinite(v.x) | nonfinite(v.y) | nonfinite(v.z) | nonfinite(v.w);
            if (write) {
                v.x *= inv; v.y *= inv; v.z *= inv; v.w *= inv;
                gv[i] = v;
            }
        }
        tail = begin + nvec * 4;
    }
    for (uint64_t i = tail + first; i < end; i += step) {
        const float v = g[i];
        bad |= nonfinite(v);
        if (write) g[i] = v * inv;
    }
    return bad;
}

template <typename H>
__device__ __forceinline__ bool unscale_range_half(H* g, uint64_t begin, uint64_t end, uint64_t first, uint64_t step,
                                                   float inv, bool write) {
    bool bad = false;
    const bool vec = ((reinterpret_cast<uintptr_t>(g + begin) & 15) == 0);
    uint64_t tail = begin;
    if (vec) {
        const uint64_t nvec = (end - begin) / 8;
        uint4* gv = reinterpret_cast<uint4*>(g + begin);
        for (uint64_t i = first; i < nvec; i += step) {
            Half8 v;
            v.u = gv[i];
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const float2 f = unpack2<H>(v.w[k]);
                bad |= nonfinite(f.x) | nonfinite(f.y);
                v.w[k] = pack2<H>(f.x * inv, f.y * inv);
            }
            if (write) gv[i] = v.u;
        }
        tail = begin + nvec * 8;
    }
    for (uint64_t i = tail + first; i < end; i += step) {
        const float v = to_f32(g[i]);
        bad |= nonfinite(v);
        if (write) g[i] = from_f32<H>(v * inv);
    }
    return bad;
}

// Every thread of the block must call this exactly once.
__device__ __forceinline__ void raise_found_inf(bool bad, float* found_inf) {
    if (__syncthreads_or(bad) && threadIdx.x == 0) *found_inf = 1.0f;
}

extern "C" __global__ void unscale_check_f32(float* g, uint64_t n, const float* scale, float* found_inf) {
    const uint64_t first = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const uint64_t step = (uint64_t)gridDim.x * blockDim.x;
    const bool bad = unscale_range_f32(g, 0, n, first, step, inv_scale_of(scale), scale != nullptr);
    raise_found_inf(bad, found_inf);
}

#define UNSCALE_FLAT_HALF(name, H)                                                                 \
    extern "C" __global__ void name(H* g, uint64_t n, const float* scale, float* found_inf) {          \
        const uint64_t first = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;                        \
        const uint64_t step = (uint64_t)gridDim.x * blockDim.x;                                        \
        const bool bad = unscale_range_half(g, 0, n, first, step, inv_scale_of(scale), scale != nullptr); \
        raise_found_inf(bad, found_inf);                                                               \
    }

UNSCALE_FLAT_HALF(unscale_check_f16, __half)
UNSCALE_FLAT_HALF(unscale_check_bf16, bf16_t)

// Multi-tensor: up to UNSCALE_MT_TENSORS gradient tensors per launch.
#define UNSCALE_MT_TENSORS 64

struct UnscaleList {
    uint64_t ptr[UNSCALE_MT_TENSORS];
    uint64_t len[UNSCALE_MT_TENSORS];
    MtBlocks blocks;
};

extern "C" __global__ void unscale_check_multi_f32(UnscaleList list, const float* scale, float* found_inf) {
    const int t = list.blocks.tensor[blockIdx.x];
    uint64_t begin, end;
    mt_chunk_range(list.blocks, list.len[t], &begin, &end);
    // Chunks start at multiples of MT_CHUNK, so a 16-byte aligned tensor gives 16-byte
    // aligned chunks.
    const bool bad = unscale_range_f32(reinterpret_cast<float*>(list.ptr[t]), begin, end, threadIdx.x, blockDim.x,
                                       inv_scale_of(scale), scale != nullptr);
    raise_found_inf(bad, found_inf);
}

#define UNSCALE_MULTI_HALF(name, H)                                                                \
    extern "C" __global__ void name(UnscaleList list, const float* scale, float* found_inf) {          \
        const int t = list.blocks.tensor[blockIdx.x];                                                  \
        uint64_t begin, end;                                                                           \
        mt_chunk_range(list.blocks, list.len[t], &begin, &end);                                        \
        const bool bad = unscale_range_half(reinterpret_cast<H*>(list.ptr[t]), begin, end, threadIdx.x, \
                                            blockDim.x, inv_scale_of(scale), scale != nullptr);        \
        raise_found_inf(bad, found_inf);                                                               \
    }

UNSCALE_MULTI_HALF(unscale_check_multi_f16, __half)
UNSCALE_MULTI_HALF(unscale_check_multi_bf16, bf16_t)
