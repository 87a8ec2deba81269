//! Registers per thread, as ptxas assembles each kernel of the repository for each
//! architecture (`cuda/ptx/resources.txt`, written by scripts/vendor-ptx.sh and kept
//! current by scripts/check-ptx.sh), and the register-file limit a launch must fit.
//!
//! A GPU refuses a launch whose block needs more registers than one SM has
//! (CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES): a block of 512 threads of a 128-register kernel
//! does not launch, whatever its shared memory. The emulator executes PTX, which has no
//! register allocation, so it takes the count ptxas gives for the kernel, the PTX's
//! `.target` and the device's architecture. Kernels not in the table (hand-written test
//! PTX) are taken at 32 registers unless `MP_EMU_RESOURCES=<file>` adds rows for them in
//! the same format. Capabilities 8.6 and 8.9 use the sm_80 rows (no ptxas run for them).

use std::collections::HashMap;
use std::sync::OnceLock;

/// The table of the vendored PTX, built into the emulator.
const VENDORED: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../cuda/ptx/resources.txt"));

/// Extra rows for kernels outside the vendored PTX (tests).
pub const RESOURCES_VAR: &str = "MP_EMU_RESOURCES";

/// 32-bit registers per SM on every capability from 7.5 to 9.0.
const REGISTERS_PER_SM: u32 = 65536;

/// Registers are allocated per warp in units of 256 (8 per thread).
const ALLOCATION_UNIT: u32 = 8;

/// Registers a kernel is taken at when nothing says otherwise.
pub const DEFAULT_REGISTERS: u32 = 32;

/// (PTX target, architecture, kernel) -> registers per thread.
type Table = HashMap<(u32, String, String), u32>;

/// Rows `file arch kernel registers`; the file's target is the last dotted part of its
/// name before `.ptx` (`gemm.sm_80.ptx`: 80). Comments and malformed rows are skipped.
fn parse(text: &str, table: &mut Table) {
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [file, arch, kernel, regs] = f[..] else { continue };
        let target = file.strip_suffix(".ptx").and_then(|s| s.rsplit('.').next()).and_then(arch_number);
        if let (Some(target), Ok(regs)) = (target, regs.parse::<u32>()) {
            table.insert((target, arch.to_string(), kernel.to_string()), regs);
        }
    }
}

/// 75 for `sm_75`, 90 for `sm_90a`.
fn arch_number(s: &str) -> Option<u32> {
    s.strip_prefix("sm_")?.trim_end_matches('a').parse().ok()
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Table::new();
        parse(VENDORED, &mut t);
        if let Some(extra) = std::env::var_os(RESOURCES_VAR) {
            match std::fs::read_to_string(&extra) {
                Ok(text) => parse(&text, &mut t),
                Err(e) => eprintln!("mp-emu: {RESOURCES_VAR}={}: {e}", extra.to_string_lossy()),
            }
        }
        t
    })
}

/// Registers per thread of `kernel` from PTX for `target` on a device of capability `cc`.
pub fn registers(target: u32, cc: (u32, u32), kernel: &str) -> u32 {
    let arch = match cc {
        (7, _) => "sm_75",
        (8, _) => "sm_80",
        _ => "sm_90",
    };
    let t = table();
    t.get(&(target, arch.to_string(), kernel.to_string()))
        .or_else(|| t.get(&(target, format!("{arch}a"), kernel.to_string())))
        .copied()
        .unwrap_or(DEFAULT_REGISTERS)
}

/// Registers a block of `threads` threads takes at `regs` per thread.
pub fn block_registers(regs: u32, threads: u32) -> u64 {
    let per_warp = regs.div_ceil(ALLOCATION_UNIT) * ALLOCATION_UNIT * 32;
    threads.div_ceil(32) as u64 * per_warp as u64
}

/// Whether such a block fits one SM's register file.
pub fn fits(regs: u32, threads: u32) -> bool {
    block_registers(regs, threads) <= REGISTERS_PER_SM as u64
}

/// The largest block (a multiple of 32 threads, at most 1024) that fits at `regs`.
pub fn max_threads(regs: u32) -> u32 {
    let per_warp = regs.div_ceil(ALLOCATION_UNIT).max(1) * ALLOCATION_UNIT * 32;
    (REGISTERS_PER_SM / per_warp * 32).min(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vendored_table_has_every_gemm_kernel() {
        // gemm.sm_80.ptx: 128 registers on sm_80 and sm_90 (scripts/check-ptx.sh).
        assert_eq!(registers(80, (8, 0), "gemm_nn_f32"), 128);
        assert_eq!(registers(80, (9, 0), "gemm_tt_f16"), 128);
        assert_eq!(registers(75, (7, 5), "gemm_nn_f32"), 128);
        assert_eq!(registers(75, (8, 0), "no_such_kernel"), DEFAULT_REGISTERS);
    }

    #[test]
    fn register_file_limit() {
        assert!(fits(128, 256) && !fits(128, 512 + 32));
        assert!(fits(128, 512) && !fits(129, 512), "129 rounds up to 136 per thread");
        assert!(fits(255, 256) && !fits(255, 288));
        assert_eq!(max_threads(128), 512);
        assert_eq!(max_threads(32), 1024);
        assert_eq!(max_threads(255), 256);
    }
}
