//! What a GPU would trap on, reported as the driver and compute-sanitizer do: the fault
//! kind (CUDA_ERROR_ILLEGAL_ADDRESS, _MISALIGNED_ADDRESS, _ILLEGAL_INSTRUCTION) and a
//! report naming the kernel, the PTX line, the thread, the block and the address;
//! forms the emulator does not know rejected at load with their line; launch
//! configurations the driver refuses.

mod common;
use common::*;
use mp_emu::check::Checks;
use mp_emu::exec::FaultKind;
use mp_emu::ptx::Module;

// ---------------------------------------------------------------------------------------
// Memory faults
// ---------------------------------------------------------------------------------------

/// out[i] = i for i = global thread index, with no bounds check.
const STORE_ALL: &str = "
.visible .entry store_all(
\t.param .u64 store_all_param_0
)
{
\t.reg .b32 \t%r<5>;
\t.reg .b64 \t%rd<5>;

\tld.param.u64 \t%rd1, [store_all_param_0];
\tcvta.to.global.u64 \t%rd2, %rd1;
\tmov.u32 \t%r1, %ctaid.x;
\tmov.u32 \t%r2, %ntid.x;
\tmov.u32 \t%r3, %tid.x;
\tmad.lo.s32 \t%r4, %r1, %r2, %r3;
\tmul.wide.s32 \t%rd3, %r4, 4;
\tadd.s64 \t%rd4, %rd2, %rd3;
\tst.global.u32 \t[%rd4], %r4; // the faulting store
\tret;
}
";

#[test]
fn out_of_bounds_global_write() {
    let ptx = format!("{HEADER}{STORE_ALL}");
    let mut r = Rig::new(&ptx);
    // 100 elements, 2 blocks of 64 threads: global thread 100 = thread (36,0,0) of block
    // (1,0,0) is the first past the end.
    let p = r.upload(&[0u32; 100]);
    let e = r.launch("store_all", [2, 1, 1], [64, 1, 1], &[&b64(p)]).unwrap_err();
    let line = line_of(&ptx, "the faulting store");
    let addr = format!("{:#x}", p + 400);
    assert_report(
        &e,
        FaultKind::IllegalAddress,
        &[
            "Invalid __global__ write of size 4",
            &addr,
            &format!("PTX line {line}"),
            "kernel store_all",
            "thread (36,0,0) in block (1,0,0)",
        ],
    );
    assert!(e.kind.is_sticky());
    // Exactly in bounds: no fault, every element written.
    let mut r = Rig::new(&ptx);
    let p = r.upload(&[0u32; 128]);
    r.launch("store_all", [2, 1, 1], [64, 1, 1], &[&b64(p)]).unwrap();
    assert_eq!(r.download::<u32>(p, 128), (0..128).collect::<Vec<u32>>());
}

const LOAD_V4: &str = "
.visible .entry load_v4(
\t.param .u64 load_v4_param_0,
\t.param .u64 load_v4_param_1
)
{
\t.reg .f32 \t%f<5>;
\t.reg .b64 \t%rd<4>;

\tld.param.u64 \t%rd1, [load_v4_param_0];
\tld.param.u64 \t%rd2, [load_v4_param_1];
\tcvta.to.global.u64 \t%rd3, %rd1;
\tld.global.v4.f32 \t{%f1, %f2, %f3, %f4}, [%rd3]; // the faulting load
\tst.global.f32 \t[%rd2], %f1;
\tret;
}
";

#[test]
fn misaligned_16_byte_load() {
    let ptx = format!("{HEADER}{LOAD_V4}");
    let mut r = Rig::new(&ptx);
    let p = r.upload(&[1.0f32; 16]);
    let out = r.upload(&[0.0f32; 1]);
    // 8 mod 16: aligned for an f32 or a v2.f32, not for a v4.f32.
    let e = r.launch("load_v4", [1, 1, 1], [1, 1, 1], &[&b64(p + 8), &b64(out)]).unwrap_err();
    let line = line_of(&ptx, "the faulting load");
    assert_report(
        &e,
        FaultKind::MisalignedAddress,
        &[
            "__global__ read of size 16",
            &format!("{:#x}", p + 8),
            "misaligned",
            &format!("PTX line {line}"),
            "kernel load_v4",
            "thread (0,0,0) in block (0,0,0)",
        ],
    );
    assert!(e.kind.is_sticky());
    // At 16 mod 16 it loads.
    r.launch("load_v4", [1, 1, 1], [1, 1, 1], &[&b64(p + 16), &b64(out)]).unwrap();
    assert_eq!(r.download::<f32>(out, 1), [1.0]);
}

const SHARED_OOB: &str = "
.visible .entry shared_oob(
\t.param .u64 shared_oob_param_0
)
{
\t.reg .b32 \t%r<6>;
\t.reg .f32 \t%f<2>;
\t.reg .b64 \t%rd<4>;
\t.shared .align 4 .b8 _ZZ10shared_oobE3buf[64];

\tld.param.u64 \t%rd1, [shared_oob_param_0];
\tmov.u32 \t%r1, %tid.x;
\tshl.b32 \t%r2, %r1, 2;
\tmov.u32 \t%r3, _ZZ10shared_oobE3buf;
\tadd.s32 \t%r4, %r3, %r2;
\tcvt.rn.f32.u32 \t%f1, %r1;
\tst.shared.f32 \t[%r4], %f1; // the faulting store
\tret;
}
";

#[test]
fn out_of_range_shared_access() {
    let ptx = format!("{HEADER}{SHARED_OOB}");
    let mut r = Rig::new(&ptx);
    // 16 floats of shared memory, 32 threads: thread 16 is the first outside.
    let e = r.launch("shared_oob", [1, 1, 1], [32, 1, 1], &[&b64(0)]).unwrap_err();
    let line = line_of(&ptx, "the faulting store");
    assert_report(
        &e,
        FaultKind::IllegalAddress,
        &[
            "Invalid __shared__ write of size 4",
            "0x40",
            "64 bytes of shared memory",
            &format!("PTX line {line}"),
            "kernel shared_oob",
            "thread (16,0,0) in block (0,0,0)",
        ],
    );
    // 16 threads fit.
    r.launch("shared_oob", [1, 1, 1], [16, 1, 1], &[&b64(0)]).unwrap();
}

const DYN_SHARED: &str = "
.extern .shared .align 16 .b8 dyn[];

.visible .entry dyn_shared(
\t.param .u32 dyn_shared_param_0
)
{
\t.reg .b32 \t%r<6>;

\tld.param.u32 \t%r1, [dyn_shared_param_0];
\tmov.u32 \t%r2, %tid.x;
\tshl.b32 \t%r3, %r2, 2;
\tmov.u32 \t%r4, dyn;
\tadd.s32 \t%r5, %r4, %r3;
\tst.shared.u32 \t[%r5], %r1; // the dynamic store
\tld.shared.u32 \t%r1, [%r5];
\tret;
}
";

#[test]
fn dynamic_shared_memory_is_bounded_by_the_launch() {
    let ptx = format!("{HEADER}{DYN_SHARED}");
    let mut r = Rig::new(&ptx);
    r.launch_dyn("dyn_shared", [1, 1, 1], [64, 1, 1], 256, &[&7u32.to_le_bytes()]).unwrap();
    let e = r.launch_dyn("dyn_shared", [1, 1, 1], [64, 1, 1], 128, &[&7u32.to_le_bytes()]).unwrap_err();
    let line = line_of(&ptx, "the dynamic store");
    assert_report(
        &e,
        FaultKind::IllegalAddress,
        &["__shared__ write of size 4", "0x80", &format!("PTX line {line}"), "thread (32,0,0) in block (0,0,0)"],
    );
}

// ---------------------------------------------------------------------------------------
// Synchronization faults
// ---------------------------------------------------------------------------------------

/// Lanes 0..15 of the warp wait at bar.sync; lanes 16..31 wait in a shfl.sync whose
/// member mask names the whole warp, so it needs lanes 0..15, which never come: neither
/// can complete.
const DEADLOCK: &str = "
.visible .entry deadlock(
\t.param .u64 deadlock_param_0
)
{
\t.reg .pred \t%p<3>;
\t.reg .b32 \t%r<6>;

\tmov.u32 \t%r1, %tid.x;
\tsetp.lt.u32 \t%p1, %r1, 16;
\t@%p1 bra \t$L__BB0_2;

\tmov.u32 \t%r2, -1;
\tshfl.sync.bfly.b32 \t%r3|%p2, %r1, 1, 31, %r2; // the shuffle
\tbra.uni \t$L__BB0_3;

$L__BB0_2:
\tbar.sync \t0; // the barrier

$L__BB0_3:
\tret;
}
";

#[test]
fn barrier_deadlock_is_reported() {
    let ptx = format!("{HEADER}{DEADLOCK}");
    let mut r = Rig::new(&ptx);
    let (shfl, bar) = (line_of(&ptx, "the shuffle"), line_of(&ptx, "the barrier"));
    // synccheck names it first: the shuffle's member mask names lanes that wait at the
    // block barrier.
    let e = r.launch("deadlock", [1, 1, 1], [32, 1, 1], &[&b64(0)]).unwrap_err();
    assert_report(
        &e,
        FaultKind::Sanitizer,
        &["synccheck: member mask 0xffffffff names lane 0", &format!("barrier at PTX line {bar}")],
    );
    // Without it, the scheduler finds that nothing can complete.
    let e = r.launch_checks("deadlock", [1, 1, 1], [32, 1, 1], 0, &[&b64(0)], Checks::NONE).unwrap_err();
    assert_report(
        &e,
        FaultKind::IllegalInstruction,
        &[
            "deadlock in kernel deadlock",
            &format!("16 at PTX line {shfl}"),
            &format!("16 at PTX line {bar}"),
            "block (0,0,0)",
        ],
    );
    assert!(e.kind.is_sticky());
}

/// Threads past `n` exit before the barrier; the rest meet there (exited threads count
/// as arrived, as on the hardware since Volta) and then read what the others wrote.
const EARLY_EXIT: &str = "
.visible .entry early_exit(
\t.param .u64 early_exit_param_0,
\t.param .u32 early_exit_param_1
)
{
\t.reg .pred \t%p<2>;
\t.reg .b32 \t%r<10>;
\t.reg .b64 \t%rd<4>;
\t.shared .align 4 .b8 s[4096];

\tld.param.u64 \t%rd1, [early_exit_param_0];
\tld.param.u32 \t%r1, [early_exit_param_1];
\tmov.u32 \t%r2, %tid.x;
\tsetp.ge.u32 \t%p1, %r2, %r1;
\t@%p1 bra \t$L_exit;
\tshl.b32 \t%r3, %r2, 2;
\tmov.u32 \t%r4, s;
\tadd.s32 \t%r5, %r4, %r3;
\tst.shared.u32 \t[%r5], %r2;
\tbar.sync \t0;
\tsub.s32 \t%r6, %r1, 1;
\tsub.s32 \t%r6, %r6, %r2;
\tshl.b32 \t%r7, %r6, 2;
\tadd.s32 \t%r8, %r4, %r7;
\tld.shared.u32 \t%r9, [%r8];
\tmul.wide.u32 \t%rd2, %r2, 4;
\tadd.s64 \t%rd3, %rd1, %rd2;
\tst.global.u32 \t[%rd3], %r9;
$L_exit:
\tret;
}
";

#[test]
fn threads_that_exit_before_a_barrier_count_as_arrived() {
    let mut r = Rig::new(&format!("{HEADER}{EARLY_EXIT}"));
    let n = 77u32;
    let p = r.upload(&[u32::MAX; 77]);
    r.launch("early_exit", [1, 1, 1], [128, 1, 1], &[&b64(p), &n.to_le_bytes()]).unwrap();
    assert_eq!(r.download::<u32>(p, 77), (0..77).rev().collect::<Vec<u32>>());
}

/// Lane 31 exits; the others shuffle with a member mask that still names it.
const SHFL_EXITED: &str = "
.visible .entry shfl_exited(
\t.param .u64 shfl_exited_param_0
)
{
\t.reg .pred \t%p<3>;
\t.reg .b32 \t%r<6>;

\tmov.u32 \t%r1, %tid.x;
\tsetp.eq.u32 \t%p1, %r1, 31;
\t@%p1 bra \t$L_exit;
\tmov.u32 \t%r2, -1;
\tshfl.sync.down.b32 \t%r3|%p2, %r1, 1, 31, %r2; // the shuffle
$L_exit:
\tret;
}
";

#[test]
fn shfl_whose_mask_names_an_exited_lane() {
    let ptx = format!("{HEADER}{SHFL_EXITED}");
    let mut r = Rig::new(&ptx);
    let e = r.launch("shfl_exited", [1, 1, 1], [32, 1, 1], &[&b64(0)]).unwrap_err();
    let line = line_of(&ptx, "the shuffle");
    assert_report(
        &e,
        FaultKind::IllegalInstruction,
        &["0xffffffff", "lane 31", "exited", &format!("PTX line {line}"), "kernel shfl_exited", "block (0,0,0)"],
    );
    // With the mask 0x7fffffff the same shuffle completes.
    let ok = ptx.replace("mov.u32 \t%r2, -1;", "mov.u32 \t%r2, 2147483647;");
    Rig::new(&ok).launch("shfl_exited", [1, 1, 1], [32, 1, 1], &[&b64(0)]).unwrap();
}

// ---------------------------------------------------------------------------------------
// Load-time rejection
// ---------------------------------------------------------------------------------------

fn load_err(body: &str) -> (usize, String, usize) {
    let ptx = format!("{HEADER}.visible .entry k()\n{{\n\t.reg .b32 %r<4>;\n\t.reg .f32 %f<4>;\n\t.reg .f64 %fd<4>;\n{body}\n\tret;\n}}\n");
    let line = line_of(&ptx, "// here");
    match Module::load(&ptx) {
        Ok(_) => panic!("`{body}` loaded; it must be rejected"),
        Err(e) => (e.line, e.message, line),
    }
}

#[test]
fn unknown_instructions_are_rejected_at_load_with_their_line() {
    for body in [
        "\tprmt.b32 %r1, %r2, %r3, 0x3210; // here",
        "\tbrev.b32 %r1, %r2; // here",
        "\tatom.global.add.u32 %r1, [%r2], 1; // here",
        "\tsin.approx.f32 %f1, %f2; // here",
        "\tadd.cc.u32 %r1, %r2, %r3; // here",
    ] {
        let (got, msg, want) = load_err(body);
        let opcode = body.split_whitespace().next().unwrap();
        assert_eq!(got, want, "`{body}`: {msg}");
        assert!(msg.contains(opcode), "`{body}`: the message names the form: {msg}");
    }
}

#[test]
fn directed_rounding_is_rejected_or_honoured() {
    // ISA 9.7.3.1: add{.rnd}.f32 with .rz/.rm/.rp rounds toward zero / -inf / +inf. The
    // emulator implements directed rounding for f32 add, sub, mul and fma only (nvcc's
    // expf uses fma.rm.f32; semantics.rs checks them): any other directed form must fail
    // the load rather than run as .rn.
    for body in [
        "\tmul.rm.f64 %fd1, %fd2, %fd3; // here",
        "\tdiv.rz.f32 %f1, %f2, %f3; // here",
        "\tfma.rp.f64 %fd1, %fd2, %fd3, %fd1; // here",
        "\tcvt.rz.f32.f64 %f1, %fd1; // here",
    ] {
        let (got, _, want) = load_err(body);
        assert_eq!(got, want, "{body}");
    }
}

// ---------------------------------------------------------------------------------------
// Launch configuration errors (refused before the kernel runs; not sticky)
// ---------------------------------------------------------------------------------------

const MAXNTID: &str = "
.visible .entry limited(
\t.param .u64 limited_param_0
)
.maxntid 128, 1, 1
{
\tret;
}

.visible .entry big_shared(
\t.param .u64 big_shared_param_0
)
{
\t.reg .b32 \t%r<2>;
\t.shared .align 4 .b8 big[40960];
\tmov.u32 \t%r1, big;
\tret;
}
";

#[test]
fn launch_configuration_errors() {
    let mut r = Rig::new(&format!("{HEADER}{MAXNTID}"));
    let arg = b64(0);
    // (kernel, grid, block, dynamic shared bytes, the error)
    type Case = (&'static str, [u32; 3], [u32; 3], u32, FaultKind);
    let cases: &[Case] = &[
        ("limited", [1, 1, 1], [2048, 1, 1], 0, FaultKind::InvalidValue), // x past 1024
        ("big_shared", [1, 1, 1], [64, 32, 1], 0, FaultKind::InvalidValue), // 2048 threads in all
        ("big_shared", [1, 1, 1], [32, 32, 2], 0, FaultKind::InvalidValue), // 2048 threads in all
        ("big_shared", [0, 1, 1], [32, 1, 1], 0, FaultKind::InvalidValue), // an empty grid
        ("big_shared", [1, 1, 1], [1, 1, 65], 0, FaultKind::InvalidValue), // z past 64
        ("limited", [1, 1, 1], [129, 1, 1], 0, FaultKind::OutOfResources), // past .maxntid
        ("limited", [1, 1, 1], [64, 4, 1], 0, FaultKind::OutOfResources), // y past .maxntid
        ("big_shared", [1, 1, 1], [32, 1, 1], 8196, FaultKind::InvalidValue), // 40 KiB + 8 KiB + 4 > 48 KiB
    ];
    for &(k, grid, block, dynamic, kind) in cases {
        let e = r
            .launch_dyn(k, grid, block, dynamic, &[&arg])
            .err()
            .unwrap_or_else(|| panic!("{k} {grid:?} {block:?} +{dynamic} launched"));
        assert_eq!(e.kind, kind, "{k} {grid:?} {block:?} +{dynamic}: {}", e.report);
        assert!(!e.kind.is_sticky());
        assert!(e.report.contains(k), "{}", e.report);
    }
    // The limits themselves are fine (40 KiB + 8 KiB is exactly 48 KiB).
    r.launch_dyn("limited", [1, 1, 1], [128, 1, 1], 0, &[&arg]).unwrap();
    r.launch_dyn("big_shared", [1, 1, 1], [1024, 1, 1], 8 * 1024, &[&arg]).unwrap();
}

/// Each lane copies its 16 bytes of `in` into shared memory with cp.async.
const CP_ASYNC_ALL: &str = "
.visible .entry cp_async_all(
\t.param .u64 cp_async_all_param_0
)
{
\t.reg .b32 \t%r<5>;
\t.reg .b64 \t%rd<5>;
\t.shared .align 16 .b8 buf[512];

\tld.param.u64 \t%rd1, [cp_async_all_param_0];
\tcvta.to.global.u64 \t%rd2, %rd1;
\tmov.u32 \t%r1, %tid.x;
\tmul.wide.u32 \t%rd3, %r1, 16;
\tadd.s64 \t%rd4, %rd2, %rd3;
\tmov.u32 \t%r2, buf;
\tshl.b32 \t%r3, %r1, 4;
\tadd.s32 \t%r4, %r2, %r3;
\tcp.async.cg.shared.global \t[%r4], [%rd4], 16; // the copy
\tcp.async.commit_group;
\tcp.async.wait_group \t0;
\tret;
}
";

#[test]
fn cp_async_source_out_of_bounds_names_its_lane() {
    // 80 bytes: lanes 0-4 copy inside, lane 5 is the first past the end. The warp issues
    // the copy together; the fault is lane 5's, at the cp.async, as the per-lane check
    // reports it.
    let ptx = format!("{HEADER}{CP_ASYNC_ALL}");
    let mut r = Rig::new(&ptx);
    let p = r.upload(&[1u8; 80]);
    let e = r.launch("cp_async_all", [1, 1, 1], [32, 1, 1], &[&b64(p)]).unwrap_err();
    let line = line_of(&ptx, "the copy");
    assert_report(
        &e,
        FaultKind::IllegalAddress,
        &[
            "Invalid __global__ read of size 16",
            &format!("{:#x}", p + 80),
            &format!("PTX line {line}"),
            "thread (5,0,0) in block (0,0,0)",
        ],
    );
    // At the issue, as compute-sanitizer reports it, not when a wait completes the copy.
    assert!(!e.report.contains("completing"), "{}", e.report);
    // Exactly in bounds: no fault.
    let mut r = Rig::new(&ptx);
    let p = r.upload(&[1u8; 512]);
    r.launch("cp_async_all", [1, 1, 1], [32, 1, 1], &[&b64(p)]).unwrap();
}
