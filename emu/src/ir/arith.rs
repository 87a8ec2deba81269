//! Integer and float arithmetic: add sub mul mad fma div rem min max abs neg not and or
//! xor shl shr copysign rcp sqrt ex2 lg2.

use super::inst::Ctx;
use super::{Inst, Lower, Op, Round, Ty, APPROX, NAN};
use crate::ptx::LoadError;

impl Lower<'_> {
    /// add sub min max and or xor copysign div rem.
    pub(super) fn binary(&mut self, x: &Ctx, inst: &mut Inst) -> Result<(), LoadError> {
        let ty = x.one_ty()?;
        let float = ty.is_float();
        let op = match (x.base, float) {
            ("add", false) => Op::Add,
            ("sub", false) => Op::Sub,
            ("min", false) => Op::Min,
            ("max", false) => Op::Max,
            ("div", false) => Op::Div,
            ("rem", false) => Op::Rem,
            ("and", false) => Op::And,
            ("or", false) => Op::Or,
            ("xor", false) => Op::Xor,
            ("add", true) => Op::FAdd,
            ("sub", true) => Op::FSub,
            ("min", true) => Op::FMin,
            ("max", true) => Op::FMax,
            ("div", true) => Op::FDiv,
            ("copysign", true) => Op::Copysign,
            _ => return Err(x.unsupported()),
        };
        if ty.is_half() {
            return self.half(x, inst, op, ty);
        }
        x.only(if x.base == "div" && float { &["full"] } else { &[] })?;
        if !float && (x.round != Round::Default || x.flags != 0) || ty == Ty::F16 {
            return Err(x.unsupported());
        }
        if x.base == "div" && float && x.round == Round::Default && x.flags & APPROX == 0 && !x.words.contains(&"full")
        {
            return Err(x.unsupported());
        }
        self.arith(x, inst, op, ty, 2)
    }

    /// mul.{lo,hi,wide} and mad.{lo,wide} on integers, mul and mad (an fma) on floats.
    pub(super) fn mul_mad(&mut self, x: &Ctx, inst: &mut Inst) -> Result<(), LoadError> {
        let ty = x.one_ty()?;
        let n = if x.base == "mul" { 2 } else { 3 };
        if ty.is_half() && x.base == "mul" {
            return self.half(x, inst, Op::FMul, ty);
        }
        if ty.is_half() {
            return Err(x.unsupported());
        }
        let op = if ty.is_float() {
            x.only(&[])?;
            if x.base == "mul" {
                Op::FMul
            } else {
                Op::Fma
            }
        } else {
            match (x.base, x.words.as_slice()) {
                ("mul", ["lo"]) => Op::MulLo,
                ("mul", ["hi"]) => Op::MulHi,
                ("mul", ["wide"]) => Op::MulWide,
                ("mad", ["lo"]) => Op::MadLo,
                ("mad", ["wide"]) => Op::MadWide,
                _ => return Err(x.unsupported()),
            }
        };
        self.arith(x, inst, op, ty, n)?;
        if op == Op::MadWide {
            // The addend of mad.wide is the double-width type.
            let wide = if ty.is_signed() { Ty::S64 } else { Ty::U64 };
            inst.c = self.reg(x, &x.ops[3], wide)?;
        }
        Ok(())
    }

    pub(super) fn fma(&mut self, x: &Ctx, inst: &mut Inst) -> Result<(), LoadError> {
        let ty = x.one_ty()?;
        if ty.is_half() {
            return self.half(x, inst, Op::Fma, ty);
        }
        x.only(&[])?;
        if !ty.is_float() || x.round == Round::Default {
            return Err(x.unsupported());
        }
        self.arith(x, inst, Op::Fma, ty, 3)
    }

    pub(super) fn rcp_sqrt_ex2_lg2(&mut self, x: &Ctx, inst: &mut Inst) -> Result<(), LoadError> {
        let ty = x.one_ty()?;
        x.only(&[])?;
        let op = match x.base {
            "rcp" => Op::Rcp,
            "sqrt" => Op::Sqrt,
            "ex2" => Op::Ex2,
            _ => Op::Lg2,
        };
        let ok = match op {
            Op::Rcp | Op::Sqrt => ty.is_float() && (x.round == Round::Rn || x.flags & APPROX != 0),
            _ => ty == Ty::F32 && x.flags & APPROX != 0,
        };
        if !ok || ty.is_half() {
            return Err(x.unsupported());
        }
        self.arith(x, inst, op, ty, 1)
    }

    pub(super) fn abs_neg_not(&mut self, x: &Ctx, inst: &mut Inst) -> Result<(), LoadError> {
        let ty = x.one_ty()?;
        let op = match (x.base, ty.is_float()) {
            ("abs", true) => Op::FAbs,
            ("neg", true) => Op::FNeg,
            ("abs", false) => Op::Abs,
            ("neg", false) => Op::Neg,
            ("not", false) => Op::Not,
            _ => return Err(x.unsupported()),
        };
        if ty.is_half() {
            return self.half(x, inst, op, ty);
        }
        x.only(&[])?;
        if ty == Ty::F16 {
            return Err(x.unsupported());
        }
        self.arith(x, inst, op, ty, 1)
    }

    /// shl and shr: the shift amount is a u32 whatever the type.
    pub(super) fn shift(&mut self, x: &Ctx, inst: &mut Inst) -> Result<(), LoadError> {
        let ty = x.one_ty()?;
        x.only(&[])?;
        if ty.is_float() || ty == Ty::Pred {
            return Err(x.unsupported());
        }
        x.nops(3)?;
        let ops = x.ops;
        inst.op = if x.base == "shl" { Op::Shl } else { Op::Shr };
        inst.ty = ty;
        inst.d = x.dreg(&ops[0])?;
        inst.a = self.reg(x, &ops[1], ty)?;
        inst.b = self.reg(x, &ops[2], Ty::U32)?;
        Ok(())
    }

    /// The 16-bit float forms (exec/half.rs), as the PTX ISA gives them (9.7.4, "Half
    /// Precision Floating-Point Instructions"):
    /// - `fma.rn.bf16`, `fma.rn.bf16x2` (9.7.4.4: sm_80); `fma.rn.f16` (sm_53) without
    ///   `.ftz`, `.sat` or `.relu`, which the emulator does not implement for f16;
    /// - `add`, `sub`, `mul` `{.rn}` on `.bf16` and `.bf16x2` (9.7.4.1-3: sm_90; nvcc
    ///   lowers `__hadd` and friends to `fma.rn` with 1.0 or -1.0 on sm_80);
    /// - `min`, `max` `{.NaN}` on `.bf16` and `.bf16x2` (9.7.4.7-8: sm_80);
    /// - `neg`, `abs` on `.bf16` and `.bf16x2` (9.7.4.5-6: sm_80).
    ///
    /// Everything else on these types (f16 arithmetic other than fma, `.relu`,
    /// `.xorsign.abs`, `.oob`, the f16x2 forms) is refused as unsupported.
    fn half(&mut self, x: &Ctx, inst: &mut Inst, op: Op, ty: Ty) -> Result<(), LoadError> {
        let bf16 = ty != Ty::F16;
        let plain = x.flags == 0;
        let n = match op {
            Op::Fma => {
                x.only(&[])?;
                if x.round != Round::Rn || !plain {
                    return Err(x.unsupported());
                }
                if bf16 {
                    self.need_sm(x, 80)?;
                }
                3
            }
            Op::FAdd | Op::FSub | Op::FMul if bf16 => {
                x.only(&[])?;
                if !matches!(x.round, Round::Default | Round::Rn) || !plain {
                    return Err(x.unsupported());
                }
                self.need_sm(x, 90)?;
                2
            }
            Op::FMin | Op::FMax if bf16 => {
                x.only(&["NaN"])?;
                if x.round != Round::Default || !plain {
                    return Err(x.unsupported());
                }
                self.need_sm(x, 80)?;
                if x.words.contains(&"NaN") {
                    inst.flags |= NAN;
                }
                2
            }
            Op::FAbs | Op::FNeg if bf16 => {
                x.only(&[])?;
                if x.round != Round::Default || !plain {
                    return Err(x.unsupported());
                }
                self.need_sm(x, 80)?;
                1
            }
            _ => return Err(x.unsupported()),
        };
        self.arith(x, inst, op, ty, n)
    }
}
