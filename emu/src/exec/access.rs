//! Loads, stores and cp.async, with the memory check on every access: a global access
//! must lie inside one live allocation and be aligned to its full size (a `.v4.f32`
//! access to 16 bytes), a shared access inside the block's shared memory and aligned
//! the same way, a parameter read inside the parameter buffer. A violation is a fault
//! that ends the launch, reported in compute-sanitizer's terms.

use super::{reg, Block, Fault, Lane, Thread, WARP};
use crate::driver::allocations::{GlobalRace, RaceKind};
use crate::exec::FaultKind;
use crate::ir::{Inst, Space, Ty};

/// One cp.async copy, issued but not yet complete.
#[derive(Clone, Copy, Debug)]
pub struct AsyncCopy {
    pub dst: u64,
    pub src: u64,
    pub size: u32,
    pub src_size: u32,
    pub line: u32,
    /// The region of the launch's global view holding the source (checked at the issue,
    /// and the view does not change within a launch).
    pub region: u32,
}

fn space_name(s: Space) -> &'static str {
    match s {
        Space::Global => "__global__",
        Space::Shared => "__shared__",
        Space::Param => "parameter",
    }
}

fn fault(kind: FaultKind, space: Space, write: bool, size: u64, addr: u64, why: &str) -> Fault {
    let what = if write { "write" } else { "read" };
    let msg = match kind {
        FaultKind::MisalignedAddress => {
            format!("Invalid {} {what} of size {size} bytes: address {addr:#x} is misaligned", space_name(space))
        }
        _ => format!("Invalid {} {what} of size {size} bytes: address {addr:#x} {why}", space_name(space)),
    };
    Fault { kind, msg }
}

/// A checked location: where `[addr, addr + size)` of a state space lives.
#[derive(Clone, Copy)]
pub enum Loc {
    /// Region index of the global view, and the address.
    Global(usize, u64),
    Shared(usize),
    Param(usize),
}

/// Checks an access of `size` bytes at `addr` in `space` and says where it lives.
pub fn locate(blk: &Block, t: &mut Thread, space: Space, addr: u64, size: u64, write: bool) -> Result<Loc, Fault> {
    let align = if size.is_power_of_two() { size } else { 1 };
    locate_span(blk, t, space, addr, size, align, write)
}

/// `addr % align != 0` without a 64-bit division (tens of cycles each, once per lane of
/// every access) for the power-of-two alignments that every access has.
#[inline(always)]
pub(crate) fn misaligned(addr: u64, align: u64) -> bool {
    if align.is_power_of_two() {
        addr & (align - 1) != 0
    } else {
        addr % align != 0
    }
}

/// As [`locate`] for a span of `size` bytes whose elements need only `align`: one check
/// for a run of elements that a single instruction touches together (a wmma row).
pub fn locate_span(
    blk: &Block,
    t: &mut Thread,
    space: Space,
    addr: u64,
    size: u64,
    align: u64,
    write: bool,
) -> Result<Loc, Fault> {
    if misaligned(addr, align) {
        return Err(fault(FaultKind::MisalignedAddress, space, write, size, addr, ""));
    }
    let inside = |len: usize| addr.checked_add(size).is_some_and(|e| e <= len as u64);
    match space {
        Space::Global => {
            let g = blk.global;
            let hit = if g.holds(t.region, addr, size) { Some(t.region) } else { g.region(addr, size) };
            let Some(i) = hit else {
                let why = "is out of bounds (not inside any live allocation)";
                return Err(fault(FaultKind::IllegalAddress, space, write, size, addr, why));
            };
            t.region = i;
            Ok(Loc::Global(i, addr))
        }
        Space::Shared => {
            if !inside(blk.shared.len()) {
                let why = format!("is out of bounds (the block has {} bytes of shared memory)", blk.shared.len());
                return Err(fault(FaultKind::IllegalAddress, space, write, size, addr, &why));
            }
            Ok(Loc::Shared(addr as usize))
        }
        Space::Param => {
            if write {
                let why = "is in the read-only kernel parameter space";
                return Err(fault(FaultKind::IllegalAddress, space, write, size, addr, why));
            }
            if !inside(blk.params.len()) {
                let why = format!("is past the {}-byte parameter buffer", blk.params.len());
                return Err(fault(FaultKind::IllegalAddress, space, write, size, addr, &why));
            }
            Ok(Loc::Param(addr as usize))
        }
    }
}

/// Who makes an access, for the sanitizers: the thread (linear index in the block) and
/// the PTX line.
#[derive(Clone, Copy)]
pub struct Who {
    pub thread: u32,
    pub line: u32,
    /// A read through `ld.global.nc` (for the global racecheck).
    pub nc: bool,
}

fn finding(f: crate::check::Finding) -> Fault {
    Fault { kind: FaultKind::Sanitizer, msg: f.msg }
}

/// The global racecheck's finding, in racecheck's terms (the executor adds this thread and
/// block).
fn global_race(blk: &Block, r: GlobalRace) -> Fault {
    let name = |b: u64| {
        let [gx, gy, _] = blk.grid.map(|g| g as u64);
        format!("block ({},{},{})", b % gx, (b / gx) % gy, b / (gx * gy))
    };
    let other = r.other.map_or_else(|| "several other blocks".to_string(), name);
    let me = name(blk.block);
    let unordered = "in the same launch, with nothing ordering them (blocks of one launch are not ordered)";
    let nc = "the non-coherent path is for data read-only during the kernel (PTX ISA, ld)";
    let what = match r.kind {
        RaceKind::ReadAfterWrite => format!("{other} wrote it and {me} reads it {unordered}"),
        RaceKind::WriteAfterRead => format!("{other} read it and {me} writes it {unordered}"),
        RaceKind::WriteAfterWrite => format!("{other} wrote it and {me} writes another value {unordered}"),
        RaceKind::NcReadAfterWrite => {
            format!("{me} reads it with ld.global.nc after {other} wrote it in the same launch; {nc} and may return the old bytes")
        }
        RaceKind::NcWriteAfterRead => {
            format!("{me} writes it after {other} read it with ld.global.nc in the same launch; {nc}")
        }
    };
    Fault {
        kind: FaultKind::Sanitizer,
        msg: format!("racecheck: {} hazard on __global__ address {:#x}: {what}", r.kind.name(), r.addr),
    }
}

/// initcheck's finding for a global read of `n` bytes at `addr` whose byte `a` nothing
/// wrote.
#[cold]
fn uninit_global(n: usize, addr: u64, a: u64) -> Fault {
    Fault {
        kind: FaultKind::Sanitizer,
        msg: format!(
            "initcheck: Uninitialized __global__ memory read of size {n} bytes at address {addr:#x}: byte {a:#x} was never written since its allocation"
        ),
    }
}

/// Reads `out.len()` bytes at a checked location; initcheck and racecheck look at it
/// first.
pub fn read(blk: &mut Block, loc: Loc, out: &mut [u8], who: Who) -> Result<(), Fault> {
    let checks = blk.checks;
    match loc {
        Loc::Global(i, addr) => {
            global_read_checks(blk, i, addr, out.len(), who)?;
            blk.global.read(i, addr, out);
        }
        Loc::Shared(o) => {
            if checks.race || checks.init {
                blk.shadow.read(checks, who.thread, who.line, o, out.len()).map_err(finding)?;
            }
            out.copy_from_slice(&blk.shared[o..o + out.len()]);
        }
        Loc::Param(o) => out.copy_from_slice(&blk.params[o..o + out.len()]),
    }
    Ok(())
}

/// What a read of `n` bytes at `addr` of region `i` (checked to hold them) does besides
/// copying them: initcheck, the global racecheck, and the launch's footprint.
fn global_read_checks(blk: &mut Block, i: usize, addr: u64, n: usize, who: Who) -> Result<(), Fault> {
    let checks = blk.checks;
    if checks.init {
        if let Some(a) = blk.global.uninit(i, addr, n) {
            return Err(uninit_global(n, addr, a));
        }
    }
    if checks.race {
        blk.global.race(i, addr, n, blk.block, None, who.nc).map_err(|r| global_race(blk, r))?;
    }
    blk.footprint.note(addr, n, false);
    Ok(())
}

/// Writes `data` at a checked location (never a parameter: `locate` refuses writes
/// there); racecheck looks at it first, initcheck records it.
pub fn write(blk: &mut Block, loc: Loc, data: &[u8], who: Who) -> Result<(), Fault> {
    let checks = blk.checks;
    match loc {
        Loc::Global(i, addr) => {
            if checks.race {
                blk.global.race(i, addr, data.len(), blk.block, Some(data), false).map_err(|r| global_race(blk, r))?;
            }
            blk.global.write(i, addr, data);
            blk.footprint.note(addr, data.len(), true);
            if checks.init {
                blk.global.mark_init(i, addr, data.len());
            }
        }
        Loc::Shared(o) => {
            if checks.race || checks.init {
                blk.shadow.write(checks, who.thread, who.line, o, data.len()).map_err(finding)?;
            }
            blk.shared[o..o + data.len()].copy_from_slice(data);
        }
        Loc::Param(_) => unreachable!("parameter writes are refused by locate"),
    }
    Ok(())
}

/// Element `k` of `es` (1, 2, 4 or 8) bytes in `bytes`, sign-extended for a signed type.
/// A load of exactly the element's size: a copy of a length known only at run time is a
/// call to memcpy, and a wider load of bytes just stored narrower stalls the host's store
/// forwarding.
#[inline(always)]
fn read_elem(bytes: &[u8], k: usize, es: usize, ty: Ty) -> u64 {
    let b = &bytes[k * es..k * es + es];
    let v = match es {
        1 => b[0] as u64,
        2 => u16::from_le_bytes([b[0], b[1]]) as u64,
        4 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64,
        _ => u64::from_le_bytes(b.try_into().expect("8-byte element")),
    };
    if ty.is_signed() {
        super::int::sx(v, ty.bits()) as u64
    } else {
        v
    }
}

/// The bytes of one ld or st: at most a .v4 of 8-byte elements.
const ACCESS_BUF: usize = 32;

/// Writes the bytes a store of `i` (elements of `es` bytes) takes from lane `l` of the
/// register file `file` (lane-minor, a row of 32 per register) into `out`, element after
/// element, each as a store of its own size (as [`read_elem`] reads them).
#[inline(always)]
fn store_into(i: &Inst, es: usize, file: &[u64], l: usize, out: &mut [u8]) {
    for (k, &v) in i.v.iter().enumerate() {
        let x = reg(file, v, l);
        let o = &mut out[k * es..k * es + es];
        match es {
            1 => o[0] = x as u8,
            2 => o.copy_from_slice(&(x as u16).to_le_bytes()),
            4 => o.copy_from_slice(&(x as u32).to_le_bytes()),
            _ => o.copy_from_slice(&x.to_le_bytes()),
        }
    }
}

/// [`store_into`] a buffer: its first `es * i.v.len()` bytes are the data.
#[inline(always)]
fn store_bytes(i: &Inst, es: usize, file: &[u64], l: usize) -> [u8; ACCESS_BUF] {
    let mut buf = [0u8; ACCESS_BUF];
    store_into(i, es, file, l, &mut buf);
    buf
}

/// A load of `i` (elements of `es` bytes, from `bytes`) into its destination registers
/// in lane `l` of `file`, each element sign-extended for a signed type.
#[inline(always)]
fn load_into(i: &Inst, es: usize, bytes: &[u8], file: &mut [u64], l: usize) {
    for (k, &d) in i.v.iter().enumerate() {
        file[d as usize * WARP + l] = read_elem(bytes, k, es, i.ty);
    }
}

/// Counts one lane's access for the cost model, as part of the warp instruction its pc
/// and its count of executions of that pc name (crate::cost): a lane's earlier paths,
/// which in a divergent loop or branch ran other memory instructions than its warp's
/// other lanes, do not move it to another warp instruction.
fn cost(blk: &mut Block, t: &mut Thread, space: Space, addr: u64, n: u64, write: bool) {
    if let Some(c) = &mut blk.cost {
        let key = (t.linear / 32, t.pc, c.run_of(t.linear, t.pc));
        match space {
            Space::Global => c.global(key, addr, n, write),
            Space::Shared => c.shared(key, addr, n),
            Space::Param => {}
        }
    }
}

pub fn ld(i: &Inst, space: Space, blk: &mut Block, t: &mut Thread, r: &mut Lane) -> Result<(), Fault> {
    let es = i.ty.size() as usize;
    let n = es * i.v.len();
    let addr = r[i.a as usize].wrapping_add(i.off as u64);
    let loc = locate(blk, t, space, addr, n as u64, false)?;
    cost(blk, t, space, addr, n as u64, false);
    let mut buf = [0u8; ACCESS_BUF];
    let nc = i.flags & crate::ir::NC != 0;
    read(blk, loc, &mut buf[..n], Who { thread: t.linear, line: i.line, nc })?;
    load_into(i, es, &buf, r.file, r.lane);
    Ok(())
}

/// `ld.param` for a whole converged warp whose lanes all load from one address (the
/// usual case: a parameter at a fixed offset): one bounds check and one read, the value
/// given to every lane. False, having done nothing, when it does not apply (a guard, lanes
/// at different addresses, an access that would fault: the per-lane path then runs it
/// and reports any fault for the right lane).
pub fn ld_param_warp(i: &Inst, blk: &mut Block, lanes: &mut [Thread], file: &mut [u64]) -> bool {
    if i.guard != crate::ir::NONE || i.v.is_empty() {
        return false;
    }
    let base = reg(file, i.a, 0);
    if (1..lanes.len()).any(|l| reg(file, i.a, l) != base) {
        return false;
    }
    let es = i.ty.size() as usize;
    let n = es * i.v.len();
    let addr = base.wrapping_add(i.off as u64);
    let Ok(Loc::Param(o)) = locate(blk, &mut lanes[0], Space::Param, addr, n as u64, false) else { return false };
    let mut buf = [0u8; ACCESS_BUF];
    buf[..n].copy_from_slice(&blk.params[o..o + n]);
    for (k, &d) in i.v.iter().enumerate() {
        let v = read_elem(&buf, k, es, i.ty);
        file[d as usize * WARP..][..lanes.len()].fill(v);
    }
    true
}

/// An `ld` or `st` of global or shared memory by the lanes of `group` (bit l: lane l) of
/// a warp, all at this instruction: the per-lane path's work, lane after lane in
/// ascending order as it runs them, with what is the same for every lane done once and
/// without a dispatch per lane. The first pass checks every executing lane's address
/// (alignment, and the allocation or the shared memory holding it) and changes nothing:
/// when one fails, Ok(false), and the per-lane path then runs the instruction and reports
/// the fault for the right lane after the lanes before it made their accesses. The second
/// pass makes the accesses through the sanitizers ([`read`], [`write`]); a finding is
/// returned with its lane. Not with the cost model on, which counts each lane's access.
pub fn ld_st_warp(
    i: &Inst,
    space: Space,
    write_op: bool,
    blk: &mut Block,
    lanes: &mut [Thread],
    group: u32,
    file: &mut [u64],
) -> Result<bool, (usize, Fault)> {
    if blk.cost.is_some() || space == Space::Param {
        return Ok(false);
    }
    let es = i.ty.size() as usize;
    let n = es * i.v.len();
    if n == 0 || n > ACCESS_BUF {
        return Ok(false);
    }
    let align = if n.is_power_of_two() { n as u64 } else { 1 };
    // Each executing lane's address, and for global memory its region (not a [Loc; 32]:
    // zeroing that is a call to memset per instruction).
    let mut addrs = [0u64; WARP];
    let mut regions = [0u32; WARP];
    let mut active = 0u32;
    let mut region = lanes[group.trailing_zeros() as usize].region;
    for l in super::lanes_in(super::executing(file, group, i.guard, i.guard_neg)) {
        let addr = reg(file, i.a, l).wrapping_add(i.off as u64);
        if misaligned(addr, align) {
            return Ok(false);
        }
        if space == Space::Global {
            let g = blk.global;
            if !g.holds(region, addr, n as u64) {
                match g.region(addr, n as u64) {
                    Some(r) => region = r,
                    None => return Ok(false),
                }
            }
            regions[l] = region as u32;
        } else if addr.checked_add(n as u64).is_none_or(|e| e > blk.shared.len() as u64) {
            return Ok(false);
        }
        addrs[l] = addr;
        active |= 1 << l;
    }
    let nc = i.flags & crate::ir::NC != 0;
    if space == Space::Shared {
        shared_warp(i, es, n, write_op, blk, lanes, active, &addrs, file)?;
        return Ok(true);
    }
    let mut m = active;
    while m != 0 {
        // The run of lanes from the lowest one left whose global ranges follow one another
        // in one allocation: one span for all of them when there are several.
        let mut run = m & m.wrapping_neg();
        let mut last = run.trailing_zeros() as usize;
        let mut rest = m & !run;
        while rest != 0 {
            let l = rest.trailing_zeros() as usize;
            if addrs[l] != addrs[last] + n as u64 || regions[l] != regions[last] {
                break;
            }
            run |= 1 << l;
            rest &= rest - 1;
            last = l;
        }
        m &= !run;
        if run.count_ones() > 1 && coalesced_global(i, write_op, nc, blk, lanes, run, &addrs, &regions, file)? {
            continue;
        }
        for l in super::lanes_in(run) {
            // Lane by lane.
            let who = Who { thread: lanes[l].linear, line: i.line, nc: nc && !write_op };
            lanes[l].region = regions[l] as usize;
            let loc = Loc::Global(regions[l] as usize, addrs[l]);
            if write_op {
                write(blk, loc, &store_bytes(i, es, file, l)[..n], who).map_err(|f| (l, f))?;
            } else {
                let mut buf = [0u8; ACCESS_BUF];
                read(blk, loc, &mut buf[..n], who).map_err(|f| (l, f))?;
                load_into(i, es, &buf, file, l);
            }
        }
    }
    Ok(true)
}

/// The shared-memory access of [`ld_st_warp`] for its `active` lanes (at `addrs`, every
/// one checked to lie in the block's shared memory): the shadow for every lane in one call,
/// then the bytes. On a finding the lanes before the one it names still make their
/// accesses, as lane after lane.
#[allow(clippy::too_many_arguments)] // the instruction, its lanes and their addresses
fn shared_warp(
    i: &Inst,
    es: usize,
    n: usize,
    write_op: bool,
    blk: &mut Block,
    lanes: &[Thread],
    active: u32,
    addrs: &[u64; WARP],
    file: &mut [u64],
) -> Result<(), (usize, Fault)> {
    let checks = blk.checks;
    let mut done = active;
    let mut found = None;
    if checks.race || checks.init {
        let first = lanes[0].linear;
        if let Err((l, f)) = blk.shadow.lanes(checks, write_op, first, i.line, active, addrs, n) {
            done &= (1u32 << l) - 1;
            found = Some((l, finding(f)));
        }
    }
    for l in super::lanes_in(done) {
        let o = addrs[l] as usize;
        if write_op {
            store_into(i, es, file, l, &mut blk.shared[o..o + n]);
        } else {
            load_into(i, es, &blk.shared[o..o + n], file, l);
        }
    }
    found.map_or(Ok(()), Err)
}

/// The global access of [`ld_st_warp`] for a run of lanes (`active`, several) whose ranges
/// follow one another in lane order in one allocation (a coalesced access: lane l at
/// base + l n): initcheck, racecheck, the copy and the footprint once over the whole span,
/// with the same outcome as lane after lane. racecheck's state is per 2-byte granule and
/// the lanes' ranges are disjoint, so the span's granules are checked and recorded as the
/// lanes' would be, and a hazard is the first conflicting granule's, reported for the lane
/// that holds it. A load checks initcheck first, which changes nothing: when a byte is
/// unwritten, false (having done nothing), and the run's lanes go one by one, so that a
/// hazard in an earlier lane is the one reported, as it would be.
#[allow(clippy::too_many_arguments)] // ld_st_warp's state, handed on
fn coalesced_global(
    i: &Inst,
    write_op: bool,
    nc: bool,
    blk: &mut Block,
    lanes: &mut [Thread],
    active: u32,
    addrs: &[u64; WARP],
    regions: &[u32; WARP],
    file: &mut [u64],
) -> Result<bool, (usize, Fault)> {
    let es = i.ty.size() as usize;
    let n = es * i.v.len();
    let first = active.trailing_zeros() as usize;
    let (base, region) = (addrs[first], regions[first]);
    let count = active.count_ones() as usize;
    // The lane holding byte `a` of the span: the (a - base) / n-th executing lane.
    let lane_of = |a: u64| {
        let mut m = active;
        for _ in 0..(a - base) / n as u64 {
            m &= m - 1;
        }
        m.trailing_zeros() as usize
    };
    let total = count * n;
    let region = region as usize;
    let checks = blk.checks;
    let mut span = [0u8; WARP * ACCESS_BUF];
    if write_op {
        for (k, l) in super::lanes_in(active).enumerate() {
            store_into(i, es, file, l, &mut span[k * n..k * n + n]);
        }
        let data = &span[..total];
        if checks.race {
            blk.global
                .race(region, base, total, blk.block, Some(data), false)
                .map_err(|r| (lane_of(r.addr), global_race(blk, r)))?;
        }
        blk.global.write(region, base, data);
        blk.footprint.note(base, total, true);
        if checks.init {
            blk.global.mark_init(region, base, total);
        }
    } else {
        if checks.init && blk.global.uninit(region, base, total).is_some() {
            return Ok(false);
        }
        if checks.race {
            blk.global
                .race(region, base, total, blk.block, None, nc)
                .map_err(|r| (lane_of(r.addr), global_race(blk, r)))?;
        }
        blk.global.read(region, base, &mut span[..total]);
        blk.footprint.note(base, total, false);
        for (k, l) in super::lanes_in(active).enumerate() {
            load_into(i, es, &span[k * n..k * n + n], file, l);
        }
    }
    for l in super::lanes_in(active) {
        lanes[l].region = region;
    }
    Ok(true)
}

pub fn st(i: &Inst, space: Space, blk: &mut Block, t: &mut Thread, r: &mut Lane) -> Result<(), Fault> {
    let es = i.ty.size() as usize;
    let n = es * i.v.len();
    let addr = r[i.a as usize].wrapping_add(i.off as u64);
    let buf = store_bytes(i, es, r.file, r.lane);
    let loc = locate(blk, t, space, addr, n as u64, true)?;
    cost(blk, t, space, addr, n as u64, true);
    write(blk, loc, &buf[..n], Who { thread: t.linear, line: i.line, nc: false })?;
    Ok(())
}

/// Issues a cp.async: both ranges are checked now (the launch fails at the issuing
/// instruction, as compute-sanitizer reports it); the copy itself happens when a
/// wait_group completes its group.
pub fn cp_async(i: &Inst, blk: &mut Block, t: &mut Thread, r: &mut Lane) -> Result<(), Fault> {
    let size = i.off as u32;
    let dst = r[i.d as usize].wrapping_add(i.v[0] as i32 as i64 as u64);
    let src = r[i.a as usize].wrapping_add(i.v[1] as i32 as i64 as u64);
    let src_size = r[i.b as usize] as u32;
    if src_size > size {
        return Err(Fault {
            kind: FaultKind::IllegalInstruction,
            msg: format!("cp.async with src-size {src_size} larger than cp-size {size}"),
        });
    }
    let Loc::Shared(d) = locate(blk, t, Space::Shared, dst, size as u64, true)? else { unreachable!() };
    if blk.checks.race {
        blk.shadow.async_issue(blk.checks, t.linear, i.line, d, size as usize).map_err(finding)?;
    }
    if src_size > 0 {
        // The source must be aligned to cp-size even when only src-size bytes are read.
        if misaligned(src, size as u64) {
            return Err(fault(FaultKind::MisalignedAddress, Space::Global, false, size as u64, src, ""));
        }
        locate(blk, t, Space::Global, src, src_size as u64, false)?;
        cost(blk, t, Space::Global, src, src_size as u64, false);
    }
    cost(blk, t, Space::Shared, dst, size as u64, true);
    t.cp_issued.push_back(AsyncCopy { dst, src, size, src_size, line: i.line, region: t.region as u32 });
    t.cp_pending += 1;
    Ok(())
}

/// `cp.async` by the lanes of `group` of a warp, all at this instruction, as
/// [`ld_st_warp`] does loads and stores: every executing lane's ranges checked first (Ok
/// false, having done nothing, when one fails: the per-lane path then reports the fault for
/// the right lane), then each lane's copy recorded with racecheck's view of its
/// destination, in lane order. Not with the cost model on.
pub fn cp_async_warp(
    i: &Inst,
    blk: &mut Block,
    lanes: &mut [Thread],
    group: u32,
    file: &mut [u64],
) -> Result<bool, (usize, Fault)> {
    if blk.cost.is_some() {
        return Ok(false);
    }
    let size = i.off as u32;
    if !size.is_power_of_two() {
        return Ok(false);
    }
    let (dst_off, src_off) = (i.v[0] as i32 as i64 as u64, i.v[1] as i32 as i64 as u64);
    let mut copies = [AsyncCopy { dst: 0, src: 0, size, src_size: 0, line: i.line, region: 0 }; WARP];
    let mut regions = [0u32; WARP];
    let mut region = lanes[group.trailing_zeros() as usize].region;
    let mut active = 0u32;
    for l in super::lanes_in(super::executing(file, group, i.guard, i.guard_neg)) {
        let dst = reg(file, i.d, l).wrapping_add(dst_off);
        let src = reg(file, i.a, l).wrapping_add(src_off);
        let src_size = reg(file, i.b, l) as u32;
        if src_size > size
            || misaligned(dst, size as u64)
            || dst.checked_add(size as u64).is_none_or(|e| e > blk.shared.len() as u64)
        {
            return Ok(false);
        }
        if src_size > 0 {
            let g = blk.global;
            if misaligned(src, size as u64) {
                return Ok(false);
            }
            if !g.holds(region, src, src_size as u64) {
                match g.region(src, src_size as u64) {
                    Some(r) => region = r,
                    None => return Ok(false),
                }
            }
            regions[l] = region as u32;
        }
        copies[l] = AsyncCopy { dst, src, size, src_size, line: i.line, region: regions[l] };
        active |= 1 << l;
    }
    for l in super::lanes_in(active) {
        let c = copies[l];
        let t = &mut lanes[l];
        if blk.checks.race {
            blk.shadow
                .async_issue(blk.checks, t.linear, i.line, c.dst as usize, size as usize)
                .map_err(|f| (l, finding(f)))?;
        }
        if c.src_size > 0 {
            t.region = regions[l] as usize;
        }
        t.cp_issued.push_back(c);
        t.cp_pending += 1;
    }
    Ok(true)
}

/// `cp.async.commit_group`: the copies issued since the last commit become a group (an
/// empty one when there are none, as the ISA has it).
pub fn cp_commit(t: &mut Thread) {
    t.cp_groups.push_back(std::mem::take(&mut t.cp_pending));
}

/// Completes committed groups until at most `keep` are outstanding.
pub fn cp_wait(keep: usize, blk: &mut Block, t: &mut Thread) -> Result<(), Fault> {
    while t.cp_groups.len() > keep {
        let n = t.cp_groups.pop_front().unwrap_or(0);
        for _ in 0..n {
            let Some(c) = t.cp_issued.pop_front() else { break };
            complete(&c, blk, t)?;
        }
    }
    Ok(())
}

/// Every copy the thread issued, committed or not (at thread exit).
pub fn cp_drain(blk: &mut Block, t: &mut Thread) -> Result<(), Fault> {
    cp_commit(t);
    cp_wait(0, blk, t)
}

fn complete(c: &AsyncCopy, blk: &mut Block, t: &mut Thread) -> Result<(), Fault> {
    let issued = |mut f: Fault| {
        f.msg = format!("{} (completing the cp.async issued at PTX line {})", f.msg, c.line);
        f
    };
    let who = Who { thread: t.linear, line: c.line, nc: false };
    // Both ranges were checked at the issue, against the launch's view of global memory
    // and the block's shared memory, neither of which changes before the copy completes.
    let (d, n, src_n) = (c.dst as usize, c.size as usize, c.src_size as usize);
    if src_n > 0 {
        global_read_checks(blk, c.region as usize, c.src, src_n, who).map_err(issued)?;
    }
    if blk.checks.race || blk.checks.init {
        blk.shadow.async_complete(blk.checks, who.thread, who.line, d, n).map_err(finding).map_err(issued)?;
    }
    // The source bytes straight into shared memory (no buffer between, whose bytes stored
    // one by one and loaded as one 16-byte word would stall the host's store forwarding),
    // zeros past src-size.
    let dst = &mut blk.shared[d..d + n];
    if src_n > 0 {
        blk.global.read(c.region as usize, c.src, &mut dst[..src_n]);
    }
    dst[src_n..].fill(0);
    Ok(())
}
