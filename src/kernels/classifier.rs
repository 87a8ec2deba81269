//! Launcher for `cuda/classifier.cu`: llm.c's fused classifier. The softmax cross-entropy
//! loss of every row and its gradient with respect to the logits in one pass per row, the
//! probabilities never stored, the loss-scale seed fused in; then the mean loss with
//! reduce.cu's `sum_f32`, as for [`super::loss::cross_entropy_forward`].

use cudarc::driver::{CudaView, CudaViewMut, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};

use super::{check_device, check_optional_scalar, check_scalar, half_kernel, optional_ptr, reduce};
use crate::device::Device;
use crate::dtype::Half;
use crate::error::{DriverContext, Error, Result};
use crate::ptx;

/// Threads per block, one block per row (`CLASSIFIER_THREADS` in classifier.cu).
const CLASSIFIER_THREADS: u32 = 256;

/// The shape of the classifier: `rows` rows of `padded_vocab` logits, of which the first
/// `vocab` are real classes and the rest padding (llm.c pads 50257 to 50304 so the
/// output projection's GEMM is tile-friendly): padding is never read and its gradient is 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassifierShape {
    /// Rows (tokens): `B * T`.
    pub rows: usize,
    /// Real classes `V`, at least 1.
    pub vocab: usize,
    /// The row length `Vp >= V`.
    pub padded_vocab: usize,
}

/// Where the mean loss goes: `out[0] = beta * out[0] + alpha * sum_r losses[r] / rows`
/// (computed as `(alpha / rows) * sum`, as the cross-entropy's mean; `beta = 0` does not
/// read the old value, `beta = 1` accumulates micro-batches).
pub struct MeanLoss<'a, 'b> {
    /// One f32 on the device.
    pub out: &'b mut CudaViewMut<'a, f32>,
    /// Multiplies the mean.
    pub alpha: f32,
    /// Multiplies the old value.
    pub beta: f32,
}

impl ClassifierShape {
    fn check(&self, op: &'static str) -> Result<usize> {
        let invalid = |what, why: String| Error::InvalidArgument { op, what, why: format!("{why} ({self:?})") };
        if self.vocab == 0 {
            return Err(invalid("vocab", "a classifier needs at least one class".into()));
        }
        if self.padded_vocab < self.vocab {
            return Err(invalid("padded_vocab", "the padded row is shorter than the vocabulary".into()));
        }
        if self.vocab > i32::MAX as usize {
            return Err(invalid("vocab", "labels are i32".into()));
        }
        if self.rows > i32::MAX as usize {
            return Err(invalid("rows", "more rows than the grid holds".into()));
        }
        self.rows
            .checked_mul(self.padded_vocab)
            .filter(|&n| n <= i64::MAX as usize)
            .ok_or_else(|| invalid("shape", "rows x padded_vocab overflows".into()))
    }
}

fn check_len(op: &'static str, what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::LengthMismatch { op, what, expected, got })
    }
}

/// The fused classifier, `dlogits` separate from `logits`. Per row `r`, over the real
/// classes `j < V` (`m` the row max, `s = sum_j expf(z_j - m)`):
///
/// - `losses[r] = logf(s) + m - z[labels[r]]` (f32);
/// - `dlogits[r, j] = half((expf(z_j - m) / s - [j == labels[r]]) * g)`, and 0 in the
///   padding columns, with `g = weight * scale / rows` in f32 (`scale` the loss scale on
///   the device, `None`: 1, loss scaling off): the gradient of `weight * mean(losses)`
///   seeded with the loss scale;
/// - with `mean`, `mean.out = mean.beta * mean.out + mean.alpha * sum(losses) / rows` in a
///   second launch (deterministic: fixed-order reduction).
///
/// A label outside `[0, V)` gives that row a NaN loss and NaN gradients (never an
/// out-of-bounds read; check labels on the host where an error is wanted). `expf` and
/// `logf` are the accurate functions. Every argument is checked before the first launch.
#[allow(clippy::too_many_arguments)]
pub fn fused_classifier<H: Half>(
    dev: &Device,
    shape: ClassifierShape,
    logits: &impl DevicePtr<H>,
    labels: &impl DevicePtr<i32>,
    scale: Option<&CudaView<'_, f32>>,
    weight: f32,
    losses: &mut (impl DevicePtr<f32> + DevicePtrMut<f32>),
    dlogits: &mut impl DevicePtrMut<H>,
    mean: Option<MeanLoss<'_, '_>>,
) -> Result<()> {
    let op = half_kernel::<H>(["fused_classifier_f16", "fused_classifier_bf16"]);
    let n = shape.check(op)?;
    check_len(op, "logits", n, logits.len())?;
    check_len(op, "dlogits", n, dlogits.len())?;
    check_device(op, dev, logits)?;
    check_device(op, dev, dlogits)?;
    let stream = dev.stream();
    let (z_ptr, _z) = logits.device_ptr(stream);
    let (dz_ptr, _dz) = dlogits.device_ptr_mut(stream);
    launch(dev, op, shape, z_ptr, dz_ptr, labels, scale, weight, losses, mean)
}

/// [`fused_classifier`] with the gradient written over the logits (llm.c's way: the
/// logits are not needed after the loss, and the `(rows, Vp)` buffer is the step's
/// largest activation). Each element is read before it is overwritten (cuda/classifier.cu).
#[allow(clippy::too_many_arguments)]
pub fn fused_classifier_in_place<H: Half>(
    dev: &Device,
    shape: ClassifierShape,
    logits: &mut impl DevicePtrMut<H>,
    labels: &impl DevicePtr<i32>,
    scale: Option<&CudaView<'_, f32>>,
    weight: f32,
    losses: &mut (impl DevicePtr<f32> + DevicePtrMut<f32>),
    mean: Option<MeanLoss<'_, '_>>,
) -> Result<()> {
    let op = half_kernel::<H>(["fused_classifier_f16", "fused_classifier_bf16"]);
    let n = shape.check(op)?;
    check_len(op, "logits", n, logits.len())?;
    check_device(op, dev, logits)?;
    let stream = dev.stream();
    let (z_ptr, _z) = logits.device_ptr_mut(stream);
    launch(dev, op, shape, z_ptr, z_ptr, labels, scale, weight, losses, mean)
}

/// The checks the two entry points share, then the kernel and the mean. `z_ptr` and
/// `dz_ptr` hold `rows * padded_vocab` elements on this device (checked by the caller).
#[allow(clippy::too_many_arguments)]
fn launch(
    dev: &Device,
    op: &'static str,
    shape: ClassifierShape,
    z_ptr: u64,
    dz_ptr: u64,
    labels: &impl DevicePtr<i32>,
    scale: Option<&CudaView<'_, f32>>,
    weight: f32,
    losses: &mut (impl DevicePtr<f32> + DevicePtrMut<f32>),
    mean: Option<MeanLoss<'_, '_>>,
) -> Result<()> {
    check_len(op, "labels", shape.rows, labels.len())?;
    check_len(op, "losses", shape.rows, losses.len())?;
    check_device(op, dev, labels)?;
    check_device(op, dev, losses)?;
    check_optional_scalar(op, "scale", dev, scale)?;
    if !weight.is_finite() {
        return Err(Error::InvalidArgument { op, what: "weight", why: "must be finite".into() });
    }
    if let Some(m) = &mean {
        check_scalar(op, "mean.out", &*m.out)?;
        check_device(op, dev, &*m.out)?;
        for (what, v) in [("mean.alpha", m.alpha), ("mean.beta", m.beta)] {
            if !v.is_finite() {
                return Err(Error::InvalidArgument { op, what, why: "must be finite".into() });
            }
        }
    }
    if shape.rows == 0 {
        // No row: the mean of nothing is not defined; leave `out` as it is.
        return Ok(());
    }
    let func = dev.function(&ptx::CLASSIFIER, op)?;
    // The mean's kernel is loaded before the first launch too, so a failure to load it
    // cannot leave the classifier queued alone.
    if mean.is_some() {
        dev.function(&ptx::REDUCE, "sum_f32")?;
    }
    let stream = dev.stream();
    {
        let (l_ptr, _l) = labels.device_ptr(stream);
        let (s_ptr, _s) = optional_ptr(scale, stream);
        let (o_ptr, _o) = losses.device_ptr_mut(stream);
        let (rows, v, vp) = (shape.rows as i64, shape.vocab as i64, shape.padded_vocab as i64);
        let mut launch = stream.launch_builder(&func);
        launch.arg(&z_ptr).arg(&dz_ptr).arg(&l_ptr).arg(&s_ptr).arg(&o_ptr).arg(&rows).arg(&v).arg(&vp).arg(&weight);
        let cfg = LaunchConfig {
            grid_dim: (shape.rows as u32, 1, 1),
            block_dim: (CLASSIFIER_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: arguments match `fused_classifier_<h>(const H*, H*, const int32_t*, const
        // float*, float*, int64_t, int64_t, int64_t, float)` in cuda/classifier.cu; logits
        // and dlogits (possibly the same buffer, which the kernel allows: neither is
        // __restrict__ and each element is read before it is written) hold rows * Vp
        // elements, labels and losses rows, scale one or is null, all in this device's
        // context (checked above); one block of CLASSIFIER_THREADS per row, rows < 2^31.
        unsafe { launch.launch(cfg) }.op(op)?;
    }
    if let Some(m) = mean {
        let factor = m.alpha / shape.rows as f32;
        reduce::sum_f32(dev, losses, m.out, factor, m.beta)?;
    }
    Ok(())
}
