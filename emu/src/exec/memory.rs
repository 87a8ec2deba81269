//! Loads, stores and cp.async, with the memory check on every access: a global access
//! must lie inside one live allocation and be aligned to its full size (a `.v4.f32`
//! access to 16 bytes), a shared access inside the block's shared memory and aligned
//! the same way, a parameter read inside the parameter buffer. A violation is a fault
//! that ends the launch, reported in compute-sanitizer's terms.

use super::{Block, Fault, Thread};
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

/// The bytes `[addr, addr + size)` of `space`, checked.
pub fn bytes<'b>(
    blk: &'b mut Block,
    t: &mut Thread,
    space: Space,
    addr: u64,
    size: u64,
    write: bool,
) -> Result<&'b mut [u8], Fault> {
    let align = if size.is_power_of_two() { size } else { 1 };
    if addr % align != 0 {
        return Err(fault(FaultKind::MisalignedAddress, space, write, size, addr, ""));
    }
    match space {
        Space::Global => {
            let g = &mut blk.global;
            let hit = match g.regions.get(t.region) {
                Some((b, d)) if addr >= *b && addr - b + size <= d.len() as u64 => Some(t.region),
                _ => g.region(addr, size),
            };
            let Some(i) = hit else {
                return Err(fault(
                    FaultKind::IllegalAddress,
                    space,
                    write,
                    size,
                    addr,
                    "is out of bounds (not inside any live allocation)",
                ));
            };
            t.region = i;
            let (b, d) = &mut g.regions[i];
            let off = (addr - *b) as usize;
            Ok(&mut d[off..off + size as usize])
        }
        Space::Shared => {
            let len = blk.shared.len() as u64;
            if addr.checked_add(size).is_none_or(|e| e > len) {
                return Err(fault(
                    FaultKind::IllegalAddress,
                    space,
                    write,
                    size,
                    addr,
                    &format!("is out of bounds (the block has {len} bytes of shared memory)"),
                ));
            }
            Ok(&mut blk.shared[addr as usize..(addr + size) as usize])
        }
        Space::Param => {
            if write {
                return Err(fault(
                    FaultKind::IllegalAddress,
                    space,
                    write,
                    size,
                    addr,
                    "is in the read-only kernel parameter space",
                ));
            }
            let len = blk.params.len() as u64;
            if addr.checked_add(size).is_none_or(|e| e > len) {
                return Err(fault(
                    FaultKind::IllegalAddress,
                    space,
                    write,
                    size,
                    addr,
                    &format!("is past the {len}-byte parameter buffer"),
                ));
            }
            Ok(&mut blk.params[addr as usize..(addr + size) as usize])
        }
    }
}

fn read_elem(b: &[u8], ty: Ty) -> u64 {
    let mut buf = [0u8; 8];
    buf[..b.len()].copy_from_slice(b);
    let v = u64::from_le_bytes(buf);
    if ty.is_signed() {
        super::int::sx(v, ty.bits()) as u64
    } else {
        v
    }
}

pub fn ld(i: &Inst, space: Space, blk: &mut Block, t: &mut Thread) -> Result<(), Fault> {
    let es = i.ty.size() as u64;
    let addr = t.regs[i.a as usize].wrapping_add(i.off as u64);
    let b = bytes(blk, t, space, addr, es * i.v.len() as u64, false)?;
    for (k, &d) in i.v.iter().enumerate() {
        t.regs[d as usize] = read_elem(&b[k * es as usize..(k + 1) * es as usize], i.ty);
    }
    Ok(())
}

pub fn st(i: &Inst, space: Space, blk: &mut Block, t: &mut Thread) -> Result<(), Fault> {
    let es = i.ty.size() as usize;
    let addr = t.regs[i.a as usize].wrapping_add(i.off as u64);
    let vals: [u64; 4] = std::array::from_fn(|k| i.v.get(k).map_or(0, |&r| t.regs[r as usize]));
    let b = bytes(blk, t, space, addr, (es * i.v.len()) as u64, true)?;
    for k in 0..i.v.len() {
        b[k * es..(k + 1) * es].copy_from_slice(&vals[k].to_le_bytes()[..es]);
    }
    Ok(())
}

/// Issues a cp.async: both ranges are checked now (the launch fails at the issuing
/// instruction, as compute-sanitizer reports it); the copy itself happens when a
/// wait_group completes its group.
pub fn cp_async(i: &Inst, blk: &mut Block, t: &mut Thread) -> Result<(), Fault> {
    let size = i.off as u32;
    let dst = t.regs[i.d as usize].wrapping_add(i.v[0] as i32 as i64 as u64);
    let src = t.regs[i.a as usize].wrapping_add(i.v[1] as i32 as i64 as u64);
    let src_size = t.regs[i.b as usize] as u32;
    if src_size > size {
        return Err(Fault {
            kind: FaultKind::IllegalInstruction,
            msg: format!("cp.async with src-size {src_size} larger than cp-size {size}"),
        });
    }
    bytes(blk, t, Space::Shared, dst, size as u64, true)?;
    if src_size > 0 {
        // The source must be aligned to cp-size even when only src-size bytes are read.
        if src % size as u64 != 0 {
            return Err(fault(FaultKind::MisalignedAddress, Space::Global, false, size as u64, src, ""));
        }
        bytes(blk, t, Space::Global, src, src_size as u64, false)?;
    }
    t.cp_pending.push(AsyncCopy { dst, src, size, src_size, line: i.line });
    Ok(())
}

/// Completes committed groups until at most `keep` are outstanding.
pub fn cp_wait(keep: usize, blk: &mut Block, t: &mut Thread) -> Result<(), Fault> {
    while t.cp_groups.len() > keep {
        let group = t.cp_groups.pop_front().unwrap();
        for c in group {
            complete(&c, blk, t)?;
        }
    }
    Ok(())
}

/// Every copy the thread issued, committed or not (at thread exit).
pub fn cp_drain(blk: &mut Block, t: &mut Thread) -> Result<(), Fault> {
    let pending = std::mem::take(&mut t.cp_pending);
    t.cp_groups.push_back(pending);
    cp_wait(0, blk, t)
}

fn complete(c: &AsyncCopy, blk: &mut Block, t: &mut Thread) -> Result<(), Fault> {
    let mut buf = [0u8; 16];
    let issued = |mut f: Fault| {
        f.msg = format!("{} (completing the cp.async issued at PTX line {})", f.msg, c.line);
        f
    };
    if c.src_size > 0 {
        let s = bytes(blk, t, Space::Global, c.src, c.src_size as u64, false).map_err(issued)?;
        buf[..c.src_size as usize].copy_from_slice(s);
    }
    let d = bytes(blk, t, Space::Shared, c.dst, c.size as u64, true).map_err(issued)?;
    d.copy_from_slice(&buf[..c.size as usize]);
    Ok(())
}
