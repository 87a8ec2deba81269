//! PTX text to the emulator's own lowered form, once, at cuModuleLoadData: tokens
//! ([`lex`]), a syntax tree ([`parse`]), then names resolved to register indices and
//! labels to instruction indices ([`crate::ir`]). The executor sees only the lowered
//! form.

pub mod lex;
pub mod parse;

use std::collections::HashMap;

use crate::ir::{self, Code};
use parse::{Operand, Stmt};

/// A loaded module: its kernels, lowered.
pub struct Module {
    /// The `.version` directive: the PTX ISA version (major, minor) the text is written in.
    pub version: (u32, u32),
    /// The `.target` architecture as a number (75 for sm_75, 80 for sm_80, 90 for sm_90a).
    pub target: u32,
    pub kernels: Vec<Kernel>,
}

/// One `.entry`, lowered.
pub struct Kernel {
    pub name: String,
    /// Parameter layout of the kernel's parameter buffer, in declaration order.
    pub params: Vec<Param>,
    /// Bytes of the parameter buffer.
    pub param_bytes: usize,
    /// `.maxntid`, when declared (x, y, z); also set by `.reqntid`, which implies it.
    pub max_ntid: Option<[u32; 3]>,
    /// `.reqntid`, when declared (x, y, z): the only block shape a launch may have.
    pub req_ntid: Option<[u32; 3]>,
    /// Bytes of static `.shared` memory this kernel uses.
    pub static_shared: u32,
    /// The instructions, with every callee appended.
    pub code: Code,
}

/// Where one kernel parameter lives in the parameter buffer.
#[derive(Clone, Copy, Debug)]
pub struct Param {
    pub offset: usize,
    pub size: usize,
}

/// Why a module did not load: the PTX line and what was wrong with it.
#[derive(Debug)]
pub struct LoadError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PTX line {}: {}", self.line, self.message)
    }
}

impl Module {
    /// Parses and lowers `text`. Any directive, instruction form or operand syntax the
    /// emulator does not implement fails the load, naming the form and the line.
    ///
    /// The text must begin with `.version` (the ISA requires it first in a module); which
    /// versions a driver accepts is the driver's business ([`declared_version`]).
    pub fn load(text: &str) -> Result<Module, LoadError> {
        let (version, _) = declared_version(text)?;
        let tokens = lex::lex(text)?;
        let ast = parse::parse(&tokens)?;
        if ast.target == 0 {
            return Err(LoadError { line: 1, message: "no .target directive".into() });
        }
        let reqntid = req_ntid(&tokens)?;
        let mut kernels = Vec::new();
        for f in ast.funcs.iter().filter(|f| f.is_entry) {
            let (layout, size) = shared_layout(&ast, f)?;
            let mut k = ir::lower_kernel(&ast, f, &layout)?;
            k.static_shared = size;
            k.req_ntid = reqntid.get(&k.name).copied();
            kernels.push(k);
        }
        Ok(Module { version, target: ast.target, kernels })
    }

    /// Index of the kernel named `name`.
    pub fn kernel(&self, name: &str) -> Option<usize> {
        self.kernels.iter().position(|k| k.name == name)
    }
}

impl Kernel {
    /// Whether a block of shape `block` may launch this kernel as far as `.reqntid` goes:
    /// it must be exactly the declared shape (the driver refuses any other with
    /// CUDA_ERROR_INVALID_VALUE). `.maxntid`, a bound, is checked with the other launch
    /// limits (`exec::check_shape`).
    pub fn check_req_ntid(&self, block: [u32; 3]) -> Result<(), String> {
        match self.req_ntid {
            Some(r) if r != block => {
                Err(format!("launch of {}: block {block:?} is not the .reqntid shape {r:?}", self.name))
            }
            _ => Ok(()),
        }
    }
}

/// The PTX ISA version the text declares, as (major, minor), and the line of its
/// `.version` directive. Read from the start of the text only (comments and white space
/// may precede it), so a driver can refuse a module written for a newer ISA before trying
/// to parse syntax that ISA may have added. A module that does not begin with `.version`
/// is malformed (PTX ISA, "Module Directives: .version": "Each PTX module must begin with
/// a .version directive").
pub fn declared_version(text: &str) -> Result<((u32, u32), usize), LoadError> {
    let mut line = 1;
    let mut rest = text;
    loop {
        let trimmed = rest.trim_start_matches(|c: char| c.is_whitespace() && c != '\n');
        if let Some(r) = trimmed.strip_prefix('\n') {
            line += 1;
            rest = r;
        } else if let Some(r) = trimmed.strip_prefix("//") {
            rest = r.find('\n').map_or("", |i| &r[i..]);
        } else if let Some(r) = trimmed.strip_prefix("/*") {
            let end = r.find("*/").map_or(r.len(), |i| i + 2);
            line += r[..end].matches('\n').count();
            rest = &r[end..];
        } else {
            rest = trimmed;
            break;
        }
    }
    let missing = || LoadError { line, message: "the module does not begin with a .version directive".into() };
    let r = rest.strip_prefix(".version").ok_or_else(missing)?;
    if !r.starts_with([' ', '\t']) {
        return Err(missing());
    }
    let word: &str = r.trim_start_matches([' ', '\t']).split(|c: char| c.is_whitespace()).next().unwrap_or("");
    let bad = || LoadError { line, message: format!("bad .version `{word}`") };
    let (major, minor) = word.split_once('.').ok_or_else(bad)?;
    let ok = |s: &str| !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit());
    if !ok(major) || !ok(minor) {
        return Err(bad());
    }
    Ok(((major.parse().map_err(|_| bad())?, minor.parse().map_err(|_| bad())?), line))
}

/// `.reqntid` of each `.entry` that declares one, by kernel name. The parser folds
/// `.reqntid` into `.maxntid` (a bound it implies); the exact shape is read here from the
/// tokens of the entry's header (between its name and its body).
fn req_ntid(tokens: &[lex::Token]) -> Result<HashMap<String, [u32; 3]>, LoadError> {
    use lex::Tok;
    let mut out = HashMap::new();
    let word = |i: usize| match tokens.get(i).map(|t| &t.tok) {
        Some(Tok::Word(w)) => Some(w.as_str()),
        _ => None,
    };
    let mut i = 0;
    while i < tokens.len() {
        if word(i) != Some(".entry") {
            i += 1;
            continue;
        }
        let Some(name) = word(i + 1) else {
            i += 1;
            continue;
        };
        // The header ends at the body's `{` or at `;` (a declaration); a parameter list
        // has no braces.
        let mut j = i + 2;
        let mut maxntid = false;
        while j < tokens.len() && !matches!(tokens[j].tok, Tok::Punct('{') | Tok::Punct(';')) {
            maxntid |= word(j) == Some(".maxntid");
            if word(j) == Some(".reqntid") {
                let line = tokens[j].line;
                let mut d = [1u32; 3];
                let mut k = j + 1;
                for (n, slot) in d.iter_mut().enumerate() {
                    if n > 0 {
                        if tokens.get(k).map(|t| &t.tok) != Some(&Tok::Punct(',')) {
                            break;
                        }
                        k += 1;
                    }
                    *slot = word(k)
                        .and_then(|w| match w.strip_prefix("0x").or_else(|| w.strip_prefix("0X")) {
                            Some(h) => u32::from_str_radix(h, 16).ok(),
                            None => w.parse().ok(),
                        })
                        .filter(|&v| v > 0)
                        .ok_or_else(|| LoadError { line, message: format!("bad .reqntid of `{name}`") })?;
                    k += 1;
                }
                out.insert(name.to_string(), d);
                j = k;
                continue;
            }
            j += 1;
        }
        // ptxas: "Conflicting directives: .maxntid and .reqntid cannot both be specified".
        if maxntid && out.contains_key(name) {
            let line = tokens[i].line;
            return Err(LoadError { line, message: format!("`{name}` declares both .maxntid and .reqntid") });
        }
        i = j;
    }
    Ok(out)
}

/// Offsets in the block's shared memory of the module-level `.shared` variables that
/// kernel `f` (or a function it calls) names, and the static size. Variables the kernel
/// does not name take no space, as ptxas lays them out. The dynamic (`.extern`) array
/// starts after the static ones.
fn shared_layout(ast: &parse::Ast, f: &parse::Function) -> Result<(HashMap<String, u64>, u32), LoadError> {
    let mut named = std::collections::HashSet::new();
    let mut seen = std::collections::HashSet::new();
    let mut todo = vec![f];
    let mut vars = ast.shared.clone();
    while let Some(g) = todo.pop() {
        if !seen.insert(g.name.clone()) {
            continue;
        }
        for s in g.body.iter().flatten() {
            if let Stmt::Shared(v) = s {
                vars.push(v.clone());
                continue;
            }
            let Stmt::Inst(i) = s else { continue };
            let mut names = Vec::new();
            collect_names(&i.operands, &mut names);
            for n in names {
                named.insert(n.to_string());
                if let Some(callee) = ast.funcs.iter().find(|h| h.name == n && h.body.is_some()) {
                    todo.push(callee);
                }
            }
        }
    }
    let mut layout = HashMap::new();
    let mut off = 0u64;
    for v in vars.iter().filter(|v| !v.dynamic && named.contains(&v.name)) {
        off = off.div_ceil(v.align.max(1) as u64) * v.align.max(1) as u64;
        layout.insert(v.name.clone(), off);
        off += v.size as u64;
    }
    let size = off;
    for v in vars.iter().filter(|v| v.dynamic && named.contains(&v.name)) {
        let a = v.align.max(16) as u64;
        layout.insert(v.name.clone(), size.div_ceil(a) * a);
    }
    let size = u32::try_from(size).map_err(|_| LoadError {
        line: f.line,
        message: format!("the static .shared variables of `{}` do not fit in 4 GiB", f.name),
    })?;
    Ok((layout, size))
}

fn collect_names<'a>(ops: &'a [Operand], out: &mut Vec<&'a str>) {
    for o in ops {
        match o {
            Operand::Name(n) => out.push(n),
            Operand::Mem { base: Some(n), .. } => out.push(n),
            Operand::Vector(v) | Operand::List(v) => collect_names(v, out),
            _ => {}
        }
    }
}
