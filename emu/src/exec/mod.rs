//! Execution of a lowered kernel: a grid of blocks of warps of 32 threads, each thread
//! with its own program counter.

use crate::driver::memory::Memory;
use crate::ptx::Module;

/// Grid and block shape and dynamic shared memory of one launch.
#[derive(Clone, Copy, Debug)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub dynamic_shared: u32,
}

/// What went wrong in a launch, in the driver's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// The configuration is invalid (CUDA_ERROR_INVALID_VALUE): a zero or too large
    /// dimension, too much shared memory, a parameter buffer of the wrong size.
    InvalidValue,
    /// More threads per block than `.maxntid` or the device allows
    /// (CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES).
    OutOfResources,
    /// An access outside every live allocation or outside shared memory
    /// (CUDA_ERROR_ILLEGAL_ADDRESS; the context is unusable afterwards).
    IllegalAddress,
    /// An access not aligned to its size (CUDA_ERROR_MISALIGNED_ADDRESS; the context is
    /// unusable afterwards).
    MisalignedAddress,
    /// Anything else the kernel did that a GPU would trap on (CUDA_ERROR_ILLEGAL_INSTRUCTION;
    /// the context is unusable afterwards): a barrier deadlock, a trap.
    IllegalInstruction,
}

impl FaultKind {
    /// True when the driver leaves the context unusable after this error (a fault inside
    /// the kernel, as opposed to a launch refused before it started).
    pub fn is_sticky(self) -> bool {
        !matches!(self, FaultKind::InvalidValue | FaultKind::OutOfResources)
    }
}

/// A failed launch: the kind, and a compute-sanitizer-style report (kernel, block,
/// thread, PTX line, address).
#[derive(Debug)]
pub struct LaunchError {
    pub kind: FaultKind,
    pub report: String,
}

/// Runs kernel `kernel` of `module` to completion over `mem`. `params` is the kernel's
/// parameter buffer laid out as [`crate::ptx::Kernel::params`] says.
pub fn launch(
    module: &Module,
    kernel: usize,
    cfg: &LaunchConfig,
    params: &[u8],
    mem: &mut Memory,
) -> Result<(), LaunchError> {
    let _ = (module, kernel, cfg, params, mem);
    Err(LaunchError { kind: FaultKind::IllegalInstruction, report: "the executor is not written yet".into() })
}
