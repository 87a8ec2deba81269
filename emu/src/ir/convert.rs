//! Moves and conversions: mov (with its pack and unpack forms), cvt, cvta.

use super::inst::Ctx;
use super::{Inst, Lower, Op, Round, Space, Ty, SAT};
use crate::ptx::parse::Operand;
use crate::ptx::LoadError;

impl Lower<'_> {
    pub(super) fn cvt(&mut self, x: &Ctx, inst: &mut Inst) -> Result<(), LoadError> {
        if x.tys.iter().any(|t| matches!(t, Ty::BF16 | Ty::BF16X2)) {
            return self.cvt_bf16(x, inst);
        }
        if x.tys.contains(&Ty::F16X2) {
            return self.cvt_f16x2(x, inst);
        }
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

    /// The bf16 conversions nvcc emits (PTX ISA, cvt), all sm_80:
    /// - `cvt.rn.bf16.f32 d, a` (`__float2bfloat16_rn`);
    /// - `cvt.rn.bf16x2.f32 d, a, b` (`__floats2bfloat162_rn`): the ISA puts `a` in the
    ///   upper half of `d` and `b` in the lower ("the converted values are packed in the
    ///   destination register d, such that the value converted from input a is stored in
    ///   the upper half of d and the value converted from input b is stored in the lower
    ///   half of d");
    /// - `cvt.f32.bf16 d, a` (exact; nvcc emits it for `__bfloat162float` at sm_90 and
    ///   moves the bits into the upper half, `mov.b32 d, {0, a}`, at sm_80; LLVM's NVPTX
    ///   backend emits it from sm_80 with PTX ISA 7.1).
    ///
    /// The other bf16 conversions (`.rz`, `.relu`, `.satfinite`, `.rs`, `.ftz`, integer
    /// and f16/f64 partners, which the ISA gives to sm_90 and later) are refused as
    /// unsupported: nvcc's bf16 intrinsics do not emit them.
    fn cvt_bf16(&mut self, x: &Ctx, inst: &mut Inst) -> Result<(), LoadError> {
        x.only(&[])?;
        if x.flags != 0 {
            return Err(x.unsupported());
        }
        let (dt, st) = match x.tys.as_slice() {
            [Ty::BF16, Ty::F32] if x.round == Round::Rn => {
                x.nops(2)?;
                (Ty::BF16, Ty::F32)
            }
            [Ty::BF16X2, Ty::F32] if x.round == Round::Rn => {
                x.nops(3)?;
                (Ty::BF16X2, Ty::F32)
            }
            [Ty::F32, Ty::BF16] if x.round == Round::Default => {
                x.nops(2)?;
                (Ty::F32, Ty::BF16)
            }
            _ => return Err(x.unsupported()),
        };
        self.need_sm(x, 80)?;
        inst.op = Op::Cvt;
        inst.ty = dt;
        inst.ty2 = st;
        inst.d = x.dreg(&x.ops[0])?;
        inst.a = self.reg(x, &x.ops[1], st)?;
        if dt == Ty::BF16X2 {
            inst.b = self.reg(x, &x.ops[2], st)?;
        }
        Ok(())
    }

    /// `cvt.rn.f16x2.f32 d, a, b` (`__floats2half2_rn` from sm_80): as the bf16x2 form,
    /// `a` goes to the upper half of `d` and `b` to the lower (PTX ISA, cvt: "the value
    /// converted from input a is stored in the upper half of d"); sm_80, PTX ISA 7.0. The
    /// `.relu`, `.satfinite` and `.rs` variants are refused: nvcc does not emit them.
    fn cvt_f16x2(&mut self, x: &Ctx, inst: &mut Inst) -> Result<(), LoadError> {
        x.only(&[])?;
        if x.flags != 0 || x.round != Round::Rn || x.tys.as_slice() != [Ty::F16X2, Ty::F32] {
            return Err(x.unsupported());
        }
        x.nops(3)?;
        self.need_sm(x, 80)?;
        inst.op = Op::Cvt;
        inst.ty = Ty::F16X2;
        inst.ty2 = Ty::F32;
        inst.d = x.dreg(&x.ops[0])?;
        inst.a = self.reg(x, &x.ops[1], Ty::F32)?;
        inst.b = self.reg(x, &x.ops[2], Ty::F32)?;
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
