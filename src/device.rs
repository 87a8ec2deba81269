//! One CUDA device: its context, the one stream every kernel of this crate runs on, and
//! the PTX modules loaded into it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use cudarc::driver::{sys, CudaContext, CudaFunction, CudaModule, CudaStream, DevicePtr, DeviceRepr, DriverError};

use crate::error::{DriverContext, Error, Result};
use crate::kernels::driver;
use crate::ptx::PtxModule;

/// What the crate knows about a device, read once when it is opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The device ordinal.
    pub ordinal: usize,
    /// The marketing name, e.g. "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// Compute capability (major, minor): (9, 0) for Hopper.
    pub compute_capability: (u32, u32),
    /// Number of streaming multiprocessors.
    pub sm_count: u32,
    /// Total device memory in bytes.
    pub total_memory: usize,
}

impl DeviceInfo {
    /// True on the CUDA driver emulator (emu/, README "The emulator"), whose device name
    /// says "emulator": what runs there takes CPU time, so benchmarks refuse it and
    /// examples do not print its times as GPU times.
    pub fn is_emulator(&self) -> bool {
        self.name.to_ascii_lowercase().contains("emulator")
    }
}

/// A CUDA device with one stream. Every kernel this crate launches through a `Device`
/// goes onto that stream, in order, so a training step needs no host synchronization.
///
/// Ownership rule: a buffer belongs to the stream it was allocated on, and a launcher
/// accepts only buffers of its `Device`'s own stream; anything else returns
/// [`Error::DeviceMismatch`] naming the operation, before anything is queued. Two
/// `Device`s on one context (two [`Device::new`] calls open the same primary context,
/// each with a stream of its own) therefore cannot read each other's buffers: the crate
/// turns cudarc's per-buffer event tracking off, so nothing would order the two streams.
/// To hand data across, copy it through the host or record and wait on an event
/// yourself, into a buffer of the other device.
///
/// Cheap to share: it is always handed out as `Arc<Device>`.
pub struct Device {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    info: DeviceInfo,
    /// Loaded modules by name; functions by kernel name (kernel names are unique across
    /// the crate because they are `extern "C"`).
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device").field("info", &self.info).finish_non_exhaustive()
    }
}

impl Device {
    /// Opens device `ordinal` on its primary context (shared with the CUDA runtime, so
    /// PyTorch or any runtime-API code in the same process sees the same memory) and
    /// creates the stream the crate's kernels run on.
    ///
    /// Returns [`Error::NoDriver`] when libcuda cannot be loaded and
    /// [`Error::NoDevice`] when the ordinal does not exist; it never panics.
    pub fn new(ordinal: usize) -> Result<Arc<Self>> {
        const OP: &str = "Device::new";
        let count = device_count()?;
        if ordinal >= count {
            return Err(Error::NoDevice { ordinal, count });
        }
        let ctx = CudaContext::new(ordinal).op(OP)?;
        driver::disable_event_tracking(&ctx);
        let stream = ctx.new_stream().op(OP)?;
        Self::from_parts(ctx, stream)
    }

    pub(crate) fn from_parts(ctx: Arc<CudaContext>, stream: Arc<CudaStream>) -> Result<Arc<Self>> {
        const OP: &str = "Device::info";
        let attr = |a| ctx.attribute(a).op(OP).map(|v| v as u32);
        let info = DeviceInfo {
            ordinal: ctx.ordinal(),
            name: ctx.name().op(OP)?,
            compute_capability: (
                attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
                attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
            ),
            sm_count: attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
            total_memory: ctx.total_mem().op(OP)?,
        };
        Ok(Arc::new(Device {
            ctx,
            stream,
            info,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
        }))
    }

    /// What was read from the device when it was opened.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// The stream every kernel of this device runs on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The CUDA context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// Blocks the host until every kernel queued on the stream has finished.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().op("Device::synchronize")
    }

    /// Copies `buf` to the host, after every kernel queued before it. A copy into
    /// pageable memory already returns when done; the explicit wait keeps that true
    /// whatever memory the driver decides to stage through.
    pub(crate) fn to_host<T: DeviceRepr>(&self, op: &'static str, buf: &impl DevicePtr<T>) -> Result<Vec<T>> {
        let host = self.stream.clone_dtoh(buf).op(op)?;
        self.synchronize()?;
        Ok(host)
    }

    /// The kernel `name` from `module`, loading the module's best PTX variant for this
    /// device on first use and caching both.
    pub(crate) fn function(&self, module: &'static PtxModule, name: &'static str) -> Result<CudaFunction> {
        const OP: &str = "Device::function";
        let mut functions = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = functions.get(name) {
            return Ok(f.clone());
        }
        let loaded = {
            let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
            match modules.get(module.name) {
                Some(m) => m.clone(),
                None => {
                    let cap = self.info.compute_capability;
                    let variant = module.best_for(cap).ok_or_else(|| Error::UnsupportedDevice {
                        op: OP,
                        module: module.name,
                        capability: cap,
                        targets: module.variants.iter().map(|v| v.target.name()).collect::<Vec<_>>().join(", "),
                    })?;
                    let m = self.ctx.load_module(variant.ptx.into()).op(OP)?;
                    modules.insert(module.name, m.clone());
                    m
                }
            }
        };
        let f = loaded.load_function(name).op(OP)?;
        functions.insert(name, f.clone());
        Ok(f)
    }

    /// True when `stream` is this device's stream: the ownership rule every launcher
    /// checks (see [`Device`]). The same context is not enough: with event tracking off
    /// nothing orders a kernel on this stream after the work another `Device`'s stream
    /// queued on the buffer, nor the buffer's free (queued on its own stream at drop)
    /// after this stream's kernels. Two `Device`s that adopted the same raw stream
    /// ([`Device::from_current_context`]) share it, and their buffers are accepted.
    pub(crate) fn owns(&self, stream: &CudaStream) -> bool {
        // cudarc's equality: the same CUstream handle in the same context (the legacy
        // default stream is the null handle of each context).
        *stream == *self.stream
    }
}

/// Number of CUDA devices the driver reports; [`Error::NoDriver`] without a driver.
pub fn device_count() -> Result<usize> {
    if !driver::driver_present() {
        return Err(Error::NoDriver);
    }
    match CudaContext::device_count() {
        Ok(n) => Ok(n.max(0) as usize),
        // cuInit reports a machine with a driver but no GPU this way.
        Err(DriverError(sys::cudaError_enum::CUDA_ERROR_NO_DEVICE)) => Ok(0),
        Err(source) => Err(Error::Driver { op: "device_count", source }),
    }
}
