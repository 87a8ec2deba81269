//! The sanitizers, in compute-sanitizer's terms, on in every launch unless switched off:
//!
//! - racecheck: shared-memory hazards (write-write, write-read, read-write) between two
//!   threads with no synchronization between them. Threads of different warps are
//!   ordered only by a block barrier (`bar.sync`, `bar.red`); lanes of one warp also by a
//!   `bar.warp.sync` (`__syncwarp`) that both took part in, and by nothing else: the PTX
//!   ISA gives `bar.warp.sync` memory ordering among its participating threads, while
//!   `shfl.sync` and `wmma.*.sync` only wait for the warp's lanes to arrive. On Volta and
//!   later the lanes of a warp run independently, so a lane outside a `__syncwarp`'s
//!   member mask is not ordered by it. A read of a cp.async destination before the
//!   wait_group that completes the copy is a hazard too.
//! - initcheck: a load of global or shared bytes nobody wrote (global: since the
//!   allocation; memsets, copies from the host and kernel stores count as writes; shared:
//!   since the block started).
//! - synccheck: threads of a block waiting at different `bar.sync` instructions, or a
//!   warp-synchronizing instruction whose member mask names a lane that cannot arrive.
//!
//! Hazards are found from synchronization epochs, not from the order the emulator
//! happened to run threads in: every shared access records the block's barrier epoch and
//! its lane's own component of a vector clock over the lanes of its warp (advanced by
//! each `bar.warp.sync` the lane takes part in, merged over the participants), and two
//! accesses by different threads conflict when no barrier they both took part in
//! separates them. So a missing `__syncthreads` or `__syncwarp` is found even where the
//! emulator's schedule would have given the right answer.
//!
//! `MP_EMU_RACECHECK=0`, `MP_EMU_INITCHECK=0` and `MP_EMU_SYNCCHECK=0` switch a check off.

use std::sync::OnceLock;

/// Which checks a launch runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checks {
    pub race: bool,
    pub init: bool,
    pub sync: bool,
}

impl Checks {
    pub const ALL: Checks = Checks { race: true, init: true, sync: true };
    pub const NONE: Checks = Checks { race: false, init: false, sync: false };

    /// All on, except those switched off by `MP_EMU_<CHECK>=0` (read once per process).
    pub fn from_env() -> Checks {
        static CHECKS: OnceLock<Checks> = OnceLock::new();
        *CHECKS.get_or_init(|| {
            let on = |var: &str| std::env::var(var).map_or(true, |v| v != "0");
            Checks { race: on("MP_EMU_RACECHECK"), init: on("MP_EMU_INITCHECK"), sync: on("MP_EMU_SYNCCHECK") }
        })
    }
}

/// One recorded shared-memory access: who, where in the PTX, and the synchronization
/// epochs it happened in: the block's barrier epoch and the accessing lane's own clock
/// (its component of its vector clock). `line == 0`: none.
#[derive(Clone, Copy, Debug, Default)]
struct Access {
    thread: u32,
    line: u32,
    block_epoch: u32,
    clock: u32,
}

impl Access {
    fn none(&self) -> bool {
        self.line == 0
    }
}

/// The shadow of one byte of shared memory.
#[derive(Clone, Copy, Default)]
struct Cell {
    write: Access,
    /// The last two reads by distinct threads since they were recorded: enough to find a
    /// reader other than any given writer.
    reads: [Access; 2],
    /// A cp.async that will write this byte when its group completes.
    pending: Access,
    /// The first read of this byte in the current block epoch, and the latest read in it
    /// by a warp other than the first one's: together they name an unordered reader of
    /// another warp for any writer, however many threads read since the barrier, where
    /// `reads` keeps only the last two.
    first: Access,
    other: Access,
    init: bool,
}

/// A hazard found by racecheck or initcheck, before the executor adds the thread and
/// block it happened in.
pub struct Finding {
    pub msg: String,
}

/// The shadow state of one block's shared memory, and its synchronization epochs.
#[derive(Default)]
pub struct SharedShadow {
    cells: Vec<Cell>,
    block_epoch: u32,
    /// Per thread, a vector clock over the 32 lanes of its warp: component `l` is the
    /// latest clock of lane `l` this thread is ordered after (its own: how many
    /// `bar.warp.sync`s it took part in, plus one).
    clocks: Vec<[u32; 32]>,
    /// Threads per block, for naming threads in reports.
    block: [u32; 3],
}

fn tid(linear: u32, block: [u32; 3]) -> String {
    let (x, y, z) = (linear % block[0], (linear / block[0]) % block[1], linear / (block[0] * block[1]));
    format!("({x},{y},{z})")
}

impl SharedShadow {
    /// A fresh shadow for a block of `threads` threads with `bytes` of shared memory.
    pub fn reset(&mut self, bytes: usize, block: [u32; 3]) {
        self.cells.clear();
        self.cells.resize(bytes, Cell::default());
        let threads = block.iter().product::<u32>();
        self.clocks.clear();
        self.clocks.extend((0..threads).map(|t| {
            let mut c = [0u32; 32];
            c[(t % 32) as usize] = 1;
            c
        }));
        self.block_epoch = 0;
        self.block = block;
    }

    /// A block barrier completed: everything before it is ordered before everything after.
    pub fn block_barrier(&mut self) {
        self.block_epoch += 1;
    }

    /// A `bar.warp.sync` of warp `w` completed for the lanes in `members`: each is now
    /// ordered after everything every other member did before it.
    pub fn warp_sync(&mut self, w: usize, members: u32) {
        let n = self.clocks.len();
        let lanes =
            || (0..32usize).filter(move |l| members & (1 << l) != 0).map(move |l| w * 32 + l).filter(move |&t| t < n);
        let mut joined = [0u32; 32];
        for t in lanes() {
            joined.iter_mut().zip(&self.clocks[t]).for_each(|(j, c)| *j = (*j).max(*c));
        }
        for t in lanes() {
            self.clocks[t] = joined;
            self.clocks[t][t % 32] += 1;
        }
    }

    fn now(&self, thread: u32, line: u32) -> Access {
        let clock = self.clocks[thread as usize][(thread % 32) as usize];
        Access { thread, line, block_epoch: self.block_epoch, clock }
    }

    /// True when the earlier access `a` and `b`, made now (by different threads), are not
    /// separated by a synchronization both took part in: a block barrier, or for lanes of
    /// one warp a `bar.warp.sync` that `a`'s lane joined after `a` and `b`'s before `b`.
    fn unordered(&self, a: &Access, b: &Access) -> bool {
        a.block_epoch == b.block_epoch
            && (a.thread / 32 != b.thread / 32 || self.clocks[b.thread as usize][(a.thread % 32) as usize] < a.clock)
    }

    fn hazard(&self, kind: &str, earlier: &Access, what: &str, now: &Access, addr: usize) -> Finding {
        Finding {
            msg: format!(
                "racecheck: {kind} hazard on __shared__ byte {addr:#x}: {what} by thread {} at PTX line {} and thread {} at PTX line {} with no barrier between them",
                tid(earlier.thread, self.block),
                earlier.line,
                tid(now.thread, self.block),
                now.line
            ),
        }
    }

    /// A read of `[addr, addr + n)` by `thread` at PTX `line`.
    pub fn read(&mut self, checks: Checks, thread: u32, line: u32, addr: usize, n: usize) -> Result<(), Finding> {
        let now = self.now(thread, line);
        for a in addr..addr + n {
            // By reference: a cell is ~100 bytes and most reads find nothing to report.
            let c = &self.cells[a];
            if checks.init && !c.init && c.pending.none() {
                return Err(Finding {
                    msg: format!(
                        "initcheck: Uninitialized __shared__ memory read of byte {a:#x} by thread {} at PTX line {line}: nothing wrote it since the block started",
                        tid(thread, self.block)
                    ),
                });
            }
            if !checks.race {
                continue;
            }
            if !c.pending.none() {
                return Err(Finding {
                    msg: format!(
                        "racecheck: Read-after-write hazard on __shared__ byte {a:#x}: thread {} at PTX line {line} reads the destination of the cp.async issued by thread {} at PTX line {} before a cp.async.wait_group completed it",
                        tid(thread, self.block),
                        tid(c.pending.thread, self.block),
                        c.pending.line
                    ),
                });
            }
            if !c.write.none() && c.write.thread != thread && self.unordered(&c.write, &now) {
                return Err(self.hazard("Read-after-write", &c.write, "written", &now, a));
            }
            let cell = &mut self.cells[a];
            if cell.reads[0].thread != thread || cell.reads[0].none() {
                cell.reads[1] = cell.reads[0];
            }
            cell.reads[0] = now;
            if cell.first.none() || cell.first.block_epoch != now.block_epoch {
                cell.first = now;
                cell.other = Access::default();
            } else if cell.first.thread / 32 != thread / 32 {
                cell.other = now;
            }
        }
        Ok(())
    }

    /// A write of `[addr, addr + n)` by `thread` at PTX `line` (also a completing cp.async,
    /// attributed to the thread that issued it).
    pub fn write(&mut self, checks: Checks, thread: u32, line: u32, addr: usize, n: usize) -> Result<(), Finding> {
        let now = self.now(thread, line);
        for a in addr..addr + n {
            if checks.race {
                let c = &self.cells[a];
                if !c.write.none() && c.write.thread != thread && self.unordered(&c.write, &now) {
                    return Err(self.hazard("Write-after-write", &c.write, "written", &now, a));
                }
                if let Some(r) = c.reads.iter().find(|r| !r.none() && r.thread != thread && self.unordered(r, &now)) {
                    return Err(self.hazard("Write-after-read", r, "read", &now, a));
                }
                // A read of this epoch by another warp: `first` if its warp is not the
                // writer's, else `other` (whose warp differs from first's).
                let far = [c.first, c.other]
                    .into_iter()
                    .find(|r| !r.none() && r.block_epoch == now.block_epoch && r.thread / 32 != thread / 32);
                if let Some(r) = far {
                    return Err(self.hazard("Write-after-read", &r, "read", &now, a));
                }
            }
            let cell = &mut self.cells[a];
            cell.write = now;
            cell.init = true;
        }
        Ok(())
    }

    /// A cp.async by `thread` at `line` will write `[addr, addr + n)` when it completes.
    pub fn async_issue(
        &mut self,
        checks: Checks,
        thread: u32,
        line: u32,
        addr: usize,
        n: usize,
    ) -> Result<(), Finding> {
        if !checks.race {
            return Ok(());
        }
        let now = self.now(thread, line);
        for a in addr..addr + n {
            let c = &self.cells[a];
            if !c.pending.none() {
                return Err(self.hazard("Write-after-write", &c.pending, "targeted by a pending cp.async", &now, a));
            }
            self.cells[a].pending = now;
        }
        Ok(())
    }

    /// The cp.async writing `[addr, addr + n)` completed (at a wait_group, or at exit).
    pub fn async_complete(
        &mut self,
        checks: Checks,
        thread: u32,
        line: u32,
        addr: usize,
        n: usize,
    ) -> Result<(), Finding> {
        for c in &mut self.cells[addr..addr + n] {
            c.pending = Access::default();
        }
        self.write(checks, thread, line, addr, n)
    }
}
