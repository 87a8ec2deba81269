//! Launchers for `cuda/layernorm.cu`: the fused residual add + layer normalisation of a
//! transformer block in f16 or bf16 with f32 statistics, its backward, and the
//! deterministic gamma/beta gradients into the f32 arena.
//!
//! A forward step is [`layernorm_forward`]; its backward is [`layernorm_backward`] (the
//! gradient reaching `r`) and [`layernorm_dparams`] (gamma's and beta's), in either order.

use cudarc::driver::{CudaView, CudaViewMut, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};

use super::{check_device, check_scalar, half_kernel};
use crate::device::Device;
use crate::dtype::Half;
use crate::error::{DriverContext, Error, Result};
use crate::ptx;

/// Rows per block of the forward and backward: one warp each (`LN_WARPS` in layernorm.cu).
const LN_WARPS: usize = 8;
/// The parameter gradients' partial sums: 32 columns by 8 threads per block, over chunks
/// of 128 rows (`LN_DP_*`, `LN_CHUNK_ROWS`), then one thread per column
/// (`LN_TOTAL_THREADS`).
const LN_DP_COLS: usize = 32;
const LN_DP_ROWS: u32 = 8;
const LN_CHUNK_ROWS: usize = 128;
const LN_TOTAL_THREADS: usize = 256;

/// The shape of a layer normalisation: `rows` rows (`B * T`) of `channels` (C) each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerNormShape {
    /// Rows normalised independently; may be 0 (nothing is launched).
    pub rows: usize,
    /// Channels per row (C), at least 1; gamma and beta have this many.
    pub channels: usize,
}

impl LayerNormShape {
    /// Elements of `rows x channels`, checked.
    fn check(&self, op: &'static str) -> Result<usize> {
        if self.channels == 0 {
            return Err(Error::InvalidArgument { op, what: "channels", why: "a layer norm needs at least one".into() });
        }
        self.rows
            .checked_mul(self.channels)
            .filter(|&n| i64::try_from(n).is_ok())
            .ok_or_else(|| Error::InvalidArgument { op, what: "shape", why: format!("{self:?} overflows") })
    }

    fn check_matrix(&self, op: &'static str, len: usize) -> Result<()> {
        if len == self.check(op)? {
            Ok(())
        } else {
            Err(Error::ShapeMismatch { op, expected: vec![self.rows, self.channels], got: vec![len] })
        }
    }

    /// Row chunks of the parameter-gradient partial sums (at least 1).
    fn chunks(&self) -> usize {
        self.rows.div_ceil(LN_CHUNK_ROWS).max(1)
    }

    /// Length (f32 elements) of the scratch buffer [`layernorm_dparams`] takes:
    /// `2 * ceil(rows / 128) * channels` (at least `2 * channels`). It depends on the
    /// shape only, so one buffer allocated up front serves every step (and a captured
    /// graph).
    pub fn dparams_scratch_len(&self) -> usize {
        self.chunks().saturating_mul(2).saturating_mul(self.channels)
    }

    fn row_config(&self, op: &'static str) -> Result<LaunchConfig> {
        let blocks = u32::try_from(self.rows.div_ceil(LN_WARPS).max(1)).map_err(|_| Error::InvalidArgument {
            op,
            what: "rows",
            why: format!("{} rows exceed the grid limit", self.rows),
        })?;
        Ok(LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (32 * LN_WARPS as u32, 1, 1), shared_mem_bytes: 0 })
    }
}

fn check_len(op: &'static str, what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::LengthMismatch { op, what, expected, got })
    }
}

/// The gradient reaching `r` from the residual stream downstream, for
/// [`layernorm_backward`].
#[derive(Clone, Copy, Debug)]
pub enum ResidualGrad<'a, H> {
    /// No residual gradient: `dr` is the layer norm's gradient alone.
    None,
    /// `dr = dres + (the layer norm's gradient)`, `dres` a separate `(rows, C)` buffer.
    From(&'a CudaView<'a, H>),
    /// `dr` holds `dres` on entry and is updated in place.
    InPlace,
}

/// The fused residual add + layer norm over `rows x C` (row-major, half):
///
/// - with `residual = Some((y, r))`: `r = (half) (x + y)` is stored, and normalised;
///   with `None`, `x` itself is normalised (and is the `r` the backward takes);
/// - per row, in f32 from the stored (rounded) values: `mean = sum(r) / C`,
///   `var = sum((r - mean)^2) / C` (two passes), `rstd = 1 / sqrt(var + eps)` (correctly
///   rounded sqrt and reciprocal);
/// - `out = (half) ((r - mean) * rstd * gamma + beta)`; `mean` and `rstd` (f32, `rows`)
///   are stored for the backward.
///
/// `eps` must be finite and positive (GPT-2: 1e-5). Each f32 operation is rounded once, no
/// fma (cuda/layernorm.cu gives the order of the row sums). Misaligned views or `C % 8 != 0`
/// take a scalar path with the same bits.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward<H: Half>(
    dev: &Device,
    shape: LayerNormShape,
    eps: f32,
    x: &impl DevicePtr<H>,
    residual: Option<(&CudaView<'_, H>, &mut CudaViewMut<'_, H>)>,
    gamma: &impl DevicePtr<H>,
    beta: &impl DevicePtr<H>,
    out: &mut impl DevicePtrMut<H>,
    mean: &mut impl DevicePtrMut<f32>,
    rstd: &mut impl DevicePtrMut<f32>,
) -> Result<()> {
    let op = half_kernel::<H>(["layernorm_forward_f16", "layernorm_forward_bf16"]);
    shape.check_matrix(op, x.len())?;
    if !(eps.is_finite() && eps > 0.0) {
        return Err(Error::InvalidArgument { op, what: "eps", why: format!("{eps} is not finite and positive") });
    }
    if let Some((y, r)) = &residual {
        shape.check_matrix(op, y.len())?;
        shape.check_matrix(op, r.len())?;
        check_device(op, dev, *y)?;
        check_device(op, dev, &**r)?;
    }
    check_len(op, "gamma", shape.channels, gamma.len())?;
    check_len(op, "beta", shape.channels, beta.len())?;
    shape.check_matrix(op, out.len())?;
    check_len(op, "mean", shape.rows, mean.len())?;
    check_len(op, "rstd", shape.rows, rstd.len())?;
    check_device(op, dev, x)?;
    check_device(op, dev, gamma)?;
    check_device(op, dev, beta)?;
    check_device(op, dev, out)?;
    check_device(op, dev, mean)?;
    check_device(op, dev, rstd)?;
    let cfg = shape.row_config(op)?;
    if shape.rows == 0 {
        return Ok(());
    }
    let func = dev.function(&ptx::LAYERNORM, op)?;
    let stream = dev.stream();
    let (x_ptr, _x) = x.device_ptr(stream);
    let ((y_ptr, _y), (r_ptr, _r)) = match residual {
        Some((y, r)) => {
            let (yp, ys) = y.device_ptr(stream);
            let (rp, rs) = r.device_ptr_mut(stream);
            ((yp, Some(ys)), (rp, Some(rs)))
        }
        None => ((0, None), (0, None)),
    };
    let (g_ptr, _g) = gamma.device_ptr(stream);
    let (b_ptr, _b) = beta.device_ptr(stream);
    let (o_ptr, _o) = out.device_ptr_mut(stream);
    let (m_ptr, _m) = mean.device_ptr_mut(stream);
    let (s_ptr, _s) = rstd.device_ptr_mut(stream);
    let (rows, c) = (shape.rows as i64, shape.channels as i64);
    let mut launch = stream.launch_builder(&func);
    launch.arg(&x_ptr).arg(&y_ptr).arg(&g_ptr).arg(&b_ptr).arg(&r_ptr).arg(&o_ptr);
    launch.arg(&m_ptr).arg(&s_ptr).arg(&rows).arg(&c).arg(&eps);
    // SAFETY: arguments match `layernorm_forward_f16(const __half*, const __half*, const
    // __half*, const __half*, __half*, __half*, float*, float*, int64_t, int64_t, float)`;
    // x, out (and y, r when given, else both null) hold rows * C elements, gamma and beta
    // C, mean and rstd rows, all on this device's stream (checked above). r and out are
    // exclusive borrows, so they overlap nothing the kernel reads; the kernel takes its
    // vector path only for 16-byte aligned pointers.
    unsafe { launch.launch(cfg) }.op(op)?;
    Ok(())
}

/// The gradient reaching `r` (for a residual block, both `x` and `y` receive it):
/// with `n = (r - mean) * rstd` and `g = gamma * dh` in f32,
/// `dr = (half) (dres + rstd * (g - mean_c(g) - n * mean_c(g * n)))`, `dres` as `dres`
/// says ([`ResidualGrad::InPlace`]: `dr` holds it on entry). `r`, `mean` and `rstd` are
/// what [`layernorm_forward`] stored (`r` is `x` when it had no residual).
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward<H: Half>(
    dev: &Device,
    shape: LayerNormShape,
    dh: &impl DevicePtr<H>,
    r: &impl DevicePtr<H>,
    mean: &impl DevicePtr<f32>,
    rstd: &impl DevicePtr<f32>,
    gamma: &impl DevicePtr<H>,
    dres: ResidualGrad<'_, H>,
    dr: &mut impl DevicePtrMut<H>,
) -> Result<()> {
    let op = half_kernel::<H>(["layernorm_backward_f16", "layernorm_backward_bf16"]);
    shape.check_matrix(op, dh.len())?;
    shape.check_matrix(op, r.len())?;
    check_len(op, "mean", shape.rows, mean.len())?;
    check_len(op, "rstd", shape.rows, rstd.len())?;
    check_len(op, "gamma", shape.channels, gamma.len())?;
    if let ResidualGrad::From(d) = dres {
        shape.check_matrix(op, d.len())?;
        check_device(op, dev, d)?;
    }
    shape.check_matrix(op, dr.len())?;
    check_device(op, dev, dh)?;
    check_device(op, dev, r)?;
    check_device(op, dev, mean)?;
    check_device(op, dev, rstd)?;
    check_device(op, dev, gamma)?;
    check_device(op, dev, dr)?;
    let cfg = shape.row_config(op)?;
    if shape.rows == 0 {
        return Ok(());
    }
    let func = dev.function(&ptx::LAYERNORM, op)?;
    let stream = dev.stream();
    let (dh_ptr, _dh) = dh.device_ptr(stream);
    let (r_ptr, _r) = r.device_ptr(stream);
    let (m_ptr, _m) = mean.device_ptr(stream);
    let (s_ptr, _s) = rstd.device_ptr(stream);
    let (g_ptr, _g) = gamma.device_ptr(stream);
    let (dres_src, _dres) = match dres {
        ResidualGrad::From(d) => {
            let (p, s) = d.device_ptr(stream);
            (Some(p), Some(s))
        }
        ResidualGrad::None => (None, None),
        ResidualGrad::InPlace => (None, None),
    };
    let (dr_ptr, _dr) = dr.device_ptr_mut(stream);
    let dres_ptr = match dres {
        ResidualGrad::InPlace => dr_ptr,
        _ => dres_src.unwrap_or(0),
    };
    let (rows, c) = (shape.rows as i64, shape.channels as i64);
    let mut launch = stream.launch_builder(&func);
    launch.arg(&dh_ptr).arg(&r_ptr).arg(&m_ptr).arg(&s_ptr).arg(&g_ptr).arg(&dres_ptr).arg(&dr_ptr);
    launch.arg(&rows).arg(&c);
    // SAFETY: arguments match `layernorm_backward_f16(const __half*, const __half*, const
    // float*, const float*, const __half*, const __half*, __half*, int64_t, int64_t)`; dh,
    // r, dr (and dres when given) hold rows * C elements, mean and rstd rows, gamma C, all
    // on this device's stream (checked above). dres is null, a shared borrow that cannot
    // overlap the exclusive dr, or dr itself (in place: the kernel reads each element
    // before the same lane writes it).
    unsafe { launch.launch(cfg) }.op(op)?;
    Ok(())
}

/// The parameter gradients, accumulated into the f32 arena: `dgamma[c] += sum_rows dh * n`
/// and `dbeta[c] += sum_rows dh` with `n = (r - mean) * rstd` as in the backward. No atomics:
/// partial sums over chunks of 128 rows go to `scratch` (f32,
/// [`LayerNormShape::dparams_scratch_len`] elements, contents ignored and overwritten), then
/// are added in chunk order (cuda/layernorm.cu gives the whole order), so the result is the
/// same bits on every run and every GPU.
///
/// `found_inf` (one f32), when given, is set to 1 if any value written is inf or NaN, and
/// never cleared: the training step's overflow check, made as the gradient is written.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_dparams<H: Half>(
    dev: &Device,
    shape: LayerNormShape,
    dh: &impl DevicePtr<H>,
    r: &impl DevicePtr<H>,
    mean: &impl DevicePtr<f32>,
    rstd: &impl DevicePtr<f32>,
    dgamma: &mut impl DevicePtrMut<f32>,
    dbeta: &mut impl DevicePtrMut<f32>,
    scratch: &mut impl DevicePtrMut<f32>,
    found_inf: Option<&mut CudaViewMut<'_, f32>>,
) -> Result<()> {
    let op = half_kernel::<H>(["layernorm_dparams_partial_f16", "layernorm_dparams_partial_bf16"]);
    const TOTAL: &str = "layernorm_dparams_total";
    shape.check_matrix(op, dh.len())?;
    shape.check_matrix(op, r.len())?;
    check_len(op, "mean", shape.rows, mean.len())?;
    check_len(op, "rstd", shape.rows, rstd.len())?;
    check_len(op, "dgamma", shape.channels, dgamma.len())?;
    check_len(op, "dbeta", shape.channels, dbeta.len())?;
    check_len(op, "scratch", shape.dparams_scratch_len(), scratch.len())?;
    if let Some(f) = &found_inf {
        check_scalar(op, "found_inf", &**f)?;
        check_device(op, dev, &**f)?;
    }
    check_device(op, dev, dh)?;
    check_device(op, dev, r)?;
    check_device(op, dev, mean)?;
    check_device(op, dev, rstd)?;
    check_device(op, dev, dgamma)?;
    check_device(op, dev, dbeta)?;
    check_device(op, dev, scratch)?;
    let chunks = shape.chunks();
    let col_blocks = u32::try_from(shape.channels.div_ceil(LN_DP_COLS)).ok().filter(|&b| b <= 65535);
    let (Some(col_blocks), Ok(chunk_blocks)) = (col_blocks, u32::try_from(chunks)) else {
        return Err(Error::InvalidArgument { op, what: "shape", why: format!("{shape:?} exceeds the grid limits") });
    };
    if shape.rows == 0 {
        return Ok(());
    }
    let partial = dev.function(&ptx::LAYERNORM, op)?;
    let total = dev.function(&ptx::LAYERNORM, TOTAL)?;
    let stream = dev.stream();
    let (dh_ptr, _dh) = dh.device_ptr(stream);
    let (r_ptr, _r) = r.device_ptr(stream);
    let (m_ptr, _m) = mean.device_ptr(stream);
    let (s_ptr, _s) = rstd.device_ptr(stream);
    let (scratch_ptr, _scratch) = scratch.device_ptr_mut(stream);
    let (dg_ptr, _dg) = dgamma.device_ptr_mut(stream);
    let (db_ptr, _db) = dbeta.device_ptr_mut(stream);
    let (found_ptr, _found) = match found_inf {
        Some(f) => {
            let (ptr, sync) = f.device_ptr_mut(stream);
            (ptr, Some(sync))
        }
        None => (0, None),
    };
    let (rows, c, chunks64) = (shape.rows as i64, shape.channels as i64, chunks as i64);

    let mut launch = stream.launch_builder(&partial);
    launch.arg(&dh_ptr).arg(&r_ptr).arg(&m_ptr).arg(&s_ptr).arg(&scratch_ptr).arg(&rows).arg(&c);
    let cfg = LaunchConfig {
        grid_dim: (chunk_blocks, col_blocks, 1),
        block_dim: (LN_DP_COLS as u32, LN_DP_ROWS, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: arguments match `layernorm_dparams_partial_f16(const __half*, const __half*,
    // const float*, const float*, float*, int64_t, int64_t)`; dh and r hold rows * C
    // elements, mean and rstd rows, scratch 2 * chunks * C with chunks = gridDim.x =
    // ceil(rows / 128), all on this device's stream (checked above); the block is the
    // 32 x 8 the kernel's shared arrays are sized for and gridDim.y * 32 >= C.
    unsafe { launch.launch(cfg) }.op(op)?;

    let mut launch = stream.launch_builder(&total);
    launch.arg(&scratch_ptr).arg(&dg_ptr).arg(&db_ptr).arg(&chunks64).arg(&c).arg(&found_ptr);
    let cfg = LaunchConfig {
        grid_dim: (shape.channels.div_ceil(LN_TOTAL_THREADS) as u32, 1, 1),
        block_dim: (LN_TOTAL_THREADS as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: arguments match `layernorm_dparams_total(const float*, float*, float*,
    // int64_t, int64_t, float*)`; scratch holds 2 * chunks * C (written by the launch just
    // queued before on the same stream), dgamma and dbeta C each (distinct exclusive
    // borrows), found_inf one or null, all on this device's stream (checked above).
    unsafe { launch.launch(cfg) }.op(TOTAL)?;
    Ok(())
}
