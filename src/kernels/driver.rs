//! The few driver calls that Rust cannot check, wrapped once so the rest of the crate
//! stays safe: the driver-presence probe, turning event tracking off, and adopting a
//! context and stream owned by another engine.

use std::mem::MaybeUninit;
use std::sync::Arc;

use cudarc::driver::{result, sys, CudaContext};

use crate::device::Device;
use crate::error::{DriverContext, Error, Result};

/// True when libcuda can be loaded. cudarc panics on the first driver call when it
/// cannot, so every entry point asks this first.
///
/// Our own probe rather than cudarc's `sys::is_culib_present`: that exists only when
/// cudarc loads the driver at run time, and a program that also depends on candle
/// unifies cudarc's `dynamic-linking` in, which removes it. There libcuda is linked and
/// already loaded when the program starts, so opening it by name succeeds at once.
pub(crate) fn driver_present() -> bool {
    use std::env::consts::{DLL_PREFIX, DLL_SUFFIX};
    // The names cudarc's loader tries that a driver installs: libcuda.so (cudarc's first
    // choice) and its SONAME libcuda.so.1 on Linux, nvcuda.dll on Windows.
    ["cuda", "nvcuda"].iter().any(|name| {
        [format!("{DLL_PREFIX}{name}{DLL_SUFFIX}"), format!("{DLL_PREFIX}{name}{DLL_SUFFIX}.1")]
            .iter()
            // SAFETY: only opens (and closes again) the driver library by its usual
            // names; loading libcuda runs no initialisation that could break this process.
            .any(|file| unsafe { libloading::Library::new(file) }.is_ok())
    })
}

/// Turns cudarc's per-buffer event tracking off. With one stream per device, ordering is
/// already guaranteed by the stream, and tracking would add two driver calls per launch.
pub(crate) fn disable_event_tracking(ctx: &CudaContext) {
    // SAFETY: called right after the context is created, before this crate allocates
    // anything on it; every launcher rejects a buffer that was not allocated on its
    // `Device`'s own stream (`Device::owns`), so no buffer of this crate is used from
    // two streams (cudarc's requirement for turning tracking off).
    unsafe { ctx.disable_event_tracking() }
}

impl Device {
    /// Adopts the calling thread's current CUDA context and the caller's `stream`, for
    /// engines (PyTorch, llm.c, a C++ runtime-API program) that already own both: the
    /// kernels then run on the caller's stream, ordered with the caller's own work.
    ///
    /// When the current context is the device's primary context (what the CUDA runtime,
    /// and so PyTorch, uses) the device holds its own reference to it. Any other
    /// context is borrowed and never destroyed by this crate.
    ///
    /// # Safety
    /// - `stream` is null (the legacy default stream) or a live stream created in the
    ///   calling thread's current context.
    /// - The caller keeps that context and stream alive for as long as the returned
    ///   `Device`, or any tensor allocated from it, exists.
    pub unsafe fn from_current_context(stream: sys::CUstream) -> Result<Arc<Device>> {
        const OP: &str = "Device::from_current_context";
        if !driver_present() {
            return Err(Error::NoDriver);
        }
        result::init().op(OP)?;
        let current = result::ctx::get_current().op(OP)?.ok_or_else(|| Error::InvalidArgument {
            op: OP,
            what: "current context",
            why: "the calling thread has no current CUDA context; create or bind one first".into(),
        })?;
        let mut cu_device = MaybeUninit::uninit();
        // SAFETY: a context is current (checked above); the driver writes one CUdevice.
        unsafe { sys::cuCtxGetDevice(cu_device.as_mut_ptr()).result().op(OP)? };
        // SAFETY: written by the successful call above.
        let cu_device = unsafe { cu_device.assume_init() };
        // A CUdevice is the device's ordinal (cuDeviceGet(ordinal) returns it unchanged).
        let ordinal = cu_device as usize;

        let primary = CudaContext::new(ordinal).op(OP)?;
        let ctx = if primary.cu_ctx() == current {
            primary
        } else {
            drop(primary);
            // SAFETY: `current` is a live context of `cu_device` (queried above). cudarc
            // destroys a raw context when its last reference drops; one reference is
            // leaked on purpose below so that never happens to a context we borrowed.
            let ctx = unsafe { CudaContext::from_raw_context(ordinal, cu_device, current) }.op(OP)?;
            std::mem::forget(Arc::clone(&ctx));
            ctx
        };
        disable_event_tracking(&ctx);
        // SAFETY: the caller guarantees `stream` belongs to the current context, which
        // `ctx` wraps, and outlives the device; cudarc never destroys a borrowed stream.
        let stream = unsafe { ctx.wrap_borrowed_stream(stream) };
        Device::from_parts(ctx, stream)
    }
}
