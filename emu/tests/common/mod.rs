//! Runs PTX on the executor directly (no driver surface): load, allocate, launch, read.
#![allow(dead_code)]

use mp_emu::check::Checks;
use mp_emu::driver::allocations::Memory;
use mp_emu::exec::{launch_checked, FaultKind, LaunchConfig, LaunchError};
use mp_emu::ptx::Module;

pub struct Rig {
    pub module: Module,
    pub mem: Memory,
}

impl Rig {
    pub fn new(ptx: &str) -> Rig {
        Rig { module: Module::load(ptx).unwrap_or_else(|e| panic!("load: {e}")), mem: Memory::new() }
    }
    pub fn upload<T: Copy>(&mut self, data: &[T]) -> u64 {
        let bytes = std::mem::size_of_val(data);
        let p = self.mem.alloc(bytes);
        // SAFETY: T is a plain Copy value type in these tests (f32, u32, u16).
        let src = unsafe { std::slice::from_raw_parts(data.as_ptr() as *const u8, bytes) };
        self.mem.slice_mut(p, bytes).unwrap().copy_from_slice(src);
        p
    }
    pub fn download<T: Copy + Default>(&self, p: u64, n: usize) -> Vec<T> {
        let mut out = vec![T::default(); n];
        let bytes = n * std::mem::size_of::<T>();
        let src = self.mem.slice(p, bytes).unwrap();
        // SAFETY: as in upload.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), out.as_mut_ptr() as *mut u8, bytes) };
        out
    }
    /// Launches `name` with the parameters given as raw little-endian values, each
    /// placed at its declared offset.
    pub fn launch(&mut self, name: &str, grid: [u32; 3], block: [u32; 3], args: &[&[u8]]) -> Result<(), LaunchError> {
        self.launch_dyn(name, grid, block, 0, args)
    }
    /// As [`Rig::launch`], with `dynamic_shared` bytes of dynamic shared memory.
    pub fn launch_dyn(
        &mut self,
        name: &str,
        grid: [u32; 3],
        block: [u32; 3],
        dynamic_shared: u32,
        args: &[&[u8]],
    ) -> Result<(), LaunchError> {
        self.launch_checks(name, grid, block, dynamic_shared, args, Checks::ALL)
    }
    /// As [`Rig::launch_dyn`], with the sanitizers given (every test launch runs all of
    /// them unless it says otherwise, whatever the environment says).
    pub fn launch_checks(
        &mut self,
        name: &str,
        grid: [u32; 3],
        block: [u32; 3],
        dynamic_shared: u32,
        args: &[&[u8]],
        checks: Checks,
    ) -> Result<(), LaunchError> {
        let k = self.module.kernel(name).unwrap_or_else(|| panic!("no kernel {name}"));
        let kern = &self.module.kernels[k];
        let mut buf = vec![0u8; kern.param_bytes];
        assert_eq!(args.len(), kern.params.len(), "argument count of {name}");
        for (p, a) in kern.params.iter().zip(args) {
            buf[p.offset..p.offset + a.len()].copy_from_slice(a);
        }
        let cfg = LaunchConfig::new(grid, block, dynamic_shared);
        launch_checked(&self.module, k, &cfg, &buf, &mut self.mem, checks).map(|_| ())
    }
}

pub fn repo_ptx(name: &str) -> String {
    std::fs::read_to_string(format!("{}/../cuda/ptx/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The PTX header every hand-written test kernel starts with.
pub const HEADER: &str = ".version 7.8\n.target sm_80\n.address_size 64\n";

/// A kernel's u64 parameter as launch bytes.
pub fn b64(v: u64) -> [u8; 8] {
    v.to_le_bytes()
}

/// The 1-based line of `ptx` that contains `needle` (exactly one must).
pub fn line_of(ptx: &str, needle: &str) -> usize {
    let hits: Vec<usize> = ptx.lines().enumerate().filter(|(_, l)| l.contains(needle)).map(|(i, _)| i + 1).collect();
    assert_eq!(hits.len(), 1, "`{needle}` must occur once in the test kernel");
    hits[0]
}

/// The launch failed with `kind` and a report that contains every one of `parts`.
pub fn assert_report(e: &LaunchError, kind: FaultKind, parts: &[&str]) {
    assert_eq!(e.kind, kind, "{}", e.report);
    for p in parts {
        assert!(e.report.contains(p), "report lacks `{p}`:\n{}", e.report);
    }
}
