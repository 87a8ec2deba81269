//! [`TransformerBackend`] on the CUDA kernels: embedding, fused residual + layernorm,
//! causal self-attention (strided-batched GEMMs around the causal softmax) and the fused
//! classifier, every buffer drawn from the backend's pools so a GPT step captures into a
//! CUDA graph like the MLP's.

use cudarc::driver::{CudaSlice, CudaViewMut};

use super::{Cuda, CudaLabels, CudaParams, CudaScalar, CudaTensor};
use crate::backend::cpu::{embedding_params, layernorm_params, LAYERNORM_EPS};
use crate::backend::{check_same_shape, AttnDims, Backend, TransformerBackend};
use crate::dtype::Half;
use crate::error::{Error, Result};
use crate::kernels::attention::{attention_backward, attention_forward};
use crate::kernels::classifier::{fused_classifier, ClassifierShape, MeanLoss};
use crate::kernels::embedding::{embedding_backward, embedding_forward, EmbeddingShape, Tokens};
use crate::kernels::layernorm::{
    layernorm_backward, layernorm_dparams, layernorm_forward, LayerNormShape, ResidualGrad,
};
use crate::nn::{ArenaLayout, ParamSpec};

/// What a CUDA forward keeps for its backward.
pub enum CudaSaved<H: Half> {
    /// A layernorm's per-row mean and rstd (f32).
    Stats {
        /// Means.
        mean: CudaSlice<f32>,
        /// 1 / standard deviations.
        rstd: CudaSlice<f32>,
    },
    /// The attention's probabilities (`B NH T T`, half).
    Probs(CudaSlice<H>),
}

/// The embedding's tables (checked by [`embedding_params`]) and the kernels' shape for
/// `tokens` in sequences of `t`.
fn embedding_shape(
    op: &'static str,
    layout: &ArenaLayout,
    wte: usize,
    wpe: usize,
    tokens: &Tokens,
    t: usize,
) -> Result<(EmbeddingShape, ParamSpec, ParamSpec)> {
    let (w, e) = embedding_params(op, layout, wte, wpe, (tokens.len(), tokens.vocab()), t)?;
    let (vocab, channels, max_seq) = (w.shape[0], w.shape[1], e.shape[0]);
    Ok((EmbeddingShape { batch: tokens.len() / t, seq: t, channels, vocab, max_seq }, w.clone(), e.clone()))
}

/// The layernorm's affine parameters (checked by [`layernorm_params`]), owned so the
/// arena can be borrowed mutably after.
fn layernorm_specs(
    op: &'static str,
    layout: &ArenaLayout,
    gamma: usize,
    beta: usize,
    c: usize,
) -> Result<(ParamSpec, ParamSpec)> {
    let (g, b) = layernorm_params(op, layout, gamma, beta, c)?;
    Ok((g.clone(), b.clone()))
}

/// Runs `f` on the gradient ranges of parameters `a` and `b`, two disjoint ranges of the
/// one gradient buffer (parameters never overlap in a layout), split apart so both can be
/// written by one launch.
fn with_two_ranges<R>(
    grad: &mut CudaViewMut<'_, f32>,
    a: &ParamSpec,
    b: &ParamSpec,
    f: impl FnOnce(&mut CudaViewMut<'_, f32>, &mut CudaViewMut<'_, f32>) -> R,
) -> R {
    let (first, second) = if a.offset < b.offset { (a, b) } else { (b, a) };
    let (mut lo, mut hi) = grad.split_at_mut(second.offset);
    let mut lo = lo.slice_mut(first.offset..first.offset + first.len);
    let mut hi = hi.slice_mut(0..second.len);
    if a.offset < b.offset {
        f(&mut lo, &mut hi)
    } else {
        f(&mut hi, &mut lo)
    }
}

impl<H: Half> CudaSaved<H> {
    fn stats(&self, op: &'static str) -> Result<(&CudaSlice<f32>, &CudaSlice<f32>)> {
        match self {
            CudaSaved::Stats { mean, rstd } => Ok((mean, rstd)),
            CudaSaved::Probs(_) => Err(Error::InvalidArgument {
                op,
                what: "saved",
                why: "holds attention probabilities, not statistics".into(),
            }),
        }
    }
}

impl<H: Half> TransformerBackend for Cuda<H> {
    type Tokens = Tokens;
    type Saved = CudaSaved<H>;

    fn tokens(&self, ids: &[u32], vocab: usize) -> Result<Tokens> {
        Tokens::upload(&self.dev, ids, vocab)
    }

    fn write_tokens(&self, t: &mut Tokens, ids: &[u32]) -> Result<()> {
        t.write(ids)
    }

    fn copy_tokens(&self, t: &Tokens) -> Result<Tokens> {
        const OP: &str = "Cuda::copy_tokens";
        let buf = self.take(OP, t.words(), |p| &mut p.u32)?;
        t.copy_into(buf)
    }

    fn recycle_tokens(&self, t: Tokens) {
        let buf = t.into_buffer();
        if self.dev.owns(buf.stream()) {
            self.pools().u32.put(buf);
        }
    }

    fn recycle_saved(&self, s: CudaSaved<H>) {
        match s {
            CudaSaved::Stats { mean, rstd } => {
                let mut pools = self.pools();
                pools.f32.put(mean);
                pools.f32.put(rstd);
            }
            CudaSaved::Probs(p) => self.pools().half.put(p),
        }
    }

    fn embedding(&self, p: &CudaParams<H>, wte: usize, wpe: usize, tokens: &Tokens, t: usize) -> Result<CudaTensor<H>> {
        const OP: &str = "Cuda::embedding";
        let (shape, w, e) = embedding_shape(OP, p.arena.layout(), wte, wpe, tokens, t)?;
        let mut out = self.tensor_out(OP, tokens.len(), shape.channels)?;
        let working = p.arena.working();
        let (wv, ev) = (working.slice(w.offset..w.offset + w.len), working.slice(e.offset..e.offset + e.len));
        if let Err(err) = embedding_forward(&self.dev, shape, tokens, &wv, &ev, &mut out.data) {
            self.recycle(out);
            return Err(err);
        }
        Ok(out)
    }

    fn embedding_backward(
        &self,
        p: &mut CudaParams<H>,
        wte: usize,
        wpe: usize,
        tokens: &Tokens,
        t: usize,
        dout: &CudaTensor<H>,
    ) -> Result<()> {
        const OP: &str = "Cuda::embedding_backward";
        let (shape, w, e) = embedding_shape(OP, p.arena.layout(), wte, wpe, tokens, t)?;
        check_same_shape(OP, (tokens.len(), shape.channels), (dout.rows, dout.cols))?;
        let mut grad = p.arena.grad_mut();
        let mut found_inf = p.scaler.found_inf_view_mut();
        with_two_ranges(&mut grad, &w, &e, |dwte, dwpe| {
            embedding_backward(&self.dev, shape, tokens, &dout.data, dwte, dwpe, found_inf.as_mut())
        })
    }

    fn layernorm(
        &self,
        p: &CudaParams<H>,
        x: &CudaTensor<H>,
        y: Option<&CudaTensor<H>>,
        gamma: usize,
        beta: usize,
    ) -> Result<(Option<CudaTensor<H>>, CudaTensor<H>, CudaSaved<H>)> {
        const OP: &str = "Cuda::layernorm";
        let (g, b) = layernorm_specs(OP, p.arena.layout(), gamma, beta, x.cols)?;
        if let Some(y) = y {
            check_same_shape(OP, (x.rows, x.cols), (y.rows, y.cols))?;
        }
        let shape = LayerNormShape { rows: x.rows, channels: x.cols };
        let mut r = y.map(|_| self.tensor_out(OP, x.rows, x.cols)).transpose()?;
        let mut h = self.tensor_out(OP, x.rows, x.cols)?;
        let mut mean = self.take(OP, x.rows, |p| &mut p.f32)?;
        let mut rstd = self.take(OP, x.rows, |p| &mut p.f32)?;
        let working = p.arena.working();
        let (gv, bv) = (working.slice(g.offset..g.offset + g.len), working.slice(b.offset..b.offset + b.len));
        let result = {
            let y_view = y.map(|y| y.data.as_view());
            let mut r_view = r.as_mut().map(|r| r.data.as_view_mut());
            let residual = y_view.as_ref().zip(r_view.as_mut());
            layernorm_forward(
                &self.dev,
                shape,
                LAYERNORM_EPS,
                &x.data,
                residual,
                &gv,
                &bv,
                &mut h.data,
                &mut mean,
                &mut rstd,
            )
        };
        let saved = CudaSaved::Stats { mean, rstd };
        if let Err(e) = result {
            r.into_iter().for_each(|r| self.recycle(r));
            self.recycle(h);
            self.recycle_saved(saved);
            return Err(e);
        }
        Ok((r, h, saved))
    }

    fn layernorm_backward(
        &self,
        p: &mut CudaParams<H>,
        gamma: usize,
        beta: usize,
        r: &CudaTensor<H>,
        saved: &CudaSaved<H>,
        dh: &CudaTensor<H>,
    ) -> Result<CudaTensor<H>> {
        const OP: &str = "Cuda::layernorm_backward";
        check_same_shape(OP, (r.rows, r.cols), (dh.rows, dh.cols))?;
        let (g, b) = layernorm_specs(OP, p.arena.layout(), gamma, beta, r.cols)?;
        let (mean, rstd) = saved.stats(OP)?;
        let shape = LayerNormShape { rows: r.rows, channels: r.cols };
        let mut dr = self.tensor_out(OP, r.rows, r.cols)?;
        let mut scratch = match self.take(OP, shape.dparams_scratch_len(), |p| &mut p.f32) {
            Ok(s) => s,
            Err(e) => {
                self.recycle(dr);
                return Err(e);
            }
        };
        let result = (|| {
            let (mut grad, working) = p.arena.grad_and_working();
            let gv = working.slice(g.offset..g.offset + g.len);
            layernorm_backward(&self.dev, shape, &dh.data, &r.data, mean, rstd, &gv, ResidualGrad::None, &mut dr.data)?;
            let mut found_inf = p.scaler.found_inf_view_mut();
            with_two_ranges(&mut grad, &g, &b, |dgamma, dbeta| {
                layernorm_dparams(
                    &self.dev,
                    shape,
                    &dh.data,
                    &r.data,
                    mean,
                    rstd,
                    dgamma,
                    dbeta,
                    &mut scratch,
                    found_inf.as_mut(),
                )
            })
        })();
        self.pools().f32.put(scratch);
        match result {
            Ok(()) => Ok(dr),
            Err(e) => {
                self.recycle(dr);
                Err(e)
            }
        }
    }

    fn attention(&self, qkv: &CudaTensor<H>, dims: AttnDims) -> Result<(CudaTensor<H>, CudaSaved<H>)> {
        const OP: &str = "Cuda::attention";
        dims.validate(OP)?;
        check_same_shape(OP, (dims.rows(), 3 * dims.c), (qkv.rows, qkv.cols))?;
        let mut out = self.tensor_out(OP, dims.rows(), dims.c)?;
        let mut scores = match self.take(OP, dims.scores_len(), |p| &mut p.f32) {
            Ok(s) => s,
            Err(e) => {
                self.recycle(out);
                return Err(e);
            }
        };
        let mut probs = match self.take(OP, dims.scores_len(), |p| &mut p.half) {
            Ok(p) => p,
            Err(e) => {
                self.recycle(out);
                self.pools().f32.put(scores);
                return Err(e);
            }
        };
        let result = attention_forward(
            &self.dev,
            dims,
            &qkv.data.as_view(),
            &mut out.data.as_view_mut(),
            &mut scores.as_view_mut(),
            &mut probs.as_view_mut(),
        );
        self.pools().f32.put(scores);
        match result {
            Ok(()) => Ok((out, CudaSaved::Probs(probs))),
            Err(e) => {
                self.recycle(out);
                self.pools().half.put(probs);
                Err(e)
            }
        }
    }

    fn attention_backward(
        &self,
        dout: &CudaTensor<H>,
        qkv: &CudaTensor<H>,
        saved: &CudaSaved<H>,
        dims: AttnDims,
    ) -> Result<CudaTensor<H>> {
        const OP: &str = "Cuda::attention_backward";
        dims.validate(OP)?;
        check_same_shape(OP, (dims.rows(), 3 * dims.c), (qkv.rows, qkv.cols))?;
        check_same_shape(OP, (dims.rows(), dims.c), (dout.rows, dout.cols))?;
        let CudaSaved::Probs(probs) = saved else {
            return Err(Error::InvalidArgument {
                op: OP,
                what: "saved",
                why: "holds statistics, not probabilities".into(),
            });
        };
        let mut dqkv = self.tensor_out(OP, qkv.rows, qkv.cols)?;
        let mut dprobs = match self.take(OP, dims.scores_len(), |p| &mut p.f32) {
            Ok(b) => b,
            Err(e) => {
                self.recycle(dqkv);
                return Err(e);
            }
        };
        let mut dscores = match self.take(OP, dims.scores_len(), |p| &mut p.half) {
            Ok(b) => b,
            Err(e) => {
                self.recycle(dqkv);
                self.pools().f32.put(dprobs);
                return Err(e);
            }
        };
        let result = attention_backward(
            &self.dev,
            dims,
            &dout.data.as_view(),
            &qkv.data.as_view(),
            &probs.as_view(),
            &mut dprobs.as_view_mut(),
            &mut dscores.as_view_mut(),
            &mut dqkv.data.as_view_mut(),
        );
        {
            let mut pools = self.pools();
            pools.f32.put(dprobs);
            pools.half.put(dscores);
        }
        match result {
            Ok(()) => Ok(dqkv),
            Err(e) => {
                self.recycle(dqkv);
                Err(e)
            }
        }
    }

    fn classifier(
        &self,
        p: &CudaParams<H>,
        logits: &CudaTensor<H>,
        labels: &CudaLabels,
        out: &mut CudaScalar,
        alpha: f32,
        beta: f32,
        weight: f32,
    ) -> Result<CudaTensor<H>> {
        const OP: &str = "Cuda::classifier";
        for (what, v) in [("alpha", alpha), ("beta", beta), ("weight", weight)] {
            if !v.is_finite() {
                return Err(Error::InvalidArgument { op: OP, what, why: "must be finite".into() });
            }
        }
        if labels.data.len() != logits.rows || labels.classes > logits.cols {
            return Err(Error::ShapeMismatch {
                op: OP,
                expected: vec![logits.rows, logits.cols],
                got: vec![labels.data.len(), labels.classes],
            });
        }
        let shape = ClassifierShape { rows: logits.rows, vocab: labels.classes, padded_vocab: logits.cols };
        let mut dlogits = self.tensor_out(OP, logits.rows, logits.cols)?;
        let mut losses = match self.take(OP, logits.rows, |p| &mut p.f32) {
            Ok(l) => l,
            Err(e) => {
                self.recycle(dlogits);
                return Err(e);
            }
        };
        // The loss scale as cross_entropy_backward reads it (1 while scaling is off).
        let scale = Some(p.scaler.scale_view());
        let result = {
            let mut out_view = out.data.as_view_mut();
            let mean = MeanLoss { out: &mut out_view, alpha, beta };
            fused_classifier(
                &self.dev,
                shape,
                &logits.data,
                &labels.data,
                scale.as_ref(),
                weight,
                &mut losses,
                &mut dlogits.data,
                Some(mean),
            )
        };
        self.pools().f32.put(losses);
        match result {
            Ok(()) => Ok(dlogits),
            Err(e) => {
                self.recycle(dlogits);
                Err(e)
            }
        }
    }
}
