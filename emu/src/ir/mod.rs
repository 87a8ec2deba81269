//! The lowered form the executor runs: one array of [`Inst`] per kernel (its callees
//! appended), every operand an index into the thread's register file.
//!
//! Register file layout of a thread: the special registers at fixed indices
//! ([`special`]), then the kernel's registers, then those of every function it calls
//! (each function its own range: no recursion in our PTX, so a call needs no stack of
//! register windows), then the constants (immediates and symbol addresses), which the
//! executor writes once per launch and nothing ever writes again. An operand is then
//! always `regs[i]`: no look-up, no branch on operand kind.
//!
//! This file holds the lowered types and the lowering of functions ([`lower_kernel`]);
//! one instruction is lowered in `inst.rs` (its modifiers, the operand helpers, the
//! dispatch by opcode and the checks every form shares), each family of instructions in
//! its own file: `arith.rs` (integer and float arithmetic), `compare.rs` (setp, selp),
//! `convert.rs` (mov, cvt, cvta), `memory.rs` (ld, st, cp.async), `control.rs` (bra,
//! call, ret, exit) and `collective.rs` (bar, barrier, shfl, wmma).

mod arith;
pub(crate) mod collective;
mod compare;
mod control;
mod convert;
pub mod fast;
mod inst;
mod memory;

use std::collections::HashMap;

use crate::ptx::parse::{Ast, Function, Stmt};
use crate::ptx::{Kernel, LoadError, Param};

/// The special registers, at fixed register indices.
pub mod special {
    pub const TID: u32 = 0; // .x .y .z at 0, 1, 2
    pub const NTID: u32 = 3;
    pub const CTAID: u32 = 6;
    pub const NCTAID: u32 = 9;
    pub const LANEID: u32 = 12;
    pub const WARPID: u32 = 13;
    pub const NWARPID: u32 = 14;
    pub const COUNT: u32 = 16;
}

/// Registers a kernel (with its callees) may declare.
pub const MAX_REGS: u32 = 1 << 18;

/// No register (an absent guard, an unused operand).
pub const NONE: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    B8,
    U8,
    S8,
    B16,
    U16,
    S16,
    F16,
    /// bfloat16: the upper 16 bits of an f32 (1 sign, 8 exponent, 7 fraction bits).
    BF16,
    B32,
    U32,
    S32,
    F32,
    /// Two bf16 in a .b32: element 0 in the low half, element 1 in the high half.
    BF16X2,
    /// Two f16 in a .b32, as BF16X2 (only `cvt.rn.f16x2.f32` uses it).
    F16X2,
    B64,
    U64,
    S64,
    F64,
    Pred,
}

impl Ty {
    fn parse(s: &str) -> Option<Ty> {
        Some(match s {
            "b8" => Ty::B8,
            "u8" => Ty::U8,
            "s8" => Ty::S8,
            "b16" => Ty::B16,
            "u16" => Ty::U16,
            "s16" => Ty::S16,
            "f16" => Ty::F16,
            "bf16" => Ty::BF16,
            "bf16x2" => Ty::BF16X2,
            "f16x2" => Ty::F16X2,
            "b32" => Ty::B32,
            "u32" => Ty::U32,
            "s32" => Ty::S32,
            "f32" => Ty::F32,
            "b64" => Ty::B64,
            "u64" => Ty::U64,
            "s64" => Ty::S64,
            "f64" => Ty::F64,
            "pred" => Ty::Pred,
            _ => return None,
        })
    }
    /// Width in bytes (predicates: 1).
    pub fn size(self) -> u32 {
        match self {
            Ty::B8 | Ty::U8 | Ty::S8 | Ty::Pred => 1,
            Ty::B16 | Ty::U16 | Ty::S16 | Ty::F16 | Ty::BF16 => 2,
            Ty::B32 | Ty::U32 | Ty::S32 | Ty::F32 | Ty::BF16X2 | Ty::F16X2 => 4,
            Ty::B64 | Ty::U64 | Ty::S64 | Ty::F64 => 8,
        }
    }
    pub fn bits(self) -> u32 {
        self.size() * 8
    }
    pub fn is_float(self) -> bool {
        matches!(self, Ty::F16 | Ty::BF16 | Ty::BF16X2 | Ty::F16X2 | Ty::F32 | Ty::F64)
    }
    /// The 16-bit float types (and bf16x2, two of them), which exec/half.rs computes.
    pub fn is_half(self) -> bool {
        matches!(self, Ty::F16 | Ty::BF16 | Ty::BF16X2)
    }
    /// The integer and bit types (every type but the floats, packed halves and predicates).
    pub fn is_int(self) -> bool {
        !self.is_float() && self != Ty::Pred
    }
    pub fn is_signed(self) -> bool {
        matches!(self, Ty::S8 | Ty::S16 | Ty::S32 | Ty::S64)
    }
}

/// Comparison of `setp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Equ,
    Neu,
    Ltu,
    Leu,
    Gtu,
    Geu,
    Num,
    Nan,
}

/// Rounding modifier of float arithmetic and `cvt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Round {
    /// None given: the instruction's default (rn for float results, exact or truncating
    /// for integer ones as the ISA says).
    Default,
    Rn,
    Rz,
    Rm,
    Rp,
    Rni,
    Rzi,
    Rmi,
    Rpi,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    Global,
    Shared,
    Param,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShflMode {
    Up,
    Down,
    Bfly,
    Idx,
}

/// A wmma matrix layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Row,
    Col,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    // Integer and bit operations (exec/int.rs).
    Add,
    Sub,
    MulLo,
    MulHi,
    MulWide,
    MadLo,
    MadWide,
    Div,
    Rem,
    Min,
    Max,
    Neg,
    Abs,
    And,
    Or,
    Xor,
    Not,
    Shl,
    Shr,
    Selp,
    Mov,
    /// `mov.bN d, {a, b}`: the vector operands in `v`, lowest first.
    Pack,
    /// `mov.bN {a, b}, s`
    Unpack,
    // Floating point (exec/float.rs); `ty` is F32 or F64, or F16, BF16 or BF16X2, which
    // float.rs hands to exec/half.rs.
    FAdd,
    FSub,
    FMul,
    Fma,
    FDiv,
    Rcp,
    Sqrt,
    Ex2,
    Lg2,
    FAbs,
    FNeg,
    FMin,
    FMax,
    Copysign,
    Setp(Cmp),
    /// `set.cmp.dtype.stype d, a, b`: `ty` the destination type, `ty2` the source type
    /// (f32 or bf16); d is 1.0 (a float dtype) or all ones (an integer one) when true.
    Set(Cmp),
    /// `cvt.dst.src`: `ty` the destination type, `ty2` the source type.
    Cvt,
    // Memory (exec/access.rs). Address = regs[a] + off; value(s) in d / v.
    Ld(Space),
    St(Space),
    CpAsync,
    CpAsyncCommit,
    CpAsyncWait,
    // Control.
    Bra,
    Call,
    Ret,
    Exit,
    // Collectives (exec/warp.rs, exec/mod.rs).
    BarSync,
    BarRedOr,
    BarWarpSync,
    Shfl(ShflMode),
    WmmaLoadA(Layout),
    WmmaLoadB(Layout),
    /// `wmma.load.c` of an f32 accumulator fragment.
    WmmaLoadC(Layout),
    WmmaMma(Layout, Layout),
    WmmaStoreD(Layout),
}

impl Op {
    /// The floating-point arithmetic of exec/float.rs (float `setp` runs there too).
    pub fn is_float_arith(self) -> bool {
        matches!(
            self,
            Op::FAdd
                | Op::FSub
                | Op::FMul
                | Op::Fma
                | Op::FDiv
                | Op::Rcp
                | Op::Sqrt
                | Op::Ex2
                | Op::Lg2
                | Op::FAbs
                | Op::FNeg
                | Op::FMin
                | Op::FMax
                | Op::Copysign
        )
    }
}

pub const FTZ: u8 = 1;
pub const SAT: u8 = 2;
pub const APPROX: u8 = 4;
/// `ld.global.nc`: the non-coherent path, for data read-only during the kernel.
pub const NC: u8 = 8;
/// `min.NaN` / `max.NaN`: a NaN operand makes the result the canonical NaN.
pub const NAN: u8 = 16;

/// One lowered instruction.
#[derive(Clone, Debug)]
pub struct Inst {
    pub op: Op,
    pub ty: Ty,
    pub ty2: Ty,
    pub round: Round,
    pub flags: u8,
    /// Guard predicate register, or [`NONE`].
    pub guard: u32,
    pub guard_neg: bool,
    pub d: u32,
    pub a: u32,
    pub b: u32,
    pub c: u32,
    /// Vector operands: ld/st/pack elements; wmma fragments (d, then a, b, c);
    /// call: the caller's return registers then its argument registers.
    pub v: Box<[u32]>,
    /// Memory offset; branch target pc; callee index; cp.async size; wait_group count.
    pub off: i64,
    pub line: u32,
}

/// A function other than the kernel, lowered into the kernel's code.
pub struct Callee {
    pub entry: u32,
    pub params: Vec<u32>,
    pub rets: Vec<u32>,
}

/// What the executor needs of one kernel.
pub struct Code {
    pub insts: Vec<Inst>,
    pub callees: Vec<Callee>,
    /// Registers in a thread's file, constants included.
    pub nregs: u32,
    /// (register, value) of every constant slot.
    pub consts: Vec<(u32, u64)>,
    /// The `.func`s called from this kernel, by name, for error messages.
    pub names: Vec<String>,
    /// The fast form of each instruction, by pc ([`fast`]).
    pub fast: Vec<fast::Fast>,
    /// Whether any instruction is an `ld.global.nc` (which the global racecheck must
    /// judge against the launch's own writes even in a launch of one block).
    pub nc_loads: bool,
}

#[derive(Clone, Copy)]
enum Sym {
    Reg(u32),
    /// A `.param` held in a register (call-site and callee parameters).
    ParamReg(u32),
    /// A kernel parameter at this offset of the parameter buffer.
    KernelParam(u64),
}

struct Lower<'a> {
    ast: &'a Ast,
    shared: &'a HashMap<String, u64>,
    insts: Vec<Inst>,
    callees: Vec<Callee>,
    callee_index: HashMap<String, usize>,
    next_reg: u32,
    consts: HashMap<u64, u32>,
    const_list: Vec<(u64, u32)>,
    /// Call instructions whose callee pc is not known yet: (inst index, callee name).
    pending_calls: Vec<(usize, String)>,
}

fn err(line: usize, message: impl Into<String>) -> LoadError {
    LoadError { line, message: message.into() }
}

/// Lowers kernel `f` with every function it calls. `shared` gives the offset of each
/// `.shared` variable in this kernel's shared memory.
pub fn lower_kernel(ast: &Ast, f: &Function, shared: &HashMap<String, u64>) -> Result<Kernel, LoadError> {
    let mut params = Vec::new();
    let mut offset = 0usize;
    let mut scope = HashMap::new();
    for p in &f.params {
        offset = offset.div_ceil(p.align) * p.align;
        params.push(Param { offset, size: p.size });
        scope.insert(p.name.clone(), Sym::KernelParam(offset as u64));
        offset += p.size;
    }
    let mut l = Lower {
        ast,
        shared,
        insts: Vec::new(),
        callees: Vec::new(),
        callee_index: HashMap::new(),
        next_reg: special::COUNT,
        consts: HashMap::new(),
        const_list: Vec::new(),
        pending_calls: Vec::new(),
    };
    let body = f.body.as_ref().ok_or_else(|| err(f.line, format!("kernel `{}` has no body", f.name)))?;
    l.function(body, scope, false)?;
    // Lower callees until every call is resolved (callees may call further functions).
    while let Some((at, name)) = l.pending_calls.pop() {
        let idx = match l.callee_index.get(&name) {
            Some(&i) => i,
            None => l.lower_callee(&name, l.insts[at].line as usize)?,
        };
        let c = &l.callees[idx];
        let inst = &mut l.insts[at];
        let (nret, nargs) = (inst.c as usize, inst.v.len() - inst.c as usize);
        if nret != c.rets.len() || nargs != c.params.len() {
            return Err(err(inst.line as usize, format!("call of `{name}` with the wrong number of arguments")));
        }
        inst.off = idx as i64;
    }
    let nregs = l.next_reg;
    let consts = l.const_list.iter().map(|&(v, r)| (r, v)).collect();
    let mut names = vec![String::new(); l.callees.len()];
    for (n, &i) in &l.callee_index {
        names[i] = n.clone();
    }
    let nc_loads = l.insts.iter().any(|i| i.op == Op::Ld(Space::Global) && i.flags & NC != 0);
    let mut code = Code { insts: l.insts, callees: l.callees, nregs, consts, names, fast: Vec::new(), nc_loads };
    crate::regalloc::compact(&mut code);
    code.fast = fast::decode(&code.insts);
    let kernel = Kernel {
        name: f.name.clone(),
        params,
        param_bytes: offset,
        max_ntid: f.max_ntid,
        req_ntid: None,
        static_shared: 0,
        code,
    };
    Ok(kernel)
}

impl Lower<'_> {
    fn constant(&mut self, v: u64) -> u32 {
        if let Some(&r) = self.consts.get(&v) {
            return r;
        }
        let r = self.next_reg;
        self.next_reg += 1;
        self.consts.insert(v, r);
        self.const_list.push((v, r));
        r
    }

    fn lower_callee(&mut self, name: &str, line: usize) -> Result<usize, LoadError> {
        let ast = self.ast;
        let f = ast
            .funcs
            .iter()
            .find(|g| g.name == name && g.body.is_some() && !g.is_entry)
            .ok_or_else(|| err(line, format!("call of `{name}`, which has no body in this module")))?;
        let mut scope = HashMap::new();
        let mut reg_of = |this: &mut Self, n: &str| {
            let r = this.next_reg;
            this.next_reg += 1;
            scope.insert(n.to_string(), Sym::ParamReg(r));
            r
        };
        let params = f.params.iter().map(|p| reg_of(self, &p.name)).collect();
        let rets = f.rets.iter().map(|p| reg_of(self, &p.name)).collect();
        let idx = self.callees.len();
        self.callees.push(Callee { entry: self.insts.len() as u32, params, rets });
        self.callee_index.insert(name.to_string(), idx);
        self.function(f.body.as_ref().unwrap(), scope, true)?;
        Ok(idx)
    }

    /// Lowers one function body, appending to `insts`.
    fn function(&mut self, body: &[Stmt], params: HashMap<String, Sym>, _is_callee: bool) -> Result<(), LoadError> {
        let base = self.insts.len();
        // Labels are function-wide; every instruction statement lowers to exactly one
        // instruction, so a label's pc is known before lowering.
        let mut labels = HashMap::new();
        let mut n = 0;
        for s in body {
            match s {
                Stmt::Label(l, _) => {
                    labels.insert(l.clone(), (base + n) as i64);
                }
                Stmt::Inst(_) => n += 1,
                _ => {}
            }
        }
        let mut scopes: Vec<HashMap<String, Sym>> = vec![params, HashMap::new()];
        for s in body {
            match s {
                Stmt::Open => scopes.push(HashMap::new()),
                Stmt::Close => {
                    scopes.pop();
                }
                Stmt::Label(..) | Stmt::Shared(_) => {}
                Stmt::Reg { ty, names, line } => {
                    if Ty::parse(ty.trim_start_matches('.')).is_none() && ty != ".f16x2" {
                        return Err(err(*line, format!("unsupported register type `{ty}`")));
                    }
                    for (name, count) in names {
                        let top = scopes.last_mut().unwrap();
                        match count {
                            None => {
                                top.insert(name.clone(), Sym::Reg(self.next_reg));
                                self.next_reg += 1;
                            }
                            Some(c) => {
                                // A count is the one place a few characters of text make
                                // unbounded work; nvcc's largest here (the GEMMs) declare
                                // about 8,000 registers in all.
                                if self.next_reg as u64 + *c as u64 > MAX_REGS as u64 {
                                    return Err(err(*line, format!("more than {MAX_REGS} registers in one kernel")));
                                }
                                for i in 0..*c {
                                    top.insert(format!("{name}{i}"), Sym::Reg(self.next_reg));
                                    self.next_reg += 1;
                                }
                            }
                        }
                    }
                }
                Stmt::Param(p) => {
                    if p.size > 8 {
                        return Err(err(p.line, "call parameters wider than 8 bytes are not supported"));
                    }
                    scopes.last_mut().unwrap().insert(p.name.clone(), Sym::ParamReg(self.next_reg));
                    self.next_reg += 1;
                }
                Stmt::Inst(i) => {
                    let inst = self.inst(i, &scopes, &labels)?;
                    self.insts.push(inst);
                }
            }
        }
        // Falling off the end of a body returns.
        self.insts.push(blank(Op::Ret, 0));
        Ok(())
    }
}

fn blank(op: Op, line: usize) -> Inst {
    Inst {
        op,
        ty: Ty::B32,
        ty2: Ty::B32,
        round: Round::Default,
        flags: 0,
        guard: NONE,
        guard_neg: false,
        d: NONE,
        a: NONE,
        b: NONE,
        c: NONE,
        v: Box::new([]),
        off: 0,
        line: line as u32,
    }
}
