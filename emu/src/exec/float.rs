//! Floating-point instructions on f32 and f64 (those on f16, bf16 and bf16x2 go to
//! exec/half.rs), per the PTX ISA: IEEE operations with
//! round-to-nearest-even (and the directed roundings of f32 add, sub, mul and fma),
//! `.ftz` flushing subnormal inputs and results to sign-preserving zero, `.sat` clamping
//! to [0, 1] (NaN to 0), unordered comparisons true on NaN, min/max returning the
//! non-NaN operand, copysign taking the sign of its first operand. Approximate
//! instructions are computed to within far less than the ISA's stated error (the exact
//! result rounded, or the host's libm), or, under `MP_EMU_APPROX=bound`, moved by that
//! error (exec/approx.rs): a real GPU remains the authority on their last bits.
//!
//! NaN results. PTX ISA 9.7.3 ("Floating-Point Instructions"): "NaN payloads are
//! supported for double-precision instructions (except for rcp.approx.ftz.f64 and
//! rsqrt.approx.ftz.f64, which maps input NaNs to a canonical NaN). Single-precision
//! instructions return an unspecified NaN." The GPU's single-precision NaN is the one
//! canonical quiet NaN 0x7fffffff, whatever the inputs' payloads or signs (there is no
//! f32 payload on the GPU), so every f32 arithmetic NaN result here is 0x7fffffff, not
//! the host's (which keeps an input's payload and sign, or makes 0xffc00000 on x86).
//! `abs`, `neg` and `copysign` are bit operations and keep payloads, as `mov` does.
//! f64 results keep the host's payload propagation, which is what the ISA promises;
//! rcp.approx.ftz.f64 of a NaN is 0x7fffffff00000000, its canonical NaN.

use super::Regs;
use std::cmp::Ordering;

use super::approx::{self, Approx};
use crate::ir::{Cmp, Inst, Op, Round, Ty, APPROX, FTZ, SAT};

fn next_up(f: f32) -> f32 {
    if f.is_nan() || f == f32::INFINITY {
        f
    } else if f == 0.0 {
        f32::from_bits(1)
    } else if f > 0.0 {
        f32::from_bits(f.to_bits() + 1)
    } else {
        f32::from_bits(f.to_bits() - 1)
    }
}

fn next_down(f: f32) -> f32 {
    -next_up(-f)
}

/// f32 add, sub, mul or fma with a directed rounding (`.rz`, `.rm`, `.rp`; nvcc emits
/// `fma.rm.f32` in `expf`). The exact result is an unevaluated sum `s + e` of two f64s
/// (products of f32s are exact in f64; TwoSum gives the addition's error), rounded to
/// f32 to nearest and then moved one step where the exact value lies on the other side
/// of it. An exact zero sum takes its sign as IEEE 754 says (-0 only under `.rm` when
/// the operands' signs differ).
fn directed_f32(op: Op, a: f32, b: f32, c: f32, round: Round) -> f32 {
    let (a, b, c) = (a as f64, b as f64, c as f64);
    let (x, y) = match op {
        Op::FAdd => (a, b),
        Op::FSub => (a, -b),
        Op::FMul => (a * b, 0.0f64.copysign(a * b)),
        _ => (a * b, c),
    };
    let s = x + y;
    if !s.is_finite() {
        // An infinite operand (the result is exact) or NaN.
        return s as f32;
    }
    let t = s - x;
    let e = (x - (s - t)) + (y - t);
    if s == 0.0 && e == 0.0 {
        let neg = if x.is_sign_negative() == y.is_sign_negative() { x.is_sign_negative() } else { round == Round::Rm };
        return if neg { -0.0 } else { 0.0 };
    }
    let f = s as f32;
    // The sign of (exact - f).
    let side = if f.is_infinite() {
        if f > 0.0 {
            Ordering::Less
        } else {
            Ordering::Greater
        }
    } else {
        let d = s - f as f64;
        if d != 0.0 {
            d.partial_cmp(&0.0).unwrap_or(Ordering::Equal)
        } else {
            e.partial_cmp(&0.0).unwrap_or(Ordering::Equal)
        }
    };
    match (round, side) {
        (Round::Rm, Ordering::Less) => next_down(f),
        (Round::Rp, Ordering::Greater) => next_up(f),
        (Round::Rz, Ordering::Less) if f > 0.0 => next_down(f),
        (Round::Rz, Ordering::Greater) if f < 0.0 => next_up(f),
        _ => f,
    }
}

macro_rules! float_impl {
    ($name:ident, $f:ty, $bits:ty, $sign:expr, $qnan:expr, $canonical:expr, $bound:path) => {
        pub fn $name<R: Regs + ?Sized>(i: &Inst, r: &mut R, mode: Approx) {
            let ftz = i.flags & FTZ != 0;
            let load = |reg: u32| -> $f {
                let x = <$f>::from_bits(r[reg as usize] as $bits);
                if ftz && x.is_subnormal() {
                    <$f>::from_bits(x.to_bits() & $sign)
                } else {
                    x
                }
            };
            let a = load(i.a);
            let b = if i.b != crate::ir::NONE { load(i.b) } else { 0.0 };
            let v: $f = match i.op {
                Op::FAdd | Op::FSub | Op::FMul | Op::Fma if !matches!(i.round, Round::Default | Round::Rn) => {
                    // The loader accepts directed rounding on f32 only.
                    let c = if i.op == Op::Fma { load(i.c) as f32 } else { 0.0 };
                    directed_f32(i.op, a as f32, b as f32, c, i.round) as $f
                }
                Op::FAdd => a + b,
                Op::FSub => a - b,
                Op::FMul => a * b,
                Op::Fma => a.mul_add(b, load(i.c)),
                Op::FDiv => a / b,
                Op::Rcp => 1.0 / a,
                Op::Sqrt => a.sqrt(),
                Op::Ex2 => (a as f64).exp2() as $f,
                Op::Lg2 => (a as f64).log2() as $f,
                Op::FAbs => <$f>::from_bits(a.to_bits() & !$sign),
                Op::FNeg => <$f>::from_bits(a.to_bits() ^ $sign),
                Op::FMin | Op::FMax => {
                    let min = i.op == Op::FMin;
                    if a.is_nan() && b.is_nan() {
                        <$f>::from_bits($qnan)
                    } else if a.is_nan() {
                        b
                    } else if b.is_nan() {
                        a
                    } else if a == b {
                        // -0 is less than +0 for min and max.
                        let neg = |x: $f| x.to_bits() & $sign != 0;
                        if min == neg(a) {
                            a
                        } else {
                            b
                        }
                    } else if (a < b) == min {
                        a
                    } else {
                        b
                    }
                }
                Op::Copysign => <$f>::from_bits((b.to_bits() & !$sign) | (a.to_bits() & $sign)),
                Op::Setp(c) => {
                    r[i.d as usize] = compare(c, a, b, a.is_nan() || b.is_nan()) as u64;
                    return;
                }
                _ => unreachable!("not a float instruction: {:?}", i.op),
            };
            // The approximate forms' error, before `.sat` and the result's `.ftz`, which
            // apply to what the instruction computed.
            let mut v = if mode == Approx::Bound { $bound(i, a, b, v) } else { v };
            if i.flags & SAT != 0 {
                v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
            }
            if ftz && v.is_subnormal() {
                v = <$f>::from_bits(v.to_bits() & $sign);
            }
            let canonical: Option<$bits> = $canonical;
            if let Some(c) = canonical {
                if v.is_nan() && !matches!(i.op, Op::FAbs | Op::FNeg | Op::Copysign) {
                    v = <$f>::from_bits(c);
                }
            }
            r[i.d as usize] = v.to_bits() as u64;
        }
    };
}

/// A float setp's comparison of `a` and `b` (`nan`: either is NaN): the ordered forms
/// are false on a NaN, the unordered ones (`equ` ...) true.
#[inline(always)]
pub fn compare<T: PartialOrd>(c: Cmp, a: T, b: T, nan: bool) -> bool {
    match c {
        Cmp::Eq => !nan && a == b,
        Cmp::Ne => !nan && a != b,
        Cmp::Lt => !nan && a < b,
        Cmp::Le => !nan && a <= b,
        Cmp::Gt => !nan && a > b,
        Cmp::Ge => !nan && a >= b,
        Cmp::Equ => nan || a == b,
        Cmp::Neu => nan || a != b,
        Cmp::Ltu => nan || a < b,
        Cmp::Leu => nan || a <= b,
        Cmp::Gtu => nan || a > b,
        Cmp::Geu => nan || a >= b,
        Cmp::Num => !nan,
        Cmp::Nan => nan,
    }
}

/// The GPU's single-precision NaN: every f32 arithmetic NaN result.
pub const CANONICAL_NAN_F32: u32 = 0x7fff_ffff;
/// rcp.approx.ftz.f64's NaN (ISA 9.7.3: "Input NaNs map to a canonical NaN with encoding
/// 0x7fffffff00000000").
pub const CANONICAL_NAN_RCP_APPROX_F64: u64 = 0x7fff_ffff_0000_0000;

float_impl!(exec_f32, f32, u32, 0x8000_0000u32, CANONICAL_NAN_F32, Some(CANONICAL_NAN_F32), approx::bound_f32);
float_impl!(exec_f64, f64, u64, 0x8000_0000_0000_0000u64, 0x7fff_ffff_ffff_ffffu64, None, approx::bound_f64);

/// Executes a float instruction; `mode` says how its approximate forms compute (the
/// 16-bit forms the loader accepts are all exact).
pub fn exec<R: Regs + ?Sized>(i: &Inst, r: &mut R, mode: Approx) {
    match i.ty {
        Ty::F32 => exec_f32(i, r, mode),
        Ty::F16 | Ty::BF16 | Ty::BF16X2 => super::half::exec(i, r),
        _ => {
            exec_f64(i, r, mode);
            let d = i.d as usize;
            if i.op == Op::Rcp && i.flags & APPROX != 0 && f64::from_bits(r[d]).is_nan() {
                r[d] = CANONICAL_NAN_RCP_APPROX_F64;
            }
        }
    }
}
