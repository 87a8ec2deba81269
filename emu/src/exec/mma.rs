//! How `wmma.mma` adds (`MP_EMU_MMA`): the arithmetic of one element of D = A B + C,
//! `d = c + a[0] b[0] + ... + a[15] b[15]`.
//!
//! - `rn` (default): each product exact, added to the accumulator one at a time in k
//!   order, each addition rounded to nearest even in f32. This is what a CPU reference
//!   computes, so tests pass or fail on the kernel's logic rather than on the hardware's
//!   arithmetic.
//! - `trunc`: the tensor cores' arithmetic as Fasi, Higham, Mikaitis and Pranesh measured
//!   it ("Numerical behavior of NVIDIA tensor cores", PeerJ Computer Science 7:e330,
//!   2021: V100, T4, A100) and Khattak and Mikaitis refined it into bit-accurate models
//!   ("Accurate models of NVIDIA tensor cores", arXiv:2512.07004, 2025, with its MATLAB
//!   models in north-numerical-computing/MATLAB-tensor-core, `models/V100TC.m`,
//!   `A100TC.m`, `A2TC.m`, `L40STC.m`, `H100TC.m` and `tools/Generic_BFMA_TC.m`). The k
//!   products are added in groups of `group` (a block FMA): within a group, every product
//!   is exact, each term (the products and the accumulator) is aligned to the largest
//!   exponent among them and its bits below `24 + extra` bits of that exponent are
//!   dropped (truncation, toward zero in magnitude), the aligned terms are added
//!   exactly, and the sum is normalized to f32 with truncation (round toward zero). The
//!   group's result, rounded to D's type, is the next group's accumulator (the models'
//!   recursive accumulation, `c = d` per block in `tools/GEMM.m`). A product's exponent is the sum of
//!   its factors' exponents (its significand lies in [1, 4): the models keep the carry
//!   bit of a product at or above 2, `fpbits_IEEE2` in `Generic_BFMA_TC.m`). An f16
//!   result is rounded to nearest even from the exact aligned sum instead (the models'
//!   `frmode = 'rne'` for an fp16 output).
//!
//! The per-architecture figures, for f16 and bf16 multiplicands (the models use the same
//! for both on these parts):
//!
//! | capability | part the model is of | group | extra bits |
//! |---|---|---|---|
//! | sm_7x | V100 (Fasi et al.: T4 behaves as V100) | 4 | 0 |
//! | sm_8x | A100; A2 (sm_86) and L40S (sm_89) use the A100 model | 8 | 1 |
//! | sm_9x | H100 | 16 | 2 |
//!
//! What the model cannot show: the order the hardware takes the 16 k-products in beyond
//! "groups in k order", non-finite operands (taken the `rn` way: an inf or NaN anywhere
//! gives what IEEE arithmetic gives), and any behaviour the papers did not test. A real
//! GPU remains the authority on the last bits; the model shows the size and the
//! direction (toward zero, growing with K / group) of the error a long K accumulates.

use crate::setting::Setting;

/// Which arithmetic `wmma.mma` uses (process-wide; [`MmaMode::current`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmaMode {
    Rn,
    Trunc,
}

/// In [`MmaMode`]'s order.
static MODE: Setting = Setting::new("MP_EMU_MMA", &["rn", "trunc"]);
const MODES: [MmaMode; 2] = [MmaMode::Rn, MmaMode::Trunc];

impl MmaMode {
    /// Parses `MP_EMU_MMA`'s value.
    pub fn parse(v: &str) -> Option<MmaMode> {
        MODE.parse(v).map(|i| MODES[i as usize])
    }

    /// The mode of this process: the last [`set_mma_mode`], else `MP_EMU_MMA`
    /// (crate::setting).
    pub fn current() -> MmaMode {
        MODES[MODE.get() as usize]
    }
}

/// Sets the mode of every later launch through the driver in this process (tests; the
/// environment variable is the way in for programs).
pub fn set_mma_mode(mode: MmaMode) {
    MODE.set(mode as u8);
}

/// The arithmetic of one launch's `wmma.mma`: a mode resolved for the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mma {
    /// Round to nearest even after each product, in k order.
    Rn,
    /// Block FMA of `group` products with `extra` alignment bits beyond f32's 24, then
    /// truncation (see the module docs).
    Trunc { group: usize, extra: i32 },
}

impl Mma {
    /// The truncating model of a device of compute capability `cc` (table in the module
    /// docs; a capability above 9.x has no published figure and takes H100's).
    pub fn trunc_for(cc: (u32, u32)) -> Mma {
        match cc.0 {
            0..=7 => Mma::Trunc { group: 4, extra: 0 },
            8 => Mma::Trunc { group: 8, extra: 1 },
            _ => Mma::Trunc { group: 16, extra: 2 },
        }
    }

    /// `mode` on a device of capability `cc`.
    pub fn new(mode: MmaMode, cc: (u32, u32)) -> Mma {
        match mode {
            MmaMode::Rn => Mma::Rn,
            MmaMode::Trunc => Mma::trunc_for(cc),
        }
    }
}

/// The output type of D.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Out {
    F32,
    F16,
}

/// `2^e` as an f64 (exact for `e` within f64's normal exponents, as every value used is;
/// trunc_tile also computes it, unused, for the far-off exponent of a group of zeros).
#[inline(always)]
fn pow2(e: i32) -> f64 {
    f64::from_bits((e.wrapping_add(1023) as u64) << 52)
}

/// floor(log2 |x|) of a nonzero finite f64 that is normal in f64 (every f16, bf16 and f32
/// value, and their products, is).
#[inline(always)]
fn exponent(x: f64) -> i32 {
    ((x.to_bits() >> 52) & 0x7ff) as i32 - 1023
}

/// The exponent the alignment uses for an input of the multiplicand format: its own,
/// clamped at the format's smallest normal exponent (a subnormal's significand is then
/// below 1, as the models' `max(a_exp, emin_input)`).
#[inline(always)]
fn input_exponent(x: f32, emin: i32) -> i32 {
    exponent(x as f64).max(emin)
}

/// Rounds toward zero to f32; an overflow gives infinity (as the models' encoding of an
/// all-ones exponent does).
#[inline(always)]
fn f32_rz(x: f64) -> f32 {
    let f = x as f32;
    if f.is_infinite() || f == 0.0 || (f.abs() as f64) <= x.abs() {
        return f;
    }
    f32::from_bits(f.to_bits() - 1)
}

/// One block FMA: `c + sum a[i] b[i]` over one group, as the truncating model computes it,
/// rounded to `out`. `emin` is the multiplicand format's smallest normal exponent.
fn block_fma(a: &[f32], b: &[f32], c: f32, extra: i32, emin: i32, out: Out) -> f32 {
    // The alignment point: the largest exponent among the nonzero terms, a product's being
    // the sum of its factors' exponents.
    let mut top: Option<i32> = (c != 0.0).then(|| exponent(c as f64).max(-126));
    for (&x, &y) in a.iter().zip(b) {
        if x != 0.0 && y != 0.0 {
            let e = input_exponent(x, emin) + input_exponent(y, emin);
            top = Some(top.map_or(e, |t| t.max(e)));
        }
    }
    let Some(top) = top else {
        // Every term is zero: the sum of exact zeros, signed as IEEE addition signs it.
        return a.iter().zip(b).fold(c, |s, (&x, &y)| s + x * y);
    };
    // Each term is kept to a multiple of 2^(top - 23 - extra), dropping (truncating) the
    // bits below. The products are exact in f64 (at most 22 significant bits) and so are
    // the quotients by a power of two and their integer parts; the sum of at most 17
    // integers below 2^28 is exact too.
    let grid = pow2(top - 23 - extra);
    let keep = |t: f64| (t / grid).trunc();
    let mut sum = keep(c as f64);
    for (&x, &y) in a.iter().zip(b) {
        sum += keep(x as f64 * y as f64);
    }
    let exact = sum * grid;
    match out {
        Out::F32 => f32_rz(exact),
        Out::F16 => half::f16::from_f64(exact).to_f32(),
    }
}

/// One element of D: `c + a[0] b[0] + ... + a[k-1] b[k-1]` (a: a row of A, b: a column of
/// B, as their exact f32 values), as `mma` adds them, rounded to `out`. `emin` is the
/// multiplicand format's smallest normal exponent (-14 for f16, -126 for bf16).
pub fn dot(mma: Mma, a: &[f32], b: &[f32], c: f32, emin: i32, out: Out) -> f32 {
    let finite = c.is_finite() && a.iter().chain(b).all(|x| x.is_finite());
    match mma {
        Mma::Trunc { group, extra } if finite => {
            let mut acc = c;
            for (ga, gb) in a.chunks(group).zip(b.chunks(group)) {
                acc = block_fma(ga, gb, acc, extra, emin, out);
            }
            acc
        }
        // Round to nearest in k order, the arithmetic of exec/warp.rs's mma_accumulate
        // (whose comment says why the f64 step rounds correctly) for one element; also
        // taken by non-finite operands. An f16 D is the f32 accumulator rounded to
        // nearest even.
        _ => {
            let mut acc = c;
            for (&x, &y) in a.iter().zip(b) {
                acc = (acc as f64 + x as f64 * y as f64) as f32;
            }
            match out {
                Out::F32 => acc,
                Out::F16 => half::f16::from_f32(acc).to_f32(),
            }
        }
    }
}

/// `trunc(q)` for |q| < 2^51 (the sign of a zero result aside), in arithmetic that
/// vectorizes: round to nearest by adding and subtracting 1.5 * 2^52, then one step back
/// toward zero where that went past q.
#[inline(always)]
fn trunc_small(q: f64) -> f64 {
    const SHIFT: f64 = 6_755_399_441_055_744.0;
    let r = (q + SHIFT) - SHIFT;
    if r.abs() > q.abs() {
        r - 1f64.copysign(q)
    } else {
        r
    }
}

/// An exponent far below every real one, for a zero input: a product with a zero factor
/// (whose exponent sums to below `ZERO_EXP / 2`) then never sets the alignment point, as
/// [`block_fma`] skips it.
const ZERO_EXP: i32 = -100_000;

/// `d = a b + d` for a whole 16 x 16 x 16 tile under `Mma::Trunc { group, extra }`
/// (row-major `a[m][k]`, `b[k][n]`, `d[m][n]`, as their exact f32 values): every element
/// exactly what [`dot`] gives for its row and column (a unit test holds the two to the
/// same bits), in a fraction of the time. Each input's alignment exponent and f64 value
/// are found once per tile instead of once per product, each element's finiteness once,
/// and the truncation is [`trunc_small`] (`f64::trunc` is a library call on x86-64
/// without SSE4.1, and a conversion to an integer does not vectorize): a term scaled to
/// its grid is below 2^(25 + extra) in magnitude, and the sum of at most 17 such integers
/// is exact in f64. The sign of a zero term may differ from `f64::trunc`'s, which never
/// shows: the term at the alignment point keeps at least 2^23 units, so a group's sum is
/// either nonzero or an exact cancellation, +0 either way (a group of only zero terms
/// takes the all-zero path).
///
/// On an x86-64 host with AVX2 (detected at run time) the same code is compiled for it:
/// four f64 lanes instead of two, the i32 maxima vectorized, and the truncation one
/// `roundpd` (`f64::trunc`); the model's results are the same bits either way (the unit
/// test runs both). The tile model was half of the time of the test passes that run it.
pub fn trunc_tile(group: usize, extra: i32, a: &[f32; 256], b: &[f32; 256], d: &mut [f32; 256], emin: i32, out: Out) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the host CPU has AVX2 (checked just above), the one requirement
        // trunc_tile_avx2 places on its caller.
        return unsafe { trunc_tile_avx2(group, extra, a, b, d, emin, out) };
    }
    trunc_tile_in::<false>(group, extra, a, b, d, emin, out)
}

/// [`trunc_tile`] compiled for AVX2.
///
/// # Safety
/// The CPU running it must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn trunc_tile_avx2(
    group: usize,
    extra: i32,
    a: &[f32; 256],
    b: &[f32; 256],
    d: &mut [f32; 256],
    emin: i32,
    out: Out,
) {
    trunc_tile_in::<true>(group, extra, a, b, d, emin, out)
}

/// [`trunc_tile`]'s body; `HW`: the host rounds toward zero in one instruction (inlined
/// into a function compiled for AVX2), else [`trunc_small`].
#[inline(always)]
fn trunc_tile_in<const HW: bool>(
    group: usize,
    extra: i32,
    a: &[f32; 256],
    b: &[f32; 256],
    d: &mut [f32; 256],
    emin: i32,
    out: Out,
) {
    let trunc = |q: f64| if HW { q.trunc() } else { trunc_small(q) };
    let exp = |x: f32| if x == 0.0 { ZERO_EXP } else { input_exponent(x, emin) };
    let (ea, eb) =
        (a.map(|x| if x.is_finite() { exp(x) } else { 0 }), b.map(|x| if x.is_finite() { exp(x) } else { 0 }));
    let (a64, b64) = (a.map(f64::from), b.map(f64::from));
    let row_finite: [bool; 16] = std::array::from_fn(|m| a[16 * m..16 * m + 16].iter().all(|x| x.is_finite()));
    let col_finite: [bool; 16] = std::array::from_fn(|n| (0..16).all(|k| b[16 * k + n].is_finite()));
    // A row of D at a time, the n loops innermost over arrays of 16 so that they
    // vectorize; an element whose group has only zero terms, or whose operands are not
    // all finite, is then redone the scalar way.
    for m in 0..16 {
        let c: [f32; 16] = std::array::from_fn(|n| d[16 * m + n]);
        let mut acc = c;
        for g in (0..16).step_by(group) {
            let mut top: [i32; 16] =
                std::array::from_fn(|n| if acc[n] != 0.0 { exponent(acc[n] as f64).max(-126) } else { ZERO_EXP });
            for k in g..g + group {
                let (x, row) = (ea[16 * m + k], &eb[16 * k..16 * k + 16]);
                top.iter_mut().zip(row).for_each(|(t, &y)| *t = (*t).max(x + y));
            }
            let scale: [f64; 16] = std::array::from_fn(|n| pow2(23 + extra - top[n]));
            let mut sum: [f64; 16] = std::array::from_fn(|n| trunc(acc[n] as f64 * scale[n]));
            for k in g..g + group {
                let (x, row) = (a64[16 * m + k], &b64[16 * k..16 * k + 16]);
                for n in 0..16 {
                    sum[n] += trunc(x * row[n] * scale[n]);
                }
            }
            for n in 0..16 {
                acc[n] = if top[n] < ZERO_EXP / 2 {
                    // Every term is zero: as block_fma, the IEEE sum of the zeros.
                    (g..g + group).fold(acc[n], |s, k| s + a[16 * m + k] * b[16 * k + n])
                } else {
                    let exact = sum[n] * pow2(top[n] - 23 - extra);
                    match out {
                        Out::F32 => f32_rz(exact),
                        Out::F16 => half::f16::from_f64(exact).to_f32(),
                    }
                };
            }
        }
        for n in 0..16 {
            if !(row_finite[m] && col_finite[n] && c[n].is_finite()) {
                let col: [f32; 16] = std::array::from_fn(|k| b[16 * k + n]);
                acc[n] = dot(Mma::Trunc { group, extra }, &a[16 * m..16 * m + 16], &col, c[n], emin, out);
            }
        }
        d[16 * m..16 * m + 16].copy_from_slice(&acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V100: Mma = Mma::Trunc { group: 4, extra: 0 };
    const A100: Mma = Mma::Trunc { group: 8, extra: 1 };
    const H100: Mma = Mma::Trunc { group: 16, extra: 2 };
    const F16_EMIN: i32 = -14;

    fn p2(e: i32) -> f32 {
        pow2(e) as f32
    }

    #[test]
    fn capabilities_map_to_the_published_parts() {
        assert_eq!(Mma::trunc_for((7, 5)), V100);
        assert_eq!(Mma::trunc_for((8, 0)), A100);
        assert_eq!(Mma::trunc_for((8, 6)), A100);
        assert_eq!(Mma::trunc_for((8, 9)), A100);
        assert_eq!(Mma::trunc_for((9, 0)), H100);
        assert_eq!(Mma::new(MmaMode::Rn, (9, 0)), Mma::Rn);
    }

    /// The papers' rounding experiment: c = 1 plus one product of 3 2^-25 (0.75 of an f32
    /// ulp of 1). Round to nearest gives 1 + 2^-23; every tensor core gives 1: V100 drops
    /// the product at alignment, A100 and H100 keep 2^-24 of it and drop that at the
    /// normalization, which truncates.
    #[test]
    fn truncation_not_round_to_nearest() {
        let (a, b) = ([1.5 * p2(-12)], [p2(-12)]);
        assert_eq!(dot(Mma::Rn, &a, &b, 1.0, F16_EMIN, Out::F32), 1.0 + p2(-23));
        for m in [V100, A100, H100] {
            assert_eq!(dot(m, &a, &b, 1.0, F16_EMIN, Out::F32), 1.0, "{m:?}");
        }
        // Negative terms truncate toward zero too: -1 - 0.75 ulp gives -1.
        assert_eq!(dot(A100, &a, &b.map(|x| -x), -1.0, F16_EMIN, Out::F32), -1.0);
    }

    /// The alignment width: c = 1 with products below the last bit of c. Two products of
    /// 2^-24 sum to one ulp: V100 (no extra bit) drops both; A100 keeps them. Four
    /// products of 2^-25 also sum to one ulp: A100 (one extra bit) drops them, H100
    /// (two) keeps them.
    #[test]
    fn extra_alignment_bits_per_part() {
        let two = ([p2(-12); 2], [p2(-12); 2]);
        assert_eq!(dot(V100, &two.0, &two.1, 1.0, F16_EMIN, Out::F32), 1.0);
        assert_eq!(dot(A100, &two.0, &two.1, 1.0, F16_EMIN, Out::F32), 1.0 + p2(-23));
        assert_eq!(dot(H100, &two.0, &two.1, 1.0, F16_EMIN, Out::F32), 1.0 + p2(-23));
        let four = ([p2(-12); 4], [p2(-13); 4]);
        assert_eq!(dot(A100, &four.0, &four.1, 1.0, F16_EMIN, Out::F32), 1.0);
        assert_eq!(dot(H100, &four.0, &four.1, 1.0, F16_EMIN, Out::F32), 1.0 + p2(-23));
        // Round to nearest, one product at a time, loses each quarter ulp as it comes.
        assert_eq!(dot(Mma::Rn, &four.0, &four.1, 1.0, F16_EMIN, Out::F32), 1.0);
    }

    /// The block size: fifteen products of 2^-25 then one of 1, c = 0. The small ones add
    /// exactly among themselves; those in the group of the 1 are dropped. V100 (groups of
    /// 4): 12 kept, 1 + 3 2^-23. A100 (8): 8 kept, 1 + 2^-22. H100 (16): all 15 kept, then
    /// the normalization truncates 1 + 15 2^-25 to 1 + 3 2^-23. Round to nearest: 1 + 4
    /// 2^-23 (15/4 ulp rounds up).
    #[test]
    fn block_size_per_part() {
        let mut a = [p2(-12); 16];
        let mut b = [p2(-13); 16];
        (a[15], b[15]) = (1.0, 1.0);
        let d = |m| dot(m, &a, &b, 0.0, F16_EMIN, Out::F32);
        assert_eq!(d(V100), 1.0 + 3.0 * p2(-23));
        assert_eq!(d(A100), 1.0 + p2(-22));
        assert_eq!(d(H100), 1.0 + 3.0 * p2(-23));
        assert_eq!(d(Mma::Rn), 1.0 + 4.0 * p2(-23));
    }

    /// A product at or above 2 keeps its carry bit: 1.5 * 1.5 = 2.25 is aligned at
    /// exponent 0 (the sum of its factors'), not 1, so A100's grid is 2^-24 and c = 3
    /// 2^-24 survives whole when the two products cancel. Aligned at the normalized
    /// exponent 1 the grid would be 2^-23 and the result 2^-23.
    #[test]
    fn product_carry_bit() {
        let d = dot(A100, &[1.5, 1.5], &[1.5, -1.5], 3.0 * p2(-24), F16_EMIN, Out::F32);
        assert_eq!(d, 3.0 * p2(-24));
        // Without the cancellation the normalization to f32 (ulp 2^-22 at 2.25) drops it.
        let d = dot(A100, &[1.5], &[1.5], 3.0 * p2(-24), F16_EMIN, Out::F32);
        assert_eq!(d, 2.25);
    }

    /// f16 D rounds the exact aligned sum to nearest even: 1 + 2^-11 (half an f16 ulp) is
    /// a tie and goes to 1; 1 + 2^-11 + 2^-13 goes up to 1 + 2^-10.
    #[test]
    fn f16_output_rounds_to_nearest() {
        let d = dot(A100, &[p2(-6)], &[p2(-5)], 1.0, F16_EMIN, Out::F16);
        assert_eq!(d, 1.0);
        let d = dot(A100, &[p2(-6), p2(-7)], &[p2(-5), p2(-6)], 1.0, F16_EMIN, Out::F16);
        assert_eq!(d, 1.0 + p2(-10));
    }

    /// Subnormal f16 inputs: exponent clamped at -14, the product 2^-24 * 2^-24 = 2^-48 is
    /// aligned at -28 and kept exactly when it is the only term.
    #[test]
    fn subnormal_inputs() {
        let d = dot(H100, &[p2(-24)], &[p2(-24)], 0.0, F16_EMIN, Out::F32);
        assert_eq!(d, p2(-48));
    }

    #[test]
    fn non_finite_operands_follow_ieee() {
        assert!(dot(A100, &[f32::INFINITY, 1.0], &[0.0, 1.0], 0.0, F16_EMIN, Out::F32).is_nan());
        assert_eq!(dot(A100, &[f32::INFINITY], &[1.0], 1.0, F16_EMIN, Out::F32), f32::INFINITY);
    }

    /// Where every partial sum is exactly representable (small integers times a power of
    /// two), no bit is dropped and no rounding happens: rn and trunc agree on every part,
    /// for f32 and f16 outputs.
    #[test]
    fn rn_and_trunc_agree_on_exact_sums() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) % n) as i64
        };
        for case in 0..2000 {
            let scale = p2(next(16) as i32 - 10);
            let a: Vec<f32> = (0..16).map(|_| (next(17) - 8) as f32 * scale).collect();
            let b: Vec<f32> = (0..16).map(|_| (next(17) - 8) as f32).collect();
            let c = (next(2001) - 1000) as f32 * scale;
            // |sum| <= 1000 + 16 * 64 = 2024 units of `scale` (at most 2^5): 11 bits, exact and
            // finite in f16 too.
            for out in [Out::F32, Out::F16] {
                let want = dot(Mma::Rn, &a, &b, c, F16_EMIN, out);
                for m in [V100, A100, H100] {
                    assert_eq!(dot(m, &a, &b, c, F16_EMIN, out), want, "case {case} {m:?} {out:?}");
                }
            }
        }
    }

    /// trunc_tile gives every element the bits dot gives for its row and column: random
    /// tiles of f16 and bf16 values (random bit patterns: zeros of both signs, subnormals,
    /// the largest values, some infinities and NaNs) and of small integers (whose sums
    /// cancel to zeros of either sign), with accumulators of every kind, on every part,
    /// for f32 and f16 outputs.
    #[test]
    fn trunc_tile_matches_dot_per_element() {
        let mut next = crate::exec::xorshift(0x9e37_79b9_7f4a_7c15u64);
        let same = |x: f32, y: f32| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan());
        for case in 0..600 {
            let bf16 = case % 2 == 1;
            let emin = if bf16 { -126 } else { F16_EMIN };
            let kind = (case / 2) % 3;
            let value = |r: u64| -> f32 {
                match kind {
                    // Random bits, infinities and NaNs once in a while.
                    0 | 1 => {
                        let bits = (r >> 8) as u16;
                        let v = if bf16 {
                            f32::from_bits((bits as u32) << 16)
                        } else {
                            half::f16::from_bits(bits).to_f32()
                        };
                        if v.is_finite() || kind == 0 && r % 64 == 0 {
                            v
                        } else {
                            0.0
                        }
                    }
                    // Small integers times one power of two: exact sums, frequent cancellation.
                    _ => ((r % 7) as f32 - 3.0) * p2(-3) * if r & 1 << 40 != 0 { -1.0 } else { 1.0 },
                }
            };
            let a: [f32; 256] = std::array::from_fn(|_| value(next()));
            let b: [f32; 256] = std::array::from_fn(|_| value(next()));
            let c: [f32; 256] = std::array::from_fn(|i| match next() % 6 {
                0 => 0.0,
                1 => -0.0,
                2 => f32::from_bits(next() as u32 & 0x807f_ffff), // subnormal
                3 if i % 50 == 0 => f32::INFINITY,
                _ => value(next()),
            });
            for part in [V100, A100, H100] {
                let Mma::Trunc { group, extra } = part else { unreachable!() };
                for out in [Out::F32, Out::F16] {
                    // The dispatched path (AVX2 where the host has it) and the portable one.
                    let mut d = c;
                    trunc_tile(group, extra, &a, &b, &mut d, emin, out);
                    let mut portable = c;
                    trunc_tile_in::<false>(group, extra, &a, &b, &mut portable, emin, out);
                    for (k, (&x, &y)) in d.iter().zip(&portable).enumerate() {
                        assert!(same(x, y), "case {case} {part:?} {out:?} element {k}: {x:e} vs portable {y:e}");
                    }
                    for m in 0..16 {
                        for n in 0..16 {
                            let col: [f32; 16] = std::array::from_fn(|k| b[16 * k + n]);
                            let want = dot(part, &a[16 * m..16 * m + 16], &col, c[16 * m + n], emin, out);
                            let got = d[16 * m + n];
                            assert!(
                                same(got, want),
                                "case {case} {part:?} {out:?} ({m},{n}): {got:e} ({:#x}) vs dot {want:e} ({:#x})",
                                got.to_bits(),
                                want.to_bits()
                            );
                        }
                    }
                }
            }
        }
    }
}
