//! cast: f32 <-> f16 and f32 <-> bf16 over a flat range, exact against the CPU reference
//! (f16) and against `half::bf16` (bf16).

mod common;

use mixed_precision::backend::cpu;
use mixed_precision::half::{bf16, f16};
use mixed_precision::kernels::cast::{cast_bf16_f32, cast_f16_f32, cast_f32_bf16, cast_f32_f16};
use mixed_precision::rng::Rng;
use mixed_precision::{Error, Tensor};

use common::{same_bf16, same_f16, same_f32};

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

// ----------------------------------------------------------------------------
// bf16 (issue 19): the same sweeps against `half::bf16::from_f32` / `to_f32`, bit for bit.
// bf16 keeps f32's exponent, so there is no overflow below f32's range; only the values
// that round past bf16's largest finite value (0x7f7f) become infinite.

/// Special inputs as f32 bits and their bf16 encodings under round-to-nearest-even.
const BF16_SPECIALS: &[(u32, u16)] = &[
    (0x0000_0000, 0x0000), // +0
    (0x8000_0000, 0x8000), // -0
    (0x3f80_0000, 0x3f80), // 1
    (0xc000_0000, 0xc000), // -2
    (0x3f80_7fff, 0x3f80), // just below 1 + half an ulp (2^-8): down
    (0x3f80_8000, 0x3f80), // 1 + 2^-8, the midpoint: ties to even (down)
    (0x3f81_8000, 0x3f82), // 1 + 3 * 2^-8, the midpoint: ties to even (up)
    (0x3f80_8001, 0x3f81), // just past the midpoint: up
    (0xbf80_8001, 0xbf81), // the same, negative
    (0x7f7f_0000, 0x7f7f), // largest finite bf16, 3.3895e38
    (0x7f7f_7fff, 0x7f7f), // below the midpoint to 2^128: rounds down
    (0x7f7f_8000, 0x7f80), // the midpoint rounds to even, which is +inf
    (0x7f7f_ffff, 0x7f80), // f32::MAX rounds to +inf
    (0xff7f_ffff, 0xff80), // -f32::MAX to -inf
    (0x7f80_0000, 0x7f80), // +inf
    (0xff80_0000, 0xff80), // -inf
    (0x0080_0000, 0x0080), // 2^-126, smallest normal
    (0x0001_0000, 0x0001), // 2^-133, smallest bf16 subnormal
    (0x0000_8000, 0x0000), // 2^-134, halfway to zero: ties to even (0)
    (0x0001_8000, 0x0002), // 3 * 2^-134, halfway: ties to even (2)
    (0x8001_0000, 0x8001), // negative subnormal
    (0x007f_0000, 0x007f), // largest bf16 subnormal
    (0x007f_ffff, 0x0080), // largest f32 subnormal rounds up to the smallest normal
    (0x0000_0001, 0x0000), // smallest f32 subnormal: +0
    (0x8000_0001, 0x8000), // its negative: -0
];

/// NaN inputs: quiet, negative, signalling, and a payload only in the bits bf16 drops
/// (truncation would make it inf).
const BF16_NANS: [u32; 4] = [0x7fc0_0000, 0xffc0_0000, 0x7f80_0001, 0x7f80_8000];

/// Random f32 inputs for the bf16 cast: half uniformly random bit patterns (every
/// exponent, subnormals, inf and NaN), half magnitudes spread over bf16's whole range.
fn random_f32_for_bf16(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            if rng.below(2) == 0 {
                return f32::from_bits(rng.next_u64() as u32);
            }
            let magnitude = 2f32.powf(rng.uniform_in(-135.0, 127.9));
            if rng.below(2) == 0 {
                magnitude
            } else {
                -magnitude
            }
        })
        .collect()
}

/// The reference bf16 casts run on the CPU (`half` is what the crate's bf16 tensors use on
/// the host, and what PyTorch's `.bfloat16()` agrees with): pins the table above.
#[test]
fn cpu_reference_bf16_rounds_specials_like_ieee() {
    for (input, bits) in BF16_SPECIALS {
        let got = bf16::from_f32(f32::from_bits(*input));
        assert_eq!(got.to_bits(), *bits, "bf16({input:#010x}) = {:#06x}, want {bits:#06x}", got.to_bits());
    }
    assert!(BF16_NANS.iter().all(|&b| bf16::from_f32(f32::from_bits(b)).is_nan()));
}

#[test]
fn cast_f32_bf16_matches_half_over_lengths() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(0xbf16);
    for &n in LENGTHS {
        let x = random_f32_for_bf16(&mut rng, n);
        let xd = Tensor::from_host(&dev, &x, &[n]).unwrap();
        let mut yd = Tensor::from_host(&dev, &vec![bf16::NAN; n], &[n]).unwrap(); // poisoned
        cast_f32_bf16(&dev, &xd.view(), &mut yd.view_mut()).unwrap();
        let got = yd.to_host().unwrap();
        for (i, g) in got.iter().enumerate() {
            let w = bf16::from_f32(x[i]);
            assert!(
                same_bf16(*g, w),
                "n={n} i={i} x={:#010x}: gpu {:#06x} half {:#06x}",
                x[i].to_bits(),
                g.to_bits(),
                w.to_bits()
            );
        }
        assert!(n == 0 || got.iter().any(|v| v.to_f32() != 0.0 && v.is_finite()), "n={n}: nothing finite");
    }
}

#[test]
fn cast_f32_bf16_specials_and_nan() {
    let dev = gpu_or_skip!();
    let x: Vec<f32> = BF16_SPECIALS.iter().map(|s| s.0).chain(BF16_NANS).map(f32::from_bits).collect();
    let n = x.len();
    let xd = Tensor::from_host(&dev, &x, &[n]).unwrap();
    let mut yd = Tensor::from_host(&dev, &vec![bf16::from_f32(7.0); n], &[n]).unwrap();
    cast_f32_bf16(&dev, &xd.view(), &mut yd.view_mut()).unwrap();
    let got = yd.to_host().unwrap();
    for (i, (input, bits)) in BF16_SPECIALS.iter().enumerate() {
        assert_eq!(got[i].to_bits(), *bits, "bf16({input:#010x}) = {:#06x}, want {bits:#06x}", got[i].to_bits());
    }
    for (g, input) in got[BF16_SPECIALS.len()..].iter().zip(BF16_NANS) {
        assert!(g.is_nan(), "NaN {input:#010x} must stay NaN, got {:#06x}", g.to_bits());
    }
}

#[test]
fn cast_bf16_f32_all_bit_patterns() {
    let dev = gpu_or_skip!();
    // Every bf16: exhaustive, and a length that is not a multiple of 4 after the +3.
    let x: Vec<bf16> = (0..=u16::MAX).map(bf16::from_bits).chain([bf16::ONE; 3]).collect();
    let n = x.len();
    let xd = Tensor::from_host(&dev, &x, &[n]).unwrap();
    let mut yd = Tensor::from_host(&dev, &vec![f32::NAN; n], &[n]).unwrap();
    cast_bf16_f32(&dev, &xd.view(), &mut yd.view_mut()).unwrap();
    let got = yd.to_host().unwrap();
    for i in 0..n {
        // Widening is exact: the bf16 bits are the f32's high half (NaN payloads aside).
        let want = x[i].to_f32();
        assert!(
            same_f32(got[i], want) && (want.is_nan() || got[i].to_bits() == (x[i].to_bits() as u32) << 16),
            "bits {:#06x}: gpu {} ({:#010x}) half {want}",
            x[i].to_bits(),
            got[i],
            got[i].to_bits()
        );
    }
}

#[test]
fn cast_bf16_f32_matches_half_over_lengths() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(0xbf);
    for &n in LENGTHS {
        let x: Vec<bf16> = (0..n).map(|_| bf16::from_bits(rng.below(1 << 16) as u16)).collect();
        let xd = Tensor::from_host(&dev, &x, &[n]).unwrap();
        let mut yd = Tensor::from_host(&dev, &vec![f32::NAN; n], &[n]).unwrap();
        cast_bf16_f32(&dev, &xd.view(), &mut yd.view_mut()).unwrap();
        let got = yd.to_host().unwrap();
        assert!(got.iter().zip(&x).all(|(g, w)| same_f32(*g, w.to_f32())), "n={n}");
    }
}

#[test]
fn cast_bf16_misaligned_views_take_the_scalar_path() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(4);
    let n = 4099;
    let x = random_f32_for_bf16(&mut rng, n);
    let xd = Tensor::from_host(&dev, &x, &[n]).unwrap();
    let mut yd = Tensor::from_host(&dev, &vec![bf16::NAN; n], &[n]).unwrap();
    let mut zd = Tensor::from_host(&dev, &vec![f32::NAN; n], &[n]).unwrap();
    // Offsets of 1 element: 4 bytes into the f32 side, 2 into the bf16 side.
    for (xo, yo) in [(1usize, 0usize), (0, 1), (3, 5)] {
        let len = n - xo.max(yo);
        cast_f32_bf16(&dev, &xd.view().slice(xo..xo + len), &mut yd.view_mut().slice_mut(yo..yo + len)).unwrap();
        let y = yd.to_host().unwrap();
        let ok = y[yo..yo + len].iter().zip(&x[xo..xo + len]).all(|(g, x)| same_bf16(*g, bf16::from_f32(*x)));
        assert!(ok, "f32 -> bf16 offsets ({xo}, {yo})");
        // And back, from the bf16 view at yo to the f32 view at xo.
        cast_bf16_f32(&dev, &yd.view().slice(yo..yo + len), &mut zd.view_mut().slice_mut(xo..xo + len)).unwrap();
        let z = zd.to_host().unwrap();
        assert!(
            z[xo..xo + len].iter().zip(&y[yo..yo + len]).all(|(g, w)| same_f32(*g, w.to_f32())),
            "bf16 -> f32 offsets ({yo}, {xo})"
        );
    }
}

#[test]
fn cast_bf16_rejects_length_mismatch_and_launches_nothing() {
    let dev = gpu_or_skip!();
    let xd = Tensor::from_host(&dev, &[1.0f32; 16], &[16]).unwrap();
    let sentinel = vec![bf16::from_f32(7.0); 15];
    let mut yd = Tensor::from_host(&dev, &sentinel, &[15]).unwrap();
    let err = cast_f32_bf16(&dev, &xd.view(), &mut yd.view_mut()).unwrap_err();
    assert!(matches!(err, Error::LengthMismatch { op: "cast_f32_bf16", expected: 16, got: 15, .. }), "{err}");
    assert_eq!(yd.to_host().unwrap(), sentinel, "a rejected launch must not write");
    let mut zd = Tensor::from_host(&dev, &[7.0f32; 14], &[14]).unwrap();
    let err = cast_bf16_f32(&dev, &yd.view(), &mut zd.view_mut()).unwrap_err();
    assert!(matches!(err, Error::LengthMismatch { op: "cast_bf16_f32", expected: 15, got: 14, .. }), "{err}");
    assert_eq!(zd.to_host().unwrap(), [7.0; 14]);
}
