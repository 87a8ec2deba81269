//! Memory: ld, st, cp.async (with commit_group, wait_group, wait_all).

use super::inst::Ctx;
use super::{err, Inst, Lower, Op, Space, Sym, Ty};
use crate::ptx::parse::{Imm, Operand};
use crate::ptx::LoadError;

impl Lower<'_> {
    /// ld and st. Returns true when the address is a call parameter held in a register,
    /// lowered to a move, which [`Lower::inst`] returns after the shared rounding and
    /// ftz/sat checks (so `ld.param.rn` there is refused as everywhere).
    pub(super) fn ld_st(&mut self, x: &Ctx, inst: &mut Inst) -> Result<bool, LoadError> {
        let (line, ops, base) = (x.line, x.ops, x.base);
        let ty = x.one_ty()?;
        let space = x.space.ok_or_else(|| x.unsupported())?;
        x.only(&["nc", "ca", "cg", "cs", "lu", "cv", "wb", "wt"])?;
        if x.words.contains(&"nc") && (base != "ld" || space != Space::Global) {
            return Err(x.unsupported());
        }
        x.nops(2)?;
        let (mem, val) = if base == "ld" { (&ops[1], &ops[0]) } else { (&ops[0], &ops[1]) };
        let Operand::Mem { base: mbase, offset } = mem else {
            return Err(err(line, format!("`{}` needs a [address] operand", x.i.opcode)));
        };
        inst.ty = ty;
        // A parameter held in a register (call sequences, callee parameters): a move.
        if let Some(Sym::ParamReg(r)) = mbase.as_deref().and_then(|n| x.lookup(n)) {
            if space != Space::Param || *offset != 0 || x.vec != 1 {
                return Err(err(
                    line,
                    format!("unsupported access to call parameter `{}`", mbase.as_deref().unwrap_or("")),
                ));
            }
            inst.op = Op::Mov;
            if base == "ld" {
                inst.d = x.dreg(val)?;
                inst.a = r;
            } else {
                inst.d = r;
                inst.a = self.reg(x, val, ty)?;
            }
            return Ok(true);
        }
        inst.op = if base == "ld" { Op::Ld(space) } else { Op::St(space) };
        if x.words.contains(&"nc") {
            inst.flags |= super::NC;
        }
        let (a, off) = self.address(x, mbase.as_deref(), *offset, space)?;
        inst.a = a;
        inst.off = off;
        let regs: Vec<&Operand> = match (val, x.vec) {
            (Operand::Vector(v), n) if v.len() == n as usize && n > 1 => v.iter().collect(),
            (o, 1) if !matches!(o, Operand::Vector(_)) => vec![o],
            _ => return Err(x.unsupported()),
        };
        inst.v = if base == "ld" {
            regs.iter().map(|o| x.dreg(o)).collect::<Result<_, _>>()?
        } else {
            regs.iter().map(|o| self.reg(x, o, ty)).collect::<Result<_, _>>()?
        };
        Ok(false)
    }

    /// cp.async.{ca,cg}.shared.global, cp.async.commit_group, cp.async.wait_group,
    /// cp.async.wait_all.
    pub(super) fn cp_async(&mut self, x: &Ctx, inst: &mut Inst) -> Result<(), LoadError> {
        let ops = x.ops;
        match x.words.as_slice() {
            ["async", "commit_group"] => {
                x.nops(0)?;
                inst.op = Op::CpAsyncCommit;
            }
            ["async", "wait_group"] => {
                x.nops(1)?;
                let Operand::Imm(Imm::Int(n)) = ops[0] else { return Err(x.unsupported()) };
                inst.op = Op::CpAsyncWait;
                inst.off = n as i64;
            }
            ["async", "wait_all"] => {
                // wait_all commits the uncommitted copies first: b marks it.
                x.nops(0)?;
                inst.op = Op::CpAsyncWait;
                inst.off = 0;
                inst.b = 0;
            }
            ["async", "cg"] | ["async", "ca"] => {
                // cp.async.cg.shared.global [dst], [src], size{, src_size};
                let spaces: Vec<&str> = x.mods.iter().copied().filter(|m| matches!(*m, "shared" | "global")).collect();
                if spaces != ["shared", "global"] {
                    return Err(x.unsupported());
                }
                if ops.len() != 3 && ops.len() != 4 {
                    return Err(x.unsupported());
                }
                let (Operand::Mem { base: db, offset: doff }, Operand::Mem { base: sb, offset: soff }) =
                    (&ops[0], &ops[1])
                else {
                    return Err(x.unsupported());
                };
                let Operand::Imm(Imm::Int(size)) = ops[2] else { return Err(x.unsupported()) };
                if !matches!(size, 4 | 8 | 16) || x.words[1] == "cg" && size != 16 {
                    return Err(x.unsupported());
                }
                inst.op = Op::CpAsync;
                let (d, doff) = self.address(x, db.as_deref(), *doff, Space::Shared)?;
                let (a, aoff) = self.address(x, sb.as_deref(), *soff, Space::Global)?;
                inst.d = d;
                inst.a = a;
                // Offsets of both addresses and the sizes packed in v.
                inst.off = size as i64;
                inst.b = if ops.len() == 4 { self.reg(x, &ops[3], Ty::U32)? } else { self.constant(size) };
                // The two address offsets; the executor adds them to regs[d] and regs[a].
                inst.v = Box::new([doff as i32 as u32, aoff as i32 as u32]);
            }
            _ => return Err(x.unsupported()),
        }
        Ok(())
    }
}
