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
        let needed = matrix_extent;
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

/// The kernel for operands `T`, output `C`, the shape's layouts and single or batched
/// (`gemm_[bf16_][batched_]<ta><tb>_<c>`); bf16 is refused below sm_80 (the sm_75 PTX has
/// no bf16 kernels: bf16 tensor cores start with Ampere) under the name `op`.
fn kernel_name<H: Half, C: Element>(
    dev: &Device,
    shape: &GemmShape,
    batched: bool,
    op: &'static str,
) -> Result<&'static str> {
    // Indexed by [batched][layout], layout = 2 * (A transposed) + (B transposed).
    const F16_F32: [[&str; 4]; 2] = [
        ["gemm_nn_f32", "gemm_nt_f32", "gemm_tn_f32", "gemm_tt_f32"],
        ["gemm_batched_nn_f32", "gemm_batched_nt_f32", "gemm_batched_tn_f32", "gemm_batched_tt_f32"],
    ];
    const F16_F16: [[&str; 4]; 2] = [
        ["gemm_nn_f16", "gemm_nt_f16", "gemm_tn_f16", "gemm_tt_f16"],
        ["gemm_batched_nn_f16", "gemm_batched_nt_f16", "gemm_batched_tn_f16", "gemm_batched_tt_f16"],
    ];
    const BF16_F32: [[&str; 4]; 2] = [
        ["gemm_bf16_nn_f32", "gemm_bf16_nt_f32", "gemm_bf16_tn_f32", "gemm_bf16_tt_f32"],
        [
            "gemm_bf16_batched_nn_f32",
            "gemm_bf16_batched_nt_f32",
            "gemm_bf16_batched_tn_f32",
            "gemm_bf16_batched_tt_f32",
        ],
    ];
    const BF16_BF16: [[&str; 4]; 2] = [
        ["gemm_bf16_nn_bf16", "gemm_bf16_nt_bf16", "gemm_bf16_tn_bf16", "gemm_bf16_tt_bf16"],
        [
            "gemm_bf16_batched_nn_bf16",
            "gemm_bf16_batched_nt_bf16",
            "gemm_bf16_batched_tn_bf16",
            "gemm_bf16_batched_tt_bf16",
        ],
    ];
    let layout = 2 * (shape.trans_a == Transpose::T) as usize + (shape.trans_b == Transpose::T) as usize;
    let table = if H::DTYPE == DType::BF16 {
        let capability = dev.info().compute_capability;
        if capability < (8, 0) {
            return Err(Error::Unsupported { op, what: "bf16 tensor cores", needs: (8, 0), capability });
        }
        match C::DTYPE {
            DType::F32 => &BF16_F32,
            DType::BF16 => &BF16_BF16,
            dtype => return Err(Error::UnsupportedDtype { op, what: "c", dtype }),
        }
    } else {
        match C::DTYPE {
            DType::F32 => &F16_F32,
            DType::F16 => &F16_F16,
            dtype => return Err(Error::UnsupportedDtype { op, what: "c", dtype }),
        }
    };
    Ok(table[batched as usize][layout])
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
    launch_gemm(dev, shape, None, a, b, c, epilogue, None)
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
    launch_gemm(dev, shape, None, a, b, c, epilogue, Some(found_inf))
}

/// Element strides of one operand between consecutive batches at the two batch levels of
/// [`gemm_strided_batched`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchStrides {
    /// Elements between batch `(o, i)` and `(o + 1, i)`.
    pub outer: usize,
    /// Elements between batch `(o, i)` and `(o, i + 1)`.
    pub inner: usize,
}

/// Work a batched GEMM may skip because of a triangular structure, for causal attention
/// (cuda/gemm.cu, `GemmTriangle`). The values written are bit-identical to
/// [`Triangle::Full`]'s: skipped products are exact zeros, skipped K steps whole tiles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Triangle {
    /// Everything computed.
    #[default]
    Full = 0,
    /// Only C on and below the diagonal (`j <= i`) is wanted: output tiles of 128 x 128
    /// wholly above it are not computed and not written (entries above the diagonal in
    /// tiles that straddle it are). For `S = Q Kᵀ` and `dP = dout Vᵀ`.
    LowerC = 1,
    /// `op(A)[i][k] = 0` for `k > i` (a causal `P` or `dS`): the reduction stops at the
    /// diagonal of each row tile. The caller guarantees the zeros.
    LowerA = 2,
    /// `op(A)[i][k] = 0` for `k < i` (`Pᵀ`, `dSᵀ`): the reduction starts at the diagonal of
    /// each row tile. The caller guarantees the zeros.
    UpperA = 3,
}

/// The batch of [`gemm_strided_batched`]: `outer * inner` GEMMs of one [`GemmShape`],
/// batch `(o, i)` reading A at `a + o * a.outer + i * a.inner` elements, B and C (and the
/// epilogue's `pre`, which shares C's strides) likewise. Two levels so that attention's
/// `(batch, head)` index folds into strides of the `(B*T, 3C)` qkv buffer without a copy:
/// for Q of head `h` of sequence `b`, `outer = B`, `inner = NH`, `a.outer = T * 3C`,
/// `a.inner = hs`, `lda = 3C`.
///
/// Batches are not checked for overlap: C regions that overlap between batches are written
/// by several blocks in no fixed order (the result is then unspecified, not unsafe).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmBatch {
    /// Batches at the outer level.
    pub outer: usize,
    /// Batches per outer index.
    pub inner: usize,
    /// Strides of A.
    pub a: BatchStrides,
    /// Strides of B.
    pub b: BatchStrides,
    /// Strides of C and of `pre`.
    pub c: BatchStrides,
    /// Work skipped for triangular operands ([`Triangle::Full`]: none).
    pub triangle: Triangle,
}

/// Mirrors `struct GemmBatch` in cuda/gemm.cu (56 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
struct GemmBatchParams {
    a_outer: i64,
    a_inner: i64,
    b_outer: i64,
    b_inner: i64,
    c_outer: i64,
    c_inner: i64,
    inner: u32,
    triangle: i32,
}

// SAFETY: plain `repr(C)` numbers with the layout of the CUDA struct (six i64, one u32,
// one i32: 56 bytes, no padding), passed by value as a kernel parameter.
unsafe impl DeviceRepr for GemmBatchParams {}

impl GemmBatch {
    /// The number of GEMMs, `outer * inner`; `None` when that overflows.
    pub fn count(&self) -> Option<usize> {
        self.outer.checked_mul(self.inner)
    }

    /// The strides as used: a level with one batch never steps, so its stride is 0
    /// whatever was given (it then neither extends the extent nor blocks the 16-byte path).
    fn effective(&self, s: BatchStrides) -> BatchStrides {
        BatchStrides {
            outer: if self.outer > 1 { s.outer } else { 0 },
            inner: if self.inner > 1 { s.inner } else { 0 },
        }
    }

    /// Checks every batch's matrices against the buffer lengths (checked arithmetic: the
    /// last batch, the one furthest into each buffer, must end inside it) and returns the
    /// number of batches. The shape's own checks ([`GemmShape::validate`]) come first.
    #[allow(clippy::too_many_arguments)]
    pub fn validate(
        &self,
        op: &'static str,
        shape: &GemmShape,
        a_len: usize,
        b_len: usize,
        c_len: usize,
        bias: Option<usize>,
        pre: Option<usize>,
    ) -> Result<usize> {
        let count = self.count().ok_or_else(|| Error::InvalidArgument {
            op,
            what: "batch",
            why: format!("{} x {} batches overflow ({self:?})", self.outer, self.inner),
        })?;
        if count == 0 {
            // Nothing is addressed; the leading dimensions must still make sense.
            shape.validate(op, usize::MAX, usize::MAX, usize::MAX, bias, pre.map(|_| usize::MAX))?;
            return Ok(0);
        }
        shape.validate(op, a_len, b_len, c_len, bias, pre)?;
        let ((ar, ac), (br, bc)) = shape.stored();
        let too_large = |what| Error::InvalidArgument {
            op,
            what,
            why: format!("the last batch lies beyond memory ({self:?}, {shape:?})"),
        };
        let last = |s: BatchStrides| {
            let s = self.effective(s);
            (self.outer - 1).checked_mul(s.outer)?.checked_add((self.inner - 1).checked_mul(s.inner)?)
        };
        let mut operands = vec![
            ("a", last(self.a), matrix_extent(ar, ac, shape.lda), a_len),
            ("b", last(self.b), matrix_extent(br, bc, shape.ldb), b_len),
            ("c", last(self.c), matrix_extent(shape.m, shape.n, shape.ldc), c_len),
        ];
        if let Some(p) = pre {
            operands.push(("pre", last(self.c), matrix_extent(shape.m, shape.n, shape.ldc), p));
        }
        for (what, offset, extent, got) in operands {
            let need = offset.zip(extent).and_then(|(o, e)| o.checked_add(e)).ok_or_else(|| too_large(what))?;
            if need > i64::MAX as usize {
                return Err(too_large(what));
            }
            if got < need {
                return Err(Error::LengthMismatch { op, what, expected: need, got });
            }
        }
        if self.inner > u32::MAX as usize {
            return Err(Error::InvalidArgument { op, what: "batch", why: format!("inner {} exceeds u32", self.inner) });
        }
        Ok(count)
    }

    fn params(&self) -> GemmBatchParams {
        let (a, b, c) = (self.effective(self.a), self.effective(self.b), self.effective(self.c));
        GemmBatchParams {
            a_outer: a.outer as i64,
            a_inner: a.inner as i64,
            b_outer: b.outer as i64,
            b_inner: b.inner as i64,
            c_outer: c.outer as i64,
            c_inner: c.inner as i64,
            inner: self.inner as u32,
            triangle: self.triangle as i32,
        }
    }
}

/// Elements a `rows x cols` matrix with leading dimension `ld` spans: up to the end of
/// its last row (`None` on overflow).
fn matrix_extent(rows: usize, cols: usize, ld: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        Some(0)
    } else {
        (rows - 1).checked_mul(ld).and_then(|x| x.checked_add(cols))
    }
}

/// [`gemm`] over a strided batch: for every `(o, i)` with `o < batch.outer`, `i <
/// batch.inner`, `C_oi = act(alpha * op(A_oi) op(B_oi) + beta * C_oi + bias)` with each
/// operand offset by its [`BatchStrides`] (see [`GemmBatch`]); the shape, layouts,
/// epilogue (bias shared by every batch, `pre` at C's offsets), output types and bf16
/// rule (sm_80 and newer, else [`Error::Unsupported`] before anything is queued) are the
/// single GEMM's. One launch, batch = grid z (at most 65535 batches). Every batch's
/// extent is checked against its buffer before the launch. Deterministic, as [`gemm`].
///
/// The batched kernels run one 256-thread block per SM rather than two (cuda/gemm.cu
/// says why); attention, their user, runs many small batches.
pub fn gemm_strided_batched<T: Half, C: Element>(
    dev: &Device,
    shape: &GemmShape,
    batch: &GemmBatch,
    a: &CudaView<'_, T>,
    b: &CudaView<'_, T>,
    c: &mut CudaViewMut<'_, C>,
    epilogue: Epilogue<'_, '_, T>,
) -> Result<()> {
    launch_gemm(dev, shape, Some(batch), a, b, c, epilogue, None)
}

#[allow(clippy::too_many_arguments)]
fn launch_gemm<T: Half, C: Element>(
    dev: &Device,
    shape: &GemmShape,
    batch: Option<&GemmBatch>,
    a: &CudaView<'_, T>,
    b: &CudaView<'_, T>,
    c: &mut CudaViewMut<'_, C>,
    epilogue: Epilogue<'_, '_, T>,
    found_inf: Option<&mut CudaViewMut<'_, f32>>,
) -> Result<()> {
    let refusal_op = if batch.is_some() { "gemm_strided_batched" } else { "gemm" };
    let op = kernel_name::<T, C>(dev, shape, batch.is_some(), refusal_op)?;
    if let Some(f) = &found_inf {
        check_scalar(op, "found_inf", &**f)?;
        check_device(op, dev, &**f)?;
    }
    let bias_len = epilogue.bias.as_ref().map(|b| match b {
        Bias::F32(v) => v.len(),
        Bias::Half(v) => v.len(),
    });
    let pre_len = epilogue.pre.as_ref().map(|p| p.len());
    let batches = match batch {
        Some(batch) => batch.validate(op, shape, a.len(), b.len(), c.len(), bias_len, pre_len)?,
        None => {
            shape.validate(op, a.len(), b.len(), c.len(), bias_len, pre_len)?;
            1
        }
    };
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
    if shape.m == 0 || shape.n == 0 || batches == 0 {
        return Ok(());
    }
    let grid_y = shape.m.div_ceil(GEMM_BM);
    if grid_y > 65535 {
        return Err(Error::InvalidArgument { op, what: "m", why: format!("{} rows exceed the grid limit", shape.m) });
    }
    if batches > 65535 {
        return Err(Error::InvalidArgument {
            op,
            what: "batch",
            why: format!("{batches} batches exceed the grid limit of 65535"),
        });
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
    // Every batch's A and B must start 16-byte aligned too: their strides multiples of 8.
    let strides_friendly = batch.is_none_or(|bt| {
        let (sa, sb) = (bt.effective(bt.a), bt.effective(bt.b));
        [sa.outer, sa.inner, sb.outer, sb.inner].iter().all(|s| s % 8 == 0)
    });
    let vec = (shape.vector_friendly() && strides_friendly && a_ptr % 16 == 0 && b_ptr % 16 == 0) as i32;
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
    let cfg = LaunchConfig {
        grid_dim: (shape.n.div_ceil(GEMM_BN) as u32, grid_y as u32, batches as u32),
        block_dim: (GEMM_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let batch_params = batch.map(GemmBatch::params);
    let mut launch = stream.launch_builder(&func);
    launch.arg(&params);
    if let Some(bp) = &batch_params {
        launch.arg(bp);
    }
    launch.arg(&vec);
    // SAFETY: arguments match `gemm_[bf16_]<ta><tb>_<C>(GemmParams, int32_t)`, or for a
    // batch `gemm_[bf16_]batched_<ta><tb>_<C>(GemmParams, GemmBatch, int32_t)`, in
    // cuda/gemm.cu (the name follows T, the layouts, C and the batch above; bf16 kernels
    // exist in the sm_80 PTX only, and kernel_name refused bf16 below sm_80); every buffer
    // holds at least the elements the shape addresses in every batch and lives in this
    // device's context (validated above), found_inf one element or null; grid z is the
    // batch count the kernel decodes with `inner`; the 16-byte path is taken only with
    // dimensions, leading dimensions, batch strides and pointers it needs.
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
