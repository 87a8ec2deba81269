//! classifier: llm.c's fused classifier (per-row softmax cross-entropy loss and its
//! gradient in one pass, the loss-scale seed fused in, padded vocabulary), f16 and bf16,
//! against an f64 reference computed from the same half logits; the mean loss; in place;
//! out-of-range labels; refusals. The kernel uses no tensor cores: bf16 runs at 7.5 too.

mod common;

use std::sync::Arc;

use mixed_precision::half::{bf16, f16};
use mixed_precision::kernels::classifier::{fused_classifier, fused_classifier_in_place, ClassifierShape, MeanLoss};
use mixed_precision::rng::Rng;
use mixed_precision::{DType, Device, Error, Half, Tensor};

/// (rows, V, Vp): padding past V (65 -> 128), a vocabulary that is a multiple of nothing
/// (1000, padded or not), one row, one class, several blocks of rows.
const SHAPES: [(usize, usize, usize); 6] =
    [(1, 65, 128), (7, 1000, 1000), (7, 1000, 1024), (300, 65, 128), (1, 1, 1), (3, 257, 300)];

const U32: f64 = 1.0 / (1u64 << 24) as f64;

fn unit<H: Half>() -> f64 {
    if H::DTYPE == DType::BF16 {
        2f64.powi(-8)
    } else {
        2f64.powi(-11)
    }
}

struct Case<H> {
    shape: ClassifierShape,
    logits: Vec<H>,
    labels: Vec<i32>,
}

/// Logits uniform in [-8, 8] (exp arguments down to -16), padding NaN so that a read of it
/// would poison the row; labels anywhere in [0, V).
fn case<H: Half>(rng: &mut Rng, (rows, v, vp): (usize, usize, usize)) -> Case<H> {
    let mut logits = vec![H::from_f32(f32::NAN); rows * vp];
    for r in 0..rows {
        for j in 0..v {
            logits[r * vp + j] = H::from_f32(rng.uniform_in(-8.0, 8.0));
        }
    }
    let labels = (0..rows).map(|_| rng.below(v as u64) as i32).collect();
    Case { shape: ClassifierShape { rows, vocab: v, padded_vocab: vp }, logits, labels }
}

/// f64 reference: (loss per row, dlogits before the half rounding, error bounds of each).
fn reference<H: Half>(c: &Case<H>, g: f32) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let ClassifierShape { rows, vocab: v, padded_vocab: vp } = c.shape;
    let g = g as f64;
    // Additions on the longest path of the block's sum: per thread, the warp tree, the
    // 8 warp partials in order.
    let depth = v.div_ceil(256) as f64 + 5.0 + 7.0;
    let (mut loss, mut loss_tol, mut d, mut d_tol) =
        (vec![0.0; rows], vec![0.0; rows], vec![0.0; rows * vp], vec![0.0; rows * vp]);
    for r in 0..rows {
        let z: Vec<f64> = (0..v).map(|j| c.logits[r * vp + j].to_f32() as f64).collect();
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = z.iter().map(|x| (x - m).exp()).sum();
        let y = c.labels[r] as usize;
        loss[r] = s.ln() + m - z[y];
        // loss.cu's bound (exp 2 ulp on rounded arguments, the sum, logf, two additions),
        // doubled for the block's reduction tree.
        loss_tol[r] =
            2.02 * U32 * (4.0 + (v as f64).ln() + depth + 2.0 * s.ln().abs() + (s.ln() + m).abs() + loss[r].abs())
                + 1e-7;
        for j in 0..v {
            let p = (z[j] - m).exp() / s;
            let want = (p - if j == y { 1.0 } else { 0.0 }) * g;
            d[r * vp + j] = want;
            // p: expf 2 ulp, its argument's rounding |z - m| u, the sum, the division;
            // then the subtraction, the product by g, the half rounding.
            let f32_err =
                g.abs() * (p * (depth + 4.0 + (z[j] - m).abs()) * U32 + U32 * (want / g).abs()) + U32 * want.abs();
            d_tol[r * vp + j] = unit::<H>() * want.abs() + f32_err * (1.0 + unit::<H>()) + 2f64.powi(-24);
        }
    }
    (loss, loss_tol, d, d_tol)
}

fn run<H: Half>(
    dev: &Arc<Device>,
    c: &Case<H>,
    scale: Option<f32>,
    weight: f32,
    mean: Option<(f32, f32, f32)>,
    in_place: bool,
) -> (Vec<f32>, Vec<H>, Option<f32>) {
    let n = c.logits.len();
    let rows = c.shape.rows;
    let mut z = Tensor::from_host(dev, &c.logits, &[n]).unwrap();
    let labels = dev.stream().clone_htod(&c.labels).unwrap();
    let scale_d = Tensor::from_host(dev, &[scale.unwrap_or(f32::NAN)], &[1]).unwrap();
    let sv = scale_d.view();
    let s = scale.map(|_| &sv);
    let mut losses = Tensor::from_host(dev, &vec![f32::NAN; rows], &[rows]).unwrap();
    let mut out = Tensor::from_host(dev, &[mean.map_or(0.0, |m| m.2)], &[1]).unwrap();
    let mut out_v = out.view_mut();
    let m = mean.map(|(alpha, beta, _)| MeanLoss { out: &mut out_v, alpha, beta });
    let d = if in_place {
        fused_classifier_in_place(dev, c.shape, &mut z.view_mut(), &labels, s, weight, &mut losses.view_mut(), m)
            .unwrap();
        z.to_host().unwrap()
    } else {
        let mut dz = Tensor::from_host(dev, &vec![H::from_f32(f32::NAN); n], &[n]).unwrap();
        fused_classifier(dev, c.shape, &z.view(), &labels, s, weight, &mut losses.view_mut(), &mut dz.view_mut(), m)
            .unwrap();
        assert_eq!(
            z.to_host().unwrap().iter().map(|x| x.to_f32().to_bits()).collect::<Vec<_>>(),
            c.logits.iter().map(|x| x.to_f32().to_bits()).collect::<Vec<_>>(),
            "logits were written"
        );
        dz.to_host().unwrap()
    };
    (losses.to_host().unwrap(), d, mean.map(|_| out.to_host().unwrap()[0]))
}

fn sweep<H: Half>(seed: u64) {
    let Some(dev) = common::gpu(&format!("classifier::classifier_{}_against_f64", H::DTYPE)) else { return };
    let mut rng = Rng::new(seed);
    for shape in SHAPES {
        let c = case::<H>(&mut rng, shape);
        let (rows, v, vp) = shape;
        for (scale, weight) in [(Some(1024.0f32), 1.0f32), (None, 1.0), (Some(8.0), 0.25)] {
            let g = weight * scale.unwrap_or(1.0) / rows as f32;
            let (alpha, beta, old) = (0.5f32, 1.0f32, 3.0f32);
            let (loss, d, out) = run(&dev, &c, scale, weight, Some((alpha, beta, old)), false);
            let (want_loss, loss_tol, want_d, d_tol) = reference(&c, g);
            let what = |r: usize, j: usize| {
                format!("{} rows {rows} V {v} Vp {vp} scale {scale:?} weight {weight} row {r} col {j}", H::DTYPE)
            };
            for r in 0..rows {
                let got = loss[r] as f64;
                assert!(
                    (got - want_loss[r]).abs() <= loss_tol[r],
                    "{}: loss {got} want {} tol {:e}",
                    what(r, 0),
                    want_loss[r],
                    loss_tol[r]
                );
                for j in 0..vp {
                    let got = d[r * vp + j].to_f32() as f64;
                    if j >= v {
                        assert!(got == 0.0, "{}: padding gradient {got} must be 0", what(r, j));
                        continue;
                    }
                    let (w, tol) = (want_d[r * vp + j], d_tol[r * vp + j]);
                    assert!((got - w).abs() <= tol, "{}: dlogit {got:e} want {w:e} tol {tol:e}", what(r, j));
                }
            }
            // The mean: a fixed-order f32 sum of the GPU's own losses, then the factor.
            let sum: f64 = loss.iter().map(|&x| x as f64).sum();
            let abs: f64 = loss.iter().map(|&x| (x as f64).abs()).sum();
            let want = beta as f64 * old as f64 + alpha as f64 * sum / rows as f64;
            let tol =
                (rows.div_ceil(1024) as f64 + 12.0) * U32 * (alpha as f64 * abs / rows as f64) + 4.0 * U32 * want.abs();
            let got = out.unwrap() as f64;
            assert!((got - want).abs() <= tol, "{}: mean {got} want {want}", what(0, 0));
            // Deterministic: the same bits again, and in place the same bits as out of place.
            let (loss2, d2, out2) = run(&dev, &c, scale, weight, Some((alpha, beta, old)), false);
            let (loss3, d3, out3) = run(&dev, &c, scale, weight, Some((alpha, beta, old)), true);
            let bits = |l: &[f32], d: &[H], o: Option<f32>| {
                (
                    l.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    d.iter().map(|x| x.to_f32().to_bits()).collect::<Vec<_>>(),
                    o.map(f32::to_bits),
                )
            };
            assert!(bits(&loss, &d, out) == bits(&loss2, &d2, out2), "{}: not deterministic", what(0, 0));
            assert!(bits(&loss, &d, out) == bits(&loss3, &d3, out3), "{}: in place differs", what(0, 0));
        }
    }
}

#[test]
fn classifier_f16_against_f64() {
    sweep::<f16>(80);
}

#[test]
fn classifier_bf16_against_f64() {
    sweep::<bf16>(81);
}

/// A label outside [0, V) (V itself, which lies in the padding, -1, i32::MAX) gives that
/// row a NaN loss and NaN gradients over the real classes, padding still 0, no fault, and
/// leaves the other rows alone; the mean is then NaN, so found_inf skips the step.
fn out_of_range<H: Half>(dev: &Arc<Device>) {
    let mut rng = Rng::new(82);
    let mut c = case::<H>(&mut rng, (5, 65, 128));
    c.labels[1] = 65;
    c.labels[2] = -1;
    c.labels[4] = i32::MAX;
    for in_place in [false, true] {
        let (loss, d, out) = run(dev, &c, Some(4.0), 1.0, Some((1.0, 0.0, 0.0)), in_place);
        for r in 0..5 {
            let bad = [1, 2, 4].contains(&r);
            assert_eq!(loss[r].is_nan(), bad, "row {r}: loss {}", loss[r]);
            for j in 0..128 {
                let x = d[r * 128 + j].to_f32();
                if j >= 65 {
                    assert!(x == 0.0, "row {r} col {j}: padding {x}");
                } else {
                    assert_eq!(x.is_nan(), bad, "row {r} col {j}: {x}");
                }
            }
        }
        assert!(out.unwrap().is_nan());
    }
}

#[test]
fn classifier_out_of_range_label_gives_nan_not_a_fault() {
    let dev = gpu_or_skip!();
    out_of_range::<f16>(&dev);
    out_of_range::<bf16>(&dev);
}

#[test]
fn classifier_rejects_bad_input_and_launches_nothing() {
    let dev = gpu_or_skip!();
    let shape = ClassifierShape { rows: 2, vocab: 5, padded_vocab: 8 };
    let z = Tensor::from_host(&dev, &[f16::ONE; 16], &[16]).unwrap();
    let labels = dev.stream().clone_htod(&[0i32, 1]).unwrap();
    let seven = f16::from_f32(7.0);
    let mut dz = Tensor::from_host(&dev, &[seven; 16], &[16]).unwrap();
    let mut losses = Tensor::from_host(&dev, &[7.0f32; 2], &[2]).unwrap();
    let mut out = Tensor::from_host(&dev, &[7.0f32], &[1]).unwrap();
    let scale2 = Tensor::from_host(&dev, &[1.0f32; 2], &[2]).unwrap();
    let mut call = |shape: ClassifierShape,
                    z: &Tensor<f16>,
                    dz_len: usize,
                    weight: f32,
                    scale: Option<&Tensor<f32>>,
                    alpha: f32| {
        let sv = scale.map(|s| s.view());
        let mut ov = out.view_mut();
        let mean = Some(MeanLoss { out: &mut ov, alpha, beta: 0.0 });
        fused_classifier(
            &dev,
            shape,
            &z.view(),
            &labels,
            sv.as_ref(),
            weight,
            &mut losses.view_mut(),
            &mut dz.view_mut().slice_mut(0..dz_len),
            mean,
        )
    };
    let e = call(shape, &z, 15, 1.0, None, 1.0).unwrap_err();
    assert!(
        matches!(e, Error::LengthMismatch { op: "fused_classifier_f16", what: "dlogits", expected: 16, got: 15 }),
        "{e}"
    );
    let e = call(ClassifierShape { padded_vocab: 4, ..shape }, &z, 16, 1.0, None, 1.0).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { what: "padded_vocab", .. }), "{e}");
    let e = call(ClassifierShape { vocab: 0, ..shape }, &z, 16, 1.0, None, 1.0).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { what: "vocab", .. }), "{e}");
    let e = call(ClassifierShape { rows: 3, ..shape }, &z, 16, 1.0, None, 1.0).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { what: "logits", .. }), "{e}");
    let e = call(shape, &z, 16, f32::NAN, None, 1.0).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { what: "weight", .. }), "{e}");
    let e = call(shape, &z, 16, 1.0, Some(&scale2), 1.0).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { what: "scale", .. }), "{e}");
    let e = call(shape, &z, 16, 1.0, None, f32::INFINITY).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { what: "mean.alpha", .. }), "{e}");
    let huge = ClassifierShape { rows: 2, vocab: 5, padded_vocab: usize::MAX };
    let e = call(huge, &z, 16, 1.0, None, 1.0).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { what: "shape", .. }), "{e}");
    dev.synchronize().unwrap();
    assert!(dz.to_host().unwrap().iter().all(|x| *x == seven), "a refused classifier must not write");
    assert_eq!(losses.to_host().unwrap(), [7.0; 2]);
    assert_eq!(out.to_host().unwrap(), [7.0]);
}

/// CPU: the gradient formula is the gradient of `weight * scale * mean(losses)`
/// (central differences in f64, labels anywhere including the last class).
#[test]
fn cpu_classifier_gradient_formula_matches_finite_differences() {
    let (rows, v) = (3, 7);
    let mut rng = Rng::new(83);
    let z: Vec<f64> = (0..rows * v).map(|_| rng.uniform_in(-3.0, 3.0) as f64).collect();
    let labels = [0usize, 6, 3];
    let (weight, scale) = (0.25, 8.0);
    let g = weight * scale / rows as f64;
    let loss = |z: &[f64]| {
        (0..rows)
            .map(|r| {
                let row = &z[r * v..(r + 1) * v];
                let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let s: f64 = row.iter().map(|x| (x - m).exp()).sum();
                s.ln() + m - row[labels[r]]
            })
            .sum::<f64>()
            * weight
            * scale
            / rows as f64
    };
    for k in 0..rows * v {
        let (r, j) = (k / v, k % v);
        let row = &z[r * v..(r + 1) * v];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = row.iter().map(|x| (x - m).exp()).sum();
        let formula = ((row[j] - m).exp() / s - if j == labels[r] { 1.0 } else { 0.0 }) * g;
        let h = 1e-5;
        let (mut up, mut down) = (z.clone(), z.clone());
        up[k] += h;
        down[k] -= h;
        let fd = (loss(&up) - loss(&down)) / (2.0 * h);
        assert!((fd - formula).abs() <= 1e-8 * (1.0 + fd.abs()), "z[{k}]: finite difference {fd}, formula {formula}");
    }
}
