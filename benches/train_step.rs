//! Bench group `train_step`: time per TrainStep::step for the digits Mlp at batch 256
//! (launch-bound) and for a 1024-4096-4096-4096-1024 Mlp at batch 8192 (GEMM-bound),
//! eager and replayed from a CUDA graph, with the model FLOP rate of the second. Each
//! step includes copying its batch to the device, as a training loop does. The PyTorch
//! comparison is bench/pytorch/ (run on the same GPU).

mod common;

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion};
use mixed_precision::backend::cuda::Cuda;
use mixed_precision::kernels::gemm::Activation;
use mixed_precision::nn::Mlp;
use mixed_precision::rng::Rng;
use mixed_precision::{Device, TrainConfig, TrainStep};

const WARMUP: u32 = 5;
const RUNS: u32 = 30;

struct Case {
    name: &'static str,
    widths: &'static [usize],
    batch: usize,
    activation: Activation,
}

const CASES: &[Case] = &[
    Case { name: "digits_mlp", widths: &[64, 128, 128, 10], batch: 256, activation: Activation::Relu },
    Case { name: "mlp_4096", widths: &[1024, 4096, 4096, 4096, 1024], batch: 8192, activation: Activation::Gelu },
];

/// Median seconds per step, the graph replays so far, and the step (to go on timing).
fn time_steps(dev: &Arc<Device>, case: &Case, graphs: bool) -> (f64, u64, TrainStep<Cuda>) {
    let model = Mlp::new(case.widths, case.activation).unwrap();
    let init = model.init(1);
    let cfg = TrainConfig { graphs, ..TrainConfig::default() };
    let mut step = TrainStep::new(Cuda::new(dev), model, &init, cfg).unwrap();
    let mut rng = Rng::new(2);
    let x = rng.uniform_vec(case.batch * case.widths[0], -1.0, 1.0);
    let classes = *case.widths.last().unwrap() as u64;
    let y: Vec<u32> = (0..case.batch).map(|_| rng.below(classes) as u32).collect();
    let t = common::median_seconds(dev, WARMUP, RUNS, || step.step(&x, &y).unwrap());
    let replays = step.graph_replays();
    (t, replays, step)
}

fn main() {
    let Some(dev) = common::gpu("train_step") else { return };
    let mut c = Criterion::default().configure_from_args().sample_size(10);
    let mut table = Vec::new();
    for case in CASES {
        let macs = Mlp::new(case.widths, case.activation).unwrap().macs_per_sample() as f64;
        // Forward 2 flops per multiply-add, backward 4 (dX and dW), per sample.
        let flops = 6.0 * macs * case.batch as f64;
        let mut times = Vec::new();
        for graphs in [false, true] {
            let (t, replays, mut step) = time_steps(&dev, case, graphs);
            if graphs {
                assert!(step.graph_error().is_none(), "{}: capture failed: {:?}", case.name, step.graph_error());
                assert!(replays >= RUNS as u64, "{}: the timed steps were not replays", case.name);
            }
            let mode = if graphs { "graph" } else { "eager" };
            let mut group = c.benchmark_group("train_step");
            let rng_x = Rng::new(3).uniform_vec(case.batch * case.widths[0], -1.0, 1.0);
            let y: Vec<u32> = (0..case.batch).map(|i| (i % case.widths.last().unwrap()) as u32).collect();
            group.bench_function(BenchmarkId::new(format!("{}_{mode}", case.name), case.batch), |b| {
                b.iter_custom(|it| common::time_gpu(&dev, it, || step.step(&rng_x, &y).unwrap()))
            });
            group.finish();
            times.push(t);
        }
        table.push((case, flops, times));
    }
    println!("\nmedian of {RUNS} steps after {WARMUP} warm-up steps, CUDA events; each step includes the batch upload");
    println!("| model | batch | eager | graph replay | speed-up | model TFLOP/s (graph) |\n|---|---|---|---|---|---|");
    for (case, flops, t) in table {
        println!(
            "| {} {:?} | {} | {:.1} us | {:.1} us | {:.2}x | {:.1} |",
            case.name,
            case.widths,
            case.batch,
            t[0] * 1e6,
            t[1] * 1e6,
            t[0] / t[1],
            flops / t[1] / 1e12
        );
    }
}
