//! Launcher for `cuda/gemm.cu`: `C = act(alpha * op(A) op(B) + beta * C + bias)` on the
//! tensor cores, f16 or bf16 operands, fp32 accumulation, every row-major layout pair.
//! bf16 needs sm_80 or newer (bf16 tensor cores); on sm_75 a bf16 GEMM returns
//! [`Error::Unsupported`] before anything is queued.

use cudarc::driver::{CudaView, CudaViewMut, DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig, PushKernelArg};
use half::f16;

use super::{check_device, check_scalar};
use crate::device::Device;
use crate::dtype::{DType, Element, Half};
use crate::error::{DriverContext, Error, Result};
use crate::ptx;

/// Whether an operand is used as stored or transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transpose {
    /// op(X) = X.
    N,
    /// op(X) = Xᵀ.
    T,
}

/// The activation applied after bias, in f32, before the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Identity.
    None = 0,
    /// max(x, 0).
    Relu = 1,
    /// GELU, tanh approximation (PyTorch's `approximate='tanh'`).
    Gelu = 2,
}

/// The shape of one GEMM. Row-major throughout: op(A) is m x k, op(B) is k x n, C is
/// m x n. A is stored m x k (`lda >= k`) for [`Transpose::N`] and k x m (`lda >= m`) for
/// [`Transpose::T`]; B is stored k x n (`ldb >= n`) or n x k (`ldb >= k`); C has `ldc >= n`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmShape {
    /// Rows of op(A) and C.
    pub m: usize,
    /// Columns of op(B) and C.
    pub n: usize,
    /// The reduction length.
    pub k: usize,
    /// Layout of A.
    pub trans_a: Transpose,
    /// Layout of B.
    pub trans_b: Transpose,
    /// Leading dimension (row stride, in elements) of A as stored.
    pub lda: usize,
    /// Leading dimension of B as stored.
    pub ldb: usize,
    /// Leading dimension of C (and of `pre`).
    pub ldc: usize,
}

impl GemmShape {
    /// A dense GEMM: leading dimensions equal to the stored row lengths.
    pub fn dense(m: usize, n: usize, k: usize, trans_a: Transpose, trans_b: Transpose) -> Self {
        let lda = if trans_a == Transpose::N { k } else { m };
        let ldb = if trans_b == Transpose::N { n } else { k };
        GemmShape { m, n, k, trans_a, trans_b, lda, ldb, ldc: n }
    }

    /// (rows, cols) of A and of B as stored.
    pub fn stored(&self) -> ((usize, usize), (usize, usize)) {
        let a = if self.trans_a == Transpose::N { (self.m, self.k) } else { (self.k, self.m) };
        let b = if self.trans_b == Transpose::N { (self.k, self.n) } else { (self.n, self.k) };
        (a, b)
    }

    /// Checks the shape against the buffer lengths: every leading dimension at least its
    /// row length, every buffer long enough for its last row. `bias` and `pre` are the
    /// lengths of the optional operands.
    pub fn validate(
        &self,
        op: &'static str,
        a_len: usize,
        b_len: usize,
        c_len: usize,
        bias: Option<usize>,
        pre: Option<usize>,
    ) -> Result<()> {
        let ((ar, ac), (br, bc)) = self.stored();
        let invalid = |what, why: String| Err(Error::InvalidArgument { op, what, why: format!("{why} ({self:?})") });
        for (what, ld, cols) in [("lda", self.lda, ac), ("ldb", self.ldb, bc), ("ldc", self.ldc, self.n)] {
            if ld < cols {
                return invalid(what, format!("{ld} is less than the row length {cols}"));
            }
        }
        let needed = |rows: usize, cols: usize, ld: usize| {
            if rows == 0 || cols == 0 {
                Some(0)
            } else {
                (rows - 1).checked_mul(ld).and_then(|x| x.checked_add(cols))
            }
        };
        let checks = [
            ("a", needed(ar, ac, self.lda), a_len),
            ("b", needed(br, bc, self.ldb), b_len),
            ("c", needed(self.m, self.n, self.ldc), c_len),
        ];
        for (what, need, got) in checks.into_iter().chain(pre.map(|p| ("pre", needed(self.m, self.n, self.ldc), p))) {
            let Some(need) = need else { return invalid(what, "the matrix is larger than memory can hold".into()) };
            if got < need {
                return Err(Error::LengthMismatch { op, what, expected: need, got });
            }
        }
        if let Some(got) = bias {
            if got < self.n {
                return Err(Error::LengthMismatch { op, what: "bias", expected: self.n, got });
            }
        }
        if [self.m, self.n, self.k, self.lda, self.ldb, self.ldc].iter().any(|&d| d > i64::MAX as usize) {
            return invalid("shape", "a dimension exceeds i64".into());
        }
        Ok(())
    }

    /// True when the 16-byte loading path applies: every dimension and leading dimension
    /// of A and B a multiple of 8 (the pointers are checked separately).
    fn vector_friendly(&self) -> bool {
        [self.m, self.n, self.k, self.lda, self.ldb].iter().all(|d| d % 8 == 0)
    }
}

/// The epilogue: scaling, optional bias, optional pre-activation output, activation.
/// `T` is the operands' half type, which the bias (when not f32) and `pre` share.
pub struct Epilogue<'a, 'b, T: Half = f16> {
    /// Multiplies op(A) op(B).
    pub alpha: f32,
    /// Multiplies the old C; with 0, C is not read (NaN in C does not propagate).
    pub beta: f32,
    /// Added per output column after scaling.
    pub bias: Option<Bias<'a, T>>,
    /// If given, receives `(T)` of the value before the activation, for the backward
    /// pass (the autograd keeps it instead of recomputing); same layout as C.
    pub pre: Option<&'b mut CudaViewMut<'a, T>>,
    /// Applied last.
    pub activation: Activation,
}

impl<T: Half> Default for Epilogue<'_, '_, T> {
    fn default() -> Self {
        Epilogue { alpha: 1.0, beta: 0.0, bias: None, pre: None, activation: Activation::None }
    }
}

/// A bias vector in f32 or in the operands' half type `T`.
pub enum Bias<'a, T: Half = f16> {
    /// f32 bias.
    F32(CudaView<'a, f32>),
    /// Half-precision bias, of the operands' type.
    Half(CudaView<'a, T>),
}

/// Mirrors `struct GemmParams` in cuda/gemm.cu (112 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
struct GemmParams {
    a: u64,
    b: u64,
    c: u64,
    bias: u64,
    pre: u64,
    found_inf: u64,
    m: i64,
    n: i64,
    k: i64,
    lda: i64,
    ldb: i64,
    ldc: i64,
    alpha: f32,
    beta: f32,
    act: i32,
    bias_f16: i32,
}

// SAFETY: plain `repr(C)` numbers with the layout of the CUDA struct (six pointers as u64,
// six i64, two f32, two i32), passed by value as a kernel parameter.
unsafe impl DeviceRepr for GemmParams {}

const GEMM_BM: usize = 128;
const GEMM_BN: usize = 128;
const GEMM_THREADS: u32 = 256;

/// The kernel for operands `T`, output `C` and the shape's layouts; bf16 is refused below
/// sm_80 (the sm_75 PTX has no bf16 kernels: bf16 tensor cores start with Ampere).
fn kernel_name<H: Half, C: Element>(dev: &Device, shape: &GemmShape) -> Result<&'static str> {
    use Transpose::{N, T};
    if H::DTYPE == DType::BF16 {
        let capability = dev.info().compute_capability;
        if capability < (8, 0) {
            return Err(Error::Unsupported { op: "gemm", what: "bf16 tensor cores", needs: (8, 0), capability });
        }
        return Ok(match (C::DTYPE, shape.trans_a, shape.trans_b) {
            (DType::F32, N, N) => "gemm_bf16_nn_f32",
            (DType::F32, N, T) => "gemm_bf16_nt_f32",
            (DType::F32, T, N) => "gemm_bf16_tn_f32",
            (DType::F32, T, T) => "gemm_bf16_tt_f32",
            (DType::BF16, N, N) => "gemm_bf16_nn_bf16",
            (DType::BF16, N, T) => "gemm_bf16_nt_bf16",
            (DType::BF16, T, N) => "gemm_bf16_tn_bf16",
            (DType::BF16, T, T) => "gemm_bf16_tt_bf16",
            (dtype, ..) => return Err(Error::UnsupportedDtype { op: "gemm", what: "c", dtype }),
        });
    }
    Ok(match (C::DTYPE, shape.trans_a, shape.trans_b) {
        (DType::F32, N, N) => "gemm_nn_f32",
        (DType::F32, N, T) => "gemm_nt_f32",
        (DType::F32, T, N) => "gemm_tn_f32",
        (DType::F32, T, T) => "gemm_tt_f32",
        (DType::F16, N, N) => "gemm_nn_f16",
        (DType::F16, N, T) => "gemm_nt_f16",
        (DType::F16, T, N) => "gemm_tn_f16",
        (DType::F16, T, T) => "gemm_tt_f16",
        (dtype, ..) => return Err(Error::UnsupportedDtype { op: "gemm", what: "c", dtype }),
    })
}

/// `C = act(alpha * op(A) op(B) + beta * C + bias)` with A and B in `T` (f16, or bf16 on
/// sm_80 and newer), accumulation in f32 and C in f32 or `T`. Any m, n, k >= 0 and any
/// valid leading dimensions; m or n = 0 does nothing, k = 0 still applies `beta * C`,
/// bias and activation. Every argument is checked before the launch.
pub fn gemm<T: Half, C: Element>(
    dev: &Device,
    shape: &GemmShape,
    a: &CudaView<'_, T>,
    b: &CudaView<'_, T>,
    c: &mut CudaViewMut<'_, C>,
    epilogue: Epilogue<'_, '_, T>,
) -> Result<()> {
    launch_gemm(dev, shape, a, b, c, epilogue, None)
}

/// [`gemm`] that also sets `found_inf` (one f32) to 1 when a value it writes to C (as
/// stored) is inf or NaN, and never clears it: a training step's overflow check on its
/// weight gradients, made while the GEMM writes them instead of in a pass after the
/// backward. A value that ends non-finite was non-finite when last written (inf and NaN
/// survive accumulation with beta = 1), so nothing a later pass would find is missed.
pub fn gemm_checking<T: Half, C: Element>(
    dev: &Device,
    shape: &GemmShape,
    a: &CudaView<'_, T>,
    b: &CudaView<'_, T>,
    c: &mut CudaViewMut<'_, C>,
    epilogue: Epilogue<'_, '_, T>,
    found_inf: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    launch_gemm(dev, shape, a, b, c, epilogue, Some(found_inf))
}

fn launch_gemm<T: Half, C: Element>(
    dev: &Device,
    shape: &GemmShape,
    a: &CudaView<'_, T>,
    b: &CudaView<'_, T>,
    c: &mut CudaViewMut<'_, C>,
    epilogue: Epilogue<'_, '_, T>,
    found_inf: Option<&mut CudaViewMut<'_, f32>>,
) -> Result<()> {
    let op = kernel_name::<T, C>(dev, shape)?;
    if let Some(f) = &found_inf {
        check_scalar(op, "found_inf", &**f)?;
        check_device(op, dev, &**f)?;
    }
    let bias_len = epilogue.bias.as_ref().map(|b| match b {
        Bias::F32(v) => v.len(),
        Bias::Half(v) => v.len(),
    });
    shape.validate(op, a.len(), b.len(), c.len(), bias_len, epilogue.pre.as_ref().map(|p| p.len()))?;
    for (what, ok) in [("alpha", epilogue.alpha.is_finite()), ("beta", epilogue.beta.is_finite())] {
        if !ok {
            return Err(Error::InvalidArgument { op, what, why: "must be finite".into() });
        }
    }
    check_device(op, dev, a)?;
    check_device(op, dev, b)?;
    check_device(op, dev, c)?;
    match &epilogue.bias {
        Some(Bias::F32(v)) => check_device(op, dev, v)?,
        Some(Bias::Half(v)) => check_device(op, dev, v)?,
        None => {}
    }
    if let Some(p) = &epilogue.pre {
        check_device(op, dev, *p)?;
    }
    if shape.m == 0 || shape.n == 0 {
        return Ok(());
    }
    let func = dev.function(&ptx::GEMM, op)?;
    let stream = dev.stream();
    let (a_ptr, _a) = a.device_ptr(stream);
    let (b_ptr, _b) = b.device_ptr(stream);
    let (c_ptr, _c) = c.device_ptr_mut(stream);
    let (bias_ptr, bias_f16, _bias) = match &epilogue.bias {
        Some(Bias::F32(v)) => {
            let (p, s) = v.device_ptr(stream);
            (p, 0, Some(s))
        }
        Some(Bias::Half(v)) => {
            let (p, s) = v.device_ptr(stream);
            (p, 1, Some(s))
        }
        None => (0, 0, None),
    };
    let (found_ptr, _found) = match found_inf {
        Some(f) => {
            let (ptr, sync) = f.device_ptr_mut(stream);
            (ptr, Some(sync))
        }
        None => (0, None),
    };
    let (pre_ptr, _pre) = match epilogue.pre {
        Some(p) => {
            let (ptr, s) = p.device_ptr_mut(stream);
            (ptr, Some(s))
        }
        None => (0, None),
    };
    let vec = (shape.vector_friendly() && a_ptr % 16 == 0 && b_ptr % 16 == 0) as i32;
    let params = GemmParams {
        a: a_ptr,
        b: b_ptr,
        c: c_ptr,
        bias: bias_ptr,
        pre: pre_ptr,
        found_inf: found_ptr,
        m: shape.m as i64,
        n: shape.n as i64,
        k: shape.k as i64,
        lda: shape.lda as i64,
        ldb: shape.ldb as i64,
        ldc: shape.ldc as i64,
        alpha: epilogue.alpha,
        beta: epilogue.beta,
        act: epilogue.activation as i32,
        bias_f16,
    };
    let grid_y = shape.m.div_ceil(GEMM_BM);
    if grid_y > 65535 {
        return Err(Error::InvalidArgument { op, what: "m", why: format!("{} rows exceed the grid limit", shape.m) });
    }
    let cfg = LaunchConfig {
        grid_dim: (shape.n.div_ceil(GEMM_BN) as u32, grid_y as u32, 1),
        block_dim: (GEMM_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut launch = stream.launch_builder(&func);
    launch.arg(&params).arg(&vec);
    // SAFETY: arguments match `gemm_[bf16_]<ta><tb>_<C>(GemmParams, int32_t)` in
    // cuda/gemm.cu (the name follows T, the layouts and C above; bf16 kernels exist in the
    // sm_80 PTX only, and kernel_name refused bf16 below sm_80); every buffer holds at least the elements the
    // shape addresses and lives in this device's context (validated above), found_inf
    // one element or null; the 16-byte
    // path is taken only with dimensions, leading dimensions and pointers it needs.
    unsafe { launch.launch(cfg) }.op(op)?;
    Ok(())
}

/// `c (m x n, row stride ldc) = op(A) op(B)` in f32 on the host, for the CPU reference:
/// matrixmultiply's sgemm, which takes any row and column strides, so the transposes
/// are strides and nothing is copied. Lengths are checked by [`GemmShape::validate`].
pub(crate) fn host_matmul(shape: &GemmShape, a: &[f32], b: &[f32], c: &mut [f32]) -> Result<()> {
    shape.validate("cpu::gemm", a.len(), b.len(), c.len(), None, None)?;
    if shape.m == 0 || shape.n == 0 {
        return Ok(());
    }
    let (rsa, csa) = match shape.trans_a {
        Transpose::N => (shape.lda as isize, 1),
        Transpose::T => (1, shape.lda as isize),
    };
    let (rsb, csb) = match shape.trans_b {
        Transpose::N => (shape.ldb as isize, 1),
        Transpose::T => (1, shape.ldb as isize),
    };
    // SAFETY: validate() checked that a, b and c hold every element the shape and strides
    // address (the last row of each ends inside the slice); the three slices are distinct
    // borrows, so c does not alias a or b; beta = 0 makes sgemm ignore c's old contents.
    unsafe {
        matrixmultiply::sgemm(
            shape.m,
            shape.k,
            shape.n,
            1.0,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            0.0,
            c.as_mut_ptr(),
            shape.ldc as isize,
            1,
        );
    }
    Ok(())
}

/// cuBLAS on the same row-major shapes: the baseline the GEMM benchmark measures in the
/// same run (feature `cublas`).
#[cfg(feature = "cublas")]
pub mod cublas {
    use std::sync::Arc;

    use cudarc::cublas::{result, sys, CudaBlas};
    use cudarc::driver::{CudaView, CudaViewMut, DevicePtr, DevicePtrMut};

    use super::{GemmShape, Transpose};
    use crate::device::Device;
    use crate::dtype::{DType, Element, Half};
    use crate::error::{Error, Result};

    /// A cuBLAS handle on the device's stream.
    pub struct CublasGemm {
        dev: Arc<Device>,
        blas: CudaBlas,
    }

    impl CublasGemm {
        /// Creates the handle (loads libcublas).
        pub fn new(dev: &Arc<Device>) -> Result<Self> {
            let blas = CudaBlas::new(dev.stream().clone())
                .map_err(|e| Error::Library { op: "CublasGemm::new", message: format!("{e:?}") })?;
            Ok(CublasGemm { dev: dev.clone(), blas })
        }

        /// `c = alpha * op(a) op(b) + beta * c` with cublasGemmEx: f16 or bf16 inputs, f32
        /// compute, C in f32 or the input type. Row-major C is column-major Cᵀ = op(B)ᵀ op(A)ᵀ, so the
        /// operands swap and keep their transpose flags.
        pub fn gemm<T: Half, C: Element>(
            &self,
            shape: &GemmShape,
            a: &CudaView<'_, T>,
            b: &CudaView<'_, T>,
            c: &mut CudaViewMut<'_, C>,
            alpha: f32,
            beta: f32,
        ) -> Result<()> {
            const OP: &str = "CublasGemm::gemm";
            shape.validate(OP, a.len(), b.len(), c.len(), None, None)?;
            let cuda_type = |d: DType| match d {
                DType::F32 => sys::cudaDataType::CUDA_R_32F,
                DType::F16 => sys::cudaDataType::CUDA_R_16F,
                DType::BF16 => sys::cudaDataType::CUDA_R_16BF,
            };
            if C::DTYPE != DType::F32 && C::DTYPE != T::DTYPE {
                return Err(Error::UnsupportedDtype { op: OP, what: "c", dtype: C::DTYPE });
            }
            let (ab_type, c_type) = (cuda_type(T::DTYPE), cuda_type(C::DTYPE));
            let int = |x: usize| {
                i32::try_from(x).map_err(|_| Error::InvalidArgument {
                    op: OP,
                    what: "shape",
                    why: format!("{x} exceeds i32"),
                })
            };
            let flag = |t| match t {
                Transpose::N => sys::cublasOperation_t::CUBLAS_OP_N,
                Transpose::T => sys::cublasOperation_t::CUBLAS_OP_T,
            };
            let (m, n, k) = (int(shape.m)?, int(shape.n)?, int(shape.k)?);
            let (lda, ldb, ldc) = (int(shape.lda)?, int(shape.ldb)?, int(shape.ldc)?);
            let stream = self.dev.stream();
            let (a_ptr, _a) = a.device_ptr(stream);
            let (b_ptr, _b) = b.device_ptr(stream);
            let (c_ptr, _c) = c.device_ptr_mut(stream);
            // SAFETY: the handle is bound to this device's stream; the shape was validated
            // against the three buffers, so cuBLAS reads and writes inside them; alpha and
            // beta are f32 as CUBLAS_COMPUTE_32F requires, and outlive the call.
            unsafe {
                result::gemm_ex(
                    *self.blas.handle(),
                    flag(shape.trans_b),
                    flag(shape.trans_a),
                    n,
                    m,
                    k,
                    (&alpha) as *const f32 as *const _,
                    b_ptr as *const _,
                    ab_type,
                    ldb,
                    a_ptr as *const _,
                    ab_type,
                    lda,
                    (&beta) as *const f32 as *const _,
                    c_ptr as *mut _,
                    c_type,
                    ldc,
                    sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            }
            .map_err(|e| Error::Library { op: OP, message: format!("{e:?}") })
        }
    }
}
