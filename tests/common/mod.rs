//! Shared by the integration tests: the one way a GPU test gets its device.
#![allow(dead_code)] // each test file uses its own subset

use std::io::Write;
use std::sync::{Arc, OnceLock};

use mixed_precision::{Device, Error};

/// The CUDA device for GPU test `test`, or `None` after printing
/// `skipped (no CUDA device): <test>` when there is no driver or no device.
/// With `MIXED_PRECISION_REQUIRE_GPU=1` the same situation fails the test, so nothing
/// passes on a GPU machine by skipping.
///
/// Every call opens a `Device` of its own, so every test has its own stream. Tests run on
/// parallel threads, and with one shared stream a test capturing a CUDA graph captured
/// the other tests' work too (their allocations and copies then failed and invalidated
/// the capture). Found when the suite first ran, on the emulator.
pub fn gpu(test: &str) -> Option<Arc<Device>> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    let require = std::env::var("MIXED_PRECISION_REQUIRE_GPU").is_ok_and(|v| v == "1");
    let open = || match Device::new(0) {
        Ok(dev) => Ok(dev),
        Err(e @ (Error::NoDriver | Error::NoDevice { .. })) => Err(e.to_string()),
        Err(e) => panic!("{test}: opening CUDA device 0 failed: {e}"),
    };
    let probe = PROBE.get_or_init(|| open().map(|_| ()));
    match probe {
        Ok(()) => Some(open().unwrap_or_else(|why| panic!("{test}: CUDA device 0 went away: {why}"))),
        Err(why) if require => panic!("MIXED_PRECISION_REQUIRE_GPU=1 but {test} has no CUDA device: {why}"),
        Err(_) => {
            // Written to the real stderr: the test harness captures eprintln! of
            // passing tests, and the skip must be visible in `cargo test` output.
            let _ = writeln!(std::io::stderr(), "skipped (no CUDA device): {test}");
            None
        }
    }
}

/// Opens the GPU for the calling test function or returns from it, printing the skip.
#[macro_export]
macro_rules! gpu_or_skip {
    () => {{
        fn here() {}
        let name = std::any::type_name_of_val(&here);
        let name = name.strip_suffix("::here").unwrap_or(name);
        match common::gpu(name) {
            Some(dev) => dev,
            None => return,
        }
    }};
}

/// True when `dev` is the CUDA driver emulator (emu/, selected by putting target/emu on
/// `LD_LIBRARY_PATH`; README, "The emulator"): its device name says "emulator".
pub fn emulated(dev: &Device) -> bool {
    dev.info().is_emulator()
}

/// `full` on a real GPU, `emulated` on the emulator, which runs on the order of 10^7
/// thread-instructions a second. For sizes too large to emulate only: each call site says
/// in one line which code paths the emulated size still takes (awkward shapes, every
/// layout, several K tiles, several blocks, vector body and scalar tail).
pub fn size_for<T>(dev: &Device, full: T, emulated: T) -> T {
    if self::emulated(dev) {
        emulated
    } else {
        full
    }
}

/// True when both are NaN or both have the same bits: exact comparison that does not
/// depend on which NaN payload an implementation produces.
pub fn same_f16(a: half::f16, b: half::f16) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

/// As [`same_f16`], for f32.
pub fn same_f32(a: f32, b: f32) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

/// As [`same_f16`], for bf16.
pub fn same_bf16(a: half::bf16, b: half::bf16) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

/// True when `dev` has bf16 tensor cores (compute capability 8.0 or newer): the bf16 GEMM
/// runs there and returns `Error::Unsupported` below (src/kernels/gemm.rs).
pub fn has_bf16_tensor_cores(dev: &Device) -> bool {
    dev.info().compute_capability >= (8, 0)
}

/// Normwise relative difference `||a - b|| / ||b||` (0 when both are 0): how far a
/// CUDA state is from the CPU's (tests/train.rs, tests/gpt_cuda.rs).
pub fn normwise(a: &[f32], b: &[f32]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum();
    let n: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    if d == 0.0 {
        0.0
    } else {
        (d / n).sqrt()
    }
}
