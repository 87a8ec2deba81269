//! The whole training step: Cpu fp32 against Cpu mixed (and against CUDA on a GPU),
//! loss-scale overflow end to end, bad input, NaN input, micro-batches, CUDA-graph
//! replay against eager execution.

mod common;

#[path = "../examples/common/digits.rs"]
mod digits;

use mixed_precision::backend::cpu::Cpu;
use mixed_precision::backend::cuda::Cuda;
use mixed_precision::backend::Backend;
use mixed_precision::kernels::gemm::Activation;
use mixed_precision::nn::Mlp;
use mixed_precision::optim::{AdamConfig, GradScalerConfig};
use mixed_precision::{Error, TrainConfig, TrainStep};

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

fn run<B: Backend>(be: B, cfg: &RunConfig, tcfg: TrainConfig) -> Run {
    let (train, test) = data();
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

/// NaN in the inputs: not an error; found_inf catches it and the step is skipped.
fn nan_inputs_skip<B: Backend>(be: B) {
    let (train, _) = data();
    let cfg = RunConfig { steps: 3, ..RunConfig::default() };
    let mut step = digits::train(be, &train, &cfg, TrainConfig::default(), |_, _, _| {}).unwrap();
    let before = step.master_weights().unwrap();
    let (taken, scale) = (step.steps_taken().unwrap(), step.loss_scale().unwrap());
    let mut batch = train.gather(&(0..64).collect::<Vec<_>>());
    batch.x[5] = f32::NAN;
    step.step(&batch.x, &batch.y).unwrap();
    assert!(step.skipped().unwrap());
    assert!(step.loss().unwrap().is_nan());
    assert_eq!(step.steps_taken().unwrap(), taken);
    assert_eq!(step.loss_scale().unwrap(), scale * 0.5);
    let after = step.master_weights().unwrap();
    assert!(before.iter().zip(&after).all(|(a, b)| a.to_bits() == b.to_bits()));
    batch.x[5] = 0.5;
    step.step(&batch.x, &batch.y).unwrap();
    assert!(!step.skipped().unwrap(), "a clean batch after the NaN one trains again");
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
        let tcfg = TrainConfig { micro_batches: k, scaler: no_scaler, adam: AdamConfig::default(), graphs: true };
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
