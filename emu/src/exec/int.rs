//! Integer, bit and move instructions. Registers hold values zero-extended to 64 bits;
//! each instruction reads the low bits its type names and writes its result masked to
//! its destination width, so a register read at another width sees what the ISA says.

use super::Regs;
use std::cmp::Ordering;

use crate::ir::{Cmp, Inst, Op, Ty};

#[inline]
pub fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// Sign-extends the low `bits` of `v`.
#[inline]
pub fn sx(v: u64, bits: u32) -> i64 {
    let s = 64 - bits;
    ((v << s) as i64) >> s
}

#[inline(always)]
pub fn exec<R: Regs + ?Sized>(i: &Inst, r: &mut R) {
    let ty = i.ty;
    let bits = if ty == Ty::Pred { 1 } else { ty.bits() };
    let m = mask(bits);
    let signed = ty.is_signed();
    let a = if i.a != crate::ir::NONE { r[i.a as usize] & m } else { 0 };
    let b = if i.b != crate::ir::NONE { r[i.b as usize] & m } else { 0 };
    let (v, dbits) = match i.op {
        Op::Add => (a.wrapping_add(b), bits),
        Op::Sub => (a.wrapping_sub(b), bits),
        Op::MulLo => (a.wrapping_mul(b), bits),
        Op::MulHi => {
            let p = if signed { (sx(a, bits) as i128 * sx(b, bits) as i128) as u128 } else { a as u128 * b as u128 };
            ((p >> bits) as u64, bits)
        }
        Op::MulWide => {
            let p = if signed { sx(a, bits).wrapping_mul(sx(b, bits)) as u64 } else { a.wrapping_mul(b) };
            (p, bits * 2)
        }
        Op::MadLo => (a.wrapping_mul(b).wrapping_add(r[i.c as usize]), bits),
        Op::MadWide => {
            let p = if signed { sx(a, bits).wrapping_mul(sx(b, bits)) as u64 } else { a.wrapping_mul(b) };
            (p.wrapping_add(r[i.c as usize]), bits * 2)
        }
        // Division by zero gives all ones (unsigned) or -1 (signed), as the hardware does;
        // the ISA leaves it unspecified.
        Op::Div => match (b, signed) {
            (0, _) => (m, bits),
            (_, true) => (sx(a, bits).wrapping_div(sx(b, bits)) as u64, bits),
            (_, false) => (a / b, bits),
        },
        Op::Rem => match (b, signed) {
            (0, _) => (a, bits),
            (_, true) => (sx(a, bits).wrapping_rem(sx(b, bits)) as u64, bits),
            (_, false) => (a % b, bits),
        },
        Op::Min => (if signed { sx(a, bits).min(sx(b, bits)) as u64 } else { a.min(b) }, bits),
        Op::Max => (if signed { sx(a, bits).max(sx(b, bits)) as u64 } else { a.max(b) }, bits),
        Op::Neg => (a.wrapping_neg(), bits),
        Op::Abs => (sx(a, bits).wrapping_abs() as u64, bits),
        Op::And => (a & b, bits),
        Op::Or => (a | b, bits),
        Op::Xor => (a ^ b, bits),
        Op::Not => (!a, bits),
        // Shift amounts are unsigned 32-bit and saturate at the width (the ISA's "shift
        // amounts greater than the register width N are clamped to N").
        Op::Shl => {
            let s = r[i.b as usize] as u32;
            (if s >= bits { 0 } else { a << s }, bits)
        }
        Op::Shr => {
            let s = (r[i.b as usize] as u32).min(bits);
            let v = if signed {
                (sx(a, bits) >> s.min(63)) as u64
            } else if s >= bits {
                0
            } else {
                a >> s
            };
            (v, bits)
        }
        Op::Setp(c) => {
            let (x, y) = (a, b);
            let t = if signed {
                let (x, y) = (sx(x, bits), sx(y, bits));
                cmp(c, x.cmp(&y))
            } else {
                cmp(c, x.cmp(&y))
            };
            r[i.d as usize] = t as u64;
            return;
        }
        Op::Selp => (if r[i.c as usize] & 1 != 0 { a } else { b }, bits),
        Op::Mov => (a, bits),
        Op::Pack => {
            let part = bits / i.v.len() as u32;
            let pm = mask(part);
            let v =
                i.v.iter().enumerate().fold(0u64, |acc, (k, &reg)| acc | ((r[reg as usize] & pm) << (part * k as u32)));
            (v, bits)
        }
        Op::Unpack => {
            let part = bits / i.v.len() as u32;
            let pm = mask(part);
            for (k, &reg) in i.v.iter().enumerate() {
                r[reg as usize] = (a >> (part * k as u32)) & pm;
            }
            return;
        }
        _ => unreachable!("not an integer instruction: {:?}", i.op),
    };
    r[i.d as usize] = v & mask(dbits);
}

#[inline(always)]
pub(super) fn cmp(c: Cmp, o: Ordering) -> bool {
    match c {
        Cmp::Eq => o.is_eq(),
        Cmp::Ne => o.is_ne(),
        Cmp::Lt => o.is_lt(),
        Cmp::Le => o.is_le(),
        Cmp::Gt => o.is_gt(),
        Cmp::Ge => o.is_ge(),
        // The loader accepts only the six ordered comparisons on integers.
        _ => unreachable!("unordered comparison on integers"),
    }
}
