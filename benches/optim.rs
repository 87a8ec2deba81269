//! Bench group `optim`: the optimizer-side kernels in GB/s next to a device-to-device
//! copy of the same bytes measured in the same run, and the whole optimizer phase
//! (GradScaler::check + AdamW::step with the fp16 copy + GradScaler::update) over a
//! 350M-parameter arena. The f16 rows are the f16 recipe (f32 master weights, an f16
//! working copy, f32 or f16 gradients); the bf16 rows the bf16 one (a bf16 copy, f32 or
//! bf16 gradients) and pure bf16 (`adamw_pure`: bf16 weights, no master copy).
//! `MIXED_PRECISION_BENCH_HALF=f16` or `bf16` runs one half type's rows only.

mod common;

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput};
use mixed_precision::half::{bf16, f16};
use mixed_precision::kernels::adam::{adamw_pure, adamw_step, AdamConfig, AdamPureTensors, AdamScalars, AdamTensors};
use mixed_precision::kernels::cast::cast_f32_half;
use mixed_precision::kernels::unscale::unscale_check;
use mixed_precision::nn::{ArenaLayout, ParamArena};
use mixed_precision::optim::{AdamW, GradScaler, GradScalerConfig};
use mixed_precision::rng::Rng;
use mixed_precision::{DType, Device, Element, Half, Tensor};

/// 256M elements: the range the bandwidth target is stated for.
const N: usize = 256 << 20;
/// Parameters of the optimizer-phase benchmark (a transformer of about 350M).
const PHASE_PARAMS: usize = 350_000_000;
const WARMUP: u32 = 5;
const RUNS: u32 = 30;
/// The seed of the pure-bf16 rows' stochastic rounding.
const SEED: u64 = 0x5eed;

/// One table row: its name, elements, the bytes it must move and its median seconds.
type Row = (String, usize, usize, f64);

fn random<G: Element>(dev: &Arc<Device>, rng: &mut Rng, n: usize, scale: f32) -> Tensor<G> {
    let host: Vec<G> = (0..n).map(|_| G::from_f32(rng.normal() * scale)).collect();
    Tensor::from_host(dev, &host, &[n]).unwrap()
}

/// `x` rounded to the half type `H` on the device (the same random data, not a new draw).
fn to_half<H: Half>(dev: &Arc<Device>, x: &Tensor<f32>) -> Tensor<H> {
    let mut y = Tensor::<H>::zeros(dev, x.shape()).unwrap();
    cast_f32_half(dev, &x.view(), &mut y.view_mut()).unwrap();
    y
}

/// Times one kernel over `n` elements that must move `bytes`: the table's median, then
/// criterion's measurement of the same launches as `optim/<name>/<n>`.
fn time_row(
    c: &mut Criterion,
    dev: &Device,
    rows: &mut Vec<Row>,
    name: &str,
    n: usize,
    bytes: usize,
    f: &mut dyn FnMut(),
) {
    rows.push((name.to_string(), n, bytes, common::median_seconds(dev, WARMUP, RUNS, &mut *f)));
    let mut group = c.benchmark_group("optim");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function(BenchmarkId::new(name, n), |b| b.iter_custom(|it| common::time_gpu(dev, it, &mut *f)));
    group.finish();
}

/// One adamw_step over the flat range: f32 master weights and moments, gradients `G`,
/// the working copy `C`.
fn adam_master<G: Element, C: Half>(
    dev: &Device,
    st: &mut Master,
    grads: &Tensor<G>,
    copy: &mut Tensor<C>,
    scalars: &mut Scalars,
) {
    let mut t = AdamTensors {
        params: st.p.view_mut(),
        grads: grads.view(),
        m: st.m.view_mut(),
        v: st.v.view_mut(),
        copy: Some(copy.view_mut()),
    };
    let mut sc = AdamScalars {
        step: scalars.step.view_mut(),
        scale: Some(scalars.scale.view()),
        found_inf: Some(scalars.found.view()),
    };
    adamw_step(dev, &mut t, &mut sc, &AdamConfig::default()).unwrap();
}

/// One adamw_pure over the flat range: bf16 weights, f32 moments, gradients `G`.
fn adam_pure<G: Element>(
    dev: &Device,
    st: &mut Master,
    p: &mut Tensor<bf16>,
    grads: &Tensor<G>,
    scalars: &mut Scalars,
) {
    let mut t = AdamPureTensors { params: p.view_mut(), grads: grads.view(), m: st.m.view_mut(), v: st.v.view_mut() };
    let mut sc = AdamScalars {
        step: scalars.step.view_mut(),
        scale: Some(scalars.scale.view()),
        found_inf: Some(scalars.found.view()),
    };
    adamw_pure(dev, &mut t, &mut sc, &AdamConfig::default(), SEED).unwrap();
}

/// The f32 optimizer state every AdamW row updates in place (the pure rows use m and v).
struct Master {
    p: Tensor<f32>,
    m: Tensor<f32>,
    v: Tensor<f32>,
}

struct Scalars {
    step: Tensor<f32>,
    scale: Tensor<f32>,
    found: Tensor<f32>,
}

fn main() {
    let Some(dev) = common::gpu("optim") else { return };
    let (f16_rows, bf16_rows) = (common::runs_half(DType::F16), common::runs_half(DType::BF16));
    let mut c = Criterion::default().configure_from_args().sample_size(10);
    let mut rng = Rng::new(7);
    let mut rows: Vec<Row> = Vec::new();
    let mut scalars = Scalars {
        step: Tensor::from_host(&dev, &[10.0f32], &[1]).unwrap(),
        scale: Tensor::from_host(&dev, &[1024.0f32], &[1]).unwrap(),
        found: Tensor::<f32>::zeros(&dev, &[1]).unwrap(),
    };
    // The gradients every row reads, still carrying the loss scale (1024); the half ones
    // are the f32 ones rounded on the device.
    let mut g32 = random::<f32>(&dev, &mut rng, N, 1024.0);
    let mut g16 = f16_rows.then(|| to_half::<f16>(&dev, &g32));
    let mut gb = bf16_rows.then(|| to_half::<bf16>(&dev, &g32));

    // unscale_check: unscale (read + write) and check only (read). A check writes nothing
    // but found_inf, so the checks read the shared gradients.
    {
        let mut found = Tensor::<f32>::zeros(&dev, &[1]).unwrap();
        let s = scalars.scale.view();
        if f16_rows {
            // Unscaled in place on every run: a buffer of its own.
            let mut gu = random::<f32>(&dev, &mut rng, N, 1024.0);
            let mut run = || unscale_check(&dev, &mut gu.view_mut(), Some(&s), &mut found.view_mut()).unwrap();
            time_row(&mut c, &dev, &mut rows, "unscale_check_f32 (unscale)", N, 8 * N, &mut run);
            let mut run = || unscale_check(&dev, &mut g32.view_mut(), None, &mut found.view_mut()).unwrap();
            time_row(&mut c, &dev, &mut rows, "unscale_check_f32 (check only)", N, 4 * N, &mut run);
        }
        if let Some(g) = g16.as_mut() {
            let mut run = || unscale_check(&dev, &mut g.view_mut(), None, &mut found.view_mut()).unwrap();
            time_row(&mut c, &dev, &mut rows, "unscale_check_f16 (check only)", N, 2 * N, &mut run);
        }
        if let Some(g) = gb.as_mut() {
            let mut run = || unscale_check(&dev, &mut g.view_mut(), None, &mut found.view_mut()).unwrap();
            time_row(&mut c, &dev, &mut rows, "unscale_check_bf16 (check only)", N, 2 * N, &mut run);
        }
    }

    // AdamW over one shared f32 state, updated in place by every row. Minimum bytes per
    // element (cuda/adam.cu): master weights with f32 grads 30, half grads 28, whichever
    // half the copy is; pure bf16 with f32 grads 24, bf16 grads 22.
    {
        let mut st = Master {
            p: random::<f32>(&dev, &mut rng, N, 0.1),
            m: random::<f32>(&dev, &mut rng, N, 1e-3),
            v: Tensor::from_host(&dev, &vec![1e-6f32; N], &[N]).unwrap(),
        };
        let d = &dev;
        let sc = &mut scalars;
        if let Some(g16) = g16.as_ref() {
            let mut copy = Tensor::<f16>::zeros(d, &[N]).unwrap();
            let mut run = || adam_master(d, &mut st, &g32, &mut copy, sc);
            time_row(&mut c, d, &mut rows, "adamw_step_f32 (f16 copy)", N, 30 * N, &mut run);
            let mut run = || adam_master(d, &mut st, g16, &mut copy, sc);
            time_row(&mut c, d, &mut rows, "adamw_step_f16 (f16 copy)", N, 28 * N, &mut run);
        }
        if let Some(gb) = gb.as_ref() {
            let mut copy = Tensor::<bf16>::zeros(d, &[N]).unwrap();
            let mut run = || adam_master(d, &mut st, &g32, &mut copy, sc);
            time_row(&mut c, d, &mut rows, "adamw_step_f32 (bf16 copy)", N, 30 * N, &mut run);
            let mut run = || adam_master(d, &mut st, gb, &mut copy, sc);
            time_row(&mut c, d, &mut rows, "adamw_step_bf16 (bf16 copy)", N, 28 * N, &mut run);
            // Pure bf16: the weights are the master weights rounded to bf16.
            let mut p = to_half::<bf16>(d, &st.p);
            let mut run = || adam_pure(d, &mut st, &mut p, &g32, sc);
            time_row(&mut c, d, &mut rows, "adamw_pure_f32", N, 24 * N, &mut run);
            let mut run = || adam_pure(d, &mut st, &mut p, gb, sc);
            time_row(&mut c, d, &mut rows, "adamw_pure_bf16", N, 22 * N, &mut run);
        }
    }
    drop((g32, g16, gb));

    // The whole optimizer phase over a 350M-parameter arena with f32 gradients:
    // check (4 B) + AdamW with the fp16 copy (30 B) + the one-thread scale update.
    if f16_rows {
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
        let name = "optimizer phase, 350M params (check + adamw_step + update_scale)";
        rows.push((
            name.into(),
            PHASE_PARAMS,
            34 * PHASE_PARAMS,
            common::median_seconds(&dev, WARMUP, RUNS, &mut phase),
        ));
        let mut group = c.benchmark_group("optim");
        group.throughput(Throughput::Bytes(34 * PHASE_PARAMS as u64));
        group.bench_function(BenchmarkId::new("phase", PHASE_PARAMS), |b| {
            b.iter_custom(|it| common::time_gpu(&dev, it, &mut phase))
        });
        group.finish();
    }
    c.final_summary();

    // The baseline: one random source, copied in prefixes of each row's size (half the
    // row's bytes read, half written), once per distinct size.
    let most = rows.iter().map(|r| r.2).max().unwrap_or(0) / 8;
    let src = Tensor::<f32>::from_host(&dev, &Rng::new(1).uniform_vec(most, -1.0, 1.0), &[most]).unwrap();
    let mut dst = Tensor::<f32>::zeros(&dev, &[most]).unwrap();
    let stream = dev.stream().clone();
    let mut copies: Vec<(usize, f64)> = Vec::new();
    println!("\nmedian of {RUNS} after {WARMUP} warm-up runs, CUDA events; baseline: device-to-device copy moving the same bytes");
    println!("| kernel | bytes moved | ours | baseline | ratio |\n|---|---|---|---|---|");
    for (name, n, bytes, ours) in rows {
        let copy = match copies.iter().find(|c| c.0 == bytes) {
            Some(&(_, s)) => s,
            None => {
                let k = bytes / 8;
                let s = common::median_seconds(&dev, WARMUP, RUNS, || {
                    stream.memcpy_dtod(&src.view().slice(..k), &mut dst.view_mut().slice_mut(..k)).unwrap()
                });
                copies.push((bytes, s));
                s
            }
        };
        common::print_bandwidth_row(&name, n, bytes as f64, ours, "copy_dtod", copy);
    }
}
