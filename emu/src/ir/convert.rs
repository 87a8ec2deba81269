//! Moves and conversions: mov (with its pack and unpack forms), cvt, cvta.

use super::inst::Ctx;
use super::{Inst, Lower, Op, Round, Space, Ty, SAT};
use crate::ptx::parse::Operand;
use crate::ptx::LoadError;

impl Lower<'_> {
    pub(super) fn cvt(&mut self, x: &Ctx, inst: &mut Inst) -> Result<(), LoadError> {
        x.only(&[])?;
        let [dt, st] = x.tys.as_slice() else { return Err(x.unsupported()) };
        x.nops(2)?;
        let (dt, st) = (*dt, *st);
        let round = x.round;
        // The ISA requires a rounding modifier exactly where the conversion can
        // be inexact: float to narrower float, int to float (if inexact), float
        // to int (integer rounding).
        let need = match (dt.is_float(), st.is_float()) {
            (true, true) => dt.size() < st.size(),
            (false, true) => true,
            (true, false) => false,
            (false, false) => false,
        };
        if need && round == Round::Default || dt == Ty::Pred || st == Ty::Pred {
            return Err(x.unsupported());
        }
        if dt.is_float()
            && st.is_float()
            && dt.size() == st.size()
            && !matches!(round, Round::Rni | Round::Rzi | Round::Rmi | Round::Rpi | Round::Default)
        {
            return Err(x.unsupported());
        }
        // ISA: integer `.sat` "is illegal in cases where saturation is not possible
        // based on the source and destination types" (the destination's range
        // contains the source's).
        if x.flags & SAT != 0 && !dt.is_float() && !st.is_float() {
            let contains = match (dt.is_signed(), st.is_signed()) {
                (true, false) => dt.size() > st.size(),
                (false, true) => false,
                _ => dt.size() >= st.size(),
            };
            if contains {
                return Err(x.unsupported());
            }
        }
        inst.op = Op::Cvt;
        inst.ty = dt;
        inst.ty2 = st;
        inst.d = x.dreg(&x.ops[0])?;
        inst.a = self.reg(x, &x.ops[1], st)?;
        Ok(())
    }

    pub(super) fn cvta(&mut self, x: &Ctx, inst: &mut Inst) -> Result<(), LoadError> {
        // Global addresses are the same in the generic space.
        let ty = x.one_ty()?;
        x.only(&["to"])?;
        if x.space != Some(Space::Global) || !matches!(ty, Ty::U64 | Ty::B64) {
            return Err(x.unsupported());
        }
        self.arith(x, inst, Op::Mov, Ty::U64, 1)
    }

    pub(super) fn mov(&mut self, x: &Ctx, inst: &mut Inst) -> Result<(), LoadError> {
        let ty = x.one_ty()?;
        x.only(&[])?;
        x.nops(2)?;
        inst.ty = ty;
        match (&x.ops[0], &x.ops[1]) {
            (Operand::Vector(parts), src) => {
                inst.op = Op::Unpack;
                inst.a = self.reg(x, src, ty)?;
                inst.v = parts.iter().map(|p| x.dreg(p)).collect::<Result<_, _>>()?;
                if ty.bits() % parts.len() as u32 != 0 || parts.len() < 2 {
                    return Err(x.unsupported());
                }
            }
            (dst, Operand::Vector(parts)) => {
                inst.op = Op::Pack;
                inst.d = x.dreg(dst)?;
                let pty = part_ty(ty, parts.len()).ok_or_else(|| x.unsupported())?;
                inst.v = parts.iter().map(|p| self.reg(x, p, pty)).collect::<Result<_, _>>()?;
            }
            (dst, src) => {
                inst.op = Op::Mov;
                inst.d = x.dreg(dst)?;
                inst.a = self.reg(x, src, ty)?;
            }
        }
        Ok(())
    }
}

fn part_ty(ty: Ty, n: usize) -> Option<Ty> {
    match (ty.bits() / n as u32, n) {
        (16, _) => Some(Ty::B16),
        (32, _) => Some(Ty::B32),
        (8, _) => Some(Ty::B8),
        _ => None,
    }
}
