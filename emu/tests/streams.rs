//! The driver's ordering between streams (emu/src/driver/order.rs): kernels on two
//! streams that touch one buffer with no event between them race on a GPU, though the
//! emulator runs them in issue order and gets the right answer; a query of work the host
//! has not waited for may say NOT_READY; a captured graph's unordered branches may run in
//! any order. Each planted bug has a clean twin that differs by the ordering it lacked.
//!
//! Findings fail the work only under `MP_EMU_STRICT` (set here per case), and a failure
//! is sticky for its context, so every case runs in a context of its own. The driver
//! state is process-wide: the tests take one lock.

use std::ffi::{c_void, CString};
use std::ptr::null_mut;
use std::sync::{Mutex, MutexGuard};

use mp_emu::api::*;
use mp_emu::driver::error::{self as e, name};
use mp_emu::driver::faults;

type P = *mut c_void;

static SERIAL: Mutex<()> = Mutex::new(());

#[track_caller]
fn ok(r: u32) {
    assert_eq!(r, 0, "expected CUDA_SUCCESS, got {}", name(r).unwrap_or("?"));
}

/// y[i] += x[i] for i < n.
const PTX: &str = "
.version 7.8
.target sm_75
.address_size 64

.visible .entry axpy(
	.param .u64 axpy_param_0,
	.param .u64 axpy_param_1,
	.param .u32 axpy_param_2
)
{
	.reg .pred 	%p<2>;
	.reg .b32 	%r<6>;
	.reg .f32 	%f<4>;
	.reg .b64 	%rd<8>;

	ld.param.u64 	%rd1, [axpy_param_0];
	ld.param.u64 	%rd2, [axpy_param_1];
	ld.param.u32 	%r2, [axpy_param_2];
	mov.u32 	%r3, %ctaid.x;
	mov.u32 	%r4, %ntid.x;
	mov.u32 	%r5, %tid.x;
	mad.lo.s32 	%r1, %r3, %r4, %r5;
	setp.ge.u32 	%p1, %r1, %r2;
	@%p1 bra 	$L__BB0_2;
	cvta.to.global.u64 	%rd3, %rd1;
	mul.wide.u32 	%rd4, %r1, 4;
	add.s64 	%rd5, %rd3, %rd4;
	ld.global.f32 	%f1, [%rd5];
	cvta.to.global.u64 	%rd6, %rd2;
	add.s64 	%rd7, %rd6, %rd4;
	ld.global.f32 	%f2, [%rd7];
	add.f32 	%f3, %f1, %f2;
	st.global.f32 	[%rd7], %f3;
$L__BB0_2:
	ret;
}
";

const N: usize = 256;

/// A fresh context, current, with the axpy kernel loaded, and strictness set; all undone
/// when dropped.
struct Case {
    ctx: P,
    f: P,
    _serial: MutexGuard<'static, ()>,
}

impl Case {
    fn new(strict: bool) -> Case {
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        faults::set_strict(Some(strict));
        let (mut ctx, mut m, mut f) = (null_mut(), null_mut(), null_mut());
        unsafe {
            ok(cuInit(0));
            ok(cuCtxCreate_v2(&mut ctx, 0, 0));
            let text = CString::new(PTX).unwrap();
            ok(cuModuleLoadData(&mut m, text.as_ptr().cast()));
            ok(cuModuleGetFunction(&mut f, m, c"axpy".as_ptr()));
        }
        Case { ctx, f, _serial: serial }
    }

    /// A stream; `non_blocking`: CU_STREAM_NON_BLOCKING.
    fn stream(&self, non_blocking: bool) -> P {
        let mut s = null_mut();
        ok(unsafe { cuStreamCreate(&mut s, non_blocking as u32) });
        s
    }

    fn event(&self) -> P {
        let mut ev = null_mut();
        ok(unsafe { cuEventCreate(&mut ev, 2) });
        ev
    }

    /// `n` floats set to `v`, the memset done (synchronized) before anything else runs.
    fn buffer(&self, n: usize, v: f32) -> u64 {
        let mut p = 0;
        unsafe {
            ok(cuMemAlloc_v2(&mut p, n * 4));
            ok(cuMemsetD32_v2(p, v.to_bits(), n));
            ok(cuCtxSynchronize());
        }
        p
    }

    /// y[..n] += x[..n] on `s`.
    fn axpy(&self, s: P, x: u64, y: u64, n: usize) -> u32 {
        let (mut x, mut y, mut n) = (x, y, n as u32);
        let mut args =
            [(&mut x as *mut u64).cast::<c_void>(), (&mut y as *mut u64).cast(), (&mut n as *mut u32).cast()];
        unsafe { cuLaunchKernel(self.f, n.div_ceil(128), 1, 1, 128, 1, 1, 0, s, args.as_mut_ptr(), null_mut()) }
    }

    fn download(&self, src: u64, n: usize) -> Vec<f32> {
        let mut v = vec![0f32; n];
        ok(unsafe { cuMemcpyDtoH_v2(v.as_mut_ptr().cast(), src, n * 4) });
        v
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        unsafe { cuCtxDestroy_v2(self.ctx) };
        faults::set_strict(None);
        faults::set_faults(None);
    }
}

/// Kernel 1 on stream A writes `buf`, kernel 2 on non-blocking stream B reads it (into
/// `out`); `ordered`: an event recorded on A after kernel 1 and waited on by B. Returns
/// cuStreamSynchronize(B)'s result (where a strict finding of kernel 2 is reported) and
/// `out` when that succeeded.
fn two_streams(strict: bool, a_non_blocking: bool, ordered: bool) -> (u32, Option<Vec<f32>>) {
    let c = Case::new(strict);
    let (a, b) = (c.stream(a_non_blocking), c.stream(true));
    let (ones, buf, out) = (c.buffer(N, 1.0), c.buffer(N, 0.0), c.buffer(N, 0.0));
    ok(c.axpy(a, ones, buf, N));
    if ordered {
        let ev = c.event();
        ok(unsafe { cuEventRecord(ev, a) });
        ok(unsafe { cuStreamWaitEvent(b, ev, 0) });
    }
    ok(c.axpy(b, buf, out, N));
    let r = unsafe { cuStreamSynchronize(b) };
    if r != 0 {
        return (r, None);
    }
    ok(unsafe { cuStreamSynchronize(a) });
    (r, Some(c.download(out, N)))
}

/// The planted race: nothing orders kernel 2 after kernel 1. Here kernel 1 ran first and
/// kernel 2 computed the intended answer, so only the check finds it: under strict it
/// fails kernel 2's stream with CUDA_ERROR_LAUNCH_FAILED; without, it is only said (the
/// old emulator, which had no such check, returned SUCCESS either way).
#[test]
fn kernels_on_two_streams_without_an_event_race() {
    for a_non_blocking in [false, true] {
        assert_eq!(
            two_streams(true, a_non_blocking, false),
            (e::LAUNCH_FAILED, None),
            "A non-blocking: {a_non_blocking}"
        );
        assert_eq!(two_streams(false, a_non_blocking, false), (0, Some(vec![1.0; N])));
    }
}

/// With MP_EMU_FAULTS=launch the finding is the racing launch's own error.
#[test]
fn a_racing_launch_fails_at_the_launch_in_launch_mode() {
    let c = Case::new(true);
    faults::set_faults(Some(faults::Faults::Launch));
    let (a, b) = (c.stream(true), c.stream(true));
    let (ones, buf, out) = (c.buffer(N, 1.0), c.buffer(N, 0.0), c.buffer(N, 0.0));
    ok(c.axpy(a, ones, buf, N));
    assert_eq!(c.axpy(b, buf, out, N), e::LAUNCH_FAILED);
}

/// The twin: the event orders the two kernels, so nothing is reported even under strict.
#[test]
fn kernels_on_two_streams_ordered_by_an_event_do_not_race() {
    for a_non_blocking in [false, true] {
        assert_eq!(
            two_streams(true, a_non_blocking, true),
            (0, Some(vec![1.0; N])),
            "A non-blocking: {a_non_blocking}"
        );
    }
}

/// Ranges, not allocations: two streams writing the two halves of one allocation (a
/// pool carved into tensors) do not race; the same two kernels over one half do.
#[test]
fn disjoint_ranges_of_one_allocation_do_not_race() {
    let run = |second_offset: usize| {
        let c = Case::new(true);
        let (a, b) = (c.stream(true), c.stream(true));
        let (ones, pool) = (c.buffer(N, 1.0), c.buffer(2 * N, 0.0));
        ok(c.axpy(a, ones, pool, N));
        ok(c.axpy(b, ones, pool + (second_offset * 4) as u64, N));
        // The finding is a fault of the context: the first synchronization returns it.
        let r = [unsafe { cuStreamSynchronize(b) }, unsafe { cuStreamSynchronize(a) }];
        (r, if r == [0, 0] { Some(c.download(pool, 2 * N)) } else { None })
    };
    assert_eq!(run(N), ([0, 0], Some(vec![1.0; 2 * N])));
    assert_eq!(run(N / 2), ([e::LAUNCH_FAILED; 2], None), "overlapping halves");
}

/// The legacy stream does not wait for a non-blocking stream: a synchronous download of
/// a kernel's output there without synchronizing that stream races with the kernel; with
/// the stream synchronized first it does not. On a blocking stream the legacy stream waits.
#[test]
fn a_synchronous_download_races_with_a_non_blocking_stream() {
    let run = |non_blocking: bool, sync: bool| {
        let c = Case::new(true);
        let s = c.stream(non_blocking);
        let (ones, y) = (c.buffer(N, 1.0), c.buffer(N, 0.0));
        ok(c.axpy(s, ones, y, N));
        if sync {
            ok(unsafe { cuStreamSynchronize(s) });
        }
        let mut v = vec![0f32; N];
        unsafe { cuMemcpyDtoH_v2(v.as_mut_ptr().cast(), y, N * 4) }
    };
    assert_eq!(run(true, false), e::LAUNCH_FAILED);
    assert_eq!(run(true, true), 0);
    assert_eq!(run(false, false), 0);
}

/// A query of work the host has not waited for answers NOT_READY once, then SUCCESS; a
/// polling loop ends. The twin: after cuStreamSynchronize (or cuEventSynchronize) the
/// first query answers SUCCESS. The old emulator answered SUCCESS always.
#[test]
fn a_query_of_unfinished_work_is_not_ready_once() {
    let c = Case::new(true);
    let s = c.stream(true);
    let (ones, y) = (c.buffer(N, 1.0), c.buffer(N, 0.0));
    let ev = c.event();
    unsafe {
        ok(cuStreamQuery(s)); // nothing issued yet
        ok(c.axpy(s, ones, y, N));
        ok(cuEventRecord(ev, s));
        assert_eq!(cuStreamQuery(s), e::NOT_READY);
        ok(cuStreamQuery(s));
        // The stream's query waited for the work, the event's record included.
        ok(cuEventQuery(ev));

        ok(c.axpy(s, ones, y, N));
        ok(cuEventRecord(ev, s));
        assert_eq!(cuEventQuery(ev), e::NOT_READY);
        let mut polls = 1;
        while cuEventQuery(ev) == e::NOT_READY {
            polls += 1;
        }
        assert_eq!(polls, 1, "the second query completes");

        // The twins: the host waited first.
        ok(c.axpy(s, ones, y, N));
        ok(cuEventRecord(ev, s));
        ok(cuStreamSynchronize(s));
        ok(cuStreamQuery(s));
        ok(cuEventQuery(ev));
        ok(c.axpy(s, ones, y, N));
        ok(cuEventRecord(ev, s));
        ok(cuEventSynchronize(ev));
        ok(cuEventQuery(ev));
    }
    assert_eq!(c.download(y, N), vec![4.0; N]);
}

/// A captured fork: kernel 1 (buf += ones) on the origin stream S, kernel 2 (out += buf)
/// on a stream T forked off S before kernel 1 and joined back at the end. `edge`: T also
/// waits on an event S recorded after kernel 1, which makes kernel 2 depend on it.
/// Returns cuStreamSynchronize(S)'s result after one replay, and `out` when it succeeded.
fn captured_fork(strict: bool, edge: bool) -> (u32, Option<Vec<f32>>) {
    let c = Case::new(strict);
    let (s, t) = (c.stream(true), c.stream(true));
    let (ones, buf, out) = (c.buffer(N, 1.0), c.buffer(N, 0.0), c.buffer(N, 0.0));
    let (fork, after1, join) = (c.event(), c.event(), c.event());
    let mut g = null_mut();
    let mut x = null_mut();
    unsafe {
        ok(cuStreamBeginCapture_v2(s, 0));
        ok(cuEventRecord(fork, s));
        ok(cuStreamWaitEvent(t, fork, 0));
        ok(c.axpy(s, ones, buf, N));
        if edge {
            ok(cuEventRecord(after1, s));
            ok(cuStreamWaitEvent(t, after1, 0));
        }
        ok(c.axpy(t, buf, out, N));
        ok(cuEventRecord(join, t));
        ok(cuStreamWaitEvent(s, join, 0));
        ok(cuStreamEndCapture(s, &mut g));
        ok(cuGraphInstantiateWithFlags(&mut x, g, 0));
        ok(cuGraphLaunch(x, s));
        let r = cuStreamSynchronize(s);
        if r != 0 {
            return (r, None);
        }
    }
    (0, Some(c.download(out, N)))
}

/// The planted graph bug: kernel 2 reads what kernel 1 writes, but capture recorded no
/// edge between them (T forked before kernel 1). The capture saw them in issue order; the
/// replay runs the latest ready node first, so kernel 2 reads buf before kernel 1 wrote it
/// (out stays 0 without strict), and the check between streams reports the pair (strict:
/// LAUNCH_FAILED). The old emulator replayed in issue order: SUCCESS, out = 1.
#[test]
fn a_graph_branch_relying_on_issue_order_is_caught_at_replay() {
    assert_eq!(captured_fork(true, false), (e::LAUNCH_FAILED, None));
    assert_eq!(captured_fork(false, false), (0, Some(vec![0.0; N])), "replayed out of issue order");
}

/// The twin: the event edge orders kernel 2 after kernel 1 in the graph.
#[test]
fn a_graph_branch_ordered_by_an_event_edge_is_clean() {
    assert_eq!(captured_fork(true, true), (0, Some(vec![1.0; N])));
}

/// A graph launched inside a capture becomes a child-graph node. Its kernels ran on
/// lanes of their own (here the forked stream T2 of the child's capture), and the work
/// after the node follows them: kernel 2 reads what the child's kernel wrote on T2, and
/// the graph is clean. Before the replay carried the child's end into the node's clock,
/// this was reported as a race between streams (strict: LAUNCH_FAILED).
#[test]
fn work_after_a_child_graph_follows_all_its_lanes() {
    let c = Case::new(true);
    let (s2, t2, s) = (c.stream(true), c.stream(true), c.stream(true));
    let (ones, buf, out) = (c.buffer(N, 1.0), c.buffer(N, 0.0), c.buffer(N, 0.0));
    let (fork, join) = (c.event(), c.event());
    let (mut child, mut child_x, mut g, mut x) = (null_mut(), null_mut(), null_mut(), null_mut());
    unsafe {
        ok(cuStreamBeginCapture_v2(s2, 0));
        ok(cuEventRecord(fork, s2));
        ok(cuStreamWaitEvent(t2, fork, 0));
        ok(c.axpy(t2, ones, buf, N));
        ok(cuEventRecord(join, t2));
        ok(cuStreamWaitEvent(s2, join, 0));
        ok(cuStreamEndCapture(s2, &mut child));
        ok(cuGraphInstantiateWithFlags(&mut child_x, child, 0));
        ok(cuStreamBeginCapture_v2(s, 0));
        ok(cuGraphLaunch(child_x, s));
        ok(c.axpy(s, buf, out, N));
        ok(cuStreamEndCapture(s, &mut g));
        ok(cuGraphInstantiateWithFlags(&mut x, g, 0));
        ok(cuGraphLaunch(x, s));
        ok(cuStreamSynchronize(s));
    }
    assert_eq!(c.download(out, N), vec![1.0; N]);
}

/// A blocking stream destroyed with its work queued: the work still completes (the
/// driver's cuStreamDestroy), and the legacy stream, which synchronizes with every
/// blocking stream, still follows it: a synchronous download of its output on the legacy
/// stream is no race.
#[test]
fn legacy_work_follows_a_destroyed_blocking_streams_work() {
    let c = Case::new(true);
    let s = c.stream(false);
    let (ones, buf) = (c.buffer(N, 1.0), c.buffer(N, 0.0));
    ok(c.axpy(s, ones, buf, N));
    ok(unsafe { cuStreamDestroy_v2(s) });
    assert_eq!(c.download(buf, N), vec![1.0; N]);
    // The twin: a non-blocking stream's work is not followed by the legacy stream,
    // destroyed or not: the download races with it (strict: LAUNCH_FAILED).
    let nb = c.stream(true);
    ok(c.axpy(nb, ones, buf, N));
    ok(unsafe { cuStreamDestroy_v2(nb) });
    let mut v = vec![0f32; N];
    assert_eq!(unsafe { cuMemcpyDtoH_v2(v.as_mut_ptr().cast(), buf, N * 4) }, e::LAUNCH_FAILED);
}
