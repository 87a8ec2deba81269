//! Bench group `optim`: the optimizer-side kernels in GB/s next to a device-to-device
//! copy of the same bytes measured in the same run, and the whole optimizer phase
//! (GradScaler::check + AdamW::step with the fp16 copy + GradScaler::update) over a
//! 350M-parameter arena.

mod common;

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput};
use mixed_precision::half::f16;
use mixed_precision::kernels::adam::{adamw_step, AdamConfig, AdamScalars, AdamTensors};
use mixed_precision::kernels::unscale::unscale_check;
use mixed_precision::nn::{ArenaLayout, ParamArena};
use mixed_precision::optim::{AdamW, GradScaler, GradScalerConfig};
use mixed_precision::rng::Rng;
use mixed_precision::{Device, Element, Tensor};

/// 256M elements: the range the bandwidth target is stated for.
const N: usize = 256 << 20;
/// Parameters of the optimizer-phase benchmark (a transformer of about 350M).
const PHASE_PARAMS: usize = 350_000_000;
const WARMUP: u32 = 5;
const RUNS: u32 = 30;

/// A kernel to time: its name, the bytes it must move, and one launch.
type Case<'a> = (&'static str, usize, Box<dyn FnMut() + 'a>);

/// Median seconds of a device-to-device copy that reads and writes `bytes` in all.
fn copy_seconds(dev: &Arc<Device>, bytes: usize) -> f64 {
    let n = bytes / 2 / 4;
    let src = Tensor::<f32>::from_host(dev, &Rng::new(1).uniform_vec(n, -1.0, 1.0), &[n]).unwrap();
    let mut dst = Tensor::<f32>::zeros(dev, &[n]).unwrap();
    let stream = dev.stream().clone();
    common::median_seconds(dev, WARMUP, RUNS, || stream.memcpy_dtod(&src.view(), &mut dst.view_mut()).unwrap())
}

fn random<G: Element>(dev: &Arc<Device>, rng: &mut Rng, n: usize, scale: f32) -> Tensor<G> {
    let host: Vec<G> = (0..n).map(|_| G::from_f32(rng.normal() * scale)).collect();
    Tensor::from_host(dev, &host, &[n]).unwrap()
}

fn main() {
    let Some(dev) = common::gpu("optim") else { return };
    let mut c = Criterion::default().configure_from_args().sample_size(10);
    let mut rng = Rng::new(7);
    let mut rows: Vec<(String, usize, f64)> = Vec::new();
    let scale = Tensor::from_host(&dev, &[1024.0f32], &[1]).unwrap();
    let found = Tensor::<f32>::zeros(&dev, &[1]).unwrap();

    // unscale_check: unscale (read + write) and check only (read), f32 and f16.
    {
        let mut g32 = random::<f32>(&dev, &mut rng, N, 1024.0);
        let mut g16 = random::<f16>(&dev, &mut rng, N, 1024.0);
        let s = scale.view();
        let mut cases: Vec<Case> = Vec::new();
        let mut found_a = Tensor::<f32>::zeros(&dev, &[1]).unwrap();
        let mut found_b = Tensor::<f32>::zeros(&dev, &[1]).unwrap();
        let mut found_c = Tensor::<f32>::zeros(&dev, &[1]).unwrap();
        let d = dev.clone();
        cases.push((
            "unscale_check_f32 (unscale)",
            8 * N,
            Box::new(move || unscale_check(&d, &mut g32.view_mut(), Some(&s), &mut found_a.view_mut()).unwrap()),
        ));
        let d = dev.clone();
        let mut g32b = random::<f32>(&dev, &mut rng, N, 1.0);
        cases.push((
            "unscale_check_f32 (check only)",
            4 * N,
            Box::new(move || unscale_check(&d, &mut g32b.view_mut(), None, &mut found_b.view_mut()).unwrap()),
        ));
        let d = dev.clone();
        cases.push((
            "unscale_check_f16 (check only)",
            2 * N,
            Box::new(move || unscale_check(&d, &mut g16.view_mut(), None, &mut found_c.view_mut()).unwrap()),
        ));
        let mut group = c.benchmark_group("optim");
        for (name, bytes, f) in cases.iter_mut() {
            rows.push((name.to_string(), *bytes, common::median_seconds(&dev, WARMUP, RUNS, &mut *f)));
            group.throughput(Throughput::Bytes(*bytes as u64));
            group.bench_function(BenchmarkId::new(*name, N), |b| {
                b.iter_custom(|it| common::time_gpu(&dev, it, &mut *f))
            });
        }
        group.finish();
    }

    // adamw_step with the fp16 copy: f32 grads 30 B/param, f16 grads 28.
    for f16_grads in [false, true] {
        let mut p = random::<f32>(&dev, &mut rng, N, 0.1);
        let mut m = random::<f32>(&dev, &mut rng, N, 1e-3);
        let mut v = Tensor::from_host(&dev, &vec![1e-6f32; N], &[N]).unwrap();
        let mut copy = Tensor::<f16>::zeros(&dev, &[N]).unwrap();
        let mut step = Tensor::from_host(&dev, &[10.0f32], &[1]).unwrap();
        let cfg = AdamConfig::default();
        let (name, bytes) = if f16_grads { ("adamw_step_f16", 28 * N) } else { ("adamw_step_f32", 30 * N) };
        let g32 = random::<f32>(&dev, &mut rng, if f16_grads { 0 } else { N }, 1024.0);
        let g16 = random::<f16>(&dev, &mut rng, if f16_grads { N } else { 0 }, 1024.0);
        let mut run = || {
            let mut sc =
                AdamScalars { step: step.view_mut(), scale: Some(scale.view()), found_inf: Some(found.view()) };
            if f16_grads {
                let mut t = AdamTensors {
                    params: p.view_mut(),
                    grads: g16.view(),
                    m: m.view_mut(),
                    v: v.view_mut(),
                    copy: Some(copy.view_mut()),
                };
                adamw_step(&dev, &mut t, &mut sc, &cfg).unwrap();
            } else {
                let mut t = AdamTensors {
                    params: p.view_mut(),
                    grads: g32.view(),
                    m: m.view_mut(),
                    v: v.view_mut(),
                    copy: Some(copy.view_mut()),
                };
                adamw_step(&dev, &mut t, &mut sc, &cfg).unwrap();
            }
        };
        rows.push((name.to_string(), bytes, common::median_seconds(&dev, WARMUP, RUNS, &mut run)));
        let mut group = c.benchmark_group("optim");
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(BenchmarkId::new(name, N), |b| b.iter_custom(|it| common::time_gpu(&dev, it, &mut run)));
        group.finish();
    }

    // The whole optimizer phase over a 350M-parameter arena with f32 gradients:
    // check (4 B) + AdamW with the fp16 copy (30 B) + the one-thread scale update.
    {
        let mut layout = ArenaLayout::new();
        layout.push("params", &[PHASE_PARAMS]).unwrap();
        let init = vec![(0..PHASE_PARAMS).map(|_| rng.normal() * 0.02).collect::<Vec<f32>>()];
        let mut arena = ParamArena::new(&dev, layout, &init).unwrap();
        let grads: Vec<f32> = (0..arena.layout().total()).map(|_| rng.normal() * 65536.0 * 1e-3).collect();
        arena.set_grad(&grads).unwrap();
        let mut adam = AdamW::new(&arena, AdamConfig::default()).unwrap();
        let mut scaler = GradScaler::new(&dev, GradScalerConfig::default()).unwrap();
        let mut phase = || {
            scaler.check(&mut arena.grad_mut()).unwrap();
            adam.step(&mut arena, Some(&scaler)).unwrap();
            scaler.update().unwrap();
        };
        let bytes = 34 * PHASE_PARAMS;
        rows.push((
            "optimizer phase, 350M params (check + adamw_step + update_scale)".into(),
            bytes,
            common::median_seconds(&dev, WARMUP, RUNS, &mut phase),
        ));
        let mut group = c.benchmark_group("optim");
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(BenchmarkId::new("phase", PHASE_PARAMS), |b| {
            b.iter_custom(|it| common::time_gpu(&dev, it, &mut phase))
        });
        group.finish();
    }
    c.final_summary();

    println!("\nmedian of {RUNS} after {WARMUP} warm-up runs, CUDA events; baseline: device-to-device copy moving the same bytes");
    println!("| kernel | bytes moved | ours | baseline | ratio |\n|---|---|---|---|---|");
    for (name, bytes, ours) in rows {
        let copy = copy_seconds(&dev, bytes);
        common::print_bandwidth_row(&name, bytes as f64, ours, "copy_dtod", copy);
    }
}
