//! A define-by-run tape, micrograd-style: each op runs forward at once on the backend and
//! appends a node; [`Tape::backward`] sweeps the nodes in reverse, and gradients that
//! reach a value along several paths add up (+=).
//!
//! Values are activations ([`Backend::Tensor`]); parameters are not nodes but slots of
//! the backend's parameter arena, named by index, and their gradients accumulate straight
//! into the arena's gradient buffer (so several backward passes before one optimizer
//! step accumulate micro-batches). One loss per tape; its backward is seeded with the
//! loss scale (DESIGN.md, step 4), so every gradient on the tape and in the arena is
//! multiplied by the scale until the optimizer divides it out.
//!
//! ```
//! use mixed_precision::autograd::Tape;
//! use mixed_precision::backend::{cpu::Cpu, Backend};
//! use mixed_precision::kernels::gemm::Activation;
//! use mixed_precision::nn::{ArenaLayout, Weights};
//! use mixed_precision::optim::{AdamConfig, GradScalerConfig};
//!
//! # fn main() -> mixed_precision::Result<()> {
//! let be = Cpu::fp32();
//! let mut layout = ArenaLayout::new();
//! let w = layout.push("w", &[2, 3])?;
//! let init = vec![vec![0.1, -0.2, 0.3, 0.4, 0.5, -0.6]];
//! let no_scaling = GradScalerConfig { enabled: false, ..Default::default() };
//! let mut params = be.params(layout, &init, AdamConfig::default(), no_scaling, Weights::Master)?;
//!
//! let mut tape = Tape::new();
//! let x = be.tensor(&[1.0, 2.0, 3.0], 1, 3)?;
//! let x = tape.input(&be, &x)?;
//! let h = tape.linear(&be, &params, x, w, None, Activation::None)?;
//! let z = tape.add(&be, h, h)?; // a value used twice: its gradient is the sum of both
//! let labels = be.labels(&[1], 2)?;
//! let mut loss = be.scalar()?;
//! tape.softmax_cross_entropy(&be, z, &labels, &mut loss, 1.0, 0.0)?;
//! tape.backward(&be, &mut params, 1.0)?;
//! assert!(be.scalar_to_host(&loss)? > 0.0);
//! assert!(be.grad_to_host(&params)?.iter().any(|&g| g != 0.0));
//! tape.clear(&be);
//! # Ok(())
//! # }
//! ```

mod ops;
mod transformer;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::kernels::gemm::Activation;

use ops::{LossOp, Op};

/// A value on a [`Tape`]: the index of its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Var(usize);

struct Node<B: Backend> {
    value: B::Tensor,
    grad: Option<B::Tensor>,
    op: Op<B>,
    /// False for inputs that asked for no gradient: the backward skips computing one.
    needs_grad: bool,
}

/// The tape. Reused across steps: [`clear`](Self::clear) gives its buffers back to the
/// backend's pool.
pub struct Tape<B: Backend> {
    nodes: Vec<Node<B>>,
    loss: Option<LossOp<B>>,
}

impl<B: Backend> Default for Tape<B> {
    fn default() -> Self {
        Tape { nodes: Vec::new(), loss: None }
    }
}

impl<B: Backend> Tape<B> {
    /// An empty tape.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of values recorded.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// A model input, copied onto the tape; no gradient is computed for it.
    pub fn input(&mut self, be: &B, x: &B::Tensor) -> Result<Var> {
        let value = be.copy(x)?;
        Ok(self.push(value, Op::Input, false))
    }

    /// As [`input`](Self::input), but the backward also computes the gradient with respect
    /// to it (read it with [`grad`](Self::grad)).
    pub fn input_with_grad(&mut self, be: &B, x: &B::Tensor) -> Result<Var> {
        let value = be.copy(x)?;
        Ok(self.push(value, Op::Input, true))
    }

    /// The value of `v`.
    pub fn value(&self, v: Var) -> Result<&B::Tensor> {
        Ok(&self.node("Tape::value", v)?.value)
    }

    /// The gradient of the loss (times the loss scale) with respect to `v`, after
    /// [`backward`](Self::backward); `None` if no gradient reached it.
    pub fn grad(&self, v: Var) -> Result<Option<&B::Tensor>> {
        Ok(self.node("Tape::grad", v)?.grad.as_ref())
    }

    /// Gives every buffer back to the backend's pool and empties the tape.
    pub fn clear(&mut self, be: &B) {
        for node in self.nodes.drain(..) {
            be.recycle(node.value);
            if let Some(g) = node.grad {
                be.recycle(g);
            }
            node.op.recycle(be);
        }
        if let Some(loss) = self.loss.take() {
            loss.recycle(be);
        }
    }

    fn push(&mut self, value: B::Tensor, op: Op<B>, needs_grad: bool) -> Var {
        self.nodes.push(Node { value, grad: None, op, needs_grad });
        Var(self.nodes.len() - 1)
    }

    fn node(&self, op: &'static str, v: Var) -> Result<&Node<B>> {
        self.nodes.get(v.0).ok_or_else(|| Error::InvalidArgument {
            op,
            what: "var",
            why: format!("{v:?} is not on this tape ({} values)", self.nodes.len()),
        })
    }

    fn check_no_loss(&self, op: &'static str) -> Result<()> {
        match self.loss {
            None => Ok(()),
            Some(_) => {
                Err(Error::InvalidArgument { op, what: "tape", why: "already has a loss; clear it first".into() })
            }
        }
    }

    /// Adds `g` to the gradient of `v` (the first contribution is stored as is).
    fn accumulate(&mut self, be: &B, v: Var, g: B::Tensor) -> Result<()> {
        let node = &mut self.nodes[v.0];
        match &mut node.grad {
            None => node.grad = Some(g),
            Some(acc) => {
                let r = be.accumulate(acc, &g);
                be.recycle(g);
                r?;
            }
        }
        Ok(())
    }

    /// Runs the backward pass from the loss: the loss gradient, seeded with the loss scale
    /// times `weight` (1 / the number of micro-batches when accumulating, else 1), then
    /// every op in reverse. Parameter gradients are added (+=) to the arena's.
    pub fn backward(&mut self, be: &B, params: &mut B::Params, weight: f32) -> Result<()> {
        const OP: &str = "Tape::backward";
        if !weight.is_finite() {
            return Err(Error::InvalidArgument { op: OP, what: "weight", why: "must be finite".into() });
        }
        let Some(loss) = &self.loss else {
            return Err(Error::InvalidArgument { op: OP, what: "tape", why: "has no loss to start from".into() });
        };
        let input = loss.input();
        let seed = loss.backward(be, params, &self.nodes[input.0].value, weight)?;
        self.accumulate(be, input, seed)?;
        for i in (0..self.nodes.len()).rev() {
            let Some(g) = self.nodes[i].grad.take() else { continue };
            let contributions = ops::backward(be, params, &self.nodes, i, &g);
            self.nodes[i].grad = Some(g);
            for (v, dv) in contributions? {
                self.accumulate(be, v, dv)?;
            }
        }
        Ok(())
    }

    /// `act(x W^T + b)` with the weight (`out x in`) and bias (`out`) at those arena
    /// indices: one GEMM launch with the bias and activation in its epilogue.
    pub fn linear(
        &mut self,
        be: &B,
        params: &B::Params,
        x: Var,
        weight: usize,
        bias: Option<usize>,
        act: Activation,
    ) -> Result<Var> {
        let (y, pre) = be.linear(params, weight, bias, &self.node("Tape::linear", x)?.value, act)?;
        Ok(self.push(y, Op::Linear { x, weight, bias, act, pre }, true))
    }

    /// `max(x, 0)`.
    pub fn relu(&mut self, be: &B, x: Var) -> Result<Var> {
        self.activation(be, x, Activation::Relu)
    }

    /// GELU, tanh form.
    pub fn gelu(&mut self, be: &B, x: Var) -> Result<Var> {
        self.activation(be, x, Activation::Gelu)
    }

    fn activation(&mut self, be: &B, x: Var, act: Activation) -> Result<Var> {
        let y = be.activation(&self.node("Tape::activation", x)?.value, act)?;
        let needs_grad = self.nodes[x.0].needs_grad;
        Ok(self.push(y, Op::Activation { x, act }, needs_grad))
    }

    /// `a + b` (residual connections).
    pub fn add(&mut self, be: &B, a: Var, b: Var) -> Result<Var> {
        const OP: &str = "Tape::add";
        let y = be.add(&self.node(OP, a)?.value, &self.node(OP, b)?.value)?;
        let needs_grad = self.nodes[a.0].needs_grad || self.nodes[b.0].needs_grad;
        Ok(self.push(y, Op::Add { a, b }, needs_grad))
    }

    /// The mean softmax cross-entropy of `logits` against integer `labels`, in f32:
    /// `out = beta * out + alpha * loss` (beta 0, alpha 1 for a plain loss; the
    /// training step accumulates micro-batches with alpha = 1/k). The tape's one loss.
    pub fn softmax_cross_entropy(
        &mut self,
        be: &B,
        logits: Var,
        labels: &B::Labels,
        out: &mut B::Scalar,
        alpha: f32,
        beta: f32,
    ) -> Result<()> {
        const OP: &str = "Tape::softmax_cross_entropy";
        self.check_no_loss(OP)?;
        be.cross_entropy(&self.node(OP, logits)?.value, labels, out, alpha, beta)?;
        self.loss = Some(LossOp::CrossEntropy { input: logits, labels: be.copy_labels(labels)? });
        Ok(())
    }

    /// The mean squared error of `pred` against `target` over all elements, in f32:
    /// `out = beta * out + alpha * loss`. The tape's one loss.
    pub fn mse(
        &mut self,
        be: &B,
        pred: Var,
        target: &B::Tensor,
        out: &mut B::Scalar,
        alpha: f32,
        beta: f32,
    ) -> Result<()> {
        const OP: &str = "Tape::mse";
        self.check_no_loss(OP)?;
        be.mse(&self.node(OP, pred)?.value, target, out, alpha, beta)?;
        self.loss = Some(LossOp::Mse { input: pred, target: be.copy(target)? });
        Ok(())
    }
}
