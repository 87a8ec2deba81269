//! The GPT (issue 20) on the CPU: finite-difference checks of every transformer op's
//! backward (the CPU references in fp32), of the whole model's gradient through the tape
//! (weight tying included), the mixed CPU step against the fp32 one over a few hundred
//! steps, determinism, and overflow injection. The CUDA side is in `tests/gpt_cuda.rs`.

use mixed_precision::autograd::Tape;
use mixed_precision::backend::cpu::{self, AttnDims, Cpu, CpuParams};
use mixed_precision::backend::{Backend, TransformerBackend};
use mixed_precision::nn::{Gpt, GptConfig, Weights};
use mixed_precision::optim::GradScalerConfig;
use mixed_precision::rng::Rng;
use mixed_precision::{Error, TrainConfig, TrainStep};

fn id(x: f32) -> f32 {
    x
}

fn random(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| scale * rng.normal()).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// Central differences of `f` at `x` along each of `coords`, against `grad`: the
/// difference within `tol` relative to the gradient's largest magnitude.
fn check_fd(name: &str, x: &[f32], grad: &[f32], coords: &[usize], tol: f64, mut f: impl FnMut(&[f32]) -> f64) {
    let scale = grad.iter().fold(0.0f64, |m, &g| m.max(g.abs() as f64)).max(1e-3);
    for &i in coords {
        let h = 1e-2f32.max(x[i].abs() * 1e-2);
        let mut xp = x.to_vec();
        xp[i] = x[i] + h;
        let mut xm = x.to_vec();
        xm[i] = x[i] - h;
        let fd = (f(&xp) - f(&xm)) / (xp[i] as f64 - xm[i] as f64);
        let err = (fd - grad[i] as f64).abs() / scale;
        assert!(err <= tol, "{name}[{i}]: finite difference {fd}, backward {}, error {err} > {tol}", grad[i]);
    }
}

fn coords(rng: &mut Rng, n: usize, k: usize) -> Vec<usize> {
    (0..k).map(|_| rng.below(n as u64) as usize).collect()
}

#[test]
fn layernorm_backward_matches_finite_differences() {
    let mut rng = Rng::new(1);
    for (rows, c, with_y) in [(3, 1, false), (4, 7, true), (5, 33, true), (2, 100, false)] {
        let n = rows * c;
        let x = random(&mut rng, n, 1.0);
        let y = random(&mut rng, n, 1.0);
        let gamma = random(&mut rng, c, 1.0);
        let beta = random(&mut rng, c, 1.0);
        let w = random(&mut rng, n, 1.0);
        // L = sum w * h(x (+ y), gamma, beta).
        let loss = |x: &[f32], gamma: &[f32], beta: &[f32]| {
            let mut h = vec![0.0; n];
            let (mut mean, mut rstd) = (vec![0.0; rows], vec![0.0; rows]);
            let mut r = vec![0.0; n];
            let (yv, rv) = if with_y { (Some(&y[..]), Some(&mut r[..])) } else { (None, None) };
            cpu::layernorm_forward(x, yv, gamma, beta, 1e-5, id, rv, &mut h, &mut mean, &mut rstd).unwrap();
            dot(&w, &h)
        };
        let mut h = vec![0.0; n];
        let (mut mean, mut rstd) = (vec![0.0; rows], vec![0.0; rows]);
        let mut r = vec![0.0; n];
        let (yv, rv) = if with_y { (Some(&y[..]), Some(&mut r[..])) } else { (None, None) };
        cpu::layernorm_forward(&x, yv, &gamma, &beta, 1e-5, id, rv, &mut h, &mut mean, &mut rstd).unwrap();
        let rin = if with_y { &r } else { &x };
        let (mut dr, mut dgamma, mut dbeta) = (vec![0.0; n], vec![0.0; c], vec![0.0; c]);
        cpu::layernorm_backward(&w, None, rin, &mean, &rstd, &gamma, id, &mut dr, &mut dgamma, &mut dbeta).unwrap();
        let tag = format!("rows {rows} C {c}");
        let cx = coords(&mut rng, n, 12);
        let cc = coords(&mut rng, c, 6);
        check_fd(&format!("{tag} dx"), &x, &dr, &cx, 2e-2, |v| loss(v, &gamma, &beta));
        check_fd(&format!("{tag} dgamma"), &gamma, &dgamma, &cc, 2e-2, |v| loss(&x, v, &beta));
        check_fd(&format!("{tag} dbeta"), &beta, &dbeta, &cc, 2e-2, |v| loss(&x, &gamma, v));

        // dres adds in; dgamma/dbeta accumulate.
        let dres = random(&mut rng, n, 1.0);
        let (mut dr2, mut dgamma2, mut dbeta2) = (vec![0.0; n], dgamma.clone(), dbeta.clone());
        cpu::layernorm_backward(&w, Some(&dres), rin, &mean, &rstd, &gamma, id, &mut dr2, &mut dgamma2, &mut dbeta2)
            .unwrap();
        for i in 0..n {
            assert!((dr2[i] - (dr[i] + dres[i])).abs() <= 1e-5 * (1.0 + dr2[i].abs()), "{tag}: dres at {i}");
        }
        for j in 0..c {
            assert_eq!(dgamma2[j], dgamma[j] + dgamma[j], "{tag}: dgamma accumulates");
            assert_eq!(dbeta2[j], dbeta[j] + dbeta[j], "{tag}: dbeta accumulates");
        }
    }
}

#[test]
fn attention_backward_matches_finite_differences() {
    let mut rng = Rng::new(2);
    for d in [
        AttnDims { b: 1, t: 1, c: 4, nh: 1 },
        AttnDims { b: 2, t: 5, c: 6, nh: 3 },
        AttnDims { b: 1, t: 7, c: 8, nh: 1 },
        AttnDims { b: 2, t: 4, c: 16, nh: 8 },
    ] {
        let n = d.rows() * 3 * d.c;
        let qkv = random(&mut rng, n, 1.0);
        let w = random(&mut rng, d.rows() * d.c, 1.0);
        let loss = |qkv: &[f32]| {
            let mut out = vec![0.0; d.rows() * d.c];
            let mut p = vec![0.0; d.scores_len()];
            cpu::attention_forward(qkv, d, id, &mut out, &mut p).unwrap();
            dot(&w, &out)
        };
        let mut out = vec![0.0; d.rows() * d.c];
        let mut p = vec![0.0; d.scores_len()];
        cpu::attention_forward(&qkv, d, id, &mut out, &mut p).unwrap();
        // Causal: row t of the probabilities sums to 1 over j <= t and is 0 beyond.
        for row in p.chunks(d.t).enumerate() {
            let t = row.0 % d.t;
            let s: f32 = row.1[..=t].iter().sum();
            assert!((s - 1.0).abs() < 1e-5 && row.1[t + 1..].iter().all(|&x| x == 0.0), "{d:?}: row {t}");
        }
        let mut dqkv = vec![0.0; n];
        cpu::attention_backward(&w, &qkv, &p, d, id, &mut dqkv).unwrap();
        check_fd(&format!("{d:?} dqkv"), &qkv, &dqkv, &coords(&mut rng, n, 24), 2e-2, loss);
    }
}

#[test]
fn attention_is_causal() {
    // Changing token t's q, k or v changes no output before t.
    let mut rng = Rng::new(3);
    let d = AttnDims { b: 1, t: 6, c: 8, nh: 2 };
    let qkv = random(&mut rng, d.rows() * 3 * d.c, 1.0);
    let run = |qkv: &[f32]| {
        let mut out = vec![0.0; d.rows() * d.c];
        let mut p = vec![0.0; d.scores_len()];
        cpu::attention_forward(qkv, d, id, &mut out, &mut p).unwrap();
        out
    };
    let base = run(&qkv);
    let mut changed = qkv.clone();
    for j in 0..3 * d.c {
        changed[4 * 3 * d.c + j] += 1.0;
    }
    let after = run(&changed);
    assert_eq!(base[..4 * d.c], after[..4 * d.c]);
    assert_ne!(base[4 * d.c..], after[4 * d.c..]);
}

#[test]
fn classifier_gradient_matches_finite_differences_and_ignores_padding() {
    let mut rng = Rng::new(4);
    for (rows, vocab, padded) in [(1, 3, 3), (5, 10, 16), (7, 65, 80)] {
        let logits = random(&mut rng, rows * padded, 2.0);
        let labels: Vec<u32> = (0..rows).map(|_| rng.below(vocab as u64) as u32).collect();
        let mean_loss = |z: &[f32]| {
            let (mut l, mut d) = (vec![0.0; rows], vec![0.0; rows * padded]);
            cpu::classifier(z, &labels, vocab, padded, 1.0, id, &mut l, &mut d).unwrap();
            l.iter().map(|&x| x as f64).sum::<f64>() / rows as f64
        };
        let (mut l, mut d) = (vec![0.0; rows], vec![0.0; rows * padded]);
        cpu::classifier(&logits, &labels, vocab, padded, 1.0 / rows as f32, id, &mut l, &mut d).unwrap();
        let tag = format!("rows {rows} vocab {vocab}/{padded}");
        check_fd(&tag, &logits, &d, &coords(&mut rng, rows * padded, 20), 1e-2, mean_loss);
        for r in 0..rows {
            assert!(d[r * padded + vocab..(r + 1) * padded].iter().all(|&x| x == 0.0), "{tag}: padding");
        }
        // The loss equals the plain cross-entropy over the real columns.
        let real: Vec<f32> = (0..rows).flat_map(|r| logits[r * padded..r * padded + vocab].to_vec()).collect();
        assert_eq!(l, cpu::cross_entropy_forward(&real, &labels, rows, vocab).unwrap(), "{tag}");
    }
    let (mut l, mut d) = (vec![0.0; 1], vec![0.0; 4]);
    assert!(cpu::classifier(&[0.0; 4], &[3], 3, 4, 1.0, id, &mut l, &mut d).is_err(), "a label in the padding");
    assert!(cpu::classifier(&[0.0; 4], &[0], 5, 4, 1.0, id, &mut l, &mut d).is_err(), "vocab above padded");
}

#[test]
fn embedding_backward_sums_rows_in_order() {
    let (t, c) = (3, 2);
    let tokens = [1u32, 0, 1, 1, 2, 1];
    let wte: Vec<f32> = (0..8).map(|i| i as f32).collect(); // vocab 4
    let wpe: Vec<f32> = (0..6).map(|i| 10.0 * i as f32).collect();
    let mut out = vec![0.0; 12];
    cpu::embedding_forward(&tokens, &wte, &wpe, t, c, id, &mut out).unwrap();
    assert_eq!(out[..6], [2.0, 13.0, 20.0, 31.0, 42.0, 53.0]);
    let dout: Vec<f32> = (0..12).map(|i| 1.0 + i as f32).collect();
    let (mut dwte, mut dwpe) = (vec![0.5; 8], vec![0.0; 6]);
    cpu::embedding_backward(&tokens, &dout, t, c, &mut dwte, &mut dwpe).unwrap();
    // Token 1 at rows 0, 2, 3, 5: 1+5+7+11 = 24, 2+6+8+12 = 28; token 3 untouched.
    assert_eq!(dwte, [3.5, 4.5, 24.5, 28.5, 9.5, 10.5, 0.5, 0.5]);
    assert_eq!(dwpe, [8.0, 10.0, 12.0, 14.0, 16.0, 18.0]);
    assert!(cpu::embedding_forward(&[4], &wte, &wpe, 1, c, id, &mut out[..2]).is_err(), "token beyond vocab");
}

fn tiny() -> GptConfig {
    GptConfig { vocab: 11, padded_vocab: 16, context: 6, layers: 2, heads: 2, width: 8 }
}

/// Sequences with something to learn: each token is usually its predecessor plus 3
/// (mod vocab), sometimes random.
fn batch(rng: &mut Rng, cfg: &GptConfig, samples: usize) -> (Vec<u32>, Vec<u32>) {
    let v = cfg.vocab as u64;
    let mut seq = vec![rng.below(v) as u32];
    while seq.len() < samples * cfg.context + 1 {
        let next = if rng.below(4) == 0 { rng.below(v) } else { (*seq.last().unwrap() as u64 + 3) % v };
        seq.push(next as u32);
    }
    (seq[..samples * cfg.context].to_vec(), seq[1..].to_vec())
}

/// The whole model's gradient through the tape, against central differences of its
/// loss, for entries of every parameter (the tied `wte` gets both uses' gradients).
#[test]
fn gpt_gradient_matches_finite_differences() {
    let cfg = tiny();
    let gpt = Gpt::new(cfg).unwrap();
    let be = Cpu::fp32();
    let no_scaling = GradScalerConfig { enabled: false, ..Default::default() };
    let mut init = gpt.init(5);
    // Bigger than nanoGPT's 0.02 so that every path carries a measurable gradient.
    for (v, p) in init.iter_mut().zip(gpt.layout().params()) {
        if !p.name.contains(".ln_") {
            v.iter_mut().for_each(|x| *x *= 10.0);
        }
    }
    let mut params = be.params(gpt.layout().clone(), &init, Default::default(), no_scaling, Weights::Master).unwrap();
    let mut rng = Rng::new(6);
    let (x, y) = batch(&mut rng, &cfg, 2);
    let tokens = be.tokens(&x, cfg.vocab).unwrap();
    let labels = be.labels(&y, cfg.vocab).unwrap();
    let loss_of = |p: &CpuParams| {
        let mut tape = Tape::new();
        let mut out = be.scalar().unwrap();
        let logits = gpt.forward(&mut tape, &be, p, &tokens, cfg.context).unwrap();
        tape.classifier(&be, p, logits, &labels, &mut out, 1.0, 0.0, 1.0).unwrap();
        out.0 as f64
    };
    let mut tape = Tape::new();
    let mut out = be.scalar().unwrap();
    let logits = gpt.forward(&mut tape, &be, &params, &tokens, cfg.context).unwrap();
    tape.classifier(&be, &params, logits, &labels, &mut out, 1.0, 0.0, 1.0).unwrap();
    tape.backward(&be, &mut params, 1.0).unwrap();
    let grad = params.grad.clone();
    for spec in gpt.layout().params() {
        let picks: Vec<usize> = coords(&mut rng, spec.len, 3).into_iter().map(|i| spec.offset + i).collect();
        let mut probe = params.clone();
        check_fd(&spec.name, &params.working, &grad, &picks, 3e-2, |w| {
            probe.working.copy_from_slice(w);
            loss_of(&probe)
        });
    }
    // A backward weight other than the classifier's is refused.
    let mut tape = Tape::new();
    let logits = gpt.forward(&mut tape, &be, &params, &tokens, cfg.context).unwrap();
    tape.classifier(&be, &params, logits, &labels, &mut out, 1.0, 0.0, 0.5).unwrap();
    assert!(matches!(tape.backward(&be, &mut params, 1.0), Err(Error::InvalidArgument { .. })));
}

#[test]
fn gpt_layout_follows_nanogpt() {
    let gpt = Gpt::new(GptConfig { layers: 1, ..tiny() }).unwrap();
    let names: Vec<&str> = gpt.layout().params().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "transformer.wte.weight",
            "transformer.wpe.weight",
            "transformer.h.0.ln_1.weight",
            "transformer.h.0.ln_1.bias",
            "transformer.h.0.attn.c_attn.weight",
            "transformer.h.0.attn.c_attn.bias",
            "transformer.h.0.attn.c_proj.weight",
            "transformer.h.0.attn.c_proj.bias",
            "transformer.h.0.ln_2.weight",
            "transformer.h.0.ln_2.bias",
            "transformer.h.0.mlp.c_fc.weight",
            "transformer.h.0.mlp.c_fc.bias",
            "transformer.h.0.mlp.c_proj.weight",
            "transformer.h.0.mlp.c_proj.bias",
            "transformer.ln_f.weight",
            "transformer.ln_f.bias",
        ]
    );
    let shapes: Vec<Vec<usize>> = gpt.layout().params().iter().map(|p| p.shape.clone()).collect();
    assert_eq!(shapes[0], [16, 8]);
    assert_eq!(shapes[4], [24, 8]);
    assert_eq!(shapes[10], [32, 8]);
    assert_eq!(shapes[12], [8, 32]);
    let init = gpt.init(1);
    assert!(init[2].iter().all(|&x| x == 1.0) && init[3].iter().all(|&x| x == 0.0));
    let std = |v: &[f32]| (v.iter().map(|&x| x as f64 * x as f64).sum::<f64>() / v.len() as f64).sqrt();
    assert!((std(&init[0]) - 0.02).abs() < 0.005, "wte std {}", std(&init[0]));
    assert!(std(&init[12]) < std(&init[10]), "c_proj scaled by 1/sqrt(2L)");
    assert_eq!(gpt.init(1), init, "seeded");
    for bad in
        [GptConfig { width: 9, ..tiny() }, GptConfig { padded_vocab: 10, ..tiny() }, GptConfig { layers: 0, ..tiny() }]
    {
        assert!(matches!(Gpt::new(bad), Err(Error::InvalidArgument { .. })), "{bad:?}");
    }
}

fn train<B: TransformerBackend + 'static>(be: B, cfg: TrainConfig, steps: usize, seed: u64) -> Vec<f32> {
    let gpt = Gpt::new(tiny()).unwrap();
    let mut step = TrainStep::new(be, gpt.clone(), &gpt.init(seed), cfg).unwrap();
    let mut rng = Rng::new(seed + 100);
    (0..steps)
        .map(|_| {
            let (x, y) = batch(&mut rng, gpt.config(), 4);
            step.step(&x, &y).unwrap();
            step.loss().unwrap()
        })
        .collect()
}

/// `Cpu::mixed` (and `mixed_bf16`) follow `Cpu::fp32` over a few hundred steps: the loss
/// curves stay close (tolerances: f16 2%, bf16 5% of the fp32 loss, on every 10-step mean).
#[test]
fn cpu_mixed_gpt_follows_fp32() {
    let steps = 300;
    let fp32 = train(Cpu::fp32(), TrainConfig::default(), steps, 7);
    let f16 = train(Cpu::mixed(), TrainConfig::f16(), steps, 7);
    let bf16 = train(Cpu::mixed_bf16(), TrainConfig::bf16(), steps, 7);
    assert!(fp32[steps - 1] < 0.9 * fp32[0], "it learns: {} -> {}", fp32[0], fp32[steps - 1]);
    for (name, run, tol) in [("f16", &f16, 0.02), ("bf16", &bf16, 0.05)] {
        for (i, (a, b)) in fp32.chunks(10).zip(run.chunks(10)).enumerate() {
            let (a, b) = (a.iter().sum::<f32>() / 10.0, b.iter().sum::<f32>() / 10.0);
            assert!((a - b).abs() <= tol * a, "{name}: steps {}..: fp32 {a}, {name} {b}", i * 10);
        }
    }
}

#[test]
fn gpt_runs_are_deterministic() {
    for be in [Cpu::fp32(), Cpu::mixed()] {
        let a = train(be, TrainConfig { graphs: false, ..TrainConfig::default() }, 20, 9);
        let b = train(be, TrainConfig::default(), 20, 9);
        assert_eq!(
            a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }
}

/// A loss scale so large that the f16 logit gradients overflow: the step is skipped (no
/// weight, moment or step-count change, so the schedule does not advance) and the scale
/// backs off until steps go through.
#[test]
fn gpt_overflow_skips_and_backs_off() {
    let gpt = Gpt::new(tiny()).unwrap();
    let scaler = GradScalerConfig { init_scale: 2f32.powi(40), ..Default::default() };
    let cfg = TrainConfig { scaler, ..TrainConfig::f16() };
    let mut step = TrainStep::new(Cpu::mixed(), gpt.clone(), &gpt.init(3), cfg).unwrap();
    let mut rng = Rng::new(3);
    let before = step.state().unwrap();
    let (x, y) = batch(&mut rng, gpt.config(), 2);
    step.step(&x, &y).unwrap();
    assert!(step.skipped().unwrap());
    let after = step.state().unwrap();
    assert_eq!(after.step, 0.0);
    for (name, p) in &before.params {
        assert_eq!(p.master, after.params[name].master, "{name}");
        assert_eq!(p.m, after.params[name].m, "{name}");
    }
    assert_eq!(after.loss_scale, 2f32.powi(39));
    let mut skipped = 1;
    while step.skipped().unwrap() {
        step.step(&x, &y).unwrap();
        skipped += 1;
        assert!(skipped < 40, "the scale never came down");
    }
    assert_eq!(step.steps_taken().unwrap(), 1.0);
    assert!(step.loss_scale().unwrap() < 2f32.powi(30));
}

#[test]
fn gpt_bad_batches_are_refused() {
    let gpt = Gpt::new(tiny()).unwrap();
    let mut step = TrainStep::new(Cpu::mixed(), gpt.clone(), &gpt.init(1), TrainConfig::f16()).unwrap();
    let mut rng = Rng::new(1);
    let (x, y) = batch(&mut rng, gpt.config(), 2);
    let mut bad_token = x.clone();
    bad_token[3] = 11;
    assert!(matches!(step.step(&bad_token, &y), Err(Error::InvalidArgument { .. })), "token beyond vocab");
    assert!(matches!(step.step(&x[1..], &y), Err(Error::ShapeMismatch { .. })), "not whole sequences");
    assert!(matches!(step.step(&x, &y[1..]), Err(Error::ShapeMismatch { .. })), "labels short");
    assert_eq!(step.state().unwrap().step, 0.0, "nothing ran");
    step.step(&x, &y).unwrap();
    let (loss, acc) = step.evaluate(&x, &y).unwrap();
    assert!(loss.is_finite() && (0.0..=1.0).contains(&acc));
    assert_eq!(step.predict(&x).unwrap().len(), y.len());
}

/// A checkpoint reload continues bit for bit: a run saved after 5 steps and reloaded into
/// a step made from other weights gives the same next losses and the same final state as
/// the run that went on.
#[test]
fn gpt_checkpoint_reload_continues_bit_identically() {
    let gpt = Gpt::new(tiny()).unwrap();
    let adam = mixed_precision::optim::AdamConfig {
        schedule: mixed_precision::kernels::adam::LrSchedule::WarmupCosine {
            warmup_steps: 3,
            decay_steps: 12,
            min_lr: 1e-4,
        },
        max_grad_norm: Some(1.0),
        ..Default::default()
    };
    let cfg = TrainConfig { adam, ..TrainConfig::f16() };
    let mut rng = Rng::new(11);
    let batches: Vec<_> = (0..10).map(|_| batch(&mut rng, gpt.config(), 2)).collect();
    let mut a = TrainStep::new(Cpu::mixed(), gpt.clone(), &gpt.init(1), cfg).unwrap();
    let path = std::env::temp_dir().join(format!("mp-gpt-ckpt-{}", std::process::id()));
    let mut losses_a = Vec::new();
    for (i, (x, y)) in batches.iter().enumerate() {
        if i == 5 {
            a.save_checkpoint(&path).unwrap();
        }
        a.step(x, y).unwrap();
        losses_a.push(a.loss().unwrap().to_bits());
    }
    let mut b = TrainStep::new(Cpu::mixed(), gpt.clone(), &gpt.init(2), TrainConfig::f16()).unwrap();
    b.load_checkpoint(&path).unwrap();
    let losses_b: Vec<u32> = batches[5..]
        .iter()
        .map(|(x, y)| {
            b.step(x, y).unwrap();
            b.loss().unwrap().to_bits()
        })
        .collect();
    assert_eq!(losses_a[5..], losses_b[..]);
    let (sa, sb) = (a.state().unwrap(), b.state().unwrap());
    assert_eq!(sa.step, sb.step);
    assert_eq!(sa.loss_scale, sb.loss_scale);
    for (name, p) in &sa.params {
        assert_eq!(p.master, sb.params[name].master, "{name}");
        assert_eq!(p.v, sb.params[name].v, "{name}");
    }
    // A checkpoint of another model is refused, changing nothing.
    let other = Gpt::new(GptConfig { layers: 1, ..tiny() }).unwrap();
    let mut c = TrainStep::new(Cpu::mixed(), other.clone(), &other.init(1), TrainConfig::f16()).unwrap();
    let before = c.master_weights().unwrap();
    assert!(matches!(c.load_checkpoint(&path), Err(Error::Checkpoint { .. })));
    assert_eq!(c.master_weights().unwrap(), before);
    std::fs::remove_file(&path).unwrap();
}
