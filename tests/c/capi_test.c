/* The C ABI from C, as another engine links it: include/mixed_precision.h and the
   static library, built with the system C compiler by tests/capi.rs.

   Always: the error paths (null handle, null pointers, null out pointer) give a status
   and a message naming the function, never a crash.
   Without a CUDA driver: mp_handle_create gives MP_ERR_NO_DRIVER and a message.
   With one (the driver API is loaded with dlopen, so building needs no CUDA headers):
   no current context gives MP_ERR_NO_DEVICE; then, on the primary context and a stream
   of our own, real calls of every family whose results are checked on the host
   (cast both ways, GEMM with bias + ReLU and a transposed layout, multi-tensor unscale
   with and without an inf, multi-tensor AdamW with its found_inf skip, update_scale),
   and rejected before any launch: misaligned or overlapping pointers (within a tensor
   list too), out-of-range enumeration values, shapes whose byte counts overflow.
   Then bf16, against host references whose bf16 rounding is written out below (round
   to nearest even on the f32 bits, NaN kept): both casts bit for bit on edge values;
   the bf16 GEMM in every layout with its epilogues on compute capability 8.0 and newer,
   and below 8.0 its MP_ERR_UNSUPPORTED with C untouched (tests/capi.rs runs this program
   on whatever device the driver offers: run it at MP_EMU_CC=8.0 and 7.5 on the
   emulator); unscale on bf16 gradients, flat and multi; AdamW writing bf16 copies
   from bf16 or f32 gradients; pure-bf16 AdamW (stochastic rounding, seeded); and the
   error paths of each.

   Ordering: the kernels run on a CU_STREAM_NON_BLOCKING stream, which does not wait for
   the legacy default stream, so every upload is a cuMemcpyHtoDAsync on that same stream.
   A synchronous cuMemcpyHtoD (legacy stream, pageable memory) may return before its DMA
   lands, and a kernel on the non-blocking stream could read stale bytes on a GPU; the
   emulator models that (its driver docs, emu/src/driver/mem.rs), so it fails there too.
   Downloads synchronize the stream first, then use the synchronous cuMemcpyDtoH.

   Exit status 0 when every check holds. MIXED_PRECISION_REQUIRE_GPU=1 turns "no
   driver / no device" into a failure, as for the Rust tests. */

#include "mixed_precision.h"

#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
static int checks;

#define CHECK(cond, ...)                                                                 \
  do {                                                                                   \
    checks++;                                                                            \
    if (!(cond)) {                                                                       \
      failures++;                                                                        \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                               \
      fprintf(stderr, __VA_ARGS__);                                                      \
      fprintf(stderr, " [last error: %s]\n", mp_last_error());                           \
    }                                                                                    \
  } while (0)

#define EXPECT(call, want)                                                               \
  do {                                                                                   \
    MpStatus got_ = (call);                                                              \
    CHECK(got_ == (want), "%s returned %d, expected %s (%d)", #call, (int)got_, #want,   \
          (int)(want));                                                                  \
  } while (0)

static int last_error_names(const char *what) { return strstr(mp_last_error(), what) != NULL; }

/* ---- error paths that need no driver ------------------------------------------------ */

static void null_paths(void) {
  EXPECT(mp_cast_f32_f16(NULL, 0, 0, 4), MP_ERR_NULL_POINTER);
  CHECK(last_error_names("mp_cast_f32_f16"), "the message names the function");
  EXPECT(mp_cast_f16_f32(NULL, 0, 0, 4), MP_ERR_NULL_POINTER);
  EXPECT(mp_gemm(NULL, NULL), MP_ERR_NULL_POINTER);
  EXPECT(mp_unscale_check_f32(NULL, 0, 4, 0, 0), MP_ERR_NULL_POINTER);
  EXPECT(mp_unscale_check_multi_f16(NULL, NULL, NULL, 2, 0, 0), MP_ERR_NULL_POINTER);
  EXPECT(mp_adamw_step_f32(NULL, NULL, 0, 0, 0, NULL), MP_ERR_NULL_POINTER);
  EXPECT(mp_adamw_step_multi_f16(NULL, NULL, 0, 0, 0, 0, NULL), MP_ERR_NULL_POINTER);
  EXPECT(mp_update_scale(NULL, 0, 0, 0, 2.0, 0.5, 2000), MP_ERR_NULL_POINTER);
  CHECK(last_error_names("mp_update_scale"), "the message names the function");
  /* The bf16 entry points: the same contract. */
  EXPECT(mp_cast_f32_bf16(NULL, 0, 0, 4), MP_ERR_NULL_POINTER);
  CHECK(last_error_names("mp_cast_f32_bf16"), "the message names the function");
  EXPECT(mp_cast_bf16_f32(NULL, 0, 0, 4), MP_ERR_NULL_POINTER);
  EXPECT(mp_unscale_check_bf16(NULL, 0, 4, 0, 0), MP_ERR_NULL_POINTER);
  EXPECT(mp_unscale_check_multi_bf16(NULL, NULL, NULL, 2, 0, 0), MP_ERR_NULL_POINTER);
  EXPECT(mp_adamw_step_bf16(NULL, NULL, 0, 0, 0, NULL), MP_ERR_NULL_POINTER);
  EXPECT(mp_adamw_step_f32_bf16(NULL, NULL, 0, 0, 0, NULL), MP_ERR_NULL_POINTER);
  EXPECT(mp_adamw_step_multi_bf16(NULL, NULL, 0, 0, 0, 0, NULL), MP_ERR_NULL_POINTER);
  EXPECT(mp_adamw_step_multi_f32_bf16(NULL, NULL, 0, 0, 0, 0, NULL), MP_ERR_NULL_POINTER);
  EXPECT(mp_adamw_pure_f32(NULL, NULL, 0, 0, 0, NULL, 1), MP_ERR_NULL_POINTER);
  EXPECT(mp_adamw_pure_bf16(NULL, NULL, 0, 0, 0, NULL, 1), MP_ERR_NULL_POINTER);
  CHECK(last_error_names("mp_adamw_pure_bf16"), "the message names the function");
  EXPECT(mp_handle_create(NULL, NULL), MP_ERR_NULL_POINTER);
  EXPECT(mp_handle_destroy(NULL), MP_OK);
  CHECK(strcmp(mp_last_error(), "") == 0, "a success clears the last error");
}

/* ---- host references ---------------------------------------------------------------- */

static uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

static float bits_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* float -> binary16, round to nearest even, overflow to inf, NaN stays NaN. */
static uint16_t f32_to_f16(float f) {
  uint32_t x = f32_bits(f);
  uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) return sign | (abs > 0x7f800000u ? 0x7e00u : 0x7c00u);
  if (abs >= 0x477ff000u) return sign | 0x7c00u; /* >= 65520 rounds to inf */
  if (abs < 0x38800000u) {                        /* below 2^-14: subnormal or zero */
    if (abs < 0x33000000u) return sign;           /* below half the smallest subnormal */
    uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    /* value = mant * 2^(e - 150); in units of 2^-24 that is mant * 2^(e - 126). */
    int shift = 126 - (int)(abs >> 23);
    uint32_t half = mant >> shift;
    uint32_t rest = mant & ((1u << shift) - 1);
    uint32_t mid = 1u << (shift - 1);
    if (rest > mid || (rest == mid && (half & 1))) half++;
    return sign | (uint16_t)half;
  }
  uint32_t h = ((abs >> 13) - (112u << 10));      /* rebias 127 -> 15 */
  uint32_t rest = abs & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1))) h++;
  return sign | (uint16_t)h;
}

static float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ffu;
  if (e == 0x1f) return bits_f32(sign | 0x7f800000u | (m << 13));
  if (e == 0) return (sign ? -1.0f : 1.0f) * ldexpf((float)m, -24);
  return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

static int same_f16(uint16_t a, uint16_t b) {
  int nan_a = (a & 0x7c00u) == 0x7c00u && (a & 0x3ffu);
  int nan_b = (b & 0x7c00u) == 0x7c00u && (b & 0x3ffu);
  return (nan_a && nan_b) || a == b;
}

/* float -> bfloat16 (the upper 16 bits of a binary32), round to nearest even on the
   f32 bits: adding 0x7fff plus the lowest kept bit carries into the kept half exactly
   when the dropped half is above the tie, or at the tie with an odd kept half; a carry
   out of the largest finite exponent gives inf. NaN stays NaN (quieted, sign kept). */
static uint16_t f32_to_bf16(float f) {
  uint32_t x = f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x0040u);
  return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

static float bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

static int same_bf16(uint16_t a, uint16_t b) {
  int nan_a = (a & 0x7f80u) == 0x7f80u && (a & 0x7fu);
  int nan_b = (b & 0x7f80u) == 0x7f80u && (b & 0x7fu);
  return (nan_a && nan_b) || a == b;
}

/* One bf16 unit in the last place at |x| (x finite, normal in bf16). */
static double bf16_ulp(double x) {
  return (double)bits_f32(f32_bits((float)fabs(x)) & 0x7f800000u) * 0x1.0p-7;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static float uniform(float lo, float hi) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return lo + (hi - lo) * (float)((rng_state >> 40) * 0x1.0p-24);
}

/* ---- the CUDA driver API, loaded at run time ---------------------------------------- */

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef unsigned long long CUdeviceptr;

static struct {
  CUresult (*init)(unsigned);
  CUresult (*device_count)(int *);
  CUresult (*primary_retain)(CUcontext *, CUdevice);
  CUresult (*primary_release)(CUdevice);
  CUresult (*ctx_set_current)(CUcontext);
  CUresult (*stream_create)(CUstream *, unsigned);
  CUresult (*stream_destroy)(CUstream);
  CUresult (*stream_sync)(CUstream);
  CUresult (*alloc)(CUdeviceptr *, size_t);
  CUresult (*free)(CUdeviceptr);
  CUresult (*htod_async)(CUdeviceptr, const void *, size_t, CUstream);
  CUresult (*dtoh)(void *, CUdeviceptr, size_t);
  CUresult (*device_attr)(int *, int, CUdevice);
} cu;

static int load_driver(void *lib) {
  struct {
    void **slot;
    const char *name;
  } syms[] = {
      {(void **)&cu.init, "cuInit"},
      {(void **)&cu.device_count, "cuDeviceGetCount"},
      {(void **)&cu.primary_retain, "cuDevicePrimaryCtxRetain"},
      {(void **)&cu.primary_release, "cuDevicePrimaryCtxRelease_v2"},
      {(void **)&cu.ctx_set_current, "cuCtxSetCurrent"},
      {(void **)&cu.stream_create, "cuStreamCreate"},
      {(void **)&cu.stream_destroy, "cuStreamDestroy_v2"},
      {(void **)&cu.stream_sync, "cuStreamSynchronize"},
      {(void **)&cu.alloc, "cuMemAlloc_v2"},
      {(void **)&cu.free, "cuMemFree_v2"},
      {(void **)&cu.htod_async, "cuMemcpyHtoDAsync_v2"},
      {(void **)&cu.dtoh, "cuMemcpyDtoH_v2"},
      {(void **)&cu.device_attr, "cuDeviceGetAttribute"},
  };
  for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
    *syms[i].slot = dlsym(lib, syms[i].name);
    if (!*syms[i].slot) {
      fprintf(stderr, "libcuda lacks %s\n", syms[i].name);
      return 0;
    }
  }
  return 1;
}

#define CU(call)                                                                         \
  do {                                                                                   \
    CUresult r_ = (call);                                                                \
    if (r_ != 0) {                                                                       \
      fprintf(stderr, "FAIL %s:%d: %s = CUDA error %d\n", __FILE__, __LINE__, #call, r_); \
      exit(1);                                                                           \
    }                                                                                    \
  } while (0)

/* Host to device on the stream the kernels run on, so they are ordered after it (from
   pageable memory the call stages `host` before returning: it may be reused at once). */
static void put(CUdeviceptr p, const void *host, size_t bytes, CUstream s) {
  CU(cu.htod_async(p, host, bytes, s));
}

static CUdeviceptr upload(const void *host, size_t bytes, CUstream s) {
  CUdeviceptr p;
  CU(cu.alloc(&p, bytes));
  put(p, host, bytes, s);
  return p;
}

static void download(void *host, CUdeviceptr p, size_t bytes, CUstream s) {
  CU(cu.stream_sync(s));
  CU(cu.dtoh(host, p, bytes));
}

/* ---- real calls --------------------------------------------------------------------- */

static void cast_calls(const mp_handle *h, CUstream s) {
  enum { N = 1003 }; /* odd: covers the kernel's tail */
  static float x[N], back[N];
  static uint16_t y[N];
  for (int i = 0; i < N; i++) x[i] = uniform(-70000.0f, 70000.0f) * (i % 3 ? 1e-3f : 1.0f);
  x[0] = 65519.0f, x[1] = 65520.0f, x[2] = -1e-8f, x[3] = 3e-8f, x[4] = NAN, x[5] = -INFINITY;
  x[6] = 6.1e-5f, x[7] = 0.1f;
  CUdeviceptr dx = upload(x, sizeof x, s), dy;
  CU(cu.alloc(&dy, sizeof y));
  EXPECT(mp_cast_f32_f16(h, dx, dy, N), MP_OK);
  download(y, dy, sizeof y, s);
  int bad = 0;
  for (int i = 0; i < N; i++)
    if (!same_f16(y[i], f32_to_f16(x[i])) && bad++ < 5)
      fprintf(stderr, "  cast[%d]: %g -> 0x%04x, expected 0x%04x\n", i, x[i], y[i], f32_to_f16(x[i]));
  CHECK(bad == 0, "mp_cast_f32_f16: %d of %d elements differ from round-to-nearest-even", bad, N);

  EXPECT(mp_cast_f16_f32(h, dy, dx, N), MP_OK);
  download(back, dx, sizeof back, s);
  bad = 0;
  for (int i = 0; i < N; i++) {
    float want = f16_to_f32(y[i]);
    if (!(isnan(want) ? isnan(back[i]) : f32_bits(back[i]) == f32_bits(want))) bad++;
  }
  CHECK(bad == 0, "mp_cast_f16_f32: %d of %d elements are not the exact widening", bad, N);

  /* Misaligned and overlapping ranges are rejected before any launch. */
  EXPECT(mp_cast_f32_f16(h, dx + 2, dy, N - 1), MP_ERR_MISALIGNED);
  CHECK(last_error_names("mp_cast_f32_f16"), "the message names the function");
  EXPECT(mp_cast_f32_f16(h, dx, dx + 8, 100), MP_ERR_INVALID_ARGUMENT);
  EXPECT(mp_cast_f32_f16(h, 0, dy, 10), MP_ERR_NULL_POINTER);
  CU(cu.free(dx));
  CU(cu.free(dy));
}

static void gemm_calls(const mp_handle *h, CUstream s) {
  /* Small integers: every product and sum is exact in f32 (and in f16 below 2048), so
     the result must match the host exactly whatever the summation order. */
  enum { M = 72, N = 40, K = 56 };
  static uint16_t a[M * K], b[K * N], bt[N * K], c16[M * N];
  static float af[M * K], bf[K * N], bias[N], c[M * N];
  for (int i = 0; i < M * K; i++) af[i] = (float)((int)uniform(0, 7) - 3), a[i] = f32_to_f16(af[i]);
  for (int i = 0; i < K * N; i++) bf[i] = (float)((int)uniform(0, 7) - 3), b[i] = f32_to_f16(bf[i]);
  for (int kk = 0; kk < K; kk++)
    for (int j = 0; j < N; j++) bt[j * K + kk] = b[kk * N + j];
  for (int j = 0; j < N; j++) bias[j] = (float)(j % 5) - 2.0f;
  CUdeviceptr da = upload(a, sizeof a, s), db = upload(b, sizeof b, s), dbt = upload(bt, sizeof bt, s);
  CUdeviceptr dbias = upload(bias, sizeof bias, s), dc, dc16;
  CU(cu.alloc(&dc, sizeof c));
  CU(cu.alloc(&dc16, sizeof c16));

  /* C (f32) = relu(A B + bias), A m x k, B k x n. */
  mp_gemm_args g = {0};
  g.m = M, g.n = N, g.k = K, g.trans_a = 0, g.trans_b = 0, g.lda = K, g.ldb = N, g.ldc = N;
  g.a = da, g.b = db, g.c = dc, g.c_dtype = MP_F32, g.alpha = 1.0f, g.beta = 0.0f;
  g.bias = dbias, g.bias_dtype = MP_F32, g.activation = 1, g.ab_dtype = MP_F16;
  EXPECT(mp_gemm(h, &g), MP_OK);
  download(c, dc, sizeof c, s);
  int bad = 0;
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      float acc = 0;
      for (int kk = 0; kk < K; kk++) acc += af[i * K + kk] * bf[kk * N + j];
      acc += bias[j];
      if (acc < 0) acc = 0;
      if (c[i * N + j] != acc) bad++;
    }
  CHECK(bad == 0, "mp_gemm NN f32 bias+relu: %d of %d elements differ", bad, M * N);

  /* C (f16) = 0.5 * A B^T-stored, no epilogue: B stored n x k (trans_b = 1). */
  g.trans_b = 1, g.ldb = K, g.b = dbt, g.c = dc16, g.c_dtype = MP_F16, g.alpha = 0.5f;
  g.bias = 0, g.activation = 0;
  EXPECT(mp_gemm(h, &g), MP_OK);
  download(c16, dc16, sizeof c16, s);
  bad = 0;
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      float acc = 0;
      for (int kk = 0; kk < K; kk++) acc += af[i * K + kk] * bf[kk * N + j];
      if (c16[i * N + j] != f32_to_f16(0.5f * acc)) bad++;
    }
  CHECK(bad == 0, "mp_gemm NT f16: %d of %d elements differ", bad, M * N);

  /* Enumerations arrive as int32_t: values outside MpDtype are rejected, naming the
     field, whether or not a bias is given. */
  const mp_gemm_args valid = g;
  const int32_t bad_dtypes[2] = {3, -1};
  for (int i = 0; i < 2; i++) {
    mp_gemm_args d = valid;
    d.c_dtype = bad_dtypes[i];
    EXPECT(mp_gemm(h, &d), MP_ERR_INVALID_ARGUMENT);
    CHECK(last_error_names("`c_dtype`"), "c_dtype %d: the message names the field", bad_dtypes[i]);
    d = valid, d.bias = dbias, d.bias_dtype = bad_dtypes[i];
    EXPECT(mp_gemm(h, &d), MP_ERR_INVALID_ARGUMENT);
    CHECK(last_error_names("`bias_dtype`"), "bias_dtype %d: the message names the field", bad_dtypes[i]);
    d = valid, d.ab_dtype = bad_dtypes[i];
    EXPECT(mp_gemm(h, &d), MP_ERR_INVALID_ARGUMENT);
    CHECK(last_error_names("`ab_dtype`"), "ab_dtype %d: the message names the field", bad_dtypes[i]);
  }
  /* f32 operands are not a GEMM this library has (a zeroed ab_dtype is MP_F32); a bf16
     C or bias with f16 operands mixes the two half types, which no kernel does. */
  mp_gemm_args d = valid;
  d.ab_dtype = MP_F32;
  EXPECT(mp_gemm(h, &d), MP_ERR_INVALID_ARGUMENT);
  CHECK(last_error_names("`ab_dtype`"), "ab_dtype MP_F32: the message names the field");
  d = valid, d.c_dtype = MP_BF16;
  EXPECT(mp_gemm(h, &d), MP_ERR_UNSUPPORTED);
  CHECK(last_error_names("`c_dtype`"), "bf16 C, f16 operands: the message names the field");
  d = valid, d.bias = dbias, d.bias_dtype = MP_BF16;
  EXPECT(mp_gemm(h, &d), MP_ERR_UNSUPPORTED);
  CHECK(last_error_names("`bias_dtype`"), "bf16 bias, f16 operands: the message names the field");

  /* Absurd shapes whose byte counts would wrap in 64 bits are rejected, naming the
     buffer, before any overlap check could see a wrapped (tiny) range: m = 2^62 (A spans
     2^63 bytes), and ldc = 2^62 with an f32 C (4 * (2^62 + 1) bytes wraps to 4). */
  mp_gemm_args big = valid;
  big.m = 1ull << 62, big.n = 1, big.k = 1, big.trans_a = 0, big.trans_b = 0, big.lda = 1, big.ldb = 1;
  big.ldc = 1, big.c = dc, big.c_dtype = MP_F32, big.bias = 0;
  EXPECT(mp_gemm(h, &big), MP_ERR_INVALID_ARGUMENT);
  CHECK(last_error_names("`a`") && last_error_names("overflow"), "m = 2^62: the message names `a`");
  big.m = 2, big.ldc = 1ull << 62;
  EXPECT(mp_gemm(h, &big), MP_ERR_INVALID_ARGUMENT);
  CHECK(last_error_names("`c`") && last_error_names("overflow"), "ldc = 2^62: the message names `c`");

  /* Rejected before launch: a misaligned A, an unknown activation, C over A. */
  g.a = da + 1;
  EXPECT(mp_gemm(h, &g), MP_ERR_MISALIGNED);
  g.a = da, g.activation = 7;
  EXPECT(mp_gemm(h, &g), MP_ERR_INVALID_ARGUMENT);
  g.activation = 0, g.c = da;
  EXPECT(mp_gemm(h, &g), MP_ERR_INVALID_ARGUMENT);
  /* A and B may be one buffer; C over them still may not. */
  g.b = da, g.ldb = K, g.trans_b = 1;
  EXPECT(mp_gemm(h, &g), MP_ERR_INVALID_ARGUMENT);
  CHECK(last_error_names("mp_gemm"), "the message names the function");
  CU(cu.free(da));
  CU(cu.free(db));
  CU(cu.free(dbt));
  CU(cu.free(dbias));
  CU(cu.free(dc));
  CU(cu.free(dc16));
}

static void unscale_calls(const mp_handle *h, CUstream s) {
  enum { N0 = 4097, N1 = 33 };
  static float g0[N0], g1[N1];
  float scale = 1024.0f, found = 0.0f;
  for (int i = 0; i < N0; i++) g0[i] = (float)(i % 17 - 8) * scale;
  for (int i = 0; i < N1; i++) g1[i] = (float)i * scale;
  CUdeviceptr d0 = upload(g0, sizeof g0, s), d1 = upload(g1, sizeof g1, s);
  CUdeviceptr dscale = upload(&scale, 4, s), dfound = upload(&found, 4, s);
  uint64_t ptrs[2] = {d0, d1}, lens[2] = {N0, N1};
  EXPECT(mp_unscale_check_multi_f32(h, ptrs, lens, 2, dscale, dfound), MP_OK);
  download(g0, d0, sizeof g0, s);
  download(g1, d1, sizeof g1, s);
  download(&found, dfound, 4, s);
  int bad = 0;
  for (int i = 0; i < N0; i++) bad += g0[i] != (float)(i % 17 - 8);
  for (int i = 0; i < N1; i++) bad += g1[i] != (float)i;
  CHECK(bad == 0, "mp_unscale_check_multi_f32: %d elements not divided by the scale", bad);
  CHECK(found == 0.0f, "finite gradients raised found_inf (%g)", found);

  g1[N1 - 1] = INFINITY;
  put(d1, g1, sizeof g1, s);
  EXPECT(mp_unscale_check_multi_f32(h, ptrs, lens, 2, dscale, dfound), MP_OK);
  download(&found, dfound, 4, s);
  CHECK(found == 1.0f, "an inf gradient did not raise found_inf (%g)", found);

  /* Host arrays: null with count > 0 is rejected; a length overflow too. */
  EXPECT(mp_unscale_check_multi_f32(h, NULL, lens, 2, dscale, dfound), MP_ERR_NULL_POINTER);
  uint64_t huge[2] = {N0, UINT64_MAX / 2};
  EXPECT(mp_unscale_check_multi_f32(h, ptrs, huge, 2, dscale, dfound), MP_ERR_INVALID_ARGUMENT);

  /* Every gradient is written: the same pointer twice (divided twice, by racing
     blocks), or two list entries that partly overlap, are rejected. */
  uint64_t twice[2] = {d0, d0}, partly[2] = {d0, d0 + 4 * (N0 - N1)}; /* the last N1 of d0 */
  EXPECT(mp_unscale_check_multi_f32(h, twice, lens, 2, dscale, dfound), MP_ERR_INVALID_ARGUMENT);
  CHECK(last_error_names("`grads` of entry") && last_error_names("overlaps"), "the message names the entries");
  EXPECT(mp_unscale_check_multi_f32(h, partly, lens, 2, dscale, dfound), MP_ERR_INVALID_ARGUMENT);
  EXPECT(mp_unscale_check_multi_f16(h, twice, lens, 2, dscale, dfound), MP_ERR_INVALID_ARGUMENT);
  uint64_t over_scale[2] = {d0, dscale}, one[2] = {N0, 1};
  EXPECT(mp_unscale_check_multi_f32(h, over_scale, one, 2, dscale, dfound), MP_ERR_INVALID_ARGUMENT);
  CU(cu.free(d0));
  CU(cu.free(d1));
  CU(cu.free(dscale));
  CU(cu.free(dfound));
}

static void adam_calls(const mp_handle *h, CUstream s) {
  enum { N0 = 1000, N1 = 37, T = 2 };
  const int lens[T] = {N0, N1};
  static float p[T][N0], g[T][N0], m[T][N0], v[T][N0], want[T][N0], got[T][N0];
  static uint16_t copy[T][N0];
  mp_adam_config cfg = {1e-3, 0.9, 0.999, 1e-8, 0.01, 0};
  float scale = 256.0f, step = 0.0f, found = 1.0f;
  mp_adam_tensor ts[T];
  CUdeviceptr dp[T], dg[T], dm[T], dv[T], dcopy[T];
  for (int t = 0; t < T; t++) {
    for (int i = 0; i < lens[t]; i++) {
      p[t][i] = uniform(-1, 1), g[t][i] = uniform(-1, 1) * scale, m[t][i] = 0, v[t][i] = 0;
      copy[t][i] = 0;
    }
    size_t b = (size_t)lens[t] * 4;
    dp[t] = upload(p[t], b, s), dg[t] = upload(g[t], b, s), dm[t] = upload(m[t], b, s);
    dv[t] = upload(v[t], b, s), dcopy[t] = upload(copy[t], b / 2, s);
    ts[t] = (mp_adam_tensor){dp[t], dg[t], dm[t], dv[t], dcopy[t], (uint64_t)lens[t]};
  }
  CUdeviceptr dstep = upload(&step, 4, s), dscale = upload(&scale, 4, s), dfound = upload(&found, 4, s);

  /* found_inf set: nothing moves, the step count included (torch skips the step). */
  EXPECT(mp_adamw_step_multi_f32(h, ts, T, dstep, dscale, dfound, &cfg), MP_OK);
  download(&step, dstep, 4, s);
  CHECK(step == 0.0f, "a skipped step advanced the step count to %g", step);
  int bad = 0;
  for (int t = 0; t < T; t++) {
    download(got[t], dp[t], (size_t)lens[t] * 4, s);
    for (int i = 0; i < lens[t]; i++) bad += f32_bits(got[t][i]) != f32_bits(p[t][i]);
  }
  CHECK(bad == 0, "a skipped step changed %d master weights", bad);

  /* found_inf clear: one AdamW step against the host formula (torch's). */
  found = 0.0f;
  put(dfound, &found, 4, s);
  EXPECT(mp_adamw_step_multi_f32(h, ts, T, dstep, dscale, dfound, &cfg), MP_OK);
  download(&step, dstep, 4, s);
  CHECK(step == 1.0f, "the step count is %g after one step", step);
  double bc1 = 1.0 - cfg.beta1, bc2 = 1.0 - cfg.beta2, worst = 0.0;
  int copies_bad = 0;
  for (int t = 0; t < T; t++) {
    download(got[t], dp[t], (size_t)lens[t] * 4, s);
    download(copy[t], dcopy[t], (size_t)lens[t] * 2, s);
    for (int i = 0; i < lens[t]; i++) {
      double gi = (double)g[t][i] / scale, pi = p[t][i] * (1.0 - cfg.lr * cfg.weight_decay);
      double mi = (1.0 - cfg.beta1) * gi, vi = (1.0 - cfg.beta2) * gi * gi;
      want[t][i] = (float)(pi - cfg.lr * (mi / bc1) / (sqrt(vi / bc2) + cfg.eps));
      double err = fabs((double)got[t][i] - want[t][i]) / fmax(fabs(want[t][i]), 1e-3);
      if (err > worst) worst = err;
      copies_bad += copy[t][i] != f32_to_f16(got[t][i]);
    }
  }
  CHECK(worst < 1e-5, "AdamW step: worst relative error %.3g against the host formula", worst);
  CHECK(copies_bad == 0, "%d f16 copies are not the rounded master weights", copies_bad);

  /* Settings and shapes are checked before anything is queued. */
  mp_adam_config bad_cfg = cfg;
  bad_cfg.beta1 = 1.5;
  EXPECT(mp_adamw_step_multi_f32(h, ts, T, dstep, dscale, dfound, &bad_cfg), MP_ERR_INVALID_ARGUMENT);
  bad_cfg = cfg, bad_cfg.mode = 3;
  EXPECT(mp_adamw_step_multi_f32(h, ts, T, dstep, dscale, dfound, &bad_cfg), MP_ERR_INVALID_ARGUMENT);
  mp_adam_tensor alias = ts[0];
  alias.m = alias.params;
  EXPECT(mp_adamw_step_f32(h, &alias, dstep, dscale, dfound, &cfg), MP_ERR_INVALID_ARGUMENT);
  /* Across the list: one tensor twice, an entry's params on another entry's m, an
     entry's gradients (read) on another entry's params (written). */
  mp_adam_tensor list[T] = {ts[0], ts[0]};
  EXPECT(mp_adamw_step_multi_f32(h, list, T, dstep, dscale, dfound, &cfg), MP_ERR_INVALID_ARGUMENT);
  CHECK(last_error_names("of entry 1") && last_error_names("of entry 0"), "the message names both entries");
  list[1] = ts[1], list[1].params = ts[0].m;
  EXPECT(mp_adamw_step_multi_f32(h, list, T, dstep, dscale, dfound, &cfg), MP_ERR_INVALID_ARGUMENT);
  CHECK(last_error_names("`params` of entry 1") && last_error_names("`m` of entry 0"), "params over m");
  list[1] = ts[1], list[1].grads = ts[0].params;
  EXPECT(mp_adamw_step_multi_f32(h, list, T, dstep, dscale, dfound, &cfg), MP_ERR_INVALID_ARGUMENT);
  CHECK(last_error_names("`grads` of entry 1"), "grads over params");
  download(&step, dstep, 4, s);
  CHECK(step == 1.0f, "a rejected call moved the step count to %g", step);
  for (int t = 0; t < T; t++) {
    CU(cu.free(dp[t]));
    CU(cu.free(dg[t]));
    CU(cu.free(dm[t]));
    CU(cu.free(dv[t]));
    CU(cu.free(dcopy[t]));
  }
  CU(cu.free(dstep));
  CU(cu.free(dscale));
  CU(cu.free(dfound));
}

static void update_scale_calls(const mp_handle *h, CUstream s) {
  float scale = 65536.0f, found = 1.0f;
  int32_t tracker = 5;
  CUdeviceptr ds = upload(&scale, 4, s), dt = upload(&tracker, 4, s), df = upload(&found, 4, s);
  EXPECT(mp_update_scale(h, ds, dt, df, 2.0, 0.5, 3), MP_OK);
  download(&scale, ds, 4, s);
  download(&tracker, dt, 4, s);
  CHECK(scale == 32768.0f && tracker == 0, "overflow: scale %g tracker %d, expected 32768 0", scale,
        tracker);
  found = 0.0f;
  put(df, &found, 4, s);
  for (int i = 0; i < 3; i++) EXPECT(mp_update_scale(h, ds, dt, df, 2.0, 0.5, 3), MP_OK);
  download(&scale, ds, 4, s);
  download(&tracker, dt, 4, s);
  CHECK(scale == 65536.0f && tracker == 0, "3 clean steps, interval 3: scale %g tracker %d", scale,
        tracker);
  EXPECT(mp_update_scale(h, ds, dt, df, 2.0, 0.5, 0), MP_ERR_INVALID_ARGUMENT);
  EXPECT(mp_update_scale(h, ds, ds, df, 2.0, 0.5, 3), MP_ERR_INVALID_ARGUMENT);
  CU(cu.free(ds));
  CU(cu.free(dt));
  CU(cu.free(df));
}

/* ---- bf16 --------------------------------------------------------------------------- */

static void cast_bf16_calls(const mp_handle *h, CUstream s) {
  enum { N = 1003 }; /* odd: covers the kernel's tail */
  static float x[N], back[N];
  static uint16_t y[N];
  for (int i = 0; i < N; i++) x[i] = uniform(-1.0f, 1.0f) * (i % 3 ? 1e-3f : (i % 2 ? 1e30f : 1.0f));
  /* Ties both ways (1 + 2^-8 rounds down to even, 1 + 3 * 2^-8 up), just off a tie, the
     largest finite f32 (rounds to inf), the largest bf16, f32 subnormals (bf16 keeps
     them), signed zero, NaN of both signs, infinities. */
  const uint32_t edge[] = {0x3f808000u, 0x3f818000u, 0x3f808001u, 0x3f807fffu, 0x7f7fffffu, 0xff7fffffu,
                           0x7f7f0000u, 0x7f7f7fffu, 0x00000001u, 0x00018000u, 0x80000000u, 0x7fc00000u,
                           0xffa00001u, 0x7f800000u, 0xff800000u, 0x00800000u};
  for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++) x[i] = bits_f32(edge[i]);
  CUdeviceptr dx = upload(x, sizeof x, s), dy;
  CU(cu.alloc(&dy, sizeof y));
  EXPECT(mp_cast_f32_bf16(h, dx, dy, N), MP_OK);
  download(y, dy, sizeof y, s);
  int bad = 0;
  for (int i = 0; i < N; i++)
    if (!same_bf16(y[i], f32_to_bf16(x[i])) && bad++ < 5)
      fprintf(stderr, "  cast[%d]: %g (0x%08x) -> 0x%04x, expected 0x%04x\n", i, x[i], f32_bits(x[i]), y[i],
              f32_to_bf16(x[i]));
  CHECK(bad == 0, "mp_cast_f32_bf16: %d of %d elements differ from round-to-nearest-even", bad, N);
  CHECK(y[0] == 0x3f80u && y[1] == 0x3f82u && y[4] == 0x7f80u && y[5] == 0xff80u && y[8] == 0x0000u &&
            y[9] == 0x0002u && y[10] == 0x8000u,
        "mp_cast_f32_bf16 edges: ties 0x%04x 0x%04x, overflow 0x%04x 0x%04x, subnormals 0x%04x 0x%04x, -0 0x%04x",
        y[0], y[1], y[4], y[5], y[8], y[9], y[10]);

  EXPECT(mp_cast_bf16_f32(h, dy, dx, N), MP_OK);
  download(back, dx, sizeof back, s);
  bad = 0;
  for (int i = 0; i < N; i++) {
    float want = bf16_to_f32(y[i]);
    if (!(isnan(want) ? isnan(back[i]) : f32_bits(back[i]) == f32_bits(want))) bad++;
  }
  CHECK(bad == 0, "mp_cast_bf16_f32: %d of %d elements are not the exact widening", bad, N);

  /* Misaligned, overlapping and null ranges are rejected before any launch. */
  EXPECT(mp_cast_f32_bf16(h, dx, dy + 1, N - 1), MP_ERR_MISALIGNED);
  CHECK(last_error_names("mp_cast_f32_bf16") && last_error_names("`y`"), "the message names the function and `y`");
  EXPECT(mp_cast_bf16_f32(h, dy + 1, dx, N - 1), MP_ERR_MISALIGNED);
  EXPECT(mp_cast_f32_bf16(h, dx, dx + 8, 100), MP_ERR_INVALID_ARGUMENT);
  CHECK(last_error_names("overlaps"), "the message says the ranges overlap");
  EXPECT(mp_cast_bf16_f32(h, 0, dx, 10), MP_ERR_NULL_POINTER);
  CU(cu.free(dx));
  CU(cu.free(dy));
}

/* The bf16 GEMM: on compute capability 8.0 and newer every layout against the host
   (small integers, exact in bf16 and in the f32 sums, so the comparison is exact); below
   8.0 MP_ERR_UNSUPPORTED naming the capability, with C left as it was. */
static void gemm_bf16_calls(const mp_handle *h, CUstream s, int capability) {
  enum { M = 72, N = 40, K = 56 };
  static uint16_t a[M * K], at[K * M], b[K * N], bt[N * K], c16[M * N], pre[M * N], bias16[N];
  static float af[M * K], bf[K * N], bias[N], c[M * N];
  for (int i = 0; i < M * K; i++) af[i] = (float)((int)uniform(0, 7) - 3), a[i] = f32_to_bf16(af[i]);
  for (int i = 0; i < K * N; i++) bf[i] = (float)((int)uniform(0, 7) - 3), b[i] = f32_to_bf16(bf[i]);
  for (int i = 0; i < M; i++)
    for (int kk = 0; kk < K; kk++) at[kk * M + i] = a[i * K + kk];
  for (int kk = 0; kk < K; kk++)
    for (int j = 0; j < N; j++) bt[j * K + kk] = b[kk * N + j];
  for (int j = 0; j < N; j++) bias[j] = (float)(j % 5) - 2.0f, bias16[j] = f32_to_bf16(bias[j]);
  CUdeviceptr da = upload(a, sizeof a, s), dat = upload(at, sizeof at, s);
  CUdeviceptr db = upload(b, sizeof b, s), dbt = upload(bt, sizeof bt, s);
  CUdeviceptr dbias = upload(bias, sizeof bias, s), dbias16 = upload(bias16, sizeof bias16, s);
  CUdeviceptr dc, dc16, dpre;
  CU(cu.alloc(&dc, sizeof c));
  CU(cu.alloc(&dc16, sizeof c16));
  CU(cu.alloc(&dpre, sizeof pre));

  /* One epilogue per layout: C f32 or bf16; bias none (0), f32 (1) or bf16 (2); pre or
     not. */
  struct {
    int ta, tb, c_bf16, bias, relu, pre;
    float alpha;
  } cases[4] = {
      {0, 0, 0, 2, 1, 1, 1.0f}, /* NN: f32 C = relu(AB + bias16), pre bf16 */
      {0, 1, 1, 0, 0, 0, 0.5f}, /* NT: bf16 C = 0.5 AB */
      {1, 0, 1, 1, 1, 1, 1.0f}, /* TN: bf16 C = relu(AB + bias32), pre bf16 */
      {1, 1, 0, 0, 0, 0, 1.0f}, /* TT: f32 C = AB */
  };
  for (int ci = 0; ci < 4; ci++) {
    mp_gemm_args g = {0};
    g.m = M, g.n = N, g.k = K, g.trans_a = cases[ci].ta, g.trans_b = cases[ci].tb;
    g.lda = cases[ci].ta ? M : K, g.ldb = cases[ci].tb ? K : N, g.ldc = N;
    g.a = cases[ci].ta ? dat : da, g.b = cases[ci].tb ? dbt : db, g.ab_dtype = MP_BF16;
    g.c = cases[ci].c_bf16 ? dc16 : dc, g.c_dtype = cases[ci].c_bf16 ? MP_BF16 : MP_F32;
    g.alpha = cases[ci].alpha, g.beta = 0.0f, g.activation = cases[ci].relu;
    g.bias = cases[ci].bias == 2 ? dbias16 : cases[ci].bias == 1 ? dbias : 0;
    g.bias_dtype = cases[ci].bias == 2 ? MP_BF16 : MP_F32;
    g.pre = cases[ci].pre ? dpre : 0;
    const char *layout = (const char *[]){"NN", "NT", "TN", "TT"}[ci];
    /* Poison the outputs: a GEMM that writes nothing must not pass. */
    memset(c, 0xff, sizeof c), memset(c16, 0xff, sizeof c16), memset(pre, 0xff, sizeof pre);
    put(dc, c, sizeof c, s), put(dc16, c16, sizeof c16, s), put(dpre, pre, sizeof pre, s);
    if (capability < 80) {
      EXPECT(mp_gemm(h, &g), MP_ERR_UNSUPPORTED);
      CHECK(last_error_names("mp_gemm") && last_error_names("8.0"),
            "bf16 %s below 8.0: the message names the function and the capability needed", layout);
      download(c16, dc16, sizeof c16, s);
      download(c, dc, sizeof c, s);
      int touched = 0;
      for (int i = 0; i < M * N; i++) touched += c16[i] != 0xffffu || f32_bits(c[i]) != 0xffffffffu;
      CHECK(touched == 0, "a refused bf16 GEMM (%s) wrote %d elements of C", layout, touched);
      continue;
    }
    EXPECT(mp_gemm(h, &g), MP_OK);
    download(c, dc, sizeof c, s);
    download(c16, dc16, sizeof c16, s);
    download(pre, dpre, sizeof pre, s);
    int bad = 0, bad_pre = 0, nonzero = 0;
    for (int i = 0; i < M; i++)
      for (int j = 0; j < N; j++) {
        float acc = 0;
        for (int kk = 0; kk < K; kk++) acc += af[i * K + kk] * bf[kk * N + j];
        acc *= cases[ci].alpha;
        if (cases[ci].bias) acc += bias[j];
        if (cases[ci].pre) bad_pre += pre[i * N + j] != f32_to_bf16(acc);
        if (cases[ci].relu && acc < 0) acc = 0;
        float got = cases[ci].c_bf16 ? bf16_to_f32(c16[i * N + j]) : c[i * N + j];
        float want = cases[ci].c_bf16 ? bf16_to_f32(f32_to_bf16(acc)) : acc;
        bad += f32_bits(got) != f32_bits(want);
        nonzero += got != 0.0f;
      }
    CHECK(bad == 0 && bad_pre == 0, "mp_gemm bf16 %s: %d of %d elements differ, %d of pre", layout, bad, M * N,
          bad_pre);
    CHECK(nonzero > M * N / 4, "mp_gemm bf16 %s: only %d non-zero outputs", layout, nonzero);
  }

  /* Checked on every device, before the capability: the half types do not mix, and
     MP_F32 operands do not exist. */
  mp_gemm_args g = {0};
  g.m = M, g.n = N, g.k = K, g.lda = K, g.ldb = N, g.ldc = N, g.a = da, g.b = db, g.c = dc16;
  g.ab_dtype = MP_BF16, g.c_dtype = MP_F16, g.alpha = 1.0f;
  EXPECT(mp_gemm(h, &g), MP_ERR_UNSUPPORTED);
  CHECK(last_error_names("`c_dtype`"), "f16 C, bf16 operands: the message names the field");
  g.c_dtype = MP_BF16, g.bias = dbias16, g.bias_dtype = MP_F16;
  EXPECT(mp_gemm(h, &g), MP_ERR_UNSUPPORTED);
  CHECK(last_error_names("`bias_dtype`"), "f16 bias, bf16 operands: the message names the field");
  g.bias = 0, g.bias_dtype = MP_F32, g.ab_dtype = MP_F32;
  EXPECT(mp_gemm(h, &g), MP_ERR_INVALID_ARGUMENT);
  if (capability >= 80) {
    /* Pointer checks as for f16: a misaligned A, C over B, pre over A. */
    g.ab_dtype = MP_BF16, g.a = da + 1;
    EXPECT(mp_gemm(h, &g), MP_ERR_MISALIGNED);
    g.a = da, g.c = db;
    EXPECT(mp_gemm(h, &g), MP_ERR_INVALID_ARGUMENT);
    CHECK(last_error_names("`c`") && last_error_names("overlaps"), "C over B: the message names `c`");
    g.c = dc16, g.pre = da;
    EXPECT(mp_gemm(h, &g), MP_ERR_INVALID_ARGUMENT);
  }
  CU(cu.free(da));
  CU(cu.free(dat));
  CU(cu.free(db));
  CU(cu.free(dbt));
  CU(cu.free(dbias));
  CU(cu.free(dbias16));
  CU(cu.free(dc));
  CU(cu.free(dc16));
  CU(cu.free(dpre));
}

static void unscale_bf16_calls(const mp_handle *h, CUstream s) {
  /* Random bf16 gradients times 2^10: dividing by the scale is exact, so the result is
     the original bf16 bit for bit. */
  enum { N0 = 4097, N1 = 33 };
  static uint16_t g0[N0], g1[N1], want0[N0], want1[N1];
  float scale = 1024.0f, found = 0.0f;
  for (int i = 0; i < N0; i++) want0[i] = f32_to_bf16(uniform(-4, 4)), g0[i] = f32_to_bf16(bf16_to_f32(want0[i]) * scale);
  for (int i = 0; i < N1; i++) want1[i] = f32_to_bf16(uniform(-4, 4)), g1[i] = f32_to_bf16(bf16_to_f32(want1[i]) * scale);
  CUdeviceptr d0 = upload(g0, sizeof g0, s), d1 = upload(g1, sizeof g1, s);
  CUdeviceptr dscale = upload(&scale, 4, s), dfound = upload(&found, 4, s);
  uint64_t ptrs[2] = {d0, d1}, lens[2] = {N0, N1};
  EXPECT(mp_unscale_check_multi_bf16(h, ptrs, lens, 2, dscale, dfound), MP_OK);
  download(g0, d0, sizeof g0, s);
  download(g1, d1, sizeof g1, s);
  download(&found, dfound, 4, s);
  int bad = 0;
  for (int i = 0; i < N0; i++) bad += g0[i] != want0[i];
  for (int i = 0; i < N1; i++) bad += g1[i] != want1[i];
  CHECK(bad == 0, "mp_unscale_check_multi_bf16: %d elements not divided by the scale", bad);
  CHECK(found == 0.0f, "finite bf16 gradients raised found_inf (%g)", found);

  /* The flat form: finite first (scale null: check only, nothing divided), then a NaN. */
  EXPECT(mp_unscale_check_bf16(h, d0, N0, 0, dfound), MP_OK);
  download(g0, d0, sizeof g0, s);
  download(&found, dfound, 4, s);
  bad = 0;
  for (int i = 0; i < N0; i++) bad += g0[i] != want0[i];
  CHECK(bad == 0 && found == 0.0f, "mp_unscale_check_bf16 check only: %d changed, found_inf %g", bad, found);
  g0[N0 - 1] = 0x7fc0u; /* NaN in the tail */
  put(d0, g0, sizeof g0, s);
  EXPECT(mp_unscale_check_bf16(h, d0, N0, dscale, dfound), MP_OK);
  download(&found, dfound, 4, s);
  CHECK(found == 1.0f, "a NaN bf16 gradient did not raise found_inf (%g)", found);
  found = 0.0f;
  put(dfound, &found, 4, s);
  g1[3] = 0xff80u; /* -inf */
  put(d1, g1, sizeof g1, s);
  EXPECT(mp_unscale_check_multi_bf16(h, ptrs, lens, 2, dscale, dfound), MP_OK);
  download(&found, dfound, 4, s);
  CHECK(found == 1.0f, "a -inf bf16 gradient (multi) did not raise found_inf (%g)", found);

  /* Rejected: a misaligned (odd) gradient pointer, the same gradient twice, a gradient
     over the flag. */
  EXPECT(mp_unscale_check_bf16(h, d0 + 1, 8, dscale, dfound), MP_ERR_MISALIGNED);
  CHECK(last_error_names("mp_unscale_check_bf16"), "the message names the function");
  uint64_t twice[2] = {d0, d0};
  EXPECT(mp_unscale_check_multi_bf16(h, twice, lens, 2, dscale, dfound), MP_ERR_INVALID_ARGUMENT);
  CHECK(last_error_names("`grads` of entry") && last_error_names("overlaps"), "the message names the entries");
  EXPECT(mp_unscale_check_bf16(h, dfound, 2, dscale, dfound), MP_ERR_INVALID_ARGUMENT);
  CU(cu.free(d0));
  CU(cu.free(d1));
  CU(cu.free(dscale));
  CU(cu.free(dfound));
}

/* torch's AdamW step from f32 state (m, v, p) with gradient g, step count t (after the
   increment), in double. */
static double adamw_ref(const mp_adam_config *c, double p, double g, double m, double v, int t, double *m1,
                        double *v1) {
  *m1 = c->beta1 * m + (1.0 - c->beta1) * g;
  *v1 = c->beta2 * v + (1.0 - c->beta2) * g * g;
  double bc1 = 1.0 - pow(c->beta1, t), bc2 = 1.0 - pow(c->beta2, t);
  return p * (1.0 - c->lr * c->weight_decay) - c->lr * (*m1 / bc1) / (sqrt(*v1 / bc2) + c->eps);
}

static void adam_bf16_calls(const mp_handle *h, CUstream s) {
  enum { N0 = 1000, N1 = 37, T = 2 };
  const int lens[T] = {N0, N1};
  static float p[T][N0], m[T][N0], v[T][N0], got[T][N0], g32[N0];
  static uint16_t g[T][N0], copy[T][N0];
  mp_adam_config cfg = {1e-3, 0.9, 0.999, 1e-8, 0.01, 0};
  float scale = 256.0f, step = 0.0f, found = 1.0f;
  mp_adam_tensor ts[T];
  CUdeviceptr dp[T], dg[T], dm[T], dv[T], dcopy[T];
  for (int t = 0; t < T; t++) {
    for (int i = 0; i < lens[t]; i++) {
      p[t][i] = uniform(-1, 1), g[t][i] = f32_to_bf16(uniform(-1, 1) * scale), m[t][i] = 0, v[t][i] = 0;
      copy[t][i] = 0;
    }
    size_t b = (size_t)lens[t] * 4;
    dp[t] = upload(p[t], b, s), dg[t] = upload(g[t], b / 2, s), dm[t] = upload(m[t], b, s);
    dv[t] = upload(v[t], b, s), dcopy[t] = upload(copy[t], b / 2, s);
    ts[t] = (mp_adam_tensor){dp[t], dg[t], dm[t], dv[t], dcopy[t], (uint64_t)lens[t]};
  }
  CUdeviceptr dstep = upload(&step, 4, s), dscale = upload(&scale, 4, s), dfound = upload(&found, 4, s);

  /* bf16 gradients, bf16 copies. found_inf set: nothing moves, copies included. */
  EXPECT(mp_adamw_step_multi_bf16(h, ts, T, dstep, dscale, dfound, &cfg), MP_OK);
  download(&step, dstep, 4, s);
  int bad = 0;
  for (int t = 0; t < T; t++) {
    download(got[t], dp[t], (size_t)lens[t] * 4, s);
    download(copy[t], dcopy[t], (size_t)lens[t] * 2, s);
    for (int i = 0; i < lens[t]; i++) bad += f32_bits(got[t][i]) != f32_bits(p[t][i]) || copy[t][i] != 0;
  }
  CHECK(step == 0.0f && bad == 0, "a skipped bf16 step: step count %g, %d weights or copies changed", step, bad);

  found = 0.0f;
  put(dfound, &found, 4, s);
  EXPECT(mp_adamw_step_multi_bf16(h, ts, T, dstep, dscale, dfound, &cfg), MP_OK);
  download(&step, dstep, 4, s);
  CHECK(step == 1.0f, "the step count is %g after one bf16 step", step);
  double worst = 0.0;
  int copies_bad = 0;
  for (int t = 0; t < T; t++) {
    download(got[t], dp[t], (size_t)lens[t] * 4, s);
    download(copy[t], dcopy[t], (size_t)lens[t] * 2, s);
    for (int i = 0; i < lens[t]; i++) {
      double m1, v1, want = adamw_ref(&cfg, p[t][i], bf16_to_f32(g[t][i]) / scale, 0, 0, 1, &m1, &v1);
      double err = fabs((double)got[t][i] - want) / fmax(fabs(want), 1e-3);
      if (err > worst) worst = err;
      copies_bad += copy[t][i] != f32_to_bf16(got[t][i]);
    }
  }
  CHECK(worst < 1e-5, "mp_adamw_step_multi_bf16: worst relative error %.3g against the host formula", worst);
  CHECK(copies_bad == 0, "%d bf16 copies are not the rounded master weights", copies_bad);

  /* f32 gradients, bf16 copy, flat: a second step on tensor 0 from the state the first
     left (downloaded), the gradients the bf16 ones widened. */
  for (int t = 0; t < T; t++) {
    download(m[t], dm[t], (size_t)lens[t] * 4, s);
    download(v[t], dv[t], (size_t)lens[t] * 4, s);
  }
  for (int i = 0; i < N0; i++) g32[i] = bf16_to_f32(g[0][i]);
  CUdeviceptr dg32 = upload(g32, sizeof g32, s);
  mp_adam_tensor flat = ts[0];
  flat.grads = dg32;
  EXPECT(mp_adamw_step_f32_bf16(h, &flat, dstep, dscale, dfound, &cfg), MP_OK);
  download(&step, dstep, 4, s);
  download(p[1], dp[0], (size_t)N0 * 4, s); /* p[1] is scratch from here on */
  download(copy[0], dcopy[0], (size_t)N0 * 2, s);
  worst = 0.0, copies_bad = 0;
  for (int i = 0; i < N0; i++) {
    double m1, v1, want = adamw_ref(&cfg, got[0][i], g32[i] / scale, m[0][i], v[0][i], 2, &m1, &v1);
    double err = fabs((double)p[1][i] - want) / fmax(fabs(want), 1e-3);
    if (err > worst) worst = err;
    copies_bad += copy[0][i] != f32_to_bf16(p[1][i]);
  }
  CHECK(step == 2.0f, "the step count is %g after a second step", step);
  CHECK(worst < 1e-5, "mp_adamw_step_f32_bf16: worst relative error %.3g against the host formula", worst);
  CHECK(copies_bad == 0, "mp_adamw_step_f32_bf16: %d bf16 copies are not the rounded master weights", copies_bad);

  /* Rejected before anything is queued: a misaligned (odd) bf16 copy, the copy over the
     params, the same tensor twice in a list; the step count does not move. */
  mp_adam_tensor bad_t = ts[0];
  bad_t.copy = dcopy[0] + 1;
  EXPECT(mp_adamw_step_bf16(h, &bad_t, dstep, dscale, dfound, &cfg), MP_ERR_MISALIGNED);
  CHECK(last_error_names("mp_adamw_step_bf16") && last_error_names("`copy`"), "the message names `copy`");
  bad_t = ts[0], bad_t.copy = dp[0];
  EXPECT(mp_adamw_step_bf16(h, &bad_t, dstep, dscale, dfound, &cfg), MP_ERR_INVALID_ARGUMENT);
  mp_adam_tensor list[T] = {ts[0], ts[0]};
  EXPECT(mp_adamw_step_multi_bf16(h, list, T, dstep, dscale, dfound, &cfg), MP_ERR_INVALID_ARGUMENT);
  CHECK(last_error_names("of entry 1") && last_error_names("of entry 0"), "the message names both entries");
  list[0] = flat, list[1] = ts[1], list[1].grads = dcopy[0]; /* read over a copy written */
  EXPECT(mp_adamw_step_multi_f32_bf16(h, list, T, dstep, dscale, dfound, &cfg), MP_ERR_INVALID_ARGUMENT);
  CHECK(last_error_names("`grads` of entry 1") && last_error_names("`copy` of entry 0"), "grads over a copy");
  download(&step, dstep, 4, s);
  CHECK(step == 2.0f, "a rejected call moved the step count to %g", step);
  for (int t = 0; t < T; t++) {
    CU(cu.free(dp[t]));
    CU(cu.free(dg[t]));
    CU(cu.free(dm[t]));
    CU(cu.free(dv[t]));
    CU(cu.free(dcopy[t]));
  }
  CU(cu.free(dg32));
  CU(cu.free(dstep));
  CU(cu.free(dscale));
  CU(cu.free(dfound));
}

/* Pure-bf16 AdamW: each new weight is one of the two bf16 values around the exact
   update (stochastic rounding), not always the nearest; the same seed gives the same
   bits, another seed other bits; f32 and bf16 gradients of the same values agree. */
static void adam_pure_calls(const mp_handle *h, CUstream s) {
  enum { N = 1001 };
  static uint16_t p0[N], g[N], got[N], again[N];
  static float g32[N], zeros[N];
  mp_adam_config cfg = {1e-3, 0.9, 0.999, 1e-8, 0.01, 0};
  float scale = 256.0f, step = 0.0f, found = 1.0f;
  for (int i = 0; i < N; i++) {
    p0[i] = f32_to_bf16(uniform(-1, 1)), g[i] = f32_to_bf16(uniform(-1, 1) * scale);
    g32[i] = bf16_to_f32(g[i]), zeros[i] = 0.0f;
  }
  CUdeviceptr dp = upload(p0, sizeof p0, s), dg = upload(g, sizeof g, s), dg32 = upload(g32, sizeof g32, s);
  CUdeviceptr dm = upload(zeros, sizeof zeros, s), dv = upload(zeros, sizeof zeros, s);
  CUdeviceptr dstep = upload(&step, 4, s), dscale = upload(&scale, 4, s), dfound = upload(&found, 4, s);
  mp_adam_pure_tensor t = {dp, dg, dm, dv, N};

  /* found_inf set: nothing moves. */
  EXPECT(mp_adamw_pure_bf16(h, &t, dstep, dscale, dfound, &cfg, 7), MP_OK);
  download(got, dp, sizeof got, s);
  download(&step, dstep, 4, s);
  CHECK(step == 0.0f && memcmp(got, p0, sizeof got) == 0, "a skipped pure step moved the step count (%g) or weights",
        step);

  found = 0.0f;
  put(dfound, &found, 4, s);
  EXPECT(mp_adamw_pure_bf16(h, &t, dstep, dscale, dfound, &cfg, 7), MP_OK);
  download(got, dp, sizeof got, s);
  download(&step, dstep, 4, s);
  CHECK(step == 1.0f, "the step count is %g after one pure step", step);
  int outside = 0, not_nearest = 0;
  for (int i = 0; i < N; i++) {
    double m1, v1, want = adamw_ref(&cfg, bf16_to_f32(p0[i]), g32[i] / scale, 0, 0, 1, &m1, &v1);
    double got_i = bf16_to_f32(got[i]);
    if (fabs(got_i - want) > bf16_ulp(want) * (1 + 1e-3)) outside++;
    not_nearest += got[i] != f32_to_bf16((float)want);
  }
  CHECK(outside == 0, "mp_adamw_pure_bf16: %d of %d weights are not a bf16 neighbour of the update", outside, N);
  CHECK(not_nearest > N / 50, "mp_adamw_pure_bf16: only %d of %d weights rounded away from nearest (stochastic?)",
        not_nearest, N);

  /* Replays from the same state: the same seed, another seed, f32 gradients. */
  const struct {
    int f32_grads;
    uint64_t seed;
  } replays[3] = {{0, 7}, {0, 8}, {1, 7}};
  for (int r = 0; r < 3; r++) {
    step = 0.0f;
    put(dp, p0, sizeof p0, s), put(dm, zeros, sizeof zeros, s), put(dv, zeros, sizeof zeros, s);
    put(dstep, &step, 4, s);
    mp_adam_pure_tensor tr = t;
    if (replays[r].f32_grads) {
      tr.grads = dg32;
      EXPECT(mp_adamw_pure_f32(h, &tr, dstep, dscale, dfound, &cfg, replays[r].seed), MP_OK);
    } else {
      EXPECT(mp_adamw_pure_bf16(h, &tr, dstep, dscale, dfound, &cfg, replays[r].seed), MP_OK);
    }
    download(again, dp, sizeof again, s);
    int differ = 0;
    for (int i = 0; i < N; i++) differ += again[i] != got[i];
    if (replays[r].seed == 7)
      CHECK(differ == 0, "pure replay with seed 7 (%s gradients): %d weights differ from the first run",
            replays[r].f32_grads ? "f32" : "bf16", differ);
    else
      CHECK(differ > 0, "pure step with seed 8 rounded every weight as seed 7 did");
  }

  /* Rejected: an odd params address, params over m, grads over params, no tensor. */
  mp_adam_pure_tensor bad_t = t;
  bad_t.params = dp + 1;
  EXPECT(mp_adamw_pure_bf16(h, &bad_t, dstep, dscale, dfound, &cfg, 7), MP_ERR_MISALIGNED);
  CHECK(last_error_names("mp_adamw_pure_bf16") && last_error_names("`params`"), "the message names `params`");
  bad_t = t, bad_t.m = dp;
  EXPECT(mp_adamw_pure_bf16(h, &bad_t, dstep, dscale, dfound, &cfg, 7), MP_ERR_INVALID_ARGUMENT);
  CHECK(last_error_names("overlaps"), "params over m: the message says they overlap");
  bad_t = t, bad_t.grads = dp;
  EXPECT(mp_adamw_pure_bf16(h, &bad_t, dstep, dscale, dfound, &cfg, 7), MP_ERR_INVALID_ARGUMENT);
  EXPECT(mp_adamw_pure_f32(h, NULL, dstep, dscale, dfound, &cfg, 7), MP_ERR_NULL_POINTER);
  mp_adam_config bad_cfg = cfg;
  bad_cfg.mode = 2;
  EXPECT(mp_adamw_pure_f32(h, &t, dstep, dscale, dfound, &bad_cfg, 7), MP_ERR_INVALID_ARGUMENT);
  download(&step, dstep, 4, s);
  CHECK(step == 1.0f, "a rejected pure call moved the step count to %g", step);
  CU(cu.free(dp));
  CU(cu.free(dg));
  CU(cu.free(dg32));
  CU(cu.free(dm));
  CU(cu.free(dv));
  CU(cu.free(dstep));
  CU(cu.free(dscale));
  CU(cu.free(dfound));
}

static int gpu_required(void) {
  const char *r = getenv("MIXED_PRECISION_REQUIRE_GPU");
  return r && strcmp(r, "1") == 0;
}

int main(void) {
  null_paths();

  void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  int count = 0;
  if (!lib) {
    mp_handle *h = (mp_handle *)1;
    EXPECT(mp_handle_create(NULL, &h), MP_ERR_NO_DRIVER);
    CHECK(h == NULL, "a failed mp_handle_create leaves *out null");
    CHECK(last_error_names("no CUDA driver"), "the message says the driver is missing");
    CHECK(!gpu_required(), "MIXED_PRECISION_REQUIRE_GPU=1 but no CUDA driver could be loaded");
    printf("capi_test: no CUDA driver; checked the error paths, GPU calls not run\n");
  } else if (!load_driver(lib) || cu.init(0) != 0 || cu.device_count(&count) != 0 || count == 0) {
    CHECK(!gpu_required(), "MIXED_PRECISION_REQUIRE_GPU=1 but the driver has no usable device");
    printf("capi_test: a CUDA driver but no device; checked the error paths, GPU calls not run\n");
  } else {
    mp_handle *h = NULL;
    /* This thread has no current context yet. */
    EXPECT(mp_handle_create(NULL, &h), MP_ERR_NO_DEVICE);
    CUcontext ctx;
    CUstream stream;
    CU(cu.primary_retain(&ctx, 0));
    CU(cu.ctx_set_current(ctx));
    CU(cu.stream_create(&stream, 1 /* CU_STREAM_NON_BLOCKING */));
    int major = 0, minor = 0;
    CU(cu.device_attr(&major, 75 /* CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR */, 0));
    CU(cu.device_attr(&minor, 76 /* CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR */, 0));
    const int capability = 10 * major + minor;
    EXPECT(mp_handle_create(stream, &h), MP_OK);
    if (h) {
      cast_calls(h, stream);
      gemm_calls(h, stream);
      unscale_calls(h, stream);
      adam_calls(h, stream);
      update_scale_calls(h, stream);
      cast_bf16_calls(h, stream);
      gemm_bf16_calls(h, stream, capability);
      unscale_bf16_calls(h, stream);
      adam_bf16_calls(h, stream);
      adam_pure_calls(h, stream);
      EXPECT(mp_handle_destroy(h), MP_OK);
    }
    CU(cu.stream_sync(stream));
    CU(cu.stream_destroy(stream));
    CU(cu.primary_release(0));
    printf("capi_test: real calls on device 0 (compute capability %d.%d) checked\n", major, minor);
  }
  printf("capi_test: %d checks, %d failed\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
