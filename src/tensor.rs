//! Typed, contiguous, row-major device tensors.

use std::fmt;
use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut};
use half::f16;

use crate::device::Device;
use crate::dtype::{DType, Element};
use crate::error::{DriverContext, Error, Result};
use crate::kernels;

/// A contiguous, row-major tensor of `T` (`f16`, `bf16` or `f32`) in device memory.
///
/// Allocation and copies run on the device's stream; [`Tensor::to_host`] is the one
/// call that waits for the stream.
pub struct Tensor<T: Element> {
    dev: Arc<Device>,
    data: CudaSlice<T>,
    shape: Vec<usize>,
}

impl<T: Element> fmt::Debug for Tensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tensor").field("dtype", &T::DTYPE).field("shape", &self.shape).finish()
    }
}

/// Number of elements of `shape`, or an error if the product overflows.
fn element_count(op: &'static str, shape: &[usize]) -> Result<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(|| Error::InvalidArgument {
        op,
        what: "shape",
        why: format!("{shape:?} has more elements than fit in usize"),
    })
}

impl<T: Element> Tensor<T> {
    /// Copies `data` to the device as a tensor of `shape`; `data.len()` must equal the
    /// product of `shape`.
    pub fn from_host(dev: &Arc<Device>, data: &[T], shape: &[usize]) -> Result<Self> {
        const OP: &str = "Tensor::from_host";
        let n = element_count(OP, shape)?;
        if n != data.len() {
            return Err(Error::ShapeMismatch { op: OP, expected: shape.to_vec(), got: vec![data.len()] });
        }
        let data = dev.stream().clone_htod(data).op(OP)?;
        Ok(Tensor { dev: dev.clone(), data, shape: shape.to_vec() })
    }

    /// A tensor of `shape` filled with zeros.
    pub fn zeros(dev: &Arc<Device>, shape: &[usize]) -> Result<Self> {
        const OP: &str = "Tensor::zeros";
        let n = element_count(OP, shape)?;
        let data = dev.stream().alloc_zeros::<T>(n).op(OP)?;
        Ok(Tensor { dev: dev.clone(), data, shape: shape.to_vec() })
    }

    /// Copies the tensor to the host, waiting for every kernel queued before.
    pub fn to_host(&self) -> Result<Vec<T>> {
        const OP: &str = "Tensor::to_host";
        self.dev.to_host(OP, &self.data)
    }

    /// Overwrites the tensor with `data`, which must have exactly `self.len()` elements.
    pub fn copy_from_host(&mut self, data: &[T]) -> Result<()> {
        const OP: &str = "Tensor::copy_from_host";
        if data.len() != self.len() {
            return Err(Error::ShapeMismatch { op: OP, expected: self.shape.clone(), got: vec![data.len()] });
        }
        self.dev.stream().memcpy_htod(data, &mut self.data).op(OP)
    }

    /// The same data under a new shape with the same number of elements.
    pub fn reshape(self, shape: &[usize]) -> Result<Self> {
        const OP: &str = "Tensor::reshape";
        if element_count(OP, shape)? != self.len() {
            return Err(Error::ShapeMismatch { op: OP, expected: self.shape.clone(), got: shape.to_vec() });
        }
        Ok(Tensor { shape: shape.to_vec(), ..self })
    }

    /// The shape, outermost dimension first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.len() == 0
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        T::DTYPE
    }

    /// The device the tensor lives on.
    pub fn device(&self) -> &Arc<Device> {
        &self.dev
    }

    /// The whole buffer, for the launchers in [`kernels`](crate::kernels).
    pub fn view(&self) -> CudaView<'_, T> {
        self.data.as_view()
    }

    /// The whole buffer, mutable, for the launchers in [`kernels`](crate::kernels).
    pub fn view_mut(&mut self) -> CudaViewMut<'_, T> {
        self.data.as_view_mut()
    }
}

impl Tensor<f32> {
    /// A new f16 tensor of the same shape: round to nearest even, overflow to ±inf.
    pub fn to_f16(&self) -> Result<Tensor<f16>> {
        let mut out = Tensor::<f16>::zeros(&self.dev, &self.shape)?;
        kernels::cast::cast_f32_f16(&self.dev, &self.data, &mut out.data)?;
        Ok(out)
    }
}

impl Tensor<f16> {
    /// A new f32 tensor of the same shape (exact).
    pub fn to_f32(&self) -> Result<Tensor<f32>> {
        let mut out = Tensor::<f32>::zeros(&self.dev, &self.shape)?;
        kernels::cast::cast_f16_f32(&self.dev, &self.data, &mut out.data)?;
        Ok(out)
    }
}
