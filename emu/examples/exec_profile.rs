//! The exec benchmark's two launches (benches/common/cases.rs), a fixed number of times, for a
//! profiler or an instruction counter, whose figures then do not depend on how long a
//! run lasted: `valgrind --tool=callgrind target/release/examples/exec_profile gemm 3`.
//! Emulator speed on this host only; nothing here is a GPU figure.

#[path = "../benches/common/cases.rs"]
mod cases;

use mp_emu::driver::allocations::Memory;
use mp_emu::exec::launch_stats;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map_or("gemm", String::as_str);
    let times: u32 = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(3);
    let mut mem = Memory::new();
    let case = match name {
        "gemm" => cases::gemm(&mut mem),
        "cast" => cases::cast(&mut mem),
        other => panic!("unknown case {other}: gemm or cast"),
    };
    let mut count = 0;
    for _ in 0..times {
        count = launch_stats(&case.module, case.kernel, &case.cfg, &case.params, &mut mem).unwrap().thread_instructions;
    }
    let regs = case.module.kernels[case.kernel].code.nregs;
    println!("{name}: {times} launches of {count} thread-instructions, {regs} registers per thread");
}
