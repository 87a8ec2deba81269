//! The fixed cases of the cost report (issue 15, "Cost model"): each kernel family once
//! on CUDA device 0, whatever it is. On the emulator with `MP_EMU_COST=<file>` every
//! launch appends its counters to that file; `scripts/emu-profile.sh` runs one case per
//! process and `scripts/cost_table.py` turns the lines into bench/results/<date>-emulated/
//! cost.md. On a real GPU the same program is a fixed workload for a profiler.
//!
//!     cargo run --release --example cost_cases -- list        # the case names
//!     cargo run --release --example cost_cases -- CASE...     # run these cases
//!     cargo run --release --example cost_cases -- all         # every case
//!
//! Protocol on stdout, one line each, read by scripts/cost_table.py:
//!
//!     case NAME: DESCRIPTION
//!     info NAME KEY=VALUE...        the shape the minimum bytes are computed from
//!     begin NAME OFFSET             OFFSET: lines in $MP_EMU_COST so far ("-" if unset)
//!     end NAME OFFSET
//!
//! The launches of a case are the cost lines in [begin, end): set-up (uploads, the
//! training step's warm-up) happens before `begin`, and the device is synchronized at
//! both marks. A case may print several begin/end pairs (the training step repeats when
//! the loss scale made its step a skipped one); the last pair is the measured one.
//! Data are random and non-zero, from fixed seeds.

#[path = "common/digits.rs"]
mod digits;

use std::process::ExitCode;
use std::sync::Arc;

use mixed_precision::backend::cuda::Cuda;
use mixed_precision::half::f16;
use mixed_precision::kernels::adam::{adamw_step, adamw_step_multi, AdamConfig, AdamScalars, AdamTensors};
use mixed_precision::kernels::cast::{cast_f16_f32, cast_f32_f16};
use mixed_precision::kernels::gemm::{gemm, Activation, Bias, Epilogue, GemmShape, Transpose};
use mixed_precision::kernels::loss_scale::{update_scale, ScaleRule};
use mixed_precision::kernels::unscale::{unscale_check, unscale_check_multi};
use mixed_precision::nn::Mlp;
use mixed_precision::rng::Rng;
use mixed_precision::{Device, Element, Tensor, TrainConfig, TrainStep};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Elements of the flat cases: 1 Mi, 16-byte aligned (a fresh allocation).
const FLAT: usize = 1 << 20;

/// The multi-tensor cases' list: 20 tensors of mixed sizes, 7 of them not multiples of 8
/// (the scalar tails), five over more than one 64 Ki-element chunk; 1,121,588 elements in all.
const LIST: [usize; 20] = [
    262_144, 1_000, 65_536, 7, 131_075, 4_096, 512, 100_003, 16_384, 10, 196_608, 2_049, 50_000, 128, 32_768, 999,
    8_192, 64, 250_000, 13,
];

/// The GEMM size: 1024^3.
const GEMM: usize = 1024;

/// The GEMM epilogues of the issue.
#[derive(Clone, Copy)]
enum Epi {
    /// C f32, no bias, no activation.
    Plain,
    /// C f32, f32 bias, ReLU.
    BiasRelu,
    /// C f16, f16 bias, GELU, the f16 pre-activation written too.
    F16BiasGeluPre,
}

const LAYOUTS: [(&str, Transpose, Transpose); 4] = [
    ("nn", Transpose::N, Transpose::N),
    ("nt", Transpose::N, Transpose::T),
    ("tn", Transpose::T, Transpose::N),
    ("tt", Transpose::T, Transpose::T),
];

const EPILOGUES: [(&str, Epi); 3] =
    [("f32", Epi::Plain), ("f32_bias_relu", Epi::BiasRelu), ("f16_bias_gelu_pre", Epi::F16BiasGeluPre)];

/// Every case name with its description, in the report's order.
fn cases() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = [
        ("cast_f32_f16", "cast f32 -> f16, 1 Mi elements"),
        ("cast_f16_f32", "cast f16 -> f32, 1 Mi elements"),
        ("unscale_f32", "unscale_check f32, flat 1 Mi, with scale (unscale + check)"),
        ("unscale_f16", "unscale_check f16, flat 1 Mi, with scale (unscale + check)"),
        ("check_f32", "unscale_check f32, flat 1 Mi, no scale (check only)"),
        ("check_f16", "unscale_check f16, flat 1 Mi, no scale (check only)"),
        ("unscale_multi_f32", "unscale_check_multi f32, 20 tensors (1,121,588 elements), with scale"),
        ("check_multi_f16", "unscale_check_multi f16, 20 tensors (1,121,588 elements), check only"),
        ("adamw_f32", "adamw_step, f32 grads, flat 1 Mi, scale + found_inf + fp16 copy"),
        ("adamw_f16", "adamw_step, f16 grads, flat 1 Mi, scale + found_inf + fp16 copy"),
        ("adamw_multi_f32", "adamw_step_multi, f32 grads, 20 tensors (1,121,588 elements), scale + copy"),
        ("update_scale", "update_scale, one thread, three device scalars"),
    ]
    .iter()
    .map(|(n, d)| (n.to_string(), d.to_string()))
    .collect();
    let what = |epi| match epi {
        Epi::Plain => "C f32, alpha 1, beta 0",
        Epi::BiasRelu => "C f32, f32 bias, ReLU",
        Epi::F16BiasGeluPre => "C f16, f16 bias, GELU, f16 pre-activation",
    };
    for (l, _, _) in LAYOUTS {
        for (e, epi) in EPILOGUES {
            v.push((format!("gemm_{l}_{e}"), format!("gemm {} 1024^3, {}", l.to_uppercase(), what(epi))));
        }
    }
    // The epilogue alone: the full GEMM minus this is its main loop.
    for (e, epi) in EPILOGUES {
        v.push((format!("gemm_k0_{e}"), format!("gemm NN 1024 x 1024 x 0 (epilogue alone), {}", what(epi))));
    }
    v.push((
        "train_step".into(),
        "one digits training step (MLP 64-128-128-10 ReLU, batch 64) after warm-up, replayed from its CUDA graph"
            .into(),
    ));
    v
}

/// Lines in the cost file so far, or "-" when the emulator is not counting.
fn cost_offset() -> String {
    match std::env::var("MP_EMU_COST") {
        Ok(p) if !p.is_empty() => match std::fs::read(&p) {
            Ok(b) => b.iter().filter(|&&c| c == b'\n').count().to_string(),
            Err(_) => "0".into(),
        },
        _ => "-".into(),
    }
}

/// Runs `body` between the begin and end marks, the device synchronized at both.
fn measured<T>(dev: &Device, name: &str, body: impl FnOnce() -> Res<T>) -> Res<T> {
    dev.synchronize()?;
    println!("begin {name} {}", cost_offset());
    let r = body()?;
    dev.synchronize()?;
    println!("end {name} {}", cost_offset());
    Ok(r)
}

fn random<T: Element>(rng: &mut Rng, n: usize, scale: f32) -> Vec<T> {
    // Normal values, nudged away from zero: every element non-zero.
    (0..n)
        .map(|_| {
            let x = rng.normal() * scale;
            T::from_f32(if x.abs() < 1e-3 * scale { 1e-3 * scale } else { x })
        })
        .collect()
}

fn upload<T: Element>(dev: &Arc<Device>, rng: &mut Rng, n: usize, scale: f32) -> Res<Tensor<T>> {
    Ok(Tensor::from_host(dev, &random::<T>(rng, n, scale), &[n])?)
}

fn run_cast(dev: &Arc<Device>, name: &str, to_f16: bool) -> Res<()> {
    let mut rng = Rng::new(1);
    println!("info {name} n={FLAT}");
    if to_f16 {
        let x = upload::<f32>(dev, &mut rng, FLAT, 1.0)?;
        let mut y = Tensor::<f16>::zeros(dev, &[FLAT])?;
        measured(dev, name, || Ok(cast_f32_f16(dev, &x.view(), &mut y.view_mut())?))
    } else {
        let x = upload::<f16>(dev, &mut rng, FLAT, 1.0)?;
        let mut y = Tensor::<f32>::zeros(dev, &[FLAT])?;
        measured(dev, name, || Ok(cast_f16_f32(dev, &x.view(), &mut y.view_mut())?))
    }
}

fn run_unscale<G: Element>(dev: &Arc<Device>, name: &str, lens: &[usize], with_scale: bool) -> Res<()> {
    let mut rng = Rng::new(2);
    let mode = if with_scale { "unscale" } else { "check" };
    println!("info {name} n={} tensors={} mode={mode} dtype={}", lens.iter().sum::<usize>(), lens.len(), G::DTYPE);
    let mut grads = lens.iter().map(|&n| upload::<G>(dev, &mut rng, n, 8.0)).collect::<Res<Vec<_>>>()?;
    let scale = Tensor::from_host(dev, &[1024.0f32], &[1])?;
    let mut found = Tensor::from_host(dev, &[0.0f32], &[1])?;
    let s = scale.view();
    let s = with_scale.then_some(&s);
    measured(dev, name, || {
        if let [g] = grads.as_mut_slice() {
            unscale_check(dev, &mut g.view_mut(), s, &mut found.view_mut())?;
        } else {
            let mut views: Vec<_> = grads.iter_mut().map(|g| g.view_mut()).collect();
            unscale_check_multi(dev, &mut views, s, &mut found.view_mut())?;
        }
        Ok(())
    })?;
    if found.to_host()?[0] != 0.0 {
        return Err(format!("{name}: found_inf raised on finite data").into());
    }
    Ok(())
}

/// One tensor's optimizer state on the device.
struct AdamState<G: Element> {
    p: Tensor<f32>,
    g: Tensor<G>,
    m: Tensor<f32>,
    v: Tensor<f32>,
    copy: Tensor<f16>,
}

fn run_adam<G: Element>(dev: &Arc<Device>, name: &str, lens: &[usize]) -> Res<()> {
    let mut rng = Rng::new(3);
    println!("info {name} n={} tensors={} dtype={}", lens.iter().sum::<usize>(), lens.len(), G::DTYPE);
    let mut states = lens
        .iter()
        .map(|&n| {
            Ok(AdamState {
                p: upload::<f32>(dev, &mut rng, n, 0.1)?,
                g: upload::<G>(dev, &mut rng, n, 4.0)?,
                m: upload::<f32>(dev, &mut rng, n, 1e-3)?,
                // Second moments must be positive.
                v: Tensor::from_host(dev, &rng.uniform_vec(n, 1e-7, 1e-6), &[n])?,
                copy: Tensor::<f16>::zeros(dev, &[n])?,
            })
        })
        .collect::<Res<Vec<_>>>()?;
    let mut step = Tensor::from_host(dev, &[3.0f32], &[1])?;
    let scale = Tensor::from_host(dev, &[4096.0f32], &[1])?;
    let found = Tensor::from_host(dev, &[0.0f32], &[1])?;
    let cfg = AdamConfig::default();
    measured(dev, name, || {
        let mut ts: Vec<AdamTensors<'_, G>> = states
            .iter_mut()
            .map(|s| AdamTensors {
                params: s.p.view_mut(),
                grads: s.g.view(),
                m: s.m.view_mut(),
                v: s.v.view_mut(),
                copy: Some(s.copy.view_mut()),
            })
            .collect();
        let mut sc = AdamScalars { step: step.view_mut(), scale: Some(scale.view()), found_inf: Some(found.view()) };
        if let [t] = ts.as_mut_slice() {
            adamw_step(dev, t, &mut sc, &cfg)?;
        } else {
            adamw_step_multi(dev, &mut ts, &mut sc, &cfg)?;
        }
        Ok(())
    })?;
    if step.to_host()?[0] != 4.0 {
        return Err(format!("{name}: the step was skipped").into());
    }
    Ok(())
}

fn run_update_scale(dev: &Arc<Device>, name: &str) -> Res<()> {
    println!("info {name} scalars=3");
    let mut scale = Tensor::from_host(dev, &[65536.0f32], &[1])?;
    let mut tracker = dev.stream().clone_htod(&[7i32])?;
    let found = Tensor::from_host(dev, &[0.0f32], &[1])?;
    measured(dev, name, || {
        Ok(update_scale(dev, &mut scale.view_mut(), &mut tracker.as_view_mut(), &found.view(), &ScaleRule::default())?)
    })
}

/// `k == 0` runs the epilogue alone (the main loop has no tiles): what the full GEMM's
/// counters minus these are is the main loop's.
fn run_gemm(dev: &Arc<Device>, name: &str, ta: Transpose, tb: Transpose, epi: Epi, k: usize) -> Res<()> {
    let n = GEMM;
    let s = GemmShape::dense(n, n, k, ta, tb);
    let (out, bias, pre) = match epi {
        Epi::Plain => ("f32", "none", 0),
        Epi::BiasRelu => ("f32", "f32", 0),
        Epi::F16BiasGeluPre => ("f16", "f16", 1),
    };
    println!("info {name} m={n} n={n} k={k} out={out} bias={bias} pre={pre}");
    let mut rng = Rng::new(4);
    let a = upload::<f16>(dev, &mut rng, n * k.max(1), 1.0)?;
    let b = upload::<f16>(dev, &mut rng, n * k.max(1), 1.0)?;
    let bias32 = upload::<f32>(dev, &mut rng, n, 1.0)?;
    let bias16 = upload::<f16>(dev, &mut rng, n, 1.0)?;
    let mut pre_t = Tensor::<f16>::zeros(dev, &[n * n])?;
    let mut pre_view = pre_t.view_mut();
    let epilogue = |pre_view| match epi {
        Epi::Plain => Epilogue::default(),
        Epi::BiasRelu => {
            Epilogue { bias: Some(Bias::F32(bias32.view())), activation: Activation::Relu, ..Epilogue::default() }
        }
        Epi::F16BiasGeluPre => Epilogue {
            bias: Some(Bias::Half(bias16.view())),
            pre: Some(pre_view),
            activation: Activation::Gelu,
            ..Epilogue::default()
        },
    };
    if out == "f32" {
        let mut c = Tensor::<f32>::zeros(dev, &[n * n])?;
        measured(dev, name, || Ok(gemm(dev, &s, &a.view(), &b.view(), &mut c.view_mut(), epilogue(&mut pre_view))?))
    } else {
        let mut c = Tensor::<f16>::zeros(dev, &[n * n])?;
        measured(dev, name, || Ok(gemm(dev, &s, &a.view(), &b.view(), &mut c.view_mut(), epilogue(&mut pre_view))?))
    }
}

fn run_train(dev: &Arc<Device>, name: &str) -> Res<()> {
    let data = digits::load(&digits::default_path())?;
    let (train, _) = data.split(digits::TEST_FRACTION, 0);
    let model = Mlp::new(&digits::WIDTHS, Activation::Relu)?;
    let params = model.layout().total();
    let batch = 64;
    println!("info {name} params={params} batch={batch} widths={:?}", digits::WIDTHS);
    let init = model.init(0);
    let mut step = TrainStep::new(Cuda::new(dev), model, &init, TrainConfig::default())?;
    let mut rng = Rng::new(0x5eed_ba7c);
    let order = digits::permutation(train.len(), &mut rng);
    let batch_at = |s: usize| train.gather(&order[s * batch..(s + 1) * batch]);
    // Warm-up: the first step runs eagerly, the second is captured (and replayed).
    for s in 0..2 {
        let b = batch_at(s);
        step.step(&b.x, &b.y)?;
    }
    // The measured step: a replay of the graph whose optimizer phase ran (a step that
    // the loss scale skipped moves almost nothing, so it is measured again).
    for s in 2..12 {
        let b = batch_at(s);
        let replays = step.graph_replays();
        measured(dev, name, || Ok(step.step(&b.x, &b.y)?))?;
        let replayed = step.graph_replays() > replays;
        let skipped = step.skipped()?;
        println!(
            "note {name} step={s} replayed={replayed} skipped={skipped} loss={} scale={}",
            step.loss()?,
            step.loss_scale()?
        );
        if let Some(why) = step.graph_error() {
            println!("note {name} graph_error={why:?}");
        }
        if !skipped {
            return Ok(());
        }
    }
    Err(format!("{name}: ten steps in a row were skipped").into())
}

fn run(dev: &Arc<Device>, name: &str) -> Res<()> {
    match name {
        "cast_f32_f16" => run_cast(dev, name, true),
        "cast_f16_f32" => run_cast(dev, name, false),
        "unscale_f32" => run_unscale::<f32>(dev, name, &[FLAT], true),
        "unscale_f16" => run_unscale::<f16>(dev, name, &[FLAT], true),
        "check_f32" => run_unscale::<f32>(dev, name, &[FLAT], false),
        "check_f16" => run_unscale::<f16>(dev, name, &[FLAT], false),
        "unscale_multi_f32" => run_unscale::<f32>(dev, name, &LIST, true),
        "check_multi_f16" => run_unscale::<f16>(dev, name, &LIST, false),
        "adamw_f32" => run_adam::<f32>(dev, name, &[FLAT]),
        "adamw_f16" => run_adam::<f16>(dev, name, &[FLAT]),
        "adamw_multi_f32" => run_adam::<f32>(dev, name, &LIST),
        "update_scale" => run_update_scale(dev, name),
        "train_step" => run_train(dev, name),
        _ => {
            for (l, ta, tb) in LAYOUTS {
                for (e, epi) in EPILOGUES {
                    if name == format!("gemm_{l}_{e}") {
                        return run_gemm(dev, name, ta, tb, epi, GEMM);
                    }
                }
            }
            for (e, epi) in EPILOGUES {
                if name == format!("gemm_k0_{e}") {
                    return run_gemm(dev, name, Transpose::N, Transpose::N, epi, 0);
                }
            }
            Err(format!("unknown case {name:?} (try `list`)").into())
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let all = cases();
    if args.is_empty() || args.iter().any(|a| a == "-h" || a == "--help") {
        eprintln!("usage: cost_cases list | all | CASE...");
        return ExitCode::from(2);
    }
    if args == ["list"] {
        for (n, d) in &all {
            println!("{n}\t{d}");
        }
        return ExitCode::SUCCESS;
    }
    let names: Vec<String> = if args == ["all"] { all.iter().map(|(n, _)| n.clone()).collect() } else { args };
    let dev = match Device::new(0) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: CUDA device 0: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("device {}", dev.info().name);
    for name in &names {
        let desc = all.iter().find(|(n, _)| n == name).map_or("?", |(_, d)| d.as_str());
        println!("case {name}: {desc}");
        if let Err(e) = run(&dev, name) {
            eprintln!("error: {name}: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
