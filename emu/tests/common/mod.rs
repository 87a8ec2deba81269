//! Runs PTX on the executor directly (no driver surface): load, allocate, launch, read.
#![allow(dead_code)]

use mp_emu::check::Checks;
use mp_emu::driver::allocations::Memory;
use mp_emu::exec::approx::Approx;
use mp_emu::exec::mma::Mma;
use mp_emu::exec::{launch_with, FaultKind, LaunchConfig, LaunchError};
use mp_emu::ptx::Module;

pub struct Rig {
    pub module: Module,
    pub mem: Memory,
    /// How approximate instructions compute in this rig's launches: exact unless a test
    /// says otherwise, whatever `MP_EMU_APPROX` says.
    pub approx: Approx,
}

impl Rig {
    pub fn new(ptx: &str) -> Rig {
        Rig {
            module: Module::load(ptx).unwrap_or_else(|e| panic!("load: {e}")),
            mem: Memory::new(),
            approx: Approx::Exact,
        }
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
        self.launch_mma(name, grid, block, dynamic_shared, args, checks, Mma::Rn)
    }
    /// As [`Rig::launch_checks`], with wmma.mma's arithmetic given.
    #[allow(clippy::too_many_arguments)] // launch_checks's arguments and the one it fixes
    pub fn launch_mma(
        &mut self,
        name: &str,
        grid: [u32; 3],
        block: [u32; 3],
        dynamic_shared: u32,
        args: &[&[u8]],
        checks: Checks,
        mma: Mma,
    ) -> Result<(), LaunchError> {
        let k = self.module.kernel(name).unwrap_or_else(|| panic!("no kernel {name}"));
        let kern = &self.module.kernels[k];
        let mut buf = vec![0u8; kern.param_bytes];
        assert_eq!(args.len(), kern.params.len(), "argument count of {name}");
        for (p, a) in kern.params.iter().zip(args) {
            buf[p.offset..p.offset + a.len()].copy_from_slice(a);
        }
        let cfg = LaunchConfig { mma, ..LaunchConfig::new(grid, block, dynamic_shared) };
        launch_with(&self.module, k, &cfg, &buf, &mut self.mem, checks, self.approx).map(|_| ())
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

// ---------------------------------------------------------------------------------------
// A kernel whose blocks read each other's output (tests/sanitizers.rs, tests/block_order.rs)

/// Thread t of block b writes out[32 b + t] = 32 b + t + 100 when bit 0 of `mode` is set,
/// then, when bit 1 is, reads res[32 b + t] = out[(32 b + t + 32) % 64]: the element the
/// other block writes. Nothing orders two blocks of one launch, so with both bits the read
/// races with the other block's write.
pub const OTHER_BLOCK: &str = "
.visible .entry other_block(
\t.param .u64 other_block_param_0,
\t.param .u64 other_block_param_1,
\t.param .u32 other_block_param_2
)
{
\t.reg .pred \t%p<3>;
\t.reg .b32 \t%r<12>;
\t.reg .b64 \t%rd<10>;

\tld.param.u64 \t%rd1, [other_block_param_0];
\tld.param.u64 \t%rd2, [other_block_param_1];
\tld.param.u32 \t%r10, [other_block_param_2];
\tand.b32 \t%r11, %r10, 1;
\tsetp.eq.u32 \t%p1, %r11, 0;
\tand.b32 \t%r11, %r10, 2;
\tsetp.eq.u32 \t%p2, %r11, 0;
\tcvta.to.global.u64 \t%rd3, %rd1;
\tcvta.to.global.u64 \t%rd4, %rd2;
\tmov.u32 \t%r1, %tid.x;
\tmov.u32 \t%r2, %ctaid.x;
\tshl.b32 \t%r3, %r2, 5;
\tadd.s32 \t%r4, %r3, %r1;
\tmul.wide.u32 \t%rd5, %r4, 4;
\tadd.s64 \t%rd6, %rd3, %rd5;
\tadd.s32 \t%r5, %r4, 100;
\t@!%p1 st.global.u32 \t[%rd6], %r5; // the store
\t@%p2 bra \t$L_done;
\tadd.s32 \t%r6, %r4, 32;
\tand.b32 \t%r7, %r6, 63;
\tmul.wide.u32 \t%rd7, %r7, 4;
\tadd.s64 \t%rd8, %rd3, %rd7;
\tld.global.u32 \t%r8, [%rd8]; // the load
\tadd.s64 \t%rd9, %rd4, %rd5;
\tst.global.u32 \t[%rd9], %r8;
$L_done:
\tret;
}
";

pub fn other_block(r: &mut Rig, mode: u32, checks: Checks, out: u64, res: u64) -> Result<(), LaunchError> {
    r.launch_checks("other_block", [2, 1, 1], [32, 1, 1], 0, &[&b64(out), &b64(res), &mode.to_le_bytes()], checks)
}
