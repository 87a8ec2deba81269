//! Device memory: allocations at synthetic device addresses, with gaps between them so
//! that an access one past the end of an allocation hits no allocation at all and the
//! memory check reports it.
//!
//! Addresses are not host pointers: nothing in the emulator dereferences a device
//! address, every access goes through [`Memory`] or through the per-launch
//! [`GlobalView`], which bounds-checks it.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// First device address handed out: far from zero, so a null or small integer used as a
/// pointer is never inside an allocation.
const BASE: u64 = 0x7f00_0000_0000;
/// Allocations are aligned to 256 bytes, as cuMemAlloc's are.
const ALIGN: u64 = 256;
/// Unallocated bytes left after every allocation, so overruns fault.
const GUARD: u64 = 4096;
/// The value fresh allocations hold. cuMemAlloc returns uninitialized memory; all-ones
/// bytes are NaN as f32 and f16, so a kernel that reads memory nobody wrote shows it.
pub const UNINIT_BYTE: u8 = 0xff;

/// One allocation.
pub struct Allocation {
    pub data: Vec<u8>,
    /// initcheck's shadow: 1 for each byte written since the allocation (by a memset, a
    /// copy or a kernel store), 0 for the others. Bytes only ever go from 0 to 1.
    init: Vec<u8>,
    /// Every byte of `init` is 1 (found when a launch's view is made; it stays true, as
    /// nothing unwrites a byte): the launch's initcheck of this allocation's bytes, and
    /// its marking of them, then cost nothing.
    written: bool,
    /// racecheck's shadow of global memory within one launch, one word per 2-byte granule
    /// (see [`GlobalView::race`]); made at the first launch that checks races.
    race: Vec<AtomicU64>,
}

/// Every live allocation of a context, by base address.
pub struct Memory {
    allocs: BTreeMap<u64, Allocation>,
    next: u64,
    /// Bytes currently allocated (for cuMemGetInfo).
    pub used: u64,
    /// The launch generation of the global race shadows: a granule's state belongs to the
    /// current launch only when it carries this number, so no launch has to clear them.
    race_gen: u16,
}

impl Default for Memory {
    fn default() -> Self {
        Self::new()
    }
}

impl Memory {
    pub fn new() -> Self {
        Memory { allocs: BTreeMap::new(), next: BASE, used: 0, race_gen: 0 }
    }

    /// A new allocation of `size` bytes (at least one), filled with [`UNINIT_BYTE`].
    pub fn alloc(&mut self, size: usize) -> u64 {
        let base = self.next;
        let span = (size.max(1) as u64).div_ceil(ALIGN) * ALIGN;
        self.next = base + span + GUARD;
        self.allocs.insert(
            base,
            Allocation { data: vec![UNINIT_BYTE; size], init: vec![0; size], written: size == 0, race: Vec::new() },
        );
        self.used += size as u64;
        base
    }

    /// As [`Memory::alloc`], but None instead of aborting the process when the host
    /// cannot provide `size` bytes (cuMemAlloc must fail with OUT_OF_MEMORY, not abort).
    pub fn try_alloc(&mut self, size: usize) -> Option<u64> {
        let mut data = Vec::new();
        data.try_reserve_exact(size).ok()?;
        data.resize(size, UNINIT_BYTE);
        let base = self.next;
        let span = (size.max(1) as u64).div_ceil(ALIGN) * ALIGN;
        self.next = base + span + GUARD;
        let mut init = Vec::new();
        init.try_reserve_exact(size).ok()?;
        init.resize(size, 0);
        self.allocs.insert(base, Allocation { data, init, written: size == 0, race: Vec::new() });
        self.used += size as u64;
        Some(base)
    }

    /// Frees the allocation that starts at `ptr`; false when no allocation starts there.
    pub fn free(&mut self, ptr: u64) -> bool {
        match self.allocs.remove(&ptr) {
            Some(a) => {
                self.used -= a.data.len() as u64;
                true
            }
            None => false,
        }
    }

    /// The allocation holding `addr`, as (base, allocation).
    pub fn find(&self, addr: u64) -> Option<(u64, &Allocation)> {
        let (&base, a) = self.allocs.range(..=addr).next_back()?;
        (addr - base < a.data.len() as u64).then_some((base, a))
    }

    /// The `len` bytes at `addr`, when they lie inside one live allocation.
    pub fn slice(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let (base, a) = self.find(addr)?;
        let off = (addr - base) as usize;
        a.data.get(off..off.checked_add(len)?)
    }

    /// As [`Memory::slice`], writable.
    /// The returned bytes count as written for initcheck: this is how the driver writes
    /// (memsets, copies from the host).
    pub fn slice_mut(&mut self, addr: u64, len: usize) -> Option<&mut [u8]> {
        let (&base, a) = self.allocs.range_mut(..=addr).next_back()?;
        let off = usize::try_from(addr - base).ok()?;
        let end = off.checked_add(len)?;
        a.init.get_mut(off..end)?.fill(1);
        a.data.get_mut(off..end)
    }

    /// Copies `len` bytes between two device ranges (which may be in one allocation and
    /// may overlap, as cuMemcpyDtoD allows for distinct ranges). False when either range
    /// is not inside a live allocation.
    pub fn copy(&mut self, dst: u64, src: u64, len: usize) -> bool {
        let Some(bytes) = self.slice(src, len).map(<[u8]>::to_vec) else { return false };
        match self.slice_mut(dst, len) {
            Some(d) => {
                d.copy_from_slice(&bytes);
                true
            }
            None => false,
        }
    }

    /// The view a kernel launch reads and writes global memory through, from as many
    /// host threads as it runs blocks on.
    pub fn view(&mut self) -> GlobalView<'_> {
        self.view_checked(false)
    }

    /// As [`Memory::view`]; with `race`, a new launch generation of the global race
    /// shadows, which [`GlobalView::race`] then checks and records.
    pub fn view_checked(&mut self, race: bool) -> GlobalView<'_> {
        if race {
            // 15 bits of the state word hold it.
            self.race_gen = (self.race_gen + 1) & 0x7fff;
            if self.race_gen == 0 {
                // Once in 32767 launches: states of the launch that had this number before
                // must not be taken for this one's.
                for a in self.allocs.values_mut() {
                    a.race.iter_mut().for_each(|w| *w.get_mut() = 0);
                }
                self.race_gen = 1;
            }
            for a in self.allocs.values_mut().filter(|a| a.race.is_empty()) {
                a.race.resize_with(a.data.len().div_ceil(2), || AtomicU64::new(0));
            }
        }
        let regions = self
            .allocs
            .iter_mut()
            .map(|(&base, a)| Region {
                base,
                ptr: a.data.as_mut_ptr(),
                // A memchr over the bytes not known written yet: an input uploaded whole, or
                // an output a launch wrote whole, is scanned once and never again.
                written: {
                    a.written = a.written || !a.init.contains(&0);
                    a.written
                },
                init: a.init.as_mut_ptr(),
                race: if race { a.race.as_ptr() } else { std::ptr::null() },
                len: a.data.len(),
            })
            .collect();
        GlobalView { regions, gen: if race { self.race_gen as u64 } else { 0 }, _borrow: PhantomData }
    }
}

/// What a global-memory hazard is: the order of the two accesses, and whether the read
/// went through `ld.global.nc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaceKind {
    ReadAfterWrite,
    WriteAfterRead,
    WriteAfterWrite,
    NcReadAfterWrite,
    NcWriteAfterRead,
}

impl RaceKind {
    /// The hazard as racecheck's reports name it.
    pub fn name(self) -> &'static str {
        match self {
            RaceKind::ReadAfterWrite => "Read-after-write",
            RaceKind::WriteAfterRead => "Write-after-read",
            RaceKind::WriteAfterWrite => "Write-after-write",
            RaceKind::NcReadAfterWrite => "Non-coherent read-after-write",
            RaceKind::NcWriteAfterRead => "Non-coherent write-after-read",
        }
    }
}

/// A cross-block hazard on global memory found by [`GlobalView::race`]: what happened,
/// the address, and the other block (linear index; None: several blocks read it).
pub struct GlobalRace {
    pub kind: RaceKind,
    pub addr: u64,
    pub other: Option<u64>,
}

// A granule's race state, one u64: launch generation (15 bits) | read through ld.global.nc
// (1) | writer block + 1 (22) | bytes written (2) | reader block + 1 (22; MANY: several) |
// bytes read (2). Blocks from
// 2^22 - 2 on are not tracked. Granules of 2 bytes: the smallest elements our kernels
// store are f16, and two blocks whose outputs meet inside a 4-byte word (an odd-width f16
// tile) each read and write their own half; with 4-byte granules the word's second reader
// made it "read by several blocks" and the owner's own write a false race.
const FIELD: u64 = (1 << 22) - 1;
const MANY: u64 = FIELD;

#[derive(Clone, Copy)]
struct RaceState {
    nc: u64,
    writer: u64,
    wmask: u64,
    reader: u64,
    rmask: u64,
}

impl RaceState {
    fn decode(w: u64, gen: u64) -> RaceState {
        if w >> 49 != gen {
            return RaceState { nc: 0, writer: 0, wmask: 0, reader: 0, rmask: 0 };
        }
        let f = |shift: u32, mask: u64| (w >> shift) & mask;
        RaceState { nc: f(48, 1), writer: f(26, FIELD), wmask: f(24, 3), reader: f(2, FIELD), rmask: f(0, 3) }
    }
    fn encode(self, gen: u64) -> u64 {
        gen << 49 | self.nc << 48 | self.writer << 26 | self.wmask << 24 | self.reader << 2 | self.rmask
    }
}

#[derive(Clone, Copy)]
struct Region {
    base: u64,
    ptr: *mut u8,
    /// initcheck's shadow of the same bytes.
    init: *mut u8,
    /// Every byte was written before this launch ([`Allocation::written`]).
    written: bool,
    /// racecheck's granules (null when the launch does not check races).
    race: *const AtomicU64,
    len: usize,
}

/// All allocations, sorted by base, borrowed exclusively for one launch. Lookups are a
/// binary search; the executor caches the last region each thread hit.
///
/// Blocks of one launch run on several host threads and may touch the same bytes (many
/// blocks read the same GEMM operand; a racy kernel may even write them from two blocks,
/// as it can on a GPU). Every access is therefore a relaxed atomic byte access: sound in
/// Rust's memory model whatever the kernel does, and as on a GPU, racing accesses from
/// different blocks see one another in no particular order.
pub struct GlobalView<'a> {
    regions: Vec<Region>,
    /// The launch generation of the race shadows (0: races not checked).
    gen: u64,
    _borrow: PhantomData<&'a mut Memory>,
}

// SAFETY: the view holds the only borrow of the allocations for its lifetime ('a borrows
// the Memory mutably), and every access through it is an atomic byte access within a
// region's bounds (checked in `bytes`), so sharing it between threads cannot race.
unsafe impl Send for GlobalView<'_> {}
// SAFETY: as above.
unsafe impl Sync for GlobalView<'_> {}

impl GlobalView<'_> {
    /// Index of the region holding `[addr, addr + len)`, if one does.
    pub fn region(&self, addr: u64, len: u64) -> Option<usize> {
        let i = self.regions.partition_point(|r| r.base <= addr).checked_sub(1)?;
        self.holds(i, addr, len).then_some(i)
    }

    /// True when region `i` holds `[addr, addr + len)`.
    pub fn holds(&self, i: usize, addr: u64, len: u64) -> bool {
        self.regions
            .get(i)
            .is_some_and(|r| addr >= r.base && (addr - r.base).checked_add(len).is_some_and(|e| e <= r.len as u64))
    }

    /// The atomic bytes `[addr, addr + n)` of region `i`; panics when out of its bounds
    /// (callers check first, so this never fires).
    fn bytes(&self, i: usize, addr: u64, n: usize, shadow: bool) -> impl Iterator<Item = &AtomicU8> {
        assert!(self.holds(i, addr, n as u64), "global access outside its region");
        let r = self.regions[i];
        let off = (addr - r.base) as usize;
        let base = if shadow { r.init } else { r.ptr };
        // SAFETY: in bounds of a live allocation and of its shadow, both `len` bytes
        // (asserted above), which this view borrows exclusively for 'a; all concurrent
        // accesses go through this view and are atomic.
        (0..n).map(move |k| unsafe { AtomicU8::from_ptr(base.add(off + k)) })
    }

    /// The first byte of `[addr, addr + n)` in region `i` that nothing has written, if any.
    pub fn uninit(&self, i: usize, addr: u64, n: usize) -> Option<u64> {
        if self.regions[i].written {
            return None;
        }
        self.bytes(i, addr, n, true).position(|b| b.load(Ordering::Relaxed) == 0).map(|k| addr + k as u64)
    }

    /// Marks `[addr, addr + n)` of region `i` written.
    pub fn mark_init(&self, i: usize, addr: u64, n: usize) {
        if self.regions[i].written {
            return;
        }
        for b in self.bytes(i, addr, n, true) {
            b.store(1, Ordering::Relaxed);
        }
    }

    /// Reads `out.len()` bytes at `addr` of region `i`.
    pub fn read(&self, i: usize, addr: u64, out: &mut [u8]) {
        let n = out.len();
        for (o, b) in out.iter_mut().zip(self.bytes(i, addr, n, false)) {
            *o = b.load(Ordering::Relaxed);
        }
    }

    /// racecheck across the blocks of one launch, which nothing orders (the PTX memory
    /// model orders threads of different CTAs only through fences and atomics, which our
    /// kernels do not use for data): records an access of `n` bytes at `addr` of region
    /// `i` by block `block` (linear index) and fails when another block of this launch
    /// wrote bytes it reads, read bytes it writes, or wrote other values into bytes it
    /// writes. `data`: the bytes of a write (None for a read). A write that leaves the
    /// bytes as they were (many blocks raising found_inf to 1.0) changes nothing and is
    /// not a race. Per 2-byte granule with the bytes each side touched, so blocks writing
    /// neighbouring f16 elements do not conflict. Keeps one writer and one reader (or
    /// "several") per granule: a race is never invented, but one can be missed after a
    /// granule was shared without conflict, and the block named is the word's first writer
    /// or reader, which for a word whose bytes several blocks wrote apart need not be the
    /// one that wrote the bytes in question.
    ///
    /// `nc`: a read through `ld.global.nc`, which the PTX ISA allows only for data that
    /// stay read-only for the kernel's whole run: such a read of bytes the launch wrote
    /// (any block, the reader's own included), or a later write of bytes so read, fails.
    pub fn race(
        &self,
        i: usize,
        addr: u64,
        n: usize,
        block: u64,
        data: Option<&[u8]>,
        nc: bool,
    ) -> Result<(), GlobalRace> {
        let r = self.regions[i];
        if self.gen == 0 || r.race.is_null() || block + 1 >= MANY {
            return Ok(());
        }
        let me = block + 1;
        let off = (addr - r.base) as usize;
        // Whether a write leaves bytes [k, k + len) of the access as they are; asked only
        // when the write would conflict, so the common write reads nothing back.
        let unchanged = |k: usize, len: usize| {
            let mut cur = [0u8; 2];
            self.read(i, addr + k as u64, &mut cur[..len]);
            data.is_some_and(|d| cur[..len] == d[k..k + len])
        };
        // The state a whole granule takes when this launch had not touched it (the common
        // case: most bytes are touched by one block once or a few times), and the states
        // that need no change: written in one compare-and-swap, or nothing, without the
        // general path's decoding.
        let fresh = match data {
            None => RaceState { nc: nc as u64, writer: 0, wmask: 0, reader: me, rmask: 3 },
            Some(_) => RaceState { nc: 0, writer: me, wmask: 3, reader: 0, rmask: 0 },
        }
        .encode(self.gen);
        // A whole granule whose state `old` is already `fresh`, or is of an earlier launch
        // and becomes `fresh` in one compare-and-swap: nothing more to check.
        let settled = |word: &AtomicU64, old: u64| {
            old == fresh
                || (old >> 49 != self.gen
                    && word.compare_exchange(old, fresh, Ordering::Relaxed, Ordering::Relaxed).is_ok())
        };
        let mut k = 0;
        // The whole granules of an aligned access (nearly every access of our kernels is
        // aligned to 2 bytes or more) in a tight loop while they are settled, without the
        // general loop's arithmetic.
        if off % 2 == 0 {
            let g0 = off / 2;
            while k + 2 <= n {
                // SAFETY: as below: granule g0 + k/2 lies inside the access, which the
                // caller bounds-checked, so inside this region's shadow.
                let word = unsafe { &*r.race.add(g0 + k / 2) };
                if !settled(word, word.load(Ordering::Relaxed)) {
                    break;
                }
                k += 2;
            }
        }
        while k < n {
            let g = (off + k) / 2;
            let first = off + k - 2 * g;
            let last = (2 - first).min(n - k);
            let mask = ((1u64 << last) - 1) << first;
            let at = r.base + (2 * g + first) as u64;
            // SAFETY: g < len.div_ceil(2), the granules of this region's shadow, which the
            // view borrows for the launch (the access was bounds-checked by the caller).
            let word = unsafe { &*r.race.add(g) };
            let mut old = word.load(Ordering::Relaxed);
            if mask == 3 {
                if settled(word, old) {
                    k += last;
                    continue;
                }
                old = word.load(Ordering::Relaxed);
            }
            loop {
                let mut st = RaceState::decode(old, self.gen);
                let other_wrote = st.writer != 0 && st.writer != me && st.wmask & mask != 0;
                let other_read = st.reader != 0 && st.reader != me && st.rmask & mask != 0;
                match data {
                    None => {
                        if nc && st.writer != 0 && st.wmask & mask != 0 {
                            let other = Some(st.writer - 1);
                            return Err(GlobalRace { kind: RaceKind::NcReadAfterWrite, addr: at, other });
                        }
                        st.nc |= nc as u64;
                        if other_wrote {
                            let other = Some(st.writer - 1);
                            return Err(GlobalRace { kind: RaceKind::ReadAfterWrite, addr: at, other });
                        }
                        st.reader = if st.reader == 0 || st.reader == me { me } else { MANY };
                        st.rmask |= mask;
                    }
                    Some(_) if (other_read || other_wrote) && unchanged(k, last) => break,
                    Some(_) => {
                        let reader = (st.reader != MANY).then(|| st.reader - 1);
                        if st.nc != 0 && st.rmask & mask != 0 && !unchanged(k, last) {
                            return Err(GlobalRace { kind: RaceKind::NcWriteAfterRead, addr: at, other: reader });
                        }
                        if other_read {
                            return Err(GlobalRace { kind: RaceKind::WriteAfterRead, addr: at, other: reader });
                        }
                        if other_wrote {
                            let other = Some(st.writer - 1);
                            return Err(GlobalRace { kind: RaceKind::WriteAfterWrite, addr: at, other });
                        }
                        if st.writer == 0 {
                            st.writer = me;
                        }
                        st.wmask |= mask;
                    }
                }
                let new = st.encode(self.gen);
                if new == old {
                    break; // already recorded (the same block touching its bytes again)
                }
                match word.compare_exchange_weak(old, new, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => break,
                    Err(now) => old = now,
                }
            }
            k += last;
        }
        Ok(())
    }

    /// Writes `data` at `addr` of region `i`.
    pub fn write(&self, i: usize, addr: u64, data: &[u8]) {
        for (d, b) in data.iter().zip(self.bytes(i, addr, data.len(), false)) {
            b.store(*d, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allocation_counts_as_written_only_once_every_byte_is() {
        let mut mem = Memory::new();
        let p = mem.alloc(64);
        // All but the last byte from the host: initcheck still sees the last one.
        mem.slice_mut(p, 63).unwrap().fill(7);
        let v = mem.view();
        assert_eq!(v.uninit(0, p + 60, 4), Some(p + 63));
        assert_eq!(v.uninit(0, p, 63), None);
        // A kernel's store of it, in this launch: the next launch's view sees the
        // allocation written whole and checks nothing more.
        v.mark_init(0, p + 63, 1);
        assert_eq!(v.uninit(0, p + 60, 4), None);
        drop(v);
        assert!(!mem.allocs[&p].written);
        let v = mem.view();
        assert!(v.regions[0].written);
        assert_eq!(v.uninit(0, p, 64), None);
        drop(v);
        // A new allocation starts unwritten, and an empty one has nothing to write.
        let q = mem.alloc(16);
        mem.alloc(0);
        let v = mem.view();
        assert_eq!(v.uninit(1, q, 16), Some(q));
        assert!(!v.regions[1].written && v.regions[2].written);
    }
}
