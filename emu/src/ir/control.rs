//! Control: bra, call, ret, exit.

use super::inst::Ctx;
use super::{err, Inst, Lower, Op, Sym};
use crate::ptx::parse::Operand;
use crate::ptx::LoadError;

impl Lower<'_> {
    pub(super) fn bra(&mut self, x: &Ctx, inst: &mut Inst) -> Result<(), LoadError> {
        let line = x.line;
        x.only(&["uni"])?;
        x.nops(1)?;
        let Operand::Name(l) = &x.ops[0] else { return Err(err(line, "bra needs a label")) };
        inst.op = Op::Bra;
        inst.off = *x.labels.get(l).ok_or_else(|| err(line, format!("unknown label `{l}`")))?;
        Ok(())
    }

    pub(super) fn ret_exit(&mut self, x: &Ctx, inst: &mut Inst) -> Result<(), LoadError> {
        x.only(&["uni"])?;
        x.nops(0)?;
        inst.op = if x.base == "ret" { Op::Ret } else { Op::Exit };
        Ok(())
    }

    /// A call, its callee resolved once every function is lowered ([`super::lower_kernel`]).
    pub(super) fn call(&mut self, x: &Ctx, inst: &mut Inst) -> Result<(), LoadError> {
        let (line, ops) = (x.line, x.ops);
        x.only(&["uni"])?;
        // call (rets), name, (args);  |  call name, (args);  |  call name;
        let (rets, rest) = match ops.first() {
            Some(Operand::List(r)) => (r.as_slice(), &ops[1..]),
            _ => (&[][..], ops),
        };
        let Some(Operand::Name(callee)) = rest.first() else { return Err(x.unsupported()) };
        let args: &[Operand] = match rest.get(1) {
            Some(Operand::List(a)) => a,
            None => &[],
            _ => return Err(x.unsupported()),
        };
        let pr = |o: &Operand| -> Result<u32, LoadError> {
            match o {
                Operand::Name(n) => match x.lookup(n) {
                    Some(Sym::ParamReg(r)) => Ok(r),
                    _ => Err(err(line, format!("call argument `{n}` is not a .param"))),
                },
                _ => Err(err(line, "call arguments must be .param names")),
            }
        };
        inst.op = Op::Call;
        inst.c = rets.len() as u32;
        inst.v = rets.iter().chain(args).map(pr).collect::<Result<_, _>>()?;
        self.pending_calls.push((self.insts.len(), callee.clone()));
        Ok(())
    }
}
