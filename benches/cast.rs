//! Bench group `cast`: f32 <-> f16 and f32 <-> bf16 over flat ranges, next to a
//! device-to-device copy of the same number of bytes (read + write) measured in the same
//! run. `MIXED_PRECISION_BENCH_HALF=f16` or `bf16` runs one half type's rows only.

mod common;

use criterion::{BenchmarkId, Criterion, Throughput};
use mixed_precision::half::{bf16, f16};
use mixed_precision::kernels::cast::{cast_bf16_f32, cast_f16_f32, cast_f32_bf16, cast_f32_f16};
use mixed_precision::rng::Rng;
use mixed_precision::{DType, Device, Tensor};

/// Both sizes are larger than an H100's 50 MB L2, so every run reads from DRAM.
const SIZES: &[usize] = &[16 << 20, 256 << 20];
const WARMUP: u32 = 10;
const RUNS: u32 = 50;

/// The table's median of `f`, then criterion's measurement of the same launches as
/// `cast/<name>/<n>`.
fn time_row(c: &mut Criterion, dev: &Device, name: &str, n: usize, bytes: usize, f: &mut dyn FnMut()) -> f64 {
    let median = common::median_seconds(dev, WARMUP, RUNS, &mut *f);
    let mut group = c.benchmark_group("cast");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function(BenchmarkId::new(name, n), |b| b.iter_custom(|it| common::time_gpu(dev, it, &mut *f)));
    group.finish();
    median
}

fn main() {
    let Some(dev) = common::gpu("cast") else { return };
    let mut c = Criterion::default().configure_from_args();
    let mut rng = Rng::new(42);
    let mut table = Vec::new();
    for &n in SIZES {
        let x32 = Tensor::from_host(&dev, &rng.uniform_vec(n, -100.0, 100.0), &[n]).unwrap();
        let mut y32 = Tensor::<f32>::zeros(&dev, &[n]).unwrap();
        // Each cast reads and writes 6 bytes per element in all; the baseline copies
        // 3n bytes (3n/4 f32), which also reads 3n and writes 3n.
        let bytes = 6 * n;
        let copy_src = Tensor::from_host(&dev, &rng.uniform_vec(3 * n / 4, -1.0, 1.0), &[3 * n / 4]).unwrap();
        let mut copy_dst = Tensor::<f32>::zeros(&dev, &[3 * n / 4]).unwrap();
        let stream = dev.stream().clone();
        let mut copy = || stream.memcpy_dtod(&copy_src.view(), &mut copy_dst.view_mut()).unwrap();
        let copy_s = time_row(&mut c, &dev, "copy_dtod", n, bytes, &mut copy);

        if common::runs_half(DType::F16) {
            let x16 = x32.to_f16().unwrap();
            let mut y16 = Tensor::<f16>::zeros(&dev, &[n]).unwrap();
            let mut to_f16 = || cast_f32_f16(&dev, &x32.view(), &mut y16.view_mut()).unwrap();
            table.push((
                "cast_f32_f16",
                n,
                bytes,
                time_row(&mut c, &dev, "cast_f32_f16", n, bytes, &mut to_f16),
                copy_s,
            ));
            let mut to_f32 = || cast_f16_f32(&dev, &x16.view(), &mut y32.view_mut()).unwrap();
            table.push((
                "cast_f16_f32",
                n,
                bytes,
                time_row(&mut c, &dev, "cast_f16_f32", n, bytes, &mut to_f32),
                copy_s,
            ));
        }
        if common::runs_half(DType::BF16) {
            // The bf16 input is the same random f32 data, rounded on the device.
            let mut xb = Tensor::<bf16>::zeros(&dev, &[n]).unwrap();
            cast_f32_bf16(&dev, &x32.view(), &mut xb.view_mut()).unwrap();
            let mut yb = Tensor::<bf16>::zeros(&dev, &[n]).unwrap();
            let mut to_bf16 = || cast_f32_bf16(&dev, &x32.view(), &mut yb.view_mut()).unwrap();
            let t = time_row(&mut c, &dev, "cast_f32_bf16", n, bytes, &mut to_bf16);
            table.push(("cast_f32_bf16", n, bytes, t, copy_s));
            let mut to_f32 = || cast_bf16_f32(&dev, &xb.view(), &mut y32.view_mut()).unwrap();
            let t = time_row(&mut c, &dev, "cast_bf16_f32", n, bytes, &mut to_f32);
            table.push(("cast_bf16_f32", n, bytes, t, copy_s));
        }
    }
    c.final_summary();

    println!("\nmedian of {RUNS} after {WARMUP} warm-up runs, CUDA events:");
    println!("| kernel | bytes moved | ours | baseline | ratio |\n|---|---|---|---|---|");
    for (name, n, bytes, ours, copy) in table {
        common::print_bandwidth_row(name, n, bytes as f64, ours, "copy_dtod", copy);
    }
}
