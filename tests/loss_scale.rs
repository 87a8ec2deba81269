//! loss_scale: the device-side scale update against PyTorch's `_amp_update_scale_` rule.

mod common;

use mixed_precision::backend::cpu;
use mixed_precision::kernels::loss_scale::{update_scale, ScaleRule};
use mixed_precision::rng::Rng;
use mixed_precision::{Error, Tensor};

/// The rule as torch/csrc states it, written out independently of the crate, in f64
/// (every product involved is exact: powers of two times 2 or 0.5).
fn reference(scale: &mut f64, tracker: &mut i32, found_inf: bool, rule: &ScaleRule) {
    if found_inf {
        *scale *= rule.backoff;
        *tracker = 0;
    } else if *tracker + 1 == rule.growth_interval {
        if ((*scale * rule.growth) as f32).is_finite() {
            *scale *= rule.growth;
        }
        *tracker = 0;
    } else {
        *tracker += 1;
    }
}

/// 10,000 steps shaped like a real run: frequent overflows while the scale settles
/// (the first 300 steps, one in three), then rare ones (one in 2,500), so the scale both
/// backs off and grows under every rule below, including the default interval of 2000.
fn found_inf_sequence() -> Vec<bool> {
    let mut rng = Rng::new(2000);
    (0..10_000).map(|i| rng.below(if i < 300 { 3 } else { 2500 }) == 0).collect()
}

const RULES: &[ScaleRule] = &[
    ScaleRule { growth: 2.0, backoff: 0.5, growth_interval: 2000 },
    ScaleRule { growth: 2.0, backoff: 0.5, growth_interval: 7 },
    ScaleRule { growth: 4.0, backoff: 0.25, growth_interval: 1 },
];

#[test]
fn cpu_update_scale_follows_the_rule_for_10000_steps() {
    for rule in RULES {
        let (mut s, mut t) = (65536.0f32, 0);
        let (mut rs, mut rt) = (65536.0f64, 0);
        let (mut grew, mut backed_off) = (0, 0);
        for (i, &inf) in found_inf_sequence().iter().enumerate() {
            let before = s;
            cpu::update_scale(&mut s, &mut t, if inf { 1.0 } else { 0.0 }, rule);
            reference(&mut rs, &mut rt, inf, rule);
            assert_eq!((s as f64, t), (rs, rt), "step {i}, {rule:?}");
            grew += (s > before) as u32;
            backed_off += (s < before) as u32;
        }
        assert!(grew > 0 && backed_off > 0, "{rule:?}: the sequence must exercise both branches");
    }
}

#[test]
fn cpu_growth_that_would_overflow_is_not_applied() {
    let rule = ScaleRule { growth: 2.0, backoff: 0.5, growth_interval: 1 };
    let (mut s, mut t) = (2f32.powi(127), 0);
    cpu::update_scale(&mut s, &mut t, 0.0, &rule);
    assert_eq!((s, t), (2f32.powi(127), 0), "2^128 is inf in f32: keep the scale, reset the tracker");
}

#[test]
fn scale_rule_rejects_invalid_settings() {
    for bad in [
        ScaleRule { growth: 1.0, ..Default::default() },
        ScaleRule { growth: f64::INFINITY, ..Default::default() },
        ScaleRule { backoff: 1.0, ..Default::default() },
        ScaleRule { backoff: 0.0, ..Default::default() },
        ScaleRule { growth_interval: 0, ..Default::default() },
    ] {
        assert!(matches!(bad.validate("test"), Err(Error::InvalidArgument { .. })), "{bad:?}");
    }
    assert!(ScaleRule::default().validate("test").is_ok());
}

#[test]
fn update_scale_matches_rule_for_10000_steps() {
    let dev = gpu_or_skip!();
    let seq = found_inf_sequence();
    for rule in RULES {
        let mut scale = Tensor::from_host(&dev, &[65536.0f32], &[1]).unwrap();
        let mut tracker_i = dev.stream().alloc_zeros::<i32>(1).unwrap();
        let (mut rs, mut rt) = (65536.0f64, 0);
        // All flags uploaded once; each step points at its own element.
        let flags: Vec<f32> = seq.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
        let flags = Tensor::from_host(&dev, &flags, &[flags.len()]).unwrap();
        for (i, &inf) in seq.iter().enumerate() {
            update_scale(
                &dev,
                &mut scale.view_mut(),
                &mut tracker_i.as_view_mut(),
                &flags.view().slice(i..i + 1),
                rule,
            )
            .unwrap();
            reference(&mut rs, &mut rt, inf, rule);
            let got_t = dev.stream().clone_dtoh(&tracker_i).unwrap();
            assert_eq!((scale.to_host().unwrap()[0], got_t[0]), (rs as f32, rt), "step {i}, {rule:?}");
        }
    }
}

#[test]
fn update_scale_does_not_grow_into_inf() {
    let dev = gpu_or_skip!();
    let rule = ScaleRule { growth: 2.0, backoff: 0.5, growth_interval: 1 };
    let mut scale = Tensor::from_host(&dev, &[2f32.powi(127)], &[1]).unwrap();
    let mut tracker = dev.stream().clone_htod(&[0i32]).unwrap();
    let clean = Tensor::from_host(&dev, &[0.0f32], &[1]).unwrap();
    update_scale(&dev, &mut scale.view_mut(), &mut tracker.as_view_mut(), &clean.view(), &rule).unwrap();
    assert_eq!(scale.to_host().unwrap(), [2f32.powi(127)]);
    assert_eq!(dev.stream().clone_dtoh(&tracker).unwrap(), [0]);
}
