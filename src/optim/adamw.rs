//! AdamW over the parameter arena: fp32 moments and step count on the device.

use std::path::Path;
use std::sync::Arc;

use cudarc::driver::CudaSlice;

use crate::device::Device;
use crate::dtype::Half;
use crate::error::{DriverContext, Error, Result};
use crate::kernels::adam::{
    adamw_pure, adamw_step, clip_grad_norm, clip_partials_len, AdamConfig, AdamPureTensors, AdamScalars, AdamTensors,
    ClipBuffers,
};
use crate::nn::{ParamArena, Weights};
use crate::optim::{Checkpoint, GradScaler};

/// AdamW (or Adam) on the fp32 master weights of a [`ParamArena`], writing its
/// half-precision working copy in the same pass: one launch over the whole arena per
/// step; on a pure-bf16 arena ([`Weights::PureBf16`]), on the bf16 weights themselves
/// with stochastic rounding.
pub struct AdamW {
    dev: Arc<Device>,
    cfg: AdamConfig,
    m: CudaSlice<f32>,
    v: CudaSlice<f32>,
    step: CudaSlice<f32>,
    /// With `max_grad_norm`: the clipping kernels' partial sums and the effective scale
    /// they leave for the update (allocated when clipping is first asked for).
    clip: Option<(CudaSlice<f64>, CudaSlice<f32>)>,
}

impl AdamW {
    /// Zero moments and step count for `arena`.
    pub fn new<H: Half>(arena: &ParamArena<H>, cfg: AdamConfig) -> Result<Self> {
        const OP: &str = "AdamW::new";
        cfg.validate(OP)?;
        let dev = arena.device().clone();
        let n = arena.layout().total();
        let stream = dev.stream();
        let mut adam = AdamW {
            m: stream.alloc_zeros(n).op(OP)?,
            v: stream.alloc_zeros(n).op(OP)?,
            step: stream.alloc_zeros(1).op(OP)?,
            dev,
            cfg,
            clip: None,
        };
        adam.alloc_clip(&cfg, OP)?;
        Ok(adam)
    }

    /// Allocates the clipping buffers when `cfg` asks for clipping and they are not there
    /// yet (outside any graph capture: `new`, `set_config`, `restore`), before the
    /// settings that need them are taken: the update clips only when both are there.
    fn alloc_clip(&mut self, cfg: &AdamConfig, op: &'static str) -> Result<()> {
        if cfg.max_grad_norm.is_some() && self.clip.is_none() {
            let stream = self.dev.stream();
            let blocks = clip_partials_len(&self.dev, self.m.len());
            self.clip = Some((stream.alloc_zeros(blocks).op(op)?, stream.alloc_zeros(1).op(op)?));
        }
        Ok(())
    }

    /// The settings.
    pub fn config(&self) -> &AdamConfig {
        &self.cfg
    }

    /// Changes the learning rate (or any setting) from the next step on.
    pub fn set_config(&mut self, cfg: AdamConfig) -> Result<()> {
        cfg.validate("AdamW::set_config")?;
        self.alloc_clip(&cfg, "AdamW::set_config")?;
        self.cfg = cfg;
        Ok(())
    }

    /// One step. With a scaler, the gradients are divided by its scale inside the update
    /// (unless it already unscaled them) and nothing changes when its `found_inf` is set:
    /// master weights, moments, step count and working copy stay bit-identical.
    pub fn step<H: Half>(&mut self, arena: &mut ParamArena<H>, scaler: Option<&GradScaler>) -> Result<()> {
        const OP: &str = "AdamW::step";
        self.check_arena(OP, arena)?;
        let weights = arena.weights();
        let (master, working, grads) = arena.optimizer_views();
        let pending = scaler.and_then(|s| s.pending_scale());
        // Clipping by global norm: the kernels leave the scale that unscales and clips at
        // once, and the update divides by it instead of the loss scale.
        if let (Some(max_norm), Some((partial, eff))) = (self.cfg.max_grad_norm, self.clip.as_mut()) {
            let mut bufs = ClipBuffers { partial: partial.as_view_mut(), scale: eff.as_view_mut() };
            clip_grad_norm(&self.dev, &grads, pending.as_ref(), max_norm, &mut bufs)?;
        }
        let scale = match (&self.clip, self.cfg.max_grad_norm) {
            (Some((_, eff)), Some(_)) => Some(eff.as_view()),
            _ => pending,
        };
        let mut scalars =
            AdamScalars { step: self.step.as_view_mut(), scale, found_inf: scaler.and_then(|s| s.skip_flag()) };
        let (m, v) = (self.m.as_view_mut(), self.v.as_view_mut());
        match (master, weights) {
            (Some(params), _) => {
                let mut tensors = AdamTensors { params, grads, m, v, copy: Some(working) };
                adamw_step(&self.dev, &mut tensors, &mut scalars, &self.cfg)
            }
            (None, Weights::PureBf16 { seed }) => {
                let mut tensors = AdamPureTensors { params: working, grads, m, v };
                adamw_pure(&self.dev, &mut tensors, &mut scalars, &self.cfg, seed)
            }
            (None, Weights::Master) => {
                Err(Error::InvalidArgument { op: OP, what: "arena", why: "master weights are missing".into() })
            }
        }
    }

    /// Steps taken, skipped ones not counted (synchronizes).
    pub fn steps_taken(&self) -> Result<f32> {
        Ok(self.dev.to_host("AdamW::steps_taken", &self.step)?[0])
    }

    /// The first and second moments, the whole arena each (synchronizes).
    pub fn moments_to_host(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        const OP: &str = "AdamW::moments_to_host";
        Ok((self.dev.to_host(OP, &self.m)?, self.dev.to_host(OP, &self.v)?))
    }

    /// The whole training state on the host (synchronizes).
    pub fn checkpoint<H: Half>(&self, arena: &ParamArena<H>, scaler: Option<&GradScaler>) -> Result<Checkpoint> {
        const OP: &str = "AdamW::checkpoint";
        self.check_arena(OP, arena)?;
        let (m, v) = self.moments_to_host()?;
        Ok(Checkpoint {
            layout: arena.layout().clone(),
            adam: self.cfg,
            step: self.steps_taken()?,
            master: arena.master_to_host()?,
            m,
            v,
            scaler: scaler.map(|s| s.state()).transpose()?,
        })
    }

    /// Writes [`checkpoint`](Self::checkpoint) to `path` (format in [`Checkpoint`]).
    pub fn save<H: Half>(
        &self,
        path: impl AsRef<Path>,
        arena: &ParamArena<H>,
        scaler: Option<&GradScaler>,
    ) -> Result<()> {
        self.checkpoint(arena, scaler)?.save(path)
    }

    /// Restores a checkpoint into this optimizer, `arena` (master weights, and the working
    /// copy cast from them) and `scaler`. The layout must match the arena's exactly, and a
    /// scaler must be given exactly when the checkpoint has one. Nothing is changed when
    /// any of that does not hold.
    pub fn restore<H: Half>(
        &mut self,
        ckpt: &Checkpoint,
        arena: &mut ParamArena<H>,
        scaler: Option<&mut GradScaler>,
    ) -> Result<()> {
        const OP: &str = "AdamW::restore";
        self.check_arena(OP, arena)?;
        if ckpt.layout != *arena.layout() {
            return Err(Error::Checkpoint {
                op: OP,
                why: "the checkpoint's parameter layout differs from the arena's".into(),
            });
        }
        let total = arena.layout().total();
        for (what, got) in [("master", ckpt.master.len()), ("m", ckpt.m.len()), ("v", ckpt.v.len())] {
            if got != total {
                return Err(Error::LengthMismatch { op: OP, what, expected: total, got });
            }
        }
        ckpt.adam.validate(OP)?;
        let scaler = match (scaler, &ckpt.scaler) {
            (Some(s), Some(state)) => {
                state.config.validate(OP)?;
                Some((s, state))
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(Error::Checkpoint { op: OP, why: "a scaler was given but the checkpoint has none".into() })
            }
            (None, Some(_)) => {
                return Err(Error::Checkpoint {
                    op: OP,
                    why: "the checkpoint has a scaler state but none was given".into(),
                })
            }
        };
        // A checkpoint that clips needs the clipping buffers (without them the update
        // would silently not clip).
        self.alloc_clip(&ckpt.adam, OP)?;
        let stream = self.dev.stream().clone();
        stream.memcpy_htod(&ckpt.m, &mut self.m).op(OP)?;
        stream.memcpy_htod(&ckpt.v, &mut self.v).op(OP)?;
        stream.memcpy_htod(&[ckpt.step], &mut self.step).op(OP)?;
        arena.set_master(&ckpt.master)?;
        if let Some((s, state)) = scaler {
            s.load_state(state)?;
        }
        self.cfg = ckpt.adam;
        Ok(())
    }

    /// Reads `path` and [`restore`](Self::restore)s it.
    pub fn load<H: Half>(
        &mut self,
        path: impl AsRef<Path>,
        arena: &mut ParamArena<H>,
        scaler: Option<&mut GradScaler>,
    ) -> Result<()> {
        let ckpt = Checkpoint::load(path)?;
        self.restore(&ckpt, arena, scaler)
    }

    fn check_arena<H: Half>(&self, op: &'static str, arena: &ParamArena<H>) -> Result<()> {
        let n = arena.layout().total();
        if self.m.len() != n {
            return Err(Error::LengthMismatch { op, what: "arena", expected: self.m.len(), got: n });
        }
        Ok(())
    }
}
