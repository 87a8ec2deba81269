//! Launchers for `cuda/activation.cu`: elementwise activation and its derivative in f16.

use crate::dtype::Half;
use cudarc::driver::{DevicePtr, DevicePtrMut, PushKernelArg};

use super::{check_device, grid_stride_config, half_kernel};
use crate::device::Device;
use crate::error::{DriverContext, Error, Result};
use crate::kernels::gemm::Activation;
use crate::ptx;

/// Elements per thread per iteration (`ACT_VEC` in activation.cu).
const ACT_VEC: usize = 8;

/// `y = (half) act(x)`, computed in f32. `x` and `y` must have the same length.
pub fn activation_forward<H: Half>(
    dev: &Device,
    x: &impl DevicePtr<H>,
    y: &mut impl DevicePtrMut<H>,
    act: Activation,
) -> Result<()> {
    let op = half_kernel::<H>(["activation_forward_f16", "activation_forward_bf16"]);
    if x.len() != y.len() {
        return Err(Error::LengthMismatch { op, what: "y", expected: x.len(), got: y.len() });
    }
    check_device(op, dev, x)?;
    check_device(op, dev, y)?;
    let n = x.len();
    if n == 0 {
        return Ok(());
    }
    let func = dev.function(&ptx::ACTIVATION, op)?;
    let stream = dev.stream();
    let (x_ptr, _x) = x.device_ptr(stream);
    let (y_ptr, _y) = y.device_ptr_mut(stream);
    let (n64, act) = (n as u64, act as i32);
    let mut launch = stream.launch_builder(&func);
    launch.arg(&x_ptr).arg(&y_ptr).arg(&n64).arg(&act);
    // SAFETY: arguments match `activation_forward_f16(const __half*, __half*, uint64_t,
    // int32_t)`; x and y hold n elements each in this device's context (checked above) and
    // are distinct buffers (one is borrowed shared, the other exclusively).
    unsafe { launch.launch(grid_stride_config(dev, n.div_ceil(ACT_VEC))) }.op(op)?;
    Ok(())
}

/// `dx = (half) (dy * act'(pre))`, computed in f32: the backward of an activation whose
/// input (the pre-activation) was `pre`. All three must have the same length.
///
/// ReLU is PyTorch's `threshold_backward`, a select rather than a product:
/// `dx = pre <= 0 ? 0 : dy`. An inf or NaN `dy` at a dead unit gives 0 (the product would
/// give `inf * 0 = NaN` and skip a step PyTorch AMP takes); a live unit, or a NaN `pre`,
/// passes `dy` through. GELU keeps the product, so a non-finite `dy` always gives a
/// non-finite `dx`. The reasons, and the non-finite cases one by one, are in
/// cuda/activation.cu's header and at [`cpu::activation_grad`](crate::backend::cpu::activation_grad),
/// the CPU reference this kernel matches bit for bit for none and ReLU.
pub fn activation_backward<H: Half>(
    dev: &Device,
    pre: &impl DevicePtr<H>,
    dy: &impl DevicePtr<H>,
    dx: &mut impl DevicePtrMut<H>,
    act: Activation,
) -> Result<()> {
    let op = half_kernel::<H>(["activation_backward_f16", "activation_backward_bf16"]);
    let n = pre.len();
    for (what, got) in [("dy", dy.len()), ("dx", dx.len())] {
        if got != n {
            return Err(Error::LengthMismatch { op, what, expected: n, got });
        }
    }
    check_device(op, dev, pre)?;
    check_device(op, dev, dy)?;
    check_device(op, dev, dx)?;
    if n == 0 {
        return Ok(());
    }
    let func = dev.function(&ptx::ACTIVATION, op)?;
    let stream = dev.stream();
    let (p_ptr, _p) = pre.device_ptr(stream);
    let (g_ptr, _g) = dy.device_ptr(stream);
    let (d_ptr, _d) = dx.device_ptr_mut(stream);
    let (n64, act) = (n as u64, act as i32);
    let mut launch = stream.launch_builder(&func);
    launch.arg(&p_ptr).arg(&g_ptr).arg(&d_ptr).arg(&n64).arg(&act);
    // SAFETY: arguments match `activation_backward_f16(const __half*, const __half*,
    // __half*, uint64_t, int32_t)`; the three buffers hold n elements each in this
    // device's context (checked above); dx is borrowed exclusively, so it overlaps neither.
    unsafe { launch.launch(grid_stride_config(dev, n.div_ceil(ACT_VEC))) }.op(op)?;
    Ok(())
}
