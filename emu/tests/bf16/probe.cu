// Probe of the bf16 PTX nvcc emits (emu/tests/bf16.rs loads and runs both files):
//   nvcc -ptx -O3 -std=c++17 -arch=sm_80 probe.cu -o probe.sm_80.ptx   (and sm_90)
// with the pinned nvcc (.tools/nvcc, CUDA 13). Not built by the crate.
#include <cuda_bf16.h>
#include <mma.h>
using namespace nvcuda;
extern "C" __global__ void cvt_k(const float* x, __nv_bfloat16* y, __nv_bfloat162* y2, float* back, float2* back2, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    __nv_bfloat16 h = __float2bfloat16_rn(x[i]);
    y[i] = h;
    __nv_bfloat162 h2 = __floats2bfloat162_rn(x[i], x[i] * 2.0f);
    y2[i] = h2;
    back[i] = __bfloat162float(h);
    back2[i] = __bfloat1622float2(h2);
  }
}
extern "C" __global__ void arith_k(const __nv_bfloat16* a, const __nv_bfloat16* b, const __nv_bfloat16* c, __nv_bfloat16* o, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    o[6*i+0] = __hadd(a[i], b[i]);
    o[6*i+1] = __hmul(a[i], b[i]);
    o[6*i+2] = __hfma(a[i], b[i], c[i]);
    o[6*i+3] = __hmin(a[i], b[i]);
    o[6*i+4] = __hmax(a[i], b[i]);
    o[6*i+5] = __hsub(a[i], b[i]);
  }
}
extern "C" __global__ void arith2_k(const __nv_bfloat162* a, const __nv_bfloat162* b, const __nv_bfloat162* c, __nv_bfloat162* o, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    o[6*i+0] = __hadd2(a[i], b[i]);
    o[6*i+1] = __hmul2(a[i], b[i]);
    o[6*i+2] = __hfma2(a[i], b[i], c[i]);
    o[6*i+3] = __hmin2(a[i], b[i]);
    o[6*i+4] = __hmax2(a[i], b[i]);
    o[6*i+5] = __hsub2(a[i], b[i]);
  }
}
extern "C" __global__ void misc_k(const __nv_bfloat16* a, __nv_bfloat16* o, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    o[4*i+0] = __hneg(a[i]);
    o[4*i+1] = __habs(a[i]);
    o[4*i+2] = __hmin_nan(a[i], a[i+1]);
    o[4*i+3] = __hmax_nan(a[i], a[i+1]);
  }
}
template <typename LA, typename LB>
__device__ void mm(const __nv_bfloat16* A, const __nv_bfloat16* B, float* C, int lda, int ldb, int ldc) {
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, LA> a;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, LB> b;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> c;
  wmma::load_matrix_sync(c, C, ldc, wmma::mem_row_major);
  wmma::load_matrix_sync(a, A, lda);
  wmma::load_matrix_sync(b, B, ldb);
  wmma::mma_sync(c, a, b, c);
  wmma::store_matrix_sync(C, c, ldc, wmma::mem_row_major);
}
extern "C" __global__ void wmma_rr(const __nv_bfloat16* A, const __nv_bfloat16* B, float* C, int lda, int ldb, int ldc) { mm<wmma::row_major, wmma::row_major>(A,B,C,lda,ldb,ldc); }
extern "C" __global__ void wmma_cc(const __nv_bfloat16* A, const __nv_bfloat16* B, float* C, int lda, int ldb, int ldc) { mm<wmma::col_major, wmma::col_major>(A,B,C,lda,ldb,ldc); }
extern "C" __global__ void cmp_k(const __nv_bfloat16* a, const __nv_bfloat16* b, int* o, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    o[6*i+0] = __hgt(a[i], b[i]);
    o[6*i+1] = __heq(a[i], b[i]);
    o[6*i+2] = __hisnan(a[i]);
    o[6*i+3] = __hisinf(a[i]);
    o[6*i+4] = __hle(a[i], b[i]);
    o[6*i+5] = __hltu(a[i], b[i]);
  }
}
