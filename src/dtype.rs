//! Element types the crate's tensors and kernels take.

use std::fmt;

use cudarc::driver::{DeviceRepr, ValidAsZeroBits};
use half::{bf16, f16};

/// The runtime tag of an element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE binary16.
    F16,
    /// bfloat16.
    BF16,
    /// IEEE binary32.
    F32,
}

impl DType {
    /// Size of one element in bytes.
    pub const fn size(self) -> usize {
        match self {
            DType::F16 | DType::BF16 => 2,
            DType::F32 => 4,
        }
    }

    /// The name used in kernel names (`cast_f32_f16`).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F32 => "f32",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
    impl Sealed for f32 {}
}

/// An element type a [`Tensor`](crate::Tensor) can hold: `f16`, `bf16` or `f32`.
/// Sealed: the kernels are written for exactly these.
pub trait Element:
    sealed::Sealed
    + DeviceRepr
    + ValidAsZeroBits
    + bytemuck::Pod
    + Default
    + Copy
    + Send
    + Sync
    + Unpin
    + fmt::Debug
    + 'static
{
    /// The runtime tag.
    const DTYPE: DType;
    /// Widens to f32 (exact for all three types).
    fn to_f32(self) -> f32;
    /// Narrows from f32, rounding to nearest even.
    fn from_f32(x: f32) -> Self;
}

impl Element for f16 {
    const DTYPE: DType = DType::F16;
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
}

impl Element for bf16 {
    const DTYPE: DType = DType::BF16;
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(x: f32) -> Self {
        x
    }
}

/// A working half-precision type: `f16` or `bf16` (DESIGN.md, "Two half types"). Every
/// kernel family that takes half-precision data has one kernel per half type, named
/// `<family>_f16` and `<family>_bf16`; the launchers are generic over this trait.
pub trait Half: Element {}

impl Half for f16 {}
impl Half for bf16 {}
