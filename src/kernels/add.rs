//! Launchers for `cuda/add.cu`: elementwise f16 sums.

use cudarc::driver::{DevicePtr, DevicePtrMut, PushKernelArg};
use half::f16;

use super::{check_device, grid_stride_config};
use crate::device::Device;
use crate::error::{DriverContext, Error, Result};
use crate::ptx;

/// Elements per thread per iteration (`ADD_VEC` in add.cu).
const ADD_VEC: usize = 8;

/// `y = (f16) (a + b)` in f32. All three must have the same length.
pub fn add_f16(
    dev: &Device,
    a: &impl DevicePtr<f16>,
    b: &impl DevicePtr<f16>,
    y: &mut impl DevicePtrMut<f16>,
) -> Result<()> {
    const OP: &str = "add_f16";
    let n = a.len();
    for (what, got) in [("b", b.len()), ("y", y.len())] {
        if got != n {
            return Err(Error::LengthMismatch { op: OP, what, expected: n, got });
        }
    }
    check_device(OP, dev, a)?;
    check_device(OP, dev, b)?;
    check_device(OP, dev, y)?;
    let stream = dev.stream();
    let (a_ptr, _a) = a.device_ptr(stream);
    let (b_ptr, _b) = b.device_ptr(stream);
    let (y_ptr, _y) = y.device_ptr_mut(stream);
    launch_add(dev, a_ptr, b_ptr, y_ptr, n)
}

/// `acc = (f16) (acc + x)` in f32, in place: gradient accumulation. Same lengths.
pub fn add_assign_f16(dev: &Device, acc: &mut impl DevicePtrMut<f16>, x: &impl DevicePtr<f16>) -> Result<()> {
    const OP: &str = "add_f16";
    if x.len() != acc.len() {
        return Err(Error::LengthMismatch { op: OP, what: "x", expected: acc.len(), got: x.len() });
    }
    check_device(OP, dev, acc)?;
    check_device(OP, dev, x)?;
    let n = acc.len();
    let stream = dev.stream();
    let (x_ptr, _x) = x.device_ptr(stream);
    let (acc_ptr, _acc) = acc.device_ptr_mut(stream);
    launch_add(dev, acc_ptr, x_ptr, acc_ptr, n)
}

/// Launches `add_f16` on raw pointers the two public functions have checked.
fn launch_add(dev: &Device, a: u64, b: u64, y: u64, n: usize) -> Result<()> {
    const OP: &str = "add_f16";
    if n == 0 {
        return Ok(());
    }
    let func = dev.function(&ptx::ADD, OP)?;
    let stream = dev.stream();
    let n64 = n as u64;
    let mut launch = stream.launch_builder(&func);
    launch.arg(&a).arg(&b).arg(&y).arg(&n64);
    // SAFETY: arguments match `add_f16(const __half*, const __half*, __half*, uint64_t)`;
    // the callers checked that all three ranges hold n elements in this device's context
    // and that b does not overlap y (b is a shared borrow, y an exclusive one); y == a is
    // allowed by the kernel (each element read and written by the same thread).
    unsafe { launch.launch(grid_stride_config(dev, n.div_ceil(ADD_VEC))) }.op(OP)?;
    Ok(())
}
