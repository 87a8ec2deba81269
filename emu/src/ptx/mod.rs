//! PTX text to the emulator's own lowered form, once, at cuModuleLoadData: parse
//! ([`parse`]), then resolve names to register indices and labels to instruction
//! indices ([`crate::ir`]). The executor sees only the lowered form.

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
        let _ = text;
        Err(LoadError { line: 0, message: "the PTX front end is not written yet".into() })
    }

    /// Index of the kernel named `name`.
    pub fn kernel(&self, name: &str) -> Option<usize> {
        self.kernels.iter().position(|k| k.name == name)
    }
}
