//! add: f16 sums and in-place accumulation, exact against the CPU.

mod common;

use mixed_precision::half::f16;
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
