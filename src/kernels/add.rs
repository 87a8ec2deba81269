//! Launchers for `cuda/add.cu`: elementwise f16 sums.

use crate::dtype::Half;
use cudarc::driver::{DevicePtr, DevicePtrMut, PushKernelArg};

use super::{check_device, grid_stride_config, half_kernel};
use crate::device::Device;
use crate::error::{DriverContext, Error, Result};
use crate::ptx;

/// Elements per thread per iteration (`ADD_VEC` in add.cu).
const ADD_VEC: usize = 8;

/// `y = (half) (a + b)` in f32. All three must have the same length.
pub fn add<H: Half>(
    dev: &Device,
    a: &impl DevicePtr<H>,
    b: &impl DevicePtr<H>,
    y: &mut impl DevicePtrMut<H>,
) -> Result<()> {
    let op = half_kernel::<H>(["add_f16", "add_bf16"]);
    let n = a.len();
    for (what, got) in [("b", b.len()), ("y", y.len())] {
        if got != n {
            return Err(Error::LengthMismatch { op, what, expected: n, got });
        }
    }
    check_device(op, dev, a)?;
    check_device(op, dev, b)?;
    check_device(op, dev, y)?;
    let stream = dev.stream();
    let (a_ptr, _a) = a.device_ptr(stream);
    let (b_ptr, _b) = b.device_ptr(stream);
    let (y_ptr, _y) = y.device_ptr_mut(stream);
    launch_add::<H>(dev, a_ptr, b_ptr, y_ptr, n)
}

/// `acc = (half) (acc + x)` in f32, in place: gradient accumulation. Same lengths.
pub fn add_assign<H: Half>(dev: &Device, acc: &mut impl DevicePtrMut<H>, x: &impl DevicePtr<H>) -> Result<()> {
    let op = half_kernel::<H>(["add_f16", "add_bf16"]);
    if x.len() != acc.len() {
        return Err(Error::LengthMismatch { op, what: "x", expected: acc.len(), got: x.len() });
    }
    check_device(op, dev, acc)?;
    check_device(op, dev, x)?;
    let n = acc.len();
    let stream = dev.stream();
    let (x_ptr, _x) = x.device_ptr(stream);
    let (acc_ptr, _acc) = acc.device_ptr_mut(stream);
    launch_add::<H>(dev, acc_ptr, x_ptr, acc_ptr, n)
}

/// Launches `add_f16` on raw pointers the two public functions have checked.
fn launch_add<H: Half>(dev: &Device, a: u64, b: u64, y: u64, n: usize) -> Result<()> {
    let op = half_kernel::<H>(["add_f16", "add_bf16"]);
    if n == 0 {
        return Ok(());
    }
    let func = dev.function(&ptx::ADD, op)?;
    let stream = dev.stream();
    let n64 = n as u64;
    let mut launch = stream.launch_builder(&func);
    launch.arg(&a).arg(&b).arg(&y).arg(&n64);
    // SAFETY: arguments match `add_f16(const __half*, const __half*, __half*, uint64_t)`;
    // the callers checked that all three ranges hold n elements in this device's context
    // and that b does not overlap y (b is a shared borrow, y an exclusive one); y == a is
    // allowed by the kernel (each element read and written by the same thread).
    unsafe { launch.launch(grid_stride_config(dev, n.div_ceil(ADD_VEC))) }.op(op)?;
    Ok(())
}
