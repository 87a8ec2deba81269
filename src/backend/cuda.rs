//! The CUDA backend: every op of [`Backend`] as one or two launches of the kernels in
//! [`crate::kernels`], all on the [`Device`]'s one stream.
//!
//! Activations are of the backend's half type `H` (f16, or bf16 for
//! [`Cuda::<bf16>`](Cuda::with_half); DESIGN.md, "Two half types") in buffers drawn from a
//! pool keyed by length, so a training step
//! that repeats its shapes allocates nothing after the first step, and can be captured
//! as a CUDA graph: during a capture a pool miss is an error rather than an allocation
//! (an allocation is not something a graph should replay), and when the capture ends
//! every pooled buffer moves into the graph, so no later caller can be handed memory the
//! graph writes on each replay.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cudarc::driver::{sys, CudaGraph, CudaSlice, CudaViewMut, DeviceRepr, ValidAsZeroBits};
use half::f16;

use crate::dtype::{DType, Half};

use crate::backend::cpu::{check_labels, linear_dims, param_spec};
use crate::backend::{check_same_shape, Backend, ParamsSnapshot};
use crate::device::Device;
use crate::error::{DriverContext, Error, Result};
use crate::kernels::activation::{activation_backward, activation_forward};
use crate::kernels::adam::AdamConfig;
use crate::kernels::add::{add, add_assign};
use crate::kernels::gemm::{gemm, gemm_checking, Activation, Bias, Epilogue, GemmShape, Transpose};
use crate::kernels::loss::{cross_entropy_backward, cross_entropy_forward, mse_backward, mse_forward, LossShape};
use crate::kernels::reduce::{bias_grad, bias_grad_checking, sum_f32};
use crate::nn::{ArenaLayout, ParamArena, Weights};
use crate::optim::{AdamW, Checkpoint, GradScaler, GradScalerConfig};

mod transformer;
pub use transformer::CudaSaved;

/// Free buffers by element count.
struct Pool<T> {
    free: HashMap<usize, Vec<CudaSlice<T>>>,
}

impl<T> Pool<T> {
    fn put(&mut self, buf: CudaSlice<T>) {
        self.free.entry(buf.len()).or_default().push(buf);
    }

    fn merge(&mut self, other: Pool<T>) {
        for (_, bufs) in other.free {
            bufs.into_iter().for_each(|b| self.put(b));
        }
    }
}

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Pool { free: HashMap::new() }
    }
}

struct Pools<H> {
    half: Pool<H>,
    f32: Pool<f32>,
    i32: Pool<i32>,
    /// Token ids and their index (kernels::embedding::Tokens).
    u32: Pool<u32>,
}

impl<H> Default for Pools<H> {
    fn default() -> Self {
        Pools { half: Pool::default(), f32: Pool::default(), i32: Pool::default(), u32: Pool::default() }
    }
}

/// The CUDA backend on one [`Device`], computing in the half type `H` (f16 by default;
/// bf16 needs sm_80 or newer for its GEMMs).
pub struct Cuda<H: Half = f16> {
    dev: Arc<Device>,
    pools: Mutex<Pools<H>>,
    capturing: AtomicBool,
}

impl<H: Half> fmt::Debug for Cuda<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cuda").field("device", self.dev.info()).finish_non_exhaustive()
    }
}

/// A `rows x cols` half-precision activation tensor in device memory.
pub struct CudaTensor<H: Half = f16> {
    data: CudaSlice<H>,
    rows: usize,
    cols: usize,
}

impl<H: Half> CudaTensor<H> {
    /// The device buffer, for calling the kernels directly.
    pub fn data(&self) -> &CudaSlice<H> {
        &self.data
    }
}

/// Class labels as i32 in device memory, checked against `classes` on upload.
pub struct CudaLabels {
    data: CudaSlice<i32>,
    classes: usize,
}

/// One f32 in device memory.
pub struct CudaScalar {
    data: CudaSlice<f32>,
}

/// The parameter arena with its AdamW and GradScaler.
pub struct CudaParams<H: Half = f16> {
    /// Master weights, working copy and gradients.
    pub arena: ParamArena<H>,
    /// Moments and step count.
    pub adam: AdamW,
    /// Loss scale, growth tracker and found_inf.
    pub scaler: GradScaler,
    /// The loss scale the gradients in the arena are multiplied by: copied from the
    /// scaler's scale at the start of each optimizer step, before the scale update
    /// changes it, so [`Backend::snapshot`] can say how to unscale them.
    grad_scale: CudaSlice<f32>,
}

/// A captured training step and the buffers it reads and writes.
pub struct CudaStepGraph<H: Half = f16> {
    graph: CudaGraph,
    held: Pools<H>,
}

impl Cuda {
    /// The f16 backend on `dev`.
    pub fn new(dev: &Arc<Device>) -> Self {
        Self::with_half(dev)
    }
}

impl<H: Half> Cuda<H> {
    /// The backend on `dev` computing in `H`: `Cuda::<bf16>::with_half(&dev)`.
    pub fn with_half(dev: &Arc<Device>) -> Self {
        Cuda { dev: dev.clone(), pools: Mutex::new(Pools::default()), capturing: AtomicBool::new(false) }
    }

    /// The device.
    pub fn device(&self) -> &Arc<Device> {
        &self.dev
    }

    fn pools(&self) -> MutexGuard<'_, Pools<H>> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A buffer of `n` elements from `pool`, allocated (zeroed) on a miss outside capture.
    fn take<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        op: &'static str,
        n: usize,
        pool: impl FnOnce(&mut Pools<H>) -> &mut Pool<T>,
    ) -> Result<CudaSlice<T>> {
        if let Some(buf) = pool(&mut self.pools()).free.get_mut(&n).and_then(Vec::pop) {
            return Ok(buf);
        }
        if self.capturing.load(Ordering::Relaxed) {
            return Err(Error::InvalidArgument {
                op,
                what: "buffer",
                why: format!("no pooled buffer of {n} elements during graph capture; run the same step eagerly first"),
            });
        }
        self.dev.stream().alloc_zeros::<T>(n).op(op)
    }

    fn tensor_out(&self, op: &'static str, rows: usize, cols: usize) -> Result<CudaTensor<H>> {
        Ok(CudaTensor { data: self.take(op, rows * cols, |p| &mut p.half)?, rows, cols })
    }

    /// Checks that `buf` is on this backend's stream: a tensor of another `Cuda` on
    /// another `Device` is unordered with this stream (see [`Device`]).
    fn check_owned<T>(&self, op: &'static str, buf: &CudaSlice<T>) -> Result<()> {
        if self.dev.owns(buf.stream()) {
            Ok(())
        } else {
            Err(Error::DeviceMismatch { op })
        }
    }

    fn check_labels_shape(op: &'static str, z: &CudaTensor<H>, l: &CudaLabels) -> Result<()> {
        check_same_shape(op, (z.rows, z.cols), (l.data.len(), l.classes))
    }

    /// The mean of `losses` into `out` (`beta * out + alpha / count * sum`).
    fn mean_into(
        &self,
        op: &'static str,
        losses: CudaSlice<f32>,
        count: usize,
        out: &mut CudaScalar,
        alpha: f32,
        beta: f32,
    ) -> Result<()> {
        let r = sum_f32(&self.dev, &losses, &mut out.data, alpha / count.max(1) as f32, beta);
        self.pools().f32.put(losses);
        r.map_err(|e| match e {
            Error::InvalidArgument { what, why, .. } => Error::InvalidArgument { op, what, why },
            e => e,
        })
    }
}

fn to_half<H: Half>(data: &[f32]) -> Vec<H> {
    data.iter().map(|&x| H::from_f32(x)).collect()
}

impl<H: Half> Backend for Cuda<H> {
    type Tensor = CudaTensor<H>;
    type Labels = CudaLabels;
    type Scalar = CudaScalar;
    type Params = CudaParams<H>;
    type Graph = CudaStepGraph<H>;

    fn describe(&self) -> String {
        let i = self.dev.info();
        // The device name may already carry the capability (the emulator's does).
        let cap = format!("sm_{}{}", i.compute_capability.0, i.compute_capability.1);
        let name = if i.name.contains(&cap) { i.name.clone() } else { format!("{} ({cap})", i.name) };
        format!("CUDA on {name}, {} compute", H::DTYPE)
    }

    fn half(&self) -> Option<DType> {
        Some(H::DTYPE)
    }

    fn tensor(&self, data: &[f32], rows: usize, cols: usize) -> Result<CudaTensor<H>> {
        const OP: &str = "Cuda::tensor";
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(Error::ShapeMismatch { op: OP, expected: vec![rows, cols], got: vec![data.len()] });
        }
        // Rounded on the host with the same round-to-nearest-even as the cast kernel.
        let data = self.dev.stream().clone_htod(&to_half::<H>(data)).op(OP)?;
        Ok(CudaTensor { data, rows, cols })
    }

    fn write(&self, t: &mut CudaTensor<H>, data: &[f32]) -> Result<()> {
        const OP: &str = "Cuda::write";
        if data.len() != t.data.len() {
            return Err(Error::ShapeMismatch { op: OP, expected: vec![t.rows, t.cols], got: vec![data.len()] });
        }
        self.check_owned(OP, &t.data)?;
        self.dev.stream().memcpy_htod(&to_half::<H>(data), &mut t.data).op(OP)
    }

    fn labels(&self, labels: &[u32], classes: usize) -> Result<CudaLabels> {
        const OP: &str = "Cuda::labels";
        check_labels(OP, labels, labels.len(), classes)?;
        let host: Vec<i32> = labels.iter().map(|&l| l as i32).collect();
        Ok(CudaLabels { data: self.dev.stream().clone_htod(&host).op(OP)?, classes })
    }

    fn write_labels(&self, l: &mut CudaLabels, labels: &[u32]) -> Result<()> {
        const OP: &str = "Cuda::write_labels";
        check_labels(OP, labels, l.data.len(), l.classes)?;
        self.check_owned(OP, &l.data)?;
        let host: Vec<i32> = labels.iter().map(|&l| l as i32).collect();
        self.dev.stream().memcpy_htod(&host, &mut l.data).op(OP)
    }

    fn shape(&self, t: &CudaTensor<H>) -> (usize, usize) {
        (t.rows, t.cols)
    }

    fn labels_shape(&self, l: &CudaLabels) -> (usize, usize) {
        (l.data.len(), l.classes)
    }

    fn to_host(&self, t: &CudaTensor<H>) -> Result<Vec<f32>> {
        const OP: &str = "Cuda::to_host";
        self.check_owned(OP, &t.data)?;
        Ok(self.dev.to_host(OP, &t.data)?.into_iter().map(H::to_f32).collect())
    }

    fn scalar(&self) -> Result<CudaScalar> {
        Ok(CudaScalar { data: self.dev.stream().alloc_zeros(1).op("Cuda::scalar")? })
    }

    fn scalar_to_host(&self, s: &CudaScalar) -> Result<f32> {
        const OP: &str = "Cuda::scalar_to_host";
        self.check_owned(OP, &s.data)?;
        Ok(self.dev.to_host(OP, &s.data)?[0])
    }

    fn copy(&self, t: &CudaTensor<H>) -> Result<CudaTensor<H>> {
        const OP: &str = "Cuda::copy";
        self.check_owned(OP, &t.data)?;
        let mut out = self.tensor_out(OP, t.rows, t.cols)?;
        self.dev.stream().memcpy_dtod(&t.data, &mut out.data).op(OP)?;
        Ok(out)
    }

    fn copy_labels(&self, l: &CudaLabels) -> Result<CudaLabels> {
        const OP: &str = "Cuda::copy_labels";
        self.check_owned(OP, &l.data)?;
        let mut data = self.take(OP, l.data.len(), |p| &mut p.i32)?;
        self.dev.stream().memcpy_dtod(&l.data, &mut data).op(OP)?;
        Ok(CudaLabels { data, classes: l.classes })
    }

    // A buffer of another stream is dropped (freed on its own stream), not pooled: the
    // pool must hand out only buffers the launchers accept.
    fn recycle(&self, t: CudaTensor<H>) {
        if self.dev.owns(t.data.stream()) {
            self.pools().half.put(t.data);
        }
    }

    fn recycle_labels(&self, l: CudaLabels) {
        if self.dev.owns(l.data.stream()) {
            self.pools().i32.put(l.data);
        }
    }

    fn params(
        &self,
        layout: ArenaLayout,
        init: &[Vec<f32>],
        adam: AdamConfig,
        scaler: GradScalerConfig,
        weights: Weights,
    ) -> Result<CudaParams<H>> {
        adam.validate("Cuda::params")?;
        scaler.validate("Cuda::params")?;
        // Every linear layer is a GEMM: refuse a bf16 step on a device without bf16
        // tensor cores here, before anything of the step exists, rather than at its
        // first forward.
        let capability = self.dev.info().compute_capability;
        if H::DTYPE == DType::BF16 && capability < (8, 0) {
            return Err(Error::Unsupported {
                op: "Cuda::params",
                what: "bf16 tensor cores",
                needs: (8, 0),
                capability,
            });
        }
        let arena = ParamArena::with_weights(&self.dev, layout, init, weights)?;
        let adam = AdamW::new(&arena, adam)?;
        let scaler = GradScaler::new(&self.dev, scaler)?;
        let initial = if scaler.config().enabled { scaler.config().init_scale } else { 1.0 };
        let grad_scale = self.dev.stream().clone_htod(&[initial]).op("Cuda::params")?;
        Ok(CudaParams { arena, adam, scaler, grad_scale })
    }

    /// Zeroes the gradients and clears `found_inf`: the weight- and bias-gradient kernels
    /// of the backward raise it as they write (the fused check), so the optimizer phase
    /// reads the gradients once, in AdamW, instead of once more in a check pass.
    fn zero_grad(&self, p: &mut CudaParams<H>) -> Result<()> {
        p.arena.zero_grad()?;
        p.scaler.clear_found_inf()
    }

    fn optimizer_step(&self, p: &mut CudaParams<H>) -> Result<()> {
        const OP: &str = "Cuda::optimizer_step";
        let CudaParams { arena, adam, scaler, grad_scale } = p;
        // 4 bytes on the stream (a copy node in a graph), so the state can say how to
        // unscale the gradients after update() has changed the scale.
        if scaler.config().enabled {
            self.dev.stream().memcpy_dtod(&scaler.scale_view(), grad_scale).op(OP)?;
        }
        // No check pass: the backward's gradient kernels raised found_inf as they wrote
        // (zero_grad cleared it), and AdamW skips on it and divides by the scale.
        adam.step(arena, Some(scaler))?;
        scaler.update()
    }

    fn master_to_host(&self, p: &CudaParams<H>) -> Result<Vec<f32>> {
        p.arena.master_to_host()
    }

    fn load_master(&self, p: &mut CudaParams<H>, master: &[f32]) -> Result<()> {
        p.arena.set_master(master)
    }

    fn grad_to_host(&self, p: &CudaParams<H>) -> Result<Vec<f32>> {
        p.arena.grad_to_host()
    }

    fn loss_scale(&self, p: &CudaParams<H>) -> Result<f32> {
        p.scaler.scale()
    }

    fn found_inf(&self, p: &CudaParams<H>) -> Result<bool> {
        p.scaler.found_inf()
    }

    fn steps_taken(&self, p: &CudaParams<H>) -> Result<f32> {
        p.adam.steps_taken()
    }

    fn set_adam(&self, p: &mut CudaParams<H>, cfg: AdamConfig) -> Result<()> {
        p.adam.set_config(cfg)
    }

    fn checkpoint(&self, p: &CudaParams<H>) -> Result<Checkpoint> {
        p.adam.checkpoint(&p.arena, Some(&p.scaler))
    }

    fn restore(&self, p: &mut CudaParams<H>, ckpt: &Checkpoint) -> Result<()> {
        p.adam.restore(ckpt, &mut p.arena, Some(&mut p.scaler))
    }

    fn snapshot(&self, p: &CudaParams<H>) -> Result<ParamsSnapshot> {
        const OP: &str = "Cuda::snapshot";
        let (m, v) = p.adam.moments_to_host()?;
        let grad_scale = match p.scaler.config().enabled {
            true => Some(self.dev.to_host(OP, &p.grad_scale)?[0]),
            false => None,
        };
        Ok(ParamsSnapshot {
            layout: p.arena.layout().clone(),
            master: p.arena.master_to_host()?,
            working: p.arena.working_to_host()?.into_iter().map(H::to_f32).collect(),
            grad: p.arena.grad_to_host()?,
            m,
            v,
            step: p.adam.steps_taken()?,
            loss_scale: p.scaler.scale()?,
            growth_tracker: p.scaler.growth_tracker()?,
            found_inf: p.scaler.found_inf()?,
            grad_scale,
        })
    }

    fn linear(
        &self,
        p: &CudaParams<H>,
        weight: usize,
        bias: Option<usize>,
        x: &CudaTensor<H>,
        act: Activation,
    ) -> Result<(CudaTensor<H>, Option<CudaTensor<H>>)> {
        const OP: &str = "Cuda::linear";
        let layout = p.arena.layout();
        let (out, inp) = linear_dims(OP, layout, weight, bias, (x.rows, x.cols))?;
        let w = param_spec(OP, layout, weight)?;
        let working = p.arena.working();
        let w_view = working.slice(w.offset..w.offset + w.len);
        let bias = match bias {
            Some(b) => {
                let b = param_spec(OP, layout, b)?;
                Some(Bias::Half(working.slice(b.offset..b.offset + b.len)))
            }
            None => None,
        };
        let mut y = self.tensor_out(OP, x.rows, out)?;
        let mut pre = match act {
            Activation::None => None,
            _ => Some(self.tensor_out(OP, x.rows, out)?),
        };
        {
            let mut pre_view: Option<CudaViewMut<'_, H>> = pre.as_mut().map(|t| t.data.as_view_mut());
            let shape = GemmShape::dense(x.rows, out, inp, Transpose::N, Transpose::T);
            let epilogue = Epilogue { bias, pre: pre_view.as_mut(), activation: act, ..Default::default() };
            gemm(&self.dev, &shape, &x.data.as_view(), &w_view, &mut y.data.as_view_mut(), epilogue)?;
        }
        Ok((y, pre))
    }

    fn linear_backward(
        &self,
        p: &mut CudaParams<H>,
        weight: usize,
        bias: Option<usize>,
        x: &CudaTensor<H>,
        pre: Option<&CudaTensor<H>>,
        act: Activation,
        dy: &CudaTensor<H>,
        need_dx: bool,
    ) -> Result<Option<CudaTensor<H>>> {
        const OP: &str = "Cuda::linear_backward";
        let layout = p.arena.layout();
        let (out, inp) = linear_dims(OP, layout, weight, bias, (x.rows, x.cols))?;
        let w = param_spec(OP, layout, weight)?.clone();
        let b = bias.map(|b| param_spec(OP, layout, b).cloned()).transpose()?;
        check_same_shape(OP, (x.rows, out), (dy.rows, dy.cols))?;
        // dz = dy * act'(pre): the pre-activation the forward's epilogue stored.
        let dz_owned = match (act, pre) {
            (Activation::None, _) => None,
            (_, Some(pre)) => {
                check_same_shape(OP, (dy.rows, dy.cols), (pre.rows, pre.cols))?;
                let mut dz = self.tensor_out(OP, dy.rows, dy.cols)?;
                activation_backward(&self.dev, &pre.data, &dy.data, &mut dz.data, act)?;
                Some(dz)
            }
            (_, None) => {
                return Err(Error::InvalidArgument { op: OP, what: "pre", why: "an activation needs its input".into() })
            }
        };
        let dz = dz_owned.as_ref().unwrap_or(dy);
        let result = (|| {
            let (mut grad, working) = p.arena.grad_and_working();
            // The fused overflow check: the gradient kernels raise found_inf as they write.
            let mut found_inf = p.scaler.found_inf_view_mut();
            let range_err = || Error::InvalidArgument { op: OP, what: "parameter", why: "outside the arena".into() };
            {
                // dW += dz^T x, straight from the f32 accumulators into the gradient arena.
                let mut dw = grad.try_slice_mut(w.offset..w.offset + w.len).ok_or_else(range_err)?;
                let shape = GemmShape::dense(out, inp, x.rows, Transpose::T, Transpose::N);
                let epilogue = Epilogue { beta: 1.0, ..Default::default() };
                let (a, xv) = (dz.data.as_view(), x.data.as_view());
                match found_inf.as_mut() {
                    Some(f) => gemm_checking(&self.dev, &shape, &a, &xv, &mut dw, epilogue, f)?,
                    None => gemm(&self.dev, &shape, &a, &xv, &mut dw, epilogue)?,
                }
            }
            if let Some(b) = &b {
                let mut db = grad.try_slice_mut(b.offset..b.offset + b.len).ok_or_else(range_err)?;
                match found_inf.as_mut() {
                    Some(f) => bias_grad_checking(&self.dev, &dz.data, &mut db, x.rows, out, 1.0, f)?,
                    None => bias_grad(&self.dev, &dz.data, &mut db, x.rows, out, 1.0)?,
                }
            }
            if !need_dx {
                return Ok(None);
            }
            // dx = dz W.
            let mut dx = self.tensor_out(OP, x.rows, inp)?;
            let w_view = working.slice(w.offset..w.offset + w.len);
            let shape = GemmShape::dense(x.rows, inp, out, Transpose::N, Transpose::N);
            gemm(&self.dev, &shape, &dz.data.as_view(), &w_view, &mut dx.data.as_view_mut(), Epilogue::default())?;
            Ok(Some(dx))
        })();
        if let Some(dz) = dz_owned {
            self.recycle(dz);
        }
        result
    }

    fn activation(&self, x: &CudaTensor<H>, act: Activation) -> Result<CudaTensor<H>> {
        let mut y = self.tensor_out("Cuda::activation", x.rows, x.cols)?;
        activation_forward(&self.dev, &x.data, &mut y.data, act)?;
        Ok(y)
    }

    fn activation_backward(&self, x: &CudaTensor<H>, dy: &CudaTensor<H>, act: Activation) -> Result<CudaTensor<H>> {
        const OP: &str = "Cuda::activation_backward";
        check_same_shape(OP, (x.rows, x.cols), (dy.rows, dy.cols))?;
        let mut dx = self.tensor_out(OP, x.rows, x.cols)?;
        activation_backward(&self.dev, &x.data, &dy.data, &mut dx.data, act)?;
        Ok(dx)
    }

    fn add(&self, a: &CudaTensor<H>, b: &CudaTensor<H>) -> Result<CudaTensor<H>> {
        const OP: &str = "Cuda::add";
        check_same_shape(OP, (a.rows, a.cols), (b.rows, b.cols))?;
        let mut y = self.tensor_out(OP, a.rows, a.cols)?;
        add(&self.dev, &a.data, &b.data, &mut y.data)?;
        Ok(y)
    }

    fn accumulate(&self, acc: &mut CudaTensor<H>, x: &CudaTensor<H>) -> Result<()> {
        check_same_shape("Cuda::accumulate", (acc.rows, acc.cols), (x.rows, x.cols))?;
        add_assign(&self.dev, &mut acc.data, &x.data)
    }

    fn cross_entropy(
        &self,
        z: &CudaTensor<H>,
        labels: &CudaLabels,
        out: &mut CudaScalar,
        alpha: f32,
        beta: f32,
    ) -> Result<()> {
        const OP: &str = "Cuda::cross_entropy";
        Self::check_labels_shape(OP, z, labels)?;
        let mut losses = self.take(OP, z.rows, |p| &mut p.f32)?;
        let shape = LossShape { rows: z.rows, cols: z.cols };
        cross_entropy_forward(&self.dev, shape, &z.data, &labels.data, &mut losses)?;
        self.mean_into(OP, losses, z.rows, out, alpha, beta)
    }

    fn cross_entropy_backward(
        &self,
        p: &CudaParams<H>,
        z: &CudaTensor<H>,
        labels: &CudaLabels,
        weight: f32,
    ) -> Result<CudaTensor<H>> {
        const OP: &str = "Cuda::cross_entropy_backward";
        Self::check_labels_shape(OP, z, labels)?;
        let mut dz = self.tensor_out(OP, z.rows, z.cols)?;
        let shape = LossShape { rows: z.rows, cols: z.cols };
        let scale = p.scaler.scale_view();
        let factor = weight / z.rows.max(1) as f32;
        cross_entropy_backward(&self.dev, shape, &z.data, &labels.data, Some(&scale), &mut dz.data, factor)?;
        Ok(dz)
    }

    fn mse(
        &self,
        pred: &CudaTensor<H>,
        target: &CudaTensor<H>,
        out: &mut CudaScalar,
        alpha: f32,
        beta: f32,
    ) -> Result<()> {
        const OP: &str = "Cuda::mse";
        check_same_shape(OP, (pred.rows, pred.cols), (target.rows, target.cols))?;
        let mut losses = self.take(OP, pred.rows, |p| &mut p.f32)?;
        let shape = LossShape { rows: pred.rows, cols: pred.cols };
        mse_forward(&self.dev, shape, &pred.data, &target.data, &mut losses)?;
        self.mean_into(OP, losses, pred.data.len(), out, alpha, beta)
    }

    fn mse_backward(
        &self,
        p: &CudaParams<H>,
        pred: &CudaTensor<H>,
        target: &CudaTensor<H>,
        weight: f32,
    ) -> Result<CudaTensor<H>> {
        const OP: &str = "Cuda::mse_backward";
        check_same_shape(OP, (pred.rows, pred.cols), (target.rows, target.cols))?;
        let mut d = self.tensor_out(OP, pred.rows, pred.cols)?;
        let shape = LossShape { rows: pred.rows, cols: pred.cols };
        let scale = p.scaler.scale_view();
        let factor = weight / pred.data.len().max(1) as f32;
        mse_backward(&self.dev, shape, &pred.data, &target.data, Some(&scale), &mut d.data, factor)?;
        Ok(d)
    }

    /// `Err` when the driver refuses: the legacy default stream (a `Device` adopted with
    /// a null stream) cannot be captured, nor a stream the caller is already capturing.
    fn begin_capture(&self) -> Result<bool> {
        const OP: &str = "Cuda::begin_capture";
        // Thread-local mode: other threads' unrelated CUDA calls do not invalidate it.
        let mode = sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
        self.dev.stream().begin_capture(mode).op(OP)?;
        self.capturing.store(true, Ordering::Relaxed);
        Ok(true)
    }

    fn end_capture(&self) -> Result<CudaStepGraph<H>> {
        const OP: &str = "Cuda::end_capture";
        self.capturing.store(false, Ordering::Relaxed);
        let graph = self.dev.stream().end_capture(sys::CUgraphInstantiate_flags(0)).op(OP)?;
        let graph = graph.ok_or_else(|| Error::InvalidArgument {
            op: OP,
            what: "capture",
            why: "nothing was captured".into(),
        })?;
        graph.upload().op(OP)?;
        let held = std::mem::take(&mut *self.pools());
        Ok(CudaStepGraph { graph, held })
    }

    fn replay(&self, g: &CudaStepGraph<H>) -> Result<()> {
        g.graph.launch().op("Cuda::replay")
    }

    fn release_graph(&self, g: CudaStepGraph<H>) {
        // The graph's buffers may still be in use by a replay in flight: wait before they
        // go back to the pool. An error here would be reported by the next call anyway.
        let _ = self.dev.synchronize();
        let CudaStepGraph { graph, held } = g;
        drop(graph);
        let mut pools = self.pools();
        pools.half.merge(held.half);
        pools.f32.merge(held.f32);
        pools.i32.merge(held.i32);
        pools.u32.merge(held.u32);
    }
}
