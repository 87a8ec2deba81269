//! Warp-synchronous instructions, executed by the scheduler once every participating
//! lane has arrived: `shfl.sync`, `bar.warp.sync` and `wmma` m16n16k16 (f16 or bf16
//! inputs; f32 accumulators, or f16 with f16 inputs).
//!
//! Fragment layout. The PTX ISA leaves the distribution of a fragment's elements over
//! the lanes to the implementation; this is the emulator's, and load, mma and store
//! agree on it. Lane `l` holds elements `e = 8 l + j`, `j = 0..8`, of the logical 16x16
//! matrix in row-major order (row `e / 16`, column `e % 16`), whatever the layout the
//! matrix had in memory: for A that is `A[m][k]`, for B `B[k][n]`, for C and D
//! `C[m][n]`. An f16 fragment keeps element `j` in register `j / 2` (low half for even
//! `j`), and registers 4..7 repeat 0..3; an f16 C or D fragment (four .f16x2 registers)
//! keeps element `j` in register `j / 2` the same way, without the repeat; a bf16 fragment, which the ISA makes four .b32
//! registers of two bf16 elements each for m16n16k16 (PTX ISA, "Matrix Fragments for
//! WMMA", `.bf16` `.m16n16k16` A and B: "A vector expression of four .b32 registers, with
//! each register containing two elements from the matrix"; 9.7.14.4.1 in ISA 9.0), keeps
//! element `j` in register `j / 2` the same way; an f32 fragment keeps element `j` in
//! register `j`. A kernel that reads fragment registers directly would see this layout, not a
//! GPU's; ours only pass fragments between wmma instructions.
//!
//! The product accumulates as [`super::mma`] says (`MP_EMU_MMA`): by default in f32 in k
//! order, each f16 or bf16 product exact ([`mma_accumulate`]); with `trunc`, as the
//! tensor cores' block FMA with truncation. An f16 D is the result rounded to nearest
//! even. A real GPU remains the authority on the last bits.

use half::f16;
use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};

use super::access::{locate, locate_span, read, Who};
use super::half::Half;
use super::mma::{self, Mma, Out};
use super::{reg, Block, Fault, Thread, WARP};
use crate::exec::FaultKind;
use crate::ir::collective::acc_regs;
use crate::ir::{Inst, Layout, Op, ShflMode, Space, Ty};

/// One `shfl.sync` over the lanes in `members` (bit l set: lane l takes part), each at
/// its own instruction `insts[l]`, in the warp's register file `file`.
pub fn shfl(mode: ShflMode, file: &mut [u64], members: u32, insts: &[Option<&Inst>]) {
    let mut src = [0u64; 32];
    for (l, i) in insts.iter().enumerate() {
        if let Some(i) = i {
            src[l] = reg(file, i.a, l) & 0xffff_ffff;
        }
    }
    for (l, i) in insts.iter().enumerate() {
        let Some(i) = i else { continue };
        if members & (1 << l) == 0 {
            continue;
        }
        let lane = l as u32;
        let b = (reg(file, i.b, l) as u32) & 31;
        let c = reg(file, i.c, l) as u32;
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
        file[i.d as usize * WARP + l] = src[j];
        if let Some(&p) = i.v.get(1) {
            file[p as usize * WARP + l] = ok as u64;
        }
    }
}

/// The warp-uniform address and stride of a wmma load or store of `elem`-byte elements:
/// every lane must give the same ones (the ISA makes anything else undefined), the address
/// must be 256-bit aligned, and the stride (`ldm`, in elements) a multiple of 16 bytes, as
/// the CUDA C++ Programming Guide's `load_matrix_sync` / `store_matrix_sync` require
/// ("a multiple of 8 for __half element type or multiple of 4 for float element type"):
/// every memory row of the tile then starts 16-byte aligned, as the hardware loads it.
fn uniform_address(file: &[u64], i: &Inst, elem: u64) -> Result<(u64, u64), Fault> {
    let addr = |l: usize| reg(file, i.a, l).wrapping_add(i.off as u64);
    let stride = |l: usize| reg(file, i.b, l) & 0xffff_ffff;
    let (a0, s0) = (addr(0), stride(0));
    // Whole rows compared first (vectorized; equal registers give equal addresses), the
    // lane that differs looked for only when one does.
    let row = |r: u32| &file[r as usize * WARP..][..WARP];
    let uniform = |r: u32, mask: u64| row(r).iter().all(|&x| (x ^ row(r)[0]) & mask == 0);
    let differs = !(uniform(i.a, u64::MAX) && uniform(i.b, 0xffff_ffff));
    if let Some(l) = (0..WARP).find(|&l| differs && (addr(l) != a0 || stride(l) != s0)) {
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
    if (s0 * elem) % 16 != 0 {
        return Err(Fault {
            kind: FaultKind::MisalignedAddress,
            msg: format!(
                "wmma stride {s0} ({} bytes of {elem}-byte elements) is not a multiple of 16 bytes",
                s0 * elem
            ),
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
            // The warp's n-th execution of this wmma is its n-th warp instruction, as for
            // any access; one key for all of them would merge a loop's tiles into one.
            let key = (lane0.linear / 32, lane0.pc, c.run_of(lane0.linear, lane0.pc));
            for r in 0..16 {
                c.global(key, row(r), 16 * elem, write);
            }
        }
    }
}

/// 256 f16 or bf16 elements, as their bits, to f32 (exactly: every f16 and bf16 value is an
/// f32 value): f16 through the half crate's slice conversion, which uses the host's F16C
/// instructions where it has them (eight elements per instruction, and no 256 KB table to
/// miss in the cache), bf16 by a shift.
fn widen(h: Half, bits: &[u16; 256], out: &mut [f32; 256]) {
    match h {
        Half::F16 => {
            let halves: &[f16] = bits.reinterpret_cast();
            halves.convert_to_f32_slice(out);
        }
        Half::BF16 => {
            for (o, &x) in out.iter_mut().zip(bits) {
                *o = f32::from_bits((x as u32) << 16);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)] // one access's what, where and who, as access::locate_span takes them
/// Reads or writes one memory row of a tile (`buf.len()` bytes of `elem`-byte elements)
/// with one memory check. When the span is refused, the elements are checked one by one so
/// that the fault names the first bad element, as a per-element access would.
fn tile_row(
    blk: &mut Block,
    t: &mut Thread,
    sp: Space,
    addr: u64,
    buf: &mut [u8],
    elem: u64,
    write: bool,
    who: Who,
) -> Result<(), Fault> {
    let loc = match locate_span(blk, t, sp, addr, buf.len() as u64, elem, write) {
        Ok(loc) => loc,
        Err(f) => {
            for k in 0..buf.len() as u64 / elem {
                locate(blk, t, sp, addr + k * elem, elem, write)?;
            }
            return Err(f);
        }
    };
    if write {
        super::access::write(blk, loc, buf, who)
    } else {
        read(blk, loc, buf, who)
    }
}

/// A whole tile of 16 memory rows of `row.len() / 16` bytes, `stride` bytes apart from
/// `base`, in shared memory: read into `rows` (row after row) or written from them, with
/// one bounds check and one shadow call for the tile instead of one per row. None, having
/// done nothing, when a row would leave the block's shared memory: the per-row path then
/// reports the fault for the first bad row. Every row is aligned (`uniform_address`
/// checked the base and the stride).
fn shared_tile(
    blk: &mut Block,
    base: u64,
    stride: u64,
    rows: &mut [u8],
    write: bool,
    who: Who,
) -> Option<Result<(), Fault>> {
    let n = rows.len() / 16;
    let last = stride.checked_mul(15)?.checked_add(base)?.checked_add(n as u64)?;
    if last > blk.shared.len() as u64 || stride < n as u64 {
        return None;
    }
    let (base, stride) = (base as usize, stride as usize);
    let checks = blk.checks;
    if checks.race || checks.init {
        let shadow = &mut blk.shadow;
        let r = if write {
            shadow.write_rows(checks, who.thread, who.line, base, stride, 16, n)
        } else {
            shadow.read_rows(checks, who.thread, who.line, base, stride, 16, n)
        };
        if let Err(f) = r {
            return Some(Err(Fault { kind: FaultKind::Sanitizer, msg: f.msg }));
        }
    }
    for (r, chunk) in rows.chunks_exact_mut(n).enumerate() {
        let mem = &mut blk.shared[base + r * stride..][..n];
        if write {
            mem.copy_from_slice(chunk);
        } else {
            chunk.copy_from_slice(mem);
        }
    }
    Some(Ok(()))
}

/// Executes one wmma instruction for a whole warp (`lanes`, 32 threads, all at `i`).
///
/// Its memory accesses are attributed to lane 0. The `.sync` of wmma only makes the lanes
/// wait for one another; like a GPU, it orders no memory among them, so another lane's
/// access to the tile needs a `__syncwarp` (or a block barrier) between. A tile is
/// 16 memory rows of 16 contiguous elements (logical rows for a row-major layout,
/// columns for a column-major one), each checked and accessed as one span.
pub fn wmma(i: &Inst, lanes: &mut [Thread], file: &mut [u64], blk: &mut Block) -> Result<(), Fault> {
    let who = Who { thread: lanes[0].linear, line: i.line, nc: false };
    // Logical element (row-major index) of element `c` of memory row `r`.
    // Element `c` of memory row `r` is logical element r * 16 + c for a row-major
    // layout, c * 16 + r for a column-major one: a tile in memory order becomes the
    // logical matrix by a copy or a transpose, the layout decided once per instruction.
    fn logical<T: Copy>(layout: Layout, memory: &[T; 256], out: &mut [T; 256]) {
        match layout {
            Layout::Row => *out = *memory,
            Layout::Col => {
                for r in 0..16 {
                    for c in 0..16 {
                        out[c * 16 + r] = memory[r * 16 + c];
                    }
                }
            }
        }
    }
    match i.op {
        Op::WmmaLoadA(layout) | Op::WmmaLoadB(layout) | Op::WmmaLoadC(layout) if i.ty != Ty::F32 => {
            let (base, stride) = uniform_address(file, i, 2)?;
            let sp = space(i);
            cost_tile(blk, &lanes[0], sp, base, stride, 2, false);
            let mut m = [0u16; 256];
            let mut rows = [0u8; 512];
            let fast =
                if sp == Space::Shared { shared_tile(blk, base, 2 * stride, &mut rows, false, who) } else { None };
            match fast {
                Some(r) => r?,
                None => {
                    for (r, row) in rows.chunks_exact_mut(32).enumerate() {
                        tile_row(blk, &mut lanes[0], sp, base + 2 * r as u64 * stride, row, 2, false, who)?;
                    }
                }
            }
            let mut mem = [0u16; 256];
            for (e, b) in mem.iter_mut().zip(rows.chunks_exact(2)) {
                *e = u16::from_le_bytes([b[0], b[1]]);
            }
            logical(layout, &mem, &mut m);
            // Element pair k (elements 2k, 2k + 1) in register k: f16 A and B fragments
            // have 8 registers, the last 4 repeating the first; bf16 ones and f16 C have 4.
            for (k, &r) in i.v.iter().enumerate() {
                let k = k % 4;
                let out = &mut file[r as usize * WARP..][..WARP];
                for (l, o) in out.iter_mut().enumerate() {
                    let lo = m[8 * l + 2 * k] as u64;
                    let hi = m[8 * l + 2 * k + 1] as u64;
                    *o = lo | hi << 16;
                }
            }
        }
        Op::WmmaLoadC(layout) => {
            let (base, stride) = uniform_address(file, i, 4)?;
            let sp = space(i);
            cost_tile(blk, &lanes[0], sp, base, stride, 4, false);
            let mut d = [0u32; 256];
            let mut rows = [0u8; 1024];
            let fast =
                if sp == Space::Shared { shared_tile(blk, base, 4 * stride, &mut rows, false, who) } else { None };
            match fast {
                Some(r) => r?,
                None => {
                    for (r, row) in rows.chunks_exact_mut(64).enumerate() {
                        tile_row(blk, &mut lanes[0], sp, base + 4 * r as u64 * stride, row, 4, false, who)?;
                    }
                }
            }
            let mut mem = [0u32; 256];
            for (e, b) in mem.iter_mut().zip(rows.chunks_exact(4)) {
                *e = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
            logical(layout, &mem, &mut d);
            for j in 0..8 {
                let out = &mut file[i.v[j] as usize * WARP..][..WARP];
                for (l, o) in out.iter_mut().enumerate() {
                    *o = d[8 * l + j] as u64;
                }
            }
        }
        Op::WmmaStoreD(layout) => {
            // 4-byte f32 elements, one per register, or 2-byte f16 ones, two per register.
            let elem = if i.ty == Ty::F16 { 2 } else { 4 };
            let (base, stride) = uniform_address(file, i, elem as u64)?;
            let sp = space(i);
            cost_tile(blk, &lanes[0], sp, base, stride, elem as u64, true);
            let mut d = [0u32; 256];
            for l in 0..WARP {
                for j in 0..8 {
                    d[8 * l + j] = if elem == 2 {
                        (reg(file, i.v[j / 2], l) >> (16 * (j % 2))) as u32 & 0xffff
                    } else {
                        reg(file, i.v[j], l) as u32
                    };
                }
            }
            let mut rows = [0u8; 1024];
            let rows = &mut rows[..256 * elem];
            // The transpose is its own inverse: the logical matrix in memory order.
            let mut mem = [0u32; 256];
            logical(layout, &d, &mut mem);
            for (e, b) in mem.iter().zip(rows.chunks_exact_mut(elem)) {
                b.copy_from_slice(&e.to_le_bytes()[..elem]);
            }
            let fast =
                if sp == Space::Shared { shared_tile(blk, base, elem as u64 * stride, rows, true, who) } else { None };
            match fast {
                Some(r) => r?,
                None => {
                    for (r, row) in rows.chunks_exact_mut(16 * elem).enumerate() {
                        tile_row(
                            blk,
                            &mut lanes[0],
                            sp,
                            base + (elem * r) as u64 * stride,
                            row,
                            elem as u64,
                            true,
                            who,
                        )?;
                    }
                }
            }
        }
        Op::WmmaMma(..) => {
            // v: d (8 f32 or 4 f16x2 registers), a and b (8 registers each for f16, 4 for
            // bf16), c (8 f32 or 4 f16x2): c's type follows from what is left.
            let h = Half::of(i.ty).expect("wmma.mma element type");
            let nd = acc_regs(i.ty2);
            let nab = if h == Half::F16 { 8 } else { 4 };
            let (va, vb, vc) = (nd, nd + nab, nd + 2 * nab);
            let c_f16 = i.v.len() - vc == 4;
            let (mut a, mut b, mut d) = ([0f32; 256], [0f32; 256], [0f32; 256]);
            // The lanes' fragments as the logical matrices.
            fragments(file, i, [va, vb, vc], c_f16, [&mut a, &mut b, &mut d], h);
            if let Some(c) = &mut blk.cost {
                c.counters.macs += 16 * 16 * 16;
            }
            let out = if i.ty2 == Ty::F16 { Out::F16 } else { Out::F32 };
            match blk.mma {
                Mma::Rn => {
                    accumulate(h, &a, &b, &mut d);
                    if out == Out::F16 {
                        d.iter_mut().for_each(|x| *x = f16::from_f32(*x).to_f32());
                    }
                }
                Mma::Trunc { group, extra } => {
                    let emin = if h == Half::F16 { -14 } else { -126 };
                    mma::trunc_tile(group, extra, &a, &b, &mut d, emin, out);
                }
            }
            if out == Out::F16 {
                for k in 0..4 {
                    let row = &mut file[i.v[k] as usize * WARP..][..WARP];
                    for (l, o) in row.iter_mut().enumerate() {
                        let lo = f16::from_f32(d[8 * l + 2 * k]).to_bits() as u64;
                        let hi = f16::from_f32(d[8 * l + 2 * k + 1]).to_bits() as u64;
                        *o = lo | hi << 16;
                    }
                }
            } else {
                for j in 0..8 {
                    let row = &mut file[i.v[j] as usize * WARP..][..WARP];
                    for (l, o) in row.iter_mut().enumerate() {
                        *o = d[8 * l + j].to_bits() as u64;
                    }
                }
            }
        }
        _ => unreachable!("not a wmma instruction"),
    }
    Ok(())
}

/// The A, B and C fragments of a wmma.mma (first registers `v[0]`, `v[1]`, `v[2]` among
/// `i.v`) as logical 16x16 matrices (element `8 l + j` of lane `l`, module docs), A and B
/// of `h` elements; C of f32 registers, or of f16 pairs when `c_f16`.
#[inline(always)]
fn fragments(file: &[u64], i: &Inst, v: [usize; 3], c_f16: bool, out: [&mut [f32; 256]; 3], h: Half) {
    let [a, b, c] = out;
    // Registers of pairs of 16-bit elements (element j in register j / 2, low half first):
    // the first four of A and B (f16 ones repeat them), the four of an f16 C.
    let pairs = |at: usize| -> [usize; 4] { std::array::from_fn(|k| i.v[at + k] as usize) };
    // Register `r` of every lane is one row of the file: element pair k of lane l, from
    // row rs[k], is elements 8 l + 2 k and 8 l + 2 k + 1.
    // As pairs: the pair's low element first in memory order, so one 4-byte store per pair.
    let unpack = |rs: [usize; 4]| -> [u16; 256] {
        let mut pairs = [0u32; 128];
        for (k, &r) in rs.iter().enumerate() {
            let row = &file[r * WARP..][..WARP];
            for (l, &w) in row.iter().enumerate() {
                pairs[4 * l + k] = w as u32;
            }
        }
        let mut bits = [0u16; 256];
        for (b, p) in bits.chunks_exact_mut(2).zip(pairs) {
            b.copy_from_slice(&[p as u16, (p >> 16) as u16]);
        }
        bits
    };
    widen(h, &unpack(pairs(v[0])), a);
    widen(h, &unpack(pairs(v[1])), b);
    if c_f16 {
        widen(Half::F16, &unpack(pairs(v[2])), c);
    } else {
        for j in 0..8 {
            let row = &file[i.v[v[2] + j] as usize * WARP..][..WARP];
            for (l, &w) in row.iter().enumerate() {
                c[8 * l + j] = f32::from_bits(w as u32);
            }
        }
    }
}

/// d[m][n] = c[m][n] + a[m][0] b[0][n] + ... + a[m][15] b[15][n] (d holds c on entry),
/// added in k order, for f16 and bf16 elements alike (given as their exact f32 values):
/// [`mma::dot`]'s `rn`, for a whole tile at once.
/// Each product is exact (in f64: bf16 products can leave f32's range, f16 ones cannot)
/// and each addition rounds once to f32: the f64 sum of an f32 and a product of at most
/// 22 significant bits is exact unless one of them is below 2^-29 of the other, too small
/// to move the f32 rounding, so rounding it to f32 is the correct rounding of the exact
/// sum. The k loop outside the n loop keeps the order per element and lets the compiler
/// vectorize over n.
#[inline(always)]
fn mma_accumulate(a: &[f32; 256], b: &[f32; 256], d: &mut [f32; 256]) {
    for m in 0..16 {
        for k in 0..16 {
            let x = a[m * 16 + k] as f64;
            for n in 0..16 {
                let acc = &mut d[m * 16 + n];
                *acc = (*acc as f64 + x * b[k * 16 + n] as f64) as f32;
            }
        }
    }
}

/// [`mma_accumulate`] for f16 elements, in f32 alone: the product of two f16 values has at
/// most 22 significant bits and lies between 2^-48 and 2^32 in magnitude (or is zero),
/// inside f32's normal range, so the f32 product is exact, and the one rounding of the
/// f32 addition is the correct rounding of the exact sum: the same bits as the f64 path,
/// at four f32 lanes per vector instead of two f64 ones and no conversions (the GEMM's
/// main cost on the emulator after memory checks). Not for bf16, whose products can leave
/// f32's range.
#[inline(always)]
fn mma_accumulate_f16(a: &[f32; 256], b: &[f32; 256], d: &mut [f32; 256]) {
    for m in 0..16 {
        for k in 0..16 {
            let x = a[m * 16 + k];
            for n in 0..16 {
                d[m * 16 + n] += x * b[k * 16 + n];
            }
        }
    }
}

/// The round-to-nearest tile product of `h` elements: [`mma_accumulate_f16`] or
/// [`mma_accumulate`], compiled for AVX2 where the host has it (detected at run time:
/// twice the vector width; the same operations in the same order, so the same bits, which
/// the unit test below checks).
fn accumulate(h: Half, a: &[f32; 256], b: &[f32; 256], d: &mut [f32; 256]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the host CPU has AVX2 (checked just above), the one requirement
        // accumulate_avx2 places on its caller.
        return unsafe { accumulate_avx2(h, a, b, d) };
    }
    accumulate_in(h, a, b, d)
}

/// [`accumulate`] compiled for AVX2.
///
/// # Safety
/// The CPU running it must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn accumulate_avx2(h: Half, a: &[f32; 256], b: &[f32; 256], d: &mut [f32; 256]) {
    accumulate_in(h, a, b, d)
}

#[inline(always)]
fn accumulate_in(h: Half, a: &[f32; 256], b: &[f32; 256], d: &mut [f32; 256]) {
    if h == Half::F16 {
        mma_accumulate_f16(a, b, d);
    } else {
        mma_accumulate(a, b, d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widen_is_the_exact_value_of_every_bit_pattern() {
        for start in (0..=u16::MAX as u32).step_by(256) {
            let bits: [u16; 256] = std::array::from_fn(|k| (start as usize + k) as u16);
            let (mut h, mut b) = ([0f32; 256], [0f32; 256]);
            widen(Half::F16, &bits, &mut h);
            widen(Half::BF16, &bits, &mut b);
            for k in 0..256 {
                let want = f16::from_bits(bits[k]).to_f32();
                assert_eq!(h[k].to_bits(), want.to_bits(), "f16 {:#06x}", bits[k]);
                assert_eq!(b[k].to_bits(), (bits[k] as u32) << 16, "bf16 {:#06x}", bits[k]);
            }
        }
    }

    /// The dispatched tile product (AVX2 where the host has it) gives the bits of the
    /// portable one and of mma::dot's round-to-nearest per element, on random f16 and
    /// bf16 tiles (finite values of every magnitude, zeros of both signs) and
    /// accumulators.
    #[test]
    fn accumulate_is_dot_rn_per_element() {
        let mut next = crate::exec::xorshift(0x2545_f491_4f6c_dd1du64);
        for case in 0..200 {
            let h = if case % 2 == 0 { Half::F16 } else { Half::BF16 };
            let mut value = || loop {
                let bits = (next() >> 16) as u16;
                let v = match h {
                    Half::F16 => f16::from_bits(bits).to_f32(),
                    Half::BF16 => f32::from_bits((bits as u32) << 16),
                };
                if v.is_finite() {
                    return v;
                }
            };
            let a: [f32; 256] = std::array::from_fn(|_| value());
            let b: [f32; 256] = std::array::from_fn(|_| value());
            let c: [f32; 256] = std::array::from_fn(|_| f32::from_bits(next() as u32 & 0xbfff_ffff));
            let (mut d, mut portable) = (c, c);
            accumulate(h, &a, &b, &mut d);
            accumulate_in(h, &a, &b, &mut portable);
            let emin = if h == Half::F16 { -14 } else { -126 };
            for m in 0..16 {
                for n in 0..16 {
                    let col: [f32; 16] = std::array::from_fn(|k| b[16 * k + n]);
                    let want = mma::dot(Mma::Rn, &a[16 * m..16 * m + 16], &col, c[16 * m + n], emin, Out::F32);
                    let (got, port) = (d[16 * m + n], portable[16 * m + n]);
                    let same = |x: f32| x.to_bits() == want.to_bits() || (x.is_nan() && want.is_nan());
                    assert!(same(got) && same(port), "case {case} {h:?} ({m},{n}): {got:e} / {port:e} vs dot {want:e}");
                }
            }
        }
    }
}
