//! optim: GradScaler and AdamW together, the checkpoint format, fault injection, and
//! the absence of host synchronization in a step.

mod common;

use mixed_precision::backend::cpu;
use mixed_precision::cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use mixed_precision::half::{bf16, f16};
use mixed_precision::kernels::adam::LrSchedule;
use mixed_precision::nn::{ArenaLayout, ParamArena, Weights};
use mixed_precision::optim::{AdamConfig, AdamW, Checkpoint, GradScaler, GradScalerConfig, ScaleRule, ScalerState};
use mixed_precision::rng::Rng;
use mixed_precision::{Device, Error, Half};

fn layout() -> ArenaLayout {
    let mut l = ArenaLayout::new();
    l.push("layer0.weight", &[33, 17]).unwrap();
    l.push("layer0.bias", &[33]).unwrap();
    l.push("layer1.weight", &[5, 33]).unwrap();
    l.push("layer1.bias", &[5]).unwrap();
    l
}

fn init(rng: &mut Rng, l: &ArenaLayout) -> Vec<Vec<f32>> {
    l.params().iter().map(|p| rng.uniform_vec(p.len, -0.5, 0.5)).collect()
}

/// The true gradient of step k, with an occasional huge value that overflows once scaled.
fn true_grads(rng: &mut Rng, n: usize, overflow: bool) -> Vec<f32> {
    let mut g: Vec<f32> = (0..n).map(|_| rng.normal() * 1e-2).collect();
    if overflow {
        let i = rng.below(n as u64) as usize;
        g[i] = 1e3;
    }
    g
}

#[test]
fn fault_injection_on_cpu_mixed_skips_and_scales_correctly() {
    // CPU Mixed: gradients stored as f16 after scaling, so they overflow as on the GPU.
    let rule = ScaleRule { growth: 2.0, backoff: 0.5, growth_interval: 50 };
    let cfg = AdamConfig::default();
    let mut rng = Rng::new(1000);
    let n = 1000;
    let mut p = rng.uniform_vec(n, -1.0, 1.0);
    let (mut m, mut v, mut copy) = (vec![0.0f32; n], vec![0.0f32; n], vec![f16::ZERO; n]);
    let (mut step, mut scale, mut tracker) = (0.0f32, 65536.0f32, 0i32);
    let (mut ref_scale, mut ref_tracker) = (65536.0f64, 0i32);
    let mut skipped = 0;
    for k in 0..1000 {
        let overflow = rng.below(10) == 0;
        let g = true_grads(&mut rng, n, overflow);
        let mut g16: Vec<f16> = g.iter().map(|x| f16::from_f32(x * scale)).collect();
        let mut found_inf = 0.0;
        cpu::unscale_check(&mut g16, None, &mut found_inf);
        let overflowed = g.iter().any(|x| !(x * scale).is_finite() || (x * scale).abs() >= 65520.0);
        assert_eq!(found_inf != 0.0, overflowed, "step {k}: found_inf must be raised exactly when f16 overflowed");

        let before = (p.clone(), m.clone(), v.clone(), step, copy.clone());
        cpu::adam_count_step(&mut step, Some(found_inf));
        cpu::adamw_update(&mut p, &g16, &mut m, &mut v, Some(&mut copy), step, Some(scale), Some(found_inf), &cfg)
            .unwrap();
        if found_inf != 0.0 {
            skipped += 1;
            assert!(
                before == (p.clone(), m.clone(), v.clone(), step, copy.clone()),
                "step {k}: skipped step changed state"
            );
        } else {
            assert_ne!(before.0, p, "step {k}: clean step must update");
        }
        cpu::update_scale(&mut scale, &mut tracker, found_inf, &rule);
        // The rule, written out.
        if found_inf != 0.0 {
            ref_scale *= 0.5;
            ref_tracker = 0;
        } else if ref_tracker + 1 == 50 {
            ref_scale *= 2.0;
            ref_tracker = 0;
        } else {
            ref_tracker += 1;
        }
        assert_eq!((scale as f64, tracker), (ref_scale, ref_tracker), "step {k}");
    }
    // The scale adapts: it backs off until the planted 1e3 fits f16, then overflows again
    // each time it grows, so skips keep happening but most steps are clean.
    assert!((10..500).contains(&skipped), "{skipped} skipped: the injection must bite without stopping training");
    assert_eq!(step as usize, 1000 - skipped);
}

fn sample_checkpoint() -> Checkpoint {
    let mut rng = Rng::new(4);
    let layout = layout();
    let n = layout.total();
    Checkpoint {
        master: ParamArena::pack("test", &layout, &init(&mut rng, &layout)).unwrap(),
        m: rng.uniform_vec(n, -1.0, 1.0),
        v: rng.uniform_vec(n, 0.0, 1.0),
        layout,
        adam: AdamConfig { lr: 3e-4, ..AdamConfig::default() },
        step: 123.0,
        scaler: Some(ScalerState { config: GradScalerConfig::default(), scale: 8192.0, growth_tracker: 17 }),
    }
}

#[test]
fn checkpoint_round_trips_exactly() {
    let ckpt = sample_checkpoint();
    let mut bytes = Vec::new();
    ckpt.write_to(&mut bytes).unwrap();
    assert_eq!(Checkpoint::read_from(&mut bytes.as_slice()).unwrap(), ckpt);
    let no_scaler = Checkpoint { scaler: None, ..ckpt };
    let mut bytes = Vec::new();
    no_scaler.write_to(&mut bytes).unwrap();
    assert_eq!(Checkpoint::read_from(&mut bytes.as_slice()).unwrap(), no_scaler);
}

/// Version 2 carries the lr schedule and the clip norm; a version-1 file (neither) still
/// reads, as a constant lr without clipping.
#[test]
fn checkpoint_carries_the_lr_schedule_and_clip_and_reads_version_1() {
    let schedule = LrSchedule::WarmupCosine { warmup_steps: 100, decay_steps: 5000, min_lr: 3e-5 };
    let adam = AdamConfig { schedule, max_grad_norm: Some(1.0), ..sample_checkpoint().adam };
    let ckpt = Checkpoint { adam, ..sample_checkpoint() };
    let mut bytes = Vec::new();
    ckpt.write_to(&mut bytes).unwrap();
    assert_eq!(Checkpoint::read_from(&mut bytes.as_slice()).unwrap(), ckpt);

    // A version-1 file: the version field at byte 8, and no schedule and clip record (28
    // bytes) after the Adam mode.
    let constant = sample_checkpoint();
    let mut v2 = Vec::new();
    constant.write_to(&mut v2).unwrap();
    let mode_end = v2.len() - (3 * constant.master.len() * 4) - 4 - (1 + 4 + 8 + 8 + 4 + 1 + 4 + 4) - 28;
    let mut v1 = v2[..mode_end].to_vec();
    v1.extend_from_slice(&v2[mode_end + 28..]);
    v1[8..12].copy_from_slice(&1u32.to_le_bytes());
    assert_eq!(Checkpoint::read_from(&mut v1.as_slice()).unwrap(), constant);
}

#[test]
fn checkpoint_rejects_bad_files() {
    let mut bytes = Vec::new();
    sample_checkpoint().write_to(&mut bytes).unwrap();
    let truncated = &bytes[..bytes.len() - 3];
    assert!(matches!(Checkpoint::read_from(&mut &truncated[..]), Err(Error::Checkpoint { .. })));
    let mut bad_magic = bytes.clone();
    bad_magic[0] = b'X';
    assert!(matches!(Checkpoint::read_from(&mut bad_magic.as_slice()), Err(Error::Checkpoint { .. })));
    let mut bad_version = bytes.clone();
    bad_version[8] = 99;
    assert!(matches!(Checkpoint::read_from(&mut bad_version.as_slice()), Err(Error::Checkpoint { .. })));
    assert!(matches!(Checkpoint::load("/nonexistent/dir/ckpt.bin"), Err(Error::Io { .. })));
}

#[test]
fn arena_layout_aligns_every_view_to_16_bytes() {
    let l = layout();
    for p in l.params() {
        assert_eq!(p.offset % 8, 0, "{}", p.name);
        assert_eq!(p.len, p.shape.iter().product::<usize>());
    }
    let mut dup = layout();
    assert!(dup.push("layer0.bias", &[1]).is_err());
    assert!(dup.push("huge", &[usize::MAX, 2]).is_err());
}

#[test]
fn grad_scaler_config_rejects_invalid_settings() {
    for bad in [
        GradScalerConfig { init_scale: 0.0, ..Default::default() },
        GradScalerConfig { init_scale: -1.0, ..Default::default() },
        GradScalerConfig { init_scale: f32::INFINITY, ..Default::default() },
        GradScalerConfig { rule: ScaleRule { backoff: 1.5, ..Default::default() }, ..Default::default() },
        GradScalerConfig { rule: ScaleRule { growth: 0.5, ..Default::default() }, ..Default::default() },
    ] {
        assert!(matches!(bad.validate("test"), Err(Error::InvalidArgument { .. })), "{bad:?}");
    }
    let d = GradScalerConfig::default();
    assert_eq!(
        (d.init_scale, d.rule.growth, d.rule.backoff, d.rule.growth_interval, d.enabled),
        (65536.0, 2.0, 0.5, 2000, true)
    );
}

/// A GPU run of `steps` steps from `seed`, optionally saving at `save_at` into `path`.
struct Run<H: Half = f16> {
    arena: ParamArena<H>,
    adam: AdamW,
    scaler: GradScaler,
    rng: Rng,
}

impl Run {
    fn new(dev: &std::sync::Arc<Device>) -> Self {
        Run::with_weights(dev, Weights::Master)
    }
}

impl<H: Half> Run<H> {
    fn with_weights(dev: &std::sync::Arc<Device>, weights: Weights) -> Self {
        let mut rng = Rng::new(55);
        let l = layout();
        let arena = ParamArena::with_weights(dev, l.clone(), &init(&mut rng, &l), weights).unwrap();
        let adam = AdamW::new(&arena, AdamConfig::default()).unwrap();
        let rule = ScaleRule { growth_interval: 5, ..Default::default() };
        let scaler = GradScaler::new(dev, GradScalerConfig { rule, ..Default::default() }).unwrap();
        Run { arena, adam, scaler, rng }
    }

    /// Uploads the next scaled gradients; one step in four overflows f32.
    fn next_grads(&mut self) {
        let n = self.arena.layout().total();
        let scale = self.scaler.scale().unwrap();
        let overflow = self.rng.below(4) == 0;
        let boost = if overflow { 1e35 } else { 1.0 };
        let g: Vec<f32> = true_grads(&mut self.rng, n, overflow).iter().map(|x| x * scale * boost).collect();
        self.arena.set_grad(&g).unwrap();
    }

    /// check, AdamW, update: the optimizer phase, all on the device.
    fn optimizer_phase(&mut self) -> mixed_precision::Result<()> {
        self.scaler.check(&mut self.arena.grad_mut())?;
        self.adam.step(&mut self.arena, Some(&self.scaler))?;
        self.scaler.update()
    }

    fn step(&mut self) {
        self.next_grads();
        self.optimizer_phase().unwrap();
    }
}

#[test]
fn save_load_continue_is_bit_identical() {
    let dev = gpu_or_skip!();
    let dir = std::env::temp_dir().join(format!("mp-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ckpt.bin");

    let mut a = Run::new(&dev);
    for _ in 0..20 {
        a.step();
    }
    a.adam.save(&path, &a.arena, Some(&a.scaler)).unwrap();
    let rng_at_save = a.rng.clone();
    for _ in 0..30 {
        a.step();
    }

    let mut b = Run::new(&dev);
    b.adam.load(&path, &mut b.arena, Some(&mut b.scaler)).unwrap();
    b.rng = rng_at_save;
    for _ in 0..30 {
        b.step();
    }
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    assert_eq!(bits(a.arena.master_to_host().unwrap()), bits(b.arena.master_to_host().unwrap()));
    assert_eq!(a.arena.working_to_host().unwrap(), b.arena.working_to_host().unwrap());
    assert_eq!(
        a.adam.checkpoint(&a.arena, Some(&a.scaler)).unwrap(),
        b.adam.checkpoint(&b.arena, Some(&b.scaler)).unwrap()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Pure bf16 (issue 19): the bf16 weights are what the checkpoint saves (as f32, exact),
/// and a reload with the same seed continues bit for bit, stochastic rounding included
/// (its bits depend on the seed, the restored step count and the element index only).
#[test]
fn pure_bf16_save_load_continue_is_bit_identical() {
    let dev = gpu_or_skip!();
    let dir = std::env::temp_dir().join(format!("mp-ckpt-pure-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ckpt.bin");
    let weights = Weights::PureBf16 { seed: 77 };

    let mut a = Run::<bf16>::with_weights(&dev, weights);
    assert!(a.arena.master().is_none(), "no f32 master buffer in pure mode");
    for _ in 0..10 {
        a.step();
    }
    let saved = a.adam.checkpoint(&a.arena, Some(&a.scaler)).unwrap();
    assert!(saved.master.iter().all(|&x| bf16::from_f32(x).to_f32().to_bits() == x.to_bits()), "bf16 values");
    a.adam.save(&path, &a.arena, Some(&a.scaler)).unwrap();
    let rng_at_save = a.rng.clone();
    for _ in 0..10 {
        a.step();
    }
    assert_ne!(a.arena.master_to_host().unwrap(), saved.master, "the steps after the save moved the weights");

    let mut b = Run::<bf16>::with_weights(&dev, weights);
    b.adam.load(&path, &mut b.arena, Some(&mut b.scaler)).unwrap();
    b.rng = rng_at_save;
    for _ in 0..10 {
        b.step();
    }
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    assert_eq!(bits(a.arena.master_to_host().unwrap()), bits(b.arena.master_to_host().unwrap()));
    assert_eq!(
        a.adam.checkpoint(&a.arena, Some(&a.scaler)).unwrap(),
        b.adam.checkpoint(&b.arena, Some(&b.scaler)).unwrap()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn skipped_steps_change_no_weight_and_back_off() {
    let dev = gpu_or_skip!();
    let mut r = Run::new(&dev);
    let n = r.arena.layout().total();
    for k in 0..40 {
        let before = (r.arena.master_to_host().unwrap(), r.adam.steps_taken().unwrap(), r.scaler.scale().unwrap());
        r.step();
        let after_master = r.arena.master_to_host().unwrap();
        if r.scaler.found_inf().unwrap() {
            assert_eq!(before.0, after_master, "step {k}");
            assert_eq!(before.1, r.adam.steps_taken().unwrap());
            assert_eq!(r.scaler.scale().unwrap(), before.2 * 0.5);
        } else {
            assert_ne!(before.0, after_master, "step {k}");
        }
        let working = r.arena.working_to_host().unwrap();
        assert!((0..n).all(|i| working[i].to_bits() == f16::from_f32(after_master[i]).to_bits()));
    }
}

#[test]
fn a_step_enqueues_no_host_synchronization() {
    // Capture check + AdamW + update into a CUDA graph: capture fails on any host
    // synchronization or pageable copy, so a successful capture is the proof; replaying
    // it must then give what the eager step gives. Devices of their own: the shared test
    // device's stream is used by other tests concurrently.
    let _ = gpu_or_skip!();
    let (dev_a, dev_b) = (Device::new(0).unwrap(), Device::new(0).unwrap());
    let (mut eager, mut graphed) = (Run::new(&dev_a), Run::new(&dev_b));
    for _ in 0..3 {
        // warm-up, identical in both: modules load outside the capture
        eager.step();
        graphed.step();
    }
    eager.step();
    graphed.next_grads();
    let stream = dev_b.stream().clone();
    stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).unwrap();
    let captured = graphed.optimizer_phase();
    let graph = stream.end_capture(CUgraphInstantiate_flags(0));
    captured.expect("the optimizer phase failed during capture");
    let graph = graph.expect("capture was invalidated: something synchronized").expect("nothing was captured");
    graph.launch().unwrap();
    dev_b.synchronize().unwrap();
    assert_eq!(eager.arena.master_to_host().unwrap(), graphed.arena.master_to_host().unwrap());
    assert_eq!(eager.adam.steps_taken().unwrap(), graphed.adam.steps_taken().unwrap());
    assert_eq!(eager.scaler.state().unwrap(), graphed.scaler.state().unwrap());
}
