//! The whole training step: Cpu fp32 against Cpu mixed (and against CUDA on a GPU),
//! loss-scale overflow end to end, bad input, NaN input, micro-batches, CUDA-graph
//! replay against eager execution and the eager fallback when capture is refused, the
//! state read by parameter name and `evaluate`, and the state's parity between CUDA and
//! Cpu mixed.

mod common;

#[path = "../examples/common/digits.rs"]
mod digits;

use mixed_precision::backend::cpu::Cpu;
use mixed_precision::backend::cuda::Cuda;
use mixed_precision::backend::Backend;
use mixed_precision::half::bf16;
use mixed_precision::kernels::adam::LrSchedule;
use mixed_precision::kernels::gemm::Activation;
use mixed_precision::nn::Mlp;
use mixed_precision::optim::{AdamConfig, GradScalerConfig};
use mixed_precision::train::TrainState;
use mixed_precision::{Device, Error, TrainConfig, TrainStep};

use digits::{Digits, RunConfig};

fn data() -> (Digits, Digits) {
    let d = digits::load(&digits::default_path()).expect("examples/data/digits.csv.gz");
    d.split(digits::TEST_FRACTION, 0)
}

/// The parity run: 200 steps at lr 5e-4. The bound (every step's loss within 1%) is a
/// bound on precision, so the run avoids the regime where two runs that differ in the
/// last bits drift apart chaotically: at lr 3e-3 the two trajectories part by up to 9%
/// in the middle of training although both end at the same accuracy.
const PARITY: RunConfig = RunConfig { steps: 200, batch: 64, lr: 5e-4, seed: 0 };

struct Run {
    losses: Vec<f32>,
    accuracy: f32,
}

/// A run as the example makes it: the split, initial weights and batches from `cfg.seed`.
fn run<B: Backend>(be: B, cfg: &RunConfig, tcfg: TrainConfig) -> Run {
    let d = digits::load(&digits::default_path()).expect("examples/data/digits.csv.gz");
    let (train, test) = d.split(digits::TEST_FRACTION, cfg.seed);
    let mut losses = Vec::new();
    let step = digits::train(be, &train, cfg, tcfg, |_, l, _| losses.push(l)).unwrap();
    Run { losses, accuracy: step.accuracy(&test.x, &test.y).unwrap() }
}

fn assert_parity(name: &str, reference: &Run, other: &Run) {
    let mut worst = (0.0f32, 0);
    for (i, (a, b)) in reference.losses.iter().zip(&other.losses).enumerate() {
        let rel = (a - b).abs() / a.abs();
        assert!(rel <= 0.01, "{name}: step {i}: loss {b} against the fp32 reference {a} ({:.2}%)", 100.0 * rel);
        if rel > worst.0 {
            worst = (rel, i);
        }
    }
    let points = 100.0 * (reference.accuracy - other.accuracy).abs();
    println!(
        "{name}: {} steps, worst loss difference {:.3}% at step {}, final loss {} vs {}, accuracy {:.2}% vs {:.2}%",
        other.losses.len(),
        100.0 * worst.0,
        worst.1,
        other.losses.last().unwrap(),
        reference.losses.last().unwrap(),
        100.0 * other.accuracy,
        100.0 * reference.accuracy
    );
    assert!(points <= 1.0, "{name}: accuracy {} against {}", other.accuracy, reference.accuracy);
}

#[test]
fn cpu_mixed_matches_fp32_for_200_steps() {
    let fp32 = run(Cpu::fp32(), &PARITY, TrainConfig::default());
    let mixed = run(Cpu::mixed(), &PARITY, TrainConfig::default());
    assert_eq!(mixed.losses.len(), 200);
    assert!(mixed.losses.iter().zip(&fp32.losses).any(|(a, b)| a != b), "Mixed must actually round");
    assert_parity("cpu mixed", &fp32, &mixed);
}

#[test]
fn cuda_matches_cpu_fp32_for_200_steps() {
    let dev = gpu_or_skip!();
    // Emulator: 60 steps (CPU mixed: 0.03% worst loss gap, same 74% accuracy); every kernel, graph replay too.
    let parity = RunConfig { steps: common::size_for(&dev, PARITY.steps, 60), ..PARITY };
    let fp32 = run(Cpu::fp32(), &parity, TrainConfig::default());
    let cuda = run(Cuda::new(&dev), &parity, TrainConfig::default());
    assert_parity("cuda", &fp32, &cuda);
}

#[test]
fn the_main_job_reaches_95_percent_on_the_cpu() {
    let r = run(Cpu::mixed(), &RunConfig::default(), TrainConfig::default());
    assert!(r.accuracy >= 0.95, "test accuracy {}", r.accuracy);
}

/// Starts from a scale of 2^40, far beyond what fp16 activation gradients hold: the
/// first steps overflow and are skipped with no weight changing, the scale halves each
/// time, then training proceeds and converges; `steps` steps in all.
fn overflow_then_converge<B: Backend>(be: B, steps: usize) {
    let (train, test) = data();
    let cfg = RunConfig { steps: 1, ..RunConfig::default() };
    let tcfg = TrainConfig {
        scaler: GradScalerConfig { init_scale: 2f32.powi(40), ..Default::default() },
        ..TrainConfig::default()
    };
    let mut step = digits::train(be, &train, &RunConfig { steps: 0, ..cfg }, tcfg, |_, _, _| {}).unwrap();
    let mut skipped = 0;
    let mut weights = step.master_weights().unwrap();
    for s in 0..steps {
        let batch = train.gather(&(0..64).map(|r| (s * 64 + r) % train.len()).collect::<Vec<_>>());
        let scale = step.loss_scale().unwrap();
        step.step(&batch.x, &batch.y).unwrap();
        let now = step.master_weights().unwrap();
        if step.skipped().unwrap() {
            skipped += 1;
            assert!(
                now.iter().zip(&weights).all(|(a, b)| a.to_bits() == b.to_bits()),
                "step {s}: a skipped step changed weights"
            );
            assert_eq!(step.loss_scale().unwrap(), scale * 0.5, "step {s}: back off by half");
        } else {
            assert!(skipped > 0, "step {s}: the first step with scale 2^40 must overflow");
        }
        weights = now;
    }
    assert!((5..40).contains(&skipped), "{skipped} skipped steps");
    assert_eq!(step.steps_taken().unwrap() as usize, steps - skipped);
    let acc = step.accuracy(&test.x, &test.y).unwrap();
    assert!(acc > 0.9, "after the overflow the run must still learn: accuracy {acc}");
}

/// NaN (or inf) in the inputs: not an error; found_inf catches it and the step is skipped,
/// nothing changing; the scale backs off when scaling is on and stays 1 when it is off.
fn nonfinite_inputs_skip<B: Backend>(be: B, tcfg: TrainConfig, bad: f32) {
    let (train, _) = data();
    let cfg = RunConfig { steps: 3, ..RunConfig::default() };
    let mut step = digits::train(be, &train, &cfg, tcfg, |_, _, _| {}).unwrap();
    let before = step.master_weights().unwrap();
    let state = step.state().unwrap();
    let (taken, scale) = (step.steps_taken().unwrap(), step.loss_scale().unwrap());
    let mut batch = train.gather(&(0..64).collect::<Vec<_>>());
    batch.x[5] = bad;
    step.step(&batch.x, &batch.y).unwrap();
    assert!(step.skipped().unwrap());
    assert!(!step.loss().unwrap().is_finite());
    assert_eq!(step.steps_taken().unwrap(), taken);
    let expected = if tcfg.scaler.enabled { scale * 0.5 } else { 1.0 };
    assert_eq!(step.loss_scale().unwrap(), expected);
    let after = step.master_weights().unwrap();
    assert!(before.iter().zip(&after).all(|(a, b)| a.to_bits() == b.to_bits()));
    let now = step.state().unwrap();
    for (name, p) in &state.params {
        let q = &now.params[name];
        assert!(p.m == q.m && p.v == q.v && p.working == q.working, "{name}: a skipped step changed state");
    }
    batch.x[5] = 0.5;
    step.step(&batch.x, &batch.y).unwrap();
    assert!(!step.skipped().unwrap(), "a clean batch after the bad one trains again");
}

fn nan_inputs_skip<B: Backend>(be: B) {
    nonfinite_inputs_skip(be, TrainConfig::default(), f32::NAN);
}

/// Wrong shapes and labels are errors returned before anything is queued.
fn bad_input_changes_nothing<B: Backend>(be: B) {
    let model = Mlp::new(&digits::WIDTHS, Activation::Relu).unwrap();
    let init = model.init(1);
    let tcfg = TrainConfig { micro_batches: 2, ..TrainConfig::default() };
    let mut step = TrainStep::new(be, model, &init, tcfg).unwrap();
    let x = vec![0.5f32; 4 * 64];
    step.step(&x, &[1, 2, 3, 4]).unwrap();
    let before = step.master_weights().unwrap();
    let taken = step.steps_taken().unwrap();
    let cases: Vec<(Vec<f32>, Vec<u32>, &str)> = vec![
        (x.clone(), vec![1, 2, 3, 10], "labels"),
        (vec![0.5; 4 * 63], vec![1, 2, 3, 4], "features"),
        (x.clone(), vec![1, 2, 3], "batch"),
        (vec![], vec![], "empty"),
        (vec![0.5; 3 * 64], vec![1, 2, 3], "micro-batches"),
    ];
    for (x, y, what) in cases {
        let e = step.step(&x, &y).unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidArgument { op: "TrainStep::step", .. }
                    | Error::ShapeMismatch { op: "TrainStep::step", .. }
                    | Error::LengthMismatch { op: "TrainStep::step", .. }
            ),
            "{what}: {e}"
        );
        assert!(e.to_string().contains("TrainStep::step"), "{what}: the message names the op: {e}");
    }
    assert_eq!(step.master_weights().unwrap(), before);
    assert_eq!(step.steps_taken().unwrap(), taken);
    step.step(&x, &[1, 2, 3, 4]).unwrap();
    assert_eq!(step.steps_taken().unwrap(), taken + 1.0, "still usable after the errors");
}

#[test]
fn cpu_overflow_then_converge() {
    overflow_then_converge(Cpu::mixed(), 400);
}

#[test]
fn cuda_overflow_then_converge() {
    let dev = gpu_or_skip!();
    // Emulator: 150 steps (CPU mixed there: 19 skipped, then 95% accuracy); the same backoffs, skips and recovery.
    let steps = common::size_for(&dev, 400, 150);
    overflow_then_converge(Cuda::new(&dev), steps);
}

#[test]
fn cpu_nan_inputs_skip() {
    nan_inputs_skip(Cpu::mixed());
}

#[test]
fn cuda_nan_inputs_skip() {
    let dev = gpu_or_skip!();
    nan_inputs_skip(Cuda::new(&dev));
}

#[test]
fn cpu_bad_input_changes_nothing() {
    bad_input_changes_nothing(Cpu::mixed());
}

#[test]
fn cuda_bad_input_changes_nothing() {
    let dev = gpu_or_skip!();
    bad_input_changes_nothing(Cuda::new(&dev));
}

#[test]
fn micro_batches_match_one_batch() {
    let (train, _) = data();
    let batch = train.gather(&(0..64).collect::<Vec<_>>());
    let model = Mlp::new(&digits::WIDTHS, Activation::Relu).unwrap();
    let init = model.init(3);
    let no_scaler = GradScalerConfig { enabled: false, ..Default::default() };
    let mut results = Vec::new();
    for k in [1, 4] {
        let tcfg = TrainConfig { micro_batches: k, scaler: no_scaler, ..TrainConfig::default() };
        let mut step = TrainStep::new(Cpu::fp32(), model.clone(), &init, tcfg).unwrap();
        let mut losses = Vec::new();
        for _ in 0..3 {
            step.step(&batch.x, &batch.y).unwrap();
            losses.push(step.loss().unwrap());
        }
        results.push((losses, step.master_weights().unwrap()));
    }
    for (a, b) in results[0].0.iter().zip(&results[1].0) {
        assert!((a - b).abs() <= 1e-5 * a.abs(), "loss {a} vs {b}");
    }
    for (a, b) in results[0].1.iter().zip(&results[1].1) {
        assert!((a - b).abs() <= 1e-5, "weight {a} vs {b}");
    }
}

/// Graph replay runs the same kernels on the same buffers as eager execution: every
/// loss, the scale and every master weight must be bit-identical, across a change of
/// batch size (a new capture) and with micro-batches.
#[test]
fn cuda_graph_replay_matches_eager() {
    let dev = gpu_or_skip!();
    let (train, _) = data();
    let model = Mlp::new(&digits::WIDTHS, Activation::Relu).unwrap();
    let init = model.init(5);
    // Emulator: 10 steps, the batch size changing after 6; still a capture and replays per size, and a recapture.
    let (steps, first_size_steps) = common::size_for(&dev, (30, 20), (10, 6));
    for micro_batches in [1, 2] {
        let mut runs = Vec::new();
        for graphs in [false, true] {
            let tcfg = TrainConfig { micro_batches, graphs, ..TrainConfig::default() };
            let mut step = TrainStep::new(Cuda::new(&dev), model.clone(), &init, tcfg).unwrap();
            let mut losses = Vec::new();
            for s in 0..steps {
                let batch = if s < first_size_steps { 64 } else { 32 };
                let rows: Vec<usize> = (0..batch).map(|r| (s * 97 + r * 13) % train.len()).collect();
                let b = train.gather(&rows);
                step.step(&b.x, &b.y).unwrap();
                losses.push(step.loss().unwrap().to_bits());
            }
            if graphs {
                assert_eq!(step.graph_error(), None);
                // Eager warm-up and capture for each batch size: steps - 2 replays
                // after the captures, plus the first replay of each capture.
                assert_eq!(step.graph_replays(), steps as u64 - 2, "micro_batches {micro_batches}");
            } else {
                assert_eq!(step.graph_replays(), 0);
            }
            let weights: Vec<u32> = step.master_weights().unwrap().iter().map(|w| w.to_bits()).collect();
            runs.push((losses, weights, step.loss_scale().unwrap()));
        }
        assert_eq!(runs[0].0, runs[1].0, "micro_batches {micro_batches}: losses differ");
        assert_eq!(runs[0].2, runs[1].2);
        assert!(runs[0].1 == runs[1].1, "micro_batches {micro_batches}: master weights differ");
    }
}

/// Accuracy takes any number of rows (micro-batches split training batches only) but
/// still rejects a label outside the model's classes.
#[test]
fn accuracy_ignores_the_split_not_the_labels() {
    let (_, test) = data();
    let rows = test.gather(&[0, 1, 2]);
    let model = Mlp::new(&digits::WIDTHS, Activation::Relu).unwrap();
    let init = model.init(3);
    let tcfg = TrainConfig { micro_batches: 2, ..TrainConfig::default() };
    let step = TrainStep::new(Cpu::fp32(), model, &init, tcfg).unwrap();
    let acc = step.accuracy(&rows.x, &rows.y).unwrap();
    assert!((0.0..=1.0).contains(&acc), "{acc}");
    let e = step.accuracy(&rows.x, &[0, 1, 99]).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { op: "TrainStep::accuracy", .. }), "{e}");
}

/// The training rows `s * 64 ..` of step `s` (64 rows, wrapping).
fn batch_of(train: &Digits, s: usize) -> Digits {
    train.gather(&(0..64).map(|r| (s * 64 + r) % train.len()).collect::<Vec<_>>())
}

/// Regression (issue 14, item 1): `TrainStep::capture` passed a `cuStreamBeginCapture`
/// error on with `?`, so on a stream the driver will not capture (here the legacy
/// default stream, which `Device::from_current_context(null)` adopts, as PyTorch's
/// default stream is) every step from the second on returned `Err`. Now the refusal is
/// recorded in `graph_error` and the steps run eagerly, with the results of a run with
/// graphs off, bit for bit.
#[test]
fn cuda_capture_refused_on_the_legacy_stream_runs_eagerly() {
    let dev = gpu_or_skip!();
    dev.context().bind_to_thread().unwrap();
    // SAFETY: the device's primary context is current on this thread (bound above), the
    // null stream is its legacy default stream, and `dev` keeps the context alive for
    // longer than `legacy` and its buffers (dropped at the end of each loop iteration).
    let legacy = unsafe { Device::from_current_context(std::ptr::null_mut()) }.unwrap();
    let (train, _) = data();
    let model = Mlp::new(&digits::WIDTHS, Activation::Relu).unwrap();
    let init = model.init(7);
    let mut runs = Vec::new();
    for (d, graphs) in [(&legacy, true), (&dev, false)] {
        let tcfg = TrainConfig { graphs, ..TrainConfig::default() };
        let mut step = TrainStep::new(Cuda::new(d), model.clone(), &init, tcfg).unwrap();
        let mut losses = Vec::new();
        for s in 0..4 {
            let b = batch_of(&train, s);
            step.step(&b.x, &b.y).unwrap_or_else(|e| panic!("graphs {graphs}, step {s}: {e}"));
            losses.push(step.loss().unwrap().to_bits());
        }
        if graphs {
            let why = step.graph_error().expect("the driver refuses to capture the legacy stream");
            assert!(why.contains("Cuda::begin_capture") && why.contains("STREAM_CAPTURE_UNSUPPORTED"), "{why}");
        } else {
            assert_eq!(step.graph_error(), None);
        }
        assert_eq!(step.graph_replays(), 0);
        let weights: Vec<u32> = step.master_weights().unwrap().iter().map(|w| w.to_bits()).collect();
        runs.push((losses, weights, step.loss_scale().unwrap(), step.steps_taken().unwrap()));
    }
    assert_eq!(runs[0], runs[1], "eager fallback against graphs off");
}

const NAMES: [&str; 6] =
    ["layers.0.bias", "layers.0.weight", "layers.1.bias", "layers.1.weight", "layers.2.bias", "layers.2.weight"];

/// The state by name: before any step exactly the initial values without padding and
/// zeros; after a step the gradients still scaled by the scale of their backward, the
/// moments of the unscaled gradients (within AdamW's documented 1e-6), the working copy
/// the f16 of the master weights; after a skipped step the gradients' scale and the new,
/// backed-off scale differ.
fn state_by_name<B: Backend>(be: B) {
    let (train, _) = data();
    let model = Mlp::new(&digits::WIDTHS, Activation::Relu).unwrap();
    let init = model.init(11);
    let fp32 = be.describe().contains("fp32");
    let mut step = TrainStep::new(be, model.clone(), &init, TrainConfig::default()).unwrap();
    let f16_of = |w: &[f32]| -> Vec<f32> { w.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect() };

    let s0 = step.state().unwrap();
    assert_eq!(s0.params.keys().map(String::as_str).collect::<Vec<_>>(), NAMES);
    for (spec, values) in model.layout().params().iter().zip(&init) {
        let p = &s0.params[&spec.name];
        assert_eq!(p.shape, spec.shape, "{}", spec.name);
        assert_eq!(&p.master, values, "{}: the initial values, no padding", spec.name);
        assert_eq!(p.working, if fp32 { values.clone() } else { f16_of(values) }, "{}", spec.name);
        for (what, v) in [("grad", &p.grad), ("m", &p.m), ("v", &p.v)] {
            assert!(v.len() == values.len() && v.iter().all(|&x| x == 0.0), "{}.{what}", spec.name);
        }
    }
    assert_eq!((s0.step, s0.loss_scale, s0.growth_tracker, s0.found_inf), (0.0, 65536.0, 0, false));
    assert_eq!(s0.grad_scale, Some(65536.0));

    let b = batch_of(&train, 0);
    step.step(&b.x, &b.y).unwrap();
    let s1 = step.state().unwrap();
    assert_eq!((s1.step, s1.loss_scale, s1.growth_tracker, s1.found_inf), (1.0, 65536.0, 1, false));
    assert_eq!(s1.grad_scale, Some(65536.0));
    let cfg = AdamConfig::default();
    for name in NAMES {
        let p = &s1.params[name];
        let g = s1.unscaled_grad(name).unwrap();
        assert!(p.grad.iter().any(|&x| x != 0.0), "{name}: a gradient");
        // The scale is a power of two: dividing it out is exact, so the grads are scaled.
        assert!(p.grad.iter().zip(&g).all(|(s, u)| *s == u * 65536.0), "{name}: stored grads carry the scale");
        for (i, &gi) in g.iter().enumerate() {
            let m = ((1.0 - cfg.beta1) * gi as f64) as f32;
            let v = ((1.0 - cfg.beta2) * gi as f64 * gi as f64) as f32;
            assert!((p.m[i] - m).abs() <= 1e-6 * m.abs(), "{name}[{i}]: m {} against {m}", p.m[i]);
            assert!((p.v[i] - v).abs() <= 1e-6 * v.abs(), "{name}[{i}]: v {} against {v}", p.v[i]);
        }
        assert_eq!(p.working, if fp32 { p.master.clone() } else { f16_of(&p.master) }, "{name}");
        assert_ne!(p.master, s0.params[name].master, "{name}: the step moved the weights");
    }

    // A skipped step: grads of the scale 65536, the scale now backed off to 32768.
    let mut nan = batch_of(&train, 1);
    nan.x[3] = f32::NAN;
    step.step(&nan.x, &nan.y).unwrap();
    let s2 = step.state().unwrap();
    assert_eq!((s2.step, s2.loss_scale, s2.growth_tracker, s2.found_inf), (1.0, 32768.0, 0, true));
    assert_eq!(s2.grad_scale, Some(65536.0));
    for name in NAMES {
        let (p1, p2) = (&s1.params[name], &s2.params[name]);
        assert!(p1.master == p2.master && p1.m == p2.m && p1.v == p2.v && p1.working == p2.working, "{name}");
    }
}

#[test]
fn cpu_state_by_name() {
    state_by_name(Cpu::mixed());
    state_by_name(Cpu::fp32());
}

#[test]
fn cuda_state_by_name() {
    let dev = gpu_or_skip!();
    state_by_name(Cuda::new(&dev));
}

#[test]
fn state_with_the_scaler_off_has_unscaled_grads() {
    let model = Mlp::new(&digits::WIDTHS, Activation::Relu).unwrap();
    let init = model.init(2);
    let tcfg = TrainConfig { scaler: GradScalerConfig { enabled: false, ..Default::default() }, ..Default::default() };
    let mut step = TrainStep::new(Cpu::mixed(), model, &init, tcfg).unwrap();
    let (train, _) = data();
    let b = batch_of(&train, 0);
    step.step(&b.x, &b.y).unwrap();
    let s = step.state().unwrap();
    assert_eq!((s.grad_scale, s.loss_scale), (None, 1.0));
    assert_eq!(s.unscaled_grad("layers.2.weight").unwrap(), s.params["layers.2.weight"].grad);
    assert_eq!(s.unscaled_grad("layer2.weight"), None);
}

/// `evaluate` gives the loss the training step then reports for the same batch (the same
/// ops, bit for bit) and the accuracy `accuracy` gives, changes nothing, and rejects bad
/// input before queuing anything.
fn evaluate_is_the_training_loss<B: Backend>(be: B) {
    let (train, test) = data();
    let model = Mlp::new(&digits::WIDTHS, Activation::Relu).unwrap();
    let init = model.init(4);
    let mut step = TrainStep::new(be, model, &init, TrainConfig::default()).unwrap();
    for s in 0..3 {
        let b = batch_of(&train, s);
        let before = step.state().unwrap();
        let (loss, acc) = step.evaluate(&b.x, &b.y).unwrap();
        assert!(step.state().unwrap() == before, "step {s}: evaluate changed the state");
        assert_eq!(acc, step.accuracy(&b.x, &b.y).unwrap());
        step.step(&b.x, &b.y).unwrap();
        assert_eq!(loss.to_bits(), step.loss().unwrap().to_bits(), "step {s}: evaluate {loss} vs the step's loss");
    }
    let rows = test.gather(&(0..37).collect::<Vec<_>>());
    let (loss, acc) = step.evaluate(&rows.x, &rows.y).unwrap();
    assert!(loss.is_finite() && loss > 0.0 && (0.0..=1.0).contains(&acc), "{loss} {acc}");

    let before = step.state().unwrap();
    let x = &rows.x[..3 * 64];
    let cases: Vec<(&[f32], Vec<u32>, &str)> = vec![
        (x, vec![1, 2, 10], "label out of range"),
        (&x[..3 * 64 - 1], vec![1, 2, 3], "features"),
        (x, vec![1, 2], "rows"),
        (&[], vec![], "empty"),
    ];
    for (x, y, what) in cases {
        let e = step.evaluate(x, &y).unwrap_err();
        assert!(e.to_string().contains("TrainStep::evaluate"), "{what}: {e}");
    }
    assert!(step.state().unwrap() == before);
}

#[test]
fn cpu_evaluate_is_the_training_loss() {
    evaluate_is_the_training_loss(Cpu::mixed());
    evaluate_is_the_training_loss(Cpu::fp32());
}

#[test]
fn cuda_evaluate_is_the_training_loss() {
    let dev = gpu_or_skip!();
    evaluate_is_the_training_loss(Cuda::new(&dev));
}

/// The state after each of `steps` steps, and `evaluate` on the test set after it.
fn states<B: Backend>(be: B, init: &[Vec<f32>], steps: usize, tcfg: TrainConfig) -> Vec<(TrainState, (f32, f32))> {
    let (train, test) = data();
    let model = Mlp::new(&digits::WIDTHS, Activation::Relu).unwrap();
    let mut step = TrainStep::new(be, model, init, tcfg).unwrap();
    let mut out = vec![(step.state().unwrap(), step.evaluate(&test.x, &test.y).unwrap())];
    for s in 0..steps {
        let b = batch_of(&train, s);
        step.step(&b.x, &b.y).unwrap();
        out.push((step.state().unwrap(), step.evaluate(&test.x, &test.y).unwrap()));
    }
    out
}

/// Parity of the state read by name, CUDA against `Cpu::mixed()` after the same steps
/// from the same weights (README, "The main job"):
/// - step count, loss scale, growth tracker, found_inf and the gradients' scale: exact;
/// - per parameter, gradients and Adam's m: normwise relative difference at most 1e-2,
///   v (squares) 2e-2, and the same for the step's change of the master weights
///   (`master - previous master`, each side from its own previous state; Adam's first
///   steps move every weight by about lr, so the weights themselves would hide a bug):
///   ten times the GEMM's documented 1e-3 for f16 outputs, for the five GEMMs and the
///   f16 activations between the loss and a weight gradient;
/// - the working copy is the f16 of the master weights on both sides, exactly;
/// - `evaluate`: the loss within the training parity's 1%, the accuracy within 1 point.
///
/// Measured on the emulator: at most 2e-7 anywhere, the same accuracy, losses 5e-7 apart
/// (its GEMM sums nearly in the CPU's order); not yet measured on a GPU.
const STATE_GRAD_TOL: f64 = 1e-2;

/// Acceptance of issue 14, items 9-10: the full state, read by name after each step on
/// CUDA (step 1 eager, 2 captured and replayed, 3 replayed) and on `Cpu::mixed()`,
/// within the tolerances above.
#[test]
fn cuda_state_matches_cpu_mixed() {
    let dev = gpu_or_skip!();
    let model = Mlp::new(&digits::WIDTHS, Activation::Relu).unwrap();
    let init = model.init(9);
    let tcfg = TrainConfig::default();
    let cuda = states(Cuda::new(&dev), &init, 3, tcfg);
    let cpu = states(Cpu::mixed(), &init, 3, tcfg);
    let f16_of = |w: &[f32]| -> Vec<f32> { w.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect() };
    assert_state_parity(&cuda, &cpu, f16_of, STATE_GRAD_TOL);
}

/// The lr schedule lives on the device (issue 20): with warmup over 2 steps and the
/// cosine ending at step 3, each of the three steps (eager, captured, replayed) has its
/// own lr, and the replayed graph must use the step count's, not the one it was captured
/// with: the state matches `Cpu::mixed()` step by step as without a schedule.
#[test]
fn cuda_state_with_lr_schedule_matches_cpu_mixed() {
    let dev = gpu_or_skip!();
    let model = Mlp::new(&digits::WIDTHS, Activation::Relu).unwrap();
    let init = model.init(9);
    let schedule = LrSchedule::WarmupCosine { warmup_steps: 2, decay_steps: 3, min_lr: 1e-4 };
    let tcfg =
        TrainConfig { adam: AdamConfig { lr: 3e-3, schedule, ..AdamConfig::default() }, ..TrainConfig::default() };
    let cuda = states(Cuda::new(&dev), &init, 4, tcfg);
    let cpu = states(Cpu::mixed(), &init, 4, tcfg);
    let f16_of = |w: &[f32]| -> Vec<f32> { w.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect() };
    assert_state_parity(&cuda, &cpu, f16_of, STATE_GRAD_TOL);
}

/// Gradient clipping by global norm on the device (issue 20), at a norm every step
/// exceeds: the state on CUDA (eager, then graph-replayed) against `Cpu::mixed()` step
/// by step, and the clipped run's weights moving differently from the unclipped one's.
#[test]
fn cuda_state_with_clipping_matches_cpu_mixed() {
    let dev = gpu_or_skip!();
    let model = Mlp::new(&digits::WIDTHS, Activation::Relu).unwrap();
    let init = model.init(9);
    let clipped = TrainConfig {
        adam: AdamConfig { lr: 3e-3, max_grad_norm: Some(0.05), ..AdamConfig::default() },
        ..TrainConfig::default()
    };
    let cuda = states(Cuda::new(&dev), &init, 3, clipped);
    let cpu = states(Cpu::mixed(), &init, 3, clipped);
    let f16_of = |w: &[f32]| -> Vec<f32> { w.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect() };
    assert_state_parity(&cuda, &cpu, f16_of, STATE_GRAD_TOL);
    let plain = states(
        Cpu::mixed(),
        &init,
        3,
        TrainConfig { adam: AdamConfig { lr: 3e-3, ..AdamConfig::default() }, ..clipped },
    );
    let name = NAMES[0];
    assert_ne!(cpu[1].0.params[name].m, plain[1].0.params[name].m, "clipping changed the moments");
}

/// bf16 rounds activations and weights with 8 significant bits against f16's 11: the
/// tolerances of [`STATE_GRAD_TOL`] times 8 (2^3, the ratio of the unit roundoffs).
const STATE_GRAD_TOL_BF16: f64 = 8.0 * STATE_GRAD_TOL;

fn bf16_of(w: &[f32]) -> Vec<f32> {
    w.iter().map(|&x| bf16::from_f32(x).to_f32()).collect()
}

/// Issue 19: the bf16 step (scaling off, PyTorch's convention) on `Cuda<bf16>` against
/// `Cpu::mixed_bf16()`, state by name after each step, eager and graph-replayed.
#[test]
fn cuda_bf16_state_matches_cpu_mixed_bf16() {
    let dev = gpu_or_skip!();
    if dev.info().compute_capability < (8, 0) {
        // No bf16 tensor cores: the step is refused when it is made, nothing queued.
        let model = Mlp::new(&digits::WIDTHS, Activation::Relu).unwrap();
        let r = TrainStep::new(Cuda::<bf16>::with_half(&dev), model.clone(), &model.init(1), TrainConfig::bf16());
        assert!(matches!(r, Err(Error::Unsupported { needs: (8, 0), .. })), "a bf16 step at 7.5 must be refused");
        return;
    }
    let model = Mlp::new(&digits::WIDTHS, Activation::Relu).unwrap();
    let init = model.init(9);
    let tcfg = TrainConfig::bf16();
    let cuda = states(Cuda::<bf16>::with_half(&dev), &init, 3, tcfg);
    let cpu = states(Cpu::mixed_bf16(), &init, 3, tcfg);
    assert_state_parity(&cuda, &cpu, bf16_of, STATE_GRAD_TOL_BF16);
}

/// Issue 19: pure-bf16 weights (no master copy, stochastic rounding from one seed) on
/// `Cuda<bf16>` against `Cpu::mixed_bf16()`: the same rounding bits on both sides, so the
/// weights differ only where the update before rounding differs.
#[test]
fn cuda_pure_bf16_state_matches_cpu_mixed_bf16() {
    let dev = gpu_or_skip!();
    if dev.info().compute_capability < (8, 0) {
        return;
    }
    let model = Mlp::new(&digits::WIDTHS, Activation::Relu).unwrap();
    let init = model.init(9);
    let tcfg = TrainConfig::pure_bf16(5);
    let cuda = states(Cuda::<bf16>::with_half(&dev), &init, 3, tcfg);
    let cpu = states(Cpu::mixed_bf16(), &init, 3, tcfg);
    for (g, c) in cuda.iter().zip(&cpu) {
        for (name, p) in g.0.params.iter().chain(&c.0.params) {
            assert_eq!(p.master, bf16_of(&p.master), "{name}: pure weights are bf16 values");
        }
    }
    assert_state_parity(&cuda, &cpu, bf16_of, STATE_GRAD_TOL_BF16);
}

type States = [(TrainState, (f32, f32))];

fn assert_state_parity(cuda: &States, cpu: &States, half_of: impl Fn(&[f32]) -> Vec<f32>, tol: f64) {
    let f16_of = half_of;
    for s in 0..cuda.len() {
        let ((g, (g_loss, g_acc)), (c, (c_loss, c_acc))) = (&cuda[s], &cpu[s]);
        let scalars = |t: &TrainState| (t.step, t.loss_scale, t.growth_tracker, t.found_inf, t.grad_scale);
        assert_eq!(scalars(g), scalars(c), "after step {s}");
        assert!((g_loss - c_loss).abs() <= 0.01 * c_loss.abs(), "after step {s}: evaluate loss {g_loss} vs {c_loss}");
        assert!((g_acc - c_acc).abs() <= 0.01, "after step {s}: accuracy {g_acc} vs {c_acc}");
        assert_eq!(g.params.keys().collect::<Vec<_>>(), c.params.keys().collect::<Vec<_>>());
        let mut worst = 0.0f64;
        for (name, gp) in &g.params {
            let cp = &c.params[name];
            assert_eq!(gp.shape, cp.shape, "{name}");
            assert_eq!(gp.working, f16_of(&gp.master), "after step {s}: {name}: CUDA's working copy");
            assert_eq!(cp.working, f16_of(&cp.master), "after step {s}: {name}: Cpu's working copy");
            let mut checks = vec![("grad", common::normwise(&gp.grad, &cp.grad), tol)];
            checks.push(("m", common::normwise(&gp.m, &cp.m), tol));
            checks.push(("v", common::normwise(&gp.v, &cp.v), 2.0 * tol));
            if s > 0 {
                let delta =
                    |now: &[f32], before: &[f32]| -> Vec<f32> { now.iter().zip(before).map(|(a, b)| a - b).collect() };
                let gd = delta(&gp.master, &cuda[s - 1].0.params[name].master);
                let cd = delta(&cp.master, &cpu[s - 1].0.params[name].master);
                assert!(cd.iter().any(|&d| d != 0.0), "after step {s}: {name}: the step moved the weights");
                checks.push(("master change", common::normwise(&gd, &cd), tol));
            }
            for (what, d, tol) in checks {
                assert!(d <= tol, "after step {s}: {name}.{what}: normwise {d:.2e} > {tol:.0e}");
                worst = worst.max(d);
            }
        }
        println!("after step {s}: worst normwise {worst:.1e}; evaluate loss {g_loss} vs {c_loss}, accuracy {g_acc} vs {c_acc}");
    }
}

/// Issue 19: the bf16 CPU emulation against the fp32 reference over the parity run
/// (every loss within 1%), as the f16 one is.
#[test]
fn cpu_mixed_bf16_matches_fp32_for_200_steps() {
    let fp32 = run(Cpu::fp32(), &PARITY, TrainConfig::bf16());
    let mixed = run(Cpu::mixed_bf16(), &PARITY, TrainConfig::bf16());
    assert!(mixed.losses.iter().zip(&fp32.losses).any(|(a, b)| a != b), "bf16 must actually round");
    assert_parity("cpu mixed bf16", &fp32, &mixed);
}

/// Issue 19's acceptance on the main job (600 steps, the README's command): bf16 within
/// one point of the f16 run's accuracy, pure bf16 within two, and pure bf16 reproducible
/// from its seed (the same losses bit for bit; another seed, other losses). The
/// accuracies are means over five seeds (each seed its own split, initial weights and
/// batches): one run's accuracy on the 359 test images moves by a point (3.6 images)
/// with the last bits of the arithmetic. Measured (CPU emulation): f16 98.89 98.89 98.33
/// 98.05 97.77, bf16 97.49 98.61 98.33 98.05 98.05, pure bf16 96.94 98.61 98.33 98.05
/// 98.05; means 98.39, 98.11, 98.00.
#[test]
fn bf16_digits_accuracy_against_f16() {
    let mean = |tcfg: &dyn Fn(u64) -> TrainConfig, bf16: bool| -> f32 {
        let runs = (0..5u64).map(|seed| {
            let cfg = RunConfig { seed, ..RunConfig::default() };
            let be = if bf16 { Cpu::mixed_bf16() } else { Cpu::mixed() };
            run(be, &cfg, tcfg(seed)).accuracy
        });
        runs.sum::<f32>() / 5.0
    };
    let f16 = mean(&|_| TrainConfig::f16(), false);
    let b = mean(&|_| TrainConfig::bf16(), true);
    let pure = mean(&TrainConfig::pure_bf16, true);
    println!("mean accuracy over 5 seeds: f16 {f16}, bf16 {b}, pure bf16 {pure}");
    assert!((b - f16).abs() <= 0.01, "bf16 {b} against f16 {f16}");
    assert!((pure - f16).abs() <= 0.02, "pure bf16 {pure} against f16 {f16}");

    let cfg = RunConfig::default();
    let pure = run(Cpu::mixed_bf16(), &cfg, TrainConfig::pure_bf16(cfg.seed));
    let again = run(Cpu::mixed_bf16(), &cfg, TrainConfig::pure_bf16(cfg.seed));
    let other = run(Cpu::mixed_bf16(), &cfg, TrainConfig::pure_bf16(cfg.seed + 1));
    let bits = |r: &Run| r.losses.iter().map(|l| l.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&pure), bits(&again), "pure bf16 reproduces from its seed");
    assert_ne!(bits(&pure), bits(&other), "the seed drives the rounding");
}

#[test]
fn cpu_bf16_nonfinite_inputs_skip() {
    for bad in [f32::NAN, f32::INFINITY] {
        nonfinite_inputs_skip(Cpu::mixed_bf16(), TrainConfig::bf16(), bad);
        let scaled = TrainConfig { scaler: GradScalerConfig::default(), ..TrainConfig::bf16() };
        nonfinite_inputs_skip(Cpu::mixed_bf16(), scaled, bad);
        nonfinite_inputs_skip(Cpu::mixed_bf16(), TrainConfig::pure_bf16(3), bad);
    }
}

#[test]
fn cuda_bf16_nonfinite_inputs_skip() {
    let dev = gpu_or_skip!();
    if dev.info().compute_capability < (8, 0) {
        return;
    }
    for bad in [f32::NAN, f32::INFINITY] {
        nonfinite_inputs_skip(Cuda::<bf16>::with_half(&dev), TrainConfig::bf16(), bad);
        let scaled = TrainConfig { scaler: GradScalerConfig::default(), ..TrainConfig::bf16() };
        nonfinite_inputs_skip(Cuda::<bf16>::with_half(&dev), scaled, bad);
        nonfinite_inputs_skip(Cuda::<bf16>::with_half(&dev), TrainConfig::pure_bf16(3), bad);
    }
}

/// bf16 with loss scaling turned on at 2^127, the largest power of two in f32. bf16 has
/// f32's range, so the digits batches do not overflow even there (measured: no step
/// skipped in 300); the first batch is scaled by 10^6 so that its weight gradients
/// overflow: that step is skipped with nothing changed and the scale halves, and the run
/// then trains at 2^126 and converges.
fn bf16_overflow_then_converge<B: Backend>(be: B, steps: usize) {
    let (train, test) = data();
    let tcfg = TrainConfig {
        scaler: GradScalerConfig { init_scale: 2f32.powi(127), ..Default::default() },
        ..TrainConfig::bf16()
    };
    let cfg = RunConfig { steps: 0, ..RunConfig::default() };
    let mut step = digits::train(be, &train, &cfg, tcfg, |_, _, _| {}).unwrap();
    let mut skipped = Vec::new();
    let mut weights = step.master_weights().unwrap();
    for s in 0..steps {
        let mut batch = train.gather(&(0..64).map(|r| (s * 64 + r) % train.len()).collect::<Vec<_>>());
        if s == 0 {
            batch.x.iter_mut().for_each(|x| *x *= 1e6);
        }
        let scale = step.loss_scale().unwrap();
        step.step(&batch.x, &batch.y).unwrap();
        let now = step.master_weights().unwrap();
        if step.skipped().unwrap() {
            skipped.push(s);
            assert!(now.iter().zip(&weights).all(|(a, b)| a.to_bits() == b.to_bits()), "step {s}");
            assert_eq!(step.loss_scale().unwrap(), scale * 0.5, "step {s}: back off by half");
        }
        weights = now;
    }
    assert_eq!(skipped, [0], "the scaled batch overflows, no other");
    assert_eq!(step.loss_scale().unwrap(), 2f32.powi(126));
    let acc = step.accuracy(&test.x, &test.y).unwrap();
    assert!(acc > 0.9, "after the overflow the run must still learn: accuracy {acc}");
}

#[test]
fn cpu_bf16_overflow_then_converge() {
    bf16_overflow_then_converge(Cpu::mixed_bf16(), 300);
}

#[test]
fn cuda_bf16_overflow_then_converge() {
    let dev = gpu_or_skip!();
    if dev.info().compute_capability < (8, 0) {
        return;
    }
    let steps = common::size_for(&dev, 300, 120);
    bf16_overflow_then_converge(Cuda::<bf16>::with_half(&dev), steps);
}

/// The precision policy: scaling on by default for f16, off for bf16; a backend of the
/// other half type, or pure weights with f16, refused before anything is made.
#[test]
fn precision_policy() {
    assert!(TrainConfig::default().scaler.enabled && TrainConfig::f16().scaler.enabled);
    assert!(!TrainConfig::bf16().scaler.enabled && TrainConfig::bf16().scaler.skip_nonfinite);
    let model = Mlp::new(&digits::WIDTHS, Activation::Relu).unwrap();
    let init = model.init(1);
    let refused = |r: mixed_precision::Result<TrainStep<Cpu>>| match r {
        Err(Error::InvalidArgument { op: "TrainStep::new", what, .. }) => what,
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("accepted"),
    };
    assert_eq!(refused(TrainStep::new(Cpu::mixed(), model.clone(), &init, TrainConfig::bf16())), "precision");
    assert_eq!(refused(TrainStep::new(Cpu::mixed_bf16(), model.clone(), &init, TrainConfig::f16())), "precision");
    let pure_f16 = TrainConfig { precision: mixed_precision::DType::F16, ..TrainConfig::pure_bf16(1) };
    assert_eq!(refused(TrainStep::new(Cpu::mixed(), model.clone(), &init, pure_f16)), "weights");
    assert!(TrainStep::new(Cpu::fp32(), model, &init, TrainConfig::bf16()).is_ok(), "the fp32 reference takes either");
}

/// Safetensors out and in (issue 20): the master weights by name after a few steps, read
/// back bit for bit into a step made from other weights (on another backend too), its
/// working copy rebuilt; a file that does not fit the model (a wrong shape, a missing or
/// an unknown tensor) is refused with nothing changed. When python3 has the safetensors
/// package, the file is also read by it and checked value by value.
fn safetensors_round_trip<B: Backend, C: Backend>(from: B, into: C, tag: &str) {
    let (train, _) = data();
    let model = Mlp::new(&digits::WIDTHS, Activation::Relu).unwrap();
    let mut a = TrainStep::new(from, model.clone(), &model.init(3), TrainConfig::default()).unwrap();
    for s in 0..3 {
        let b = batch_of(&train, s);
        a.step(&b.x, &b.y).unwrap();
    }
    let dir = std::env::temp_dir().join(format!("mp-safetensors-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    a.save_safetensors(&path).unwrap();
    let saved = a.state().unwrap();

    let mut b = TrainStep::new(into, model.clone(), &model.init(4), TrainConfig::default()).unwrap();
    assert_ne!(b.master_weights().unwrap(), a.master_weights().unwrap());
    b.load_safetensors(&path).unwrap();
    let loaded = b.state().unwrap();
    for (name, p) in &saved.params {
        let q = &loaded.params[name];
        assert_eq!(
            p.master.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            q.master.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            "{name}"
        );
        let f16_of: Vec<f32> = q.master.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect();
        assert!(q.working == f16_of || q.working == q.master, "{name}: working copy rebuilt");
    }

    // Files that do not fit: the step keeps its weights.
    let other = Mlp::new(&[64, 32, 10], Activation::Relu).unwrap();
    let c = TrainStep::new(Cpu::fp32(), other.clone(), &other.init(1), TrainConfig::default()).unwrap();
    let wrong = dir.join("other.safetensors");
    c.save_safetensors(&wrong).unwrap();
    let before = b.master_weights().unwrap();
    for bad in [&wrong, &dir.join("absent.safetensors")] {
        let e = b.load_safetensors(bad).unwrap_err();
        assert!(matches!(e, Error::Checkpoint { .. } | Error::Io { .. }), "{e}");
    }
    assert_eq!(b.master_weights().unwrap(), before, "a refused file changes nothing");

    let script = "import sys\nfrom safetensors.numpy import load_file\nt = load_file(sys.argv[1])\nfor k in sorted(t): print(k, t[k].dtype, list(t[k].shape), repr(float(t[k].astype('float64').sum())))";
    match std::process::Command::new("python3").args(["-c", "import safetensors.numpy"]).status() {
        Ok(s) if s.success() => {
            let out = std::process::Command::new("python3").args(["-c", script]).arg(&path).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8(out.stdout).unwrap();
            for (line, (name, p)) in text.lines().zip(&saved.params) {
                let sum: f64 = p.master.iter().map(|&x| x as f64).sum();
                let want = format!("{name} float32 {:?}", p.shape);
                assert!(line.starts_with(&want), "{line} vs {want}");
                let got: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
                assert!((got - sum).abs() <= 1e-9 * sum.abs().max(1.0), "{name}: python sums {got}, we {sum}");
            }
            assert_eq!(text.lines().count(), saved.params.len());

            // And the other way: a file Python wrote (as `safetensors.torch.save_file` of
            // a state dict does), by the same names and shapes, every other tensor in
            // float16, loaded as the master weights.
            let writer = "import sys, json\nimport numpy as np\nfrom safetensors.numpy import save_file\nspec = json.loads(sys.argv[2])\nt = {}\nfor i, (k, shape) in enumerate(spec):\n    n = int(np.prod(shape))\n    v = ((np.arange(n, dtype=np.float64) * 7 % 101) - 50) / 256\n    t[k] = v.reshape(shape).astype(np.float16 if i % 2 else np.float32)\nsave_file(t, sys.argv[1])";
            let spec: Vec<String> =
                saved.params.iter().map(|(name, p)| format!("[\"{name}\", {:?}]", p.shape)).collect();
            let from_python = dir.join("python.safetensors");
            let out = std::process::Command::new("python3")
                .args(["-c", writer])
                .arg(&from_python)
                .arg(format!("[{}]", spec.join(", ")))
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            b.load_safetensors(&from_python).unwrap();
            let loaded = b.state().unwrap();
            for (name, p) in &loaded.params {
                // Every value is a multiple of 1/256 below 1 in magnitude: exact in f16.
                let want: Vec<f32> = (0..p.master.len()).map(|j| ((j * 7 % 101) as f32 - 50.0) / 256.0).collect();
                assert_eq!(p.master, want, "{name}: the weights Python wrote");
            }
        }
        _ => println!("skipped: python3 has no safetensors package; the file was checked by the Rust reader only"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cpu_safetensors_round_trip() {
    safetensors_round_trip(Cpu::mixed(), Cpu::fp32(), "cpu");
}

#[test]
fn cuda_safetensors_round_trip() {
    let dev = gpu_or_skip!();
    safetensors_round_trip(Cuda::new(&dev), Cpu::mixed(), "cuda-cpu");
    safetensors_round_trip(Cpu::mixed(), Cuda::new(&dev), "cpu-cuda");
}
