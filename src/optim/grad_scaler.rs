//! Dynamic loss scaling with PyTorch GradScaler's rule, its state on the device.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut};

use crate::device::Device;
use crate::dtype::Element;
use crate::error::{DriverContext, Error, Result};
use crate::kernels::loss_scale::{update_scale, ScaleRule};
use crate::kernels::unscale::unscale_check;
use crate::optim::ScalerState;

/// GradScaler settings, with torch.cuda.amp.GradScaler's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradScalerConfig {
    /// The first scale; finite and > 0. Default 65536 (2^16).
    pub init_scale: f32,
    /// Growth, backoff and interval.
    pub rule: ScaleRule,
    /// When false the scale is 1 and never changes (as a disabled torch GradScaler):
    /// the training step of bf16, whose range is f32's.
    pub enabled: bool,
    /// With scaling off, still check the gradients for inf and NaN and skip a step that
    /// has any (the check is fused into the kernels that write the gradients, so it
    /// costs no pass): default true, so a bf16 run skips a non-finite step as an f16 run
    /// does. False with `enabled` false passes everything through, as PyTorch without a
    /// GradScaler. Scaling on always checks.
    pub skip_nonfinite: bool,
}

impl Default for GradScalerConfig {
    fn default() -> Self {
        GradScalerConfig { init_scale: 65536.0, rule: ScaleRule::default(), enabled: true, skip_nonfinite: true }
    }
}

impl GradScalerConfig {
    /// Whether the gradients are checked for inf and NaN (and a step that has any skipped).
    pub fn checks(&self) -> bool {
        self.enabled || self.skip_nonfinite
    }

    /// Rejects settings PyTorch rejects: a non-positive or non-finite scale, growth <= 1,
    /// backoff outside (0, 1), an interval < 1.
    pub fn validate(&self, op: &'static str) -> Result<()> {
        if !(self.init_scale.is_finite() && self.init_scale > 0.0) {
            return Err(Error::InvalidArgument {
                op,
                what: "init_scale",
                why: format!("{} must be finite and > 0", self.init_scale),
            });
        }
        self.rule.validate(op)
    }
}

/// The loss scale, its growth tracker and the `found_inf` flag, each one element of
/// device memory. Only [`scale`](Self::scale), [`growth_tracker`](Self::growth_tracker),
/// [`found_inf`](Self::found_inf) and [`state`](Self::state) synchronize.
pub struct GradScaler {
    dev: Arc<Device>,
    cfg: GradScalerConfig,
    scale: CudaSlice<f32>,
    growth_tracker: CudaSlice<i32>,
    found_inf: CudaSlice<f32>,
    /// Whether this step's gradients were divided by the scale already, so the optimizer
    /// must not divide again (torch's per-optimizer "unscaled" stage).
    unscaled: bool,
}

impl GradScaler {
    /// A scaler at `cfg.init_scale` (1 when disabled).
    pub fn new(dev: &Arc<Device>, cfg: GradScalerConfig) -> Result<Self> {
        const OP: &str = "GradScaler::new";
        cfg.validate(OP)?;
        let stream = dev.stream();
        let scale = if cfg.enabled { cfg.init_scale } else { 1.0 };
        Ok(GradScaler {
            dev: dev.clone(),
            cfg,
            scale: stream.clone_htod(&[scale]).op(OP)?,
            growth_tracker: stream.alloc_zeros::<i32>(1).op(OP)?,
            found_inf: stream.alloc_zeros::<f32>(1).op(OP)?,
            unscaled: false,
        })
    }

    /// The settings.
    pub fn config(&self) -> &GradScalerConfig {
        &self.cfg
    }

    /// The device scalar the loss gradient is seeded with.
    pub fn scale_view(&self) -> CudaView<'_, f32> {
        self.scale.as_view()
    }

    /// The device flag: non-zero when this step's gradients held an inf or NaN.
    pub fn found_inf_view(&self) -> CudaView<'_, f32> {
        self.found_inf.as_view()
    }

    /// The scale the optimizer must divide the gradients by this step, or `None` when
    /// they are already unscaled or scaling is off.
    pub(crate) fn pending_scale(&self) -> Option<CudaView<'_, f32>> {
        (self.cfg.enabled && !self.unscaled).then(|| self.scale.as_view())
    }

    /// Clears `found_inf` for a step whose gradients are checked as they are written
    /// (the fused check: [`gemm_checking`](crate::kernels::gemm::gemm_checking) and
    /// [`bias_grad_checking`](crate::kernels::reduce::bias_grad_checking) raise
    /// it through [`GradScaler::found_inf_view_mut`]), instead of by a pass over them
    /// after the backward ([`GradScaler::check`]). Call it before the backward.
    pub fn clear_found_inf(&mut self) -> Result<()> {
        self.dev.stream().memset_zeros(&mut self.found_inf).op("GradScaler::clear_found_inf")
    }

    /// `found_inf`, for the kernels that raise it as they write gradients; `None` when
    /// nothing is checked (scaling off and `skip_nonfinite` false: nothing is skipped
    /// then, as in PyTorch without a GradScaler).
    pub fn found_inf_view_mut(&mut self) -> Option<CudaViewMut<'_, f32>> {
        self.cfg.checks().then(|| self.found_inf.as_view_mut())
    }

    /// `found_inf` for the optimizer to skip on, `None` when nothing is checked.
    pub(crate) fn skip_flag(&self) -> Option<CudaView<'_, f32>> {
        self.cfg.checks().then(|| self.found_inf.as_view())
    }

    /// Clears `found_inf`, then reads `grads` once and raises it on any inf or NaN;
    /// writes nothing else. The optimizer divides by the scale itself.
    pub fn check<G: Element>(&mut self, grads: &mut CudaViewMut<'_, G>) -> Result<()> {
        self.check_or_unscale(grads, false)
    }

    /// Clears `found_inf`, divides `grads` by the scale in place and raises `found_inf`
    /// on any inf or NaN. The optimizer then does not divide again this step.
    pub fn unscale<G: Element>(&mut self, grads: &mut CudaViewMut<'_, G>) -> Result<()> {
        self.check_or_unscale(grads, true)
    }

    fn check_or_unscale<G: Element>(&mut self, grads: &mut CudaViewMut<'_, G>, unscale: bool) -> Result<()> {
        if !self.cfg.checks() {
            return Ok(());
        }
        // Scaling off: the scale is 1, so unscaling is only the check.
        let unscale = unscale && self.cfg.enabled;
        if self.unscaled {
            return Err(Error::InvalidArgument {
                op: "GradScaler::unscale",
                what: "grads",
                why: "already unscaled this step; call update() first".into(),
            });
        }
        self.dev.stream().memset_zeros(&mut self.found_inf).op("GradScaler::check")?;
        let scale = self.scale.as_view();
        unscale_check(&self.dev, grads, unscale.then_some(&scale), &mut self.found_inf.as_view_mut())?;
        self.unscaled = unscale;
        Ok(())
    }

    /// Ends the step: backs the scale off if `found_inf` is set, else counts a clean step
    /// and grows the scale every `growth_interval` of them.
    pub fn update(&mut self) -> Result<()> {
        self.unscaled = false;
        if !self.cfg.enabled {
            return Ok(());
        }
        update_scale(
            &self.dev,
            &mut self.scale.as_view_mut(),
            &mut self.growth_tracker.as_view_mut(),
            &self.found_inf.as_view(),
            &self.cfg.rule,
        )
    }

    /// The current scale (synchronizes).
    pub fn scale(&self) -> Result<f32> {
        Ok(self.dev.to_host("GradScaler::scale", &self.scale)?[0])
    }

    /// Clean steps since the last growth or backoff (synchronizes).
    pub fn growth_tracker(&self) -> Result<i32> {
        Ok(self.dev.to_host("GradScaler::growth_tracker", &self.growth_tracker)?[0])
    }

    /// Whether the last checked gradients held an inf or NaN (synchronizes).
    pub fn found_inf(&self) -> Result<bool> {
        Ok(self.dev.to_host("GradScaler::found_inf", &self.found_inf)?[0] != 0.0)
    }

    /// Everything a checkpoint needs (synchronizes).
    pub fn state(&self) -> Result<ScalerState> {
        Ok(ScalerState { config: self.cfg, scale: self.scale()?, growth_tracker: self.growth_tracker()? })
    }

    /// Restores a saved state.
    pub fn load_state(&mut self, state: &ScalerState) -> Result<()> {
        const OP: &str = "GradScaler::load_state";
        state.config.validate(OP)?;
        let stream = self.dev.stream().clone();
        stream.memcpy_htod(&[state.scale], &mut self.scale).op(OP)?;
        stream.memcpy_htod(&[state.growth_tracker], &mut self.growth_tracker).op(OP)?;
        stream.memset_zeros(&mut self.found_inf).op(OP)?;
        self.cfg = state.config;
        self.unscaled = false;
        Ok(())
    }
}
