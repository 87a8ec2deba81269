//! Planted-bug tests for the sanitizers (crate::check; issue 15, "Sanitizers" items 1-4):
//! one small hand-written kernel per hazard kind that is caught, with the report naming
//! the check, the hazard, both threads, both PTX lines and the address; the same launch
//! with that one check switched off, which does not report it (the evidence that the
//! test fails when its check is disabled); and the corrected twin, which runs clean under
//! every check and gives the right result. Last, real kernels of the repository run clean
//! under every check.
//!
//! Which kind a hazard is reported as depends on the order of the two accesses, and the
//! emulator runs the threads of a block in index order up to their next synchronizing
//! instruction; the kernels are written so that the planted access comes second in that
//! order. Where the bug gives the right answer in that schedule anyway (as a missing
//! barrier often does), the test says so: racecheck finds it from synchronization
//! epochs, not from the values.

mod common;
use common::*;
use half::f16;
use mp_emu::check::Checks;
use mp_emu::exec::{FaultKind, LaunchError};

/// `HEADER` and `kernel` with each `{NAME}` placeholder replaced.
fn kernel_ptx(kernel: &str, subst: &[(&str, &str)]) -> String {
    let mut k = kernel.to_string();
    for (name, text) in subst {
        k = k.replace(&format!("{{{name}}}"), text);
    }
    let unfilled = k.split('{').skip(1).find_map(|rest| {
        let name = rest.split('}').next().unwrap_or("");
        (!name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')).then_some(name)
    });
    assert!(unfilled.is_none(), "unfilled placeholder {unfilled:?}");
    format!("{HEADER}{k}")
}

fn pl(line: usize) -> String {
    format!("PTX line {line}")
}

const NO_RACE: Checks = Checks { race: false, ..Checks::ALL };
const NO_INIT: Checks = Checks { init: false, ..Checks::ALL };
const NO_SYNC: Checks = Checks { sync: false, ..Checks::ALL };

// ---------------------------------------------------------------------------------------
// racecheck
// ---------------------------------------------------------------------------------------

/// Thread t stores 3t + 1 to s[t], then reads s[(4t {OP} {MASK}) / 4] into out[t] (with
/// `and` 124: s[t & 31], the threads of warp 1 read what warp 0 wrote). `{SYNC}`: the
/// synchronization between the two (none: the planted bug).
const EXCHANGE: &str = "
.visible .entry exchange(
\t.param .u64 exchange_param_0
)
{
\t.reg .pred \t%p<2>;
\t.reg .b32 \t%r<10>;
\t.reg .b64 \t%rd<5>;
\t.shared .align 4 .b8 s[256];

\tld.param.u64 \t%rd1, [exchange_param_0];
\tcvta.to.global.u64 \t%rd2, %rd1;
\tmov.u32 \t%r1, %tid.x;
\tmov.u32 \t%r2, s;
\tshl.b32 \t%r3, %r1, 2;
\tadd.s32 \t%r4, %r2, %r3;
\tmad.lo.s32 \t%r5, %r1, 3, 1;
\tst.shared.u32 \t[%r4], %r5; // the store
{SYNC}
\t{OP}.b32 \t%r6, %r3, {MASK};
\tadd.s32 \t%r7, %r2, %r6;
\tld.shared.u32 \t%r8, [%r7]; // the load
\tmul.wide.u32 \t%rd3, %r1, 4;
\tadd.s64 \t%rd4, %rd2, %rd3;
\tst.global.u32 \t[%rd4], %r8;
\tret;
}
";

/// Runs `exchange` on `threads` threads reading s[t & (mask / 4)], with `sync` between
/// the store and the load, under `checks`; the result when it ran.
fn exchange(threads: u32, mask: u32, sync: &str, checks: Checks) -> (String, Result<Vec<u32>, LaunchError>) {
    exchange_op("and", threads, mask, sync, checks)
}

fn exchange_op(
    op: &str,
    threads: u32,
    mask: u32,
    sync: &str,
    checks: Checks,
) -> (String, Result<Vec<u32>, LaunchError>) {
    let mask = mask.to_string();
    let ptx = kernel_ptx(EXCHANGE, &[("SYNC", sync), ("OP", op), ("MASK", &mask)]);
    let mut r = Rig::new(&ptx);
    let out = r.upload(&vec![0u32; threads as usize]);
    let res = r.launch_checks("exchange", [1, 1, 1], [threads, 1, 1], 0, &[&b64(out)], checks);
    (ptx.clone(), res.map(|()| r.download(out, threads as usize)))
}

/// What `exchange` gives when every thread's store is seen by every load.
fn exchanged(threads: u32, mask: u32) -> Vec<u32> {
    (0..threads).map(|t| ((t * 4) & mask) / 4 * 3 + 1).collect()
}

#[test]
fn racecheck_read_after_write_across_warps() {
    // Warp 1 reads s[0..32), which warp 0 wrote, with no bar.sync between.
    let (ptx, res) = exchange(64, 124, "", Checks::ALL);
    let e = res.unwrap_err();
    let (st, ld) = (line_of(&ptx, "the store"), line_of(&ptx, "the load"));
    assert_report(
        &e,
        FaultKind::Sanitizer,
        &[
            "racecheck: Read-after-write hazard on __shared__ byte 0x0:",
            &format!("written by thread (0,0,0) at {} and thread (32,0,0) at {}", pl(st), pl(ld)),
            "no barrier between them",
            "kernel exchange",
            "by thread (32,0,0) in block (0,0,0)",
        ],
    );
    // Without racecheck the launch passes, and in the emulator's schedule (warp 0 runs
    // first) even gives the right answer: the bug is found from the epochs, not the values.
    let (_, res) = exchange(64, 124, "", NO_RACE);
    assert_eq!(res.unwrap(), exchanged(64, 124));
    // A warp barrier orders nothing across warps.
    let (_, res) = exchange(64, 124, "\tbar.warp.sync \t-1;", Checks::ALL);
    assert_report(&res.unwrap_err(), FaultKind::Sanitizer, &["racecheck: Read-after-write hazard", "thread (32,0,0)"]);
    // The corrected twin: a block barrier between the store and the load.
    let (_, res) = exchange(64, 124, "\tbar.sync \t0;", Checks::ALL);
    assert_eq!(res.unwrap(), exchanged(64, 124));
}

#[test]
fn racecheck_read_after_write_within_a_warp() {
    // One warp; lane l reads s[l & 30], so each odd lane reads its even neighbour's word
    // with no warp-synchronizing instruction between (lanes of a warp run independently
    // from Volta on).
    let (ptx, res) = exchange(32, 120, "", Checks::ALL);
    let e = res.unwrap_err();
    let (st, ld) = (line_of(&ptx, "the store"), line_of(&ptx, "the load"));
    assert_report(
        &e,
        FaultKind::Sanitizer,
        &[
            "racecheck: Read-after-write hazard on __shared__ byte 0x0:",
            &format!("written by thread (0,0,0) at {} and thread (1,0,0) at {}", pl(st), pl(ld)),
            "by thread (1,0,0) in block (0,0,0)",
        ],
    );
    let (_, res) = exchange(32, 120, "", NO_RACE);
    assert_eq!(res.unwrap(), exchanged(32, 120));
    // The corrected twins: __syncwarp() over the whole warp, or a block barrier.
    for sync in ["\tbar.warp.sync \t-1;", "\tbar.sync \t0;"] {
        let (_, res) = exchange(32, 120, sync, Checks::ALL);
        assert_eq!(res.unwrap(), exchanged(32, 120), "{sync}");
    }
    // Not a fix (issue 18, item 7): a shuffle makes the lanes wait for one another, but
    // the PTX ISA gives memory ordering among a warp's threads to bar.warp.sync only. This
    // passed before racecheck kept a clock per lane instead of one epoch per warp that
    // any collective advanced.
    let shfl = "\tshfl.sync.idx.b32 \t%r9|%p1, %r1, 0, 31, -1;";
    let e = exchange(32, 120, shfl, Checks::ALL).1.unwrap_err();
    assert_report(&e, FaultKind::Sanitizer, &["racecheck: Read-after-write hazard on __shared__ byte 0x0:"]);
    assert_eq!(exchange(32, 120, shfl, NO_RACE).1.unwrap(), exchanged(32, 120));
}

#[test]
fn racecheck_symmetric_exchange_is_caught_whichever_order() {
    // s[t] then s[t ^ 32] (across warps) and s[t] then s[t ^ 1] (within a warp): each
    // thread also reads a word its partner writes with nothing ordering the two.
    // Across warps, warp 0 runs first and reads its partners' words before warp 1 wrote
    // them: with every check on, initcheck names that; without initcheck, racecheck finds
    // the partner's store after the unsynchronized read (Write-after-read); only with both
    // off does the launch pass. Within a warp the lanes step together (a converged warp
    // executes each instruction for every lane before the next: exec::run_warp), so every
    // store precedes every load: racecheck finds the read of the partner's unsynchronized
    // store (Read-after-write) whether initcheck is on or not, and with racecheck off the
    // launch passes. With the barrier it is clean either way.
    for (threads, mask, partner, sync) in [(64u32, 128u32, 32, "\tbar.sync \t0;"), (32, 4, 1, "\tbar.warp.sync \t-1;")]
    {
        let (ptx, res) = exchange_op("xor", threads, mask, "", Checks::ALL);
        let (st, ld) = (line_of(&ptx, "the store"), line_of(&ptx, "the load"));
        let byte = format!("{:#x}", partner * 4);
        let raw = [
            format!("racecheck: Read-after-write hazard on __shared__ byte {byte}:"),
            format!("written by thread ({partner},0,0) at {} and thread (0,0,0) at {}", pl(st), pl(ld)),
        ];
        let raw: Vec<&str> = raw.iter().map(String::as_str).collect();
        let want: Vec<u32> = (0..threads).map(|t| (t ^ partner) * 3 + 1).collect();
        if partner == 32 {
            assert_report(
                &res.unwrap_err(),
                FaultKind::Sanitizer,
                &[&format!(
                    "initcheck: Uninitialized __shared__ memory read of byte {byte} by thread (0,0,0) at {}",
                    pl(ld)
                )],
            );
            let (_, res) = exchange_op("xor", threads, mask, "", NO_INIT);
            assert_report(
                &res.unwrap_err(),
                FaultKind::Sanitizer,
                &[
                    &format!("racecheck: Write-after-read hazard on __shared__ byte {byte}:"),
                    &format!("read by thread (0,0,0) at {} and thread ({partner},0,0) at {}", pl(ld), pl(st)),
                ],
            );
            let (_, res) = exchange_op("xor", threads, mask, "", Checks { race: false, init: false, sync: true });
            res.unwrap();
        } else {
            assert_report(&res.unwrap_err(), FaultKind::Sanitizer, &raw);
            assert_report(&exchange_op("xor", threads, mask, "", NO_INIT).1.unwrap_err(), FaultKind::Sanitizer, &raw);
            assert_eq!(exchange_op("xor", threads, mask, "", NO_RACE).1.unwrap(), want);
        }
        assert_eq!(exchange_op("xor", threads, mask, sync, Checks::ALL).1.unwrap(), want);
    }
}

/// Thread 0 stores 7 to s[0]; after a barrier every thread reads it into out[t]; then
/// thread 63 overwrites it with 9. `{SYNC}`: between the reads and the overwrite.
const OVERWRITE: &str = "
.visible .entry overwrite(
\t.param .u64 overwrite_param_0
)
{
\t.reg .pred \t%p<3>;
\t.reg .b32 \t%r<8>;
\t.reg .b64 \t%rd<5>;
\t.shared .align 4 .b8 s[4];

\tld.param.u64 \t%rd1, [overwrite_param_0];
\tcvta.to.global.u64 \t%rd2, %rd1;
\tmov.u32 \t%r1, %tid.x;
\tmov.u32 \t%r2, s;
\tmov.u32 \t%r3, 7;
\tmov.u32 \t%r4, 9;
\tsetp.eq.u32 \t%p1, %r1, 0;
\t@%p1 st.shared.u32 \t[%r2], %r3; // the first store
\tbar.sync \t0;
\tld.shared.u32 \t%r5, [%r2]; // the load
{SYNC}
\tsetp.eq.u32 \t%p2, %r1, 63;
\t@%p2 st.shared.u32 \t[%r2], %r4; // the overwrite
\tmul.wide.u32 \t%rd3, %r1, 4;
\tadd.s64 \t%rd4, %rd2, %rd3;
\tst.global.u32 \t[%rd4], %r5;
\tret;
}
";

fn overwrite(sync: &str, checks: Checks) -> (String, Result<Vec<u32>, LaunchError>) {
    let ptx = kernel_ptx(OVERWRITE, &[("SYNC", sync)]);
    let mut r = Rig::new(&ptx);
    let out = r.upload(&[0u32; 64]);
    let res = r.launch_checks("overwrite", [1, 1, 1], [64, 1, 1], 0, &[&b64(out)], checks);
    (ptx.clone(), res.map(|()| r.download(out, 64)))
}

#[test]
fn racecheck_write_after_read() {
    let (ptx, res) = overwrite("", Checks::ALL);
    let e = res.unwrap_err();
    let (ld, st) = (line_of(&ptx, "the load"), line_of(&ptx, "the overwrite"));
    // The last reader before the overwrite is thread 62, of the overwriter's own warp:
    // with no __syncwarp between them, that is a hazard too.
    assert_report(
        &e,
        FaultKind::Sanitizer,
        &[
            "racecheck: Write-after-read hazard on __shared__ byte 0x0:",
            &format!("read by thread (62,0,0) at {} and thread (63,0,0) at {}", pl(ld), pl(st)),
            "by thread (63,0,0) in block (0,0,0)",
        ],
    );
    // Without racecheck: no report, and every thread read 7 in this schedule.
    assert_eq!(overwrite("", NO_RACE).1.unwrap(), vec![7; 64]);
    // The corrected twin: a barrier before the overwrite.
    assert_eq!(overwrite("\tbar.sync \t0;", Checks::ALL).1.unwrap(), vec![7; 64]);
}

/// Threads 0 (warp 0) and 32 (warp 1) both write s[0]; after a barrier every thread reads
/// it into out[t]. `{SYNC}`: between the two writes.
const TWO_WRITERS: &str = "
.visible .entry two_writers(
\t.param .u64 two_writers_param_0
)
{
\t.reg .pred \t%p<3>;
\t.reg .b32 \t%r<8>;
\t.reg .b64 \t%rd<5>;
\t.shared .align 4 .b8 s[4];

\tld.param.u64 \t%rd1, [two_writers_param_0];
\tcvta.to.global.u64 \t%rd2, %rd1;
\tmov.u32 \t%r1, %tid.x;
\tmov.u32 \t%r2, s;
\tmov.u32 \t%r3, 1;
\tmov.u32 \t%r4, 2;
\tsetp.eq.u32 \t%p1, %r1, 0;
\t@%p1 st.shared.u32 \t[%r2], %r3; // the first write
{SYNC}
\tsetp.eq.u32 \t%p2, %r1, 32;
\t@%p2 st.shared.u32 \t[%r2], %r4; // the second write
\tbar.sync \t0;
\tld.shared.u32 \t%r5, [%r2];
\tmul.wide.u32 \t%rd3, %r1, 4;
\tadd.s64 \t%rd4, %rd2, %rd3;
\tst.global.u32 \t[%rd4], %r5;
\tret;
}
";

fn two_writers(sync: &str, checks: Checks) -> (String, Result<Vec<u32>, LaunchError>) {
    let ptx = kernel_ptx(TWO_WRITERS, &[("SYNC", sync)]);
    let mut r = Rig::new(&ptx);
    let out = r.upload(&[0u32; 64]);
    let res = r.launch_checks("two_writers", [1, 1, 1], [64, 1, 1], 0, &[&b64(out)], checks);
    (ptx.clone(), res.map(|()| r.download(out, 64)))
}

#[test]
fn racecheck_write_after_write() {
    let (ptx, res) = two_writers("", Checks::ALL);
    let e = res.unwrap_err();
    let (w1, w2) = (line_of(&ptx, "the first write"), line_of(&ptx, "the second write"));
    assert_report(
        &e,
        FaultKind::Sanitizer,
        &[
            "racecheck: Write-after-write hazard on __shared__ byte 0x0:",
            &format!("written by thread (0,0,0) at {} and thread (32,0,0) at {}", pl(w1), pl(w2)),
            "by thread (32,0,0) in block (0,0,0)",
        ],
    );
    assert_eq!(two_writers("", NO_RACE).1.unwrap(), vec![2; 64]);
    // The corrected twin: a barrier between the writes orders them.
    assert_eq!(two_writers("\tbar.sync \t0;", Checks::ALL).1.unwrap(), vec![2; 64]);
}

/// Thread t zeroes its 16 bytes s[16t, 16t + 16), copies src[4t..4t + 4) there with
/// cp.async, and stores the first word it reads back to out[t]. `{EARLY}`: the load
/// before cp.async.wait_group (the planted bug); `{LATE}`: after it.
const CP_ASYNC: &str = "
.visible .entry cp_async_read(
\t.param .u64 cp_async_read_param_0,
\t.param .u64 cp_async_read_param_1
)
{
\t.reg .b32 \t%r<12>;
\t.reg .b64 \t%rd<10>;
\t.shared .align 16 .b8 s[512];

\tld.param.u64 \t%rd1, [cp_async_read_param_0];
\tld.param.u64 \t%rd2, [cp_async_read_param_1];
\tcvta.to.global.u64 \t%rd3, %rd1;
\tcvta.to.global.u64 \t%rd4, %rd2;
\tmov.u32 \t%r1, %tid.x;
\tmov.u32 \t%r2, s;
\tshl.b32 \t%r3, %r1, 4;
\tadd.s32 \t%r4, %r2, %r3;
\tmov.u32 \t%r5, 0;
\tst.shared.v4.u32 \t[%r4], {%r5, %r5, %r5, %r5};
\tmul.wide.u32 \t%rd5, %r1, 16;
\tadd.s64 \t%rd6, %rd3, %rd5;
\tcp.async.cg.shared.global \t[%r4], [%rd6], 16; // the copy
\tcp.async.commit_group;
{EARLY}
\tcp.async.wait_group \t0;
{LATE}
\tmul.wide.u32 \t%rd7, %r1, 4;
\tadd.s64 \t%rd8, %rd4, %rd7;
\tst.global.u32 \t[%rd8], %r6;
\tret;
}
";

const CP_LOAD: &str = "\tld.shared.u32 \t%r6, [%r4]; // the load";

fn cp_async_read(early: &str, late: &str, checks: Checks) -> (String, Result<Vec<u32>, LaunchError>) {
    let ptx = kernel_ptx(CP_ASYNC, &[("EARLY", early), ("LATE", late)]);
    let mut r = Rig::new(&ptx);
    let src: Vec<u32> = (0..128).map(|i| 1000 + i).collect();
    let src = r.upload(&src);
    let out = r.upload(&[0u32; 32]);
    let res = r.launch_checks("cp_async_read", [1, 1, 1], [32, 1, 1], 0, &[&b64(src), &b64(out)], checks);
    (ptx.clone(), res.map(|()| r.download(out, 32)))
}

#[test]
fn racecheck_cp_async_destination_read_before_wait_group() {
    let (ptx, res) = cp_async_read(CP_LOAD, "", Checks::ALL);
    let e = res.unwrap_err();
    let (cp, ld) = (line_of(&ptx, "the copy"), line_of(&ptx, "the load"));
    assert_report(
        &e,
        FaultKind::Sanitizer,
        &[
            "racecheck: Read-after-write hazard on __shared__ byte 0x0:",
            &format!(
                "thread (0,0,0) at {} reads the destination of the cp.async issued by thread (0,0,0) at {}",
                pl(ld),
                pl(cp)
            ),
            "before a cp.async.wait_group completed it",
            "kernel cp_async_read",
        ],
    );
    // Without racecheck it runs, and reads the zeros the copy has not yet replaced.
    assert_eq!(cp_async_read(CP_LOAD, "", NO_RACE).1.unwrap(), vec![0; 32]);
    // The corrected twin: the load after wait_group 0.
    let want: Vec<u32> = (0..32).map(|t| 1000 + 4 * t).collect();
    assert_eq!(cp_async_read("", CP_LOAD, Checks::ALL).1.unwrap(), want);
}

#[test]
fn racecheck_cp_async_destination_read_by_another_thread() {
    // Lane t reads the destination of lane t & 30 after its own wait_group: lane 0's
    // wait_group completed lane 0's copy, which lane 1 may read only after a warp or block
    // barrier. The write is attributed to the thread and line that issued the copy.
    let ld = "\tand.b32 \t%r7, %r1, 30;\n\tshl.b32 \t%r8, %r7, 4;\n\tadd.s32 \t%r9, %r2, %r8;\n\tld.shared.u32 \t%r6, [%r9]; // the load";
    let (ptx, res) = cp_async_read("", ld, Checks::ALL);
    let e = res.unwrap_err();
    let (cp, ld_line) = (line_of(&ptx, "the copy"), line_of(&ptx, "the load"));
    assert_report(
        &e,
        FaultKind::Sanitizer,
        &[
            "racecheck: Read-after-write hazard on __shared__ byte 0x0:",
            &format!("written by thread (0,0,0) at {} and thread (1,0,0) at {}", pl(cp), pl(ld_line)),
            "by thread (1,0,0) in block (0,0,0)",
        ],
    );
    let want: Vec<u32> = (0..32).map(|t| 1000 + 4 * (t & 30)).collect();
    assert_eq!(cp_async_read("", ld, NO_RACE).1.unwrap(), want);
    // The corrected twin: wait_group, then a barrier, then the read.
    let twin = format!("\tbar.sync \t0;\n{ld}");
    assert_eq!(cp_async_read("", &twin, Checks::ALL).1.unwrap(), want);
}

#[test]
fn racecheck_cp_async_into_a_pending_destination() {
    // A second cp.async into the bytes of one not yet waited for: the two writes are
    // unordered (Write-after-write), even in one thread.
    let again = "\tcp.async.cg.shared.global \t[%r4], [%rd6], 16; // the second copy";
    let (ptx, res) = cp_async_read(again, CP_LOAD, Checks::ALL);
    let (cp, cp2) = (line_of(&ptx, "the copy"), line_of(&ptx, "the second copy"));
    assert_report(
        &res.unwrap_err(),
        FaultKind::Sanitizer,
        &[
            "racecheck: Write-after-write hazard on __shared__ byte 0x0:",
            &format!(
                "targeted by a pending cp.async by thread (0,0,0) at {} and thread (0,0,0) at {}",
                pl(cp),
                pl(cp2)
            ),
        ],
    );
    let want: Vec<u32> = (0..32).map(|t| 1000 + 4 * t).collect();
    assert_eq!(cp_async_read(again, CP_LOAD, NO_RACE).1.unwrap(), want);
    // The corrected twin: the first copy waited for before the second is issued.
    let twin = format!("\tcp.async.wait_group \t0;\n{again}\n\tcp.async.commit_group;");
    assert_eq!(cp_async_read(&twin, CP_LOAD, Checks::ALL).1.unwrap(), want);
}

/// Thread 0 stores 7 to s[0]; after a barrier every thread reads it; then warp 1 (only)
/// takes a __syncwarp and thread 63 overwrites s[0]. The warp barrier orders the reads of
/// warp 1 before the overwrite, not those of warp 0: thread 0's read and thread 63's
/// write are a Write-after-read hazard.
const EVICTED: &str = "
.visible .entry evicted(
\t.param .u64 evicted_param_0
)
{
\t.reg .pred \t%p<4>;
\t.reg .b32 \t%r<8>;
\t.reg .b64 \t%rd<5>;
\t.shared .align 4 .b8 s[4];

\tld.param.u64 \t%rd1, [evicted_param_0];
\tcvta.to.global.u64 \t%rd2, %rd1;
\tmov.u32 \t%r1, %tid.x;
\tmov.u32 \t%r2, s;
\tmov.u32 \t%r3, 7;
\tmov.u32 \t%r4, 9;
\tsetp.eq.u32 \t%p1, %r1, 0;
\t@%p1 st.shared.u32 \t[%r2], %r3;
\tbar.sync \t0;
\tld.shared.u32 \t%r5, [%r2]; // every thread reads
\tsetp.lt.u32 \t%p3, %r1, 32;
\t@%p3 bra \t$L_skip;
\tbar.warp.sync \t-1; // warp 1 only
\tsetp.eq.u32 \t%p2, %r1, 63;
\t@%p2 st.shared.u32 \t[%r2], %r4; // the overwrite: unordered with warp 0's reads
$L_skip:
\tmul.wide.u32 \t%rd3, %r1, 4;
\tadd.s64 \t%rd4, %rd2, %rd3;
\tst.global.u32 \t[%rd4], %r5;
\tret;
}
";

#[test]
fn racecheck_write_after_read_by_an_earlier_reader_of_another_warp() {
    let ptx = format!("{HEADER}{EVICTED}");
    let (ld, st) = (line_of(&ptx, "every thread reads"), line_of(&ptx, "the overwrite"));
    let mut r = Rig::new(&ptx);
    let out = r.upload(&[0u32; 64]);
    let e = r.launch("evicted", [1, 1, 1], [64, 1, 1], &[&b64(out)]).unwrap_err();
    assert_report(
        &e,
        FaultKind::Sanitizer,
        &[
            "racecheck: Write-after-read hazard on __shared__ byte 0x0:",
            &format!("at {} and thread (63,0,0) at {}", pl(ld), pl(st)),
        ],
    );
    r.launch_checks("evicted", [1, 1, 1], [64, 1, 1], 0, &[&b64(out)], NO_RACE).unwrap();
    // The corrected twin (a block barrier before the overwrite) is `overwrite` above.
}

/// 64 threads zero the 16 x 16 f32 tile d in shared memory; after a barrier warp 1
/// reads it into out, and warp 0 computes a tile with wmma (A = B = 1, C = 0: every
/// element 16) and stores it over d with wmma.store. `{SYNC}`: between warp 1's reads
/// and warp 0's store.
fn wmma_overwrite_ptx(sync: &str) -> String {
    let frag = |p: &str| (0..8).map(|i| format!("%{p}{i}")).collect::<Vec<_>>().join(", ");
    let (fa, fc, fd) = (frag("ra"), frag("fc"), frag("fd"));
    let movs: String =
        (0..8).map(|i| format!("\tmov.b32 \t%ra{i}, 0x3C003C00;\n\tmov.f32 \t%fc{i}, 0f00000000;\n")).collect();
    format!(
        "{HEADER}
.visible .entry wmma_overwrite(
\t.param .u64 wmma_overwrite_param_0
)
{{
\t.reg .pred \t%p<3>;
\t.reg .b32 \t%r<12>;
\t.reg .b32 \t%ra<8>;
\t.reg .f32 \t%fc<8>;
\t.reg .f32 \t%fd<8>;
\t.reg .b64 \t%rd<5>;
\t.shared .align 16 .b8 d[1024];

\tld.param.u64 \t%rd1, [wmma_overwrite_param_0];
\tcvta.to.global.u64 \t%rd2, %rd1;
\tmov.u32 \t%r1, %tid.x;
\tmov.u32 \t%r2, d;
\tshl.b32 \t%r3, %r1, 4;
\tadd.s32 \t%r4, %r2, %r3;
\tmov.u32 \t%r5, 0;
\tst.shared.v4.u32 \t[%r4], {{%r5, %r5, %r5, %r5}};
\tbar.sync \t0;
\tsetp.lt.u32 \t%p1, %r1, 32;
\t@%p1 bra \t$L_read_done;
\tsub.s32 \t%r6, %r1, 32;
\tshl.b32 \t%r7, %r6, 2;
\tadd.s32 \t%r8, %r2, %r7;
\tld.shared.u32 \t%r9, [%r8]; // the load
\tmul.wide.u32 \t%rd3, %r6, 4;
\tadd.s64 \t%rd4, %rd2, %rd3;
\tst.global.u32 \t[%rd4], %r9;
$L_read_done:
{sync}
\t@!%p1 bra \t$L_end;
{movs}\twmma.mma.sync.aligned.row.col.m16n16k16.f32.f32 \t{{{fd}}}, {{{fa}}}, {{{fa}}}, {{{fc}}};
\tmov.u32 \t%r10, 16;
\twmma.store.d.sync.aligned.row.m16n16k16.shared.f32 \t[%r2], {{{fd}}}, %r10; // the wmma store
$L_end:
\tret;
}}
"
    )
}

#[test]
fn racecheck_wmma_store_over_words_another_warp_reads() {
    // A wmma access is the warp's, attributed to its lane 0: warp 0's wmma.store over the
    // words warp 1 reads, with no barrier between, is a hazard. Which of the two accesses
    // comes second depends on the schedule (a converged warp completes its wmma in place
    // and runs on, so here warp 0 stores first); both orders are the same race, reported
    // as Read-after-write or Write-after-read, and each names both accesses.
    let run = |sync: &str, checks: Checks| {
        let ptx = wmma_overwrite_ptx(sync);
        let mut r = Rig::new(&ptx);
        let out = r.upload(&[7u32; 32]);
        let res = r.launch_checks("wmma_overwrite", [1, 1, 1], [64, 1, 1], 0, &[&b64(out)], checks);
        (ptx.clone(), res.map(|()| r.download::<u32>(out, 32)))
    };
    let (ptx, res) = run("", Checks::ALL);
    let (ld, st) = (line_of(&ptx, "the load"), line_of(&ptx, "the wmma store"));
    let e = res.unwrap_err();
    let war = format!(
        "racecheck: Write-after-read hazard on __shared__ byte 0x0: read by thread (32,0,0) at {} and thread (0,0,0) at {}",
        pl(ld),
        pl(st)
    );
    let raw = format!(
        "racecheck: Read-after-write hazard on __shared__ byte 0x0: written by thread (0,0,0) at {} and thread (32,0,0) at {}",
        pl(st),
        pl(ld)
    );
    let part = if e.report.contains("Write-after-read") { war } else { raw };
    assert_report(&e, FaultKind::Sanitizer, &[&part, "kernel wmma_overwrite"]);
    // With racecheck off it runs, and what warp 1 read depends on the schedule: the zeros
    // from before the store, or the product (16 ones summed: 16.0 in every element).
    let racy = run("", NO_RACE).1.unwrap();
    assert!(racy.iter().all(|&x| x == 0 || x == 16f32.to_bits()), "{racy:?}");
    // The corrected twin: one barrier, which both warps reach, between the reads and the store.
    assert_eq!(run("\tbar.sync \t0;", Checks::ALL).1.unwrap(), vec![0; 32]);
}

// ---------------------------------------------------------------------------------------
// initcheck
// ---------------------------------------------------------------------------------------

/// out[t] = in[t]; `{SYNC}` (here: an earlier store of the same thread) before the load.
const COPY: &str = "
.visible .entry copy(
\t.param .u64 copy_param_0,
\t.param .u64 copy_param_1
)
{
\t.reg .b32 \t%r<4>;
\t.reg .b64 \t%rd<8>;

\tld.param.u64 \t%rd1, [copy_param_0];
\tld.param.u64 \t%rd2, [copy_param_1];
\tcvta.to.global.u64 \t%rd3, %rd1;
\tcvta.to.global.u64 \t%rd4, %rd2;
\tmov.u32 \t%r1, %tid.x;
\tmul.wide.u32 \t%rd5, %r1, 4;
\tadd.s64 \t%rd6, %rd3, %rd5;
{SYNC}
\tld.global.u32 \t%r2, [%rd6]; // the load
\tadd.s64 \t%rd7, %rd4, %rd5;
\tst.global.u32 \t[%rd7], %r2;
\tret;
}
";

#[test]
fn initcheck_global_load_of_unwritten_allocation() {
    let ptx = kernel_ptx(COPY, &[("SYNC", "")]);
    let ld = line_of(&ptx, "the load");
    let mut r = Rig::new(&ptx);
    let input = r.mem.alloc(64 * 4); // never written
    let out = r.upload(&[0u32; 64]);
    let e = r.launch("copy", [1, 1, 1], [64, 1, 1], &[&b64(input), &b64(out)]).unwrap_err();
    assert_report(
        &e,
        FaultKind::Sanitizer,
        &[
            &format!(
                "initcheck: Uninitialized __global__ memory read of size 4 bytes at address {input:#x}: byte {input:#x} was never written"
            ),
            &pl(ld),
            "kernel copy",
            "by thread (0,0,0) in block (0,0,0)",
        ],
    );
    // Without initcheck it runs.
    r.launch_checks("copy", [1, 1, 1], [64, 1, 1], 0, &[&b64(input), &b64(out)], NO_INIT).unwrap();
    // Only the bytes never written count: an allocation written in part faults at the
    // first unwritten byte.
    let part = r.mem.alloc(64 * 4);
    r.mem.slice_mut(part, 40 * 4).unwrap().copy_from_slice(&[1u8; 160]);
    let e = r.launch("copy", [1, 1, 1], [64, 1, 1], &[&b64(part), &b64(out)]).unwrap_err();
    assert_report(
        &e,
        FaultKind::Sanitizer,
        &[&format!("byte {:#x} was never written", part + 160), "by thread (40,0,0) in block (0,0,0)"],
    );
    // The corrected twins: the input copied from the host first ...
    let data: Vec<u32> = (0..64).map(|i| i * 5).collect();
    let input = r.upload(&data);
    r.launch("copy", [1, 1, 1], [64, 1, 1], &[&b64(input), &b64(out)]).unwrap();
    assert_eq!(r.download::<u32>(out, 64), data);
    // ... or written by an earlier kernel store (here, of the same thread).
    let ptx = kernel_ptx(COPY, &[("SYNC", "\tst.global.u32 \t[%rd6], %r1;")]);
    let mut r = Rig::new(&ptx);
    let input = r.mem.alloc(64 * 4);
    let out = r.upload(&[0u32; 64]);
    r.launch("copy", [1, 1, 1], [64, 1, 1], &[&b64(input), &b64(out)]).unwrap();
    assert_eq!(r.download::<u32>(out, 64), (0..64).collect::<Vec<u32>>());
}

/// Thread t stores to the 8 bytes s[8t, 8t + 8) (`{STORE}`), and after a barrier loads
/// the 8 bytes of thread (t + 1) % 64 into out[t].
const SHARED_INIT: &str = "
.visible .entry shared_init(
\t.param .u64 shared_init_param_0
)
{
\t.reg .b32 \t%r<10>;
\t.reg .b64 \t%rd<8>;
\t.shared .align 8 .b8 s[512];

\tld.param.u64 \t%rd1, [shared_init_param_0];
\tcvta.to.global.u64 \t%rd2, %rd1;
\tmov.u32 \t%r1, %tid.x;
\tmov.u32 \t%r2, s;
\tshl.b32 \t%r3, %r1, 3;
\tadd.s32 \t%r4, %r2, %r3;
\tmad.lo.s32 \t%r5, %r1, 3, 1;
\tcvt.u64.u32 \t%rd3, %r5;
{STORE}
\tbar.sync \t0;
\tadd.s32 \t%r6, %r1, 1;
\tand.b32 \t%r7, %r6, 63;
\tshl.b32 \t%r8, %r7, 3;
\tadd.s32 \t%r9, %r2, %r8;
\tld.shared.u64 \t%rd4, [%r9]; // the load
\tmul.wide.u32 \t%rd5, %r1, 8;
\tadd.s64 \t%rd6, %rd2, %rd5;
\tst.global.u64 \t[%rd6], %rd4;
\tret;
}
";

#[test]
fn initcheck_shared_load_of_unwritten_bytes() {
    // Each thread stores only the low 4 of its 8 bytes: thread 0's load of thread 1's
    // word finds byte 0xc unwritten (bytes 0x8..0xc were written).
    let ptx = kernel_ptx(SHARED_INIT, &[("STORE", "\tst.shared.u32 \t[%r4], %r5;")]);
    let ld = line_of(&ptx, "the load");
    let mut r = Rig::new(&ptx);
    let out = r.upload(&[0u64; 64]);
    let e = r.launch("shared_init", [1, 1, 1], [64, 1, 1], &[&b64(out)]).unwrap_err();
    assert_report(
        &e,
        FaultKind::Sanitizer,
        &[
            &format!(
                "initcheck: Uninitialized __shared__ memory read of byte 0xc by thread (0,0,0) at {}: nothing wrote it since the block started",
                pl(ld)
            ),
            "kernel shared_init",
            "by thread (0,0,0) in block (0,0,0)",
        ],
    );
    r.launch_checks("shared_init", [1, 1, 1], [64, 1, 1], 0, &[&b64(out)], NO_INIT).unwrap();
    // The corrected twin: all 8 bytes stored before the barrier.
    let ptx = kernel_ptx(SHARED_INIT, &[("STORE", "\tst.shared.u64 \t[%r4], %rd3;")]);
    let mut r = Rig::new(&ptx);
    let out = r.upload(&[0u64; 64]);
    r.launch("shared_init", [1, 1, 1], [64, 1, 1], &[&b64(out)]).unwrap();
    assert_eq!(r.download::<u64>(out, 64), (0..64u64).map(|t| (t + 1) % 64 * 3 + 1).collect::<Vec<_>>());
}

/// Shared memory starts unwritten in every block: block 0 stores s[t] before the barrier,
/// every block loads it.
const FIRST_BLOCK_STORES: &str = "
.visible .entry first_block_stores(
\t.param .u64 first_block_stores_param_0
)
{
\t.reg .pred \t%p<2>;
\t.reg .b32 \t%r<10>;
\t.reg .b64 \t%rd<8>;
\t.shared .align 4 .b8 s[128];

\tld.param.u64 \t%rd1, [first_block_stores_param_0];
\tcvta.to.global.u64 \t%rd2, %rd1;
\tmov.u32 \t%r1, %tid.x;
\tmov.u32 \t%r2, %ctaid.x;
\tmov.u32 \t%r3, s;
\tshl.b32 \t%r4, %r1, 2;
\tadd.s32 \t%r5, %r3, %r4;
\tsetp.{CMP}.u32 \t%p1, %r2, 0;
\t@%p1 st.shared.u32 \t[%r5], %r1;
\tbar.sync \t0;
\tld.shared.u32 \t%r6, [%r5]; // the load
\tmad.lo.s32 \t%r7, %r2, 32, %r1;
\tmul.wide.u32 \t%rd3, %r7, 4;
\tadd.s64 \t%rd4, %rd2, %rd3;
\tst.global.u32 \t[%rd4], %r6;
\tret;
}
";

#[test]
fn initcheck_shared_memory_starts_unwritten_in_every_block() {
    let ptx = kernel_ptx(FIRST_BLOCK_STORES, &[("CMP", "eq")]);
    let ld = line_of(&ptx, "the load");
    let mut r = Rig::new(&ptx);
    let out = r.upload(&[0u32; 64]);
    let e = r.launch("first_block_stores", [2, 1, 1], [32, 1, 1], &[&b64(out)]).unwrap_err();
    assert_report(
        &e,
        FaultKind::Sanitizer,
        &["initcheck: Uninitialized __shared__ memory read of byte 0x0", &pl(ld), "by thread (0,0,0) in block (1,0,0)"],
    );
    r.launch_checks("first_block_stores", [2, 1, 1], [32, 1, 1], 0, &[&b64(out)], NO_INIT).unwrap();
    // Twin: every block stores.
    let ptx = kernel_ptx(FIRST_BLOCK_STORES, &[("CMP", "ge")]);
    let mut r = Rig::new(&ptx);
    let out = r.upload(&[0u32; 64]);
    r.launch("first_block_stores", [2, 1, 1], [32, 1, 1], &[&b64(out)]).unwrap();
    assert_eq!(r.download::<u32>(out, 64), (0..64).map(|i| i % 32).collect::<Vec<u32>>());
}

// ---------------------------------------------------------------------------------------
// synccheck
// ---------------------------------------------------------------------------------------

/// Threads 0..15 write 1 to out[t] and wait at one bar.sync, the others write 2 and wait
/// at another.
const DIVERGENT: &str = "
.visible .entry divergent(
\t.param .u64 divergent_param_0
)
{
\t.reg .pred \t%p<2>;
\t.reg .b32 \t%r<4>;
\t.reg .b64 \t%rd<5>;

\tld.param.u64 \t%rd1, [divergent_param_0];
\tcvta.to.global.u64 \t%rd2, %rd1;
\tmov.u32 \t%r1, %tid.x;
\tmul.wide.u32 \t%rd3, %r1, 4;
\tadd.s64 \t%rd4, %rd2, %rd3;
\tsetp.lt.u32 \t%p1, %r1, 16;
\t@%p1 bra \t$L_low;
\tmov.u32 \t%r2, 2;
\tst.global.u32 \t[%rd4], %r2;
\tbar.sync \t0; // the upper barrier
\tbra.uni \t$L_end;
$L_low:
\tmov.u32 \t%r2, 1;
\tst.global.u32 \t[%rd4], %r2;
\tbar.sync \t0; // the lower barrier
$L_end:
\tret;
}
";

/// The corrected twin: the branches rejoin before the one barrier.
const CONVERGENT: &str = "
.visible .entry convergent(
\t.param .u64 convergent_param_0
)
{
\t.reg .pred \t%p<2>;
\t.reg .b32 \t%r<4>;
\t.reg .b64 \t%rd<5>;

\tld.param.u64 \t%rd1, [convergent_param_0];
\tcvta.to.global.u64 \t%rd2, %rd1;
\tmov.u32 \t%r1, %tid.x;
\tmul.wide.u32 \t%rd3, %r1, 4;
\tadd.s64 \t%rd4, %rd2, %rd3;
\tsetp.lt.u32 \t%p1, %r1, 16;
\t@%p1 bra \t$L_low;
\tmov.u32 \t%r2, 2;
\tbra.uni \t$L_join;
$L_low:
\tmov.u32 \t%r2, 1;
$L_join:
\tst.global.u32 \t[%rd4], %r2;
\tbar.sync \t0;
\tret;
}
";

#[test]
fn synccheck_divergent_barrier() {
    let ptx = format!("{HEADER}{DIVERGENT}");
    let (up, low) = (line_of(&ptx, "the upper barrier"), line_of(&ptx, "the lower barrier"));
    let mut r = Rig::new(&ptx);
    let out = r.upload(&[0u32; 32]);
    let e = r.launch("divergent", [1, 1, 1], [32, 1, 1], &[&b64(out)]).unwrap_err();
    assert_report(
        &e,
        FaultKind::Sanitizer,
        &[
            &format!(
                "synccheck: divergent barrier: thread (0,0,0) waits at the bar.sync at {}, thread (16,0,0) at the one at {}",
                pl(low),
                pl(up)
            ),
            "kernel divergent",
            "by thread (16,0,0) in block (0,0,0)",
        ],
    );
    // Without synccheck the two barriers complete as one (as they would on most GPUs).
    r.launch_checks("divergent", [1, 1, 1], [32, 1, 1], 0, &[&b64(out)], NO_SYNC).unwrap();
    let want: Vec<u32> = (0..32).map(|t| if t < 16 { 1 } else { 2 }).collect();
    assert_eq!(r.download::<u32>(out, 32), want);
    let mut r = Rig::new(&format!("{HEADER}{CONVERGENT}"));
    let out = r.upload(&[0u32; 32]);
    r.launch("convergent", [1, 1, 1], [32, 1, 1], &[&b64(out)]).unwrap();
    assert_eq!(r.download::<u32>(out, 32), want);
}

/// Lanes 0..15 wait at bar.sync; lanes 16..31 execute `{WARP_SYNC}` with member mask
/// `{MASK}` and store what they got to out[t].
const HALF_WARP: &str = "
.visible .entry half_warp(
\t.param .u64 half_warp_param_0
)
{
\t.reg .pred \t%p<3>;
\t.reg .b32 \t%r<6>;
\t.reg .b64 \t%rd<5>;

\tld.param.u64 \t%rd1, [half_warp_param_0];
\tcvta.to.global.u64 \t%rd2, %rd1;
\tmov.u32 \t%r1, %tid.x;
\tsetp.lt.u32 \t%p1, %r1, 16;
\t@%p1 bra \t$L_low;
\tmov.u32 \t%r2, {MASK};
\tmov.u32 \t%r3, %r1;
{WARP_SYNC}
\tmul.wide.u32 \t%rd3, %r1, 4;
\tadd.s64 \t%rd4, %rd2, %rd3;
\tst.global.u32 \t[%rd4], %r3;
\tbra.uni \t$L_end;
$L_low:
\tbar.sync \t0; // the barrier
$L_end:
\tret;
}
";

fn half_warp(mask: &str, warp_sync: &str, checks: Checks) -> (String, Result<Vec<u32>, LaunchError>) {
    let ptx = kernel_ptx(HALF_WARP, &[("MASK", mask), ("WARP_SYNC", warp_sync)]);
    let mut r = Rig::new(&ptx);
    let out = r.upload(&[0u32; 32]);
    let res = r.launch_checks("half_warp", [1, 1, 1], [32, 1, 1], 0, &[&b64(out)], checks);
    (ptx.clone(), res.map(|()| r.download(out, 32)))
}

#[test]
fn synccheck_member_mask_naming_a_lane_at_a_block_barrier() {
    // The shfl.sync form of this bug, and what happens without synccheck (the scheduler's
    // deadlock report), are in faults.rs (barrier_deadlock_is_reported); here the
    // __syncwarp form, and the corrected twins of both.
    let sync = "\tbar.warp.sync \t%r2; // the warp sync";
    let (ptx, res) = half_warp("-1", sync, Checks::ALL);
    let bar = line_of(&ptx, "the barrier");
    assert_report(
        &res.unwrap_err(),
        FaultKind::Sanitizer,
        &[
            &format!(
                "synccheck: member mask 0xffffffff names lane 0, which waits at the block barrier at {} instead",
                pl(bar)
            ),
            &pl(line_of(&ptx, "the warp sync")),
            "kernel half_warp",
            "by thread (16,0,0) in block (0,0,0)",
        ],
    );
    // Without synccheck nothing names the mask: the launch still fails, as the deadlock
    // it is, found by the scheduler.
    let e = half_warp("-1", sync, NO_SYNC).1.unwrap_err();
    assert_report(&e, FaultKind::IllegalInstruction, &["deadlock in kernel half_warp", &format!("16 at {}", pl(bar))]);
    assert!(!e.report.contains("synccheck"), "{}", e.report);
    // The corrected twins: masks naming only the lanes that arrive (16..31); the lanes
    // at the barrier pass it once the others have exited.
    let want: Vec<u32> = (0..32).map(|t| if t < 16 { 0 } else { t }).collect();
    assert_eq!(half_warp("0xffff0000", sync, Checks::ALL).1.unwrap(), want);
    let shfl = "\tshfl.sync.bfly.b32 \t%r3|%p2, %r1, 1, 31, %r2; // the shuffle";
    let (ptx, res) = half_warp("-1", shfl, Checks::ALL);
    assert_report(
        &res.unwrap_err(),
        FaultKind::Sanitizer,
        &["synccheck: member mask 0xffffffff names lane 0", &pl(line_of(&ptx, "the barrier"))],
    );
    let want: Vec<u32> = (0..32).map(|t| if t < 16 { 0 } else { t ^ 1 }).collect();
    assert_eq!(half_warp("0xffff0000", shfl, Checks::ALL).1.unwrap(), want);
}

// ---------------------------------------------------------------------------------------
// Real kernels run clean under every check
// ---------------------------------------------------------------------------------------

#[test]
fn repo_sum_f32_is_clean_under_all_checks() {
    let mut r = Rig::new(&repo_ptx("reduce.sm_75.ptx"));
    let n = 3001usize;
    let x: Vec<f32> = (0..n).map(|i| ((i * 31) % 17) as f32 - 8.0).collect();
    let px = r.upload(&x);
    let pout = r.upload(&[0.0f32]);
    let args: [&[u8]; 5] = [&b64(px), &b64(pout), &b64(n as u64), &1f32.to_le_bytes(), &0f32.to_le_bytes()];
    r.launch_checks("sum_f32", [1, 1, 1], [1024, 1, 1], 0, &args, Checks::ALL).unwrap();
    assert_eq!(r.download::<f32>(pout, 1)[0], x.iter().sum::<f32>());
}

/// Runs cuda/gemm.cu's gemm_nn_f32(GemmParams p, int32_t vec) from `ptx` (the vendored
/// sm_80 PTX, or an edited copy) on C = A B, 128 x 128 x 96, row-major, f16 in, f32 out,
/// vec = 1 (the cp.async path), under `checks`; C, or the failure. k = 96 is three k-tiles
/// of 32 through the two shared-memory stages, so a stage is refilled while other warps
/// may still read it. C is a fresh, unwritten allocation: with beta = 0 the kernel must
/// not read it.
fn repo_gemm(ptx: &str, checks: Checks) -> Result<Vec<f32>, LaunchError> {
    let mut r = Rig::new(ptx);
    let (m, n, k) = (128usize, 128usize, 96usize);
    let half = |v: f32| f16::from_f32(v).to_bits();
    let a: Vec<u16> = (0..m * k).map(|i| half(gemm_a(i))).collect();
    let b: Vec<u16> = (0..k * n).map(|i| half(gemm_b(i))).collect();
    let (pa, pb, pc) = (r.upload(&a), r.upload(&b), r.mem.alloc(m * n * 4));
    let mut p = Vec::new();
    for v in [pa, pb, pc, 0, 0, 0] {
        p.extend_from_slice(&v.to_le_bytes()); // a, b, c, bias, pre, found_inf
    }
    for v in [m, n, k, k, n, n] {
        p.extend_from_slice(&(v as i64).to_le_bytes()); // m, n, k, lda, ldb, ldc
    }
    p.extend_from_slice(&1f32.to_le_bytes()); // alpha
    p.extend_from_slice(&0f32.to_le_bytes()); // beta
    p.extend_from_slice(&[0u8; 8]); // act (none), bias_f16
    assert_eq!(p.len(), 112);
    r.launch_checks("gemm_nn_f32", [1, 1, 1], [256, 1, 1], 0, &[&p, &1i32.to_le_bytes()], checks)?;
    Ok(r.download(pc, m * n))
}

fn gemm_a(i: usize) -> f32 {
    ((i * 7) % 5) as f32 - 2.0
}

fn gemm_b(i: usize) -> f32 {
    ((i * 3) % 7) as f32 - 3.0
}

/// C of [`repo_gemm`], exact: small integers.
fn repo_gemm_want() -> Vec<f32> {
    let (m, n, k) = (128usize, 128usize, 96usize);
    (0..m * n).map(|e| (0..k).map(|l| gemm_a(e / n * k + l) * gemm_b(l * n + e % n)).sum()).collect()
}

#[test]
fn repo_gemm_cp_async_path_is_clean_under_all_checks() {
    assert_eq!(repo_gemm(&repo_ptx("gemm.sm_80.ptx"), Checks::ALL).unwrap(), repo_gemm_want());
}

#[test]
fn racecheck_gemm_epilogue_without_each_syncwarp() {
    // The GEMM epilogue (cuda/gemm.cu) passes each accumulator fragment through the
    // warp's scratch: wmma.store, __syncwarp, each lane reads its elements, __syncwarp
    // (before the next fragment's store overwrites them). The wmma store is the warp's
    // (attributed to lane 0) and orders nothing by itself, so deleting either __syncwarp
    // is a race between lanes of one warp, which the emulator's schedule hides (the result
    // is right with racecheck off). Issue 18, item 7: neither was reported while any
    // collective ordered the whole warp.
    let ptx = repo_ptx("gemm.sm_80.ptx");
    let lines: Vec<&str> = ptx.lines().collect();
    let after_store = |k: usize| k > 0 && lines[k - 1].contains("wmma.store.d");
    for (which, hazard) in [(true, "Read-after-write"), (false, "Write-after-read")] {
        let edited: Vec<&str> = lines
            .iter()
            .enumerate()
            .filter(|&(k, l)| !(l.trim_start().starts_with("bar.warp.sync") && after_store(k) == which))
            .map(|(_, l)| *l)
            .collect();
        assert!(edited.len() < lines.len(), "no __syncwarp removed");
        let edited = edited.join("\n");
        let e = repo_gemm(&edited, Checks::ALL).unwrap_err();
        assert_report(
            &e,
            FaultKind::Sanitizer,
            &[&format!("racecheck: {hazard} hazard on __shared__ byte"), "kernel gemm_nn_f32"],
        );
        assert_eq!(repo_gemm(&edited, NO_RACE).unwrap(), repo_gemm_want(), "{hazard}");
    }
}

// ---------------------------------------------------------------------------------------
// racecheck on global memory, across the blocks of one launch
// ---------------------------------------------------------------------------------------

#[test]
fn racecheck_global_read_of_another_blocks_output_in_one_launch() {
    let ptx = kernel_ptx(OTHER_BLOCK, &[]);
    let mut r = Rig::new(&ptx);
    let (out, res) = (r.upload(&[7u32; 64]), r.upload(&[0u32; 64]));
    // Block 0 reads out[32..64) before block 1 writes it (the emulator runs blocks in
    // index order): a write-after-read race between the blocks of one launch. Before the
    // global racecheck nothing was reported and the launch gave an answer that depends on
    // the block order, which a GPU does not fix.
    let e = other_block(&mut r, 3, Checks::ALL, out, res).unwrap_err();
    assert_report(
        &e,
        FaultKind::Sanitizer,
        &[
            "racecheck: Write-after-read hazard on __global__ address",
            "block (0,0,0) read it and block (1,0,0) writes it in the same launch",
            &format!("{} of kernel other_block", pl(line_of(&ptx, "the store"))),
            "by thread (0,0,0) in block (1,0,0)",
        ],
    );
    let mut r = Rig::new(&ptx);
    let (out, res) = (r.upload(&[7u32; 64]), r.upload(&[0u32; 64]));
    other_block(&mut r, 3, NO_RACE, out, res).unwrap();
    let want: Vec<u32> = (0..64).map(|i| if i < 32 { 7 } else { i - 32 + 100 }).collect();
    assert_eq!(r.download::<u32>(res, 64), want, "the emulator's block order, which a GPU need not follow");
    // The corrected twin: the writes in one launch and the reads in the next (the launch
    // boundary orders them): every read sees the other block's value, and the read of
    // bytes the previous launch wrote is no race.
    let mut r = Rig::new(&ptx);
    let (out, res) = (r.upload(&[7u32; 64]), r.upload(&[0u32; 64]));
    other_block(&mut r, 1, Checks::ALL, out, res).unwrap();
    other_block(&mut r, 2, Checks::ALL, out, res).unwrap();
    let want: Vec<u32> = (0..64).map(|i| (i + 32) % 64 + 100).collect();
    assert_eq!(r.download::<u32>(res, 64), want);
    // Many blocks writing the same value into one word (as the gradient producers raise
    // found_inf) is no race: the same kernel with every thread storing 100 into out[0].
    let same = ptx
        .replace("\tadd.s64 \t%rd6, %rd3, %rd5;", "\tmov.u64 \t%rd6, %rd3;")
        .replace("\tadd.s32 \t%r5, %r4, 100;", "\tmov.u32 \t%r5, 100;");
    let mut r = Rig::new(&same);
    let (out, res) = (r.upload(&[7u32; 64]), r.upload(&[0u32; 64]));
    other_block(&mut r, 1, Checks::ALL, out, res).unwrap();
    assert_eq!(r.download::<u32>(out, 1), [100]);
}

/// Thread t writes out[t] = t + 1, then reads it back through `{LD}` (ld.global.nc: the
/// non-coherent path, which the PTX ISA reserves for data read-only during the kernel, or
/// a plain ld.global) into res[t].
const NC_AFTER_WRITE: &str = "
.visible .entry nc_after_write(
\t.param .u64 nc_after_write_param_0,
\t.param .u64 nc_after_write_param_1
)
{
\t.reg .b32 \t%r<5>;
\t.reg .b64 \t%rd<8>;

\tld.param.u64 \t%rd1, [nc_after_write_param_0];
\tld.param.u64 \t%rd2, [nc_after_write_param_1];
\tcvta.to.global.u64 \t%rd3, %rd1;
\tcvta.to.global.u64 \t%rd4, %rd2;
\tmov.u32 \t%r1, %tid.x;
\tmul.wide.u32 \t%rd5, %r1, 4;
\tadd.s64 \t%rd6, %rd3, %rd5;
\tadd.s32 \t%r2, %r1, 1;
\tst.global.u32 \t[%rd6], %r2; // the store
\t{LD}.u32 \t%r3, [%rd6]; // the load
\tadd.s64 \t%rd7, %rd4, %rd5;
\tst.global.u32 \t[%rd7], %r3;
\tret;
}
";

#[test]
fn racecheck_nc_load_of_bytes_written_in_the_same_launch() {
    // The same thread reads back what it wrote, through the read-only path: on a GPU the
    // non-coherent cache may hold the old bytes. The emulator's memory is coherent, so the
    // answer is right with racecheck off; before this check nothing was reported.
    let run = |ld: &str, checks: Checks| {
        let ptx = kernel_ptx(NC_AFTER_WRITE, &[("LD", ld)]);
        let mut r = Rig::new(&ptx);
        let (out, res) = (r.upload(&[0u32; 32]), r.upload(&[0u32; 32]));
        let done = r.launch_checks("nc_after_write", [1, 1, 1], [32, 1, 1], 0, &[&b64(out), &b64(res)], checks);
        (ptx, done.map(|()| r.download::<u32>(res, 32)))
    };
    let want: Vec<u32> = (1..=32).collect();
    let (ptx, res) = run("ld.global.nc", Checks::ALL);
    assert_report(
        &res.unwrap_err(),
        FaultKind::Sanitizer,
        &[
            "racecheck: Non-coherent read-after-write hazard on __global__ address",
            "block (0,0,0) reads it with ld.global.nc after block (0,0,0) wrote it in the same launch",
            &format!("{} of kernel nc_after_write", pl(line_of(&ptx, "the load"))),
        ],
    );
    assert_eq!(run("ld.global.nc", NO_RACE).1.unwrap(), want);
    // The corrected twin: a plain (coherent) load.
    assert_eq!(run("ld.global", Checks::ALL).1.unwrap(), want);
}

// ---------------------------------------------------------------------------------------
// Findings inside a coalesced warp access (exec::access::ld_st_warp's spans)
// ---------------------------------------------------------------------------------------

/// Block 0's lanes 16-31 store buf[t]; block 1's warp then loads buf[0..32] in one
/// coalesced access. In one launch nothing orders the two blocks.
const SPAN_RACE: &str = "
.visible .entry span_race(
\t.param .u64 span_race_param_0,
\t.param .u64 span_race_param_1
)
{
\t.reg .pred \t%p<4>;
\t.reg .b32 \t%r<4>;
\t.reg .b64 \t%rd<8>;

\tld.param.u64 \t%rd1, [span_race_param_0];
\tld.param.u64 \t%rd2, [span_race_param_1];
\tcvta.to.global.u64 \t%rd3, %rd1;
\tcvta.to.global.u64 \t%rd4, %rd2;
\tmov.u32 \t%r1, %tid.x;
\tmov.u32 \t%r2, %ctaid.x;
\tmul.wide.u32 \t%rd5, %r1, 4;
\tadd.s64 \t%rd6, %rd3, %rd5;
\tsetp.eq.u32 \t%p1, %r2, 0;
\tsetp.ge.u32 \t%p2, %r1, 16;
\tand.pred \t%p3, %p1, %p2;
\t@%p3 st.global.u32 \t[%rd6], %r1;
\t@%p1 bra \t$L_done;
\tld.global.u32 \t%r3, [%rd6]; // the load
\tadd.s64 \t%rd7, %rd4, %rd5;
\tst.global.u32 \t[%rd7], %r3;
$L_done:
\tret;
}
";

#[test]
fn a_race_inside_a_coalesced_load_names_its_lane() {
    let ptx = format!("{HEADER}{SPAN_RACE}");
    let mut r = Rig::new(&ptx);
    let buf = r.upload(&[0u32; 32]);
    let out = r.upload(&[0u32; 32]);
    let e = r.launch("span_race", [2, 1, 1], [32, 1, 1], &[&b64(buf), &b64(out)]).unwrap_err();
    // Lanes 0-15 read words no block wrote; lane 16's word is the first another block
    // wrote (or, had block 1 run first, the first it writes over a read).
    assert_report(
        &e,
        FaultKind::Sanitizer,
        &["racecheck:", "hazard on __global__", &format!("{:#x}", buf + 64), "thread (16,0,0)"],
    );
    // One block only: nothing to race with, and block 0's words read back.
    let mut r = Rig::new(&ptx);
    let (buf, out) = (r.upload(&[5u32; 32]), r.upload(&[0u32; 32]));
    r.launch("span_race", [1, 1, 1], [32, 1, 1], &[&b64(buf), &b64(out)]).unwrap();
}

/// Every lane but 9 stores buf[t] = t; then every lane loads buf[t] in one coalesced
/// access, and stores it to out[t].
const SPAN_UNINIT: &str = "
.visible .entry span_uninit(
\t.param .u64 span_uninit_param_0,
\t.param .u64 span_uninit_param_1
)
{
\t.reg .pred \t%p<2>;
\t.reg .b32 \t%r<4>;
\t.reg .b64 \t%rd<8>;

\tld.param.u64 \t%rd1, [span_uninit_param_0];
\tld.param.u64 \t%rd2, [span_uninit_param_1];
\tcvta.to.global.u64 \t%rd3, %rd1;
\tcvta.to.global.u64 \t%rd4, %rd2;
\tmov.u32 \t%r1, %tid.x;
\tmul.wide.u32 \t%rd5, %r1, 4;
\tadd.s64 \t%rd6, %rd3, %rd5;
\tsetp.ne.u32 \t%p1, %r1, {SKIP};
\t@%p1 st.global.u32 \t[%rd6], %r1;
\tld.global.u32 \t%r3, [%rd6]; // the load
\tadd.s64 \t%rd7, %rd4, %rd5;
\tst.global.u32 \t[%rd7], %r3;
\tret;
}
";

#[test]
fn an_unwritten_word_inside_a_coalesced_load_names_its_lane() {
    let run = |skip: u32| {
        let ptx = format!("{HEADER}{}", SPAN_UNINIT.replace("{SKIP}", &skip.to_string()));
        let mut r = Rig::new(&ptx);
        let buf = r.mem.alloc(128);
        let out = r.upload(&[0u32; 32]);
        let res = r.launch("span_uninit", [1, 1, 1], [32, 1, 1], &[&b64(buf), &b64(out)]);
        (ptx, buf, res.map(|()| r.download::<u32>(out, 32)))
    };
    let (ptx, buf, res) = run(9);
    assert_report(
        &res.unwrap_err(),
        FaultKind::Sanitizer,
        &[
            "initcheck: Uninitialized __global__ memory read of size 4 bytes",
            &format!("{:#x}", buf + 36),
            &format!("PTX line {}", line_of(&ptx, "the load")),
            "thread (9,0,0) in block (0,0,0)",
        ],
    );
    // Every lane stores (lane 32 does not exist): every word is written, and read back.
    assert_eq!(run(32).2.unwrap(), (0..32).collect::<Vec<u32>>());
}
