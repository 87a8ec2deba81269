//! Launchers for `cuda/cast.cu`: f32 <-> f16 and f32 <-> bf16 over a flat range.

use cudarc::driver::{DevicePtr, DevicePtrMut, PushKernelArg};
use half::{bf16, f16};

use super::{check_device, grid_stride_config, half_kernel};
use crate::device::Device;
use crate::dtype::{Element, Half};
use crate::error::{DriverContext, Error, Result};
use crate::ptx;

/// Elements each thread converts per iteration (`CAST_VEC` in cast.cu).
const CAST_VEC: usize = 4;

/// `y[i] = (f16) x[i]`, round to nearest even; |x| >= 65520 gives ±inf; NaN stays NaN.
/// `x` and `y` must have the same length.
pub fn cast_f32_f16(dev: &Device, x: &impl DevicePtr<f32>, y: &mut impl DevicePtrMut<f16>) -> Result<()> {
    launch_cast(dev, "cast_f32_f16", x, y)
}

/// `y[i] = (f32) x[i]`, exact. `x` and `y` must have the same length.
pub fn cast_f16_f32(dev: &Device, x: &impl DevicePtr<f16>, y: &mut impl DevicePtrMut<f32>) -> Result<()> {
    launch_cast(dev, "cast_f16_f32", x, y)
}

/// `y[i] = (bf16) x[i]`, round to nearest even (as PyTorch's `.bfloat16()`); overflows to
/// ±inf only past the f32 range; NaN stays NaN. `x` and `y` must have the same length.
pub fn cast_f32_bf16(dev: &Device, x: &impl DevicePtr<f32>, y: &mut impl DevicePtrMut<bf16>) -> Result<()> {
    launch_cast(dev, "cast_f32_bf16", x, y)
}

/// `y[i] = (f32) x[i]`, exact. `x` and `y` must have the same length.
pub fn cast_bf16_f32(dev: &Device, x: &impl DevicePtr<bf16>, y: &mut impl DevicePtrMut<f32>) -> Result<()> {
    launch_cast(dev, "cast_bf16_f32", x, y)
}

/// `y[i] = (H) x[i]` for either half type: [`cast_f32_f16`] or [`cast_f32_bf16`].
pub fn cast_f32_half<H: Half>(dev: &Device, x: &impl DevicePtr<f32>, y: &mut impl DevicePtrMut<H>) -> Result<()> {
    launch_cast(dev, half_kernel::<H>(["cast_f32_f16", "cast_f32_bf16"]), x, y)
}

/// `y[i] = (f32) x[i]` for either half type: [`cast_f16_f32`] or [`cast_bf16_f32`].
pub fn cast_half_f32<H: Half>(dev: &Device, x: &impl DevicePtr<H>, y: &mut impl DevicePtrMut<f32>) -> Result<()> {
    launch_cast(dev, half_kernel::<H>(["cast_f16_f32", "cast_bf16_f32"]), x, y)
}

/// Launches `cast_<S>_<D>`; `op` is that kernel's name, built only by the public functions
/// above so that S and D always match the kernel's parameter types.
fn launch_cast<S: Element, D: Element>(
    dev: &Device,
    op: &'static str,
    x: &impl DevicePtr<S>,
    y: &mut impl DevicePtrMut<D>,
) -> Result<()> {
    debug_assert_eq!(op, format!("cast_{}_{}", S::DTYPE, D::DTYPE));
    if x.len() != y.len() {
        return Err(Error::LengthMismatch { op, what: "y", expected: x.len(), got: y.len() });
    }
    check_device(op, dev, x)?;
    check_device(op, dev, y)?;
    let n = x.len();
    if n == 0 {
        return Ok(());
    }
    let func = dev.function(&ptx::CAST, op)?;
    let stream = dev.stream();
    let (x_ptr, _x_sync) = x.device_ptr(stream);
    let (y_ptr, _y_sync) = y.device_ptr_mut(stream);
    let n64 = n as u64;
    let mut launch = stream.launch_builder(&func);
    launch.arg(&x_ptr).arg(&y_ptr).arg(&n64);
    // SAFETY: arguments match `cast_<S>_<D>(const S*, D*, uint64_t)` in cuda/cast.cu
    // (the name is built from S and D, asserted above); both buffers hold exactly n
    // elements (checked above) and live in this device's context; the kernel reads
    // x[0..n) and writes y[0..n) only.
    unsafe { launch.launch(grid_stride_config(dev, n.div_ceil(CAST_VEC))) }.op(op)?;
    Ok(())
}
