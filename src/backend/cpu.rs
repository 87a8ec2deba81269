//! The CPU reference of each kernel, written for clarity, not speed. The parity tests
//! compare the GPU with these; on machines with no GPU they are what runs.
//!
//! Rounding follows the GPU exactly where the GPU rounds: f32 -> f16 is IEEE round to
//! nearest even with overflow to ±inf (the `half` crate, like `cvt.rn.f16.f32`).
//!
//! DESIGN.md's two CPU modes map onto these functions by their element types:
//! Fp32 keeps gradients in f32 and passes no fp16 copy; Mixed
//! stores gradients as f16 (so they overflow where the GPU's do, and `found_inf`,
//! skipped steps and scale updates behave as on the GPU) and writes the fp16 copy.

use half::f16;

use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::kernels::adam::{AdamConfig, AdamMode};
use crate::kernels::gemm::{host_matmul, Activation, GemmShape};
use crate::kernels::loss_scale::ScaleRule;

/// CPU reference of [`kernels::cast::cast_f32_f16`](crate::kernels::cast::cast_f32_f16).
pub fn cast_f32_f16(x: &[f32], y: &mut [f16]) -> Result<()> {
    check_lengths("cpu::cast_f32_f16", x.len(), y.len())?;
    y.iter_mut().zip(x).for_each(|(y, &x)| *y = f16::from_f32(x));
    Ok(())
}

/// CPU reference of [`kernels::cast::cast_f16_f32`](crate::kernels::cast::cast_f16_f32).
pub fn cast_f16_f32(x: &[f16], y: &mut [f32]) -> Result<()> {
    check_lengths("cpu::cast_f16_f32", x.len(), y.len())?;
    y.iter_mut().zip(x).for_each(|(y, &x)| *y = x.to_f32());
    Ok(())
}

fn check_lengths(op: &'static str, x: usize, y: usize) -> Result<()> {
    if x == y {
        Ok(())
    } else {
        Err(Error::LengthMismatch { op, what: "y", expected: x, got: y })
    }
}

/// CPU reference of [`kernels::unscale::unscale_check`](crate::kernels::unscale::unscale_check):
/// `g *= (f32)(1 / (f64)scale)` (nothing written when `scale` is `None`), and
/// `*found_inf = 1.0` if any gradient was inf or NaN before scaling.
pub fn unscale_check<G: Element>(grads: &mut [G], scale: Option<f32>, found_inf: &mut f32) {
    let inv = scale.map(|s| (1.0 / s as f64) as f32);
    for g in grads.iter_mut() {
        let x = g.to_f32();
        if !x.is_finite() {
            *found_inf = 1.0;
        }
        if let Some(inv) = inv {
            *g = G::from_f32(x * inv);
        }
    }
}

/// CPU reference of `adam_count_step`: the step count advances unless found_inf is set.
pub fn adam_count_step(step: &mut f32, found_inf: Option<f32>) {
    if found_inf.is_none_or(|f| f == 0.0) {
        *step += 1.0;
    }
}

/// CPU reference of [`kernels::adam::adamw_step`](crate::kernels::adam::adamw_step)
/// after the step count has been advanced: the same operations in the same mixed
/// f64/f32 precision as cuda/adam.cu (which follows torch's fused AdamW).
#[allow(clippy::too_many_arguments)]
pub fn adamw_update<G: Element>(
    params: &mut [f32],
    grads: &[G],
    m: &mut [f32],
    v: &mut [f32],
    mut copy: Option<&mut [f16]>,
    step: f32,
    scale: Option<f32>,
    found_inf: Option<f32>,
    cfg: &AdamConfig,
) -> Result<()> {
    const OP: &str = "cpu::adamw_update";
    cfg.validate(OP)?;
    let n = params.len();
    for (what, got) in [("grads", grads.len()), ("m", m.len()), ("v", v.len())]
        .into_iter()
        .chain(copy.as_ref().map(|c| ("copy", c.len())))
    {
        if got != n {
            return Err(Error::LengthMismatch { op: OP, what, expected: n, got });
        }
    }
    if found_inf.is_some_and(|f| f != 0.0) {
        return Ok(());
    }
    let bc1 = (1.0 - cfg.beta1.powf(step as f64)) as f32;
    let bc2 = (1.0 - cfg.beta2.powf(step as f64)) as f32;
    let step_size = (cfg.lr / bc1 as f64) as f32;
    let bc2_sqrt = bc2.sqrt();
    for i in 0..n {
        let mut g = grads[i].to_f32();
        let mut p = params[i];
        if let Some(s) = scale {
            g = (g as f64 / s as f64) as f32;
        }
        if cfg.weight_decay != 0.0 {
            match cfg.mode {
                AdamMode::AdamW => p = (p as f64 - cfg.lr * cfg.weight_decay * p as f64) as f32,
                AdamMode::Adam => g = (g as f64 + p as f64 * cfg.weight_decay) as f32,
            }
        }
        m[i] = (cfg.beta1 * m[i] as f64 + (1.0 - cfg.beta1) * g as f64) as f32;
        v[i] = (cfg.beta2 * v[i] as f64 + (1.0 - cfg.beta2) * g as f64 * g as f64) as f32;
        let denom = ((v[i].sqrt() / bc2_sqrt) as f64 + cfg.eps) as f32;
        p -= step_size * m[i] / denom;
        params[i] = p;
        if let Some(c) = copy.as_deref_mut() {
            c[i] = f16::from_f32(p);
        }
    }
    Ok(())
}

/// CPU reference of [`kernels::loss_scale::update_scale`](crate::kernels::loss_scale::update_scale).
pub fn update_scale(scale: &mut f32, growth_tracker: &mut i32, found_inf: f32, rule: &ScaleRule) {
    if found_inf != 0.0 {
        *scale = (*scale as f64 * rule.backoff) as f32;
        *growth_tracker = 0;
        return;
    }
    let successful = *growth_tracker + 1;
    if successful == rule.growth_interval {
        let grown = (*scale as f64 * rule.growth) as f32;
        if grown.is_finite() {
            *scale = grown;
        }
        *growth_tracker = 0;
    } else {
        *growth_tracker = successful;
    }
}

/// GELU, tanh approximation, as the GEMM epilogue computes it.
pub fn gelu_tanh(x: f32) -> f32 {
    const K0: f32 = 0.797_884_6; // sqrt(2 / pi)
    const K1: f32 = 0.044715;
    0.5 * x * (1.0 + (K0 * (x + K1 * x * x * x)).tanh())
}

/// CPU reference of [`kernels::gemm::gemm`](crate::kernels::gemm::gemm) in f32:
/// `c = act(alpha * op(a) op(b) + beta * c + bias)`, `pre` receiving the value before
/// the activation. Operands are f32 here; the Mixed mode rounds them to f16 first.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    shape: &GemmShape,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    alpha: f32,
    beta: f32,
    bias: Option<&[f32]>,
    mut pre: Option<&mut [f32]>,
    activation: Activation,
) -> Result<()> {
    const OP: &str = "cpu::gemm";
    shape.validate(OP, a.len(), b.len(), c.len(), bias.map(<[f32]>::len), pre.as_ref().map(|p| p.len()))?;
    let mut prod = vec![0.0f32; shape.m * shape.n];
    let dense = GemmShape { ldc: shape.n, ..*shape };
    host_matmul(&dense, a, b, &mut prod)?;
    for i in 0..shape.m {
        for j in 0..shape.n {
            let o = i * shape.ldc + j;
            let mut v = alpha * prod[i * shape.n + j];
            if beta != 0.0 {
                v += beta * c[o];
            }
            if let Some(bias) = bias {
                v += bias[j];
            }
            if let Some(pre) = pre.as_deref_mut() {
                pre[o] = v;
            }
            c[o] = match activation {
                Activation::None => v,
                Activation::Relu => v.max(0.0),
                Activation::Gelu => gelu_tanh(v),
            };
        }
    }
    Ok(())
}
