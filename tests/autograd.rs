//! The tape's backward rules against central finite differences in f64, on the Cpu
//! backend in fp32 (tiny shapes): every op, a value used twice, gradients with respect to
//! parameters and to inputs, and the loss-scale seed.

use mixed_precision::autograd::{Tape, Var};
use mixed_precision::backend::cpu::{Cpu, CpuParams, CpuTensor};
use mixed_precision::backend::Backend;
use mixed_precision::kernels::gemm::Activation;
use mixed_precision::nn::{ArenaLayout, Weights};
use mixed_precision::optim::{AdamConfig, GradScalerConfig};
use mixed_precision::rng::Rng;
use mixed_precision::Error;

const ROWS: usize = 3;
const IN: usize = 4;
const HIDDEN: usize = 5;
const CLASSES: usize = 3;

/// A graph over two linear layers that exercises every op; `net` picks which.
#[derive(Clone, Copy, Debug)]
enum Net {
    /// linear(act) -> linear -> cross-entropy, for each fused activation.
    Fused(Activation),
    /// linear -> relu / gelu op -> linear -> cross-entropy.
    Separate(Activation),
    /// h = linear(x); y = add(relu(h), h) (h used twice); linear -> cross-entropy.
    Residual,
    /// h = linear(x); add(h, h): the same value as both operands.
    Doubled,
    /// linear(gelu) -> linear -> mse.
    Mse,
}

struct Setup {
    layout: ArenaLayout,
    init: Vec<Vec<f32>>,
    x: Vec<f32>,
    labels: Vec<u32>,
    target: Vec<f32>,
}

fn setup(seed: u64) -> Setup {
    let mut layout = ArenaLayout::new();
    layout.push("w0", &[HIDDEN, IN]).unwrap();
    layout.push("b0", &[HIDDEN]).unwrap();
    layout.push("w1", &[CLASSES, HIDDEN]).unwrap();
    layout.push("b1", &[CLASSES]).unwrap();
    layout.push("w_skip", &[HIDDEN, HIDDEN]).unwrap();
    let mut rng = Rng::new(seed);
    let init = layout.params().iter().map(|p| (0..p.len).map(|_| rng.normal() * 0.7).collect()).collect();
    Setup {
        layout,
        init,
        x: (0..ROWS * IN).map(|_| rng.normal()).collect(),
        labels: (0..ROWS).map(|_| rng.below(CLASSES as u64) as u32).collect(),
        target: (0..ROWS * CLASSES).map(|_| rng.normal()).collect(),
    }
}

fn params(be: &Cpu, s: &Setup, scale: Option<f32>) -> CpuParams {
    let scaler = match scale {
        Some(init_scale) => GradScalerConfig { init_scale, ..Default::default() },
        None => GradScalerConfig { enabled: false, ..Default::default() },
    };
    be.params(s.layout.clone(), &s.init, AdamConfig::default(), scaler, Weights::Master).unwrap()
}

/// Records the net; returns the input var and the loss.
fn forward(be: &Cpu, tape: &mut Tape<Cpu>, p: &CpuParams, s: &Setup, x: &CpuTensor, net: Net) -> (Var, f32) {
    let xv = tape.input_with_grad(be, x).unwrap();
    let (w0, b0, w1, b1, w_skip) = (0, Some(1), 2, Some(3), 4);
    let logits = match net {
        Net::Fused(act) => {
            let h = tape.linear(be, p, xv, w0, b0, act).unwrap();
            tape.linear(be, p, h, w1, b1, Activation::None).unwrap()
        }
        Net::Separate(act) => {
            let h = tape.linear(be, p, xv, w0, b0, Activation::None).unwrap();
            let h = if act == Activation::Relu { tape.relu(be, h) } else { tape.gelu(be, h) }.unwrap();
            tape.linear(be, p, h, w1, b1, Activation::None).unwrap()
        }
        Net::Residual => {
            let h = tape.linear(be, p, xv, w0, b0, Activation::None).unwrap();
            let r = tape.relu(be, h).unwrap();
            let y = tape.add(be, r, h).unwrap();
            let y = tape.linear(be, p, y, w_skip, None, Activation::Gelu).unwrap();
            tape.linear(be, p, y, w1, b1, Activation::None).unwrap()
        }
        Net::Doubled => {
            let h = tape.linear(be, p, xv, w0, b0, Activation::None).unwrap();
            let y = tape.add(be, h, h).unwrap();
            tape.linear(be, p, y, w1, b1, Activation::None).unwrap()
        }
        Net::Mse => {
            let h = tape.linear(be, p, xv, w0, b0, Activation::Gelu).unwrap();
            tape.linear(be, p, h, w1, b1, Activation::None).unwrap()
        }
    };
    let mut loss = be.scalar().unwrap();
    match net {
        Net::Mse => {
            let t = be.tensor(&s.target, ROWS, CLASSES).unwrap();
            tape.mse(be, logits, &t, &mut loss, 1.0, 0.0).unwrap();
        }
        _ => {
            let l = be.labels(&s.labels, CLASSES).unwrap();
            tape.softmax_cross_entropy(be, logits, &l, &mut loss, 1.0, 0.0).unwrap();
        }
    }
    (xv, be.scalar_to_host(&loss).unwrap())
}

fn loss_at(be: &Cpu, s: &Setup, p: &CpuParams, x: &[f32], net: Net) -> f64 {
    let mut tape = Tape::new();
    let x = be.tensor(x, ROWS, IN).unwrap();
    forward(be, &mut tape, p, s, &x, net).1 as f64
}

/// Checks every parameter and input gradient against (L(v + h) - L(v - h)) / 2h.
fn check(net: Net, seed: u64) {
    let be = Cpu::fp32();
    let s = setup(seed);
    let mut p = params(&be, &s, None);
    let mut tape = Tape::new();
    let x = be.tensor(&s.x, ROWS, IN).unwrap();
    let (xv, _) = forward(&be, &mut tape, &p, &s, &x, net);
    tape.backward(&be, &mut p, 1.0).unwrap();
    let dx = tape.grad(xv).unwrap().expect("the input asked for a gradient").data.clone();
    let h = 1e-2f32;
    let tol = |a: f64, n: f64| (a - n).abs() <= 2e-3 + 2e-2 * n.abs();
    let used: Vec<usize> = match net {
        Net::Residual => (0..s.layout.total()).collect(),
        _ => (0..s.layout.params()[4].offset).collect(),
    };
    for &i in &used {
        let (mut plus, mut minus) = (p.clone(), p.clone());
        for (q, d) in [(&mut plus, h), (&mut minus, -h)] {
            q.master[i] += d;
            q.working[i] += d;
        }
        let numeric = (loss_at(&be, &s, &plus, &s.x, net) - loss_at(&be, &s, &minus, &s.x, net)) / (2.0 * h as f64);
        let analytic = p.grad[i] as f64;
        assert!(tol(analytic, numeric), "{net:?}: d/dparam[{i}] = {analytic}, finite differences {numeric}");
    }
    for i in 0..s.x.len() {
        let (mut plus, mut minus) = (s.x.clone(), s.x.clone());
        plus[i] += h;
        minus[i] -= h;
        let numeric = (loss_at(&be, &s, &p, &plus, net) - loss_at(&be, &s, &p, &minus, net)) / (2.0 * h as f64);
        assert!(tol(dx[i] as f64, numeric), "{net:?}: d/dx[{i}] = {}, finite differences {numeric}", dx[i]);
    }
    assert!(p.grad.iter().any(|&g| g != 0.0), "{net:?}: no gradient at all");
}

#[test]
fn linear_with_fused_activations() {
    for act in [Activation::None, Activation::Relu, Activation::Gelu] {
        check(Net::Fused(act), 1);
    }
}

#[test]
fn relu_and_gelu_ops() {
    check(Net::Separate(Activation::Relu), 2);
    check(Net::Separate(Activation::Gelu), 3);
}

#[test]
fn add_and_a_value_used_twice() {
    check(Net::Residual, 4);
    check(Net::Doubled, 5);
}

#[test]
fn mse_loss() {
    check(Net::Mse, 6);
}

#[test]
fn the_seed_is_the_loss_scale_and_gradients_accumulate() {
    let be = Cpu::fp32();
    let s = setup(7);
    let x = be.tensor(&s.x, ROWS, IN).unwrap();
    let grads = |scale: Option<f32>, passes: usize, weight: f32| {
        let mut p = params(&be, &s, scale);
        for _ in 0..passes {
            let mut tape = Tape::new();
            forward(&be, &mut tape, &p, &s, &x, Net::Residual);
            tape.backward(&be, &mut p, weight).unwrap();
            tape.clear(&be);
        }
        p.grad
    };
    let plain = grads(None, 1, 1.0);
    let scaled = grads(Some(1024.0), 1, 1.0);
    for (a, b) in plain.iter().zip(&scaled) {
        assert!((a * 1024.0 - b).abs() <= 1e-4 * b.abs().max(1e-3), "{a} * 1024 vs {b}");
    }
    // Two backward passes of weight 1/2 each add up to one of weight 1.
    let halves = grads(None, 2, 0.5);
    for (a, b) in plain.iter().zip(&halves) {
        assert!((a - b).abs() <= 1e-6 * a.abs().max(1e-3), "{a} vs {b}");
    }
}

#[test]
fn misuse_is_an_error() {
    let be = Cpu::fp32();
    let s = setup(8);
    let mut p = params(&be, &s, None);
    let mut tape = Tape::<Cpu>::new();
    let e = tape.backward(&be, &mut p, 1.0).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { op: "Tape::backward", .. }), "{e}");
    // x has IN columns; the second layer wants HIDDEN.
    let x = be.tensor(&s.x, ROWS, IN).unwrap();
    let xv = tape.input(&be, &x).unwrap();
    let e = tape.linear(&be, &p, xv, 2, Some(3), Activation::None).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { op: "Cpu::linear", .. }), "{e}");
    let e = tape.linear(&be, &p, xv, 99, None, Activation::None).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { what: "parameter", .. }), "{e}");
    let logits = tape.linear(&be, &p, xv, 0, Some(1), Activation::None).unwrap();
    let labels = be.labels(&s.labels, CLASSES).unwrap();
    let mut loss = be.scalar().unwrap();
    // HIDDEN logit columns against labels of CLASSES classes.
    let e = tape.softmax_cross_entropy(&be, logits, &labels, &mut loss, 1.0, 0.0).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { op: "Cpu::cross_entropy", .. }), "{e}");
    assert!(matches!(be.labels(&[0, 3], CLASSES), Err(Error::InvalidArgument { what: "labels", .. })));
}
