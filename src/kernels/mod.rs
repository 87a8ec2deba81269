//! Launchers: one file per `cuda/*.cu`, the only place in the crate with `unsafe`.
//!
//! Every launcher checks lengths, devices and alignment before it launches anything and
//! returns an [`Error`] naming the operation and the shapes; a launcher
//! that returns `Err` has queued no work. The checked entry points take cudarc device
//! memory (`CudaSlice`, `CudaView`, `CudaViewMut`), so an engine that owns its buffers can
//! call the kernels directly on them, on the [`Device`]'s stream.

pub mod activation;
pub mod adam;
pub mod add;
pub mod attention;
pub mod capi;
pub mod cast;
pub mod classifier;
pub(crate) mod driver;
pub mod embedding;
pub mod gemm;
pub mod layernorm;
pub mod loss;
pub mod loss_scale;
mod multi_tensor;
pub mod reduce;
pub mod unscale;

use cudarc::driver::{sys::CUdeviceptr, CudaStream, CudaView, DevicePtr, DeviceSlice, LaunchConfig, SyncOnDrop};

use crate::device::Device;
use crate::dtype::{DType, Element, Half};
use crate::error::{Error, Result};

/// Threads per block for the elementwise kernels: a multiple of the warp size that
/// leaves room for several resident blocks per SM.
const ELEMENTWISE_BLOCK: u32 = 256;

/// Grid for a grid-stride kernel over `items` work items (one per thread per
/// iteration): enough blocks to fill the device several times over, no more, so large
/// ranges loop inside the kernel instead of paying for more block launches.
fn grid_stride_config(dev: &Device, items: usize) -> LaunchConfig {
    let blocks_needed = items.div_ceil(ELEMENTWISE_BLOCK as usize).max(1);
    let blocks_max = dev.info().sm_count.max(1) as usize * 8;
    LaunchConfig {
        grid_dim: (blocks_needed.min(blocks_max) as u32, 1, 1),
        block_dim: (ELEMENTWISE_BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Checks that `buf` was allocated on `dev`'s stream (the ownership rule of [`Device`]:
/// the same context is not enough, event tracking is off and two streams are unordered).
fn check_device<T>(op: &'static str, dev: &Device, buf: &impl DeviceSlice<T>) -> Result<()> {
    if dev.owns(buf.stream()) {
        Ok(())
    } else {
        Err(Error::DeviceMismatch { op })
    }
}

/// Checks that a device scalar (scale, found_inf, step, growth tracker) has one element.
fn check_scalar<T>(op: &'static str, what: &'static str, buf: &impl DeviceSlice<T>) -> Result<()> {
    if buf.len() == 1 {
        Ok(())
    } else {
        Err(Error::LengthMismatch { op, what, expected: 1, got: buf.len() })
    }
}

/// The kernel of a family for gradients of type `G`: `names` are the `f32`, `f16` and
/// `bf16` kernels, in that order.
fn grad_kernel<G: Element>(names: [&'static str; 3]) -> &'static str {
    match G::DTYPE {
        DType::F32 => names[0],
        DType::F16 => names[1],
        DType::BF16 => names[2],
    }
}

/// The kernel of a family for the half type `H`: `names` are the `f16` and `bf16`
/// kernels, in that order.
fn half_kernel<H: Half>(names: [&'static str; 2]) -> &'static str {
    match H::DTYPE {
        DType::BF16 => names[1],
        _ => names[0],
    }
}

/// The device pointer of an optional buffer, 0 (the kernels' "absent") for `None`.
fn optional_ptr<'a, T>(
    buf: Option<&'a CudaView<'_, T>>,
    stream: &'a CudaStream,
) -> (CUdeviceptr, Option<SyncOnDrop<'a>>) {
    match buf {
        Some(b) => {
            let (ptr, sync) = b.device_ptr(stream);
            (ptr, Some(sync))
        }
        None => (0, None),
    }
}

/// Checks an optional scalar: one element, on this device.
fn check_optional_scalar(
    op: &'static str,
    what: &'static str,
    dev: &Device,
    buf: Option<&CudaView<'_, f32>>,
) -> Result<()> {
    match buf {
        Some(b) => {
            check_scalar(op, what, b)?;
            check_device(op, dev, b)
        }
        None => Ok(()),
    }
}
