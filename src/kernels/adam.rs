//! Launchers for `cuda/adam.cu`: AdamW / Adam on fp32 master weights, writing the
//! half-precision working copy (f16 or bf16) in the same pass, and on pure-bf16 weights
//! with stochastic rounding; all gated by the device flag `found_inf`.

use cudarc::driver::{
    CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig, PushKernelArg, SyncOnDrop,
};
use half::{bf16, f16};

use super::multi_tensor::{plan, MtBlocks};
use super::{check_device, check_optional_scalar, check_scalar, grad_kernel, grid_stride_config, optional_ptr};
use crate::device::Device;
use crate::dtype::{DType, Element, Half};
use crate::error::{DriverContext, Error, Result};
use crate::ptx;

/// How weight decay enters the update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdamMode {
    /// torch.optim.AdamW: decoupled decay, `p -= lr * wd * p` before the moments.
    AdamW = 0,
    /// torch.optim.Adam: L2 decay, `g += wd * p` before the moments.
    Adam = 1,
}

/// The learning rate over training, derived on the device from the step count (so a
/// captured CUDA graph replays with the right lr, and a skipped step, whose count does
/// not advance, does not advance the schedule either).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LrSchedule {
    /// `lr` at every step.
    Constant,
    /// nanoGPT's `get_lr` at iteration `it` (0 for the first step): `lr (it + 1) /
    /// warmup_steps` while `it < warmup_steps`, `min_lr` once `it > decay_steps`, and in
    /// between `min_lr + 0.5 (1 + cos(pi r)) (lr - min_lr)` with
    /// `r = (it - warmup_steps) / (decay_steps - warmup_steps)`.
    WarmupCosine {
        /// Steps of linear warmup.
        warmup_steps: u32,
        /// The step at which the cosine reaches `min_lr` (>= `warmup_steps`).
        decay_steps: u32,
        /// The final learning rate, in `[0, lr]`.
        min_lr: f64,
    },
}

/// Hyper-parameters, with torch.optim.AdamW's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// Learning rate, finite and >= 0.
    pub lr: f64,
    /// First-moment decay, in [0, 1).
    pub beta1: f64,
    /// Second-moment decay, in [0, 1).
    pub beta2: f64,
    /// Added to the denominator, finite and > 0.
    pub eps: f64,
    /// Weight decay, finite and >= 0.
    pub weight_decay: f64,
    /// Decoupled (AdamW) or L2 (Adam) decay.
    pub mode: AdamMode,
    /// How the learning rate moves with the step count (`lr` is its peak).
    pub schedule: LrSchedule,
    /// Clip the gradients to this global L2 norm before the update (PyTorch's
    /// `clip_grad_norm_` after unscaling; nanoGPT and llm.c use 1.0). Applied by
    /// [`AdamW`](crate::optim::AdamW) and the training step, which see every gradient;
    /// the kernel-level launchers here take the clip through their scale argument
    /// ([`clip_grad_norm`] computes it) and ignore this field.
    pub max_grad_norm: Option<f64>,
}

impl Default for AdamConfig {
    /// torch.optim.AdamW: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 1e-2.
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
            mode: AdamMode::AdamW,
            schedule: LrSchedule::Constant,
            max_grad_norm: None,
        }
    }
}

impl AdamConfig {
    /// Checks the ranges torch.optim.AdamW accepts.
    pub fn validate(&self, op: &'static str) -> Result<()> {
        let bad = |what, why: String| Err(Error::InvalidArgument { op, what, why });
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return bad("lr", format!("{} must be finite and >= 0", self.lr));
        }
        for (what, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return bad(what, format!("{b} must be in [0, 1)"));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return bad("eps", format!("{} must be finite and > 0", self.eps));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight_decay", format!("{} must be finite and >= 0", self.weight_decay));
        }
        if let Some(c) = self.max_grad_norm {
            if !(c.is_finite() && c > 0.0) {
                return bad("max_grad_norm", format!("{c} must be finite and > 0"));
            }
        }
        if let LrSchedule::WarmupCosine { warmup_steps, decay_steps, min_lr } = self.schedule {
            if decay_steps < warmup_steps || decay_steps > i32::MAX as u32 {
                return bad(
                    "schedule",
                    format!("decay_steps {decay_steps} must be in [warmup_steps {warmup_steps}, 2^31)"),
                );
            }
            if !(min_lr.is_finite() && (0.0..=self.lr).contains(&min_lr)) {
                return bad("schedule", format!("min_lr {min_lr} must be in [0, lr {}]", self.lr));
            }
        }
        Ok(())
    }

    fn hyper(&self, copy: DType) -> AdamHyper {
        AdamHyper {
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            mode: self.mode as i32,
            copy_bf16: (copy == DType::BF16) as i32,
            sched: 0,
            warmup: 0,
            decay: 0,
            reserved: 0,
            min_lr: 0.0,
        }
        .with_schedule(self.schedule)
    }
}

/// Mirrors `struct AdamHyper` in cuda/adam.cu (72 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
struct AdamHyper {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    mode: i32,
    copy_bf16: i32,
    sched: i32,
    warmup: i32,
    decay: i32,
    reserved: i32,
    min_lr: f64,
}

impl AdamHyper {
    fn with_schedule(mut self, s: LrSchedule) -> Self {
        if let LrSchedule::WarmupCosine { warmup_steps, decay_steps, min_lr } = s {
            // validate() keeps decay_steps (and so warmup_steps) below 2^31.
            (self.sched, self.warmup, self.decay, self.min_lr) = (1, warmup_steps as i32, decay_steps as i32, min_lr);
        }
        self
    }
}

// SAFETY: plain `repr(C)` numbers with the layout of the CUDA struct (five doubles, six
// int32, a double: 72 bytes), passed by value as a kernel parameter.
unsafe impl DeviceRepr for AdamHyper {}

/// Tensors one multi-tensor launch carries (`ADAM_MT_TENSORS`).
const ADAM_MT_TENSORS: usize = 32;

/// Mirrors `struct AdamList` in cuda/adam.cu (3072 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
struct AdamList {
    p: [u64; ADAM_MT_TENSORS],
    g: [u64; ADAM_MT_TENSORS],
    m: [u64; ADAM_MT_TENSORS],
    v: [u64; ADAM_MT_TENSORS],
    copy: [u64; ADAM_MT_TENSORS],
    len: [u64; ADAM_MT_TENSORS],
    blocks: MtBlocks,
}

// SAFETY: plain `repr(C)` integers with the layout of the CUDA struct, passed by value.
unsafe impl DeviceRepr for AdamList {}

/// The per-parameter buffers of one tensor (or of the whole flat arena). `G` is the
/// gradient type (`f32`, `f16` or `bf16`), `C` the working copy's half type.
pub struct AdamTensors<'a, G, C: Half = f16> {
    /// fp32 master weights, updated in place.
    pub params: CudaViewMut<'a, f32>,
    /// Gradients, possibly still multiplied by the loss scale.
    pub grads: CudaView<'a, G>,
    /// First moments.
    pub m: CudaViewMut<'a, f32>,
    /// Second moments.
    pub v: CudaViewMut<'a, f32>,
    /// The half-precision working copy, written as `(C) params` (round to nearest even)
    /// after the update, if given.
    pub copy: Option<CudaViewMut<'a, C>>,
}

/// The buffers of a pure-bf16 update ([`adamw_pure`]): no master copy. `P` is the
/// weights' type, which must be bf16 (generic so that code generic over the half type can
/// name it; any other type is refused).
pub struct AdamPureTensors<'a, G, P: Half = bf16> {
    /// The bf16 weights, updated in place with stochastic rounding.
    pub params: CudaViewMut<'a, P>,
    /// Gradients (`f32` or `bf16`), possibly still multiplied by the loss scale.
    pub grads: CudaView<'a, G>,
    /// First moments (f32).
    pub m: CudaViewMut<'a, f32>,
    /// Second moments (f32).
    pub v: CudaViewMut<'a, f32>,
}

/// The device scalars that make the step free of host synchronization.
pub struct AdamScalars<'a> {
    /// The step count (f32, one element): advanced before the update unless found_inf is
    /// set; the bias correction uses the advanced value.
    pub step: CudaViewMut<'a, f32>,
    /// The loss scale the gradients still carry (divided out inside the update), if any.
    pub scale: Option<CudaView<'a, f32>>,
    /// When given and non-zero, the step changes nothing at all.
    pub found_inf: Option<CudaView<'a, f32>>,
}

impl<G, C: Half> AdamTensors<'_, G, C> {
    fn check(&self, op: &'static str, dev: &Device) -> Result<()> {
        let n = self.params.len();
        let lens = [("grads", self.grads.len()), ("m", self.m.len()), ("v", self.v.len())];
        for (what, got) in lens.into_iter().chain(self.copy.as_ref().map(|c| ("copy", c.len()))) {
            if got != n {
                return Err(Error::LengthMismatch { op, what, expected: n, got });
            }
        }
        check_device(op, dev, &self.params)?;
        check_device(op, dev, &self.grads)?;
        check_device(op, dev, &self.m)?;
        check_device(op, dev, &self.v)?;
        match &self.copy {
            Some(c) => check_device(op, dev, c),
            None => Ok(()),
        }
    }
}

impl AdamScalars<'_> {
    fn check(&self, op: &'static str, dev: &Device) -> Result<()> {
        check_scalar(op, "step", &self.step)?;
        check_device(op, dev, &self.step)?;
        check_optional_scalar(op, "scale", dev, self.scale.as_ref())?;
        check_optional_scalar(op, "found_inf", dev, self.found_inf.as_ref())
    }

    /// The device pointers the update kernels take, `[step, scale, found_inf]` (0 for an
    /// absent one), with the guards that keep them recorded on `stream` until dropped.
    fn kernel_ptrs<'s>(&'s self, stream: &'s CudaStream) -> ([u64; 3], Vec<SyncOnDrop<'s>>) {
        let (step, g_step) = self.step.device_ptr(stream);
        let (scale, g_scale) = optional_ptr(self.scale.as_ref(), stream);
        let (found, g_found) = optional_ptr(self.found_inf.as_ref(), stream);
        let guards = std::iter::once(g_step).chain(g_scale).chain(g_found).collect();
        ([step, scale, found], guards)
    }
}

/// Advances `step` unless `found_inf` is set (one thread).
fn count_step(dev: &Device, s: &mut AdamScalars<'_>) -> Result<()> {
    const OP: &str = "adam_count_step";
    let func = dev.function(&ptx::ADAM, OP)?;
    let stream = dev.stream();
    let (step, _step) = s.step.device_ptr_mut(stream);
    let (f, _f) = optional_ptr(s.found_inf.as_ref(), stream);
    let mut launch = stream.launch_builder(&func);
    launch.arg(&step).arg(&f);
    let one = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: arguments match `adam_count_step(float*, const float*)`; step holds one
    // element and found_inf one or is null (checked by the caller).
    unsafe { launch.launch(one) }.op(OP)?;
    Ok(())
}

/// One Adam/AdamW step over a flat range: advances the device step count, then updates
/// master weights and moments and writes the fp16 copy, all unless `found_inf` is set.
/// Every argument is checked before anything is launched.
pub fn adamw_step<G: Element, C: Half>(
    dev: &Device,
    t: &mut AdamTensors<'_, G, C>,
    s: &mut AdamScalars<'_>,
    cfg: &AdamConfig,
) -> Result<()> {
    let op = grad_kernel::<G>(["adamw_step_f32", "adamw_step_f16", "adamw_step_bf16"]);
    cfg.validate(op)?;
    t.check(op, dev)?;
    s.check(op, dev)?;
    let func = dev.function(&ptx::ADAM, op)?;
    count_step(dev, s)?;
    let n = t.params.len();
    if n == 0 {
        return Ok(());
    }
    let stream = dev.stream();
    let (p, _p) = t.params.device_ptr_mut(stream);
    let (g, _g) = t.grads.device_ptr(stream);
    let (m, _m) = t.m.device_ptr_mut(stream);
    let (v, _v) = t.v.device_ptr_mut(stream);
    let (c, _c) = match t.copy.as_mut() {
        Some(c) => {
            let (ptr, sync) = c.device_ptr_mut(stream);
            (ptr, Some(sync))
        }
        None => (0, None),
    };
    let ([step, scale, found], _scalars) = s.kernel_ptrs(stream);
    let n64 = n as u64;
    let hyper = cfg.hyper(C::DTYPE);
    let mut launch = stream.launch_builder(&func);
    launch.arg(&p).arg(&g).arg(&m).arg(&v).arg(&c).arg(&n64).arg(&step).arg(&scale).arg(&found).arg(&hyper);
    // SAFETY: arguments match `adamw_step_<G>(float*, const G*, float*, float*, void*,
    // uint64_t, const float*, const float*, const float*, AdamHyper)` in cuda/adam.cu,
    // with hyper.copy_bf16 naming C as the copy's type; params, grads, m, v and copy (or
    // null) all hold n elements and the scalars one (or null), all in this device's
    // context (checked above).
    unsafe { launch.launch(grid_stride_config(dev, n.div_ceil(4))) }.op(op)?;
    Ok(())
}

/// [`adamw_step`] over a list of tensors (32 tensors and 256 chunks per launch), as
/// torch's `_fused_adamw_` does for parameters that are separate tensors. One step
/// count serves the whole list.
pub fn adamw_step_multi<G: Element, C: Half>(
    dev: &Device,
    ts: &mut [AdamTensors<'_, G, C>],
    s: &mut AdamScalars<'_>,
    cfg: &AdamConfig,
) -> Result<()> {
    let op = grad_kernel::<G>(["adamw_step_multi_f32", "adamw_step_multi_f16", "adamw_step_multi_bf16"]);
    cfg.validate(op)?;
    for t in ts.iter() {
        t.check(op, dev)?;
    }
    s.check(op, dev)?;
    let lens: Vec<usize> = ts.iter().map(|t| t.params.len()).collect();
    let launches = plan(op, &lens, ADAM_MT_TENSORS)?;
    let func = dev.function(&ptx::ADAM, op)?;
    count_step(dev, s)?;
    let stream = dev.stream();
    let mut guards = Vec::new();
    let mut ptrs = Vec::with_capacity(ts.len());
    for t in ts.iter_mut() {
        let (p, gp) = t.params.device_ptr_mut(stream);
        let (g, gg) = t.grads.device_ptr(stream);
        let (m, gm) = t.m.device_ptr_mut(stream);
        let (v, gv) = t.v.device_ptr_mut(stream);
        guards.extend([gp, gg, gm, gv]);
        let c = match t.copy.as_mut() {
            Some(c) => {
                let (ptr, sync) = c.device_ptr_mut(stream);
                guards.push(sync);
                ptr
            }
            None => 0,
        };
        ptrs.push([p, g, m, v, c]);
    }
    let ([step, scale, found], _scalars) = s.kernel_ptrs(stream);
    let hyper = cfg.hyper(C::DTYPE);
    for l in &launches {
        let z = [0u64; ADAM_MT_TENSORS];
        let mut list = AdamList { p: z, g: z, m: z, v: z, copy: z, len: z, blocks: l.map };
        for (slot, &t) in l.tensors.iter().enumerate() {
            let [p, g, m, v, c] = ptrs[t];
            (list.p[slot], list.g[slot], list.m[slot], list.v[slot], list.copy[slot]) = (p, g, m, v, c);
            list.len[slot] = lens[t] as u64;
        }
        let cfg = LaunchConfig { grid_dim: (l.blocks as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let mut launch = stream.launch_builder(&func);
        launch.arg(&list).arg(&step).arg(&scale).arg(&found).arg(&hyper);
        // SAFETY: arguments match `adamw_step_multi_<G>(AdamList, const float*, const
        // float*, const float*, AdamHyper)`; every slot holds live buffers of this device
        // whose lengths equal the slot's len (checked above), and each block's chunk lies
        // inside its tensor (plan).
        unsafe { launch.launch(cfg) }.op(op)?;
    }
    drop(guards);
    Ok(())
}

/// One AdamW step on pure-bf16 weights (issue 19's `master_weights: false`): advances the
/// device step count, then updates the bf16 `params` in place, rounding each new weight
/// stochastically, and the f32 moments, all unless `found_inf` is set. The rounding bits
/// are a hash of (`seed`, step count after the increment, element index), so a run with
/// the same seed reproduces bit for bit (cuda/adam.cu's header; the CPU reference is
/// [`cpu::adamw_pure_update`](crate::backend::cpu::adamw_pure_update)). `G` is `f32` or
/// `bf16`.
pub fn adamw_pure<G: Element, P: Half>(
    dev: &Device,
    t: &mut AdamPureTensors<'_, G, P>,
    s: &mut AdamScalars<'_>,
    cfg: &AdamConfig,
    seed: u64,
) -> Result<()> {
    let op = match G::DTYPE {
        DType::F32 => "adamw_pure_f32",
        DType::BF16 => "adamw_pure_bf16",
        dtype => return Err(Error::UnsupportedDtype { op: "adamw_pure", what: "grads", dtype }),
    };
    if P::DTYPE != DType::BF16 {
        return Err(Error::UnsupportedDtype { op, what: "params", dtype: P::DTYPE });
    }
    cfg.validate(op)?;
    let n = t.params.len();
    for (what, got) in [("grads", t.grads.len()), ("m", t.m.len()), ("v", t.v.len())] {
        if got != n {
            return Err(Error::LengthMismatch { op, what, expected: n, got });
        }
    }
    check_device(op, dev, &t.params)?;
    check_device(op, dev, &t.grads)?;
    check_device(op, dev, &t.m)?;
    check_device(op, dev, &t.v)?;
    s.check(op, dev)?;
    let func = dev.function(&ptx::ADAM, op)?;
    count_step(dev, s)?;
    if n == 0 {
        return Ok(());
    }
    let stream = dev.stream();
    let (p, _p) = t.params.device_ptr_mut(stream);
    let (g, _g) = t.grads.device_ptr(stream);
    let (m, _m) = t.m.device_ptr_mut(stream);
    let (v, _v) = t.v.device_ptr_mut(stream);
    let ([step, scale, found], _scalars) = s.kernel_ptrs(stream);
    let n64 = n as u64;
    let hyper = cfg.hyper(DType::BF16);
    let mut launch = stream.launch_builder(&func);
    launch.arg(&p).arg(&g).arg(&m).arg(&v).arg(&n64).arg(&step).arg(&scale).arg(&found).arg(&hyper).arg(&seed);
    // SAFETY: arguments match `adamw_pure_<G>(bf16_t*, const G*, float*, float*, uint64_t,
    // const float*, const float*, const float*, AdamHyper, uint64_t)` in cuda/adam.cu;
    // params, grads, m and v hold n elements and the scalars one (or null), all in this
    // device's context (checked above).
    unsafe { launch.launch(grid_stride_config(dev, n.div_ceil(4))) }.op(op)?;
    Ok(())
}

/// Threads per block of the clipping kernels (`CLIP_THREADS` in adam.cu).
const CLIP_THREADS: u32 = 256;

/// The f64 partial sums [`clip_grad_norm`] needs for `n` gradients on `dev`: one per
/// block of its grid (sized from the SM count, so at most 8 per SM).
pub fn clip_partials_len(dev: &Device, n: usize) -> usize {
    grid_stride_config(dev, n).grid_dim.0 as usize
}

/// Scratch and result of [`clip_grad_norm`].
pub struct ClipBuffers<'a> {
    /// [`clip_partials_len`] f64 partial sums of squares.
    pub partial: CudaViewMut<'a, f64>,
    /// One f32: the effective scale to give the AdamW launchers as their `scale`.
    pub scale: CudaViewMut<'a, f32>,
}

/// Gradient clipping by global norm on the device, with no host synchronization: writes
/// to `out.scale` the scale that makes AdamW's `g / scale` the unscaled gradient clipped
/// to `max_norm` (PyTorch's `clip_grad_norm_` formula: `coef = max_norm / (norm + 1e-6)`,
/// clamped to 1; `norm` the L2 norm of `grads / scale`, `scale` 1 when `None`): `scale /
/// coef` when clipping, `scale` itself otherwise. Deterministic on a given device (the
/// partial sums follow the grid, which follows the SM count). cuda/adam.cu's header
/// gives the arithmetic; `grads` are `f32`, `f16` or `bf16`.
pub fn clip_grad_norm<G: Element>(
    dev: &Device,
    grads: &CudaView<'_, G>,
    scale: Option<&CudaView<'_, f32>>,
    max_norm: f64,
    out: &mut ClipBuffers<'_>,
) -> Result<()> {
    let op = grad_kernel::<G>(["adam_grad_sumsq_f32", "adam_grad_sumsq_f16", "adam_grad_sumsq_bf16"]);
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(Error::InvalidArgument { op, what: "max_norm", why: format!("{max_norm} must be finite and > 0") });
    }
    let n = grads.len();
    let blocks = clip_partials_len(dev, n);
    if out.partial.len() != blocks {
        return Err(Error::LengthMismatch { op, what: "partial", expected: blocks, got: out.partial.len() });
    }
    check_scalar(op, "scale", &out.scale)?;
    check_device(op, dev, grads)?;
    check_device(op, dev, &out.partial)?;
    check_device(op, dev, &out.scale)?;
    check_optional_scalar(op, "scale", dev, scale)?;
    let sumsq = dev.function(&ptx::ADAM, op)?;
    let finish = dev.function(&ptx::ADAM, "adam_clip_scale")?;
    let stream = dev.stream();
    let (g, _g) = grads.device_ptr(stream);
    let (partial, _partial) = out.partial.device_ptr_mut(stream);
    let (s, _s) = optional_ptr(scale, stream);
    let (eff, _eff) = out.scale.device_ptr_mut(stream);
    let n64 = n as u64;
    let cfg = LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (CLIP_THREADS, 1, 1), shared_mem_bytes: 0 };
    let mut launch = stream.launch_builder(&sumsq);
    launch.arg(&g).arg(&n64).arg(&partial);
    // SAFETY: arguments match `adam_grad_sumsq_<G>(const G*, uint64_t, double*)`; grads
    // holds n elements and partial one per block of this grid (checked above), both in
    // this device's context.
    unsafe { launch.launch(cfg) }.op(op)?;
    let blocks32 = blocks as u32;
    let one = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (CLIP_THREADS, 1, 1), shared_mem_bytes: 0 };
    let mut launch = stream.launch_builder(&finish);
    launch.arg(&partial).arg(&blocks32).arg(&s).arg(&max_norm).arg(&eff);
    // SAFETY: arguments match `adam_clip_scale(const double*, uint32_t, const float*,
    // double, float*)`; partial holds `blocks` values the previous launch wrote (same
    // stream), scale one element or null, eff one element (checked above).
    unsafe { launch.launch(one) }.op("adam_clip_scale")?;
    Ok(())
}
