//! The driver's state: one global lock over every table, and the calling thread's
//! context stack.
//!
//! One lock, not one per object: every call is short except a kernel launch, and a launch
//! needs the device's whole memory mutably anyway (a kernel may touch any allocation), so
//! finer locks would buy no concurrency and cost lock-order reasoning. The lock recovers
//! from poisoning: a panic inside a call is caught at the C boundary and reported as an
//! error, and the process must be able to go on.
//!
//! Handles (contexts, streams, modules, functions, events, graphs, graph execs) are
//! numbers drawn from one counter that never repeats, handed out as pointers. One counter
//! for all kinds means a handle of one kind passed where another is expected is found in
//! no table (INVALID_HANDLE), and a destroyed handle stays invalid forever instead of
//! aliasing a newer object, which is stricter than the real driver (it reuses addresses)
//! in the direction that finds bugs.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::ThreadId;
use std::time::Instant;

use super::allocations::Memory;
use super::device::Device;
use super::error::{self, *};
use super::faults::{self, Faults};
use super::order::{Op, Order};
use crate::exec::LaunchConfig;
use crate::ptx::Module;

/// An opaque object handle, as the C caller sees it (a pointer-sized integer).
pub type Handle = usize;

/// CU_STREAM_LEGACY: the legacy default stream, like the null handle.
pub const STREAM_LEGACY: Handle = 0x1;
/// CU_STREAM_PER_THREAD: the per-thread default stream.
pub const STREAM_PER_THREAD: Handle = 0x2;
/// CU_STREAM_NON_BLOCKING: the stream does not synchronize with the legacy stream.
pub const STREAM_NON_BLOCKING: u32 = 0x1;

/// CUstreamCaptureMode values.
pub const CAPTURE_GLOBAL: u32 = 0;
pub const CAPTURE_THREAD_LOCAL: u32 = 1;
pub const CAPTURE_RELAXED: u32 = 2;

static STATE: Mutex<Option<State>> = Mutex::new(None);

thread_local! {
    /// The calling thread's context stack (cuCtxPush/Pop/SetCurrent); the top is current.
    static CTX_STACK: RefCell<Vec<Handle>> = const { RefCell::new(Vec::new()) };
    /// The thread's capture interaction mode (cuThreadExchangeStreamCaptureMode), which
    /// decides which captures forbid "unsafe" calls (cuMemAlloc, synchronous copies) from
    /// this thread. GLOBAL unless changed, as in the driver.
    static THREAD_MODE: Cell<u32> = const { Cell::new(CAPTURE_GLOBAL) };
}

/// Runs `f` on the driver state under the global lock. The state is created on the first
/// call, not at load time: the crate's driver probe (`driver_present`) loads and unloads
/// the library, and nothing may run then.
pub fn with<T>(f: impl FnOnce(&mut State) -> Result<T, CuResult>) -> Result<T, CuResult> {
    let mut guard: MutexGuard<'_, Option<State>> = STATE.lock().unwrap_or_else(PoisonError::into_inner);
    f(guard.get_or_insert_with(State::default))
}

/// As [`with`], for calls that need cuInit to have succeeded.
pub fn with_init<T>(f: impl FnOnce(&mut State) -> Result<T, CuResult>) -> Result<T, CuResult> {
    with(|s| {
        s.cc()?;
        f(s)
    })
}

/// The calling thread's current context handle, if any (not checked for liveness).
pub fn current_handle() -> Option<Handle> {
    CTX_STACK.with(|s| s.borrow().last().copied())
}

/// Replaces the top of the calling thread's stack (pushes onto an empty one); `None`
/// pops, as cuCtxSetCurrent(NULL) does.
pub fn set_current(ctx: Option<Handle>) {
    CTX_STACK.with(|s| {
        let mut s = s.borrow_mut();
        match ctx {
            Some(c) => match s.last_mut() {
                Some(top) => *top = c,
                None => s.push(c),
            },
            None => {
                s.pop();
            }
        }
    })
}

pub fn push_current(ctx: Handle) {
    CTX_STACK.with(|s| s.borrow_mut().push(ctx))
}

pub fn pop_current() -> Option<Handle> {
    CTX_STACK.with(|s| s.borrow_mut().pop())
}

/// Swaps the calling thread's capture interaction mode, returning the old one.
pub fn exchange_thread_mode(mode: u32) -> u32 {
    THREAD_MODE.with(|m| m.replace(mode))
}

pub fn thread_mode() -> u32 {
    THREAD_MODE.with(Cell::get)
}

pub struct Context {
    pub primary: bool,
    /// Primary context retain count; the context's resources are destroyed when it
    /// drops to zero, as the driver does.
    pub refs: u32,
    /// False for a primary context with no retains: calls made with it current fail.
    pub active: bool,
    /// The error a kernel fault left behind: every later call on this context returns it,
    /// as on a GPU, until the context is destroyed (or the primary context fully released).
    pub sticky: Option<CuResult>,
    /// A fault of the context's device work not yet returned to the caller: it becomes
    /// `sticky` at the next synchronizing call ([`State::sync_point`]; `driver::faults`).
    pub deferred: Option<Deferred>,
}

impl Context {
    pub fn new(primary: bool, active: bool) -> Context {
        Context { primary, refs: 0, active, sticky: None, deferred: None }
    }

    /// Clears the context's fault, reported or not (it was torn down).
    pub fn clear_fault(&mut self) {
        self.sticky = None;
        self.deferred = None;
    }
}

/// A fault of device work kept for the next synchronizing call: its code, and what
/// faulted (for the line that call prints).
pub struct Deferred {
    pub code: CuResult,
    pub what: String,
}

pub struct Stream {
    pub ctx: Handle,
    pub flags: u32,
    /// The capture sequence this stream belongs to, if it is capturing.
    pub capture: Option<u64>,
}

/// Where a stream-ordered call was issued: a created stream, or one of the current
/// context's default streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamRef {
    Legacy(Handle),
    PerThread(Handle),
    Created(Handle),
}

pub struct ModuleEntry {
    pub ctx: Handle,
    pub module: Arc<Module>,
    /// The function handle of each kernel index already asked for, so cuModuleGetFunction
    /// returns the same handle each time, as the driver does.
    pub functions: HashMap<usize, Handle>,
    /// Registers per thread of each kernel, by kernel index, on this device
    /// (driver::resources): found once, when the module is loaded.
    pub registers: Vec<u32>,
}

pub struct Function {
    pub module: Handle,
    pub kernel: usize,
    /// CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, when set.
    pub max_dynamic_shared: Option<u32>,
}

/// When an event was last recorded.
#[derive(Clone, Copy, Debug)]
pub enum Recorded {
    Never,
    /// Recorded outside capture; everything is synchronous, so it completed at once.
    At(Instant),
    /// Recorded into a capture sequence: the event stands for a point in a graph under
    /// construction, and waiting on it from the host is an error.
    Captured {
        capture: u64,
        stream: Handle,
        seq: u64,
    },
}

pub struct Event {
    pub ctx: Handle,
    pub flags: u32,
    pub recorded: Recorded,
    /// Recorded outside capture: the record as an operation of its stream, whose clock a
    /// wait merges (`driver::order`).
    pub op: Option<Op>,
    /// A query answered NOT_READY since the last record (`driver::stream`).
    pub polled: bool,
    /// Recorded in a capture: the nodes a stream waiting on it then depends on.
    pub deps: Vec<usize>,
}

/// One recorded operation of a graph. Everything a node needs is owned by it (kernel
/// parameters are copied at record time, the module is shared), so a graph outlives the
/// calls that built it and even the module's unload.
#[derive(Clone)]
pub enum Node {
    Kernel {
        module: Arc<Module>,
        kernel: usize,
        cfg: LaunchConfig,
        params: Vec<u8>,
    },
    /// `count` elements of `elem` bytes (1, 2 or 4) set to the low bytes of `value`.
    Memset {
        dst: u64,
        value: u32,
        elem: usize,
        count: usize,
    },
    Copy {
        dst: u64,
        src: u64,
        len: usize,
    },
    /// A graph launched into a capturing stream.
    Graph(Arc<Body>),
}

/// A graph's nodes in capture order, with the edges capture found between them.
#[derive(Default)]
pub struct Body {
    pub nodes: Vec<Node>,
    /// The stream each node was captured on (its lane at replay, `driver::order`).
    pub lanes: Vec<Handle>,
    /// The nodes each node depends on (indices of earlier nodes).
    pub deps: Vec<Vec<usize>>,
}

pub struct Graph {
    pub ctx: Handle,
    pub nodes: Arc<Body>,
}

/// A host-to-device copy issued on a context's legacy default stream whose DMA has not
/// landed yet: the staged bytes and where they go (see `driver::memcalls`, "Host-to-device
/// copies on the legacy stream").
pub struct PendingCopy {
    pub ctx: Handle,
    pub dst: u64,
    pub data: Vec<u8>,
}

/// One stream's part in a capture sequence.
pub struct Member {
    /// Nodes recorded on this stream so far (the position an event recorded here marks).
    pub seq: u64,
    /// The stream has recorded work that no other stream of the capture has waited on
    /// since: ending the capture now would leave a fork unjoined.
    pub unjoined: bool,
    /// The nodes the stream's next node depends on: its last node and those of the
    /// events it waited on since.
    pub deps: Vec<usize>,
}

/// A capture sequence in progress.
pub struct Capture {
    pub ctx: Handle,
    /// The stream cuStreamBeginCapture was called on; only it may end the capture.
    pub origin: Handle,
    pub mode: u32,
    pub thread: ThreadId,
    pub members: BTreeMap<Handle, Member>,
    /// Recorded operations in issue order, with their streams and dependencies: the
    /// graph's body.
    pub body: Body,
    /// Why the capture was invalidated; cuStreamEndCapture then returns
    /// STREAM_CAPTURE_INVALIDATED and no graph.
    pub invalidated: Option<&'static str>,
}

#[derive(Default)]
pub struct State {
    /// The emulated device (compute capability, SM count), once cuInit succeeded.
    pub device: Option<Device>,
    next_handle: usize,
    next_capture: u64,
    pub primary: Option<Handle>,
    pub contexts: HashMap<Handle, Context>,
    pub streams: HashMap<Handle, Stream>,
    pub modules: HashMap<Handle, ModuleEntry>,
    pub functions: HashMap<Handle, Function>,
    pub events: HashMap<Handle, Event>,
    pub graphs: HashMap<Handle, Graph>,
    pub execs: HashMap<Handle, Graph>,
    pub captures: HashMap<u64, Capture>,
    /// The device's memory, shared by all its contexts: with unified addressing a device
    /// pointer names one allocation process-wide, and one [`Memory`] gives that for free.
    pub memory: Memory,
    /// Which context allocated each live allocation (by base), so destroying a context
    /// frees what it allocated.
    pub owners: HashMap<u64, Handle>,
    /// Legacy-stream host-to-device copies not yet landed, in issue order.
    pub pending: Vec<PendingCopy>,
    /// Happens-before between streams (`driver::order`).
    pub order: Order,
}

impl State {
    /// The compute capability; NOT_INITIALIZED before a successful cuInit.
    pub fn cc(&self) -> Result<(u32, u32), CuResult> {
        self.device().map(|d| d.cc)
    }

    /// The emulated device; NOT_INITIALIZED before a successful cuInit.
    pub fn device(&self) -> Result<Device, CuResult> {
        self.device.ok_or(NOT_INITIALIZED)
    }

    /// A fresh handle, never handed out before. Starts far from the small values the
    /// driver gives meaning to (0, CU_STREAM_LEGACY, CU_STREAM_PER_THREAD).
    pub fn new_handle(&mut self) -> Handle {
        self.next_handle += 1;
        0x10_0000 + self.next_handle * 0x10
    }

    pub fn new_capture_id(&mut self) -> u64 {
        self.next_capture += 1;
        self.next_capture
    }

    /// The context `ctx`, if it exists and is active.
    pub fn live_context(&self, ctx: Handle) -> Result<&Context, CuResult> {
        match self.contexts.get(&ctx) {
            Some(c) if c.active => Ok(c),
            _ => Err(INVALID_CONTEXT),
        }
    }

    /// Fails with the context's sticky error, if a kernel fault left one.
    pub fn usable(&self, ctx: Handle) -> Result<(), CuResult> {
        match self.live_context(ctx)?.sticky {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The calling thread's current context, checked live and usable (INVALID_CONTEXT
    /// when there is none, the sticky error after a fault).
    pub fn current(&self) -> Result<Handle, CuResult> {
        let ctx = current_handle().ok_or(INVALID_CONTEXT)?;
        self.usable(ctx)?;
        Ok(ctx)
    }

    /// A fault of `ctx`'s device work (a kernel, a replayed graph node, a strict finding),
    /// its report already on stderr. By `MP_EMU_FAULTS` (`driver::faults`): at the launch,
    /// the fault is sticky at once and is the calling operation's error; at the next
    /// synchronizing call (the default), it is kept on the context, the operation succeeds,
    /// and no later device work of the context runs ([`State::faulted`]) until a
    /// synchronizing call returns it ([`State::sync_point`]).
    pub fn fault(&mut self, ctx: Handle, code: CuResult, what: String) -> Result<(), CuResult> {
        let Some(c) = self.contexts.get_mut(&ctx) else { return Err(code) };
        if faults::faults().unwrap_or(Faults::Sync) == Faults::Launch {
            c.sticky.get_or_insert(code);
            return Err(code);
        }
        if c.sticky.is_none() && c.deferred.is_none() {
            c.deferred = Some(Deferred { code, what });
        }
        Ok(())
    }

    /// Whether `ctx`'s device work faulted, reported yet or not: work issued after that
    /// does not run, as on a GPU whose context took a fault.
    pub fn faulted(&self, ctx: Handle) -> bool {
        self.contexts.get(&ctx).is_some_and(|c| c.sticky.is_some() || c.deferred.is_some())
    }

    /// The first step of every call that waits for `ctx`'s device work (`call` names it):
    /// a fault kept for it ([`State::fault`]) becomes the context's sticky error, said on
    /// stderr; then, like every call, it fails with the sticky error if there is one.
    pub fn sync_point(&mut self, ctx: Handle, call: &str) -> Result<(), CuResult> {
        if let Some(c) = self.contexts.get_mut(&ctx) {
            if let Some(d) = c.deferred.take() {
                eprintln!(
                    "mp-emu: {call} returns {} from {}, issued earlier: a fault is reported at the next call \
                     that waits for the device, as on a GPU (MP_EMU_FAULTS=launch reports it at the launch)",
                    error::name(d.code).unwrap_or("?"),
                    d.what
                );
                c.sticky.get_or_insert(d.code);
            }
        }
        self.usable(ctx)
    }

    /// As [`State::current`], for a call that waits for the device: the current
    /// context's kept fault is returned now ([`State::sync_point`]).
    pub fn current_synced(&mut self, call: &str) -> Result<Handle, CuResult> {
        let ctx = current_handle().ok_or(INVALID_CONTEXT)?;
        self.live_context(ctx)?;
        self.sync_point(ctx, call)?;
        Ok(ctx)
    }

    /// Resolves a stream handle for a call made by this thread: the special handles mean
    /// the current context's default streams; a created stream must belong to the
    /// current context. Returns the stream's context too.
    pub fn stream(&self, h: Handle) -> Result<(Handle, StreamRef), CuResult> {
        let ctx = self.current()?;
        match h {
            0 | STREAM_LEGACY => Ok((ctx, StreamRef::Legacy(ctx))),
            STREAM_PER_THREAD => Ok((ctx, StreamRef::PerThread(ctx))),
            _ => {
                let s = self.streams.get(&h).ok_or(INVALID_HANDLE)?;
                if s.ctx != ctx {
                    return Err(INVALID_CONTEXT);
                }
                Ok((ctx, StreamRef::Created(h)))
            }
        }
    }

    /// Whether work issued on `s` is ordered after the work issued before it on its
    /// context's legacy default stream: the legacy stream itself, the per-thread default
    /// stream and every created stream without CU_STREAM_NON_BLOCKING synchronize with it;
    /// a non-blocking stream does not.
    pub fn follows_legacy(&self, s: StreamRef) -> bool {
        match s {
            StreamRef::Legacy(_) | StreamRef::PerThread(_) => true,
            StreamRef::Created(h) => self.streams.get(&h).is_some_and(|x| x.flags & STREAM_NON_BLOCKING == 0),
        }
    }

    /// Lands the pending legacy-stream host-to-device copies of `ctx`, in issue order:
    /// their DMA completes now. Always a legal schedule (a copy may complete any time
    /// after it was issued); callers do it when something is ordered after them.
    pub fn land_copies(&mut self, ctx: Handle) {
        if !self.pending.iter().any(|p| p.ctx == ctx) {
            return;
        }
        let (mine, others) = std::mem::take(&mut self.pending).into_iter().partition(|p| p.ctx == ctx);
        self.pending = others;
        for p in mine {
            // Memory is freed only after its context's copies landed (`mem::free`), so
            // the range is live; a miss would be an emulator bug, and the copy is dropped.
            if let Some(d) = self.memory.slice_mut(p.dst, p.data.len()) {
                d.copy_from_slice(&p.data);
            }
        }
    }

    /// The ordering step of a stream-ordered operation issued on `s` of `ctx`: when `s`
    /// follows the legacy stream, the legacy stream's pending host-to-device copies land
    /// first.
    pub fn order(&mut self, ctx: Handle, s: StreamRef) {
        if self.follows_legacy(s) {
            self.land_copies(ctx);
        }
    }

    /// The first pending legacy-stream copy of `ctx` whose destination holds `addr`.
    pub fn pending_at(&self, ctx: Handle, addr: u64) -> Option<&PendingCopy> {
        self.pending.iter().find(|p| p.ctx == ctx && addr >= p.dst && addr - p.dst < p.data.len() as u64)
    }

    /// The lowest address of `[addr, addr + len)` that a pending legacy-stream copy of
    /// `ctx` has yet to write.
    pub fn pending_overlap(&self, ctx: Handle, addr: u64, len: usize) -> Option<u64> {
        self.pending.iter().filter(|p| p.ctx == ctx).find_map(|p| {
            let lo = addr.max(p.dst);
            let hi = addr.saturating_add(len as u64).min(p.dst + p.data.len() as u64);
            (lo < hi).then_some(lo)
        })
    }

    /// The finding that `what`, issued on a stream that does not follow the legacy
    /// stream, touches `addr` while a legacy-stream copy to it has not landed: on a GPU
    /// it may see the bytes from before that copy, and here it does. Said on stderr; under
    /// `MP_EMU_STRICT` it is also a fault of that work (CUDA_ERROR_LAUNCH_FAILED, reported
    /// as [`State::fault`] says, and the work must not run: the caller checks
    /// [`State::faulted`]).
    pub fn unordered(&mut self, ctx: Handle, what: &str, addr: u64) -> Result<(), CuResult> {
        let Some(p) = self.pending_at(ctx, addr) else { return Ok(()) };
        let strict = faults::strict().unwrap_or(false);
        eprintln!(
            "mp-emu: {what} on a non-blocking stream reads memory still being written by an unordered \
             legacy-stream copy (host to device, {} bytes to {:#x}): a CU_STREAM_NON_BLOCKING stream does \
             not wait for the legacy stream, so it sees the old bytes (copy on the same stream, or synchronize \
             the context or the legacy stream before issuing it){}",
            p.data.len(),
            p.dst,
            if strict { "; MP_EMU_STRICT=1: it fails with CUDA_ERROR_LAUNCH_FAILED" } else { "" }
        );
        if strict {
            return self.fault(ctx, LAUNCH_FAILED, what.to_string());
        }
        Ok(())
    }

    /// The capture sequence a created stream belongs to.
    pub fn capture_of(&self, s: StreamRef) -> Option<u64> {
        match s {
            StreamRef::Created(h) => self.streams.get(&h).and_then(|s| s.capture),
            _ => None,
        }
    }

    /// Invalidates capture `id` (if it still exists), saying why on stderr: the failing
    /// call's error may be swallowed by the caller (cudarc records errors from Drop), and
    /// the later STREAM_CAPTURE_INVALIDATED alone does not say what went wrong.
    pub fn invalidate(&mut self, id: u64, why: &'static str) {
        if let Some(c) = self.captures.get_mut(&id) {
            if c.invalidated.is_none() {
                eprintln!("mp-emu: stream capture invalidated: {why}");
                c.invalidated = Some(why);
            }
        }
    }

    /// The captures of context `ctx` that a call on its legacy stream would implicitly
    /// depend on: those whose streams are blocking (created without
    /// CU_STREAM_NON_BLOCKING), as the legacy stream synchronizes with them.
    fn implicit_captures(&self, ctx: Handle) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .streams
            .values()
            .filter(|s| s.ctx == ctx && s.flags & STREAM_NON_BLOCKING == 0)
            .filter_map(|s| s.capture)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The check every call that uses the legacy stream makes: when a blocking stream of
    /// the context is capturing, the call would make captured work a dependency of
    /// uncaptured work, so it fails with STREAM_CAPTURE_IMPLICIT and invalidates those
    /// captures.
    pub fn check_legacy(&mut self, s: StreamRef) -> Result<(), CuResult> {
        let StreamRef::Legacy(ctx) = s else { return Ok(()) };
        let ids = self.implicit_captures(ctx);
        if ids.is_empty() {
            return Ok(());
        }
        for id in ids {
            self.invalidate(id, "the legacy default stream was used while a blocking stream was capturing");
        }
        Err(STREAM_CAPTURE_IMPLICIT)
    }

    /// The check "potentially unsafe" calls make (cuMemAlloc, cuMemFree, synchronous
    /// copies and memsets): by the calling thread's interaction mode, a capture begun by
    /// this thread in a mode other than RELAXED forbids them, and in GLOBAL mode so does a
    /// GLOBAL capture begun by any other thread. The offending captures are invalidated
    /// and the call fails with STREAM_CAPTURE_UNSUPPORTED.
    pub fn check_unsafe_call(&mut self, what: &'static str) -> Result<(), CuResult> {
        let me = std::thread::current().id();
        let mode = thread_mode();
        if mode == CAPTURE_RELAXED {
            return Ok(());
        }
        let ids: Vec<u64> = self
            .captures
            .iter()
            .filter(|(_, c)| {
                (c.thread == me && c.mode != CAPTURE_RELAXED)
                    || (mode == CAPTURE_GLOBAL && c.thread != me && c.mode == CAPTURE_GLOBAL)
            })
            .map(|(id, _)| *id)
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        for id in ids {
            self.invalidate(id, what);
        }
        Err(STREAM_CAPTURE_UNSUPPORTED)
    }

    /// The check for calls that are never legal on a capturing stream (host
    /// synchronization, a copy to or from pageable host memory, allocation): invalidates
    /// the stream's capture and fails with `code`. Also makes the legacy-stream check.
    pub fn forbid_in_capture(&mut self, s: StreamRef, code: CuResult, what: &'static str) -> Result<(), CuResult> {
        if let Some(id) = self.capture_of(s) {
            self.invalidate(id, what);
            return Err(code);
        }
        self.check_legacy(s)
    }

    /// Records `node` into the stream's capture when it is capturing (true), after the
    /// legacy-stream check; false means the caller executes it now.
    ///
    /// Work about to run is ordered against the legacy stream's pending host-to-device
    /// copies first ([`State::order`]); on a non-blocking stream it runs without them, and
    /// a kernel given a pointer into one, or a copy reading one, is a finding
    /// ([`State::unordered`]).
    pub fn record(&mut self, s: StreamRef, node: Node) -> Result<bool, CuResult> {
        let StreamRef::Created(h) = s else {
            self.check_legacy(s)?;
            self.order_node(s, &node)?;
            return Ok(false);
        };
        let Some(id) = self.capture_of(s) else {
            self.order_node(s, &node)?;
            return Ok(false);
        };
        let c = self.captures.get_mut(&id).ok_or(UNKNOWN)?;
        if c.invalidated.is_some() {
            return Err(STREAM_CAPTURE_INVALIDATED);
        }
        let idx = c.body.nodes.len();
        // The member first: a node without its deps would leave the body's lists of
        // unequal length, which the replay indexes together.
        let m = c.members.get_mut(&h).ok_or(UNKNOWN)?;
        c.body.nodes.push(node);
        c.body.lanes.push(h);
        m.seq += 1;
        m.unjoined = h != c.origin;
        let mut deps = std::mem::replace(&mut m.deps, vec![idx]);
        deps.sort_unstable();
        deps.dedup();
        c.body.deps.push(deps);
        Ok(true)
    }

    /// [`State::order`] for a node about to run on `s`, with the finding of
    /// [`State::unordered`] when it does not follow the legacy stream.
    fn order_node(&mut self, s: StreamRef, node: &Node) -> Result<(), CuResult> {
        let ctx = match s {
            StreamRef::Legacy(c) | StreamRef::PerThread(c) => c,
            StreamRef::Created(h) => match self.streams.get(&h) {
                Some(x) => x.ctx,
                None => return Ok(()),
            },
        };
        if self.follows_legacy(s) {
            self.land_copies(ctx);
            return Ok(());
        }
        if !self.pending.iter().any(|p| p.ctx == ctx) {
            return Ok(());
        }
        match node {
            // Pointers are 8-byte parameters at 8-byte offsets; any such value inside a
            // pending destination is a finding: a kernel that touches memory a copy is
            // still writing races with it, reading stale bytes or having the copy land
            // over what it wrote. (A pointer the kernel never uses would be a false
            // finding under MP_EMU_STRICT; the executor does not tell the two apart.)
            Node::Kernel { module, kernel, params, .. } => {
                let name = module.kernels.get(*kernel).map_or("?", |k| k.name.as_str());
                for chunk in params.chunks_exact(8) {
                    let addr = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
                    if self.pending_at(ctx, addr).is_some() {
                        return self.unordered(ctx, &format!("kernel {name}"), addr);
                    }
                }
                Ok(())
            }
            &Node::Copy { src, len, .. } => match self.pending_overlap(ctx, src, len) {
                Some(addr) => self.unordered(ctx, "a device-to-device copy", addr),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// Destroys everything context `ctx` owns: its streams (and their captures), events,
    /// modules and functions, graphs and execs, and the memory it allocated. The context
    /// entry itself is left to the caller (a primary context stays, inactive).
    pub fn destroy_resources(&mut self, ctx: Handle) {
        let captures: Vec<u64> = self.captures.iter().filter(|(_, c)| c.ctx == ctx).map(|(id, _)| *id).collect();
        for id in captures {
            self.captures.remove(&id);
        }
        self.pending.retain(|p| p.ctx != ctx);
        self.streams.retain(|_, s| s.ctx != ctx);
        self.events.retain(|_, e| e.ctx != ctx);
        let modules: Vec<Handle> = self.modules.iter().filter(|(_, m)| m.ctx == ctx).map(|(h, _)| *h).collect();
        for m in modules {
            self.unload(m);
        }
        self.graphs.retain(|_, g| g.ctx != ctx);
        self.execs.retain(|_, g| g.ctx != ctx);
        let allocs: Vec<u64> = self.owners.iter().filter(|(_, c)| **c == ctx).map(|(p, _)| *p).collect();
        for p in allocs {
            self.owners.remove(&p);
            self.memory.free(p);
            self.forget(p);
        }
        self.forget_context(ctx);
    }

    /// Removes a module and its function handles.
    pub fn unload(&mut self, module: Handle) -> bool {
        match self.modules.remove(&module) {
            Some(m) => {
                for f in m.functions.values() {
                    self.functions.remove(f);
                }
                true
            }
            None => false,
        }
    }
}
