//! activation: forward and derivative in f16 and bf16 against the CPU reference (and, for
//! bf16, against f64).

mod common;

use mixed_precision::backend::cpu::{self, Cpu};
use mixed_precision::backend::cuda::Cuda;
use mixed_precision::backend::Backend;
use mixed_precision::half::{bf16, f16};
use mixed_precision::kernels::activation::{activation_backward, activation_forward};
use mixed_precision::kernels::gemm::Activation;
use mixed_precision::nn::{ArenaLayout, Weights};
use mixed_precision::optim::{AdamConfig, GradScalerConfig};
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
            activation_forward(&dev, &xd.view(), &mut y.view_mut(), act).unwrap();
            activation_backward(&dev, &xd.view(), &dyd.view(), &mut dx.view_mut(), act).unwrap();
            let (y, dx) = (y.to_host().unwrap(), dx.to_host().unwrap());
            for i in 0..n {
                let xf = x[i].to_f32();
                let want_y = f16::from_f32(cpu::activation(xf, act));
                let want_dx = f16::from_f32(cpu::activation_grad(xf, dy[i].to_f32(), act));
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
    activation_forward(&dev, &xv.slice(1..34), &mut yv.slice_mut(3..36), Activation::Relu).unwrap();
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
    let e = activation_forward(&dev, &x.view(), &mut y.view_mut(), Activation::Relu).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { op: "activation_forward_f16", .. }), "{e}");
    let e = activation_backward(
        &dev,
        &x.view(),
        &y.view(),
        &mut Tensor::<f16>::zeros(&dev, &[8]).unwrap().view_mut(),
        Activation::Gelu,
    )
    .unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { op: "activation_backward_f16", what: "dy", .. }), "{e}");
}

// ----------------------------------------------------------------------------
// Non-finite values (issue 14, item 7): ReLU backward is PyTorch's threshold_backward,
// `x <= 0 ? 0 : dy`, not `dy * relu'(x)`; GELU keeps the product.

/// Pre-activations: dead (negative, -0, +0, -inf), live (tiny, ordinary, max, inf), NaN.
const SPECIAL_X: [f32; 10] =
    [f32::NEG_INFINITY, -65504.0, -1.0, -0.0, 0.0, 5.96e-8, 1.0, 65504.0, f32::INFINITY, f32::NAN];
/// Incoming gradients: finite, both infinities, NaN.
const SPECIAL_DY: [f32; 7] = [f32::NEG_INFINITY, -1.5, -0.0, 0.0, 2.0, f32::INFINITY, f32::NAN];

/// PyTorch's threshold_backward(dy, x, 0), written out here independently of the CPU
/// reference: `x <= 0 ? 0 : dy`.
fn threshold_backward(x: f32, dy: f32) -> f32 {
    if x <= 0.0 {
        0.0
    } else {
        dy
    }
}

/// Every (x, dy) pair of the lists above, in f16.
fn special_pairs() -> (Vec<f16>, Vec<f16>) {
    SPECIAL_X.iter().flat_map(|&x| SPECIAL_DY.iter().map(move |&g| (f16::from_f32(x), f16::from_f32(g)))).unzip()
}

#[test]
fn cpu_relu_backward_is_threshold_backward() {
    let relu = |x: f32, dy: f32| cpu::activation_grad(x, dy, Activation::Relu);
    for dy in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 3.0] {
        for x in [-1.0, -0.0, 0.0, f32::NEG_INFINITY, -65504.0] {
            assert_eq!(relu(x, dy).to_bits(), 0, "dead unit x={x}, dy={dy}: +0, not inf * 0 = NaN");
        }
        for x in [1.0, 6e-8, f32::INFINITY, f32::NAN] {
            assert!(common::same_f32(relu(x, dy), dy), "live unit or NaN x={x}: dy={dy} passes through");
        }
    }
    // The finite cases are still dy * relu'(x).
    for (x, dy) in [(-2.0f32, 5.0f32), (0.0, -1.0), (0.5, -3.0), (7.0, 0.25)] {
        assert_eq!(relu(x, dy), dy * cpu::activation_derivative(x, Activation::Relu), "x={x} dy={dy}");
    }
}

#[test]
fn cpu_gelu_backward_keeps_the_product() {
    let gelu = |x: f32, dy: f32| cpu::activation_grad(x, dy, Activation::Gelu);
    for x in [-30.0f32, -6.0, -1.0, -0.0, 0.5, 3.0, 30.0] {
        for dy in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
            assert!(!gelu(x, dy).is_finite(), "x={x} dy={dy}: a non-finite dy gives a non-finite dx");
        }
        assert_eq!(gelu(x, 2.0), 2.0 * cpu::activation_derivative(x, Activation::Gelu));
    }
    assert!(gelu(-30.0, f32::INFINITY).is_nan(), "gelu'(-30) is 0 in f32: inf * 0");
    for x in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
        assert!(gelu(x, 1.0).is_nan(), "x={x}: NaN");
    }
}

/// The backend op on every (x, dy) pair, against `cpu::activation_grad` rounded to f16:
/// bit for bit (NaN payloads aside) for none and ReLU and for every non-finite GELU
/// result; finite GELU results within one f16 step (`close`).
fn backend_backward_matches_reference<B: Backend>(be: &B, what: &str) {
    let (x, dy) = special_pairs();
    let (xf, dyf): (Vec<f32>, Vec<f32>) =
        (x.iter().map(|v| v.to_f32()).collect(), dy.iter().map(|v| v.to_f32()).collect());
    let (xt, dyt) = (be.tensor(&xf, 1, x.len()).unwrap(), be.tensor(&dyf, 1, x.len()).unwrap());
    for act in ACTS {
        let got = be.to_host(&be.activation_backward(&xt, &dyt, act).unwrap()).unwrap();
        for i in 0..x.len() {
            let want = cpu::activation_grad(xf[i], dyf[i], act);
            let (g, w) = (f16::from_f32(got[i]), f16::from_f32(want));
            let ok = if w.is_finite() { close(g, w, act) } else { common::same_f16(g, w) };
            assert!(ok, "{what} {act:?}: x={} dy={}: {g} vs {w}", xf[i], dyf[i]);
            if act == Activation::Relu {
                let torch = f16::from_f32(threshold_backward(xf[i], dyf[i]));
                assert!(common::same_f16(g, torch), "{what}: x={} dy={}: {g}, torch {torch}", xf[i], dyf[i]);
            }
        }
    }
}

#[test]
fn cpu_backends_nonfinite_backward() {
    backend_backward_matches_reference(&Cpu::fp32(), "Cpu::fp32");
    backend_backward_matches_reference(&Cpu::mixed(), "Cpu::mixed");
}

#[test]
fn cuda_backend_nonfinite_backward() {
    let dev = gpu_or_skip!();
    backend_backward_matches_reference(&Cuda::new(&dev), "Cuda");
}

#[test]
fn relu_backward_nonfinite_matches_cpu_bit_for_bit() {
    let dev = gpu_or_skip!();
    let (x, dy) = special_pairs();
    // The 70 pairs three times over 211 elements (70 % 8 = 6: each repeat sits in other
    // lanes of the 16-byte vector body; 211 % 8 = 3 elements take the scalar tail), then
    // all of them again through an unaligned view, which takes the scalar path only.
    let n = 211;
    let (x, dy): (Vec<f16>, Vec<f16>) = (0..n).map(|i| (x[i % x.len()], dy[i % dy.len()])).unzip();
    let xd = Tensor::from_host(&dev, &x, &[n]).unwrap();
    let dyd = Tensor::from_host(&dev, &dy, &[n]).unwrap();
    for act in ACTS {
        let mut dx = Tensor::from_host(&dev, &vec![f16::from_f32(-7.0); n], &[n]).unwrap();
        activation_backward(&dev, &xd.view(), &dyd.view(), &mut dx.view_mut(), act).unwrap();
        let mut dxu = Tensor::from_host(&dev, &vec![f16::from_f32(-7.0); n], &[n]).unwrap();
        let (xv, gv, mut dv) = (xd.view(), dyd.view(), dxu.view_mut());
        activation_backward(&dev, &xv.slice(1..n), &gv.slice(1..n), &mut dv.slice_mut(1..n), act).unwrap();
        let (dx, dxu) = (dx.to_host().unwrap(), dxu.to_host().unwrap());
        for i in 0..n {
            let want = f16::from_f32(cpu::activation_grad(x[i].to_f32(), dy[i].to_f32(), act));
            for (path, got) in [("aligned", dx[i]), ("unaligned", dxu[i])] {
                if path == "unaligned" && i == 0 {
                    assert_eq!(got, f16::from_f32(-7.0), "nothing outside the view is written");
                    continue;
                }
                let ok = if act == Activation::Gelu && want.is_finite() {
                    close(got, want, act)
                } else {
                    common::same_f16(got, want)
                };
                assert!(ok, "{act:?} {path} i={i}: x={} dy={}: {got} vs {want}", x[i], dy[i]);
                if act == Activation::Relu {
                    let torch = f16::from_f32(threshold_backward(x[i].to_f32(), dy[i].to_f32()));
                    assert!(
                        common::same_f16(got, torch),
                        "{path} i={i}: x={} dy={}: {got}, torch {torch}",
                        x[i],
                        dy[i]
                    );
                }
            }
        }
    }
}

/// One linear layer with a fused ReLU whose input gradient overflowed only at a dead
/// unit: dz is 0 there, so the weight gradients are finite, found_inf stays clear and the
/// step is taken, as PyTorch AMP takes it (with `dy * relu'(x)` it would be NaN and the
/// step skipped). A NaN at a live unit still skips it.
fn linear_relu_dead_unit_overflow<B: Backend>(be: &B, what: &str) {
    let mut layout = ArenaLayout::new();
    layout.push("w", &[2, 1]).unwrap();
    layout.push("b", &[2]).unwrap();
    let init = vec![vec![1.0, -1.0], vec![0.0, 0.0]];
    let scaler = GradScalerConfig { init_scale: 1.0, ..Default::default() };
    for (dy, skipped) in [([1.0f32, f32::INFINITY], false), ([f32::NAN, 1.0], true)] {
        let mut p = be.params(layout.clone(), &init, AdamConfig::default(), scaler, Weights::Master).unwrap();
        let x = be.tensor(&[2.0], 1, 1).unwrap();
        let (_, pre) = be.linear(&p, 0, Some(1), &x, Activation::Relu).unwrap();
        assert_eq!(be.to_host(pre.as_ref().unwrap()).unwrap(), vec![2.0, -2.0], "{what}: unit 1 is dead");
        let dyt = be.tensor(&dy, 1, 2).unwrap();
        let dx = be.linear_backward(&mut p, 0, Some(1), &x, pre.as_ref(), Activation::Relu, &dyt, true).unwrap();
        let grads = be.grad_to_host(&p).unwrap();
        let dx = be.to_host(&dx.unwrap()).unwrap();
        if skipped {
            assert!(grads.iter().any(|g| g.is_nan()) && dx[0].is_nan(), "{what} dy={dy:?}: {grads:?} {dx:?}");
        } else {
            // dz = [1, 0]: dW = dz^T x = [2, 0], db = [1, 0], dx = dz W = 1.
            assert_eq!(&grads[..2], &[2.0, 0.0], "{what} dy={dy:?}: dW");
            assert!(grads.contains(&1.0) && grads.iter().all(|g| g.is_finite()), "{what}: {grads:?}");
            assert_eq!(dx, vec![1.0], "{what}: dx");
        }
        be.optimizer_step(&mut p).unwrap();
        assert_eq!(be.found_inf(&p).unwrap(), skipped, "{what} dy={dy:?}: found_inf");
        assert_eq!(be.steps_taken(&p).unwrap(), if skipped { 0.0 } else { 1.0 }, "{what} dy={dy:?}: steps");
    }
}

#[test]
fn cpu_linear_relu_dead_unit_overflow_takes_the_step() {
    linear_relu_dead_unit_overflow(&Cpu::fp32(), "Cpu::fp32");
    linear_relu_dead_unit_overflow(&Cpu::mixed(), "Cpu::mixed");
}

#[test]
fn cuda_linear_relu_dead_unit_overflow_takes_the_step() {
    let dev = gpu_or_skip!();
    linear_relu_dead_unit_overflow(&Cuda::new(&dev), "Cuda");
}

// ----------------------------------------------------------------------------
// bf16 (issue 19): the same kernels on bf16 activations. bf16 has 8 significant bits, so
// one step is 2^-7 |y| where f16's is 2^-10 |y|, and its unit roundoff is 2^-8.

fn bf16s(rng: &mut Rng, n: usize) -> Vec<bf16> {
    (0..n).map(|_| bf16::from_f32(rng.normal() * 3.0)).collect()
}

/// As `close`, for bf16: exact for None and ReLU; GELU within one bf16 step (tanhf on the
/// GPU against Rust's tanh move the f32 value by a few f32 ulps, which can cross a bf16
/// rounding boundary, never two).
fn close_bf16(a: bf16, b: bf16, act: Activation) -> bool {
    if act != Activation::Gelu {
        return common::same_bf16(a, b);
    }
    let (x, y) = (a.to_f32(), b.to_f32());
    let step = y.abs().max(f32::MIN_POSITIVE) * 2f32.powi(-7);
    (x - y).abs() <= step * 1.01
}

#[test]
fn forward_and_backward_bf16_match_cpu() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(13);
    for &n in LENGTHS {
        for act in ACTS {
            let x = bf16s(&mut rng, n);
            let dy = bf16s(&mut rng, n);
            let xd = Tensor::from_host(&dev, &x, &[n]).unwrap();
            let dyd = Tensor::from_host(&dev, &dy, &[n]).unwrap();
            let mut y = Tensor::from_host(&dev, &vec![bf16::NAN; n], &[n]).unwrap();
            let mut dx = Tensor::from_host(&dev, &vec![bf16::NAN; n], &[n]).unwrap();
            activation_forward(&dev, &xd.view(), &mut y.view_mut(), act).unwrap();
            activation_backward(&dev, &xd.view(), &dyd.view(), &mut dx.view_mut(), act).unwrap();
            let (y, dx) = (y.to_host().unwrap(), dx.to_host().unwrap());
            for i in 0..n {
                let xf = x[i].to_f32();
                let want_y = bf16::from_f32(cpu::activation(xf, act));
                let want_dx = bf16::from_f32(cpu::activation_grad(xf, dy[i].to_f32(), act));
                assert!(close_bf16(y[i], want_y, act), "{act:?} n={n} i={i}: y {} vs {}", y[i], want_y);
                assert!(close_bf16(dx[i], want_dx, act), "{act:?} n={n} i={i}: dx {} vs {}", dx[i], want_dx);
            }
        }
    }
}

/// GELU (tanh form) and its derivative in f64.
fn gelu_f64(x: f64) -> (f64, f64) {
    let (k0, k1) = ((2.0 / std::f64::consts::PI).sqrt(), 0.044715);
    let t = (k0 * (x + k1 * x * x * x)).tanh();
    (0.5 * x * (1.0 + t), 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k0 * (1.0 + 3.0 * k1 * x * x))
}

/// Against f64 on the same bf16 inputs. None and ReLU are exact (a copy or a select).
/// GELU: the kernel's f32 value is within a few f32 roundings of the f64 one, and the bf16
/// store adds at most the unit roundoff 2^-8 relative. With u = 2^-24, the f32 error is
/// bounded by 8u times the terms' magnitudes: forward 0.5 |x| (1 + |t|) <= |x| (tanhf's
/// 2 ulp, the argument's and the products' roundings); backward |dy| (1 + |x| k0 (1 + 3 k1
/// x^2)) (1 - t^2 loses its relative accuracy to cancellation where |t| -> 1, so its
/// error is absolute, ~6u). Hence |got - ref| <= (2^-8 + 2^-20) |ref| + that bound.
#[test]
fn forward_and_backward_bf16_within_bound_of_f64() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(14);
    let n = 65537;
    let x = bf16s(&mut rng, n);
    let dy = bf16s(&mut rng, n);
    let xd = Tensor::from_host(&dev, &x, &[n]).unwrap();
    let dyd = Tensor::from_host(&dev, &dy, &[n]).unwrap();
    let u = 2f64.powi(-24);
    let rel = 2f64.powi(-8) + 2f64.powi(-20);
    for act in ACTS {
        let mut y = Tensor::from_host(&dev, &vec![bf16::NAN; n], &[n]).unwrap();
        let mut dx = Tensor::from_host(&dev, &vec![bf16::NAN; n], &[n]).unwrap();
        activation_forward(&dev, &xd.view(), &mut y.view_mut(), act).unwrap();
        activation_backward(&dev, &xd.view(), &dyd.view(), &mut dx.view_mut(), act).unwrap();
        let (y, dx) = (y.to_host().unwrap(), dx.to_host().unwrap());
        let mut rounded = 0;
        for i in 0..n {
            let (xv, g) = (x[i].to_f64(), dy[i].to_f64());
            let (want_y, want_dx, tol_y, tol_dx) = match act {
                Activation::None => (xv, g, 0.0, 0.0),
                Activation::Relu => (xv.max(0.0), if xv > 0.0 { g } else { 0.0 }, 0.0, 0.0),
                Activation::Gelu => {
                    let (f, d) = gelu_f64(xv);
                    let k = (2.0 / std::f64::consts::PI).sqrt() * (1.0 + 3.0 * 0.044715 * xv * xv);
                    (
                        f,
                        g * d,
                        rel * f.abs() + 8.0 * u * xv.abs(),
                        rel * (g * d).abs() + 8.0 * u * g.abs() * (1.0 + xv.abs() * k),
                    )
                }
            };
            let (ey, edx) = ((y[i].to_f64() - want_y).abs(), (dx[i].to_f64() - want_dx).abs());
            assert!(ey <= tol_y, "{act:?} i={i} x={xv}: y {} vs {want_y:e}", y[i]);
            assert!(edx <= tol_dx, "{act:?} i={i} x={xv} dy={g}: dx {} vs {want_dx:e}", dx[i]);
            rounded += (ey != 0.0) as usize;
        }
        assert!(act != Activation::Gelu || rounded > n / 2, "GELU: only {rounded} of {n} outputs needed rounding");
    }
}

#[test]
fn unaligned_views_bf16_take_the_scalar_path() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(15);
    let x = bf16s(&mut rng, 40);
    let xd = Tensor::from_host(&dev, &x, &[40]).unwrap();
    let mut y = Tensor::from_host(&dev, &[bf16::NAN; 40], &[40]).unwrap();
    let xv = xd.view();
    let mut yv = y.view_mut();
    activation_forward(&dev, &xv.slice(1..34), &mut yv.slice_mut(3..36), Activation::Relu).unwrap();
    let y = y.to_host().unwrap();
    for i in 0..33 {
        assert_eq!(y[3 + i], bf16::from_f32(x[1 + i].to_f32().max(0.0)), "i={i}");
    }
    assert!(y[0].is_nan() && y[36].is_nan(), "nothing outside the view is written");
}

#[test]
fn length_mismatch_bf16_is_an_error() {
    let dev = gpu_or_skip!();
    let x = Tensor::<bf16>::zeros(&dev, &[8]).unwrap();
    let mut y = Tensor::<bf16>::zeros(&dev, &[7]).unwrap();
    let e = activation_forward(&dev, &x.view(), &mut y.view_mut(), Activation::Relu).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { op: "activation_forward_bf16", .. }), "{e}");
    let e = activation_backward(
        &dev,
        &x.view(),
        &y.view(),
        &mut Tensor::<bf16>::zeros(&dev, &[8]).unwrap().view_mut(),
        Activation::Gelu,
    )
    .unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { op: "activation_backward_bf16", what: "dy", .. }), "{e}");
}

/// The non-finite pairs of `special_pairs` in bf16, plus bf16's own extremes (its largest
/// finite value, past f16's range): bit for bit against the CPU reference (GELU's finite
/// results within one bf16 step), ReLU against PyTorch's threshold_backward, through the
/// vector body, the scalar tail and an unaligned view.
#[test]
fn relu_backward_bf16_nonfinite_matches_cpu_bit_for_bit() {
    let dev = gpu_or_skip!();
    let xs: Vec<f32> = SPECIAL_X.iter().copied().chain([3.3895314e38, -3.3895314e38, 1e-40]).collect();
    let pairs: Vec<(bf16, bf16)> =
        xs.iter().flat_map(|&x| SPECIAL_DY.iter().map(move |&g| (bf16::from_f32(x), bf16::from_f32(g)))).collect();
    let n = 211;
    let (x, dy): (Vec<bf16>, Vec<bf16>) = (0..n).map(|i| pairs[i % pairs.len()]).unzip();
    let xd = Tensor::from_host(&dev, &x, &[n]).unwrap();
    let dyd = Tensor::from_host(&dev, &dy, &[n]).unwrap();
    let poison = bf16::from_f32(-7.0);
    for act in ACTS {
        let mut dx = Tensor::from_host(&dev, &vec![poison; n], &[n]).unwrap();
        activation_backward(&dev, &xd.view(), &dyd.view(), &mut dx.view_mut(), act).unwrap();
        let mut dxu = Tensor::from_host(&dev, &vec![poison; n], &[n]).unwrap();
        let (xv, gv, mut dv) = (xd.view(), dyd.view(), dxu.view_mut());
        activation_backward(&dev, &xv.slice(1..n), &gv.slice(1..n), &mut dv.slice_mut(1..n), act).unwrap();
        let (dx, dxu) = (dx.to_host().unwrap(), dxu.to_host().unwrap());
        for i in 0..n {
            let want = bf16::from_f32(cpu::activation_grad(x[i].to_f32(), dy[i].to_f32(), act));
            for (path, got) in [("aligned", dx[i]), ("unaligned", dxu[i])] {
                if path == "unaligned" && i == 0 {
                    assert_eq!(got, poison, "nothing outside the view is written");
                    continue;
                }
                let ok = if act == Activation::Gelu && want.is_finite() {
                    close_bf16(got, want, act)
                } else {
                    common::same_bf16(got, want)
                };
                assert!(ok, "{act:?} {path} i={i}: x={} dy={}: {got} vs {want}", x[i], dy[i]);
                if act == Activation::Relu {
                    let torch = bf16::from_f32(threshold_backward(x[i].to_f32(), dy[i].to_f32()));
                    assert!(
                        common::same_bf16(got, torch),
                        "{path} i={i}: x={} dy={}: {got}, torch {torch}",
                        x[i],
                        dy[i]
                    );
                }
            }
        }
    }
}
