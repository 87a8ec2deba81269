//! adam: AdamW / Adam on fp32 master weights with the fp16 copy, against an f64
//! reference of the same math, and the skip on found_inf.

mod common;

use mixed_precision::backend::cpu;
use mixed_precision::half::f16;
use mixed_precision::kernels::adam::{adamw_step, adamw_step_multi, AdamConfig, AdamMode, AdamScalars, AdamTensors};
use mixed_precision::rng::Rng;
use mixed_precision::{Element, Error, Tensor};

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
        AdamConfig { lr: 3e-3, beta1: 0.8, beta2: 0.99, eps: 1e-6, weight_decay: 1e-3, mode: AdamMode::Adam },
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
fn gpu_step<G: Element>(
    dev: &std::sync::Arc<mixed_precision::Device>,
    s: &mut State,
    g: &[G],
    cfg: &AdamConfig,
    found_inf: f32,
) -> Vec<f16> {
    let n = s.p.len();
    let mut p = Tensor::from_host(dev, &s.p, &[n]).unwrap();
    let gd = Tensor::from_host(dev, g, &[n]).unwrap();
    let mut m = Tensor::from_host(dev, &s.m, &[n]).unwrap();
    let mut v = Tensor::from_host(dev, &s.v, &[n]).unwrap();
    let mut copy = Tensor::from_host(dev, &vec![f16::NAN; n], &[n]).unwrap();
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

#[test]
fn adamw_step_f32_within_1e6_of_f64_for_1000_steps() {
    let dev = gpu_or_skip!();
    thousand_steps::<f32>("gpu f32 grads", |s, g, cfg| {
        let copy = gpu_step(&dev, s, g, cfg, 0.0);
        assert!(copy.iter().zip(&s.p).all(|(c, p)| c.to_bits() == f16::from_f32(*p).to_bits()), "copy != cast(master)");
    });
}

#[test]
fn adamw_step_f16_within_1e6_of_f64_for_1000_steps() {
    let dev = gpu_or_skip!();
    thousand_steps::<f16>("gpu f16 grads", |s, g, cfg| {
        let copy = gpu_step(&dev, s, g, cfg, 0.0);
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
                gpu_step(&dev, &mut s, &g, &cfg, 0.0);
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
    let copy = gpu_step(&dev, &mut s, &g, &AdamConfig::default(), 1.0);
    assert_eq!(s.step, 17.0, "the step count must not advance");
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!((bits(&s.p), bits(&s.m), bits(&s.v)), (bits(&before.p), bits(&before.m), bits(&before.v)));
    assert!(copy.iter().all(|c| c.is_nan()), "the fp16 copy must not be written");
}

#[test]
fn adamw_step_multi_equals_flat_per_tensor() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(12);
    // 40 tensors: more than one launch carries; one spans several chunks.
    let lens: Vec<usize> = (0..40).map(|i| if i == 5 { 150_001 } else { 1 + rng.below(2000) as usize }).collect();
    let cfg = configs()[0];
    let states: Vec<State> = lens.iter().map(|&n| State::new(&mut rng, n)).collect();
    let grads: Vec<Vec<f32>> = lens.iter().map(|&n| scaled_grads::<f32>(&mut rng, n)).collect();
    // Flat, one tensor at a time.
    let mut flat = states.clone();
    let mut flat_copies = Vec::new();
    for (s, g) in flat.iter_mut().zip(&grads) {
        flat_copies.push(gpu_step(&dev, s, g, &cfg, 0.0));
    }
    // Multi, all at once.
    let up = |v: &Vec<f32>| Tensor::from_host(&dev, v, &[v.len()]).unwrap();
    let mut p: Vec<_> = states.iter().map(|s| up(&s.p)).collect();
    let mut m: Vec<_> = states.iter().map(|s| up(&s.m)).collect();
    let mut v: Vec<_> = states.iter().map(|s| up(&s.v)).collect();
    let g: Vec<_> = grads.iter().map(up).collect();
    let mut c: Vec<_> = lens.iter().map(|&n| Tensor::<f16>::zeros(&dev, &[n]).unwrap()).collect();
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
        assert_eq!(c[i].to_host().unwrap(), flat_copies[i], "tensor {i}");
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
