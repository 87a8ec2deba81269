//! The error model of the approximate float instructions (`MP_EMU_APPROX`).
//!
//! The executor computes `ex2.approx`, `lg2.approx`, `rcp.approx`, `sqrt.approx`,
//! `div.approx` and `div.full` to within far less than the ISA's stated error (the exact
//! result rounded once). A kernel whose tolerance holds only because of that passes here
//! and fails on a GPU. Under `MP_EMU_APPROX=bound` every such result is moved by the
//! instruction's documented maximum error instead, so a tolerance is checked against
//! the worst the ISA allows:
//!
//! - `exact` (default): the exact result rounded once (what the emulator always did).
//! - `bound`: the exact result moved by the bound, in the unit the ISA states it (ulps
//!   from the correctly rounded result, a relative or an absolute error, over the input
//!   range it names), always away from zero (lg2's exact zero, at input 1, upward). One
//!   fixed direction for every instruction and element, because the errors that break a
//!   tolerance are the ones that do not cancel: a sum of exps (softmax, cross-entropy),
//!   a mean or a norm moves by the whole bound only if every term moves the same way,
//!   and "away from zero" is that way for terms of one sign while keeping every result's
//!   sign and never making a zero. It is deterministic, so a failure replays.
//!
//! What the ISA says of special inputs holds in both modes (the exact result already is
//! the table's value: +-0, +-inf, NaN are never moved); under `bound` the documented
//! special range of `div.approx.f32` applies too (0, or NaN for an infinite dividend,
//! for 2^126 < |b| < 2^128), and `rcp.approx.ftz.f64` computes on the upper 20 mantissa
//! bits as its section describes. A finite result is never moved past the largest finite
//! value (the bound is an error of a finite result, not an overflow), and a result that
//! rounds to zero stays zero: an underflow's error is not modelled (`.ftz`, which every
//! approximate instruction nvcc emits for our kernels carries, flushes it anyway).
//!
//! Not modelled: the instructions the loader does not accept (`rsqrt`, `sin`, `cos`,
//! `tanh`, the 16-bit `ex2`; nvcc emits none of them for cuda/), and the real error
//! distribution: only its bound.
//!
//! Section numbers are those of the PTX ISA 9.1, chapter 9.7.3 ("Floating Point
//! Instructions").

use crate::setting::Setting;

use crate::ir::{Inst, Op, Round, APPROX};

/// How approximate instructions compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Approx {
    /// The exact result rounded once.
    Exact,
    /// The exact result moved by the ISA's maximum error, away from zero.
    Bound,
}

impl Approx {
    /// Parses `MP_EMU_APPROX`'s value.
    pub fn parse(v: &str) -> Option<Approx> {
        match v {
            "exact" => Some(Approx::Exact),
            "bound" => Some(Approx::Bound),
            _ => None,
        }
    }

    /// `MP_EMU_APPROX` (read once per process); unset is `exact`, and an unknown value is
    /// refused loudly, once, and taken as `exact`, as `MP_EMU_BLOCK_ORDER` does.
    pub fn from_env() -> Approx {
        static MODE: Setting = Setting::new("MP_EMU_APPROX", &["exact", "bound"]);
        [Approx::Exact, Approx::Bound][MODE.get() as usize]
    }
}

/// `v` moved `n` f32 steps away from zero, at most to the largest finite value; zero,
/// infinities and NaN unchanged.
pub fn ulps_away(v: f32, n: u32) -> f32 {
    if !v.is_finite() || v == 0.0 {
        return v;
    }
    let mag = ((v.to_bits() & 0x7fff_ffff) + n).min(f32::MAX.to_bits());
    f32::from_bits((v.to_bits() & 0x8000_0000) | mag)
}

/// `x` (exact, in f64) moved by `abs + rel |x|` away from zero (upward for a zero), then
/// rounded to nearest f32, at most to the largest finite value.
fn moved(x: f64, abs: f64, rel: f64) -> f32 {
    let d = abs + rel * x.abs();
    let y = if x >= 0.0 { x + d } else { x - d };
    (y as f32).clamp(-f32::MAX, f32::MAX)
}

/// The `bound` result of an f32 instruction `i` on inputs `a`, `b` (after `.ftz`),
/// whose exact result is `exact`; `exact` itself for every instruction that is not
/// approximate.
pub fn bound_f32(i: &Inst, a: f32, b: f32, exact: f32) -> f32 {
    let approx = i.flags & APPROX != 0;
    match i.op {
        // 9.7.3.21 ex2: "The maximum ulp error is 2 ulp from correctly rounded result
        // across the full range of inputs." Special inputs (-inf -> +0, +-0 -> 1,
        // +inf -> +inf, NaN) give the table's value; `.ftz` makes a subnormal input 0
        // (the bf16 form's table: "-subnormal -> +1.0").
        Op::Ex2 if a == 0.0 || !a.is_finite() => exact,
        Op::Ex2 => ulps_away(exact, 2),
        // 9.7.3.20 lg2: "The maximum absolute error is 2^-22 when the input operand is
        // in the range (0.5, 2). For positive finite inputs outside of this interval,
        // maximum relative error is 2^-22." Zero and negative inputs, inf and NaN give
        // the table's -inf, NaN, +inf.
        Op::Lg2 if a <= 0.0 || !a.is_finite() => exact,
        Op::Lg2 => {
            let x = (a as f64).log2();
            if a > 0.5 && a < 2.0 {
                moved(x, 2f64.powi(-22), 0.0)
            } else {
                moved(x, 0.0, 2f64.powi(-22))
            }
        }
        // 9.7.3.13 rcp: "rcp.approx.f32 implements a fast approximation to reciprocal.
        // The maximum ulp error is 1 across the full range of inputs." (+-0 -> +-inf,
        // +-inf -> +-0, NaN: the table; an overflow of 1/subnormal stays inf.)
        Op::Rcp if approx => ulps_away(exact, 1),
        // 9.7.3.15 sqrt: "The maximum relative error over the entire positive finite
        // floating-point range is 2^-23." (-0 -> -0, negative -> NaN, +inf -> +inf.)
        Op::Sqrt if approx && a > 0.0 && a.is_finite() => moved((a as f64).sqrt(), 0.0, 2f64.powi(-23)),
        // 9.7.3.8 div: "div.approx.f32 implements a fast approximation to divide,
        // computed as d = a * (1/b). For |b| in [2^-126, 2^126], the maximum ulp error
        // is 2. For 2^126 < |b| < 2^128, if a is infinity, div.approx.f32 returns NaN,
        // otherwise it returns a sign-preserving zero." (1/b is then below the normal
        // range and flushed.) The ISA states no bound for a subnormal |b|; it gets the
        // same 2 ulps.
        Op::FDiv if approx && b.is_finite() && b.abs() > 2f32.powi(126) => {
            if a.is_nan() || a.is_infinite() {
                f32::NAN
            } else {
                f32::from_bits((a.to_bits() ^ b.to_bits()) & 0x8000_0000)
            }
        }
        Op::FDiv if approx => ulps_away(exact, 2),
        // 9.7.3.8 div: "div.full.f32 implements a relatively fast, full-range
        // approximation that scales operands to achieve better accuracy ... The maximum
        // ulp error is 2 across the full range of inputs." (div.full has no rounding
        // modifier; div.rn is the IEEE one.)
        Op::FDiv if i.round == Round::Default => ulps_away(exact, 2),
        _ => exact,
    }
}

/// The `bound` result of `rcp.approx.ftz.f64` of `a` (after `.ftz`); any other f64
/// instruction's `exact` unchanged (the ISA has no other approximate f64 form).
///
/// 9.7.3.14 rcp.approx.ftz.f64 "implements a fast, gross approximation to reciprocal":
/// it keeps only the most-significant 32 bits of `a` (20 mantissa bits), computes the
/// reciprocal of that, places it in the most-significant 32 bits of `d` and zeroes the
/// other 32; subnormal inputs and results are flushed. The section states no error, so
/// the model is that description with its 20-bit result rounded away from zero: under
/// 2^-20 relative from the truncated input and under 2^-20 from the result, both making
/// the magnitude larger.
pub fn bound_f64(i: &Inst, a: f64, _b: f64, exact: f64) -> f64 {
    if !(i.op == Op::Rcp && i.flags & APPROX != 0) {
        return exact;
    }
    if a.is_nan() {
        // A NaN whose payload lies in the low half would become an infinity below; the
        // exact path's NaN is made the section's canonical NaN by the caller.
        return exact;
    }
    let high = f64::from_bits(a.to_bits() & 0xffff_ffff_0000_0000);
    let r = 1.0 / high;
    if r.is_nan() || r.is_infinite() || r == 0.0 {
        return r;
    }
    if r.is_subnormal() {
        return f64::from_bits(r.to_bits() & 0x8000_0000_0000_0000);
    }
    let bits = r.to_bits();
    let upper = bits >> 32;
    let upper = if bits & 0xffff_ffff != 0 { upper + 1 } else { upper };
    f64::from_bits(upper << 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulps_away_moves_magnitude_and_saturates() {
        assert_eq!(ulps_away(1.0, 2), f32::from_bits(0x3f80_0002));
        assert_eq!(ulps_away(-1.0, 1), f32::from_bits(0xbf80_0001));
        assert_eq!(ulps_away(f32::MAX, 2), f32::MAX);
        assert_eq!(ulps_away(f32::from_bits(1), 2), f32::from_bits(3));
        assert_eq!(ulps_away(0.0, 2).to_bits(), 0);
        assert_eq!(ulps_away(-0.0, 2).to_bits(), 0x8000_0000);
        assert_eq!(ulps_away(f32::NEG_INFINITY, 2), f32::NEG_INFINITY);
        assert!(ulps_away(f32::NAN, 2).is_nan());
    }

    #[test]
    fn moved_is_away_from_zero_and_finite() {
        // 2^-22 absolute on 0 and on -1 (lg2 of 1 and of 0.5's neighbourhood).
        assert_eq!(moved(0.0, 2f64.powi(-22), 0.0), 2f32.powi(-22));
        assert_eq!(moved(-1.0, 2f64.powi(-22), 0.0), -1.0 - 2f32.powi(-22));
        // 2^-23 relative on 2 is one ulp of 2 (2^-22).
        assert_eq!(moved(2.0, 0.0, 2f64.powi(-23)), f32::from_bits(0x4000_0001));
        assert_eq!(moved(f32::MAX as f64, 0.0, 2f64.powi(-20)), f32::MAX);
    }

    #[test]
    fn parse_names_both_modes() {
        assert_eq!(Approx::parse("exact"), Some(Approx::Exact));
        assert_eq!(Approx::parse("bound"), Some(Approx::Bound));
        assert_eq!(Approx::parse("Bound"), None);
    }
}
