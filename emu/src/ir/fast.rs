//! Pre-decoded forms of the commonest integer instructions (32- and 64-bit add, sub,
//! mul.lo, mad.lo, mul.wide, and, or, xor, shifts, mov, setp, selp), one variant per
//! operation and width with its register operands in place, made once at load (after
//! register compaction, whose indices they hold). The executor runs them
//! (exec/fast.rs) without int.rs's generic decoding of width, signedness and absent
//! operands, which costs several times the operation itself. Every other instruction is
//! `Generic` and goes through the general path.

use super::{Cmp, Inst, Op, Ty, NONE};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bin {
    Add,
    Sub,
    Mul,
    And,
    Or,
    Xor,
    Shl,
    ShrU,
    ShrS,
}

#[derive(Clone, Copy, Debug)]
pub enum Fast {
    Generic,
    /// d = a op b at 32 bits (`w32`) or 64.
    Bin {
        op: Bin,
        w32: bool,
        d: u32,
        a: u32,
        b: u32,
    },
    /// d = a * b + c (mad.lo) at 32 or 64 bits.
    Mad {
        w32: bool,
        d: u32,
        a: u32,
        b: u32,
        c: u32,
    },
    /// d = a * b, 32-bit operands to a 64-bit result (mul.wide.u32 / .s32).
    MulWide {
        signed: bool,
        d: u32,
        a: u32,
        b: u32,
    },
    /// d = a at 32 or 64 bits.
    Mov {
        w32: bool,
        d: u32,
        a: u32,
    },
    /// d = a cmp b (integer setp), 32 or 64 bits.
    Setp {
        cmp: Cmp,
        signed: bool,
        w32: bool,
        d: u32,
        a: u32,
        b: u32,
    },
    /// d = c ? a : b at 32 or 64 bits.
    Selp {
        w32: bool,
        d: u32,
        a: u32,
        b: u32,
        c: u32,
    },
}

/// The fast form of `i`, or `Generic`.
pub(crate) fn decode_one(i: &Inst) -> Fast {
    let w32 = match i.ty {
        Ty::B32 | Ty::U32 | Ty::S32 => true,
        Ty::B64 | Ty::U64 | Ty::S64 => false,
        _ => return Fast::Generic,
    };
    let signed = i.ty.is_signed();
    let set = |r: u32| r != NONE;
    if !set(i.d) || !set(i.a) || (i.op != Op::Mov && !set(i.b)) {
        return Fast::Generic;
    }
    let (d, a, b, c) = (i.d, i.a, i.b, i.c);
    let bin = |op| Fast::Bin { op, w32, d, a, b };
    match i.op {
        Op::Add => bin(Bin::Add),
        Op::Sub => bin(Bin::Sub),
        Op::MulLo => bin(Bin::Mul),
        Op::And => bin(Bin::And),
        Op::Or => bin(Bin::Or),
        Op::Xor => bin(Bin::Xor),
        Op::Shl => bin(Bin::Shl),
        Op::Shr if signed => bin(Bin::ShrS),
        Op::Shr => bin(Bin::ShrU),
        Op::MadLo if set(c) => Fast::Mad { w32, d, a, b, c },
        Op::MulWide if w32 => Fast::MulWide { signed, d, a, b },
        Op::Mov if !set(b) => Fast::Mov { w32, d, a },
        Op::Setp(cmp) if matches!(cmp, Cmp::Eq | Cmp::Ne | Cmp::Lt | Cmp::Le | Cmp::Gt | Cmp::Ge) => {
            Fast::Setp { cmp, signed, w32, d, a, b }
        }
        Op::Selp if set(c) => Fast::Selp { w32, d, a, b, c },
        _ => Fast::Generic,
    }
}

/// The fast form of every instruction, by pc.
pub fn decode(insts: &[Inst]) -> Vec<Fast> {
    insts.iter().map(decode_one).collect()
}
