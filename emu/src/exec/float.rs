//! Floating-point instructions on f32 and f64, per the PTX ISA: IEEE operations with
//! round-to-nearest-even (the only rounding mode the loader accepts for arithmetic),
//! `.ftz` flushing subnormal inputs and results to sign-preserving zero, `.sat` clamping
//! to [0, 1] (NaN to 0), unordered comparisons true on NaN, min/max returning the
//! non-NaN operand, copysign taking the sign of its first operand. Approximate
//! instructions are computed to within far less than the ISA's stated error (the exact
//! result rounded, or the host's libm): a real GPU remains the authority on their last
//! bits.

use crate::ir::{Cmp, Inst, Op, Ty, APPROX, FTZ, SAT};

macro_rules! float_impl {
    ($name:ident, $f:ty, $bits:ty, $sign:expr, $qnan:expr) => {
        pub fn $name(i: &Inst, r: &mut [u64]) {
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
                    let nan = a.is_nan() || b.is_nan();
                    let t = match c {
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
                    };
                    r[i.d as usize] = t as u64;
                    return;
                }
                _ => unreachable!("not a float instruction: {:?}", i.op),
            };
            let _ = APPROX;
            let mut v = v;
            if i.flags & SAT != 0 {
                v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
            }
            if ftz && v.is_subnormal() {
                v = <$f>::from_bits(v.to_bits() & $sign);
            }
            r[i.d as usize] = v.to_bits() as u64;
        }
    };
}

float_impl!(exec_f32, f32, u32, 0x8000_0000u32, 0x7fff_ffffu32);
float_impl!(exec_f64, f64, u64, 0x8000_0000_0000_0000u64, 0x7fff_ffff_ffff_ffffu64);

pub fn exec(i: &Inst, r: &mut [u64]) {
    match i.ty {
        Ty::F32 => exec_f32(i, r),
        _ => exec_f64(i, r),
    }
}
