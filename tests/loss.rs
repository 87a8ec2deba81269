//! loss: cross-entropy and MSE in f32 from f16 outputs, gradients seeded with the loss
//! scale, against the CPU reference.

mod common;

use mixed_precision::backend::cpu;
use mixed_precision::half::f16;
use mixed_precision::kernels::loss::{
    cross_entropy_backward_f16, cross_entropy_forward_f16, mse_backward_f16, mse_forward_f16, LossShape,
};
use mixed_precision::rng::Rng;
use mixed_precision::{Error, Tensor};

const SHAPES: &[(usize, usize)] = &[(0, 3), (1, 1), (3, 10), (17, 33), (256, 10), (64, 1000)];
const SCALE: f32 = 65536.0;

fn halves(rng: &mut Rng, n: usize, s: f32) -> Vec<f16> {
    (0..n).map(|_| f16::from_f32(rng.normal() * s)).collect()
}

fn to_f32(v: &[f16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

/// Within a few f16 steps of the reference (the GPU uses __expf and its own sum order).
fn close_f16(got: f16, want: f32, floor: f32) -> bool {
    (got.to_f32() - want).abs() <= 2e-3 * want.abs() + floor
}

#[test]
fn cpu_cross_entropy_of_uniform_logits_is_ln_classes() {
    let l = cpu::cross_entropy_forward(&[0.0; 20], &[0, 9], 2, 10).unwrap();
    assert!(l.iter().all(|&v| (v - 10f32.ln()).abs() < 1e-6), "{l:?}");
    let d = cpu::cross_entropy_backward(&[0.0; 10], &[3], 1, 10, 2.0).unwrap();
    assert!((d[3] - 2.0 * (0.1 - 1.0)).abs() < 1e-6 && (d[0] - 0.2).abs() < 1e-6, "{d:?}");
    assert!(cpu::cross_entropy_forward(&[0.0; 10], &[10], 1, 10).is_err(), "label out of range");
    let m = cpu::mse_forward(&[1.0, 2.0], &[0.0, 0.0], 1, 2).unwrap();
    assert_eq!(m, vec![5.0]);
}

#[test]
fn cross_entropy_matches_cpu() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(41);
    for &(rows, cols) in SHAPES {
        let z = halves(&mut rng, rows * cols, 4.0);
        let labels: Vec<u32> = (0..rows).map(|_| rng.below(cols as u64) as u32).collect();
        let li: Vec<i32> = labels.iter().map(|&l| l as i32).collect();
        let shape = LossShape { rows, cols };
        let zd = Tensor::from_host(&dev, &z, &[rows * cols]).unwrap();
        let ld_i32 = dev.stream().clone_htod(&li).unwrap();
        let mut losses = Tensor::from_host(&dev, &vec![f32::NAN; rows], &[rows]).unwrap();
        cross_entropy_forward_f16(&dev, shape, &zd.view(), &ld_i32, &mut losses.view_mut()).unwrap();
        let want = cpu::cross_entropy_forward(&to_f32(&z), &labels, rows, cols).unwrap();
        for (r, (&g, &w)) in losses.to_host().unwrap().iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{rows}x{cols} row {r}: {g} vs {w}");
        }
        let scale = Tensor::from_host(&dev, &[SCALE], &[1]).unwrap();
        for (factor, with_scale) in [(1.0 / rows.max(1) as f32, true), (0.5, false)] {
            let mut dz = Tensor::from_host(&dev, &vec![f16::NAN; rows * cols], &[rows * cols]).unwrap();
            let s = scale.view();
            let s = with_scale.then_some(&s);
            cross_entropy_backward_f16(&dev, shape, &zd.view(), &ld_i32, s, &mut dz.view_mut(), factor).unwrap();
            let seed = factor * if with_scale { SCALE } else { 1.0 };
            let want = cpu::cross_entropy_backward(&to_f32(&z), &labels, rows, cols, seed).unwrap();
            for (i, (&g, &w)) in dz.to_host().unwrap().iter().zip(&want).enumerate() {
                assert!(close_f16(g, w, seed * 1e-6), "{rows}x{cols} i={i}: {g} vs {w}");
            }
        }
    }
}

#[test]
fn out_of_range_labels_give_nan_not_a_fault() {
    let dev = gpu_or_skip!();
    let z = Tensor::from_host(&dev, &[f16::ZERO; 6], &[6]).unwrap();
    let labels = dev.stream().clone_htod(&[7i32, -1]).unwrap();
    let shape = LossShape { rows: 2, cols: 3 };
    let mut losses = Tensor::<f32>::zeros(&dev, &[2]).unwrap();
    cross_entropy_forward_f16(&dev, shape, &z.view(), &labels, &mut losses.view_mut()).unwrap();
    assert!(losses.to_host().unwrap().iter().all(|v| v.is_nan()));
    let mut dz = Tensor::<f16>::zeros(&dev, &[6]).unwrap();
    cross_entropy_backward_f16(&dev, shape, &z.view(), &labels, None, &mut dz.view_mut(), 1.0).unwrap();
    assert!(dz.to_host().unwrap().iter().all(|v| v.is_nan()));
}

#[test]
fn mse_matches_cpu() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(42);
    for &(rows, cols) in SHAPES {
        let (p, t) = (halves(&mut rng, rows * cols, 2.0), halves(&mut rng, rows * cols, 2.0));
        let shape = LossShape { rows, cols };
        let pd = Tensor::from_host(&dev, &p, &[rows * cols]).unwrap();
        let td = Tensor::from_host(&dev, &t, &[rows * cols]).unwrap();
        let mut losses = Tensor::from_host(&dev, &vec![f32::NAN; rows], &[rows]).unwrap();
        mse_forward_f16(&dev, shape, &pd.view(), &td.view(), &mut losses.view_mut()).unwrap();
        let want = cpu::mse_forward(&to_f32(&p), &to_f32(&t), rows, cols).unwrap();
        for (r, (&g, &w)) in losses.to_host().unwrap().iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{rows}x{cols} row {r}: {g} vs {w}");
        }
        let scale = Tensor::from_host(&dev, &[SCALE], &[1]).unwrap();
        let factor = 1.0 / (rows * cols).max(1) as f32;
        let mut dp = Tensor::from_host(&dev, &vec![f16::NAN; rows * cols], &[rows * cols]).unwrap();
        let s = scale.view();
        mse_backward_f16(&dev, shape, &pd.view(), &td.view(), Some(&s), &mut dp.view_mut(), factor).unwrap();
        let want = cpu::mse_backward(&to_f32(&p), &to_f32(&t), rows, cols, factor * SCALE).unwrap();
        for (i, (&g, &w)) in dp.to_host().unwrap().iter().zip(&want).enumerate() {
            assert!(common::same_f16(g, f16::from_f32(w)) || close_f16(g, w, 0.0), "{rows}x{cols} i={i}: {g} vs {w}");
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    let dev = gpu_or_skip!();
    let z = Tensor::<f16>::zeros(&dev, &[12]).unwrap();
    let labels = dev.stream().clone_htod(&[0i32, 1, 2]).unwrap();
    let mut losses = Tensor::<f32>::zeros(&dev, &[4]).unwrap();
    let e = cross_entropy_forward_f16(&dev, LossShape { rows: 4, cols: 3 }, &z.view(), &labels, &mut losses.view_mut())
        .unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { what: "labels", .. }), "{e}");
    let e = cross_entropy_forward_f16(&dev, LossShape { rows: 3, cols: 5 }, &z.view(), &labels, &mut losses.view_mut())
        .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { op: "cross_entropy_forward_f16", .. }), "{e}");
    let e = cross_entropy_forward_f16(&dev, LossShape { rows: 0, cols: 0 }, &z.view(), &labels, &mut losses.view_mut())
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { what: "cols", .. }), "{e}");
}
