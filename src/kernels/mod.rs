//! Launchers: one file per `cuda/*.cu`, the only place in the crate with `unsafe`.
//!
//! Every launcher checks lengths, devices and alignment before it launches anything and
//! returns an [`Error`] naming the operation and the shapes; a launcher
//! that returns `Err` has queued no work. The checked entry points take cudarc device
//! memory (`CudaSlice`, `CudaView`, `CudaViewMut`), so an engine that owns its buffers can
//! call the kernels directly on them, on the [`Device`]'s stream.

pub mod cast;
pub(crate) mod driver;

use cudarc::driver::{DeviceSlice, LaunchConfig};

use crate::device::Device;
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

/// Checks that `buf` was allocated in `dev`'s context.
fn check_device<T>(op: &'static str, dev: &Device, buf: &impl DeviceSlice<T>) -> Result<()> {
    if dev.owns(buf.stream()) {
        Ok(())
    } else {
        Err(Error::DeviceMismatch { op })
    }
}
