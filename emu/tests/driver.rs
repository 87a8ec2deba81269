//! The driver surface, called as a C caller would (through the `extern "C"` functions):
//! initialization, device, contexts, memory, error codes, events, stream capture and
//! graph replay, and kernel launches.
//!
//! The driver state is process-wide and these tests share one process, so every test
//! takes [`Rig`], which serializes them: a GLOBAL-mode capture or a kernel fault in one
//! test must not leak into another running beside it. Tests that need a driver nobody
//! has initialized run themselves again in a child process ([`in_child`]).

use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr::null_mut;
use std::sync::{Mutex, MutexGuard};

use mp_emu::api::*;
use mp_emu::driver::device;
use mp_emu::driver::error::{self as e, name};
use mp_emu::driver::faults::{self, Faults};

type P = *mut c_void;

static SERIAL: Mutex<()> = Mutex::new(());

#[track_caller]
fn ok(r: u32) {
    assert_eq!(r, 0, "expected CUDA_SUCCESS, got {}", name(r).unwrap_or("?"));
}

#[track_caller]
fn err(r: u32, want: u32) {
    assert_eq!(r, want, "expected {}, got {}", name(want).unwrap_or("?"), name(r).unwrap_or("?"));
}

/// The primary context, retained and current for the test's duration.
struct Rig {
    ctx: P,
    _serial: MutexGuard<'static, ()>,
}

impl Rig {
    fn new() -> Rig {
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let mut ctx = null_mut();
        unsafe {
            ok(cuInit(0));
            ok(cuDevicePrimaryCtxRetain(&mut ctx, 0));
            ok(cuCtxSetCurrent(ctx));
        }
        Rig { ctx, _serial: serial }
    }

    fn stream(&self) -> P {
        let mut s = null_mut();
        ok(unsafe { cuStreamCreate(&mut s, 1) });
        s
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        unsafe { cuDevicePrimaryCtxRelease_v2(0) };
    }
}

fn alloc(bytes: usize) -> u64 {
    let mut p = 0;
    ok(unsafe { cuMemAlloc_v2(&mut p, bytes) });
    p
}

/// A synchronous upload, then the legacy stream synchronized: the copy may otherwise
/// still be in flight for work on a non-blocking stream (see
/// `legacy_stream_copies_reach_a_non_blocking_stream_only_when_ordered`).
fn upload(dst: u64, data: &[u32]) {
    ok(unsafe { cuMemcpyHtoD_v2(dst, data.as_ptr().cast(), std::mem::size_of_val(data)) });
    ok(unsafe { cuStreamSynchronize(null_mut()) });
}

fn download(src: u64, n: usize) -> Vec<u32> {
    let mut v = vec![0u32; n];
    ok(unsafe { cuMemcpyDtoH_v2(v.as_mut_ptr().cast(), src, n * 4) });
    v
}

/// Sets when faults are reported (`MP_EMU_FAULTS`) and whether findings fail the work
/// (`MP_EMU_STRICT`) for the rest of a test (`None`: the environment's), and both back to
/// the environment's when dropped, failing or not. Take it after [`Rig`], which serializes
/// the tests that change them.
struct Settings;

impl Settings {
    fn set(fault_mode: Option<Faults>, strict: Option<bool>) -> Settings {
        faults::set_faults(fault_mode);
        faults::set_strict(strict);
        Settings
    }
}

impl Drop for Settings {
    fn drop(&mut self) {
        faults::set_faults(None);
        faults::set_strict(None);
    }
}

fn capture_status(s: P) -> u32 {
    let mut st = 99;
    ok(unsafe { cuStreamIsCapturing(s, &mut st) });
    st
}

/// Runs test `name` again in a child process with `env` set and returns true in the
/// parent (after checking the child passed); returns false in the child, which then runs
/// the test body. For what needs a fresh process: calls before cuInit, MP_EMU_CC,
/// MP_EMU_SM_COUNT. The child starts from the emulator's defaults (none of the variables
/// below set) plus `env`, whatever this process was run with.
fn in_child(name: &str, env: &[(&str, &str)]) -> bool {
    child(name, env).is_some()
}

/// As [`in_child`], returning the child's stderr in the parent (None in the child).
fn child(name: &str, env: &[(&str, &str)]) -> Option<String> {
    if std::env::var_os("MP_EMU_DRIVER_CHILD").is_some() {
        return None;
    }
    let exe = std::env::current_exe().unwrap();
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["--exact", name, "--test-threads=1", "--nocapture"]).env("MP_EMU_DRIVER_CHILD", "1");
    cmd.env_remove(device::CC_VAR).env_remove(device::SM_COUNT_VAR).env_remove(device::DRIVER_VAR);
    cmd.env_remove(faults::FAULTS_VAR).env_remove(faults::STRICT_VAR);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "child {name} failed:\n{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"), "child ran no test");
    Some(String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn calls_before_cuinit_are_not_initialized() {
    if in_child("calls_before_cuinit_are_not_initialized", &[]) {
        return;
    }
    unsafe {
        let mut v = 0;
        ok(cuDriverGetVersion(&mut v));
        assert_eq!(v, 13000);
        let mut n = 0;
        err(cuDeviceGetCount(&mut n), e::NOT_INITIALIZED);
        let mut p = 0;
        err(cuMemAlloc_v2(&mut p, 16), e::NOT_INITIALIZED);
        let mut ctx = null_mut();
        err(cuDevicePrimaryCtxRetain(&mut ctx, 0), e::NOT_INITIALIZED);
        err(cuInit(1), e::INVALID_VALUE);
        ok(cuInit(0));
        ok(cuDeviceGetCount(&mut n));
        assert_eq!(n, 1);
    }
}

#[test]
fn invalid_compute_capability_fails_init() {
    if in_child("invalid_compute_capability_fails_init", &[("MP_EMU_CC", "8.1")]) {
        return;
    }
    err(unsafe { cuInit(0) }, e::NO_DEVICE);
    let mut n = 0;
    err(unsafe { cuDeviceGetCount(&mut n) }, e::NOT_INITIALIZED);
}

#[test]
fn compute_capability_comes_from_the_environment() {
    if in_child("compute_capability_comes_from_the_environment", &[("MP_EMU_CC", "7.5")]) {
        return;
    }
    unsafe {
        ok(cuInit(0));
        let (mut major, mut minor, mut optin, mut sms) = (0, 0, 0, 0);
        ok(cuDeviceGetAttribute(&mut major, 75, 0));
        ok(cuDeviceGetAttribute(&mut minor, 76, 0));
        ok(cuDeviceGetAttribute(&mut optin, 97, 0));
        ok(cuDeviceGetAttribute(&mut sms, 16, 0));
        assert_eq!((major, minor, optin, sms), (7, 5, 65536, 40), "a T4's limits and SM count");
        let mut buf = [0 as c_char; 64];
        ok(cuDeviceGetName(buf.as_mut_ptr(), 64, 0));
        assert_eq!(CStr::from_ptr(buf.as_ptr()).to_str().unwrap(), "mp-emu emulator (sm_75)");
    }
}

#[test]
fn sm_count_comes_from_the_environment() {
    if in_child("sm_count_comes_from_the_environment", &[("MP_EMU_CC", "9.0"), ("MP_EMU_SM_COUNT", "1")]) {
        return;
    }
    unsafe {
        ok(cuInit(0));
        let (mut sms, mut threads, mut blocks) = (0, 0, 0);
        ok(cuDeviceGetAttribute(&mut sms, 16, 0));
        ok(cuDeviceGetAttribute(&mut threads, 39, 0));
        ok(cuDeviceGetAttribute(&mut blocks, 106, 0));
        // One SM, and still an sm_90 SM: the per-SM limits do not follow the count.
        assert_eq!((sms, threads, blocks), (1, 2048, 32));
    }
}

#[test]
fn invalid_sm_count_fails_init() {
    if in_child("invalid_sm_count_fails_init", &[("MP_EMU_SM_COUNT", "0")]) {
        return;
    }
    err(unsafe { cuInit(0) }, e::NO_DEVICE);
    let mut n = 0;
    err(unsafe { cuDeviceGetCount(&mut n) }, e::NOT_INITIALIZED);
}

#[test]
fn device_reports_its_attributes() {
    let _rig = Rig::new();
    unsafe {
        let mut dev = -1;
        ok(cuDeviceGet(&mut dev, 0));
        assert_eq!(dev, 0);
        err(cuDeviceGet(&mut dev, 1), e::INVALID_DEVICE);
        let mut buf = [0 as c_char; 64];
        ok(cuDeviceGetName(buf.as_mut_ptr(), 64, 0));
        assert!(CStr::from_ptr(buf.as_ptr()).to_str().unwrap().contains("emulator"));
        // Truncated to the buffer, still NUL-terminated.
        ok(cuDeviceGetName(buf.as_mut_ptr(), 4, 0));
        assert_eq!(CStr::from_ptr(buf.as_ptr()).to_bytes(), b"mp-");
        err(cuDeviceGetName(buf.as_mut_ptr(), 0, 0), e::INVALID_VALUE);
        let mut bytes = 0;
        ok(cuDeviceTotalMem_v2(&mut bytes, 0));
        assert_eq!(bytes, 80 << 30);
        let attr = |a| {
            let mut v = -1;
            ok(cuDeviceGetAttribute(&mut v, a, 0));
            v
        };
        // SMs: the part's at the capability this process runs at, or MP_EMU_SM_COUNT.
        assert_eq!(attr(16) as u32, device::Device::from_env().unwrap().sm_count);
        assert_eq!(attr(1), 1024); // threads per block
        assert_eq!(attr(8), 49152); // shared per block
        assert_eq!(attr(10), 32); // warp size
        assert_eq!(attr(115), 1); // memory pools
        let mut v = 0;
        err(cuDeviceGetAttribute(&mut v, 100_000, 0), e::INVALID_VALUE);
        err(cuDeviceGetAttribute(null_mut(), 16, 0), e::INVALID_VALUE);
        err(cuDeviceGetAttribute(&mut v, 16, 3), e::INVALID_DEVICE);
    }
}

#[test]
fn contexts_are_per_thread_and_refcounted() {
    let rig = Rig::new();
    unsafe {
        let mut again = null_mut();
        ok(cuDevicePrimaryCtxRetain(&mut again, 0));
        assert_eq!(again, rig.ctx, "the primary context has one handle");
        ok(cuDevicePrimaryCtxRelease_v2(0));
        let mut cur = null_mut();
        ok(cuCtxGetCurrent(&mut cur));
        assert_eq!(cur, rig.ctx);
        let mut dev = -1;
        ok(cuCtxGetDevice(&mut dev));
        assert_eq!(dev, 0);
        let (mut flags, mut active) = (9, 9);
        ok(cuDevicePrimaryCtxGetState(0, &mut flags, &mut active));
        assert_eq!(active, 1);

        // Another thread has no current context until it sets one.
        let ctx = rig.ctx as usize;
        std::thread::spawn(move || {
            let mut cur = 1 as P;
            ok(cuCtxGetCurrent(&mut cur));
            assert!(cur.is_null());
            let mut p = 0;
            err(cuMemAlloc_v2(&mut p, 16), e::INVALID_CONTEXT);
            err(cuCtxSynchronize(), e::INVALID_CONTEXT);
            ok(cuCtxSetCurrent(ctx as P));
            ok(cuMemAlloc_v2(&mut p, 16));
            ok(cuMemFree_v2(p));
        })
        .join()
        .unwrap();

        // A created context is pushed, and popped by its destruction.
        let mut mine = null_mut();
        ok(cuCtxCreate_v2(&mut mine, 0, 0));
        ok(cuCtxGetCurrent(&mut cur));
        assert_eq!(cur, mine);
        let p = alloc(64);
        ok(cuCtxDestroy_v2(mine));
        ok(cuCtxGetCurrent(&mut cur));
        assert_eq!(cur, rig.ctx);
        // Its memory went with it.
        err(cuMemFree_v2(p), e::INVALID_VALUE);
        err(cuCtxDestroy_v2(mine), e::INVALID_CONTEXT);
        err(cuCtxDestroy_v2(rig.ctx), e::INVALID_CONTEXT);
        err(cuCtxSetCurrent(0x1234 as P), e::INVALID_CONTEXT);

        ok(cuCtxPushCurrent_v2(rig.ctx));
        let mut popped = null_mut();
        ok(cuCtxPopCurrent_v2(&mut popped));
        assert_eq!(popped, rig.ctx);
        ok(cuCtxSynchronize());
    }
}

#[test]
fn memory_round_trip() {
    let rig = Rig::new();
    let s = rig.stream();
    unsafe {
        let a = alloc(4096);
        let b = alloc(4096);
        let data: Vec<u32> = (0..1024).collect();
        upload(a, &data);
        ok(cuMemcpyDtoD_v2(b, a, 4096));
        assert_eq!(download(b, 1024), data);

        ok(cuMemsetD32Async(b + 16, 0xdead_beef, 4, s));
        ok(cuMemsetD8Async(b, 0xab, 4, s));
        // The legacy stream does not wait for a non-blocking stream: without this the
        // memset and the download below race with the two above (driver::order).
        ok(cuStreamSynchronize(s));
        ok(cuMemsetD16_v2(b + 4, 0x1234, 2));
        let got = download(b, 8);
        assert_eq!(got[..8], [0xabab_abab, 0x1234_1234, 2, 3, 0xdead_beef, 0xdead_beef, 0xdead_beef, 0xdead_beef]);

        let mut c = 0;
        ok(cuMemAllocAsync(&mut c, 4096, s));
        ok(cuMemcpyDtoDAsync_v2(c, a + 8, 16, s));
        let mut host = [0u32; 4];
        ok(cuMemcpyDtoHAsync_v2(host.as_mut_ptr().cast(), c, 16, s));
        ok(cuStreamSynchronize(s));
        assert_eq!(host, [2, 3, 4, 5]);
        ok(cuMemcpyHtoDAsync_v2(c, [9u32, 9].as_ptr().cast(), 8, s));
        ok(cuStreamSynchronize(s));
        assert_eq!(download(c, 3), [9, 9, 4]);

        let (mut free, mut total) = (0, 0);
        ok(cuMemGetInfo_v2(&mut free, &mut total));
        assert_eq!(total, 80 << 30);
        assert!(free <= total - 3 * 4096);

        ok(cuMemFreeAsync(c, s));
        ok(cuMemFree_v2(a));
        ok(cuMemFree_v2(b));
        ok(cuMemFree_v2(0));
        // Zero bytes: refused synchronously, an empty allocation asynchronously.
        let mut z = 0;
        err(cuMemAlloc_v2(&mut z, 0), e::INVALID_VALUE);
        ok(cuMemAllocAsync(&mut z, 0, s));
        assert_ne!(z, 0);
        ok(cuMemFreeAsync(z, s));
        ok(cuStreamDestroy_v2(s));
    }
}

#[test]
fn bad_pointers_sizes_and_handles_are_refused() {
    let rig = Rig::new();
    let s = rig.stream();
    unsafe {
        // Null out-pointers.
        err(cuMemAlloc_v2(null_mut(), 16), e::INVALID_VALUE);
        err(cuStreamCreate(null_mut(), 0), e::INVALID_VALUE);
        err(cuEventCreate(null_mut(), 0), e::INVALID_VALUE);
        err(cuCtxGetCurrent(null_mut()), e::INVALID_VALUE);
        err(cuStreamIsCapturing(s, null_mut()), e::INVALID_VALUE);
        err(cuStreamEndCapture(s, null_mut()), e::INVALID_VALUE);
        err(cuMemcpyHtoD_v2(alloc(4), std::ptr::null(), 4), e::INVALID_VALUE);
        err(cuStreamCreate(&mut null_mut(), 4), e::INVALID_VALUE);

        // Sizes past an allocation, pointers inside none, freed memory.
        let a = alloc(256);
        let host = [0u8; 512];
        err(cuMemcpyHtoD_v2(a, host.as_ptr().cast(), 257), e::INVALID_VALUE);
        err(cuMemcpyHtoD_v2(a + 200, host.as_ptr().cast(), 57), e::INVALID_VALUE);
        err(cuMemsetD8_v2(a + 256, 0, 1), e::INVALID_VALUE);
        err(cuMemsetD32_v2(a + 2, 0, 1), e::INVALID_VALUE);
        err(cuMemcpyDtoD_v2(a, a + 128, 129), e::INVALID_VALUE);
        err(cuMemFree_v2(a + 8), e::INVALID_VALUE);
        err(cuMemFree_v2(12345), e::INVALID_VALUE);
        ok(cuMemFree_v2(a));
        err(cuMemFree_v2(a), e::INVALID_VALUE);
        err(cuMemcpyHtoD_v2(a, host.as_ptr().cast(), 4), e::INVALID_VALUE);
        err(cuMemsetD8Async(a, 0, 4, s), e::INVALID_VALUE);

        // Unknown, destroyed and wrong-kind handles.
        let bogus = 0xdead_0000 as P;
        err(cuStreamSynchronize(bogus), e::INVALID_HANDLE);
        err(cuEventRecord(bogus, s), e::INVALID_HANDLE);
        err(cuEventRecord(s, s), e::INVALID_HANDLE);
        err(cuGraphLaunch(bogus, s), e::INVALID_HANDLE);
        err(cuGraphDestroy(bogus), e::INVALID_HANDLE);
        err(cuModuleUnload(bogus), e::INVALID_HANDLE);
        let mut f = null_mut();
        err(cuModuleGetFunction(&mut f, bogus, c"k".as_ptr()), e::INVALID_HANDLE);
        err(cuLaunchKernel(bogus, 1, 1, 1, 1, 1, 1, 0, s, null_mut(), null_mut()), e::INVALID_HANDLE);
        ok(cuStreamDestroy_v2(s));
        err(cuStreamDestroy_v2(s), e::INVALID_HANDLE);
        err(cuMemsetD8Async(alloc(4), 0, 4, s), e::INVALID_HANDLE);
        err(cuStreamDestroy_v2(null_mut()), e::INVALID_HANDLE);
    }
}

#[test]
fn every_error_code_has_a_name_and_a_string() {
    let codes = [
        0, 1, 2, 3, 4, 100, 101, 200, 201, 209, 218, 300, 400, 401, 500, 600, 700, 701, 715, 716, 800, 801, 900, 901,
        902, 903, 904, 905, 906, 907, 908, 999,
    ];
    unsafe {
        for code in codes {
            let (mut n, mut s) = (std::ptr::null(), std::ptr::null());
            ok(cuGetErrorName(code, &mut n));
            ok(cuGetErrorString(code, &mut s));
            let n = CStr::from_ptr(n).to_str().unwrap();
            assert!(n.starts_with("CUDA_"), "{code}: {n}");
            assert!(!CStr::from_ptr(s).to_bytes().is_empty(), "{code}");
        }
        let mut n = c"x".as_ptr();
        err(cuGetErrorName(12345, &mut n), e::INVALID_VALUE);
        assert!(n.is_null());
        err(cuGetErrorString(0, null_mut()), e::INVALID_VALUE);
    }
    assert_eq!(name(900), Some("CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED"));
    assert_eq!(name(716), Some("CUDA_ERROR_MISALIGNED_ADDRESS"));
}

#[test]
fn events_record_query_and_time() {
    let rig = Rig::new();
    let s = rig.stream();
    unsafe {
        let (mut a, mut b, mut untimed) = (null_mut(), null_mut(), null_mut());
        ok(cuEventCreate(&mut a, 0));
        ok(cuEventCreate(&mut b, 1));
        ok(cuEventCreate(&mut untimed, 2));
        err(cuEventCreate(&mut null_mut(), 4), e::INVALID_VALUE);
        let mut ms = -1.0f32;
        err(cuEventElapsedTime_v2(&mut ms, a, b), e::INVALID_HANDLE); // not recorded yet
        ok(cuEventQuery(a)); // never recorded: complete
        ok(cuEventRecord(a, s));
        ok(cuEventRecord(untimed, s));
        ok(cuEventRecord(b, null_mut()));
        ok(cuEventSynchronize(b));
        // `a` is on a non-blocking stream, which b's legacy stream does not wait for: its
        // first query answers NOT_READY, the next one SUCCESS (driver::stream).
        err(cuEventQuery(a), e::NOT_READY);
        ok(cuEventQuery(a));
        ok(cuEventQuery(b)); // synchronized: complete at once
        ok(cuEventElapsedTime_v2(&mut ms, a, b));
        assert!(ms >= 0.0);
        ok(cuEventElapsedTime(&mut ms, a, b));
        err(cuEventElapsedTime(&mut ms, a, untimed), e::INVALID_HANDLE);
        ok(cuStreamWaitEvent(s, a, 0));
        for ev in [a, b, untimed] {
            ok(cuEventDestroy_v2(ev));
            err(cuEventDestroy_v2(ev), e::INVALID_HANDLE);
        }
        err(cuEventQuery(a), e::INVALID_HANDLE);
    }
}

/// Capture with a memset and a device-to-device copy: nothing runs while capturing, the
/// graph replays both in order, every time it is launched.
#[test]
fn capture_records_memset_and_copy_and_replays_them() {
    let rig = Rig::new();
    let s = rig.stream();
    unsafe {
        let (a, b) = (alloc(64), alloc(64));
        upload(a, &[1; 16]);
        upload(b, &[2; 16]);
        err(cuStreamEndCapture(s, &mut null_mut()), e::ILLEGAL_STATE);
        ok(cuStreamBeginCapture_v2(s, 1));
        assert_eq!(capture_status(s), 1);
        err(cuStreamBeginCapture_v2(s, 1), e::ILLEGAL_STATE);
        let (mut st, mut id) = (0, 0);
        ok(cuStreamGetCaptureInfo(s, &mut st, &mut id));
        assert_eq!(st, 1);
        assert_ne!(id, 0);
        ok(cuMemsetD32Async(a, 7, 16, s));
        ok(cuMemcpyDtoDAsync_v2(b, a, 32, s));
        let mut g = null_mut();
        ok(cuStreamEndCapture(s, &mut g));
        assert!(!g.is_null());
        assert_eq!(capture_status(s), 0);
        // Recorded, not run.
        assert_eq!(download(a, 16), [1; 16]);
        assert_eq!(download(b, 16), [2; 16]);
        let mut n = 0;
        ok(cuGraphGetNodes(g, null_mut(), &mut n));
        assert_eq!(n, 2);

        let mut x = null_mut();
        err(cuGraphInstantiateWithFlags(&mut x, g, 1 | 4), e::INVALID_VALUE);
        err(cuGraphInstantiateWithFlags(&mut x, g, 2), e::INVALID_VALUE);
        ok(cuGraphInstantiateWithFlags(&mut x, g, 0));
        ok(cuGraphUpload(x, s));
        ok(cuGraphLaunch(x, s));
        ok(cuStreamSynchronize(s));
        assert_eq!(download(a, 16), [7; 16]);
        assert_eq!(download(b, 16), [7, 7, 7, 7, 7, 7, 7, 7, 2, 2, 2, 2, 2, 2, 2, 2]);

        upload(a, &[3; 16]);
        upload(b, &[4; 16]);
        ok(cuGraphDestroy(g)); // the exec stays valid
        ok(cuGraphLaunch(x, s));
        ok(cuStreamSynchronize(s));
        assert_eq!(download(b, 8), [7; 8]);
        assert_eq!(download(b + 32, 8), [4; 8]);
        ok(cuGraphExecDestroy(x));
        err(cuGraphExecDestroy(x), e::INVALID_HANDLE);
        err(cuGraphLaunch(x, s), e::INVALID_HANDLE);

        // An empty capture is an empty graph, not a null one.
        ok(cuStreamBeginCapture_v2(s, 0));
        ok(cuStreamEndCapture(s, &mut g));
        ok(cuGraphGetNodes(g, null_mut(), &mut n));
        assert_eq!(n, 0);
        ok(cuGraphDestroy(g));
    }
}

/// Ends a capture that must have been invalidated: STREAM_CAPTURE_INVALIDATED, no graph,
/// and the stream usable again.
fn expect_invalidated(s: P) {
    assert_eq!(capture_status(s), 2);
    let mut g = 1 as P;
    err(unsafe { cuStreamEndCapture(s, &mut g) }, e::STREAM_CAPTURE_INVALIDATED);
    assert!(g.is_null());
    assert_eq!(capture_status(s), 0);
    ok(unsafe { cuStreamSynchronize(s) });
}

#[test]
fn host_synchronization_invalidates_a_capture() {
    let rig = Rig::new();
    let s = rig.stream();
    let a = alloc(64);
    unsafe {
        ok(cuStreamBeginCapture_v2(s, 1));
        ok(cuMemsetD8Async(a, 0, 64, s));
        err(cuStreamSynchronize(s), e::STREAM_CAPTURE_UNSUPPORTED);
        err(cuMemsetD8Async(a, 0, 64, s), e::STREAM_CAPTURE_INVALIDATED);
        expect_invalidated(s);

        ok(cuStreamBeginCapture_v2(s, 1));
        err(cuStreamQuery(s), e::STREAM_CAPTURE_UNSUPPORTED);
        expect_invalidated(s);

        ok(cuStreamBeginCapture_v2(s, 1));
        err(cuCtxSynchronize(), e::STREAM_CAPTURE_UNSUPPORTED);
        expect_invalidated(s);

        // An event recorded in the capture cannot be waited for from the host.
        let mut ev = null_mut();
        ok(cuEventCreate(&mut ev, 0));
        ok(cuStreamBeginCapture_v2(s, 1));
        ok(cuEventRecord(ev, s));
        err(cuEventQuery(ev), e::CAPTURED_EVENT);
        expect_invalidated(s);
        ok(cuEventRecord(ev, s));
        ok(cuEventSynchronize(ev));

        // Host copies: all host memory is pageable here, and pageable copies cannot be captured.
        let mut host = [0u8; 64];
        ok(cuStreamBeginCapture_v2(s, 1));
        err(cuMemcpyDtoHAsync_v2(host.as_mut_ptr().cast(), a, 64, s), e::STREAM_CAPTURE_UNSUPPORTED);
        expect_invalidated(s);
        ok(cuStreamBeginCapture_v2(s, 1));
        err(cuMemcpyHtoDAsync_v2(a, host.as_ptr().cast(), 64, s), e::STREAM_CAPTURE_UNSUPPORTED);
        expect_invalidated(s);
        ok(cuMemFree_v2(a));
    }
}

#[test]
fn allocation_invalidates_a_capture() {
    let rig = Rig::new();
    let s = rig.stream();
    unsafe {
        let mut p = 0;
        ok(cuStreamBeginCapture_v2(s, 1));
        err(cuMemAllocAsync(&mut p, 64, s), e::STREAM_CAPTURE_UNSUPPORTED);
        expect_invalidated(s);

        // Synchronous allocation and free from the capturing thread (thread-local mode).
        ok(cuStreamBeginCapture_v2(s, 1));
        err(cuMemAlloc_v2(&mut p, 64), e::STREAM_CAPTURE_UNSUPPORTED);
        expect_invalidated(s);
        let a = alloc(64);
        ok(cuStreamBeginCapture_v2(s, 0));
        err(cuMemFree_v2(a), e::STREAM_CAPTURE_UNSUPPORTED);
        expect_invalidated(s);

        // Freeing on the capturing stream: not a graph allocation.
        ok(cuStreamBeginCapture_v2(s, 1));
        err(cuMemFreeAsync(a, s), e::INVALID_VALUE);
        let mut g = null_mut();
        ok(cuStreamEndCapture(s, &mut g));
        ok(cuGraphDestroy(g));

        // Relaxed mode allows the "unsafe" calls.
        ok(cuStreamBeginCapture_v2(s, 2));
        ok(cuMemAlloc_v2(&mut p, 64));
        ok(cuMemFree_v2(p));
        ok(cuStreamEndCapture(s, &mut g));
        ok(cuGraphDestroy(g));

        // A GLOBAL capture on another thread forbids them here too; THREAD_LOCAL does not.
        for (mode, forbidden) in [(0u32, true), (1, false)] {
            ok(cuStreamBeginCapture_v2(s, mode));
            let ctx = rig.ctx as usize;
            let r = std::thread::spawn(move || {
                ok(cuCtxSetCurrent(ctx as P));
                let mut p = 0;
                let r = cuMemAlloc_v2(&mut p, 64);
                if r == 0 {
                    ok(cuMemFree_v2(p));
                }
                r
            })
            .join()
            .unwrap();
            if forbidden {
                err(r, e::STREAM_CAPTURE_UNSUPPORTED);
                expect_invalidated(s);
            } else {
                ok(r);
                ok(cuStreamEndCapture(s, &mut g));
                ok(cuGraphDestroy(g));
            }
        }

        // Ending a thread-local capture from another thread is refused; the capture goes on.
        ok(cuStreamBeginCapture_v2(s, 1));
        let (ctx, sh) = (rig.ctx as usize, s as usize);
        let r = std::thread::spawn(move || {
            ok(cuCtxSetCurrent(ctx as P));
            let mut g = null_mut();
            cuStreamEndCapture(sh as P, &mut g)
        })
        .join()
        .unwrap();
        err(r, e::STREAM_CAPTURE_WRONG_THREAD);
        assert_eq!(capture_status(s), 1);
        ok(cuStreamEndCapture(s, &mut g));
        ok(cuGraphDestroy(g));
        ok(cuMemFree_v2(a));
    }
}

#[test]
fn legacy_stream_cannot_capture_or_depend_on_a_blocking_capture() {
    let rig = Rig::new();
    let a = alloc(64);
    unsafe {
        err(cuStreamBeginCapture_v2(null_mut(), 1), e::STREAM_CAPTURE_UNSUPPORTED);
        let mut blocking = null_mut();
        ok(cuStreamCreate(&mut blocking, 0));
        ok(cuStreamBeginCapture_v2(blocking, 1));
        err(cuMemsetD8Async(a, 0, 4, null_mut()), e::STREAM_CAPTURE_IMPLICIT);
        expect_invalidated(blocking);
        // A non-blocking stream's capture does not involve the legacy stream.
        let s = rig.stream();
        ok(cuStreamBeginCapture_v2(s, 1));
        ok(cuMemsetD8Async(a, 0, 4, null_mut()));
        let mut g = null_mut();
        ok(cuStreamEndCapture(s, &mut g));
        ok(cuGraphDestroy(g));
        ok(cuStreamDestroy_v2(blocking));
        ok(cuMemFree_v2(a));
    }
}

#[test]
fn forked_work_must_be_joined_back() {
    let rig = Rig::new();
    let (s, t) = (rig.stream(), rig.stream());
    let a = alloc(64);
    unsafe {
        let (mut fork, mut join) = (null_mut(), null_mut());
        ok(cuEventCreate(&mut fork, 2));
        ok(cuEventCreate(&mut join, 2));
        for joined in [false, true] {
            ok(cuStreamBeginCapture_v2(s, 1));
            ok(cuMemsetD32Async(a, 1, 8, s));
            ok(cuEventRecord(fork, s));
            ok(cuStreamWaitEvent(t, fork, 0));
            assert_eq!(capture_status(t), 1, "t joined the capture");
            ok(cuMemsetD32Async(a + 32, 2, 8, t));
            if joined {
                ok(cuEventRecord(join, t));
                ok(cuStreamWaitEvent(s, join, 0));
            }
            let mut g = null_mut();
            err(cuStreamEndCapture(t, &mut g), e::STREAM_CAPTURE_UNMATCHED);
            // That invalidated the capture; run the sequence again to see the join rule.
            let r = cuStreamEndCapture(s, &mut g);
            err(r, e::STREAM_CAPTURE_INVALIDATED);
            assert_eq!(capture_status(t), 0);

            ok(cuStreamBeginCapture_v2(s, 1));
            ok(cuMemsetD32Async(a, 1, 8, s));
            ok(cuEventRecord(fork, s));
            ok(cuStreamWaitEvent(t, fork, 0));
            ok(cuMemsetD32Async(a + 32, 2, 8, t));
            if joined {
                ok(cuEventRecord(join, t));
                ok(cuStreamWaitEvent(s, join, 0));
                ok(cuStreamEndCapture(s, &mut g));
                let mut n = 0;
                ok(cuGraphGetNodes(g, null_mut(), &mut n));
                assert_eq!(n, 2);
                ok(cuGraphDestroy(g));
            } else {
                err(cuStreamEndCapture(s, &mut g), e::STREAM_CAPTURE_UNJOINED);
                assert!(g.is_null());
            }
            assert_eq!(capture_status(t), 0);
        }
        // Waiting on uncaptured work from a capturing stream crosses the capture boundary.
        ok(cuEventRecord(fork, t));
        ok(cuStreamBeginCapture_v2(s, 1));
        err(cuStreamWaitEvent(s, fork, 0), e::STREAM_CAPTURE_ISOLATION);
        expect_invalidated(s);
        ok(cuMemFree_v2(a));
    }
}

// ---- kernel launches: these need the PTX front end and the executor ----

/// Targets sm_75 so the tests run at every `MP_EMU_CC`.
const PTX: &str = "
.version 7.8
.target sm_75
.address_size 64

// y[i] += x[i] for i < n
.visible .entry axpy(
	.param .u64 axpy_param_0,
	.param .u64 axpy_param_1,
	.param .u32 axpy_param_2
)
{
	.reg .pred 	%p<2>;
	.reg .b32 	%r<6>;
	.reg .f32 	%f<4>;
	.reg .b64 	%rd<8>;

	ld.param.u64 	%rd1, [axpy_param_0];
	ld.param.u64 	%rd2, [axpy_param_1];
	ld.param.u32 	%r2, [axpy_param_2];
	mov.u32 	%r3, %ctaid.x;
	mov.u32 	%r4, %ntid.x;
	mov.u32 	%r5, %tid.x;
	mad.lo.s32 	%r1, %r3, %r4, %r5;
	setp.ge.u32 	%p1, %r1, %r2;
	@%p1 bra 	$L__BB0_2;
	cvta.to.global.u64 	%rd3, %rd1;
	mul.wide.u32 	%rd4, %r1, 4;
	add.s64 	%rd5, %rd3, %rd4;
	ld.global.f32 	%f1, [%rd5];
	cvta.to.global.u64 	%rd6, %rd2;
	add.s64 	%rd7, %rd6, %rd4;
	ld.global.f32 	%f2, [%rd7];
	add.f32 	%f3, %f1, %f2;
	st.global.f32 	[%rd7], %f3;
$L__BB0_2:
	ret;
}

// y[i] = 1.0 for every thread, no bounds check
.visible .entry fill_unchecked(
	.param .u64 fill_unchecked_param_0
)
.maxntid 256, 1, 1
{
	.reg .b32 	%r<4>;
	.reg .f32 	%f<2>;
	.reg .b64 	%rd<5>;

	ld.param.u64 	%rd1, [fill_unchecked_param_0];
	cvta.to.global.u64 	%rd2, %rd1;
	mov.u32 	%r1, %ctaid.x;
	mov.u32 	%r2, %ntid.x;
	mov.u32 	%r3, %tid.x;
	mad.lo.s32 	%r1, %r1, %r2, %r3;
	mul.wide.u32 	%rd3, %r1, 4;
	add.s64 	%rd4, %rd2, %rd3;
	mov.f32 	%f1, 0f3F800000;
	st.global.f32 	[%rd4], %f1;
	ret;
}
";

fn load(ptx: &str) -> Result<P, u32> {
    let text = CString::new(ptx).unwrap();
    let mut m = null_mut();
    match unsafe { cuModuleLoadData(&mut m, text.as_ptr().cast()) } {
        0 => Ok(m),
        r => Err(r),
    }
}

fn function(m: P, name: &str) -> P {
    let name = CString::new(name).unwrap();
    let mut f = null_mut();
    ok(unsafe { cuModuleGetFunction(&mut f, m, name.as_ptr()) });
    f
}

/// As [`upload`], into a new allocation.
fn upload_f32(data: &[f32]) -> u64 {
    let p = alloc(std::mem::size_of_val(data));
    ok(unsafe { cuMemcpyHtoD_v2(p, data.as_ptr().cast(), std::mem::size_of_val(data)) });
    ok(unsafe { cuStreamSynchronize(null_mut()) });
    p
}

fn download_f32(src: u64, n: usize) -> Vec<f32> {
    let mut v = vec![0f32; n];
    ok(unsafe { cuMemcpyDtoH_v2(v.as_mut_ptr().cast(), src, n * 4) });
    v
}

/// Launches axpy over `n` elements with kernelParams.
unsafe fn axpy(f: P, s: P, x: u64, y: u64, n: u32) -> u32 {
    let (mut x, mut y, mut n2) = (x, y, n);
    let mut args = [(&mut x as *mut u64).cast::<c_void>(), (&mut y as *mut u64).cast(), (&mut n2 as *mut u32).cast()];
    cuLaunchKernel(f, n.div_ceil(128), 1, 1, 128, 1, 1, 0, s, args.as_mut_ptr(), null_mut())
}

#[test]
fn module_load_errors() {
    let rig = Rig::new();
    let _ = &rig;
    err(load("this is not PTX").unwrap_err(), e::INVALID_PTX);
    // Above every compute capability the emulator offers.
    let sm100 = PTX.replace(".target sm_75", ".target sm_100");
    err(load(&sm100).unwrap_err(), e::NO_BINARY_FOR_GPU);
    unsafe {
        let mut m = null_mut();
        err(cuModuleLoadData(&mut m, std::ptr::null()), e::INVALID_VALUE);
        err(cuModuleLoadData(&mut m, c"\x7fELF\x02\x01\x01".as_ptr().cast()), e::INVALID_IMAGE);
        err(cuModuleLoadData(&mut m, c"".as_ptr().cast()), e::INVALID_PTX);
    }
}

#[test]
fn launch_runs_a_kernel() {
    let rig = Rig::new();
    let s = rig.stream();
    let m = load(PTX).expect("the test PTX loads");
    let f = function(m, "axpy");
    assert_eq!(function(m, "axpy"), f, "one handle per function");
    let mut g = null_mut();
    err(unsafe { cuModuleGetFunction(&mut g, m, c"nope".as_ptr()) }, e::NOT_FOUND);
    let n = 1000;
    let xs: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let x = upload_f32(&xs);
    let y = upload_f32(&vec![0.5; n]);
    unsafe {
        ok(axpy(f, s, x, y, n as u32));
        ok(cuStreamSynchronize(s));
    }
    let want: Vec<f32> = xs.iter().map(|v| v + 0.5).collect();
    assert_eq!(download_f32(y, n), want);

    // The same parameters through `extra`, packed as the kernel lays them out.
    let mut buf = [0u8; 20];
    buf[..8].copy_from_slice(&x.to_le_bytes());
    buf[8..16].copy_from_slice(&y.to_le_bytes());
    buf[16..].copy_from_slice(&(n as u32).to_le_bytes());
    let size = std::cell::Cell::new(buf.len());
    let mut extra = [1 as P, buf.as_mut_ptr().cast(), 2 as P, size.as_ptr().cast(), null_mut()];
    unsafe {
        ok(cuLaunchKernel(f, 8, 1, 1, 128, 1, 1, 0, s, null_mut(), extra.as_mut_ptr()));
        ok(cuStreamSynchronize(s));
    }
    let want: Vec<f32> = xs.iter().map(|v| 2.0 * v + 0.5).collect();
    assert_eq!(download_f32(y, n), want);
    size.set(16);
    err(unsafe { cuLaunchKernel(f, 8, 1, 1, 128, 1, 1, 0, s, null_mut(), extra.as_mut_ptr()) }, e::INVALID_VALUE);
    ok(unsafe { cuModuleUnload(m) });
    err(unsafe { axpy(f, s, x, y, n as u32) }, e::INVALID_HANDLE);
}

#[test]
fn launch_configuration_is_checked() {
    let rig = Rig::new();
    let s = rig.stream();
    let m = load(PTX).expect("the test PTX loads");
    let (f, fill) = (function(m, "axpy"), function(m, "fill_unchecked"));
    let y = alloc(4096);
    let mut p = y;
    let mut args = [(&mut p as *mut u64).cast::<c_void>()];
    unsafe {
        let launch = |grid: u32, block: [u32; 3], shared: u32, args: *mut P| {
            cuLaunchKernel(fill, grid, 1, 1, block[0], block[1], block[2], shared, s, args, null_mut())
        };
        err(launch(0, [32, 1, 1], 0, args.as_mut_ptr()), e::INVALID_VALUE);
        err(launch(1, [0, 1, 1], 0, args.as_mut_ptr()), e::INVALID_VALUE);
        err(launch(1, [1024, 2, 1], 0, args.as_mut_ptr()), e::INVALID_VALUE);
        err(launch(1, [512, 1, 1], 0, args.as_mut_ptr()), e::LAUNCH_OUT_OF_RESOURCES); // .maxntid 256
        err(launch(1, [32, 1, 1], 49153, args.as_mut_ptr()), e::INVALID_VALUE);
        err(launch(1, [32, 1, 1], 0, null_mut()), e::INVALID_VALUE); // parameters missing
        let mut v = 0;
        ok(cuFuncGetAttribute(&mut v, 8, fill));
        assert_eq!(v, 49152);
        ok(cuFuncSetAttribute(fill, 8, 60_000)); // under every capability's opt-in maximum
        err(cuFuncSetAttribute(fill, 8, 1 << 20), e::INVALID_VALUE);
        ok(cuFuncGetAttribute(&mut v, 0, fill));
        assert_eq!(v, 256);
        err(cuFuncGetAttribute(&mut v, 0, f.cast::<u8>().add(1).cast()), e::INVALID_HANDLE);
        // Nothing above ran: y is still uninitialized (all-ones bytes).
        assert_eq!(download(y, 4), [u32::MAX; 4]);
        // Opted in to 60000 bytes above: 50000 of dynamic shared memory now launches and
        // runs (the executor once re-checked against the default 48 KiB and refused it).
        ok(launch(1, [32, 1, 1], 50_000, args.as_mut_ptr()));
        ok(cuStreamSynchronize(s));
        assert_ne!(download(y, 4), [u32::MAX; 4], "the opted-in launch ran");
        err(launch(1, [32, 1, 1], 60_001, args.as_mut_ptr()), e::INVALID_VALUE);
        ok(cuModuleUnload(m));
    }
}

/// A captured launch copies its parameters at record time and runs only on replay.
#[test]
fn captured_launch_replays_with_recorded_parameters() {
    let rig = Rig::new();
    let s = rig.stream();
    let m = load(PTX).expect("the test PTX loads");
    let f = function(m, "axpy");
    let x = upload_f32(&[1.0; 256]);
    let y = upload_f32(&[0.0; 256]);
    let other = upload_f32(&[0.0; 256]);
    unsafe {
        ok(cuStreamBeginCapture_v2(s, 1));
        {
            let (mut xp, mut yp, mut n) = (x, y, 256u32);
            let mut args =
                [(&mut xp as *mut u64).cast::<c_void>(), (&mut yp as *mut u64).cast(), (&mut n as *mut u32).cast()];
            ok(cuLaunchKernel(f, 2, 1, 1, 128, 1, 1, 0, s, args.as_mut_ptr(), null_mut()));
            // Changing the argument after the call must not change the recorded launch.
            yp = other;
            let _ = yp;
        }
        let mut g = null_mut();
        ok(cuStreamEndCapture(s, &mut g));
        assert_eq!(download_f32(y, 4), [0.0; 4], "captured, not run");
        let mut exec = null_mut();
        ok(cuGraphInstantiateWithFlags(&mut exec, g, 0));
        ok(cuGraphLaunch(exec, s));
        ok(cuGraphLaunch(exec, s));
        ok(cuStreamSynchronize(s));
        assert_eq!(download_f32(y, 256), vec![2.0; 256]);
        assert_eq!(download_f32(other, 4), [0.0; 4]);
        ok(cuGraphExecDestroy(exec));
        ok(cuGraphDestroy(g));
        ok(cuModuleUnload(m));
    }
}

/// With `MP_EMU_FAULTS=launch` (the diagnostic mode) an out-of-bounds write fails the
/// launch itself with ILLEGAL_ADDRESS and leaves the context unusable: every later call on
/// it returns the same error. Run in a created context so the primary context other tests
/// use stays healthy.
#[test]
fn a_kernel_fault_is_sticky() {
    let rig = Rig::new();
    let _set = Settings::set(Some(Faults::Launch), None);
    unsafe {
        let mut ctx = null_mut();
        ok(cuCtxCreate_v2(&mut ctx, 0, 0));
        let s = rig.stream();
        let m = load(PTX).expect("the test PTX loads");
        let fill = function(m, "fill_unchecked");
        let mut y = alloc(1000 * 4);
        let mut args = [(&mut y as *mut u64).cast::<c_void>()];
        ok(cuLaunchKernel(fill, 3, 1, 1, 250, 1, 1, 0, s, args.as_mut_ptr(), null_mut()));
        err(cuLaunchKernel(fill, 4, 1, 1, 256, 1, 1, 0, s, args.as_mut_ptr(), null_mut()), e::ILLEGAL_ADDRESS);
        err(cuStreamSynchronize(s), e::ILLEGAL_ADDRESS);
        let mut p = 0;
        err(cuMemAlloc_v2(&mut p, 4), e::ILLEGAL_ADDRESS);
        err(cuCtxSynchronize(), e::ILLEGAL_ADDRESS);
        ok(cuCtxDestroy_v2(ctx));
        // The primary context is unaffected.
        let mut cur = null_mut();
        ok(cuCtxGetCurrent(&mut cur));
        assert_eq!(cur, rig.ctx);
        ok(cuCtxSynchronize());
    }
}

/// A graph whose memset target was freed after capture faults on replay as a GPU would:
/// at the next synchronization (the default), or at cuGraphLaunch with
/// `MP_EMU_FAULTS=launch`.
#[test]
fn replaying_onto_freed_memory_faults() {
    let _rig = Rig::new();
    for mode in [Faults::Sync, Faults::Launch] {
        let _set = Settings::set(Some(mode), None);
        unsafe {
            let mut ctx = null_mut();
            ok(cuCtxCreate_v2(&mut ctx, 0, 0));
            let mut s = null_mut();
            ok(cuStreamCreate(&mut s, 1));
            let a = alloc(64);
            ok(cuStreamBeginCapture_v2(s, 1));
            ok(cuMemsetD8Async(a, 0, 64, s));
            let (mut g, mut x) = (null_mut(), null_mut());
            ok(cuStreamEndCapture(s, &mut g));
            ok(cuGraphInstantiateWithFlags(&mut x, g, 0));
            ok(cuGraphLaunch(x, s));
            ok(cuMemFree_v2(a));
            if mode == Faults::Sync {
                ok(cuGraphLaunch(x, s));
            } else {
                err(cuGraphLaunch(x, s), e::ILLEGAL_ADDRESS);
            }
            err(cuStreamSynchronize(s), e::ILLEGAL_ADDRESS);
            ok(cuCtxDestroy_v2(ctx));
        }
    }
}

/// `cuMemcpyHtoD` from pageable memory may return before its DMA lands, and a
/// CU_STREAM_NON_BLOCKING stream does not wait for the legacy stream the copy runs on: a
/// kernel launched there right after the call may see the old bytes, and on the emulator
/// it does. Anything that orders the copy first makes the kernel see the new bytes: an
/// operation on the legacy stream or on a blocking stream, cuStreamSynchronize of the
/// legacy stream, cuCtxSynchronize; a copy on the kernel's own stream needs nothing.
///
/// Without `MP_EMU_STRICT` (set off here) the kernel that reads the stale bytes is only
/// reported; `unordered_copies_fail_the_work_under_strict` shows the strict side.
#[test]
fn legacy_stream_copies_reach_a_non_blocking_stream_only_when_ordered() {
    let rig = Rig::new();
    let _set = Settings::set(None, Some(false));
    let s = rig.stream();
    let mut blocking = null_mut();
    ok(unsafe { cuStreamCreate(&mut blocking, 0) });
    let m = load(PTX).expect("the test PTX loads");
    let f = function(m, "axpy");
    let n = 256;
    let (x, y, scratch) = (alloc(n * 4), alloc(n * 4), alloc(4));
    let (ones, twos) = (vec![1.0f32; n], vec![2.0f32; n]);
    // y = x + y on the non-blocking stream after uploading x = 1 and y = 2 over zeros,
    // with `order` called in between; returns y as the kernel left it, read on its stream.
    let run = |order: &dyn Fn()| -> Vec<f32> {
        unsafe {
            ok(cuMemsetD32Async(x, 0, n, s));
            ok(cuMemsetD32Async(y, 0, n, s));
            ok(cuStreamSynchronize(s));
            ok(cuMemcpyHtoD_v2(x, ones.as_ptr().cast(), n * 4));
            ok(cuMemcpyHtoD_v2(y, twos.as_ptr().cast(), n * 4));
            order();
            ok(axpy(f, s, x, y, n as u32));
            let mut got = vec![0f32; n];
            ok(cuMemcpyDtoHAsync_v2(got.as_mut_ptr().cast(), y, n * 4, s));
            ok(cuStreamSynchronize(s));
            ok(cuCtxSynchronize()); // every copy landed before the next round
            got
        }
    };
    // Unordered: the kernel computed 0 + 0 from the old bytes.
    assert_eq!(run(&|| {}), vec![0.0; n], "the kernel must not see unordered legacy-stream copies");
    // The copies landed later (the synchronous download orders them), over the kernel's
    // result: the other outcome a GPU may give.
    assert_eq!(download_f32(y, n), twos);
    // A non-blocking stream's own synchronization does not order the legacy stream.
    assert_eq!(run(&|| ok(unsafe { cuStreamSynchronize(s) })), vec![0.0; n]);
    let ordered: [(&str, &dyn Fn()); 5] = [
        ("cuCtxSynchronize", &|| ok(unsafe { cuCtxSynchronize() })),
        ("cuStreamSynchronize(legacy)", &|| ok(unsafe { cuStreamSynchronize(null_mut()) })),
        // Polled: the first query after new work answers NOT_READY (driver::stream).
        ("cuStreamQuery(CU_STREAM_LEGACY)", &|| while unsafe { cuStreamQuery(1 as P) } == e::NOT_READY {}),
        ("a memset on the legacy stream", &|| ok(unsafe { cuMemsetD8_v2(scratch, 0, 4) })),
        ("a memset on a blocking stream", &|| ok(unsafe { cuMemsetD8Async(scratch, 0, 4, blocking) })),
    ];
    for (what, order) in ordered {
        assert_eq!(run(order), vec![3.0; n], "ordered by {what}");
    }
    // An event recorded on the legacy stream and waited on by the kernel's stream.
    let mut ev = null_mut();
    ok(unsafe { cuEventCreate(&mut ev, 2) });
    let joined = run(&|| unsafe {
        ok(cuEventRecord(ev, null_mut()));
        ok(cuStreamWaitEvent(s, ev, 0));
    });
    assert_eq!(joined, vec![3.0; n], "ordered by an event");
    // Copies on the kernel's own stream are ordered by the stream.
    unsafe {
        ok(cuMemcpyHtoDAsync_v2(x, ones.as_ptr().cast(), n * 4, s));
        ok(cuMemcpyHtoDAsync_v2(y, twos.as_ptr().cast(), n * 4, s));
        ok(axpy(f, s, x, y, n as u32));
        ok(cuStreamSynchronize(s));
    }
    assert_eq!(download_f32(y, n), vec![3.0; n]);
    // A copy still pending when its memory is freed lands first (no write to freed
    // memory); one pending when its context is destroyed is dropped with the context.
    unsafe {
        ok(cuMemcpyHtoD_v2(x, ones.as_ptr().cast(), n * 4));
        ok(cuMemFree_v2(x));
        let mut ctx = null_mut();
        ok(cuCtxCreate_v2(&mut ctx, 0, 0));
        let z = alloc(16);
        ok(cuMemcpyHtoD_v2(z, ones.as_ptr().cast(), 16));
        ok(cuCtxDestroy_v2(ctx));
        ok(cuMemFree_v2(y));
        ok(cuMemFree_v2(scratch));
        ok(cuEventDestroy_v2(ev));
        ok(cuStreamDestroy_v2(blocking));
        ok(cuModuleUnload(m));
    }
}

// ---- when faults are reported (MP_EMU_FAULTS) and strict findings (MP_EMU_STRICT) ----

/// A created context, current, whose device work has faulted: `fill` (fill_unchecked)
/// launched on `s` over 1024 threads into `y`, 1000 floats. `ev` is an event, `m` the
/// module.
struct Faulted {
    ctx: P,
    s: P,
    m: P,
    fill: P,
    ev: P,
    y: u64,
}

/// The launch that faults, in a new context; the launch's own result is returned with it.
unsafe fn faulted_context() -> (Faulted, u32) {
    let mut ctx = null_mut();
    ok(cuCtxCreate_v2(&mut ctx, 0, 0));
    let mut s = null_mut();
    ok(cuStreamCreate(&mut s, 1));
    let m = load(PTX).expect("the test PTX loads");
    let fill = function(m, "fill_unchecked");
    let mut ev = null_mut();
    ok(cuEventCreate(&mut ev, 0));
    let y = alloc(1000 * 4);
    let mut arg = y;
    let mut args = [(&mut arg as *mut u64).cast::<c_void>()];
    let r = cuLaunchKernel(fill, 4, 1, 1, 256, 1, 1, 0, s, args.as_mut_ptr(), null_mut());
    (Faulted { ctx, s, m, fill, ev, y }, r)
}

/// On a GPU a kernel runs after its launch returned, so its fault cannot be the launch's
/// result: cuLaunchKernel returns CUDA_SUCCESS, calls that do not wait for the device go on
/// succeeding (the work they issue does not run), and the next call that waits for the
/// device returns the fault, which is sticky from then on. Each waiting call in turn, in
/// a context of its own. Errors found before the kernel runs are still the launch's own,
/// and not sticky. (Before, the launch itself returned the fault.)
#[test]
fn a_kernel_fault_is_reported_at_the_next_synchronizing_call() {
    let rig = Rig::new();
    let _set = Settings::set(Some(Faults::Sync), Some(false));
    unsafe {
        // Checked before anything runs: the launch fails, nothing is kept for later.
        let s = rig.stream();
        let m = load(PTX).expect("the test PTX loads");
        let fill = function(m, "fill_unchecked");
        let mut y = alloc(64);
        let mut args = [(&mut y as *mut u64).cast::<c_void>()];
        err(cuLaunchKernel(fill, 1, 1, 1, 512, 1, 1, 0, s, args.as_mut_ptr(), null_mut()), e::LAUNCH_OUT_OF_RESOURCES);
        err(cuLaunchKernel(fill, 0, 1, 1, 16, 1, 1, 0, s, args.as_mut_ptr(), null_mut()), e::INVALID_VALUE);
        ok(cuCtxSynchronize());
        ok(cuMemFree_v2(y));
        ok(cuModuleUnload(m));
    }
    let mut host = [0u32; 4];
    let h = host.as_mut_ptr().cast::<c_void>();
    type Wait<'a> = &'a dyn Fn(&Faulted) -> u32;
    let waits: [(&str, Wait); 12] = [
        ("cuCtxSynchronize", &|_| unsafe { cuCtxSynchronize() }),
        ("cuStreamSynchronize", &|f| unsafe { cuStreamSynchronize(f.s) }),
        ("cuStreamSynchronize of the legacy stream", &|_| unsafe { cuStreamSynchronize(null_mut()) }),
        ("cuStreamQuery", &|f| unsafe { cuStreamQuery(f.s) }),
        ("cuEventSynchronize", &|f| unsafe { cuEventSynchronize(f.ev) }),
        ("cuEventQuery", &|f| unsafe { cuEventQuery(f.ev) }),
        ("cuMemcpyDtoH", &|f| unsafe { cuMemcpyDtoH_v2(h, f.y, 16) }),
        ("cuMemcpyDtoHAsync", &|f| unsafe { cuMemcpyDtoHAsync_v2(h, f.y, 16, f.s) }),
        ("cuMemcpyHtoD", &|f| unsafe { cuMemcpyHtoD_v2(f.y, h, 16) }),
        ("cuMemFree", &|f| unsafe { cuMemFree_v2(f.y) }),
        ("cuModuleUnload", &|f| unsafe { cuModuleUnload(f.m) }),
        ("cuEventElapsedTime", &|f| unsafe {
            let mut ms = 0.0;
            cuEventElapsedTime(&mut ms, f.ev, f.ev)
        }),
    ];
    for (call, wait) in waits {
        unsafe {
            let (f, launched) = faulted_context();
            assert_eq!(launched, 0, "the faulting launch returned {}", name(launched).unwrap_or("?"));
            // Calls that do not wait for the device succeed.
            let mut p = 0;
            ok(cuMemAlloc_v2(&mut p, 16));
            ok(cuMemsetD32Async(p, 7, 4, f.s));
            ok(cuMemsetD32_v2(p, 7, 4));
            ok(cuMemcpyDtoD_v2(p, f.y, 16));
            ok(cuMemcpyHtoDAsync_v2(p, h, 16, f.s));
            let mut arg = p;
            let mut args = [(&mut arg as *mut u64).cast::<c_void>()];
            ok(cuLaunchKernel(f.fill, 1, 1, 1, 4, 1, 1, 0, f.s, args.as_mut_ptr(), null_mut()));
            ok(cuEventRecord(f.ev, f.s));
            let r = wait(&f);
            assert_eq!(r, e::ILLEGAL_ADDRESS, "{call} returned {}, not the fault", name(r).unwrap_or("?"));
            // Sticky from then on.
            err(cuMemAlloc_v2(&mut p, 16), e::ILLEGAL_ADDRESS);
            err(cuLaunchKernel(f.fill, 1, 1, 1, 4, 1, 1, 0, f.s, args.as_mut_ptr(), null_mut()), e::ILLEGAL_ADDRESS);
            err(cuCtxSynchronize(), e::ILLEGAL_ADDRESS);
            err(cuStreamQuery(f.s), e::ILLEGAL_ADDRESS);
            ok(cuCtxDestroy_v2(f.ctx));
            // The context is the unit: the primary context is unaffected.
            ok(cuCtxSynchronize());
        }
    }
}

/// `MP_EMU_FAULTS` from the environment: unset is `sync` (the report goes to stderr when
/// the kernel faults, and the call that returns the fault later says so); `launch` makes
/// the launch return it.
#[test]
fn fault_reporting_comes_from_the_environment() {
    let test = "fault_reporting_comes_from_the_environment";
    if let Some(stderr) = child(test, &[]) {
        let at = |what: &str| stderr.find(what).unwrap_or_else(|| panic!("no `{what}` in:\n{stderr}"));
        let report = at("mp-emu: kernel fill_unchecked: CUDA_ERROR_ILLEGAL_ADDRESS");
        let launched = at("test: the launch returned CUDA_SUCCESS");
        let returned = at("mp-emu: cuCtxSynchronize returns CUDA_ERROR_ILLEGAL_ADDRESS from kernel fill_unchecked");
        assert!(report < launched && launched < returned, "{stderr}");
        let stderr = child(test, &[(faults::FAULTS_VAR, "launch")]).unwrap_or_default();
        assert!(stderr.contains("test: the launch returned CUDA_ERROR_ILLEGAL_ADDRESS"), "{stderr}");
        return;
    }
    let _rig = Rig::new();
    unsafe {
        let (f, r) = faulted_context();
        eprintln!("test: the launch returned {}", name(r).unwrap_or("?"));
        err(cuCtxSynchronize(), e::ILLEGAL_ADDRESS);
        ok(cuCtxDestroy_v2(f.ctx));
    }
}

/// A misspelt `MP_EMU_FAULTS` or `MP_EMU_STRICT` fails cuInit, as a misspelt `MP_EMU_CC`
/// does, rather than silently running the default.
#[test]
fn invalid_fault_settings_fail_init() {
    let test = "invalid_fault_settings_fail_init";
    if in_child(test, &[(faults::FAULTS_VAR, "later")]) && in_child(test, &[(faults::STRICT_VAR, "yes")]) {
        return;
    }
    err(unsafe { cuInit(0) }, e::NO_DEVICE);
}

/// `MP_EMU_STRICT=1` turns the finding that work on a non-blocking stream uses memory a
/// legacy-stream host-to-device copy has not landed in yet (a kernel given it, a
/// device-to-device or device-to-host copy from it) from a line on stderr into a fault of
/// that work: CUDA_ERROR_LAUNCH_FAILED, sticky, reported as `MP_EMU_FAULTS` says (the
/// device-to-host copy waits for itself, so it returns it in both modes). Without it the
/// same calls succeed and the work runs on the old bytes
/// (`legacy_stream_copies_reach_a_non_blocking_stream_only_when_ordered`). Before, every
/// call here succeeded whatever the setting.
#[test]
fn unordered_copies_fail_the_work_under_strict() {
    let _rig = Rig::new();
    const N: usize = 256;
    let ones = [1.0f32; N];
    // In a new context: x and y zeroed, then uploaded with cuMemcpyHtoD (pending on the
    // legacy stream), then `work` on a non-blocking stream; its result and cuStreamSynchronize's.
    let run = |work: &dyn Fn(P, P, u64, u64) -> u32| -> (u32, u32) {
        unsafe {
            let mut ctx = null_mut();
            ok(cuCtxCreate_v2(&mut ctx, 0, 0));
            let mut s = null_mut();
            ok(cuStreamCreate(&mut s, 1));
            let m = load(PTX).expect("the test PTX loads");
            let f = function(m, "axpy");
            let (x, y) = (alloc(N * 4), alloc(N * 4));
            // Written once (initcheck would fault a read of the fresh allocations).
            ok(cuMemsetD32Async(x, 0, N, s));
            ok(cuMemsetD32Async(y, 0, N, s));
            ok(cuStreamSynchronize(s));
            ok(cuMemcpyHtoD_v2(x, ones.as_ptr().cast(), N * 4));
            ok(cuMemcpyHtoD_v2(y, ones.as_ptr().cast(), N * 4));
            let r = work(f, s, x, y);
            let synced = cuStreamSynchronize(s);
            ok(cuCtxDestroy_v2(ctx));
            (r, synced)
        }
    };
    let kernel: &dyn Fn(P, P, u64, u64) -> u32 = &|f, s, x, y| unsafe { axpy(f, s, x, y, N as u32) };
    let dtod: &dyn Fn(P, P, u64, u64) -> u32 = &|_, s, x, y| unsafe { cuMemcpyDtoDAsync_v2(y, x, N * 4, s) };
    let dtoh: &dyn Fn(P, P, u64, u64) -> u32 = &|_, s, x, _| unsafe {
        let mut v = [0f32; N];
        cuMemcpyDtoHAsync_v2(v.as_mut_ptr().cast(), x, N * 4, s)
    };
    let ordered: &dyn Fn(P, P, u64, u64) -> u32 = &|f, s, x, y| unsafe {
        ok(cuStreamSynchronize(null_mut()));
        axpy(f, s, x, y, N as u32)
    };
    let failed = e::LAUNCH_FAILED;
    // (what, mode, strict, (the call's result, cuStreamSynchronize's) for each work).
    type Case = (&'static str, Faults, bool, [(u32, u32); 4]);
    let cases: [Case; 4] = [
        ("not strict", Faults::Sync, false, [(0, 0); 4]),
        ("not strict, launch mode", Faults::Launch, false, [(0, 0); 4]),
        ("strict", Faults::Sync, true, [(0, failed), (0, failed), (failed, failed), (0, 0)]),
        ("strict, launch mode", Faults::Launch, true, [(failed, failed), (failed, failed), (failed, failed), (0, 0)]),
    ];
    for (what, mode, strict, want) in cases {
        let _set = Settings::set(Some(mode), Some(strict));
        let got = [run(kernel), run(dtod), run(dtoh), run(ordered)];
        assert_eq!(got, want, "{what}: (call, cuStreamSynchronize) for a kernel, a device-to-device copy, a device-to-host copy, ordered work");
    }
}

// ---- the driver version and the PTX ISA versions it loads ----

/// The vendored PTX of the crate (ISA 9.0, what CUDA 13.0's nvcc writes).
fn vendored_cast_ptx() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../cuda/ptx/cast.sm_75.ptx")).unwrap()
}

/// Sets the emulated driver version for the rest of a test and back to the default
/// (the environment's) when dropped, failing or not.
struct DriverVersion;

impl DriverVersion {
    fn set(v: i32) -> DriverVersion {
        mp_emu::driver::device::set_driver_version(Some(v)).unwrap();
        DriverVersion
    }
}

impl Drop for DriverVersion {
    fn drop(&mut self) {
        mp_emu::driver::device::set_driver_version(None).unwrap();
    }
}

fn driver_version() -> i32 {
    let mut v = 0;
    ok(unsafe { cuDriverGetVersion(&mut v) });
    v
}

/// A driver JIT-compiles PTX up to the ISA version its CUDA release introduced (PTX ISA
/// release history: 9.0 with CUDA 13.0, 8.7 with 12.8) and refuses a newer `.version`
/// with UNSUPPORTED_PTX_VERSION, as a machine whose driver is older than the toolkit that
/// wrote the PTX does. Before, the emulator loaded any `.version`.
#[test]
fn ptx_newer_than_the_driver_is_refused() {
    let _rig = Rig::new();
    let cast = vendored_cast_ptx();
    assert!(cast.contains("\n.version 9.0\n"), "cast.sm_75.ptx is expected to be ISA 9.0");
    let cast87 = cast.replace("\n.version 9.0\n", "\n.version 8.7\n");
    {
        let _v = DriverVersion::set(13000);
        assert_eq!(driver_version(), 13000);
        let m = load(&cast).expect("ISA 9.0 loads at CUDA 13.0");
        ok(unsafe { cuModuleUnload(m) });
    }
    {
        let _v = DriverVersion::set(12080);
        assert_eq!(driver_version(), 12080);
        err(load(&cast).unwrap_err(), e::UNSUPPORTED_PTX_VERSION);
        let m = load(&cast87).expect("ISA 8.7 loads at CUDA 12.8");
        ok(unsafe { cuModuleUnload(m) });
        // cuModuleLoadDataEx answers the same.
        let text = CString::new(cast.as_str()).unwrap();
        let mut m = null_mut();
        let r = unsafe { cuModuleLoadDataEx(&mut m, text.as_ptr().cast(), 0, null_mut(), null_mut()) };
        err(r, e::UNSUPPORTED_PTX_VERSION);
        // The version is checked before the rest is parsed: a newer ISA may bring syntax
        // the emulator does not know, and the driver's answer is still the version.
        err(
            load(&PTX.replace(".version 7.8", ".version 8.8").replace("ret;", "newfangled.op;")).unwrap_err(),
            e::UNSUPPORTED_PTX_VERSION,
        );
        // CUDA 12.6 introduced no ISA version: it loads 8.5, not 8.6.
        let _v = DriverVersion::set(12060);
        assert!(load(&PTX.replace(".version 7.8", ".version 8.5")).is_ok());
        err(load(&PTX.replace(".version 7.8", ".version 8.6")).unwrap_err(), e::UNSUPPORTED_PTX_VERSION);
    }
    // Newer than any driver the emulator poses as.
    err(load(&PTX.replace(".version 7.8", ".version 9.9")).unwrap_err(), e::UNSUPPORTED_PTX_VERSION);
    // A module must begin with `.version`.
    err(load(&PTX.replace(".version 7.8", "")).unwrap_err(), e::INVALID_PTX);
    err(load(&PTX.replace(".version 7.8", ".version 7")).unwrap_err(), e::INVALID_PTX);
    // Unknown versions are refused by the setter.
    assert!(mp_emu::driver::device::set_driver_version(Some(12345)).is_err());
}

/// The refusal names both versions.
#[test]
fn the_ptx_version_message_names_both_versions() {
    let why = mp_emu::driver::device::check_ptx_version((9, 0), 12080).unwrap_err();
    assert!(why.contains("9.0") && why.contains("12.8") && why.contains("8.7"), "{why}");
    assert!(mp_emu::driver::device::check_ptx_version((8, 7), 12080).is_ok());
}

#[test]
fn driver_version_comes_from_the_environment() {
    if let Some(stderr) = child("driver_version_comes_from_the_environment", &[("MP_EMU_DRIVER_VERSION", "12.8")]) {
        // The refusal names the PTX's version and the driver's, as the JIT log does.
        assert!(
            stderr.contains(
                "cuModuleLoadData: PTX line 9: unsupported .version 9.0: CUDA driver 12.8 loads PTX ISA 8.7 at most"
            ),
            "{stderr}"
        );
        return;
    }
    assert_eq!(driver_version(), 12080);
    let _rig = Rig::new();
    err(load(&vendored_cast_ptx()).unwrap_err(), e::UNSUPPORTED_PTX_VERSION);
    assert!(load(PTX).is_ok());
}

#[test]
fn invalid_driver_version_fails_init() {
    if in_child("invalid_driver_version_fails_init", &[("MP_EMU_DRIVER_VERSION", "11.8")]) {
        return;
    }
    let mut v = 0;
    err(unsafe { cuDriverGetVersion(&mut v) }, e::INVALID_VALUE);
    err(unsafe { cuInit(0) }, e::NO_DEVICE);
}

// ---- .reqntid ----

const REQNTID_PTX: &str = "
.version 7.8
.target sm_75
.address_size 64

.visible .entry fill_req(
	.param .u64 fill_req_param_0
)
.reqntid 64, 2
{
	.reg .b32 	%r<4>;
	.reg .f32 	%f<2>;
	.reg .b64 	%rd<5>;

	ld.param.u64 	%rd1, [fill_req_param_0];
	cvta.to.global.u64 	%rd2, %rd1;
	mov.u32 	%r1, %tid.y;
	mov.u32 	%r2, %tid.x;
	mad.lo.s32 	%r1, %r1, 64, %r2;
	mul.wide.u32 	%rd3, %r1, 4;
	add.s64 	%rd4, %rd2, %rd3;
	mov.f32 	%f1, 0f3F800000;
	st.global.f32 	[%rd4], %f1;
	ret;
}
";

/// `.reqntid` is the block shape exactly: a launch with any other shape, smaller or
/// larger, is INVALID_VALUE (before, it was taken as `.maxntid`: smaller blocks ran, larger
/// ones were LAUNCH_OUT_OF_RESOURCES).
#[test]
fn reqntid_is_the_only_block_shape() {
    let rig = Rig::new();
    let s = rig.stream();
    let m = load(REQNTID_PTX).expect("the .reqntid PTX loads");
    let f = function(m, "fill_req");
    let mut y = alloc(128 * 4);
    let mut args = [(&mut y as *mut u64).cast::<c_void>()];
    unsafe {
        let launch = |block: [u32; 3], args: *mut P| {
            cuLaunchKernel(f, 1, 1, 1, block[0], block[1], block[2], 0, s, args, null_mut())
        };
        for block in [[32, 2, 1], [64, 1, 1], [128, 1, 1], [64, 2, 2], [64, 4, 1], [2, 64, 1]] {
            err(launch(block, args.as_mut_ptr()), e::INVALID_VALUE);
        }
        assert_eq!(download(y, 4), [u32::MAX; 4], "nothing ran");
        ok(launch([64, 2, 1], args.as_mut_ptr()));
        ok(cuStreamSynchronize(s));
        assert_eq!(download_f32(y, 128), vec![1.0; 128]);
        let mut v = 0;
        ok(cuFuncGetAttribute(&mut v, 0, f)); // MAX_THREADS_PER_BLOCK
        assert_eq!(v, 128);
        ok(cuModuleUnload(m));
    }
    // ptxas: ".maxntid and .reqntid cannot both be specified".
    let both = REQNTID_PTX.replace(".reqntid 64, 2", ".reqntid 64, 2\n.maxntid 128");
    err(load(&both).unwrap_err(), e::INVALID_PTX);
}

/// A block needs registers per thread x threads (in warps, 8 registers at a time) of the
/// SM's 65536; ptxas's count of each vendored kernel comes from cuda/ptx/resources.txt,
/// and MP_EMU_RESOURCES adds rows for others. With `axpy` at 255 registers (as if ptxas
/// had given it that many), a block of 256 threads fits exactly and one of 288 is
/// LAUNCH_OUT_OF_RESOURCES; cuFuncGetAttribute reports both limits. Before, every kernel
/// was taken at 32 registers and such a launch ran.
#[test]
fn a_block_over_the_register_file_is_out_of_resources() {
    let rows = std::env::temp_dir().join(format!("mp-emu-resources-{}.txt", std::process::id()));
    if std::env::var_os("MP_EMU_DRIVER_CHILD").is_none() {
        std::fs::write(&rows, "# file arch kernel registers\ndriver_test.sm_75.ptx sm_80 axpy 255\n").unwrap();
    }
    let child = in_child(
        "a_block_over_the_register_file_is_out_of_resources",
        &[("MP_EMU_CC", "8.0"), ("MP_EMU_RESOURCES", rows.to_str().unwrap())],
    );
    if child {
        std::fs::remove_file(&rows).ok();
        return;
    }
    let rig = Rig::new();
    let s = rig.stream();
    let m = load(PTX).expect("the test PTX loads");
    let f = function(m, "axpy");
    let mut v = 0;
    unsafe {
        ok(cuFuncGetAttribute(&mut v, 4, f)); // NUM_REGS
        assert_eq!(v, 255);
        ok(cuFuncGetAttribute(&mut v, 0, f)); // MAX_THREADS_PER_BLOCK
        assert_eq!(v, 256);
        let (x, y) = (alloc(4 * 288), alloc(4 * 288));
        ok(cuMemsetD32_v2(x, 0, 288));
        ok(cuMemsetD32_v2(y, 0, 288));
        let (mut px, mut py, mut n) = (x, y, 288u32);
        let mut args =
            [(&mut px as *mut u64).cast::<c_void>(), (&mut py as *mut u64).cast(), (&mut n as *mut u32).cast()];
        err(cuLaunchKernel(f, 1, 1, 1, 288, 1, 1, 0, s, args.as_mut_ptr(), null_mut()), e::LAUNCH_OUT_OF_RESOURCES);
        ok(cuLaunchKernel(f, 2, 1, 1, 256, 1, 1, 0, s, args.as_mut_ptr(), null_mut()));
        ok(cuStreamSynchronize(s));
        ok(cuModuleUnload(m));
    }
    drop(rig);
}
