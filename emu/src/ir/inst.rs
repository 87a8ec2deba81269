//! Lowering one instruction: its modifiers classified ([`Ctx`]), the operand helpers
//! every family uses, the dispatch by base opcode to the family files, and the checks
//! every form shares (rounding, ftz and sat).

use std::collections::HashMap;

use super::{blank, err, special, Inst, Lower, Op, Round, Space, Sym, Ty, APPROX, FTZ, NONE, SAT};
use crate::ptx::parse::{Imm, InstAst, Operand};
use crate::ptx::LoadError;

/// One instruction being lowered: its opcode split into the base and classified
/// modifiers, its operands, and the names in scope.
pub(super) struct Ctx<'i> {
    pub(super) i: &'i InstAst,
    pub(super) line: usize,
    /// The opcode up to its first `.`: `add`, `ld`, `wmma`...
    pub(super) base: &'i str,
    /// Every modifier after the base, in order.
    pub(super) mods: Vec<&'i str>,
    /// The type modifiers, in order.
    pub(super) tys: Vec<Ty>,
    pub(super) round: Round,
    /// [`FTZ`], [`SAT`], [`APPROX`].
    pub(super) flags: u8,
    /// The state-space modifier, if any (the last one given).
    pub(super) space: Option<Space>,
    /// 1, or 2 or 4 for `.v2` and `.v4`.
    pub(super) vec: u32,
    /// The modifiers that are none of the above, in order.
    pub(super) words: Vec<&'i str>,
    pub(super) ops: &'i [Operand],
    pub(super) labels: &'i HashMap<String, i64>,
    scopes: &'i [HashMap<String, Sym>],
}

impl<'i> Ctx<'i> {
    /// Classifies the modifiers of `i`.
    fn new(i: &'i InstAst, scopes: &'i [HashMap<String, Sym>], labels: &'i HashMap<String, i64>) -> Ctx<'i> {
        let mut parts = i.opcode.split('.');
        let base = parts.next().unwrap_or("");
        let mods: Vec<&str> = parts.collect();
        let mut tys = Vec::new();
        let mut round = Round::Default;
        let mut flags = 0u8;
        let mut space = None;
        let mut vec = 1u32;
        let mut words: Vec<&str> = Vec::new();
        for m in &mods {
            if let Some(t) = Ty::parse(m) {
                tys.push(t);
                continue;
            }
            match *m {
                "rn" => round = Round::Rn,
                "rz" => round = Round::Rz,
                "rm" => round = Round::Rm,
                "rp" => round = Round::Rp,
                "rni" => round = Round::Rni,
                "rzi" => round = Round::Rzi,
                "rmi" => round = Round::Rmi,
                "rpi" => round = Round::Rpi,
                "ftz" => flags |= FTZ,
                "sat" => flags |= SAT,
                "approx" => flags |= APPROX,
                "global" => space = Some(Space::Global),
                "shared" => space = Some(Space::Shared),
                "param" => space = Some(Space::Param),
                "v2" => vec = 2,
                "v4" => vec = 4,
                w => words.push(w),
            }
        }
        Ctx { i, line: i.line, base, mods, tys, round, flags, space, vec, words, ops: &i.operands, labels, scopes }
    }

    /// The innermost symbol named `name`.
    pub(super) fn lookup(&self, name: &str) -> Option<Sym> {
        self.scopes.iter().rev().find_map(|s| s.get(name).copied())
    }

    /// The error for a form the emulator does not implement.
    pub(super) fn unsupported(&self) -> LoadError {
        err(self.line, format!("unsupported instruction form `{}`", self.i.opcode))
    }

    /// Fails unless every remaining modifier word is in `allowed`.
    pub(super) fn only(&self, allowed: &[&str]) -> Result<(), LoadError> {
        match self.words.iter().find(|w| !allowed.contains(w)) {
            Some(_) => Err(self.unsupported()),
            None => Ok(()),
        }
    }

    /// The one type modifier.
    pub(super) fn one_ty(&self) -> Result<Ty, LoadError> {
        match self.tys.as_slice() {
            [t] => Ok(*t),
            _ => Err(self.unsupported()),
        }
    }

    /// Fails unless there are `n` operands.
    pub(super) fn nops(&self, n: usize) -> Result<(), LoadError> {
        if self.ops.len() == n {
            Ok(())
        } else {
            Err(err(self.line, format!("`{}` takes {n} operands, found {}", self.i.opcode, self.ops.len())))
        }
    }

    /// A destination operand as a register index.
    pub(super) fn dreg(&self, o: &Operand) -> Result<u32, LoadError> {
        match o {
            Operand::Name(n) => match self.lookup(n) {
                Some(Sym::Reg(r)) | Some(Sym::ParamReg(r)) => Ok(r),
                _ => Err(err(self.line, format!("`{n}` is not a register"))),
            },
            _ => Err(err(self.line, format!("destination {o:?} is not a register"))),
        }
    }
}

impl Lower<'_> {
    /// Lowers one instruction statement to one instruction.
    pub(super) fn inst(
        &mut self,
        i: &InstAst,
        scopes: &[HashMap<String, Sym>],
        labels: &HashMap<String, i64>,
    ) -> Result<Inst, LoadError> {
        let x = Ctx::new(i, scopes, labels);
        let mut inst = blank(Op::Mov, x.line);
        let (guard, guard_neg) = match &i.guard {
            None => (NONE, false),
            Some((p, neg)) => match x.lookup(p) {
                Some(Sym::Reg(r)) => (r, *neg),
                _ => return Err(err(x.line, format!("guard `{p}` is not a register"))),
            },
        };
        inst.guard = guard;
        inst.guard_neg = guard_neg;
        inst.round = x.round;
        inst.flags = x.flags;

        match x.base {
            // Arithmetic (arith.rs).
            "add" | "sub" | "min" | "max" | "and" | "or" | "xor" | "copysign" | "div" | "rem" => {
                self.binary(&x, &mut inst)?
            }
            "mul" | "mad" => self.mul_mad(&x, &mut inst)?,
            "fma" => self.fma(&x, &mut inst)?,
            "rcp" | "sqrt" | "ex2" | "lg2" => self.rcp_sqrt_ex2_lg2(&x, &mut inst)?,
            "abs" | "neg" | "not" => self.abs_neg_not(&x, &mut inst)?,
            "shl" | "shr" => self.shift(&x, &mut inst)?,
            // Comparisons and selects (compare.rs).
            "setp" => self.setp(&x, &mut inst)?,
            "set" => self.set(&x, &mut inst)?,
            "selp" => self.selp(&x, &mut inst)?,
            // Moves and conversions (convert.rs).
            "cvt" => self.cvt(&x, &mut inst)?,
            "cvta" => self.cvta(&x, &mut inst)?,
            "mov" => self.mov(&x, &mut inst)?,
            // Memory (memory.rs). A call parameter held in a register becomes a move,
            // which takes the shared checks now (a move has no rounding or ftz) and none
            // of the others below.
            "ld" | "st" => {
                if self.ld_st(&x, &mut inst)? {
                    check_round_and_flags(&x, &inst)?;
                    return Ok(inst);
                }
            }
            "cp" => self.cp_async(&x, &mut inst)?,
            // Control (control.rs).
            "bra" => self.bra(&x, &mut inst)?,
            "ret" | "exit" => self.ret_exit(&x, &mut inst)?,
            "call" => self.call(&x, &mut inst)?,
            // Collectives (collective.rs).
            "bar" | "barrier" => self.bar(&x, &mut inst)?,
            "shfl" => self.shfl(&x, &mut inst)?,
            "wmma" => self.wmma(&x, &mut inst)?,
            _ => return Err(x.unsupported()),
        }
        check_round_and_flags(&x, &inst)?;
        Ok(inst)
    }

    /// Fails unless the module's `.target` is sm_`sm` or newer: a form the PTX ISA's
    /// target notes give only to newer architectures is refused at load, as ptxas
    /// refuses it ("requires sm_80 or higher"), instead of running on a device that has
    /// no such instruction.
    pub(super) fn need_sm(&self, x: &Ctx, sm: u32) -> Result<(), LoadError> {
        let target = self.ast.target;
        if target < sm {
            return Err(err(
                x.line,
                format!("`{}` requires sm_{sm} or higher; this module's .target is sm_{target}", x.i.opcode),
            ));
        }
        Ok(())
    }

    /// Sets `op` and `ty` and the operands `d, a[, b[, c]]` of an arithmetic instruction
    /// with `n` sources, all of type `ty`: the operand handling unary, binary and ternary
    /// arithmetic share.
    pub(super) fn arith(&mut self, x: &Ctx, inst: &mut Inst, op: Op, ty: Ty, n: usize) -> Result<(), LoadError> {
        let ops = x.ops;
        if ops.len() != n + 1 {
            return Err(err(x.line, format!("`{}` takes {} operands, found {}", x.i.opcode, n + 1, ops.len())));
        }
        inst.op = op;
        inst.ty = ty;
        inst.d = x.dreg(&ops[0])?;
        inst.a = self.reg(x, &ops[1], ty)?;
        if n > 1 {
            inst.b = self.reg(x, &ops[2], ty)?;
        }
        if n > 2 {
            inst.c = self.reg(x, &ops[3], ty)?;
        }
        Ok(())
    }

    /// A source operand as a register index: registers as they are, immediates and
    /// symbol addresses as constant slots.
    pub(super) fn reg(&mut self, x: &Ctx, o: &Operand, ty: Ty) -> Result<u32, LoadError> {
        match o {
            Operand::Name(n) => {
                if let Some(s) = special_reg(n) {
                    return Ok(s);
                }
                match x.lookup(n) {
                    Some(Sym::Reg(r)) | Some(Sym::ParamReg(r)) => Ok(r),
                    Some(Sym::KernelParam(off)) => Ok(self.constant(off)),
                    None => match self.shared.get(n.as_str()) {
                        Some(&off) => Ok(self.constant(off)),
                        None => Err(err(x.line, format!("unknown name `{n}`"))),
                    },
                }
            }
            Operand::Imm(imm) => Ok(self.constant(imm_bits(*imm, ty))),
            _ => Err(err(x.line, format!("unsupported operand {o:?}"))),
        }
    }

    /// An address operand as (register holding the base, offset). `[sym+off]` becomes
    /// a constant base.
    pub(super) fn address(
        &mut self,
        x: &Ctx,
        base: Option<&str>,
        offset: i64,
        space: Space,
    ) -> Result<(u32, i64), LoadError> {
        let Some(name) = base else { return Ok((self.constant(0), offset)) };
        match x.lookup(name) {
            Some(Sym::Reg(r)) => Ok((r, offset)),
            Some(Sym::KernelParam(p)) if space == Space::Param => Ok((self.constant(p), offset)),
            None => match self.shared.get(name) {
                Some(&s) if space == Space::Shared => Ok((self.constant(s), offset)),
                _ => Err(err(x.line, format!("unknown address `{name}`"))),
            },
            _ => Err(err(x.line, format!("`{name}` is not addressable in this state space"))),
        }
    }
}

/// The checks every lowered form shares.
fn check_round_and_flags(x: &Ctx, inst: &Inst) -> Result<(), LoadError> {
    // Rounding: only the modes the executor implements, where the ISA allows them.
    let round_ok = match inst.op {
        // Directed rounding is implemented for f32 add, sub, mul and fma (exec/float.rs).
        Op::FAdd | Op::FSub | Op::FMul | Op::Fma if inst.ty == Ty::F32 => {
            matches!(inst.round, Round::Default | Round::Rn | Round::Rz | Round::Rm | Round::Rp)
        }
        Op::FAdd | Op::FSub | Op::FMul | Op::Fma | Op::FDiv | Op::Rcp | Op::Sqrt => {
            matches!(inst.round, Round::Default | Round::Rn)
        }
        // cvt.rn.bf16x2.f32 (convert.rs checks the bf16 forms).
        Op::Cvt if matches!(inst.ty, Ty::BF16X2 | Ty::F16X2) => inst.round == Round::Rn,
        Op::Cvt => {
            let (dt, st) = (inst.ty, inst.ty2);
            match (dt.is_float(), st.is_float()) {
                (true, true) if dt.size() < st.size() => inst.round == Round::Rn,
                (true, true) => {
                    matches!(inst.round, Round::Default | Round::Rni | Round::Rzi | Round::Rmi | Round::Rpi)
                }
                (false, true) => matches!(inst.round, Round::Rni | Round::Rzi | Round::Rmi | Round::Rpi),
                (true, false) => matches!(inst.round, Round::Default | Round::Rn),
                (false, false) => inst.round == Round::Default,
            }
        }
        _ => inst.round == Round::Default,
    };
    if !round_ok {
        return Err(x.unsupported());
    }
    // Float-only modifiers on anything else are a form we do not know.
    if (inst.flags & (FTZ | SAT) != 0) && !(inst.op.is_float_arith() || matches!(inst.op, Op::Setp(_) | Op::Cvt)) {
        return Err(x.unsupported());
    }
    Ok(())
}

fn special_reg(n: &str) -> Option<u32> {
    use special::*;
    let axis = |s: &str| match s {
        "x" => Some(0),
        "y" => Some(1),
        "z" => Some(2),
        _ => None,
    };
    let (name, ax) = n.split_once('.').map_or((n, None), |(a, b)| (a, axis(b)));
    Some(match (name, ax) {
        ("%tid", Some(a)) => TID + a,
        ("%ntid", Some(a)) => NTID + a,
        ("%ctaid", Some(a)) => CTAID + a,
        ("%nctaid", Some(a)) => NCTAID + a,
        ("%laneid", None) => LANEID,
        ("%warpid", None) => WARPID,
        ("%nwarpid", None) => NWARPID,
        _ => return None,
    })
}

/// The bits of an immediate as an operand of type `ty`: integers as two's complement,
/// float literals as their bits (converted when the literal's width differs from the
/// type's, as ptxas does).
fn imm_bits(imm: Imm, ty: Ty) -> u64 {
    match (imm, ty) {
        (Imm::Int(v), Ty::F32) => (v as i64 as f32).to_bits() as u64,
        (Imm::Int(v), Ty::F64) => (v as i64 as f64).to_bits(),
        (Imm::F32(b), Ty::F64) => (f32::from_bits(b) as f64).to_bits(),
        (Imm::F64(b), Ty::F32) => (f64::from_bits(b) as f32).to_bits() as u64,
        (Imm::F32(b), _) => b as u64,
        (Imm::F64(b), _) | (Imm::Int(b), _) => b,
    }
}
