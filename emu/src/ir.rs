//! The lowered form the executor runs: one array of [`Inst`] per kernel (its callees
//! appended), every operand an index into the thread's register file.
//!
//! Register file layout of a thread: the special registers at fixed indices
//! ([`special`]), then the kernel's registers, then those of every function it calls
//! (each function its own range: no recursion in our PTX, so a call needs no stack of
//! register windows), then the constants (immediates and symbol addresses), which the
//! executor writes once per launch and nothing ever writes again. An operand is then
//! always `regs[i]`: no look-up, no branch on operand kind.

use std::collections::HashMap;

use crate::ptx::parse::{Ast, Function, Imm, InstAst, Operand, Stmt};
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
    B32,
    U32,
    S32,
    F32,
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
            Ty::B16 | Ty::U16 | Ty::S16 | Ty::F16 => 2,
            Ty::B32 | Ty::U32 | Ty::S32 | Ty::F32 => 4,
            Ty::B64 | Ty::U64 | Ty::S64 | Ty::F64 => 8,
        }
    }
    pub fn bits(self) -> u32 {
        self.size() * 8
    }
    pub fn is_float(self) -> bool {
        matches!(self, Ty::F16 | Ty::F32 | Ty::F64)
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
    // Floating point (exec/float.rs); `ty` is F32 or F64.
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
    /// `cvt.dst.src`: `ty` the destination type, `ty2` the source type.
    Cvt,
    // Memory (exec/memory.rs). Address = regs[a] + off; value(s) in d / v.
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
    let mut code = Code { insts: l.insts, callees: l.callees, nregs, consts, names };
    crate::regalloc::compact(&mut code);
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

    fn inst(
        &mut self,
        i: &InstAst,
        scopes: &[HashMap<String, Sym>],
        labels: &HashMap<String, i64>,
    ) -> Result<Inst, LoadError> {
        let line = i.line;
        let lookup = |name: &str| -> Option<Sym> { scopes.iter().rev().find_map(|s| s.get(name).copied()) };
        let mut parts = i.opcode.split('.');
        let base = parts.next().unwrap_or("");
        let mods: Vec<&str> = parts.collect();
        let form = || format!("unsupported instruction form `{}`", i.opcode);

        // Classify the modifiers.
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
        let only = |allowed: &[&str]| -> Result<(), LoadError> {
            match words.iter().find(|w| !allowed.contains(w)) {
                Some(_) => Err(err(line, form())),
                None => Ok(()),
            }
        };
        let one_ty = || -> Result<Ty, LoadError> {
            match tys.as_slice() {
                [t] => Ok(*t),
                _ => Err(err(line, form())),
            }
        };

        // Operand helpers.
        let ops = &i.operands;
        let mut this = self;
        let reg = |this: &mut Self, o: &Operand, ty: Ty| -> Result<u32, LoadError> { this.value(o, ty, &lookup, line) };
        let dreg = |o: &Operand| -> Result<u32, LoadError> {
            match o {
                Operand::Name(n) => match lookup(n) {
                    Some(Sym::Reg(r)) | Some(Sym::ParamReg(r)) => Ok(r),
                    _ => Err(err(line, format!("`{n}` is not a register"))),
                },
                _ => Err(err(line, format!("destination {o:?} is not a register"))),
            }
        };
        let nops = |n: usize| -> Result<(), LoadError> {
            if ops.len() == n {
                Ok(())
            } else {
                Err(err(line, format!("`{}` takes {n} operands, found {}", i.opcode, ops.len())))
            }
        };

        let mut inst = blank(Op::Mov, line);
        let (guard, guard_neg) = match &i.guard {
            None => (NONE, false),
            Some((p, neg)) => match lookup(p) {
                Some(Sym::Reg(r)) => (r, *neg),
                _ => return Err(err(line, format!("guard `{p}` is not a register"))),
            },
        };
        inst.guard = guard;
        inst.guard_neg = guard_neg;
        inst.round = round;
        inst.flags = flags;

        // Binary, unary and ternary arithmetic share operand handling.
        let arith = |this: &mut Self, inst: &mut Inst, op: Op, ty: Ty, n: usize| -> Result<(), LoadError> {
            if ops.len() != n + 1 {
                return Err(err(line, format!("`{}` takes {} operands, found {}", i.opcode, n + 1, ops.len())));
            }
            inst.op = op;
            inst.ty = ty;
            inst.d = dreg(&ops[0])?;
            inst.a = this.value(&ops[1], ty, &lookup, line)?;
            if n > 1 {
                inst.b = this.value(&ops[2], ty, &lookup, line)?;
            }
            if n > 2 {
                inst.c = this.value(&ops[3], ty, &lookup, line)?;
            }
            Ok(())
        };

        match base {
            "add" | "sub" | "min" | "max" | "and" | "or" | "xor" | "copysign" | "div" | "rem" => {
                let ty = one_ty()?;
                let float = ty.is_float();
                let op = match (base, float) {
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
                    _ => return Err(err(line, form())),
                };
                only(if base == "div" && float { &["full"] } else { &[] })?;
                if !float && (round != Round::Default || flags != 0) || ty == Ty::F16 {
                    return Err(err(line, form()));
                }
                if base == "div" && float && round == Round::Default && flags & APPROX == 0 && !words.contains(&"full")
                {
                    return Err(err(line, form()));
                }
                arith(this, &mut inst, op, ty, 2)?;
            }
            "mul" | "mad" => {
                let ty = one_ty()?;
                let n = if base == "mul" { 2 } else { 3 };
                let op = if ty.is_float() {
                    only(&[])?;
                    if base == "mul" {
                        Op::FMul
                    } else {
                        Op::Fma
                    }
                } else {
                    match (base, words.as_slice()) {
                        ("mul", ["lo"]) => Op::MulLo,
                        ("mul", ["hi"]) => Op::MulHi,
                        ("mul", ["wide"]) => Op::MulWide,
                        ("mad", ["lo"]) => Op::MadLo,
                        ("mad", ["wide"]) => Op::MadWide,
                        _ => return Err(err(line, form())),
                    }
                };
                arith(this, &mut inst, op, ty, n)?;
                if matches!(op, Op::MulWide | Op::MadWide) {
                    // The addend of mad.wide is the double-width type.
                    if op == Op::MadWide {
                        let wide = if ty.is_signed() { Ty::S64 } else { Ty::U64 };
                        inst.c = this.value(&ops[3], wide, &lookup, line)?;
                    }
                }
            }
            "fma" => {
                let ty = one_ty()?;
                only(&[])?;
                if !ty.is_float() || round == Round::Default {
                    return Err(err(line, form()));
                }
                arith(this, &mut inst, Op::Fma, ty, 3)?;
            }
            "rcp" | "sqrt" | "ex2" | "lg2" => {
                let ty = one_ty()?;
                only(&[])?;
                let op = match base {
                    "rcp" => Op::Rcp,
                    "sqrt" => Op::Sqrt,
                    "ex2" => Op::Ex2,
                    _ => Op::Lg2,
                };
                let ok = match op {
                    Op::Rcp | Op::Sqrt => ty.is_float() && (round == Round::Rn || flags & APPROX != 0),
                    _ => ty == Ty::F32 && flags & APPROX != 0,
                };
                if !ok || ty == Ty::F16 {
                    return Err(err(line, form()));
                }
                arith(this, &mut inst, op, ty, 1)?;
            }
            "abs" | "neg" | "not" => {
                let ty = one_ty()?;
                only(&[])?;
                let op = match (base, ty.is_float()) {
                    ("abs", true) => Op::FAbs,
                    ("neg", true) => Op::FNeg,
                    ("abs", false) => Op::Abs,
                    ("neg", false) => Op::Neg,
                    ("not", false) => Op::Not,
                    _ => return Err(err(line, form())),
                };
                if ty == Ty::F16 {
                    return Err(err(line, form()));
                }
                arith(this, &mut inst, op, ty, 1)?;
            }
            "shl" | "shr" => {
                let ty = one_ty()?;
                only(&[])?;
                if ty.is_float() || ty == Ty::Pred {
                    return Err(err(line, form()));
                }
                nops(3)?;
                inst.op = if base == "shl" { Op::Shl } else { Op::Shr };
                inst.ty = ty;
                inst.d = dreg(&ops[0])?;
                inst.a = reg(this, &ops[1], ty)?;
                inst.b = reg(this, &ops[2], Ty::U32)?;
            }
            "setp" => {
                let ty = one_ty()?;
                let cmp = match words.as_slice() {
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
                        _ => return Err(err(line, form())),
                    },
                    _ => return Err(err(line, form())),
                };
                if !ty.is_float() && !matches!(cmp, Cmp::Eq | Cmp::Ne | Cmp::Lt | Cmp::Le | Cmp::Gt | Cmp::Ge)
                    || ty == Ty::F16
                {
                    return Err(err(line, form()));
                }
                arith(this, &mut inst, Op::Setp(cmp), ty, 2)?;
            }
            "selp" => {
                let ty = one_ty()?;
                only(&[])?;
                nops(4)?;
                inst.op = Op::Selp;
                inst.ty = ty;
                inst.d = dreg(&ops[0])?;
                inst.a = reg(this, &ops[1], ty)?;
                inst.b = reg(this, &ops[2], ty)?;
                inst.c = reg(this, &ops[3], Ty::Pred)?;
            }
            "cvt" => {
                only(&[])?;
                let [dt, st] = tys.as_slice() else { return Err(err(line, form())) };
                nops(2)?;
                let (dt, st) = (*dt, *st);
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
                    return Err(err(line, form()));
                }
                if dt.is_float()
                    && st.is_float()
                    && dt.size() == st.size()
                    && !matches!(round, Round::Rni | Round::Rzi | Round::Rmi | Round::Rpi | Round::Default)
                {
                    return Err(err(line, form()));
                }
                // ISA: integer `.sat` "is illegal in cases where saturation is not possible
                // based on the source and destination types" (the destination's range
                // contains the source's).
                if flags & SAT != 0 && !dt.is_float() && !st.is_float() {
                    let contains = match (dt.is_signed(), st.is_signed()) {
                        (true, false) => dt.size() > st.size(),
                        (false, true) => false,
                        _ => dt.size() >= st.size(),
                    };
                    if contains {
                        return Err(err(line, form()));
                    }
                }
                inst.op = Op::Cvt;
                inst.ty = dt;
                inst.ty2 = st;
                inst.d = dreg(&ops[0])?;
                inst.a = reg(this, &ops[1], st)?;
            }
            "cvta" => {
                // Global addresses are the same in the generic space.
                let ty = one_ty()?;
                only(&["to"])?;
                if space != Some(Space::Global) || !matches!(ty, Ty::U64 | Ty::B64) {
                    return Err(err(line, form()));
                }
                arith(this, &mut inst, Op::Mov, Ty::U64, 1)?;
            }
            "mov" => {
                let ty = one_ty()?;
                only(&[])?;
                nops(2)?;
                inst.ty = ty;
                match (&ops[0], &ops[1]) {
                    (Operand::Vector(parts), src) => {
                        inst.op = Op::Unpack;
                        inst.a = reg(this, src, ty)?;
                        inst.v = parts.iter().map(dreg).collect::<Result<_, _>>()?;
                        if ty.bits() % parts.len() as u32 != 0 || parts.len() < 2 {
                            return Err(err(line, form()));
                        }
                    }
                    (dst, Operand::Vector(parts)) => {
                        inst.op = Op::Pack;
                        inst.d = dreg(dst)?;
                        let pty = part_ty(ty, parts.len()).ok_or_else(|| err(line, form()))?;
                        inst.v = parts.iter().map(|p| reg(this, p, pty)).collect::<Result<_, _>>()?;
                    }
                    (dst, src) => {
                        inst.op = Op::Mov;
                        inst.d = dreg(dst)?;
                        inst.a = reg(this, src, ty)?;
                    }
                }
            }
            "ld" | "st" => {
                let ty = one_ty()?;
                let space = space.ok_or_else(|| err(line, form()))?;
                only(&["nc", "ca", "cg", "cs", "lu", "cv", "wb", "wt"])?;
                if words.contains(&"nc") && (base != "ld" || space != Space::Global) {
                    return Err(err(line, form()));
                }
                nops(2)?;
                let (mem, val) = if base == "ld" { (&ops[1], &ops[0]) } else { (&ops[0], &ops[1]) };
                let Operand::Mem { base: mbase, offset } = mem else {
                    return Err(err(line, format!("`{}` needs a [address] operand", i.opcode)));
                };
                inst.ty = ty;
                // A parameter held in a register (call sequences, callee parameters): a move.
                if let Some(Sym::ParamReg(r)) = mbase.as_deref().and_then(lookup) {
                    if space != Space::Param || *offset != 0 || vec != 1 {
                        return Err(err(
                            line,
                            format!("unsupported access to call parameter `{}`", mbase.as_deref().unwrap_or("")),
                        ));
                    }
                    inst.op = Op::Mov;
                    if base == "ld" {
                        inst.d = dreg(val)?;
                        inst.a = r;
                    } else {
                        inst.d = r;
                        inst.a = reg(this, val, ty)?;
                    }
                    return Ok(inst);
                }
                inst.op = if base == "ld" { Op::Ld(space) } else { Op::St(space) };
                let (a, off) = this.address(mbase.as_deref(), *offset, space, &lookup, line)?;
                inst.a = a;
                inst.off = off;
                let regs: Vec<&Operand> = match (val, vec) {
                    (Operand::Vector(v), n) if v.len() == n as usize && n > 1 => v.iter().collect(),
                    (o, 1) if !matches!(o, Operand::Vector(_)) => vec![o],
                    _ => return Err(err(line, form())),
                };
                inst.v = if base == "ld" {
                    regs.iter().map(|o| dreg(o)).collect::<Result<_, _>>()?
                } else {
                    regs.iter().map(|o| reg(this, o, ty)).collect::<Result<_, _>>()?
                };
            }
            "bra" => {
                only(&["uni"])?;
                nops(1)?;
                let Operand::Name(l) = &ops[0] else { return Err(err(line, "bra needs a label")) };
                inst.op = Op::Bra;
                inst.off = *labels.get(l).ok_or_else(|| err(line, format!("unknown label `{l}`")))?;
            }
            "ret" | "exit" => {
                only(&["uni"])?;
                nops(0)?;
                inst.op = if base == "ret" { Op::Ret } else { Op::Exit };
            }
            "call" => {
                only(&["uni"])?;
                // call (rets), name, (args);  |  call name, (args);  |  call name;
                let (rets, rest) = match ops.first() {
                    Some(Operand::List(r)) => (r.as_slice(), &ops[1..]),
                    _ => (&[][..], &ops[..]),
                };
                let Some(Operand::Name(callee)) = rest.first() else { return Err(err(line, form())) };
                let args: &[Operand] = match rest.get(1) {
                    Some(Operand::List(a)) => a,
                    None => &[],
                    _ => return Err(err(line, form())),
                };
                let pr = |o: &Operand| -> Result<u32, LoadError> {
                    match o {
                        Operand::Name(n) => match lookup(n) {
                            Some(Sym::ParamReg(r)) => Ok(r),
                            _ => Err(err(line, format!("call argument `{n}` is not a .param"))),
                        },
                        _ => Err(err(line, "call arguments must be .param names")),
                    }
                };
                inst.op = Op::Call;
                inst.c = rets.len() as u32;
                inst.v = rets.iter().chain(args).map(pr).collect::<Result<_, _>>()?;
                this.pending_calls.push((this.insts.len(), callee.clone()));
            }
            "bar" | "barrier" => {
                match words.as_slice() {
                    ["sync"] | ["sync", "aligned"] => {
                        if ops.is_empty() || ops.len() > 2 {
                            return Err(err(line, form()));
                        }
                        inst.op = Op::BarSync;
                        inst.a = reg(this, &ops[0], Ty::U32)?;
                        inst.b = if ops.len() == 2 { reg(this, &ops[1], Ty::U32)? } else { NONE };
                    }
                    ["warp", "sync"] => {
                        nops(1)?;
                        inst.op = Op::BarWarpSync;
                        inst.a = reg(this, &ops[0], Ty::U32)?;
                    }
                    ["red", "or"] | ["red", "or", "aligned"] if tys == [Ty::Pred] => {
                        if ops.len() != 3 {
                            return Err(err(line, form()));
                        }
                        inst.op = Op::BarRedOr;
                        inst.d = dreg(&ops[0])?;
                        inst.a = reg(this, &ops[1], Ty::U32)?;
                        inst.c = reg(this, &ops[2], Ty::Pred)?;
                        inst.b = NONE;
                    }
                    _ => return Err(err(line, form())),
                }
                if !tys.is_empty() && inst.op != Op::BarRedOr {
                    return Err(err(line, form()));
                }
            }
            "shfl" => {
                let ty = one_ty()?;
                let mode = match words.as_slice() {
                    ["sync", "up"] => ShflMode::Up,
                    ["sync", "down"] => ShflMode::Down,
                    ["sync", "bfly"] => ShflMode::Bfly,
                    ["sync", "idx"] => ShflMode::Idx,
                    _ => return Err(err(line, form())),
                };
                if ty != Ty::B32 {
                    return Err(err(line, form()));
                }
                nops(5)?;
                inst.op = Op::Shfl(mode);
                inst.ty = ty;
                match &ops[0] {
                    Operand::Pair(d, p) => {
                        inst.d = dreg(&Operand::Name(d.clone()))?;
                        inst.v = Box::new([dreg(&Operand::Name(p.clone()))?]);
                    }
                    o => inst.d = dreg(o)?,
                }
                inst.a = reg(this, &ops[1], Ty::B32)?;
                inst.b = reg(this, &ops[2], Ty::B32)?;
                inst.c = reg(this, &ops[3], Ty::B32)?;
                // The member mask lives in v after the optional predicate destination.
                let m = reg(this, &ops[4], Ty::B32)?;
                let mut v = inst.v.to_vec();
                v.insert(0, m);
                inst.v = v.into();
            }
            "cp" => match words.as_slice() {
                ["async", "commit_group"] => {
                    nops(0)?;
                    inst.op = Op::CpAsyncCommit;
                }
                ["async", "wait_group"] => {
                    nops(1)?;
                    let Operand::Imm(Imm::Int(n)) = ops[0] else { return Err(err(line, form())) };
                    inst.op = Op::CpAsyncWait;
                    inst.off = n as i64;
                }
                ["async", "wait_all"] => {
                    // wait_all commits the uncommitted copies first: b marks it.
                    nops(0)?;
                    inst.op = Op::CpAsyncWait;
                    inst.off = 0;
                    inst.b = 0;
                }
                ["async", "cg"] | ["async", "ca"] => {
                    // cp.async.cg.shared.global [dst], [src], size{, src_size};
                    let spaces: Vec<&str> =
                        mods.iter().copied().filter(|m| matches!(*m, "shared" | "global")).collect();
                    if spaces != ["shared", "global"] {
                        return Err(err(line, form()));
                    }
                    if ops.len() != 3 && ops.len() != 4 {
                        return Err(err(line, form()));
                    }
                    let (Operand::Mem { base: db, offset: doff }, Operand::Mem { base: sb, offset: soff }) =
                        (&ops[0], &ops[1])
                    else {
                        return Err(err(line, form()));
                    };
                    let Operand::Imm(Imm::Int(size)) = ops[2] else { return Err(err(line, form())) };
                    if !matches!(size, 4 | 8 | 16) || words[1] == "cg" && size != 16 {
                        return Err(err(line, form()));
                    }
                    inst.op = Op::CpAsync;
                    let (d, doff) = this.address(db.as_deref(), *doff, Space::Shared, &lookup, line)?;
                    let (a, aoff) = this.address(sb.as_deref(), *soff, Space::Global, &lookup, line)?;
                    inst.d = d;
                    inst.a = a;
                    // Offsets of both addresses and the sizes packed in v.
                    inst.off = size as i64;
                    inst.b = if ops.len() == 4 { reg(this, &ops[3], Ty::U32)? } else { this.constant(size) };
                    // The two address offsets; the executor adds them to regs[d] and regs[a].
                    inst.v = Box::new([doff as i32 as u32, aoff as i32 as u32]);
                }
                _ => return Err(err(line, form())),
            },
            "wmma" => {
                let shape_ok = words.contains(&"m16n16k16") && words.contains(&"sync") && words.contains(&"aligned");
                let layouts: Vec<Layout> = words
                    .iter()
                    .filter_map(|w| match *w {
                        "row" => Some(Layout::Row),
                        "col" => Some(Layout::Col),
                        _ => None,
                    })
                    .collect();
                let kind: Vec<&str> = words
                    .iter()
                    .copied()
                    .filter(|w| !matches!(*w, "m16n16k16" | "sync" | "aligned" | "row" | "col"))
                    .collect();
                if !shape_ok {
                    return Err(err(line, form()));
                }
                let frag = |o: &Operand, n: usize, dst: bool, this: &mut Self| -> Result<Vec<u32>, LoadError> {
                    match o {
                        Operand::Vector(v) if v.len() == n => v
                            .iter()
                            .map(|o| if dst { dreg(o) } else { this.value(o, Ty::B32, &lookup, line) })
                            .collect(),
                        _ => Err(err(line, format!("`{}` needs a fragment of {n} registers", i.opcode))),
                    }
                };
                match (kind.as_slice(), layouts.as_slice()) {
                    (["load", ab], [lay]) if (*ab == "a" || *ab == "b") && tys == [Ty::F16] => {
                        let sp = space.unwrap_or(Space::Global);
                        if sp == Space::Param || ops.len() != 3 {
                            return Err(err(line, form()));
                        }
                        inst.op = if *ab == "a" { Op::WmmaLoadA(*lay) } else { Op::WmmaLoadB(*lay) };
                        inst.ty2 = if sp == Space::Shared { Ty::B32 } else { Ty::B64 };
                        inst.v = frag(&ops[0], 8, true, this)?.into();
                        let Operand::Mem { base: mb, offset } = &ops[1] else { return Err(err(line, form())) };
                        let (a, off) = this.address(mb.as_deref(), *offset, sp, &lookup, line)?;
                        inst.a = a;
                        inst.off = off;
                        inst.b = reg(this, &ops[2], Ty::U32)?;
                    }
                    (["store", "d"], [lay]) if tys == [Ty::F32] => {
                        let sp = space.unwrap_or(Space::Global);
                        if sp == Space::Param || ops.len() != 3 {
                            return Err(err(line, form()));
                        }
                        inst.op = Op::WmmaStoreD(*lay);
                        inst.ty2 = if sp == Space::Shared { Ty::B32 } else { Ty::B64 };
                        let Operand::Mem { base: mb, offset } = &ops[0] else { return Err(err(line, form())) };
                        let (a, off) = this.address(mb.as_deref(), *offset, sp, &lookup, line)?;
                        inst.a = a;
                        inst.off = off;
                        inst.v = frag(&ops[1], 8, false, this)?.into();
                        inst.b = reg(this, &ops[2], Ty::U32)?;
                    }
                    (["mma"], [la, lb]) if tys == [Ty::F32, Ty::F32] => {
                        if ops.len() != 4 {
                            return Err(err(line, form()));
                        }
                        inst.op = Op::WmmaMma(*la, *lb);
                        let mut v = frag(&ops[0], 8, true, this)?;
                        v.extend(frag(&ops[1], 8, false, this)?);
                        v.extend(frag(&ops[2], 8, false, this)?);
                        v.extend(frag(&ops[3], 8, false, this)?);
                        inst.v = v.into();
                    }
                    _ => return Err(err(line, form())),
                }
            }
            _ => return Err(err(line, form())),
        }
        // Rounding: only the modes the executor implements, where the ISA allows them.
        let round_ok = match inst.op {
            // Directed rounding is implemented for f32 add, sub, mul and fma (exec/float.rs).
            Op::FAdd | Op::FSub | Op::FMul | Op::Fma if inst.ty == Ty::F32 => {
                matches!(inst.round, Round::Default | Round::Rn | Round::Rz | Round::Rm | Round::Rp)
            }
            Op::FAdd | Op::FSub | Op::FMul | Op::Fma | Op::FDiv | Op::Rcp | Op::Sqrt => {
                matches!(inst.round, Round::Default | Round::Rn)
            }
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
            return Err(err(line, form()));
        }
        // Float-only modifiers on anything else are a form we do not know.
        if (inst.flags & (FTZ | SAT) != 0) && !(inst.op.is_float_arith() || matches!(inst.op, Op::Setp(_) | Op::Cvt)) {
            return Err(err(line, form()));
        }
        let _ = &mut this;
        Ok(inst)
    }

    /// A source operand as a register index: registers as they are, immediates and
    /// symbol addresses as constant slots.
    fn value(
        &mut self,
        o: &Operand,
        ty: Ty,
        lookup: &dyn Fn(&str) -> Option<Sym>,
        line: usize,
    ) -> Result<u32, LoadError> {
        match o {
            Operand::Name(n) => {
                if let Some(s) = special_reg(n) {
                    return Ok(s);
                }
                match lookup(n) {
                    Some(Sym::Reg(r)) | Some(Sym::ParamReg(r)) => Ok(r),
                    Some(Sym::KernelParam(off)) => Ok(self.constant(off)),
                    None => match self.shared.get(n.as_str()) {
                        Some(&off) => Ok(self.constant(off)),
                        None => Err(err(line, format!("unknown name `{n}`"))),
                    },
                }
            }
            Operand::Imm(imm) => Ok(self.constant(imm_bits(*imm, ty))),
            _ => Err(err(line, format!("unsupported operand {o:?}"))),
        }
    }

    /// An address operand as (register holding the base, offset). `[sym+off]` becomes
    /// a constant base.
    fn address(
        &mut self,
        base: Option<&str>,
        offset: i64,
        space: Space,
        lookup: &dyn Fn(&str) -> Option<Sym>,
        line: usize,
    ) -> Result<(u32, i64), LoadError> {
        let Some(name) = base else { return Ok((self.constant(0), offset)) };
        match lookup(name) {
            Some(Sym::Reg(r)) => Ok((r, offset)),
            Some(Sym::KernelParam(p)) if space == Space::Param => Ok((self.constant(p), offset)),
            None => match self.shared.get(name) {
                Some(&s) if space == Space::Shared => Ok((self.constant(s), offset)),
                _ => Err(err(line, format!("unknown address `{name}`"))),
            },
            _ => Err(err(line, format!("`{name}` is not addressable in this state space"))),
        }
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

fn part_ty(ty: Ty, n: usize) -> Option<Ty> {
    match (ty.bits() / n as u32, n) {
        (16, _) => Some(Ty::B16),
        (32, _) => Some(Ty::B32),
        (8, _) => Some(Ty::B8),
        _ => None,
    }
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
