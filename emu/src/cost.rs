//! Per-launch cost counters: what a kernel really moves and how well its accesses are
//! shaped, counted from every access the emulator executes. A model, not a timer: the
//! figures are bytes, sectors, wavefronts and instructions, never times.
//!
//! - Warp instructions: the lanes of a warp that execute one instruction for the n-th
//!   time in their block form its n-th warp instruction, so a warp issues an instruction
//!   as often as its busiest lane executes it. That is SIMT issue (CUDA C++ Programming
//!   Guide, "SIMT Architecture": a warp runs one instruction for its active lanes at a
//!   time and runs each path a divergent branch takes in turn, the other lanes idle): a
//!   converged instruction is one issue, an if/else issues both sides once, a loop whose
//!   lanes run different trip counts issues the longest. Counted per class, beside the
//!   thread-instructions. These are PTX instructions: ptxas may split one (a wmma mma is
//!   several HMMA) or fold several (address arithmetic, parameter loads) into one.
//! - Global memory, per warp instruction (as above: the lanes' n-th executions of one
//!   memory instruction form one, wherever their earlier paths went): bytes requested,
//!   distinct bytes and 32-byte sectors touched; coalescing is distinct bytes over sector
//!   bytes. L2-equivalent bytes are every requested sector summed; DRAM-equivalent bytes
//!   are the distinct sectors the launch reads plus the distinct sectors it writes, i.e.
//!   an L2 that holds the launch's working set (a sector updated in place moves twice:
//!   read, then written back).
//! - Shared memory, per warp instruction: wavefronts, with 32 banks of 4 bytes; a
//!   wavefront serves any set of words in distinct banks (one word per bank; lanes
//!   reading the same word share it). The ideal is the distinct bytes over 128. wmma
//!   loads are modelled as ldmatrix does them: each 8x8 f16 sub-matrix (8 rows of 16
//!   bytes) is one phase; wmma f32 stores as 8 phases of two 64-byte rows.
//! - Instructions executed by class, counted per thread and per warp (above);
//!   tensor-core MACs per mma.
//!
//! On when `MP_EMU_COST` names a file: each launch appends one JSON line with its
//! kernel name, shape and counters.

use std::collections::{HashMap, HashSet};
use std::io::Write;

/// Instruction classes.
pub const MEMORY: usize = 0;
pub const ARITHMETIC: usize = 1;
pub const TENSOR: usize = 2;
pub const CONTROL: usize = 3;

/// What one launch did.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Thread-instructions by class (MEMORY, ARITHMETIC, TENSOR, CONTROL).
    pub thread_insts: [u64; 4],
    /// Warp instructions issued, by class (see the module docs).
    pub warp_insts: [u64; 4],
    /// Tensor-core multiply-adds (16 * 16 * 16 per warp mma).
    pub macs: u64,
    /// Bytes the lanes asked for, a byte asked for by several lanes of one warp
    /// instruction counted each time.
    pub global_bytes: u64,
    /// Distinct bytes per warp instruction, summed: what coalescing is judged against
    /// (lanes reading the same scalar share its sector).
    pub global_unique_bytes: u64,
    pub global_warp_insts: u64,
    /// Sectors touched, summed over warp instructions (L2-equivalent traffic / 32).
    pub global_sectors: u64,
    /// Distinct sectors of the launch read plus distinct sectors written (DRAM-equivalent
    /// traffic / 32): a sector read and written back counts twice, as it moves twice.
    pub dram_sectors: u64,
    /// Of those, the sectors read and the sectors written.
    pub dram_read_sectors: u64,
    pub dram_write_sectors: u64,
    pub shared_bytes: u64,
    pub shared_warp_insts: u64,
    pub shared_wavefronts: u64,
    pub shared_ideal_wavefronts: u64,
}

impl Counters {
    fn add(&mut self, o: &Counters) {
        for k in 0..4 {
            self.thread_insts[k] += o.thread_insts[k];
            self.warp_insts[k] += o.warp_insts[k];
        }
        self.macs += o.macs;
        self.global_bytes += o.global_bytes;
        self.global_unique_bytes += o.global_unique_bytes;
        self.global_warp_insts += o.global_warp_insts;
        self.global_sectors += o.global_sectors;
        self.shared_bytes += o.shared_bytes;
        self.shared_warp_insts += o.shared_warp_insts;
        self.shared_wavefronts += o.shared_wavefronts;
        self.shared_ideal_wavefronts += o.shared_ideal_wavefronts;
    }
}

#[derive(Default)]
struct Group {
    bytes: u64,
    /// Global: sector numbers; shared: 4-byte word numbers.
    units: Vec<u64>,
    /// Global: the bytes used of each sector in `units`, as a 32-bit mask.
    masks: Vec<u32>,
    /// Global: whether the instruction writes (a store) or reads.
    write: bool,
}

/// One worker's counters while its blocks run.
#[derive(Default)]
pub struct CostState {
    pub counters: Counters,
    /// Per thread of the block (linear index), per pc: how many times the thread has
    /// executed that instruction in this block. Grown on demand, zeroed at each block's end.
    runs: Vec<Vec<u32>>,
    /// Per warp, per pc: the most times any of its lanes has executed it (the warp
    /// instructions issued for that pc so far).
    issued: Vec<Vec<u32>>,
    global: HashMap<(u32, u32, u32), Group>,
    shared: HashMap<(u32, u32, u32), Group>,
    read: HashSet<u64>,
    written: HashSet<u64>,
}

/// Wavefronts for one warp-wide shared access touching these words: the most distinct
/// words any bank must serve, and at least the distinct bytes over 128.
fn wavefronts(words: &mut Vec<u64>) -> (u64, u64) {
    words.sort_unstable();
    words.dedup();
    let mut per_bank = [0u64; 32];
    for w in words.iter() {
        per_bank[(w % 32) as usize] += 1;
    }
    let ideal = (words.len() as u64 * 4).div_ceil(128).max(1);
    (per_bank.iter().copied().max().unwrap_or(0).max(ideal), ideal)
}

impl CostState {
    /// Thread `linear` of the block executes the instruction at `pc`, of class `class`:
    /// counts the thread-instruction, and a warp instruction when this lane is the first
    /// of its warp to run that pc this many times.
    pub fn execute(&mut self, linear: u32, pc: u32, class: usize) {
        self.counters.thread_insts[class] += 1;
        let (t, w, pc) = (linear as usize, linear as usize / 32, pc as usize);
        if self.runs.len() <= t {
            self.runs.resize_with(t + 1, Vec::new);
            self.issued.resize_with(w + 1, Vec::new);
        }
        let runs = &mut self.runs[t];
        if runs.len() <= pc {
            runs.resize(pc + 1, 0);
        }
        runs[pc] += 1;
        let n = runs[pc];
        let issued = &mut self.issued[w];
        if issued.len() <= pc {
            issued.resize(pc + 1, 0);
        }
        if n > issued[pc] {
            issued[pc] = n;
            self.counters.warp_insts[class] += 1;
        }
    }

    /// Which execution of `pc` by thread `linear` this is (1 for the first): with the
    /// warp and the pc, it names the warp instruction an access belongs to.
    pub fn run_of(&self, linear: u32, pc: u32) -> u32 {
        self.runs.get(linear as usize).and_then(|r| r.get(pc as usize)).copied().unwrap_or(0)
    }

    /// One lane's global access of `n` bytes at `addr`, a read or a `write`, part of warp
    /// instruction `key` (warp, pc, [`CostState::run_of`] that pc).
    pub fn global(&mut self, key: (u32, u32, u32), addr: u64, n: u64, write: bool) {
        let g = self.global.entry(key).or_default();
        g.bytes += n;
        g.write = write;
        for s in addr / 32..(addr + n).div_ceil(32) {
            let (lo, hi) = (addr.max(s * 32) - s * 32, (addr + n).min(s * 32 + 32) - s * 32);
            let mask = if hi - lo == 32 { u32::MAX } else { ((1u32 << (hi - lo)) - 1) << lo };
            g.units.push(s);
            g.masks.push(mask);
        }
    }

    /// One lane's shared access of `n` bytes at `addr`, part of warp instruction `key`.
    pub fn shared(&mut self, key: (u32, u32, u32), addr: u64, n: u64) {
        let g = self.shared.entry(key).or_default();
        g.bytes += n;
        for w in addr / 4..(addr + n).div_ceil(4) {
            g.units.push(w);
        }
    }

    /// A warp-wide shared access made in phases, each a list of (address, bytes): a wmma
    /// load or store under the model in the module docs.
    pub fn shared_phases(&mut self, phases: &[Vec<(u64, u64)>]) {
        let c = &mut self.counters;
        c.shared_warp_insts += 1;
        for p in phases {
            let mut words: Vec<u64> = p.iter().flat_map(|&(a, n)| a / 4..(a + n).div_ceil(4)).collect();
            c.shared_bytes += p.iter().map(|&(_, n)| n).sum::<u64>();
            let (w, ideal) = wavefronts(&mut words);
            c.shared_wavefronts += w;
            c.shared_ideal_wavefronts += ideal;
        }
    }

    /// Folds the warp instructions of a finished block into the counters.
    pub fn end_block(&mut self) {
        for v in self.runs.iter_mut().chain(self.issued.iter_mut()) {
            v.fill(0);
        }
        let c = &mut self.counters;
        for (_, g) in self.global.drain() {
            let mut used: Vec<(u64, u32)> = g.units.iter().copied().zip(g.masks.iter().copied()).collect();
            used.sort_unstable_by_key(|&(s, _)| s);
            let mut sectors = 0u64;
            let mut unique = 0u64;
            let mut i = 0;
            while i < used.len() {
                let (s, mut mask) = used[i];
                while i + 1 < used.len() && used[i + 1].0 == s {
                    i += 1;
                    mask |= used[i].1;
                }
                sectors += 1;
                unique += mask.count_ones() as u64;
                if g.write {
                    self.written.insert(s);
                } else {
                    self.read.insert(s);
                }
                i += 1;
            }
            c.global_warp_insts += 1;
            c.global_bytes += g.bytes;
            c.global_unique_bytes += unique;
            c.global_sectors += sectors;
        }
        for (_, mut g) in self.shared.drain() {
            c.shared_warp_insts += 1;
            c.shared_bytes += g.bytes;
            let (w, ideal) = wavefronts(&mut g.units);
            c.shared_wavefronts += w;
            c.shared_ideal_wavefronts += ideal;
        }
    }
}

/// The counters of a whole launch from its workers' states.
pub fn merge(states: Vec<CostState>) -> Counters {
    let mut total = Counters::default();
    let (mut read, mut written) = (HashSet::new(), HashSet::new());
    for s in states {
        total.add(&s.counters);
        read.extend(s.read);
        written.extend(s.written);
    }
    total.dram_read_sectors = read.len() as u64;
    total.dram_write_sectors = written.len() as u64;
    total.dram_sectors = total.dram_read_sectors + total.dram_write_sectors;
    total
}

/// The file `MP_EMU_COST` names, if any.
pub fn output() -> Option<String> {
    std::env::var("MP_EMU_COST").ok().filter(|p| !p.is_empty())
}

/// Appends one JSON line for a launch to `path` (best effort: a write error is reported
/// on stderr, never fails the launch).
pub fn record(path: &str, kernel: &str, grid: [u32; 3], block: [u32; 3], c: &Counters) {
    let line = format!(
        "{{\"kernel\":\"{kernel}\",\"grid\":[{},{},{}],\"block\":[{},{},{}],\"thread_insts\":{{\"memory\":{},\"arithmetic\":{},\"tensor\":{},\"control\":{}}},\"warp_insts\":{{\"memory\":{},\"arithmetic\":{},\"tensor\":{},\"control\":{}}},\"macs\":{},\"global_bytes\":{},\"global_unique_bytes\":{},\"global_warp_insts\":{},\"global_sectors\":{},\"dram_sectors\":{},\"dram_read_sectors\":{},\"dram_write_sectors\":{},\"shared_bytes\":{},\"shared_warp_insts\":{},\"shared_wavefronts\":{},\"shared_ideal_wavefronts\":{}}}\n",
        grid[0],
        grid[1],
        grid[2],
        block[0],
        block[1],
        block[2],
        c.thread_insts[MEMORY],
        c.thread_insts[ARITHMETIC],
        c.thread_insts[TENSOR],
        c.thread_insts[CONTROL],
        c.warp_insts[MEMORY],
        c.warp_insts[ARITHMETIC],
        c.warp_insts[TENSOR],
        c.warp_insts[CONTROL],
        c.macs,
        c.global_bytes,
        c.global_unique_bytes,
        c.global_warp_insts,
        c.global_sectors,
        c.dram_sectors,
        c.dram_read_sectors,
        c.dram_write_sectors,
        c.shared_bytes,
        c.shared_warp_insts,
        c.shared_wavefronts,
        c.shared_ideal_wavefronts
    );
    let written =
        std::fs::OpenOptions::new().create(true).append(true).open(path).and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        eprintln!("mp-emu: MP_EMU_COST={path}: {e}");
    }
}
