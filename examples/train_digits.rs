//! The main job: trains an MLP 64-128-128-10 (ReLU) on the digits data set with the
//! mixed-precision step (f16 or bf16 forward and backward, fp32 master weights, AdamW;
//! dynamic loss scaling with f16, none with bf16, as PyTorch AMP), on the GPU when there
//! is one and on the CPU's emulation of the same rounding otherwise, next to the fp32
//! reference run on the CPU from the same initial weights and batches. Prints the test
//! accuracy of both and writes their loss curves.
//!
//!     cargo run --release --example train_digits -- [--steps 600] [--batch 64] [--lr 3e-3]
//!         [--precision f16|bf16] [--weights master|pure] [--backend auto|cuda|cpu]
//!         [--seed 0] [--out target/train_digits]
//!
//! `--weights pure` (bf16 only) keeps no fp32 master copy: AdamW updates the bf16 weights
//! with stochastic rounding seeded by --seed.
//! Output in --out: loss.svg (the two loss curves), loss.csv (step, mixed, fp32, scale).

#[path = "common/digits.rs"]
mod digits;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use mixed_precision::backend::cpu::Cpu;
use mixed_precision::backend::cuda::Cuda;
use mixed_precision::backend::Backend;
use mixed_precision::half::bf16;
use mixed_precision::{DType, Device, Error, TrainConfig};
use plotters::prelude::*;

use digits::{Digits, RunConfig};

struct Args {
    run: RunConfig,
    backend: String,
    precision: DType,
    pure: bool,
    out: PathBuf,
}

impl Args {
    /// The step's settings: the precision policy of TrainConfig (scaling on for f16, off
    /// for bf16), pure-bf16 weights seeded by --seed when asked.
    fn train_config(&self) -> TrainConfig {
        match (self.precision, self.pure) {
            (DType::BF16, true) => TrainConfig::pure_bf16(self.run.seed),
            (DType::BF16, false) => TrainConfig::bf16(),
            _ => TrainConfig::f16(),
        }
    }

    /// How the mixed run keeps its weights and scales its loss, for the output.
    fn describe(&self) -> String {
        let weights = if self.pure { "pure bf16 weights, stochastic rounding" } else { "fp32 master weights" };
        let scaling = if self.train_config().scaler.enabled { "dynamic loss scaling" } else { "no loss scaling" };
        format!("{} compute, {weights}, {scaling}", self.precision)
    }
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        run: RunConfig::default(),
        backend: "auto".into(),
        precision: DType::F16,
        pure: false,
        out: PathBuf::from("target/train_digits"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--steps" => a.run.steps = value()?.parse().map_err(|e| format!("--steps: {e}"))?,
            "--batch" => a.run.batch = value()?.parse().map_err(|e| format!("--batch: {e}"))?,
            "--lr" => a.run.lr = value()?.parse().map_err(|e| format!("--lr: {e}"))?,
            "--seed" => a.run.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--backend" => a.backend = value()?,
            "--precision" => {
                a.precision = match value()?.as_str() {
                    "f16" => DType::F16,
                    "bf16" => DType::BF16,
                    other => return Err(format!("--precision {other}: expected f16 or bf16")),
                }
            }
            "--weights" => {
                a.pure = match value()?.as_str() {
                    "master" => false,
                    "pure" => true,
                    other => return Err(format!("--weights {other}: expected master or pure")),
                }
            }
            "--out" => a.out = PathBuf::from(value()?),
            "-h" | "--help" => {
                return Err("usage: train_digits [--steps N] [--batch N] [--lr X] [--precision f16|bf16] \
                            [--weights master|pure] [--backend auto|cuda|cpu] [--seed N] [--out DIR]"
                    .into())
            }
            other => return Err(format!("unknown flag {other} (try --help)")),
        }
    }
    if a.run.batch == 0 {
        return Err("--batch must be at least 1".into());
    }
    if a.pure && a.precision != DType::BF16 {
        return Err("--weights pure needs --precision bf16".into());
    }
    Ok(a)
}

/// One run with a progress bar; returns the per-step losses and scales and the test accuracy.
fn run<B: Backend>(
    be: B,
    label: &str,
    train: &Digits,
    test: &Digits,
    cfg: &RunConfig,
    tcfg: TrainConfig,
) -> mixed_precision::Result<(Vec<f32>, Vec<f32>, f32)> {
    let bar = ProgressBar::new(cfg.steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>6} [{bar:30}] {pos}/{len} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    let (mut losses, mut scales) = (Vec::new(), Vec::new());
    let step = digits::train(be, train, cfg, tcfg, |s, loss, scale| {
        losses.push(loss);
        scales.push(scale);
        if s % 10 == 0 || s + 1 == cfg.steps {
            bar.set_message(format!("loss {loss:.4}  scale {scale}"));
        }
        bar.inc(1);
    })?;
    bar.finish();
    if let Some(why) = step.graph_error() {
        println!("{label}: CUDA graph capture failed, ran eagerly: {why}");
    } else if step.graph_replays() > 0 {
        println!("{label}: {} of {} steps replayed from a CUDA graph", step.graph_replays(), cfg.steps);
    }
    let acc = step.accuracy(&test.x, &test.y)?;
    Ok((losses, scales, acc))
}

fn plot(
    path: &std::path::Path,
    mixed: &[f32],
    fp32: &[f32],
    mixed_label: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let top = mixed.iter().chain(fp32).copied().filter(|v| v.is_finite()).fold(0.0f32, f32::max).max(1e-3);
    let mut chart = ChartBuilder::on(&root)
        .caption("digits MLP 64-128-128-10: training loss", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0..mixed.len().max(fp32.len()), 0f32..top * 1.05)?;
    chart.configure_mesh().x_desc("step").y_desc("cross-entropy").draw()?;
    let finite =
        |v: &[f32]| v.iter().enumerate().filter(|(_, l)| l.is_finite()).map(|(i, &l)| (i, l)).collect::<Vec<_>>();
    chart
        .draw_series(LineSeries::new(finite(mixed), &RED))?
        .label(mixed_label)
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .draw_series(LineSeries::new(finite(fp32), &BLUE))?
        .label("fp32 reference (CPU)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;
    root.present()?;
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match main_with(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main_with(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let data = digits::load(&digits::default_path())?;
    let (train, test) = data.split(digits::TEST_FRACTION, args.run.seed);
    println!(
        "digits: {} training and {} test images; MLP {:?}, ReLU; {} steps of {} at lr {}; {}",
        train.len(),
        test.len(),
        digits::WIDTHS,
        args.run.steps,
        args.run.batch,
        args.run.lr,
        args.describe()
    );
    let device = match args.backend.as_str() {
        "auto" | "cuda" => match Device::new(0) {
            Ok(dev) => Some(dev),
            Err(e @ (Error::NoDriver | Error::NoDevice { .. })) if args.backend == "auto" => {
                println!("no GPU ({e}); the mixed run uses the CPU's {} emulation", args.precision);
                None
            }
            Err(e) => return Err(e.into()),
        },
        "cpu" => None,
        other => return Err(format!("--backend {other}: expected auto, cuda or cpu").into()),
    };
    // The CUDA driver emulator (emu/, README "The emulator") runs the same code on the
    // CPU: its run is labelled so, and its time is not printed as if it were a GPU's.
    let emulated = device.as_ref().is_some_and(|d| d.info().is_emulator());
    let started = Instant::now();
    let tcfg = args.train_config();
    let p = args.precision;
    let (mixed_label, (mixed, scales, mixed_acc)) = match device {
        Some(dev) => {
            let label =
                if emulated { format!("{p} mixed (CUDA emulator, on the CPU)") } else { format!("{p} mixed (GPU)") };
            let result = if p == DType::BF16 {
                let be = Cuda::<bf16>::with_half(&dev);
                println!("mixed run: {}", be.describe());
                run(be, "mixed", &train, &test, &args.run, tcfg)?
            } else {
                let be = Cuda::new(&dev);
                println!("mixed run: {}", be.describe());
                run(be, "mixed", &train, &test, &args.run, tcfg)?
            };
            (label, result)
        }
        None => {
            let be = if p == DType::BF16 { Cpu::mixed_bf16() } else { Cpu::mixed() };
            println!("mixed run: {}", be.describe());
            (format!("{p} mixed (CPU emulation)"), run(be, "mixed", &train, &test, &args.run, tcfg)?)
        }
    };
    let mixed_time = started.elapsed();
    // The fp32 reference takes the same settings (its loss scale, if any, is exact).
    let (fp32, _, fp32_acc) = run(Cpu::fp32(), "fp32", &train, &test, &args.run, tcfg)?;

    std::fs::create_dir_all(&args.out)?;
    let mut csv = String::from("step,mixed_loss,fp32_loss,loss_scale\n");
    for (i, ((m, f), s)) in mixed.iter().zip(&fp32).zip(&scales).enumerate() {
        csv.push_str(&format!("{i},{m},{f},{s}\n"));
    }
    std::fs::write(args.out.join("loss.csv"), csv)?;
    let svg = args.out.join("loss.svg");
    plot(&svg, &mixed, &fp32, &mixed_label)?;

    let last = |v: &[f32]| v.last().copied().unwrap_or(f32::NAN);
    let time = if emulated { "emulated, not a GPU time".to_string() } else { format!("{mixed_time:.1?}") };
    println!(
        "mixed ({}): final loss {:.4}, test accuracy {:.2}% ({time})",
        args.describe(),
        last(&mixed),
        100.0 * mixed_acc
    );
    println!("fp32:  final loss {:.4}, test accuracy {:.2}%", last(&fp32), 100.0 * fp32_acc);
    println!("loss curves: {} and {}", svg.display(), args.out.join("loss.csv").display());
    Ok(())
}
