// reduce: the deterministic reductions of a training step.
//
//   bias_grad_<h>:  db[c] = beta * db[c] + sum_r dz[r, c]      dz rows x cols f16 or bf16, db f32
//                   (a linear layer's bias gradient; beta = 1 accumulates micro-batches)
//                   *found_inf = 1 if any db[c] written is inf or NaN (optional; sticky):
//                   the training step's overflow check, made as the gradient is written
//   sum_f32:        out[0] = beta * out[0] + factor * sum_i x[i]
//                   (the mean loss from per-row losses; accumulation across micro-batches)
//
// With beta == 0 the old value is not read, so a NaN left there does not propagate.
// Deterministic: fixed partition of the sums, tree reductions in shared memory, no atomics;
// the same inputs give the same bits on every run.
//
// bias_grad_f16: a block of 32 x 8 threads owns 32 adjacent columns; thread (x, y) sums rows
// y, y + 8, ... of column x (consecutive x read consecutive halves: coalesced), then the 8
// partial sums of each column are added in shared memory. Bytes per dz element: 2.
// sum_f32: one block of 1024 threads; meant for short ranges (one value per row).

// ptx-targets: sm_75
// (bf16 -> f32 is a shift: an sm_80 variant would be the same PTX)

#include <stdint.h>

#include "half.cuh"

// ----------------------------------------------------------------------------
// kernels

#define BIAS_GRAD_COLS 32
#define BIAS_GRAD_ROWS 8
#define SUM_THREADS 1024

template <typename H>
__device__ __forceinline__ void bias_grad(const H* __restrict__ dz, float* __restrict__ db, int64_t rows, int64_t cols,
                                          float beta, float* __restrict__ found_inf) {
    __shared__ float partial[BIAS_GRAD_ROWS][BIAS_GRAD_COLS + 1];
    const int64_t c = (int64_t)blockIdx.x * BIAS_GRAD_COLS + threadIdx.x;
    float s = 0.0f;
    if (c < cols) {
        for (int64_t r = threadIdx.y; r < rows; r += BIAS_GRAD_ROWS) s += to_f32(dz[r * cols + c]);
    }
    partial[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < cols) {
        float total = 0.0f;
#pragma unroll
        for (int y = 0; y < BIAS_GRAD_ROWS; y++) total += partial[y][threadIdx.x];
        const float v = beta == 0.0f ? total : beta * db[c] + total;
        db[c] = v;
        // Sticky, same value from every writer: no atomic needed.
        if (found_inf && !isfinite(v)) *found_inf = 1.0f;
    }
}

extern "C" __global__ void bias_grad_f16(const __half* __restrict__ dz, float* __restrict__ db, int64_t rows,
                                         int64_t cols, float beta, float* __restrict__ found_inf) {
    bias_grad(dz, db, rows, cols, beta, found_inf);
}
extern "C" __global__ void bias_grad_bf16(const bf16_t* __restrict__ dz, float* __restrict__ db, int64_t rows,
                                          int64_t cols, float beta, float* __restrict__ found_inf) {
    bias_grad(dz, db, rows, cols, beta, found_inf);
}

extern "C" __global__ void sum_f32(const float* __restrict__ x, float* __restrict__ out, uint64_t n, float factor,
                                   float beta) {
    __shared__ float partial[SUM_THREADS];
    float s = 0.0f;
    for (uint64_t i = threadIdx.x; i < n; i += SUM_THREADS) s += x[i];
    partial[threadIdx.x] = s;
    __syncthreads();
    for (int w = SUM_THREADS / 2; w > 0; w /= 2) {
        if (threadIdx.x < w) partial[threadIdx.x] += partial[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        const float total = factor * partial[0];
        out[0] = beta == 0.0f ? total : beta * out[0] + total;
    }
}
