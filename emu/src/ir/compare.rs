//! Comparisons and selects: setp, set, selp.

use super::inst::Ctx;
use super::{Cmp, Inst, Lower, Op, Round, Ty};
use crate::ptx::LoadError;

impl Lower<'_> {
    pub(super) fn setp(&mut self, x: &Ctx, inst: &mut Inst) -> Result<(), LoadError> {
        let ty = x.one_ty()?;
        let cmp = cmp_op(x)?;
        if ty == Ty::BF16 {
            // setp.CmpOp.bf16 (PTX ISA 9.7.4, half precision comparison setp: sm_90; nvcc
            // emits it for __hgt, __heq, ... at sm_90). No .ftz for bf16; the bf16x2 form
            // (two predicates) is not implemented.
            if x.flags != 0 || x.round != Round::Default {
                return Err(x.unsupported());
            }
            self.need_sm(x, 90)?;
            return self.arith(x, inst, Op::Setp(cmp), ty, 2);
        }
        if !ty.is_float() && !matches!(cmp, Cmp::Eq | Cmp::Ne | Cmp::Lt | Cmp::Le | Cmp::Gt | Cmp::Ge) || ty.is_half() {
            return Err(x.unsupported());
        }
        self.arith(x, inst, Op::Setp(cmp), ty, 2)
    }

    /// `set.CmpOp.dtype.stype d, a, b` without a BoolOp: nvcc's bf16 comparisons at sm_80
    /// (`set.gt.f32.f32` on bf16 bits moved into the upper half of a .b32) and `__hisnan`
    /// at sm_90 (`set.nan.bf16.bf16`, PTX ISA 9.7.4, half precision comparison set:
    /// sm_90). Sources f32 or bf16; destinations u32, s32, b32, f32 (the f32 source) or
    /// u16, s16, b16, bf16 (the bf16 source). "d is set to 1.0 (float dtype) or 0xffffffff
    /// (integer dtype) if the comparison is true, 0 otherwise" (ISA, set); for 16-bit
    /// integer destinations, all ones of 16 bits.
    pub(super) fn set(&mut self, x: &Ctx, inst: &mut Inst) -> Result<(), LoadError> {
        let cmp = cmp_op(x)?;
        let [dt, st] = x.tys.as_slice() else { return Err(x.unsupported()) };
        let (dt, st) = (*dt, *st);
        let ok = match st {
            Ty::F32 => matches!(dt, Ty::U32 | Ty::S32 | Ty::B32 | Ty::F32),
            Ty::BF16 => matches!(dt, Ty::U16 | Ty::S16 | Ty::B16 | Ty::BF16 | Ty::U32 | Ty::S32 | Ty::B32),
            _ => false,
        };
        if !ok || x.flags != 0 || x.round != Round::Default {
            return Err(x.unsupported());
        }
        if st == Ty::BF16 {
            self.need_sm(x, 90)?;
        }
        self.arith(x, inst, Op::Set(cmp), st, 2)?;
        inst.ty = dt;
        inst.ty2 = st;
        Ok(())
    }

    pub(super) fn selp(&mut self, x: &Ctx, inst: &mut Inst) -> Result<(), LoadError> {
        let ty = x.one_ty()?;
        x.only(&[])?;
        x.nops(4)?;
        let ops = x.ops;
        inst.op = Op::Selp;
        inst.ty = ty;
        inst.d = x.dreg(&ops[0])?;
        inst.a = self.reg(x, &ops[1], ty)?;
        inst.b = self.reg(x, &ops[2], ty)?;
        inst.c = self.reg(x, &ops[3], Ty::Pred)?;
        Ok(())
    }
}

/// The comparison of `setp` and `set` (their one modifier word).
fn cmp_op(x: &Ctx) -> Result<Cmp, LoadError> {
    Ok(match x.words.as_slice() {
        [c] => match *c {
            "eq" => Cmp::Eq,
            "ne" => Cmp::Ne,
            "lt" | "lo" => Cmp::Lt,
            "le" | "ls" => Cmp::Le,
            "gt" | "hi" => Cmp::Gt,
            "ge" | "hs" => Cmp::Ge,
            "equ" => Cmp::Equ,
            "neu" => Cmp::Neu,
            "ltu" => Cmp::Ltu,
            "leu" => Cmp::Leu,
            "gtu" => Cmp::Gtu,
            "geu" => Cmp::Geu,
            "num" => Cmp::Num,
            "nan" => Cmp::Nan,
            _ => return Err(x.unsupported()),
        },
        _ => return Err(x.unsupported()),
    })
}
