//! Execution of a lowered kernel: a grid of blocks of warps of 32 threads, each thread
//! with its own program counter (Volta-style independent scheduling: no reconvergence
//! stack; lanes at one pc execute together).
//!
//! Scheduling within a block, warp by warp: the ready lanes of a warp at its lowest pc
//! step together as a group (a converged warp is one group of 32), each instruction
//! decoded once for the group and the pre-decoded forms executed with one dispatch for
//! it (`run_warp`); lanes that parted wait at their higher pc until the others reach it,
//! so a warp runs together again after a divergent branch or loop. A lane stops at a
//! synchronizing instruction (`bar.sync`, `bar.red`, `bar.warp.sync`, `shfl.sync`,
//! `wmma.*`) or exits. When no thread is ready, the
//! scheduler completes the collectives whose participants have all arrived (warp-level
//! first, then the block barrier) and makes their threads ready again, and the warps
//! step together again; when none can complete, the block is deadlocked and the launch
//! fails. Any interleaving is a legal schedule for a race-free kernel, and the
//! sanitizers judge accesses by synchronization epochs, not by this order. Blocks run
//! one after another on each host thread, in the launch's block order ([`order`]).

mod access;
pub mod approx;
mod convert;
mod fast;
mod float;
pub mod footprint;
pub mod half;
mod int;
pub mod mma;
pub mod order;
mod warp;

use std::collections::VecDeque;
use std::ops::{Index, IndexMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::check::{Checks, SharedShadow};
use crate::cost::{self, CostState};
use crate::driver::allocations::{GlobalView, Memory, UNINIT_BYTE};
use crate::ir::{special, Code, Op, Space, NONE};
use crate::ptx::{Kernel, Module};
use access::AsyncCopy;
use approx::Approx;
use order::BlockOrder;

/// Grid and block shape and dynamic shared memory of one launch.
#[derive(Clone, Copy, Debug)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub dynamic_shared: u32,
    /// The most shared memory (static + dynamic) the launch may use: the default 48 KiB,
    /// or what the driver allows after cuFuncSetAttribute opted the kernel in to more.
    pub shared_limit: u32,
    /// How wmma.mma adds: the driver resolves `MP_EMU_MMA` for the device's capability.
    pub mma: mma::Mma,
}

impl LaunchConfig {
    /// A launch with the default shared-memory limit and round-to-nearest wmma.mma
    /// (a test that wants the truncating model says so by setting `mma`).
    pub fn new(grid: [u32; 3], block: [u32; 3], dynamic_shared: u32) -> Self {
        LaunchConfig { grid, block, dynamic_shared, shared_limit: MAX_SHARED_PER_BLOCK, mma: mma::Mma::Rn }
    }
}

/// What went wrong in a launch, in the driver's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// The configuration is invalid (CUDA_ERROR_INVALID_VALUE): a zero or too large
    /// dimension, too much shared memory, a parameter buffer of the wrong size.
    InvalidValue,
    /// More threads per block than `.maxntid` or the device allows
    /// (CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES).
    OutOfResources,
    /// An access outside every live allocation or outside shared memory
    /// (CUDA_ERROR_ILLEGAL_ADDRESS; the context is unusable afterwards).
    IllegalAddress,
    /// An access not aligned to its size (CUDA_ERROR_MISALIGNED_ADDRESS; the context is
    /// unusable afterwards).
    MisalignedAddress,
    /// Anything else the kernel did that a GPU would trap on (CUDA_ERROR_ILLEGAL_INSTRUCTION;
    /// the context is unusable afterwards): a barrier deadlock, a trap.
    IllegalInstruction,
    /// A sanitizer finding (racecheck, initcheck, synccheck; crate::check): the launch
    /// fails with CUDA_ERROR_LAUNCH_FAILED and the context is unusable afterwards, so a
    /// hazard fails the test that ran into it.
    Sanitizer,
}

impl FaultKind {
    /// True when the driver leaves the context unusable after this error (a fault inside
    /// the kernel, as opposed to a launch refused before it started).
    pub fn is_sticky(self) -> bool {
        !matches!(self, FaultKind::InvalidValue | FaultKind::OutOfResources)
    }
}

/// A failed launch: the kind, and a compute-sanitizer-style report (kernel, block,
/// thread, PTX line, address).
#[derive(Debug)]
pub struct LaunchError {
    pub kind: FaultKind,
    pub report: String,
}

/// A fault inside the kernel before the scheduler adds where it happened.
#[derive(Debug)]
pub(crate) struct Fault {
    pub kind: FaultKind,
    pub msg: String,
}

/// Device limits checked at launch (those of every GPU from sm_70 on).
pub const MAX_THREADS_PER_BLOCK: u32 = 1024;
pub const MAX_BLOCK: [u32; 3] = [1024, 1024, 64];
pub const MAX_GRID: [u32; 3] = [i32::MAX as u32, 65535, 65535];
/// Shared memory a block may use without the kernel opting in to more.
pub const MAX_SHARED_PER_BLOCK: u32 = 48 * 1024;

impl Block<'_> {
    /// A `bar.warp.sync` of warp `w` completed for the lanes in `members` (for
    /// racecheck; shuffles and wmma wait for the lanes but do not order memory).
    fn shadow_warp_sync(&mut self, w: usize, members: u32) {
        if self.checks.race || self.checks.init {
            self.shadow.warp_sync(w, members);
        }
    }
}

/// Per-block state the instructions reach: global memory, shared memory, parameters.
pub(crate) struct Block<'g> {
    pub checks: Checks,
    /// How approximate float instructions compute.
    pub approx: Approx,
    /// The block running (linear index, x fastest) and the grid, for the global racecheck.
    pub block: u64,
    pub grid: [u32; 3],
    pub shadow: SharedShadow,
    pub global: &'g GlobalView<'g>,
    pub shared: Vec<u8>,
    pub params: Vec<u8>,
    /// Thread-instructions executed so far in this launch.
    pub executed: u64,
    /// The cost counters, when asked for.
    pub cost: Option<CostState>,
    /// The global bytes this host thread's blocks touched.
    pub footprint: footprint::Footprint,
    /// How wmma.mma adds ([`mma`]).
    pub mma: mma::Mma,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Ready,
    /// Stopped at a synchronizing instruction (its pc), waiting for the others.
    Waiting,
    Exited,
}

/// Lanes per warp: the row length of a warp's lane-minor register file.
pub(crate) const WARP: usize = 32;

/// Registers as one lane sees them, `r[reg]`: a lane of its warp's register file
/// ([`Lane`]), or in unit tests a plain array. The per-lane instruction code (int.rs,
/// float.rs, convert.rs, half.rs, fast.rs's `exec`) is written against this.
pub trait Regs: IndexMut<usize, Output = u64> {}
impl<T: IndexMut<usize, Output = u64> + ?Sized> Regs for T {}

/// One lane's view of its warp's register file. The file is lane-minor: register `r` of
/// lane `l` at `r * 32 + l`, so one register of the whole warp is one row of 32 values
/// that the pre-decoded forms compute over at once (fast.rs, `exec_warp`), instead of 32
/// separate per-thread vectors.
pub(crate) struct Lane<'a> {
    pub file: &'a mut [u64],
    pub lane: usize,
}

impl Index<usize> for Lane<'_> {
    type Output = u64;
    #[inline(always)]
    fn index(&self, r: usize) -> &u64 {
        &self.file[r * WARP + self.lane]
    }
}

impl IndexMut<usize> for Lane<'_> {
    #[inline(always)]
    fn index_mut(&mut self, r: usize) -> &mut u64 {
        &mut self.file[r * WARP + self.lane]
    }
}

/// Register `r` of lane `l` in a warp's register file.
#[inline(always)]
pub(crate) fn reg(file: &[u64], r: u32, l: usize) -> u64 {
    file[r as usize * WARP + l]
}

/// A thread's scheduling state; its registers are in its warp's register file.
pub(crate) struct Thread {
    pc: u32,
    state: State,
    /// pcs of the `call` instructions being executed.
    calls: Vec<u32>,
    /// cp.async copies issued and not yet complete, oldest first: the committed groups'
    /// (`cp_groups` counts each group's copies, oldest group first), then the
    /// `cp_pending` not yet committed. One queue, so that the copies of a loop's groups
    /// reuse its storage instead of a vector allocated per group.
    pub cp_issued: VecDeque<AsyncCopy>,
    pub cp_groups: VecDeque<u32>,
    pub cp_pending: u32,
    /// The global region this thread touched last (a look-up cache).
    pub region: usize,
    tid: [u32; 3],
    /// Linear index in the block (x fastest); lane = linear % 32.
    pub linear: u32,
}

fn invalid(kind: FaultKind, msg: String) -> LaunchError {
    LaunchError { kind, report: msg }
}

/// The checks the driver makes before a launch runs (or is recorded into a graph): grid
/// and block limits, `.maxntid`, shared memory against `cfg.shared_limit`. Returns the
/// threads per block. The one place these limits are checked, for the driver and for
/// [`launch`] alike.
pub fn check_shape(k: &Kernel, cfg: &LaunchConfig) -> Result<u32, LaunchError> {
    let name = &k.name;
    for d in 0..3 {
        if cfg.grid[d] == 0 || cfg.grid[d] > MAX_GRID[d] || cfg.block[d] == 0 || cfg.block[d] > MAX_BLOCK[d] {
            return Err(invalid(
                FaultKind::InvalidValue,
                format!("launch of {name}: grid {:?} or block {:?} out of range", cfg.grid, cfg.block),
            ));
        }
    }
    let n = cfg.block.iter().product::<u32>();
    if n > MAX_THREADS_PER_BLOCK {
        return Err(invalid(
            FaultKind::InvalidValue,
            format!("launch of {name}: {n} threads per block (at most {MAX_THREADS_PER_BLOCK})"),
        ));
    }
    // Any block shape but `.reqntid`'s is refused, before the `.maxntid` bound it implies
    // (which would answer LAUNCH_OUT_OF_RESOURCES for a larger block).
    k.check_req_ntid(cfg.block).map_err(|m| invalid(FaultKind::InvalidValue, m))?;
    if let Some(m) = k.max_ntid {
        if n > m.iter().product::<u32>() || (0..3).any(|d| cfg.block[d] > m[d]) {
            return Err(invalid(
                FaultKind::OutOfResources,
                format!("launch of {name}: block {:?} exceeds .maxntid {m:?}", cfg.block),
            ));
        }
    }
    let shared = k.static_shared as u64 + cfg.dynamic_shared as u64;
    if shared > cfg.shared_limit as u64 {
        return Err(invalid(
            FaultKind::InvalidValue,
            format!("launch of {name}: {shared} bytes of shared memory per block (at most {})", cfg.shared_limit),
        ));
    }
    Ok(n)
}

fn check_config(k: &Kernel, cfg: &LaunchConfig, params: &[u8]) -> Result<u32, LaunchError> {
    let n = check_shape(k, cfg)?;
    let name = &k.name;
    if params.len() != k.param_bytes {
        return Err(invalid(
            FaultKind::InvalidValue,
            format!("launch of {name}: {} bytes of parameters, the kernel takes {}", params.len(), k.param_bytes),
        ));
    }
    Ok(n)
}

/// What a launch executed.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Instructions executed, summed over threads (guarded-off ones included; a warp
    /// collective counts once per participating thread).
    pub thread_instructions: u64,
    /// The cost counters, when `MP_EMU_COST` asks for them (crate::cost).
    pub cost: Option<cost::Counters>,
    /// The global byte ranges the launch read and wrote, sorted and disjoint (empty when
    /// it faulted): what the driver's check between streams compares.
    pub read: Vec<footprint::Range>,
    pub written: Vec<footprint::Range>,
}

/// Runs kernel `kernel` of `module` to completion over `mem`. `params` is the kernel's
/// parameter buffer laid out as [`crate::ptx::Kernel::params`] says.
pub fn launch(
    module: &Module,
    kernel: usize,
    cfg: &LaunchConfig,
    params: &[u8],
    mem: &mut Memory,
) -> Result<(), LaunchError> {
    launch_stats(module, kernel, cfg, params, mem).map(|_| ())
}

/// As [`launch`], counting what it executed, with the checks the environment asks for
/// ([`Checks::from_env`]).
pub fn launch_stats(
    module: &Module,
    kernel: usize,
    cfg: &LaunchConfig,
    params: &[u8],
    mem: &mut Memory,
) -> Result<Stats, LaunchError> {
    launch_checked(module, kernel, cfg, params, mem, Checks::from_env())
}

/// As [`launch_stats`], with the sanitizers given (approximate instructions as
/// `MP_EMU_APPROX` says, [`Approx::from_env`]).
pub fn launch_checked(
    module: &Module,
    kernel: usize,
    cfg: &LaunchConfig,
    params: &[u8],
    mem: &mut Memory,
    checks: Checks,
) -> Result<Stats, LaunchError> {
    launch_with(module, kernel, cfg, params, mem, checks, Approx::from_env())
}

/// As [`launch_checked`], with the approximate instructions' mode given (tests compare
/// both modes in one process).
pub fn launch_with(
    module: &Module,
    kernel: usize,
    cfg: &LaunchConfig,
    params: &[u8],
    mem: &mut Memory,
    checks: Checks,
    approx: Approx,
) -> Result<Stats, LaunchError> {
    let k = &module.kernels[kernel];
    let n = check_config(k, cfg, params)?;
    let nblocks = cfg.grid.iter().map(|&g| g as u64).product::<u64>();
    // The global racecheck looks for accesses of different blocks that nothing orders,
    // and for `ld.global.nc` reads of bytes the launch writes: a launch of one block whose
    // kernel has no `.nc` load can have neither, so it runs without the race shadows
    // (the GEMM exec case is one such launch).
    let global_race = checks.race && (nblocks > 1 || k.code.nc_loads);
    let view = mem.view_checked(global_race);
    let workers = workers(nblocks, n);
    let costing = cost::output();
    type Outcome = (Result<Stats, (u64, LaunchError)>, Option<CostState>, footprint::Footprint);
    let order = BlockOrder::current();
    let run = |positions: &mut dyn Iterator<Item = u64>| -> Outcome {
        let mut w = Worker::new(k, cfg, params, &view, n, checks, approx, costing.is_some());
        let r = w.run(positions, order, nblocks);
        let out = (r, w.blk.cost.take(), std::mem::take(&mut w.blk.footprint));
        spare::give(std::mem::take(&mut w.regs), std::mem::take(&mut w.blk.shadow));
        out
    };
    let results: Vec<Outcome> = if workers == 1 {
        vec![run(&mut (0..nblocks))]
    } else {
        // Blocks are handed out in the launch's block order from one counter; the first
        // fault stops the others taking new blocks, and the fault of the earliest position
        // in that order is the one reported, so the report does not depend on the host's
        // scheduling.
        let next = AtomicU64::new(0);
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    let (next, stop, run) = (&next, &stop, &run);
                    s.spawn(move || {
                        let mut blocks = std::iter::from_fn(|| {
                            let b = next.fetch_add(1, Ordering::Relaxed);
                            (b < nblocks && !stop.load(Ordering::Relaxed)).then_some(b)
                        });
                        let r = run(&mut blocks);
                        if r.0.is_err() {
                            stop.store(true, Ordering::Relaxed);
                        }
                        r
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
        })
    };
    let mut total = Stats::default();
    let mut first: Option<(u64, LaunchError)> = None;
    let mut states = Vec::new();
    let mut touched = footprint::Footprint::default();
    for (r, c, f) in results {
        states.extend(c);
        touched.absorb(f);
        match r {
            Ok(st) => total.thread_instructions += st.thread_instructions,
            Err((p, e)) if first.as_ref().is_none_or(|(fp, _)| p < *fp) => first = Some((p, e)),
            Err(_) => {}
        }
    }
    if let Some((_, e)) = first {
        return Err(e);
    }
    (total.read, total.written) = touched.finish();
    if let Some(path) = costing {
        let counters = cost::merge(states);
        cost::record(&path, &k.name, cfg.grid, cfg.block, &counters);
        total.cost = Some(counters);
    }
    Ok(total)
}

/// Host threads for a launch: `MP_EMU_THREADS`, else the host's parallelism; one for a
/// launch too small to repay starting threads.
fn workers(nblocks: u64, threads_per_block: u32) -> usize {
    if nblocks < 2 || nblocks * threads_per_block as u64 <= 4096 {
        return 1;
    }
    let host = std::env::var("MP_EMU_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    host.clamp(1, 16).min(nblocks as usize)
}

/// The storage a worker needs that is large and the same from launch to launch (a
/// register file, a shared-memory shadow): kept between launches instead of allocated
/// fresh for each, which for a GEMM block (three quarters of a megabyte of registers, as
/// much of shadow cells) cost the host a page fault per 4 KB, as each launch's new
/// allocation came from the kernel zeroed on first touch. A register file is zeroed again
/// for each launch; a shadow starts each block fresh by its generation count.
mod spare {
    use crate::check::SharedShadow;
    use std::sync::Mutex;

    /// At most this many are kept: one per worker of the largest launches.
    const KEEP: usize = 16;

    static POOL: Mutex<Vec<(Vec<u64>, SharedShadow)>> = Mutex::new(Vec::new());

    /// A register file (any contents: the caller zeroes it) and a shadow, from the pool
    /// or new.
    pub fn take() -> (Vec<u64>, SharedShadow) {
        POOL.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_default()
    }

    /// Returns them for a later launch.
    pub fn give(regs: Vec<u64>, shadow: SharedShadow) {
        let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < KEEP {
            pool.push((regs, shadow));
        }
    }
}

/// One host thread's share of a launch: its own thread states and shared memory, the
/// launch's global memory view.
struct Worker<'a> {
    k: &'a Kernel,
    cfg: &'a LaunchConfig,
    threads: Vec<Thread>,
    /// The warps' register files, one after another (`code.nregs` rows of 32 each).
    regs: Vec<u64>,
    blk: Block<'a>,
}

impl<'a> Worker<'a> {
    #[allow(clippy::too_many_arguments)] // the launch's shape, memory and modes, as launch_with takes them
    fn new(
        k: &'a Kernel,
        cfg: &'a LaunchConfig,
        params: &[u8],
        view: &'a GlobalView<'a>,
        n: u32,
        checks: Checks,
        approx: Approx,
        costing: bool,
    ) -> Self {
        let code = &k.code;
        let [bx, by, _] = cfg.block;
        let nwarps = n.div_ceil(32);
        let stride = code.nregs as usize * WARP;
        let (mut regs, shadow) = spare::take();
        regs.clear();
        regs.resize(nwarps as usize * stride, 0);
        let threads = (0..n)
            .map(|i| {
                let file = &mut regs[(i / 32) as usize * stride..][..stride];
                let mut r = Lane { file, lane: (i % 32) as usize };
                for &(c, v) in &code.consts {
                    r[c as usize] = v;
                }
                let tid = [i % bx, (i / bx) % by, i / (bx * by)];
                for d in 0..3 {
                    r[(special::TID + d as u32) as usize] = tid[d] as u64;
                    r[(special::NTID + d as u32) as usize] = cfg.block[d] as u64;
                    r[(special::NCTAID + d as u32) as usize] = cfg.grid[d] as u64;
                }
                r[special::LANEID as usize] = (i % 32) as u64;
                r[special::WARPID as usize] = (i / 32) as u64;
                r[special::NWARPID as usize] = nwarps as u64;
                Thread {
                    pc: 0,
                    state: State::Ready,
                    calls: Vec::new(),
                    cp_issued: VecDeque::new(),
                    cp_groups: VecDeque::new(),
                    cp_pending: 0,
                    region: 0,
                    tid,
                    linear: i,
                }
            })
            .collect();
        let blk = Block {
            checks,
            approx,
            block: 0,
            grid: cfg.grid,
            shadow,
            global: view,
            shared: Vec::new(),
            params: params.to_vec(),
            executed: 0,
            cost: costing.then(CostState::default),
            footprint: footprint::Footprint::default(),
            mma: cfg.mma,
        };
        Worker { k, cfg, threads, regs, blk }
    }

    /// Runs the blocks at these positions of `order` over the launch's `nblocks`; on a
    /// fault, its position and the report.
    fn run(
        &mut self,
        positions: &mut dyn Iterator<Item = u64>,
        order: BlockOrder,
        nblocks: u64,
    ) -> Result<Stats, (u64, LaunchError)> {
        let (k, code) = (self.k, &self.k.code);
        let shared_bytes = (k.static_shared + self.cfg.dynamic_shared) as usize;
        let [gx, gy, _] = self.cfg.grid.map(|g| g as u64);
        for pos in positions {
            let b = order.block_at(pos, nblocks);
            let (x, y, z) = (b % gx, (b / gx) % gy, b / (gx * gy));
            let ctaid = [x, y, z];
            self.blk.block = b;
            self.blk.shared.clear();
            self.blk.shared.resize(shared_bytes, UNINIT_BYTE);
            if self.blk.checks.race || self.blk.checks.init {
                self.blk.shadow.reset(shared_bytes, self.cfg.block);
            }
            for t in self.threads.iter_mut() {
                t.pc = 0;
                t.state = State::Ready;
                t.calls.clear();
                t.cp_issued.clear();
                t.cp_groups.clear();
                t.cp_pending = 0;
            }
            let stride = code.nregs as usize * WARP;
            for i in 0..self.threads.len() {
                let mut r = Lane { file: &mut self.regs[(i / 32) * stride..][..stride], lane: i % 32 };
                for (d, &c) in ctaid.iter().enumerate() {
                    r[special::CTAID as usize + d] = c;
                }
            }
            let threads = &mut self.threads;
            run_block(k, code, threads, &mut self.regs, &mut self.blk).map_err(|(t, f)| {
                let (tid, line) = match t {
                    Some(t) => (threads[t].tid, code.insts[threads[t].pc as usize].line),
                    None => ([0; 3], 0),
                };
                let report = format!(
                    "{}\n    at PTX line {line} of kernel {}\n    by thread ({},{},{}) in block ({x},{y},{z})",
                    f.msg, k.name, tid[0], tid[1], tid[2]
                );
                (pos, LaunchError { kind: f.kind, report })
            })?;
            if let Some(c) = &mut self.blk.cost {
                c.end_block();
            }
        }
        Ok(Stats { thread_instructions: self.blk.executed, ..Stats::default() })
    }
}

/// A fault and the index of the thread it happened in (None: the whole block).
type BlockFault = (Option<usize>, Fault);

fn run_block(
    k: &Kernel,
    code: &Code,
    threads: &mut [Thread],
    regs: &mut [u64],
    blk: &mut Block,
) -> Result<(), BlockFault> {
    let stride = code.nregs as usize * WARP;
    loop {
        for w in 0..threads.len().div_ceil(32) {
            let end = ((w + 1) * 32).min(threads.len());
            let file = &mut regs[w * stride..][..stride];
            run_warp(code, &mut threads[w * 32..end], file, blk).map_err(|(l, f)| (Some(w * 32 + l), f))?;
        }
        if threads.iter().all(|t| t.state == State::Exited) {
            return Ok(());
        }
        let mut progress = false;
        for w in 0..threads.len().div_ceil(32) {
            let end = ((w + 1) * 32).min(threads.len());
            let file = &mut regs[w * stride..][..stride];
            progress |= resolve_warp(code, w, &mut threads[w * 32..end], file, blk)
                .map_err(|(l, f)| (l.map(|l| w * 32 + l), f))?;
        }
        if !progress {
            progress = resolve_barrier(code, threads, regs, blk)?;
        }
        if !progress {
            return Err((None, deadlock(k, code, threads)));
        }
    }
}

fn deadlock(k: &Kernel, code: &Code, threads: &[Thread]) -> Fault {
    let mut waits: Vec<(u32, usize)> = Vec::new();
    for t in threads.iter().filter(|t| t.state == State::Waiting) {
        let line = code.insts[t.pc as usize].line;
        match waits.iter_mut().find(|(l, _)| *l == line) {
            Some(w) => w.1 += 1,
            None => waits.push((line, 1)),
        }
    }
    let exited = threads.iter().filter(|t| t.state == State::Exited).count();
    let list: Vec<String> = waits.iter().map(|(l, c)| format!("{c} at PTX line {l}")).collect();
    Fault {
        kind: FaultKind::IllegalInstruction,
        msg: format!(
            "deadlock in kernel {}: no synchronization can complete ({} waiting, {exited} exited)",
            k.name,
            list.join(", ")
        ),
    }
}

fn is_warp_op(op: Op) -> bool {
    matches!(
        op,
        Op::BarWarpSync
            | Op::Shfl(_)
            | Op::WmmaLoadA(_)
            | Op::WmmaLoadB(_)
            | Op::WmmaLoadC(_)
            | Op::WmmaMma(..)
            | Op::WmmaStoreD(_)
    )
}

/// Completes the warp-level collective of the lowest waiting lane of this warp when
/// every lane it needs has arrived. Ok(true) when it did.
fn resolve_warp(
    code: &Code,
    w: usize,
    lanes: &mut [Thread],
    file: &mut [u64],
    blk: &mut Block,
) -> Result<bool, (Option<usize>, Fault)> {
    let at = |t: &Thread| {
        (t.state == State::Waiting && is_warp_op(code.insts[t.pc as usize].op)).then(|| &code.insts[t.pc as usize])
    };
    let Some(first) = lanes.iter().position(|t| at(t).is_some()) else { return Ok(false) };
    let op = code.insts[lanes[first].pc as usize].op;
    let fault = |l: usize, msg: String| Err((Some(l), Fault { kind: FaultKind::IllegalInstruction, msg }));
    match op {
        Op::WmmaLoadA(_) | Op::WmmaLoadB(_) | Op::WmmaLoadC(_) | Op::WmmaMma(..) | Op::WmmaStoreD(_) => {
            let pc = lanes[first].pc;
            if lanes.len() != 32 {
                return fault(first, format!("wmma in a partial warp of {} threads", lanes.len()));
            }
            if let Some(l) = lanes.iter().position(|t| t.state != State::Waiting || t.pc != pc) {
                if lanes[l].state == State::Waiting && !is_warp_op(code.insts[lanes[l].pc as usize].op) {
                    // That lane waits at a block barrier: the warp diverged around a
                    // .aligned wmma, which the ISA forbids.
                    return fault(l, format!("lane {l} is not at the same wmma instruction as lane {first}: .aligned wmma needs the whole warp"));
                }
                if lanes[l].state == State::Exited {
                    return fault(l, format!("lane {l} exited before the warp's wmma"));
                }
                return Ok(false);
            }
            let inst = &code.insts[pc as usize];
            warp::wmma(inst, lanes, file, blk).map_err(|f| (Some(first), f))?;
            for t in lanes.iter_mut() {
                t.pc += 1;
                t.state = State::Ready;
            }
            Ok(true)
        }
        _ => {
            let inst = &code.insts[lanes[first].pc as usize];
            let mask_reg = if op == Op::BarWarpSync { inst.a } else { inst.v[0] };
            let members = reg(file, mask_reg, first) as u32;
            for l in 0..32 {
                if members & (1 << l) == 0 {
                    continue;
                }
                let Some(t) = lanes.get(l) else {
                    return fault(
                        first,
                        format!("member mask {members:#010x} names lane {l}, which does not exist in this warp"),
                    );
                };
                match t.state {
                    State::Exited => {
                        return fault(first, format!("member mask {members:#010x} names lane {l}, which has exited"))
                    }
                    State::Waiting => match at(t) {
                        Some(i) if std::mem::discriminant(&i.op) == std::mem::discriminant(&op) => {}
                        // Waiting at a block barrier, which cannot complete while this
                        // warp's lanes wait here: a certain deadlock, named as such.
                        None if blk.checks.sync => {
                            let line = code.insts[t.pc as usize].line;
                            return Err((Some(first), Fault {
                                kind: FaultKind::Sanitizer,
                                msg: format!("synccheck: member mask {members:#010x} names lane {l}, which waits at the block barrier at PTX line {line} instead"),
                            }));
                        }
                        _ => return Ok(false),
                    },
                    State::Ready => return Ok(false),
                }
            }
            if members & (1 << first) == 0 {
                return fault(
                    first,
                    format!("member mask {members:#010x} does not include the executing lane {first}"),
                );
            }
            if let Op::Shfl(mode) = op {
                let insts: Vec<Option<&crate::ir::Inst>> =
                    (0..lanes.len()).map(|l| if members & (1 << l) != 0 { at(&lanes[l]) } else { None }).collect();
                warp::shfl(mode, file, members, &insts);
            }
            for (l, t) in lanes.iter_mut().enumerate() {
                if members & (1 << l) != 0 {
                    t.pc += 1;
                    t.state = State::Ready;
                }
            }
            if op == Op::BarWarpSync {
                blk.shadow_warp_sync(w, members);
            }
            Ok(true)
        }
    }
}

/// Completes the block barrier when every thread that has not exited waits at one.
fn resolve_barrier(code: &Code, threads: &mut [Thread], regs: &mut [u64], blk: &mut Block) -> Result<bool, BlockFault> {
    // Register `r` of thread `t` in the block's register files.
    let stride = code.nregs as usize * WARP;
    let at = |t: usize, r: u32| (t / 32) * stride + r as usize * WARP + t % 32;
    let mut red = false;
    let mut kind = None;
    let mut first_pc: Option<(usize, u32)> = None;
    for (ti, t) in threads.iter().enumerate() {
        match t.state {
            State::Exited => continue,
            State::Ready => return Ok(false),
            State::Waiting => {}
        }
        let i = &code.insts[t.pc as usize];
        if !matches!(i.op, Op::BarSync | Op::BarRedOr) {
            return Ok(false);
        }
        let id = regs[at(ti, i.a)];
        if i.b != NONE {
            return Err((
                Some(ti),
                Fault {
                    kind: FaultKind::IllegalInstruction,
                    msg: "bar.sync with a thread count is not supported by the emulator".into(),
                },
            ));
        }
        match kind {
            None => kind = Some((i.op, id)),
            Some(k) if k == (i.op, id) => {}
            Some(_) => {
                return Err((
                    Some(ti),
                    Fault {
                        kind: FaultKind::IllegalInstruction,
                        msg: "threads of one block wait at different barriers or barrier kinds".into(),
                    },
                ));
            }
        }
        if i.op == Op::BarRedOr {
            red |= regs[at(ti, i.c)] & 1 != 0;
        }
        match first_pc {
            None => first_pc = Some((ti, t.pc)),
            Some((f, pc)) if pc != t.pc && blk.checks.sync => {
                let (l0, l1) = (code.insts[pc as usize].line, i.line);
                let (a, b) = (threads[f].tid, t.tid);
                return Err((Some(ti), Fault {
                    kind: FaultKind::Sanitizer,
                    msg: format!(
                        "synccheck: divergent barrier: thread ({},{},{}) waits at the bar.sync at PTX line {l0}, thread ({},{},{}) at the one at PTX line {l1}; every thread of the block must reach the same one",
                        a[0], a[1], a[2], b[0], b[1], b[2]
                    ),
                }));
            }
            Some(_) => {}
        }
    }
    if blk.checks.race || blk.checks.init {
        blk.shadow.block_barrier();
    }
    for (ti, t) in threads.iter_mut().enumerate().filter(|(_, t)| t.state == State::Waiting) {
        let i = &code.insts[t.pc as usize];
        if i.op == Op::BarRedOr {
            regs[at(ti, i.d)] = red as u64;
        }
        t.pc += 1;
        t.state = State::Ready;
    }
    Ok(true)
}

/// Runs the ready lanes of one warp until each exits or stops at a synchronizing
/// instruction. The ready lanes at the lowest pc step together as a group (all of a
/// converged warp): each instruction once for the group (one decode, and for the
/// pre-decoded forms one dispatch), a branch taken by every lane of the group or by none
/// keeping it together; at an instruction of the general path, each lane of the group
/// executes it in turn, and the group is chosen again. Lanes that parted (a branch some
/// take, a loop some leave earlier) wait at their higher pc until the others reach it,
/// so a warp runs together again after a divergent loop or branch, as on a GPU, instead
/// of lane by lane up to the next collective. Every order of independent lanes is a
/// legal schedule, and the sanitizers judge accesses by synchronization epochs, not by
/// the order the lanes ran in (check/mod.rs). On a fault, the lane and the fault.
fn run_warp(code: &Code, lanes: &mut [Thread], file: &mut [u64], blk: &mut Block) -> Result<(), (usize, Fault)> {
    let full = all_lanes(lanes.len());
    while let Some((mut pc, group, next)) = lowest_group(lanes) {
        let width = group.count_ones() as u64;
        if width == 1 {
            // A lane alone steps on its own until it reaches the lowest pc of the other
            // ready lanes (where they step together again), passes it, or stops.
            let l = group.trailing_zeros() as usize;
            let t = &mut lanes[l];
            while t.state == State::Ready && t.pc < next {
                blk.executed += 1;
                if let Some(c) = &mut blk.cost {
                    c.execute(t.linear, t.pc, class(code.insts[t.pc as usize].op));
                }
                step(t, &mut Lane { file: &mut *file, lane: l }, blk, code).map_err(|f| (l, f))?;
            }
            continue;
        }
        // A run of pre-decoded forms and group-uniform branches leaves the group together
        // (they cannot diverge, stop or fault): the lanes' pcs are brought up to date
        // before the next instruction that can.
        loop {
            let i = &code.insts[pc as usize];
            blk.executed += width;
            if let Some(c) = &mut blk.cost {
                for (l, t) in lanes.iter().enumerate() {
                    if group >> l & 1 != 0 {
                        c.execute(t.linear, pc, class(i.op));
                    }
                }
            }
            let f = code.fast[pc as usize];
            if matches!(f, crate::ir::fast::Fast::Generic) {
                if i.op == Op::Bra {
                    // The lanes of the group that take it.
                    let taken = executing(file, group, i.guard, i.guard_neg);
                    if taken == group || taken == 0 {
                        pc = if taken == group { i.off as u32 } else { pc + 1 };
                        continue;
                    }
                }
                // A parameter every lane loads from one address is read once (not with the
                // cost model on, which counts each lane's access).
                if group == full
                    && i.op == Op::Ld(Space::Param)
                    && blk.cost.is_none()
                    && access::ld_param_warp(i, blk, lanes, file)
                {
                    pc += 1;
                    continue;
                }
                // A collective the whole converged warp reaches together, unguarded (wmma,
                // and shfl.sync or bar.warp.sync with every lane in the member mask): every
                // lane it waits for has arrived, so it completes here, as resolve_warp would
                // complete it after a scheduler round, and the warp goes on together.
                if group == full && lanes.len() == WARP && i.guard == NONE && is_warp_op(i.op) {
                    // The lanes' pcs up to date: the cost model keys a wmma's accesses by
                    // lane 0's pc, and a fault names the instruction by it.
                    lanes.iter_mut().for_each(|t| t.pc = pc);
                    let done = collective_in_place(i, lanes, file, blk).map_err(|f| (0, f))?;
                    if done {
                        pc += 1;
                        continue;
                    }
                }
                // cp.async and its commits and waits, lane after lane in one call.
                match i.op {
                    Op::CpAsync => {
                        let done = access::cp_async_warp(i, blk, lanes, group, file).map_err(at(lanes, pc))?;
                        if done {
                            pc += 1;
                            continue;
                        }
                    }
                    Op::CpAsyncCommit | Op::CpAsyncWait => {
                        for l in lanes_in(executing(file, group, i.guard, i.guard_neg)) {
                            let t = &mut lanes[l];
                            if i.op == Op::CpAsyncCommit || i.b != NONE {
                                access::cp_commit(t);
                            }
                            if i.op == Op::CpAsyncWait {
                                access::cp_wait(i.off as usize, blk, t).map_err(|f| {
                                    t.pc = pc;
                                    (l, f)
                                })?;
                            }
                        }
                        pc += 1;
                        continue;
                    }
                    _ => {}
                }
                if let Op::Ld(s) | Op::St(s) = i.op {
                    let done =
                        access::ld_st_warp(i, s, i.op == Op::St(s), blk, lanes, group, file).map_err(at(lanes, pc))?;
                    if done {
                        pc += 1;
                        continue;
                    }
                }
                break;
            }
            fast::exec_warp(f, file, full, group, i.guard, i.guard_neg);
            pc += 1;
        }
        // The instruction at `pc` takes the general path, lane by lane (its count is in
        // `executed` already).
        for (l, t) in lanes.iter_mut().enumerate() {
            if group >> l & 1 != 0 {
                t.pc = pc;
                step(t, &mut Lane { file: &mut *file, lane: l }, blk, code).map_err(|f| (l, f))?;
            }
        }
    }
    Ok(())
}

/// Completes the collective `i` for a whole warp (32 lanes, all at it, none guarded off):
/// wmma always; shfl.sync and bar.warp.sync when lane 0's member mask names every lane
/// (else false, having done nothing: resolve_warp then checks the mask against the lanes
/// that arrive, and reports what it must). The same work resolve_warp does for them.
fn collective_in_place(
    i: &crate::ir::Inst,
    lanes: &mut [Thread],
    file: &mut [u64],
    blk: &mut Block,
) -> Result<bool, Fault> {
    match i.op {
        Op::WmmaLoadA(_) | Op::WmmaLoadB(_) | Op::WmmaLoadC(_) | Op::WmmaMma(..) | Op::WmmaStoreD(_) => {
            warp::wmma(i, lanes, file, blk)?;
            Ok(true)
        }
        Op::Shfl(mode) if reg(file, i.v[0], 0) as u32 == u32::MAX => {
            warp::shfl(mode, file, u32::MAX, &[Some(i); WARP]);
            Ok(true)
        }
        Op::BarWarpSync if reg(file, i.a, 0) as u32 == u32::MAX => {
            blk.shadow_warp_sync(lanes[0].linear as usize / WARP, u32::MAX);
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// For a warp path's fault in lane `l` at the instruction at `pc`: that lane's pc set to
/// it (the report names the instruction by it), the lane and the fault passed on.
fn at(lanes: &mut [Thread], pc: u32) -> impl FnOnce((usize, Fault)) -> (usize, Fault) + '_ {
    move |(l, f)| {
        lanes[l].pc = pc;
        (l, f)
    }
}

/// The lanes of `mask` (bit l: lane l), in ascending order.
#[inline(always)]
pub(crate) fn lanes_in(mut mask: u32) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if mask == 0 {
            return None;
        }
        let l = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        Some(l)
    })
}

/// The mask of a warp of `n` lanes (bit l: lane l), every lane set.
#[inline(always)]
pub(crate) fn all_lanes(n: usize) -> u32 {
    if n >= 32 {
        u32::MAX
    } else {
        (1u32 << n) - 1
    }
}

/// The lowest pc any ready lane is at, the ready lanes there (bit l: lane l), and the
/// lowest pc of the other ready lanes (u32::MAX: none); None when no lane is ready.
#[inline(always)]
fn lowest_group(lanes: &[Thread]) -> Option<(u32, u32, u32)> {
    let (mut pc, mut group, mut next) = (u32::MAX, 0u32, u32::MAX);
    for (l, t) in lanes.iter().enumerate() {
        if t.state != State::Ready {
            continue;
        }
        if t.pc < pc {
            next = pc;
            (pc, group) = (t.pc, 1 << l);
        } else if t.pc == pc {
            group |= 1 << l;
        } else {
            next = next.min(t.pc);
        }
    }
    (group != 0).then_some((pc, group, next))
}

/// Whether an instruction guarded by predicate register `guard` (NONE: unguarded), negated
/// when `neg`, executes in a thread whose registers are `regs`.
#[inline(always)]
pub(crate) fn guard_holds<R: Regs + ?Sized>(regs: &R, guard: u32, neg: bool) -> bool {
    guard == NONE || (regs[guard as usize] & 1 != 0) != neg
}

/// The lanes of `group` (bit l: lane l) in which an instruction guarded by predicate
/// register `guard` (NONE: unguarded), negated when `neg`, executes: the guard's row of
/// the warp's register file at once.
#[inline(always)]
pub(crate) fn executing(file: &[u64], group: u32, guard: u32, neg: bool) -> u32 {
    if guard == NONE {
        return group;
    }
    let row = &file[guard as usize * WARP..][..WARP];
    row.iter().enumerate().fold(0u32, |m, (l, &v)| m | (((v & 1 != 0) != neg) as u32) << l) & group
}

/// The class an instruction counts in (crate::cost).
fn class(op: Op) -> usize {
    match op {
        Op::Ld(_)
        | Op::St(_)
        | Op::CpAsync
        | Op::CpAsyncCommit
        | Op::CpAsyncWait
        | Op::WmmaLoadA(_)
        | Op::WmmaLoadB(_)
        | Op::WmmaLoadC(_)
        | Op::WmmaStoreD(_) => cost::MEMORY,
        Op::WmmaMma(..) => cost::TENSOR,
        Op::Bra | Op::Call | Op::Ret | Op::Exit | Op::BarSync | Op::BarRedOr | Op::BarWarpSync | Op::Shfl(_) => {
            cost::CONTROL
        }
        _ => cost::ARITHMETIC,
    }
}

/// Executes the instruction at `t.pc`. Ok(true) when the thread is still ready (its pc
/// moved on), Ok(false) when it stopped at a synchronizing instruction or exited.
#[inline(always)]
fn step(t: &mut Thread, r: &mut Lane, blk: &mut Block, code: &Code) -> Result<bool, Fault> {
    let i = &code.insts[t.pc as usize];
    if !guard_holds(r, i.guard, i.guard_neg) {
        t.pc += 1;
        return Ok(true);
    }
    let f = code.fast[t.pc as usize];
    if !matches!(f, crate::ir::fast::Fast::Generic) {
        fast::exec(f, r);
        t.pc += 1;
        return Ok(true);
    }
    match i.op {
        Op::Bra => {
            t.pc = i.off as u32;
            return Ok(true);
        }
        Op::Call => {
            let c = &code.callees[i.off as usize];
            let nret = i.c as usize;
            for (k, &p) in c.params.iter().enumerate() {
                r[p as usize] = r[i.v[nret + k] as usize];
            }
            t.calls.push(t.pc);
            t.pc = c.entry;
            return Ok(true);
        }
        Op::Ret | Op::Exit => match t.calls.pop() {
            Some(call) if i.op == Op::Ret => {
                let ci = &code.insts[call as usize];
                let c = &code.callees[ci.off as usize];
                for k in 0..ci.c as usize {
                    r[ci.v[k] as usize] = r[c.rets[k] as usize];
                }
                t.pc = call + 1;
                return Ok(true);
            }
            _ => {
                access::cp_drain(blk, t)?;
                t.state = State::Exited;
                return Ok(false);
            }
        },
        Op::Ld(s) => access::ld(i, s, blk, t, r)?,
        Op::St(s) => access::st(i, s, blk, t, r)?,
        Op::CpAsync => access::cp_async(i, blk, t, r)?,
        Op::CpAsyncCommit => access::cp_commit(t),
        Op::CpAsyncWait => {
            if i.b != NONE {
                access::cp_commit(t);
            }
            access::cp_wait(i.off as usize, blk, t)?;
        }
        Op::BarSync
        | Op::BarRedOr
        | Op::BarWarpSync
        | Op::Shfl(_)
        | Op::WmmaLoadA(_)
        | Op::WmmaLoadB(_)
        | Op::WmmaLoadC(_)
        | Op::WmmaMma(..)
        | Op::WmmaStoreD(_) => {
            t.state = State::Waiting;
            return Ok(false);
        }
        Op::Cvt => convert::exec(i, r),
        Op::Setp(_) if i.ty.is_float() => float::exec(i, r, blk.approx),
        Op::Set(_) => half::set(i, r),
        op if op.is_float_arith() => float::exec(i, r, blk.approx),
        _ => int::exec(i, r),
    }
    t.pc += 1;
    Ok(true)
}

/// The unit tests' random numbers: xorshift64 (13, 7, 17) from `seed`, one generator for
/// every test that draws random operands.
#[cfg(test)]
pub(crate) fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}
