//! Launchers for `cuda/unscale.cu`: gradient unscale with the inf/NaN check, over one
//! flat range or over a list of tensors.

use cudarc::driver::{CudaView, CudaViewMut, DevicePtrMut, DeviceRepr, LaunchConfig, PushKernelArg};

use super::multi_tensor::{plan, MtBlocks};
use super::{check_device, check_optional_scalar, check_scalar, grad_kernel, grid_stride_config, optional_ptr};
use crate::device::Device;
use crate::dtype::Element;
use crate::error::{DriverContext, Result};
use crate::ptx;

/// Tensors one multi-tensor launch carries (`UNSCALE_MT_TENSORS`).
const UNSCALE_MT_TENSORS: usize = 64;

/// Mirrors `struct UnscaleList` in cuda/unscale.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct UnscaleList {
    ptr: [u64; UNSCALE_MT_TENSORS],
    len: [u64; UNSCALE_MT_TENSORS],
    blocks: MtBlocks,
}

// SAFETY: plain `repr(C)` data of integers, laid out as the CUDA struct it mirrors
// (offsets 0, 512, 1024; 2560 bytes), passed by value as a kernel parameter.
unsafe impl DeviceRepr for UnscaleList {}

/// `grads *= 1 / scale` in place, and `found_inf = 1` if any gradient was inf or NaN.
///
/// `grads` are `f32`, `f16` or `bf16`. With `scale == None` only the check runs and nothing but
/// `found_inf` is written. `found_inf` is only ever raised: zero it before the step.
pub fn unscale_check<G: Element>(
    dev: &Device,
    grads: &mut CudaViewMut<'_, G>,
    scale: Option<&CudaView<'_, f32>>,
    found_inf: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let op = grad_kernel::<G>(["unscale_check_f32", "unscale_check_f16", "unscale_check_bf16"]);
    check_device(op, dev, grads)?;
    check_optional_scalar(op, "scale", dev, scale)?;
    check_scalar(op, "found_inf", found_inf)?;
    check_device(op, dev, found_inf)?;
    let n = grads.len();
    if n == 0 {
        return Ok(());
    }
    let func = dev.function(&ptx::UNSCALE, op)?;
    let stream = dev.stream();
    let (g, _g) = grads.device_ptr_mut(stream);
    let (s, _s) = optional_ptr(scale, stream);
    let (f, _f) = found_inf.device_ptr_mut(stream);
    let n64 = n as u64;
    let per_thread = 16 / std::mem::size_of::<G>();
    let mut launch = stream.launch_builder(&func);
    launch.arg(&g).arg(&n64).arg(&s).arg(&f);
    // SAFETY: arguments match `unscale_check_<G>(G*, uint64_t, const float*, float*)` in
    // cuda/unscale.cu (the name is chosen by G above); grads holds n elements, scale
    // (or null) and found_inf one each, all in this device's context (checked above).
    unsafe { launch.launch(grid_stride_config(dev, n.div_ceil(per_thread))) }.op(op)?;
    Ok(())
}

/// [`unscale_check`] over a list of gradient tensors in as few launches as their count
/// and sizes allow (64 tensors and 256 chunks of 64 Ki elements per launch), as PyTorch's
/// `_amp_foreach_non_finite_check_and_unscale_` does. Empty tensors are skipped.
pub fn unscale_check_multi<G: Element>(
    dev: &Device,
    grads: &mut [CudaViewMut<'_, G>],
    scale: Option<&CudaView<'_, f32>>,
    found_inf: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let op = grad_kernel::<G>(["unscale_check_multi_f32", "unscale_check_multi_f16", "unscale_check_multi_bf16"]);
    for g in grads.iter() {
        check_device(op, dev, g)?;
    }
    check_optional_scalar(op, "scale", dev, scale)?;
    check_scalar(op, "found_inf", found_inf)?;
    check_device(op, dev, found_inf)?;
    let lens: Vec<usize> = grads.iter().map(|g| g.len()).collect();
    let launches = plan(op, &lens, UNSCALE_MT_TENSORS)?;
    if launches.is_empty() {
        return Ok(());
    }
    let func = dev.function(&ptx::UNSCALE, op)?;
    let stream = dev.stream();
    let mut ptrs = Vec::with_capacity(grads.len());
    let mut guards = Vec::with_capacity(grads.len());
    for g in grads.iter_mut() {
        let (p, sync) = g.device_ptr_mut(stream);
        ptrs.push(p);
        guards.push(sync);
    }
    let (s, _s) = optional_ptr(scale, stream);
    let (f, _f) = found_inf.device_ptr_mut(stream);
    for l in &launches {
        let mut list = UnscaleList { ptr: [0; UNSCALE_MT_TENSORS], len: [0; UNSCALE_MT_TENSORS], blocks: l.map };
        for (slot, &t) in l.tensors.iter().enumerate() {
            list.ptr[slot] = ptrs[t];
            list.len[slot] = lens[t] as u64;
        }
        let cfg = LaunchConfig { grid_dim: (l.blocks as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let mut launch = stream.launch_builder(&func);
        launch.arg(&list).arg(&s).arg(&f);
        // SAFETY: arguments match `unscale_check_multi_<G>(UnscaleList, const float*,
        // float*)`; every list slot holds the pointer and exact length of a live tensor of
        // this device, and each block's (tensor, chunk) lies inside that tensor (plan).
        unsafe { launch.launch(cfg) }.op(op)?;
    }
    drop(guards);
    Ok(())
}
