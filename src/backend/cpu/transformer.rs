//! CPU references of the transformer kernels (issue 20): token + position embedding,
//! fused residual + layernorm, causal self-attention and the fused classifier.
//!
//! Each takes `round`, applied wherever the kernel stores a half-precision value (the
//! identity for `Cpu::fp32`, f16 or bf16 rounding for the mixed modes), so the mixed CPU
//! backend rounds at exactly the points the CUDA kernels do; accumulations are f32 as on
//! the GPU. Where the GPU's order of summation is fixed by the kernel's design (the
//! embedding backward), this follows it, so the two agree bit for bit; elsewhere the
//! order differs and the parity tests compare within a tolerance.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::kernels::gemm::{host_matmul, GemmShape, Transpose};

fn check_len(op: &'static str, what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected != got {
        return Err(Error::LengthMismatch { op, what, expected, got });
    }
    Ok(())
}

pub use crate::kernels::attention::AttnDims;

impl AttnDims {
    /// Checks the dimensions: none zero, `c` divisible by `nh`, `b * t * 3c` and
    /// `b * nh * t * t` without overflow.
    pub fn validate(&self, op: &'static str) -> Result<()> {
        let AttnDims { b, t, c, nh } = *self;
        let bad = |why: String| Err(Error::InvalidArgument { op, what: "attention dims", why });
        if b == 0 || t == 0 || c == 0 || nh == 0 {
            return bad(format!("{self:?}: every dimension must be at least 1"));
        }
        if c % nh != 0 {
            return bad(format!("{self:?}: C = {c} is not a multiple of NH = {nh}"));
        }
        if self.qkv_len().is_none() || self.att_len().is_none() {
            return bad(format!("{self:?}: too large"));
        }
        Ok(())
    }

    /// Rows of the activations: `b * t`.
    pub fn rows(&self) -> usize {
        self.b * self.t
    }

    /// Elements of the `(B, NH, T, T)` score and probability tensors (after
    /// [`validate`](Self::validate)).
    pub fn scores_len(&self) -> usize {
        self.b * self.nh * self.t * self.t
    }
}

/// Token + position embedding: `out[(b t), c] = round(wte[tok, c] + wpe[t, c])`, for
/// `tokens` of `b * t` ids below `vocab` (`wte` is `vocab x c`, `wpe` at least `t x c`).
pub fn embedding_forward(
    tokens: &[u32],
    wte: &[f32],
    wpe: &[f32],
    t: usize,
    c: usize,
    round: impl Fn(f32) -> f32,
    out: &mut [f32],
) -> Result<()> {
    const OP: &str = "cpu::embedding_forward";
    check_embedding(OP, tokens, wte, wpe, t, c)?;
    check_len(OP, "out", tokens.len() * c, out.len())?;
    for (r, &tok) in tokens.iter().enumerate() {
        let pos = r % t;
        let e = &wte[tok as usize * c..(tok as usize + 1) * c];
        let p = &wpe[pos * c..(pos + 1) * c];
        for ((o, &x), &y) in out[r * c..(r + 1) * c].iter_mut().zip(e).zip(p) {
            *o = round(x + y);
        }
    }
    Ok(())
}

fn check_embedding(op: &'static str, tokens: &[u32], wte: &[f32], wpe: &[f32], t: usize, c: usize) -> Result<()> {
    if t == 0 || c == 0 || tokens.len() % t != 0 {
        return Err(Error::InvalidArgument {
            op,
            what: "tokens",
            why: format!("{} tokens do not make sequences of T = {t} (C = {c})", tokens.len()),
        });
    }
    let vocab = wte.len() / c;
    if wte.len() != vocab * c || wpe.len() % c != 0 || wpe.len() / c < t {
        return Err(Error::ShapeMismatch { op, expected: vec![vocab, c, t, c], got: vec![wte.len(), wpe.len()] });
    }
    if let Some((i, &v)) = tokens.iter().enumerate().find(|(_, &v)| v as usize >= vocab) {
        return Err(Error::InvalidArgument {
            op,
            what: "tokens",
            why: format!("token {v} at {i} is out of range for a vocabulary of {vocab}"),
        });
    }
    Ok(())
}

/// The embedding's backward, added (+=) into the f32 gradients: for each token `v`, an
/// f32 sum starting at 0 of `dout` over the rows holding `v` in ascending row order, then
/// added to `dwte[v]` once; for each position, the sum over sequences in order, added to
/// `dwpe[t]`. The CUDA kernel sums in the same order (no atomics), so the two agree bit
/// for bit.
pub fn embedding_backward(
    tokens: &[u32],
    dout: &[f32],
    t: usize,
    c: usize,
    dwte: &mut [f32],
    dwpe: &mut [f32],
) -> Result<()> {
    const OP: &str = "cpu::embedding_backward";
    check_embedding(OP, tokens, dwte, dwpe, t, c)?;
    check_len(OP, "dout", tokens.len() * c, dout.len())?;
    let mut sums: BTreeMap<u32, Vec<f32>> = BTreeMap::new();
    for (r, &tok) in tokens.iter().enumerate() {
        let acc = sums.entry(tok).or_insert_with(|| vec![0.0; c]);
        for (a, &d) in acc.iter_mut().zip(&dout[r * c..(r + 1) * c]) {
            *a += d;
        }
    }
    for (tok, acc) in sums {
        for (g, a) in dwte[tok as usize * c..(tok as usize + 1) * c].iter_mut().zip(acc) {
            *g += a;
        }
    }
    let b = tokens.len() / t;
    for pos in 0..t {
        let mut acc = vec![0.0f32; c];
        for s in 0..b {
            let r = s * t + pos;
            for (a, &d) in acc.iter_mut().zip(&dout[r * c..(r + 1) * c]) {
                *a += d;
            }
        }
        for (g, a) in dwpe[pos * c..(pos + 1) * c].iter_mut().zip(acc) {
            *g += a;
        }
    }
    Ok(())
}

/// The layernorm's epsilon (GPT-2's and PyTorch's default).
pub const LAYERNORM_EPS: f32 = 1e-5;

/// Fused residual + layernorm over rows of `c`: `r = round(x + y)` when `y` is given
/// (else `r` is `x` and is not written), then per row, in f32 from the rounded `r`:
/// `mean`, `var` (two-pass), `rstd = 1 / sqrt(var + eps)`, and
/// `h = round((r - mean) * rstd * gamma + beta)`; `mean` and `rstd` are kept for the
/// backward.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward(
    x: &[f32],
    y: Option<&[f32]>,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    round: impl Fn(f32) -> f32,
    r: Option<&mut [f32]>,
    h: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) -> Result<()> {
    const OP: &str = "cpu::layernorm_forward";
    let c = gamma.len();
    let rows = check_layernorm(OP, x.len(), c, eps)?;
    check_len(OP, "beta", c, beta.len())?;
    check_len(OP, "h", x.len(), h.len())?;
    check_len(OP, "mean", rows, mean.len())?;
    check_len(OP, "rstd", rows, rstd.len())?;
    let r_values: &[f32] = match (y, r) {
        (Some(y), Some(r)) => {
            check_len(OP, "y", x.len(), y.len())?;
            check_len(OP, "r", x.len(), r.len())?;
            for ((o, &a), &b) in r.iter_mut().zip(x).zip(y) {
                *o = round(a + b);
            }
            r
        }
        (None, None) => x,
        _ => {
            return Err(Error::InvalidArgument { op: OP, what: "r", why: "is written exactly when y is given".into() })
        }
    };
    for i in 0..rows {
        let row = &r_values[i * c..(i + 1) * c];
        let m = row.iter().sum::<f32>() / c as f32;
        let var = row.iter().map(|&v| (v - m) * (v - m)).sum::<f32>() / c as f32;
        let s = 1.0 / (var + eps).sqrt();
        mean[i] = m;
        rstd[i] = s;
        for (j, o) in h[i * c..(i + 1) * c].iter_mut().enumerate() {
            *o = round((row[j] - m) * s * gamma[j] + beta[j]);
        }
    }
    Ok(())
}

fn check_layernorm(op: &'static str, len: usize, c: usize, eps: f32) -> Result<usize> {
    if c == 0 || len % c != 0 {
        return Err(Error::ShapeMismatch { op, expected: vec![len / c.max(1), c], got: vec![len] });
    }
    if !(eps.is_finite() && eps > 0.0) {
        return Err(Error::InvalidArgument { op, what: "eps", why: format!("{eps} is not a positive number") });
    }
    Ok(len / c)
}

/// The layernorm's backward: with `n = (r - mean) * rstd` and `g = gamma * dh`,
/// `dr = round(dres + rstd * (g - mean(g) - n * mean(g n)))` (the `dres` term, the
/// gradient reaching `r` from the residual stream, absent when not given); and, into the
/// f32 gradients, `dgamma += sum over rows of dh n`, `dbeta += sum over rows of dh`.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    dh: &[f32],
    dres: Option<&[f32]>,
    r: &[f32],
    mean: &[f32],
    rstd: &[f32],
    gamma: &[f32],
    round: impl Fn(f32) -> f32,
    dr: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) -> Result<()> {
    const OP: &str = "cpu::layernorm_backward";
    let c = gamma.len();
    let rows = check_layernorm(OP, r.len(), c, 1.0)?;
    check_len(OP, "dh", r.len(), dh.len())?;
    check_len(OP, "dr", r.len(), dr.len())?;
    check_len(OP, "mean", rows, mean.len())?;
    check_len(OP, "rstd", rows, rstd.len())?;
    check_len(OP, "dgamma", c, dgamma.len())?;
    check_len(OP, "dbeta", c, dbeta.len())?;
    if let Some(d) = dres {
        check_len(OP, "dres", r.len(), d.len())?;
    }
    let mut sum_dgamma = vec![0.0f32; c];
    let mut sum_dbeta = vec![0.0f32; c];
    // One row's normalized values and gamma * dh, reused row after row.
    let (mut n, mut g) = (vec![0.0f32; c], vec![0.0f32; c]);
    for i in 0..rows {
        let span = i * c..(i + 1) * c;
        for (o, &v) in n.iter_mut().zip(&r[span.clone()]) {
            *o = (v - mean[i]) * rstd[i];
        }
        for ((o, &d), &w) in g.iter_mut().zip(&dh[span.clone()]).zip(gamma) {
            *o = w * d;
        }
        let mean_g = g.iter().sum::<f32>() / c as f32;
        let mean_gn = g.iter().zip(&n).map(|(&a, &b)| a * b).sum::<f32>() / c as f32;
        for j in 0..c {
            let res = dres.map_or(0.0, |d| d[i * c + j]);
            dr[i * c + j] = round(res + rstd[i] * (g[j] - mean_g - n[j] * mean_gn));
            sum_dgamma[j] += dh[i * c + j] * n[j];
            sum_dbeta[j] += dh[i * c + j];
        }
    }
    for (d, s) in dgamma.iter_mut().zip(sum_dgamma) {
        *d += s;
    }
    for (d, s) in dbeta.iter_mut().zip(sum_dbeta) {
        *d += s;
    }
    Ok(())
}

/// The batch `(b, h)`'s `rows x hs` block of head `h` starting at column `col0` in a
/// row-major tensor of `ld` columns, as a GEMM operand shape.
fn head_offset(d: &AttnDims, ld: usize, col0: usize, b: usize, h: usize) -> usize {
    b * d.t * ld + col0 + h * d.head_size()
}

/// Causal self-attention over `qkv` (`B*T x 3C`: Q, K, V side by side, head `h` at
/// columns `h hs..(h+1) hs` of each): `S = scale Q K^T` in f32, `P = round(softmax(S))`
/// over `j <= t` (0 above the diagonal; `probs` keeps it, `B x NH x T x T`), and
/// `out = round(P V)` (`B*T x C`, heads side by side).
pub fn attention_forward(
    qkv: &[f32],
    d: AttnDims,
    round: impl Fn(f32) -> f32,
    out: &mut [f32],
    probs: &mut [f32],
) -> Result<()> {
    const OP: &str = "cpu::attention_forward";
    d.validate(OP)?;
    let (t, c, hs) = (d.t, d.c, d.head_size());
    check_len(OP, "qkv", d.rows() * 3 * c, qkv.len())?;
    check_len(OP, "out", d.rows() * c, out.len())?;
    check_len(OP, "probs", d.scores_len(), probs.len())?;
    let mut s = vec![0.0f32; t * t];
    let mut o = vec![0.0f32; t * hs];
    for b in 0..d.b {
        for h in 0..d.nh {
            let q = &qkv[head_offset(&d, 3 * c, 0, b, h)..];
            let k = &qkv[head_offset(&d, 3 * c, c, b, h)..];
            let v = &qkv[head_offset(&d, 3 * c, 2 * c, b, h)..];
            let qk = GemmShape { lda: 3 * c, ldb: 3 * c, ..GemmShape::dense(t, t, hs, Transpose::N, Transpose::T) };
            host_matmul(&qk, &q[..(t - 1) * 3 * c + hs], &k[..(t - 1) * 3 * c + hs], &mut s)?;
            let p = &mut probs[(b * d.nh + h) * t * t..(b * d.nh + h + 1) * t * t];
            for i in 0..t {
                let row = &s[i * t..i * t + i + 1];
                let m = row.iter().map(|&x| x * d.scale()).fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = row.iter().map(|&x| (x * d.scale() - m).exp()).collect();
                let sum: f32 = e.iter().sum();
                for j in 0..t {
                    p[i * t + j] = if j <= i { round(e[j] / sum) } else { 0.0 };
                }
            }
            let pv = GemmShape { ldb: 3 * c, ..GemmShape::dense(t, hs, t, Transpose::N, Transpose::N) };
            host_matmul(&pv, p, &v[..(t - 1) * 3 * c + hs], &mut o)?;
            for i in 0..t {
                let dst = (b * t + i) * c + h * hs;
                for (x, &y) in out[dst..dst + hs].iter_mut().zip(&o[i * hs..(i + 1) * hs]) {
                    *x = round(y);
                }
            }
        }
    }
    Ok(())
}

/// The attention's backward, given `dout` (`B*T x C`) and the forward's `probs`:
/// `dP = dout V^T` (f32), `dS = round(P (dP - sum_j P dP))` on and below the diagonal,
/// then `dQ = round(scale dS K)`, `dK = round(scale dS^T Q)`, `dV = round(P^T dout)`,
/// written into `dqkv` laid out as `qkv`.
pub fn attention_backward(
    dout: &[f32],
    qkv: &[f32],
    probs: &[f32],
    d: AttnDims,
    round: impl Fn(f32) -> f32,
    dqkv: &mut [f32],
) -> Result<()> {
    const OP: &str = "cpu::attention_backward";
    d.validate(OP)?;
    let (t, c, hs) = (d.t, d.c, d.head_size());
    check_len(OP, "dout", d.rows() * c, dout.len())?;
    check_len(OP, "qkv", d.rows() * 3 * c, qkv.len())?;
    check_len(OP, "probs", d.scores_len(), probs.len())?;
    check_len(OP, "dqkv", d.rows() * 3 * c, dqkv.len())?;
    let span = (t - 1) * 3 * c + hs;
    let dspan = (t - 1) * c + hs;
    let mut dp = vec![0.0f32; t * t];
    let mut ds = vec![0.0f32; t * t];
    let mut tmp = vec![0.0f32; t * hs];
    for b in 0..d.b {
        for h in 0..d.nh {
            let q = &qkv[head_offset(&d, 3 * c, 0, b, h)..][..span];
            let k = &qkv[head_offset(&d, 3 * c, c, b, h)..][..span];
            let v = &qkv[head_offset(&d, 3 * c, 2 * c, b, h)..][..span];
            let dy = &dout[head_offset(&d, c, 0, b, h)..][..dspan];
            let p = &probs[(b * d.nh + h) * t * t..(b * d.nh + h + 1) * t * t];
            let dpv = GemmShape { lda: c, ldb: 3 * c, ..GemmShape::dense(t, t, hs, Transpose::N, Transpose::T) };
            host_matmul(&dpv, dy, v, &mut dp)?;
            for i in 0..t {
                let dot: f32 = (0..=i).map(|j| p[i * t + j] * dp[i * t + j]).sum();
                for j in 0..t {
                    ds[i * t + j] = if j <= i { round(p[i * t + j] * (dp[i * t + j] - dot)) } else { 0.0 };
                }
            }
            let mut store = |col0: usize, tmp: &[f32], alpha: f32| {
                for i in 0..t {
                    let dst = head_offset(&d, 3 * c, col0, b, h) + i * 3 * c;
                    for (x, &y) in dqkv[dst..dst + hs].iter_mut().zip(&tmp[i * hs..(i + 1) * hs]) {
                        *x = round(alpha * y);
                    }
                }
            };
            let dq = GemmShape { ldb: 3 * c, ..GemmShape::dense(t, hs, t, Transpose::N, Transpose::N) };
            host_matmul(&dq, &ds, k, &mut tmp)?;
            store(0, &tmp, d.scale());
            let dk = GemmShape { ldb: 3 * c, ..GemmShape::dense(t, hs, t, Transpose::T, Transpose::N) };
            host_matmul(&dk, &ds, q, &mut tmp)?;
            store(c, &tmp, d.scale());
            let dv = GemmShape { ldb: c, ..GemmShape::dense(t, hs, t, Transpose::T, Transpose::N) };
            host_matmul(&dv, p, dy, &mut tmp)?;
            store(2 * c, &tmp, 1.0);
        }
    }
    Ok(())
}

/// The fused classifier: over `logits` (`rows x padded`, the first `vocab` columns
/// real), per row `loss = log(sum exp(z - m)) + m - z[label]` into `losses`, and
/// `dlogits = round((softmax(z) - onehot(label)) * g)` with `g` the caller's
/// `weight * loss_scale / rows`; padded columns get 0.
#[allow(clippy::too_many_arguments)]
pub fn classifier(
    logits: &[f32],
    labels: &[u32],
    vocab: usize,
    padded: usize,
    g: f32,
    round: impl Fn(f32) -> f32,
    losses: &mut [f32],
    dlogits: &mut [f32],
) -> Result<()> {
    const OP: &str = "cpu::classifier";
    let rows = labels.len();
    if vocab == 0 || vocab > padded {
        return Err(Error::InvalidArgument {
            op: OP,
            what: "vocab",
            why: format!("{vocab} real columns of {padded}: need 1 <= vocab <= padded"),
        });
    }
    check_len(OP, "logits", rows * padded, logits.len())?;
    check_len(OP, "dlogits", rows * padded, dlogits.len())?;
    check_len(OP, "losses", rows, losses.len())?;
    super::check_labels(OP, labels, rows, vocab)?;
    for (r, &label) in labels.iter().enumerate() {
        let z = &logits[r * padded..r * padded + vocab];
        let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let s: f32 = z.iter().map(|&x| (x - m).exp()).sum();
        losses[r] = s.ln() + m - z[label as usize];
        let dz = &mut dlogits[r * padded..(r + 1) * padded];
        for (j, o) in dz.iter_mut().enumerate() {
            *o = if j < vocab {
                let onehot = if j == label as usize { 1.0 } else { 0.0 };
                round(((z[j] - m).exp() / s - onehot) * g)
            } else {
                0.0
            };
        }
    }
    Ok(())
}
