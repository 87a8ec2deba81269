//! A program that uses mixed-precision next to cudarc with candle's features
//! (`dynamic-linking`): it must build (CI) and, where a driver is present, run one cast
//! through each of them on device 0.

use mixed_precision::half::f16;
use mixed_precision::{Device, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // cudarc directly, as candle uses it: with `dynamic-linking`, libcuda is linked.
    let ctx = cudarc::driver::CudaContext::new(0)?;
    let stream = ctx.default_stream();
    let x = [1.0f32, -2.0, 65504.0, 1e10];
    let xd = stream.clone_htod(&x)?;
    let back = stream.clone_dtoh(&xd)?;
    assert_eq!(back, x);

    // mixed-precision on the same device.
    let dev = Device::new(0)?;
    let t = Tensor::from_host(&dev, &x, &[x.len()])?;
    let h = t.to_f16()?.to_host()?;
    let want = [f16::from_f32(1.0), f16::from_f32(-2.0), f16::MAX, f16::INFINITY];
    assert_eq!(h.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    println!("candle-link: cudarc (dynamic-linking) and mixed-precision ran on device 0");
    Ok(())
}
