//! The CPU reference of each kernel, written for clarity, not speed. The parity tests
//! compare the GPU with these; on machines with no GPU they are what runs.
//!
//! Rounding follows the GPU exactly where the GPU rounds: f32 -> f16 is IEEE round to
//! nearest even with overflow to ±inf (the `half` crate, like `cvt.rn.f16.f32`).

use half::f16;

use crate::error::{Error, Result};

/// CPU reference of [`kernels::cast::cast_f32_f16`](crate::kernels::cast::cast_f32_f16).
pub fn cast_f32_f16(x: &[f32], y: &mut [f16]) -> Result<()> {
    check_lengths("cpu::cast_f32_f16", x.len(), y.len())?;
    y.iter_mut().zip(x).for_each(|(y, &x)| *y = f16::from_f32(x));
    Ok(())
}

/// CPU reference of [`kernels::cast::cast_f16_f32`](crate::kernels::cast::cast_f16_f32).
pub fn cast_f16_f32(x: &[f16], y: &mut [f32]) -> Result<()> {
    check_lengths("cpu::cast_f16_f32", x.len(), y.len())?;
    y.iter_mut().zip(x).for_each(|(y, &x)| *y = x.to_f32());
    Ok(())
}

fn check_lengths(op: &'static str, x: usize, y: usize) -> Result<()> {
    if x == y {
        Ok(())
    } else {
        Err(Error::LengthMismatch { op, what: "y", expected: x, got: y })
    }
}
