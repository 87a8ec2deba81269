//! The exec benchmark's two launches (benches/exec.rs), a fixed number of times, for a
//! profiler or an instruction counter, whose figures then do not depend on how long a
//! run lasted: `valgrind --tool=callgrind target/release/examples/exec_profile gemm 3`.
//! Emulator speed on this host only; nothing here is a GPU figure.

use mp_emu::driver::memory::Memory;
use mp_emu::exec::{launch_stats, LaunchConfig};
use mp_emu::ptx::Module;

fn ptx(name: &str) -> String {
    std::fs::read_to_string(format!("{}/../cuda/ptx/{name}", env!("CARGO_MANIFEST_DIR"))).expect("vendored PTX")
}

fn upload(mem: &mut Memory, bytes: &[u8]) -> u64 {
    let p = mem.alloc(bytes.len());
    mem.slice_mut(p, bytes.len()).unwrap().copy_from_slice(bytes);
    p
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let case = args.get(1).map_or("gemm", String::as_str);
    let times: u32 = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(3);
    let mut mem = Memory::new();
    let (module, kernel, cfg, params) = match case {
        "gemm" => {
            // As benches/exec.rs: gemm_nn_f32 on 128 x 128 x 256, one block of 256 threads.
            let module = Module::load(&ptx("gemm.sm_80.ptx")).unwrap();
            let k = module.kernel("gemm_nn_f32").unwrap();
            let (m, n, kk) = (128usize, 128usize, 256usize);
            let half = |i: usize| if i % 3 == 0 { 0x3c00u16 } else { 0xbc00u16 };
            let a: Vec<u8> = (0..m * kk).flat_map(|i| half(i).to_le_bytes()).collect();
            let b: Vec<u8> = (0..kk * n).flat_map(|i| half(i + 1).to_le_bytes()).collect();
            let (pa, pb, pc) = (upload(&mut mem, &a), upload(&mut mem, &b), mem.alloc(m * n * 4));
            let mut p = Vec::new();
            for v in [pa, pb, pc, 0, 0, 0] {
                p.extend_from_slice(&v.to_le_bytes());
            }
            for v in [m, n, kk, kk, n, n] {
                p.extend_from_slice(&(v as i64).to_le_bytes());
            }
            p.extend_from_slice(&1f32.to_le_bytes());
            p.extend_from_slice(&0f32.to_le_bytes());
            p.extend_from_slice(&[0u8; 8]);
            p.extend_from_slice(&1i32.to_le_bytes());
            (module, k, LaunchConfig::new([1, 1, 1], [256, 1, 1], 0), p)
        }
        "cast" => {
            let module = Module::load(&ptx("cast.sm_75.ptx")).unwrap();
            let k = module.kernel("cast_f32_f16").unwrap();
            let len = 1usize << 18;
            let x: Vec<u8> = (0..len).flat_map(|i| (i as f32 * 0.25).to_le_bytes()).collect();
            let (px, py) = (upload(&mut mem, &x), mem.alloc(len * 2));
            let mut p = Vec::new();
            for v in [px, py, len as u64] {
                p.extend_from_slice(&v.to_le_bytes());
            }
            (module, k, LaunchConfig::new([64, 1, 1], [256, 1, 1], 0), p)
        }
        other => panic!("unknown case {other}: gemm or cast"),
    };
    let mut count = 0;
    for _ in 0..times {
        count = launch_stats(&module, kernel, &cfg, &params, &mut mem).unwrap().thread_instructions;
    }
    let regs = module.kernels[kernel].code.nregs;
    println!("{case}: {times} launches of {count} thread-instructions, {regs} registers per thread");
}
