//! unscale: gradient unscale with the inf/NaN check, flat and multi-tensor, in f32, f16
//! and bf16, exact against the CPU reference.

mod common;

use mixed_precision::backend::cpu;
use mixed_precision::half::{bf16, f16};
use mixed_precision::kernels::unscale::{unscale_check, unscale_check_multi};
use mixed_precision::rng::Rng;
use mixed_precision::{Element, Error, Tensor};

use common::{same_bf16, same_f16, same_f32};

const LENGTHS: &[usize] = &[0, 1, 7, 8, 9, 1023, 65537, (1 << 20) + 3];
const SCALE: f32 = 1024.0;

fn grads<G: Element>(rng: &mut Rng, n: usize) -> Vec<G> {
    (0..n).map(|_| G::from_f32(rng.normal() * 8.0)).collect()
}

fn same<G: Element>(a: G, b: G) -> bool {
    same_f32(a.to_f32(), b.to_f32()) && bytemuck::bytes_of(&a) == bytemuck::bytes_of(&b)
}

#[test]
fn cpu_reference_raises_only_on_nonfinite() {
    let mut found = 0.0;
    let mut g = vec![1.0f32, -2.0, 65504.0, 3e38];
    cpu::unscale_check(&mut g, Some(4.0), &mut found);
    assert_eq!(g, vec![0.25, -0.5, 16376.0, 7.5e37]);
    assert_eq!(found, 0.0);
    for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
        let mut found = 0.0;
        let mut g = vec![1.0f32, bad, 2.0];
        cpu::unscale_check(&mut g, None, &mut found);
        assert_eq!(found, 1.0, "{bad}");
        assert_eq!(g[0], 1.0, "check-only must not write");
    }
    // f16: the product is rounded back to f16; the flag is never cleared.
    let mut found = 1.0;
    let mut h = vec![f16::from_f32(3.0)];
    cpu::unscale_check(&mut h, Some(2.0), &mut found);
    assert_eq!(h[0], f16::from_f32(1.5));
    assert_eq!(found, 1.0);
}

fn sweep<G: Element>(test: &str, seed: u64) {
    sweep_scale::<G>(test, seed, SCALE);
}

fn sweep_scale<G: Element>(test: &str, seed: u64, scale_value: f32) {
    let Some(dev) = common::gpu(test) else { return };
    let mut rng = Rng::new(seed);
    let scale = Tensor::from_host(&dev, &[scale_value], &[1]).unwrap();
    for &n in LENGTHS {
        for unscale in [true, false] {
            let g = grads::<G>(&mut rng, n);
            let mut want = g.clone();
            let mut want_found = 0.0;
            cpu::unscale_check(&mut want, unscale.then_some(scale_value), &mut want_found);
            let mut gd = Tensor::from_host(&dev, &g, &[n]).unwrap();
            let mut found = Tensor::from_host(&dev, &[0.0f32], &[1]).unwrap();
            let s = scale.view();
            unscale_check(&dev, &mut gd.view_mut(), unscale.then_some(&s), &mut found.view_mut()).unwrap();
            let got = gd.to_host().unwrap();
            assert!(got.iter().zip(&want).all(|(a, b)| same(*a, *b)), "n={n} unscale={unscale}");
            assert_eq!(found.to_host().unwrap(), [0.0], "clean range raised found_inf, n={n}");
        }
    }
}

#[test]
fn unscale_check_f32_matches_cpu_over_lengths() {
    sweep::<f32>("unscale::unscale_check_f32_matches_cpu_over_lengths", 1);
}

#[test]
fn unscale_check_f16_matches_cpu_over_lengths() {
    sweep::<f16>("unscale::unscale_check_f16_matches_cpu_over_lengths", 2);
}

fn planted<G: Element>(test: &str) {
    let Some(dev) = common::gpu(test) else { return };
    // Emulator: 2^16 + 3 (36 launches each); still many blocks, the vector body and a 3-element tail.
    let n = common::size_for(&dev, (1 << 20) + 3, (1 << 16) + 3);
    let mut rng = Rng::new(9);
    let clean = grads::<G>(&mut rng, n);
    let scale = Tensor::from_host(&dev, &[SCALE], &[1]).unwrap();
    for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
        for at in [0, n / 2 + 1, n - 1] {
            for unscale in [true, false] {
                let mut g = clean.clone();
                g[at] = G::from_f32(bad);
                let mut gd = Tensor::from_host(&dev, &g, &[n]).unwrap();
                let mut found = Tensor::from_host(&dev, &[0.0f32], &[1]).unwrap();
                let s = scale.view();
                unscale_check(&dev, &mut gd.view_mut(), unscale.then_some(&s), &mut found.view_mut()).unwrap();
                assert_eq!(found.to_host().unwrap(), [1.0], "{bad} at {at} not found (unscale={unscale})");
            }
        }
    }
}

#[test]
fn unscale_check_f32_finds_planted_inf_and_nan() {
    planted::<f32>("unscale::unscale_check_f32_finds_planted_inf_and_nan");
}

#[test]
fn unscale_check_f16_finds_planted_inf_and_nan() {
    planted::<f16>("unscale::unscale_check_f16_finds_planted_inf_and_nan");
}

#[test]
fn unscale_check_multi_matches_flat_reference() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(5);
    // 70 tensors (more than one launch holds) of awkward sizes, some over many chunks.
    let lens: Vec<usize> = (0..70).map(|i| if i % 10 == 3 { 200_003 } else { rng.below(3000) as usize }).collect();
    let scale = Tensor::from_host(&dev, &[SCALE], &[1]).unwrap();
    for plant in [None, Some(69usize)] {
        let mut host: Vec<Vec<f32>> = lens.iter().map(|&n| grads::<f32>(&mut rng, n)).collect();
        if let Some(t) = plant {
            let last = host[t].len() - 1;
            host[t][last] = f32::NAN;
        }
        let mut dev_t: Vec<Tensor<f32>> =
            host.iter().map(|g| Tensor::from_host(&dev, g, &[g.len()]).unwrap()).collect();
        let mut found = Tensor::from_host(&dev, &[0.0f32], &[1]).unwrap();
        let mut views: Vec<_> = dev_t.iter_mut().map(|t| t.view_mut()).collect();
        unscale_check_multi(&dev, &mut views, Some(&scale.view()), &mut found.view_mut()).unwrap();
        drop(views);
        let mut want_found = 0.0;
        for (t, g) in dev_t.iter().zip(host.iter_mut()) {
            cpu::unscale_check(g, Some(SCALE), &mut want_found);
            assert!(t.to_host().unwrap().iter().zip(g.iter()).all(|(a, b)| same_f32(*a, *b)));
        }
        assert_eq!(found.to_host().unwrap()[0], want_found, "plant {plant:?}");
    }
}

#[test]
fn unscale_check_multi_f16_check_only_writes_nothing() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(6);
    let host: Vec<Vec<f16>> = [5usize, 70_000, 0, 9].iter().map(|&n| grads::<f16>(&mut rng, n)).collect();
    let mut dev_t: Vec<Tensor<f16>> = host.iter().map(|g| Tensor::from_host(&dev, g, &[g.len()]).unwrap()).collect();
    let mut found = Tensor::from_host(&dev, &[0.0f32], &[1]).unwrap();
    let mut views: Vec<_> = dev_t.iter_mut().map(|t| t.view_mut()).collect();
    unscale_check_multi(&dev, &mut views, None, &mut found.view_mut()).unwrap();
    drop(views);
    for (t, g) in dev_t.iter().zip(&host) {
        assert!(t.to_host().unwrap().iter().zip(g).all(|(a, b)| same_f16(*a, *b)));
    }
    assert_eq!(found.to_host().unwrap(), [0.0]);
}

#[test]
fn unscale_check_rejects_bad_input_before_launch() {
    let dev = gpu_or_skip!();
    let mut g = Tensor::from_host(&dev, &[f32::NAN; 8], &[8]).unwrap();
    let two = Tensor::from_host(&dev, &[1.0f32, 1.0], &[2]).unwrap();
    let mut found = Tensor::from_host(&dev, &[0.0f32], &[1]).unwrap();
    let err = unscale_check(&dev, &mut g.view_mut(), Some(&two.view()), &mut found.view_mut()).unwrap_err();
    assert!(matches!(err, Error::LengthMismatch { what: "scale", expected: 1, got: 2, .. }), "{err}");
    let mut found2 = Tensor::from_host(&dev, &[0.0f32, 0.0], &[2]).unwrap();
    assert!(unscale_check(&dev, &mut g.view_mut(), None, &mut found2.view_mut()).is_err());
    assert_eq!(found.to_host().unwrap(), [0.0], "a rejected call must launch nothing");
}

// ----------------------------------------------------------------------------
// bf16 gradients (issue 19). The loss scale is a power of two (1024) in training, which
// bf16 divides exactly; the sweeps also use 1000, where `g * (f32)(1 / 1000)` must round
// to bf16 as the CPU reference does (to nearest even, not truncated).

/// A scale whose inverse is not a power of two: every product rounds.
const ROUNDING_SCALE: f32 = 1000.0;

#[test]
fn unscale_check_bf16_matches_cpu_over_lengths() {
    sweep::<bf16>("unscale::unscale_check_bf16_matches_cpu_over_lengths", 3);
    sweep_scale::<bf16>("unscale::unscale_check_bf16_matches_cpu_over_lengths", 4, ROUNDING_SCALE);
}

/// Against f64: `(f32)(1 / s)` and the f32 product each err by at most 2^-24 relative,
/// the bf16 rounding by at most its unit roundoff 2^-8 (half an ulp of 8 significant
/// bits), so |got - g / s| <= (2^-8 + 2^-22) |g / s| (2^-22 covers the two f32 roundings
/// and the double rounding with room). The gradients are normal, so are the results.
#[test]
fn unscale_check_bf16_within_half_an_ulp_of_f64() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(10);
    let n = 65537;
    let g = grads::<bf16>(&mut rng, n);
    for s in [ROUNDING_SCALE, 3.0, SCALE] {
        let scale = Tensor::from_host(&dev, &[s], &[1]).unwrap();
        let mut gd = Tensor::from_host(&dev, &g, &[n]).unwrap();
        let mut found = Tensor::from_host(&dev, &[0.0f32], &[1]).unwrap();
        unscale_check(&dev, &mut gd.view_mut(), Some(&scale.view()), &mut found.view_mut()).unwrap();
        let got = gd.to_host().unwrap();
        let tol = 2f64.powi(-8) + 2f64.powi(-22);
        let mut rounded = 0;
        for i in 0..n {
            let exact = g[i].to_f64() / s as f64;
            let err = (got[i].to_f64() - exact).abs();
            assert!(err <= tol * exact.abs(), "scale {s} i={i}: {} / {s} = {} vs {exact:e}", g[i], got[i]);
            rounded += (err != 0.0) as usize;
        }
        assert!(s == SCALE || rounded > n / 2, "scale {s}: only {rounded} of {n} results needed rounding");
        assert!(s != SCALE || rounded == 0, "scale {s}: a power of two divides bf16 exactly");
        assert_eq!(found.to_host().unwrap(), [0.0]);
    }
}

#[test]
fn unscale_check_bf16_finds_planted_inf_and_nan() {
    planted::<bf16>("unscale::unscale_check_bf16_finds_planted_inf_and_nan");
}

#[test]
fn unscale_check_multi_bf16_matches_flat_reference() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(7);
    // 70 tensors (more than one launch holds) of awkward sizes, some over many chunks.
    let lens: Vec<usize> = (0..70).map(|i| if i % 10 == 3 { 200_003 } else { rng.below(3000) as usize }).collect();
    let scale = Tensor::from_host(&dev, &[ROUNDING_SCALE], &[1]).unwrap();
    for plant in [None, Some((69usize, f32::NAN)), Some((13, f32::NEG_INFINITY))] {
        let mut host: Vec<Vec<bf16>> = lens.iter().map(|&n| grads::<bf16>(&mut rng, n)).collect();
        if let Some((t, bad)) = plant {
            let last = host[t].len() - 1;
            host[t][last] = bf16::from_f32(bad);
        }
        let mut dev_t: Vec<Tensor<bf16>> =
            host.iter().map(|g| Tensor::from_host(&dev, g, &[g.len()]).unwrap()).collect();
        let mut found = Tensor::from_host(&dev, &[0.0f32], &[1]).unwrap();
        let mut views: Vec<_> = dev_t.iter_mut().map(|t| t.view_mut()).collect();
        unscale_check_multi(&dev, &mut views, Some(&scale.view()), &mut found.view_mut()).unwrap();
        drop(views);
        let mut want_found = 0.0;
        for (i, (t, g)) in dev_t.iter().zip(host.iter_mut()).enumerate() {
            cpu::unscale_check(g, Some(ROUNDING_SCALE), &mut want_found);
            assert!(t.to_host().unwrap().iter().zip(g.iter()).all(|(a, b)| same_bf16(*a, *b)), "tensor {i}");
        }
        assert_eq!(found.to_host().unwrap()[0], want_found, "plant {plant:?}");
        assert_eq!(want_found, plant.map_or(0.0, |_| 1.0), "plant {plant:?}");
    }
}

#[test]
fn unscale_check_multi_bf16_check_only_writes_nothing() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(8);
    for plant in [false, true] {
        let mut host: Vec<Vec<bf16>> = [5usize, 70_000, 0, 9].iter().map(|&n| grads::<bf16>(&mut rng, n)).collect();
        if plant {
            host[1][69_999] = bf16::INFINITY;
        }
        let mut dev_t: Vec<Tensor<bf16>> =
            host.iter().map(|g| Tensor::from_host(&dev, g, &[g.len()]).unwrap()).collect();
        let mut found = Tensor::from_host(&dev, &[0.0f32], &[1]).unwrap();
        let mut views: Vec<_> = dev_t.iter_mut().map(|t| t.view_mut()).collect();
        unscale_check_multi(&dev, &mut views, None, &mut found.view_mut()).unwrap();
        drop(views);
        for (t, g) in dev_t.iter().zip(&host) {
            assert!(t.to_host().unwrap().iter().zip(g).all(|(a, b)| same_bf16(*a, *b)), "plant {plant}");
        }
        assert_eq!(found.to_host().unwrap(), [if plant { 1.0 } else { 0.0 }], "plant {plant}");
    }
}
