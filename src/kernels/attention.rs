//! Launchers for `cuda/attention.cu`: causal self-attention, forward and backward, as
//! strided-batched tensor-core GEMMs ([`gemm_strided_batched`]) around a fused causal
//! softmax in f32. Heads are strides of the `(B*T, 3C)` qkv buffer: nothing is permuted
//! or copied.
//!
//! Memory: the scores, probabilities and their gradients are `(B, NH, T, T)` each, so
//! attention needs `O(B * NH * T^2)` scratch, all allocated by the caller (llm.c's choice;
//! a flash-attention kernel would keep it `O(B * NH * T)`). Both launchers queue work on
//! the device's stream only: no host synchronization, no allocation, so a training step
//! that calls them can be captured as one CUDA graph.

use cudarc::driver::{CudaView, CudaViewMut, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};

use super::gemm::{gemm_strided_batched, BatchStrides, Epilogue, GemmBatch, GemmShape, Transpose, Triangle};
use super::{check_device, half_kernel};
use crate::device::Device;
use crate::dtype::{DType, Half};
use crate::error::{DriverContext, Error, Result};
use crate::ptx;

/// Rows per block of the softmax kernels: one warp each (`ATTN_WARPS` in attention.cu).
const ATTN_WARPS: usize = 8;

/// The dimensions of one causal self-attention: `b` sequences of `t` tokens, `c`
/// channels in `nh` heads of `c / nh` channels each (`c % nh == 0`).
///
/// Buffers, all row-major: `qkv` and `dqkv` are `(b*t, 3c)` with Q in columns `[0, c)`, K
/// in `[c, 2c)`, V in `[2c, 3c)` and head `h` of each at columns `h*hs..(h+1)*hs`; `out`
/// and `dout` are `(b*t, c)`; scores, probabilities and their gradients `(b, nh, t, t)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnDims {
    /// Sequences.
    pub b: usize,
    /// Tokens per sequence.
    pub t: usize,
    /// Channels (the model width).
    pub c: usize,
    /// Heads; must divide `c`.
    pub nh: usize,
}

/// The checked sizes of an [`AttnDims`].
struct Sizes {
    hs: usize,
    qkv: usize,
    out: usize,
    att: usize,
}

impl AttnDims {
    /// Channels per head, `c / nh` (0 when `nh` is 0, which [`attention_forward`] refuses).
    pub fn head_size(&self) -> usize {
        self.c.checked_div(self.nh).unwrap_or(0)
    }

    /// `1 / sqrt(hs)` in f32: the factor on the scores (applied by the GEMMs).
    pub fn scale(&self) -> f32 {
        1.0 / (self.head_size() as f32).sqrt()
    }

    /// Elements of `qkv` and `dqkv`: `b * t * 3c` (`None` on overflow).
    pub fn qkv_len(&self) -> Option<usize> {
        self.b.checked_mul(self.t)?.checked_mul(self.c)?.checked_mul(3)
    }

    /// Elements of `out` and `dout`: `b * t * c`.
    pub fn out_len(&self) -> Option<usize> {
        self.b.checked_mul(self.t)?.checked_mul(self.c)
    }

    /// Elements of each `(b, nh, t, t)` buffer: scores, probabilities and their gradients.
    pub fn att_len(&self) -> Option<usize> {
        self.b.checked_mul(self.nh)?.checked_mul(self.t)?.checked_mul(self.t)
    }

    fn check(&self, op: &'static str) -> Result<Sizes> {
        let invalid = |what, why: String| Error::InvalidArgument { op, what, why: format!("{why} ({self:?})") };
        if self.nh == 0 || self.c % self.nh != 0 {
            return Err(invalid("nh", format!("{} heads do not divide {} channels", self.nh, self.c)));
        }
        let overflow = || invalid("dims", "the buffers' sizes overflow".into());
        let sizes = Sizes {
            hs: self.c / self.nh,
            qkv: self.qkv_len().ok_or_else(overflow)?,
            out: self.out_len().ok_or_else(overflow)?,
            att: self.att_len().ok_or_else(overflow)?,
        };
        // Grid limits of the batched GEMMs (batch = grid z, row tiles = grid y) checked
        // here, so that no GEMM of the sequence can fail after an earlier one was queued.
        if self.b.saturating_mul(self.nh) > 65535 {
            return Err(invalid("dims", format!("b * nh = {} batches exceed 65535", self.b * self.nh)));
        }
        // The softmax kernels' grid: a warp per row of all b * nh * t rows.
        if (self.b * self.nh).saturating_mul(self.t).div_ceil(ATTN_WARPS) > i32::MAX as usize {
            return Err(invalid("dims", "b * nh * t rows exceed the softmax's grid limit".into()));
        }
        if self.t.div_ceil(128) > 65535 {
            return Err(invalid("t", format!("{} tokens exceed the grid limit", self.t)));
        }
        Ok(sizes)
    }

    /// The GEMM batch over (sequence, head) for the three operands' strides.
    fn batch(&self, a: BatchStrides, b: BatchStrides, c: BatchStrides, triangle: Triangle) -> GemmBatch {
        GemmBatch { outer: self.b, inner: self.nh, a, b, c, triangle }
    }

    /// Strides of one head inside a `(b*t, width)` buffer.
    fn rows_strides(&self, width: usize) -> BatchStrides {
        BatchStrides { outer: self.t * width, inner: self.head_size() }
    }

    /// Strides of one `(t, t)` matrix inside a `(b, nh, t, t)` buffer.
    fn att_strides(&self) -> BatchStrides {
        BatchStrides { outer: self.nh * self.t * self.t, inner: self.t * self.t }
    }
}

fn check_len(op: &'static str, what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::LengthMismatch { op, what, expected, got })
    }
}

/// bf16 GEMMs need sm_80: refused here, before the first of the sequence is queued.
fn check_bf16<H: Half>(op: &'static str, dev: &Device) -> Result<()> {
    let capability = dev.info().compute_capability;
    if H::DTYPE == DType::BF16 && capability < (8, 0) {
        return Err(Error::Unsupported { op, what: "bf16 tensor cores", needs: (8, 0), capability });
    }
    Ok(())
}

/// Causal self-attention forward, `out = softmax(mask(scale * Q Kᵀ)) V` per (sequence,
/// head), written into `out`'s columns `h*hs..` (no permute): three launches,
///
/// 1. `scores = scale * Q Kᵀ` (f32, `(b, nh, t, t)`), strided-batched GEMM, on and below
///    the diagonal only (128 x 128 tiles wholly above it are skipped and left as they were);
/// 2. `probs` = the causal softmax of each row of `scores` in f32 (row `t`: columns
///    `j <= t`; `P_j = half(expf(S_j - m) / sum)`, `expf` the accurate function), 0 above
///    the diagonal;
/// 3. `out = probs V`, strided-batched GEMM, half out, each row tile's reduction stopping
///    at the diagonal (P is zero beyond it).
///
/// `scores` is scratch: the backward does not read it (it may be given back to
/// [`attention_backward`] as its `dprobs`). `probs` must be kept for the backward. Every
/// buffer's length must be exact ([`AttnDims`] names them); everything, including the bf16
/// refusal below sm_80 ([`Error::Unsupported`]), is checked before the first launch.
pub fn attention_forward<H: Half>(
    dev: &Device,
    dims: AttnDims,
    qkv: &CudaView<'_, H>,
    out: &mut CudaViewMut<'_, H>,
    scores: &mut CudaViewMut<'_, f32>,
    probs: &mut CudaViewMut<'_, H>,
) -> Result<()> {
    let op = half_kernel::<H>(["attention_forward_f16", "attention_forward_bf16"]);
    let sz = dims.check(op)?;
    check_len(op, "qkv", sz.qkv, qkv.len())?;
    check_len(op, "out", sz.out, out.len())?;
    check_len(op, "scores", sz.att, scores.len())?;
    check_len(op, "probs", sz.att, probs.len())?;
    check_device(op, dev, qkv)?;
    check_device(op, dev, out)?;
    check_device(op, dev, scores)?;
    check_device(op, dev, probs)?;
    check_bf16::<H>(op, dev)?;
    if sz.att == 0 || sz.hs == 0 {
        return Ok(());
    }
    let (t, c, hs) = (dims.t, dims.c, sz.hs);
    let (qkv_s, att_s) = (dims.rows_strides(3 * c), dims.att_strides());
    // S = scale Q K^T: A = Q (t x hs, ld 3c), B = K stored t x hs, used transposed.
    let s_shape =
        GemmShape { m: t, n: t, k: hs, trans_a: Transpose::N, trans_b: Transpose::T, lda: 3 * c, ldb: 3 * c, ldc: t };
    let scaled = Epilogue { alpha: dims.scale(), ..Epilogue::default() };
    // Tiles wholly above the diagonal are skipped: the softmax never reads them.
    let batch = dims.batch(qkv_s, qkv_s, att_s, Triangle::LowerC);
    gemm_strided_batched(dev, &s_shape, &batch, qkv, &qkv.slice(c..), scores, scaled)?;
    attention_softmax_forward(dev, dims.b * dims.nh * t, t, &scores.as_view(), probs)?;
    // out = P V: A = P (t x t), B = V (t x hs, ld 3c), C = out's head columns (ld c).
    let o_shape =
        GemmShape { m: t, n: hs, k: t, trans_a: Transpose::N, trans_b: Transpose::N, lda: t, ldb: 3 * c, ldc: c };
    // P is zero above the diagonal: each row tile's reduction stops there.
    let batch = dims.batch(att_s, qkv_s, dims.rows_strides(c), Triangle::LowerA);
    gemm_strided_batched(dev, &o_shape, &batch, &probs.as_view(), &qkv.slice(2 * c..), out, Epilogue::default())
}

/// Causal self-attention backward: from `dout` (`(b*t, c)`), the forward's `qkv` and
/// `probs`, writes `dqkv` (`(b*t, 3c)`, every element overwritten: dQ, dK, dV in qkv's
/// columns). Five launches:
///
/// 1. `dprobs = dout Vᵀ` (f32, `(b, nh, t, t)`; tiles wholly above the diagonal skipped);
/// 2. `dscores_j = half(P_j * (dP_j - D))`, `D = sum_{j<=t} P_j dP_j` in f32, 0 above the
///    diagonal (the `scale` is not folded in here);
/// 3. `dQ = scale * dscores K`; 4. `dK = scale * dscoresᵀ Q`; 5. `dV = probsᵀ dout`, each
///    reduction limited to the triangle where dscores and probs are not zero.
///
/// `dprobs` (f32) and `dscores` (half) are caller-allocated scratch; `dprobs` may be the
/// forward's `scores` buffer. Checked as [`attention_forward`], all before the first launch.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward<H: Half>(
    dev: &Device,
    dims: AttnDims,
    dout: &CudaView<'_, H>,
    qkv: &CudaView<'_, H>,
    probs: &CudaView<'_, H>,
    dprobs: &mut CudaViewMut<'_, f32>,
    dscores: &mut CudaViewMut<'_, H>,
    dqkv: &mut CudaViewMut<'_, H>,
) -> Result<()> {
    let op = half_kernel::<H>(["attention_backward_f16", "attention_backward_bf16"]);
    let sz = dims.check(op)?;
    check_len(op, "dout", sz.out, dout.len())?;
    check_len(op, "qkv", sz.qkv, qkv.len())?;
    check_len(op, "probs", sz.att, probs.len())?;
    check_len(op, "dprobs", sz.att, dprobs.len())?;
    check_len(op, "dscores", sz.att, dscores.len())?;
    check_len(op, "dqkv", sz.qkv, dqkv.len())?;
    check_device(op, dev, dout)?;
    check_device(op, dev, qkv)?;
    check_device(op, dev, probs)?;
    check_device(op, dev, dprobs)?;
    check_device(op, dev, dscores)?;
    check_device(op, dev, dqkv)?;
    check_bf16::<H>(op, dev)?;
    if sz.att == 0 || sz.hs == 0 {
        return Ok(());
    }
    let (t, c, hs) = (dims.t, dims.c, sz.hs);
    let (qkv_s, out_s, att_s) = (dims.rows_strides(3 * c), dims.rows_strides(c), dims.att_strides());
    use Transpose::{N, T};
    // dP = dout V^T: A = dout (t x hs, ld c), B = V stored t x hs, transposed.
    let dp_shape = GemmShape { m: t, n: t, k: hs, trans_a: N, trans_b: T, lda: c, ldb: 3 * c, ldc: t };
    let batch = dims.batch(out_s, qkv_s, att_s, Triangle::LowerC);
    gemm_strided_batched(dev, &dp_shape, &batch, dout, &qkv.slice(2 * c..), dprobs, Epilogue::default())?;
    attention_softmax_backward(dev, dims.b * dims.nh * t, t, probs, &dprobs.as_view(), dscores)?;
    let ds = dscores.as_view();
    let scaled = || Epilogue { alpha: dims.scale(), ..Epilogue::default() };
    // dQ = scale dS K: A = dS (t x t), B = K (t x hs, ld 3c), C = dQ's head columns.
    let dq_shape = GemmShape { m: t, n: hs, k: t, trans_a: N, trans_b: N, lda: t, ldb: 3 * c, ldc: 3 * c };
    let batch = dims.batch(att_s, qkv_s, qkv_s, Triangle::LowerA);
    gemm_strided_batched(dev, &dq_shape, &batch, &ds, &qkv.slice(c..), dqkv, scaled())?;
    // dK = scale dS^T Q: A = dS stored t x t, transposed; B = Q.
    // dS^T is zero below the diagonal: each row tile's reduction starts there.
    let dk_shape = GemmShape { trans_a: T, ..dq_shape };
    let batch = GemmBatch { triangle: Triangle::UpperA, ..batch };
    gemm_strided_batched(dev, &dk_shape, &batch, &ds, qkv, &mut dqkv.slice_mut(c..), scaled())?;
    // dV = P^T dout: A = P stored t x t, transposed; B = dout (t x hs, ld c).
    let dv_shape = GemmShape { ldb: c, ..dk_shape };
    let batch = dims.batch(att_s, out_s, qkv_s, Triangle::UpperA);
    gemm_strided_batched(dev, &dv_shape, &batch, probs, dout, &mut dqkv.slice_mut(2 * c..), Epilogue::default())
}

/// The causal softmax of attention alone: for each of `rows` rows of `t` f32 scores
/// (row `r` is query position `r % t`, so `rows = b * nh * t`), `probs_j = half(expf(S_j -
/// m) / sum_{i<=q} expf(S_i - m))` for `j <= q = r % t` (`m` the max over those columns) and
/// 0 above; columns above the diagonal of `scores` are never read.
pub fn attention_softmax_forward<H: Half>(
    dev: &Device,
    rows: usize,
    t: usize,
    scores: &CudaView<'_, f32>,
    probs: &mut CudaViewMut<'_, H>,
) -> Result<()> {
    let op = half_kernel::<H>(["attention_softmax_forward_f16", "attention_softmax_forward_bf16"]);
    let n = check_rows(op, rows, t)?;
    check_len(op, "scores", n, scores.len())?;
    check_len(op, "probs", n, probs.len())?;
    check_device(op, dev, scores)?;
    check_device(op, dev, probs)?;
    if n == 0 {
        return Ok(());
    }
    let func = dev.function(&ptx::ATTENTION, op)?;
    let stream = dev.stream();
    let (s_ptr, _s) = scores.device_ptr(stream);
    let (p_ptr, _p) = probs.device_ptr_mut(stream);
    let (rows64, t64) = (rows as i64, t as i64);
    let mut launch = stream.launch_builder(&func);
    launch.arg(&s_ptr).arg(&p_ptr).arg(&rows64).arg(&t64);
    // SAFETY: arguments match `attention_softmax_forward_<h>(const float*, H*, int64_t,
    // int64_t)` in cuda/attention.cu (the name follows H); scores and probs hold rows * t
    // elements each, in this device's context (checked above); one warp per row, the
    // grid covers every row and the kernel returns for rows past the end.
    unsafe { launch.launch(rows_config(op, rows)?) }.op(op)?;
    Ok(())
}

/// The causal softmax backward alone: for each row (query position `q = r % t`),
/// `D = sum_{j<=q} P_j dP_j` in f32 and `dscores_j = half(P_j * (dP_j - D))` for `j <= q`,
/// 0 above; the entries of `dprobs` above the diagonal are never read.
pub fn attention_softmax_backward<H: Half>(
    dev: &Device,
    rows: usize,
    t: usize,
    probs: &CudaView<'_, H>,
    dprobs: &CudaView<'_, f32>,
    dscores: &mut CudaViewMut<'_, H>,
) -> Result<()> {
    let op = half_kernel::<H>(["attention_softmax_backward_f16", "attention_softmax_backward_bf16"]);
    let n = check_rows(op, rows, t)?;
    check_len(op, "probs", n, probs.len())?;
    check_len(op, "dprobs", n, dprobs.len())?;
    check_len(op, "dscores", n, dscores.len())?;
    check_device(op, dev, probs)?;
    check_device(op, dev, dprobs)?;
    check_device(op, dev, dscores)?;
    if n == 0 {
        return Ok(());
    }
    let func = dev.function(&ptx::ATTENTION, op)?;
    let stream = dev.stream();
    let (p_ptr, _p) = probs.device_ptr(stream);
    let (dp_ptr, _dp) = dprobs.device_ptr(stream);
    let (ds_ptr, _ds) = dscores.device_ptr_mut(stream);
    let (rows64, t64) = (rows as i64, t as i64);
    let mut launch = stream.launch_builder(&func);
    launch.arg(&p_ptr).arg(&dp_ptr).arg(&ds_ptr).arg(&rows64).arg(&t64);
    // SAFETY: arguments match `attention_softmax_backward_<h>(const H*, const float*, H*,
    // int64_t, int64_t)` in cuda/attention.cu; probs, dprobs and dscores hold rows * t
    // elements each, in this device's context (checked above); the grid covers every row.
    unsafe { launch.launch(rows_config(op, rows)?) }.op(op)?;
    Ok(())
}

/// `rows * t`, checked; `t = 0` with rows is refused (a row needs its diagonal).
fn check_rows(op: &'static str, rows: usize, t: usize) -> Result<usize> {
    if t == 0 && rows > 0 {
        return Err(Error::InvalidArgument { op, what: "t", why: format!("{rows} rows of 0 columns") });
    }
    rows.checked_mul(t).filter(|&n| n <= i64::MAX as usize).ok_or_else(|| Error::InvalidArgument {
        op,
        what: "shape",
        why: format!("{rows} x {t} overflows"),
    })
}

fn rows_config(op: &'static str, rows: usize) -> Result<LaunchConfig> {
    let blocks = u32::try_from(rows.div_ceil(ATTN_WARPS)).ok().filter(|&b| b <= i32::MAX as u32).ok_or_else(|| {
        Error::InvalidArgument { op, what: "rows", why: format!("{rows} rows exceed the grid limit") }
    })?;
    Ok(LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (32 * ATTN_WARPS as u32, 1, 1), shared_mem_bytes: 0 })
}
