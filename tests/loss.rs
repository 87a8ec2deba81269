//! loss: cross-entropy and MSE in f32 from f16 or bf16 outputs, gradients seeded with the
//! loss scale, against the CPU reference.

mod common;

use mixed_precision::backend::cpu;
use mixed_precision::half::{bf16, f16};
use mixed_precision::kernels::loss::{
    cross_entropy_backward, cross_entropy_forward, mse_backward, mse_forward, LossShape,
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
        cross_entropy_forward(&dev, shape, &zd.view(), &ld_i32, &mut losses.view_mut()).unwrap();
        let want = cpu::cross_entropy_forward(&to_f32(&z), &labels, rows, cols).unwrap();
        for (r, (&g, &w)) in losses.to_host().unwrap().iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{rows}x{cols} row {r}: {g} vs {w}");
        }
        let scale = Tensor::from_host(&dev, &[SCALE], &[1]).unwrap();
        for (factor, with_scale) in [(1.0 / rows.max(1) as f32, true), (0.5, false)] {
            let mut dz = Tensor::from_host(&dev, &vec![f16::NAN; rows * cols], &[rows * cols]).unwrap();
            let s = scale.view();
            let s = with_scale.then_some(&s);
            cross_entropy_backward(&dev, shape, &zd.view(), &ld_i32, s, &mut dz.view_mut(), factor).unwrap();
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
    cross_entropy_forward(&dev, shape, &z.view(), &labels, &mut losses.view_mut()).unwrap();
    assert!(losses.to_host().unwrap().iter().all(|v| v.is_nan()));
    let mut dz = Tensor::<f16>::zeros(&dev, &[6]).unwrap();
    cross_entropy_backward(&dev, shape, &z.view(), &labels, None, &mut dz.view_mut(), 1.0).unwrap();
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
        mse_forward(&dev, shape, &pd.view(), &td.view(), &mut losses.view_mut()).unwrap();
        let want = cpu::mse_forward(&to_f32(&p), &to_f32(&t), rows, cols).unwrap();
        for (r, (&g, &w)) in losses.to_host().unwrap().iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{rows}x{cols} row {r}: {g} vs {w}");
        }
        let scale = Tensor::from_host(&dev, &[SCALE], &[1]).unwrap();
        let factor = 1.0 / (rows * cols).max(1) as f32;
        let mut dp = Tensor::from_host(&dev, &vec![f16::NAN; rows * cols], &[rows * cols]).unwrap();
        let s = scale.view();
        mse_backward(&dev, shape, &pd.view(), &td.view(), Some(&s), &mut dp.view_mut(), factor).unwrap();
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
    let e = cross_entropy_forward(&dev, LossShape { rows: 4, cols: 3 }, &z.view(), &labels, &mut losses.view_mut())
        .unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { what: "labels", .. }), "{e}");
    let e = cross_entropy_forward(&dev, LossShape { rows: 3, cols: 5 }, &z.view(), &labels, &mut losses.view_mut())
        .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { op: "cross_entropy_forward_f16", .. }), "{e}");
    let e = cross_entropy_forward(&dev, LossShape { rows: 0, cols: 0 }, &z.view(), &labels, &mut losses.view_mut())
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { what: "cols", .. }), "{e}");
}

// ----------------------------------------------------------------------------
// expf against __expf (issue 14, item 8), measured on the CPU: the loss kernels use expf
// since then, and cuda/loss.cu's header quotes the figures `cpu_expf_against_fast_expf`
// prints (`cargo test --release --test loss cpu_expf -- --nocapture`).

/// The unit roundoff of f32, 2^-24.
const U: f64 = 1.0 / (1u64 << 24) as f64;
/// log2(e) as nvcc's `__expf` rounds it: `mul.f32 %f, %x, 0f3FB8AA3B` in loss.sm_75.ptx
/// before the change.
const LOG2E_F32: f32 = f32::from_bits(0x3FB8_AA3B);

/// How an exp of the kernel is modelled on the CPU.
#[derive(Clone, Copy, Debug, PartialEq)]
enum ExpModel {
    /// `expf`: the correctly rounded e^x (CUDA's expf is within 2 ulp of it).
    Expf,
    /// `__expf` as nvcc compiles it, `ex2.approx.f32` of `x * log2(e)` with the product
    /// and the constant rounded to f32; the ex2 modelled as the correctly rounded 2^a
    /// (the hardware is within 2 ulp of it, PTX ISA, ex2).
    FastExpf,
}

impl ExpModel {
    /// e^x under the model, moved by `ulps` f32 steps (-2..=2: the documented error of
    /// expf and ex2.approx, so +-2 bounds what any GPU can return).
    fn exp(self, x: f32, ulps: i32) -> f32 {
        let v = match self {
            ExpModel::Expf => (x as f64).exp() as f32,
            ExpModel::FastExpf => ((x * LOG2E_F32) as f64).exp2() as f32,
        };
        if v == 0.0 || !v.is_finite() {
            return v;
        }
        f32::from_bits((v.to_bits() as i64 + ulps as i64) as u32)
    }
}

/// The additions on the longest path of the kernel's sum over `cols` terms: a lane adds
/// `ceil(cols / 32)` terms to its 0, then 5 shuffle levels.
fn kernel_depth(cols: usize) -> usize {
    cols.div_ceil(32) + 5
}

/// One row as cross_entropy_forward / _backward_f16 compute it (lane-strided sums,
/// the xor-shuffle tree, `logf(s) + m - z[y]`, `e * (1 / s)`), with `model` for exp.
fn kernel_row(z: &[f32], y: usize, model: ExpModel, ulps: i32) -> (f32, Vec<f32>) {
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut lanes = [0.0f32; 32];
    for (c, &v) in z.iter().enumerate() {
        lanes[c % 32] += model.exp(v - m, ulps);
    }
    for o in [16, 8, 4, 2, 1] {
        let old = lanes;
        for (i, l) in lanes.iter_mut().enumerate() {
            *l = old[i] + old[i ^ o];
        }
    }
    let s = lanes[0];
    let inv = 1.0 / s;
    (s.ln() + m - z[y], z.iter().map(|&v| model.exp(v - m, ulps) * inv).collect())
}

/// The f64 reference of one row: loss, ln s, max, softmax.
fn f64_row(z: &[f32], y: usize) -> (f64, f64, f64, Vec<f64>) {
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = z.iter().map(|&v| (v as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    (s.ln() + m - z[y] as f64, s.ln(), m, e.iter().map(|v| v / s).collect())
}

/// The documented bound on |loss - f64 reference| for one row (cuda/loss.cu's header),
/// to first order in u = 2^-24, `depth` the additions on the longest path of the sum:
/// exp 2 ulp (4u), the rounded arguments z - m (u ln cols: the softmax mean of z - m is
/// at most ln cols), the sum (depth u), logf 1 ulp (2u |ln s|), the two additions
/// (u |ln s + m| + u |loss|); 1% on top for the second-order terms.
fn loss_bound(cols: usize, depth: usize, ln_s: f64, m: f64, loss: f64) -> f64 {
    1.01 * U * (4.0 + (cols as f64).ln() + depth as f64 + 2.0 * ln_s.abs() + (ln_s + m).abs() + loss.abs())
}

/// Logits uniform in [-30, 30] (after the max subtraction the exp arguments lie in
/// [-60, 0]), rounded to f16 as the kernels read them.
fn classifier_logits(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| f16::from_f32(rng.uniform_in(-30.0, 30.0)).to_f32()).collect()
}

#[test]
fn cpu_expf_against_fast_expf() {
    let mut rng = Rng::new(43);
    println!("cols rows | max |loss - f64|: expf  __expf  (+-2 ulp: expf  __expf) | max |__expf - expf| loss");
    println!("          | softmax max rel. err. (p >= 2^-24): expf  __expf | f16 gradients != f16(f64): expf  __expf | __expf != expf");
    for (cols, rows) in [(10usize, 20000usize), (100, 2000), (1000, 200)] {
        let z = classifier_logits(&mut rng, rows * cols);
        let labels: Vec<u32> = (0..rows).map(|_| rng.below(cols as u64) as u32).collect();
        let cpu_losses = cpu::cross_entropy_forward(&z, &labels, rows, cols).unwrap();
        let (mut err, mut env, mut diff) = ([0.0f64; 2], [0.0f64; 2], 0.0f64);
        let (mut rel, mut flips, mut grads, mut changed) = ([0.0f64; 2], [0usize; 2], 0usize, 0usize);
        for r in 0..rows {
            let (row, y) = (&z[r * cols..(r + 1) * cols], labels[r] as usize);
            let (l64, ln_s, m, p64) = f64_row(row, y);
            let kernel = loss_bound(cols, kernel_depth(cols), ln_s, m, l64);
            let sequential = loss_bound(cols, cols - 1, ln_s, m, l64);
            let cpu_err = (cpu_losses[r] as f64 - l64).abs();
            assert!(cpu_err <= sequential, "cpu reference {cols} cols row {r}: {cpu_err:e} > {sequential:e}");
            let mut nearest = [0.0f32; 2];
            let mut g16: [Vec<f16>; 2] = Default::default();
            for (k, model) in [ExpModel::Expf, ExpModel::FastExpf].into_iter().enumerate() {
                for ulps in [-2, 0, 2] {
                    let (l, p) = kernel_row(row, y, model, ulps);
                    let e = (l as f64 - l64).abs();
                    if ulps == 0 {
                        nearest[k] = l;
                        err[k] = err[k].max(e);
                        for (c, (&p, &p64)) in p.iter().zip(&p64).enumerate() {
                            if p64 >= U {
                                rel[k] = rel[k].max((p as f64 - p64).abs() / p64);
                            }
                            let hot = if c == y { 1.0 } else { 0.0 };
                            let want = f16::from_f64(p64 - hot);
                            g16[k].push(f16::from_f32(p - hot as f32));
                            flips[k] += (g16[k][c] != want) as usize;
                        }
                    }
                    env[k] = env[k].max(e);
                    // expf: the documented bound; __expf adds up to 1.23 u |z - m| per
                    // term, at most 1.23 u ln cols after the softmax weighting.
                    let extra = if model == ExpModel::FastExpf { 1.23 * U * (cols as f64).ln() } else { 0.0 };
                    assert!(e <= kernel + extra, "{model:?}{ulps:+} {cols} cols row {r}: {e:e} > {:e}", kernel + extra);
                }
            }
            diff = diff.max((nearest[0] - nearest[1]).abs() as f64);
            changed += g16[0].iter().zip(&g16[1]).filter(|(a, b)| a != b).count();
            grads += cols;
        }
        println!("{cols:4} {rows:5} | {:.2e} {:.2e} ({:.2e} {:.2e}) | {diff:.2e}", err[0], err[1], env[0], env[1]);
        println!(
            "           | {:.2e} {:.2e} | {}/{grads} {}/{grads} | {changed}/{grads}",
            rel[0], rel[1], flips[0], flips[1]
        );
    }
}

/// The kernels against the f64 reference on classifier logits: every row's loss within
/// the documented bound (`loss_bound`, cuda/loss.cu's header), every gradient within half
/// an f16 step of the f64 gradient plus the f32 error before the store: p relative
/// (exp 4u, argument up to 60u, sum depth u, 1 / s and the product 2u) and
/// absolute (p - 1 and the seed, 4u).
#[test]
fn cross_entropy_within_the_documented_bound_of_f64() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(44);
    for (rows, cols) in [(256usize, 10usize), (33, 100), (16, 1000)] {
        let z = classifier_logits(&mut rng, rows * cols);
        let labels: Vec<i32> = (0..rows).map(|_| rng.below(cols as u64) as i32).collect();
        let shape = LossShape { rows, cols };
        let z16: Vec<f16> = z.iter().map(|&v| f16::from_f32(v)).collect();
        let zd = Tensor::from_host(&dev, &z16, &[rows * cols]).unwrap();
        let ld = dev.stream().clone_htod(&labels).unwrap();
        let mut losses = Tensor::from_host(&dev, &vec![f32::NAN; rows], &[rows]).unwrap();
        cross_entropy_forward(&dev, shape, &zd.view(), &ld, &mut losses.view_mut()).unwrap();
        let scale = Tensor::from_host(&dev, &[SCALE], &[1]).unwrap();
        let factor = 1.0 / rows as f32;
        let mut dz = Tensor::from_host(&dev, &vec![f16::NAN; rows * cols], &[rows * cols]).unwrap();
        let s = scale.view();
        cross_entropy_backward(&dev, shape, &zd.view(), &ld, Some(&s), &mut dz.view_mut(), factor).unwrap();
        let (losses, dz) = (losses.to_host().unwrap(), dz.to_host().unwrap());
        let seed = (factor * SCALE) as f64;
        for r in 0..rows {
            let (row, y) = (&z[r * cols..(r + 1) * cols], labels[r] as usize);
            let (l64, ln_s, m, p64) = f64_row(row, y);
            let bound = loss_bound(cols, kernel_depth(cols), ln_s, m, l64);
            let err = (losses[r] as f64 - l64).abs();
            assert!(err <= bound, "{rows}x{cols} row {r}: loss {} vs {l64}: {err:e} > {bound:e}", losses[r]);
            for (c, &p) in p64.iter().enumerate() {
                let want = seed * (p - if c == y { 1.0 } else { 0.0 });
                let got = dz[r * cols + c].to_f32() as f64;
                let tol = 0.5 * f16_step(want) + seed * U * (p * (66 + kernel_depth(cols)) as f64 + 4.0);
                assert!((got - want).abs() <= tol, "{rows}x{cols} ({r}, {c}): {got} vs {want}");
            }
        }
    }
}

/// The spacing of f16 values around `v` (2^-24 below the normal range).
fn f16_step(v: f64) -> f64 {
    let a = v.abs().max(6.103515625e-5);
    2f64.powi(a.log2().floor() as i32 - 10)
}

// ----------------------------------------------------------------------------
// bf16 (issue 19): the same kernels on bf16 outputs. The losses are f32 from inputs that
// are exact in f32, so their tolerances are the f16 tests'. The gradients are rounded once
// to bf16: |got - want| <= 2^-8 |g32| for the kernel's f32 value g32, which is within a few
// f32 ulps of the CPU's (expf against Rust's exp, another sum order: softmax relative error
// ~1e-6, cuda/loss.cu's header), hence (2^-8 + 4e-6) |want| + floor, the floor covering the
// absolute error of p - 1 near the label as in the f16 test.

fn bf16s(rng: &mut Rng, n: usize, s: f32) -> Vec<bf16> {
    (0..n).map(|_| bf16::from_f32(rng.normal() * s)).collect()
}

fn bf16_to_f32(v: &[bf16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

fn close_bf16(got: bf16, want: f32, floor: f32) -> bool {
    (got.to_f32() - want).abs() <= (2f32.powi(-8) + 4e-6) * want.abs() + floor
}

#[test]
fn cross_entropy_bf16_matches_cpu() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(45);
    for &(rows, cols) in SHAPES {
        let z = bf16s(&mut rng, rows * cols, 4.0);
        let labels: Vec<u32> = (0..rows).map(|_| rng.below(cols as u64) as u32).collect();
        let li: Vec<i32> = labels.iter().map(|&l| l as i32).collect();
        let shape = LossShape { rows, cols };
        let zd = Tensor::from_host(&dev, &z, &[rows * cols]).unwrap();
        let ld = dev.stream().clone_htod(&li).unwrap();
        let mut losses = Tensor::from_host(&dev, &vec![f32::NAN; rows], &[rows]).unwrap();
        cross_entropy_forward(&dev, shape, &zd.view(), &ld, &mut losses.view_mut()).unwrap();
        let want = cpu::cross_entropy_forward(&bf16_to_f32(&z), &labels, rows, cols).unwrap();
        for (r, (&g, &w)) in losses.to_host().unwrap().iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{rows}x{cols} row {r}: {g} vs {w}");
        }
        let scale = Tensor::from_host(&dev, &[SCALE], &[1]).unwrap();
        for (factor, with_scale) in [(1.0 / rows.max(1) as f32, true), (0.5, false)] {
            let mut dz = Tensor::from_host(&dev, &vec![bf16::NAN; rows * cols], &[rows * cols]).unwrap();
            let s = scale.view();
            let s = with_scale.then_some(&s);
            cross_entropy_backward(&dev, shape, &zd.view(), &ld, s, &mut dz.view_mut(), factor).unwrap();
            let seed = factor * if with_scale { SCALE } else { 1.0 };
            let want = cpu::cross_entropy_backward(&bf16_to_f32(&z), &labels, rows, cols, seed).unwrap();
            for (i, (&g, &w)) in dz.to_host().unwrap().iter().zip(&want).enumerate() {
                assert!(close_bf16(g, w, seed * 1e-6), "{rows}x{cols} i={i}: {g} vs {w}");
            }
        }
    }
}

#[test]
fn out_of_range_labels_bf16_give_nan_not_a_fault() {
    let dev = gpu_or_skip!();
    let z = Tensor::from_host(&dev, &[bf16::ZERO; 6], &[6]).unwrap();
    let labels = dev.stream().clone_htod(&[7i32, -1]).unwrap();
    let shape = LossShape { rows: 2, cols: 3 };
    let mut losses = Tensor::<f32>::zeros(&dev, &[2]).unwrap();
    cross_entropy_forward(&dev, shape, &z.view(), &labels, &mut losses.view_mut()).unwrap();
    assert!(losses.to_host().unwrap().iter().all(|v| v.is_nan()));
    let mut dz = Tensor::<bf16>::zeros(&dev, &[6]).unwrap();
    cross_entropy_backward(&dev, shape, &z.view(), &labels, None, &mut dz.view_mut(), 1.0).unwrap();
    assert!(dz.to_host().unwrap().iter().all(|v| v.is_nan()));
}

#[test]
fn mse_bf16_matches_cpu() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(46);
    for &(rows, cols) in SHAPES {
        let (p, t) = (bf16s(&mut rng, rows * cols, 2.0), bf16s(&mut rng, rows * cols, 2.0));
        let shape = LossShape { rows, cols };
        let pd = Tensor::from_host(&dev, &p, &[rows * cols]).unwrap();
        let td = Tensor::from_host(&dev, &t, &[rows * cols]).unwrap();
        let mut losses = Tensor::from_host(&dev, &vec![f32::NAN; rows], &[rows]).unwrap();
        mse_forward(&dev, shape, &pd.view(), &td.view(), &mut losses.view_mut()).unwrap();
        let want = cpu::mse_forward(&bf16_to_f32(&p), &bf16_to_f32(&t), rows, cols).unwrap();
        for (r, (&g, &w)) in losses.to_host().unwrap().iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{rows}x{cols} row {r}: {g} vs {w}");
        }
        let scale = Tensor::from_host(&dev, &[SCALE], &[1]).unwrap();
        let factor = 1.0 / (rows * cols).max(1) as f32;
        let mut dp = Tensor::from_host(&dev, &vec![bf16::NAN; rows * cols], &[rows * cols]).unwrap();
        let s = scale.view();
        mse_backward(&dev, shape, &pd.view(), &td.view(), Some(&s), &mut dp.view_mut(), factor).unwrap();
        let want = cpu::mse_backward(&bf16_to_f32(&p), &bf16_to_f32(&t), rows, cols, factor * SCALE).unwrap();
        for (i, (&g, &w)) in dp.to_host().unwrap().iter().zip(&want).enumerate() {
            // p - t of two bf16 values is exact in f32 unless their exponents are far
            // apart; times the seed and 2 it rounds once more: the store is bf16(w) or
            // within close_bf16 of w.
            assert!(
                common::same_bf16(g, bf16::from_f32(w)) || close_bf16(g, w, 0.0),
                "{rows}x{cols} i={i}: {g} vs {w}"
            );
        }
    }
}

/// Against f64: the f16 test's bound for the losses (inputs exact in f32), and for the
/// gradients half a bf16 step (2^-8 relative, bf16's unit roundoff; bf16 keeps f32's
/// exponent range, so there is no subnormal floor to speak of) plus the same f32 error
/// before the store.
#[test]
fn cross_entropy_bf16_within_the_documented_bound_of_f64() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(47);
    for (rows, cols) in [(256usize, 10usize), (33, 100), (16, 1000)] {
        let z: Vec<f32> = (0..rows * cols).map(|_| bf16::from_f32(rng.uniform_in(-30.0, 30.0)).to_f32()).collect();
        let labels: Vec<i32> = (0..rows).map(|_| rng.below(cols as u64) as i32).collect();
        let shape = LossShape { rows, cols };
        let zb: Vec<bf16> = z.iter().map(|&v| bf16::from_f32(v)).collect();
        let zd = Tensor::from_host(&dev, &zb, &[rows * cols]).unwrap();
        let ld = dev.stream().clone_htod(&labels).unwrap();
        let mut losses = Tensor::from_host(&dev, &vec![f32::NAN; rows], &[rows]).unwrap();
        cross_entropy_forward(&dev, shape, &zd.view(), &ld, &mut losses.view_mut()).unwrap();
        let scale = Tensor::from_host(&dev, &[SCALE], &[1]).unwrap();
        let factor = 1.0 / rows as f32;
        let mut dz = Tensor::from_host(&dev, &vec![bf16::NAN; rows * cols], &[rows * cols]).unwrap();
        let s = scale.view();
        cross_entropy_backward(&dev, shape, &zd.view(), &ld, Some(&s), &mut dz.view_mut(), factor).unwrap();
        let (losses, dz) = (losses.to_host().unwrap(), dz.to_host().unwrap());
        let seed = (factor * SCALE) as f64;
        for r in 0..rows {
            let (row, y) = (&z[r * cols..(r + 1) * cols], labels[r] as usize);
            let (l64, ln_s, m, p64) = f64_row(row, y);
            let bound = loss_bound(cols, kernel_depth(cols), ln_s, m, l64);
            let err = (losses[r] as f64 - l64).abs();
            assert!(err <= bound, "{rows}x{cols} row {r}: loss {} vs {l64}: {err:e} > {bound:e}", losses[r]);
            for (c, &p) in p64.iter().enumerate() {
                let want = seed * (p - if c == y { 1.0 } else { 0.0 });
                let got = dz[r * cols + c].to_f64();
                let tol = 2f64.powi(-8) * want.abs() + seed * U * (p * (66 + kernel_depth(cols)) as f64 + 4.0);
                assert!((got - want).abs() <= tol, "{rows}x{cols} ({r}, {c}): {got} vs {want}");
            }
        }
    }
}

#[test]
fn bad_shapes_bf16_are_errors() {
    let dev = gpu_or_skip!();
    let z = Tensor::<bf16>::zeros(&dev, &[12]).unwrap();
    let labels = dev.stream().clone_htod(&[0i32, 1, 2]).unwrap();
    let mut losses = Tensor::<f32>::zeros(&dev, &[4]).unwrap();
    let e = cross_entropy_forward(&dev, LossShape { rows: 3, cols: 5 }, &z.view(), &labels, &mut losses.view_mut())
        .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { op: "cross_entropy_forward_bf16", .. }), "{e}");
    let t = Tensor::<bf16>::zeros(&dev, &[11]).unwrap();
    let e =
        mse_forward(&dev, LossShape { rows: 3, cols: 4 }, &z.view(), &t.view(), &mut losses.view_mut()).unwrap_err();
    assert!(format!("{e}").contains("mse_forward_bf16"), "{e}");
}
