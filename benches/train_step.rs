//! Bench group `train_step`: time per TrainStep::step for the digits Mlp at batch 256
//! (launch-bound) and for a 1024-4096-4096-4096-1024 Mlp at batch 8192 (GEMM-bound),
//! eager and replayed from a CUDA graph, with the model FLOP rate of the second; then
//! GPT-2 small (`GptConfig::gpt2_small()`, 124M) at 16 x 1024 tokens per step, f16 with
//! loss scaling and bf16 without, eager and graph-replayed, in tokens/s and MFU. Each
//! step includes copying its batch to the device, as a training loop does. The PyTorch
//! comparison is bench/pytorch/ (run on the same GPU; it reads this bench's tables from
//! the log of the same run).
//!
//! `MIXED_PRECISION_BENCH_HALF=f16|bf16` runs one half type's rows (the Mlp rows are f16).

mod common;

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion};
use mixed_precision::backend::cuda::Cuda;
use mixed_precision::backend::TransformerBackend;
use mixed_precision::half::bf16;
use mixed_precision::kernels::gemm::Activation;
use mixed_precision::nn::{Gpt, GptConfig, Mlp};
use mixed_precision::rng::Rng;
use mixed_precision::{DType, Device, TrainConfig, TrainStep};

const WARMUP: u32 = 5;
const RUNS: u32 = 30;

/// GPT-2 small's batch: 16 sequences of its full 1024-token context, 16384 tokens per
/// step. Enough rows (B T = 16384) to keep every GEMM of the step large, as GPT-2 runs do
/// (nanoGPT: 12 x 1024 per micro-batch, llm.c: 64 x 1024), while both sides fit an 80 GB
/// H100 with room to spare. Ours, estimated from the buffers: the attention keeps its
/// 12 x 1024 x 1024 probabilities per sequence and layer in the half type (4.8 GB), the
/// logits are 16384 x 50304 halves (1.6 GB, and their gradient), the rest of the saved
/// activations a few GB more; PyTorch's eager AMP step at this size is of the same order
/// (nanoGPT trains 12 x 1024 on 40 GB A100s). bench/pytorch/side_by_side.py times
/// PyTorch at the same B and T (`GPT2_BATCH`) and checks this bench's log says so.
const GPT_BATCH: usize = 16;
/// A step is tens of milliseconds: fewer runs than the Mlp's keep the rows to seconds.
const GPT_WARMUP: u32 = 3;
const GPT_RUNS: u32 = 10;

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
    // The Mlp steps compute in f16 (TrainConfig::default()).
    for case in CASES.iter().filter(|_| common::runs_half(DType::F16)) {
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
    let gpt_rows = gpt_rows(&dev);
    if !table.is_empty() {
        println!(
            "\nmedian of {RUNS} steps after {WARMUP} warm-up steps, CUDA events; each step includes the batch upload"
        );
        println!(
            "| model | batch | eager | graph replay | speed-up | model TFLOP/s (graph) |\n|---|---|---|---|---|---|"
        );
    }
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
    print_gpt_table(&dev, &gpt_rows);
    if gpt_rows.iter().any(|r| r.seconds.as_ref().is_err_and(|why| why.starts_with("FAILED"))) {
        eprintln!("train_step: a GPT-2 small row failed (see the table)");
        std::process::exit(1);
    }
}

/// One GPT-2 small row: the half type and whether the steps replay a CUDA graph, and the
/// median seconds per step, or why the row was not run ("not run: ...") or failed
/// ("FAILED: ...").
struct GptRow {
    half: DType,
    graphs: bool,
    seconds: Result<f64, String>,
}

/// GPT-2 small's rows this run asks for (see [`common::runs_half`]): f16 with dynamic loss
/// scaling and bf16 without (TrainConfig::f16() and ::bf16(): fp32 master weights, AdamW
/// at PyTorch's defaults, no clipping, constant learning rate), each eager and replayed.
/// bf16 needs the tensor cores of sm_80 and newer; below that its rows say so.
fn gpt_rows(dev: &Arc<Device>) -> Vec<GptRow> {
    let (f16_rows, bf16_rows) = (common::runs_half(DType::F16), common::runs_half(DType::BF16));
    if !f16_rows && !bf16_rows {
        return Vec::new();
    }
    let cfg = GptConfig::gpt2_small();
    let gpt = Gpt::new(cfg).unwrap();
    println!("\nGPT-2 small: {} parameters, {GPT_BATCH} x {} tokens per step", gpt.num_params(), cfg.context);
    let init = gpt.init(1);
    let mut rng = Rng::new(2);
    let tokens = GPT_BATCH * cfg.context;
    let seq: Vec<u32> = (0..tokens + 1).map(|_| rng.below(cfg.vocab as u64) as u32).collect();
    let (x, y) = (&seq[..tokens], &seq[1..]);
    let cc = dev.info().compute_capability;
    let mut rows = Vec::new();
    for graphs in [false, true] {
        if f16_rows {
            let seconds = time_gpt(dev, Cuda::new(dev), &gpt, &init, TrainConfig::f16(), graphs, x, y);
            rows.push(GptRow { half: DType::F16, graphs, seconds });
        }
        if bf16_rows {
            let seconds = if cc.0 >= 8 {
                time_gpt(dev, Cuda::<bf16>::with_half(dev), &gpt, &init, TrainConfig::bf16(), graphs, x, y)
            } else {
                Err(format!("not run: sm_{}{} has no bf16 tensor cores (sm_80 and newer)", cc.0, cc.1))
            };
            rows.push(GptRow { half: DType::BF16, graphs, seconds });
        }
    }
    rows
}

/// Median seconds per GPT step (CUDA events) on `be`, from `init`, on the batch `x`, `y`,
/// or why the row failed: an error, a non-finite loss, a failed capture, timed steps that
/// were not replays. A row's failure is printed in the table (the other rows still run
/// and print) and makes the bench exit with status 1. The step is dropped before the next
/// row builds its own, so one row's buffers never share the device with another's.
#[allow(clippy::too_many_arguments)]
fn time_gpt<B: TransformerBackend + 'static>(
    dev: &Arc<Device>,
    be: B,
    gpt: &Gpt,
    init: &[Vec<f32>],
    cfg: TrainConfig,
    graphs: bool,
    x: &[u32],
    y: &[u32],
) -> Result<f64, String> {
    let what = format!("gpt2_small {} {}", cfg.precision, if graphs { "graph" } else { "eager" });
    println!("  timing {what} ...");
    let failed = |why: String| {
        eprintln!("{what}: {why}");
        format!("FAILED: {why}")
    };
    let mut step =
        TrainStep::new(be, gpt.clone(), init, TrainConfig { graphs, ..cfg }).map_err(|e| failed(e.to_string()))?;
    let mut error = None;
    let t = common::median_seconds(dev, GPT_WARMUP, GPT_RUNS, || {
        if error.is_none() {
            error = step.step(x, y).err();
        }
    });
    if let Some(e) = error {
        return Err(failed(e.to_string()));
    }
    let loss = step.loss().map_err(|e| failed(e.to_string()))?;
    if !loss.is_finite() {
        return Err(failed(format!("the loss is {loss} after the timed steps")));
    }
    if let Some(e) = step.graph_error() {
        return Err(failed(format!("CUDA graph capture failed: {e}")));
    }
    match (graphs, step.graph_replays()) {
        (true, r) if r < GPT_RUNS as u64 => Err(failed(format!("{r} graph replays: the timed steps were not replays"))),
        (false, r) if r > 0 => Err(failed(format!("{r} graph replays in an eager run"))),
        _ => Ok(t),
    }
}

/// The GPT-2 small table: time per step, tokens/s and MFU (model FLOPs per token,
/// `Gpt::flops_per_token`, times tokens/s, over the device's dense half peak). The row
/// format is what bench/pytorch/side_by_side.py reads from this bench's log.
fn print_gpt_table(dev: &Device, rows: &[GptRow]) {
    if rows.is_empty() {
        return;
    }
    let cfg = GptConfig::gpt2_small();
    let gpt = Gpt::new(cfg).unwrap();
    let (t, tokens) = (cfg.context, (GPT_BATCH * cfg.context) as f64);
    let flops_per_token = gpt.flops_per_token(t);
    let name = &dev.info().name;
    let peak = common::peak_half_flops(name);
    println!(
        "\nGPT-2 small, B={GPT_BATCH} T={t}: median of {GPT_RUNS} steps after {GPT_WARMUP} warm-up steps, CUDA events; \
         each step includes the token upload; model FLOPs {:.3} GFLOP per token (6 N + 12 L C T)",
        flops_per_token / 1e9
    );
    match peak {
        Some((p, product)) => {
            println!("MFU peak: {:.1} TFLOP/s, the dense f16/bf16 tensor-core rate of the {product}", p / 1e12)
        }
        None => println!("MFU peak: unknown for {name:?} (not in benches/common peak_half_flops): MFU n/a"),
    }
    println!("| model | precision | mode | time per step | tokens/s | MFU |\n|---|---|---|---|---|---|");
    for r in rows {
        let precision = if r.half == DType::F16 { "f16 (loss scaling)" } else { "bf16 (no scaling)" };
        let mode = if r.graphs { "graph" } else { "eager" };
        match &r.seconds {
            Ok(s) => {
                let mfu = peak
                    .map_or("n/a".to_string(), |(p, _)| format!("{:.1}%", 100.0 * flops_per_token * tokens / s / p));
                println!(
                    "| gpt2_small B={GPT_BATCH} T={t} | {precision} | {mode} | {:.2} ms | {:.0} | {mfu} |",
                    s * 1e3,
                    tokens / s
                );
            }
            Err(why) => println!("| gpt2_small B={GPT_BATCH} T={t} | {precision} | {mode} | {why} | | |"),
        }
    }
}
