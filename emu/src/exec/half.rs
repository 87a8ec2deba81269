//! 16-bit float arithmetic (PTX ISA 9.7.4, "Half Precision Floating-Point Instructions"):
//! `fma.rn` on `.f16`, and on `.bf16` and `.bf16x2` `add`, `sub`, `mul` (`{.rn}`),
//! `fma.rn`, `min`/`max` (`{.NaN}`), `abs`, `neg`, `setp`; `set` with f32 and bf16
//! sources; and the conversions to f16 and bf16 that `cvt` shares with them. One implementation for both formats ([`Half`]); a
//! `.bf16x2` operation is the `.bf16` one on each half of the .b32 (element 0 in bits
//! 0..16).
//!
//! Rounding. add, sub, mul and fma deliver "the exact result rounded once" to the
//! destination format, to nearest even (`.rn`, the only rounding the ISA gives these
//! forms; 9.7.4.1 add, 9.7.4.3 mul, 9.7.4.4 fma: "fma.rn.bf16 ... computes the product of
//! a and b to infinite precision and then adds c to this product, again in infinite
//! precision", then rounds once, to nearest even for `.rn`). The exact value is
//! formed in f64: a product of two 16-bit floats is exact there (at most 22 significant
//! bits, exponents far inside f64's range); a sum is rounded to f64 *to odd* (TwoSum's
//! error term moves an even f64 result one step toward the exact value), and rounding to
//! odd at 53 bits, then to f32 at 24 bits, then to nearest even at 11 or 8 bits is the
//! single correct rounding (each intermediate precision is at least 2 bits wider than the
//! next, the classic condition), subnormal results included. The bf16 forms have no
//! `.ftz`: subnormal inputs and results are kept (the ISA's default for these
//! instructions); overflow rounds to infinity. (The f16 fma is accepted without `.ftz`
//! and `.sat` only, which the loader refuses.)
//!
//! NaN results. The ISA leaves the NaN these instructions return unspecified, except
//! that min and max (9.7.4.7, 9.7.4.8) return the canonical NaN when both inputs are NaN
//! (and, with `.NaN`, when either is); the GPU's canonical NaN is 0x7fff for both f16 and
//! bf16 and is what its arithmetic returns, so every NaN result here is 0x7fff, as f32
//! results are 0x7fffffff (exec/float.rs). min and max otherwise return the non-NaN
//! operand, and take -0 as less than +0. `abs` and `neg` (9.7.4.6, 9.7.4.5) are bit
//! operations on the sign and keep payloads, as the f32 ones do here.

use super::Regs;
use half::f16;

pub use super::convert::CANONICAL_NAN_F16;
use crate::ir::{Cmp, Inst, Op, Ty, NAN, NONE};
/// The GPU's bfloat16 NaN (CUDA's CUDART_NAN_BF16; `cvt.rn.bf16.f32` of any NaN and
/// min/max's canonical NaN).
pub const CANONICAL_NAN_BF16: u16 = 0x7fff;

/// A 16-bit float format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Half {
    F16,
    BF16,
}

impl Half {
    /// The format of a register type (bf16x2: of each half).
    pub fn of(ty: Ty) -> Option<Half> {
        match ty {
            Ty::F16 => Some(Half::F16),
            Ty::BF16 | Ty::BF16X2 => Some(Half::BF16),
            _ => None,
        }
    }

    /// The exact value of `bits`.
    pub fn to_f64(self, bits: u16) -> f64 {
        self.to_f32(bits) as f64
    }

    /// The exact value of `bits` (both formats are subsets of f32).
    pub fn to_f32(self, bits: u16) -> f32 {
        match self {
            Half::F16 => f16::from_bits(bits).to_f32(),
            Half::BF16 => f32::from_bits((bits as u32) << 16),
        }
    }

    pub fn is_nan(self, bits: u16) -> bool {
        match self {
            Half::F16 => bits & 0x7c00 == 0x7c00 && bits & 0x03ff != 0,
            Half::BF16 => bits & 0x7f80 == 0x7f80 && bits & 0x007f != 0,
        }
    }

    /// `x` rounded once to nearest even; NaN gives the canonical NaN.
    pub fn from_f64(self, x: f64) -> u16 {
        if x.is_nan() {
            return match self {
                Half::F16 => CANONICAL_NAN_F16,
                Half::BF16 => CANONICAL_NAN_BF16,
            };
        }
        let y = f32_to_odd(x);
        match self {
            Half::F16 => f16::from_f32(y).to_bits(),
            Half::BF16 => f32_to_bf16(y),
        }
    }
}

/// `x` rounded to f32 to odd: the f32 toward zero, with its last bit set when inexact.
/// Enough for a later rounding to 11 or 8 significant bits to be the correct one
/// (f32 has 13 more significand bits than f16 and 16 more than bf16, also among
/// subnormals, where f32, f16 and bf16 all lose bits at the same rate).
fn f32_to_odd(x: f64) -> f32 {
    let y = x as f32;
    if x.is_nan() || y as f64 == x {
        return y;
    }
    let mut b = y.to_bits();
    if (y as f64).abs() > x.abs() {
        b -= 1; // the neighbour toward zero (inf becomes the largest finite value)
    }
    f32::from_bits(b | 1)
}

/// f32 to bf16, to nearest even (the bits beyond the upper 16 decide; a tie keeps the
/// even one); overflow gives infinity, NaN the canonical NaN.
pub fn f32_to_bf16(f: f32) -> u16 {
    if f.is_nan() {
        return CANONICAL_NAN_BF16;
    }
    let b = f.to_bits();
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// `a + b` rounded to f64 to odd (see the module comment).
fn sum_odd(a: f64, b: f64) -> f64 {
    let s = a + b;
    if !s.is_finite() {
        return s;
    }
    // TwoSum: s + e == a + b exactly.
    let t = s - a;
    let e = (a - (s - t)) + (b - t);
    if e == 0.0 || s.to_bits() & 1 == 1 {
        return s;
    }
    // s is even and inexact: the odd neighbour on the side of the exact sum (s is not
    // zero here: a sum that rounds to zero is exact).
    let away = (e > 0.0) == (s > 0.0);
    f64::from_bits(if away { s.to_bits() + 1 } else { s.to_bits() - 1 })
}

/// One 16-bit element of `i` on the elements `a`, `b`, `c` of its operands.
fn one(i: &Inst, h: Half, a: u16, b: u16, c: u16) -> u16 {
    let x = |v: u16| h.to_f64(v);
    match i.op {
        Op::FAdd => h.from_f64(sum_odd(x(a), x(b))),
        Op::FSub => h.from_f64(sum_odd(x(a), -x(b))),
        // Exact in f64.
        Op::FMul => h.from_f64(x(a) * x(b)),
        Op::Fma => h.from_f64(sum_odd(x(a) * x(b), x(c))),
        Op::FAbs => a & 0x7fff,
        Op::FNeg => a ^ 0x8000,
        Op::FMin | Op::FMax => {
            let min = i.op == Op::FMin;
            let (an, bn) = (h.is_nan(a), h.is_nan(b));
            if (an && bn) || ((an || bn) && i.flags & NAN != 0) {
                CANONICAL_NAN_BF16 // == CANONICAL_NAN_F16
            } else if an {
                b
            } else if bn {
                a
            } else {
                let (fa, fb) = (x(a), x(b));
                if fa == fb {
                    // -0 is less than +0, as for f32 (exec/float.rs).
                    let neg_a = a & 0x8000 != 0;
                    if min == neg_a {
                        a
                    } else {
                        b
                    }
                } else if (fa < fb) == min {
                    a
                } else {
                    b
                }
            }
        }
        _ => unreachable!("not a half-precision instruction: {:?}", i.op),
    }
}

/// `a cmp b` as setp and set compare floats (float.rs's comparison, on the exact f64
/// values of the 16-bit or f32 operands).
fn compare(c: Cmp, a: f64, b: f64) -> bool {
    super::float::compare(c, a, b, a.is_nan() || b.is_nan())
}

/// `set.cmp.dtype.stype d, a, b` (the loader takes f32 and bf16 sources): 1.0 of a float
/// dtype, or all ones of an integer one, when `a cmp b`; else 0.
pub fn set<R: Regs + ?Sized>(i: &Inst, r: &mut R) {
    let Op::Set(c) = i.op else { unreachable!("not set") };
    let value = |reg: u32| match i.ty2 {
        Ty::BF16 => Half::BF16.to_f64(r[reg as usize] as u16),
        _ => f32::from_bits(r[reg as usize] as u32) as f64,
    };
    let t = compare(c, value(i.a), value(i.b));
    r[i.d as usize] = match (t, i.ty) {
        (false, _) => 0,
        (true, Ty::F32) => 0x3f80_0000,
        (true, Ty::BF16) => 0x3f80,
        (true, ty) => super::int::mask(ty.bits()),
    };
}

/// Executes a 16-bit float instruction (`i.ty` F16, BF16 or BF16X2).
pub fn exec<R: Regs + ?Sized>(i: &Inst, r: &mut R) {
    let h = Half::of(i.ty).expect("a 16-bit float type");
    if let Op::Setp(c) = i.op {
        // setp.cmp.bf16 (the loader takes no other 16-bit setp).
        let x = |reg: u32| h.to_f64(r[reg as usize] as u16);
        r[i.d as usize] = compare(c, x(i.a), x(i.b)) as u64;
        return;
    }
    let n = if i.ty == Ty::BF16X2 { 2 } else { 1 };
    let mut out = 0u64;
    for k in 0..n {
        let get = |reg: u32| if reg == NONE { 0 } else { (r[reg as usize] >> (16 * k)) as u16 };
        out |= (one(i, h, get(i.a), get(i.b), get(i.c)) as u64) << (16 * k);
    }
    r[i.d as usize] = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_to_bf16_rounds_to_nearest_even() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80); // tie, even below
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82); // tie, even above
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(f32_to_bf16(f32::MAX), 0x7f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0xffc0_0001)), CANONICAL_NAN_BF16);
    }

    #[test]
    fn sums_round_once() {
        // 1 + 2^-8 + 2^-200: above the tie between 1 and 1 + 2^-7, so up; f64 alone
        // would lose 2^-200 and round the tie to even (1).
        let h = Half::BF16;
        let got = h.from_f64(sum_odd(1.0 + 2f64.powi(-8), 2f64.powi(-200)));
        assert_eq!(got, 0x3f81);
        assert_eq!(h.from_f64(sum_odd(1.0 + 2f64.powi(-8), -2f64.powi(-200))), 0x3f80);
        assert_eq!(h.from_f64(sum_odd(1.0 + 2f64.powi(-8), 0.0)), 0x3f80);
    }
}
