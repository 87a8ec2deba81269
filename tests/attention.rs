//! attention: causal self-attention forward and backward (strided-batched tensor-core
//! GEMMs around a fused causal softmax in f32), f16 and bf16, against f64 references
//! computed from the same half inputs. Each stage is checked against the f64 value of its
//! own formula on the GPU's inputs to that stage (tolerances from the half unit roundoff
//! and the reduction length), and the whole forward and backward against an all-f64
//! chain. Awkward shapes: T = 1, 7, 33, 70 (not multiples of 16 or 64), one head, many
//! small heads (NH = 8, hs = 8), C = 48 with NH = 3, an odd head size (C = 15, NH = 3),
//! T = 64 with 3C a multiple of 8 (the GEMMs' 16-byte path), and T = 200 (two GEMM tiles:
//! the causal skips of whole tiles and K ranges). bf16 needs sm_80 (its GEMMs): at 7.5 it is refused before
//! anything is queued, which the bf16 tests check there instead.

mod common;

use std::sync::Arc;

use mixed_precision::half::{bf16, f16};
use mixed_precision::kernels::attention::{
    attention_backward, attention_forward, attention_softmax_backward, attention_softmax_forward, AttnDims,
};
use mixed_precision::rng::Rng;
use mixed_precision::{DType, Device, Error, Half, Tensor};

/// (B, T, C, NH).
/// (2, 9, 15, 3) has an odd head size (hs = 5): every row and batch offset unaligned;
/// T = 200 spans two GEMM tiles, so the causal tile and K-range skips are taken.
const SHAPES: [(usize, usize, usize, usize); 8] = [
    (1, 1, 16, 1),
    (2, 7, 48, 3),
    (1, 33, 64, 1),
    (2, 33, 64, 8),
    (1, 70, 48, 3),
    (2, 64, 64, 4),
    (2, 9, 15, 3),
    (1, 200, 32, 2),
];

/// f32 unit roundoff.
const U32: f64 = 1.0 / (1u64 << 24) as f64;

/// The unit roundoff of the half type: f16 2^-11, bf16 2^-8.
fn unit<H: Half>() -> f64 {
    if H::DTYPE == DType::BF16 {
        2f64.powi(-8)
    } else {
        2f64.powi(-11)
    }
}

fn dims((b, t, c, nh): (usize, usize, usize, usize)) -> AttnDims {
    AttnDims { b, t, c, nh }
}

fn random_half<H: Half>(rng: &mut Rng, n: usize, r: f32) -> Vec<H> {
    (0..n).map(|_| H::from_f32(rng.uniform_in(-r, r))).collect()
}

fn to64<H: Half>(x: &[H]) -> Vec<f64> {
    x.iter().map(|v| v.to_f32() as f64).collect()
}

/// Index helpers for the row-major buffers of [`AttnDims`].
struct Ix {
    d: AttnDims,
    hs: usize,
}

impl Ix {
    fn new(d: AttnDims) -> Self {
        Ix { d, hs: d.c / d.nh }
    }
    /// Element `e` of head `h` of part `part` (0 Q, 1 K, 2 V) of token `t` of sequence `b`.
    fn qkv(&self, b: usize, t: usize, part: usize, h: usize, e: usize) -> usize {
        (b * self.d.t + t) * 3 * self.d.c + part * self.d.c + h * self.hs + e
    }
    fn out(&self, b: usize, t: usize, h: usize, e: usize) -> usize {
        (b * self.d.t + t) * self.d.c + h * self.hs + e
    }
    fn att(&self, b: usize, h: usize, i: usize, j: usize) -> usize {
        ((b * self.d.nh + h) * self.d.t + i) * self.d.t + j
    }
}

/// `|got - want| <= tol` with a message naming the element.
fn close(what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol || (got.is_nan() && want.is_nan()),
        "{what}: got {got:e}, want {want:e}, |diff| {:e} > tol {tol:e}",
        (got - want).abs()
    );
}

/// Causal softmax in f64 of `s[0..=q]`.
fn softmax64(s: &[f64]) -> Vec<f64> {
    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|x| x / sum).collect()
}

/// Tolerance of a half value that is the single rounding of an f32 computation whose own
/// error is at most `f32_err`: half rounding, plus the f32 error, plus an absolute 2^-24
/// for f16's subnormals (half an ulp there is 2^-25).
fn half_tol<H: Half>(want: f64, f32_err: f64) -> f64 {
    unit::<H>() * want.abs() + f32_err * (1.0 + unit::<H>()) + 2f64.powi(-24)
}

fn normwise(got: &[f64], want: &[f64]) -> f64 {
    let num: f64 = got.iter().zip(want).map(|(g, w)| (g - w).powi(2)).sum();
    let den: f64 = want.iter().map(|w| w * w).sum();
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

struct Forward<H> {
    qkv: Vec<H>,
    scores: Vec<f32>,
    probs: Vec<H>,
}

/// Runs the forward on random qkv (uniform in [-2, 2], so rows of S span a few units and
/// the softmax is neither flat nor one-hot) with every output poisoned with NaN, and checks
/// each stage.
fn forward_case<H: Half>(dev: &Arc<Device>, rng: &mut Rng, d: AttnDims) -> Forward<H> {
    let ix = Ix::new(d);
    let (hs, t) = (ix.hs, d.t);
    let scale = 1.0 / (hs as f64).sqrt();
    let qkv: Vec<H> = random_half(rng, d.qkv_len().unwrap(), 2.0);
    let att = d.att_len().unwrap();
    let qkv_d = Tensor::from_host(dev, &qkv, &[qkv.len()]).unwrap();
    let mut out_d =
        Tensor::from_host(dev, &vec![H::from_f32(f32::NAN); d.out_len().unwrap()], &[d.out_len().unwrap()]).unwrap();
    let mut s_d = Tensor::from_host(dev, &vec![f32::NAN; att], &[att]).unwrap();
    let mut p_d = Tensor::from_host(dev, &vec![H::from_f32(f32::NAN); att], &[att]).unwrap();
    attention_forward(dev, d, &qkv_d.view(), &mut out_d.view_mut(), &mut s_d.view_mut(), &mut p_d.view_mut()).unwrap();
    let (scores, probs, out) = (s_d.to_host().unwrap(), p_d.to_host().unwrap(), out_d.to_host().unwrap());
    let q64 = to64(&qkv);
    let what = |stage: &str, b, h, i, j| format!("{} {d:?} {stage} (b {b}, h {h}, {i}, {j})", H::DTYPE);
    for b in 0..d.b {
        for h in 0..d.nh {
            for i in 0..t {
                // Scores: f32 accumulation of hs exact products, then the alpha multiply.
                let mut s_gpu = Vec::new();
                let mut s_full = Vec::new();
                for j in 0..=i {
                    let (mut dot, mut abs) = (0.0, 0.0);
                    for e in 0..hs {
                        let p = q64[ix.qkv(b, i, 0, h, e)] * q64[ix.qkv(b, j, 1, h, e)];
                        dot += p;
                        abs += p.abs();
                    }
                    let got = scores[ix.att(b, h, i, j)] as f64;
                    close(&what("scores", b, h, i, j), got, scale * dot, (hs as f64 + 2.0) * U32 * scale * abs);
                    s_gpu.push(got);
                    s_full.push(scale * dot);
                }
                // Probabilities from the GPU's scores: expf 2 ulp, the sum (depth
                // ceil((i+1)/32) + 5) and the division in f32, then the half rounding.
                let p_want = softmax64(&s_gpu);
                let depth = (i + 1).div_ceil(32) as f64 + 5.0;
                for j in 0..t {
                    let got = probs[ix.att(b, h, i, j)].to_f32() as f64;
                    if j > i {
                        assert!(got == 0.0, "{}: above the diagonal must be 0", what("probs", b, h, i, j));
                    } else {
                        let f32_err = (depth + 8.0) * U32 * p_want[j];
                        close(&what("probs", b, h, i, j), got, p_want[j], half_tol::<H>(p_want[j], f32_err));
                    }
                }
                // out from the GPU's probabilities: f32 accumulation of t exact products.
                let p_full = softmax64(&s_full);
                for e in 0..hs {
                    let (mut dot, mut abs, mut chain, mut chain_abs) = (0.0, 0.0, 0.0, 0.0);
                    for j in 0..t {
                        let v = q64[ix.qkv(b, j, 2, h, e)];
                        let p = probs[ix.att(b, h, i, j)].to_f32() as f64;
                        dot += p * v;
                        abs += (p * v).abs();
                        if j <= i {
                            chain += p_full[j] * v;
                            chain_abs += (p_full[j] * v).abs();
                        }
                    }
                    let got = out[ix.out(b, i, h, e)].to_f32() as f64;
                    close(&what("out", b, h, i, e), got, dot, half_tol::<H>(dot, (t as f64 + 2.0) * U32 * abs));
                    // The whole forward in f64: P's rounding to half is the dominant error.
                    close(
                        &what("out (f64 chain)", b, h, i, e),
                        got,
                        chain,
                        3.0 * unit::<H>() * chain_abs + 2f64.powi(-20),
                    );
                }
            }
        }
    }
    assert!(out.iter().any(|x| x.to_f32() != 0.0), "{d:?}: all zeros");
    Forward { qkv, scores, probs }
}

/// The backward from a forward's qkv and probs, dout uniform in [-1, 1], outputs poisoned;
/// each stage against its f64 formula on the GPU's inputs, dqkv against the f64 chain.
fn backward_case<H: Half>(dev: &Arc<Device>, rng: &mut Rng, d: AttnDims, f: &Forward<H>) {
    let ix = Ix::new(d);
    let (hs, t) = (ix.hs, d.t);
    let scale = 1.0 / (hs as f64).sqrt();
    let (att, n_out, n_qkv) = (d.att_len().unwrap(), d.out_len().unwrap(), d.qkv_len().unwrap());
    let dout: Vec<H> = random_half(rng, n_out, 1.0);
    let dout_d = Tensor::from_host(dev, &dout, &[n_out]).unwrap();
    let qkv_d = Tensor::from_host(dev, &f.qkv, &[n_qkv]).unwrap();
    let p_d = Tensor::from_host(dev, &f.probs, &[att]).unwrap();
    // dprobs reuses a scores-sized buffer holding the forward's scores, as a caller may.
    let mut dp_d = Tensor::from_host(dev, &f.scores, &[att]).unwrap();
    let mut ds_d = Tensor::from_host(dev, &vec![H::from_f32(f32::NAN); att], &[att]).unwrap();
    let mut dqkv_d = Tensor::from_host(dev, &vec![H::from_f32(f32::NAN); n_qkv], &[n_qkv]).unwrap();
    attention_backward(
        dev,
        d,
        &dout_d.view(),
        &qkv_d.view(),
        &p_d.view(),
        &mut dp_d.view_mut(),
        &mut ds_d.view_mut(),
        &mut dqkv_d.view_mut(),
    )
    .unwrap();
    let (dp, ds, dqkv) = (dp_d.to_host().unwrap(), ds_d.to_host().unwrap(), dqkv_d.to_host().unwrap());
    let (q64, g64, p64) = (to64(&f.qkv), to64(&dout), to64(&f.probs));
    let what = |stage: &str, b, h, i, j| format!("{} {d:?} {stage} (b {b}, h {h}, {i}, {j})", H::DTYPE);
    let mut chain_dqkv = vec![0.0f64; n_qkv];
    let (mut got_all, mut want_all) = (Vec::new(), Vec::new());
    for b in 0..d.b {
        for h in 0..d.nh {
            // The f64 chain's own forward probabilities and dS.
            let mut ds_chain = vec![0.0f64; t * t];
            let mut p_chain = vec![0.0f64; t * t];
            for i in 0..t {
                let s: Vec<f64> = (0..=i)
                    .map(|j| {
                        scale * (0..hs).map(|e| q64[ix.qkv(b, i, 0, h, e)] * q64[ix.qkv(b, j, 1, h, e)]).sum::<f64>()
                    })
                    .collect();
                let p = softmax64(&s);
                let dpc: Vec<f64> = (0..=i)
                    .map(|j| (0..hs).map(|e| g64[ix.out(b, i, h, e)] * q64[ix.qkv(b, j, 2, h, e)]).sum())
                    .collect();
                let dc: f64 = (0..=i).map(|j| p[j] * dpc[j]).sum();
                for j in 0..=i {
                    p_chain[i * t + j] = p[j];
                    ds_chain[i * t + j] = p[j] * (dpc[j] - dc);
                }
                // dP = dout V^T (j <= i is all the softmax reads).
                let mut dp_row = Vec::new();
                for j in 0..=i {
                    let (mut dot, mut abs) = (0.0, 0.0);
                    for e in 0..hs {
                        let x = g64[ix.out(b, i, h, e)] * q64[ix.qkv(b, j, 2, h, e)];
                        dot += x;
                        abs += x.abs();
                    }
                    let got = dp[ix.att(b, h, i, j)] as f64;
                    close(&what("dprobs", b, h, i, j), got, dot, (hs as f64 + 2.0) * U32 * abs);
                    dp_row.push(got);
                }
                // dS from the GPU's P and dP.
                let pr: Vec<f64> = (0..=i).map(|j| p64[ix.att(b, h, i, j)]).collect();
                let dd: f64 = (0..=i).map(|j| pr[j] * dp_row[j]).sum();
                let dabs: f64 = (0..=i).map(|j| (pr[j] * dp_row[j]).abs()).sum();
                let depth = (i + 1).div_ceil(32) as f64 + 5.0;
                for j in 0..t {
                    let got = ds[ix.att(b, h, i, j)].to_f32() as f64;
                    if j > i {
                        assert!(got == 0.0, "{}: above the diagonal must be 0", what("dscores", b, h, i, j));
                    } else {
                        let want = pr[j] * (dp_row[j] - dd);
                        let f32_err =
                            pr[j] * ((depth + 2.0) * U32 * dabs + 2.0 * U32 * dp_row[j].abs()) + U32 * want.abs();
                        close(&what("dscores", b, h, i, j), got, want, half_tol::<H>(want, f32_err));
                    }
                }
            }
            // dQ, dK, dV from the GPU's dS and P; and the chain's.
            for i in 0..t {
                for e in 0..hs {
                    let (mut dq, mut dq_abs, mut dk, mut dk_abs, mut dv, mut dv_abs) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
                    let (mut cq, mut ck, mut cv) = (0.0, 0.0, 0.0);
                    for j in 0..t {
                        let ds_ij = ds[ix.att(b, h, i, j)].to_f32() as f64;
                        let ds_ji = ds[ix.att(b, h, j, i)].to_f32() as f64;
                        let p_ji = p64[ix.att(b, h, j, i)];
                        let x = ds_ij * q64[ix.qkv(b, j, 1, h, e)];
                        dq += x;
                        dq_abs += x.abs();
                        let x = ds_ji * q64[ix.qkv(b, j, 0, h, e)];
                        dk += x;
                        dk_abs += x.abs();
                        let x = p_ji * g64[ix.out(b, j, h, e)];
                        dv += x;
                        dv_abs += x.abs();
                        cq += ds_chain[i * t + j] * q64[ix.qkv(b, j, 1, h, e)];
                        ck += ds_chain[j * t + i] * q64[ix.qkv(b, j, 0, h, e)];
                        cv += p_chain[j * t + i] * g64[ix.out(b, j, h, e)];
                    }
                    let acc = (t as f64 + 2.0) * U32;
                    for (part, want, abs, chain, sc) in
                        [(0, dq, dq_abs, cq, scale), (1, dk, dk_abs, ck, scale), (2, dv, dv_abs, cv, 1.0)]
                    {
                        let k = ix.qkv(b, i, part, h, e);
                        let got = dqkv[k].to_f32() as f64;
                        let name = ["dq", "dk", "dv"][part];
                        close(&what(name, b, h, i, e), got, sc * want, half_tol::<H>(sc * want, acc * sc * abs));
                        chain_dqkv[k] = sc * chain;
                        got_all.push(got);
                        want_all.push(sc * chain);
                    }
                }
            }
        }
    }
    assert!(dqkv.iter().all(|x| x.to_f32().is_finite()), "{d:?}: dqkv not fully written");
    // The whole backward in f64 (from the same half inputs): normwise, since dS can cancel;
    // the half roundings of P and dS dominate.
    let e = normwise(&got_all, &want_all);
    assert!(e <= 8.0 * unit::<H>(), "{} {d:?}: dqkv normwise error against the f64 chain {e:e}", H::DTYPE);
}

/// At compute capability 7.5: a bf16 attention is refused before anything is queued.
/// Returns true when it was (nothing more to run).
fn bf16_refused_below_sm80(dev: &Arc<Device>) -> bool {
    if common::has_bf16_tensor_cores(dev) {
        return false;
    }
    let d = AttnDims { b: 1, t: 7, c: 16, nh: 2 };
    let (att, n_out, n_qkv) = (d.att_len().unwrap(), d.out_len().unwrap(), d.qkv_len().unwrap());
    let seven = bf16::from_f32(7.0);
    let qkv = Tensor::from_host(dev, &vec![bf16::ONE; n_qkv], &[n_qkv]).unwrap();
    let mut out = Tensor::from_host(dev, &vec![seven; n_out], &[n_out]).unwrap();
    let mut s = Tensor::from_host(dev, &vec![7.0f32; att], &[att]).unwrap();
    let mut p = Tensor::from_host(dev, &vec![seven; att], &[att]).unwrap();
    let mut dq = Tensor::from_host(dev, &vec![seven; n_qkv], &[n_qkv]).unwrap();
    let e =
        attention_forward(dev, d, &qkv.view(), &mut out.view_mut(), &mut s.view_mut(), &mut p.view_mut()).unwrap_err();
    assert!(matches!(e, Error::Unsupported { op: "attention_forward_bf16", needs: (8, 0), .. }), "{e}");
    let mut ds = Tensor::from_host(dev, &vec![seven; att], &[att]).unwrap();
    let e = attention_backward(
        dev,
        d,
        &out.view(),
        &qkv.view(),
        &p.view(),
        &mut s.view_mut(),
        &mut ds.view_mut(),
        &mut dq.view_mut(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Unsupported { op: "attention_backward_bf16", needs: (8, 0), .. }), "{e}");
    dev.synchronize().unwrap();
    assert!(out
        .to_host()
        .unwrap()
        .iter()
        .chain(&p.to_host().unwrap())
        .chain(&dq.to_host().unwrap())
        .all(|x| *x == seven));
    assert!(s.to_host().unwrap().iter().all(|&x| x == 7.0), "a refused attention must not write");
    true
}

fn forward_backward_sweep<H: Half>(test: &str, seed: u64) {
    let Some(dev) = common::gpu(test) else { return };
    if H::DTYPE == DType::BF16 && bf16_refused_below_sm80(&dev) {
        return;
    }
    let mut rng = Rng::new(seed);
    for shape in SHAPES {
        let d = dims(shape);
        let f = forward_case::<H>(&dev, &mut rng, d);
        backward_case::<H>(&dev, &mut rng, d, &f);
    }
}

#[test]
fn attention_f16_forward_backward_against_f64_awkward_shapes() {
    forward_backward_sweep::<f16>("attention::attention_f16_forward_backward_against_f64_awkward_shapes", 70);
}

#[test]
fn attention_bf16_forward_backward_against_f64_awkward_shapes() {
    forward_backward_sweep::<bf16>("attention::attention_bf16_forward_backward_against_f64_awkward_shapes", 71);
}

/// The softmax kernels alone (no tensor cores: they run at 7.5 in bf16 too), on scores
/// with a wide range (|S| up to 30) and NaN above the diagonal, which must never be read;
/// rows of several sequences so the query position r % t wraps.
fn softmax_alone<H: Half>(test: &str, seed: u64) {
    let Some(dev) = common::gpu(test) else { return };
    let mut rng = Rng::new(seed);
    for (rows_per, t) in [(1, 1), (3, 7), (2, 33), (1, 70)] {
        let rows = rows_per * t;
        let n = rows * t;
        let mut s = vec![f32::NAN; n];
        let mut dp = vec![f32::NAN; n];
        let p_in: Vec<H> = (0..n).map(|_| H::from_f32(rng.uniform_in(0.0, 1.0))).collect();
        for r in 0..rows {
            for j in 0..=(r % t) {
                s[r * t + j] = rng.uniform_in(-30.0, 30.0);
                dp[r * t + j] = rng.uniform_in(-1.0, 1.0);
            }
        }
        let s_d = Tensor::from_host(&dev, &s, &[n]).unwrap();
        let mut p_d = Tensor::from_host(&dev, &vec![H::from_f32(f32::NAN); n], &[n]).unwrap();
        attention_softmax_forward(&dev, rows, t, &s_d.view(), &mut p_d.view_mut()).unwrap();
        let p = p_d.to_host().unwrap();
        let pin_d = Tensor::from_host(&dev, &p_in, &[n]).unwrap();
        let dp_d = Tensor::from_host(&dev, &dp, &[n]).unwrap();
        let mut ds_d = Tensor::from_host(&dev, &vec![H::from_f32(f32::NAN); n], &[n]).unwrap();
        attention_softmax_backward(&dev, rows, t, &pin_d.view(), &dp_d.view(), &mut ds_d.view_mut()).unwrap();
        let ds = ds_d.to_host().unwrap();
        for r in 0..rows {
            let q = r % t;
            let row: Vec<f64> = (0..=q).map(|j| s[r * t + j] as f64).collect();
            let want = softmax64(&row);
            // The arguments S_j - m are exact-ish (one f32 rounding, |S - m| <= 60: 60 u
            // relative to exp's argument), expf 2 ulp, sum and division in f32.
            let depth = (q + 1).div_ceil(32) as f64 + 5.0;
            let pr: Vec<f64> = (0..=q).map(|j| p_in[r * t + j].to_f32() as f64).collect();
            let dpr: Vec<f64> = (0..=q).map(|j| dp[r * t + j] as f64).collect();
            let d: f64 = pr.iter().zip(&dpr).map(|(a, b)| a * b).sum();
            let dabs: f64 = pr.iter().zip(&dpr).map(|(a, b)| (a * b).abs()).sum();
            for j in 0..t {
                let what = format!("{} rows {rows} t {t} row {r} col {j}", H::DTYPE);
                let (got_p, got_ds) = (p[r * t + j].to_f32() as f64, ds[r * t + j].to_f32() as f64);
                if j > q {
                    assert!(got_p == 0.0 && got_ds == 0.0, "{what}: above the diagonal must be 0");
                    continue;
                }
                let f32_err = (depth + 8.0 + 2.0 * 60.0) * U32 * want[j];
                close(&format!("{what} probs"), got_p, want[j], half_tol::<H>(want[j], f32_err));
                let w = pr[j] * (dpr[j] - d);
                let f32_err = pr[j] * ((depth + 2.0) * U32 * dabs + 2.0 * U32 * dpr[j].abs()) + U32 * w.abs();
                close(&format!("{what} dscores"), got_ds, w, half_tol::<H>(w, f32_err));
            }
            let sum: f64 = (0..=q).map(|j| p[r * t + j].to_f32() as f64).sum();
            assert!((sum - 1.0).abs() <= (q + 1) as f64 * unit::<H>() + 1e-6, "row {r}: probabilities sum to {sum}");
        }
    }
}

#[test]
fn attention_softmax_f16_alone_against_f64() {
    softmax_alone::<f16>("attention::attention_softmax_f16_alone_against_f64", 72);
}

#[test]
fn attention_softmax_bf16_alone_against_f64() {
    softmax_alone::<bf16>("attention::attention_softmax_bf16_alone_against_f64", 73);
}

/// Bad dimensions and buffer lengths are refused, naming the op and the operand, before
/// anything is queued (every output keeps its sentinel).
#[test]
fn attention_rejects_bad_input_and_launches_nothing() {
    let dev = gpu_or_skip!();
    let d = AttnDims { b: 2, t: 5, c: 12, nh: 3 };
    let (att, n_out, n_qkv) = (d.att_len().unwrap(), d.out_len().unwrap(), d.qkv_len().unwrap());
    let seven = f16::from_f32(7.0);
    let qkv = Tensor::from_host(&dev, &vec![f16::ONE; n_qkv], &[n_qkv]).unwrap();
    let mut out = Tensor::from_host(&dev, &vec![seven; n_out], &[n_out]).unwrap();
    let mut s = Tensor::from_host(&dev, &vec![7.0f32; att], &[att]).unwrap();
    let mut p = Tensor::from_host(&dev, &vec![seven; att], &[att]).unwrap();
    let mut ds = Tensor::from_host(&dev, &vec![seven; att], &[att]).unwrap();
    let mut dq = Tensor::from_host(&dev, &vec![seven; n_qkv], &[n_qkv]).unwrap();
    let fwd = |d: AttnDims, qkv: &Tensor<f16>, out: &mut Tensor<f16>, s: &mut Tensor<f32>, p: &mut Tensor<f16>| {
        attention_forward(&dev, d, &qkv.view(), &mut out.view_mut(), &mut s.view_mut(), &mut p.view_mut())
    };
    // Heads that do not divide the channels, and no heads.
    for nh in [5, 0] {
        let e = fwd(AttnDims { nh, ..d }, &qkv, &mut out, &mut s, &mut p).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { op: "attention_forward_f16", what: "nh", .. }), "{e}");
    }
    // Each buffer one element short, or of another shape.
    let short = Tensor::from_host(&dev, &vec![f16::ONE; n_qkv - 1], &[n_qkv - 1]).unwrap();
    let e = fwd(d, &short, &mut out, &mut s, &mut p).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { what: "qkv", expected, .. } if expected == n_qkv), "{e}");
    let e = fwd(AttnDims { t: 6, ..d }, &qkv, &mut out, &mut s, &mut p).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { what: "qkv", .. }), "{e}");
    let mut s_short = Tensor::from_host(&dev, &vec![7.0f32; att - 1], &[att - 1]).unwrap();
    let e = fwd(d, &qkv, &mut out, &mut s_short, &mut p).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { what: "scores", .. }), "{e}");
    let huge = AttnDims { b: usize::MAX / 2, ..d };
    let e = fwd(huge, &qkv, &mut out, &mut s, &mut p).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { what: "dims", .. }), "{e}");
    // Backward: dqkv the size of out.
    let mut dq_short = Tensor::from_host(&dev, &vec![seven; n_out], &[n_out]).unwrap();
    let e = attention_backward(
        &dev,
        d,
        &out.view(),
        &qkv.view(),
        &p.view(),
        &mut s.view_mut(),
        &mut ds.view_mut(),
        &mut dq_short.view_mut(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { op: "attention_backward_f16", what: "dqkv", .. }), "{e}");
    let e = attention_backward(
        &dev,
        d,
        &qkv.view(),
        &qkv.view(),
        &p.view(),
        &mut s.view_mut(),
        &mut ds.view_mut(),
        &mut dq.view_mut(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { what: "dout", .. }), "{e}");
    // The softmax alone: lengths and t = 0.
    let e =
        attention_softmax_forward(&dev, 10, 5, &s.view().slice(0..49), &mut p.view_mut().slice_mut(0..50)).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { op: "attention_softmax_forward_f16", what: "scores", .. }), "{e}");
    let e =
        attention_softmax_forward(&dev, 3, 0, &s.view().slice(0..0), &mut p.view_mut().slice_mut(0..0)).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { what: "t", .. }), "{e}");
    dev.synchronize().unwrap();
    assert!(out
        .to_host()
        .unwrap()
        .iter()
        .chain(&p.to_host().unwrap())
        .chain(&ds.to_host().unwrap())
        .all(|x| *x == seven));
    assert!(dq.to_host().unwrap().iter().all(|x| *x == seven));
    assert!(s.to_host().unwrap().iter().all(|&x| x == 7.0), "a refused attention must not write");
    // b = 0 or t = 0: nothing to do, nothing written, no error.
    let empty = AttnDims { b: 0, ..d };
    let z = Tensor::from_host(&dev, &[f16::ONE], &[1]).unwrap();
    let mut zf = Tensor::from_host(&dev, &[7.0f32], &[1]).unwrap();
    let mut o0 = Tensor::from_host(&dev, &[f16::ONE], &[1]).unwrap();
    let mut p0 = Tensor::from_host(&dev, &[f16::ONE], &[1]).unwrap();
    attention_forward(
        &dev,
        empty,
        &z.view().slice(0..0),
        &mut o0.view_mut().slice_mut(0..0),
        &mut zf.view_mut().slice_mut(0..0),
        &mut p0.view_mut().slice_mut(0..0),
    )
    .unwrap();
}

/// Capturable: the forward and backward queue only stream work (no host sync, no
/// allocation), so both capture into one CUDA graph whose replay gives the eager run's
/// bits. The eager run comes first, as in a training step (it also loads the modules).
#[test]
fn attention_forward_backward_capture_into_one_graph_and_replay_bitwise() {
    use mixed_precision::cudarc::driver::sys;
    let dev = gpu_or_skip!();
    let d = AttnDims { b: 2, t: 33, c: 48, nh: 3 };
    let (att, n_out, n_qkv) = (d.att_len().unwrap(), d.out_len().unwrap(), d.qkv_len().unwrap());
    let mut rng = Rng::new(74);
    let qkv = Tensor::from_host(&dev, &random_half::<f16>(&mut rng, n_qkv, 2.0), &[n_qkv]).unwrap();
    let dout = Tensor::from_host(&dev, &random_half::<f16>(&mut rng, n_out, 1.0), &[n_out]).unwrap();
    let run = |out: &mut Tensor<f16>,
               dqkv: &mut Tensor<f16>,
               s: &mut Tensor<f32>,
               p: &mut Tensor<f16>,
               ds: &mut Tensor<f16>| {
        attention_forward(&dev, d, &qkv.view(), &mut out.view_mut(), &mut s.view_mut(), &mut p.view_mut()).unwrap();
        attention_backward(
            &dev,
            d,
            &dout.view(),
            &qkv.view(),
            &p.view(),
            &mut s.view_mut(),
            &mut ds.view_mut(),
            &mut dqkv.view_mut(),
        )
        .unwrap();
    };
    let buffers = || {
        (
            Tensor::from_host(&dev, &vec![f16::NAN; n_out], &[n_out]).unwrap(),
            Tensor::from_host(&dev, &vec![f16::NAN; n_qkv], &[n_qkv]).unwrap(),
            Tensor::from_host(&dev, &vec![f32::NAN; att], &[att]).unwrap(),
            Tensor::from_host(&dev, &vec![f16::NAN; att], &[att]).unwrap(),
            Tensor::from_host(&dev, &vec![f16::NAN; att], &[att]).unwrap(),
        )
    };
    let (mut out, mut dqkv, mut s, mut p, mut ds) = buffers();
    run(&mut out, &mut dqkv, &mut s, &mut p, &mut ds);
    let (mut out_g, mut dqkv_g, mut s_g, mut p_g, mut ds_g) = buffers();
    dev.synchronize().unwrap();
    let stream = dev.stream();
    stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).unwrap();
    run(&mut out_g, &mut dqkv_g, &mut s_g, &mut p_g, &mut ds_g);
    let graph = stream.end_capture(sys::CUgraphInstantiate_flags(0)).unwrap().expect("a captured graph");
    // Nothing ran during capture: the outputs still hold their poison.
    assert!(out_g.to_host().unwrap().iter().all(|x| x.is_nan()), "capture executed work");
    for _ in 0..2 {
        graph.launch().unwrap();
        dev.synchronize().unwrap();
        let bits = |t: &Tensor<f16>| t.to_host().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&out_g), bits(&out), "replayed out differs from eager");
        assert_eq!(bits(&dqkv_g), bits(&dqkv), "replayed dqkv differs from eager");
    }
}

// ---- CPU: the backward formula is the gradient of the forward (finite differences) ----

/// The forward in f64: (out (b*t, c), P (b, nh, t, t)).
fn forward64(d: AttnDims, qkv: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let ix = Ix::new(d);
    let (hs, t) = (ix.hs, d.t);
    let scale = 1.0 / (hs as f64).sqrt();
    let mut out = vec![0.0; d.out_len().unwrap()];
    let mut p = vec![0.0; d.att_len().unwrap()];
    for b in 0..d.b {
        for h in 0..d.nh {
            for i in 0..t {
                let s: Vec<f64> = (0..=i)
                    .map(|j| {
                        scale * (0..hs).map(|e| qkv[ix.qkv(b, i, 0, h, e)] * qkv[ix.qkv(b, j, 1, h, e)]).sum::<f64>()
                    })
                    .collect();
                let pr = softmax64(&s);
                for j in 0..=i {
                    p[ix.att(b, h, i, j)] = pr[j];
                    for e in 0..hs {
                        out[ix.out(b, i, h, e)] += pr[j] * qkv[ix.qkv(b, j, 2, h, e)];
                    }
                }
            }
        }
    }
    (out, p)
}

/// The backward in f64 by the formulas the kernels implement: dP = dout Vᵀ, dS = P (dP -
/// D), dQ = scale dS K, dK = scale dSᵀ Q, dV = Pᵀ dout.
fn backward64(d: AttnDims, qkv: &[f64], p: &[f64], dout: &[f64]) -> Vec<f64> {
    let ix = Ix::new(d);
    let (hs, t) = (ix.hs, d.t);
    let scale = 1.0 / (hs as f64).sqrt();
    let mut dqkv = vec![0.0; qkv.len()];
    for b in 0..d.b {
        for h in 0..d.nh {
            for i in 0..t {
                let dp: Vec<f64> = (0..=i)
                    .map(|j| (0..hs).map(|e| dout[ix.out(b, i, h, e)] * qkv[ix.qkv(b, j, 2, h, e)]).sum())
                    .collect();
                let dd: f64 = (0..=i).map(|j| p[ix.att(b, h, i, j)] * dp[j]).sum();
                for j in 0..=i {
                    let pij = p[ix.att(b, h, i, j)];
                    let ds = pij * (dp[j] - dd);
                    for e in 0..hs {
                        dqkv[ix.qkv(b, i, 0, h, e)] += scale * ds * qkv[ix.qkv(b, j, 1, h, e)];
                        dqkv[ix.qkv(b, j, 1, h, e)] += scale * ds * qkv[ix.qkv(b, i, 0, h, e)];
                        dqkv[ix.qkv(b, j, 2, h, e)] += pij * dout[ix.out(b, i, h, e)];
                    }
                }
            }
        }
    }
    dqkv
}

/// Central differences of L(qkv) = sum(out(qkv) * dout) against backward64, for every
/// element of qkv, at a shape with several sequences and heads.
#[test]
fn cpu_attention_backward_formula_matches_finite_differences() {
    let d = AttnDims { b: 2, t: 5, c: 6, nh: 2 };
    let mut rng = Rng::new(75);
    let qkv: Vec<f64> = (0..d.qkv_len().unwrap()).map(|_| rng.uniform_in(-1.0, 1.0) as f64).collect();
    let dout: Vec<f64> = (0..d.out_len().unwrap()).map(|_| rng.uniform_in(-1.0, 1.0) as f64).collect();
    let (_, p) = forward64(d, &qkv);
    let grad = backward64(d, &qkv, &p, &dout);
    let loss = |x: &[f64]| forward64(d, x).0.iter().zip(&dout).map(|(o, g)| o * g).sum::<f64>();
    let h = 1e-5;
    for k in 0..qkv.len() {
        let (mut up, mut down) = (qkv.clone(), qkv.clone());
        up[k] += h;
        down[k] -= h;
        let fd = (loss(&up) - loss(&down)) / (2.0 * h);
        assert!(
            (fd - grad[k]).abs() <= 1e-8 * (1.0 + fd.abs()),
            "qkv[{k}]: finite difference {fd}, formula {}",
            grad[k]
        );
    }
}
