//! The transformer ops of the tape (issue 20), for backends that have them
//! ([`TransformerBackend`]): embedding, fused residual + layernorm, causal self-attention
//! and the fused classifier loss.

use super::ops::{CustomOp, LossOp, Op};
use super::{Node, Tape, Var};
use crate::backend::{AttnDims, TransformerBackend};
use crate::error::Result;

struct Embedding<B: TransformerBackend> {
    tokens: B::Tokens,
    wte: usize,
    wpe: usize,
    t: usize,
}

impl<B: TransformerBackend> CustomOp<B> for Embedding<B> {
    fn backward(&self, be: &B, params: &mut B::Params, _: &[Node<B>], g: &B::Tensor) -> Result<Vec<(Var, B::Tensor)>> {
        be.embedding_backward(params, self.wte, self.wpe, &self.tokens, self.t, g)?;
        Ok(Vec::new())
    }

    fn recycle(self: Box<Self>, be: &B) {
        be.recycle_tokens(self.tokens);
    }
}

struct LayerNorm<B: TransformerBackend> {
    /// The normalized value (the residual sum, or the input when there was none).
    r: Var,
    gamma: usize,
    beta: usize,
    saved: B::Saved,
}

impl<B: TransformerBackend> CustomOp<B> for LayerNorm<B> {
    fn backward(
        &self,
        be: &B,
        params: &mut B::Params,
        nodes: &[Node<B>],
        g: &B::Tensor,
    ) -> Result<Vec<(Var, B::Tensor)>> {
        let dr = be.layernorm_backward(params, self.gamma, self.beta, &nodes[self.r.0].value, &self.saved, g)?;
        if nodes[self.r.0].needs_grad {
            Ok(vec![(self.r, dr)])
        } else {
            be.recycle(dr);
            Ok(Vec::new())
        }
    }

    fn recycle(self: Box<Self>, be: &B) {
        be.recycle_saved(self.saved);
    }
}

struct Attention<B: TransformerBackend> {
    qkv: Var,
    dims: AttnDims,
    saved: B::Saved,
}

impl<B: TransformerBackend> CustomOp<B> for Attention<B> {
    fn backward(&self, be: &B, _: &mut B::Params, nodes: &[Node<B>], g: &B::Tensor) -> Result<Vec<(Var, B::Tensor)>> {
        if !nodes[self.qkv.0].needs_grad {
            return Ok(Vec::new());
        }
        Ok(vec![(self.qkv, be.attention_backward(g, &nodes[self.qkv.0].value, &self.saved, self.dims)?)])
    }

    fn recycle(self: Box<Self>, be: &B) {
        be.recycle_saved(self.saved);
    }
}

impl<B: TransformerBackend + 'static> Tape<B> {
    /// `wte[token] + wpe[position]` for `tokens` in sequences of `t`; the gradients go to
    /// the two tables in the arena (a `wte` also used as the output projection gets both
    /// uses' gradients: weight tying).
    pub fn embedding(
        &mut self,
        be: &B,
        params: &B::Params,
        tokens: &B::Tokens,
        wte: usize,
        wpe: usize,
        t: usize,
    ) -> Result<Var> {
        let y = be.embedding(params, wte, wpe, tokens, t)?;
        let tokens = match be.copy_tokens(tokens) {
            Ok(tokens) => tokens,
            Err(e) => {
                be.recycle(y);
                return Err(e);
            }
        };
        Ok(self.push(y, Op::Custom(Box::new(Embedding { tokens, wte, wpe, t })), true))
    }

    /// The fused residual + layernorm: `r = x + y` and `h = layernorm(r)` with the affine
    /// parameters at `gamma`, `beta`; returns `(r, h)`. Without `y`, `r` is `x`.
    pub fn residual_layernorm(
        &mut self,
        be: &B,
        params: &B::Params,
        x: Var,
        y: Option<Var>,
        gamma: usize,
        beta: usize,
    ) -> Result<(Var, Var)> {
        const OP: &str = "Tape::residual_layernorm";
        let xv = &self.node(OP, x)?.value;
        let yv = y.map(|y| self.node(OP, y).map(|n| &n.value)).transpose()?;
        let (r, h, saved) = be.layernorm(params, xv, yv, gamma, beta)?;
        let r = match (r, y) {
            (Some(r), Some(y)) => {
                let needs_grad = self.nodes[x.0].needs_grad || self.nodes[y.0].needs_grad;
                self.push(r, Op::Add { a: x, b: y }, needs_grad)
            }
            (r, _) => {
                if let Some(r) = r {
                    be.recycle(r);
                }
                x
            }
        };
        let needs_grad = self.nodes[r.0].needs_grad;
        let h = self.push(h, Op::Custom(Box::new(LayerNorm { r, gamma, beta, saved })), needs_grad);
        Ok((r, h))
    }

    /// Causal self-attention over `qkv` (`(B T) x 3C`, Q, K, V side by side) with
    /// `dims.nh` heads: `(B T) x C`.
    pub fn attention(&mut self, be: &B, qkv: Var, dims: AttnDims) -> Result<Var> {
        let (y, saved) = be.attention(&self.node("Tape::attention", qkv)?.value, dims)?;
        let needs_grad = self.nodes[qkv.0].needs_grad;
        Ok(self.push(y, Op::Custom(Box::new(Attention { qkv, dims, saved })), needs_grad))
    }

    /// The fused classifier as the tape's loss: the mean cross-entropy of `logits`
    /// against `labels` (over the labels' class count of columns; the rest padding) into
    /// `out = beta out + alpha loss`, its gradient for `weight` (which
    /// [`backward`](Self::backward) must be given too) computed in the same pass.
    #[allow(clippy::too_many_arguments)]
    pub fn classifier(
        &mut self,
        be: &B,
        params: &B::Params,
        logits: Var,
        labels: &B::Labels,
        out: &mut B::Scalar,
        alpha: f32,
        beta: f32,
        weight: f32,
    ) -> Result<()> {
        const OP: &str = "Tape::classifier";
        self.check_no_loss(OP)?;
        let dlogits = be.classifier(params, &self.node(OP, logits)?.value, labels, out, alpha, beta, weight)?;
        self.loss = Some(LossOp::Classifier { input: logits, dlogits, weight });
        Ok(())
    }
}
