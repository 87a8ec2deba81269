//! adam: AdamW / Adam on fp32 master weights with the fp16 or bf16 copy, against an f64
//! reference of the same math, and the skip on found_inf; pure-bf16 weights with seeded
//! stochastic rounding against the CPU reference.

mod common;

use mixed_precision::backend::cpu;
use mixed_precision::half::{bf16, f16};
use mixed_precision::kernels::adam::{
    adamw_pure, adamw_step, adamw_step_multi, clip_grad_norm, clip_partials_len, AdamConfig, AdamMode, AdamPureTensors,
    AdamScalars, AdamTensors, ClipBuffers, LrSchedule,
};
use mixed_precision::rng::Rng;
use mixed_precision::{Element, Error, Half, Tensor};

const STEPS: usize = 1000;
const SCALE: f32 = 4096.0;

/// State of one parameter range.
#[derive(Clone, PartialEq, Debug)]
struct State {
    p: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    step: f32,
}

impl State {
    fn new(rng: &mut Rng, n: usize) -> Self {
        State { p: rng.uniform_vec(n, -1.0, 1.0), m: vec![0.0; n], v: vec![0.0; n], step: 0.0 }
    }
}

/// The update in f64 from the same f32 state: the exact value the f32 kernel rounds.
#[allow(clippy::needless_range_loop)] // five arrays in lockstep read clearer by index
fn reference_f64(s: &State, g: &[f32], scale: f32, cfg: &AdamConfig) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let t = s.step as f64 + 1.0;
    let (mut p, mut m, mut v) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..s.p.len() {
        let mut gi = g[i] as f64 / scale as f64;
        let mut pi = s.p[i] as f64;
        match cfg.mode {
            AdamMode::AdamW => pi -= cfg.lr * cfg.weight_decay * pi,
            AdamMode::Adam => gi += cfg.weight_decay * pi,
        }
        let mi = cfg.beta1 * s.m[i] as f64 + (1.0 - cfg.beta1) * gi;
        let vi = cfg.beta2 * s.v[i] as f64 + (1.0 - cfg.beta2) * gi * gi;
        let denom = vi.sqrt() / (1.0 - cfg.beta2.powf(t)).sqrt() + cfg.eps;
        pi -= cfg.lr / (1.0 - cfg.beta1.powf(t)) * mi / denom;
        p.push(pi);
        m.push(mi);
        v.push(vi);
    }
    (p, m, v)
}

/// Normwise relative error of f32 results against f64 values.
fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    let num: f64 = got.iter().zip(want).map(|(g, w)| (*g as f64 - w).powi(2)).sum();
    let den: f64 = want.iter().map(|w| w * w).sum();
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

fn configs() -> [AdamConfig; 2] {
    [
        AdamConfig { lr: 1e-3, weight_decay: 1e-2, ..AdamConfig::default() },
        AdamConfig {
            lr: 3e-3,
            beta1: 0.8,
            beta2: 0.99,
            eps: 1e-6,
            weight_decay: 1e-3,
            mode: AdamMode::Adam,
            ..AdamConfig::default()
        },
    ]
}

/// Scaled gradients as G: what a scaled backward hands the optimizer.
fn scaled_grads<G: Element>(rng: &mut Rng, n: usize) -> Vec<G> {
    (0..n).map(|_| G::from_f32(rng.normal() * 1e-3 * SCALE)).collect()
}

/// Runs STEPS steps through `step` and checks each against the f64 reference from the
/// same starting state: master weights and moments within 1e-6 relative.
fn thousand_steps<G: Element>(name: &str, mut step: impl FnMut(&mut State, &[G], &AdamConfig)) {
    for cfg in configs() {
        let mut rng = Rng::new(77);
        let n = 1031; // a prime: the scalar tail runs too
        let mut s = State::new(&mut rng, n);
        for k in 0..STEPS {
            let g = scaled_grads::<G>(&mut rng, n);
            let g32: Vec<f32> = g.iter().map(|x| x.to_f32()).collect();
            let (p, m, v) = reference_f64(&s, &g32, SCALE, &cfg);
            step(&mut s, &g, &cfg);
            assert_eq!(s.step, k as f32 + 1.0, "{name}: step count");
            for (what, got, want) in [("p", &s.p, &p), ("m", &s.m, &m), ("v", &s.v, &v)] {
                let e = rel_err(got, want);
                assert!(e <= 1e-6, "{name} {:?}: step {k}: {what} relative error {e:e}", cfg.mode);
            }
        }
    }
}

#[test]
fn cpu_reference_within_1e6_of_f64_for_1000_steps() {
    thousand_steps::<f32>("cpu f32 grads", |s, g, cfg| {
        cpu::adam_count_step(&mut s.step, Some(0.0));
        cpu::adamw_update(&mut s.p, g, &mut s.m, &mut s.v, None::<&mut [f16]>, s.step, Some(SCALE), Some(0.0), cfg)
            .unwrap();
    });
    thousand_steps::<f16>("cpu f16 grads", |s, g, cfg| {
        cpu::adam_count_step(&mut s.step, None);
        cpu::adamw_update(&mut s.p, g, &mut s.m, &mut s.v, None::<&mut [f16]>, s.step, Some(SCALE), None, cfg).unwrap();
    });
}

#[test]
fn cpu_reference_skips_on_found_inf() {
    let mut rng = Rng::new(1);
    let mut s = State::new(&mut rng, 64);
    s.m = rng.uniform_vec(64, -1.0, 1.0);
    let before = s.clone();
    let g = scaled_grads::<f32>(&mut rng, 64);
    let mut copy = vec![f16::ZERO; 64];
    cpu::adam_count_step(&mut s.step, Some(1.0));
    cpu::adamw_update(&mut s.p, &g, &mut s.m, &mut s.v, Some(&mut copy), 1.0, None, Some(1.0), &AdamConfig::default())
        .unwrap();
    assert_eq!(s, before);
    assert!(copy.iter().all(|c| *c == f16::ZERO));
}

/// One GPU step over the whole range, state round-tripped through the host.
fn gpu_step<G: Element, C: Half>(
    dev: &std::sync::Arc<mixed_precision::Device>,
    s: &mut State,
    g: &[G],
    cfg: &AdamConfig,
    found_inf: f32,
) -> Vec<C> {
    let n = s.p.len();
    let mut p = Tensor::from_host(dev, &s.p, &[n]).unwrap();
    let gd = Tensor::from_host(dev, g, &[n]).unwrap();
    let mut m = Tensor::from_host(dev, &s.m, &[n]).unwrap();
    let mut v = Tensor::from_host(dev, &s.v, &[n]).unwrap();
    let mut copy = Tensor::from_host(dev, &vec![C::from_f32(f32::NAN); n], &[n]).unwrap();
    let mut step = Tensor::from_host(dev, &[s.step], &[1]).unwrap();
    let scale = Tensor::from_host(dev, &[SCALE], &[1]).unwrap();
    let found = Tensor::from_host(dev, &[found_inf], &[1]).unwrap();
    {
        let mut t = AdamTensors {
            params: p.view_mut(),
            grads: gd.view(),
            m: m.view_mut(),
            v: v.view_mut(),
            copy: Some(copy.view_mut()),
        };
        let mut sc = AdamScalars { step: step.view_mut(), scale: Some(scale.view()), found_inf: Some(found.view()) };
        adamw_step(dev, &mut t, &mut sc, cfg).unwrap();
    }
    *s = State {
        p: p.to_host().unwrap(),
        m: m.to_host().unwrap(),
        v: v.to_host().unwrap(),
        step: step.to_host().unwrap()[0],
    };
    copy.to_host().unwrap()
}

/// The device-side learning-rate schedule (issue 20): nanoGPT's warmup + cosine, derived
/// from the step count the kernel reads. Against the CPU reference bit for bit, step by
/// step through warmup, the cosine and the floor, with one skipped step (found_inf) that
/// must not advance it: the step after the skip uses the lr the skipped one would have.
#[test]
fn lr_schedule_on_the_device_matches_cpu_and_skips() {
    let dev = gpu_or_skip!();
    let sched = LrSchedule::WarmupCosine { warmup_steps: 3, decay_steps: 9, min_lr: 1e-4 };
    let cfg = AdamConfig { lr: 1e-2, schedule: sched, ..AdamConfig::default() };
    // The lrs themselves: warmup 1/3, 2/3, 1 of lr at steps 1-3, then down to min_lr.
    let lrs: Vec<f64> = (1..=12).map(|s| cpu::scheduled_lr(&cfg, s as f32)).collect();
    for (s, want) in [(1, 1e-2 / 3.0), (2, 2e-2 / 3.0), (3, 1e-2)] {
        assert!((lrs[s - 1] - want).abs() <= 1e-18, "warmup step {s}: {}", lrs[s - 1]);
    }
    assert_eq!(lrs[3], 1e-2, "the cosine starts at lr");
    assert!((lrs[6] - (1e-4 + 0.5 * (1e-2 - 1e-4))).abs() <= 1e-17, "halfway: {}", lrs[6]);
    assert!(lrs[3..10].windows(2).all(|w| w[1] < w[0]), "{lrs:?}");
    assert_eq!(&lrs[10..], &[1e-4, 1e-4]);

    let mut rng = Rng::new(9);
    let n = 517;
    let mut gpu = State::new(&mut rng, n);
    let mut host = gpu.clone();
    for k in 0..13 {
        let g = scaled_grads::<f32>(&mut rng, n);
        let skip = if k == 5 { 1.0 } else { 0.0 };
        gpu_step::<_, f16>(&dev, &mut gpu, &g, &cfg, skip);
        cpu::adam_count_step(&mut host.step, Some(skip));
        cpu::adamw_update(
            &mut host.p,
            &g,
            &mut host.m,
            &mut host.v,
            None::<&mut [f16]>,
            host.step,
            Some(SCALE),
            Some(skip),
            &cfg,
        )
        .unwrap();
        assert_eq!(gpu.step, host.step, "step {k}: the count (a skipped step does not advance it)");
        assert_eq!(gpu, host, "step {k}: weights and moments bit for bit");
    }
    assert_eq!(gpu.step, 12.0, "13 steps, one skipped");
}

#[test]
fn adamw_step_f32_within_1e6_of_f64_for_1000_steps() {
    let dev = gpu_or_skip!();
    thousand_steps::<f32>("gpu f32 grads", |s, g, cfg| {
        let copy = gpu_step::<_, f16>(&dev, s, g, cfg, 0.0);
        assert!(copy.iter().zip(&s.p).all(|(c, p)| c.to_bits() == f16::from_f32(*p).to_bits()), "copy != cast(master)");
    });
}

#[test]
fn adamw_step_f16_within_1e6_of_f64_for_1000_steps() {
    let dev = gpu_or_skip!();
    thousand_steps::<f16>("gpu f16 grads", |s, g, cfg| {
        let copy = gpu_step::<_, f16>(&dev, s, g, cfg, 0.0);
        assert!(copy.iter().zip(&s.p).all(|(c, p)| c.to_bits() == f16::from_f32(*p).to_bits()), "copy != cast(master)");
    });
}

#[test]
fn adamw_step_matches_cpu_reference() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(8);
    for n in [1, 7, 8, 9, 1023, 65537] {
        for cfg in configs() {
            let mut s = State::new(&mut rng, n);
            let mut c = s.clone();
            for _ in 0..5 {
                let g = scaled_grads::<f32>(&mut rng, n);
                gpu_step::<_, f16>(&dev, &mut s, &g, &cfg, 0.0);
                cpu::adam_count_step(&mut c.step, Some(0.0));
                cpu::adamw_update(
                    &mut c.p,
                    &g,
                    &mut c.m,
                    &mut c.v,
                    None::<&mut [f16]>,
                    c.step,
                    Some(SCALE),
                    Some(0.0),
                    &cfg,
                )
                .unwrap();
            }
            // The same operations in the same precisions: only pow() may differ by an ulp.
            let e = rel_err(&s.p, &c.p.iter().map(|&x| x as f64).collect::<Vec<_>>());
            assert!(e <= 1e-7, "n={n}: gpu vs cpu {e:e}");
            assert_eq!(s.step, c.step);
        }
    }
}

#[test]
fn adamw_step_with_found_inf_changes_nothing() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(3);
    let n = 4099;
    let mut s = State::new(&mut rng, n);
    s.m = rng.uniform_vec(n, -1.0, 1.0);
    s.v = rng.uniform_vec(n, 0.0, 1.0);
    s.step = 17.0;
    let before = s.clone();
    let g = scaled_grads::<f32>(&mut rng, n);
    let copy = gpu_step::<_, f16>(&dev, &mut s, &g, &AdamConfig::default(), 1.0);
    assert_eq!(s.step, 17.0, "the step count must not advance");
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!((bits(&s.p), bits(&s.m), bits(&s.v)), (bits(&before.p), bits(&before.m), bits(&before.v)));
    assert!(copy.iter().all(|c| c.is_nan()), "the fp16 copy must not be written");
}

#[test]
fn adamw_step_multi_equals_flat_per_tensor() {
    multi_equals_flat::<f32, f16>("adam::adamw_step_multi_equals_flat_per_tensor", 12);
}

/// adamw_step_multi over 40 tensors against adamw_step on each: bit for bit.
fn multi_equals_flat<G: Element, C: Half>(test: &str, seed: u64) {
    let Some(dev) = common::gpu(test) else { return };
    let mut rng = Rng::new(seed);
    // 40 tensors: more than one launch carries; one spans several chunks.
    let lens: Vec<usize> = (0..40).map(|i| if i == 5 { 150_001 } else { 1 + rng.below(2000) as usize }).collect();
    let cfg = configs()[0];
    let states: Vec<State> = lens.iter().map(|&n| State::new(&mut rng, n)).collect();
    let grads: Vec<Vec<G>> = lens.iter().map(|&n| scaled_grads::<G>(&mut rng, n)).collect();
    // Flat, one tensor at a time.
    let mut flat = states.clone();
    let mut flat_copies = Vec::new();
    for (s, g) in flat.iter_mut().zip(&grads) {
        flat_copies.push(gpu_step::<G, C>(&dev, s, g, &cfg, 0.0));
    }
    // Multi, all at once.
    let up = |v: &Vec<f32>| Tensor::from_host(&dev, v, &[v.len()]).unwrap();
    let mut p: Vec<_> = states.iter().map(|s| up(&s.p)).collect();
    let mut m: Vec<_> = states.iter().map(|s| up(&s.m)).collect();
    let mut v: Vec<_> = states.iter().map(|s| up(&s.v)).collect();
    let g: Vec<_> = grads.iter().map(|v| Tensor::from_host(&dev, v, &[v.len()]).unwrap()).collect();
    let mut c: Vec<_> = lens.iter().map(|&n| Tensor::<C>::zeros(&dev, &[n]).unwrap()).collect();
    let mut step = Tensor::from_host(&dev, &[0.0f32], &[1]).unwrap();
    let scale = Tensor::from_host(&dev, &[SCALE], &[1]).unwrap();
    {
        let mut ts: Vec<_> = p
            .iter_mut()
            .zip(&g)
            .zip(m.iter_mut())
            .zip(v.iter_mut())
            .zip(c.iter_mut())
            .map(|((((p, g), m), v), c)| AdamTensors {
                params: p.view_mut(),
                grads: g.view(),
                m: m.view_mut(),
                v: v.view_mut(),
                copy: Some(c.view_mut()),
            })
            .collect();
        let mut sc = AdamScalars { step: step.view_mut(), scale: Some(scale.view()), found_inf: None };
        adamw_step_multi(&dev, &mut ts, &mut sc, &cfg).unwrap();
    }
    assert_eq!(step.to_host().unwrap(), [1.0]);
    for i in 0..lens.len() {
        assert_eq!(p[i].to_host().unwrap(), flat[i].p, "tensor {i}");
        assert_eq!(m[i].to_host().unwrap(), flat[i].m, "tensor {i}");
        assert!(bits(&c[i].to_host().unwrap()) == bits(&flat_copies[i]), "tensor {i}: copy");
    }
}

#[test]
fn adamw_step_rejects_bad_input_before_any_launch() {
    let dev = gpu_or_skip!();
    let mut p = Tensor::from_host(&dev, &[1.0f32; 8], &[8]).unwrap();
    let g = Tensor::from_host(&dev, &[1.0f32; 7], &[7]).unwrap();
    let mut m = Tensor::<f32>::zeros(&dev, &[8]).unwrap();
    let mut v = Tensor::<f32>::zeros(&dev, &[8]).unwrap();
    let mut step = Tensor::from_host(&dev, &[0.0f32], &[1]).unwrap();
    {
        let mut t: AdamTensors<_, f16> =
            AdamTensors { params: p.view_mut(), grads: g.view(), m: m.view_mut(), v: v.view_mut(), copy: None };
        let mut sc = AdamScalars { step: step.view_mut(), scale: None, found_inf: None };
        let err = adamw_step(&dev, &mut t, &mut sc, &AdamConfig::default()).unwrap_err();
        assert!(
            matches!(err, Error::LengthMismatch { op: "adamw_step_f32", what: "grads", expected: 8, got: 7 }),
            "{err}"
        );
    }
    let g = Tensor::from_host(&dev, &[1.0f32; 8], &[8]).unwrap();
    for bad in [
        AdamConfig { lr: f64::NAN, ..AdamConfig::default() },
        AdamConfig { beta1: 1.0, ..AdamConfig::default() },
        AdamConfig { eps: 0.0, ..AdamConfig::default() },
        AdamConfig { weight_decay: -1.0, ..AdamConfig::default() },
    ] {
        let mut t: AdamTensors<_, f16> =
            AdamTensors { params: p.view_mut(), grads: g.view(), m: m.view_mut(), v: v.view_mut(), copy: None };
        let mut sc = AdamScalars { step: step.view_mut(), scale: None, found_inf: None };
        assert!(matches!(adamw_step(&dev, &mut t, &mut sc, &bad), Err(Error::InvalidArgument { .. })), "{bad:?}");
    }
    assert_eq!(step.to_host().unwrap(), [0.0], "a rejected step must not advance the count");
    assert_eq!(p.to_host().unwrap(), [1.0; 8]);
}

// ----------------------------------------------------------------------------
// bf16 (issue 19): the bf16 working copy, bf16 gradients, and pure-bf16 weights.
//
// Tolerances: the master weights and moments stay f32, so the f64 bound of the f16 tests
// (1e-6 normwise over 1000 steps) holds unchanged for bf16 gradients: they are inputs,
// exact in f32, and the reference reads the same rounded values. The copy is a single
// round-to-nearest-even of the f32 master (relative error <= 2^-8), checked bit for bit
// against half::bf16::from_f32 of the master. Against the CPU reference everything is
// bit for bit: the same operations in the same precisions; only pow() (device libdevice
// against the host libm) could differ, by an ulp of f64, which changes the f32 bias
// correction only at a rounding boundary (~2^-29 per step: not met by these seeds).
//
// The bit-for-bit tests below fail as of 4c48c27, for f16 as for bf16: nvcc contracted
// the f64 moment updates of cuda/adam.cu into fma.rn.f64 (m = fma(beta1, m, (1 - beta1) g),
// v = fma(beta2, v, (1 - beta2) g g), and Adam's g = fma(wd, p, g)) while
// cpu::adamw_update rounds the product first; about 4 in 1000 moments then round to the
// other f32 neighbour from the second step on (the f16 test above only bounds p, by 1e-7).

fn bits<T: bytemuck::Pod>(v: &[T]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

/// Bit for bit, naming the first element that differs.
fn assert_same_bits<T: Element>(what: &str, name: &str, got: &[T], want: &[T]) {
    assert_eq!(got.len(), want.len());
    let differ = |a: &T, b: &T| bytemuck::bytes_of(a) != bytemuck::bytes_of(b);
    if let Some(i) = (0..got.len()).find(|&i| differ(&got[i], &want[i])) {
        let count = got.iter().zip(want).filter(|(a, b)| differ(a, b)).count();
        panic!(
            "{what}: {name} differs from the CPU reference at {count} of {} elements, first i={i}: gpu {:e} cpu {:e}",
            got.len(),
            got[i].to_f32(),
            want[i].to_f32()
        );
    }
}

#[test]
fn cpu_reference_bf16_grads_within_1e6_of_f64_for_1000_steps() {
    thousand_steps::<bf16>("cpu bf16 grads", |s, g, cfg| {
        let mut copy = vec![bf16::NAN; s.p.len()];
        cpu::adam_count_step(&mut s.step, None);
        cpu::adamw_update(&mut s.p, g, &mut s.m, &mut s.v, Some(&mut copy), s.step, Some(SCALE), None, cfg).unwrap();
        assert!(copy.iter().zip(&s.p).all(|(c, p)| c.to_bits() == bf16::from_f32(*p).to_bits()));
    });
}

#[test]
fn adamw_step_bf16_grads_bf16_copy_within_1e6_of_f64_for_1000_steps() {
    let dev = gpu_or_skip!();
    thousand_steps::<bf16>("gpu bf16 grads", |s, g, cfg| {
        let copy = gpu_step::<_, bf16>(&dev, s, g, cfg, 0.0);
        assert!(
            copy.iter().zip(&s.p).all(|(c, p)| c.to_bits() == bf16::from_f32(*p).to_bits()),
            "bf16 copy != cast(master)"
        );
    });
}

/// Five steps on the GPU and on the CPU reference from the same state: master weights,
/// moments and the bf16 copy bit for bit, with `G` gradients.
fn bf16_copy_bit_for_bit<G: Element>(test: &str, seed: u64) {
    let Some(dev) = common::gpu(test) else { return };
    let mut rng = Rng::new(seed);
    for n in [1, 7, 8, 9, 1023, 65537] {
        for cfg in configs() {
            let mut s = State::new(&mut rng, n);
            let mut c = s.clone();
            for k in 0..5 {
                let g = scaled_grads::<G>(&mut rng, n);
                let copy = gpu_step::<G, bf16>(&dev, &mut s, &g, &cfg, 0.0);
                let mut want_copy = vec![bf16::NAN; n];
                cpu::adam_count_step(&mut c.step, Some(0.0));
                cpu::adamw_update(
                    &mut c.p,
                    &g,
                    &mut c.m,
                    &mut c.v,
                    Some(&mut want_copy),
                    c.step,
                    Some(SCALE),
                    Some(0.0),
                    &cfg,
                )
                .unwrap();
                let what = format!("{} grads n={n} {:?} step {k}", G::DTYPE, cfg.mode);
                assert_eq!(s.step, c.step, "{what}");
                assert_same_bits(&what, "m", &s.m, &c.m);
                assert_same_bits(&what, "v", &s.v, &c.v);
                assert_same_bits(&what, "master", &s.p, &c.p);
                assert_same_bits(&what, "bf16 copy", &copy, &want_copy);
                assert!(copy.iter().all(|x| x.is_finite()), "{what}: copy not written");
            }
        }
    }
}

#[test]
fn adamw_step_bf16_copy_f32_grads_matches_cpu_bit_for_bit() {
    bf16_copy_bit_for_bit::<f32>("adam::adamw_step_bf16_copy_f32_grads_matches_cpu_bit_for_bit", 13);
}

#[test]
fn adamw_step_bf16_copy_bf16_grads_matches_cpu_bit_for_bit() {
    bf16_copy_bit_for_bit::<bf16>("adam::adamw_step_bf16_copy_bf16_grads_matches_cpu_bit_for_bit", 14);
}

#[test]
fn adamw_step_bf16_with_found_inf_changes_nothing() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(15);
    let n = 4099;
    let mut s = State::new(&mut rng, n);
    s.m = rng.uniform_vec(n, -1.0, 1.0);
    s.v = rng.uniform_vec(n, 0.0, 1.0);
    s.step = 17.0;
    let before = s.clone();
    let g = scaled_grads::<bf16>(&mut rng, n);
    let copy = gpu_step::<_, bf16>(&dev, &mut s, &g, &AdamConfig::default(), 1.0);
    assert_eq!(s.step, 17.0, "the step count must not advance");
    assert!(bits(&s.p) == bits(&before.p) && bits(&s.m) == bits(&before.m) && bits(&s.v) == bits(&before.v));
    assert!(copy.iter().all(|c| c.is_nan()), "the bf16 copy must not be written");
    // The same state with found_inf clear does move: the skip is what kept it.
    let copy = gpu_step::<_, bf16>(&dev, &mut s, &g, &AdamConfig::default(), 0.0);
    assert_eq!(s.step, 18.0);
    assert!(bits(&s.p) != bits(&before.p) && copy.iter().all(|c| c.is_finite()));
}

#[test]
fn adamw_step_multi_bf16_equals_flat_per_tensor() {
    multi_equals_flat::<bf16, bf16>("adam::adamw_step_multi_bf16_equals_flat_per_tensor", 16);
}

/// State of one pure-bf16 range: the bf16 weights are the only copy.
#[derive(Clone, PartialEq, Debug)]
struct PureState {
    p: Vec<bf16>,
    m: Vec<f32>,
    v: Vec<f32>,
    step: f32,
}

impl PureState {
    fn new(rng: &mut Rng, n: usize) -> Self {
        let p = (0..n).map(|_| bf16::from_f32(rng.uniform_in(-1.0, 1.0))).collect();
        PureState { p, m: vec![0.0; n], v: vec![0.0; n], step: 0.0 }
    }

    fn bits(&self) -> (Vec<u8>, Vec<u8>, Vec<u8>, f32) {
        (bits(&self.p), bits(&self.m), bits(&self.v), self.step)
    }
}

/// One adamw_pure step on the GPU, state round-tripped through the host.
fn pure_gpu_step<G: Element>(
    dev: &std::sync::Arc<mixed_precision::Device>,
    s: &mut PureState,
    g: &[G],
    scale: Option<f32>,
    found_inf: f32,
    cfg: &AdamConfig,
    seed: u64,
) {
    let n = s.p.len();
    let mut p = Tensor::from_host(dev, &s.p, &[n]).unwrap();
    let gd = Tensor::from_host(dev, g, &[n]).unwrap();
    let mut m = Tensor::from_host(dev, &s.m, &[n]).unwrap();
    let mut v = Tensor::from_host(dev, &s.v, &[n]).unwrap();
    let mut step = Tensor::from_host(dev, &[s.step], &[1]).unwrap();
    let scale_d = Tensor::from_host(dev, &[scale.unwrap_or(1.0)], &[1]).unwrap();
    let found = Tensor::from_host(dev, &[found_inf], &[1]).unwrap();
    {
        let mut t = AdamPureTensors { params: p.view_mut(), grads: gd.view(), m: m.view_mut(), v: v.view_mut() };
        let mut sc =
            AdamScalars { step: step.view_mut(), scale: scale.map(|_| scale_d.view()), found_inf: Some(found.view()) };
        adamw_pure(dev, &mut t, &mut sc, cfg, seed).unwrap();
    }
    *s = PureState {
        p: p.to_host().unwrap(),
        m: m.to_host().unwrap(),
        v: v.to_host().unwrap(),
        step: step.to_host().unwrap()[0],
    };
}

/// The same step on the CPU reference.
fn pure_cpu_step<G: Element>(
    s: &mut PureState,
    g: &[G],
    scale: Option<f32>,
    found_inf: f32,
    cfg: &AdamConfig,
    seed: u64,
) {
    cpu::adam_count_step(&mut s.step, Some(found_inf));
    cpu::adamw_pure_update(&mut s.p, g, &mut s.m, &mut s.v, s.step, scale, Some(found_inf), cfg, seed).unwrap();
}

/// Every r in 0..2^16 once: stochastic rounding with uniform bits is exactly unbiased,
/// sum_r round(x, r) = 2^16 x, for x anywhere between two bf16 values (the fraction of r
/// that round away from zero is the dropped bits / 2^16); and x already in bf16 never moves.
#[test]
fn cpu_round_bf16_stochastic_is_exactly_unbiased_over_all_bits() {
    let mut rng = Rng::new(17);
    for k in 0..200 {
        let x = if k < 4 {
            [1.0f32, -3.0, 1e-40, f32::from_bits(0x3f80_0001)][k]
        } else {
            f32::from_bits(rng.next_u64() as u32 & 0x7f7f_ffff) * if k % 2 == 0 { 1.0 } else { -1.0 }
        };
        let sum: f64 = (0..1u32 << 16).map(|r| cpu::round_bf16_stochastic(x, r).to_f64()).sum();
        assert_eq!(sum, x as f64 * 65536.0, "x = {x:e} ({:#010x})", x.to_bits());
        let (lo, hi) = (bf16::from_bits((x.to_bits() >> 16) as u16), bf16::from_bits((x.to_bits() >> 16) as u16 + 1));
        for r in [0, 0x7fff, 0xffff] {
            let y = cpu::round_bf16_stochastic(x, r);
            assert!(y == lo || (y == hi && x.to_bits() & 0xffff != 0), "x = {x:e} r = {r:#x}: {y}");
        }
    }
    assert!(cpu::round_bf16_stochastic(f32::NAN, 0xffff).is_nan());
    assert_eq!(cpu::round_bf16_stochastic(f32::INFINITY, 0xffff), bf16::INFINITY);
    assert_eq!(cpu::round_bf16_stochastic(f32::MAX, 0xffff), bf16::INFINITY, "rounds up past bf16::MAX");
}

/// adamw_pure against cpu::adamw_pure_update over eight steps, bit for bit (weights,
/// moments, step count), with `G` gradients carrying the loss scale.
fn pure_bit_for_bit<G: Element>(test: &str, seed: u64) {
    let Some(dev) = common::gpu(test) else { return };
    let mut rng = Rng::new(seed);
    for n in [1, 7, 8, 9, 1023, 65537] {
        for cfg in configs() {
            let mut s = PureState::new(&mut rng, n);
            let mut c = s.clone();
            let start = s.clone();
            for k in 0..8 {
                let g = scaled_grads::<G>(&mut rng, n);
                pure_gpu_step(&dev, &mut s, &g, Some(SCALE), 0.0, &cfg, 0x5eed);
                pure_cpu_step(&mut c, &g, Some(SCALE), 0.0, &cfg, 0x5eed);
                let what = format!("{} grads n={n} {:?} step {k}", G::DTYPE, cfg.mode);
                assert_eq!(s.step, k as f32 + 1.0, "{what}");
                assert_same_bits(&what, "m", &s.m, &c.m);
                assert_same_bits(&what, "v", &s.v, &c.v);
                assert_same_bits(&what, "bf16 weights", &s.p, &c.p);
            }
            assert!(n < 1000 || s.p != start.p, "{} n={n}: the weights never moved", G::DTYPE);
        }
    }
}

#[test]
fn adamw_pure_bf16_f32_grads_matches_cpu_bit_for_bit() {
    pure_bit_for_bit::<f32>("adam::adamw_pure_bf16_f32_grads_matches_cpu_bit_for_bit", 18);
}

#[test]
fn adamw_pure_bf16_bf16_grads_matches_cpu_bit_for_bit() {
    pure_bit_for_bit::<bf16>("adam::adamw_pure_bf16_bf16_grads_matches_cpu_bit_for_bit", 19);
}

#[test]
fn adamw_pure_bf16_is_reproducible_from_its_seed() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(20);
    let n = 4099;
    let start = PureState::new(&mut rng, n);
    let grads: Vec<Vec<bf16>> = (0..4).map(|_| scaled_grads::<bf16>(&mut rng, n)).collect();
    let cfg = configs()[0];
    let run = |seed: u64| {
        let mut s = start.clone();
        for g in &grads {
            pure_gpu_step(&dev, &mut s, g, Some(SCALE), 0.0, &cfg, seed);
        }
        s
    };
    let (a, b, other) = (run(1), run(1), run(2));
    assert!(a.bits() == b.bits(), "two runs with the same seed differ");
    assert_ne!(a.p, start.p, "the weights never moved");
    // The seed only picks the rounding: the moments are the same, and about half of the
    // weights whose update needed rounding land on the other neighbour.
    assert!(bits(&a.m) == bits(&other.m) && bits(&a.v) == bits(&other.v));
    let differ = a.p.iter().zip(&other.p).filter(|(x, y)| x != y).count();
    assert!(differ > n / 10, "seed 1 and seed 2 give the same rounding ({differ} of {n} differ)");
}

#[test]
fn adamw_pure_bf16_with_found_inf_changes_nothing() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(21);
    let n = 4099;
    let mut s = PureState::new(&mut rng, n);
    s.m = rng.uniform_vec(n, -1.0, 1.0);
    s.v = rng.uniform_vec(n, 0.0, 1.0);
    s.step = 17.0;
    let before = s.clone();
    for g in [scaled_grads::<f32>(&mut rng, n), vec![f32::NAN; n]] {
        pure_gpu_step(&dev, &mut s, &g, Some(SCALE), 1.0, &AdamConfig::default(), 3);
        assert!(s.bits() == before.bits(), "a skipped step changed the state");
    }
    let g = scaled_grads::<bf16>(&mut rng, n);
    pure_gpu_step(&dev, &mut s, &g, Some(SCALE), 1.0, &AdamConfig::default(), 3);
    assert!(s.bits() == before.bits(), "a skipped step changed the state (bf16 grads)");
    // With found_inf clear the same call moves the state: the skip is what kept it.
    pure_gpu_step(&dev, &mut s, &g, Some(SCALE), 0.0, &AdamConfig::default(), 3);
    assert_eq!(s.step, 18.0);
    assert_ne!(s.p, before.p);
}

/// Updates smaller than half a bf16 ulp: with a constant gradient +1 (-1), Adam's update
/// is lr / (1 + eps) per step, here 1e-3, and weights at 1.0, where the bf16 spacing is
/// 2^-8 below and 2^-7 above, so half an ulp is 1.95e-3 or 3.9e-3. Round to nearest
/// would give 1.0 after every step; stochastic rounding keeps the expected weight exact,
/// E[p_K] = 1 -+ K lr. Each step adds a variance of at most ulp^2 / 4 per weight, so
/// after K = 10 steps the mean over 4096 weights has a standard deviation of at most
/// sqrt(10 * 2^-14 / 4 / 4096) = 1.9e-4 above 1 (9.7e-5 below, ulp 2^-8); the tolerance
/// is four of those, against the 1e-2 drift round to nearest would lose.
#[test]
fn adamw_pure_bf16_stochastic_rounding_is_unbiased() {
    let dev = gpu_or_skip!();
    let n = 8192;
    let (lr, steps) = (1e-3f64, 10);
    let cfg = AdamConfig { lr, weight_decay: 0.0, ..AdamConfig::default() };
    assert_eq!(bf16::from_f32(1.0 - lr as f32), bf16::ONE, "round to nearest would not move");
    assert_eq!(bf16::from_f32(1.0 + lr as f32), bf16::ONE, "round to nearest would not move");
    let mut s = PureState { p: vec![bf16::ONE; n], m: vec![0.0; n], v: vec![0.0; n], step: 0.0 };
    // +1 on even elements (weights move down), -1 on odd ones (up).
    let g: Vec<f32> = (0..n).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }).collect();
    for _ in 0..steps {
        pure_gpu_step(&dev, &mut s, &g, None, 0.0, &cfg, 0xfeed);
    }
    for (parity, sign, sd) in [(0, -1.0, 9.7e-5), (1, 1.0, 1.9e-4)] {
        let mine: Vec<f64> = s.p.iter().skip(parity).step_by(2).map(|p| p.to_f64()).collect();
        let mean = mine.iter().sum::<f64>() / mine.len() as f64;
        let want = 1.0 + sign * steps as f64 * lr;
        assert!((mean - want).abs() <= 4.0 * sd, "parity {parity}: mean weight {mean} vs {want} (sd {sd:e})");
        assert!(mine.iter().all(|&p| (p - 1.0).abs() <= steps as f64 * 2f64.powi(-7)), "a weight moved too far");
    }
}

#[test]
fn adamw_pure_rejects_bad_input_before_any_launch() {
    let dev = gpu_or_skip!();
    let mut p = Tensor::from_host(&dev, &[bf16::ONE; 8], &[8]).unwrap();
    let mut m = Tensor::<f32>::zeros(&dev, &[8]).unwrap();
    let mut v = Tensor::<f32>::zeros(&dev, &[8]).unwrap();
    let mut step = Tensor::from_host(&dev, &[0.0f32], &[1]).unwrap();
    let short = Tensor::from_host(&dev, &[1.0f32; 7], &[7]).unwrap();
    {
        let mut t = AdamPureTensors { params: p.view_mut(), grads: short.view(), m: m.view_mut(), v: v.view_mut() };
        let mut sc = AdamScalars { step: step.view_mut(), scale: None, found_inf: None };
        let err = adamw_pure(&dev, &mut t, &mut sc, &AdamConfig::default(), 1).unwrap_err();
        assert!(
            matches!(err, Error::LengthMismatch { op: "adamw_pure_f32", what: "grads", expected: 8, got: 7 }),
            "{err}"
        );
    }
    let g16 = Tensor::from_host(&dev, &[f16::ONE; 8], &[8]).unwrap();
    {
        let mut t = AdamPureTensors { params: p.view_mut(), grads: g16.view(), m: m.view_mut(), v: v.view_mut() };
        let mut sc = AdamScalars { step: step.view_mut(), scale: None, found_inf: None };
        let err = adamw_pure(&dev, &mut t, &mut sc, &AdamConfig::default(), 1).unwrap_err();
        assert!(matches!(err, Error::UnsupportedDtype { op: "adamw_pure", what: "grads", .. }), "{err}");
    }
    assert_eq!(step.to_host().unwrap(), [0.0], "a rejected step must not advance the count");
    assert_eq!(p.to_host().unwrap(), [bf16::ONE; 8]);
}

#[test]
fn the_schedule_cosine_is_within_4e16_of_cos() {
    for i in 0..=1000 {
        let r = i as f64 / 1000.0;
        let (got, want) = (cpu::cos_pi_unit(r), (std::f64::consts::PI * r).cos());
        // The series is within 2e-17; the rounding of pi and of pi r (2 ulps of t <= pi/2)
        // dominates where the cosine crosses zero.
        assert!((got - want).abs() <= 4e-16, "r {r}: {got} vs {want}");
    }
}

/// Clipping by global norm on the device (issue 20): the effective scale against the CPU
/// reference (whose sequential sum may differ from the blocks' in the last bits: 1e-6
/// relative), clipping only above max_norm (below it the scale comes back exactly), and
/// for every gradient type; bad arguments refused before any launch.
#[test]
fn clip_grad_norm_matches_cpu() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(12);
    let n = 100_003;
    let g32: Vec<f32> = (0..n).map(|_| rng.normal() * 1e-2 * SCALE).collect();
    let norm = (g32.iter().map(|&g| (g as f64 / SCALE as f64).powi(2)).sum::<f64>()).sqrt();
    let scale = Tensor::from_host(&dev, &[SCALE], &[1]).unwrap();
    let blocks = clip_partials_len(&dev, n);
    let mut partial = dev.stream().alloc_zeros::<f64>(blocks).unwrap();
    let mut eff = Tensor::from_host(&dev, &[f32::NAN], &[1]).unwrap();
    type Partial = mixed_precision::cudarc::driver::CudaSlice<f64>;
    let run = |g: &Tensor<f32>, s: Option<&Tensor<f32>>, max: f64, partial: &mut Partial, eff: &mut Tensor<f32>| {
        let sv = s.map(|s| s.view());
        let mut bufs = ClipBuffers { partial: partial.as_view_mut(), scale: eff.view_mut() };
        clip_grad_norm(&dev, &g.view(), sv.as_ref(), max, &mut bufs).unwrap();
        eff.to_host().unwrap()[0]
    };
    let gd = Tensor::from_host(&dev, &g32, &[n]).unwrap();
    for max in [0.1 * norm, 0.5 * norm] {
        let got = run(&gd, Some(&scale), max, &mut partial, &mut eff);
        let want = cpu::clip_scale(&g32, Some(SCALE), max);
        assert!(((got - want) / want).abs() <= 1e-6, "max {max}: {got} vs {want}");
        // The clipped, unscaled gradients have norm max_norm (to the 1e-6 of PyTorch's eps).
        let clipped = (g32.iter().map(|&g| (g as f64 / got as f64).powi(2)).sum::<f64>()).sqrt();
        assert!((clipped - max).abs() <= 1e-5 * max, "norm after clipping {clipped} vs {max}");
    }
    assert_eq!(run(&gd, Some(&scale), 2.0 * norm, &mut partial, &mut eff), SCALE, "no clipping below max_norm");
    // Unscaled gradients (no scale): the same with s = 1.
    let unscaled: Vec<f32> = g32.iter().map(|&g| g / SCALE).collect();
    let ud = Tensor::from_host(&dev, &unscaled, &[n]).unwrap();
    let got = run(&ud, None, 0.25 * norm, &mut partial, &mut eff);
    let want = cpu::clip_scale(&unscaled, None, 0.25 * norm);
    assert!(((got - want) / want).abs() <= 1e-6, "{got} vs {want}");
    // bf16 gradients: the norm of the values as stored.
    let gb: Vec<bf16> = g32.iter().map(|&g| bf16::from_f32(g)).collect();
    let gbd = Tensor::from_host(&dev, &gb, &[n]).unwrap();
    let mut bufs = ClipBuffers { partial: partial.as_view_mut(), scale: eff.view_mut() };
    let sv = scale.view();
    clip_grad_norm(&dev, &gbd.view(), Some(&sv), 0.1 * norm, &mut bufs).unwrap();
    let gbf: Vec<f32> = gb.iter().map(|x| x.to_f32()).collect();
    let (got, want) = (eff.to_host().unwrap()[0], cpu::clip_scale(&gbf, Some(SCALE), 0.1 * norm));
    assert!(((got - want) / want).abs() <= 1e-6, "bf16: {got} vs {want}");
    // Refusals.
    let mut short = dev.stream().alloc_zeros::<f64>(blocks + 1).unwrap();
    let mut bufs = ClipBuffers { partial: short.as_view_mut(), scale: eff.view_mut() };
    let e = clip_grad_norm(&dev, &gd.view(), Some(&sv), 1.0, &mut bufs).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { what: "partial", .. }), "{e}");
    let mut bufs = ClipBuffers { partial: partial.as_view_mut(), scale: eff.view_mut() };
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = clip_grad_norm(&dev, &gd.view(), Some(&sv), bad, &mut bufs).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { what: "max_norm", .. }), "{bad}: {e}");
    }
}
