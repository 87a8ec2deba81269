//! Collectives: bar and barrier (sync, warp.sync, red.or), shfl.sync, and wmma (load,
//! store and mma of m16n16k16 fragments: f16 or bf16 multiplicands, f32 or f16
//! accumulators).

use super::inst::Ctx;
use super::{err, Inst, Layout, Lower, Op, ShflMode, Space, Ty, NONE};
use crate::ptx::parse::Operand;
use crate::ptx::LoadError;

impl Lower<'_> {
    pub(super) fn bar(&mut self, x: &Ctx, inst: &mut Inst) -> Result<(), LoadError> {
        let ops = x.ops;
        match x.words.as_slice() {
            ["sync"] | ["sync", "aligned"] => {
                if ops.is_empty() || ops.len() > 2 {
                    return Err(x.unsupported());
                }
                inst.op = Op::BarSync;
                inst.a = self.reg(x, &ops[0], Ty::U32)?;
                inst.b = if ops.len() == 2 { self.reg(x, &ops[1], Ty::U32)? } else { NONE };
            }
            ["warp", "sync"] => {
                x.nops(1)?;
                inst.op = Op::BarWarpSync;
                inst.a = self.reg(x, &ops[0], Ty::U32)?;
            }
            ["red", "or"] | ["red", "or", "aligned"] if x.tys == [Ty::Pred] => {
                if ops.len() != 3 {
                    return Err(x.unsupported());
                }
                inst.op = Op::BarRedOr;
                inst.d = x.dreg(&ops[0])?;
                inst.a = self.reg(x, &ops[1], Ty::U32)?;
                inst.c = self.reg(x, &ops[2], Ty::Pred)?;
                inst.b = NONE;
            }
            _ => return Err(x.unsupported()),
        }
        if !x.tys.is_empty() && inst.op != Op::BarRedOr {
            return Err(x.unsupported());
        }
        Ok(())
    }

    pub(super) fn shfl(&mut self, x: &Ctx, inst: &mut Inst) -> Result<(), LoadError> {
        let ops = x.ops;
        let ty = x.one_ty()?;
        let mode = match x.words.as_slice() {
            ["sync", "up"] => ShflMode::Up,
            ["sync", "down"] => ShflMode::Down,
            ["sync", "bfly"] => ShflMode::Bfly,
            ["sync", "idx"] => ShflMode::Idx,
            _ => return Err(x.unsupported()),
        };
        if ty != Ty::B32 {
            return Err(x.unsupported());
        }
        x.nops(5)?;
        inst.op = Op::Shfl(mode);
        inst.ty = ty;
        match &ops[0] {
            Operand::Pair(d, p) => {
                inst.d = x.dreg(&Operand::Name(d.clone()))?;
                inst.v = Box::new([x.dreg(&Operand::Name(p.clone()))?]);
            }
            o => inst.d = x.dreg(o)?,
        }
        inst.a = self.reg(x, &ops[1], Ty::B32)?;
        inst.b = self.reg(x, &ops[2], Ty::B32)?;
        inst.c = self.reg(x, &ops[3], Ty::B32)?;
        // The member mask lives in v after the optional predicate destination.
        let m = self.reg(x, &ops[4], Ty::B32)?;
        let mut v = inst.v.to_vec();
        v.insert(0, m);
        inst.v = v.into();
        Ok(())
    }

    pub(super) fn wmma(&mut self, x: &Ctx, inst: &mut Inst) -> Result<(), LoadError> {
        let (words, ops, tys) = (&x.words, x.ops, &x.tys);
        let shape_ok = words.contains(&"m16n16k16") && words.contains(&"sync") && words.contains(&"aligned");
        let layouts: Vec<Layout> = words
            .iter()
            .filter_map(|w| match *w {
                "row" => Some(Layout::Row),
                "col" => Some(Layout::Col),
                _ => None,
            })
            .collect();
        let kind: Vec<&str> =
            words.iter().copied().filter(|w| !matches!(*w, "m16n16k16" | "sync" | "aligned" | "row" | "col")).collect();
        if !shape_ok {
            return Err(x.unsupported());
        }
        match (kind.as_slice(), layouts.as_slice()) {
            (["load", ab], [lay]) if (*ab == "a" || *ab == "b") && matches!(tys.as_slice(), [Ty::F16] | [Ty::BF16]) => {
                let sp = x.space.unwrap_or(Space::Global);
                if sp == Space::Param || ops.len() != 3 {
                    return Err(x.unsupported());
                }
                // bf16 multiplicands: sm_80 (the ISA's target notes of wmma.load and
                // wmma.mma give .bf16 to sm_80 and later), and four .b32 registers per
                // fragment instead of f16's eight ("Matrix Fragments for WMMA").
                let n = if tys[0] == Ty::BF16 {
                    self.need_sm(x, 80)?;
                    4
                } else {
                    8
                };
                inst.op = if *ab == "a" { Op::WmmaLoadA(*lay) } else { Op::WmmaLoadB(*lay) };
                inst.ty = tys[0];
                inst.ty2 = if sp == Space::Shared { Ty::B32 } else { Ty::B64 };
                inst.v = self.frag(x, &ops[0], n, true)?.into();
                let Operand::Mem { base: mb, offset } = &ops[1] else { return Err(x.unsupported()) };
                let (a, off) = self.address(x, mb.as_deref(), *offset, sp)?;
                inst.a = a;
                inst.off = off;
                inst.b = self.reg(x, &ops[2], Ty::U32)?;
            }
            // C and D fragments: eight f32 registers, or four .f16x2 registers of two f16
            // elements each ("Matrix Fragments for WMMA", `.f16` C or D of `.m16n16k16`:
            // "A vector expression of four .f16x2 registers").
            (["load", "c"], [lay]) if matches!(tys.as_slice(), [Ty::F32] | [Ty::F16]) => {
                let sp = x.space.unwrap_or(Space::Global);
                if sp == Space::Param || ops.len() != 3 {
                    return Err(x.unsupported());
                }
                inst.op = Op::WmmaLoadC(*lay);
                inst.ty = tys[0];
                inst.ty2 = if sp == Space::Shared { Ty::B32 } else { Ty::B64 };
                inst.v = self.frag(x, &ops[0], acc_regs(tys[0]), true)?.into();
                let Operand::Mem { base: mb, offset } = &ops[1] else { return Err(x.unsupported()) };
                let (a, off) = self.address(x, mb.as_deref(), *offset, sp)?;
                inst.a = a;
                inst.off = off;
                inst.b = self.reg(x, &ops[2], Ty::U32)?;
            }
            (["store", "d"], [lay]) if matches!(tys.as_slice(), [Ty::F32] | [Ty::F16]) => {
                let sp = x.space.unwrap_or(Space::Global);
                if sp == Space::Param || ops.len() != 3 {
                    return Err(x.unsupported());
                }
                inst.op = Op::WmmaStoreD(*lay);
                inst.ty = tys[0];
                inst.ty2 = if sp == Space::Shared { Ty::B32 } else { Ty::B64 };
                let Operand::Mem { base: mb, offset } = &ops[0] else { return Err(x.unsupported()) };
                let (a, off) = self.address(x, mb.as_deref(), *offset, sp)?;
                inst.a = a;
                inst.off = off;
                inst.v = self.frag(x, &ops[1], acc_regs(tys[0]), false)?.into();
                inst.b = self.reg(x, &ops[2], Ty::U32)?;
            }
            // `.dtype.ctype`, each .f16 or .f32, with a and b implicitly .f16 (PTX ISA,
            // wmma.mma: "wmma.mma.sync.aligned.alayout.blayout.shape.dtype.ctype d, a, b,
            // c"), or, for bf16 (sm_80), `.f32.bf16.bf16.f32` (dtype, atype, btype, ctype).
            // The deprecated `.satfinite` of the floating-point forms is refused.
            (["mma"], [la, lb])
                if matches!(
                    tys.as_slice(),
                    [Ty::F32 | Ty::F16, Ty::F32 | Ty::F16] | [Ty::F32, Ty::BF16, Ty::BF16, Ty::F32]
                ) =>
            {
                if ops.len() != 4 {
                    return Err(x.unsupported());
                }
                let (ty, n) = if tys.len() == 4 {
                    self.need_sm(x, 80)?;
                    (Ty::BF16, 4)
                } else {
                    (Ty::F16, 8)
                };
                let (dtype, ctype) = (tys[0], tys[tys.len() - 1]);
                inst.op = Op::WmmaMma(*la, *lb);
                inst.ty = ty;
                inst.ty2 = dtype;
                let mut v = self.frag(x, &ops[0], acc_regs(dtype), true)?;
                v.extend(self.frag(x, &ops[1], n, false)?);
                v.extend(self.frag(x, &ops[2], n, false)?);
                v.extend(self.frag(x, &ops[3], acc_regs(ctype), false)?);
                inst.v = v.into();
            }
            _ => return Err(x.unsupported()),
        }
        Ok(())
    }

    /// A wmma fragment operand: a vector of `n` registers, destinations when `dst`.
    fn frag(&mut self, x: &Ctx, o: &Operand, n: usize, dst: bool) -> Result<Vec<u32>, LoadError> {
        match o {
            Operand::Vector(v) if v.len() == n => {
                v.iter().map(|o| if dst { x.dreg(o) } else { self.reg(x, o, Ty::B32) }).collect()
            }
            _ => Err(err(x.line, format!("`{}` needs a fragment of {n} registers", x.i.opcode))),
        }
    }
}

/// Registers of an m16n16k16 C or D fragment of element type `ty`: eight f32, or four
/// .f16x2.
pub(crate) fn acc_regs(ty: Ty) -> usize {
    if ty == Ty::F16 {
        4
    } else {
        8
    }
}
