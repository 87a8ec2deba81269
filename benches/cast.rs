//! Bench group `cast`: f32 <-> f16 over flat ranges, next to a device-to-device copy of
//! the same number of bytes (read + write) measured in the same run.

mod common;

use criterion::{BenchmarkId, Criterion, Throughput};
use mixed_precision::half::f16;
use mixed_precision::kernels::cast::{cast_f16_f32, cast_f32_f16};
use mixed_precision::rng::Rng;
use mixed_precision::Tensor;

/// Both sizes are larger than an H100's 50 MB L2, so every run reads from DRAM.
const SIZES: &[usize] = &[16 << 20, 256 << 20];

fn main() {
    let Some(dev) = common::gpu("cast") else { return };
    let mut c = Criterion::default().configure_from_args();
    let mut rng = Rng::new(42);
    let mut table = Vec::new();
    for &n in SIZES {
        let x32 = Tensor::from_host(&dev, &rng.uniform_vec(n, -100.0, 100.0), &[n]).unwrap();
        let x16 = x32.to_f16().unwrap();
        let mut y16 = Tensor::<f16>::zeros(&dev, &[n]).unwrap();
        let mut y32 = Tensor::<f32>::zeros(&dev, &[n]).unwrap();
        // Each cast reads and writes 6 bytes per element in all; the baseline copies
        // 3n bytes (3n/4 f32), which also reads 3n and writes 3n.
        let bytes = 6 * n;
        let copy_src = Tensor::from_host(&dev, &rng.uniform_vec(3 * n / 4, -1.0, 1.0), &[3 * n / 4]).unwrap();
        let mut copy_dst = Tensor::<f32>::zeros(&dev, &[3 * n / 4]).unwrap();
        let stream = dev.stream().clone();

        let mut to_f16 = || cast_f32_f16(&dev, &x32.view(), &mut y16.view_mut()).unwrap();
        let mut to_f32 = || cast_f16_f32(&dev, &x16.view(), &mut y32.view_mut()).unwrap();
        let mut copy = || stream.memcpy_dtod(&copy_src.view(), &mut copy_dst.view_mut()).unwrap();

        let copy_s = common::median_seconds(&dev, 10, 50, &mut copy);
        table.push(("cast_f32_f16", bytes, common::median_seconds(&dev, 10, 50, &mut to_f16), copy_s));
        table.push(("cast_f16_f32", bytes, common::median_seconds(&dev, 10, 50, &mut to_f32), copy_s));

        let mut group = c.benchmark_group("cast");
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(BenchmarkId::new("cast_f32_f16", n), |b| {
            b.iter_custom(|it| common::time_gpu(&dev, it, &mut to_f16))
        });
        group.bench_function(BenchmarkId::new("cast_f16_f32", n), |b| {
            b.iter_custom(|it| common::time_gpu(&dev, it, &mut to_f32))
        });
        group.bench_function(BenchmarkId::new("copy_dtod", n), |b| {
            b.iter_custom(|it| common::time_gpu(&dev, it, &mut copy))
        });
        group.finish();
    }
    c.final_summary();

    println!("\nmedian of 50 after 10 warm-up runs, CUDA events:");
    println!("| kernel | bytes moved | ours | baseline | ratio |\n|---|---|---|---|---|");
    for (name, bytes, ours, copy) in table {
        common::print_bandwidth_row(name, bytes as f64, ours, "copy_dtod", copy);
    }
}
