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
//! Data are random and non-zero, from fixed seeds. The bf16 GEMM cases need compute
//! capability 8.0 (bf16 tensor cores): below it they print `skip NAME: WHY` and no marks.

#[path = "common/digits.rs"]
mod digits;

use std::process::ExitCode;
use std::sync::Arc;

use mixed_precision::backend::cuda::Cuda;
use mixed_precision::half::{bf16, f16};
use mixed_precision::kernels::adam::{
    adamw_pure, adamw_step, adamw_step_multi, AdamConfig, AdamPureTensors, AdamScalars, AdamTensors,
};
use mixed_precision::kernels::attention::{attention_softmax_backward, attention_softmax_forward};
use mixed_precision::kernels::cast::{cast_f32_half, cast_half_f32};
use mixed_precision::kernels::classifier::{fused_classifier, ClassifierShape, MeanLoss};
use mixed_precision::kernels::embedding::{embedding_backward, embedding_forward, EmbeddingShape, Tokens};
use mixed_precision::kernels::gemm::{
    gemm, gemm_strided_batched, Activation, BatchStrides, Bias, Epilogue, GemmBatch, GemmShape, Transpose, Triangle,
};
use mixed_precision::kernels::layernorm::{
    layernorm_backward, layernorm_dparams, layernorm_forward, LayerNormShape, ResidualGrad,
};
use mixed_precision::kernels::loss_scale::{update_scale, ScaleRule};
use mixed_precision::kernels::unscale::{unscale_check, unscale_check_multi};
use mixed_precision::nn::Mlp;
use mixed_precision::rng::Rng;
use mixed_precision::{DType, Device, Element, Half, Tensor, TrainConfig, TrainStep};

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

/// The GPT cases' shape: GPT-2 small's width, heads and vocabulary (C 768, 12 heads of 64,
/// V 50257 padded to 50304, 1024 positions in wpe) over B = 4 sequences of T = 256 tokens,
/// B T = 1024 rows. T is 256 rather than 1024 so that the attention cases (B NH T^2
/// scores) finish in seconds on the emulator; bytes per element do not depend on it.
const GPT_B: usize = 4;
const GPT_T: usize = 256;
const GPT_C: usize = 768;
const GPT_NH: usize = 12;
const GPT_V: usize = 50257;
const GPT_VP: usize = 50304;
const GPT_MAX_T: usize = 1024;
/// Rows of the classifier case: 64 of the 1024 (each row is 50304 logits; the whole
/// batch, 51.5 M logits, takes minutes on the emulator). The row is the unit of work.
const CLS_ROWS: usize = 64;

/// The GPT kernel cases: (name stem, description), each run for f16 and bf16 as
/// `<stem>_<h>`.
const GPT_CASES: [(&str, &str); 15] = [
    ("embedding_fwd", "embedding_forward, B T = 1024 random tokens of V 50304 (wte), C 768, wpe 1024 x 768"),
    ("embedding_bwd", "embedding_backward (bucketed index), the same tokens, dwte dwpe f32 +=, found_inf"),
    ("layernorm_fwd", "layernorm_forward, 1024 x 768, no residual"),
    ("layernorm_fwd_res", "layernorm_forward, 1024 x 768, with residual (r = x + y stored)"),
    ("layernorm_bwd", "layernorm_backward, 1024 x 768, no residual gradient (as the GPT step)"),
    ("layernorm_dparams", "layernorm_dparams (partial + total), 1024 x 768, dgamma dbeta f32 +=, found_inf"),
    ("attn_qk", "S = scale Q K^T, gemm_strided_batched NT, B 4 x NH 12 of 256 x 256 x 64 from qkv, S f32"),
    ("attn_softmax_fwd", "attention_softmax_forward, 12,288 causal rows of 256 (f32 S -> half P)"),
    ("attn_pv", "out = P V, gemm_strided_batched NN, 48 x (256 x 64 x 256), into out's head columns"),
    ("attn_dp", "dP = dout V^T, gemm_strided_batched NT, 48 x (256 x 256 x 64), dP f32"),
    ("attn_softmax_bwd", "attention_softmax_backward, 12,288 causal rows of 256 (half P, f32 dP -> half dS)"),
    ("attn_dq", "dQ = scale dS K, gemm_strided_batched NN, 48 x (256 x 64 x 256), into dqkv"),
    ("attn_dk", "dK = scale dS^T Q, gemm_strided_batched TN, 48 x (256 x 64 x 256), into dqkv"),
    ("attn_dv", "dV = P^T dout, gemm_strided_batched TN, 48 x (256 x 64 x 256), into dqkv"),
    ("classifier", "fused_classifier + its mean (sum_f32), 64 rows of V 50257 padded to 50304, loss scale"),
];

/// The GEMM epilogues of the issue.
#[derive(Clone, Copy)]
enum Epi {
    /// C f32, no bias, no activation.
    Plain,
    /// C f32, f32 bias, ReLU.
    BiasRelu,
    /// C in the operands' half type, a bias of that type, GELU, the pre-activation (of
    /// that type) written too.
    HalfBiasGeluPre,
}

const LAYOUTS: [(&str, Transpose, Transpose); 4] = [
    ("nn", Transpose::N, Transpose::N),
    ("nt", Transpose::N, Transpose::T),
    ("tn", Transpose::T, Transpose::N),
    ("tt", Transpose::T, Transpose::T),
];

/// The epilogues and their names in the case names, for operands of half type `h`.
fn epilogues(h: DType) -> [(String, Epi); 3] {
    [
        ("f32".into(), Epi::Plain),
        ("f32_bias_relu".into(), Epi::BiasRelu),
        (format!("{h}_bias_gelu_pre"), Epi::HalfBiasGeluPre),
    ]
}

/// The GEMM case names' prefix for operands of half type `h`: `gemm_` for f16 (the names
/// the f16 cases always had), `gemm_bf16_` for bf16, as the kernels are named.
fn gemm_prefix(h: DType) -> &'static str {
    match h {
        DType::BF16 => "gemm_bf16_",
        _ => "gemm_",
    }
}

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
        ("cast_f32_bf16", "cast f32 -> bf16, 1 Mi elements"),
        ("cast_bf16_f32", "cast bf16 -> f32, 1 Mi elements"),
        ("unscale_bf16", "unscale_check bf16, flat 1 Mi, with scale (unscale + check)"),
        ("check_bf16", "unscale_check bf16, flat 1 Mi, no scale (check only)"),
        ("check_multi_bf16", "unscale_check_multi bf16, 20 tensors (1,121,588 elements), check only"),
        ("adamw_f32_copy_bf16", "adamw_step, f32 grads, flat 1 Mi, scale + found_inf + bf16 copy"),
        ("adamw_bf16", "adamw_step, bf16 grads, flat 1 Mi, scale + found_inf + bf16 copy"),
        ("adamw_pure_f32", "adamw_pure, f32 grads, bf16 weights (no master), flat 1 Mi, scale + found_inf"),
        ("adamw_pure_bf16", "adamw_pure, bf16 grads, bf16 weights (no master), flat 1 Mi, scale + found_inf"),
    ]
    .iter()
    .map(|(n, d)| (n.to_string(), d.to_string()))
    .collect();
    let what = |h: DType, epi| match epi {
        Epi::Plain => "C f32, alpha 1, beta 0".to_string(),
        Epi::BiasRelu => "C f32, f32 bias, ReLU".to_string(),
        Epi::HalfBiasGeluPre => format!("C {h}, {h} bias, GELU, {h} pre-activation"),
    };
    for h in [DType::F16, DType::BF16] {
        let (p, inputs) = (gemm_prefix(h), if h == DType::BF16 { " bf16 (sm_80+)" } else { "" });
        for (l, _, _) in LAYOUTS {
            for (e, epi) in epilogues(h) {
                let desc = format!("gemm{inputs} {} 1024^3, {}", l.to_uppercase(), what(h, epi));
                v.push((format!("{p}{l}_{e}"), desc));
            }
        }
        // The epilogue alone: the full GEMM minus this is its main loop.
        for (e, epi) in epilogues(h) {
            let desc = format!("gemm{inputs} NN 1024 x 1024 x 0 (epilogue alone), {}", what(h, epi));
            v.push((format!("{p}k0_{e}"), desc));
        }
    }
    let step =
        "one digits training step (MLP 64-128-128-10 ReLU, batch 64) after warm-up, replayed from its CUDA graph";
    v.push(("train_step".into(), format!("{step}; f16, f32 master weights, loss scaling")));
    v.push(("train_step_bf16".into(), format!("{step}; bf16, f32 master weights, no loss scaling")));
    v.push(("train_step_pure_bf16".into(), format!("{step}; pure bf16 weights (no master), no loss scaling")));
    for h in [DType::F16, DType::BF16] {
        for (stem, desc) in GPT_CASES {
            v.push((format!("{stem}_{h}"), format!("{desc}; {h}")));
        }
    }
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

/// cast_f32_<H> (`to_half`) or cast_<H>_f32.
fn run_cast<H: Half>(dev: &Arc<Device>, name: &str, to_half: bool) -> Res<()> {
    let mut rng = Rng::new(1);
    println!("info {name} n={FLAT}");
    if to_half {
        let x = upload::<f32>(dev, &mut rng, FLAT, 1.0)?;
        let mut y = Tensor::<H>::zeros(dev, &[FLAT])?;
        measured(dev, name, || Ok(cast_f32_half(dev, &x.view(), &mut y.view_mut())?))
    } else {
        let x = upload::<H>(dev, &mut rng, FLAT, 1.0)?;
        let mut y = Tensor::<f32>::zeros(dev, &[FLAT])?;
        measured(dev, name, || Ok(cast_half_f32(dev, &x.view(), &mut y.view_mut())?))
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

/// One tensor's optimizer state on the device: gradients `G`, working copy `C`.
struct AdamState<G: Element, C: Half> {
    p: Tensor<f32>,
    g: Tensor<G>,
    m: Tensor<f32>,
    v: Tensor<f32>,
    copy: Tensor<C>,
}

/// adamw_step(_multi) with f32 master weights, gradients `G` and the working copy `C`.
fn run_adam<G: Element, C: Half>(dev: &Arc<Device>, name: &str, lens: &[usize]) -> Res<()> {
    let mut rng = Rng::new(3);
    println!(
        "info {name} n={} tensors={} dtype={} weights=master copy={}",
        lens.iter().sum::<usize>(),
        lens.len(),
        G::DTYPE,
        C::DTYPE
    );
    let mut states = lens
        .iter()
        .map(|&n| {
            Ok(AdamState {
                p: upload::<f32>(dev, &mut rng, n, 0.1)?,
                g: upload::<G>(dev, &mut rng, n, 4.0)?,
                m: upload::<f32>(dev, &mut rng, n, 1e-3)?,
                // Second moments must be positive.
                v: Tensor::from_host(dev, &rng.uniform_vec(n, 1e-7, 1e-6), &[n])?,
                copy: Tensor::<C>::zeros(dev, &[n])?,
            })
        })
        .collect::<Res<Vec<_>>>()?;
    let mut step = Tensor::from_host(dev, &[3.0f32], &[1])?;
    let scale = Tensor::from_host(dev, &[4096.0f32], &[1])?;
    let found = Tensor::from_host(dev, &[0.0f32], &[1])?;
    let cfg = AdamConfig::default();
    measured(dev, name, || {
        let mut ts: Vec<AdamTensors<'_, G, C>> = states
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

/// adamw_pure over one flat range: bf16 weights (no master copy), gradients `G`.
fn run_adam_pure<G: Element>(dev: &Arc<Device>, name: &str, n: usize) -> Res<()> {
    let mut rng = Rng::new(3);
    println!("info {name} n={n} tensors=1 dtype={} weights=pure", G::DTYPE);
    let mut p = upload::<bf16>(dev, &mut rng, n, 0.1)?;
    let g = upload::<G>(dev, &mut rng, n, 4.0)?;
    let mut m = upload::<f32>(dev, &mut rng, n, 1e-3)?;
    let mut v = Tensor::from_host(dev, &rng.uniform_vec(n, 1e-7, 1e-6), &[n])?;
    let mut step = Tensor::from_host(dev, &[3.0f32], &[1])?;
    let scale = Tensor::from_host(dev, &[4096.0f32], &[1])?;
    let found = Tensor::from_host(dev, &[0.0f32], &[1])?;
    measured(dev, name, || {
        let mut t = AdamPureTensors { params: p.view_mut(), grads: g.view(), m: m.view_mut(), v: v.view_mut() };
        let mut sc = AdamScalars { step: step.view_mut(), scale: Some(scale.view()), found_inf: Some(found.view()) };
        Ok(adamw_pure(dev, &mut t, &mut sc, &AdamConfig::default(), 0x5eed)?)
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
/// counters minus these are is the main loop's. `T` is the operands' half type.
fn run_gemm<T: Half>(dev: &Arc<Device>, name: &str, ta: Transpose, tb: Transpose, epi: Epi, k: usize) -> Res<()> {
    let capability = dev.info().compute_capability;
    if T::DTYPE == DType::BF16 && capability < (8, 0) {
        println!("skip {name}: bf16 tensor cores need sm_80, the device is sm_{}{}", capability.0, capability.1);
        return Ok(());
    }
    let n = GEMM;
    let s = GemmShape::dense(n, n, k, ta, tb);
    let h = T::DTYPE.name();
    let (out, bias, pre) = match epi {
        Epi::Plain => ("f32", "none", 0),
        Epi::BiasRelu => ("f32", "f32", 0),
        Epi::HalfBiasGeluPre => (h, h, 1),
    };
    println!("info {name} m={n} n={n} k={k} in={h} out={out} bias={bias} pre={pre}");
    let mut rng = Rng::new(4);
    let a = upload::<T>(dev, &mut rng, n * k.max(1), 1.0)?;
    let b = upload::<T>(dev, &mut rng, n * k.max(1), 1.0)?;
    let bias32 = upload::<f32>(dev, &mut rng, n, 1.0)?;
    let bias_half = upload::<T>(dev, &mut rng, n, 1.0)?;
    let mut pre_t = Tensor::<T>::zeros(dev, &[n * n])?;
    let mut pre_view = pre_t.view_mut();
    let epilogue = |pre_view| match epi {
        Epi::Plain => Epilogue::default(),
        Epi::BiasRelu => {
            Epilogue { bias: Some(Bias::F32(bias32.view())), activation: Activation::Relu, ..Epilogue::default() }
        }
        Epi::HalfBiasGeluPre => Epilogue {
            bias: Some(Bias::Half(bias_half.view())),
            pre: Some(pre_view),
            activation: Activation::Gelu,
            ..Epilogue::default()
        },
    };
    if out == "f32" {
        let mut c = Tensor::<f32>::zeros(dev, &[n * n])?;
        measured(dev, name, || Ok(gemm(dev, &s, &a.view(), &b.view(), &mut c.view_mut(), epilogue(&mut pre_view))?))
    } else {
        let mut c = Tensor::<T>::zeros(dev, &[n * n])?;
        measured(dev, name, || Ok(gemm(dev, &s, &a.view(), &b.view(), &mut c.view_mut(), epilogue(&mut pre_view))?))
    }
}

/// The digits training step with half type `H` and `cfg`'s precision and weights; `mode`
/// names them for the report (f16, bf16, pure_bf16).
fn run_train<H: Half>(dev: &Arc<Device>, name: &str, mode: &str, cfg: TrainConfig) -> Res<()> {
    let data = digits::load(&digits::default_path())?;
    let (train, _) = data.split(digits::TEST_FRACTION, 0);
    let model = Mlp::new(&digits::WIDTHS, Activation::Relu)?;
    let params = model.layout().total();
    let batch = 64;
    // The arena's gradients are f32 in every mode.
    let widths = format!("{:?}", digits::WIDTHS).replace(' ', "");
    println!("info {name} params={params} batch={batch} widths={widths} mode={mode} grads=f32");
    let init = model.init(0);
    let mut step = TrainStep::new(Cuda::<H>::with_half(dev), model, &init, cfg)?;
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

/// The bf16 cases that run a tensor-core GEMM need sm_80: below it they are skipped.
fn skip_bf16_gemm<H: Half>(dev: &Device, name: &str) -> bool {
    let capability = dev.info().compute_capability;
    let skip = H::DTYPE == DType::BF16 && capability < (8, 0);
    if skip {
        println!("skip {name}: bf16 tensor cores need sm_80, the device is sm_{}{}", capability.0, capability.1);
    }
    skip
}

/// One of [`GPT_CASES`] with half type `H`; `stem` is the case's name without `_<h>`.
fn run_gpt<H: Half>(dev: &Arc<Device>, name: &str, stem: &str) -> Res<()> {
    let (b, t, c, rows) = (GPT_B, GPT_T, GPT_C, GPT_B * GPT_T);
    let h = H::DTYPE;
    let mut rng = Rng::new(5);
    match stem {
        "embedding_fwd" | "embedding_bwd" => {
            let ids: Vec<u32> = (0..rows).map(|_| rng.below(GPT_V as u64) as u32).collect();
            let mut distinct = ids.clone();
            distinct.sort_unstable();
            distinct.dedup();
            let tokens = Tokens::upload(dev, &ids, GPT_V)?;
            let shape = EmbeddingShape { batch: b, seq: t, channels: c, vocab: GPT_VP, max_seq: GPT_MAX_T };
            println!("info {name} rows={rows} t={t} c={c} vocab={GPT_VP} distinct={} dtype={h}", distinct.len());
            if stem == "embedding_fwd" {
                let wte = upload::<H>(dev, &mut rng, GPT_VP * c, 0.02)?;
                let wpe = upload::<H>(dev, &mut rng, GPT_MAX_T * c, 0.02)?;
                let mut out = Tensor::<H>::zeros(dev, &[rows * c])?;
                measured(dev, name, || {
                    Ok(embedding_forward(dev, shape, &tokens, &wte.view(), &wpe.view(), &mut out.view_mut())?)
                })
            } else {
                let dout = upload::<H>(dev, &mut rng, rows * c, 1.0)?;
                let mut dwte = Tensor::<f32>::zeros(dev, &[GPT_VP * c])?;
                let mut dwpe = Tensor::<f32>::zeros(dev, &[GPT_MAX_T * c])?;
                let mut found = Tensor::from_host(dev, &[0.0f32], &[1])?;
                measured(dev, name, || {
                    let mut f = found.view_mut();
                    Ok(embedding_backward(
                        dev,
                        shape,
                        &tokens,
                        &dout.view(),
                        &mut dwte.view_mut(),
                        &mut dwpe.view_mut(),
                        Some(&mut f),
                    )?)
                })?;
                if found.to_host()?[0] != 0.0 {
                    return Err(format!("{name}: found_inf raised on finite data").into());
                }
                Ok(())
            }
        }
        "layernorm_fwd" | "layernorm_fwd_res" | "layernorm_bwd" | "layernorm_dparams" => {
            let shape = LayerNormShape { rows, channels: c };
            let n = rows * c;
            let x = upload::<H>(dev, &mut rng, n, 1.0)?;
            let gamma = upload::<H>(dev, &mut rng, c, 1.0)?;
            let beta = upload::<H>(dev, &mut rng, c, 0.1)?;
            let mut mean = Tensor::<f32>::zeros(dev, &[rows])?;
            let mut rstd = Tensor::<f32>::zeros(dev, &[rows])?;
            let mut out = Tensor::<H>::zeros(dev, &[n])?;
            let residual = stem == "layernorm_fwd_res";
            if stem.starts_with("layernorm_fwd") {
                println!("info {name} rows={rows} c={c} residual={} dtype={h}", u8::from(residual));
                let y = upload::<H>(dev, &mut rng, n, 1.0)?;
                let mut r = Tensor::<H>::zeros(dev, &[n])?;
                let (yv, mut rv) = (y.view(), r.view_mut());
                return measured(dev, name, || {
                    let res = residual.then_some((&yv, &mut rv));
                    Ok(layernorm_forward(
                        dev,
                        shape,
                        1e-5,
                        &x.view(),
                        res,
                        &gamma.view(),
                        &beta.view(),
                        &mut out.view_mut(),
                        &mut mean.view_mut(),
                        &mut rstd.view_mut(),
                    )?)
                });
            }
            // The statistics the backward reads, from a forward outside the marks.
            layernorm_forward(
                dev,
                shape,
                1e-5,
                &x.view(),
                None,
                &gamma.view(),
                &beta.view(),
                &mut out.view_mut(),
                &mut mean.view_mut(),
                &mut rstd.view_mut(),
            )?;
            let dh = upload::<H>(dev, &mut rng, n, 1.0)?;
            if stem == "layernorm_bwd" {
                println!("info {name} rows={rows} c={c} dres=0 dtype={h}");
                let mut dr = Tensor::<H>::zeros(dev, &[n])?;
                return measured(dev, name, || {
                    Ok(layernorm_backward(
                        dev,
                        shape,
                        &dh.view(),
                        &x.view(),
                        &mean.view(),
                        &rstd.view(),
                        &gamma.view(),
                        ResidualGrad::None,
                        &mut dr.view_mut(),
                    )?)
                });
            }
            let chunks = shape.dparams_scratch_len() / (2 * c);
            println!("info {name} rows={rows} c={c} chunks={chunks} dtype={h}");
            let mut dgamma = upload::<f32>(dev, &mut rng, c, 1.0)?;
            let mut dbeta = upload::<f32>(dev, &mut rng, c, 1.0)?;
            let mut scratch = Tensor::<f32>::zeros(dev, &[shape.dparams_scratch_len()])?;
            let mut found = Tensor::from_host(dev, &[0.0f32], &[1])?;
            measured(dev, name, || {
                let mut f = found.view_mut();
                Ok(layernorm_dparams(
                    dev,
                    shape,
                    &dh.view(),
                    &x.view(),
                    &mean.view(),
                    &rstd.view(),
                    &mut dgamma.view_mut(),
                    &mut dbeta.view_mut(),
                    &mut scratch.view_mut(),
                    Some(&mut f),
                )?)
            })?;
            if found.to_host()?[0] != 0.0 {
                return Err(format!("{name}: found_inf raised on finite data").into());
            }
            Ok(())
        }
        "attn_softmax_fwd" | "attn_softmax_bwd" => {
            let att_rows = b * GPT_NH * t;
            println!("info {name} rows={att_rows} t={t} dtype={h}");
            let n = att_rows * t;
            let s = upload::<f32>(dev, &mut rng, n, 1.0)?;
            if stem == "attn_softmax_fwd" {
                let mut p = Tensor::<H>::zeros(dev, &[n])?;
                measured(dev, name, || Ok(attention_softmax_forward(dev, att_rows, t, &s.view(), &mut p.view_mut())?))
            } else {
                let p = upload::<H>(dev, &mut rng, n, 0.01)?;
                let mut ds = Tensor::<H>::zeros(dev, &[n])?;
                measured(dev, name, || {
                    Ok(attention_softmax_backward(dev, att_rows, t, &p.view(), &s.view(), &mut ds.view_mut())?)
                })
            }
        }
        "classifier" => {
            println!("info {name} rows={CLS_ROWS} vocab={GPT_V} padded={GPT_VP} scale=1 dtype={h}");
            let shape = ClassifierShape { rows: CLS_ROWS, vocab: GPT_V, padded_vocab: GPT_VP };
            let logits = upload::<H>(dev, &mut rng, CLS_ROWS * GPT_VP, 2.0)?;
            let labels: Vec<i32> = (0..CLS_ROWS).map(|_| rng.below(GPT_V as u64) as i32).collect();
            let labels = dev.stream().clone_htod(&labels)?;
            let scale = Tensor::from_host(dev, &[1024.0f32], &[1])?;
            let mut losses = Tensor::<f32>::zeros(dev, &[CLS_ROWS])?;
            let mut dlogits = Tensor::<H>::zeros(dev, &[CLS_ROWS * GPT_VP])?;
            let mut loss = Tensor::<f32>::zeros(dev, &[1])?;
            measured(dev, name, || {
                let mut out = loss.view_mut();
                Ok(fused_classifier(
                    dev,
                    shape,
                    &logits.view(),
                    &labels,
                    Some(&scale.view()),
                    1.0,
                    &mut losses.view_mut(),
                    &mut dlogits.view_mut(),
                    Some(MeanLoss { out: &mut out, alpha: 1.0, beta: 0.0 }),
                )?)
            })
        }
        _ => run_attn_gemm::<H>(dev, name, stem),
    }
}

/// One of attention's strided-batched GEMMs, with the shapes, strides and epilogues
/// src/kernels/attention.rs gives it: Q, K, V, dQ, dK, dV are head columns of the
/// (B T, 3C) qkv and dqkv buffers, out and dout of (B T, C), S, P, dP, dS (B, NH, T, T).
fn run_attn_gemm<H: Half>(dev: &Arc<Device>, name: &str, stem: &str) -> Res<()> {
    use Transpose::{N, T};
    if skip_bf16_gemm::<H>(dev, name) {
        return Ok(());
    }
    let (b, t, c, nh) = (GPT_B, GPT_T, GPT_C, GPT_NH);
    let hs = c / nh;
    let rows = b * t;
    let scale = 1.0 / (hs as f32).sqrt();
    let qkv_s = BatchStrides { outer: t * 3 * c, inner: hs };
    let out_s = BatchStrides { outer: t * c, inner: hs };
    let att_s = BatchStrides { outer: nh * t * t, inner: t * t };
    // Each GEMM skips what src/kernels/attention.rs has it skip (the causal triangle), so
    // the counts are those of the launches attention makes.
    let triangle = match stem {
        "attn_qk" | "attn_dp" => Triangle::LowerC,
        "attn_pv" | "attn_dq" => Triangle::LowerA,
        _ => Triangle::UpperA,
    };
    let batch = |a, b_, c_| GemmBatch { outer: b, inner: nh, a, b: b_, c: c_, triangle };
    let mut rng = Rng::new(6);
    let qkv = upload::<H>(dev, &mut rng, rows * 3 * c, 1.0)?;
    let rows_c = upload::<H>(dev, &mut rng, rows * c, 1.0)?;
    let att = upload::<H>(dev, &mut rng, b * nh * t * t, 0.01)?;
    let (qkv, rows_c, att) = (qkv.view(), rows_c.view(), att.view());
    let info = |m: usize, n: usize, k: usize, out: &str| {
        println!(
            "info {name} m={m} n={n} k={k} batches={} in={} out={out} bias=none pre=0 triangle={triangle:?}",
            b * nh,
            H::DTYPE
        )
    };
    let alpha = Epilogue { alpha: scale, ..Epilogue::default() };
    match stem {
        // S = scale Q K^T and dP = dout V^T: f32 out, (t, t) per batch.
        "attn_qk" | "attn_dp" => {
            info(t, t, hs, "f32");
            let mut s = Tensor::<f32>::zeros(dev, &[b * nh * t * t])?;
            let (a, a_s, lda, bm, epi) = if stem == "attn_qk" {
                (qkv.slice(0..), qkv_s, 3 * c, qkv.slice(c..), alpha)
            } else {
                (rows_c.slice(0..), out_s, c, qkv.slice(2 * c..), Epilogue::default())
            };
            let shape = GemmShape { m: t, n: t, k: hs, trans_a: N, trans_b: T, lda, ldb: 3 * c, ldc: t };
            let bt = batch(a_s, qkv_s, att_s);
            measured(dev, name, || Ok(gemm_strided_batched(dev, &shape, &bt, &a, &bm, &mut s.view_mut(), epi)?))
        }
        // out = P V: half out into out's head columns.
        "attn_pv" => {
            info(t, hs, t, h_name::<H>());
            let mut out = Tensor::<H>::zeros(dev, &[rows * c])?;
            let shape = GemmShape { m: t, n: hs, k: t, trans_a: N, trans_b: N, lda: t, ldb: 3 * c, ldc: c };
            let bt = batch(att_s, qkv_s, out_s);
            let v = qkv.slice(2 * c..);
            measured(dev, name, || {
                Ok(gemm_strided_batched(dev, &shape, &bt, &att, &v, &mut out.view_mut(), Epilogue::default())?)
            })
        }
        // dQ = scale dS K, dK = scale dS^T Q, dV = P^T dout: half out into dqkv.
        _ => {
            info(t, hs, t, h_name::<H>());
            let mut dqkv = Tensor::<H>::zeros(dev, &[rows * 3 * c])?;
            let dq = GemmShape { m: t, n: hs, k: t, trans_a: N, trans_b: N, lda: t, ldb: 3 * c, ldc: 3 * c };
            let (shape, bm, b_s, col, epi) = match stem {
                "attn_dq" => (dq, qkv.slice(c..), qkv_s, 0, alpha),
                "attn_dk" => (GemmShape { trans_a: T, ..dq }, qkv.slice(0..), qkv_s, c, alpha),
                "attn_dv" => {
                    (GemmShape { trans_a: T, ldb: c, ..dq }, rows_c.slice(0..), out_s, 2 * c, Epilogue::default())
                }
                _ => return Err(format!("unknown case {name:?} (try `list`)").into()),
            };
            let bt = batch(att_s, b_s, qkv_s);
            measured(dev, name, || {
                let mut d = dqkv.view_mut();
                let mut d = d.slice_mut(col..);
                Ok(gemm_strided_batched(dev, &shape, &bt, &att, &bm, &mut d, epi)?)
            })
        }
    }
}

fn h_name<H: Half>() -> &'static str {
    H::DTYPE.name()
}

/// [`run_gemm`] for one half type.
type RunGemm = fn(&Arc<Device>, &str, Transpose, Transpose, Epi, usize) -> Res<()>;

fn run(dev: &Arc<Device>, name: &str) -> Res<()> {
    match name {
        "cast_f32_f16" => run_cast::<f16>(dev, name, true),
        "cast_f16_f32" => run_cast::<f16>(dev, name, false),
        "cast_f32_bf16" => run_cast::<bf16>(dev, name, true),
        "cast_bf16_f32" => run_cast::<bf16>(dev, name, false),
        "unscale_f32" => run_unscale::<f32>(dev, name, &[FLAT], true),
        "unscale_f16" => run_unscale::<f16>(dev, name, &[FLAT], true),
        "check_f32" => run_unscale::<f32>(dev, name, &[FLAT], false),
        "check_f16" => run_unscale::<f16>(dev, name, &[FLAT], false),
        "unscale_multi_f32" => run_unscale::<f32>(dev, name, &LIST, true),
        "check_multi_f16" => run_unscale::<f16>(dev, name, &LIST, false),
        "unscale_bf16" => run_unscale::<bf16>(dev, name, &[FLAT], true),
        "check_bf16" => run_unscale::<bf16>(dev, name, &[FLAT], false),
        "check_multi_bf16" => run_unscale::<bf16>(dev, name, &LIST, false),
        "adamw_f32" => run_adam::<f32, f16>(dev, name, &[FLAT]),
        "adamw_f16" => run_adam::<f16, f16>(dev, name, &[FLAT]),
        "adamw_multi_f32" => run_adam::<f32, f16>(dev, name, &LIST),
        "adamw_f32_copy_bf16" => run_adam::<f32, bf16>(dev, name, &[FLAT]),
        "adamw_bf16" => run_adam::<bf16, bf16>(dev, name, &[FLAT]),
        "adamw_pure_f32" => run_adam_pure::<f32>(dev, name, FLAT),
        "adamw_pure_bf16" => run_adam_pure::<bf16>(dev, name, FLAT),
        "update_scale" => run_update_scale(dev, name),
        "train_step" => run_train::<f16>(dev, name, "f16", TrainConfig::f16()),
        "train_step_bf16" => run_train::<bf16>(dev, name, "bf16", TrainConfig::bf16()),
        "train_step_pure_bf16" => run_train::<bf16>(dev, name, "pure_bf16", TrainConfig::pure_bf16(0x5eed)),
        _ => {
            for (stem, _) in GPT_CASES {
                if name == format!("{stem}_f16") {
                    return run_gpt::<f16>(dev, name, stem);
                }
                if name == format!("{stem}_bf16") {
                    return run_gpt::<bf16>(dev, name, stem);
                }
            }
            for h in [DType::F16, DType::BF16] {
                let p = gemm_prefix(h);
                let run: RunGemm = if h == DType::BF16 { run_gemm::<bf16> } else { run_gemm::<f16> };
                for (l, ta, tb) in LAYOUTS {
                    for (e, epi) in epilogues(h) {
                        if name == format!("{p}{l}_{e}") {
                            return run(dev, name, ta, tb, epi, GEMM);
                        }
                    }
                }
                for (e, epi) in epilogues(h) {
                    if name == format!("{p}k0_{e}") {
                        return run(dev, name, Transpose::N, Transpose::N, epi, 0);
                    }
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
