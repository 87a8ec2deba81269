//! The cost model's warp instructions (emu/src/cost.rs): which lanes' accesses form one
//! warp instruction, and how many warp instructions a warp issues, where its lanes
//! diverge. The kernel is the shape of the causal softmax's inner loops
//! (`for (j = lane; j <= q; j += 32)`): a ragged loop whose lanes run different trip
//! counts, then a loop every lane runs equally often, then an if/else on the lane's
//! parity (when asked), then one store.
//!
//! Its own process: costing is on when `MP_EMU_COST` names a file, which every test here
//! sets to the same file.

mod common;
use common::*;
use mp_emu::check::Checks;
use mp_emu::cost::{Counters, ARITHMETIC, CONTROL, MEMORY, TENSOR};
use mp_emu::exec::{launch_checked, LaunchConfig};

/// out[tid] = sum of a[j] for j = lane, lane + 32, ... < n1, plus the same over b with n2;
/// then doubled in the lanes where lane & split is odd, plus 1 in the others.
const RAGGED: &str = "
.visible .entry ragged(.param .u64 pa, .param .u64 pb, .param .u64 pout, .param .u32 n1, .param .u32 n2,
    .param .u32 split)
{
    .reg .pred %p<2>;
    .reg .b32 %r<8>;
    .reg .b64 %rd<8>;
    .reg .f32 %f<4>;
    ld.param.u64 %rd1, [pa];
    ld.param.u64 %rd2, [pb];
    ld.param.u64 %rd3, [pout];
    ld.param.u32 %r2, [n1];
    ld.param.u32 %r3, [n2];
    ld.param.u32 %r7, [split];
    mov.u32 %r1, %laneid;
    mov.f32 %f1, 0f00000000;
    mov.u32 %r4, %r1;
A:
    setp.ge.u32 %p1, %r4, %r2;
    @%p1 bra A_DONE;
    mul.wide.u32 %rd4, %r4, 4;
    add.s64 %rd5, %rd1, %rd4;
    ld.global.f32 %f2, [%rd5];
    add.f32 %f1, %f1, %f2;
    add.u32 %r4, %r4, 32;
    bra A;
A_DONE:
    mov.u32 %r4, %r1;
B:
    setp.ge.u32 %p1, %r4, %r3;
    @%p1 bra B_DONE;
    mul.wide.u32 %rd4, %r4, 4;
    add.s64 %rd5, %rd2, %rd4;
    ld.global.f32 %f2, [%rd5];
    add.f32 %f1, %f1, %f2;
    add.u32 %r4, %r4, 32;
    bra B;
B_DONE:
    and.b32 %r6, %r1, %r7;
    setp.ne.u32 %p1, %r6, 0;
    @%p1 bra ODD;
    add.f32 %f1, %f1, 0f3F800000;
    bra JOIN;
ODD:
    mul.f32 %f1, %f1, 0f40000000;
JOIN:
    mov.u32 %r5, %tid.x;
    mul.wide.u32 %rd4, %r5, 4;
    add.s64 %rd5, %rd3, %rd4;
    st.global.f32 [%rd5], %f1;
    ret;
}
";

/// Runs `ragged` with `threads` threads in one block, costing on; its counters and out.
fn run(threads: u32, n1: u32, n2: u32, split: u32) -> (Counters, Vec<f32>) {
    // One launch at a time writes the file and reads its one record back: the tests run
    // on parallel threads, and MP_EMU_COST is the process's environment.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let path = std::env::temp_dir().join(format!("mp-emu-cost-test-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    std::env::set_var("MP_EMU_COST", &path);
    let mut r = Rig::new(&format!("{HEADER}{RAGGED}"));
    let a: Vec<f32> = (0..64).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..64).map(|i| (1000 + i) as f32).collect();
    let (pa, pb) = (r.upload(&a), r.upload(&b));
    let out = r.upload(&vec![f32::NAN; threads as usize]);
    let k = r.module.kernel("ragged").unwrap();
    let kern = &r.module.kernels[k];
    let mut buf = vec![0u8; kern.param_bytes];
    let args: [&[u8]; 6] = [&b64(pa), &b64(pb), &b64(out), &n1.to_le_bytes(), &n2.to_le_bytes(), &split.to_le_bytes()];
    for (p, v) in kern.params.iter().zip(args) {
        buf[p.offset..p.offset + v.len()].copy_from_slice(v);
    }
    let cfg = LaunchConfig::new([1, 1, 1], [threads, 1, 1], 0);
    let stats = launch_checked(&r.module, k, &cfg, &buf, &mut r.mem, Checks::ALL).unwrap_or_else(|e| panic!("{e:?}"));
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one record for the one launch: {text}");
    assert!(lines[0].contains("\"kernel\":\"ragged\"") && lines[0].contains("\"warp_insts\":{\"memory\":"), "{text}");
    // What the kernel computes, so the counted launch is known to have run the loops.
    let got = r.download::<f32>(out, threads as usize);
    for (t, &v) in got.iter().enumerate() {
        let lane = t as u32 % 32;
        let sum: f32 = (lane..n1).step_by(32).map(|j| a[j as usize]).sum::<f32>()
            + (lane..n2).step_by(32).map(|j| b[j as usize]).sum::<f32>();
        let want = if lane & split != 0 { sum * 2.0 } else { sum + 1.0 };
        assert_eq!(v, want, "out[{t}]");
    }
    (stats.cost.expect("MP_EMU_COST is set: the launch is costed"), got)
}

#[test]
fn a_ragged_loop_does_not_regroup_the_accesses_after_it() {
    // n1 = 32: every lane reads a once, then b twice, then stores: 1 + 2 + 1 warp
    // instructions, each 128 contiguous bytes, 4 sectors.
    let (even, _) = run(32, 32, 64, 0);
    assert_eq!(even.global_warp_insts, 4);
    assert_eq!(even.global_sectors, 16);
    assert_eq!(even.global_unique_bytes, 32 * even.global_sectors, "fully coalesced");
    // n1 = 36: lanes 0-3 read a a second time (a[32..36], 16 bytes, one sector). That
    // iteration is one more warp instruction and one more sector; b's loop and the store
    // are the same warp instructions as above. Grouping by the lane's count of memory
    // instructions (the old model) put lanes 0-3 one access ahead of lanes 4-31 there:
    // b's first loads of lanes 0-3 joined the second loads of lanes 4-31, and the store
    // split in two: 7 warp instructions and 20 sectors.
    let (ragged, _) = run(32, 36, 64, 0);
    assert_eq!(ragged.global_warp_insts, even.global_warp_insts + 1);
    assert_eq!(ragged.global_sectors, even.global_sectors + 1);
    assert_eq!(ragged.global_unique_bytes, even.global_unique_bytes + 16);
}

#[test]
fn a_warp_issues_each_instruction_as_often_as_its_busiest_lane_runs_it() {
    // Converged (n1 = 32): every lane runs the same instructions, so each warp
    // instruction is 32 thread-instructions.
    let (even, _) = run(32, 32, 64, 0);
    for k in [MEMORY, ARITHMETIC, TENSOR, CONTROL] {
        assert_eq!(even.warp_insts[k] * 32, even.thread_insts[k], "class {k}");
    }
    // Ragged (n1 = 36) and split on parity: lane 0 runs every instruction of the loops
    // at least as often as any other lane, and the even side of the if/else (add, bra);
    // the odd lanes' side is one more instruction (the mul), which no single lane's path
    // holds with the even side. The warp issues both: lane 0's path (a one-thread
    // launch) plus that mul.
    let (ragged, _) = run(32, 36, 64, 1);
    let (lane0, _) = run(1, 36, 64, 1);
    let mut want = lane0.thread_insts;
    want[ARITHMETIC] += 1;
    assert_eq!(ragged.warp_insts, want);
    // The thread-instructions / 32 the table used before undercounts the divergence.
    let total = |c: [u64; 4]| c.iter().sum::<u64>();
    assert!(32 * total(ragged.warp_insts) > total(ragged.thread_insts));
    // Two warps issue twice as much (both run lanes 0-31's paths).
    let (two, _) = run(64, 36, 64, 1);
    assert_eq!(two.warp_insts.map(|n| n / 2), ragged.warp_insts);
    assert_eq!(two.warp_insts.map(|n| n % 2), [0; 4]);
}
