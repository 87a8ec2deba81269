//! wmma.mma's arithmetic and its f16-accumulator forms (issue 18).
//!
//! - Every m16n16k16 form with f16 multiplicands (`.dtype.ctype` in {f16, f32}^2, every
//!   layout of A, B, C and D) against an exact host reference, rounded to D's type.
//! - The planted pair: a K = 4096 dot product of positive values, whose error under the
//!   truncating model (`MP_EMU_MMA=trunc`, A100's figures) is a bias that grows with K and
//!   exceeds a round-to-nearest-sized tolerance, while round to nearest stays inside it;
//!   its clean twin checks both against the truncating model's own error bound.

mod common;
use common::*;
use half::f16;
use mp_emu::check::Checks;
use mp_emu::exec::mma::Mma;

/// A small deterministic generator (the tests need reproducible data, not quality).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn frag(p: &str, n: usize) -> String {
    (0..n).map(|i| format!("%{p}{i}")).collect::<Vec<_>>().join(", ")
}

fn regs(ty: &str) -> usize {
    if ty == "f16" {
        4
    } else {
        8
    }
}

/// One warp: D = A B + C with A and B (f16), C (`ct`) loaded from global memory in the
/// layouts given (leading dimension 16), D (`dt`) stored to global memory in layout `ld`.
fn form_ptx(la: &str, lb: &str, lc: &str, ld: &str, dt: &str, ct: &str) -> String {
    let (fa, fb, fc, fd) = (frag("ra", 8), frag("rb", 8), frag("rc", regs(ct)), frag("rd", regs(dt)));
    let reg_ty = |t: &str| if t == "f16" { "b32" } else { "f32" };
    format!(
        "{HEADER}
.visible .entry mma_form(
\t.param .u64 p0,
\t.param .u64 p1,
\t.param .u64 p2,
\t.param .u64 p3
)
{{
\t.reg .b32 \t%ra<8>;
\t.reg .b32 \t%rb<8>;
\t.reg .{ctr} \t%rc<8>;
\t.reg .{dtr} \t%rd<8>;
\t.reg .b32 \t%r<2>;
\t.reg .b64 \t%q<9>;

\tld.param.u64 \t%q1, [p0];
\tld.param.u64 \t%q2, [p1];
\tld.param.u64 \t%q3, [p2];
\tld.param.u64 \t%q4, [p3];
\tcvta.to.global.u64 \t%q5, %q1;
\tcvta.to.global.u64 \t%q6, %q2;
\tcvta.to.global.u64 \t%q7, %q3;
\tcvta.to.global.u64 \t%q8, %q4;
\tmov.u32 \t%r1, 16;
\twmma.load.a.sync.aligned.{la}.m16n16k16.global.f16 \t{{{fa}}}, [%q5], %r1;
\twmma.load.b.sync.aligned.{lb}.m16n16k16.global.f16 \t{{{fb}}}, [%q6], %r1;
\twmma.load.c.sync.aligned.{lc}.m16n16k16.global.{ct} \t{{{fc}}}, [%q7], %r1;
\twmma.mma.sync.aligned.{la}.{lb}.m16n16k16.{dt}.{ct} \t{{{fd}}}, {{{fa}}}, {{{fb}}}, {{{fc}}};
\twmma.store.d.sync.aligned.{ld}.m16n16k16.global.{dt} \t[%q8], {{{fd}}}, %r1;
\tret;
}}
",
        ctr = reg_ty(ct),
        dtr = reg_ty(dt),
    )
}

/// A 16 x 16 matrix (`mat[i * 16 + j]`) laid out row- or column-major.
fn lay<T: Copy>(mat: &[T], layout: &str) -> Vec<T> {
    (0..256).map(|at| if layout == "row" { mat[at] } else { mat[(at % 16) * 16 + at / 16] }).collect()
}

/// Every f16-multiplicand form, under both models. The inputs: A and B small integers,
/// C an f16 value with a fraction, so that the exact sum (below 2^12 in magnitude, a
/// multiple of 2^-1, exact in f32) often needs rounding to f16 (ulp 1 from 1024, 2 from
/// 2048). rn gives the exact sum rounded once to D's type (its f32 accumulator is exact);
/// trunc drops no bit at alignment (no term has bits below its grid) and rounds to D's
/// type after each group of k, the group's result being the next group's accumulator.
#[test]
fn every_f16_form_against_an_exact_reference() {
    let mut g = Lcg(7);
    let a: Vec<f32> = (0..256).map(|_| (g.next() * 17.0).floor() as f32 - 8.0).collect();
    let b: Vec<f32> = (0..256).map(|_| (g.next() * 17.0).floor() as f32 - 8.0).collect();
    // C: +-(512..1024) plus a multiple of 0.5, exact in f16 (ulp 0.5 there).
    let c: Vec<f32> = (0..256)
        .map(|i| {
            let v = 512.0 + (g.next() * 1024.0).floor() as f32 * 0.5;
            if i % 2 == 0 {
                v
            } else {
                -v
            }
        })
        .collect();
    // The exact partial sums at each k, from c.
    let partial = |e: usize, upto: usize| {
        let (m, n) = (e / 16, e % 16);
        c[e] as f64 + (0..upto).map(|k| a[m * 16 + k] as f64 * b[k * 16 + n] as f64).sum::<f64>()
    };
    let exact: Vec<f64> = (0..256).map(|e| partial(e, 16)).collect();
    // D under `mma` for D of type `dt`: rounded once (rn), or after each group (trunc).
    let round = |x: f64, dt: &str| if dt == "f16" { f16::from_f64(x).to_f64() } else { x as f32 as f64 };
    let reference = |e: usize, mma: Mma, dt: &str| match mma {
        Mma::Rn => round(exact[e], dt),
        Mma::Trunc { group, .. } => {
            let (m, n) = (e / 16, e % 16);
            (0..16).step_by(group).fold(c[e] as f64, |acc, k0| {
                round(acc + (k0..k0 + group).map(|k| a[m * 16 + k] as f64 * b[k * 16 + n] as f64).sum::<f64>(), dt)
            })
        }
    };
    let h = |v: &[f32]| v.iter().map(|&x| f16::from_f32(x).to_bits()).collect::<Vec<u16>>();
    let mut rounded_away = 0;
    for dt in ["f16", "f32"] {
        for ct in ["f16", "f32"] {
            for la in ["row", "col"] {
                for lb in ["row", "col"] {
                    for (lc, ld) in [("row", "row"), ("row", "col"), ("col", "row"), ("col", "col")] {
                        for mma in [Mma::Rn, Mma::trunc_for((8, 0))] {
                            let what = format!("{dt}.{ct} a {la} b {lb} c {lc} d {ld} {mma:?}");
                            let mut r = Rig::new(&form_ptx(la, lb, lc, ld, dt, ct));
                            let pa = r.upload(&lay(&h(&a), la));
                            let pb = r.upload(&lay(&h(&b), lb));
                            let pc = if ct == "f16" { r.upload(&lay(&h(&c), lc)) } else { r.upload(&lay(&c, lc)) };
                            let pd = r.upload(&[u32::MAX; 256]); // NaN in f32 and in both f16 halves
                            let args = [b64(pa), b64(pb), b64(pc), b64(pd)];
                            let args: Vec<&[u8]> = args.iter().map(|x| &x[..]).collect();
                            r.launch_mma("mma_form", [1, 1, 1], [32, 1, 1], 0, &args, Checks::ALL, mma)
                                .unwrap_or_else(|e| panic!("{what}: {}", e.report));
                            let got: Vec<f32> = if dt == "f16" {
                                r.download::<u16>(pd, 256).iter().map(|&x| f16::from_bits(x).to_f32()).collect()
                            } else {
                                r.download::<f32>(pd, 256)
                            };
                            let got = lay(&got, ld); // column-major to row-major is its own inverse
                            for (e, &x) in exact.iter().enumerate() {
                                let want = reference(e, mma, dt) as f32;
                                assert_eq!(got[e], want, "{what}: D[{}][{}] (exact {x})", e / 16, e % 16);
                                rounded_away += (want as f64 != x) as usize;
                            }
                        }
                    }
                }
            }
        }
    }
    // The f16 forms did round: the reference was not exact everywhere.
    assert!(rounded_away > 0);
}

/// One warp: D (16 x 16, f32, row-major) = A (16 x K, row-major) B (K x 16, row-major),
/// one wmma.mma per 16 of K with the accumulator carried in registers.
fn long_k_ptx() -> String {
    let (fa, fb, fc) = (frag("ra", 8), frag("rb", 8), frag("fc", 8));
    let zero: String = (0..8).map(|i| format!("\tmov.f32 \t%fc{i}, 0f00000000;\n")).collect();
    format!(
        "{HEADER}
.visible .entry long_k(
\t.param .u64 p0,
\t.param .u64 p1,
\t.param .u64 p2,
\t.param .u32 p3
)
{{
\t.reg .pred \t%p<2>;
\t.reg .b32 \t%ra<8>;
\t.reg .b32 \t%rb<8>;
\t.reg .f32 \t%fc<8>;
\t.reg .b32 \t%r<4>;
\t.reg .b64 \t%q<7>;

\tld.param.u64 \t%q1, [p0];
\tld.param.u64 \t%q2, [p1];
\tld.param.u64 \t%q3, [p2];
\tld.param.u32 \t%r3, [p3];
\tcvta.to.global.u64 \t%q4, %q1;
\tcvta.to.global.u64 \t%q5, %q2;
\tcvta.to.global.u64 \t%q6, %q3;
\tmov.u32 \t%r1, 16;
\tmov.u32 \t%r2, 0;
{zero}$L_k:
\twmma.load.a.sync.aligned.row.m16n16k16.global.f16 \t{{{fa}}}, [%q4], %r3;
\twmma.load.b.sync.aligned.row.m16n16k16.global.f16 \t{{{fb}}}, [%q5], %r1;
\twmma.mma.sync.aligned.row.row.m16n16k16.f32.f32 \t{{{fc}}}, {{{fa}}}, {{{fb}}}, {{{fc}}};
\tadd.s64 \t%q4, %q4, 32;
\tadd.s64 \t%q5, %q5, 512;
\tadd.s32 \t%r2, %r2, 16;
\tsetp.lt.u32 \t%p1, %r2, %r3;
\t@%p1 bra \t$L_k;
\twmma.store.d.sync.aligned.row.m16n16k16.global.f32 \t[%q6], {{{fc}}}, %r1;
\tret;
}}
"
    )
}

const K: usize = 4096;

/// The largest relative error of D over the tile for A and B of positive values in
/// [0.5, 1) (f16), against the exact f64 sum of the same f16 values, under `mma`.
fn long_k_error(mma: Mma) -> f64 {
    let mut g = Lcg(42);
    let a: Vec<u16> = (0..16 * K).map(|_| f16::from_f64(0.5 + 0.5 * g.next()).to_bits()).collect();
    let b: Vec<u16> = (0..K * 16).map(|_| f16::from_f64(0.5 + 0.5 * g.next()).to_bits()).collect();
    let v = |x: u16| f16::from_bits(x).to_f64();
    let mut r = Rig::new(&long_k_ptx());
    let (pa, pb, pd) = (r.upload(&a), r.upload(&b), r.upload(&[f32::NAN; 256]));
    r.launch_mma(
        "long_k",
        [1, 1, 1],
        [32, 1, 1],
        0,
        &[&b64(pa), &b64(pb), &b64(pd), &(K as u32).to_le_bytes()],
        Checks::ALL,
        mma,
    )
    .unwrap_or_else(|e| panic!("{mma:?}: {}", e.report));
    let d: Vec<f32> = r.download(pd, 256);
    let mut worst = 0f64;
    for m in 0..16 {
        for n in 0..16 {
            let exact: f64 = (0..K).map(|k| v(a[m * K + k]) * v(b[k * 16 + n])).sum();
            worst = worst.max((d[m * 16 + n] as f64 - exact).abs() / exact);
        }
    }
    worst
}

/// A round-to-nearest-sized tolerance: the probabilistic bound of Higham and Mary
/// ("A new approach to probabilistic rounding error analysis", 2019), a small multiple of
/// sqrt(K) u with u = 2^-24, which rounding errors of random sign stay within.
fn rn_tolerance() -> f64 {
    4.0 * (K as f64).sqrt() * 2f64.powi(-24)
}

/// The truncating model's worst case for positive terms, relative to the sum: every
/// product loses less than one unit of its group's grid, 2^-(23 + extra) of the largest
/// term, which is at most the partial sum, and each group's normalization loses less than
/// one f32 ulp, 2^-23 of it. Round to nearest's own worst case, K u, is below it.
fn trunc_bound(group: usize, extra: i32) -> f64 {
    K as f64 * 2f64.powi(-23 - extra) + (K / group) as f64 * 2f64.powi(-23)
}

/// Planted: the tolerance that round to nearest meets is broken by the truncating model
/// at this K (its error is a bias toward zero, K / group groups of it), so a test tuned on
/// rn alone would fail on a GPU. Both halves are asserted.
#[test]
fn long_k_dot_breaks_a_round_to_nearest_tolerance_under_trunc() {
    let (rn, trunc) = (long_k_error(Mma::Rn), long_k_error(Mma::trunc_for((8, 0))));
    let tol = rn_tolerance();
    assert!(rn <= tol, "rn: relative error {rn:e} over {tol:e}");
    assert!(trunc > tol, "trunc: relative error {trunc:e} within the rn-sized {tol:e}: no truncation bias seen");
}

/// The clean twin: with the truncating model's bound as the tolerance, both models pass
/// at every capability's figures.
#[test]
fn long_k_dot_within_the_truncating_bound() {
    for cc in [(7, 5), (8, 0), (9, 0)] {
        let Mma::Trunc { group, extra } = Mma::trunc_for(cc) else { unreachable!() };
        let tol = trunc_bound(group, extra);
        let (rn, trunc) = (long_k_error(Mma::Rn), long_k_error(Mma::trunc_for(cc)));
        assert!(rn <= tol, "{cc:?} rn: relative error {rn:e} over {tol:e}");
        assert!(trunc <= tol, "{cc:?} trunc: relative error {trunc:e} over {tol:e}");
        eprintln!("cc {cc:?}: rn {rn:e}, trunc {trunc:e}, bound {tol:e}");
    }
}
