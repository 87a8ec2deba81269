//! [`TrainStep`]: the whole mixed-precision step of DESIGN.md for a [`Model`] (an
//! [`Mlp`] classifier, or a [`Gpt`] on a [`TransformerBackend`]), on any [`Backend`].
//!
//! One call to [`TrainStep::step`] queues: zero the gradients; for each micro-batch the
//! fp16 forward (GEMMs with fused bias and activation), the f32 softmax cross-entropy,
//! and the backward seeded with the loss scale (weight gradients accumulating in f32,
//! beta = 1); then unscale_check over the gradient arena, AdamW gated by `found_inf`
//! (writing the fp16 working copy), and the loss-scale update. Nothing waits for the
//! GPU: the loss stays on the device until [`TrainStep::loss`] reads it.
//!
//! On CUDA the step is captured as one CUDA graph and replayed while the batch size
//! stays the same (on by default, [`TrainConfig::graphs`]): the first step with a
//! shape runs eagerly (allocating the activation buffers), the second is captured and
//! replayed, later ones only copy the batch into the graph's input buffers and replay.
//! Replay gives bit-identical results to eager execution (the same kernels on the same
//! buffers). Settings baked into the graph (the learning rate) are changed through
//! [`TrainStep::set_adam`], which drops the graph so the next step captures a new one.
//! When the capture fails (the driver refuses to capture the legacy default stream that
//! a `Device` adopted with a null stream uses, or a stream the caller is already
//! capturing; or the step cannot be recorded) the reason is kept in
//! [`TrainStep::graph_error`] and every step from then on runs eagerly, with the same
//! results.
//!
//! [`TrainStep::state`] reads the whole parameter and optimizer state by parameter name,
//! the same on every backend, and [`TrainStep::evaluate`] the loss and accuracy on a
//! batch without training: what a peer needs to compare the run with PyTorch step by step.
//!
//! Inputs with NaN or inf are not rejected: like PyTorch AMP, the step sees non-finite
//! gradients, `found_inf` is set, the optimizer skips the step (no weight, moment or step
//! count changes) and the loss scale backs off. Labels out of range and mismatched
//! shapes are errors, returned before anything is queued.

use std::collections::BTreeMap;

use crate::autograd::{Tape, Var};
use crate::backend::cpu::check_labels;
use crate::backend::{Backend, ParamsSnapshot, TransformerBackend};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::kernels::adam::AdamConfig;
use crate::nn::{ArenaLayout, Gpt, Mlp, Weights};
use crate::optim::GradScalerConfig;

/// Settings of a [`TrainStep`].
///
/// The precision policy (issue 19), PyTorch's convention: [`TrainConfig::default`] (=
/// [`TrainConfig::f16`]) computes in f16 with dynamic loss scaling on; [`TrainConfig::bf16`]
/// computes in bf16 with loss scaling off (bf16 has f32's range, so gradients do not
/// underflow where f16's would), and scaling can be turned back on through `scaler`. The
/// backend does the computing, so it must match: `Cuda<f16>` / `Cpu::mixed()` for f16,
/// `Cuda<bf16>` / `Cpu::mixed_bf16()` for bf16 (`Cpu::fp32()`, the reference, takes
/// either); [`TrainStep::new`] refuses a mismatch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainConfig {
    /// The half type of activations and working weights: `DType::F16` or `DType::BF16`.
    pub precision: DType,
    /// fp32 master weights (the default), or pure bf16 weights with stochastic rounding
    /// (bf16 only).
    pub weights: Weights,
    /// AdamW settings (PyTorch's defaults).
    pub adam: AdamConfig,
    /// Loss-scale settings (PyTorch GradScaler's defaults).
    pub scaler: GradScalerConfig,
    /// Each batch is split into this many equal micro-batches whose gradients accumulate
    /// before one optimizer step; the loss is the mean over the whole batch.
    pub micro_batches: usize,
    /// Capture the step as a CUDA graph and replay it (ignored on the CPU).
    pub graphs: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig::f16()
    }
}

impl TrainConfig {
    /// f16 compute, fp32 master weights, dynamic loss scaling on (GradScaler's defaults).
    pub fn f16() -> Self {
        TrainConfig {
            precision: DType::F16,
            weights: Weights::Master,
            adam: AdamConfig::default(),
            scaler: GradScalerConfig::default(),
            micro_batches: 1,
            graphs: true,
        }
    }

    /// bf16 compute, fp32 master weights, loss scaling off (`scaler.enabled = false`).
    pub fn bf16() -> Self {
        let scaler = GradScalerConfig { enabled: false, ..GradScalerConfig::default() };
        TrainConfig { precision: DType::BF16, scaler, ..TrainConfig::f16() }
    }

    /// [`bf16`](Self::bf16) with pure-bf16 weights: no master copy, AdamW rounds the new
    /// weights stochastically from `seed` (4 bytes less per parameter).
    pub fn pure_bf16(seed: u64) -> Self {
        TrainConfig { weights: Weights::PureBf16 { seed }, ..TrainConfig::bf16() }
    }

    /// Checks the settings against each other and against the backend's half type.
    fn validate(&self, op: &'static str, backend: Option<DType>) -> Result<()> {
        let bad = |what, why: String| Err(Error::InvalidArgument { op, what, why });
        if self.micro_batches == 0 {
            return bad("micro_batches", "must be at least 1".into());
        }
        if self.precision == DType::F32 {
            return bad("precision", "the step computes in f16 or bf16 (Cpu::fp32 is the f32 reference)".into());
        }
        if matches!(self.weights, Weights::PureBf16 { .. }) && self.precision != DType::BF16 {
            return bad("weights", format!("pure bf16 weights need bf16 precision, not {}", self.precision));
        }
        match backend {
            Some(h) if h != self.precision => bad(
                "precision",
                format!(
                    "the backend computes in {h} but the config asks for {} (use a {} backend)",
                    self.precision, self.precision
                ),
            ),
            _ => Ok(()),
        }
    }
}

/// What [`TrainStep`] trains: a model whose samples are a fixed number of input elements
/// with a fixed number of labels, recorded on a tape as logits and a loss. [`Mlp`] (a
/// sample is a row of f32 features with one class label) and [`Gpt`] (a sample is a
/// sequence of `context` tokens with the next token of each as its labels) implement it.
pub trait Model<B: Backend> {
    /// An input element on the host: f32 features, u32 tokens.
    type Elem: Copy;
    /// A batch of inputs on the backend.
    type Input;

    /// Where the parameters live.
    fn layout(&self) -> &ArenaLayout;
    /// Input elements per sample.
    fn input_len(&self) -> usize;
    /// Labels per sample (rows of logits per sample).
    fn labels_len(&self) -> usize;
    /// Labels are below this.
    fn classes(&self) -> usize;
    /// Columns of the logits (at least [`classes`](Self::classes); the rest padding).
    fn logit_cols(&self) -> usize {
        self.classes()
    }
    /// Checks input values that would fault a kernel (tokens out of the vocabulary);
    /// NaN and inf features are not errors (see the module docs).
    fn check_input(&self, op: &'static str, x: &[Self::Elem]) -> Result<()>;
    /// Uploads a batch of whole samples.
    fn upload(&self, be: &B, x: &[Self::Elem]) -> Result<Self::Input>;
    /// Overwrites an uploaded batch of the same size in place.
    fn write(&self, be: &B, input: &mut Self::Input, x: &[Self::Elem]) -> Result<()>;
    /// Gives an uploaded batch back.
    fn recycle_input(&self, be: &B, input: Self::Input);
    /// Records the forward pass; returns the logits (`samples * labels_len` rows).
    fn forward(&self, tape: &mut Tape<B>, be: &B, params: &B::Params, input: &Self::Input) -> Result<Var>;
    /// Records the loss of `logits` against `labels`, `out = beta out + alpha loss`, its
    /// backward to be run with `weight`.
    #[allow(clippy::too_many_arguments)]
    fn loss(
        &self,
        tape: &mut Tape<B>,
        be: &B,
        params: &B::Params,
        logits: Var,
        labels: &B::Labels,
        out: &mut B::Scalar,
        alpha: f32,
        beta: f32,
        weight: f32,
    ) -> Result<()>;
}

impl<B: Backend> Model<B> for Mlp {
    type Elem = f32;
    type Input = B::Tensor;

    fn layout(&self) -> &ArenaLayout {
        Mlp::layout(self)
    }

    fn input_len(&self) -> usize {
        self.in_features()
    }

    fn labels_len(&self) -> usize {
        1
    }

    fn classes(&self) -> usize {
        self.out_features()
    }

    fn check_input(&self, _: &'static str, _: &[f32]) -> Result<()> {
        Ok(())
    }

    fn upload(&self, be: &B, x: &[f32]) -> Result<B::Tensor> {
        be.tensor(x, x.len() / self.in_features(), self.in_features())
    }

    fn write(&self, be: &B, input: &mut B::Tensor, x: &[f32]) -> Result<()> {
        be.write(input, x)
    }

    fn recycle_input(&self, be: &B, input: B::Tensor) {
        be.recycle(input);
    }

    fn forward(&self, tape: &mut Tape<B>, be: &B, params: &B::Params, input: &B::Tensor) -> Result<Var> {
        let x = tape.input(be, input)?;
        Mlp::forward(self, tape, be, params, x)
    }

    fn loss(
        &self,
        tape: &mut Tape<B>,
        be: &B,
        _: &B::Params,
        logits: Var,
        labels: &B::Labels,
        out: &mut B::Scalar,
        alpha: f32,
        beta: f32,
        _: f32,
    ) -> Result<()> {
        tape.softmax_cross_entropy(be, logits, labels, out, alpha, beta)
    }
}

/// A sample is a sequence of `context` tokens; its labels are the tokens that follow
/// each (the input shifted by one); the loss is the fused classifier's.
impl<B: TransformerBackend + 'static> Model<B> for Gpt {
    type Elem = u32;
    type Input = B::Tokens;

    fn layout(&self) -> &ArenaLayout {
        Gpt::layout(self)
    }

    fn input_len(&self) -> usize {
        self.config().context
    }

    fn labels_len(&self) -> usize {
        self.config().context
    }

    fn classes(&self) -> usize {
        self.config().vocab
    }

    fn logit_cols(&self) -> usize {
        self.config().padded_vocab
    }

    fn check_input(&self, op: &'static str, x: &[u32]) -> Result<()> {
        check_labels(op, x, x.len(), self.config().vocab)
    }

    fn upload(&self, be: &B, x: &[u32]) -> Result<B::Tokens> {
        be.tokens(x, self.config().vocab)
    }

    fn write(&self, be: &B, input: &mut B::Tokens, x: &[u32]) -> Result<()> {
        be.write_tokens(input, x)
    }

    fn recycle_input(&self, be: &B, input: B::Tokens) {
        be.recycle_tokens(input);
    }

    fn forward(&self, tape: &mut Tape<B>, be: &B, params: &B::Params, input: &B::Tokens) -> Result<Var> {
        Gpt::forward(self, tape, be, params, input, self.config().context)
    }

    fn loss(
        &self,
        tape: &mut Tape<B>,
        be: &B,
        params: &B::Params,
        logits: Var,
        labels: &B::Labels,
        out: &mut B::Scalar,
        alpha: f32,
        beta: f32,
        weight: f32,
    ) -> Result<()> {
        tape.classifier(be, params, logits, labels, out, alpha, beta, weight)
    }
}

/// An [`Mlp`] classifier, its parameters and optimizer state on a backend, and
/// everything a step reuses (tapes, input buffers, the captured graph).
pub struct TrainStep<B: Backend, M: Model<B> = Mlp> {
    be: B,
    model: M,
    params: B::Params,
    cfg: TrainConfig,
    tapes: Vec<Tape<B>>,
    /// One (inputs, labels) buffer pair per micro-batch, for the current batch size.
    inputs: Vec<(M::Input, B::Labels)>,
    batch: Option<usize>,
    loss: B::Scalar,
    /// An eager step has run with the current batch size (its buffers are in the pool).
    warm: bool,
    graph: Option<B::Graph>,
    graph_error: Option<String>,
    replays: u64,
}

impl<B: Backend, M: Model<B>> TrainStep<B, M> {
    /// The model with initial values `init` (per parameter in layout order, as
    /// [`Mlp::init`] and [`Gpt::init`] make them).
    pub fn new(be: B, model: M, init: &[Vec<f32>], cfg: TrainConfig) -> Result<Self> {
        const OP: &str = "TrainStep::new";
        cfg.validate(OP, be.half())?;
        let params = be.params(model.layout().clone(), init, cfg.adam, cfg.scaler, cfg.weights)?;
        let loss = be.scalar()?;
        Ok(TrainStep {
            tapes: (0..cfg.micro_batches).map(|_| Tape::new()).collect(),
            be,
            model,
            params,
            cfg,
            inputs: Vec::new(),
            batch: None,
            loss,
            warm: false,
            graph: None,
            graph_error: None,
            replays: 0,
        })
    }

    /// Checks a batch: `x` holds whole samples (`input_len` elements each: a row of
    /// features, a sequence of tokens) and `labels` `labels_len` per sample, each a class
    /// of the model; with `split`, the samples split into the micro-batches (a training
    /// step needs that; accuracy does not care how they split). Returns the samples.
    fn validate(&self, op: &'static str, x: &[M::Elem], labels: &[u32], split: bool) -> Result<usize> {
        let (per_sample, labels_per) = (self.model.input_len(), self.model.labels_len());
        let batch = labels.len() / labels_per;
        if labels.is_empty() {
            return Err(Error::InvalidArgument { op, what: "labels", why: "the batch is empty".into() });
        }
        if batch * labels_per != labels.len() || batch.checked_mul(per_sample) != Some(x.len()) {
            return Err(Error::ShapeMismatch {
                op,
                expected: vec![batch, per_sample, labels_per],
                got: vec![x.len(), labels.len()],
            });
        }
        if split && batch % self.cfg.micro_batches != 0 {
            return Err(Error::InvalidArgument {
                op,
                what: "batch",
                why: format!("{batch} samples do not split into {} equal micro-batches", self.cfg.micro_batches),
            });
        }
        self.model.check_input(op, x)?;
        check_labels(op, labels, labels.len(), self.model.classes())?;
        Ok(batch)
    }

    /// One training step on a batch (see the module docs). Returns once the work is
    /// queued; read the loss with [`loss`](Self::loss).
    pub fn step(&mut self, x: &[M::Elem], labels: &[u32]) -> Result<()> {
        const OP: &str = "TrainStep::step";
        self.validate(OP, x, labels, true)?;
        self.load_batch(x, labels)?;
        if let Some(g) = &self.graph {
            self.be.replay(g)?;
            self.replays += 1;
            return Ok(());
        }
        if self.cfg.graphs && self.warm && self.graph_error.is_none() && self.capture()? {
            return Ok(());
        }
        self.clear_tapes();
        self.body()?;
        self.warm = true;
        Ok(())
    }

    /// Copies the batch into the per-micro-batch input buffers, reallocating them (and
    /// dropping a captured graph) when the batch size changed.
    fn load_batch(&mut self, x: &[M::Elem], labels: &[u32]) -> Result<()> {
        let batch = labels.len() / self.model.labels_len();
        let k = self.cfg.micro_batches;
        let samples = batch / k;
        let (features, rows, classes) =
            (samples * self.model.input_len(), samples * self.model.labels_len(), self.model.classes());
        if self.batch != Some(batch) {
            self.drop_graph();
            self.clear_tapes();
            for (input, l) in self.inputs.drain(..) {
                self.model.recycle_input(&self.be, input);
                self.be.recycle_labels(l);
            }
            self.batch = None;
            self.warm = false;
            for j in 0..k {
                let t = self.model.upload(&self.be, &x[j * features..(j + 1) * features])?;
                let l = self.be.labels(&labels[j * rows..(j + 1) * rows], classes)?;
                self.inputs.push((t, l));
            }
            self.batch = Some(batch);
            return Ok(());
        }
        for (j, (t, l)) in self.inputs.iter_mut().enumerate() {
            self.model.write(&self.be, t, &x[j * features..(j + 1) * features])?;
            self.be.write_labels(l, &labels[j * rows..(j + 1) * rows])?;
        }
        Ok(())
    }

    /// Captures the step and runs it once by replay. Returns false (after recording why)
    /// when the capture failed; the caller then runs the step eagerly.
    fn capture(&mut self) -> Result<bool> {
        self.clear_tapes();
        match self.be.begin_capture() {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            // The driver refused and nothing was captured: the step runs eagerly, now and
            // from now on, as when the capture itself fails below.
            Err(e) => {
                self.graph_error = Some(e.to_string());
                return Ok(false);
            }
        }
        let body = self.body();
        let graph = self.be.end_capture();
        match (body, graph) {
            (Ok(()), Ok(g)) => {
                self.be.replay(&g)?;
                self.graph = Some(g);
                self.replays += 1;
                Ok(true)
            }
            (body, graph) => {
                let why = match (&body, &graph) {
                    (Err(e), _) | (_, Err(e)) => e.to_string(),
                    _ => unreachable!("both succeeded is the other arm"),
                };
                if let Ok(g) = graph {
                    self.be.release_graph(g);
                }
                self.graph_error = Some(why);
                Ok(false)
            }
        }
    }

    /// The step's work, queued on the backend.
    fn body(&mut self) -> Result<()> {
        let TrainStep { be, model, params, tapes, inputs, loss, cfg, .. } = self;
        be.zero_grad(params)?;
        let weight = 1.0 / cfg.micro_batches as f32;
        for (j, (tape, (x, labels))) in tapes.iter_mut().zip(inputs.iter()).enumerate() {
            let logits = model.forward(tape, be, params, x)?;
            let beta = if j == 0 { 0.0 } else { 1.0 };
            model.loss(tape, be, params, logits, labels, loss, weight, beta, weight)?;
            tape.backward(be, params, weight)?;
        }
        be.optimizer_step(params)
    }

    fn clear_tapes(&mut self) {
        for tape in &mut self.tapes {
            tape.clear(&self.be);
        }
    }

    fn drop_graph(&mut self) {
        if let Some(g) = self.graph.take() {
            // The tapes hold the buffers the graph reads and writes; they go back to the
            // pool along with the graph's scratch buffers.
            self.be.release_graph(g);
            self.clear_tapes();
        }
    }

    /// The mean loss of the last step's batch, before its update (synchronizes).
    pub fn loss(&self) -> Result<f32> {
        self.be.scalar_to_host(&self.loss)
    }

    /// The current loss scale (synchronizes).
    pub fn loss_scale(&self) -> Result<f32> {
        self.be.loss_scale(&self.params)
    }

    /// Whether the last step found an inf or NaN gradient and was skipped (synchronizes).
    pub fn skipped(&self) -> Result<bool> {
        self.be.found_inf(&self.params)
    }

    /// Optimizer steps taken, skipped ones not counted (synchronizes).
    pub fn steps_taken(&self) -> Result<f32> {
        self.be.steps_taken(&self.params)
    }

    /// The fp32 master weights, the whole arena (synchronizes).
    pub fn master_weights(&self) -> Result<Vec<f32>> {
        self.be.master_to_host(&self.params)
    }

    /// Writes the fp32 master weights by parameter name as safetensors (F32; names and
    /// shapes as [`state`](Self::state) gives them), the file PyTorch's
    /// `safetensors.torch.load_file` reads (synchronizes).
    pub fn save_safetensors(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        crate::io::save_safetensors(path, self.model.layout(), &self.master_weights()?)
    }

    /// Replaces the master weights with those in a safetensors file (every parameter by
    /// name and shape, F32, F16, BF16 or F64; see [`crate::io::load_safetensors`]); the
    /// optimizer state stays. Nothing changes when the file does not fit the model.
    pub fn load_safetensors(&mut self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let master = crate::io::load_safetensors(path, self.model.layout())?;
        self.be.load_master(&mut self.params, &master)
    }

    /// Writes what the run resumes from (master weights, AdamW moments and step count, its
    /// settings, the loss-scaler state; `optim::Checkpoint`'s versioned format) to `path`
    /// (synchronizes). [`load_checkpoint`](Self::load_checkpoint) into a step of the same
    /// model continues bit for bit as this one would.
    pub fn save_checkpoint(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        self.be.checkpoint(&self.params)?.save(path)
    }

    /// Restores a checkpoint [`save_checkpoint`](Self::save_checkpoint) wrote, from any
    /// backend, into this step (its optimizer settings included). Drops a captured graph.
    /// Nothing changes when the file does not fit the model.
    pub fn load_checkpoint(&mut self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let ckpt = crate::optim::Checkpoint::load(path)?;
        self.be.restore(&mut self.params, &ckpt)?;
        self.cfg.adam = ckpt.adam;
        if let Some(s) = ckpt.scaler {
            self.cfg.scaler = s.config;
        }
        self.drop_graph();
        Ok(())
    }

    /// The whole parameter and optimizer state, by parameter name (see [`TrainState`];
    /// synchronizes). The same on every backend.
    pub fn state(&self) -> Result<TrainState> {
        TrainState::from_snapshot(self.be.snapshot(&self.params)?)
    }

    /// Changes the optimizer settings (a learning-rate schedule) from the next step on.
    /// Drops a captured graph, whose kernels carry the old settings.
    pub fn set_adam(&mut self, cfg: AdamConfig) -> Result<()> {
        self.be.set_adam(&mut self.params, cfg)?;
        self.cfg.adam = cfg;
        self.drop_graph();
        Ok(())
    }

    /// Steps run by replaying a graph (0 on the CPU, or when capture is off or failed).
    pub fn graph_replays(&self) -> u64 {
        self.replays
    }

    /// Why graph capture was given up, if it was (the step then runs eagerly).
    pub fn graph_error(&self) -> Option<&str> {
        self.graph_error.as_deref()
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.be
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The parameters and optimizer state.
    pub fn params(&self) -> &B::Params {
        &self.params
    }

    /// The settings.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// The logits of a forward pass on `x` (whole samples), with the current weights, on
    /// a tape of its own (synchronizes): `samples * labels_len` rows of `logit_cols`.
    pub fn logits(&self, x: &[M::Elem]) -> Result<Vec<f32>> {
        const OP: &str = "TrainStep::logits";
        let per_sample = self.model.input_len();
        if x.is_empty() || x.len() % per_sample != 0 {
            return Err(Error::ShapeMismatch {
                op: OP,
                expected: vec![x.len() / per_sample, per_sample],
                got: vec![x.len()],
            });
        }
        self.model.check_input(OP, x)?;
        let input = self.model.upload(&self.be, x)?;
        let mut tape = Tape::new();
        let result = (|| {
            let logits = self.model.forward(&mut tape, &self.be, &self.params, &input)?;
            self.be.to_host(tape.value(logits)?)
        })();
        tape.clear(&self.be);
        self.model.recycle_input(&self.be, input);
        result
    }

    /// The predicted class of each row of logits for `x` (the argmax over the real
    /// classes; synchronizes).
    pub fn predict(&self, x: &[M::Elem]) -> Result<Vec<u32>> {
        Ok(argmax_rows(&self.logits(x)?, self.model.logit_cols(), self.model.classes()))
    }

    /// The fraction of labels that the prediction gets right (synchronizes).
    pub fn accuracy(&self, x: &[M::Elem], labels: &[u32]) -> Result<f32> {
        self.validate("TrainStep::accuracy", x, labels, false)?;
        Ok(accuracy_of(&self.predict(x)?, labels))
    }

    /// The mean loss and the accuracy of the current weights on a batch (any number of
    /// whole samples), with no weight or optimizer change (synchronizes). The loss is
    /// computed exactly as the training loss is (the same forward and loss ops: on the
    /// mixed path f32 from the half-precision logits), so evaluating a batch and then
    /// training on it with one micro-batch gives the same loss twice, bit for bit
    /// (micro-batches sum their means in another order); the accuracy counts labels that
    /// the argmax of those logits gets right. Bad shapes or labels are errors returned
    /// before anything is queued.
    pub fn evaluate(&self, x: &[M::Elem], labels: &[u32]) -> Result<(f32, f32)> {
        const OP: &str = "TrainStep::evaluate";
        self.validate(OP, x, labels, false)?;
        let input = self.model.upload(&self.be, x)?;
        let targets = match self.be.labels(labels, self.model.classes()) {
            Ok(t) => t,
            Err(e) => {
                self.model.recycle_input(&self.be, input);
                return Err(e);
            }
        };
        let mut loss = self.be.scalar()?;
        let mut tape = Tape::new();
        let result = (|| {
            let logits = self.model.forward(&mut tape, &self.be, &self.params, &input)?;
            self.model.loss(&mut tape, &self.be, &self.params, logits, &targets, &mut loss, 1.0, 0.0, 1.0)?;
            let z = self.be.to_host(tape.value(logits)?)?;
            let predicted = argmax_rows(&z, self.model.logit_cols(), self.model.classes());
            Ok((self.be.scalar_to_host(&loss)?, accuracy_of(&predicted, labels)))
        })();
        tape.clear(&self.be);
        self.model.recycle_input(&self.be, input);
        self.be.recycle_labels(targets);
        result
    }
}

/// The index of the largest of the first `classes` values of each `cols`-wide row (the
/// first on ties).
fn argmax_rows(logits: &[f32], cols: usize, classes: usize) -> Vec<u32> {
    logits
        .chunks(cols.max(1))
        .map(|row| {
            let row = &row[..classes.min(row.len())];
            let mut best = 0;
            for (i, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = i;
                }
            }
            best as u32
        })
        .collect()
}

fn accuracy_of(predicted: &[u32], labels: &[u32]) -> f32 {
    let correct = predicted.iter().zip(labels).filter(|(p, l)| p == l).count();
    correct as f32 / labels.len().max(1) as f32
}

/// One parameter's state in a [`TrainState`]: each `Vec` holds exactly the parameter's
/// elements (row-major, `shape`), without the arena's alignment padding.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamState {
    /// Row-major shape: `[out, in]` for a weight (PyTorch's `nn.Linear` layout), `[out]`
    /// for a bias.
    pub shape: Vec<usize>,
    /// fp32 master weights.
    pub master: Vec<f32>,
    /// The weights the forward reads, as f32: the fp16 working copy (exact) on `Cuda` and
    /// `Cpu::mixed()`, always the round-to-nearest-even of `master`; on `Cpu::fp32()`
    /// `master` itself.
    pub working: Vec<f32>,
    /// The gradients as the last step left them: still multiplied by the loss scale
    /// [`TrainState::grad_scale`] (see there, and [`TrainState::unscaled_grad`]).
    pub grad: Vec<f32>,
    /// AdamW's first moment (of the unscaled gradients).
    pub m: Vec<f32>,
    /// AdamW's second moment.
    pub v: Vec<f32>,
}

/// The whole state of a [`TrainStep`] on the host, by parameter name: what a peer needs to
/// check a run against PyTorch step by step ([`TrainStep::state`]).
///
/// Names follow PyTorch's `named_parameters()` for a module holding the layers in an
/// `nn.ModuleList` called `layers`: `"layers.0.weight"`, `"layers.0.bias"`,
/// `"layers.1.weight"`, ...
///
/// Gradients are still scaled when read. The step checks them for inf/NaN without
/// writing them (`GradScaler::check`, not `unscale`), and AdamW divides by the scale
/// inside its own pass, so after a step the gradients are the backward's, multiplied by
/// the loss scale that backward was seeded with: [`grad_scale`](Self::grad_scale). That
/// is the scale before the step's scale update, so it can differ from
/// [`loss_scale`](Self::loss_scale) (after a backoff or a growth). PyTorch's `p.grad`
/// after `scaler.step` holds the unscaled values: [`unscaled_grad`](Self::unscaled_grad).
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState {
    /// Every parameter by name.
    pub params: BTreeMap<String, ParamState>,
    /// Optimizer steps taken, skipped ones not counted (torch's `state["step"]`).
    pub step: f32,
    /// The loss scale the next step's backward is seeded with (`GradScaler.get_scale()`;
    /// 1 with the scaler off).
    pub loss_scale: f32,
    /// Clean steps since the last scale change (`GradScaler._growth_tracker`).
    pub growth_tracker: i32,
    /// Whether the last step found an inf or NaN gradient, and so changed no weight,
    /// moment or step count.
    pub found_inf: bool,
    /// The loss scale the stored gradients are multiplied by; `None` when the scaler is
    /// off and they are unscaled. Before the first step the gradients are zero and this is
    /// the initial scale.
    pub grad_scale: Option<f32>,
}

impl TrainState {
    /// Splits a backend's flat snapshot by the names of its layout.
    fn from_snapshot(s: ParamsSnapshot) -> Result<Self> {
        const OP: &str = "TrainStep::state";
        let total = s.layout.total();
        let roles = [("master", &s.master), ("working", &s.working), ("grad", &s.grad), ("m", &s.m), ("v", &s.v)];
        for (what, buf) in roles {
            if buf.len() != total {
                return Err(Error::LengthMismatch { op: OP, what, expected: total, got: buf.len() });
            }
        }
        let params = s
            .layout
            .params()
            .iter()
            .map(|p| {
                // In range: offset + len <= total for every parameter of a layout.
                let view = |buf: &Vec<f32>| buf[p.offset..p.offset + p.len].to_vec();
                let state = ParamState {
                    shape: p.shape.clone(),
                    master: view(&s.master),
                    working: view(&s.working),
                    grad: view(&s.grad),
                    m: view(&s.m),
                    v: view(&s.v),
                };
                (p.name.clone(), state)
            })
            .collect();
        Ok(TrainState {
            params,
            step: s.step,
            loss_scale: s.loss_scale,
            growth_tracker: s.growth_tracker,
            found_inf: s.found_inf,
            grad_scale: s.grad_scale,
        })
    }

    /// The gradients of parameter `name` divided by [`grad_scale`](Self::grad_scale) the
    /// way PyTorch's `GradScaler.unscale_` does it (`g * (f32)(1 / (f64)scale)`, bit for
    /// bit); as stored when the scaler is off. `None` for an unknown name.
    pub fn unscaled_grad(&self, name: &str) -> Option<Vec<f32>> {
        let p = self.params.get(name)?;
        Some(match self.grad_scale {
            Some(scale) => {
                let inv = (1.0 / scale as f64) as f32;
                p.grad.iter().map(|g| g * inv).collect()
            }
            None => p.grad.clone(),
        })
    }
}

impl<B: Backend, M: Model<B>> Drop for TrainStep<B, M> {
    fn drop(&mut self) {
        self.drop_graph();
    }
}
