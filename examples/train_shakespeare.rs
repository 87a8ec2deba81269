//! The main job: trains a small GPT (nanoGPT's model, `nn::Gpt`) on Tiny Shakespeare at
//! the byte level with the mixed-precision step (f16 with dynamic loss scaling, or bf16
//! without; fp32 master weights; AdamW with nanoGPT's warmup + cosine schedule and
//! gradient clipping at 1.0, both on the device), on the GPU when there is one and on the
//! CPU's emulation of the same rounding otherwise (`--precision fp32`: the CPU's f32
//! reference). Prints the bigram model's validation loss as the baseline, the model's
//! train and validation losses, writes their curves, and ends with a seeded sample.
//!
//!     cargo run --release --example train_shakespeare -- [--steps 1200] [--batch 16]
//!         [--context 64] [--layers 2] [--heads 4] [--width 64] [--lr 3e-3]
//!         [--precision f16|bf16|fp32] [--backend auto|cuda|cpu] [--seed 0]
//!         [--eval-every 100] [--sample 300] [--gpt2-small] [--out target/train_shakespeare]
//!
//! The defaults train a 2-layer, 4-head, 64-wide model (109k parameters) for 1200 steps
//! of 16 x 64 tokens: on a 2-core CPU about 105 s, validation loss about 2.02 against the
//! bigram model's 2.48. `--gpt2-small` takes GPT-2 small's shape (12 layers, 12 heads, 768 wide, 1024 tokens of
//! context; the vocabulary stays the text's bytes): a GPU job. Output in --out:
//! loss.svg (train and validation loss), loss.csv, model.safetensors (the fp32 master
//! weights by nanoGPT's names).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use mixed_precision::autograd::Tape;
use mixed_precision::backend::cpu::Cpu;
use mixed_precision::backend::cuda::Cuda;
use mixed_precision::backend::{Backend, TransformerBackend};
use mixed_precision::half::bf16;
use mixed_precision::kernels::adam::{AdamConfig, LrSchedule};
use mixed_precision::nn::{Gpt, GptConfig};
use mixed_precision::rng::Rng;
use mixed_precision::{DType, Device, Error, TrainConfig, TrainStep};
use plotters::prelude::*;

struct Args {
    steps: usize,
    batch: usize,
    context: usize,
    layers: usize,
    heads: usize,
    width: usize,
    lr: f64,
    precision: DType,
    backend: String,
    seed: u64,
    eval_every: usize,
    sample: usize,
    out: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        steps: 1200,
        batch: 16,
        context: 64,
        layers: 2,
        heads: 4,
        width: 64,
        lr: 3e-3,
        precision: DType::F16,
        backend: "auto".into(),
        seed: 0,
        eval_every: 100,
        sample: 300,
        out: PathBuf::from("target/train_shakespeare"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        fn num<T: std::str::FromStr>(flag: &str, v: String) -> Result<T, String>
        where
            T::Err: std::fmt::Display,
        {
            v.parse().map_err(|e| format!("{flag}: {e}"))
        }
        match flag.as_str() {
            "--steps" => a.steps = num(&flag, value()?)?,
            "--batch" => a.batch = num(&flag, value()?)?,
            "--context" => a.context = num(&flag, value()?)?,
            "--layers" => a.layers = num(&flag, value()?)?,
            "--heads" => a.heads = num(&flag, value()?)?,
            "--width" => a.width = num(&flag, value()?)?,
            "--lr" => a.lr = num(&flag, value()?)?,
            "--seed" => a.seed = num(&flag, value()?)?,
            "--eval-every" => a.eval_every = num(&flag, value()?)?,
            "--sample" => a.sample = num(&flag, value()?)?,
            "--backend" => a.backend = value()?,
            "--out" => a.out = PathBuf::from(value()?),
            "--gpt2-small" => {
                let g = GptConfig::gpt2_small();
                (a.layers, a.heads, a.width, a.context) = (g.layers, g.heads, g.width, g.context);
                a.lr = 6e-4;
            }
            "--precision" => {
                a.precision = match value()?.as_str() {
                    "f16" => DType::F16,
                    "bf16" => DType::BF16,
                    "fp32" => DType::F32,
                    other => return Err(format!("--precision {other}: expected f16, bf16 or fp32")),
                }
            }
            "-h" | "--help" => {
                return Err("usage: train_shakespeare [--steps N] [--batch N] [--context T] [--layers L] \
                            [--heads H] [--width C] [--lr X] [--precision f16|bf16|fp32] \
                            [--backend auto|cuda|cpu] [--seed N] [--eval-every N] [--sample N] \
                            [--gpt2-small] [--out DIR]"
                    .into())
            }
            other => return Err(format!("unknown flag {other} (try --help)")),
        }
    }
    if a.steps == 0 || a.batch == 0 || a.eval_every == 0 {
        return Err("--steps, --batch and --eval-every must be at least 1".into());
    }
    Ok(a)
}

/// The text as token ids: each distinct byte, in byte order, is a token.
struct Corpus {
    /// The byte of each token.
    bytes: Vec<u8>,
    train: Vec<u32>,
    val: Vec<u32>,
}

/// The text: `$MIXED_PRECISION_SHAKESPEARE` if set (scripts/gpu-run.sh sets it: the
/// executables of the GPU bundle run from the log folder, on another machine); else the
/// project's copy where it was built; else `examples/data/tinyshakespeare.txt.gz` under the
/// working directory.
fn data_path() -> PathBuf {
    if let Some(p) = std::env::var_os("MIXED_PRECISION_SHAKESPEARE") {
        return PathBuf::from(p);
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/tinyshakespeare.txt.gz");
    if built.exists() {
        built
    } else {
        PathBuf::from("examples/data/tinyshakespeare.txt.gz")
    }
}

fn load() -> Result<Corpus, String> {
    use std::io::Read;
    let path = data_path();
    let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(file).read_to_end(&mut text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut seen = [false; 256];
    text.iter().for_each(|&b| seen[b as usize] = true);
    let bytes: Vec<u8> = (0..=255u8).filter(|&b| seen[b as usize]).collect();
    let mut id = [0u32; 256];
    for (i, &b) in bytes.iter().enumerate() {
        id[b as usize] = i as u32;
    }
    let ids: Vec<u32> = text.iter().map(|&b| id[b as usize]).collect();
    let split = ids.len() * 9 / 10;
    Ok(Corpus { bytes, train: ids[..split].to_vec(), val: ids[split..].to_vec() })
}

/// `samples` random windows of `t + 1` tokens: inputs and the next tokens.
fn windows(ids: &[u32], samples: usize, t: usize, rng: &mut Rng) -> (Vec<u32>, Vec<u32>) {
    let (mut x, mut y) = (Vec::with_capacity(samples * t), Vec::with_capacity(samples * t));
    for _ in 0..samples {
        let start = rng.below((ids.len() - t - 1) as u64) as usize;
        x.extend_from_slice(&ids[start..start + t]);
        y.extend_from_slice(&ids[start + 1..start + t + 1]);
    }
    (x, y)
}

/// The bigram model fitted to the training text (counts with add-one smoothing): its mean
/// cross-entropy on the validation text, the baseline to beat.
fn bigram_loss(c: &Corpus) -> f64 {
    let v = c.bytes.len();
    let mut counts = vec![1.0f64; v * v];
    for w in c.train.windows(2) {
        counts[w[0] as usize * v + w[1] as usize] += 1.0;
    }
    let totals: Vec<f64> = counts.chunks(v).map(|r| r.iter().sum()).collect();
    let nll: f64 =
        c.val.windows(2).map(|w| -(counts[w[0] as usize * v + w[1] as usize] / totals[w[0] as usize]).ln()).sum();
    nll / (c.val.len() - 1) as f64
}

struct Curves {
    train: Vec<f32>,
    /// (step, validation loss).
    val: Vec<(usize, f32)>,
}

/// A run's loss curves, its sample and the step (to save from).
type RunOutput<B> = (Curves, Vec<u8>, TrainStep<B, Gpt>);

fn run<B: TransformerBackend + 'static>(
    be: B,
    args: &Args,
    gpt: &Gpt,
    corpus: &Corpus,
    tcfg: TrainConfig,
) -> Result<RunOutput<B>, Box<dyn std::error::Error>> {
    let t = gpt.config().context;
    let mut step = TrainStep::new(be, gpt.clone(), &gpt.init(args.seed), tcfg)?;
    let mut rng = Rng::new(args.seed ^ 0x5eed);
    // The validation batches: fixed, so every evaluation sees the same text.
    let mut val_rng = Rng::new(args.seed ^ 0x7a1);
    let val: Vec<_> = (0..4).map(|_| windows(&corpus.val, args.batch, t, &mut val_rng)).collect();
    let evaluate = |step: &TrainStep<B, Gpt>| -> mixed_precision::Result<f32> {
        let mut sum = 0.0;
        for (x, y) in &val {
            sum += step.evaluate(x, y)?.0;
        }
        Ok(sum / val.len() as f32)
    };
    let bar = ProgressBar::new(args.steps as u64);
    bar.set_style(
        ProgressStyle::with_template("[{bar:30}] {pos}/{len} {msg}").expect("a valid template").progress_chars("=> "),
    );
    let mut curves = Curves { train: Vec::new(), val: Vec::new() };
    let started = Instant::now();
    for s in 0..args.steps {
        let (x, y) = windows(&corpus.train, args.batch, t, &mut rng);
        step.step(&x, &y)?;
        let loss = step.loss()?;
        curves.train.push(loss);
        if (s + 1) % args.eval_every == 0 || s + 1 == args.steps {
            curves.val.push((s + 1, evaluate(&step)?));
        }
        let tokens_per_s = ((s + 1) * args.batch * t) as f64 / started.elapsed().as_secs_f64();
        let val_loss = curves.val.last().map_or(String::new(), |v| format!("  val {:.4}", v.1));
        bar.set_message(format!("loss {loss:.4}{val_loss}  {tokens_per_s:.0} tok/s"));
        bar.inc(1);
    }
    bar.finish();
    let sample = generate(&step, gpt, args)?.iter().map(|&i| corpus.bytes[i as usize]).collect();
    Ok((curves, sample, step))
}

/// A seeded sample: starting from a newline, each next token drawn from the softmax of
/// the model's logits for the last `context` tokens.
fn generate<B: TransformerBackend + 'static>(
    step: &TrainStep<B, Gpt>,
    gpt: &Gpt,
    args: &Args,
) -> mixed_precision::Result<Vec<u32>> {
    let cfg = gpt.config();
    let (be, params) = (step.backend(), step.params());
    let mut rng = Rng::new(args.seed ^ 0x5a3b1e);
    let mut ids: Vec<u32> = vec![0]; // the smallest byte of this text: '\n'
    for _ in 0..args.sample {
        let window = &ids[ids.len().saturating_sub(cfg.context)..];
        let t = window.len();
        let tokens = be.tokens(window, cfg.vocab)?;
        let mut tape = Tape::new();
        let logits = (|| {
            let z = gpt.forward(&mut tape, be, params, &tokens, t)?;
            be.to_host(tape.value(z)?)
        })();
        tape.clear(be);
        be.recycle_tokens(tokens);
        let logits = logits?;
        let last = &logits[(t - 1) * cfg.padded_vocab..(t - 1) * cfg.padded_vocab + cfg.vocab];
        let m = last.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let p: Vec<f64> = last.iter().map(|&z| ((z - m) as f64).exp()).collect();
        let mut u = rng.uniform() as f64 * p.iter().sum::<f64>();
        let mut next = cfg.vocab - 1;
        for (i, &pi) in p.iter().enumerate() {
            if u < pi {
                next = i;
                break;
            }
            u -= pi;
        }
        ids.push(next as u32);
    }
    Ok(ids)
}

fn plot(path: &Path, c: &Curves, bigram: f64, title: &str) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let top = c.train.iter().copied().filter(|v| v.is_finite()).fold(bigram as f32, f32::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0..c.train.len(), 0f32..top * 1.05)?;
    chart.configure_mesh().x_desc("step").y_desc("cross-entropy (nats/token)").draw()?;
    let train: Vec<_> = c.train.iter().enumerate().filter(|(_, l)| l.is_finite()).map(|(i, &l)| (i, l)).collect();
    chart
        .draw_series(LineSeries::new(train, &BLUE))?
        .label("train")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(LineSeries::new(c.val.iter().copied(), &RED))?
        .label("validation")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .draw_series(LineSeries::new(vec![(0, bigram as f32), (c.train.len(), bigram as f32)], &BLACK))?
        .label("bigram baseline (validation)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
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
    let corpus = load()?;
    let vocab = corpus.bytes.len();
    let cfg = GptConfig {
        vocab,
        // A multiple of 16, for the tensor-core GEMM tiles; the padding is never a label.
        padded_vocab: vocab.div_ceil(16) * 16,
        context: args.context,
        layers: args.layers,
        heads: args.heads,
        width: args.width,
    };
    let gpt = Gpt::new(cfg)?;
    let warmup = (args.steps / 10).max(1) as u32;
    let adam = AdamConfig {
        lr: args.lr,
        beta2: 0.99,
        max_grad_norm: Some(1.0),
        schedule: LrSchedule::WarmupCosine {
            warmup_steps: warmup,
            decay_steps: args.steps as u32,
            min_lr: args.lr / 10.0,
        },
        ..AdamConfig::default()
    };
    let mut tcfg = if args.precision == DType::BF16 { TrainConfig::bf16() } else { TrainConfig::f16() };
    tcfg.adam = adam;
    let bigram = bigram_loss(&corpus);
    println!(
        "tiny shakespeare: {} training and {} validation tokens, {vocab} distinct bytes; GPT {} layers, {} heads, \
         width {}, context {} ({} parameters); {} steps of {} sequences, lr {} (warmup {warmup}, cosine to {}), \
         clip 1.0",
        corpus.train.len(),
        corpus.val.len(),
        cfg.layers,
        cfg.heads,
        cfg.width,
        cfg.context,
        gpt.num_params(),
        args.steps,
        args.batch,
        args.lr,
        args.lr / 10.0
    );
    println!("bigram baseline: validation loss {bigram:.4}");
    let device = match (args.backend.as_str(), args.precision) {
        (_, DType::F32) | ("cpu", _) => None,
        ("auto" | "cuda", _) => match Device::new(0) {
            Ok(dev) => Some(dev),
            Err(e @ (Error::NoDriver | Error::NoDevice { .. })) if args.backend == "auto" => {
                println!("no GPU ({e}); the run uses the CPU's {} emulation", args.precision);
                None
            }
            Err(e) => return Err(e.into()),
        },
        (other, _) => return Err(format!("--backend {other}: expected auto, cuda or cpu").into()),
    };
    let emulated = device.as_ref().is_some_and(|d| d.info().is_emulator());
    let started = Instant::now();
    macro_rules! go {
        ($be:expr) => {{
            let be = $be;
            let described = be.describe();
            println!("run: {described}");
            let (curves, sample, step) = run(be, args, &gpt, &corpus, tcfg)?;
            if let Some(why) = step.graph_error() {
                println!("CUDA graph capture failed, ran eagerly: {why}");
            } else if step.graph_replays() > 0 {
                println!("{} of {} steps replayed from a CUDA graph", step.graph_replays(), args.steps);
            }
            std::fs::create_dir_all(&args.out)?;
            step.save_safetensors(args.out.join("model.safetensors"))?;
            (curves, sample, described)
        }};
    }
    let (curves, sample, described) = match (device, args.precision) {
        (Some(dev), DType::BF16) => go!(Cuda::<bf16>::with_half(&dev)),
        (Some(dev), _) => go!(Cuda::new(&dev)),
        (None, DType::BF16) => go!(Cpu::mixed_bf16()),
        (None, DType::F32) => go!(Cpu::fp32()),
        (None, _) => go!(Cpu::mixed()),
    };
    let elapsed = started.elapsed();
    let tokens = (args.steps * args.batch * cfg.context) as f64;

    let mut csv = String::from("step,train_loss,val_loss\n");
    for (i, l) in curves.train.iter().enumerate() {
        let v = curves.val.iter().find(|v| v.0 == i + 1).map_or(String::new(), |v| v.1.to_string());
        csv.push_str(&format!("{},{l},{v}\n", i + 1));
    }
    std::fs::write(args.out.join("loss.csv"), csv)?;
    let svg = args.out.join("loss.svg");
    plot(&svg, &curves, bigram, &format!("tiny shakespeare GPT, {described}"))?;

    let last_train = curves.train.iter().rev().take(20).sum::<f32>() / curves.train.len().min(20) as f32;
    let val = curves.val.last().map_or(f32::NAN, |v| v.1);
    let time = if emulated {
        "emulated, not a GPU time".to_string()
    } else {
        format!("{elapsed:.1?}, {:.0} tokens/s", tokens / elapsed.as_secs_f64())
    };
    println!("final: train loss {last_train:.4} (mean of the last 20 steps), validation loss {val:.4} ({time})");
    println!(
        "bigram baseline: validation loss {bigram:.4}; the model is {:.4} nats/token below it",
        bigram - val as f64
    );
    println!("sample (seed {}):\n{}", args.seed, String::from_utf8_lossy(&sample));
    println!("loss curves: {} and {}", svg.display(), args.out.join("loss.csv").display());
    Ok(())
}
