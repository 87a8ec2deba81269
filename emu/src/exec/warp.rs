//! Warp-synchronous instructions, executed by the scheduler once every participating
//! lane has arrived: `shfl.sync`, `bar.warp.sync` and `wmma` m16n16k16 (f16 inputs,
//! f32 accumulator).
//!
//! Fragment layout. The PTX ISA leaves the distribution of a fragment's elements over
//! the lanes to the implementation; this is the emulator's, and load, mma and store
//! agree on it. Lane `l` holds elements `e = 8 l + j`, `j = 0..8`, of the logical 16x16
//! matrix in row-major order (row `e / 16`, column `e % 16`), whatever the layout the
//! matrix had in memory: for A that is `A[m][k]`, for B `B[k][n]`, for C and D
//! `C[m][n]`. An f16 fragment keeps element `j` in register `j / 2` (low half for even
//! `j`), and registers 4..7 repeat 0..3; an f32 fragment keeps element `j` in register
//! `j`. A kernel that reads fragment registers directly would see this layout, not a
//! GPU's; ours only pass fragments between wmma instructions.
//!
//! The product accumulates in f32 in k order, each fp16 product exact: tensor cores may
//! add in another order, so a real GPU remains the authority on the last bits.

use half::f16;

use super::memory::{locate, read, write, Who};
use super::{Block, Fault, Thread};
use crate::exec::FaultKind;
use crate::ir::{Inst, Layout, Op, ShflMode, Space};

/// One `shfl.sync` over the lanes in `members` (bit l set: lane l takes part), each at
/// its own instruction `insts[l]`.
pub fn shfl(mode: ShflMode, lanes: &mut [Thread], members: u32, insts: &[Option<&Inst>]) {
    let mut src = [0u64; 32];
    for (l, t) in lanes.iter().enumerate() {
        if let Some(i) = insts[l] {
            src[l] = t.regs[i.a as usize] & 0xffff_ffff;
        }
    }
    for (l, t) in lanes.iter_mut().enumerate() {
        let Some(i) = insts[l] else { continue };
        if members & (1 << l) == 0 {
            continue;
        }
        let lane = l as u32;
        let b = (t.regs[i.b as usize] as u32) & 31;
        let c = t.regs[i.c as usize] as u32;
        let segmask = (c >> 8) & 31;
        let max_lane = (lane & segmask) | (c & 31 & !segmask);
        let min_lane = lane & segmask;
        let (j, ok) = match mode {
            ShflMode::Up => {
                let j = lane as i32 - b as i32;
                (j, j >= max_lane as i32)
            }
            ShflMode::Down => {
                let j = (lane + b) as i32;
                (j, j <= max_lane as i32)
            }
            ShflMode::Bfly => {
                let j = (lane ^ b) as i32;
                (j, j <= max_lane as i32)
            }
            ShflMode::Idx => {
                let j = (min_lane | (b & !segmask)) as i32;
                (j, j <= max_lane as i32)
            }
        };
        let j = if ok { j as usize } else { l };
        t.regs[i.d as usize] = src[j];
        if let Some(&p) = i.v.get(1) {
            t.regs[p as usize] = ok as u64;
        }
    }
}

/// The warp-uniform address and stride of a wmma load or store: every lane must give
/// the same ones (the ISA makes anything else undefined), and the address must be
/// 256-bit aligned.
fn uniform_address(lanes: &[Thread], i: &Inst) -> Result<(u64, u64), Fault> {
    let addr = |t: &Thread| t.regs[i.a as usize].wrapping_add(i.off as u64);
    let stride = |t: &Thread| t.regs[i.b as usize] & 0xffff_ffff;
    let (a0, s0) = (addr(&lanes[0]), stride(&lanes[0]));
    if let Some((l, _)) = lanes.iter().enumerate().find(|(_, t)| addr(t) != a0 || stride(t) != s0) {
        return Err(Fault {
            kind: FaultKind::IllegalInstruction,
            msg: format!("wmma with a different address or stride in lane {l} than in lane 0 ({a0:#x}, stride {s0}): the .aligned form needs them warp-uniform"),
        });
    }
    if a0 % 32 != 0 {
        return Err(Fault {
            kind: FaultKind::MisalignedAddress,
            msg: format!("wmma address {a0:#x} is not 256-bit aligned"),
        });
    }
    Ok((a0, s0))
}

fn space(i: &Inst) -> Space {
    // The loader records the state space in ty2: B32 for shared, B64 for global.
    if i.ty2 == crate::ir::Ty::B32 {
        Space::Shared
    } else {
        Space::Global
    }
}

/// Element (r, c) of a 16x16 matrix stored with `layout` and `stride` (in elements).
fn elem_index(layout: Layout, r: u64, c: u64, stride: u64) -> u64 {
    match layout {
        Layout::Row => r * stride + c,
        Layout::Col => c * stride + r,
    }
}

/// Counts a wmma load or store of a 16x16 tile of `elem`-byte elements: 16 memory rows
/// of 16 * elem bytes at `stride` elements apart (whatever the layout). Shared memory in
/// phases of 128 bytes: for f16 loads the four 8 x 8 sub-matrices as ldmatrix reads them
/// (8 rows of 16 bytes each), for f32 stores pairs of 64-byte rows.
fn cost_tile(blk: &mut Block, lane0: &Thread, sp: Space, base: u64, stride: u64, elem: u64, write: bool) {
    let Some(c) = &mut blk.cost else { return };
    let row = |r: u64| base + r * stride * elem;
    match sp {
        Space::Shared if elem == 2 => {
            let phases: Vec<Vec<(u64, u64)>> = [(0, 0), (8, 0), (0, 16), (8, 16)]
                .iter()
                .map(|&(r0, off)| (r0..r0 + 8).map(|r| (row(r) + off, 16)).collect())
                .collect();
            c.shared_phases(&phases);
        }
        Space::Shared => {
            let phases: Vec<Vec<(u64, u64)>> = (0..8).map(|p| vec![(row(2 * p), 64), (row(2 * p + 1), 64)]).collect();
            c.shared_phases(&phases);
        }
        _ => {
            let key = (lane0.linear / 32, lane0.pc, u32::MAX);
            for r in 0..16 {
                c.global(key, row(r), 16 * elem, write);
            }
        }
    }
}

/// Executes one wmma instruction for a whole warp (`lanes`, 32 threads, all at `i`).
///
/// Its memory accesses are attributed to lane 0 and happen between two warp epochs (the
/// scheduler advances the warp's epoch before and after): the warp has synchronized on
/// entry, so they are ordered with every lane's accesses before and after it.
pub fn wmma(i: &Inst, lanes: &mut [Thread], blk: &mut Block) -> Result<(), Fault> {
    let who = Who { thread: lanes[0].linear, line: i.line };
    match i.op {
        Op::WmmaLoadA(layout) | Op::WmmaLoadB(layout) => {
            let (base, stride) = uniform_address(lanes, i)?;
            let sp = space(i);
            cost_tile(blk, &lanes[0], sp, base, stride, 2, false);
            let mut m = [0u16; 256];
            for (e, slot) in m.iter_mut().enumerate() {
                let (r, c) = ((e / 16) as u64, (e % 16) as u64);
                let addr = base + 2 * elem_index(layout, r, c, stride);
                let loc = locate(blk, &mut lanes[0], sp, addr, 2, false)?;
                let mut b = [0u8; 2];
                read(blk, loc, &mut b, who)?;
                *slot = u16::from_le_bytes(b);
            }
            for (l, t) in lanes.iter_mut().enumerate() {
                for k in 0..4 {
                    let lo = m[8 * l + 2 * k] as u64;
                    let hi = m[8 * l + 2 * k + 1] as u64;
                    t.regs[i.v[k] as usize] = lo | hi << 16;
                    t.regs[i.v[k + 4] as usize] = lo | hi << 16;
                }
            }
        }
        Op::WmmaStoreD(layout) => {
            let (base, stride) = uniform_address(lanes, i)?;
            let sp = space(i);
            cost_tile(blk, &lanes[0], sp, base, stride, 4, true);
            for l in 0..32 {
                for j in 0..8 {
                    let e = 8 * l + j;
                    let (r, c) = ((e / 16) as u64, (e % 16) as u64);
                    let v = lanes[l].regs[i.v[j] as usize] as u32;
                    let addr = base + 4 * elem_index(layout, r, c, stride);
                    let loc = locate(blk, &mut lanes[0], sp, addr, 4, true)?;
                    write(blk, loc, &v.to_le_bytes(), who)?;
                }
            }
        }
        Op::WmmaMma(..) => {
            let (mut a, mut b, mut acc) = ([0f32; 256], [0f32; 256], [0f32; 256]);
            for (l, t) in lanes.iter().enumerate() {
                for j in 0..8 {
                    let e = 8 * l + j;
                    let half = |reg: u32| f16::from_bits((t.regs[reg as usize] >> (16 * (j % 2))) as u16).to_f32();
                    a[e] = half(i.v[8 + j / 2]);
                    b[e] = half(i.v[16 + j / 2]);
                    acc[e] = f32::from_bits(t.regs[i.v[24 + j] as usize] as u32);
                }
            }
            if let Some(c) = &mut blk.cost {
                c.counters.macs += 16 * 16 * 16;
            }
            let mut d = [0f32; 256];
            for m in 0..16 {
                for n in 0..16 {
                    let mut s = acc[m * 16 + n];
                    for k in 0..16 {
                        // fp16 x fp16 is exact in f32.
                        s += a[m * 16 + k] * b[k * 16 + n];
                    }
                    d[m * 16 + n] = s;
                }
            }
            for (l, t) in lanes.iter_mut().enumerate() {
                for j in 0..8 {
                    t.regs[i.v[j] as usize] = d[8 * l + j].to_bits() as u64;
                }
            }
        }
        _ => unreachable!("not a wmma instruction"),
    }
    Ok(())
}
