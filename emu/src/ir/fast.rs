//! Pre-decoded forms of the commonest integer instructions (32- and 64-bit add, sub,
//! mul.lo, mad.lo, mul.wide, and, or, xor, not, shifts, min, max, mov, setp, selp, integer
//! cvt without `.sat`, mov of two halves to or from a register; and, or, xor, not of predicates), of f32 and f64 add,
//! sub, mul and fma with round-to-nearest and no `.ftz`/`.sat`, of f32/f64 mov, and of the
//! float conversions every kernel makes (f16 <-> f32, f32 <-> f64, no flags), one variant per
//! operation and width with its register operands in place, made once at load (after
//! register compaction, whose indices they hold). The executor runs them
//! (exec/fast.rs) without int.rs's generic decoding of width, signedness and absent
//! operands, which costs several times the operation itself. Every other instruction is
//! `Generic` and goes through the general path.

use super::{Cmp, Inst, Op, Round, Ty, FTZ, NONE, SAT};

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

/// The f32 operations with a fast form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FBin {
    Add,
    Sub,
    Mul,
    /// div.rn only: div.full and div.approx are approximate (exec/approx.rs).
    Div,
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
    /// d = a op b in f32, rounded to nearest even, NaN canonical (exec/float.rs).
    F32Bin {
        op: FBin,
        d: u32,
        a: u32,
        b: u32,
    },
    /// d = a * b + c in f32 with one rounding to nearest even, NaN canonical.
    F32Fma {
        d: u32,
        a: u32,
        b: u32,
        c: u32,
    },
    /// d = a op b in f64, rounded to nearest even (NaN payloads as the host gives them,
    /// which the ISA allows for f64: exec/float.rs).
    F64Bin {
        op: FBin,
        d: u32,
        a: u32,
        b: u32,
    },
    /// d = -a (neg) or |a| (abs) in f32 or f64 without `.ftz`: the sign bit alone.
    FSign {
        abs: bool,
        f64: bool,
        d: u32,
        a: u32,
    },
    /// d = sqrt(a) rounded to nearest even (sqrt.rn), f32 NaN canonical.
    FSqrt {
        f64: bool,
        d: u32,
        a: u32,
    },
    /// d = a cmp b (float setp without `.ftz`, every comparison of the ISA).
    FSetp {
        cmp: Cmp,
        f64: bool,
        d: u32,
        a: u32,
        b: u32,
    },
    /// d = a * b + c in f64 with one rounding to nearest even.
    F64Fma {
        d: u32,
        a: u32,
        b: u32,
        c: u32,
    },
    /// d = !a, of the low `bits` (1 for a predicate, 32 or 64).
    Not {
        bits: u8,
        d: u32,
        a: u32,
    },
    /// d = a op b of predicates (op: And, Or or Xor).
    PredBin {
        op: Bin,
        d: u32,
        a: u32,
        b: u32,
    },
    /// d = min or max of a and b at 32 or 64 bits.
    MinMax {
        max: bool,
        signed: bool,
        w32: bool,
        d: u32,
        a: u32,
        b: u32,
    },
    /// Integer to integer cvt without `.sat`: the source's low `src` bits, sign-extended
    /// when `signed`, truncated to the destination's `dst` bits (exec/convert.rs).
    IntCvt {
        src: u8,
        signed: bool,
        dst: u8,
        d: u32,
        a: u32,
    },
    /// mov of two `part`-bit registers into one of twice the width: d = lo | hi << part.
    Pack2 {
        part: u8,
        d: u32,
        lo: u32,
        hi: u32,
    },
    /// mov of one register into its two `part`-bit halves.
    Unpack2 {
        part: u8,
        a: u32,
        lo: u32,
        hi: u32,
    },
    /// A float conversion without flags (exec/convert.rs).
    Cvt {
        kind: CvtKind,
        d: u32,
        a: u32,
    },
}

/// The conversions with a fast form: `cvt.f32.f16` and `cvt.f64.f32` (exact),
/// `cvt.rn.f16.f32` and `cvt.rn.f32.f64` (to nearest even, NaN canonical).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CvtKind {
    F32FromF16,
    F64FromF32,
    F16FromF32,
    F32FromF64,
}

fn decode_cvt(i: &Inst) -> Fast {
    if i.flags != 0 || i.d == NONE || i.a == NONE {
        return Fast::Generic;
    }
    if i.ty.is_int() && i.ty2.is_int() && i.round == Round::Default {
        let (dst, src) = (i.ty.bits() as u8, i.ty2.bits() as u8);
        return Fast::IntCvt { src, signed: i.ty2.is_signed(), dst, d: i.d, a: i.a };
    }
    let rn = matches!(i.round, Round::Rn);
    let kind = match (i.ty, i.ty2) {
        (Ty::F32, Ty::F16) if i.round == Round::Default => CvtKind::F32FromF16,
        (Ty::F64, Ty::F32) if i.round == Round::Default => CvtKind::F64FromF32,
        (Ty::F16, Ty::F32) if rn => CvtKind::F16FromF32,
        (Ty::F32, Ty::F64) if rn => CvtKind::F32FromF64,
        _ => return Fast::Generic,
    };
    Fast::Cvt { kind, d: i.d, a: i.a }
}

/// The f32 or f64 fast form of `i`, or `Generic`: mov, and add, sub, mul and fma to
/// nearest even without `.ftz` or `.sat` (the flags and directed roundings stay on
/// float.rs's general path).
fn decode_float(i: &Inst, f64: bool) -> Fast {
    if i.op == Op::Mov {
        // mov moves bits (int.rs's path for every type): the integer form of its width.
        return if i.d != NONE && i.a != NONE && i.b == NONE {
            Fast::Mov { w32: !f64, d: i.d, a: i.a }
        } else {
            Fast::Generic
        };
    }
    let set = |r: u32| r != NONE;
    // Without flags (`.ftz` flushes the inputs): selp moves bits as int.rs does for every
    // type; neg and abs touch the sign bit; sqrt.rn is exact; setp compares.
    if i.flags == 0 && set(i.d) && set(i.a) {
        let (d, a, b, c) = (i.d, i.a, i.b, i.c);
        match i.op {
            Op::Selp if set(b) && set(c) => return Fast::Selp { w32: !f64, d, a, b, c },
            Op::FNeg | Op::FAbs if !set(b) => return Fast::FSign { abs: i.op == Op::FAbs, f64, d, a },
            Op::Sqrt if i.round == Round::Rn && !set(b) => return Fast::FSqrt { f64, d, a },
            Op::Setp(cmp) if set(b) => return Fast::FSetp { cmp, f64, d, a, b },
            _ => {}
        }
    }
    if i.flags & (FTZ | SAT) != 0
        || !matches!(i.round, Round::Default | Round::Rn)
        || !set(i.d)
        || !set(i.a)
        || !set(i.b)
    {
        return Fast::Generic;
    }
    let (d, a, b, c) = (i.d, i.a, i.b, i.c);
    let bin = |op| if f64 { Fast::F64Bin { op, d, a, b } } else { Fast::F32Bin { op, d, a, b } };
    match i.op {
        Op::FAdd => bin(FBin::Add),
        Op::FSub => bin(FBin::Sub),
        Op::FMul => bin(FBin::Mul),
        Op::FDiv if i.round == Round::Rn && i.flags == 0 => bin(FBin::Div),
        Op::Fma if set(c) && f64 => Fast::F64Fma { d, a, b, c },
        Op::Fma if set(c) => Fast::F32Fma { d, a, b, c },
        _ => Fast::Generic,
    }
}

/// The fast form of `i`, or `Generic`.
pub(crate) fn decode_one(i: &Inst) -> Fast {
    if i.op == Op::Cvt {
        return decode_cvt(i);
    }
    if i.ty == Ty::Pred {
        let (d, a, b) = (i.d, i.a, i.b);
        if d == NONE || a == NONE {
            return Fast::Generic;
        }
        return match i.op {
            Op::Not if b == NONE => Fast::Not { bits: 1, d, a },
            Op::And | Op::Or | Op::Xor if b != NONE => {
                let op = match i.op {
                    Op::And => Bin::And,
                    Op::Or => Bin::Or,
                    _ => Bin::Xor,
                };
                Fast::PredBin { op, d, a, b }
            }
            _ => Fast::Generic,
        };
    }
    let w32 = match i.ty {
        Ty::F32 => return decode_float(i, false),
        Ty::F64 => return decode_float(i, true),
        Ty::B32 | Ty::U32 | Ty::S32 => true,
        Ty::B64 | Ty::U64 | Ty::S64 => false,
        _ => return Fast::Generic,
    };
    let signed = i.ty.is_signed();
    let set = |r: u32| r != NONE;
    if matches!(i.op, Op::Pack | Op::Unpack) && i.v.len() == 2 {
        let part = (i.ty.bits() / 2) as u8;
        let (lo, hi) = (i.v[0], i.v[1]);
        return match i.op {
            Op::Pack if set(i.d) => Fast::Pack2 { part, d: i.d, lo, hi },
            Op::Unpack if set(i.a) => Fast::Unpack2 { part, a: i.a, lo, hi },
            _ => Fast::Generic,
        };
    }
    if i.op == Op::Not {
        return if set(i.d) && set(i.a) && !set(i.b) {
            Fast::Not { bits: if w32 { 32 } else { 64 }, d: i.d, a: i.a }
        } else {
            Fast::Generic
        };
    }
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
        Op::Min => Fast::MinMax { max: false, signed, w32, d, a, b },
        Op::Max => Fast::MinMax { max: true, signed, w32, d, a, b },
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
