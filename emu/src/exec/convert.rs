//! `cvt` between every integer and float type pair the loader accepts, and the bf16
//! forms (f32 to bf16 and bf16x2, bf16 to f32). Float to f16 and bf16 (once, from the
//! exact value: exec/half.rs) and f64 to f32 round to nearest even and overflow to infinity; float to integer rounds
//! as the modifier says and saturates (NaN gives 0), as the ISA specifies; integer to
//! integer sign- or zero-extends from the source type, or truncates, or with `.sat`
//! clamps to the destination type's range.

use super::Regs;
use half::f16;

use super::float::CANONICAL_NAN_F32;
use super::half::{Half, CANONICAL_NAN_BF16};
use super::int::{mask, sx};
use crate::ir::{Inst, Round, Ty, FTZ, SAT};

/// The GPU's half-precision NaN (CUDA's CUDART_NAN_FP16).
pub const CANONICAL_NAN_F16: u16 = 0x7fff;

fn round_int(x: f64, r: Round) -> f64 {
    match r {
        Round::Rzi | Round::Rz => x.trunc(),
        Round::Rmi | Round::Rm => x.floor(),
        Round::Rpi | Round::Rp => x.ceil(),
        _ => x.round_ties_even(),
    }
}

pub fn exec<R: Regs + ?Sized>(i: &Inst, r: &mut R) {
    let (dt, st) = (i.ty, i.ty2);
    if let Some(h) = match dt {
        Ty::BF16X2 => Some(Half::BF16),
        Ty::F16X2 => Some(Half::F16),
        _ => None,
    } {
        // cvt.rn.{bf16,f16}x2.f32 d, a, b: a to the upper half, b to the lower (PTX ISA, cvt).
        let one = |reg: u32| h.from_f64(f32::from_bits(r[reg as usize] as u32) as f64) as u64;
        r[i.d as usize] = one(i.a) << 16 | one(i.b);
        return;
    }
    let raw = r[i.a as usize] & mask(st.bits());
    let ftz = i.flags & FTZ != 0;
    let out = if st.is_float() {
        // Every float source is exact in f64.
        let mut x = match st {
            Ty::F16 => f16::from_bits(raw as u16).to_f64(),
            Ty::BF16 => Half::BF16.to_f64(raw as u16),
            Ty::F32 => {
                let f = f32::from_bits(raw as u32);
                if ftz && f.is_subnormal() {
                    0.0f64.copysign(f as f64)
                } else {
                    f as f64
                }
            }
            _ => f64::from_bits(raw),
        };
        if dt.is_float() {
            if matches!(i.round, Round::Rni | Round::Rzi | Round::Rmi | Round::Rpi) {
                x = round_int(x, i.round);
            }
            let mut bits = match dt {
                // From the exact f64 value: one rounding, to nearest even.
                Ty::F16 => Half::F16.from_f64(x) as u64,
                Ty::BF16 => Half::BF16.from_f64(x) as u64,
                Ty::F32 => {
                    let f = x as f32;
                    let f = if i.flags & SAT != 0 { sat(f as f64) as f32 } else { f };
                    let f = if ftz && f.is_subnormal() { 0.0f32.copysign(f) } else { f };
                    f.to_bits() as u64
                }
                _ => x.to_bits(),
            };
            if i.flags & SAT != 0 && dt != Ty::F32 {
                bits = match dt {
                    Ty::F16 => f16::from_f64(sat(f16::from_bits(bits as u16).to_f64())).to_bits() as u64,
                    _ => sat(f64::from_bits(bits)).to_bits(),
                };
            }
            // A NaN result is the GPU's canonical NaN of the destination type (f32
            // 0x7fffffff, f16 0x7fff), not the source's payload shifted into it (PTX ISA
            // 9.7.3 and 9.7.4: single- and half-precision instructions "return an
            // unspecified NaN"; the GPU's is the canonical one). An f64 result keeps the
            // payload, as f64 instructions do (see exec/float.rs).
            match dt {
                Ty::F32 if f32::from_bits(bits as u32).is_nan() => CANONICAL_NAN_F32 as u64,
                Ty::F16 if f16::from_bits(bits as u16).is_nan() => CANONICAL_NAN_F16 as u64,
                Ty::BF16 if Half::BF16.is_nan(bits as u16) => CANONICAL_NAN_BF16 as u64,
                _ => bits,
            }
        } else {
            let x = round_int(x, i.round);
            // Rust's float-to-int `as` saturates and maps NaN to 0, as cvt does.
            match dt {
                Ty::S8 => x as i8 as u64,
                Ty::S16 => x as i16 as u64,
                Ty::S32 => x as i32 as u64,
                Ty::S64 => x as i64 as u64,
                Ty::U8 | Ty::B8 => x as u8 as u64,
                Ty::U16 | Ty::B16 => x as u16 as u64,
                Ty::U32 | Ty::B32 => x as u32 as u64,
                _ => x as u64,
            }
        }
    } else {
        let v = if st.is_signed() { sx(raw, st.bits()) as u64 } else { raw };
        if dt.is_float() {
            // Integer to float: one rounding to nearest even.
            let bits = match (dt, st.is_signed()) {
                (Ty::F16, true) => f16::from_f64(v as i64 as f64).to_bits() as u64,
                (Ty::F16, false) => f16::from_f64(v as f64).to_bits() as u64,
                (Ty::F32, true) => (v as i64 as f32).to_bits() as u64,
                (Ty::F32, false) => (v as f32).to_bits() as u64,
                (_, true) => (v as i64 as f64).to_bits(),
                (_, false) => (v as f64).to_bits(),
            };
            if i.flags & SAT != 0 {
                // ISA: "For floating-point destination types, .sat limits the result to
                // the range [0.0, 1.0]": an integer gives 0 or 1.
                let positive = if st.is_signed() { v as i64 > 0 } else { v > 0 };
                match (positive, dt) {
                    (false, _) => 0,
                    (true, Ty::F16) => 0x3c00,
                    (true, Ty::F32) => 0x3f80_0000,
                    (true, _) => 0x3ff0_0000_0000_0000,
                }
            } else {
                bits
            }
        } else if i.flags & SAT != 0 {
            sat_int(v, st.is_signed(), dt)
        } else {
            v
        }
    };
    r[i.d as usize] = out & mask(dt.bits());
}

/// Integer to integer with `.sat`: `v` (the source value, sign-extended when `signed`)
/// clamped to the range of `dt`. ISA (cvt, "Saturation modifier"): "For integer
/// destination types, .sat limits the result to MININT..MAXINT for the size of the
/// operation. Note that saturation applies to both signed and unsigned integer types."
/// (The loader refuses `.sat` where `dt`'s range contains the source's, as the ISA makes
/// it illegal there.)
fn sat_int(v: u64, signed: bool, dt: Ty) -> u64 {
    let x = if signed { v as i64 as i128 } else { v as i128 };
    let bits = dt.bits();
    let (lo, hi) =
        if dt.is_signed() { (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1) } else { (0, (1i128 << bits) - 1) };
    x.clamp(lo, hi) as u64
}

fn sat(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}
