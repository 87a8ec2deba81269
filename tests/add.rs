//! add: f16 and bf16 sums and in-place accumulation, exact against the CPU.

mod common;

use mixed_precision::half::{bf16, f16};
use mixed_precision::kernels::add::{add, add_assign};
use mixed_precision::rng::Rng;
use mixed_precision::{Error, Tensor};

const LENGTHS: &[usize] = &[0, 1, 7, 8, 9, 1023, 65537];

fn halves(rng: &mut Rng, n: usize) -> Vec<f16> {
    (0..n).map(|_| f16::from_f32(rng.normal() * 100.0)).collect()
}

fn sum(a: f16, b: f16) -> f16 {
    f16::from_f32(a.to_f32() + b.to_f32())
}

#[test]
fn add_and_accumulate_are_exact() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(21);
    for &n in LENGTHS {
        let (mut a, b) = (halves(&mut rng, n), halves(&mut rng, n));
        if n > 2 {
            a[0] = f16::MAX;
            a[1] = f16::INFINITY;
        }
        let ad = Tensor::from_host(&dev, &a, &[n]).unwrap();
        let bd = Tensor::from_host(&dev, &b, &[n]).unwrap();
        let mut y = Tensor::from_host(&dev, &vec![f16::NAN; n], &[n]).unwrap();
        add(&dev, &ad.view(), &bd.view(), &mut y.view_mut()).unwrap();
        let mut acc = Tensor::from_host(&dev, &a, &[n]).unwrap();
        add_assign(&dev, &mut acc.view_mut(), &bd.view()).unwrap();
        let (y, acc) = (y.to_host().unwrap(), acc.to_host().unwrap());
        for i in 0..n {
            let want = sum(a[i], b[i]);
            assert!(common::same_f16(y[i], want), "n={n} i={i}: {} vs {want}", y[i]);
            assert!(common::same_f16(acc[i], want), "n={n} i={i}: acc {} vs {want}", acc[i]);
        }
    }
}

#[test]
fn length_mismatch_is_an_error() {
    let dev = gpu_or_skip!();
    let a = Tensor::<f16>::zeros(&dev, &[8]).unwrap();
    let b = Tensor::<f16>::zeros(&dev, &[9]).unwrap();
    let mut y = Tensor::<f16>::zeros(&dev, &[8]).unwrap();
    let e = add(&dev, &a.view(), &b.view(), &mut y.view_mut()).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { op: "add_f16", what: "b", .. }), "{e}");
    let e = add_assign(&dev, &mut y.view_mut(), &b.view()).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { op: "add_f16", what: "x", .. }), "{e}");
}

// ----------------------------------------------------------------------------
// bf16 (issue 19).

fn bf16s(rng: &mut Rng, n: usize) -> Vec<bf16> {
    (0..n).map(|_| bf16::from_f32(rng.normal() * 100.0)).collect()
}

/// The kernel adds in f32 and rounds once to bf16: bit for bit `bf16(f32(a) + f32(b))`.
/// Against f64: the f32 sum errs by at most 2^-24 relative (nothing if the exponents are
/// within 16 of each other, when it is exact), the bf16 rounding by the unit roundoff
/// 2^-8, so |got - (a + b)| <= (2^-8 + 2^-23) |a + b|. The sweep includes bf16::MAX + x
/// (rounds to inf when x >= half an ulp of MAX), inf, and cancellation to zero.
#[test]
fn add_and_accumulate_bf16_are_exact() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(22);
    for &n in LENGTHS {
        let (mut a, mut b) = (bf16s(&mut rng, n), bf16s(&mut rng, n));
        if n > 3 {
            (a[0], b[0]) = (bf16::MAX, bf16::MAX);
            (a[1], b[1]) = (bf16::INFINITY, bf16::ONE);
            (a[2], b[2]) = (bf16::from_f32(1.5), bf16::from_f32(-1.5));
            (a[3], b[3]) = (bf16::ONE, bf16::from_f32(2f32.powi(-8))); // a tie: to even (1)
        }
        let ad = Tensor::from_host(&dev, &a, &[n]).unwrap();
        let bd = Tensor::from_host(&dev, &b, &[n]).unwrap();
        let mut y = Tensor::from_host(&dev, &vec![bf16::NAN; n], &[n]).unwrap();
        add(&dev, &ad.view(), &bd.view(), &mut y.view_mut()).unwrap();
        let mut acc = Tensor::from_host(&dev, &a, &[n]).unwrap();
        add_assign(&dev, &mut acc.view_mut(), &bd.view()).unwrap();
        let (y, acc) = (y.to_host().unwrap(), acc.to_host().unwrap());
        for i in 0..n {
            let want = bf16::from_f32(a[i].to_f32() + b[i].to_f32());
            assert!(common::same_bf16(y[i], want), "n={n} i={i}: {} + {} = {} vs {want}", a[i], b[i], y[i]);
            assert!(common::same_bf16(acc[i], want), "n={n} i={i}: acc {} vs {want}", acc[i]);
            let exact = a[i].to_f64() + b[i].to_f64();
            if want.is_finite() {
                let err = (y[i].to_f64() - exact).abs();
                assert!(err <= (2f64.powi(-8) + 2f64.powi(-23)) * exact.abs(), "n={n} i={i}: {} vs {exact:e}", y[i]);
            }
        }
        if n > 3 {
            assert_eq!(y[0], bf16::INFINITY, "MAX + MAX overflows");
            assert_eq!(y[2].to_bits(), 0, "1.5 - 1.5 = +0");
            assert_eq!(y[3], bf16::ONE, "1 + 2^-8 ties to even");
        }
    }
}

#[test]
fn add_bf16_unaligned_views_and_length_mismatch() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(23);
    let (a, b) = (bf16s(&mut rng, 41), bf16s(&mut rng, 41));
    let ad = Tensor::from_host(&dev, &a, &[41]).unwrap();
    let bd = Tensor::from_host(&dev, &b, &[41]).unwrap();
    let mut y = Tensor::from_host(&dev, &[bf16::NAN; 41], &[41]).unwrap();
    let (av, bv, mut yv) = (ad.view(), bd.view(), y.view_mut());
    add(&dev, &av.slice(1..38), &bv.slice(2..39), &mut yv.slice_mut(3..40)).unwrap();
    let y = y.to_host().unwrap();
    for i in 0..37 {
        assert_eq!(y[3 + i], bf16::from_f32(a[1 + i].to_f32() + b[2 + i].to_f32()), "i={i}");
    }
    assert!(y[..3].iter().chain(&y[40..]).all(|v| v.is_nan()), "nothing outside the view is written");
    let short = Tensor::<bf16>::zeros(&dev, &[9]).unwrap();
    let mut out = Tensor::<bf16>::zeros(&dev, &[8]).unwrap();
    let e = add(&dev, &ad.view().slice(0..8), &short.view(), &mut out.view_mut()).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { op: "add_bf16", what: "b", .. }), "{e}");
}
