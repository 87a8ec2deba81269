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
    // Each launch's wall time too: on a shared host the fastest of many launches is the
    // figure least moved by other load (emulator speed on this host, never a GPU time).
    let mut took = Vec::new();
    for _ in 0..times {
        let t = std::time::Instant::now();
        count = launch_stats(&case.module, case.kernel, &case.cfg, &case.params, &mut mem).unwrap().thread_instructions;
        took.push(t.elapsed().as_secs_f64() * 1e3);
    }
    took.sort_by(f64::total_cmp);
    let regs = case.module.kernels[case.kernel].code.nregs;
    println!("{name}: {times} launches of {count} thread-instructions, {regs} registers per thread");
    if let (Some(min), Some(median)) = (took.first(), took.get(took.len() / 2)) {
        println!("{name}: wall time per launch on this host: fastest {min:.3} ms, median {median:.3} ms");
    }
}
