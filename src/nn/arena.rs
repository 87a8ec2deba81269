//! The parameter arena of DESIGN.md: all parameters in one flat buffer per role (fp32
//! master, half-precision working copy in f16 or bf16, fp32 gradient), each parameter a
//! view at an offset aligned to 16 bytes in every buffer. The optimizer-side kernels
//! (cast, unscale_check, adamw_step) then run as one vectorized launch each over the
//! whole range. With [`Weights::PureBf16`] there is no master buffer: the bf16 working
//! weights are the weights.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut};
use half::f16;

use crate::dtype::{DType, Half};

use crate::device::Device;
use crate::error::{DriverContext, Error, Result};
use crate::kernels::cast::cast_f32_half;

/// Offsets are multiples of this many elements: 32 bytes of f32, 16 of f16, so every
/// view is 16-byte aligned in every role's buffer.
pub const PARAM_ALIGN: usize = 8;

/// One parameter's place in the arena.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    /// A name unique within the arena ("layers.0.weight").
    pub name: String,
    /// Row-major shape.
    pub shape: Vec<usize>,
    /// First element, a multiple of [`PARAM_ALIGN`].
    pub offset: usize,
    /// Number of elements (the product of the shape).
    pub len: usize,
}

/// Where every parameter lives; the padding between them stays zero in every role.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArenaLayout {
    params: Vec<ParamSpec>,
    total: usize,
}

impl ArenaLayout {
    /// An empty layout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a parameter and returns its index.
    pub fn push(&mut self, name: &str, shape: &[usize]) -> Result<usize> {
        const OP: &str = "ArenaLayout::push";
        if self.params.iter().any(|p| p.name == name) {
            return Err(Error::InvalidArgument {
                op: OP,
                what: "name",
                why: format!("{name:?} is already in the arena"),
            });
        }
        let len = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        let offset = self.total.next_multiple_of(PARAM_ALIGN);
        let end = len.and_then(|len| offset.checked_add(len));
        let (Some(len), Some(end)) = (len, end) else {
            return Err(Error::InvalidArgument { op: OP, what: "shape", why: format!("{shape:?} is too large") });
        };
        self.params.push(ParamSpec { name: name.to_string(), shape: shape.to_vec(), offset, len });
        self.total = end;
        Ok(self.params.len() - 1)
    }

    /// The parameters, in the order they were pushed.
    pub fn params(&self) -> &[ParamSpec] {
        &self.params
    }

    /// Elements in each role's buffer, padding included.
    pub fn total(&self) -> usize {
        self.total
    }
}

/// Where the optimizer keeps the weights it updates (issue 19's `master_weights`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weights {
    /// fp32 master weights, and a half-precision working copy the forward reads, cast from
    /// them after every update (DESIGN.md; PyTorch AMP, apex O2, llm.c): 4 bytes of master
    /// + 2 of copy + 8 of moments = 14 bytes of state per parameter.
    Master,
    /// Pure bf16 (`master_weights: false`): the bf16 weights are the only copy and AdamW
    /// rounds each new weight stochastically, seeded by `seed` (a run with the same seed
    /// reproduces bit for bit): 2 + 8 = 10 bytes per parameter. bf16 only.
    PureBf16 {
        /// Seeds the stochastic rounding (with the step count and element index).
        seed: u64,
    },
}

/// The device buffers of the arena: master weights (f32), working copy (`H`, f16 or bf16,
/// always the round-to-nearest-even cast of the master weights) and gradients (f32). With
/// [`Weights::PureBf16`] there are no master weights and the bf16 working copy is updated
/// in place.
pub struct ParamArena<H: Half = f16> {
    dev: Arc<Device>,
    layout: ArenaLayout,
    master: Option<CudaSlice<f32>>,
    working: CudaSlice<H>,
    grad: CudaSlice<f32>,
    weights: Weights,
}

impl ParamArena {
    /// Uploads the master weights, `init[i]` for parameter i in layout order, and makes
    /// the fp16 working copy with the cast kernel. Gradients start at zero.
    pub fn new(dev: &Arc<Device>, layout: ArenaLayout, init: &[Vec<f32>]) -> Result<Self> {
        Self::with_weights(dev, layout, init, Weights::Master)
    }

    /// Lays out per-parameter values as one flat buffer with zero padding.
    pub fn pack(op: &'static str, layout: &ArenaLayout, values: &[Vec<f32>]) -> Result<Vec<f32>> {
        if values.len() != layout.params.len() {
            return Err(Error::LengthMismatch {
                op,
                what: "parameters",
                expected: layout.params.len(),
                got: values.len(),
            });
        }
        let mut flat = vec![0.0f32; layout.total];
        for (p, v) in layout.params.iter().zip(values) {
            if v.len() != p.len {
                return Err(Error::ShapeMismatch { op, expected: p.shape.clone(), got: vec![v.len()] });
            }
            flat[p.offset..p.offset + p.len].copy_from_slice(v);
        }
        Ok(flat)
    }
}

impl<H: Half> ParamArena<H> {
    /// An arena whose working copy is `H`, with the weights kept as `weights` says:
    /// [`Weights::Master`] uploads `init` as the fp32 master weights and casts the working
    /// copy from them; [`Weights::PureBf16`] (only with `H` = bf16) rounds `init` to bf16
    /// (nearest even) and keeps nothing else. Gradients start at zero.
    pub fn with_weights(dev: &Arc<Device>, layout: ArenaLayout, init: &[Vec<f32>], weights: Weights) -> Result<Self> {
        const OP: &str = "ParamArena::with_weights";
        if matches!(weights, Weights::PureBf16 { .. }) && H::DTYPE != DType::BF16 {
            return Err(Error::UnsupportedDtype { op: OP, what: "pure weights (only bf16)", dtype: H::DTYPE });
        }
        let host = ParamArena::pack(OP, &layout, init)?;
        let stream = dev.stream();
        let mut working = stream.alloc_zeros::<H>(layout.total).op(OP)?;
        let grad = stream.alloc_zeros::<f32>(layout.total).op(OP)?;
        let master = match weights {
            Weights::Master => {
                let master = stream.clone_htod(&host).op(OP)?;
                cast_f32_half(dev, &master, &mut working)?;
                Some(master)
            }
            Weights::PureBf16 { .. } => {
                let rounded: Vec<H> = host.iter().map(|&x| H::from_f32(x)).collect();
                stream.memcpy_htod(&rounded, &mut working).op(OP)?;
                None
            }
        };
        Ok(ParamArena { dev: dev.clone(), layout, master, working, grad, weights })
    }

    /// How the weights are kept.
    pub fn weights(&self) -> Weights {
        self.weights
    }

    /// The layout.
    pub fn layout(&self) -> &ArenaLayout {
        &self.layout
    }

    /// The device.
    pub fn device(&self) -> &Arc<Device> {
        &self.dev
    }

    /// Master weights, the whole arena; `None` with [`Weights::PureBf16`].
    pub fn master(&self) -> Option<CudaView<'_, f32>> {
        self.master.as_ref().map(|m| m.as_view())
    }

    /// Working copy, the whole arena.
    pub fn working(&self) -> CudaView<'_, H> {
        self.working.as_view()
    }

    /// Gradients, the whole arena.
    pub fn grad(&self) -> CudaView<'_, f32> {
        self.grad.as_view()
    }

    /// Gradients, mutable (the backward pass accumulates into them).
    pub fn grad_mut(&mut self) -> CudaViewMut<'_, f32> {
        self.grad.as_view_mut()
    }

    /// The gradients (mutable) and the working copy at once, for a backward pass that
    /// reads the fp16 weights while it accumulates their gradients.
    pub fn grad_and_working(&mut self) -> (CudaViewMut<'_, f32>, CudaView<'_, H>) {
        (self.grad.as_view_mut(), self.working.as_view())
    }

    /// Views for the optimizer: (master if any, working, grad) at once.
    #[allow(clippy::type_complexity)]
    pub(crate) fn optimizer_views(&mut self) -> (Option<CudaViewMut<'_, f32>>, CudaViewMut<'_, H>, CudaView<'_, f32>) {
        (self.master.as_mut().map(|m| m.as_view_mut()), self.working.as_view_mut(), self.grad.as_view())
    }

    /// Zeroes the gradients (asynchronous, on the device's stream).
    pub fn zero_grad(&mut self) -> Result<()> {
        self.dev.stream().memset_zeros(&mut self.grad).op("ParamArena::zero_grad")
    }

    /// Copies the master weights to the host (synchronizes). With
    /// [`Weights::PureBf16`], the bf16 weights widened to f32 (exact): they are the
    /// weights the optimizer updates, what a checkpoint saves.
    pub fn master_to_host(&self) -> Result<Vec<f32>> {
        const OP: &str = "ParamArena::master_to_host";
        match &self.master {
            Some(m) => self.dev.to_host(OP, m),
            None => Ok(self.dev.to_host(OP, &self.working)?.into_iter().map(H::to_f32).collect()),
        }
    }

    /// Copies the gradients to the host (synchronizes).
    pub fn grad_to_host(&self) -> Result<Vec<f32>> {
        self.dev.to_host("ParamArena::grad_to_host", &self.grad)
    }

    /// Copies the working copy to the host (synchronizes).
    pub fn working_to_host(&self) -> Result<Vec<H>> {
        self.dev.to_host("ParamArena::working_to_host", &self.working)
    }

    /// Overwrites the gradients from the host (tests and engines that compute them
    /// elsewhere); `grads.len()` must equal the arena's total.
    pub fn set_grad(&mut self, grads: &[f32]) -> Result<()> {
        const OP: &str = "ParamArena::set_grad";
        if grads.len() != self.layout.total {
            return Err(Error::LengthMismatch { op: OP, what: "grads", expected: self.layout.total, got: grads.len() });
        }
        self.dev.stream().memcpy_htod(grads, &mut self.grad).op(OP)
    }

    /// Replaces the master weights (a flat buffer of the arena's total length) and
    /// rebuilds the working copy; with [`Weights::PureBf16`], replaces the bf16 weights
    /// (rounded to nearest even: exact for values a pure arena saved).
    pub(crate) fn set_master(&mut self, master: &[f32]) -> Result<()> {
        const OP: &str = "ParamArena::set_master";
        if master.len() != self.layout.total {
            return Err(Error::LengthMismatch {
                op: OP,
                what: "master",
                expected: self.layout.total,
                got: master.len(),
            });
        }
        match &mut self.master {
            Some(m) => {
                self.dev.stream().memcpy_htod(master, m).op(OP)?;
                cast_f32_half(&self.dev, m, &mut self.working)
            }
            None => {
                let rounded: Vec<H> = master.iter().map(|&x| H::from_f32(x)).collect();
                self.dev.stream().memcpy_htod(&rounded, &mut self.working).op(OP)
            }
        }
    }
}
