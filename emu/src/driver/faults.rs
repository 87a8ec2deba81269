//! When the caller hears of a fault, and whether the emulator's own findings are faults:
//! `MP_EMU_FAULTS` and `MP_EMU_STRICT`, read here only, once per process (the setters are
//! for tests, which must not change environment variables while other threads run).
//!
//! # `MP_EMU_FAULTS`: at the next synchronizing call (`sync`, the default) or at the launch
//!
//! On a GPU a kernel runs after `cuLaunchKernel` returned, so a fault it takes (an illegal
//! address, a trap, ...) cannot be that call's result. The CUDA Driver API reference says
//! as much in the note it puts on nearly every call (cuLaunchKernel, cuCtxSynchronize,
//! cuMemcpy*, cuCtxDestroy, ...): the function may also return error codes from previous,
//! asynchronous launches. Those errors are sticky: after an illegal address, a misaligned
//! address, an illegal instruction or a launch failure the context is unusable and every
//! later call returns the same code (CUresult's descriptions of CUDA_ERROR_ILLEGAL_ADDRESS
//! and its neighbours: the process must be restarted to use CUDA again). A program sees
//! the fault where it waits for the work: cuCtxSynchronize, cuStreamSynchronize,
//! cuStreamQuery, cuEventSynchronize, cuEventQuery, cuEventElapsedTime, and the calls
//! that wait for the device themselves. Per "API synchronization behavior" in the same
//! reference, a copy from pageable host memory to the device synchronizes the stream
//! before it starts, and a copy from the device to host memory returns only once it has
//! completed (all host memory is pageable here, so that includes cuMemcpyDtoHAsync),
//! while a device-to-device copy and a memset do not wait on the host; cuMemFree and
//! cuModuleUnload wait for the work that may still use what they release.
//!
//! So in `sync` mode the emulator, which runs the kernel inside the launch call, keeps the
//! fault on the context and returns CUDA_SUCCESS from the launch (or the cuGraphLaunch
//! whose replayed node faulted); the context runs no more device work (a faulted GPU
//! context does not); other calls go on succeeding until one
//! of the synchronizing calls above (`State::sync_point`), which returns the fault and
//! makes it sticky: from then on every call on the context returns it, until the context
//! is destroyed (or the primary context reset or fully released). A program that checks
//! only its launches' results, or ignores a synchronization's, fails here as on a GPU.
//! The report (kernel, block, thread, PTX line, address) goes to stderr when the fault
//! happens, and the synchronizing call that returns it says so.
//!
//! `launch` is the diagnostic mode: the launch itself returns the fault (sticky at once),
//! which points at the failing call in a debugger or a log without a report to read.
//!
//! Errors found before anything runs (an invalid configuration: INVALID_VALUE,
//! LAUNCH_OUT_OF_RESOURCES, a parameter buffer of the wrong size, a bad handle) are the
//! launch's own result in both modes, and not sticky, as on the driver.
//!
//! # `MP_EMU_STRICT`: findings fail the work (`1`) or only print (`0`, the default)
//!
//! Some things the emulator finds are races a GPU may or may not lose, not faults: today,
//! work on a CU_STREAM_NON_BLOCKING stream that is given, or copies from, memory a
//! legacy-stream host-to-device copy has not landed in yet (`driver::memcalls`). Without
//! `MP_EMU_STRICT` they are reported on stderr and the work runs on the old bytes. With
//! `MP_EMU_STRICT=1` each such finding is a fault of that work: CUDA_ERROR_LAUNCH_FAILED
//! ("unspecified launch failure", what the sanitizer findings already give), sticky, and
//! reported as `MP_EMU_FAULTS` says (the work does not run). The project's test runs set
//! it (scripts/test.sh, .ci/run): a finding printed in a passing test's output would go
//! unread.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

pub const FAULTS_VAR: &str = "MP_EMU_FAULTS";
pub const STRICT_VAR: &str = "MP_EMU_STRICT";

/// When a fault of device work reaches the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Faults {
    /// At the next synchronizing call, as on a GPU (the default).
    Sync,
    /// At the call that issued the work (the launch).
    Launch,
}

fn faults_from_env() -> Result<Faults, String> {
    match std::env::var(FAULTS_VAR) {
        Err(std::env::VarError::NotPresent) => Ok(Faults::Sync),
        Ok(v) if v == "sync" => Ok(Faults::Sync),
        Ok(v) if v == "launch" => Ok(Faults::Launch),
        Ok(v) => Err(format!("{FAULTS_VAR}={v:?}: expected sync (the default) or launch")),
        Err(std::env::VarError::NotUnicode(v)) => Err(format!("{FAULTS_VAR}={v:?}: expected sync or launch")),
    }
}

fn strict_from_env() -> Result<bool, String> {
    match std::env::var(STRICT_VAR) {
        Err(std::env::VarError::NotPresent) => Ok(false),
        Ok(v) if v == "0" => Ok(false),
        Ok(v) if v == "1" => Ok(true),
        Ok(v) => Err(format!("{STRICT_VAR}={v:?}: expected 1 (findings fail the work) or 0 (they only print)")),
        Err(std::env::VarError::NotUnicode(v)) => Err(format!("{STRICT_VAR}={v:?}: expected 1 or 0")),
    }
}

/// What [`set_faults`] set: 0 nothing (the environment decides), 1 sync, 2 launch.
static FAULTS_OVERRIDE: AtomicU8 = AtomicU8::new(0);
/// What [`set_strict`] set: 0 nothing, 1 off, 2 on.
static STRICT_OVERRIDE: AtomicU8 = AtomicU8::new(0);

/// When faults are reported: what [`set_faults`] set, else `MP_EMU_FAULTS`, else `sync`. A
/// value in the environment that is neither is an error (cuInit then fails, as for
/// `MP_EMU_CC`: a misspelt setting must not silently run the default).
pub fn faults() -> Result<Faults, String> {
    static FROM_ENV: OnceLock<Result<Faults, String>> = OnceLock::new();
    match FAULTS_OVERRIDE.load(Ordering::SeqCst) {
        1 => Ok(Faults::Sync),
        2 => Ok(Faults::Launch),
        _ => FROM_ENV.get_or_init(faults_from_env).clone(),
    }
}

/// Sets when faults are reported for this process, over the environment (`None`: back to
/// the environment's).
pub fn set_faults(f: Option<Faults>) {
    let v = match f {
        None => 0,
        Some(Faults::Sync) => 1,
        Some(Faults::Launch) => 2,
    };
    FAULTS_OVERRIDE.store(v, Ordering::SeqCst);
}

/// Whether findings fail the work: what [`set_strict`] set, else `MP_EMU_STRICT`, else
/// off. A value that is neither `0` nor `1` is an error, as for [`faults`].
pub fn strict() -> Result<bool, String> {
    static FROM_ENV: OnceLock<Result<bool, String>> = OnceLock::new();
    match STRICT_OVERRIDE.load(Ordering::SeqCst) {
        1 => Ok(false),
        2 => Ok(true),
        _ => FROM_ENV.get_or_init(strict_from_env).clone(),
    }
}

/// Sets whether findings fail the work for this process, over the environment (`None`:
/// back to the environment's).
pub fn set_strict(on: Option<bool>) {
    STRICT_OVERRIDE.store(on.map_or(0, |on| if on { 2 } else { 1 }), Ordering::SeqCst);
}

/// Both settings checked, for cuInit: the first one set to something unsupported.
pub fn check() -> Result<(), String> {
    faults()?;
    strict()?;
    Ok(())
}
