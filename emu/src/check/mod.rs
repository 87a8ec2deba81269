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

/// Bits of [`Access::tl`] that hold the PTX line (the rest hold the thread): 2^21 - 1
/// lines, far more than any PTX we load (the GEMM's, every variant in one module, has
/// under 300,000); a later line is recorded as the last one representable, which only a
/// report would show (`line` says "at or after" then).
const LINE_BITS: u32 = 21;
const LINE_MAX: u32 = (1 << LINE_BITS) - 1;

/// Who and where, packed: thread (linear index in the block, below 1024 < 2^11) and PTX
/// line, in one word; 0: nobody (PTX lines start at 1).
fn who(thread: u32, line: u32) -> u32 {
    thread << LINE_BITS | line.clamp(1, LINE_MAX)
}

/// One recorded shared-memory access: who and where in the PTX ([`who`]), and the
/// synchronization epochs it happened in: the block's barrier epoch and the accessing
/// lane's own clock (its component of its vector clock). `tl == 0`: none.
#[derive(Clone, Copy, Debug, Default)]
struct Access {
    tl: u32,
    block_epoch: u32,
    clock: u32,
}

impl Access {
    fn none(&self) -> bool {
        self.tl == 0
    }
    fn thread(&self) -> u32 {
        self.tl >> LINE_BITS
    }
    fn line(&self) -> u32 {
        self.tl & LINE_MAX
    }
}

/// A read recorded for the cross-warp check, which needs no clock (warps are ordered
/// only by block barriers): who and the block epoch.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    tl: u32,
    block_epoch: u32,
}

impl Seen {
    fn none(&self) -> bool {
        self.tl == 0
    }
    fn thread(&self) -> u32 {
        self.tl >> LINE_BITS
    }
    fn of(a: &Access) -> Seen {
        Seen { tl: a.tl, block_epoch: a.block_epoch }
    }
    fn access(&self) -> Access {
        Access { tl: self.tl, block_epoch: self.block_epoch, clock: 0 }
    }
}

/// An access being made, with what checking it against the recorded ones needs at hand:
/// its thread's warp and the thread's vector clock, read once per access instead of once
/// per word.
struct Now<'a> {
    access: Access,
    thread: u32,
    /// The PTX line unclamped, for reports.
    line: u32,
    warp: u32,
    clocks: &'a [u32; 32],
}

impl Now<'_> {
    /// `a` was made by another thread than this access.
    #[inline(always)]
    fn other(&self, a: &Access) -> bool {
        a.tl != 0 && a.thread() != self.thread
    }

    /// True when the earlier access `a` and this one (by another thread) are not separated
    /// by a synchronization both took part in: a block barrier, or for lanes of one warp a
    /// `bar.warp.sync` that `a`'s lane joined after `a` and this thread before now.
    #[inline(always)]
    fn unordered(&self, a: &Access) -> bool {
        a.block_epoch == self.access.block_epoch
            && (a.thread() / 32 != self.warp || self.clocks[(a.thread() % 32) as usize] < a.clock)
    }
}

/// The shadow of one byte of shared memory, or of a 4-byte word whose bytes have had the
/// same accesses (see [`Cells`]): 64 bytes, one cache line, since every shared access of
/// a launch reads and writes cells.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Cell {
    // (Fields in this order fill the 64 bytes exactly; a unit test holds it to that.)
    write: Access,
    /// The last two reads by distinct threads since they were recorded: enough to find a
    /// reader other than any given writer.
    reads: [Access; 2],
    /// The first read of this byte in the current block epoch, and the latest read in it
    /// by a warp other than the first one's: together they name an unordered reader of
    /// another warp for any writer, however many threads read since the barrier, where
    /// `reads` keeps only the last two.
    first: Seen,
    other: Seen,
    /// A cp.async that will write this byte when its group completes ([`who`]; 0: none).
    pending: u32,
    /// The block ([`Cells::gen`]) this cell belongs to, below 2^31, and in the top bit
    /// whether the byte was written (initcheck): a cell of an earlier block reads as
    /// fresh, so a block's start does not rewrite the whole shadow.
    gen_init: u32,
    /// For a word: 0 while its bytes share this cell; else its halves' or its bytes' own
    /// cells: `(1 + index) << 1 | 1` into [`Cells::halves`], `(1 + index) << 1` into
    /// [`Cells::bytes`].
    split: u32,
}

const INIT: u32 = 1 << 31;

impl Cell {
    fn gen(&self) -> u32 {
        self.gen_init & !INIT
    }
    fn init(&self) -> bool {
        self.gen_init & INIT != 0
    }
    fn fresh(gen: u32) -> Cell {
        Cell { gen_init: gen, ..Cell::default() }
    }
}

/// The shadow cells of one block's shared memory: a cell per 16-byte quad while every
/// access to the quad covered all of it, as the tile traffic of our kernels does (16-byte
/// cp.async, .v4 loads and stores, wmma rows of 32 or 64 bytes at 16-byte aligned
/// strides), else a cell per 4-byte word while every access to the word covered all of it
/// (4- and 8-byte loads and stores). The bytes of such a quad or word have had the same
/// accesses, so one cell stands exactly for their per-byte cells, and the first of its
/// bytes in an access is the byte a per-byte check would name. An access covering part of
/// a quad splits it, for the rest of the block, into four word cells, each a copy of the
/// quad's. An access covering part of a word splits it, for the rest of the block, into two
/// half-word cells when the access covers whole aligned halves (2-byte f16 and bf16
/// loads and stores: each half then stands for its two bytes the same way), else into
/// four byte cells; a half-split word that an access covers part of a half of splits
/// into byte cells, each a copy of its half's.
#[derive(Default)]
struct Cells {
    /// A cell per 16 bytes; `split` 1: its words' cells hold its state.
    quads: Vec<Cell>,
    words: Vec<Cell>,
    halves: Vec<[Cell; 2]>,
    bytes: Vec<[Cell; 4]>,
    gen: u32,
}

impl Cells {
    /// The cells of a fresh block with `bytes` of shared memory: every cell of an earlier
    /// generation reads as never accessed.
    fn reset(&mut self, bytes: usize) {
        if self.gen == INIT - 1 {
            self.quads.clear();
            self.words.clear();
            self.gen = 0;
        }
        self.gen += 1;
        let quads = bytes.div_ceil(16);
        if self.quads.len() < quads {
            self.quads.resize(quads, Cell::default());
            self.words.resize(4 * quads, Cell::default());
        }
        self.halves.clear();
        self.bytes.clear();
    }

    /// The one cell that stands for all of `[addr, addr + n)` in this block, when the span is
    /// a whole quad or word that has one (every access of our kernels' steady state): what
    /// [`Cells::each`] would call `f` on once, found without its walk. None for anything
    /// else (a cell of an earlier block, a quad or word to split, a span of other sizes),
    /// which then takes [`Cells::each`].
    #[inline(always)]
    fn whole(&mut self, addr: usize, n: usize) -> Option<&mut Cell> {
        let gen = self.gen;
        let quad = self.quads.get_mut(addr / 16)?;
        if quad.gen() != gen {
            return None;
        }
        match (n, quad.split) {
            (16, 0) if addr % 16 == 0 => Some(quad),
            (4, 1) if addr % 4 == 0 => {
                let word = &mut self.words[addr / 4];
                (word.gen() == gen && word.split == 0).then_some(word)
            }
            _ => None,
        }
    }

    /// Calls `f` on the cell of every byte of `[addr, addr + n)` in order, or once for
    /// each whole quad or word that has one cell (with its first byte); stops at the first
    /// finding.
    #[inline(always)]
    fn each(
        &mut self,
        addr: usize,
        n: usize,
        mut f: impl FnMut(&mut Cell, usize) -> Result<(), Finding>,
    ) -> Result<(), Finding> {
        let end = addr + n;
        let mut a = addr;
        let gen = self.gen;
        while a < end {
            let q = a / 16;
            let (lo, hi) = (16 * q, 16 * q + 16);
            let cell = &mut self.quads[q];
            if cell.gen() != gen {
                *cell = Cell::fresh(gen);
            }
            if cell.split == 0 {
                if a == lo && end >= hi {
                    f(cell, a)?;
                    a = hi;
                    continue;
                }
                // Part of the quad: its words take its state from here on.
                let whole = *cell;
                cell.split = 1;
                self.words[4 * q..4 * q + 4].fill(whole);
            }
            let stop = end.min(hi);
            self.each_word(a, stop - a, &mut f)?;
            a = stop;
        }
        Ok(())
    }

    /// [`Cells::each`] within one split quad: the cell of every byte in order, or once for
    /// each whole word that has one cell.
    #[inline(always)]
    fn each_word(
        &mut self,
        addr: usize,
        n: usize,
        f: &mut impl FnMut(&mut Cell, usize) -> Result<(), Finding>,
    ) -> Result<(), Finding> {
        let end = addr + n;
        let mut a = addr;
        // Whole words of one cell each (nearly every access): no splitting arithmetic, one
        // bounds check for the run, and the generation in a register (a cell written
        // through the slice could, as far as the compiler knows, be `self.gen`).
        if a % 4 == 0 && end / 4 > a / 4 {
            let gen = self.gen;
            for cell in &mut self.words[a / 4..end / 4] {
                if cell.gen() != gen {
                    *cell = Cell::fresh(gen);
                }
                if cell.split != 0 {
                    break;
                }
                f(cell, a)?;
                a += 4;
            }
        }
        while a < end {
            let w = a / 4;
            let hi = end.min(4 * w + 4);
            let cell = &mut self.words[w];
            if cell.gen() != self.gen {
                *cell = Cell::fresh(self.gen);
            }
            if a == 4 * w && hi == 4 * w + 4 && cell.split == 0 {
                f(cell, a)?;
            } else {
                let halves = (a - 4 * w) % 2 == 0 && (hi - 4 * w) % 2 == 0;
                if cell.split == 0 && halves {
                    self.halves.push([*cell; 2]);
                    cell.split = (self.halves.len() as u32) << 1 | 1;
                } else if cell.split == 0 {
                    self.bytes.push([*cell; 4]);
                    cell.split = (self.bytes.len() as u32) << 1;
                } else if cell.split & 1 == 1 && !halves {
                    let [h0, h1] = self.halves[(cell.split >> 1) as usize - 1];
                    self.bytes.push([h0, h0, h1, h1]);
                    cell.split = (self.bytes.len() as u32) << 1;
                }
                let at = (cell.split >> 1) as usize - 1;
                if cell.split & 1 == 1 {
                    for h in (a - 4 * w) / 2..(hi - 4 * w) / 2 {
                        f(&mut self.halves[at][h], 4 * w + 2 * h)?;
                    }
                } else {
                    for b in a..hi {
                        f(&mut self.bytes[at][b - 4 * w], b)?;
                    }
                }
            }
            a = hi;
        }
        Ok(())
    }
}

/// A hazard found by racecheck or initcheck, before the executor adds the thread and
/// block it happened in.
pub struct Finding {
    pub msg: String,
}

/// The shadow state of one block's shared memory, and its synchronization epochs.
#[derive(Default)]
pub struct SharedShadow {
    cells: Cells,
    sync: Epochs,
}

/// The synchronization a block's threads have done, which decides whether two accesses
/// are ordered.
#[derive(Default)]
struct Epochs {
    block_epoch: u32,
    /// Per thread, a vector clock over the 32 lanes of its warp: component `l` is the
    /// latest clock of lane `l` this thread is ordered after (its own: how many
    /// `bar.warp.sync`s it took part in, plus one).
    clocks: Vec<[u32; 32]>,
    /// Threads per block, for naming threads in reports.
    block: [u32; 3],
}

/// A recorded PTX line for a report ([`LINE_MAX`] stands for every later line too).
fn line_text(line: u32) -> String {
    if line == LINE_MAX {
        format!("{LINE_MAX} or later")
    } else {
        line.to_string()
    }
}

fn tid(linear: u32, block: [u32; 3]) -> String {
    let (x, y, z) = (linear % block[0], (linear / block[0]) % block[1], linear / (block[0] * block[1]));
    format!("({x},{y},{z})")
}

impl Epochs {
    fn now(&self, thread: u32, line: u32) -> Access {
        let clock = self.clocks[thread as usize][(thread % 32) as usize];
        Access { tl: who(thread, line), block_epoch: self.block_epoch, clock }
    }

    fn begin(&self, thread: u32, line: u32) -> Now<'_> {
        Now { access: self.now(thread, line), thread, line, warp: thread / 32, clocks: &self.clocks[thread as usize] }
    }

    #[cold]
    #[inline(never)]
    fn uninitialized(&self, thread: u32, line: u32, a: usize) -> Finding {
        Finding {
            msg: format!(
                "initcheck: Uninitialized __shared__ memory read of byte {a:#x} by thread {} at PTX line {line}: nothing wrote it since the block started",
                tid(thread, self.block)
            ),
        }
    }

    #[cold]
    #[inline(never)]
    fn read_of_pending(&self, pending: u32, thread: u32, line: u32, a: usize) -> Finding {
        let pending = Access { tl: pending, ..Access::default() };
        Finding {
            msg: format!(
                "racecheck: Read-after-write hazard on __shared__ byte {a:#x}: thread {} at PTX line {line} reads the destination of the cp.async issued by thread {} at PTX line {} before a cp.async.wait_group completed it",
                tid(thread, self.block),
                tid(pending.thread(), self.block),
                line_text(pending.line())
            ),
        }
    }

    #[cold]
    #[inline(never)]
    fn hazard(&self, kind: &str, earlier: &Access, what: &str, now: &Access, addr: usize) -> Finding {
        Finding {
            msg: format!(
                "racecheck: {kind} hazard on __shared__ byte {addr:#x}: {what} by thread {} at PTX line {} and thread {} at PTX line {} with no barrier between them",
                tid(earlier.thread(), self.block),
                line_text(earlier.line()),
                tid(now.thread(), self.block),
                line_text(now.line())
            ),
        }
    }

    /// Checks a read `now` against what the cell recorded (initcheck, a pending cp.async,
    /// an unordered write by another thread), then records it.
    #[inline(always)]
    fn read(&self, checks: Checks, c: &mut Cell, now: &Now, a: usize) -> Result<(), Finding> {
        let (thread, line) = (now.thread, now.line);
        if !c.init() || c.pending != 0 {
            if checks.init && !c.init() && c.pending == 0 {
                return Err(self.uninitialized(thread, line, a));
            }
            if checks.race && c.pending != 0 {
                return Err(self.read_of_pending(c.pending, thread, line, a));
            }
        }
        if !checks.race {
            return Ok(());
        }
        if now.unordered(&c.write) && now.other(&c.write) {
            return Err(self.hazard("Read-after-write", &c.write, "written", &now.access, a));
        }
        if c.reads[0].thread() != thread || c.reads[0].none() {
            c.reads[1] = c.reads[0];
        }
        c.reads[0] = now.access;
        if c.first.block_epoch != now.access.block_epoch || c.first.none() {
            c.first = Seen::of(&now.access);
            c.other = Seen::default();
        } else if c.first.thread() / 32 != now.warp {
            c.other = Seen::of(&now.access);
        }
        Ok(())
    }

    /// Checks a write `now` against what the cell recorded, then records it.
    #[inline(always)]
    fn write(&self, checks: Checks, c: &mut Cell, now: &Now, a: usize) -> Result<(), Finding> {
        if checks.race {
            if now.unordered(&c.write) && now.other(&c.write) {
                return Err(self.hazard("Write-after-write", &c.write, "written", &now.access, a));
            }
            if let Some(r) = c.reads.iter().find(|r| now.unordered(r) && now.other(r)) {
                return Err(self.hazard("Write-after-read", r, "read", &now.access, a));
            }
            // A read of this epoch by another warp: `first` if its warp is not the
            // writer's, else `other` (whose warp differs from first's).
            let far = |r: &Seen| r.block_epoch == now.access.block_epoch && !r.none() && r.thread() / 32 != now.warp;
            for r in [&c.first, &c.other] {
                if far(r) {
                    return Err(self.hazard("Write-after-read", &r.access(), "read", &now.access, a));
                }
            }
        }
        c.write = now.access;
        c.gen_init |= INIT;
        Ok(())
    }
}

impl SharedShadow {
    /// A fresh shadow for a block of `threads` threads with `bytes` of shared memory.
    pub fn reset(&mut self, bytes: usize, block: [u32; 3]) {
        self.cells.reset(bytes);
        let threads = block.iter().product::<u32>();
        let sync = &mut self.sync;
        sync.clocks.clear();
        sync.clocks.extend((0..threads).map(|t| {
            let mut c = [0u32; 32];
            c[(t % 32) as usize] = 1;
            c
        }));
        sync.block_epoch = 0;
        sync.block = block;
    }

    /// A block barrier completed: everything before it is ordered before everything after.
    pub fn block_barrier(&mut self) {
        self.sync.block_epoch += 1;
    }

    /// A `bar.warp.sync` of warp `w` completed for the lanes in `members`: each is now
    /// ordered after everything every other member did before it.
    pub fn warp_sync(&mut self, w: usize, members: u32) {
        let clocks = &mut self.sync.clocks;
        let n = clocks.len();
        let lanes =
            || (0..32usize).filter(move |l| members & (1 << l) != 0).map(move |l| w * 32 + l).filter(move |&t| t < n);
        let mut joined = [0u32; 32];
        let max = |j: &mut [u32; 32], c: &[u32; 32]| j.iter_mut().zip(c).for_each(|(j, c)| *j = (*j).max(*c));
        if members == u32::MAX && (w + 1) * 32 <= n {
            // A whole warp (every __syncwarp() of our kernels): the same join, in one pass
            // over its 32 clocks in a row, without testing each lane against the mask.
            let warp = &mut clocks[w * 32..(w + 1) * 32];
            warp.iter().for_each(|c| max(&mut joined, c));
            for (l, c) in warp.iter_mut().enumerate() {
                *c = joined;
                c[l] += 1;
            }
            return;
        }
        for t in lanes() {
            max(&mut joined, &clocks[t]);
        }
        for t in lanes() {
            clocks[t] = joined;
            clocks[t][t % 32] += 1;
        }
    }

    /// A read of `[addr, addr + n)` by `thread` at PTX `line`.
    pub fn read(&mut self, checks: Checks, thread: u32, line: u32, addr: usize, n: usize) -> Result<(), Finding> {
        self.read_rows(checks, thread, line, addr, 0, 1, n)
    }

    /// Reads of `rows` spans of `n` bytes, `stride` bytes apart from `addr` on, by
    /// `thread` at PTX `line`, in that order: one instruction's access to a tile (a wmma
    /// load), as that many [`SharedShadow::read`]s.
    #[allow(clippy::too_many_arguments)] // who, where and the span's shape
    pub fn read_rows(
        &mut self,
        checks: Checks,
        thread: u32,
        line: u32,
        addr: usize,
        stride: usize,
        rows: usize,
        n: usize,
    ) -> Result<(), Finding> {
        let sync = &self.sync;
        let now = sync.begin(thread, line);
        for r in 0..rows {
            let row = addr + r * stride;
            // A row of whole quads, each with its one cell (a wmma tile's row of 32 or 64
            // bytes in the main loop): straight to the cells; else the general walk.
            if row % 16 == 0 && n % 16 == 0 {
                let mut a = row;
                while a < row + n {
                    match self.cells.whole(a, 16) {
                        Some(c) => sync.read(checks, c, &now, a)?,
                        None => break,
                    }
                    a += 16;
                }
                if a == row + n {
                    continue;
                }
                self.cells.each(a, row + n - a, |c, a| sync.read(checks, c, &now, a))?;
                continue;
            }
            // The findings are built out of line: this closure runs for every word read.
            self.cells.each(
                row,
                n,
                #[inline(always)]
                |c, a| sync.read(checks, c, &now, a),
            )?;
        }
        Ok(())
    }

    /// One `ld.shared` or `st.shared` of `n` bytes by the lanes in `mask` of the warp whose
    /// lane 0 is thread `first` (lane `l`: thread `first + l`, at `addrs[l]`), at PTX
    /// `line`: as many [`SharedShadow::read`]s or [`SharedShadow::write`]s, lane after lane
    /// in ascending order, without a call per lane. A finding comes with its lane; the
    /// lanes before it were recorded.
    #[allow(clippy::too_many_arguments)] // who, where and each lane's address
    pub fn lanes(
        &mut self,
        checks: Checks,
        write: bool,
        first: u32,
        line: u32,
        mask: u32,
        addrs: &[u64; 32],
        n: usize,
    ) -> Result<(), (usize, Finding)> {
        let sync = &self.sync;
        for l in crate::exec::lanes_in(mask) {
            let now = sync.begin(first + l as u32, line);
            let a = addrs[l] as usize;
            if let Some(c) = self.cells.whole(a, n) {
                let r = if write { sync.write(checks, c, &now, a) } else { sync.read(checks, c, &now, a) };
                r.map_err(|f| (l, f))?;
                continue;
            }
            let r = if write {
                self.cells.each(addrs[l] as usize, n, |c, a| sync.write(checks, c, &now, a))
            } else {
                self.cells.each(addrs[l] as usize, n, |c, a| sync.read(checks, c, &now, a))
            };
            r.map_err(|f| (l, f))?;
        }
        Ok(())
    }

    /// A write of `[addr, addr + n)` by `thread` at PTX `line` (also a completing cp.async,
    /// attributed to the thread that issued it).
    pub fn write(&mut self, checks: Checks, thread: u32, line: u32, addr: usize, n: usize) -> Result<(), Finding> {
        self.write_rows(checks, thread, line, addr, 0, 1, n)
    }

    /// Writes of `rows` spans as [`SharedShadow::read_rows`] reads them (a wmma store).
    #[allow(clippy::too_many_arguments)] // who, where and the span's shape
    pub fn write_rows(
        &mut self,
        checks: Checks,
        thread: u32,
        line: u32,
        addr: usize,
        stride: usize,
        rows: usize,
        n: usize,
    ) -> Result<(), Finding> {
        let sync = &self.sync;
        let now = sync.begin(thread, line);
        for r in 0..rows {
            self.cells.each(
                addr + r * stride,
                n,
                #[inline(always)]
                |c, a| sync.write(checks, c, &now, a),
            )?;
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
        let sync = &self.sync;
        let now = sync.now(thread, line);
        let issue = |c: &mut Cell, a: usize| {
            if c.pending != 0 {
                let pending = Access { tl: c.pending, ..Access::default() };
                return Err(sync.hazard("Write-after-write", &pending, "targeted by a pending cp.async", &now, a));
            }
            c.pending = now.tl;
            Ok(())
        };
        match self.cells.whole(addr, n) {
            Some(c) => issue(c, addr),
            None => self.cells.each(addr, n, issue),
        }
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
        let sync = &self.sync;
        let now = sync.begin(thread, line);
        let complete = |c: &mut Cell, a: usize| {
            c.pending = 0;
            sync.write(checks, c, &now, a)
        };
        match self.cells.whole(addr, n) {
            Some(c) => complete(c, addr),
            None => self.cells.each(addr, n, complete),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Cell>(), 64);
        assert_eq!(who(1023, LINE_MAX + 5) >> LINE_BITS, 1023);
        assert_eq!(who(1023, LINE_MAX + 5) & LINE_MAX, LINE_MAX);
        assert_ne!(who(0, 0), 0);
    }

    fn shadow() -> SharedShadow {
        let mut s = SharedShadow::default();
        s.reset(16, [64, 1, 1]);
        s
    }

    #[test]
    fn a_quad_written_whole_splits_into_words_exactly() {
        let mut s = SharedShadow::default();
        s.reset(64, [64, 1, 1]);
        // Thread 0 writes quad 1 (bytes 16-31) whole; thread 32 (another warp) may not
        // touch any of it before a barrier, and the report names the first byte it reads.
        s.write(Checks::ALL, 0, 1, 16, 16).map_err(|f| f.msg).unwrap();
        let f = s.read(Checks::ALL, 32, 2, 24, 4).expect_err("race on byte 24");
        assert!(f.msg.contains("Read-after-write hazard on __shared__ byte 0x18"), "{}", f.msg);
        // Thread 0's own read of part of it is fine, and splits it: its other words keep
        // the quad's state (word 7 still thread 0's write), a new write of word 5 by thread
        // 32 after a barrier is its own.
        s.read(Checks::ALL, 0, 3, 20, 4).map_err(|f| f.msg).unwrap();
        s.block_barrier();
        s.write(Checks::ALL, 32, 4, 20, 4).map_err(|f| f.msg).unwrap();
        let f = s.read(Checks::ALL, 0, 5, 16, 16).expect_err("race on byte 20");
        assert!(f.msg.contains("byte 0x14") && f.msg.contains("thread (0,0,0) at PTX line 5"), "{}", f.msg);
        // Quad 0 never written: a whole-quad read names its first byte; quad 2 written in
        // part names its first unwritten byte.
        let f = s.read(Checks::ALL, 0, 6, 0, 16).expect_err("nothing wrote quad 0");
        assert!(f.msg.starts_with("initcheck") && f.msg.contains("byte 0x0"), "{}", f.msg);
        s.write(Checks::ALL, 0, 7, 32, 8).map_err(|f| f.msg).unwrap();
        let f = s.read(Checks::ALL, 0, 8, 32, 16).expect_err("bytes 40-47 unwritten");
        assert!(f.msg.starts_with("initcheck") && f.msg.contains("byte 0x28"), "{}", f.msg);
    }

    #[test]
    fn a_warps_lanes_are_checked_in_order_and_a_finding_names_its_lane() {
        // Warp 1 (threads 32-63) wrote words 0-31 as quads, except word 9; after a barrier
        // warp 0 reads them a word per lane: the quads split on the way, lane 9 finds its
        // word unwritten, and lanes 0-8 were recorded (thread 40 of warp 1 now races with
        // lane 3's read of word 3 when it writes it).
        let mut s = SharedShadow::default();
        s.reset(128, [64, 1, 1]);
        for q in 0..8 {
            if q == 2 {
                s.write(Checks::ALL, 40, 1, 32, 4).map_err(|f| f.msg).unwrap();
                s.write(Checks::ALL, 40, 1, 40, 8).map_err(|f| f.msg).unwrap();
            } else {
                s.write(Checks::ALL, 32 + q as u32, 1, 16 * q, 16).map_err(|f| f.msg).unwrap();
            }
        }
        s.block_barrier();
        let addrs: [u64; 32] = std::array::from_fn(|l| 4 * l as u64);
        let (l, f) = s.lanes(Checks::ALL, false, 0, 2, u32::MAX, &addrs, 4).expect_err("word 9 unwritten");
        assert_eq!(l, 9);
        assert!(f.msg.starts_with("initcheck") && f.msg.contains("byte 0x24 by thread (9,0,0)"), "{}", f.msg);
        let f = s.write(Checks::ALL, 40, 3, 12, 4).expect_err("lane 3 read word 3");
        assert!(f.msg.contains("Write-after-read hazard on __shared__ byte 0xc: read by thread (3,0,0)"), "{}", f.msg);
        // Lanes past 9 were not: thread 40 writes word 10 freely.
        s.write(Checks::ALL, 40, 4, 40, 4).map_err(|f| f.msg).unwrap();
        // The same reads through read_rows (a tile's rows of whole quads) see the same.
        let f = s.read_rows(Checks::ALL, 0, 5, 32, 16, 1, 16).expect_err("word 9 unwritten");
        assert!(f.msg.contains("byte 0x24"), "{}", f.msg);
    }

    #[test]
    fn threads_writing_their_own_bytes_of_a_word_do_not_race() {
        // Threads 0 and 32 (two warps) each store one byte of word 0, then read only it.
        let mut s = shadow();
        s.write(Checks::ALL, 0, 1, 0, 1).map_err(|f| f.msg).unwrap();
        s.write(Checks::ALL, 32, 2, 1, 1).map_err(|f| f.msg).unwrap();
        s.read(Checks::ALL, 0, 3, 0, 1).map_err(|f| f.msg).unwrap();
        s.read(Checks::ALL, 32, 4, 1, 1).map_err(|f| f.msg).unwrap();
        // A read of the whole word by thread 0 meets thread 32's byte 1, named exactly.
        let f = s.read(Checks::ALL, 0, 5, 0, 4).expect_err("race on byte 1");
        assert!(f.msg.contains("Read-after-write hazard on __shared__ byte 0x1"), "{}", f.msg);
    }

    #[test]
    fn a_word_write_then_another_threads_byte_write_races_on_that_byte() {
        let mut s = shadow();
        s.write(Checks::ALL, 0, 1, 4, 4).map_err(|f| f.msg).unwrap();
        let f = s.write(Checks::ALL, 32, 2, 6, 1).expect_err("race on byte 6");
        assert!(f.msg.contains("Write-after-write hazard on __shared__ byte 0x6"), "{}", f.msg);
        // After a barrier both are ordered.
        s.block_barrier();
        s.write(Checks::ALL, 32, 3, 6, 1).map_err(|f| f.msg).unwrap();
    }

    #[test]
    fn half_word_cells_are_exact_and_split_into_bytes_when_needed() {
        // Threads 0 and 32 (two warps) each store one half of word 1 (bytes 4-5, 6-7).
        let mut s = shadow();
        s.write(Checks::ALL, 0, 1, 4, 2).map_err(|f| f.msg).unwrap();
        s.write(Checks::ALL, 32, 2, 6, 2).map_err(|f| f.msg).unwrap();
        s.read(Checks::ALL, 0, 3, 4, 2).map_err(|f| f.msg).unwrap();
        // A whole-word read by thread 0 meets thread 32's half at its first byte.
        let f = s.read(Checks::ALL, 0, 4, 4, 4).expect_err("race on byte 6");
        assert!(f.msg.contains("Read-after-write hazard on __shared__ byte 0x6"), "{}", f.msg);
        // A byte access inside a half splits the word into bytes, each its half's copy:
        // byte 7 still carries thread 32's write, byte 5 thread 0's.
        s.read(Checks::ALL, 0, 5, 5, 1).map_err(|f| f.msg).unwrap();
        let f = s.read(Checks::ALL, 0, 6, 7, 1).expect_err("race on byte 7");
        assert!(f.msg.contains("byte 0x7"), "{}", f.msg);
        // A half written, the other not: a word read names the unwritten half's first byte.
        s.write(Checks::ALL, 0, 7, 10, 2).map_err(|f| f.msg).unwrap();
        let f = s.read(Checks::ALL, 0, 8, 8, 4).expect_err("bytes 8-9 unwritten");
        assert!(f.msg.starts_with("initcheck") && f.msg.contains("byte 0x8"), "{}", f.msg);
    }

    #[test]
    fn a_word_partly_written_is_partly_uninitialized_and_a_new_block_starts_fresh() {
        let mut s = shadow();
        s.write(Checks::ALL, 0, 1, 8, 2).map_err(|f| f.msg).unwrap();
        s.read(Checks::ALL, 0, 2, 8, 2).map_err(|f| f.msg).unwrap();
        let f = s.read(Checks::ALL, 0, 3, 8, 4).expect_err("byte 10 unwritten");
        assert!(f.msg.contains("byte 0xa"), "{}", f.msg);
        // The next block: nothing written yet, word and byte cells alike.
        s.reset(16, [64, 1, 1]);
        for (a, n) in [(8, 2), (0, 4)] {
            let f = s.read(Checks::ALL, 0, 4, a, n).expect_err("fresh block");
            assert!(f.msg.starts_with("initcheck"), "{}", f.msg);
        }
    }
}
