//! Shared by the integration tests: the one way a GPU test gets its device.
#![allow(dead_code)] // each test file uses its own subset

use std::io::Write;
use std::sync::{Arc, OnceLock};

use mixed_precision::{Device, Error};

/// The CUDA device for GPU test `test`, or `None` after printing
/// `skipped (no CUDA device): <test>` when there is no driver or no device.
/// With `MIXED_PRECISION_REQUIRE_GPU=1` the same situation fails the test, so nothing
/// passes on a GPU machine by skipping.
pub fn gpu(test: &str) -> Option<Arc<Device>> {
    static DEVICE: OnceLock<Result<Arc<Device>, String>> = OnceLock::new();
    let require = std::env::var("MIXED_PRECISION_REQUIRE_GPU").is_ok_and(|v| v == "1");
    let opened = DEVICE.get_or_init(|| match Device::new(0) {
        Ok(dev) => Ok(dev),
        Err(e @ (Error::NoDriver | Error::NoDevice { .. })) => Err(e.to_string()),
        Err(e) => panic!("{test}: opening CUDA device 0 failed: {e}"),
    });
    match opened {
        Ok(dev) => Some(dev.clone()),
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

/// True when both are NaN or both have the same bits: exact comparison that does not
/// depend on which NaN payload an implementation produces.
pub fn same_f16(a: half::f16, b: half::f16) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

/// As [`same_f16`], for f32.
pub fn same_f32(a: f32, b: f32) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}
