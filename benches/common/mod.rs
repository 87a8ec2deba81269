//! Shared by the benchmarks: the device (or a skip), CUDA-event timing, and the table.
//!
//! Method (DESIGN.md): CUDA events around the launches, warm-up first, the median of
//! many timed runs, random inputs, and the baseline measured in the same run.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use mixed_precision::cudarc::driver::sys::CUevent_flags;
use mixed_precision::{DType, Device, Error};

/// Set to `f16` or `bf16` to run only that half type's rows (scripts/gpu-run.sh runs a
/// long bench once per half type that way); unset or empty, every row runs.
pub const HALF_VAR: &str = "MIXED_PRECISION_BENCH_HALF";

/// Whether this run benchmarks the rows of half type `h` (see [`HALF_VAR`]). Rows with no
/// half type (f32 only) run with f16's. Panics on any other value: a misspelt setting
/// must not silently run nothing.
pub fn runs_half(h: DType) -> bool {
    match std::env::var(HALF_VAR).as_deref() {
        Err(_) | Ok("") => true,
        Ok("f16") => h == DType::F16,
        Ok("bf16") => h == DType::BF16,
        Ok(other) => panic!("{HALF_VAR}={other:?}: expected f16 or bf16 (or unset for both)"),
    }
}

/// The device, or `None` after printing `skipped (no CUDA device): <bench>`. On the CUDA
/// driver emulator (emu/; its device name says "emulator") it refuses and exits with
/// status 1: an emulated run's times are CPU times, not GPU figures.
pub fn gpu(bench: &str) -> Option<Arc<Device>> {
    match Device::new(0) {
        Ok(dev) => {
            let i = dev.info();
            if i.is_emulator() {
                eprintln!("{bench}: device {:?}", i.name);
                eprintln!("refusing to benchmark on the emulator: figures would not be GPU times");
                std::process::exit(1);
            }
            println!(
                "device: {} (sm_{}{}, {} SMs)",
                i.name, i.compute_capability.0, i.compute_capability.1, i.sm_count
            );
            Some(dev)
        }
        Err(e @ (Error::NoDriver | Error::NoDevice { .. })) => {
            println!("skipped (no CUDA device): {bench}: {e}");
            None
        }
        Err(e) => panic!("{bench}: opening CUDA device 0 failed: {e}"),
    }
}

/// Time of `iters` back-to-back runs of `f` on the device's stream, by CUDA events.
pub fn time_gpu(dev: &Device, iters: u64, mut f: impl FnMut()) -> Duration {
    let stream = dev.stream();
    let start = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).expect("record start event");
    for _ in 0..iters {
        f();
    }
    let end = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).expect("record end event");
    let ms = start.elapsed_ms(&end).expect("event elapsed time");
    Duration::from_secs_f64(ms as f64 / 1e3)
}

/// Median seconds per run of `f`: `warmup` untimed runs, then `runs` timed one by one.
pub fn median_seconds(dev: &Device, warmup: u32, runs: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    let mut t: Vec<f64> = (0..runs).map(|_| time_gpu(dev, 1, &mut f).as_secs_f64()).collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2]
}

/// One row of a bandwidth table: the bytes `elems` elements must move (in all and per
/// element), ours against the baseline, both in GB/s of those bytes, and the ratio (the
/// fraction of the baseline's bandwidth).
pub fn print_bandwidth_row(name: &str, elems: usize, bytes: f64, ours_s: f64, base_name: &str, base_s: f64) {
    let ours = bytes / ours_s / 1e9;
    let base = bytes / base_s / 1e9;
    println!(
        "| {name} | {:.1} MB ({:.0} B/elem) | {ours:.0} GB/s ({:.1} us) | {base_name} {base:.0} GB/s ({:.1} us) | {:.2} |",
        bytes / 1e6,
        bytes / elems as f64,
        ours_s * 1e6,
        base_s * 1e6,
        ours / base
    );
}

/// The dense (no sparsity) f16/bf16 tensor-core peak of a device, in FLOP/s, by its
/// name, with the product the figure is for; `None` for a device not listed here, whose
/// MFU is then printed as "n/a" rather than guessed. From NVIDIA's data sheets:
/// H100 SXM5 ("NVIDIA H100 80GB HBM3") and H200 SXM ("NVIDIA H200") 989.4 TFLOP/s;
/// A100, SXM4 and PCIe alike, 312 TFLOP/s. The PCIe and NVL boards of H100 and H200 have
/// lower peaks and are not listed, nor is GH200 (names are matched word by word, so
/// "GH200" is not "H200" and "A1000" is not "A100"). bench/pytorch/side_by_side.py holds
/// the same table (`peak_half_flops`): keep the two equal, so both sides' MFU use one peak.
pub fn peak_half_flops(name: &str) -> Option<(f64, &'static str)> {
    let upper = name.to_ascii_uppercase();
    let words: Vec<&str> = upper.split(|c: char| !c.is_ascii_alphanumeric()).collect();
    let has = |w: &str| words.contains(&w);
    let other_board = has("NVL") || has("PCIE");
    if has("H200") && !other_board {
        Some((989.4e12, "H200 SXM"))
    } else if has("H100") && (has("HBM3") || has("SXM5")) && !other_board {
        Some((989.4e12, "H100 SXM5"))
    } else if has("A100") {
        Some((312e12, "A100"))
    } else {
        None
    }
}
