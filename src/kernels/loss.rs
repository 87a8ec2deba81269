//! Launchers for `cuda/loss.cu`: softmax cross-entropy and squared error in f32 from f16
//! outputs, with the loss-scale seed fused into the gradient.

use crate::dtype::Half;
use cudarc::driver::{CudaFunction, CudaView, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};

use super::{check_device, check_optional_scalar, half_kernel, optional_ptr};
use crate::device::Device;
use crate::error::{DriverContext, Error, Result};
use crate::ptx;

/// Rows per block: one warp each (`LOSS_WARPS` in loss.cu).
const LOSS_WARPS: usize = 8;

/// The shape of a loss: `rows x cols` outputs (logits or predictions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LossShape {
    /// Samples.
    pub rows: usize,
    /// Classes (cross-entropy) or outputs per sample (MSE); at least 1.
    pub cols: usize,
}

impl LossShape {
    fn check(&self, op: &'static str) -> Result<usize> {
        if self.cols == 0 {
            return Err(Error::InvalidArgument { op, what: "cols", why: "a loss needs at least one output".into() });
        }
        self.rows.checked_mul(self.cols).ok_or_else(|| Error::InvalidArgument {
            op,
            what: "shape",
            why: format!("{} x {} overflows", self.rows, self.cols),
        })
    }

    fn check_matrix(&self, op: &'static str, len: usize) -> Result<()> {
        if len == self.check(op)? {
            Ok(())
        } else {
            Err(Error::ShapeMismatch { op, expected: vec![self.rows, self.cols], got: vec![len] })
        }
    }

    fn config(&self) -> Result<LaunchConfig> {
        let blocks = u32::try_from(self.rows.div_ceil(LOSS_WARPS).max(1)).map_err(|_| Error::InvalidArgument {
            op: "loss",
            what: "rows",
            why: format!("{} rows exceed the grid limit", self.rows),
        })?;
        Ok(LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (32 * LOSS_WARPS as u32, 1, 1), shared_mem_bytes: 0 })
    }
}

fn check_len(op: &'static str, what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::LengthMismatch { op, what, expected, got })
    }
}

/// `losses[r] = logsumexp(z[r, :]) - z[r, labels[r]]` in f32. Labels must lie in
/// `[0, cols)`; the kernel cannot return an error, so check them on the host
/// (a label outside gives a NaN loss, never an out-of-bounds read).
///
/// exp is `expf`, as in PyTorch, not the `__expf` intrinsic. Each loss is within
/// `1.01 u (4 + ln cols + ceil(cols / 32) + 5 + 2 |ln s| + |ln s + m| + |loss|)` of the
/// exact value (u = 2^-24, m the row max, s = sum exp(z - m)); cuda/loss.cu's header
/// gives the derivation and the measured difference against `__expf` (at most 3.8e-6 in
/// the loss for logits in [-30, 30]).
pub fn cross_entropy_forward<H: Half>(
    dev: &Device,
    shape: LossShape,
    z: &impl DevicePtr<H>,
    labels: &impl DevicePtr<i32>,
    losses: &mut impl DevicePtrMut<f32>,
) -> Result<()> {
    let op = half_kernel::<H>(["cross_entropy_forward_f16", "cross_entropy_forward_bf16"]);
    shape.check_matrix(op, z.len())?;
    check_len(op, "labels", shape.rows, labels.len())?;
    check_len(op, "losses", shape.rows, losses.len())?;
    check_device(op, dev, z)?;
    check_device(op, dev, labels)?;
    check_device(op, dev, losses)?;
    if shape.rows == 0 {
        return Ok(());
    }
    let func = dev.function(&ptx::LOSS, op)?;
    let stream = dev.stream();
    let (z_ptr, _z) = z.device_ptr(stream);
    let (l_ptr, _l) = labels.device_ptr(stream);
    let (o_ptr, _o) = losses.device_ptr_mut(stream);
    let (rows, cols) = (shape.rows as i64, shape.cols as i64);
    let mut launch = stream.launch_builder(&func);
    launch.arg(&z_ptr).arg(&l_ptr).arg(&o_ptr).arg(&rows).arg(&cols);
    // SAFETY: arguments match `cross_entropy_forward_f16(const __half*, const int32_t*,
    // float*, int64_t, int64_t)`; z holds rows * cols elements, labels and losses rows, in
    // this device's context (checked above); labels are range-checked in the kernel.
    unsafe { launch.launch(shape.config()?) }.op(op)?;
    Ok(())
}

/// `dz[r, c] = (half) (factor * scale * (softmax(z[r, :])[c] - [c == labels[r]]))`: the
/// gradient of `factor * sum_r losses[r]`, seeded with the loss scale (`None`: 1).
pub fn cross_entropy_backward<H: Half>(
    dev: &Device,
    shape: LossShape,
    z: &impl DevicePtr<H>,
    labels: &impl DevicePtr<i32>,
    scale: Option<&CudaView<'_, f32>>,
    dz: &mut impl DevicePtrMut<H>,
    factor: f32,
) -> Result<()> {
    let op = half_kernel::<H>(["cross_entropy_backward_f16", "cross_entropy_backward_bf16"]);
    shape.check_matrix(op, z.len())?;
    check_len(op, "labels", shape.rows, labels.len())?;
    check_device(op, dev, labels)?;
    let func = dev.function(&ptx::LOSS, op)?;
    let stream = dev.stream();
    let (l_ptr, _l) = labels.device_ptr(stream);
    launch_backward(dev, op, &func, shape, z, l_ptr, scale, dz, factor)
}

/// `losses[r] = sum_c (p[r, c] - t[r, c])^2` in f32.
pub fn mse_forward<H: Half>(
    dev: &Device,
    shape: LossShape,
    p: &impl DevicePtr<H>,
    t: &impl DevicePtr<H>,
    losses: &mut impl DevicePtrMut<f32>,
) -> Result<()> {
    let op = half_kernel::<H>(["mse_forward_f16", "mse_forward_bf16"]);
    shape.check_matrix(op, p.len())?;
    shape.check_matrix(op, t.len())?;
    check_len(op, "losses", shape.rows, losses.len())?;
    check_device(op, dev, p)?;
    check_device(op, dev, t)?;
    check_device(op, dev, losses)?;
    if shape.rows == 0 {
        return Ok(());
    }
    let func = dev.function(&ptx::LOSS, op)?;
    let stream = dev.stream();
    let (p_ptr, _p) = p.device_ptr(stream);
    let (t_ptr, _t) = t.device_ptr(stream);
    let (o_ptr, _o) = losses.device_ptr_mut(stream);
    let (rows, cols) = (shape.rows as i64, shape.cols as i64);
    let mut launch = stream.launch_builder(&func);
    launch.arg(&p_ptr).arg(&t_ptr).arg(&o_ptr).arg(&rows).arg(&cols);
    // SAFETY: arguments match `mse_forward_f16(const __half*, const __half*, float*,
    // int64_t, int64_t)`; p and t hold rows * cols elements and losses rows, in this
    // device's context (checked above).
    unsafe { launch.launch(shape.config()?) }.op(op)?;
    Ok(())
}

/// `dp = (half) (factor * scale * 2 (p - t))`: the gradient of `factor * sum(losses)`.
pub fn mse_backward<H: Half>(
    dev: &Device,
    shape: LossShape,
    p: &impl DevicePtr<H>,
    t: &impl DevicePtr<H>,
    scale: Option<&CudaView<'_, f32>>,
    dp: &mut impl DevicePtrMut<H>,
    factor: f32,
) -> Result<()> {
    let op = half_kernel::<H>(["mse_backward_f16", "mse_backward_bf16"]);
    shape.check_matrix(op, t.len())?;
    check_device(op, dev, t)?;
    let func = dev.function(&ptx::LOSS, op)?;
    let stream = dev.stream();
    let (t_ptr, _t) = t.device_ptr(stream);
    launch_backward(dev, op, &func, shape, p, t_ptr, scale, dp, factor)
}

/// The two backward kernels share their signature: (outputs, second operand, scale,
/// gradient, rows, cols, factor); `second` (labels or targets) was checked by the caller.
#[allow(clippy::too_many_arguments)]
fn launch_backward<H: Half>(
    dev: &Device,
    op: &'static str,
    func: &CudaFunction,
    shape: LossShape,
    z: &impl DevicePtr<H>,
    second: u64,
    scale: Option<&CudaView<'_, f32>>,
    dz: &mut impl DevicePtrMut<H>,
    factor: f32,
) -> Result<()> {
    shape.check_matrix(op, z.len())?;
    shape.check_matrix(op, dz.len())?;
    if !factor.is_finite() {
        return Err(Error::InvalidArgument { op, what: "factor", why: "must be finite".into() });
    }
    check_optional_scalar(op, "scale", dev, scale)?;
    check_device(op, dev, z)?;
    check_device(op, dev, dz)?;
    if shape.rows == 0 {
        return Ok(());
    }
    let stream = dev.stream();
    let (z_ptr, _z) = z.device_ptr(stream);
    let (s_ptr, _s) = optional_ptr(scale, stream);
    let (d_ptr, _d) = dz.device_ptr_mut(stream);
    let (rows, cols) = (shape.rows as i64, shape.cols as i64);
    let mut launch = stream.launch_builder(func);
    launch.arg(&z_ptr).arg(&second).arg(&s_ptr).arg(&d_ptr).arg(&rows).arg(&cols).arg(&factor);
    // SAFETY: arguments match `cross_entropy_backward_f16` / `mse_backward_f16` (const
    // __half*, const int32_t* or const __half*, const float*, __half*, int64_t, int64_t,
    // float); z and dz hold rows * cols elements, the second operand what its kind needs
    // (checked by the caller), scale one element or null, all in this device's context.
    unsafe { launch.launch(shape.config()?) }.op(op)?;
    Ok(())
}
