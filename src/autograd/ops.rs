//! The ops of the tape: what each records, and its backward rule.

use super::{Node, Var};
use crate::backend::Backend;
use crate::error::Result;
use crate::kernels::gemm::Activation;

/// How a value was made, with what its backward needs.
pub(super) enum Op<B: Backend> {
    Input,
    /// `y = act(x W^T + b)`; `pre` is the pre-activation the GEMM epilogue stored (absent
    /// when `act` is `None`).
    Linear {
        x: Var,
        weight: usize,
        bias: Option<usize>,
        act: Activation,
        pre: Option<B::Tensor>,
    },
    Activation {
        x: Var,
        act: Activation,
    },
    Add {
        a: Var,
        b: Var,
    },
    /// An op of a backend extension (the transformer ops), with its own backward rule.
    Custom(Box<dyn CustomOp<B>>),
}

/// The backward rule of an op whose backend is more than [`Backend`] (the transformer
/// ops need [`TransformerBackend`](crate::backend::TransformerBackend)).
pub(super) trait CustomOp<B: Backend> {
    /// The gradients this op sends to its operands given its own gradient `g`.
    fn backward(
        &self,
        be: &B,
        params: &mut B::Params,
        nodes: &[Node<B>],
        g: &B::Tensor,
    ) -> Result<Vec<(Var, B::Tensor)>>;
    /// Gives what the op kept back to the backend.
    fn recycle(self: Box<Self>, be: &B);
}

impl<B: Backend> Op<B> {
    pub(super) fn recycle(self, be: &B) {
        match self {
            Op::Linear { pre: Some(pre), .. } => be.recycle(pre),
            Op::Custom(op) => op.recycle(be),
            _ => {}
        }
    }
}

/// The tape's loss, with a copy of what its backward reads besides the input.
pub(super) enum LossOp<B: Backend> {
    CrossEntropy {
        input: Var,
        labels: B::Labels,
    },
    Mse {
        input: Var,
        target: B::Tensor,
    },
    /// The fused classifier computed its gradient in the forward, for the `weight` kept
    /// here (the backward's must be the same).
    Classifier {
        input: Var,
        dlogits: B::Tensor,
        weight: f32,
    },
}

impl<B: Backend> LossOp<B> {
    pub(super) fn input(&self) -> Var {
        match self {
            LossOp::CrossEntropy { input, .. } | LossOp::Mse { input, .. } | LossOp::Classifier { input, .. } => *input,
        }
    }

    /// d(weight * loss) / d(input) times the loss scale.
    pub(super) fn backward(&self, be: &B, params: &B::Params, input: &B::Tensor, weight: f32) -> Result<B::Tensor> {
        match self {
            LossOp::CrossEntropy { labels, .. } => be.cross_entropy_backward(params, input, labels, weight),
            LossOp::Mse { target, .. } => be.mse_backward(params, input, target, weight),
            LossOp::Classifier { dlogits, weight: w, .. } => {
                if *w != weight {
                    return Err(crate::Error::InvalidArgument {
                        op: "Tape::backward",
                        what: "weight",
                        why: format!("{weight}, but the classifier computed its gradient for {w}"),
                    });
                }
                be.copy(dlogits)
            }
        }
    }

    pub(super) fn recycle(self, be: &B) {
        match self {
            LossOp::CrossEntropy { labels, .. } => be.recycle_labels(labels),
            LossOp::Mse { target, .. } => be.recycle(target),
            LossOp::Classifier { dlogits, .. } => be.recycle(dlogits),
        }
    }
}

/// The backward rule of node `i` given its gradient `g`: the gradients it sends to its
/// operands (parameter gradients go straight into the arena).
pub(super) fn backward<B: Backend>(
    be: &B,
    params: &mut B::Params,
    nodes: &[Node<B>],
    i: usize,
    g: &B::Tensor,
) -> Result<Vec<(Var, B::Tensor)>> {
    let mut out = Vec::new();
    match &nodes[i].op {
        Op::Input => {}
        Op::Linear { x, weight, bias, act, pre } => {
            let need_dx = nodes[x.0].needs_grad;
            let dx = be.linear_backward(params, *weight, *bias, &nodes[x.0].value, pre.as_ref(), *act, g, need_dx)?;
            out.extend(dx.map(|dx| (*x, dx)));
        }
        Op::Activation { x, act } => {
            if nodes[x.0].needs_grad {
                out.push((*x, be.activation_backward(&nodes[x.0].value, g, *act)?));
            }
        }
        Op::Add { a, b } => {
            for v in [a, b] {
                if nodes[v.0].needs_grad {
                    out.push((*v, be.copy(g)?));
                }
            }
        }
        Op::Custom(op) => out = op.backward(be, params, nodes, g)?,
    }
    Ok(out)
}
