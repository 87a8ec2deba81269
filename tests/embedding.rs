//! embedding: GPT's token + position embedding in f16 and bf16 and its deterministic
//! backward, bit-exact against references written here from the specification (forward:
//! the half of the f32 sum; backward: f32 sums in ascending row order, added once).

mod common;

use std::sync::Arc;

use mixed_precision::cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use mixed_precision::half::{bf16, f16};
use mixed_precision::kernels::embedding::{embedding_backward, embedding_forward, EmbeddingShape, Tokens};
use mixed_precision::rng::Rng;
use mixed_precision::{Device, Error, Half, Tensor};

/// (B, T, C, V, maxT): C = 1, 3, 72, 100, 768; T = 1, a prime, below and at maxT; V from 1
/// to large-with-few-used.
const SHAPES: &[(usize, usize, usize, usize, usize)] = &[
    (1, 1, 1, 1, 1),
    (2, 3, 3, 5, 4),
    (3, 7, 72, 50, 9),
    (2, 5, 100, 17, 5),
    (3, 13, 8, 3, 16),
    (2, 4, 768, 300, 8),
    (4, 1, 16, 2, 1),
];

fn shape_of(&(batch, seq, channels, vocab, max_seq): &(usize, usize, usize, usize, usize)) -> EmbeddingShape {
    EmbeddingShape { batch, seq, channels, vocab, max_seq }
}

fn halves<H: Half>(rng: &mut Rng, n: usize, s: f32) -> Vec<H> {
    (0..n).map(|_| H::from_f32(rng.normal() * s)).collect()
}

fn ids(rng: &mut Rng, n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|_| rng.below(vocab as u64) as u32).collect()
}

fn bits<H: Half>(v: &[H]) -> Vec<u32> {
    v.iter().map(|x| x.to_f32().to_bits()).collect()
}

fn f32_bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The specification's forward.
fn forward_ref<H: Half>(s: EmbeddingShape, tok: &[u32], wte: &[H], wpe: &[H]) -> Vec<H> {
    let c = s.channels;
    let mut out = Vec::with_capacity(tok.len() * c);
    for (r, &id) in tok.iter().enumerate() {
        let t = r % s.seq;
        for j in 0..c {
            out.push(H::from_f32(wte[id as usize * c + j].to_f32() + wpe[t * c + j].to_f32()));
        }
    }
    out
}

/// The specification's backward: per (token, column) an f32 sum from 0 over its rows in
/// ascending order, added once; per (position, column) likewise over b ascending.
fn backward_ref<H: Half>(s: EmbeddingShape, tok: &[u32], dout: &[H], dwte: &mut [f32], dwpe: &mut [f32]) {
    let c = s.channels;
    let mut used = vec![false; s.vocab];
    for &id in tok {
        used[id as usize] = true;
    }
    for v in (0..s.vocab).filter(|&v| used[v]) {
        for j in 0..c {
            let mut acc = 0.0f32;
            for (r, _) in tok.iter().enumerate().filter(|(_, &id)| id as usize == v) {
                acc += dout[r * c + j].to_f32();
            }
            dwte[v * c + j] += acc;
        }
    }
    for t in 0..s.seq {
        for j in 0..c {
            let mut acc = 0.0f32;
            for b in 0..s.batch {
                acc += dout[(b * s.seq + t) * c + j].to_f32();
            }
            dwpe[t * c + j] += acc;
        }
    }
}

struct Case<H: Half> {
    s: EmbeddingShape,
    tok: Vec<u32>,
    wte: Vec<H>,
    wpe: Vec<H>,
    dout: Vec<H>,
    dwte0: Vec<f32>,
    dwpe0: Vec<f32>,
}

fn case<H: Half>(rng: &mut Rng, s: EmbeddingShape, tok: Vec<u32>) -> Case<H> {
    let n = s.batch * s.seq;
    let c = s.channels;
    Case {
        s,
        tok,
        wte: halves(rng, s.vocab * c, 1.0),
        wpe: halves(rng, s.max_seq * c, 0.5),
        dout: halves(rng, n * c, 3.0),
        dwte0: (0..s.vocab * c).map(|_| rng.normal()).collect(),
        dwpe0: (0..s.max_seq * c).map(|_| rng.normal()).collect(),
    }
}

/// Forward, then backward twice (the second adds to the first), each checked bit for bit.
fn check_case<H: Half>(dev: &Arc<Device>, k: &Case<H>) {
    let s = k.s;
    let tokens = Tokens::upload(dev, &k.tok, s.vocab).unwrap();
    let wte = Tensor::from_host(dev, &k.wte, &[k.wte.len()]).unwrap();
    let wpe = Tensor::from_host(dev, &k.wpe, &[k.wpe.len()]).unwrap();
    let n = s.batch * s.seq * s.channels;
    let mut out = Tensor::from_host(dev, &vec![H::from_f32(f32::NAN); n], &[n]).unwrap();
    embedding_forward(dev, s, &tokens, &wte.view(), &wpe.view(), &mut out.view_mut()).unwrap();
    assert_eq!(bits(&out.to_host().unwrap()), bits(&forward_ref(s, &k.tok, &k.wte, &k.wpe)), "{s:?}: forward");

    let dout = Tensor::from_host(dev, &k.dout, &[n]).unwrap();
    let mut dwte = Tensor::from_host(dev, &k.dwte0, &[k.dwte0.len()]).unwrap();
    let mut dwpe = Tensor::from_host(dev, &k.dwpe0, &[k.dwpe0.len()]).unwrap();
    let mut found = Tensor::from_host(dev, &[0.0f32], &[1]).unwrap();
    let (mut want_wte, mut want_wpe) = (k.dwte0.clone(), k.dwpe0.clone());
    for pass in 0..2 {
        let mut f = found.view_mut();
        embedding_backward(dev, s, &tokens, &dout.view(), &mut dwte.view_mut(), &mut dwpe.view_mut(), Some(&mut f))
            .unwrap();
        backward_ref(s, &k.tok, &k.dout, &mut want_wte, &mut want_wpe);
        assert_eq!(f32_bits(&dwte.to_host().unwrap()), f32_bits(&want_wte), "{s:?}: dwte, pass {pass}");
        assert_eq!(f32_bits(&dwpe.to_host().unwrap()), f32_bits(&want_wpe), "{s:?}: dwpe, pass {pass}");
    }
    assert_eq!(found.to_host().unwrap()[0], 0.0, "{s:?}: finite gradients raised found_inf");
}

fn matches_reference<H: Half>(dev: &Arc<Device>, seed: u64) {
    let mut rng = Rng::new(seed);
    for sh in SHAPES {
        let s = shape_of(sh);
        let tok = ids(&mut rng, s.batch * s.seq, s.vocab);
        let k = case::<H>(&mut rng, s, tok);
        check_case(dev, &k);
    }
}

#[test]
fn f16_matches_reference() {
    let dev = gpu_or_skip!();
    matches_reference::<f16>(&dev, 1);
}

#[test]
fn bf16_matches_reference() {
    let dev = gpu_or_skip!();
    matches_reference::<bf16>(&dev, 2);
}

/// Every row the same token (one bucket holds the whole batch), and a large vocabulary of
/// which a handful is used: the rows of dwte no token names must keep their bits.
fn one_token_and_sparse_vocab<H: Half>(dev: &Arc<Device>, seed: u64) {
    let mut rng = Rng::new(seed);
    let s = EmbeddingShape { batch: 4, seq: 9, channels: 24, vocab: 10, max_seq: 12 };
    let k = case::<H>(&mut rng, s, vec![7; 36]);
    check_case(dev, &k);
    let s = EmbeddingShape { batch: 2, seq: 6, channels: 8, vocab: 5000, max_seq: 6 };
    let tok = [4999, 3, 1234, 3, 0, 4999, 17, 17, 17, 2500, 3, 4999].to_vec();
    let k = case::<H>(&mut rng, s, tok);
    check_case(dev, &k);
}

#[test]
fn f16_one_token_and_sparse_vocab() {
    let dev = gpu_or_skip!();
    one_token_and_sparse_vocab::<f16>(&dev, 3);
}

#[test]
fn bf16_one_token_and_sparse_vocab() {
    let dev = gpu_or_skip!();
    one_token_and_sparse_vocab::<bf16>(&dev, 4);
}

/// Views one element past 16-byte alignment (and C = 16, which would take the vector
/// path if they were aligned): the kernels must fall back to single elements, which
/// the emulator's memcheck enforces (a misaligned 16-byte access is a fault), with the
/// same bits.
fn misaligned_views<H: Half>(dev: &Arc<Device>, seed: u64) {
    let mut rng = Rng::new(seed);
    let s = EmbeddingShape { batch: 3, seq: 5, channels: 16, vocab: 11, max_seq: 7 };
    let tok = ids(&mut rng, 15, 11);
    let k = case::<H>(&mut rng, s, tok);
    let pad = |v: &[H]| {
        let mut p = vec![H::from_f32(0.0)];
        p.extend_from_slice(v);
        p
    };
    let tokens = Tokens::upload(dev, &k.tok, s.vocab).unwrap();
    let wte = Tensor::from_host(dev, &pad(&k.wte), &[k.wte.len() + 1]).unwrap();
    let wpe = Tensor::from_host(dev, &pad(&k.wpe), &[k.wpe.len() + 1]).unwrap();
    let n = 15 * 16;
    let mut out = Tensor::from_host(dev, &vec![H::from_f32(f32::NAN); n + 1], &[n + 1]).unwrap();
    {
        let mut o = out.view_mut();
        let mut o = o.slice_mut(1..);
        embedding_forward(dev, s, &tokens, &wte.view().slice(1..), &wpe.view().slice(1..), &mut o).unwrap();
    }
    assert_eq!(bits(&out.to_host().unwrap()[1..]), bits(&forward_ref(s, &k.tok, &k.wte, &k.wpe)), "forward");

    let dout = Tensor::from_host(dev, &pad(&k.dout), &[n + 1]).unwrap();
    let mut dwte = Tensor::from_host(dev, &[&[0.0][..], &k.dwte0].concat(), &[k.dwte0.len() + 1]).unwrap();
    let mut dwpe = Tensor::from_host(dev, &[&[0.0][..], &k.dwpe0].concat(), &[k.dwpe0.len() + 1]).unwrap();
    {
        let (mut a, mut b) = (dwte.view_mut(), dwpe.view_mut());
        let (mut a, mut b) = (a.slice_mut(1..), b.slice_mut(1..));
        embedding_backward(dev, s, &tokens, &dout.view().slice(1..), &mut a, &mut b, None).unwrap();
    }
    let (mut want_wte, mut want_wpe) = (k.dwte0.clone(), k.dwpe0.clone());
    backward_ref(s, &k.tok, &k.dout, &mut want_wte, &mut want_wpe);
    assert_eq!(f32_bits(&dwte.to_host().unwrap()[1..]), f32_bits(&want_wte), "dwte");
    assert_eq!(f32_bits(&dwpe.to_host().unwrap()[1..]), f32_bits(&want_wpe), "dwpe");
}

#[test]
fn f16_misaligned_views_take_the_scalar_path() {
    let dev = gpu_or_skip!();
    misaligned_views::<f16>(&dev, 5);
}

#[test]
fn bf16_misaligned_views_take_the_scalar_path() {
    let dev = gpu_or_skip!();
    misaligned_views::<bf16>(&dev, 6);
}

/// found_inf: raised by an inf or a NaN in dout (the token's row and the position's row
/// both become non-finite), by finite halves whose f32 sum overflows (bf16 only: f16's
/// range is far inside f32's), never by finite gradients, and never cleared.
fn found_inf<H: Half>(dev: &Arc<Device>, seed: u64) {
    let mut rng = Rng::new(seed);
    let s = EmbeddingShape { batch: 3, seq: 4, channels: 16, vocab: 6, max_seq: 4 };
    let tok = ids(&mut rng, 12, 6);
    let mut dout: Vec<H> = halves(&mut rng, 12 * 16, 1.0);
    let tokens = Tokens::upload(dev, &tok, s.vocab).unwrap();
    let run = |dout: &[H], start: f32| {
        let d = Tensor::from_host(dev, dout, &[dout.len()]).unwrap();
        let mut dwte = Tensor::<f32>::zeros(dev, &[6 * 16]).unwrap();
        let mut dwpe = Tensor::<f32>::zeros(dev, &[4 * 16]).unwrap();
        let mut found = Tensor::from_host(dev, &[start], &[1]).unwrap();
        let mut f = found.view_mut();
        embedding_backward(dev, s, &tokens, &d.view(), &mut dwte.view_mut(), &mut dwpe.view_mut(), Some(&mut f))
            .unwrap();
        found.to_host().unwrap()[0]
    };
    assert_eq!(run(&dout, 0.0), 0.0, "finite gradients raised found_inf");
    assert_eq!(run(&dout, 1.0), 1.0, "found_inf is never cleared");
    dout[11 * 16 + 15] = H::from_f32(f32::INFINITY);
    assert_eq!(run(&dout, 0.0), 1.0, "an inf in the last element must raise found_inf");
    dout[11 * 16 + 15] = H::from_f32(f32::NAN);
    assert_eq!(run(&dout, 0.0), 1.0, "a NaN must raise found_inf");
    dout[11 * 16 + 15] = H::from_f32(1.0);
    if H::DTYPE == mixed_precision::DType::BF16 {
        // Rows 0 and 4 share position 0: their sum into dwpe overflows f32.
        dout[3] = H::from_f32(bf16::MAX.to_f32());
        dout[4 * 16 + 3] = H::from_f32(bf16::MAX.to_f32());
        assert_eq!(run(&dout, 0.0), 1.0, "a sum past f32's range must raise found_inf");
    }
}

#[test]
fn f16_found_inf_on_nonfinite_only() {
    let dev = gpu_or_skip!();
    found_inf::<f16>(&dev, 7);
}

#[test]
fn bf16_found_inf_on_nonfinite_only() {
    let dev = gpu_or_skip!();
    found_inf::<bf16>(&dev, 8);
}

/// Two runs on the same inputs give the same bits, on a shape with many rows per bucket
/// spread over more buckets than the grid has blocks at one SM.
#[test]
fn f16_backward_is_deterministic() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(9);
    let s = EmbeddingShape { batch: 8, seq: 32, channels: 40, vocab: 64, max_seq: 32 };
    let tok = ids(&mut rng, 256, 64);
    let dout: Vec<f16> = halves(&mut rng, 256 * 40, 10.0);
    let tokens = Tokens::upload(&dev, &tok, 64).unwrap();
    let d = Tensor::from_host(&dev, &dout, &[dout.len()]).unwrap();
    let mut runs = Vec::new();
    for _ in 0..2 {
        let mut dwte = Tensor::<f32>::zeros(&dev, &[64 * 40]).unwrap();
        let mut dwpe = Tensor::<f32>::zeros(&dev, &[32 * 40]).unwrap();
        embedding_backward(&dev, s, &tokens, &d.view(), &mut dwte.view_mut(), &mut dwpe.view_mut(), None).unwrap();
        runs.push((f32_bits(&dwte.to_host().unwrap()), f32_bits(&dwpe.to_host().unwrap())));
    }
    assert_eq!(runs[0], runs[1], "two runs differ");
}

/// Ids at or past the vocabulary are refused when written, naming the index and the value;
/// a refused write leaves the old ids in place; a write of another length is refused.
#[test]
fn f16_out_of_range_ids_are_refused_at_write() {
    let dev = gpu_or_skip!();
    let e = Tokens::upload(&dev, &[0, 4, 5, 1], 5).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { op: "Tokens::upload", what: "ids", .. }), "{e}");
    assert!(e.to_string().contains("ids[2] = 5"), "{e}");
    assert!(Tokens::upload(&dev, &[0], 0).is_err(), "vocab 0");
    let mut tokens = Tokens::upload(&dev, &[0, 4, 2, 1], 5).unwrap();
    let e = tokens.write(&[1, 2, 3, u32::MAX]).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { op: "Tokens::write", what: "ids", .. }), "{e}");
    assert!(e.to_string().contains(&format!("ids[3] = {}", u32::MAX)), "{e}");
    let e = tokens.write(&[1, 2, 3]).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { op: "Tokens::write", expected: 4, got: 3, .. }), "{e}");
    assert_eq!(dev.stream().clone_dtoh(&tokens.ids()).unwrap(), vec![0, 4, 2, 1], "a refused write changed the ids");
    tokens.write(&[3, 3, 0, 4]).unwrap();
    assert_eq!(dev.stream().clone_dtoh(&tokens.ids()).unwrap(), vec![3, 3, 0, 4]);
}

/// Every shape and length mismatch is an error before anything is queued: the outputs
/// keep their poison.
#[test]
fn f16_bad_shapes_are_refused_before_launch() {
    let dev = gpu_or_skip!();
    let s = EmbeddingShape { batch: 2, seq: 3, channels: 4, vocab: 5, max_seq: 3 };
    let tokens = Tokens::upload(&dev, &[0, 1, 2, 3, 4, 0], 5).unwrap();
    let wte = Tensor::<f16>::zeros(&dev, &[20]).unwrap();
    let wpe = Tensor::<f16>::zeros(&dev, &[12]).unwrap();
    let mut out = Tensor::from_host(&dev, &[f16::NAN; 24], &[24]).unwrap();
    let mut dwte = Tensor::from_host(&dev, &[f32::NAN; 20], &[20]).unwrap();
    let mut dwpe = Tensor::from_host(&dev, &[f32::NAN; 12], &[12]).unwrap();
    let fwd = |s: EmbeddingShape, wte: &Tensor<f16>, wpe: &Tensor<f16>, out: &mut Tensor<f16>| {
        embedding_forward(&dev, s, &tokens, &wte.view(), &wpe.view(), &mut out.view_mut()).unwrap_err()
    };
    let op = "embedding_forward_f16";
    let e = fwd(EmbeddingShape { batch: 3, ..s }, &wte, &wpe, &mut out);
    assert!(
        matches!(&e, Error::ShapeMismatch { op: o, expected, got } if *o == op && *expected == vec![3, 3] && *got == vec![6]),
        "{e}"
    );
    let e = fwd(EmbeddingShape { seq: 4, ..s }, &wte, &wpe, &mut out);
    assert!(matches!(e, Error::InvalidArgument { what: "seq", .. }), "{e}");
    let e = fwd(EmbeddingShape { channels: 0, ..s }, &wte, &wpe, &mut out);
    assert!(matches!(e, Error::InvalidArgument { what: "channels", .. }), "{e}");
    let e = fwd(EmbeddingShape { vocab: 4, ..s }, &wte, &wpe, &mut out);
    assert!(matches!(e, Error::InvalidArgument { what: "vocab", .. }), "{e}");
    let e = fwd(EmbeddingShape { vocab: 6, ..s }, &wte, &wpe, &mut out);
    assert!(matches!(&e, Error::ShapeMismatch { expected, .. } if *expected == vec![6, 4]), "{e}");
    let e = fwd(EmbeddingShape { max_seq: 4, ..s }, &wte, &wpe, &mut out);
    assert!(matches!(&e, Error::ShapeMismatch { expected, .. } if *expected == vec![4, 4]), "{e}");
    let e = fwd(EmbeddingShape { batch: usize::MAX, seq: 2, ..s }, &wte, &wpe, &mut out);
    assert!(matches!(e, Error::InvalidArgument { what: "shape", .. }), "{e}");
    let mut short = Tensor::from_host(&dev, &[f16::NAN; 23], &[23]).unwrap();
    let e = fwd(s, &wte, &wpe, &mut short);
    assert!(
        matches!(&e, Error::ShapeMismatch { expected, got, .. } if *expected == vec![6, 4] && *got == vec![23]),
        "{e}"
    );

    let op = "embedding_backward_f16";
    let dout = Tensor::<f16>::zeros(&dev, &[24]).unwrap();
    let short_dout = Tensor::<f16>::zeros(&dev, &[25]).unwrap();
    let e = embedding_backward(&dev, s, &tokens, &short_dout.view(), &mut dwte.view_mut(), &mut dwpe.view_mut(), None)
        .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { op: o, .. } if o == op), "{e}");
    let mut small = Tensor::<f32>::zeros(&dev, &[19]).unwrap();
    let e = embedding_backward(&dev, s, &tokens, &dout.view(), &mut small.view_mut(), &mut dwpe.view_mut(), None)
        .unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { what: "dwte", expected: 20, got: 19, .. }), "{e}");
    let e = embedding_backward(&dev, s, &tokens, &dout.view(), &mut dwte.view_mut(), &mut small.view_mut(), None)
        .unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { what: "dwpe", expected: 12, got: 19, .. }), "{e}");
    let mut two = Tensor::<f32>::zeros(&dev, &[2]).unwrap();
    let mut f = two.view_mut();
    let e =
        embedding_backward(&dev, s, &tokens, &dout.view(), &mut dwte.view_mut(), &mut dwpe.view_mut(), Some(&mut f))
            .unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { what: "found_inf", .. }), "{e}");

    assert!(out.to_host().unwrap().iter().all(|v| v.is_nan()), "a refused forward wrote");
    assert!(dwte.to_host().unwrap().iter().all(|v| v.is_nan()), "a refused backward wrote dwte");
    assert!(dwpe.to_host().unwrap().iter().all(|v| v.is_nan()), "a refused backward wrote dwpe");
}

/// The forward and backward captured once in a CUDA graph, replayed after new ids were
/// written into the same `Tokens` (different buckets, different bucket count): the replay
/// reads the new ids and index.
fn graph_replays_new_ids<H: Half>(dev: &Arc<Device>, seed: u64) {
    let mut rng = Rng::new(seed);
    let s = EmbeddingShape { batch: 2, seq: 5, channels: 8, vocab: 9, max_seq: 6 };
    let first = ids(&mut rng, 10, 9);
    let k = case::<H>(&mut rng, s, first.clone());
    let mut tokens = Tokens::upload(dev, &first, s.vocab).unwrap();
    let wte = Tensor::from_host(dev, &k.wte, &[k.wte.len()]).unwrap();
    let wpe = Tensor::from_host(dev, &k.wpe, &[k.wpe.len()]).unwrap();
    let dout = Tensor::from_host(dev, &k.dout, &[k.dout.len()]).unwrap();
    let mut out = Tensor::<H>::zeros(dev, &[80]).unwrap();
    let mut dwte = Tensor::<f32>::zeros(dev, &[72]).unwrap();
    let mut dwpe = Tensor::<f32>::zeros(dev, &[48]).unwrap();
    // Once outside the capture, so the module is loaded before it (no module load inside).
    embedding_forward(dev, s, &tokens, &wte.view(), &wpe.view(), &mut out.view_mut()).unwrap();
    embedding_backward(dev, s, &tokens, &dout.view(), &mut dwte.view_mut(), &mut dwpe.view_mut(), None).unwrap();
    dwte.copy_from_host(&[0.0; 72]).unwrap();
    dwpe.copy_from_host(&[0.0; 48]).unwrap();
    let stream = dev.stream();
    stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).unwrap();
    embedding_forward(dev, s, &tokens, &wte.view(), &wpe.view(), &mut out.view_mut()).unwrap();
    embedding_backward(dev, s, &tokens, &dout.view(), &mut dwte.view_mut(), &mut dwpe.view_mut(), None).unwrap();
    let graph = stream.end_capture(CUgraphInstantiate_flags(0)).unwrap().expect("a graph");
    let (mut want_wte, mut want_wpe) = (vec![0.0f32; 72], vec![0.0f32; 48]);
    for (i, tok) in [first, vec![8; 10], ids(&mut rng, 10, 9)].into_iter().enumerate() {
        tokens.write(&tok).unwrap();
        graph.launch().unwrap();
        backward_ref(s, &tok, &k.dout, &mut want_wte, &mut want_wpe);
        assert_eq!(bits(&out.to_host().unwrap()), bits(&forward_ref(s, &tok, &k.wte, &k.wpe)), "replay {i}");
        assert_eq!(f32_bits(&dwte.to_host().unwrap()), f32_bits(&want_wte), "replay {i}: dwte");
        assert_eq!(f32_bits(&dwpe.to_host().unwrap()), f32_bits(&want_wpe), "replay {i}: dwpe");
    }
}

#[test]
fn f16_graph_replays_new_ids() {
    let dev = gpu_or_skip!();
    graph_replays_new_ids::<f16>(&dev, 10);
}

#[test]
fn bf16_graph_replays_new_ids() {
    let dev = gpu_or_skip!();
    graph_replays_new_ids::<bf16>(&dev, 11);
}
