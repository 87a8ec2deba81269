//! gemm: fp16 and bf16 tensor-core GEMM, f32 accumulation, all four row-major layout
//! pairs, f32 and half output, the fused epilogues; against an f64 reference computed from
//! the same half-rounded inputs (as CUTLASS's testbed does: awkward sizes, exact
//! small-integer case, poisoned outputs, non-zero check). bf16 needs sm_80: below it the
//! launcher refuses with Error::Unsupported before queuing anything, which the bf16 tests
//! check instead at compute capability 7.5.

mod common;

use mixed_precision::backend::cpu;
use mixed_precision::half::{bf16, f16};
use mixed_precision::kernels::gemm::{
    gemm, gemm_checking, gemm_strided_batched, Activation, BatchStrides, Bias, Epilogue, GemmBatch, GemmShape,
    Transpose, Triangle,
};
use mixed_precision::rng::Rng;
use mixed_precision::{DType, Element, Error, Half, Tensor};

use Transpose::{N, T};

const LAYOUTS: [(Transpose, Transpose); 4] = [(N, N), (N, T), (T, N), (T, T)];
/// Every value appears as M, as N and as K in the triples below.
const SIZES: [usize; 9] = [1, 7, 16, 17, 64, 127, 128, 129, 1000];

fn triples() -> Vec<(usize, usize, usize)> {
    let mut t: Vec<_> = (0..9).map(|i| (SIZES[i], SIZES[(i + 3) % 9], SIZES[(i + 6) % 9])).collect();
    t.push((257, 200, 300)); // several tiles each way, nothing a multiple of 8
    t.push((256, 384, 512)); // several tiles each way, all on the fast path
    t
}

#[derive(Clone, Copy, Debug)]
enum Epi {
    Plain,
    BiasRelu,
    /// Bias in the operands' half type (Bias::Half), GELU, and the pre-activation stored.
    BiasF16GeluPre,
}

/// The f64 reference on the half-rounded inputs, with the epilogue; returns (c, pre),
/// dense (m x n). `c0` is stored with the shape's leading dimension `ldc`.
#[allow(clippy::too_many_arguments)]
fn reference<T: Half>(
    s: &GemmShape,
    a: &[T],
    b: &[T],
    c0: &[f64],
    alpha: f64,
    beta: f64,
    bias: Option<&[f64]>,
    act: Activation,
) -> (Vec<f64>, Vec<f64>) {
    // A's rows and B's columns converted to f64 once and laid out contiguously along k, so
    // the dot products below read two unit-stride rows instead of converting and striding
    // per product (a fifth of the GEMM tests' time on the emulator went here). The dot
    // products are summed in four interleaved partial sums (k mod 4) added at the end,
    // which the compiler vectorizes, instead of one chain of dependent additions (a tenth
    // of the gemm target's time): another order of exact f16 products in f64, whose
    // rounding (about 1e-16 relative) is far below every tolerance checked against it.
    let a_rows: Vec<f64> = (0..s.m)
        .flat_map(|i| {
            (0..s.k).map(move |k| match s.trans_a {
                N => a[i * s.lda + k],
                T => a[k * s.lda + i],
            })
        })
        .map(|v| v.to_f32() as f64)
        .collect();
    let b_cols: Vec<f64> = (0..s.n)
        .flat_map(|j| {
            (0..s.k).map(move |k| match s.trans_b {
                N => b[k * s.ldb + j],
                T => b[j * s.ldb + k],
            })
        })
        .map(|v| v.to_f32() as f64)
        .collect();
    let mut c = vec![0.0; s.m * s.n];
    let mut pre = vec![0.0; s.m * s.n];
    for i in 0..s.m {
        let ar = &a_rows[i * s.k..(i + 1) * s.k];
        for j in 0..s.n {
            let bc = &b_cols[j * s.k..(j + 1) * s.k];
            let mut part = [0.0f64; 4];
            let (ac, bcc) = (ar.chunks_exact(4), bc.chunks_exact(4));
            let (ar_tail, bc_tail) = (ac.remainder(), bcc.remainder());
            for (x, y) in ac.zip(bcc) {
                for q in 0..4 {
                    part[q] += x[q] * y[q];
                }
            }
            let tail: f64 = ar_tail.iter().zip(bc_tail).map(|(x, y)| x * y).sum();
            let dot = (part[0] + part[1]) + (part[2] + part[3]) + tail;
            let mut v = alpha * dot + if beta != 0.0 { beta * c0[i * s.ldc + j] } else { 0.0 };
            if let Some(bias) = bias {
                v += bias[j];
            }
            pre[i * s.n + j] = v;
            c[i * s.n + j] = match act {
                Activation::None => v,
                Activation::Relu => v.max(0.0),
                Activation::Gelu => {
                    0.5 * v * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v * v * v)).tanh())
                }
            };
        }
    }
    (c, pre)
}

fn normwise(got: &[f32], want: &[f64]) -> f64 {
    let num: f64 = got.iter().zip(want).map(|(g, w)| (*g as f64 - w).powi(2)).sum();
    let den: f64 = want.iter().map(|w| w * w).sum();
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

fn random_f16(rng: &mut Rng, n: usize) -> Vec<f16> {
    random_half(rng, n)
}

fn random_half<T: Half>(rng: &mut Rng, n: usize) -> Vec<T> {
    (0..n).map(|_| T::from_f32(rng.uniform_in(-1.0, 1.0))).collect()
}

/// One case on the GPU: fresh random inputs, C poisoned with NaN when beta = 0. Buffers
/// hold whole padded rows (rows x leading dimension); the padding of C and pre must come
/// back untouched.
fn run_case<C: Element>(
    dev: &std::sync::Arc<mixed_precision::Device>,
    rng: &mut Rng,
    s: &GemmShape,
    epi: Epi,
    beta: f32,
) {
    run_case_t::<f16, C>(dev, rng, s, epi, beta)
}

/// [`run_case`] with operands (and the half bias and `pre`) of type `T`.
fn run_case_t<T: Half, C: Element>(
    dev: &std::sync::Arc<mixed_precision::Device>,
    rng: &mut Rng,
    s: &GemmShape,
    epi: Epi,
    beta: f32,
) {
    let ((ar, ac), (br, bc)) = s.stored();
    assert!(s.lda >= ac && s.ldb >= bc && s.ldc >= s.n);
    let a: Vec<T> = random_half(rng, ar * s.lda);
    let b: Vec<T> = random_half(rng, br * s.ldb);
    let c0: Vec<C> = if beta == 0.0 {
        vec![C::from_f32(f32::NAN); s.m * s.ldc]
    } else {
        (0..s.m * s.ldc).map(|_| C::from_f32(rng.uniform_in(-1.0, 1.0))).collect()
    };
    let bias: Vec<f32> = rng.uniform_vec(s.n, -1.0, 1.0);
    let bias16: Vec<T> = bias.iter().map(|&x| T::from_f32(x)).collect();
    let (act, bias_ref): (Activation, Option<Vec<f64>>) = match epi {
        Epi::Plain => (Activation::None, None),
        Epi::BiasRelu => (Activation::Relu, Some(bias.iter().map(|&x| x as f64).collect())),
        Epi::BiasF16GeluPre => (Activation::Gelu, Some(bias16.iter().map(|x| x.to_f32() as f64).collect())),
    };
    let alpha = 0.75f32;
    let c0_64: Vec<f64> = c0.iter().map(|x| x.to_f32() as f64).collect();
    let (want, want_pre) = reference(s, &a, &b, &c0_64, alpha as f64, beta as f64, bias_ref.as_deref(), act);

    let ad = Tensor::from_host(dev, &a, &[a.len()]).unwrap();
    let bd = Tensor::from_host(dev, &b, &[b.len()]).unwrap();
    let mut cd = Tensor::from_host(dev, &c0, &[c0.len()]).unwrap();
    let bias_d = Tensor::from_host(dev, &bias, &[s.n]).unwrap();
    let bias16_d = Tensor::from_host(dev, &bias16, &[s.n]).unwrap();
    let mut pre_d = Tensor::from_host(dev, &vec![T::from_f32(f32::NAN); s.m * s.ldc], &[s.m * s.ldc]).unwrap();
    let mut pre_view = pre_d.view_mut();
    let epilogue = Epilogue {
        alpha,
        beta,
        bias: match epi {
            Epi::Plain => None,
            Epi::BiasRelu => Some(Bias::F32(bias_d.view())),
            Epi::BiasF16GeluPre => Some(Bias::Half(bias16_d.view())),
        },
        pre: matches!(epi, Epi::BiasF16GeluPre).then_some(&mut pre_view),
        activation: act,
    };
    gemm(dev, s, &ad.view(), &bd.view(), &mut cd.view_mut(), epilogue).unwrap();
    let full: Vec<f32> = cd.to_host().unwrap().iter().map(|x| x.to_f32()).collect();
    let rows =
        |full: &[f32]| -> Vec<f32> { (0..s.m).flat_map(|i| full[i * s.ldc..i * s.ldc + s.n].to_vec()).collect() };
    let padding_kept = |full: &[f32], before: &[f32]| {
        (0..s.m).all(|i| (s.n..s.ldc).all(|j| full[i * s.ldc + j].to_bits() == before[i * s.ldc + j].to_bits()))
    };
    let c0_32: Vec<f32> = c0.iter().map(|x| x.to_f32()).collect();
    let got = rows(&full);
    // f32 C: only the f32 accumulation errs (the products of half inputs are exact in f32),
    // 1e-5 normwise for K <= 1000 of random sign, whatever the half type. Half C adds one
    // rounding, at most the unit roundoff normwise: f16 2^-11 (the bound below allows 2u),
    // bf16 2^-8 (8 significant bits), plus the f32 part.
    let tol = match (C::DTYPE, T::DTYPE) {
        (DType::F32, _) => 1e-5,
        (_, DType::BF16) => 2f64.powi(-8) + 1e-5,
        _ => 1e-3,
    };
    let pre_tol = if T::DTYPE == DType::BF16 { 2f64.powi(-8) + 1e-5 } else { 1e-3 };
    let what = format!(
        "{}: {:?}{:?} {}x{}x{} {:?} beta={beta} out={}",
        T::DTYPE,
        s.trans_a,
        s.trans_b,
        s.m,
        s.n,
        s.k,
        epi,
        C::DTYPE
    );
    assert!(got.iter().all(|x| x.is_finite()), "{what}: non-finite output (poison survived?)");
    assert!(got.iter().any(|&x| x != 0.0), "{what}: all zeros");
    assert!(padding_kept(&full, &c0_32), "{what}: the kernel wrote into C's row padding");
    let e = normwise(&got, &want);
    assert!(e <= tol, "{what}: normwise relative error {e:e} > {tol:e}");
    if matches!(epi, Epi::BiasF16GeluPre) {
        let pre_full: Vec<f32> = pre_d.to_host().unwrap().iter().map(|x| x.to_f32()).collect();
        assert!(
            padding_kept(&pre_full, &vec![f32::NAN; s.m * s.ldc]),
            "{what}: the kernel wrote into pre's row padding"
        );
        let e = normwise(&rows(&pre_full), &want_pre);
        assert!(e <= pre_tol, "{what}: pre-activation error {e:e}");
    }
}

fn sweep<C: Element>(test: &str) {
    let Some(dev) = common::gpu(test) else { return };
    let mut rng = Rng::new(31);
    for (m, n, k) in triples() {
        for (ta, tb) in LAYOUTS {
            let s = GemmShape::dense(m, n, k, ta, tb);
            for epi in [Epi::Plain, Epi::BiasRelu, Epi::BiasF16GeluPre] {
                for beta in [0.0, 1.0] {
                    run_case::<C>(&dev, &mut rng, &s, epi, beta);
                }
            }
        }
    }
}

#[test]
fn gemm_f16_in_f32_acc_f32_out_all_layouts_epilogues_sizes() {
    sweep::<f32>("gemm::gemm_f16_in_f32_acc_f32_out_all_layouts_epilogues_sizes");
}

#[test]
fn gemm_f16_in_f32_acc_f16_out_all_layouts_epilogues_sizes() {
    sweep::<f16>("gemm::gemm_f16_in_f32_acc_f16_out_all_layouts_epilogues_sizes");
}

#[test]
fn gemm_padded_leading_dimensions() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(4);
    for (ta, tb) in LAYOUTS {
        for (m, n, k, pad) in [(33, 65, 47, 3), (128, 128, 64, 8)] {
            let mut s = GemmShape::dense(m, n, k, ta, tb);
            s.lda += pad;
            s.ldb += pad;
            s.ldc += pad;
            run_case::<f32>(&dev, &mut rng, &s, Epi::BiasRelu, 1.0);
        }
    }
}

#[test]
fn gemm_exact_with_small_integers() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(5);
    for (ta, tb) in LAYOUTS {
        for (m, n, k) in [(129, 127, 1000), (64, 64, 64), (7, 1, 17)] {
            let s = GemmShape::dense(m, n, k, ta, tb);
            let ((ar, ac), (br, bc)) = s.stored();
            // Entries in {-1, 0, 1}: every product and partial sum (|sum| <= 1000) is exact
            // in f32, and the result is exact in f16 too.
            let ints =
                |rng: &mut Rng, len| (0..len).map(|_| f16::from_f32(rng.below(3) as f32 - 1.0)).collect::<Vec<_>>();
            let (a, b) = (ints(&mut rng, ar * ac), ints(&mut rng, br * bc));
            let (want, _) = reference(&s, &a, &b, &[], 1.0, 0.0, None, Activation::None);
            let ad = Tensor::from_host(&dev, &a, &[a.len()]).unwrap();
            let bd = Tensor::from_host(&dev, &b, &[b.len()]).unwrap();
            let mut c32 = Tensor::from_host(&dev, &vec![f32::NAN; m * n], &[m * n]).unwrap();
            let mut c16 = Tensor::from_host(&dev, &vec![f16::NAN; m * n], &[m * n]).unwrap();
            gemm(&dev, &s, &ad.view(), &bd.view(), &mut c32.view_mut(), Epilogue::default()).unwrap();
            gemm(&dev, &s, &ad.view(), &bd.view(), &mut c16.view_mut(), Epilogue::default()).unwrap();
            let want32: Vec<f32> = want.iter().map(|&x| x as f32).collect();
            assert_eq!(c32.to_host().unwrap(), want32, "{ta:?}{tb:?} {m}x{n}x{k} f32");
            let want16: Vec<f16> = want.iter().map(|&x| f16::from_f64(x)).collect();
            assert_eq!(c16.to_host().unwrap(), want16, "{ta:?}{tb:?} {m}x{n}x{k} f16");
        }
    }
}

#[test]
fn gemm_4096_cubed_sampled_against_f64() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(6);
    // Emulator: 128 x 128 x 4096 (10^12 MACs do not emulate): M and N shrink to one block
    // tile, K stays, so the accumulation is as long as on a GPU. Still NT, the 16-byte path.
    let (m, k) = (common::size_for(&dev, 4096, 128), 4096);
    let s = GemmShape::dense(m, m, k, N, T);
    let a = random_f16(&mut rng, m * k);
    let b = random_f16(&mut rng, m * k);
    let ad = Tensor::from_host(&dev, &a, &[m * k]).unwrap();
    let bd = Tensor::from_host(&dev, &b, &[m * k]).unwrap();
    let mut cd = Tensor::from_host(&dev, &vec![f32::NAN; m * m], &[m * m]).unwrap();
    gemm(&dev, &s, &ad.view(), &bd.view(), &mut cd.view_mut(), Epilogue::default()).unwrap();
    let c = cd.to_host().unwrap();
    // 4096 sampled elements (a full f64 reference would take minutes on the host).
    let (mut got, mut want) = (Vec::new(), Vec::new());
    for _ in 0..4096 {
        let (i, j) = (rng.below(m as u64) as usize, rng.below(m as u64) as usize);
        want.push((0..k).map(|kk| a[i * k + kk].to_f64() * b[j * k + kk].to_f64()).sum::<f64>());
        got.push(c[i * m + j]);
    }
    assert!(c.iter().all(|x| x.is_finite()));
    // 1e-5 holds at this K under both of the emulator's tensor-core models: measured
    // 1.1e-6 with round to nearest, and with MP_EMU_MMA=trunc (truncated alignment and
    // normalization, emu/src/exec/mma.rs) 2.1e-6 at 7.5 and at most 6.6e-6 at 8.0 and 9.0
    // (this test and the bf16 one): with inputs of random sign the truncations' bias
    // toward zero mostly cancels, unlike the positive dot product of emu/tests/mma.rs.
    let e = normwise(&got, &want);
    assert!(e <= 1e-5, "{m}x{m}x{k}: normwise relative error {e:e}");
}

#[test]
fn gemm_zero_dimensions() {
    let dev = gpu_or_skip!();
    let a = Tensor::from_host(&dev, &[f16::ONE; 8], &[8]).unwrap();
    let mut c = Tensor::from_host(&dev, &[2.0f32; 4], &[4]).unwrap();
    // k = 0: C = beta * C.
    let s = GemmShape::dense(2, 2, 0, N, N);
    let epi = Epilogue { beta: 0.5, ..Epilogue::default() };
    gemm(&dev, &s, &a.view().slice(0..0), &a.view().slice(0..0), &mut c.view_mut(), epi).unwrap();
    assert_eq!(c.to_host().unwrap(), [1.0; 4]);
    // m = 0 and n = 0: nothing at all.
    for s in [GemmShape::dense(0, 2, 4, N, N), GemmShape::dense(2, 0, 4, N, N)] {
        gemm(&dev, &s, &a.view(), &a.view(), &mut c.view_mut(), Epilogue::default()).unwrap();
        assert_eq!(c.to_host().unwrap(), [1.0; 4]);
    }
}

/// gemm_checking raises found_inf exactly when a value it stores is inf or NaN (as
/// stored: an f16 overflow counts, the same value in f32 does not), never clears it, and
/// writes the same C as gemm. Both loading paths (k multiple of 8 or not), beta = 1 over
/// a C holding a NaN (the micro-batch accumulation), several blocks.
#[test]
fn gemm_checking_raises_found_inf_on_nonfinite_stores_only() {
    let dev = gpu_or_skip!();
    let mut rng = Rng::new(41);
    for (m, n, k) in [(130, 140, 64), (33, 65, 47)] {
        let s = GemmShape::dense(m, n, k, T, N);
        let ((ar, ac), (br, bc)) = s.stored();
        let mut a = random_f16(&mut rng, ar * ac);
        let b = random_f16(&mut rng, br * bc);
        let ad = |a: &[f16]| Tensor::from_host(&dev, a, &[a.len()]).unwrap();
        let bd = ad(&b);
        let flag = |v: f32| Tensor::from_host(&dev, &[v], &[1]).unwrap();
        // Finite inputs: C matches gemm's bit for bit and the flag stays 0.
        let mut want = Tensor::from_host(&dev, &vec![0.0f32; m * n], &[m * n]).unwrap();
        gemm(&dev, &s, &ad(&a).view(), &bd.view(), &mut want.view_mut(), Epilogue::default()).unwrap();
        let mut got = Tensor::from_host(&dev, &vec![0.0f32; m * n], &[m * n]).unwrap();
        let mut found = flag(0.0);
        gemm_checking(
            &dev,
            &s,
            &ad(&a).view(),
            &bd.view(),
            &mut got.view_mut(),
            Epilogue::default(),
            &mut found.view_mut(),
        )
        .unwrap();
        assert_eq!(got.to_host().unwrap(), want.to_host().unwrap(), "{m}x{n}x{k}");
        assert_eq!(found.to_host().unwrap(), [0.0], "{m}x{n}x{k}: finite outputs raised found_inf");
        // Sticky: a raised flag stays raised over a clean GEMM.
        let mut raised = flag(1.0);
        gemm_checking(
            &dev,
            &s,
            &ad(&a).view(),
            &bd.view(),
            &mut got.view_mut(),
            Epilogue::default(),
            &mut raised.view_mut(),
        )
        .unwrap();
        assert_eq!(raised.to_host().unwrap(), [1.0]);
        // One large entry of A (stored k x m: A^T) (times alpha 16) makes row 3 of C about 5e5 times a sum of B:
        // finite in f32, past f16's range in f16.
        let big = f16::from_f32(30000.0);
        for x in a[3..].iter_mut().step_by(ac).take(ar) {
            *x = big;
        }
        let epi = || Epilogue { alpha: 16.0, ..Epilogue::default() };
        let mut c32 = Tensor::from_host(&dev, &vec![0.0f32; m * n], &[m * n]).unwrap();
        let mut f32_flag = flag(0.0);
        gemm_checking(&dev, &s, &ad(&a).view(), &bd.view(), &mut c32.view_mut(), epi(), &mut f32_flag.view_mut())
            .unwrap();
        let c = c32.to_host().unwrap();
        assert!(
            c.iter().all(|x| x.is_finite()) && c.iter().any(|x| x.abs() > 65504.0),
            "{m}x{n}x{k}: the case must overflow f16 only"
        );
        assert_eq!(f32_flag.to_host().unwrap(), [0.0], "{m}x{n}x{k}: finite f32 outputs raised found_inf");
        let mut c16 = Tensor::from_host(&dev, &vec![f16::ZERO; m * n], &[m * n]).unwrap();
        let mut f16_flag = flag(0.0);
        gemm_checking(&dev, &s, &ad(&a).view(), &bd.view(), &mut c16.view_mut(), epi(), &mut f16_flag.view_mut())
            .unwrap();
        assert_eq!(
            f16_flag.to_host().unwrap(),
            [1.0],
            "{m}x{n}x{k}: an f16 store overflowing to inf must raise found_inf"
        );
        // beta = 1 over a C holding a NaN: that element stays NaN and raises the flag.
        let mut c0 = vec![0.5f32; m * n];
        c0[m * n - 1] = f32::NAN;
        let mut cn = Tensor::from_host(&dev, &c0, &[m * n]).unwrap();
        let mut nan_flag = flag(0.0);
        let acc = Epilogue { beta: 1.0, ..Epilogue::default() };
        gemm_checking(&dev, &s, &ad(&a).view(), &bd.view(), &mut cn.view_mut(), acc, &mut nan_flag.view_mut()).unwrap();
        assert_eq!(nan_flag.to_host().unwrap(), [1.0], "{m}x{n}x{k}: an accumulated NaN must raise found_inf");
    }
}

#[test]
fn gemm_rejects_bad_input_and_launches_nothing() {
    let dev = gpu_or_skip!();
    let a = Tensor::from_host(&dev, &[f16::ONE; 12], &[12]).unwrap();
    let mut c = Tensor::from_host(&dev, &[7.0f32; 9], &[9]).unwrap();
    // 3x3x4 needs 12 elements of A and B: B has only 12 - 1 in this view.
    let s = GemmShape::dense(3, 3, 4, N, N);
    let err = gemm(&dev, &s, &a.view(), &a.view().slice(0..11), &mut c.view_mut(), Epilogue::default()).unwrap_err();
    assert!(matches!(err, Error::LengthMismatch { op: "gemm_nn_f32", what: "b", expected: 12, got: 11 }), "{err}");
    let mut bad = s;
    bad.lda = 3;
    assert!(matches!(
        gemm(&dev, &bad, &a.view(), &a.view(), &mut c.view_mut(), Epilogue::default()),
        Err(Error::InvalidArgument { .. })
    ));
    let short_bias = Tensor::from_host(&dev, &[0.0f32; 2], &[2]).unwrap();
    let epi = Epilogue { bias: Some(Bias::F32(short_bias.view())), ..Epilogue::default() };
    assert!(gemm(&dev, &s, &a.view(), &a.view(), &mut c.view_mut(), epi).is_err());
    let mut cb = Tensor::<mixed_precision::half::bf16>::zeros(&dev, &[9]).unwrap();
    assert!(matches!(
        gemm(&dev, &s, &a.view(), &a.view(), &mut cb.view_mut(), Epilogue::default()),
        Err(Error::UnsupportedDtype { .. })
    ));
    assert_eq!(c.to_host().unwrap(), [7.0; 9], "a rejected GEMM must not write");
}

// ---- CPU: the reference itself, and the shape checks, which need no GPU ----

#[test]
fn cpu_gemm_matches_f64_in_every_layout() {
    let mut rng = Rng::new(7);
    for (ta, tb) in LAYOUTS {
        for (m, n, k, pad) in [(1, 1, 1, 0), (7, 17, 16, 0), (33, 65, 47, 5)] {
            let mut s = GemmShape::dense(m, n, k, ta, tb);
            s.lda += pad;
            s.ldb += pad;
            s.ldc += pad;
            let ((ar, _), (br, _)) = s.stored();
            let a = random_f16(&mut rng, ar * s.lda);
            let b = random_f16(&mut rng, br * s.ldb);
            let bias = rng.uniform_vec(n, -1.0, 1.0);
            let c0: Vec<f32> = rng.uniform_vec(m * s.ldc, -1.0, 1.0);
            for act in [Activation::None, Activation::Relu, Activation::Gelu] {
                let mut c = c0.clone();
                let mut pre = vec![0.0f32; m * s.ldc];
                let a32: Vec<f32> = a.iter().map(|x| x.to_f32()).collect();
                let b32: Vec<f32> = b.iter().map(|x| x.to_f32()).collect();
                cpu::gemm(&s, &a32, &b32, &mut c, 0.5, 1.0, Some(&bias), Some(&mut pre), act).unwrap();
                let c0_64: Vec<f64> = c0.iter().map(|&x| x as f64).collect();
                let bias64: Vec<f64> = bias.iter().map(|&x| x as f64).collect();
                let (want, want_pre) = reference(&s, &a, &b, &c0_64, 0.5, 1.0, Some(&bias64), act);
                let dense = |v: &[f32]| (0..m * n).map(|x| v[(x / n) * s.ldc + x % n]).collect::<Vec<f32>>();
                assert!(normwise(&dense(&c), &want) <= 1e-6, "{ta:?}{tb:?} {m}x{n}x{k} {act:?}");
                assert!(normwise(&dense(&pre), &want_pre) <= 1e-6, "{ta:?}{tb:?} {m}x{n}x{k} pre");
            }
        }
    }
}

#[test]
fn shape_validation_names_the_operand() {
    let s = GemmShape::dense(3, 4, 5, T, N);
    assert_eq!(s.stored(), ((5, 3), (5, 4)));
    assert!(s.validate("gemm", 15, 20, 12, Some(4), Some(12)).is_ok());
    let e = s.validate("gemm", 14, 20, 12, None, None).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { what: "a", expected: 15, got: 14, .. }), "{e}");
    let e = s.validate("gemm", 15, 20, 11, None, None).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { what: "c", .. }), "{e}");
    let e = s.validate("gemm", 15, 20, 12, Some(3), None).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { what: "bias", .. }), "{e}");
    assert!(GemmShape { ldb: 3, ..s }.validate("gemm", 15, 20, 12, None, None).is_err());
    // Padded rows: the last row needs only its own length.
    let p = GemmShape { ldc: 10, ..s };
    assert!(p.validate("gemm", 15, 20, 2 * 10 + 4, None, None).is_ok());
    assert!(GemmShape::dense(0, 0, 0, N, N).validate("gemm", 0, 0, 0, None, None).is_ok());
}

// ---- bf16 (issue 19): sm_80 and newer; Error::Unsupported before anything is queued below ----

/// On a device without bf16 tensor cores: the bf16 GEMM (plain and checking, every
/// layout, either C) returns Error::Unsupported naming the capability it needs, and
/// writes nothing (C, pre and found_inf keep their sentinels). Returns true when it did
/// (the caller's bf16 checks then have nothing more to run).
fn bf16_refused_below_sm80(dev: &std::sync::Arc<mixed_precision::Device>) -> bool {
    if common::has_bf16_tensor_cores(dev) {
        return false;
    }
    let capability = dev.info().compute_capability;
    let (m, n, k) = (17, 33, 24);
    let a = Tensor::from_host(dev, &vec![bf16::ONE; m * k], &[m * k]).unwrap();
    let b = Tensor::from_host(dev, &vec![bf16::ONE; k * n], &[k * n]).unwrap();
    let bias = Tensor::from_host(dev, &vec![bf16::ONE; n], &[n]).unwrap();
    let mut c32 = Tensor::from_host(dev, &vec![7.0f32; m * n], &[m * n]).unwrap();
    let mut c16 = Tensor::from_host(dev, &vec![bf16::from_f32(7.0); m * n], &[m * n]).unwrap();
    let mut pre = Tensor::from_host(dev, &vec![bf16::from_f32(7.0); m * n], &[m * n]).unwrap();
    let mut found = Tensor::from_host(dev, &[0.0f32], &[1]).unwrap();
    for (ta, tb) in LAYOUTS {
        let s = GemmShape::dense(m, n, k, ta, tb);
        fn epi<'a, 'b>(
            bias: &'a Tensor<bf16>,
            pre: &'b mut mixed_precision::cudarc::driver::CudaViewMut<'a, bf16>,
        ) -> Epilogue<'a, 'b, bf16> {
            Epilogue {
                bias: Some(Bias::Half(bias.view())),
                pre: Some(pre),
                activation: Activation::Gelu,
                ..Epilogue::default()
            }
        }
        let mut pv = pre.view_mut();
        let errs = [
            gemm(dev, &s, &a.view(), &b.view(), &mut c32.view_mut(), epi(&bias, &mut pv)).unwrap_err(),
            gemm(dev, &s, &a.view(), &b.view(), &mut c16.view_mut(), epi(&bias, &mut pv)).unwrap_err(),
            gemm_checking(
                dev,
                &s,
                &a.view(),
                &b.view(),
                &mut c32.view_mut(),
                epi(&bias, &mut pv),
                &mut found.view_mut(),
            )
            .unwrap_err(),
        ];
        for e in errs {
            assert!(
                matches!(e, Error::Unsupported { op: "gemm", needs: (8, 0), capability: c, .. } if c == capability),
                "{ta:?}{tb:?} at {capability:?}: {e}"
            );
            assert!(e.to_string().contains("8.0"), "{e}");
        }
    }
    dev.synchronize().unwrap();
    assert_eq!(c32.to_host().unwrap(), vec![7.0; m * n], "a refused bf16 GEMM must not write C");
    assert!(c16.to_host().unwrap().iter().chain(&pre.to_host().unwrap()).all(|x| x.to_f32() == 7.0));
    assert_eq!(found.to_host().unwrap(), [0.0]);
    true
}

/// Runs on every device: at 8.0 and newer the bf16 GEMM runs (a small case against f64);
/// below, it is refused before anything is queued.
#[test]
fn gemm_bf16_needs_sm80_and_refuses_before_queuing() {
    let dev = gpu_or_skip!();
    if bf16_refused_below_sm80(&dev) {
        return;
    }
    let mut rng = Rng::new(50);
    run_case_t::<bf16, f32>(&dev, &mut rng, &GemmShape::dense(17, 33, 24, N, T), Epi::BiasF16GeluPre, 1.0);
}

fn sweep_bf16<C: Element>(test: &str) {
    let Some(dev) = common::gpu(test) else { return };
    if bf16_refused_below_sm80(&dev) {
        return;
    }
    let mut rng = Rng::new(32);
    for (m, n, k) in triples() {
        for (ta, tb) in LAYOUTS {
            let s = GemmShape::dense(m, n, k, ta, tb);
            for epi in [Epi::Plain, Epi::BiasRelu, Epi::BiasF16GeluPre] {
                for beta in [0.0, 1.0] {
                    run_case_t::<bf16, C>(&dev, &mut rng, &s, epi, beta);
                }
            }
        }
    }
}

#[test]
fn gemm_bf16_in_f32_acc_f32_out_all_layouts_epilogues_sizes() {
    sweep_bf16::<f32>("gemm::gemm_bf16_in_f32_acc_f32_out_all_layouts_epilogues_sizes");
}

#[test]
fn gemm_bf16_in_f32_acc_bf16_out_all_layouts_epilogues_sizes() {
    sweep_bf16::<bf16>("gemm::gemm_bf16_in_f32_acc_bf16_out_all_layouts_epilogues_sizes");
}

/// Padded leading dimensions: pad 3 puts every row at an odd element offset (the
/// element-wise loading path), pad 8 keeps 16-byte rows (the 16-byte path).
#[test]
fn gemm_bf16_padded_leading_dimensions() {
    let dev = gpu_or_skip!();
    if bf16_refused_below_sm80(&dev) {
        return;
    }
    let mut rng = Rng::new(51);
    for (ta, tb) in LAYOUTS {
        for (m, n, k, pad) in [(33, 65, 47, 3), (128, 128, 64, 8)] {
            let mut s = GemmShape::dense(m, n, k, ta, tb);
            s.lda += pad;
            s.ldb += pad;
            s.ldc += pad;
            run_case_t::<bf16, f32>(&dev, &mut rng, &s, Epi::BiasRelu, 1.0);
            run_case_t::<bf16, bf16>(&dev, &mut rng, &s, Epi::BiasF16GeluPre, 0.0);
        }
    }
}

#[test]
fn gemm_bf16_exact_with_small_integers() {
    let dev = gpu_or_skip!();
    if bf16_refused_below_sm80(&dev) {
        return;
    }
    let mut rng = Rng::new(52);
    for (ta, tb) in LAYOUTS {
        for (m, n, k) in [(129, 127, 1000), (64, 64, 64), (7, 1, 17)] {
            let s = GemmShape::dense(m, n, k, ta, tb);
            let ((ar, ac), (br, bc)) = s.stored();
            // Entries in {-1, 0, 1}: every product and partial sum (|sum| <= 1000) is exact
            // in f32; a bf16 C holds integers exactly only up to 256, so there the one
            // rounding of the exact sum must be bf16's round to nearest even.
            let ints =
                |rng: &mut Rng, len| (0..len).map(|_| bf16::from_f32(rng.below(3) as f32 - 1.0)).collect::<Vec<_>>();
            let (a, b) = (ints(&mut rng, ar * ac), ints(&mut rng, br * bc));
            let (want, _) = reference(&s, &a, &b, &[], 1.0, 0.0, None, Activation::None);
            let ad = Tensor::from_host(&dev, &a, &[a.len()]).unwrap();
            let bd = Tensor::from_host(&dev, &b, &[b.len()]).unwrap();
            let mut c32 = Tensor::from_host(&dev, &vec![f32::NAN; m * n], &[m * n]).unwrap();
            let mut c16 = Tensor::from_host(&dev, &vec![bf16::NAN; m * n], &[m * n]).unwrap();
            gemm(&dev, &s, &ad.view(), &bd.view(), &mut c32.view_mut(), Epilogue::default()).unwrap();
            gemm(&dev, &s, &ad.view(), &bd.view(), &mut c16.view_mut(), Epilogue::default()).unwrap();
            let want32: Vec<f32> = want.iter().map(|&x| x as f32).collect();
            assert_eq!(c32.to_host().unwrap(), want32, "{ta:?}{tb:?} {m}x{n}x{k} f32");
            let want16: Vec<bf16> = want.iter().map(|&x| bf16::from_f64(x)).collect();
            assert_eq!(c16.to_host().unwrap(), want16, "{ta:?}{tb:?} {m}x{n}x{k} bf16");
            assert!(want32.iter().any(|&x| x != 0.0), "{m}x{n}x{k}: all zeros");
        }
    }
}

/// gemm_checking in bf16: same C as gemm and the flag clear on finite stores; raised by
/// a NaN accumulated with beta = 1 and by a store past bf16's range (alpha 1e38: |c| >
/// 3.4e38 overflows f32 and bf16 alike, bf16 having f32's exponent range).
#[test]
fn gemm_checking_bf16_raises_found_inf_on_nonfinite_stores_only() {
    let dev = gpu_or_skip!();
    if bf16_refused_below_sm80(&dev) {
        return;
    }
    let mut rng = Rng::new(53);
    for (m, n, k) in [(130, 140, 64), (33, 65, 47)] {
        let s = GemmShape::dense(m, n, k, T, N);
        let ((ar, ac), (br, bc)) = s.stored();
        let a: Vec<bf16> = random_half(&mut rng, ar * ac);
        let b: Vec<bf16> = random_half(&mut rng, br * bc);
        let (ad, bd) =
            (Tensor::from_host(&dev, &a, &[a.len()]).unwrap(), Tensor::from_host(&dev, &b, &[b.len()]).unwrap());
        let flag = |v: f32| Tensor::from_host(&dev, &[v], &[1]).unwrap();
        let mut want = Tensor::from_host(&dev, &vec![bf16::ZERO; m * n], &[m * n]).unwrap();
        gemm(&dev, &s, &ad.view(), &bd.view(), &mut want.view_mut(), Epilogue::default()).unwrap();
        let mut got = Tensor::from_host(&dev, &vec![bf16::ZERO; m * n], &[m * n]).unwrap();
        let mut found = flag(0.0);
        gemm_checking(
            &dev,
            &s,
            &ad.view(),
            &bd.view(),
            &mut got.view_mut(),
            Epilogue::default(),
            &mut found.view_mut(),
        )
        .unwrap();
        assert_eq!(got.to_host().unwrap(), want.to_host().unwrap(), "{m}x{n}x{k}");
        assert_eq!(found.to_host().unwrap(), [0.0], "{m}x{n}x{k}: finite outputs raised found_inf");
        let big = || Epilogue { alpha: 1e38, ..Epilogue::default() };
        let mut over = flag(0.0);
        gemm_checking(&dev, &s, &ad.view(), &bd.view(), &mut got.view_mut(), big(), &mut over.view_mut()).unwrap();
        assert!(got.to_host().unwrap().iter().any(|x| x.is_infinite()), "{m}x{n}x{k}: the case must overflow");
        assert_eq!(over.to_host().unwrap(), [1.0], "{m}x{n}x{k}: a bf16 store overflowing to inf must raise found_inf");
        let mut c0 = vec![bf16::from_f32(0.5); m * n];
        c0[m * n - 1] = bf16::NAN;
        let mut cn = Tensor::from_host(&dev, &c0, &[m * n]).unwrap();
        let mut nan_flag = flag(0.0);
        let acc = Epilogue { beta: 1.0, ..Epilogue::default() };
        gemm_checking(&dev, &s, &ad.view(), &bd.view(), &mut cn.view_mut(), acc, &mut nan_flag.view_mut()).unwrap();
        assert_eq!(nan_flag.to_host().unwrap(), [1.0], "{m}x{n}x{k}: an accumulated NaN must raise found_inf");
    }
}

#[test]
fn gemm_bf16_4096_cubed_sampled_against_f64() {
    let dev = gpu_or_skip!();
    if bf16_refused_below_sm80(&dev) {
        return;
    }
    let mut rng = Rng::new(54);
    // Emulator: 128 x 128 x 4096, as the f16 test: K as on a GPU, NT, the 16-byte path.
    let (m, k) = (common::size_for(&dev, 4096, 128), 4096);
    let s = GemmShape::dense(m, m, k, N, T);
    let a: Vec<bf16> = random_half(&mut rng, m * k);
    let b: Vec<bf16> = random_half(&mut rng, m * k);
    let ad = Tensor::from_host(&dev, &a, &[m * k]).unwrap();
    let bd = Tensor::from_host(&dev, &b, &[m * k]).unwrap();
    let mut cd = Tensor::from_host(&dev, &vec![f32::NAN; m * m], &[m * m]).unwrap();
    gemm(&dev, &s, &ad.view(), &bd.view(), &mut cd.view_mut(), Epilogue::default()).unwrap();
    let c = cd.to_host().unwrap();
    let (mut got, mut want) = (Vec::new(), Vec::new());
    for _ in 0..4096 {
        let (i, j) = (rng.below(m as u64) as usize, rng.below(m as u64) as usize);
        want.push((0..k).map(|kk| a[i * k + kk].to_f64() * b[j * k + kk].to_f64()).sum::<f64>());
        got.push(c[i * m + j]);
    }
    assert!(c.iter().all(|x| x.is_finite()));
    // Products of bf16 inputs are exact in f32: only the f32 accumulation errs, as in f16
    // (measured 5.2e-7 with MP_EMU_MMA=rn; with trunc, see the f16 test).
    let e = normwise(&got, &want);
    assert!(e <= 1e-5, "{m}x{m}x{k}: normwise relative error {e:e}");
}

// ---- strided-batched GEMM: attention's head permutes folded into strides ----

/// One strided-batched case: operands filled with random halves (C with NaN when beta =
/// 0, so a skipped element shows), each batch checked against the f64 reference on its own
/// offset slices, and every element no batch covers left bit-identical.
#[allow(clippy::too_many_arguments)]
fn run_batched<T: Half, C: Element>(
    dev: &std::sync::Arc<mixed_precision::Device>,
    rng: &mut Rng,
    s: &GemmShape,
    batch: &GemmBatch,
    lens: (usize, usize, usize),
    offsets: (usize, usize),
    alpha: f32,
    beta: f32,
) {
    let (a_len, b_len, c_len) = lens;
    // A and B may start inside a larger buffer (K and V inside qkv).
    let (a_off, b_off) = offsets;
    let a: Vec<T> = random_half(rng, a_len);
    let b: Vec<T> = random_half(rng, b_len);
    let c0: Vec<C> = if beta == 0.0 {
        vec![C::from_f32(f32::NAN); c_len]
    } else {
        (0..c_len).map(|_| C::from_f32(rng.uniform_in(-1.0, 1.0))).collect()
    };
    let ad = Tensor::from_host(dev, &a, &[a_len]).unwrap();
    let bd = Tensor::from_host(dev, &b, &[b_len]).unwrap();
    let mut cd = Tensor::from_host(dev, &c0, &[c_len]).unwrap();
    let epi = Epilogue { alpha, beta, ..Epilogue::default() };
    gemm_strided_batched(
        dev,
        s,
        batch,
        &ad.view().slice(a_off..a_len),
        &bd.view().slice(b_off..b_len),
        &mut cd.view_mut(),
        epi,
    )
    .unwrap();
    let got = cd.to_host().unwrap();
    let c0_64: Vec<f64> = c0.iter().map(|x| x.to_f32() as f64).collect();
    let tol = match (C::DTYPE, T::DTYPE) {
        (DType::F32, _) => 1e-5,
        (_, DType::BF16) => 2f64.powi(-8) + 1e-5,
        _ => 1e-3,
    };
    let mut covered = vec![false; c_len];
    for o in 0..batch.outer {
        for i in 0..batch.inner {
            let oa = a_off + o * batch.a.outer + i * batch.a.inner;
            let ob = b_off + o * batch.b.outer + i * batch.b.inner;
            let oc = o * batch.c.outer + i * batch.c.inner;
            let (want, _) =
                reference(s, &a[oa..], &b[ob..], &c0_64[oc..], alpha as f64, beta as f64, None, Activation::None);
            let mut g = Vec::with_capacity(s.m * s.n);
            for r in 0..s.m {
                for j in 0..s.n {
                    covered[oc + r * s.ldc + j] = true;
                    g.push(got[oc + r * s.ldc + j].to_f32());
                }
            }
            let what = format!(
                "{} {:?}{:?} {}x{}x{} batch ({o}, {i}) out={}",
                T::DTYPE,
                s.trans_a,
                s.trans_b,
                s.m,
                s.n,
                s.k,
                C::DTYPE
            );
            assert!(g.iter().all(|x| x.is_finite()), "{what}: non-finite output");
            assert!(g.iter().any(|&x| x != 0.0), "{what}: all zeros");
            let e = normwise(&g, &want);
            assert!(e <= tol, "{what}: normwise relative error {e:e} > {tol:e}");
        }
    }
    for (k, cov) in covered.iter().enumerate() {
        if !cov {
            assert_eq!(
                got[k].to_f32().to_bits(),
                c0[k].to_f32().to_bits(),
                "element {k} outside every batch was written"
            );
        }
    }
}

/// The four GEMMs of causal attention on a (B*T, 3C) qkv buffer, heads folded into
/// strides: S = Q Kᵀ (NT, f32 out, into (B, NH, T, T)), P V (NN, half out into columns
/// h*hs of a (B*T, C) buffer), dS Kᵀ-style TN (dK = dSᵀ Q) and a padded TT case with
/// beta = 1. T = 33 and 7 (element-wise path), T = 64 with 3C a multiple of 8 (16-byte
/// path: every batch's A and B 16-byte aligned).
fn attention_like_batches<T: Half>(seed: u64) {
    let dev = match common::gpu("gemm::gemm_strided_batched") {
        Some(d) => d,
        None => return,
    };
    let mut rng = Rng::new(seed);
    for (b, t, c, nh) in [(2, 33, 48, 3), (1, 7, 64, 8), (2, 64, 48, 3)] {
        let hs = c / nh;
        let qkv = b * t * 3 * c;
        let qkv_strides = BatchStrides { outer: t * 3 * c, inner: hs };
        let att = BatchStrides { outer: nh * t * t, inner: t * t };
        let scale = 1.0 / (hs as f32).sqrt();
        // S = scale Q K^T: A = Q at 0, B = K at C.
        let s = GemmShape { m: t, n: t, k: hs, trans_a: N, trans_b: T, lda: 3 * c, ldb: 3 * c, ldc: t };
        let batch = GemmBatch { outer: b, inner: nh, a: qkv_strides, b: qkv_strides, c: att, triangle: Triangle::Full };
        run_batched::<T, f32>(&dev, &mut rng, &s, &batch, (qkv, qkv, b * nh * t * t), (0, c), scale, 0.0);
        // out = P V: A = P (T x T), B = V at 2C, C = out (B*T, C) at column h*hs.
        let s = GemmShape { m: t, n: hs, k: t, trans_a: N, trans_b: N, lda: t, ldb: 3 * c, ldc: c };
        let out = BatchStrides { outer: t * c, inner: hs };
        let batch = GemmBatch { outer: b, inner: nh, a: att, b: qkv_strides, c: out, triangle: Triangle::Full };
        run_batched::<T, T>(&dev, &mut rng, &s, &batch, (b * nh * t * t, qkv, b * t * c), (0, 2 * c), 1.0, 0.0);
        // dK = scale dS^T Q: A = dS stored T x T transposed, B = Q, C = dqkv at column C + h*hs.
        let s = GemmShape { m: t, n: hs, k: t, trans_a: T, trans_b: N, lda: t, ldb: 3 * c, ldc: 3 * c };
        let batch = GemmBatch { outer: b, inner: nh, a: att, b: qkv_strides, c: qkv_strides, triangle: Triangle::Full };
        run_batched::<T, T>(&dev, &mut rng, &s, &batch, (b * nh * t * t, qkv, qkv), (0, 0), scale, 0.0);
        run_batched::<T, f32>(&dev, &mut rng, &s, &batch, (b * nh * t * t, qkv, qkv), (0, 0), scale, 1.0);
    }
    // Odd M, N, K, padded leading dimensions, TT, beta = 1, 3 x 2 batches with gaps.
    let (m, n, k) = (17, 9, 23);
    let s = GemmShape { m, n, k, trans_a: T, trans_b: T, lda: m + 3, ldb: k + 1, ldc: n + 2 };
    let batch = GemmBatch {
        outer: 3,
        inner: 2,
        a: BatchStrides { outer: 2 * k * (m + 3) + 5, inner: k * (m + 3) + 1 },
        b: BatchStrides { outer: 2 * n * (k + 1) + 7, inner: n * (k + 1) },
        c: BatchStrides { outer: 2 * m * (n + 2) + 3, inner: m * (n + 2) + 1 },
        triangle: Triangle::Full,
    };
    let lens = (3 * (2 * k * (m + 3) + 5), 3 * (2 * n * (k + 1) + 7), 3 * (2 * m * (n + 2) + 3));
    run_batched::<T, f32>(&dev, &mut rng, &s, &batch, lens, (0, 0), 0.5, 1.0);
    run_batched::<T, T>(&dev, &mut rng, &s, &batch, lens, (0, 0), 0.5, 0.0);
}

#[test]
fn gemm_strided_batched_f16_attention_strides_against_f64() {
    attention_like_batches::<f16>(60);
}

#[test]
fn gemm_strided_batched_bf16_attention_strides_against_f64() {
    let dev = gpu_or_skip!();
    if !common::has_bf16_tensor_cores(&dev) {
        // Refused before anything is queued, under the batched op's name.
        let a = Tensor::from_host(&dev, &[bf16::ONE; 16], &[16]).unwrap();
        let mut c = Tensor::from_host(&dev, &[7.0f32; 16], &[16]).unwrap();
        let s = GemmShape::dense(4, 4, 4, N, T);
        let batch = GemmBatch {
            outer: 1,
            inner: 1,
            a: BatchStrides::default(),
            b: BatchStrides::default(),
            c: BatchStrides::default(),
            triangle: Triangle::Full,
        };
        let e = gemm_strided_batched(&dev, &s, &batch, &a.view(), &a.view(), &mut c.view_mut(), Epilogue::default())
            .unwrap_err();
        assert!(matches!(e, Error::Unsupported { op: "gemm_strided_batched", needs: (8, 0), .. }), "{e}");
        assert_eq!(c.to_host().unwrap(), [7.0; 16]);
        return;
    }
    attention_like_batches::<bf16>(61);
}

#[test]
fn gemm_strided_batched_rejects_batches_past_the_buffer() {
    let dev = gpu_or_skip!();
    let a = Tensor::from_host(&dev, &[f16::ONE; 64], &[64]).unwrap();
    let mut c = Tensor::from_host(&dev, &[7.0f32; 64], &[64]).unwrap();
    let s = GemmShape::dense(4, 4, 4, N, N);
    let st = |outer, inner| BatchStrides { outer, inner };
    // 2 x 2 batches of 16 elements at strides (32, 16) need exactly 64: fits.
    let ok = GemmBatch { outer: 2, inner: 2, a: st(32, 16), b: st(32, 16), c: st(32, 16), triangle: Triangle::Full };
    gemm_strided_batched(&dev, &s, &ok, &a.view(), &a.view(), &mut c.view_mut(), Epilogue::default()).unwrap();
    assert_eq!(c.to_host().unwrap(), [4.0; 64]);
    let mut c = Tensor::from_host(&dev, &[7.0f32; 64], &[64]).unwrap();
    // One more element of C's inner stride puts the last batch past the end.
    let bad = GemmBatch { c: st(32, 17), ..ok };
    let e =
        gemm_strided_batched(&dev, &s, &bad, &a.view(), &a.view(), &mut c.view_mut(), Epilogue::default()).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { what: "c", expected: 65, got: 64, .. }), "{e}");
    let bad = GemmBatch { b: st(33, 16), ..ok };
    let e =
        gemm_strided_batched(&dev, &s, &bad, &a.view(), &a.view(), &mut c.view_mut(), Epilogue::default()).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { what: "b", expected: 65, .. }), "{e}");
    // Overflowing strides and counts are errors, not wrap-around.
    let bad = GemmBatch { a: st(usize::MAX / 2, 16), ..ok };
    let e =
        gemm_strided_batched(&dev, &s, &bad, &a.view(), &a.view(), &mut c.view_mut(), Epilogue::default()).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { what: "a", .. }), "{e}");
    let bad = GemmBatch { outer: usize::MAX, inner: 2, ..ok };
    let e =
        gemm_strided_batched(&dev, &s, &bad, &a.view(), &a.view(), &mut c.view_mut(), Epilogue::default()).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { what: "batch", .. }), "{e}");
    let bad = GemmBatch { outer: 65536, inner: 1, a: st(0, 0), b: st(0, 0), c: st(0, 0), triangle: Triangle::Full };
    let e =
        gemm_strided_batched(&dev, &s, &bad, &a.view(), &a.view(), &mut c.view_mut(), Epilogue::default()).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { what: "batch", .. }), "{e}");
    dev.synchronize().unwrap();
    assert_eq!(c.to_host().unwrap(), [7.0; 64], "a rejected batched GEMM must not write");
    // Zero batches: nothing happens.
    let none = GemmBatch { outer: 0, ..ok };
    gemm_strided_batched(&dev, &s, &none, &a.view(), &a.view(), &mut c.view_mut(), Epilogue::default()).unwrap();
    assert_eq!(c.to_host().unwrap(), [7.0; 64]);
}

/// The triangle modes skip work without changing a bit: with T = 200 (two row tiles), a
/// lower-triangular A gives the same C under LowerA (N) and UpperA (A stored lower, used
/// transposed) as under Full; LowerC gives Full's bits in every 128 x 128 tile on or below
/// the diagonal and leaves the tile wholly above it unwritten (its NaN poison stays).
fn triangles<T: Half>(dev: &std::sync::Arc<mixed_precision::Device>, seed: u64) {
    let mut rng = Rng::new(seed);
    let (t, hs, batches) = (200, 24, 2);
    let st = |outer| BatchStrides { outer, inner: 0 };
    let run = |s: &GemmShape, a: &[T], b: &[T], a_stride, b_stride, triangle| {
        let batch =
            GemmBatch { outer: batches, inner: 1, a: st(a_stride), b: st(b_stride), c: st(s.m * s.n), triangle };
        let ad = Tensor::from_host(dev, a, &[a.len()]).unwrap();
        let bd = Tensor::from_host(dev, b, &[b.len()]).unwrap();
        let mut cd = Tensor::from_host(dev, &vec![f32::NAN; batches * s.m * s.n], &[batches * s.m * s.n]).unwrap();
        gemm_strided_batched(dev, s, &batch, &ad.view(), &bd.view(), &mut cd.view_mut(), Epilogue::default()).unwrap();
        cd.to_host().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<u32>>()
    };
    // Lower-triangular t x t matrices (zero where k > i), and t x hs right operands.
    let mut a: Vec<T> = random_half(&mut rng, batches * t * t);
    for (x, v) in a.iter_mut().enumerate() {
        if x % t > (x / t) % t {
            *v = T::from_f32(0.0);
        }
    }
    let b: Vec<T> = random_half(&mut rng, batches * t * hs);
    for (ta, tri) in [(N, Triangle::LowerA), (T, Triangle::UpperA)] {
        let s = GemmShape::dense(t, hs, t, ta, N);
        let full = run(&s, &a, &b, t * t, t * hs, Triangle::Full);
        assert!(full.iter().all(|&x| f32::from_bits(x).is_finite()));
        assert_eq!(run(&s, &a, &b, t * t, t * hs, tri), full, "{} {tri:?}", T::DTYPE);
    }
    // LowerC: S = Q K^T-shaped, t x t output from t x 16 operands.
    let q: Vec<T> = random_half(&mut rng, batches * t * 16);
    let s = GemmShape::dense(t, t, 16, N, T);
    let full = run(&s, &q, &q, t * 16, t * 16, Triangle::Full);
    let lower = run(&s, &q, &q, t * 16, t * 16, Triangle::LowerC);
    for (x, (&l, &f)) in lower.iter().zip(&full).enumerate() {
        let (i, j) = ((x / t) % t, x % t);
        if j / 128 > i / 128 {
            assert!(f32::from_bits(l).is_nan(), "{} LowerC: ({i}, {j}) above the diagonal tiles was written", T::DTYPE);
        } else {
            assert_eq!(l, f, "{} LowerC: ({i}, {j}) differs from Full", T::DTYPE);
        }
    }
}

#[test]
fn gemm_strided_batched_triangles_skip_work_bit_identically_f16() {
    let dev = gpu_or_skip!();
    triangles::<f16>(&dev, 62);
}

#[test]
fn gemm_strided_batched_triangles_skip_work_bit_identically_bf16() {
    let dev = gpu_or_skip!();
    if common::has_bf16_tensor_cores(&dev) {
        triangles::<bf16>(&dev, 63);
    }
}
