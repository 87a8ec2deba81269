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
    /// `.maxntid`, when declared (x, y, z).
    pub max_ntid: Option<[u32; 3]>,
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
    pub fn load(text: &str) -> Result<Module, LoadError> {
        let tokens = lex::lex(text)?;
        let ast = parse::parse(&tokens)?;
        if ast.target == 0 {
            return Err(LoadError { line: 1, message: "no .target directive".into() });
        }
        let mut kernels = Vec::new();
        for f in ast.funcs.iter().filter(|f| f.is_entry) {
            let (layout, size) = shared_layout(&ast, f)?;
            let mut k = ir::lower_kernel(&ast, f, &layout)?;
            k.static_shared = size;
            kernels.push(k);
        }
        Ok(Module { target: ast.target, kernels })
    }

    /// Index of the kernel named `name`.
    pub fn kernel(&self, name: &str) -> Option<usize> {
        self.kernels.iter().position(|k| k.name == name)
    }
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
