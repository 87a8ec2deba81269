//! The CPU reference of each kernel, written for clarity, not speed, and [`Cpu`], the
//! backend built on them. The parity tests compare the GPU with these; on machines with
//! no GPU they are what runs.
//!
//! Rounding follows the GPU exactly where the GPU rounds: f32 -> f16 is IEEE round to
//! nearest even with overflow to ±inf (the `half` crate, like `cvt.rn.f16.f32`).
//!
//! DESIGN.md's two CPU modes ([`Precision`]): `Fp32` computes everything in f32, the
//! reference for the parity tests; `Mixed` rounds to f16 exactly where the CUDA backend
//! stores f16 (uploaded inputs, the working weights, every linear layer's output and
//! pre-activation, activation gradients, the loss gradient), keeps the weight
//! gradients in f32 as the GPU's gradient arena does, and so overflows where the GPU
//! overflows: loss scaling, skipped steps and scale updates behave as on the GPU.
//! The optimizer references below are generic over the gradient type, for the f16
//! gradients engines may pass to the kernels directly.

use half::{bf16, f16};

use crate::backend::{check_same_shape, Backend, ParamsSnapshot, TransformerBackend};
use crate::dtype::{DType, Element, Half};
use crate::error::{Error, Result};
use crate::kernels::adam::{AdamConfig, AdamMode, LrSchedule};
use crate::kernels::gemm::{host_matmul, Activation, GemmShape, Transpose};
use crate::kernels::loss_scale::ScaleRule;
use crate::nn::{ArenaLayout, ParamArena, ParamSpec, Weights};
use crate::optim::{Checkpoint, GradScalerConfig, ScalerState};

mod transformer;
pub use transformer::*;

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

/// CPU reference of [`kernels::adam::clip_grad_norm`](crate::kernels::adam::clip_grad_norm):
/// the scale under which AdamW's `g / scale` is the unscaled gradient clipped to global
/// norm `max_norm` (`scale` `None`: the gradients are unscaled). The sum of squares is
/// sequential here and by blocks on the GPU, so the two may differ in the last bits.
pub fn clip_scale(grads: &[f32], scale: Option<f32>, max_norm: f64) -> f32 {
    let s = scale.map_or(1.0, |s| s as f64);
    let sumsq: f64 = grads.iter().map(|&g| g as f64 * g as f64).sum();
    let coef = max_norm / (sumsq.sqrt() / s + 1e-6);
    if coef < 1.0 {
        (s / coef) as f32
    } else {
        s as f32
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
/// f64/f32 precision as cuda/adam.cu (which follows torch's fused AdamW). `copy`, the
/// working copy, is f16 or bf16 (rounded to nearest even).
#[allow(clippy::too_many_arguments)]
pub fn adamw_update<G: Element, C: Half>(
    params: &mut [f32],
    grads: &[G],
    m: &mut [f32],
    v: &mut [f32],
    mut copy: Option<&mut [C]>,
    step: f32,
    scale: Option<f32>,
    found_inf: Option<f32>,
    cfg: &AdamConfig,
) -> Result<()> {
    const OP: &str = "cpu::adamw_update";
    let n = params.len();
    check_adam_lengths(OP, cfg, n, grads.len(), m.len(), v.len(), copy.as_ref().map(|c| c.len()))?;
    if found_inf.is_some_and(|f| f != 0.0) {
        return Ok(());
    }
    let k = AdamConsts::new(cfg, step);
    for i in 0..n {
        params[i] = k.update(params[i], grads[i].to_f32(), &mut m[i], &mut v[i], scale, cfg);
        if let Some(c) = copy.as_deref_mut() {
            c[i] = C::from_f32(params[i]);
        }
    }
    Ok(())
}

/// CPU reference of [`kernels::adam::adamw_pure`](crate::kernels::adam::adamw_pure)
/// after the step count has been advanced: bf16 weights with no master copy, the same
/// update as [`adamw_update`], each new weight rounded stochastically with the bits
/// [`sr_bits`]`(seed, step, i)`, as cuda/adam.cu does.
#[allow(clippy::too_many_arguments)]
pub fn adamw_pure_update<G: Element>(
    params: &mut [bf16],
    grads: &[G],
    m: &mut [f32],
    v: &mut [f32],
    step: f32,
    scale: Option<f32>,
    found_inf: Option<f32>,
    cfg: &AdamConfig,
    seed: u64,
) -> Result<()> {
    const OP: &str = "cpu::adamw_pure_update";
    let n = params.len();
    check_adam_lengths(OP, cfg, n, grads.len(), m.len(), v.len(), None)?;
    if found_inf.is_some_and(|f| f != 0.0) {
        return Ok(());
    }
    let k = AdamConsts::new(cfg, step);
    for i in 0..n {
        let p = k.update(params[i].to_f32(), grads[i].to_f32(), &mut m[i], &mut v[i], scale, cfg);
        params[i] = round_bf16_stochastic(p, sr_bits(seed, step as u32, i as u64));
    }
    Ok(())
}

/// The 16 random bits the pure-bf16 AdamW adds before truncating element `i` at
/// (`seed`, `step`): splitmix64's finalizer, as `sr_bits` in cuda/adam.cu.
pub fn sr_bits(seed: u64, step: u32, i: u64) -> u32 {
    let mut z = seed
        .wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i.wrapping_add(1)))
        .wrapping_add(0xC2B2_AE3D_27D4_EB4Fu64.wrapping_mul(step as u64));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z & 0xffff) as u32
}

/// `x` rounded to bf16 stochastically with the 16 random bits `r`: `r` is added to the
/// 16 bits bf16 drops and the sum truncated, so x rounds away from zero with probability
/// (dropped bits) / 2^16. inf and NaN round to nearest, as in cuda/adam.cu.
pub fn round_bf16_stochastic(x: f32, r: u32) -> bf16 {
    if !x.is_finite() {
        return bf16::from_f32(x);
    }
    bf16::from_bits((x.to_bits().wrapping_add(r) >> 16) as u16)
}

/// The learning rate of the step whose count (after its increment) is `step`, as
/// cuda/adam.cu's `scheduled_lr` computes it ([`LrSchedule`]), operation for operation,
/// so the two agree bit for bit.
pub fn scheduled_lr(cfg: &AdamConfig, step: f32) -> f64 {
    let LrSchedule::WarmupCosine { warmup_steps, decay_steps, min_lr } = cfg.schedule else { return cfg.lr };
    let it = step as f64 - 1.0;
    let (warmup, decay) = (warmup_steps as f64, decay_steps as f64);
    if it < warmup {
        return cfg.lr * (it + 1.0) / warmup;
    }
    if it > decay {
        return min_lr;
    }
    let ratio = if decay > warmup { (it - warmup) / (decay - warmup) } else { 1.0 };
    let coeff = 0.5 * (1.0 + cos_pi_unit(ratio));
    coeff.mul_add(cfg.lr - min_lr, min_lr)
}

/// `cos(pi r)` for `r` in `[0, 1]` by cuda/adam.cu's fixed polynomial (the same fmas in
/// the same order): within 4e-16 of the cosine, and bit-identical to the kernel's.
pub fn cos_pi_unit(r: f64) -> f64 {
    let upper = r > 0.5;
    let t = std::f64::consts::PI * if upper { 1.0 - r } else { r };
    let t2 = t * t;
    let coefficients = [
        -1.0 / 6402373705728000.0,
        1.0 / 20922789888000.0,
        -1.0 / 87178291200.0,
        1.0 / 479001600.0,
        -1.0 / 3628800.0,
        1.0 / 40320.0,
        -1.0 / 720.0,
        1.0 / 24.0,
        -0.5,
        1.0,
    ];
    let c = coefficients.iter().fold(1.0 / 2432902008176640000.0, |c: f64, &k| c.mul_add(t2, k));
    if upper {
        -c
    } else {
        c
    }
}

/// The per-step constants of the Adam update, as cuda/adam.cu's `adam_step_consts`.
struct AdamConsts {
    lr: f64,
    step_size: f32,
    bc2_sqrt: f32,
}

impl AdamConsts {
    fn new(cfg: &AdamConfig, step: f32) -> Self {
        let bc1 = (1.0 - cfg.beta1.powf(step as f64)) as f32;
        let bc2 = (1.0 - cfg.beta2.powf(step as f64)) as f32;
        let lr = scheduled_lr(cfg, step);
        AdamConsts { lr, step_size: (lr / bc1 as f64) as f32, bc2_sqrt: bc2.sqrt() }
    }

    /// One element: `adam_math` of cuda/adam.cu. Returns the new weight.
    fn update(&self, mut p: f32, mut g: f32, m: &mut f32, v: &mut f32, scale: Option<f32>, cfg: &AdamConfig) -> f32 {
        if let Some(s) = scale {
            g = (g as f64 / s as f64) as f32;
        }
        if cfg.weight_decay != 0.0 {
            match cfg.mode {
                AdamMode::AdamW => p = (p as f64 - self.lr * cfg.weight_decay * p as f64) as f32,
                AdamMode::Adam => g = cfg.weight_decay.mul_add(p as f64, g as f64) as f32,
            }
        }
        // nvcc contracts these f64 updates into fused multiply-adds (fma.rn.f64 in the
        // PTX of cuda/adam.cu, at every target): the reference fuses the same operations,
        // so the moments agree bit for bit (rounding the product first differs in the
        // last f32 bit for a few elements in a thousand).
        *m = cfg.beta1.mul_add(*m as f64, (1.0 - cfg.beta1) * g as f64) as f32;
        *v = cfg.beta2.mul_add(*v as f64, (1.0 - cfg.beta2) * g as f64 * g as f64) as f32;
        let denom = ((v.sqrt() / self.bc2_sqrt) as f64 + cfg.eps) as f32;
        p - self.step_size * *m / denom
    }
}

fn check_adam_lengths(
    op: &'static str,
    cfg: &AdamConfig,
    n: usize,
    grads: usize,
    m: usize,
    v: usize,
    copy: Option<usize>,
) -> Result<()> {
    cfg.validate(op)?;
    for (what, got) in [("grads", grads), ("m", m), ("v", v)].into_iter().chain(copy.map(|c| ("copy", c))) {
        if got != n {
            return Err(Error::LengthMismatch { op, what, expected: n, got });
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

/// The constants of GELU's tanh form: sqrt(2 / pi) and the cubic term's weight.
const GELU_K0: f32 = 0.797_884_6;
const GELU_K1: f32 = 0.044715;

/// GELU, tanh approximation, as the GEMM epilogue computes it.
pub fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + (GELU_K0 * (x + GELU_K1 * x * x * x)).tanh())
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
    act: Activation,
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
            c[o] = activation(v, act);
        }
    }
    Ok(())
}

/// ReLU as torch.relu: negative values become 0, NaN passes through (`f32::max` would
/// drop it, hiding a NaN input from the overflow check).
fn relu(x: f32) -> f32 {
    if x < 0.0 {
        0.0
    } else {
        x
    }
}

/// `act(x)`, as the GEMM epilogue and `activation_forward` compute it.
pub fn activation(x: f32, act: Activation) -> f32 {
    match act {
        Activation::None => x,
        Activation::Relu => relu(x),
        Activation::Gelu => gelu_tanh(x),
    }
}

/// `act'(x)` (ReLU'(0) = 0, as in PyTorch), for finite `x`. The backward does not always
/// multiply by it: see [`activation_grad`] for ReLU with non-finite values.
pub fn activation_derivative(x: f32, act: Activation) -> f32 {
    match act {
        Activation::None => 1.0,
        Activation::Relu => {
            if x > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        Activation::Gelu => {
            let t = (GELU_K0 * (x + GELU_K1 * x * x * x)).tanh();
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_K0 * (1.0 + 3.0 * GELU_K1 * x * x)
        }
    }
}

/// The gradient of `act` at `x` for an incoming gradient `dy`, as `act_backward` in
/// cuda/activation.cu computes it (in f32, before any f16 rounding):
///
/// - none: `dy`;
/// - ReLU: `if x <= 0 { 0 } else { dy }`, PyTorch's `threshold_backward`, a select rather
///   than `dy * relu'(x)`. An inf or NaN `dy` at a dead unit (`x <= 0`) gives 0, not
///   `inf * 0 = NaN`: the output does not depend on `x` there, so 0 is the exact gradient,
///   and an fp16 gradient that overflows only at dead units (it reaches no parameter)
///   does not set `found_inf`, so the step is taken, as in PyTorch AMP; the product would
///   skip it. A live unit passes `dy` through, inf and NaN included. A NaN `x` passes `dy`
///   through too (`NaN <= 0` is false, as in PyTorch; the forward already made the
///   output NaN, so the step is skipped anyway);
/// - GELU: `dy * gelu'(x)`, as PyTorch's `gelu_backward`: a non-finite `dy` always gives
///   a non-finite result (NaN where `gelu'(x)` is 0 in f32, which it is for `x` below
///   about -5.2), and an inf or NaN `x` gives NaN.
///
/// The CUDA kernel, both [`Precision`] modes and the autograd's fused linear backward all
/// go through this one function on the CPU side.
pub fn activation_grad(x: f32, dy: f32, act: Activation) -> f32 {
    match act {
        Activation::None => dy,
        Activation::Relu => {
            if x <= 0.0 {
                0.0
            } else {
                dy
            }
        }
        Activation::Gelu => dy * activation_derivative(x, act),
    }
}

/// CPU reference of [`kernels::activation::activation_backward`](crate::kernels::activation::activation_backward)
/// before the f16 rounding: `dx = activation_grad(pre, dy)` elementwise (`dy * act'(pre)`
/// for finite values; see [`activation_grad`] for ReLU with inf and NaN).
pub fn activation_backward(pre: &[f32], dy: &[f32], dx: &mut [f32], act: Activation) -> Result<()> {
    const OP: &str = "cpu::activation_backward";
    check_lengths(OP, pre.len(), dy.len())?;
    check_lengths(OP, pre.len(), dx.len())?;
    for ((d, &p), &g) in dx.iter_mut().zip(pre).zip(dy) {
        *d = activation_grad(p, g, act);
    }
    Ok(())
}

/// CPU reference of [`kernels::reduce::bias_grad`](crate::kernels::reduce::bias_grad):
/// `db[c] = beta * db[c] + sum_r dz[r, c]` (the old value not read when beta is 0).
pub fn bias_grad(dz: &[f32], rows: usize, cols: usize, db: &mut [f32], beta: f32) -> Result<()> {
    const OP: &str = "cpu::bias_grad";
    if rows.checked_mul(cols) != Some(dz.len()) {
        return Err(Error::ShapeMismatch { op: OP, expected: vec![rows, cols], got: vec![dz.len()] });
    }
    check_lengths(OP, cols, db.len())?;
    for (c, d) in db.iter_mut().enumerate() {
        let s: f32 = (0..rows).map(|r| dz[r * cols + c]).sum();
        *d = if beta == 0.0 { s } else { beta * *d + s };
    }
    Ok(())
}

/// Checks that `labels` has `rows` entries, all in `[0, classes)`: the host-side
/// validation the loss kernels rely on.
pub fn check_labels(op: &'static str, labels: &[u32], rows: usize, classes: usize) -> Result<()> {
    if labels.len() != rows {
        return Err(Error::LengthMismatch { op, what: "labels", expected: rows, got: labels.len() });
    }
    if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= classes) {
        return Err(Error::InvalidArgument {
            op,
            what: "labels",
            why: format!("label {l} at row {i} is out of range for {classes} classes"),
        });
    }
    Ok(())
}

fn check_loss_shape(op: &'static str, rows: usize, cols: usize, len: usize) -> Result<()> {
    if cols == 0 || rows.checked_mul(cols) != Some(len) {
        return Err(Error::ShapeMismatch { op, expected: vec![rows, cols], got: vec![len] });
    }
    Ok(())
}

/// CPU reference of [`kernels::loss::cross_entropy_forward`](crate::kernels::loss::cross_entropy_forward):
/// per-row `logsumexp(z) - z[label]` in f32.
pub fn cross_entropy_forward(z: &[f32], labels: &[u32], rows: usize, cols: usize) -> Result<Vec<f32>> {
    const OP: &str = "cpu::cross_entropy_forward";
    check_loss_shape(OP, rows, cols, z.len())?;
    check_labels(OP, labels, rows, cols)?;
    Ok((0..rows)
        .map(|r| {
            let row = &z[r * cols..(r + 1) * cols];
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let s: f32 = row.iter().map(|&x| (x - m).exp()).sum();
            s.ln() + m - row[labels[r] as usize]
        })
        .collect())
}

/// CPU reference of [`kernels::loss::cross_entropy_backward`](crate::kernels::loss::cross_entropy_backward)
/// before the f16 rounding: `dz = seed * (softmax(z) - onehot(label))`.
pub fn cross_entropy_backward(z: &[f32], labels: &[u32], rows: usize, cols: usize, seed: f32) -> Result<Vec<f32>> {
    const OP: &str = "cpu::cross_entropy_backward";
    check_loss_shape(OP, rows, cols, z.len())?;
    check_labels(OP, labels, rows, cols)?;
    let mut dz = vec![0.0f32; z.len()];
    for r in 0..rows {
        let row = &z[r * cols..(r + 1) * cols];
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let s: f32 = row.iter().map(|&x| (x - m).exp()).sum();
        for (c, (d, &x)) in dz[r * cols..(r + 1) * cols].iter_mut().zip(row).enumerate() {
            let onehot = if c == labels[r] as usize { 1.0 } else { 0.0 };
            *d = seed * ((x - m).exp() / s - onehot);
        }
    }
    Ok(dz)
}

/// CPU reference of [`kernels::loss::mse_forward`](crate::kernels::loss::mse_forward):
/// per-row `sum (p - t)^2`.
pub fn mse_forward(p: &[f32], t: &[f32], rows: usize, cols: usize) -> Result<Vec<f32>> {
    const OP: &str = "cpu::mse_forward";
    check_loss_shape(OP, rows, cols, p.len())?;
    check_loss_shape(OP, rows, cols, t.len())?;
    Ok((0..rows).map(|r| (r * cols..(r + 1) * cols).map(|i| (p[i] - t[i]) * (p[i] - t[i])).sum()).collect())
}

/// CPU reference of [`kernels::loss::mse_backward`](crate::kernels::loss::mse_backward)
/// before the f16 rounding: `dp = seed * 2 (p - t)`.
pub fn mse_backward(p: &[f32], t: &[f32], rows: usize, cols: usize, seed: f32) -> Result<Vec<f32>> {
    const OP: &str = "cpu::mse_backward";
    check_loss_shape(OP, rows, cols, p.len())?;
    check_loss_shape(OP, rows, cols, t.len())?;
    Ok(p.iter().zip(t).map(|(&p, &t)| seed * 2.0 * (p - t)).collect())
}

// ----------------------------------------------------------------------------
// The Cpu backend

/// Which numerics the [`Cpu`] backend follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// Everything in f32: the reference.
    Fp32,
    /// f16 wherever the CUDA backend stores f16 (see the module docs).
    Mixed,
    /// bf16 wherever `Cuda<bf16>` stores bf16: the same places as `Mixed`, rounded to
    /// bf16 (nearest even) instead.
    MixedBf16,
}

/// The CPU backend: the reference implementation of [`Backend`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpu {
    /// Fp32 or the GPU's mixed precision.
    pub precision: Precision,
}

/// A row-major `rows x cols` tensor in f32 (holding f16-representable values in Mixed).
#[derive(Clone, Debug, PartialEq)]
pub struct CpuTensor {
    /// The values.
    pub data: Vec<f32>,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
}

/// Labels, each below `classes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuLabels {
    /// One label per row.
    pub labels: Vec<u32>,
    /// The number of classes they were checked against.
    pub classes: usize,
}

/// One f32.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuScalar(pub f32);

/// The CPU parameter arena, AdamW and GradScaler state (the same layout as [`ParamArena`]).
#[derive(Clone, Debug)]
pub struct CpuParams {
    /// Where each parameter lives.
    pub layout: ArenaLayout,
    /// fp32 master weights.
    pub master: Vec<f32>,
    /// The weights the forward reads: the master weights rounded to f16 in Mixed.
    pub working: Vec<f32>,
    /// fp32 gradients, multiplied by the loss scale their backward was seeded with
    /// (`grad_scale`); the optimizer divides it out inside its update and leaves them so.
    pub grad: Vec<f32>,
    /// AdamW first moments.
    pub m: Vec<f32>,
    /// AdamW second moments.
    pub v: Vec<f32>,
    /// Steps taken.
    pub step: f32,
    /// AdamW settings.
    pub adam: AdamConfig,
    /// Loss-scale settings.
    pub scaler: GradScalerConfig,
    /// The loss scale.
    pub scale: f32,
    /// Clean steps since the last scale change.
    pub growth_tracker: i32,
    /// Set by the last optimizer step when a gradient was inf or NaN.
    pub found_inf: f32,
    /// `Some(seed)` for pure-bf16 weights (`master` then holds bf16 values, updated with
    /// stochastic rounding), `None` for f32 master weights.
    pub pure_seed: Option<u64>,
    /// The loss scale `grad` is multiplied by: `scale` as it was before the last
    /// optimizer step's scale update (1 with the scaler off).
    pub grad_scale: f32,
}

impl CpuParams {
    fn spec(&self, op: &'static str, index: usize) -> Result<&ParamSpec> {
        param_spec(op, &self.layout, index)
    }
}

/// The layout's parameter `index`, or an error naming the op.
pub(crate) fn param_spec<'a>(op: &'static str, layout: &'a ArenaLayout, index: usize) -> Result<&'a ParamSpec> {
    layout.params().get(index).ok_or_else(|| Error::InvalidArgument {
        op,
        what: "parameter",
        why: format!("index {index} is not in the arena ({} parameters)", layout.params().len()),
    })
}

/// Checks an embedding's operands: `wte` `vocab x C` with `vocab` at least `bound` (the
/// token ids' bound), `wpe` `context x C`, and `len` token ids making whole sequences of
/// `t <= context`. Returns the two tables' specs.
pub(crate) fn embedding_params<'a>(
    op: &'static str,
    layout: &'a ArenaLayout,
    wte: usize,
    wpe: usize,
    (len, bound): (usize, usize),
    t: usize,
) -> Result<(&'a ParamSpec, &'a ParamSpec)> {
    let (w, e) = (param_spec(op, layout, wte)?, param_spec(op, layout, wpe)?);
    match (w.shape.as_slice(), e.shape.as_slice()) {
        (&[vocab, c], &[_, c2]) if c == c2 && vocab >= bound => {}
        _ => return Err(Error::ShapeMismatch { op, expected: w.shape.clone(), got: e.shape.clone() }),
    }
    if t == 0 || len % t != 0 || t > e.shape[0] {
        return Err(Error::InvalidArgument {
            op,
            what: "t",
            why: format!("{len} tokens in sequences of {t} (the position table has {} rows)", e.shape[0]),
        });
    }
    Ok((w, e))
}

/// Checks a layernorm's affine parameters against `c` columns. Returns their specs.
pub(crate) fn layernorm_params<'a>(
    op: &'static str,
    layout: &'a ArenaLayout,
    gamma: usize,
    beta: usize,
    c: usize,
) -> Result<(&'a ParamSpec, &'a ParamSpec)> {
    let (g, b) = (param_spec(op, layout, gamma)?, param_spec(op, layout, beta)?);
    if g.len != c || b.len != c {
        return Err(Error::ShapeMismatch { op, expected: vec![c, c], got: vec![g.len, b.len] });
    }
    Ok((g, b))
}

/// Checks a linear layer's operands: weight `out x in`, bias `out`, `x` with `in` columns.
/// Returns (out, in).
pub(crate) fn linear_dims(
    op: &'static str,
    layout: &ArenaLayout,
    weight: usize,
    bias: Option<usize>,
    x: (usize, usize),
) -> Result<(usize, usize)> {
    let w = param_spec(op, layout, weight)?;
    let &[out, inp] = w.shape.as_slice() else {
        return Err(Error::InvalidArgument { op, what: "weight", why: format!("shape {:?} is not 2-D", w.shape) });
    };
    if x.1 != inp {
        return Err(Error::ShapeMismatch { op, expected: vec![x.0, inp], got: vec![x.0, x.1] });
    }
    if let Some(b) = bias {
        let b = param_spec(op, layout, b)?;
        if b.len != out {
            return Err(Error::ShapeMismatch { op, expected: vec![out], got: b.shape.clone() });
        }
    }
    Ok((out, inp))
}

impl Cpu {
    /// The fp32 reference backend.
    pub fn fp32() -> Self {
        Cpu { precision: Precision::Fp32 }
    }

    /// The backend that rounds as the GPU's f16 step does.
    pub fn mixed() -> Self {
        Cpu { precision: Precision::Mixed }
    }

    /// The backend that rounds as the GPU's bf16 step (`Cuda<bf16>`) does.
    pub fn mixed_bf16() -> Self {
        Cpu { precision: Precision::MixedBf16 }
    }

    /// `x` as the backend stores an activation.
    pub fn round(&self, x: f32) -> f32 {
        match self.precision {
            Precision::Fp32 => x,
            Precision::Mixed => f16::from_f32(x).to_f32(),
            Precision::MixedBf16 => bf16::from_f32(x).to_f32(),
        }
    }

    fn rounded(&self, mut v: Vec<f32>) -> Vec<f32> {
        self.round_slice(&mut v);
        v
    }

    /// [`Cpu::round`] of every element, with the precision matched once for the slice:
    /// f16 through `half`'s slice conversions (F16C eight at a time where the CPU has it,
    /// the same round to nearest even as the one-value conversion), bf16 in a plain loop.
    /// The mixed runs round every activation and weight: one call per element was about
    /// a sixth of a CPU training step.
    fn round_slice(&self, v: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        match self.precision {
            Precision::Fp32 => {}
            Precision::Mixed => {
                let mut buf = [f16::ZERO; 256];
                for chunk in v.chunks_mut(256) {
                    let h = &mut buf[..chunk.len()];
                    h.convert_from_f32_slice(chunk);
                    h.convert_to_f32_slice(chunk);
                }
            }
            Precision::MixedBf16 => v.iter_mut().for_each(|x| *x = bf16::from_f32(*x).to_f32()),
        }
    }

    fn refresh_working(&self, p: &mut CpuParams) {
        p.working = self.rounded(p.master.clone());
    }
}

fn scalar_args(op: &'static str, alpha: f32, beta: f32) -> Result<()> {
    for (what, v) in [("alpha", alpha), ("beta", beta)] {
        if !v.is_finite() {
            return Err(Error::InvalidArgument { op, what, why: "must be finite".into() });
        }
    }
    Ok(())
}

impl Backend for Cpu {
    type Tensor = CpuTensor;
    type Labels = CpuLabels;
    type Scalar = CpuScalar;
    type Params = CpuParams;
    type Graph = std::convert::Infallible;

    fn describe(&self) -> String {
        match self.precision {
            Precision::Fp32 => "CPU (fp32 reference)".into(),
            Precision::Mixed => "CPU (fp16 emulation of the GPU step)".into(),
            Precision::MixedBf16 => "CPU (bf16 emulation of the GPU step)".into(),
        }
    }

    fn half(&self) -> Option<DType> {
        match self.precision {
            Precision::Fp32 => None,
            Precision::Mixed => Some(DType::F16),
            Precision::MixedBf16 => Some(DType::BF16),
        }
    }

    fn tensor(&self, data: &[f32], rows: usize, cols: usize) -> Result<CpuTensor> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(Error::ShapeMismatch { op: "Cpu::tensor", expected: vec![rows, cols], got: vec![data.len()] });
        }
        Ok(CpuTensor { data: self.rounded(data.to_vec()), rows, cols })
    }

    fn write(&self, t: &mut CpuTensor, data: &[f32]) -> Result<()> {
        if data.len() != t.data.len() {
            return Err(Error::ShapeMismatch {
                op: "Cpu::write",
                expected: vec![t.rows, t.cols],
                got: vec![data.len()],
            });
        }
        t.data = self.rounded(data.to_vec());
        Ok(())
    }

    fn labels(&self, labels: &[u32], classes: usize) -> Result<CpuLabels> {
        check_labels("Cpu::labels", labels, labels.len(), classes)?;
        Ok(CpuLabels { labels: labels.to_vec(), classes })
    }

    fn write_labels(&self, l: &mut CpuLabels, labels: &[u32]) -> Result<()> {
        check_labels("Cpu::write_labels", labels, l.labels.len(), l.classes)?;
        l.labels.copy_from_slice(labels);
        Ok(())
    }

    fn shape(&self, t: &CpuTensor) -> (usize, usize) {
        (t.rows, t.cols)
    }

    fn labels_shape(&self, l: &CpuLabels) -> (usize, usize) {
        (l.labels.len(), l.classes)
    }

    fn to_host(&self, t: &CpuTensor) -> Result<Vec<f32>> {
        Ok(t.data.clone())
    }

    fn scalar(&self) -> Result<CpuScalar> {
        Ok(CpuScalar(0.0))
    }

    fn scalar_to_host(&self, s: &CpuScalar) -> Result<f32> {
        Ok(s.0)
    }

    fn copy(&self, t: &CpuTensor) -> Result<CpuTensor> {
        Ok(t.clone())
    }

    fn copy_labels(&self, l: &CpuLabels) -> Result<CpuLabels> {
        Ok(l.clone())
    }

    fn recycle(&self, _t: CpuTensor) {}

    fn recycle_labels(&self, _l: CpuLabels) {}

    fn params(
        &self,
        layout: ArenaLayout,
        init: &[Vec<f32>],
        adam: AdamConfig,
        scaler: GradScalerConfig,
        weights: Weights,
    ) -> Result<CpuParams> {
        const OP: &str = "Cpu::params";
        adam.validate(OP)?;
        scaler.validate(OP)?;
        let mut master = ParamArena::pack(OP, &layout, init)?;
        // The fp32 reference keeps f32 weights whatever the GPU keeps (it is what the
        // exact arithmetic would do); the f16 emulation refuses pure bf16, as the GPU does.
        let pure_seed = match (weights, self.precision) {
            (Weights::Master, _) | (Weights::PureBf16 { .. }, Precision::Fp32) => None,
            (Weights::PureBf16 { seed }, Precision::MixedBf16) => {
                master.iter_mut().for_each(|x| *x = bf16::from_f32(*x).to_f32());
                Some(seed)
            }
            (Weights::PureBf16 { .. }, Precision::Mixed) => {
                return Err(Error::UnsupportedDtype { op: OP, what: "pure weights (only bf16)", dtype: DType::F16 })
            }
        };
        let n = master.len();
        let scale = if scaler.enabled { scaler.init_scale } else { 1.0 };
        let mut p = CpuParams {
            layout,
            working: Vec::new(),
            master,
            grad: vec![0.0; n],
            m: vec![0.0; n],
            v: vec![0.0; n],
            step: 0.0,
            adam,
            scale,
            scaler,
            growth_tracker: 0,
            found_inf: 0.0,
            grad_scale: scale,
            pure_seed,
        };
        self.refresh_working(&mut p);
        Ok(p)
    }

    fn zero_grad(&self, p: &mut CpuParams) -> Result<()> {
        p.grad.iter_mut().for_each(|g| *g = 0.0);
        Ok(())
    }

    fn optimizer_step(&self, p: &mut CpuParams) -> Result<()> {
        let enabled = p.scaler.enabled;
        let checks = p.scaler.checks();
        if checks {
            p.found_inf = 0.0;
            unscale_check(&mut p.grad, None, &mut p.found_inf);
        }
        let found = checks.then_some(p.found_inf);
        adam_count_step(&mut p.step, found);
        let mut scale = enabled.then_some(p.scale);
        if let Some(max_norm) = p.adam.max_grad_norm {
            scale = Some(clip_scale(&p.grad, scale, max_norm));
        }
        match p.pure_seed {
            None => adamw_update(
                &mut p.master,
                &p.grad,
                &mut p.m,
                &mut p.v,
                None::<&mut [f16]>,
                p.step,
                scale,
                found,
                &p.adam,
            )?,
            Some(seed) => {
                let mut w: Vec<bf16> = p.master.iter().map(|&x| bf16::from_f32(x)).collect();
                adamw_pure_update(&mut w, &p.grad, &mut p.m, &mut p.v, p.step, scale, found, &p.adam, seed)?;
                p.master = w.into_iter().map(bf16::to_f32).collect();
            }
        }
        self.refresh_working(p);
        p.grad_scale = p.scale;
        if enabled {
            update_scale(&mut p.scale, &mut p.growth_tracker, p.found_inf, &p.scaler.rule);
        }
        Ok(())
    }

    fn master_to_host(&self, p: &CpuParams) -> Result<Vec<f32>> {
        Ok(p.master.clone())
    }

    fn load_master(&self, p: &mut CpuParams, master: &[f32]) -> Result<()> {
        if master.len() != p.master.len() {
            return Err(Error::LengthMismatch {
                op: "Cpu::load_master",
                what: "master",
                expected: p.master.len(),
                got: master.len(),
            });
        }
        p.master = match p.pure_seed {
            Some(_) => master.iter().map(|&x| bf16::from_f32(x).to_f32()).collect(),
            None => master.to_vec(),
        };
        self.refresh_working(p);
        Ok(())
    }

    fn grad_to_host(&self, p: &CpuParams) -> Result<Vec<f32>> {
        Ok(p.grad.clone())
    }

    fn loss_scale(&self, p: &CpuParams) -> Result<f32> {
        Ok(p.scale)
    }

    fn found_inf(&self, p: &CpuParams) -> Result<bool> {
        Ok(p.found_inf != 0.0)
    }

    fn steps_taken(&self, p: &CpuParams) -> Result<f32> {
        Ok(p.step)
    }

    fn set_adam(&self, p: &mut CpuParams, cfg: AdamConfig) -> Result<()> {
        cfg.validate("Cpu::set_adam")?;
        p.adam = cfg;
        Ok(())
    }

    fn checkpoint(&self, p: &CpuParams) -> Result<Checkpoint> {
        Ok(Checkpoint {
            layout: p.layout.clone(),
            adam: p.adam,
            step: p.step,
            master: p.master.clone(),
            m: p.m.clone(),
            v: p.v.clone(),
            scaler: Some(ScalerState { config: p.scaler, scale: p.scale, growth_tracker: p.growth_tracker }),
        })
    }

    fn restore(&self, p: &mut CpuParams, ckpt: &Checkpoint) -> Result<()> {
        const OP: &str = "Cpu::restore";
        if ckpt.layout != p.layout {
            return Err(Error::Checkpoint {
                op: OP,
                why: "the checkpoint's parameter layout differs from the arena's".into(),
            });
        }
        let total = p.layout.total();
        for (what, got) in [("master", ckpt.master.len()), ("m", ckpt.m.len()), ("v", ckpt.v.len())] {
            if got != total {
                return Err(Error::LengthMismatch { op: OP, what, expected: total, got });
            }
        }
        ckpt.adam.validate(OP)?;
        let Some(state) = ckpt.scaler else {
            return Err(Error::Checkpoint { op: OP, why: "the checkpoint has no loss-scaler state".into() });
        };
        state.config.validate(OP)?;
        self.load_master(p, &ckpt.master)?;
        p.m.clone_from(&ckpt.m);
        p.v.clone_from(&ckpt.v);
        p.step = ckpt.step;
        p.adam = ckpt.adam;
        (p.scaler, p.scale, p.growth_tracker, p.found_inf) = (state.config, state.scale, state.growth_tracker, 0.0);
        Ok(())
    }

    fn snapshot(&self, p: &CpuParams) -> Result<ParamsSnapshot> {
        Ok(ParamsSnapshot {
            layout: p.layout.clone(),
            master: p.master.clone(),
            working: p.working.clone(),
            grad: p.grad.clone(),
            m: p.m.clone(),
            v: p.v.clone(),
            step: p.step,
            loss_scale: p.scale,
            growth_tracker: p.growth_tracker,
            found_inf: p.found_inf != 0.0,
            grad_scale: p.scaler.enabled.then_some(p.grad_scale),
        })
    }

    fn linear(
        &self,
        p: &CpuParams,
        weight: usize,
        bias: Option<usize>,
        x: &CpuTensor,
        act: Activation,
    ) -> Result<(CpuTensor, Option<CpuTensor>)> {
        const OP: &str = "Cpu::linear";
        let (out, inp) = linear_dims(OP, &p.layout, weight, bias, (x.rows, x.cols))?;
        let w = p.spec(OP, weight)?;
        let w = &p.working[w.offset..w.offset + w.len];
        let b = bias.map(|b| p.spec(OP, b)).transpose()?.map(|b| &p.working[b.offset..b.offset + b.len]);
        let mut y = vec![0.0f32; x.rows * out];
        let mut pre = (act != Activation::None).then(|| vec![0.0f32; x.rows * out]);
        let shape = GemmShape::dense(x.rows, out, inp, Transpose::N, Transpose::T);
        gemm(&shape, &x.data, w, &mut y, 1.0, 0.0, b, pre.as_deref_mut(), act)?;
        let tensor = |data| CpuTensor { data: self.rounded(data), rows: x.rows, cols: out };
        Ok((tensor(y), pre.map(tensor)))
    }

    fn linear_backward(
        &self,
        p: &mut CpuParams,
        weight: usize,
        bias: Option<usize>,
        x: &CpuTensor,
        pre: Option<&CpuTensor>,
        act: Activation,
        dy: &CpuTensor,
        need_dx: bool,
    ) -> Result<Option<CpuTensor>> {
        const OP: &str = "Cpu::linear_backward";
        let (out, inp) = linear_dims(OP, &p.layout, weight, bias, (x.rows, x.cols))?;
        check_same_shape(OP, (x.rows, out), (dy.rows, dy.cols))?;
        let dz = match (act, pre) {
            (Activation::None, _) => dy.data.clone(),
            (_, Some(pre)) => {
                check_same_shape(OP, (dy.rows, dy.cols), (pre.rows, pre.cols))?;
                let mut dz = vec![0.0f32; dy.data.len()];
                activation_backward(&pre.data, &dy.data, &mut dz, act)?;
                self.rounded(dz)
            }
            (_, None) => {
                return Err(Error::InvalidArgument { op: OP, what: "pre", why: "an activation needs its input".into() })
            }
        };
        let w = p.spec(OP, weight)?.clone();
        let dw_shape = GemmShape::dense(out, inp, x.rows, Transpose::T, Transpose::N);
        gemm(&dw_shape, &dz, &x.data, &mut p.grad[w.offset..w.offset + w.len], 1.0, 1.0, None, None, Activation::None)?;
        if let Some(b) = bias {
            let b = p.spec(OP, b)?.clone();
            bias_grad(&dz, x.rows, out, &mut p.grad[b.offset..b.offset + b.len], 1.0)?;
        }
        if !need_dx {
            return Ok(None);
        }
        let mut dx = vec![0.0f32; x.rows * inp];
        let dx_shape = GemmShape::dense(x.rows, inp, out, Transpose::N, Transpose::N);
        gemm(&dx_shape, &dz, &p.working[w.offset..w.offset + w.len], &mut dx, 1.0, 0.0, None, None, Activation::None)?;
        Ok(Some(CpuTensor { data: self.rounded(dx), rows: x.rows, cols: inp }))
    }

    fn activation(&self, x: &CpuTensor, act: Activation) -> Result<CpuTensor> {
        let y = x.data.iter().map(|&v| activation(v, act)).collect();
        Ok(CpuTensor { data: self.rounded(y), rows: x.rows, cols: x.cols })
    }

    fn activation_backward(&self, x: &CpuTensor, dy: &CpuTensor, act: Activation) -> Result<CpuTensor> {
        check_same_shape("Cpu::activation_backward", (x.rows, x.cols), (dy.rows, dy.cols))?;
        let mut dx = vec![0.0f32; x.data.len()];
        activation_backward(&x.data, &dy.data, &mut dx, act)?;
        Ok(CpuTensor { data: self.rounded(dx), rows: x.rows, cols: x.cols })
    }

    fn add(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        check_same_shape("Cpu::add", (a.rows, a.cols), (b.rows, b.cols))?;
        let y = a.data.iter().zip(&b.data).map(|(x, y)| x + y).collect();
        Ok(CpuTensor { data: self.rounded(y), rows: a.rows, cols: a.cols })
    }

    fn accumulate(&self, acc: &mut CpuTensor, x: &CpuTensor) -> Result<()> {
        check_same_shape("Cpu::accumulate", (acc.rows, acc.cols), (x.rows, x.cols))?;
        acc.data.iter_mut().zip(&x.data).for_each(|(a, &v)| *a += v);
        self.round_slice(&mut acc.data);
        Ok(())
    }

    fn cross_entropy(
        &self,
        z: &CpuTensor,
        labels: &CpuLabels,
        out: &mut CpuScalar,
        alpha: f32,
        beta: f32,
    ) -> Result<()> {
        const OP: &str = "Cpu::cross_entropy";
        scalar_args(OP, alpha, beta)?;
        check_same_shape(OP, (z.rows, z.cols), (labels.labels.len(), labels.classes))?;
        let losses = cross_entropy_forward(&z.data, &labels.labels, z.rows, z.cols)?;
        let mean = losses.iter().sum::<f32>() / z.rows.max(1) as f32;
        out.0 = if beta == 0.0 { alpha * mean } else { beta * out.0 + alpha * mean };
        Ok(())
    }

    fn cross_entropy_backward(
        &self,
        p: &CpuParams,
        z: &CpuTensor,
        labels: &CpuLabels,
        weight: f32,
    ) -> Result<CpuTensor> {
        const OP: &str = "Cpu::cross_entropy_backward";
        scalar_args(OP, weight, 0.0)?;
        check_same_shape(OP, (z.rows, z.cols), (labels.labels.len(), labels.classes))?;
        let seed = weight / z.rows.max(1) as f32 * p.scale;
        let dz = cross_entropy_backward(&z.data, &labels.labels, z.rows, z.cols, seed)?;
        Ok(CpuTensor { data: self.rounded(dz), rows: z.rows, cols: z.cols })
    }

    fn mse(&self, pred: &CpuTensor, target: &CpuTensor, out: &mut CpuScalar, alpha: f32, beta: f32) -> Result<()> {
        const OP: &str = "Cpu::mse";
        scalar_args(OP, alpha, beta)?;
        check_same_shape(OP, (pred.rows, pred.cols), (target.rows, target.cols))?;
        let losses = mse_forward(&pred.data, &target.data, pred.rows, pred.cols)?;
        let mean = losses.iter().sum::<f32>() / pred.data.len().max(1) as f32;
        out.0 = if beta == 0.0 { alpha * mean } else { beta * out.0 + alpha * mean };
        Ok(())
    }

    fn mse_backward(&self, p: &CpuParams, pred: &CpuTensor, target: &CpuTensor, weight: f32) -> Result<CpuTensor> {
        const OP: &str = "Cpu::mse_backward";
        scalar_args(OP, weight, 0.0)?;
        check_same_shape(OP, (pred.rows, pred.cols), (target.rows, target.cols))?;
        let seed = weight / pred.data.len().max(1) as f32 * p.scale;
        let d = mse_backward(&pred.data, &target.data, pred.rows, pred.cols, seed)?;
        Ok(CpuTensor { data: self.rounded(d), rows: pred.rows, cols: pred.cols })
    }

    fn begin_capture(&self) -> Result<bool> {
        Ok(false)
    }

    fn end_capture(&self) -> Result<Self::Graph> {
        Err(Error::InvalidArgument {
            op: "Cpu::end_capture",
            what: "capture",
            why: "the CPU backend has no graphs".into(),
        })
    }

    fn replay(&self, g: &Self::Graph) -> Result<()> {
        match *g {}
    }

    fn release_graph(&self, g: Self::Graph) {
        match g {}
    }
}

/// The ranges of parameters `a` and `b` in one arena buffer, both mutable: parameters of a
/// layout never overlap, so the buffer splits between them.
fn two_ranges_mut<'a>(buf: &'a mut [f32], a: &ParamSpec, b: &ParamSpec) -> (&'a mut [f32], &'a mut [f32]) {
    let (first, second) = if a.offset < b.offset { (a, b) } else { (b, a) };
    let (lo, hi) = buf.split_at_mut(second.offset);
    let (lo, hi) = (&mut lo[first.offset..first.offset + first.len], &mut hi[..second.len]);
    if a.offset < b.offset {
        (lo, hi)
    } else {
        (hi, lo)
    }
}

/// What a [`Cpu`] forward keeps for its backward: a layernorm's means then rstds, or the
/// attention's probabilities.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuSaved(pub Vec<f32>);

impl CpuParams {
    /// The working weights of a parameter.
    fn working_of(&self, spec: &ParamSpec) -> &[f32] {
        &self.working[spec.offset..spec.offset + spec.len]
    }
}

impl TransformerBackend for Cpu {
    type Tokens = CpuLabels;
    type Saved = CpuSaved;

    fn tokens(&self, ids: &[u32], vocab: usize) -> Result<CpuLabels> {
        check_labels("Cpu::tokens", ids, ids.len(), vocab)?;
        Ok(CpuLabels { labels: ids.to_vec(), classes: vocab })
    }

    fn write_tokens(&self, t: &mut CpuLabels, ids: &[u32]) -> Result<()> {
        check_labels("Cpu::write_tokens", ids, t.labels.len(), t.classes)?;
        t.labels.copy_from_slice(ids);
        Ok(())
    }

    fn copy_tokens(&self, t: &CpuLabels) -> Result<CpuLabels> {
        Ok(t.clone())
    }

    fn recycle_tokens(&self, _t: CpuLabels) {}

    fn recycle_saved(&self, _s: CpuSaved) {}

    fn embedding(&self, p: &CpuParams, wte: usize, wpe: usize, tokens: &CpuLabels, t: usize) -> Result<CpuTensor> {
        const OP: &str = "Cpu::embedding";
        let (w, e) = embedding_params(OP, &p.layout, wte, wpe, (tokens.labels.len(), tokens.classes), t)?;
        let (rows, c) = (tokens.labels.len(), w.shape[1]);
        let mut out = vec![0.0f32; rows * c];
        embedding_forward(&tokens.labels, p.working_of(w), p.working_of(e), t, c, |x| self.round(x), &mut out)?;
        Ok(CpuTensor { data: out, rows, cols: c })
    }

    fn embedding_backward(
        &self,
        p: &mut CpuParams,
        wte: usize,
        wpe: usize,
        tokens: &CpuLabels,
        t: usize,
        dout: &CpuTensor,
    ) -> Result<()> {
        const OP: &str = "Cpu::embedding_backward";
        let (w, e) = embedding_params(OP, &p.layout, wte, wpe, (tokens.labels.len(), tokens.classes), t)?;
        let c = w.shape[1];
        check_same_shape(OP, (tokens.labels.len(), c), (dout.rows, dout.cols))?;
        let (dwte, dwpe) = two_ranges_mut(&mut p.grad, w, e);
        embedding_backward(&tokens.labels, &dout.data, t, c, dwte, dwpe)
    }

    fn layernorm(
        &self,
        p: &CpuParams,
        x: &CpuTensor,
        y: Option<&CpuTensor>,
        gamma: usize,
        beta: usize,
    ) -> Result<(Option<CpuTensor>, CpuTensor, CpuSaved)> {
        const OP: &str = "Cpu::layernorm";
        let (g, b) = layernorm_params(OP, &p.layout, gamma, beta, x.cols)?;
        let (g, b) = (p.working_of(g), p.working_of(b));
        if let Some(y) = y {
            check_same_shape(OP, (x.rows, x.cols), (y.rows, y.cols))?;
        }
        let n = x.data.len();
        let mut r = y.map(|_| vec![0.0f32; n]);
        let mut h = vec![0.0f32; n];
        let mut stats = vec![0.0f32; 2 * x.rows];
        let (mean, rstd) = stats.split_at_mut(x.rows);
        let yd = y.map(|y| y.data.as_slice());
        layernorm_forward(&x.data, yd, g, b, LAYERNORM_EPS, |v| self.round(v), r.as_deref_mut(), &mut h, mean, rstd)?;
        let tensor = |data| CpuTensor { data, rows: x.rows, cols: x.cols };
        Ok((r.map(tensor), tensor(h), CpuSaved(stats)))
    }

    fn layernorm_backward(
        &self,
        p: &mut CpuParams,
        gamma: usize,
        beta: usize,
        r: &CpuTensor,
        saved: &CpuSaved,
        dh: &CpuTensor,
    ) -> Result<CpuTensor> {
        const OP: &str = "Cpu::layernorm_backward";
        check_same_shape(OP, (r.rows, r.cols), (dh.rows, dh.cols))?;
        check_lengths(OP, 2 * r.rows, saved.0.len())?;
        let (g, b) = layernorm_params(OP, &p.layout, gamma, beta, r.cols)?;
        let (mean, rstd) = saved.0.split_at(r.rows);
        let mut dr = vec![0.0f32; r.data.len()];
        let (dgamma, dbeta) = two_ranges_mut(&mut p.grad, g, b);
        let gw = &p.working[g.offset..g.offset + g.len];
        layernorm_backward(&dh.data, None, &r.data, mean, rstd, gw, |v| self.round(v), &mut dr, dgamma, dbeta)?;
        Ok(CpuTensor { data: dr, rows: r.rows, cols: r.cols })
    }

    fn attention(&self, qkv: &CpuTensor, dims: AttnDims) -> Result<(CpuTensor, CpuSaved)> {
        const OP: &str = "Cpu::attention";
        dims.validate(OP)?;
        check_same_shape(OP, (dims.rows(), 3 * dims.c), (qkv.rows, qkv.cols))?;
        let mut out = vec![0.0f32; dims.rows() * dims.c];
        let mut probs = vec![0.0f32; dims.scores_len()];
        attention_forward(&qkv.data, dims, |v| self.round(v), &mut out, &mut probs)?;
        Ok((CpuTensor { data: out, rows: dims.rows(), cols: dims.c }, CpuSaved(probs)))
    }

    fn attention_backward(
        &self,
        dout: &CpuTensor,
        qkv: &CpuTensor,
        saved: &CpuSaved,
        dims: AttnDims,
    ) -> Result<CpuTensor> {
        const OP: &str = "Cpu::attention_backward";
        dims.validate(OP)?;
        check_same_shape(OP, (dims.rows(), 3 * dims.c), (qkv.rows, qkv.cols))?;
        check_same_shape(OP, (dims.rows(), dims.c), (dout.rows, dout.cols))?;
        let mut dqkv = vec![0.0f32; qkv.data.len()];
        attention_backward(&dout.data, &qkv.data, &saved.0, dims, |v| self.round(v), &mut dqkv)?;
        Ok(CpuTensor { data: dqkv, rows: qkv.rows, cols: qkv.cols })
    }

    fn classifier(
        &self,
        p: &CpuParams,
        logits: &CpuTensor,
        labels: &CpuLabels,
        out: &mut CpuScalar,
        alpha: f32,
        beta: f32,
        weight: f32,
    ) -> Result<CpuTensor> {
        const OP: &str = "Cpu::classifier";
        scalar_args(OP, alpha, beta)?;
        scalar_args(OP, weight, 0.0)?;
        if labels.labels.len() != logits.rows || labels.classes > logits.cols {
            return Err(Error::ShapeMismatch {
                op: OP,
                expected: vec![logits.rows, logits.cols],
                got: vec![labels.labels.len(), labels.classes],
            });
        }
        let rows = logits.rows.max(1) as f32;
        let g = weight * p.scale / rows;
        let mut losses = vec![0.0f32; logits.rows];
        let mut dlogits = vec![0.0f32; logits.data.len()];
        classifier(
            &logits.data,
            &labels.labels,
            labels.classes,
            logits.cols,
            g,
            |v| self.round(v),
            &mut losses,
            &mut dlogits,
        )?;
        let mean = losses.iter().sum::<f32>() / rows;
        out.0 = if beta == 0.0 { alpha * mean } else { beta * out.0 + alpha * mean };
        Ok(CpuTensor { data: dlogits, rows: logits.rows, cols: logits.cols })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slice rounding (F16C eight at a time where the CPU has it) gives the bits of
    /// the one-value rounding for every precision: halfway cases both ways, the largest
    /// finite values and just past them, subnormals of both formats, zeros, infinities
    /// and NaNs, in a slice longer than one chunk and not a multiple of it.
    #[test]
    fn round_slice_is_round_of_each_element() {
        let mut v: Vec<f32> = vec![
            0.0,
            -0.0,
            1.0,
            1.0 + f32::EPSILON,
            1.000_488_3, // halfway between two f16 values
            -1.000_488_3,
            65504.0,
            65520.0, // rounds to inf in f16
            -65519.0,
            5.960_464_5e-8, // the smallest f16 subnormal
            2.980_232_2e-8, // half of it: ties to even, to zero
            1e-40,          // f32 subnormal
            3.389_531_4e38, // rounds past bf16's largest finite
            f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7f80_0001), // signalling NaN
        ];
        let mut x = 0x1234_5678u32;
        for _ in 0..600 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            v.push(f32::from_bits(x));
        }
        for cpu in [Cpu::fp32(), Cpu::mixed(), Cpu::mixed_bf16()] {
            let mut got = v.clone();
            cpu.round_slice(&mut got);
            for (i, (&g, &x)) in got.iter().zip(&v).enumerate() {
                let want = cpu.round(x);
                assert!(
                    g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                    "{:?} element {i} ({x:e}, {:#x}): {g:e} ({:#x}), want {want:e} ({:#x})",
                    cpu.precision,
                    x.to_bits(),
                    g.to_bits(),
                    want.to_bits()
                );
            }
        }
    }
}
