//! Hand-written CUDA kernels for mixed-precision training: fp16 tensor-core compute,
//! fp32 master weights, dynamic loss scaling, with safe Rust wrappers.
//!
//! The kernels are compiled to PTX at build time (nvcc, or the PTX vendored in
//! `cuda/ptx/` when nvcc is absent) and loaded through the CUDA driver at run time, so
//! the crate builds and its CPU reference runs on machines without CUDA. A GPU needs an
//! NVIDIA driver of the 580 series or newer.
//!
//! # Example: the fused cast, on the GPU when there is one
//!
//! ```
//! use mixed_precision::{backend::cpu, half::f16, Device, Error, Tensor};
//!
//! # fn main() -> Result<(), Error> {
//! // 65519 rounds down to the largest f16, 65520 overflows to +inf, as `.half()` does.
//! let x = [1.0f32, 0.1, 65519.0, 65520.0, -1e-8];
//! let mut reference = vec![f16::ZERO; x.len()];
//! cpu::cast_f32_f16(&x, &mut reference)?;
//! assert_eq!(reference[2], f16::MAX);
//! assert!(reference[3].is_infinite());
//!
//! match Device::new(0) {
//!     Ok(dev) => {
//!         let x = Tensor::from_host(&dev, &x, &[x.len()])?;
//!         let y = x.to_f16()?.to_host()?;
//!         assert_eq!(y, reference);
//!     }
//!     // No driver or no GPU: the CPU reference is what this machine runs.
//!     Err(Error::NoDriver | Error::NoDevice { .. }) => {}
//!     Err(e) => return Err(e),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Layers
//! - [`ptx`]: the generated PTX constants, one per `cuda/*.cu` and target.
//! - [`Device`]: a CUDA context with one stream; loads PTX modules lazily.
//! - [`kernels`]: one launcher file per `.cu`; checks every argument before a launch.
//! - [`Tensor`]: typed, contiguous, row-major device tensors.
//! - [`backend`]: the [`backend::Backend`] trait, its CUDA and CPU implementations.
//! - [`autograd`]: the define-by-run tape.
//! - [`nn`]: the parameter arena, [`nn::Linear`], [`nn::Mlp`].
//! - [`optim`]: [`optim::GradScaler`], [`optim::AdamW`] and their checkpoint format.
//! - [`train`]: [`TrainStep`], the whole mixed-precision step, CUDA graphs included.
//! - [`backend::cpu`]: the CPU reference of every kernel.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod autograd;
pub mod backend;
mod device;
mod dtype;
mod error;
pub mod io;
#[allow(unsafe_code)]
pub mod kernels;
pub mod nn;
pub mod optim;
pub mod ptx;
pub mod rng;
mod tensor;
pub mod train;

pub use device::{device_count, Device, DeviceInfo};
pub use dtype::{DType, Element, Half};
pub use error::{Error, Result};
pub use tensor::Tensor;
pub use train::{Model, TrainConfig, TrainStep};

pub use kernels::capi;

/// Re-exported so engines can name the driver types in the launcher signatures.
pub use cudarc;
pub use half;
