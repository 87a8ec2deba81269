//! Execution of the pre-decoded forms (ir/fast.rs). Each computes exactly what int.rs or
//! float.rs or convert.rs computes for that form: the tests below run both on edge values for every form.

use super::float::{compare, CANONICAL_NAN_F32};
use super::half::{Half, CANONICAL_NAN_F16};
use super::int::{cmp, mask, sx};
use super::{Regs, WARP};
use crate::ir::fast::{Bin, CvtKind, FBin, Fast};
use crate::ir::Cmp;

#[inline(always)]
fn f32_of(v: u64) -> f32 {
    f32::from_bits(v as u32)
}

/// The register value of an f32 arithmetic result: the GPU's one canonical NaN for any NaN.
#[inline(always)]
fn f32_result(v: f32) -> u64 {
    if v.is_nan() {
        CANONICAL_NAN_F32 as u64
    } else {
        v.to_bits() as u64
    }
}

#[inline(always)]
fn width(w32: bool) -> (u32, u64) {
    if w32 {
        (32, u32::MAX as u64)
    } else {
        (64, u64::MAX)
    }
}

/// Executes a fast form (never `Generic`) on the lanes of `group` (bit l: lane l; a
/// converged warp is `full`, all of them) whose guard, if any, holds, over the warp's
/// lane-minor register file (`file`: register r of lane l at r * 32 + l): each source
/// register is one row of 32 values, so an instruction is one loop over the lanes that
/// the compiler can vectorize, with one dispatch for the warp. Each arm names one form,
/// operation and width, so [`apply`] inlined into it reduces to that operation. Lanes
/// outside the group keep their destination registers; the values computed for them (and
/// for the missing lanes of a partial warp, whose rows are never read) are discarded.
/// The same computation as [`exec`] per lane: the tests below compare the two.
///
/// Compiled for AVX2 too and chosen at run time where the host has it (the rows of 32
/// lanes then go four 64-bit values per instruction): the same operations, so the same
/// bits.
pub fn exec_warp(f: Fast, file: &mut [u64], full: u32, group: u32, guard: u32, guard_neg: bool) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the host CPU has AVX2 (checked just above), the one requirement
        // exec_warp_avx2 places on its caller.
        return unsafe { exec_warp_avx2(f, file, full, group, guard, guard_neg) };
    }
    exec_warp_in(f, file, full, group, guard, guard_neg)
}

/// [`exec_warp`] compiled for AVX2.
///
/// # Safety
/// The CPU running it must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn exec_warp_avx2(f: Fast, file: &mut [u64], full: u32, group: u32, guard: u32, guard_neg: bool) {
    exec_warp_in(f, file, full, group, guard, guard_neg)
}

#[inline(always)]
fn exec_warp_in(f: Fast, file: &mut [u64], full: u32, group: u32, guard: u32, guard_neg: bool) {
    let active = super::executing(file, group, guard, guard_neg);
    if active == 0 {
        return;
    }
    let active = if active == full { u32::MAX } else { active };
    // Each arm's body is the same call with `apply` inlined into it; the arm's pattern
    // tells the compiler which form `f` is there, so `apply`'s own match folds to that
    // one operation.
    macro_rules! arms {
        ($($p:pat),* $(,)?) => {
            match f {
                $($p => apply(f, &mut Rows { file, active }),)*
                Fast::Generic => unreachable!("generic instructions take the general path"),
            }
        };
    }
    use Bin::*;
    use Cmp::*;
    arms!(
        Fast::Bin { op: Add, w32: true, .. },
        Fast::Bin { op: Add, w32: false, .. },
        Fast::Bin { op: Sub, w32: true, .. },
        Fast::Bin { op: Sub, w32: false, .. },
        Fast::Bin { op: Mul, w32: true, .. },
        Fast::Bin { op: Mul, w32: false, .. },
        Fast::Bin { op: And, w32: true, .. },
        Fast::Bin { op: And, w32: false, .. },
        Fast::Bin { op: Or, w32: true, .. },
        Fast::Bin { op: Or, w32: false, .. },
        Fast::Bin { op: Xor, w32: true, .. },
        Fast::Bin { op: Xor, w32: false, .. },
        Fast::Bin { op: Shl, w32: true, .. },
        Fast::Bin { op: Shl, w32: false, .. },
        Fast::Bin { op: ShrU, w32: true, .. },
        Fast::Bin { op: ShrU, w32: false, .. },
        Fast::Bin { op: ShrS, w32: true, .. },
        Fast::Bin { op: ShrS, w32: false, .. },
        Fast::Mad { w32: true, .. },
        Fast::Mad { w32: false, .. },
        Fast::MulWide { signed: true, .. },
        Fast::MulWide { signed: false, .. },
        Fast::Mov { w32: true, .. },
        Fast::Mov { w32: false, .. },
        Fast::Setp { cmp: Eq, signed: _, w32: true, .. },
        Fast::Setp { cmp: Eq, signed: _, w32: false, .. },
        Fast::Setp { cmp: Ne, signed: _, w32: true, .. },
        Fast::Setp { cmp: Ne, signed: _, w32: false, .. },
        Fast::Setp { cmp: Lt, signed: true, w32: true, .. },
        Fast::Setp { cmp: Lt, signed: false, w32: true, .. },
        Fast::Setp { cmp: Lt, signed: true, w32: false, .. },
        Fast::Setp { cmp: Lt, signed: false, w32: false, .. },
        Fast::Setp { cmp: Le, signed: true, w32: true, .. },
        Fast::Setp { cmp: Le, signed: false, w32: true, .. },
        Fast::Setp { cmp: Le, signed: true, w32: false, .. },
        Fast::Setp { cmp: Le, signed: false, w32: false, .. },
        Fast::Setp { cmp: Gt, signed: true, w32: true, .. },
        Fast::Setp { cmp: Gt, signed: false, w32: true, .. },
        Fast::Setp { cmp: Gt, signed: true, w32: false, .. },
        Fast::Setp { cmp: Gt, signed: false, w32: false, .. },
        Fast::Setp { cmp: Ge, signed: true, w32: true, .. },
        Fast::Setp { cmp: Ge, signed: false, w32: true, .. },
        Fast::Setp { cmp: Ge, signed: true, w32: false, .. },
        Fast::Setp { cmp: Ge, signed: false, w32: false, .. },
        Fast::Setp { .. },
        Fast::Selp { w32: true, .. },
        Fast::Selp { w32: false, .. },
        Fast::F32Bin { op: FBin::Add, .. },
        Fast::F32Bin { op: FBin::Sub, .. },
        Fast::F32Bin { op: FBin::Mul, .. },
        Fast::F32Bin { op: FBin::Div, .. },
        Fast::F32Fma { .. },
        Fast::F64Bin { op: FBin::Add, .. },
        Fast::F64Bin { op: FBin::Sub, .. },
        Fast::F64Bin { op: FBin::Mul, .. },
        Fast::F64Bin { op: FBin::Div, .. },
        Fast::FSign { abs: true, f64: true, .. },
        Fast::FSign { abs: false, f64: true, .. },
        Fast::FSign { .. },
        Fast::FSqrt { f64: false, .. },
        Fast::FSqrt { .. },
        Fast::FSetp { f64: false, .. },
        Fast::FSetp { .. },
        Fast::F64Fma { .. },
        Fast::Not { bits: 1, .. },
        Fast::Not { bits: 32, .. },
        Fast::Not { .. },
        Fast::PredBin { op: And, .. },
        Fast::PredBin { op: Or, .. },
        Fast::PredBin { .. },
        Fast::MinMax { max: false, signed: true, w32: true, .. },
        Fast::MinMax { max: false, signed: false, w32: true, .. },
        Fast::MinMax { max: true, signed: true, w32: true, .. },
        Fast::MinMax { max: true, signed: false, w32: true, .. },
        Fast::MinMax { .. },
        Fast::IntCvt { src: 32, signed: true, dst: 64, .. },
        Fast::IntCvt { src: 32, signed: false, dst: 64, .. },
        Fast::IntCvt { src: 64, dst: 32, .. },
        Fast::IntCvt { .. },
        Fast::Pack2 { part: 16, .. },
        Fast::Pack2 { .. },
        Fast::Unpack2 { part: 16, .. },
        Fast::Unpack2 { .. },
        Fast::Cvt { kind: CvtKind::F32FromF16, .. },
        Fast::Cvt { kind: CvtKind::F64FromF32, .. },
        Fast::Cvt { kind: CvtKind::F16FromF32, .. },
        Fast::Cvt { kind: CvtKind::F32FromF64, .. },
    )
}

/// Register `r` of every lane: one row of the warp's register file, borrowed.
#[inline(always)]
fn row(file: &[u64], r: u32) -> &[u64; WARP] {
    file[r as usize * WARP..][..WARP].try_into().expect("a register row")
}

/// How a pre-decoded form reads its sources and writes its results: for one lane's
/// registers ([`One`]) or for the rows of a warp's register file ([`Rows`]). Each `f` is
/// the form's computation on the source values, pure and total (it runs on the values of
/// inactive lanes too, whose results are dropped).
trait Apply {
    fn map1(&mut self, d: u32, a: u32, f: impl Fn(u64) -> u64);
    fn map2(&mut self, d: u32, a: u32, b: u32, f: impl Fn(u64, u64) -> u64);
    fn map3(&mut self, d: u32, a: u32, b: u32, c: u32, f: impl Fn(u64, u64, u64) -> u64);
    /// Two results of one source, written to `lo` and then to `hi` (the later write wins
    /// when they are one register).
    fn split(&mut self, lo: u32, hi: u32, a: u32, f: impl Fn(u64) -> (u64, u64));
}

/// One lane's registers.
struct One<'r, R: ?Sized>(&'r mut R);

impl<R: Regs + ?Sized> Apply for One<'_, R> {
    #[inline(always)]
    fn map1(&mut self, d: u32, a: u32, f: impl Fn(u64) -> u64) {
        let v = f(self.0[a as usize]);
        self.0[d as usize] = v;
    }
    #[inline(always)]
    fn map2(&mut self, d: u32, a: u32, b: u32, f: impl Fn(u64, u64) -> u64) {
        let v = f(self.0[a as usize], self.0[b as usize]);
        self.0[d as usize] = v;
    }
    #[inline(always)]
    fn map3(&mut self, d: u32, a: u32, b: u32, c: u32, f: impl Fn(u64, u64, u64) -> u64) {
        let v = f(self.0[a as usize], self.0[b as usize], self.0[c as usize]);
        self.0[d as usize] = v;
    }
    #[inline(always)]
    fn split(&mut self, lo: u32, hi: u32, a: u32, f: impl Fn(u64) -> (u64, u64)) {
        let (x, y) = f(self.0[a as usize]);
        self.0[lo as usize] = x;
        self.0[hi as usize] = y;
    }
}

/// The rows of a warp's register file, for the lanes in `active` (u32::MAX: every row
/// entry, which a full warp's rows are; the missing lanes of a partial warp are never
/// read).
struct Rows<'a> {
    file: &'a mut [u64],
    active: u32,
}

impl Rows<'_> {
    #[inline(always)]
    fn store(&mut self, d: u32, v: &[u64; WARP]) {
        let out: &mut [u64; WARP] = (&mut self.file[d as usize * WARP..][..WARP]).try_into().expect("a register row");
        if self.active == u32::MAX {
            *out = *v;
        } else {
            for l in 0..WARP {
                if self.active >> l & 1 != 0 {
                    out[l] = v[l];
                }
            }
        }
    }
}

// The sources are read in place and the results gathered in one local row before the
// store (a destination may be a source), in plain loops over the 32 lanes that the
// compiler unrolls and vectorizes.
impl Apply for Rows<'_> {
    #[inline(always)]
    fn map1(&mut self, d: u32, a: u32, f: impl Fn(u64) -> u64) {
        let mut v = [0u64; WARP];
        let x = row(self.file, a);
        for l in 0..WARP {
            v[l] = f(x[l]);
        }
        self.store(d, &v);
    }
    #[inline(always)]
    fn map2(&mut self, d: u32, a: u32, b: u32, f: impl Fn(u64, u64) -> u64) {
        let mut v = [0u64; WARP];
        let (x, y) = (row(self.file, a), row(self.file, b));
        for l in 0..WARP {
            v[l] = f(x[l], y[l]);
        }
        self.store(d, &v);
    }
    #[inline(always)]
    fn map3(&mut self, d: u32, a: u32, b: u32, c: u32, f: impl Fn(u64, u64, u64) -> u64) {
        let mut v = [0u64; WARP];
        let (x, y, z) = (row(self.file, a), row(self.file, b), row(self.file, c));
        for l in 0..WARP {
            v[l] = f(x[l], y[l], z[l]);
        }
        self.store(d, &v);
    }
    #[inline(always)]
    fn split(&mut self, lo: u32, hi: u32, a: u32, f: impl Fn(u64) -> (u64, u64)) {
        let (mut v, mut w) = ([0u64; WARP], [0u64; WARP]);
        let x = row(self.file, a);
        for l in 0..WARP {
            (v[l], w[l]) = f(x[l]);
        }
        self.store(lo, &v);
        self.store(hi, &w);
    }
}

/// Executes a fast form (never `Generic`) on one thread's registers.
#[inline(always)]
pub fn exec<R: Regs + ?Sized>(f: Fast, r: &mut R) {
    apply(f, &mut One(r))
}

/// A fast form's computation, through `x`'s reads and writes (one lane or a warp's rows).
#[inline(always)]
fn apply(f: Fast, x: &mut impl Apply) {
    match f {
        Fast::Generic => unreachable!("generic instructions take the general path"),
        Fast::Bin { op, w32, d, a, b } => {
            let (bits, m) = width(w32);
            x.map2(
                d,
                a,
                b,
                #[inline(always)]
                |ra, rb| {
                    let (x, y) = (ra & m, rb & m);
                    let v = match op {
                        Bin::Add => x.wrapping_add(y),
                        Bin::Sub => x.wrapping_sub(y),
                        Bin::Mul => x.wrapping_mul(y),
                        Bin::And => x & y,
                        Bin::Or => x | y,
                        Bin::Xor => x ^ y,
                        // Shift amounts are the unsigned 32-bit register, clamped at the width.
                        Bin::Shl => {
                            let s = rb as u32;
                            if s >= bits {
                                0
                            } else {
                                x << s
                            }
                        }
                        Bin::ShrU => {
                            let s = rb as u32;
                            if s >= bits {
                                0
                            } else {
                                x >> s
                            }
                        }
                        Bin::ShrS => {
                            let s = (rb as u32).min(bits).min(63);
                            (sx(x, bits) >> s) as u64
                        }
                    };
                    v & m
                },
            );
        }
        Fast::Mad { w32, d, a, b, c } => {
            let (_, m) = width(w32);
            x.map3(
                d,
                a,
                b,
                c,
                #[inline(always)]
                |ra, rb, rc| (ra & m).wrapping_mul(rb & m).wrapping_add(rc) & m,
            );
        }
        Fast::MulWide { signed, d, a, b } => x.map2(
            d,
            a,
            b,
            #[inline(always)]
            |ra, rb| {
                let (x, y) = (ra & 0xffff_ffff, rb & 0xffff_ffff);
                if signed {
                    sx(x, 32).wrapping_mul(sx(y, 32)) as u64
                } else {
                    x.wrapping_mul(y)
                }
            },
        ),
        Fast::Mov { w32, d, a } => {
            let m = width(w32).1;
            x.map1(
                d,
                a,
                #[inline(always)]
                |ra| ra & m,
            );
        }
        Fast::Setp { cmp: c, signed, w32, d, a, b } => {
            let (bits, m) = width(w32);
            x.map2(
                d,
                a,
                b,
                #[inline(always)]
                |ra, rb| {
                    let (x, y) = (ra & m, rb & m);
                    let o = if signed { sx(x, bits).cmp(&sx(y, bits)) } else { x.cmp(&y) };
                    cmp(c, o) as u64
                },
            );
        }
        Fast::Selp { w32, d, a, b, c } => {
            let m = width(w32).1;
            x.map3(
                d,
                a,
                b,
                c,
                #[inline(always)]
                |ra, rb, rc| if rc & 1 != 0 { ra & m } else { rb & m },
            );
        }
        Fast::Not { bits, d, a } => {
            let m = mask(bits as u32);
            x.map1(
                d,
                a,
                #[inline(always)]
                |ra| !ra & m,
            );
        }
        Fast::PredBin { op, d, a, b } => x.map2(
            d,
            a,
            b,
            #[inline(always)]
            |ra, rb| {
                let (x, y) = (ra & 1, rb & 1);
                match op {
                    Bin::And => x & y,
                    Bin::Or => x | y,
                    _ => x ^ y,
                }
            },
        ),
        Fast::MinMax { max, signed, w32, d, a, b } => {
            let (bits, m) = width(w32);
            x.map2(
                d,
                a,
                b,
                #[inline(always)]
                |ra, rb| {
                    let (x, y) = (ra & m, rb & m);
                    let v = if signed {
                        let (x, y) = (sx(x, bits), sx(y, bits));
                        (if max { x.max(y) } else { x.min(y) }) as u64
                    } else if max {
                        x.max(y)
                    } else {
                        x.min(y)
                    };
                    v & m
                },
            );
        }
        Fast::Pack2 { part, d, lo, hi } => {
            let m = mask(part as u32);
            x.map2(
                d,
                lo,
                hi,
                #[inline(always)]
                |rl, rh| (rl & m) | (rh & m) << part,
            );
        }
        Fast::Unpack2 { part, a, lo, hi } => {
            let m = mask(part as u32);
            x.split(
                lo,
                hi,
                a,
                #[inline(always)]
                |v| (v & m, (v >> part) & m),
            );
        }
        Fast::IntCvt { src, signed, dst, d, a } => x.map1(
            d,
            a,
            #[inline(always)]
            |ra| {
                let raw = ra & mask(src as u32);
                let v = if signed { sx(raw, src as u32) as u64 } else { raw };
                v & mask(dst as u32)
            },
        ),
        Fast::F32Bin { op, d, a, b } => x.map2(
            d,
            a,
            b,
            #[inline(always)]
            |ra, rb| {
                let (x, y) = (f32_of(ra), f32_of(rb));
                f32_result(match op {
                    FBin::Add => x + y,
                    FBin::Sub => x - y,
                    FBin::Mul => x * y,
                    FBin::Div => x / y,
                })
            },
        ),
        Fast::F32Fma { d, a, b, c } => x.map3(
            d,
            a,
            b,
            c,
            #[inline(always)]
            |ra, rb, rc| f32_result(f32_of(ra).mul_add(f32_of(rb), f32_of(rc))),
        ),
        Fast::F64Bin { op, d, a, b } => x.map2(
            d,
            a,
            b,
            #[inline(always)]
            |ra, rb| {
                let (x, y) = (f64::from_bits(ra), f64::from_bits(rb));
                match op {
                    FBin::Add => x + y,
                    FBin::Sub => x - y,
                    FBin::Mul => x * y,
                    FBin::Div => x / y,
                }
                .to_bits()
            },
        ),
        Fast::FSign { abs, f64, d, a } => {
            let sign = if f64 { 1u64 << 63 } else { 1 << 31 };
            x.map1(
                d,
                a,
                #[inline(always)]
                |ra| {
                    let v = if f64 { ra } else { ra & u32::MAX as u64 };
                    if abs {
                        v & !sign
                    } else {
                        v ^ sign
                    }
                },
            );
        }
        Fast::FSqrt { f64, d, a } => x.map1(
            d,
            a,
            #[inline(always)]
            |ra| if f64 { f64::from_bits(ra).sqrt().to_bits() } else { f32_result(f32_of(ra).sqrt()) },
        ),
        Fast::FSetp { cmp, f64, d, a, b } => x.map2(
            d,
            a,
            b,
            #[inline(always)]
            |ra, rb| {
                (if f64 {
                    let (x, y) = (f64::from_bits(ra), f64::from_bits(rb));
                    compare(cmp, x, y, x.is_nan() || y.is_nan())
                } else {
                    let (x, y) = (f32_of(ra), f32_of(rb));
                    compare(cmp, x, y, x.is_nan() || y.is_nan())
                }) as u64
            },
        ),
        Fast::Cvt { kind, d, a } => x.map1(
            d,
            a,
            #[inline(always)]
            |v| match kind {
                CvtKind::F32FromF16 => f32_result(Half::F16.to_f64(v as u16) as f32),
                CvtKind::F64FromF32 => (f32::from_bits(v as u32) as f64).to_bits(),
                CvtKind::F16FromF32 => {
                    let f = f32::from_bits(v as u32);
                    if f.is_nan() {
                        CANONICAL_NAN_F16 as u64
                    } else {
                        Half::F16.from_f64(f as f64) as u64
                    }
                }
                CvtKind::F32FromF64 => f32_result(f64::from_bits(v) as f32),
            },
        ),
        Fast::F64Fma { d, a, b, c } => x.map3(
            d,
            a,
            b,
            c,
            #[inline(always)]
            |ra, rb, rc| f64::from_bits(ra).mul_add(f64::from_bits(rb), f64::from_bits(rc)).to_bits(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::fast::decode_one;
    use crate::ir::{Cmp, Inst, Op, Round, Ty, NONE};

    fn inst(op: Op, ty: Ty, c: bool) -> Inst {
        Inst {
            op,
            ty,
            ty2: ty,
            round: Round::Default,
            flags: 0,
            guard: NONE,
            guard_neg: false,
            d: 0,
            a: 1,
            b: if matches!(op, Op::Mov | Op::Not) { NONE } else { 2 },
            c: if c { 3 } else { NONE },
            v: Box::new([]),
            off: 0,
            line: 1,
        }
    }

    #[test]
    fn every_fast_form_computes_what_int_rs_computes() {
        let edges: [u64; 12] =
            [0, 1, 2, 31, 32, 63, 64, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 0x8000_0000_0000_0000, u64::MAX];
        let cmps = [Cmp::Eq, Cmp::Ne, Cmp::Lt, Cmp::Le, Cmp::Gt, Cmp::Ge];
        let mut ops = vec![
            (Op::Add, false),
            (Op::Sub, false),
            (Op::MulLo, false),
            (Op::And, false),
            (Op::Or, false),
            (Op::Xor, false),
            (Op::Shl, false),
            (Op::Shr, false),
            (Op::MadLo, true),
            (Op::MulWide, false),
            (Op::Mov, false),
            (Op::Selp, true),
            (Op::Min, false),
            (Op::Max, false),
            (Op::Not, false),
        ];
        ops.extend(cmps.iter().map(|&c| (Op::Setp(c), false)));
        let mut checked = 0;
        for ty in [Ty::B32, Ty::U32, Ty::S32, Ty::B64, Ty::U64, Ty::S64] {
            for &(op, c) in &ops {
                let i = inst(op, ty, c);
                let f = decode_one(&i);
                if matches!(f, Fast::Generic) {
                    // mul.wide of 64-bit operands has no fast form.
                    assert!(op == Op::MulWide && !matches!(ty, Ty::B32 | Ty::U32 | Ty::S32), "{op:?} {ty:?}");
                    continue;
                }
                for &a in &edges {
                    for &b in &edges {
                        for &cv in &[0u64, 1, 0xffff_ffff_0000_0001] {
                            let mut want = [0xdead_beef_u64, a, b, cv];
                            let mut got = want;
                            super::super::int::exec(&i, &mut want);
                            exec(f, &mut got);
                            assert_eq!(got, want, "{op:?}.{ty:?} a={a:#x} b={b:#x} c={cv:#x}");
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked > 10_000);
    }

    #[test]
    fn predicate_logic_and_integer_cvt_compute_what_int_rs_and_convert_rs_compute() {
        // Predicates: registers holding 0 or 1, and dirty ones (only bit 0 counts).
        let preds = [0u64, 1, 2, 3, u64::MAX];
        for op in [Op::And, Op::Or, Op::Xor, Op::Not] {
            let i = inst(op, Ty::Pred, false);
            let f = decode_one(&i);
            assert!(!matches!(f, Fast::Generic), "{op:?}.pred has a fast form");
            for &a in &preds {
                for &b in &preds {
                    let mut want = [0xdead_beef_u64, a, b, 0];
                    let mut got = want;
                    super::super::int::exec(&i, &mut want);
                    exec(f, &mut got);
                    assert_eq!(got, want, "{op:?}.pred a={a:#x} b={b:#x}");
                }
            }
        }
        // mov of two halves into a register and out of one, at 32 and 64 bits, with an
        // operand register shared with the destination.
        for ty in [Ty::B32, Ty::B64] {
            for (op, v) in [(Op::Pack, [1u32, 2]), (Op::Unpack, [0, 2]), (Op::Unpack, [1, 2]), (Op::Pack, [0, 0])] {
                let mut i = inst(op, ty, false);
                i.v = Box::new(v);
                if op == Op::Pack {
                    i.a = NONE;
                }
                let f = decode_one(&i);
                assert!(!matches!(f, Fast::Generic), "{op:?}.{ty:?}");
                for &a in &[0u64, 0x1234_5678_9abc_def0, u64::MAX] {
                    for &b in &[0u64, 0xffff_8001, u64::MAX] {
                        let mut want = [0xdead_beef_u64, a, b, 0];
                        let mut got = want;
                        super::super::int::exec(&i, &mut want);
                        exec(f, &mut got);
                        assert_eq!(got, want, "{op:?}.{ty:?} {v:?} a={a:#x} b={b:#x}");
                    }
                }
            }
        }
        // Every integer-to-integer cvt without .sat, on values with dirty upper bits.
        let ints =
            [Ty::B8, Ty::U8, Ty::S8, Ty::B16, Ty::U16, Ty::S16, Ty::B32, Ty::U32, Ty::S32, Ty::B64, Ty::U64, Ty::S64];
        let vals =
            [0u64, 1, 0x7f, 0x80, 0xff, 0x7fff, 0x8000, 0xffff_ffff, 0x8000_0000, 0xabcd_ef01_8765_4321, u64::MAX];
        let mut checked = 0;
        for dt in ints {
            for st in ints {
                let mut i = inst(Op::Cvt, dt, false);
                (i.ty2, i.b) = (st, NONE);
                let f = decode_one(&i);
                assert!(matches!(f, Fast::IntCvt { .. }), "cvt.{dt:?}.{st:?}");
                for &a in &vals {
                    let mut want = [0xdead_beef_u64, a, 0, 0];
                    let mut got = want;
                    super::super::convert::exec(&i, &mut want);
                    exec(f, &mut got);
                    assert_eq!(got, want, "cvt.{dt:?}.{st:?} of {a:#x}");
                    checked += 1;
                }
                // .sat keeps the general path.
                i.flags = crate::ir::SAT;
                assert!(matches!(decode_one(&i), Fast::Generic), "cvt.sat.{dt:?}.{st:?}");
            }
        }
        assert_eq!(checked, 144 * vals.len());
    }

    #[test]
    fn every_float_fast_form_computes_what_float_rs_and_int_rs_compute() {
        let edges: [f32; 16] = [
            0.0,
            -0.0,
            1.0,
            -1.5,
            3.0e38,
            -3.0e38,
            f32::MIN_POSITIVE,
            f32::from_bits(1),
            -f32::from_bits(0x007f_ffff),
            1.0 + f32::EPSILON,
            0.1,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::from_bits(0xffc0_1234),
            f32::from_bits(0x7f80_0001),
        ];
        let mut checked = 0;
        for (op, c) in [(Op::FAdd, false), (Op::FSub, false), (Op::FMul, false), (Op::Fma, true)] {
            for round in [Round::Default, Round::Rn] {
                let mut i = inst(op, Ty::F32, c);
                i.round = round;
                let f = decode_one(&i);
                assert!(!matches!(f, Fast::Generic), "{op:?}.{round:?} has a fast form");
                for &a in &edges {
                    for &b in &edges {
                        for &cv in &[0.0f32, -0.0, 1.0e-30, f32::NAN, f32::INFINITY] {
                            let mut want =
                                [0xdead_beef_u64, a.to_bits() as u64, b.to_bits() as u64, cv.to_bits() as u64];
                            let mut got = want;
                            super::super::float::exec(&i, &mut want, super::super::approx::Approx::Exact);
                            exec(f, &mut got);
                            assert_eq!(got, want, "{op:?}.f32 a={a:e} b={b:e} c={cv:e}");
                            checked += 1;
                        }
                    }
                }
            }
            // .ftz, .sat and directed roundings keep the general path.
            for (flags, round) in [(crate::ir::FTZ, Round::Default), (crate::ir::SAT, Round::Default), (0, Round::Rz)] {
                let mut i = inst(op, Ty::F32, c);
                (i.flags, i.round) = (flags, round);
                assert!(matches!(decode_one(&i), Fast::Generic), "{op:?} flags {flags:#x} {round:?}");
            }
        }
        assert!(checked > 4_000);
    }

    /// div.rn, sqrt.rn, neg, abs, setp (every comparison) and selp of f32 and f64: what
    /// the general path (float.rs, int.rs for selp) computes, under both approximation
    /// modes (none of these is approximate, so `bound` must not move them); `.ftz` and the
    /// approximate or full-range forms keep the general path.
    #[test]
    fn float_division_sqrt_sign_compare_and_select_compute_what_the_general_path_computes() {
        let edges32: [f32; 12] = [
            0.0,
            -0.0,
            1.0,
            -1.5,
            3.0e38,
            f32::MIN_POSITIVE,
            -f32::from_bits(1),
            0.1,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::from_bits(0xffc0_1234),
        ];
        let edges: Vec<(u64, u64)> = edges32
            .iter()
            .map(|&x| (x.to_bits() as u64 | 0xabcd_0000_0000_0000, (x as f64).to_bits()))
            .chain([(0x1234_5678_9abc_def0, f64::from_bits(0x7ff0_0000_0000_0abc).to_bits())])
            .chain([(0, f64::MIN_POSITIVE.to_bits() / 3)])
            .collect();
        let cmps = [
            Cmp::Eq,
            Cmp::Ne,
            Cmp::Lt,
            Cmp::Le,
            Cmp::Gt,
            Cmp::Ge,
            Cmp::Equ,
            Cmp::Neu,
            Cmp::Ltu,
            Cmp::Leu,
            Cmp::Gtu,
            Cmp::Geu,
            Cmp::Num,
            Cmp::Nan,
        ];
        let mut forms: Vec<(Op, bool, Round)> = vec![
            (Op::FDiv, false, Round::Rn),
            (Op::Sqrt, false, Round::Rn),
            (Op::FNeg, false, Round::Default),
            (Op::FAbs, false, Round::Default),
            (Op::Selp, true, Round::Default),
        ];
        forms.extend(cmps.iter().map(|&c| (Op::Setp(c), false, Round::Default)));
        let mut checked = 0;
        for ty in [Ty::F32, Ty::F64] {
            for &(op, c, round) in &forms {
                let mut i = inst(op, ty, c);
                i.round = round;
                if matches!(op, Op::Sqrt | Op::FNeg | Op::FAbs) {
                    i.b = NONE;
                }
                let f = decode_one(&i);
                assert!(!matches!(f, Fast::Generic), "{op:?}.{ty:?} has a fast form");
                for &(a32, a64) in &edges {
                    for &(b32, b64) in &edges {
                        for p in [0u64, 1, 2] {
                            let (a, b) = if ty == Ty::F32 { (a32, b32) } else { (a64, b64) };
                            let regs = [0xdead_beef_u64, a, b, p];
                            let mut got = regs;
                            exec(f, &mut got);
                            for mode in [super::super::approx::Approx::Exact, super::super::approx::Approx::Bound] {
                                let mut want = regs;
                                if op == Op::Selp {
                                    super::super::int::exec(&i, &mut want);
                                } else {
                                    super::super::float::exec(&i, &mut want, mode);
                                }
                                assert_eq!(got, want, "{op:?}.{ty:?} a={a:#x} b={b:#x} c={p} {mode:?}");
                                checked += 1;
                            }
                        }
                    }
                }
            }
            // .ftz, div.full / div.approx and sqrt.approx keep the general path.
            for (op, flags, round) in [
                (Op::FNeg, crate::ir::FTZ, Round::Default),
                (Op::Setp(Cmp::Lt), crate::ir::FTZ, Round::Default),
                (Op::FDiv, 0, Round::Default),
                (Op::FDiv, crate::ir::APPROX, Round::Default),
                (Op::Sqrt, crate::ir::APPROX, Round::Default),
            ] {
                let mut i = inst(op, ty, false);
                (i.flags, i.round) = (flags, round);
                assert!(matches!(decode_one(&i), Fast::Generic), "{op:?}.{ty:?} flags {flags:#x} {round:?}");
            }
        }
        assert!(checked > 20_000, "{checked}");
    }

    #[test]
    fn every_cvt_fast_form_computes_what_convert_rs_computes() {
        // Bit patterns covering zeros, subnormals, the rounding boundaries of each
        // narrowing, overflow, infinities and NaNs, in the low bits and with dirty upper
        // bits (a register reused at another width).
        let mut vals: Vec<u64> =
            vec![0, 1, 0x3ff, 0x400, 0x3c00, 0x7bff, 0x7c00, 0x7c01, 0x7e00, 0x8001, 0xfc00, 0xffff];
        for f in [0.0f32, -0.0, 1.0, 65504.0, 65519.99, 65520.0, 1.0e-8, 5.9604645e-8, 2.9802322e-8, 1.0 + f32::EPSILON]
        {
            vals.push(f.to_bits() as u64);
            vals.push((-f).to_bits() as u64);
        }
        vals.extend([0x7f80_0000, 0xff80_0000, 0x7fc0_0000, 0x7f80_0001, 0xffc0_1234, 0x0000_0001, 0x807f_ffff]);
        for f in [1.0e300f64, -1.0e-300, 3.4028235677973366e38, 3.4028236e38, 1.401298464324817e-45, 7.0e-46] {
            vals.push(f.to_bits());
        }
        vals.extend([0x7ff0_0000_0000_0000, 0x7ff8_0000_0000_0042, 0xfff0_0000_0000_0001]);
        let dirty: Vec<u64> = vals.iter().map(|v| v | 0xabcd_0000_0000_0000).collect();
        vals.extend(dirty);
        let forms = [
            (Ty::F32, Ty::F16, Round::Default),
            (Ty::F64, Ty::F32, Round::Default),
            (Ty::F16, Ty::F32, Round::Rn),
            (Ty::F32, Ty::F64, Round::Rn),
        ];
        let mut checked = 0;
        for (dt, st, round) in forms {
            let mut i = inst(Op::Cvt, dt, false);
            (i.ty2, i.round, i.b) = (st, round, NONE);
            let f = decode_one(&i);
            assert!(!matches!(f, Fast::Generic), "cvt.{dt:?}.{st:?}");
            for &a in &vals {
                let mut want = [0xdead_beef_u64, a, 0, 0];
                let mut got = want;
                super::super::convert::exec(&i, &mut want);
                exec(f, &mut got);
                assert_eq!(got, want, "cvt.{round:?}.{dt:?}.{st:?} of {a:#x}");
                checked += 1;
            }
            // Flags and other roundings keep the general path.
            for (flags, round) in [(crate::ir::FTZ, round), (crate::ir::SAT, round), (0, Round::Rz)] {
                let mut i = inst(Op::Cvt, dt, false);
                (i.ty2, i.round, i.flags, i.b) = (st, round, flags, NONE);
                assert!(matches!(decode_one(&i), Fast::Generic), "cvt.{dt:?}.{st:?} {flags:#x} {round:?}");
            }
        }
        assert!(checked > 200);
    }

    /// Every fast form run over a warp's register rows (`exec_warp`) computes, for each
    /// lane of the group whose guard holds, what the per-lane `exec` computes on that
    /// lane's registers, and leaves every other lane's registers as they were: random
    /// rows, random groups (full, partial, one lane), guards of both senses, and a
    /// destination that is also a source.
    #[test]
    fn exec_warp_is_exec_on_each_active_lane() {
        let mut next = crate::exec::xorshift(0x9e37_79b9_7f4a_7c15u64);
        let ops = [
            Op::Add,
            Op::Sub,
            Op::MulLo,
            Op::MulWide,
            Op::MadLo,
            Op::Min,
            Op::Max,
            Op::And,
            Op::Or,
            Op::Xor,
            Op::Not,
            Op::Shl,
            Op::Shr,
            Op::Selp,
            Op::Mov,
            Op::FAdd,
            Op::FSub,
            Op::FMul,
            Op::Fma,
            Op::FDiv,
            Op::Sqrt,
            Op::FAbs,
            Op::FNeg,
            Op::Setp(Cmp::Lt),
            Op::Setp(Cmp::Ge),
            Op::Setp(Cmp::Ne),
            Op::Cvt,
            Op::Pack,
            Op::Unpack,
        ];
        let types = [Ty::Pred, Ty::B32, Ty::U32, Ty::S32, Ty::B64, Ty::U64, Ty::S64, Ty::F32, Ty::F64, Ty::F16];
        let mut forms = Vec::new();
        for &op in &ops {
            for &ty in &types {
                for &ty2 in &types {
                    if op != Op::Cvt && ty2 != ty {
                        continue;
                    }
                    for alias in [false, true] {
                        let c = matches!(op, Op::MadLo | Op::Selp | Op::Fma);
                        let mut i = inst(op, ty, c);
                        i.ty2 = ty2;
                        if op == Op::Cvt {
                            i.b = NONE;
                        }
                        if matches!(op, Op::Pack | Op::Unpack) {
                            i.v = Box::new([1, 2]);
                            if op == Op::Pack {
                                i.a = NONE;
                            }
                        }
                        if alias {
                            // The destination is the first source (for unpack, the first
                            // destination is the source).
                            match op {
                                Op::Unpack => i.v = Box::new([0, 2]),
                                Op::Pack => i.v = Box::new([0, 2]),
                                _ => i.a = 0,
                            }
                        }
                        let f = decode_one(&i);
                        if !matches!(f, Fast::Generic) {
                            forms.push((f, format!("{op:?}.{ty:?}.{ty2:?} alias {alias}")));
                        }
                    }
                }
            }
        }
        assert!(forms.len() > 60, "only {} fast forms decoded", forms.len());
        const ROWS: usize = 5;
        const GUARD: u32 = 4;
        for (f, name) in &forms {
            for trial in 0..24 {
                let lanes = if trial % 4 == 3 { 1 + next() as usize % 31 } else { 32 };
                let full = crate::exec::all_lanes(lanes);
                let group = match trial % 3 {
                    0 => full,
                    1 => next() as u32 & full,
                    _ => 1 << (next() as usize % lanes),
                };
                let (guard, neg) = match trial % 5 {
                    0 | 1 => (NONE, false),
                    2 => (GUARD, false),
                    _ => (GUARD, true),
                };
                let file: Vec<u64> = (0..ROWS * WARP)
                    .map(|k| match next() % 4 {
                        0 => next() & 1,
                        1 => next() & 0xffff_ffff,
                        2 if k / WARP == 1 => next() % 64,
                        _ => next(),
                    })
                    .collect();
                let mut got = file.clone();
                exec_warp(*f, &mut got, full, group, guard, neg);
                let mut want = file.clone();
                for l in 0..lanes {
                    let mut r = crate::exec::Lane { file: &mut want, lane: l };
                    if group >> l & 1 != 0 && crate::exec::guard_holds(&r, guard, neg) {
                        exec(*f, &mut r);
                    }
                }
                for r in 0..ROWS {
                    for l in 0..lanes {
                        let (g, w) = (got[r * WARP + l], want[r * WARP + l]);
                        assert_eq!(g, w, "{name}: register {r} lane {l}, group {group:#x} guard {guard} neg {neg}");
                    }
                }
            }
        }
    }
}
