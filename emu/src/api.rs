//! The `extern "C"` driver entry points: argument translation only (null checks on
//! out-pointers, C strings and arrays to Rust values, handles to integers), then one call
//! into [`crate::driver`].
//!
//! Every entry point runs inside `guard`, so a panic (an emulator bug) becomes
//! CUDA_ERROR_UNKNOWN instead of unwinding into C, which would be undefined behaviour.
//! The safety contract of each function is the CUDA driver API's documentation for it:
//! pointers the caller passes must be valid for what the driver would do with them.

#![allow(non_snake_case, clippy::missing_safety_doc)]

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::driver::error::{self, CuResult, INVALID_VALUE, NOT_SUPPORTED, SUCCESS, UNKNOWN};
use crate::driver::module::Image;
use crate::driver::state::Handle;
use crate::driver::{context, device, graph, memcalls, module, state, stream};

type CUdevice = c_int;
type CUdeviceptr = u64;
type Ptr = *mut c_void;

/// Runs an entry point's body, turning its `Err` into the code and a panic into
/// CUDA_ERROR_UNKNOWN (with the function's name on stderr).
fn guard(name: &str, f: impl FnOnce() -> Result<(), CuResult>) -> CuResult {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => SUCCESS,
        Ok(Err(e)) => e,
        Err(_) => {
            let _ = writeln!(std::io::stderr(), "mp-emu: internal error (panic) in {name}");
            UNKNOWN
        }
    }
}

/// The out-pointer, or INVALID_VALUE when it is null. Checked before the call acts, so
/// a call with a null out-pointer changes nothing.
fn out<T>(p: *mut T) -> Result<*mut T, CuResult> {
    if p.is_null() {
        Err(INVALID_VALUE)
    } else {
        Ok(p)
    }
}

fn handle(p: Ptr) -> Handle {
    p as Handle
}

fn ptr(h: Handle) -> Ptr {
    h as Ptr
}

/// A C string argument, or INVALID_VALUE when null or not UTF-8.
unsafe fn c_str<'a>(p: *const c_char) -> Result<&'a str, CuResult> {
    if p.is_null() {
        return Err(INVALID_VALUE);
    }
    CStr::from_ptr(p).to_str().map_err(|_| INVALID_VALUE)
}

/// `len` bytes at `p`; a null `p` is accepted only for zero bytes.
unsafe fn host<'a>(p: *const c_void, len: usize) -> Result<&'a [u8], CuResult> {
    match (p.is_null(), len) {
        (_, 0) => Ok(&[]),
        (true, _) => Err(INVALID_VALUE),
        (false, _) => Ok(std::slice::from_raw_parts(p.cast(), len)),
    }
}

unsafe fn host_mut<'a>(p: *mut c_void, len: usize) -> Result<&'a mut [u8], CuResult> {
    match (p.is_null(), len) {
        (_, 0) => Ok(&mut []),
        (true, _) => Err(INVALID_VALUE),
        (false, _) => Ok(std::slice::from_raw_parts_mut(p.cast(), len)),
    }
}

// ---- initialization, version, errors ----

#[no_mangle]
pub unsafe extern "C" fn cuInit(flags: c_uint) -> CuResult {
    guard("cuInit", || context::init(flags))
}

#[no_mangle]
pub unsafe extern "C" fn cuDriverGetVersion(version: *mut c_int) -> CuResult {
    guard("cuDriverGetVersion", || {
        let p = out(version)?;
        // An unsupported MP_EMU_DRIVER_VERSION: there is no version to report (cuInit fails
        // too, with the same message).
        let v = device::driver_version().map_err(|why| {
            eprintln!("mp-emu: {why}");
            INVALID_VALUE
        })?;
        p.write(v);
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGetErrorName(code: CuResult, p_str: *mut *const c_char) -> CuResult {
    guard("cuGetErrorName", || {
        let p = out(p_str)?;
        let s = error::name_c(code);
        p.write(s.map_or(std::ptr::null(), CStr::as_ptr));
        s.map(|_| ()).ok_or(INVALID_VALUE)
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGetErrorString(code: CuResult, p_str: *mut *const c_char) -> CuResult {
    guard("cuGetErrorString", || {
        let p = out(p_str)?;
        let s = error::string_c(code);
        p.write(s.map_or(std::ptr::null(), CStr::as_ptr));
        s.map(|_| ()).ok_or(INVALID_VALUE)
    })
}

// ---- device ----

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGet(device: *mut CUdevice, ordinal: c_int) -> CuResult {
    guard("cuDeviceGet", || {
        let p = out(device)?;
        p.write(context::device_get(ordinal)?);
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetCount(count: *mut c_int) -> CuResult {
    guard("cuDeviceGetCount", || {
        let p = out(count)?;
        p.write(context::device_count()?);
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetName(name: *mut c_char, len: c_int, dev: CUdevice) -> CuResult {
    guard("cuDeviceGetName", || {
        let p = out(name)?;
        let len = usize::try_from(len).ok().filter(|&l| l > 0).ok_or(INVALID_VALUE)?;
        let s = context::device_name(dev)?;
        let n = s.len().min(len - 1);
        std::ptr::copy_nonoverlapping(s.as_ptr().cast::<c_char>(), p, n);
        p.add(n).write(0);
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: CUdevice) -> CuResult {
    guard("cuDeviceTotalMem_v2", || {
        let p = out(bytes)?;
        p.write(context::device_total_mem(dev)? as usize);
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetAttribute(value: *mut c_int, attr: c_int, dev: CUdevice) -> CuResult {
    guard("cuDeviceGetAttribute", || {
        let p = out(value)?;
        p.write(context::device_attribute(attr, dev)?);
        Ok(())
    })
}

// ---- contexts ----

#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRetain(pctx: *mut Ptr, dev: CUdevice) -> CuResult {
    guard("cuDevicePrimaryCtxRetain", || {
        let p = out(pctx)?;
        p.write(ptr(context::primary_retain(dev)?));
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRelease_v2(dev: CUdevice) -> CuResult {
    guard("cuDevicePrimaryCtxRelease_v2", || context::primary_release(dev))
}

#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxReset_v2(dev: CUdevice) -> CuResult {
    guard("cuDevicePrimaryCtxReset_v2", || context::primary_reset(dev))
}

#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxGetState(dev: CUdevice, flags: *mut c_uint, active: *mut c_int) -> CuResult {
    guard("cuDevicePrimaryCtxGetState", || {
        let (f, a) = (out(flags)?, out(active)?);
        let (fl, on) = context::primary_state(dev)?;
        f.write(fl);
        a.write(on as c_int);
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxCreate_v2(pctx: *mut Ptr, _flags: c_uint, dev: CUdevice) -> CuResult {
    guard("cuCtxCreate_v2", || {
        let p = out(pctx)?;
        p.write(ptr(context::ctx_create(dev)?));
        Ok(())
    })
}

/// CUctxCreateParams: execution affinity and CIG parameters, which the emulator does not
/// support; a null or all-empty struct is a plain cuCtxCreate.
#[repr(C)]
pub struct CtxCreateParams {
    exec_affinity_params: *mut c_void,
    num_exec_affinity_params: c_int,
    cig_params: *mut c_void,
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxCreate_v4(
    pctx: *mut Ptr,
    params: *const CtxCreateParams,
    _flags: c_uint,
    dev: CUdevice,
) -> CuResult {
    guard("cuCtxCreate_v4", || {
        let p = out(pctx)?;
        if let Some(c) = params.as_ref() {
            if !c.exec_affinity_params.is_null() || c.num_exec_affinity_params != 0 || !c.cig_params.is_null() {
                return Err(NOT_SUPPORTED);
            }
        }
        p.write(ptr(context::ctx_create(dev)?));
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxDestroy_v2(ctx: Ptr) -> CuResult {
    guard("cuCtxDestroy_v2", || context::ctx_destroy(handle(ctx)))
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxSetCurrent(ctx: Ptr) -> CuResult {
    guard("cuCtxSetCurrent", || context::ctx_set_current((!ctx.is_null()).then(|| handle(ctx))))
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxGetCurrent(pctx: *mut Ptr) -> CuResult {
    guard("cuCtxGetCurrent", || {
        let p = out(pctx)?;
        p.write(context::ctx_get_current()?.map_or(std::ptr::null_mut(), ptr));
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxPushCurrent_v2(ctx: Ptr) -> CuResult {
    guard("cuCtxPushCurrent_v2", || context::ctx_push(handle(ctx)))
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxPopCurrent_v2(pctx: *mut Ptr) -> CuResult {
    guard("cuCtxPopCurrent_v2", || {
        let popped = context::ctx_pop()?;
        if !pctx.is_null() {
            pctx.write(ptr(popped));
        }
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxGetDevice(device: *mut CUdevice) -> CuResult {
    guard("cuCtxGetDevice", || {
        let p = out(device)?;
        p.write(context::ctx_get_device()?);
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxSynchronize() -> CuResult {
    guard("cuCtxSynchronize", || {
        context::ctx_synchronize()?;
        memcalls::land_legacy_copies()
    })
}

// ---- memory ----

#[no_mangle]
pub unsafe extern "C" fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, bytes: usize) -> CuResult {
    guard("cuMemAlloc_v2", || {
        let p = out(dptr)?;
        p.write(memcalls::alloc(bytes)?);
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuMemAllocAsync(dptr: *mut CUdeviceptr, bytes: usize, stream: Ptr) -> CuResult {
    guard("cuMemAllocAsync", || {
        let p = out(dptr)?;
        p.write(memcalls::alloc_async(bytes, handle(stream))?);
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuMemFree_v2(dptr: CUdeviceptr) -> CuResult {
    guard("cuMemFree_v2", || memcalls::free(dptr))
}

#[no_mangle]
pub unsafe extern "C" fn cuMemFreeAsync(dptr: CUdeviceptr, stream: Ptr) -> CuResult {
    guard("cuMemFreeAsync", || memcalls::free_async(dptr, handle(stream)))
}

#[no_mangle]
pub unsafe extern "C" fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CuResult {
    guard("cuMemGetInfo_v2", || {
        let (f, t) = (out(free)?, out(total)?);
        let (fr, to) = memcalls::get_info()?;
        f.write(fr as usize);
        t.write(to as usize);
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuMemsetD8_v2(dst: CUdeviceptr, value: u8, n: usize) -> CuResult {
    guard("cuMemsetD8_v2", || memcalls::memset(dst, value.into(), 1, n, None))
}

#[no_mangle]
pub unsafe extern "C" fn cuMemsetD16_v2(dst: CUdeviceptr, value: u16, n: usize) -> CuResult {
    guard("cuMemsetD16_v2", || memcalls::memset(dst, value.into(), 2, n, None))
}

#[no_mangle]
pub unsafe extern "C" fn cuMemsetD32_v2(dst: CUdeviceptr, value: c_uint, n: usize) -> CuResult {
    guard("cuMemsetD32_v2", || memcalls::memset(dst, value, 4, n, None))
}

#[no_mangle]
pub unsafe extern "C" fn cuMemsetD8Async(dst: CUdeviceptr, value: u8, n: usize, stream: Ptr) -> CuResult {
    guard("cuMemsetD8Async", || memcalls::memset(dst, value.into(), 1, n, Some(handle(stream))))
}

#[no_mangle]
pub unsafe extern "C" fn cuMemsetD16Async(dst: CUdeviceptr, value: u16, n: usize, stream: Ptr) -> CuResult {
    guard("cuMemsetD16Async", || memcalls::memset(dst, value.into(), 2, n, Some(handle(stream))))
}

#[no_mangle]
pub unsafe extern "C" fn cuMemsetD32Async(dst: CUdeviceptr, value: c_uint, n: usize, stream: Ptr) -> CuResult {
    guard("cuMemsetD32Async", || memcalls::memset(dst, value, 4, n, Some(handle(stream))))
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyHtoD_v2(dst: CUdeviceptr, src: *const c_void, n: usize) -> CuResult {
    guard("cuMemcpyHtoD_v2", || memcalls::copy_htod(dst, host(src, n)?, None))
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyHtoDAsync_v2(dst: CUdeviceptr, src: *const c_void, n: usize, stream: Ptr) -> CuResult {
    guard("cuMemcpyHtoDAsync_v2", || memcalls::copy_htod(dst, host(src, n)?, Some(handle(stream))))
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoH_v2(dst: *mut c_void, src: CUdeviceptr, n: usize) -> CuResult {
    guard("cuMemcpyDtoH_v2", || memcalls::copy_dtoh(host_mut(dst, n)?, src, None))
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoHAsync_v2(dst: *mut c_void, src: CUdeviceptr, n: usize, stream: Ptr) -> CuResult {
    guard("cuMemcpyDtoHAsync_v2", || memcalls::copy_dtoh(host_mut(dst, n)?, src, Some(handle(stream))))
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoD_v2(dst: CUdeviceptr, src: CUdeviceptr, n: usize) -> CuResult {
    guard("cuMemcpyDtoD_v2", || memcalls::copy_dtod(dst, src, n, None))
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoDAsync_v2(dst: CUdeviceptr, src: CUdeviceptr, n: usize, stream: Ptr) -> CuResult {
    guard("cuMemcpyDtoDAsync_v2", || memcalls::copy_dtod(dst, src, n, Some(handle(stream))))
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyPeerAsync(
    dst: CUdeviceptr,
    dst_ctx: Ptr,
    src: CUdeviceptr,
    src_ctx: Ptr,
    n: usize,
    stream: Ptr,
) -> CuResult {
    guard("cuMemcpyPeerAsync", || memcalls::copy_peer(dst, handle(dst_ctx), src, handle(src_ctx), n, handle(stream)))
}

// ---- streams and capture ----

#[no_mangle]
pub unsafe extern "C" fn cuStreamCreate(pstream: *mut Ptr, flags: c_uint) -> CuResult {
    guard("cuStreamCreate", || {
        let p = out(pstream)?;
        p.write(ptr(stream::create(flags)?));
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamCreateWithPriority(pstream: *mut Ptr, flags: c_uint, _priority: c_int) -> CuResult {
    guard("cuStreamCreateWithPriority", || {
        let p = out(pstream)?;
        p.write(ptr(stream::create(flags)?));
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamDestroy_v2(s: Ptr) -> CuResult {
    guard("cuStreamDestroy_v2", || stream::destroy(handle(s)))
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamSynchronize(s: Ptr) -> CuResult {
    guard("cuStreamSynchronize", || {
        stream::synchronize(handle(s), "cuStreamSynchronize", "cuStreamSynchronize on a capturing stream", false)
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamQuery(s: Ptr) -> CuResult {
    guard("cuStreamQuery", || {
        stream::synchronize(handle(s), "cuStreamQuery", "cuStreamQuery on a capturing stream", true)
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamWaitEvent(s: Ptr, event: Ptr, flags: c_uint) -> CuResult {
    guard("cuStreamWaitEvent", || stream::wait_event(handle(s), handle(event), flags))
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamBeginCapture_v2(s: Ptr, mode: c_uint) -> CuResult {
    guard("cuStreamBeginCapture_v2", || graph::begin_capture(handle(s), mode))
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamEndCapture(s: Ptr, pgraph: *mut Ptr) -> CuResult {
    guard("cuStreamEndCapture", || {
        let p = out(pgraph)?;
        p.write(std::ptr::null_mut());
        p.write(ptr(graph::end_capture(handle(s))?));
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamIsCapturing(s: Ptr, status: *mut c_uint) -> CuResult {
    guard("cuStreamIsCapturing", || {
        let p = out(status)?;
        p.write(graph::capture_info(handle(s))?.0);
        Ok(())
    })
}

/// The original three-argument form (the `_v2`/`_v3` forms also return the graph under
/// construction and its dependencies, which the emulator does not expose).
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetCaptureInfo(s: Ptr, status: *mut c_uint, id: *mut u64) -> CuResult {
    guard("cuStreamGetCaptureInfo", || {
        let p = out(status)?;
        let (st, cid) = graph::capture_info(handle(s))?;
        p.write(st);
        if !id.is_null() && st != graph::STATUS_NONE {
            id.write(cid);
        }
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuThreadExchangeStreamCaptureMode(mode: *mut c_uint) -> CuResult {
    guard("cuThreadExchangeStreamCaptureMode", || {
        let p = out(mode)?;
        if p.read() > state::CAPTURE_RELAXED {
            return Err(INVALID_VALUE);
        }
        p.write(state::exchange_thread_mode(p.read()));
        Ok(())
    })
}

// ---- events ----

#[no_mangle]
pub unsafe extern "C" fn cuEventCreate(pevent: *mut Ptr, flags: c_uint) -> CuResult {
    guard("cuEventCreate", || {
        let p = out(pevent)?;
        p.write(ptr(stream::event_create(flags)?));
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuEventRecord(event: Ptr, s: Ptr) -> CuResult {
    guard("cuEventRecord", || stream::event_record(handle(event), handle(s)))
}

#[no_mangle]
pub unsafe extern "C" fn cuEventQuery(event: Ptr) -> CuResult {
    guard("cuEventQuery", || stream::event_wait(handle(event), "cuEventQuery", true))
}

#[no_mangle]
pub unsafe extern "C" fn cuEventSynchronize(event: Ptr) -> CuResult {
    guard("cuEventSynchronize", || stream::event_wait(handle(event), "cuEventSynchronize", false))
}

#[no_mangle]
pub unsafe extern "C" fn cuEventElapsedTime(ms: *mut f32, start: Ptr, end: Ptr) -> CuResult {
    guard("cuEventElapsedTime", || {
        let p = out(ms)?;
        p.write(stream::event_elapsed(handle(start), handle(end))?);
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuEventElapsedTime_v2(ms: *mut f32, start: Ptr, end: Ptr) -> CuResult {
    cuEventElapsedTime(ms, start, end)
}

#[no_mangle]
pub unsafe extern "C" fn cuEventDestroy_v2(event: Ptr) -> CuResult {
    guard("cuEventDestroy_v2", || stream::event_destroy(handle(event)))
}

// ---- modules and launches ----

/// Classifies a module image without reading past its end: a cubin (ELF) or fatbin by
/// magic number, else NUL-terminated PTX text.
unsafe fn image<'a>(p: *const c_void) -> Result<Image<'a>, CuResult> {
    if p.is_null() {
        return Err(INVALID_VALUE);
    }
    let b = p.cast::<u8>();
    const MAGICS: [[u8; 4]; 3] = [*b"\x7fELF", [0x50, 0xed, 0x55, 0xba], [0xb1, 0x43, 0x62, 0x46]];
    for m in MAGICS {
        // Byte by byte, stopping at the first mismatch: a short PTX string ends in a NUL
        // that mismatches every magic before anything past it is read.
        if (0..4).all(|i| b.add(i).read() == m[i]) {
            return Ok(Image::Binary);
        }
    }
    Ok(Image::Text(CStr::from_ptr(p.cast()).to_bytes()))
}

#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadData(pmodule: *mut Ptr, data: *const c_void) -> CuResult {
    guard("cuModuleLoadData", || {
        let p = out(pmodule)?;
        p.write(ptr(module::load(image(data)?)?));
        Ok(())
    })
}

/// JIT options are accepted and ignored: there is no JIT, and no log is produced other
/// than the load error on stderr.
#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadDataEx(
    pmodule: *mut Ptr,
    data: *const c_void,
    _num_options: c_uint,
    _options: *mut c_int,
    _values: *mut Ptr,
) -> CuResult {
    cuModuleLoadData(pmodule, data)
}

#[no_mangle]
pub unsafe extern "C" fn cuModuleLoad(pmodule: *mut Ptr, fname: *const c_char) -> CuResult {
    guard("cuModuleLoad", || {
        let p = out(pmodule)?;
        p.write(ptr(module::load_file(c_str(fname)?)?));
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuModuleUnload(m: Ptr) -> CuResult {
    guard("cuModuleUnload", || module::unload(handle(m)))
}

#[no_mangle]
pub unsafe extern "C" fn cuModuleGetFunction(pfunc: *mut Ptr, m: Ptr, name: *const c_char) -> CuResult {
    guard("cuModuleGetFunction", || {
        let p = out(pfunc)?;
        p.write(ptr(module::get_function(handle(m), c_str(name)?)?));
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuFuncGetAttribute(value: *mut c_int, attr: c_int, f: Ptr) -> CuResult {
    guard("cuFuncGetAttribute", || {
        let p = out(value)?;
        p.write(module::get_attribute(attr, handle(f))?);
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuFuncSetAttribute(f: Ptr, attr: c_int, value: c_int) -> CuResult {
    guard("cuFuncSetAttribute", || module::set_attribute(handle(f), attr, value))
}

/// `extra` keys (CU_LAUNCH_PARAM_*).
const LAUNCH_PARAM_END: usize = 0;
const LAUNCH_PARAM_BUFFER_POINTER: usize = 1;
const LAUNCH_PARAM_BUFFER_SIZE: usize = 2;

/// The kernel's parameter buffer from `kernelParams` (one pointer per declared parameter,
/// each read for the parameter's size) or from `extra` (one packed buffer of exactly the
/// kernel's parameter size). Both given, or neither for a kernel with parameters, is
/// INVALID_VALUE.
unsafe fn param_buffer(k: &crate::ptx::Kernel, params: *mut Ptr, extra: *mut Ptr) -> Result<Vec<u8>, CuResult> {
    let mut buf = vec![0u8; k.param_bytes];
    match (params.is_null(), extra.is_null()) {
        (false, false) => Err(INVALID_VALUE),
        (false, true) => {
            for (i, p) in k.params.iter().enumerate() {
                let src = params.add(i).read().cast::<u8>().cast_const();
                let dst = buf.get_mut(p.offset..p.offset + p.size).ok_or(INVALID_VALUE)?;
                dst.copy_from_slice(host(src.cast(), p.size)?);
            }
            Ok(buf)
        }
        (true, false) => {
            let (mut data, mut size): (*const c_void, Option<usize>) = (std::ptr::null(), None);
            let mut i = 0;
            loop {
                match extra.add(i).read() as usize {
                    LAUNCH_PARAM_END => break,
                    LAUNCH_PARAM_BUFFER_POINTER => data = extra.add(i + 1).read(),
                    LAUNCH_PARAM_BUFFER_SIZE => {
                        let s = extra.add(i + 1).read().cast::<usize>();
                        size = Some(s.as_ref().copied().ok_or(INVALID_VALUE)?);
                    }
                    _ => return Err(INVALID_VALUE),
                }
                i += 2;
            }
            if size != Some(k.param_bytes) {
                return Err(INVALID_VALUE);
            }
            buf.copy_from_slice(host(data, k.param_bytes)?);
            Ok(buf)
        }
        (true, true) if k.param_bytes == 0 => Ok(buf),
        (true, true) => Err(INVALID_VALUE),
    }
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cuLaunchKernel(
    f: Ptr,
    grid_x: c_uint,
    grid_y: c_uint,
    grid_z: c_uint,
    block_x: c_uint,
    block_y: c_uint,
    block_z: c_uint,
    shared_bytes: c_uint,
    s: Ptr,
    params: *mut Ptr,
    extra: *mut Ptr,
) -> CuResult {
    guard("cuLaunchKernel", || {
        let grid = [grid_x, grid_y, grid_z];
        let block = [block_x, block_y, block_z];
        module::launch(handle(f), grid, block, shared_bytes, handle(s), |k| param_buffer(k, params, extra))
    })
}

// ---- graphs ----

#[no_mangle]
pub unsafe extern "C" fn cuGraphInstantiateWithFlags(pexec: *mut Ptr, g: Ptr, flags: u64) -> CuResult {
    guard("cuGraphInstantiateWithFlags", || {
        let p = out(pexec)?;
        p.write(ptr(graph::instantiate(handle(g), flags)?));
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphUpload(exec: Ptr, s: Ptr) -> CuResult {
    guard("cuGraphUpload", || graph::upload(handle(exec), handle(s)))
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphLaunch(exec: Ptr, s: Ptr) -> CuResult {
    guard("cuGraphLaunch", || graph::launch(handle(exec), handle(s)))
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphDestroy(g: Ptr) -> CuResult {
    guard("cuGraphDestroy", || graph::destroy_graph(handle(g)))
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphExecDestroy(exec: Ptr) -> CuResult {
    guard("cuGraphExecDestroy", || graph::destroy_exec(handle(exec)))
}

/// Only the count (a null `nodes` array): the emulator has no node handles.
#[no_mangle]
pub unsafe extern "C" fn cuGraphGetNodes(g: Ptr, nodes: *mut Ptr, count: *mut usize) -> CuResult {
    guard("cuGraphGetNodes", || {
        let p = out(count)?;
        if !nodes.is_null() {
            return Err(NOT_SUPPORTED);
        }
        p.write(graph::node_count(handle(g))?);
        Ok(())
    })
}
