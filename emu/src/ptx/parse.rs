//! Tokens to a syntax tree of the PTX subset nvcc emits for `cuda/*.cu`: module
//! directives, `.shared` variables, `.entry` and `.func` with parameters and performance
//! directives, bodies of scopes, `.reg`/`.param` declarations, labels and instructions.
//! Anything else is a load error naming the line.

use super::lex::{Tok, Token};
use super::LoadError;

pub struct Ast {
    pub target: u32,
    pub shared: Vec<SharedVar>,
    pub funcs: Vec<Function>,
}

#[derive(Clone, Debug)]
pub struct SharedVar {
    pub name: String,
    pub align: u32,
    /// Bytes; 0 for `.extern .shared` (dynamic shared memory).
    pub size: u32,
    pub dynamic: bool,
}

#[derive(Clone, Debug)]
pub struct ParamDecl {
    pub name: String,
    pub size: usize,
    pub align: usize,
    pub line: usize,
}

pub struct Function {
    pub name: String,
    pub is_entry: bool,
    pub params: Vec<ParamDecl>,
    pub rets: Vec<ParamDecl>,
    pub max_ntid: Option<[u32; 3]>,
    pub body: Option<Vec<Stmt>>,
    pub line: usize,
}

pub enum Stmt {
    Open,
    Close,
    Label(String, usize),
    /// `.reg .ty names;` — each name with its count for `%r<100>` (None: one register).
    Reg {
        ty: String,
        names: Vec<(String, Option<u32>)>,
        line: usize,
    },
    /// A call-site `.param` inside a function body.
    Param(ParamDecl),
    /// A `.shared` variable declared inside the body.
    Shared(SharedVar),
    Inst(InstAst),
}

#[derive(Debug)]
pub struct InstAst {
    pub line: usize,
    pub guard: Option<(String, bool)>,
    pub opcode: String,
    pub operands: Vec<Operand>,
}

#[derive(Clone, Debug)]
pub enum Operand {
    /// A register, special register, label, function or variable name.
    Name(String),
    Imm(Imm),
    /// `{a, b, ...}`
    Vector(Vec<Operand>),
    /// `[base]`, `[base+off]`, `[off]`
    Mem {
        base: Option<String>,
        offset: i64,
    },
    /// `d|p` (shfl's value and predicate destinations)
    Pair(String, String),
    /// `(a, b)` in `call`
    List(Vec<Operand>),
}

#[derive(Clone, Copy, Debug)]
pub enum Imm {
    Int(u64),
    F32(u32),
    F64(u64),
}

fn type_size(ty: &str) -> Option<usize> {
    Some(match ty {
        ".b8" | ".u8" | ".s8" => 1,
        ".b16" | ".u16" | ".s16" | ".f16" | ".bf16" => 2,
        ".b32" | ".u32" | ".s32" | ".f32" | ".f16x2" | ".bf16x2" => 4,
        ".b64" | ".u64" | ".s64" | ".f64" => 8,
        _ => return None,
    })
}

struct P<'a> {
    t: &'a [Token],
    i: usize,
}

impl P<'_> {
    fn line(&self) -> usize {
        self.t.get(self.i).or(self.t.last()).map_or(0, |t| t.line)
    }
    fn err<T>(&self, msg: impl Into<String>) -> Result<T, LoadError> {
        Err(LoadError { line: self.line(), message: msg.into() })
    }
    fn peek(&self) -> Option<&Tok> {
        self.t.get(self.i).map(|t| &t.tok)
    }
    fn peek_word(&self) -> Option<&str> {
        match self.peek() {
            Some(Tok::Word(w)) => Some(w),
            _ => None,
        }
    }
    fn is_punct(&self, c: char) -> bool {
        self.peek() == Some(&Tok::Punct(c))
    }
    fn eat_punct(&mut self, c: char) -> bool {
        let yes = self.is_punct(c);
        if yes {
            self.i += 1;
        }
        yes
    }
    fn expect_punct(&mut self, c: char) -> Result<(), LoadError> {
        if self.eat_punct(c) {
            Ok(())
        } else {
            self.err(format!("expected `{c}`, found {:?}", self.peek()))
        }
    }
    fn word(&mut self) -> Result<String, LoadError> {
        match self.peek() {
            Some(Tok::Word(w)) => {
                let w = w.clone();
                self.i += 1;
                Ok(w)
            }
            other => self.err(format!("expected a word, found {other:?}")),
        }
    }
    fn eat_word(&mut self, w: &str) -> bool {
        let yes = self.peek_word() == Some(w);
        if yes {
            self.i += 1;
        }
        yes
    }
    fn number(&mut self) -> Result<u64, LoadError> {
        let line = self.line();
        let w = self.word()?;
        parse_int(&w).ok_or_else(|| LoadError { line, message: format!("expected a number, found `{w}`") })
    }
    /// A number that must fit in a u32: a silent truncation would load something other
    /// than what the text says.
    fn number_u32(&mut self) -> Result<u32, LoadError> {
        let line = self.line();
        let n = self.number()?;
        u32::try_from(n).map_err(|_| LoadError { line, message: format!("{n} is out of range") })
    }
    /// The N of `.align N`: a power of two, as PTX requires. Zero or a huge value would
    /// divide by zero or overflow where the loader lays out parameters and variables.
    fn align(&mut self) -> Result<u32, LoadError> {
        let line = self.line();
        let a = self.number_u32()?;
        if !a.is_power_of_two() {
            return Err(LoadError { line, message: format!("alignment {a} is not a power of two") });
        }
        Ok(a)
    }
}

/// Decimal, `0x` hex, with an optional `U` suffix.
fn parse_int(w: &str) -> Option<u64> {
    let w = w.strip_suffix('U').unwrap_or(w);
    if let Some(h) = w.strip_prefix("0x").or_else(|| w.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else {
        w.parse().ok()
    }
}

pub fn parse(tokens: &[Token]) -> Result<Ast, LoadError> {
    let mut p = P { t: tokens, i: 0 };
    let mut ast = Ast { target: 0, shared: Vec::new(), funcs: Vec::new() };
    while p.i < tokens.len() {
        let line = p.line();
        let w = p.word()?;
        match w.as_str() {
            ".version" | ".address_size" => {
                p.word()?;
            }
            ".target" => {
                let t = p.word()?;
                let digits: String = t.trim_start_matches("sm_").chars().take_while(char::is_ascii_digit).collect();
                ast.target =
                    digits.parse().map_err(|_| LoadError { line, message: format!("unknown target `{t}`") })?;
                while p.eat_punct(',') {
                    p.word()?;
                }
            }
            ".visible" | ".weak" | ".extern" | ".entry" | ".func" | ".shared" => {
                p.i -= 1;
                top_level(&mut p, &mut ast)?;
            }
            _ => return Err(LoadError { line, message: format!("unsupported module directive `{w}`") }),
        }
    }
    Ok(ast)
}

fn top_level(p: &mut P, ast: &mut Ast) -> Result<(), LoadError> {
    let line = p.line();
    let mut is_extern = false;
    loop {
        match p.peek_word() {
            Some(".visible") | Some(".weak") => p.i += 1,
            Some(".extern") => {
                is_extern = true;
                p.i += 1
            }
            _ => break,
        }
    }
    let kind = p.word()?;
    match kind.as_str() {
        ".shared" => {
            let v = shared_decl(p, is_extern, line)?;
            ast.shared.push(v);
        }
        ".entry" | ".func" => {
            let is_entry = kind == ".entry";
            let mut rets = Vec::new();
            if !is_entry && p.is_punct('(') {
                rets = param_list(p)?;
            }
            let name = p.word()?;
            let params = if p.is_punct('(') { param_list(p)? } else { Vec::new() };
            let mut max_ntid = None;
            loop {
                match p.peek_word() {
                    Some(".maxntid") | Some(".reqntid") => {
                        p.i += 1;
                        let mut d = [1u32; 3];
                        d[0] = p.number_u32()?;
                        for slot in d.iter_mut().skip(1) {
                            if !p.eat_punct(',') {
                                break;
                            }
                            *slot = p.number_u32()?;
                        }
                        // The launch checks multiply the three.
                        if d.iter().try_fold(1u32, |a, &b| a.checked_mul(b)).is_none() {
                            return p.err(format!("{d:?} threads per block do not fit in 32 bits"));
                        }
                        max_ntid = Some(d);
                    }
                    Some(".minnctapersm") | Some(".maxnreg") | Some(".maxnctapersm") => {
                        p.i += 2;
                    }
                    Some(".noreturn") => p.i += 1,
                    _ => break,
                }
            }
            let body = if p.eat_punct(';') { None } else { Some(body(p)?) };
            ast.funcs.push(Function { name, is_entry, params, rets, max_ntid, body, line });
        }
        _ => return p.err(format!("unsupported module declaration `{kind}`")),
    }
    Ok(())
}

/// The rest of `.shared .align N .bK name[SIZE];` after `.shared`.
fn shared_decl(p: &mut P, is_extern: bool, line: usize) -> Result<SharedVar, LoadError> {
    let mut align = 1;
    if p.eat_word(".align") {
        align = p.align()?;
    }
    let ty = p.word()?;
    let elem = type_size(&ty).ok_or_else(|| LoadError { line, message: format!("unsupported type `{ty}`") })?;
    let name = p.word()?;
    let mut count = 1u64;
    let mut dynamic = false;
    if p.eat_punct('[') {
        if p.eat_punct(']') {
            dynamic = true;
            count = 0;
        } else {
            count = p.number()?;
            p.expect_punct(']')?;
        }
    }
    if dynamic != is_extern {
        return p.err("only `.extern .shared name[]` (dynamic shared memory) may be extern");
    }
    p.expect_punct(';')?;
    Ok(SharedVar { name, align, size: bytes(count, elem, line)?, dynamic })
}

/// Bytes of `count` elements of `elem` bytes. Sizes are u32 wherever the loader and the
/// driver use them; a wider one would wrap into a small, wrong size.
fn bytes(count: u64, elem: usize, line: usize) -> Result<u32, LoadError> {
    count
        .checked_mul(elem as u64)
        .and_then(|b| u32::try_from(b).ok())
        .ok_or_else(|| LoadError { line, message: format!("{count} elements of {elem} bytes do not fit in 4 GiB") })
}

fn param_decl(p: &mut P) -> Result<ParamDecl, LoadError> {
    let line = p.line();
    if !p.eat_word(".param") {
        return p.err("expected `.param`");
    }
    let mut align = 0;
    if p.eat_word(".align") {
        align = p.align()? as usize;
    }
    let ty = p.word()?;
    let elem =
        type_size(&ty).ok_or_else(|| LoadError { line, message: format!("unsupported parameter type `{ty}`") })?;
    let name = p.word()?;
    let mut count = 1;
    if p.eat_punct('[') {
        count = p.number()?;
        p.expect_punct(']')?;
    }
    let align = if align == 0 { elem } else { align };
    Ok(ParamDecl { name, size: bytes(count, elem, line)? as usize, align, line })
}

fn param_list(p: &mut P) -> Result<Vec<ParamDecl>, LoadError> {
    p.expect_punct('(')?;
    let mut v = Vec::new();
    if p.eat_punct(')') {
        return Ok(v);
    }
    loop {
        v.push(param_decl(p)?);
        if p.eat_punct(')') {
            return Ok(v);
        }
        p.expect_punct(',')?;
    }
}

fn body(p: &mut P) -> Result<Vec<Stmt>, LoadError> {
    p.expect_punct('{')?;
    let mut depth = 1;
    let mut out = Vec::new();
    while depth > 0 {
        let line = p.line();
        match p.peek() {
            None => return p.err("unterminated function body"),
            Some(Tok::Punct('{')) => {
                p.i += 1;
                depth += 1;
                out.push(Stmt::Open);
            }
            Some(Tok::Punct('}')) => {
                p.i += 1;
                depth -= 1;
                if depth > 0 {
                    out.push(Stmt::Close);
                }
            }
            Some(Tok::Word(w)) if w == ".reg" => {
                p.i += 1;
                let ty = p.word()?;
                let mut names = Vec::new();
                loop {
                    let n = p.word()?;
                    let count = if p.eat_punct('<') {
                        let c = p.number_u32()?;
                        p.expect_punct('>')?;
                        Some(c)
                    } else {
                        None
                    };
                    names.push((n, count));
                    if !p.eat_punct(',') {
                        break;
                    }
                }
                p.expect_punct(';')?;
                out.push(Stmt::Reg { ty, names, line });
            }
            Some(Tok::Word(w)) if w == ".shared" => {
                // A "demoted" variable: function-local in the text, block-shared all the same.
                p.i += 1;
                out.push(Stmt::Shared(shared_decl(p, false, line)?));
            }
            Some(Tok::Word(w)) if w == ".param" => {
                let d = param_decl(p)?;
                p.expect_punct(';')?;
                out.push(Stmt::Param(d));
            }
            Some(Tok::Word(w)) if w == ".pragma" => {
                p.i += 1;
                while !p.eat_punct(';') {
                    if p.peek().is_none() {
                        return Err(LoadError { line, message: "`.pragma` without its `;`".into() });
                    }
                    p.i += 1;
                }
            }
            Some(Tok::Word(w)) if w == ".loc" || w == ".file" => {
                // Debug line info: the rest of the line.
                let l = p.line();
                while p.i < p.t.len() && p.t[p.i].line == l {
                    p.i += 1;
                }
            }
            Some(Tok::Word(w)) if w.starts_with('.') => {
                return p.err(format!("unsupported directive `{w}` in a function body"));
            }
            Some(Tok::Word(_)) if matches!(p.t.get(p.i + 1).map(|t| &t.tok), Some(Tok::Punct(':'))) => {
                let l = p.word()?;
                p.i += 1;
                out.push(Stmt::Label(l, line));
            }
            _ => out.push(Stmt::Inst(instruction(p)?)),
        }
    }
    Ok(out)
}

fn instruction(p: &mut P) -> Result<InstAst, LoadError> {
    let line = p.line();
    let mut guard = None;
    if p.eat_punct('@') {
        let neg = p.eat_punct('!');
        guard = Some((p.word()?, neg));
    }
    let opcode = p.word()?;
    let mut operands = Vec::new();
    if !p.eat_punct(';') {
        loop {
            operands.push(operand(p)?);
            if p.eat_punct(';') {
                break;
            }
            p.expect_punct(',')?;
        }
    }
    Ok(InstAst { line, guard, opcode, operands })
}

fn immediate(p: &mut P, neg: bool) -> Result<Imm, LoadError> {
    let w = p.word()?;
    let bad = || LoadError { line: p.line(), message: format!("bad immediate `{w}`") };
    let imm = if let Some(h) = w.strip_prefix("0f").or_else(|| w.strip_prefix("0F")) {
        let bits = u32::from_str_radix(h, 16).map_err(|_| bad())?;
        Imm::F32(if neg { bits ^ 0x8000_0000 } else { bits })
    } else if let Some(h) = w.strip_prefix("0d").or_else(|| w.strip_prefix("0D")) {
        let bits = u64::from_str_radix(h, 16).map_err(|_| bad())?;
        Imm::F64(if neg { bits ^ (1 << 63) } else { bits })
    } else {
        let v = parse_int(&w).ok_or_else(bad)?;
        Imm::Int(if neg { v.wrapping_neg() } else { v })
    };
    Ok(imm)
}

fn operand(p: &mut P) -> Result<Operand, LoadError> {
    match p.peek() {
        Some(Tok::Punct('{')) => {
            p.i += 1;
            let mut v = Vec::new();
            loop {
                v.push(element(p)?);
                if p.eat_punct('}') {
                    return Ok(Operand::Vector(v));
                }
                p.expect_punct(',')?;
            }
        }
        Some(Tok::Punct('(')) => {
            p.i += 1;
            let mut v = Vec::new();
            if p.eat_punct(')') {
                return Ok(Operand::List(v));
            }
            loop {
                v.push(element(p)?);
                if p.eat_punct(')') {
                    return Ok(Operand::List(v));
                }
                p.expect_punct(',')?;
            }
        }
        Some(Tok::Punct('[')) => {
            p.i += 1;
            let (base, mut offset) = match p.peek_word() {
                Some(w) if w.starts_with(|c: char| c.is_ascii_digit()) => (None, int_of(immediate(p, false)?)),
                _ => (Some(p.word()?), 0),
            };
            if p.eat_punct('+') {
                let neg = p.eat_punct('-');
                offset = offset.wrapping_add(int_of(immediate(p, neg)?));
            } else if p.eat_punct('-') {
                offset = offset.wrapping_sub(int_of(immediate(p, false)?));
            }
            p.expect_punct(']')?;
            Ok(Operand::Mem { base, offset })
        }
        Some(Tok::Punct('-')) => {
            p.i += 1;
            Ok(Operand::Imm(immediate(p, true)?))
        }
        Some(Tok::Word(w)) if w.starts_with(|c: char| c.is_ascii_digit()) => Ok(Operand::Imm(immediate(p, false)?)),
        Some(Tok::Word(_)) => {
            let a = p.word()?;
            if p.eat_punct('|') {
                return Ok(Operand::Pair(a, p.word()?));
            }
            Ok(Operand::Name(a))
        }
        other => p.err(format!("unexpected {other:?} in an operand")),
    }
}

/// An element of a `{}` vector or a `()` call list, which PTX never nests: recursing
/// only one level keeps a text of many `{` from overflowing the stack, which would abort
/// the process rather than fail the load.
fn element(p: &mut P) -> Result<Operand, LoadError> {
    if p.is_punct('{') || p.is_punct('(') {
        return p.err(format!("nested {:?} in an operand", p.peek()));
    }
    operand(p)
}

fn int_of(i: Imm) -> i64 {
    match i {
        Imm::Int(v) | Imm::F64(v) => v as i64,
        Imm::F32(v) => v as i64,
    }
}
