//! cast: f32 <-> f16 over a flat range, exact against the CPU reference.

mod common;

use mixed_precision::backend::cpu;
use mixed_precision::half::f16;
use mixed_precision::kernels::cast::{cast_f16_f32, cast_f32_f16};
use mixed_precision::rng::Rng;
use mixed_precision::{Error, Tensor};

use common::{same_f16, same_f32};

/// The sweep: empty, one, below/at/past one vector of 8, odd, and large + 3.
const LENGTHS: &[usize] = &[0, 1, 7, 8, 9, 1023, (1 << 20) + 3];

/// Special inputs and their IEEE binary16 encodings under round-to-nearest-even.
const SPECIALS: &[(f32, u16)] = &[
    (0.0, 0x0000),
    (-0.0, 0x8000),
    (1.0, 0x3c00),
    (-2.0, 0xc000),
    (65504.0, 0x7bff), // largest finite f16
    (65519.0, 0x7bff), // below the midpoint to 65536: rounds down
    (65520.0, 0x7c00), // the midpoint rounds to even, which is +inf
    (-65520.0, 0xfc00),
    (1e10, 0x7c00),
    (f32::INFINITY, 0x7c00),
    (f32::NEG_INFINITY, 0xfc00),
    (6.103_515_6e-5, 0x0400), // 2^-14, smallest normal
    (5.960_464_5e-8, 0x0001), // 2^-24, smallest subnormal
    (2.980_232_2e-8, 0x0000), // 2^-25, halfway to zero: ties to even (0)
    (8.940_697e-8, 0x0002),   // 3 * 2^-25, halfway: ties to even (2)
    (-5.960_464_5e-8, 0x8001),
    (6.097_555e-5, 0x03ff),            // largest subnormal
    (1.0e-30, 0x0000),                 // f32 far below f16 range
    (f32::MIN_POSITIVE / 2.0, 0x0000), // f32 subnormal
];

/// Random f32 inputs over the whole f16 range and beyond: normals, subnormals, overflow.
fn random_f32(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let magnitude = 2f32.powf(rng.uniform_in(-28.0, 18.0));
            if rng.below(2) == 0 {
                magnitude
            } else {
                -magnitude
            }
        })
        .collect()
}

#[test]
fn cpu_reference_rounds_specials_like_ieee() {
    let x: Vec<f32> = SPECIALS.iter().map(|s| s.0).collect();
    let mut y = vec![f16::ZERO; x.len()];
    cpu::cast_f32_f16(&x, &mut y).unwrap();
    for ((input, bits), got) in SPECIALS.iter().zip(&y) {
        assert_eq!(got.to_bits(), *bits, "cast({input:e}) = {:#06x}, want {bits:#06x}", got.to_bits());
    }
    let mut nan = [f16::ZERO];
    cpu::cast_f32_f16(&[f32::NAN], &mut nan).unwrap();
    assert!(nan[0].is_nan());
}

#[test]
fn cpu_reference_rejects_length_mismatch() {
    let mut y = vec![f16::ZERO; 3];
    let err = cpu::cast_f32_f16(&[1.0; 4], &mut y).unwrap_err();
    assert!(matches!(err, Error::LengthMismatch { expected: 4, got: 3, .. }), "{err}");
    let mut z = vec![0.0f32; 5];
    assert!(cpu::cast_f16_f32(&[f16::ONE; 4], &mut z).is_err());
}

#[test]
fn cast_f32_f16_matches_cpu_over_lengths() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(0xca57);
    for &n in LENGTHS {
        let x = random_f32(&mut rng, n);
        let mut want = vec![f16::ZERO; n];
        cpu::cast_f32_f16(&x, &mut want).unwrap();

        let xd = Tensor::from_host(&dev, &x, &[n]).unwrap();
        let mut yd = Tensor::from_host(&dev, &vec![f16::NAN; n], &[n]).unwrap(); // poisoned
        cast_f32_f16(&dev, &xd.view(), &mut yd.view_mut()).unwrap();
        let got = yd.to_host().unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(same_f16(*g, *w), "n={n} i={i} x={:e}: gpu {:#06x} cpu {:#06x}", x[i], g.to_bits(), w.to_bits());
        }
        assert!(n == 0 || got.iter().any(|v| v.to_f32() != 0.0), "n={n}: all zeros");
    }
}

#[test]
fn cast_f32_f16_specials_and_nan() {
    let dev = gpu_or_skip!();
    let mut x: Vec<f32> = SPECIALS.iter().map(|s| s.0).collect();
    x.extend([f32::NAN, -f32::NAN, f32::from_bits(0x7f80_0001)]); // quiet, negative, signalling
    let n = x.len();
    let xd = Tensor::from_host(&dev, &x, &[n]).unwrap();
    let got = xd.to_f16().unwrap().to_host().unwrap();
    for (i, (input, bits)) in SPECIALS.iter().enumerate() {
        assert_eq!(got[i].to_bits(), *bits, "cast({input:e}) = {:#06x}, want {bits:#06x}", got[i].to_bits());
    }
    assert!(got[SPECIALS.len()..].iter().all(|v| v.is_nan()), "NaN must stay NaN");
}

#[test]
fn cast_f16_f32_all_bit_patterns() {
    let dev = gpu_or_skip!();
    // Every f16: exhaustive, and a length that is not a multiple of 8 after the +3.
    let x: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).chain([f16::ONE; 3]).collect();
    let n = x.len();
    let mut want = vec![0.0f32; n];
    cpu::cast_f16_f32(&x, &mut want).unwrap();
    let xd = Tensor::from_host(&dev, &x, &[n]).unwrap();
    let mut yd = Tensor::from_host(&dev, &vec![f32::NAN; n], &[n]).unwrap();
    cast_f16_f32(&dev, &xd.view(), &mut yd.view_mut()).unwrap();
    let got = yd.to_host().unwrap();
    for i in 0..n {
        assert!(same_f32(got[i], want[i]), "bits {:#06x}: gpu {} cpu {}", x[i].to_bits(), got[i], want[i]);
    }
}

#[test]
fn cast_f16_f32_matches_cpu_over_lengths() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(0xf16);
    for &n in LENGTHS {
        let x: Vec<f16> = (0..n).map(|_| f16::from_bits(rng.below(1 << 16) as u16)).collect();
        let mut want = vec![0.0f32; n];
        cpu::cast_f16_f32(&x, &mut want).unwrap();
        let xd = Tensor::from_host(&dev, &x, &[n]).unwrap();
        let got = xd.to_f32().unwrap().to_host().unwrap();
        assert!(got.iter().zip(&want).all(|(g, w)| same_f32(*g, *w)), "n={n}");
    }
}

#[test]
fn cast_misaligned_views_take_the_scalar_path() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(3);
    let n = 4099;
    let x = random_f32(&mut rng, n);
    let xd = Tensor::from_host(&dev, &x, &[n]).unwrap();
    let mut yd = Tensor::from_host(&dev, &vec![f16::NAN; n], &[n]).unwrap();
    // Offsets of 1 element: 4 bytes into x, 2 into y, so neither is 16-byte aligned.
    for (xo, yo) in [(1usize, 0usize), (0, 1), (3, 5)] {
        let len = n - xo.max(yo);
        cast_f32_f16(&dev, &xd.view().slice(xo..xo + len), &mut yd.view_mut().slice_mut(yo..yo + len)).unwrap();
        let got = yd.to_host().unwrap();
        let mut want = vec![f16::ZERO; len];
        cpu::cast_f32_f16(&x[xo..xo + len], &mut want).unwrap();
        assert!(got[yo..yo + len].iter().zip(&want).all(|(g, w)| same_f16(*g, *w)), "offsets ({xo}, {yo})");
    }
}

#[test]
fn cast_rejects_length_mismatch_and_launches_nothing() {
    let dev = gpu_or_skip!();
    let xd = Tensor::from_host(&dev, &[1.0f32; 16], &[16]).unwrap();
    let sentinel = vec![f16::from_f32(7.0); 15];
    let mut yd = Tensor::from_host(&dev, &sentinel, &[15]).unwrap();
    let err = cast_f32_f16(&dev, &xd.view(), &mut yd.view_mut()).unwrap_err();
    assert!(matches!(err, Error::LengthMismatch { op: "cast_f32_f16", expected: 16, got: 15, .. }), "{err}");
    assert!(err.to_string().contains("cast_f32_f16"));
    assert_eq!(yd.to_host().unwrap(), sentinel, "a rejected launch must not write");
}

#[test]
fn tensor_shape_errors() {
    let dev = gpu_or_skip!();
    let err = Tensor::from_host(&dev, &[1.0f32; 6], &[2, 4]).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let t = Tensor::from_host(&dev, &[1.0f32; 6], &[2, 3]).unwrap();
    assert!(t.reshape(&[4, 2]).is_err());
    let t = Tensor::<f16>::zeros(&dev, &[3, 2]).unwrap().reshape(&[6]).unwrap();
    assert_eq!(t.shape(), &[6]);
    assert!(Tensor::<f32>::zeros(&dev, &[usize::MAX, 2]).is_err());
}
