//! The optimizer side of a mixed-precision step: [`GradScaler`] (dynamic loss scale,
//! state on the device) and [`AdamW`] (fp32 master weights and moments, writing the fp16
//! working copy), and their checkpoint format.
//!
//! A step, with no host synchronization anywhere:
//! 1. backward seeds the loss gradient with [`GradScaler::scale_view`];
//! 2. [`GradScaler::check`] reads the gradients once and sets `found_inf` (or
//!    [`GradScaler::unscale`], which also divides them, for code that needs the true
//!    gradients, such as clipping);
//! 3. [`AdamW::step`] divides by the scale inside its own pass (unless the gradients were
//!    already unscaled) and changes nothing when `found_inf` is set;
//! 4. [`GradScaler::update`] backs off or grows the scale.
//!
//! Bytes per parameter with f32 gradients: 4 (check) + 30 (AdamW with the fp16 copy) = 34;
//! with f16 gradients 2 + 28 = 30. PyTorch's unscale + fused AdamW + autocast's cast
//! moves about 42.

mod adamw;
mod checkpoint;
mod grad_scaler;

pub use crate::kernels::adam::{AdamConfig, AdamMode};
pub use crate::kernels::loss_scale::ScaleRule;
pub use adamw::AdamW;
pub use checkpoint::{Checkpoint, ScalerState, CHECKPOINT_VERSION};
pub use grad_scaler::{GradScaler, GradScalerConfig};
