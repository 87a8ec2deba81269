//! The crate's one error type.

use crate::DType;

/// Everything that can go wrong in this crate. Each variant names the operation and,
/// where there are any, the shapes or lengths involved, so that the message alone says
/// what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The CUDA driver library (libcuda.so / nvcuda.dll) could not be loaded: this
    /// machine has no NVIDIA driver. Use the CPU backend, or install a driver of the
    /// 580 series or newer.
    #[error("no CUDA driver: libcuda could not be loaded (install an NVIDIA driver, 580 series or newer, or use the CPU backend)")]
    NoDriver,

    /// The driver is there but the requested device ordinal does not exist.
    #[error("no CUDA device with ordinal {ordinal} ({count} device(s) visible)")]
    NoDevice {
        /// The ordinal that was asked for.
        ordinal: usize,
        /// How many devices the driver reports.
        count: usize,
    },

    /// A CUDA driver call failed. `op` says which operation of this crate made it.
    #[error("{op}: CUDA driver error: {source}")]
    Driver {
        /// The operation of this crate that made the call.
        op: &'static str,
        /// The driver's error.
        #[source]
        source: cudarc::driver::DriverError,
    },

    /// The device cannot run a kernel: no PTX variant targets its compute capability.
    #[error("{op}: no PTX variant of module `{module}` runs on compute capability {}.{} (targets: {targets})", capability.0, capability.1)]
    UnsupportedDevice {
        /// The operation.
        op: &'static str,
        /// The PTX module (the `cuda/<module>.cu` file stem).
        module: &'static str,
        /// The device's compute capability.
        capability: (u32, u32),
        /// The targets the module was compiled for.
        targets: String,
    },

    /// The device has no hardware for what the operation asks (bf16 tensor cores on
    /// sm_75): refused before anything is queued.
    #[error("{op}: {what} needs compute capability {}.{} or newer; this device is {}.{}", needs.0, needs.1, capability.0, capability.1)]
    Unsupported {
        /// The operation.
        op: &'static str,
        /// What is missing, e.g. "bf16 tensor cores".
        what: &'static str,
        /// The capability it needs.
        needs: (u32, u32),
        /// The device's compute capability.
        capability: (u32, u32),
    },

    /// A tensor's shape does not match what the operation needs.
    #[error("{op}: shape mismatch: expected {expected:?}, got {got:?}")]
    ShapeMismatch {
        /// The operation.
        op: &'static str,
        /// The shape it needed.
        expected: Vec<usize>,
        /// The shape it was given.
        got: Vec<usize>,
    },

    /// A buffer's length does not match the shape or the other operands.
    #[error("{op}: `{what}` has {got} elements, expected {expected}")]
    LengthMismatch {
        /// The operation.
        op: &'static str,
        /// Which operand.
        what: &'static str,
        /// The length it needed.
        expected: usize,
        /// The length it was given.
        got: usize,
    },

    /// An operand has a dtype the operation does not take.
    #[error("{op}: unsupported dtype {dtype} for `{what}`")]
    UnsupportedDtype {
        /// The operation.
        op: &'static str,
        /// Which operand.
        what: &'static str,
        /// The dtype it was given.
        dtype: DType,
    },

    /// A pointer is null or not aligned as the kernel needs.
    #[error("{op}: `{what}` pointer {ptr:#x} is null or not {align}-byte aligned")]
    Misaligned {
        /// The operation.
        op: &'static str,
        /// Which operand.
        what: &'static str,
        /// The address.
        ptr: u64,
        /// The alignment it needs.
        align: usize,
    },

    /// An operand belongs to another `Device` (another stream, or another context): its
    /// work would not be ordered with this launch.
    #[error("{op}: operands live on different devices, contexts or streams")]
    DeviceMismatch {
        /// The operation.
        op: &'static str,
    },

    /// A scalar argument is out of its valid range (a non-finite learning rate, a zero
    /// dimension where one is required, ...).
    #[error("{op}: invalid argument `{what}`: {why}")]
    InvalidArgument {
        /// The operation.
        op: &'static str,
        /// The argument.
        what: &'static str,
        /// What is wrong with it.
        why: String,
    },

    /// A CUDA library other than the driver (cuBLAS, for the benchmark baseline) failed.
    #[error("{op}: {message}")]
    Library {
        /// The operation.
        op: &'static str,
        /// The library's error.
        message: String,
    },

    /// Reading or writing a file failed.
    #[error("{op}: {path}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The file.
        path: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A checkpoint file is not one this version writes, or does not fit the model it is
    /// loaded into.
    #[error("{op}: {why}")]
    Checkpoint {
        /// The operation.
        op: &'static str,
        /// What does not match.
        why: String,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches the crate operation's name to a driver error.
pub(crate) trait DriverContext<T> {
    fn op(self, op: &'static str) -> Result<T>;
}

impl<T> DriverContext<T> for std::result::Result<T, cudarc::driver::DriverError> {
    fn op(self, op: &'static str) -> Result<T> {
        self.map_err(|source| Error::Driver { op, source })
    }
}
