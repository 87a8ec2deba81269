//! Makes the fp16 working copy of a set of fp32 master weights, as the first step of
//! mixed-precision training does, on the GPU when there is one and on the CPU
//! reference otherwise, and reports what fp16 could not represent.
//!
//!     cargo run --release --example 01_cast

use mixed_precision::backend::cpu;
use mixed_precision::half::f16;
use mixed_precision::rng::Rng;
use mixed_precision::{Device, Error, Tensor};

fn main() -> Result<(), Error> {
    let n = 1 << 20;
    let mut rng = Rng::new(0);
    // Mostly ordinary weights, plus a few that fp16 cannot hold.
    let mut master: Vec<f32> = (0..n).map(|_| 0.02 * rng.normal()).collect();
    master[10] = 1e5; // overflows to +inf
    master[11] = 1e-9; // underflows to 0

    let working: Vec<f16> = match Device::new(0) {
        Ok(dev) => {
            println!("backend: cuda ({})", dev.info().name);
            Tensor::from_host(&dev, &master, &[n])?.to_f16()?.to_host()?
        }
        Err(e @ (Error::NoDriver | Error::NoDevice { .. })) => {
            println!("backend: cpu ({e})");
            let mut w = vec![f16::ZERO; n];
            cpu::cast_f32_f16(&master, &mut w)?;
            w
        }
        Err(e) => return Err(e),
    };

    let overflowed = working.iter().filter(|w| w.is_infinite()).count();
    let flushed = master.iter().zip(&working).filter(|(m, w)| **m != 0.0 && w.to_f32() == 0.0).count();
    let max_rel = master
        .iter()
        .zip(&working)
        .filter(|(m, w)| w.is_finite() && m.abs() > 1e-4)
        .map(|(m, w)| ((w.to_f32() - m) / m).abs())
        .fold(0.0f32, f32::max);
    println!("{n} weights cast to fp16: {overflowed} overflowed to inf, {flushed} flushed to zero");
    println!("largest relative rounding error of normal values: {max_rel:.2e} (fp16 unit roundoff 4.9e-4)");
    Ok(())
}
