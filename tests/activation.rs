//! activation: forward and derivative in f16 against the CPU reference.

mod common;

use mixed_precision::backend::cpu;
use mixed_precision::half::f16;
use mixed_precision::kernels::activation::{activation_backward_f16, activation_forward_f16};
use mixed_precision::kernels::gemm::Activation;
use mixed_precision::rng::Rng;
use mixed_precision::{Error, Tensor};

const LENGTHS: &[usize] = &[0, 1, 7, 8, 9, 1023, 65537];
const ACTS: [Activation; 3] = [Activation::None, Activation::Relu, Activation::Gelu];

fn halves(rng: &mut Rng, n: usize) -> Vec<f16> {
    (0..n).map(|_| f16::from_f32(rng.normal() * 3.0)).collect()
}

/// Exact for None and ReLU; GELU may differ by one f16 step (tanhf on the GPU against
/// Rust's tanh), never more.
fn close(a: f16, b: f16, act: Activation) -> bool {
    if act != Activation::Gelu {
        return a.to_bits() == b.to_bits();
    }
    let (x, y) = (a.to_f32(), b.to_f32());
    let step = f16::from_f32(y).to_f32().abs().max(6.1e-5) * 2f32.powi(-10);
    (x - y).abs() <= step * 1.01
}

#[test]
fn cpu_derivatives_match_finite_differences() {
    for act in ACTS {
        for x in [-2.5f32, -0.3, 0.4, 1.7] {
            let h = 1e-3f64;
            let f = |v: f64| cpu::activation(v as f32, act) as f64;
            let numeric = (f(x as f64 + h) - f(x as f64 - h)) / (2.0 * h);
            let analytic = cpu::activation_derivative(x, act) as f64;
            assert!((numeric - analytic).abs() < 1e-3, "{act:?} at {x}: {analytic} vs {numeric}");
        }
    }
    assert_eq!(cpu::activation_derivative(0.0, Activation::Relu), 0.0, "ReLU'(0) = 0, as PyTorch");
}

#[test]
fn forward_and_backward_match_cpu() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(11);
    for &n in LENGTHS {
        for act in ACTS {
            let x = halves(&mut rng, n);
            let dy = halves(&mut rng, n);
            let xd = Tensor::from_host(&dev, &x, &[n]).unwrap();
            let dyd = Tensor::from_host(&dev, &dy, &[n]).unwrap();
            let mut y = Tensor::from_host(&dev, &vec![f16::NAN; n], &[n]).unwrap();
            let mut dx = Tensor::from_host(&dev, &vec![f16::NAN; n], &[n]).unwrap();
            activation_forward_f16(&dev, &xd.view(), &mut y.view_mut(), act).unwrap();
            activation_backward_f16(&dev, &xd.view(), &dyd.view(), &mut dx.view_mut(), act).unwrap();
            let (y, dx) = (y.to_host().unwrap(), dx.to_host().unwrap());
            for i in 0..n {
                let xf = x[i].to_f32();
                let want_y = f16::from_f32(cpu::activation(xf, act));
                let want_dx = f16::from_f32(dy[i].to_f32() * cpu::activation_derivative(xf, act));
                assert!(close(y[i], want_y, act), "{act:?} n={n} i={i}: y {} vs {}", y[i], want_y);
                assert!(close(dx[i], want_dx, act), "{act:?} n={n} i={i}: dx {} vs {}", dx[i], want_dx);
            }
        }
    }
}

#[test]
fn unaligned_views_take_the_scalar_path() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(12);
    let x = halves(&mut rng, 40);
    let xd = Tensor::from_host(&dev, &x, &[40]).unwrap();
    let mut y = Tensor::from_host(&dev, &[f16::NAN; 40], &[40]).unwrap();
    let xv = xd.view();
    let mut yv = y.view_mut();
    activation_forward_f16(&dev, &xv.slice(1..34), &mut yv.slice_mut(3..36), Activation::Relu).unwrap();
    let y = y.to_host().unwrap();
    for i in 0..33 {
        assert_eq!(y[3 + i], f16::from_f32(x[1 + i].to_f32().max(0.0)), "i={i}");
    }
    assert!(y[0].is_nan() && y[36].is_nan(), "nothing outside the view is written");
}

#[test]
fn length_mismatch_is_an_error() {
    let dev = gpu_or_skip!();
    let x = Tensor::<f16>::zeros(&dev, &[8]).unwrap();
    let mut y = Tensor::<f16>::zeros(&dev, &[7]).unwrap();
    let e = activation_forward_f16(&dev, &x.view(), &mut y.view_mut(), Activation::Relu).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { op: "activation_forward_f16", .. }), "{e}");
    let e = activation_backward_f16(
        &dev,
        &x.view(),
        &y.view(),
        &mut Tensor::<f16>::zeros(&dev, &[8]).unwrap().view_mut(),
        Activation::Gelu,
    )
    .unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { op: "activation_backward_f16", what: "dy", .. }), "{e}");
}
