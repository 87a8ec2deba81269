//! Comparisons and selects: setp, selp.

use super::inst::Ctx;
use super::{Cmp, Inst, Lower, Op, Ty};
use crate::ptx::LoadError;

impl Lower<'_> {
    pub(super) fn setp(&mut self, x: &Ctx, inst: &mut Inst) -> Result<(), LoadError> {
        let ty = x.one_ty()?;
        let cmp = match x.words.as_slice() {
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
        };
        if !ty.is_float() && !matches!(cmp, Cmp::Eq | Cmp::Ne | Cmp::Lt | Cmp::Le | Cmp::Gt | Cmp::Ge) || ty.is_half() {
            return Err(x.unsupported());
        }
        self.arith(x, inst, Op::Setp(cmp), ty, 2)
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
