//! Launcher for `cuda/loss_scale.cu`: PyTorch GradScaler's scale update, on the device.

use cudarc::driver::{CudaView, CudaViewMut, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};

use super::{check_device, check_scalar};
use crate::device::Device;
use crate::error::{DriverContext, Error, Result};
use crate::ptx;

/// Settings of the dynamic loss scale, with PyTorch's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScaleRule {
    /// Multiplier after `growth_interval` clean steps in a row; must be > 1.
    pub growth: f64,
    /// Multiplier after an overflowing step; must be in (0, 1).
    pub backoff: f64,
    /// Clean steps between growths; must be >= 1.
    pub growth_interval: i32,
}

impl Default for ScaleRule {
    /// torch.cuda.amp.GradScaler: growth 2.0, backoff 0.5, interval 2000.
    fn default() -> Self {
        ScaleRule { growth: 2.0, backoff: 0.5, growth_interval: 2000 }
    }
}

impl ScaleRule {
    /// Checks the ranges PyTorch's GradScaler accepts.
    pub fn validate(&self, op: &'static str) -> Result<()> {
        let bad = |what, why: String| Err(Error::InvalidArgument { op, what, why });
        if !(self.growth.is_finite() && self.growth > 1.0) {
            return bad("growth", format!("{} must be finite and > 1", self.growth));
        }
        if !(self.backoff > 0.0 && self.backoff < 1.0) {
            return bad("backoff", format!("{} must be in (0, 1)", self.backoff));
        }
        if self.growth_interval < 1 {
            return bad("growth_interval", format!("{} must be >= 1", self.growth_interval));
        }
        Ok(())
    }
}

/// Updates `scale` and `growth_tracker` (one element each) from `found_inf` with `rule`:
/// back off on overflow, grow after `growth_interval` clean steps if the result is finite.
pub fn update_scale(
    dev: &Device,
    scale: &mut CudaViewMut<'_, f32>,
    growth_tracker: &mut CudaViewMut<'_, i32>,
    found_inf: &CudaView<'_, f32>,
    rule: &ScaleRule,
) -> Result<()> {
    const OP: &str = "update_scale";
    rule.validate(OP)?;
    check_scalar(OP, "scale", scale)?;
    check_scalar(OP, "growth_tracker", growth_tracker)?;
    check_scalar(OP, "found_inf", found_inf)?;
    check_device(OP, dev, scale)?;
    check_device(OP, dev, growth_tracker)?;
    check_device(OP, dev, found_inf)?;
    let func = dev.function(&ptx::LOSS_SCALE, OP)?;
    let stream = dev.stream();
    let (s, _s) = scale.device_ptr_mut(stream);
    let (t, _t) = growth_tracker.device_ptr_mut(stream);
    let (f, _f) = found_inf.device_ptr(stream);
    let mut launch = stream.launch_builder(&func);
    launch.arg(&s).arg(&t).arg(&f).arg(&rule.growth).arg(&rule.backoff).arg(&rule.growth_interval);
    let one = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: arguments match `update_scale(float*, int32_t*, const float*, double,
    // double, int32_t)` in cuda/loss_scale.cu; each pointer holds one element (checked
    // above) of this device's context, and the kernel touches element 0 only.
    unsafe { launch.launch(one) }.op(OP)?;
    Ok(())
}
