//! Backends: the ops the autograd needs, implemented by the CUDA kernels ([`cuda::Cuda`])
//! and by the CPU reference ([`cpu::Cpu`], in fp32 or emulating the GPU's fp16 rounding).
//!
//! A backend owns nothing of the model: activations are its [`Backend::Tensor`]s
//! (2-D, row-major; f16 on the GPU), parameters live in its [`Backend::Params`] (the arena
//! of DESIGN.md with the optimizer and loss-scale state), and every op is queued in order
//! with no host synchronization except the `*_to_host` reads.

pub mod cpu;
pub mod cuda;

use crate::dtype::DType;
use crate::error::Result;
use crate::kernels::adam::AdamConfig;
use crate::kernels::gemm::Activation;
use crate::nn::{ArenaLayout, Weights};
use crate::optim::{Checkpoint, GradScalerConfig};
pub use cpu::AttnDims;

/// The ops of a mixed-precision training step. Parameters are named by their index in
/// the [`ArenaLayout`] the params were created with; weights are `out x in` (PyTorch's
/// `nn.Linear` layout), biases `out`.
pub trait Backend {
    /// A 2-D activation tensor (`rows x cols`).
    type Tensor;
    /// Class labels of a batch.
    type Labels;
    /// One f32 (a loss), kept where the backend computes.
    type Scalar;
    /// Parameters, gradients, AdamW moments and the loss-scale state.
    type Params;
    /// A captured step (CUDA graph); backends without graphs never make one.
    type Graph;

    /// What runs, e.g. "CUDA on NVIDIA H100 80GB HBM3 (sm_90), bf16 compute" or "CPU
    /// (fp32 reference)".
    fn describe(&self) -> String;

    /// The half type activations and working weights are stored in (f16 or bf16), or
    /// `None` for a backend that computes in f32 throughout (`Cpu::fp32`).
    fn half(&self) -> Option<DType>;

    /// Uploads `data` (`rows * cols` values, row-major) as an activation tensor, rounded
    /// to the backend's activation precision.
    fn tensor(&self, data: &[f32], rows: usize, cols: usize) -> Result<Self::Tensor>;
    /// Overwrites a tensor with `data` of the same shape.
    fn write(&self, t: &mut Self::Tensor, data: &[f32]) -> Result<()>;
    /// Uploads labels, each checked to be below `classes`.
    fn labels(&self, labels: &[u32], classes: usize) -> Result<Self::Labels>;
    /// Overwrites labels (same count and classes).
    fn write_labels(&self, l: &mut Self::Labels, labels: &[u32]) -> Result<()>;
    /// (rows, cols).
    fn shape(&self, t: &Self::Tensor) -> (usize, usize);
    /// (count, classes).
    fn labels_shape(&self, l: &Self::Labels) -> (usize, usize);
    /// Copies a tensor to the host as f32 (synchronizes).
    fn to_host(&self, t: &Self::Tensor) -> Result<Vec<f32>>;
    /// A scalar holding 0.
    fn scalar(&self) -> Result<Self::Scalar>;
    /// Reads a scalar (synchronizes).
    fn scalar_to_host(&self, s: &Self::Scalar) -> Result<f32>;
    /// A copy of `t` in a buffer the tape owns (from the backend's pool).
    fn copy(&self, t: &Self::Tensor) -> Result<Self::Tensor>;
    /// A copy of `l` the tape owns.
    fn copy_labels(&self, l: &Self::Labels) -> Result<Self::Labels>;
    /// Gives a tensor's buffer back to the pool for the next step.
    fn recycle(&self, t: Self::Tensor);
    /// Gives a labels buffer back to the pool.
    fn recycle_labels(&self, l: Self::Labels);

    /// Parameters from `init` (values per parameter in layout order), with zero gradients
    /// and moments and the scaler at its initial scale, the weights kept as `weights`
    /// says ([`Weights::PureBf16`] needs a bf16 backend, or the fp32 reference, which
    /// keeps f32 weights and ignores it).
    fn params(
        &self,
        layout: ArenaLayout,
        init: &[Vec<f32>],
        adam: AdamConfig,
        scaler: GradScalerConfig,
        weights: Weights,
    ) -> Result<Self::Params>;
    /// Zeroes the gradients and clears found_inf: it starts a step (on Cuda the
    /// backward's gradient kernels raise found_inf as they write).
    fn zero_grad(&self, p: &mut Self::Params) -> Result<()>;
    /// The overflow check over all gradients, AdamW gated by found_inf (writing the
    /// working copy), loss-scale update: the optimizer phase of DESIGN.md, steps 5 to 7.
    /// On Cuda the check was made by the backward's gradient kernels as they wrote (fused:
    /// the phase reads each gradient once, in AdamW); on the CPU it is a pass here. Both
    /// see the same values: a gradient that ends non-finite was non-finite when last
    /// written.
    fn optimizer_step(&self, p: &mut Self::Params) -> Result<()>;
    /// The fp32 master weights, the whole arena (synchronizes).
    fn master_to_host(&self, p: &Self::Params) -> Result<Vec<f32>>;
    /// Replaces the master weights with `master` (the whole arena, `layout.total()`
    /// values) and rebuilds the working copy from them; moments, step count and scaler
    /// stay (as `model.load_state_dict` leaves the optimizer alone). Pure-bf16 weights are
    /// rounded to bf16 (nearest even). Nothing changes on an error.
    fn load_master(&self, p: &mut Self::Params, master: &[f32]) -> Result<()>;
    /// The gradients, the whole arena, still multiplied by the loss scale (synchronizes).
    fn grad_to_host(&self, p: &Self::Params) -> Result<Vec<f32>>;
    /// The current loss scale (synchronizes).
    fn loss_scale(&self, p: &Self::Params) -> Result<f32>;
    /// Whether the last optimizer step found an inf or NaN and skipped (synchronizes).
    fn found_inf(&self, p: &Self::Params) -> Result<bool>;
    /// Optimizer steps taken, skipped ones not counted (synchronizes).
    fn steps_taken(&self, p: &Self::Params) -> Result<f32>;
    /// Changes the optimizer settings from the next step on.
    fn set_adam(&self, p: &mut Self::Params, cfg: AdamConfig) -> Result<()>;
    /// Every buffer and scalar of the parameters and optimizer state, copied to the host
    /// (synchronizes). [`TrainStep::state`](crate::TrainStep::state) reads it by name.
    fn snapshot(&self, p: &Self::Params) -> Result<ParamsSnapshot>;
    /// What a run resumes from: master weights, moments, step count, optimizer settings
    /// and loss-scaler state (synchronizes; `optim::Checkpoint`'s format, which
    /// `AdamW::save` writes too).
    fn checkpoint(&self, p: &Self::Params) -> Result<Checkpoint>;
    /// Restores a checkpoint of the same layout (the working copy rebuilt from the master
    /// weights, gradients left as they are); nothing changes when it does not fit.
    fn restore(&self, p: &mut Self::Params, ckpt: &Checkpoint) -> Result<()>;

    /// `y = act(x W^T + b)` with `pre = x W^T + b` kept when `act` is not `None`.
    fn linear(
        &self,
        p: &Self::Params,
        weight: usize,
        bias: Option<usize>,
        x: &Self::Tensor,
        act: Activation,
    ) -> Result<(Self::Tensor, Option<Self::Tensor>)>;
    /// The backward of [`linear`](Self::linear) given `dy`: accumulates dW and db into the
    /// gradients (+=) and returns dx when `need_dx`.
    #[allow(clippy::too_many_arguments)]
    fn linear_backward(
        &self,
        p: &mut Self::Params,
        weight: usize,
        bias: Option<usize>,
        x: &Self::Tensor,
        pre: Option<&Self::Tensor>,
        act: Activation,
        dy: &Self::Tensor,
        need_dx: bool,
    ) -> Result<Option<Self::Tensor>>;
    /// `act(x)`.
    fn activation(&self, x: &Self::Tensor, act: Activation) -> Result<Self::Tensor>;
    /// `dy * act'(x)`; ReLU as PyTorch's `threshold_backward` (`x <= 0 ? 0 : dy`, so an
    /// inf `dy` at a dead unit gives 0): see [`cpu::activation_grad`].
    fn activation_backward(&self, x: &Self::Tensor, dy: &Self::Tensor, act: Activation) -> Result<Self::Tensor>;
    /// `a + b`.
    fn add(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
    /// `acc += x`.
    fn accumulate(&self, acc: &mut Self::Tensor, x: &Self::Tensor) -> Result<()>;
    /// `out = beta * out + alpha * mean_r CE(z[r], labels[r])`, in f32.
    fn cross_entropy(
        &self,
        z: &Self::Tensor,
        labels: &Self::Labels,
        out: &mut Self::Scalar,
        alpha: f32,
        beta: f32,
    ) -> Result<()>;
    /// The gradient of `weight * mean CE` with respect to `z`, seeded with the loss scale.
    fn cross_entropy_backward(
        &self,
        p: &Self::Params,
        z: &Self::Tensor,
        labels: &Self::Labels,
        weight: f32,
    ) -> Result<Self::Tensor>;
    /// `out = beta * out + alpha * mean((p - t)^2)` over all elements, in f32.
    fn mse(
        &self,
        pred: &Self::Tensor,
        target: &Self::Tensor,
        out: &mut Self::Scalar,
        alpha: f32,
        beta: f32,
    ) -> Result<()>;
    /// The gradient of `weight * mean (p - t)^2` with respect to `p`, seeded with the scale.
    fn mse_backward(
        &self,
        p: &Self::Params,
        pred: &Self::Tensor,
        target: &Self::Tensor,
        weight: f32,
    ) -> Result<Self::Tensor>;

    /// Starts recording the ops queued from now on into a graph instead of running them.
    /// Returns false (and records nothing) when the backend has no graphs, and `Err`
    /// (capturing nothing, changing nothing) when the driver refuses to capture the
    /// stream: the legacy default stream, or a stream the caller is already capturing.
    /// Either way the caller can run the same ops eagerly.
    fn begin_capture(&self) -> Result<bool>;
    /// Ends a capture begun with [`begin_capture`](Self::begin_capture).
    fn end_capture(&self) -> Result<Self::Graph>;
    /// Runs a captured graph once.
    fn replay(&self, g: &Self::Graph) -> Result<()>;
    /// Frees a graph and gives the buffers it kept back to the pool.
    fn release_graph(&self, g: Self::Graph);
}

/// The ops a GPT needs beyond [`Backend`]'s (issue 20): token + position embedding, the
/// fused residual + layernorm, causal self-attention and the fused classifier. Their
/// numerics, and where each rounds to half precision, are those of the CPU references in
/// [`cpu`] (`embedding_forward`, `layernorm_forward`, `attention_forward`, `classifier`
/// and their backwards).
pub trait TransformerBackend: Backend {
    /// Token ids on the backend, each below the vocabulary size they were checked
    /// against.
    type Tokens;
    /// What a forward keeps for its backward beyond its inputs and outputs: a layernorm's
    /// f32 mean and rstd, the attention's probabilities.
    type Saved;

    /// Uploads `b * t` token ids, checking each is below `vocab`.
    fn tokens(&self, ids: &[u32], vocab: usize) -> Result<Self::Tokens>;
    /// Overwrites token ids in place (same count; the buffers a captured graph reads).
    fn write_tokens(&self, t: &mut Self::Tokens, ids: &[u32]) -> Result<()>;
    /// A copy of token ids (the tape keeps its own).
    fn copy_tokens(&self, t: &Self::Tokens) -> Result<Self::Tokens>;
    /// Gives token buffers back.
    fn recycle_tokens(&self, t: Self::Tokens);
    /// Gives saved buffers back.
    fn recycle_saved(&self, s: Self::Saved);

    /// `wte[token] + wpe[position]` for sequences of `t` tokens: `(b t) x C`, with `wte`
    /// (`vocab x C`) and `wpe` (`context x C`, `t <= context`) at those arena indices.
    fn embedding(
        &self,
        p: &Self::Params,
        wte: usize,
        wpe: usize,
        tokens: &Self::Tokens,
        t: usize,
    ) -> Result<Self::Tensor>;
    /// Adds the embedding's gradients to the arena (deterministically).
    fn embedding_backward(
        &self,
        p: &mut Self::Params,
        wte: usize,
        wpe: usize,
        tokens: &Self::Tokens,
        t: usize,
        dout: &Self::Tensor,
    ) -> Result<()>;
    /// `r = x + y` (when `y` is given; else `r` is `x`) and `h = layernorm(r)` with the
    /// affine parameters `gamma`, `beta`: returns `(r, h, saved)`, `r` only when `y` was
    /// given.
    #[allow(clippy::type_complexity)]
    fn layernorm(
        &self,
        p: &Self::Params,
        x: &Self::Tensor,
        y: Option<&Self::Tensor>,
        gamma: usize,
        beta: usize,
    ) -> Result<(Option<Self::Tensor>, Self::Tensor, Self::Saved)>;
    /// The gradient with respect to `r` from `dh`, and `dgamma`, `dbeta` added to the
    /// arena.
    fn layernorm_backward(
        &self,
        p: &mut Self::Params,
        gamma: usize,
        beta: usize,
        r: &Self::Tensor,
        saved: &Self::Saved,
        dh: &Self::Tensor,
    ) -> Result<Self::Tensor>;
    /// Causal self-attention over `qkv` (`(B T) x 3C`) with `dims.nh` heads: `(B T) x C`,
    /// and the probabilities (`B NH T T`: memory O(B NH T^2)).
    fn attention(&self, qkv: &Self::Tensor, dims: AttnDims) -> Result<(Self::Tensor, Self::Saved)>;
    /// The gradient with respect to `qkv`.
    fn attention_backward(
        &self,
        dout: &Self::Tensor,
        qkv: &Self::Tensor,
        saved: &Self::Saved,
        dims: AttnDims,
    ) -> Result<Self::Tensor>;
    /// The fused classifier: the mean cross-entropy of `logits` (`rows x padded`, the
    /// first `labels`' class count of columns real) into `out = beta out + alpha loss`,
    /// and, in the same pass, the gradient of `weight * loss` with respect to the logits
    /// times the loss scale (padded columns 0).
    #[allow(clippy::too_many_arguments)]
    fn classifier(
        &self,
        p: &Self::Params,
        logits: &Self::Tensor,
        labels: &Self::Labels,
        out: &mut Self::Scalar,
        alpha: f32,
        beta: f32,
        weight: f32,
    ) -> Result<Self::Tensor>;
}

/// A backend's parameters and optimizer state on the host, as flat as the backend keeps
/// them: each `Vec` is one role's whole arena (`layout.total()` elements, alignment
/// padding included, parameter `i` at `layout.params()[i].offset`).
#[derive(Clone, Debug, PartialEq)]
pub struct ParamsSnapshot {
    /// Where each parameter lives.
    pub layout: ArenaLayout,
    /// fp32 master weights.
    pub master: Vec<f32>,
    /// The weights the forward reads, as f32: the fp16 working copy on `Cuda` and on
    /// `Cpu::mixed()` (exact), the master weights themselves on `Cpu::fp32()`.
    pub working: Vec<f32>,
    /// The gradients as stored: multiplied by `grad_scale` when that is `Some`.
    pub grad: Vec<f32>,
    /// AdamW first moments.
    pub m: Vec<f32>,
    /// AdamW second moments.
    pub v: Vec<f32>,
    /// Optimizer steps taken, skipped ones not counted.
    pub step: f32,
    /// The loss scale the next step's backward is seeded with (1 with the scaler off).
    pub loss_scale: f32,
    /// Clean steps since the last scale change.
    pub growth_tracker: i32,
    /// Whether the last step found an inf or NaN gradient and was skipped.
    pub found_inf: bool,
    /// The factor the stored gradients carry: the loss scale their backward was seeded
    /// with (the scale before the last step's scale update; before any step, the
    /// current scale). `None` when the scaler is off and the gradients are unscaled.
    pub grad_scale: Option<f32>,
}

/// Checks that two tensors have the same shape, for the elementwise ops.
pub(crate) fn check_same_shape(op: &'static str, a: (usize, usize), b: (usize, usize)) -> Result<()> {
    if a == b {
        Ok(())
    } else {
        Err(crate::Error::ShapeMismatch { op, expected: vec![a.0, a.1], got: vec![b.0, b.1] })
    }
}
