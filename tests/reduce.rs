//! reduce: bias gradients (from f16 and bf16) and sums, against f64 and run to run
//! bit-identical.

mod common;

use mixed_precision::backend::cpu;
use mixed_precision::half::{bf16, f16};
use mixed_precision::kernels::reduce::{bias_grad, bias_grad_checking, sum_f32};
use mixed_precision::rng::Rng;
use mixed_precision::{Error, Tensor};

const SHAPES: &[(usize, usize)] = &[(0, 5), (1, 1), (7, 33), (64, 128), (129, 10), (1000, 17), (4096, 64)];

/// bias_grad_checking raises found_inf exactly when a db it writes is inf or NaN,
/// never clears it, and writes what bias_grad writes.
#[test]
fn bias_grad_checking_raises_found_inf_on_nonfinite_only() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(42);
    let (rows, cols) = (129, 70);
    let mut dz: Vec<f16> = (0..rows * cols).map(|_| f16::from_f32(rng.normal())).collect();
    let run = |dz: &[f16], start: f32| {
        let d = Tensor::from_host(&dev, dz, &[dz.len()]).unwrap();
        let mut db = Tensor::from_host(&dev, &vec![1.0f32; cols], &[cols]).unwrap();
        let mut found = Tensor::from_host(&dev, &[start], &[1]).unwrap();
        bias_grad_checking(&dev, &d.view(), &mut db.view_mut(), rows, cols, 1.0, &mut found.view_mut()).unwrap();
        let mut plain = Tensor::from_host(&dev, &vec![1.0f32; cols], &[cols]).unwrap();
        bias_grad(&dev, &d.view(), &mut plain.view_mut(), rows, cols, 1.0).unwrap();
        let (db, plain) = (db.to_host().unwrap(), plain.to_host().unwrap());
        assert!(db.iter().zip(&plain).all(|(a, b)| a.to_bits() == b.to_bits() || a.is_nan() && b.is_nan()));
        found.to_host().unwrap()[0]
    };
    assert_eq!(run(&dz, 0.0), 0.0, "finite gradients raised found_inf");
    assert_eq!(run(&dz, 1.0), 1.0, "found_inf is never cleared");
    dz[5 * cols + 69] = f16::INFINITY;
    assert_eq!(run(&dz, 0.0), 1.0, "an inf in the last column must raise found_inf");
    dz[5 * cols + 69] = f16::NAN;
    assert_eq!(run(&dz, 0.0), 1.0, "a NaN must raise found_inf");
}

#[test]
fn cpu_bias_grad_sums_columns() {
    let dz = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    let mut db = [10.0f32, 20.0, f32::NAN];
    cpu::bias_grad(&dz, 2, 3, &mut db, 0.0).unwrap();
    assert_eq!(db, [5.0, 7.0, 9.0], "beta = 0 does not read the old value");
    cpu::bias_grad(&dz, 2, 3, &mut db, 1.0).unwrap();
    assert_eq!(db, [10.0, 14.0, 18.0]);
    assert!(cpu::bias_grad(&dz, 4, 3, &mut db, 0.0).is_err());
}

#[test]
fn bias_grad_matches_f64_and_is_deterministic() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(31);
    for &(rows, cols) in SHAPES {
        for beta in [0.0f32, 1.0] {
            let dz: Vec<f16> = (0..rows * cols).map(|_| f16::from_f32(rng.normal())).collect();
            let old: Vec<f32> = (0..cols).map(|_| rng.normal()).collect();
            let dzd = Tensor::from_host(&dev, &dz, &[rows * cols]).unwrap();
            let mut runs = Vec::new();
            for _ in 0..2 {
                let mut db = Tensor::from_host(&dev, &old, &[cols]).unwrap();
                bias_grad(&dev, &dzd.view(), &mut db.view_mut(), rows, cols, beta).unwrap();
                runs.push(db.to_host().unwrap());
            }
            assert_eq!(
                runs[0].iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                runs[1].iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                "{rows}x{cols}: two runs differ"
            );
            for c in 0..cols {
                let (mut s, mut mag) = (beta as f64 * old[c] as f64, (beta * old[c]).abs() as f64);
                for r in 0..rows {
                    let v = dz[r * cols + c].to_f64();
                    s += v;
                    mag += v.abs();
                }
                let err = (runs[0][c] as f64 - s).abs();
                assert!(err <= 1e-6 * mag + 1e-6, "{rows}x{cols} beta {beta} col {c}: {} vs {s}", runs[0][c]);
            }
        }
    }
}

#[test]
fn sum_matches_f64() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(32);
    for n in [0usize, 1, 5, 1024, 1025, 100_000] {
        let x: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
        let xd = Tensor::from_host(&dev, &x, &[n]).unwrap();
        let mut out = Tensor::from_host(&dev, &[f32::NAN], &[1]).unwrap();
        sum_f32(&dev, &xd.view(), &mut out.view_mut(), 0.5, 0.0).unwrap();
        let got = out.to_host().unwrap()[0] as f64;
        let want: f64 = 0.5 * x.iter().map(|&v| v as f64).sum::<f64>();
        let mag: f64 = x.iter().map(|&v| v.abs() as f64).sum();
        assert!((got - want).abs() <= 1e-6 * mag + 1e-7, "n={n}: {got} vs {want}");
        // out = 2 * (0.5 s) + 1.0 * s = 2 s = 4 want. (The test expected 3 want until it
        // first ran, on the emulator: the kernel was right, the expectation wrong.)
        sum_f32(&dev, &xd.view(), &mut out.view_mut(), 1.0, 2.0).unwrap();
        let again = out.to_host().unwrap()[0] as f64;
        assert!((again - 4.0 * want).abs() <= 4e-6 * mag + 1e-6, "n={n}: accumulate {again} vs {}", 4.0 * want);
    }
}

#[test]
fn bad_shapes_are_errors() {
    let dev = gpu_or_skip!();
    let dz = Tensor::<f16>::zeros(&dev, &[12]).unwrap();
    let mut db = Tensor::<f32>::zeros(&dev, &[4]).unwrap();
    let e = bias_grad(&dev, &dz.view(), &mut db.view_mut(), 4, 4, 0.0).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { op: "bias_grad_f16", .. }), "{e}");
    let e = bias_grad(&dev, &dz.view(), &mut db.view_mut(), 4, 3, 0.0).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { op: "bias_grad_f16", what: "db", .. }), "{e}");
    let mut two = Tensor::<f32>::zeros(&dev, &[2]).unwrap();
    let e = sum_f32(&dev, &db.view(), &mut two.view_mut(), 1.0, 0.0).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { op: "sum_f32", what: "out", .. }), "{e}");
}

// ----------------------------------------------------------------------------
// bf16 (issue 19). bf16 -> f32 is exact (a shift) and the sums are f32 as for f16, so the
// f16 test's bound applies unchanged: 1e-6 of the sum of magnitudes (f32 accumulation,
// u = 2^-24, over at most rows / 8 + 8 additions of random sign). The values span past
// f16's range (1e6), which bf16 holds.

#[test]
fn bias_grad_bf16_matches_f64_and_is_deterministic() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(33);
    for &(rows, cols) in SHAPES {
        for beta in [0.0f32, 1.0] {
            let dz: Vec<bf16> = (0..rows * cols).map(|_| bf16::from_f32(rng.normal() * 1e6)).collect();
            let old: Vec<f32> = (0..cols).map(|_| rng.normal()).collect();
            let dzd = Tensor::from_host(&dev, &dz, &[rows * cols]).unwrap();
            let mut runs = Vec::new();
            for _ in 0..2 {
                let mut db = Tensor::from_host(&dev, &old, &[cols]).unwrap();
                bias_grad(&dev, &dzd.view(), &mut db.view_mut(), rows, cols, beta).unwrap();
                runs.push(db.to_host().unwrap());
            }
            assert_eq!(
                runs[0].iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                runs[1].iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                "{rows}x{cols}: two runs differ"
            );
            for c in 0..cols {
                let (mut s, mut mag) = (beta as f64 * old[c] as f64, (beta * old[c]).abs() as f64);
                for r in 0..rows {
                    let v = dz[r * cols + c].to_f64();
                    s += v;
                    mag += v.abs();
                }
                let err = (runs[0][c] as f64 - s).abs();
                assert!(err <= 1e-6 * mag + 1e-6, "{rows}x{cols} beta {beta} col {c}: {} vs {s}", runs[0][c]);
            }
        }
    }
}

/// As the f16 test, plus bf16's own overflow: finite bf16 values (bf16::MAX, twice in one
/// column) whose f32 sum is past f32's range, so the db written is inf and raises the flag.
#[test]
fn bias_grad_checking_bf16_raises_found_inf_on_nonfinite_only() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(43);
    let (rows, cols) = (129, 70);
    let mut dz: Vec<bf16> = (0..rows * cols).map(|_| bf16::from_f32(rng.normal())).collect();
    let run = |dz: &[bf16], start: f32| {
        let d = Tensor::from_host(&dev, dz, &[dz.len()]).unwrap();
        let mut db = Tensor::from_host(&dev, &vec![1.0f32; cols], &[cols]).unwrap();
        let mut found = Tensor::from_host(&dev, &[start], &[1]).unwrap();
        bias_grad_checking(&dev, &d.view(), &mut db.view_mut(), rows, cols, 1.0, &mut found.view_mut()).unwrap();
        let mut plain = Tensor::from_host(&dev, &vec![1.0f32; cols], &[cols]).unwrap();
        bias_grad(&dev, &d.view(), &mut plain.view_mut(), rows, cols, 1.0).unwrap();
        let (db, plain) = (db.to_host().unwrap(), plain.to_host().unwrap());
        assert!(db.iter().zip(&plain).all(|(a, b)| a.to_bits() == b.to_bits() || a.is_nan() && b.is_nan()));
        (found.to_host().unwrap()[0], db)
    };
    assert_eq!(run(&dz, 0.0).0, 0.0, "finite gradients raised found_inf");
    assert_eq!(run(&dz, 1.0).0, 1.0, "found_inf is never cleared");
    dz[5 * cols + 69] = bf16::INFINITY;
    assert_eq!(run(&dz, 0.0).0, 1.0, "an inf in the last column must raise found_inf");
    dz[5 * cols + 69] = bf16::NAN;
    assert_eq!(run(&dz, 0.0).0, 1.0, "a NaN must raise found_inf");
    dz[5 * cols + 69] = bf16::ONE;
    dz[3 * cols + 40] = bf16::MAX;
    dz[4 * cols + 40] = bf16::MAX;
    let (found, db) = run(&dz, 0.0);
    assert!(db[40].is_infinite(), "2 bf16::MAX sum past f32's range: {}", db[40]);
    assert_eq!(found, 1.0, "a sum that overflows f32 must raise found_inf");
}

#[test]
fn bad_shapes_bf16_are_errors() {
    let dev = gpu_or_skip!();
    let dz = Tensor::<bf16>::zeros(&dev, &[12]).unwrap();
    let mut db = Tensor::<f32>::zeros(&dev, &[4]).unwrap();
    let e = bias_grad(&dev, &dz.view(), &mut db.view_mut(), 4, 4, 0.0).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { op: "bias_grad_bf16", .. }), "{e}");
    let e = bias_grad(&dev, &dz.view(), &mut db.view_mut(), 4, 3, 0.0).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { op: "bias_grad_bf16", what: "db", .. }), "{e}");
}
