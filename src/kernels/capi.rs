//! The C ABI (`include/mixed_precision.h`): every kernel on raw device pointers, on a
//! stream the caller chooses, for engines in C, C++ or Python (ctypes).
//!
//! Contract of every function:
//! - it returns an [`MpStatus`]; on anything but `MP_OK` the reason is in
//!   [`mp_last_error`] (per thread) and nothing was launched;
//! - no panic crosses the boundary (each body runs under `catch_unwind`);
//! - pointers are device pointers in the handle's context; a required pointer that is
//!   null, or not aligned to its element size, is rejected, and so are sizes whose byte
//!   counts (or end addresses) overflow, computed with checked arithmetic only;
//! - a range the call writes must not overlap any other range of the call, read or
//!   written, tensor lists included (the same gradient twice, one tensor's params on
//!   another's m); ranges that are only read may share memory;
//! - enumerations and flags arrive as plain integers (`int32_t`) and are checked against
//!   their allowed values: C or ctypes can pass any integer, and a Rust enum field holding
//!   an undeclared value would be undefined behaviour;
//! - the work is queued on the handle's stream and the call returns without waiting.
//!
//! The handle adopts the calling thread's current CUDA context (the primary context
//! PyTorch and the runtime API use) and the caller's stream: see
//! [`Device::from_current_context`].
//!
//! This file lives under `src/kernels/` because it is, with the launchers, the only
//! code that must be `unsafe` (it turns the caller's raw pointers into device views);
//! it is re-exported as `mixed_precision::capi`.
#![allow(clippy::missing_safety_doc)] // each function's safety contract is in its C docs above
#![allow(non_camel_case_types)]

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use cudarc::driver::{sys, CudaSlice, CudaView, CudaViewMut};
use half::{bf16, f16};

use crate::device::Device;
use crate::dtype::{DType, Element, Half};
use crate::error::{Error, Result};
use crate::kernels::adam::{
    adamw_pure, adamw_step, adamw_step_multi, AdamConfig, AdamMode, AdamPureTensors, AdamScalars, AdamTensors,
    LrSchedule,
};
use crate::kernels::cast::{cast_bf16_f32, cast_f16_f32, cast_f32_bf16, cast_f32_f16};
use crate::kernels::gemm::{gemm, Activation, Bias, Epilogue, GemmShape, Transpose};
use crate::kernels::loss_scale::{update_scale, ScaleRule};
use crate::kernels::unscale::{unscale_check, unscale_check_multi};

/// What a C ABI call returns.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MpStatus {
    /// Queued (or done, for handle calls).
    MP_OK = 0,
    /// A size, shape, setting or flag is invalid; see mp_last_error().
    MP_ERR_INVALID_ARGUMENT = 1,
    /// A required pointer (handle, buffer, output) is null.
    MP_ERR_NULL_POINTER = 2,
    /// A pointer is not aligned to its element size.
    MP_ERR_MISALIGNED = 3,
    /// No CUDA driver could be loaded.
    MP_ERR_NO_DRIVER = 4,
    /// No CUDA device, or no current context on the calling thread.
    MP_ERR_NO_DEVICE = 5,
    /// A CUDA driver call failed.
    MP_ERR_CUDA = 6,
    /// The device cannot run the kernel, or a dtype is not supported.
    MP_ERR_UNSUPPORTED = 7,
    /// A bug in this library: a panic was caught at the boundary.
    MP_ERR_INTERNAL = 8,
}

/// Element types of the GEMM's buffers: the values of `mp_gemm_args.ab_dtype`,
/// `.c_dtype` and `.bias_dtype` (fields declared `int32_t`, so that any integer a caller
/// passes is a defined value that mp_gemm can reject). The other functions name their
/// types in their names (`_f16`, `_bf16`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MpDtype {
    /// IEEE binary32.
    MP_F32 = 0,
    /// IEEE binary16.
    MP_F16 = 1,
    /// bfloat16: the upper half of a binary32 (8 exponent bits, 7 mantissa bits).
    MP_BF16 = 2,
}

/// An opaque handle: the adopted context and stream, and the loaded kernels.
pub struct mp_handle {
    dev: Arc<Device>,
}

/// Everything a GEMM call takes: `C = act(alpha * op(A) op(B) + beta * C + bias)`,
/// row-major, A and B both f16 or both bf16 (`ab_dtype`; bf16 needs compute capability
/// 8.0 or newer), fp32 accumulation (see kernels::gemm).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct mp_gemm_args {
    /// Rows of op(A) and C.
    pub m: u64,
    /// Columns of op(B) and C.
    pub n: u64,
    /// Reduction length.
    pub k: u64,
    /// 0: A stored m x k; 1: A stored k x m (transposed).
    pub trans_a: i32,
    /// 0: B stored k x n; 1: B stored n x k (transposed).
    pub trans_b: i32,
    /// Row stride of A as stored, in elements.
    pub lda: u64,
    /// Row stride of B as stored.
    pub ldb: u64,
    /// Row stride of C (and pre).
    pub ldc: u64,
    /// A, of ab_dtype.
    pub a: u64,
    /// B, of ab_dtype.
    pub b: u64,
    /// C, of c_dtype.
    pub c: u64,
    /// C's element type, an MpDtype value: MP_F32 or ab_dtype. Not an MpDtype value:
    /// MP_ERR_INVALID_ARGUMENT; the other half type (MP_F16 C with MP_BF16 operands):
    /// MP_ERR_UNSUPPORTED.
    pub c_dtype: i32,
    /// Multiplies op(A) op(B).
    pub alpha: f32,
    /// Multiplies the old C (not read when 0).
    pub beta: f32,
    /// n bias values of bias_dtype, or 0 for none.
    pub bias: u64,
    /// The bias's element type, MP_F32 or ab_dtype, checked as c_dtype is (even when
    /// bias is 0).
    pub bias_dtype: i32,
    /// Pre-activation output of ab_dtype (same layout as C), or 0 for none.
    pub pre: u64,
    /// 0 none, 1 ReLU, 2 GELU (tanh form).
    pub activation: i32,
    /// A's and B's element type: MP_F16 (1) or MP_BF16 (2), an MpDtype value; MP_F32 or
    /// anything else is MP_ERR_INVALID_ARGUMENT. MP_BF16 on a device below compute
    /// capability 8.0 (no bf16 tensor cores) is MP_ERR_UNSUPPORTED. Last, in what was
    /// the struct's tail padding: the offsets and size of the other fields are those of
    /// the f16-only ABI.
    pub ab_dtype: i32,
}

/// AdamW settings (torch.optim.AdamW / Adam).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct mp_adam_config {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator term.
    pub eps: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// 0: AdamW (decoupled decay); 1: Adam (L2 decay).
    pub mode: i32,
}

/// One tensor of a multi-tensor AdamW step: `len` elements each.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct mp_adam_tensor {
    /// fp32 master weights (updated).
    pub params: u64,
    /// Gradients, f32, f16 or bf16 (as the function's name says).
    pub grads: u64,
    /// First moments, f32.
    pub m: u64,
    /// Second moments, f32.
    pub v: u64,
    /// The working copy to write, f16 or bf16 (as the function's name says), or 0.
    pub copy: u64,
    /// Elements.
    pub len: u64,
}

/// The tensor of a pure-bf16 AdamW step (mp_adamw_pure_*): bf16 weights and no fp32
/// master copy, `len` elements each.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct mp_adam_pure_tensor {
    /// bf16 weights (updated, stochastically rounded).
    pub params: u64,
    /// Gradients, f32 or bf16 (as the function's name says).
    pub grads: u64,
    /// First moments, f32.
    pub m: u64,
    /// Second moments, f32.
    pub v: u64,
    /// Elements.
    pub len: u64,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// The message of the last failed call on this thread ("" after a success). Valid
/// until the next call on this thread.
#[no_mangle]
pub extern "C" fn mp_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

fn status_of(e: &Error) -> MpStatus {
    match e {
        Error::NoDriver => MpStatus::MP_ERR_NO_DRIVER,
        Error::NoDevice { .. } => MpStatus::MP_ERR_NO_DEVICE,
        Error::Driver { .. } | Error::Library { .. } => MpStatus::MP_ERR_CUDA,
        Error::UnsupportedDevice { .. } | Error::Unsupported { .. } | Error::UnsupportedDtype { .. } => {
            MpStatus::MP_ERR_UNSUPPORTED
        }
        Error::Misaligned { ptr: 0, .. } => MpStatus::MP_ERR_NULL_POINTER,
        Error::Misaligned { .. } => MpStatus::MP_ERR_MISALIGNED,
        Error::InvalidArgument { what: "current context", .. } => MpStatus::MP_ERR_NO_DEVICE,
        _ => MpStatus::MP_ERR_INVALID_ARGUMENT,
    }
}

/// Runs `f` with panics caught, turning its result into a status and the last error.
fn guard(op: &'static str, f: impl FnOnce() -> Result<()>) -> MpStatus {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => {
            set_last_error("");
            MpStatus::MP_OK
        }
        Ok(Err(e)) => {
            set_last_error(&e.to_string());
            status_of(&e)
        }
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            set_last_error(&format!("{op}: internal error (please report): {why}"));
            MpStatus::MP_ERR_INTERNAL
        }
    }
}

fn null_or_misaligned<T>(op: &'static str, what: &'static str, ptr: u64) -> Result<()> {
    let align = std::mem::align_of::<T>();
    if ptr == 0 || ptr % align as u64 != 0 {
        return Err(Error::Misaligned { op, what, ptr, align });
    }
    Ok(())
}

fn handle<'a>(op: &'static str, h: *const mp_handle) -> Result<&'a mp_handle> {
    // SAFETY: a non-null handle is one mp_handle_create returned and the caller has not
    // destroyed (the C contract); null is rejected here.
    unsafe { h.as_ref() }.ok_or(Error::Misaligned { op, what: "handle", ptr: 0, align: 1 })
}

fn length(op: &'static str, what: &'static str, n: u64, elem: usize) -> Result<usize> {
    usize::try_from(n)
        .ok()
        .filter(|n| n.checked_mul(elem).is_some_and(|b| b <= isize::MAX as usize))
        .ok_or_else(|| Error::InvalidArgument { op, what, why: format!("{n} elements overflow the address space") })
}

/// A caller's device range seen as a `CudaSlice` that is never freed by this crate.
struct Borrowed<T> {
    slice: ManuallyDrop<CudaSlice<T>>,
}

impl<T> Borrowed<T> {
    fn view(&self) -> CudaView<'_, T> {
        self.slice.as_view()
    }

    fn view_mut(&mut self) -> CudaViewMut<'_, T> {
        self.slice.as_view_mut()
    }
}

impl<T> Drop for Borrowed<T> {
    fn drop(&mut self) {
        // SAFETY: taken once, here; the memory belongs to the caller, so it is leaked
        // (handed back), never freed.
        let slice = unsafe { ManuallyDrop::take(&mut self.slice) };
        slice.leak();
    }
}

/// Checks and borrows `len` elements at `ptr`: non-null (when `len > 0`), aligned.
fn borrow<T>(op: &'static str, what: &'static str, dev: &Device, ptr: u64, len: usize) -> Result<Borrowed<T>> {
    if len > 0 || ptr != 0 {
        null_or_misaligned::<T>(op, what, ptr)?;
    }
    // SAFETY: the C contract makes `ptr` the start of at least `len` elements of T of
    // device memory in the handle's context, valid until the queued work has run; the
    // slice is leaked in Borrowed::drop, so this crate never frees it.
    let slice = unsafe { dev.stream().upgrade_device_ptr::<T>(ptr, len) };
    Ok(Borrowed { slice: ManuallyDrop::new(slice) })
}

/// An optional one-element scalar: 0 is "absent".
fn borrow_scalar<T>(op: &'static str, what: &'static str, dev: &Device, ptr: u64) -> Result<Option<Borrowed<T>>> {
    if ptr == 0 {
        Ok(None)
    } else {
        borrow::<T>(op, what, dev, ptr, 1).map(Some)
    }
}

/// A device byte range `[start, end)` a call reads or writes, named for its message:
/// `what` is the argument (the field of a list entry), `index` the entry in a list.
#[derive(Clone, Copy, Debug)]
struct Range {
    what: &'static str,
    index: Option<usize>,
    start: u64,
    end: u64,
}

impl Range {
    /// Null pointers (absent optional buffers) and empty ranges touch nothing.
    fn touches(&self) -> bool {
        self.start != 0 && self.end > self.start
    }

    fn at(mut self, index: usize) -> Range {
        self.index = Some(index);
        self
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.index {
            Some(i) => write!(f, "`{}` of entry {i}", self.what)?,
            None => write!(f, "`{}`", self.what)?,
        }
        write!(f, " [{:#x}, {:#x})", self.start, self.end)
    }
}

/// The range of `elems` elements of `size` bytes at `ptr`. Every product and sum is
/// checked: a byte count past `isize::MAX` or an end past the address space is
/// MP_ERR_INVALID_ARGUMENT naming `what`, never a wrapped (tiny) range that the overlap
/// checks would wave through.
fn range(op: &'static str, what: &'static str, ptr: u64, elems: usize, size: usize) -> Result<Range> {
    elems
        .checked_mul(size)
        .filter(|&b| b <= isize::MAX as usize)
        .and_then(|b| ptr.checked_add(b as u64))
        .map(|end| Range { what, index: None, start: ptr, end })
        .ok_or_else(|| Error::InvalidArgument {
            op,
            what,
            why: format!("{elems} elements of {size} bytes at {ptr:#x} overflow the address space"),
        })
}

/// Rejects any overlap between two ranges of `writes`, or between a range of `writes`
/// and one of `reads` (kernels take their pointers `__restrict__`, and a list entry
/// written by one block while another block reads or writes it is a race); `reads` may
/// overlap each other. Sorts the written ranges by start and checks neighbours in one
/// pass, then finds each read range's neighbour by binary search: O((w + r) log w) for
/// lists of any length.
fn no_overlap(op: &'static str, mut writes: Vec<Range>, reads: &[Range]) -> Result<()> {
    let clash = |x: &Range, y: &Range| Error::InvalidArgument { op, what: x.what, why: format!("{x} overlaps {y}") };
    writes.retain(Range::touches);
    writes.sort_unstable_by_key(|r| (r.start, r.end));
    // Sorted by start, no neighbour overlapping means all are disjoint and the ends
    // increase too (by induction), which the search below relies on.
    if let Some(w) = writes.windows(2).find(|w| w[1].start < w[0].end) {
        return Err(clash(&w[1], &w[0]));
    }
    for r in reads.iter().filter(|r| r.touches()) {
        let i = writes.partition_point(|w| w.end <= r.start);
        if let Some(w) = writes.get(i).filter(|w| w.start < r.end) {
            return Err(clash(r, w));
        }
    }
    Ok(())
}

/// Creates a handle on the calling thread's current CUDA context whose kernels run on
/// `stream` (null: the legacy default stream). `*out` receives it; free it with
/// mp_handle_destroy. The context and stream must outlive the handle.
#[no_mangle]
pub unsafe extern "C" fn mp_handle_create(stream: sys::CUstream, out: *mut *mut mp_handle) -> MpStatus {
    guard("mp_handle_create", || {
        const OP: &str = "mp_handle_create";
        if out.is_null() {
            return Err(Error::Misaligned { op: OP, what: "out", ptr: 0, align: 1 });
        }
        // SAFETY: out is non-null (checked) and, by the C contract, writable.
        unsafe { *out = std::ptr::null_mut() };
        // SAFETY: the caller guarantees `stream` is null or a live stream of the current
        // context, both outliving the handle (this function's C contract).
        let dev = unsafe { Device::from_current_context(stream) }?;
        let h = Box::into_raw(Box::new(mp_handle { dev }));
        // SAFETY: as above.
        unsafe { *out = h };
        Ok(())
    })
}

/// Frees a handle (null is ignored). Work already queued still runs.
#[no_mangle]
pub unsafe extern "C" fn mp_handle_destroy(h: *mut mp_handle) -> MpStatus {
    guard("mp_handle_destroy", || {
        if !h.is_null() {
            // SAFETY: a non-null handle came from Box::into_raw in mp_handle_create and
            // is destroyed once (the C contract).
            drop(unsafe { Box::from_raw(h) });
        }
        Ok(())
    })
}

/// `y[i] = (f16) x[i]` for n elements (round to nearest even, overflow to ±inf).
#[no_mangle]
pub unsafe extern "C" fn mp_cast_f32_f16(h: *const mp_handle, x: u64, y: u64, n: u64) -> MpStatus {
    guard("mp_cast_f32_f16", || cast("mp_cast_f32_f16", h, x, y, n, |d, x, y| cast_f32_f16(d, x, y)))
}

/// `y[i] = (f32) x[i]` for n elements (exact).
#[no_mangle]
pub unsafe extern "C" fn mp_cast_f16_f32(h: *const mp_handle, x: u64, y: u64, n: u64) -> MpStatus {
    guard("mp_cast_f16_f32", || cast("mp_cast_f16_f32", h, x, y, n, |d, x, y| cast_f16_f32(d, x, y)))
}

/// `y[i] = (bf16) x[i]` for n elements (round to nearest even, overflow to ±inf, NaN
/// kept NaN), PyTorch's `.bfloat16()`.
#[no_mangle]
pub unsafe extern "C" fn mp_cast_f32_bf16(h: *const mp_handle, x: u64, y: u64, n: u64) -> MpStatus {
    guard("mp_cast_f32_bf16", || cast("mp_cast_f32_bf16", h, x, y, n, |d, x, y| cast_f32_bf16(d, x, y)))
}

/// `y[i] = (f32) x[i]` for n bf16 elements (exact).
#[no_mangle]
pub unsafe extern "C" fn mp_cast_bf16_f32(h: *const mp_handle, x: u64, y: u64, n: u64) -> MpStatus {
    guard("mp_cast_bf16_f32", || cast("mp_cast_bf16_f32", h, x, y, n, |d, x, y| cast_bf16_f32(d, x, y)))
}

fn cast<S: Element, D: Element>(
    op: &'static str,
    h: *const mp_handle,
    x: u64,
    y: u64,
    n: u64,
    launch: impl FnOnce(&Device, &CudaView<'_, S>, &mut CudaViewMut<'_, D>) -> Result<()>,
) -> Result<()> {
    let dev = &handle(op, h)?.dev;
    let n = length(op, "n", n, 4)?;
    no_overlap(op, vec![range(op, "y", y, n, size_of::<D>())?], &[range(op, "x", x, n, size_of::<S>())?])?;
    let xs = borrow::<S>(op, "x", dev, x, n)?;
    let mut ys = borrow::<D>(op, "y", dev, y, n)?;
    launch(dev, &xs.view(), &mut ys.view_mut())
}

fn dtype(op: &'static str, what: &'static str, d: i32) -> Result<MpDtype> {
    match d {
        0 => Ok(MpDtype::MP_F32),
        1 => Ok(MpDtype::MP_F16),
        2 => Ok(MpDtype::MP_BF16),
        _ => Err(Error::InvalidArgument {
            op,
            what,
            why: format!("{d}: expected 0 (MP_F32), 1 (MP_F16) or 2 (MP_BF16)"),
        }),
    }
}

impl MpDtype {
    fn size(self) -> usize {
        match self {
            MpDtype::MP_F32 => 4,
            MpDtype::MP_F16 | MpDtype::MP_BF16 => 2,
        }
    }
}

fn transpose(op: &'static str, what: &'static str, t: i32) -> Result<Transpose> {
    match t {
        0 => Ok(Transpose::N),
        1 => Ok(Transpose::T),
        _ => Err(Error::InvalidArgument { op, what, why: format!("{t}: expected 0 (N) or 1 (T)") }),
    }
}

/// The GEMM with its epilogue (see mp_gemm_args).
#[no_mangle]
pub unsafe extern "C" fn mp_gemm(h: *const mp_handle, args: *const mp_gemm_args) -> MpStatus {
    guard("mp_gemm", || {
        const OP: &str = "mp_gemm";
        let dev = &handle(OP, h)?.dev;
        // SAFETY: non-null (checked by as_ref) and, by the C contract, a valid struct.
        let a = *unsafe { args.as_ref() }.ok_or(Error::Misaligned { op: OP, what: "args", ptr: 0, align: 1 })?;
        let dim =
            |what, v: u64| usize::try_from(v).map_err(|_| Error::InvalidArgument { op: OP, what, why: format!("{v}") });
        let shape = GemmShape {
            m: dim("m", a.m)?,
            n: dim("n", a.n)?,
            k: dim("k", a.k)?,
            trans_a: transpose(OP, "trans_a", a.trans_a)?,
            trans_b: transpose(OP, "trans_b", a.trans_b)?,
            lda: dim("lda", a.lda)?,
            ldb: dim("ldb", a.ldb)?,
            ldc: dim("ldc", a.ldc)?,
        };
        let activation = match a.activation {
            0 => Activation::None,
            1 => Activation::Relu,
            2 => Activation::Gelu,
            x => {
                return Err(Error::InvalidArgument {
                    op: OP,
                    what: "activation",
                    why: format!("{x}: expected 0, 1 or 2"),
                })
            }
        };
        // Lengths the shape addresses; validate() rechecks them against these.
        let span = |rows: usize, cols: usize, ld: usize| -> Result<usize> {
            if rows == 0 || cols == 0 {
                return Ok(0);
            }
            (rows - 1).checked_mul(ld).and_then(|x| x.checked_add(cols)).ok_or(Error::InvalidArgument {
                op: OP,
                what: "shape",
                why: format!("{shape:?} overflows"),
            })
        };
        let ab_dtype = dtype(OP, "ab_dtype", a.ab_dtype)?;
        let c_dtype = dtype(OP, "c_dtype", a.c_dtype)?;
        let bias_dtype = dtype(OP, "bias_dtype", a.bias_dtype)?;
        if ab_dtype == MpDtype::MP_F32 {
            return Err(Error::InvalidArgument {
                op: OP,
                what: "ab_dtype",
                why: "0 (MP_F32): A and B are 1 (MP_F16) or 2 (MP_BF16)".into(),
            });
        }
        // C and the bias are f32 or the operands' type: no kernel mixes f16 with bf16.
        for (what, d) in [("c_dtype", c_dtype), ("bias_dtype", bias_dtype)] {
            if d != MpDtype::MP_F32 && d != ab_dtype {
                return Err(Error::UnsupportedDtype { op: OP, what, dtype: dtype_of(d) });
            }
        }
        // Refused here, before the shapes, so that the message names this function (the
        // launcher refuses it too).
        let capability = dev.info().compute_capability;
        if ab_dtype == MpDtype::MP_BF16 && capability < (8, 0) {
            return Err(Error::Unsupported {
                op: OP,
                what: "a bf16 GEMM (ab_dtype MP_BF16, bf16 tensor cores)",
                needs: (8, 0),
                capability,
            });
        }
        shape.validate(OP, usize::MAX, usize::MAX, usize::MAX, None, None)?;
        let ((ar, ac), (br, bc)) = shape.stored();
        let (la, lb, lc) = (span(ar, ac, shape.lda)?, span(br, bc, shape.ldb)?, span(shape.m, shape.n, shape.ldc)?);
        let r = |what, ptr, elems, size| {
            range(OP, what, ptr, elems, size).map_err(|e| match e {
                Error::InvalidArgument { op, what, why } => {
                    Error::InvalidArgument { op, what, why: format!("{why} ({shape:?})") }
                }
                e => e,
            })
        };
        // Outputs must not overlap any input or each other; the inputs may share memory
        // (A and B the same matrix for X^T X, a bias inside a weight buffer).
        let inputs = [
            r("a", a.a, la, 2)?,
            r("b", a.b, lb, 2)?,
            r("bias", a.bias, if a.bias != 0 { shape.n } else { 0 }, bias_dtype.size())?,
        ];
        let outputs = vec![r("c", a.c, lc, c_dtype.size())?, r("pre", a.pre, if a.pre != 0 { lc } else { 0 }, 2)?];
        no_overlap(OP, outputs, &inputs)?;
        let lens = GemmLens { a: la, b: lb, c: lc };
        match ab_dtype {
            MpDtype::MP_BF16 => gemm_of::<bf16>(dev, &shape, &a, lens, c_dtype, bias_dtype, activation),
            // MP_F16; MP_F32 was refused above.
            _ => gemm_of::<f16>(dev, &shape, &a, lens, c_dtype, bias_dtype, activation),
        }
    })
}

/// Elements of A, B and C (and pre) that a GEMM's shape addresses.
#[derive(Clone, Copy)]
struct GemmLens {
    a: usize,
    b: usize,
    c: usize,
}

fn dtype_of(d: MpDtype) -> DType {
    match d {
        MpDtype::MP_F32 => DType::F32,
        MpDtype::MP_F16 => DType::F16,
        MpDtype::MP_BF16 => DType::BF16,
    }
}

/// mp_gemm with operands of type `T`, its arguments checked: borrows the buffers and
/// launches. `c_dtype` and `bias_dtype` are MP_F32 or `T`'s (checked by the caller).
fn gemm_of<T: Half>(
    dev: &Device,
    shape: &GemmShape,
    a: &mp_gemm_args,
    lens: GemmLens,
    c_dtype: MpDtype,
    bias_dtype: MpDtype,
    activation: Activation,
) -> Result<()> {
    const OP: &str = "mp_gemm";
    let ab = borrow::<T>(OP, "a", dev, a.a, lens.a)?;
    let bb = borrow::<T>(OP, "b", dev, a.b, lens.b)?;
    let bias32 = if a.bias != 0 && bias_dtype == MpDtype::MP_F32 {
        Some(borrow::<f32>(OP, "bias", dev, a.bias, shape.n)?)
    } else {
        None
    };
    let bias_half = if a.bias != 0 && bias_dtype != MpDtype::MP_F32 {
        Some(borrow::<T>(OP, "bias", dev, a.bias, shape.n)?)
    } else {
        None
    };
    let mut pre = if a.pre != 0 { Some(borrow::<T>(OP, "pre", dev, a.pre, lens.c)?) } else { None };
    let bias = match (&bias32, &bias_half) {
        (Some(b), _) => Some(Bias::F32(b.view())),
        (_, Some(b)) => Some(Bias::Half(b.view())),
        _ => None,
    };
    let mut pre_view = pre.as_mut().map(|p| p.view_mut());
    let epilogue = Epilogue { alpha: a.alpha, beta: a.beta, bias, pre: pre_view.as_mut(), activation };
    if c_dtype == MpDtype::MP_F32 {
        let mut c = borrow::<f32>(OP, "c", dev, a.c, lens.c)?;
        gemm(dev, shape, &ab.view(), &bb.view(), &mut c.view_mut(), epilogue)
    } else {
        let mut c = borrow::<T>(OP, "c", dev, a.c, lens.c)?;
        gemm(dev, shape, &ab.view(), &bb.view(), &mut c.view_mut(), epilogue)
    }
}

/// `g *= 1 / *scale` (scale null: check only) over n f32 gradients, raising
/// `*found_inf` (not cleared first) on any inf or NaN.
#[no_mangle]
pub unsafe extern "C" fn mp_unscale_check_f32(
    h: *const mp_handle,
    grads: u64,
    n: u64,
    scale: u64,
    found_inf: u64,
) -> MpStatus {
    guard("mp_unscale_check_f32", || unscale::<f32>("mp_unscale_check_f32", h, grads, n, scale, found_inf))
}

/// As mp_unscale_check_f32 for f16 gradients.
#[no_mangle]
pub unsafe extern "C" fn mp_unscale_check_f16(
    h: *const mp_handle,
    grads: u64,
    n: u64,
    scale: u64,
    found_inf: u64,
) -> MpStatus {
    guard("mp_unscale_check_f16", || unscale::<f16>("mp_unscale_check_f16", h, grads, n, scale, found_inf))
}

/// As mp_unscale_check_f32 for bf16 gradients.
#[no_mangle]
pub unsafe extern "C" fn mp_unscale_check_bf16(
    h: *const mp_handle,
    grads: u64,
    n: u64,
    scale: u64,
    found_inf: u64,
) -> MpStatus {
    guard("mp_unscale_check_bf16", || unscale::<bf16>("mp_unscale_check_bf16", h, grads, n, scale, found_inf))
}

fn unscale<G: Element>(
    op: &'static str,
    h: *const mp_handle,
    grads: u64,
    n: u64,
    scale: u64,
    found: u64,
) -> Result<()> {
    let dev = &handle(op, h)?.dev;
    let n = length(op, "n", n, size_of::<G>())?;
    null_or_misaligned::<f32>(op, "found_inf", found)?;
    no_overlap(
        op,
        vec![range(op, "grads", grads, n, size_of::<G>())?, range(op, "found_inf", found, 1, 4)?],
        &[range(op, "scale", scale, 1, 4)?],
    )?;
    let mut g = borrow::<G>(op, "grads", dev, grads, n)?;
    let s = borrow_scalar::<f32>(op, "scale", dev, scale)?;
    let mut f = borrow::<f32>(op, "found_inf", dev, found, 1)?;
    let sv = s.as_ref().map(|s| s.view());
    unscale_check(dev, &mut g.view_mut(), sv.as_ref(), &mut f.view_mut())
}

/// mp_unscale_check_f32 over `count` tensors (host arrays of device pointers and
/// lengths) in as few launches as their sizes allow.
#[no_mangle]
pub unsafe extern "C" fn mp_unscale_check_multi_f32(
    h: *const mp_handle,
    grads: *const u64,
    lens: *const u64,
    count: u64,
    scale: u64,
    found_inf: u64,
) -> MpStatus {
    guard("mp_unscale_check_multi_f32", || {
        unscale_multi::<f32>("mp_unscale_check_multi_f32", h, grads, lens, count, scale, found_inf)
    })
}

/// As mp_unscale_check_multi_f32 for f16 gradients.
#[no_mangle]
pub unsafe extern "C" fn mp_unscale_check_multi_f16(
    h: *const mp_handle,
    grads: *const u64,
    lens: *const u64,
    count: u64,
    scale: u64,
    found_inf: u64,
) -> MpStatus {
    guard("mp_unscale_check_multi_f16", || {
        unscale_multi::<f16>("mp_unscale_check_multi_f16", h, grads, lens, count, scale, found_inf)
    })
}

/// As mp_unscale_check_multi_f32 for bf16 gradients.
#[no_mangle]
pub unsafe extern "C" fn mp_unscale_check_multi_bf16(
    h: *const mp_handle,
    grads: *const u64,
    lens: *const u64,
    count: u64,
    scale: u64,
    found_inf: u64,
) -> MpStatus {
    guard("mp_unscale_check_multi_bf16", || {
        unscale_multi::<bf16>("mp_unscale_check_multi_bf16", h, grads, lens, count, scale, found_inf)
    })
}

/// A host array of `count` items (empty when count is 0, whatever the pointer).
fn host_array<'a, T>(op: &'static str, what: &'static str, ptr: *const T, count: u64) -> Result<&'a [T]> {
    let count = length(op, what, count, size_of::<T>())?;
    if count == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() || !ptr.is_aligned() {
        return Err(Error::Misaligned { op, what, ptr: ptr as u64, align: std::mem::align_of::<T>() });
    }
    // SAFETY: non-null and aligned (checked); by the C contract it points to `count`
    // initialized items that stay unchanged during the call.
    Ok(unsafe { std::slice::from_raw_parts(ptr, count) })
}

fn unscale_multi<G: Element>(
    op: &'static str,
    h: *const mp_handle,
    grads: *const u64,
    lens: *const u64,
    count: u64,
    scale: u64,
    found: u64,
) -> Result<()> {
    let dev = &handle(op, h)?.dev;
    let ptrs = host_array(op, "grads", grads, count)?;
    let lens = host_array(op, "lens", lens, count)?;
    null_or_misaligned::<f32>(op, "found_inf", found)?;
    // Every gradient is written (divided in place): no two may overlap, nor any of them
    // the found_inf flag (written) or the scale (read).
    let mut writes = Vec::with_capacity(ptrs.len() + 1);
    let mut sizes = Vec::with_capacity(ptrs.len());
    for (i, (&p, &n)) in ptrs.iter().zip(lens).enumerate() {
        let n = length(op, "lens", n, size_of::<G>())?;
        writes.push(range(op, "grads", p, n, size_of::<G>())?.at(i));
        sizes.push(n);
    }
    writes.push(range(op, "found_inf", found, 1, 4)?);
    no_overlap(op, writes, &[range(op, "scale", scale, 1, 4)?])?;
    let mut bufs = Vec::with_capacity(ptrs.len());
    for (&p, &n) in ptrs.iter().zip(&sizes) {
        bufs.push(borrow::<G>(op, "grads", dev, p, n)?);
    }
    let s = borrow_scalar::<f32>(op, "scale", dev, scale)?;
    let mut f = borrow::<f32>(op, "found_inf", dev, found, 1)?;
    let mut views: Vec<CudaViewMut<'_, G>> = bufs.iter_mut().map(|b| b.view_mut()).collect();
    let sv = s.as_ref().map(|s| s.view());
    unscale_check_multi(dev, &mut views, sv.as_ref(), &mut f.view_mut())
}

fn adam_config(op: &'static str, cfg: *const mp_adam_config) -> Result<AdamConfig> {
    // SAFETY: non-null (checked by as_ref) and, by the C contract, a valid struct.
    let c = *unsafe { cfg.as_ref() }.ok_or(Error::Misaligned { op, what: "config", ptr: 0, align: 1 })?;
    let mode = match c.mode {
        0 => AdamMode::AdamW,
        1 => AdamMode::Adam,
        x => {
            return Err(Error::InvalidArgument {
                op,
                what: "mode",
                why: format!("{x}: expected 0 (AdamW) or 1 (Adam)"),
            })
        }
    };
    let cfg = AdamConfig {
        lr: c.lr,
        beta1: c.beta1,
        beta2: c.beta2,
        eps: c.eps,
        weight_decay: c.weight_decay,
        mode,
        schedule: LrSchedule::Constant,
        max_grad_norm: None,
    };
    cfg.validate(op)?;
    Ok(cfg)
}

/// One AdamW step over n elements: `*step` advances and master weights, moments and the
/// f16 copy (copy may be 0) update, f32 gradients, all unless `*found_inf` (may be 0) is non-zero;
/// gradients are divided by `*scale` (may be 0: not scaled) inside the update.
#[no_mangle]
pub unsafe extern "C" fn mp_adamw_step_f32(
    h: *const mp_handle,
    t: *const mp_adam_tensor,
    step: u64,
    scale: u64,
    found_inf: u64,
    cfg: *const mp_adam_config,
) -> MpStatus {
    guard("mp_adamw_step_f32", || adam::<f32, f16>("mp_adamw_step_f32", false, h, t, 1, step, scale, found_inf, cfg))
}

/// As mp_adamw_step_f32 for f16 gradients.
#[no_mangle]
pub unsafe extern "C" fn mp_adamw_step_f16(
    h: *const mp_handle,
    t: *const mp_adam_tensor,
    step: u64,
    scale: u64,
    found_inf: u64,
    cfg: *const mp_adam_config,
) -> MpStatus {
    guard("mp_adamw_step_f16", || adam::<f16, f16>("mp_adamw_step_f16", false, h, t, 1, step, scale, found_inf, cfg))
}

/// mp_adamw_step_f32 over `count` tensors (a host array) sharing one step count, as
/// torch's fused AdamW over a parameter list.
#[no_mangle]
pub unsafe extern "C" fn mp_adamw_step_multi_f32(
    h: *const mp_handle,
    ts: *const mp_adam_tensor,
    count: u64,
    step: u64,
    scale: u64,
    found_inf: u64,
    cfg: *const mp_adam_config,
) -> MpStatus {
    guard("mp_adamw_step_multi_f32", || {
        adam::<f32, f16>("mp_adamw_step_multi_f32", true, h, ts, count, step, scale, found_inf, cfg)
    })
}

/// As mp_adamw_step_multi_f32 for f16 gradients.
#[no_mangle]
pub unsafe extern "C" fn mp_adamw_step_multi_f16(
    h: *const mp_handle,
    ts: *const mp_adam_tensor,
    count: u64,
    step: u64,
    scale: u64,
    found_inf: u64,
    cfg: *const mp_adam_config,
) -> MpStatus {
    guard("mp_adamw_step_multi_f16", || {
        adam::<f16, f16>("mp_adamw_step_multi_f16", true, h, ts, count, step, scale, found_inf, cfg)
    })
}

/// As mp_adamw_step_f32 with a bf16 working copy (`copy` is bf16), f32 gradients.
#[no_mangle]
pub unsafe extern "C" fn mp_adamw_step_f32_bf16(
    h: *const mp_handle,
    t: *const mp_adam_tensor,
    step: u64,
    scale: u64,
    found_inf: u64,
    cfg: *const mp_adam_config,
) -> MpStatus {
    guard("mp_adamw_step_f32_bf16", || {
        adam::<f32, bf16>("mp_adamw_step_f32_bf16", false, h, t, 1, step, scale, found_inf, cfg)
    })
}

/// As mp_adamw_step_f32 for bf16 gradients and a bf16 working copy (`copy` is bf16).
#[no_mangle]
pub unsafe extern "C" fn mp_adamw_step_bf16(
    h: *const mp_handle,
    t: *const mp_adam_tensor,
    step: u64,
    scale: u64,
    found_inf: u64,
    cfg: *const mp_adam_config,
) -> MpStatus {
    guard("mp_adamw_step_bf16", || {
        adam::<bf16, bf16>("mp_adamw_step_bf16", false, h, t, 1, step, scale, found_inf, cfg)
    })
}

/// As mp_adamw_step_multi_f32 with bf16 working copies, f32 gradients.
#[no_mangle]
pub unsafe extern "C" fn mp_adamw_step_multi_f32_bf16(
    h: *const mp_handle,
    ts: *const mp_adam_tensor,
    count: u64,
    step: u64,
    scale: u64,
    found_inf: u64,
    cfg: *const mp_adam_config,
) -> MpStatus {
    guard("mp_adamw_step_multi_f32_bf16", || {
        adam::<f32, bf16>("mp_adamw_step_multi_f32_bf16", true, h, ts, count, step, scale, found_inf, cfg)
    })
}

/// As mp_adamw_step_multi_f32 for bf16 gradients and bf16 working copies.
#[no_mangle]
pub unsafe extern "C" fn mp_adamw_step_multi_bf16(
    h: *const mp_handle,
    ts: *const mp_adam_tensor,
    count: u64,
    step: u64,
    scale: u64,
    found_inf: u64,
    cfg: *const mp_adam_config,
) -> MpStatus {
    guard("mp_adamw_step_multi_bf16", || {
        adam::<bf16, bf16>("mp_adamw_step_multi_bf16", true, h, ts, count, step, scale, found_inf, cfg)
    })
}

type AdamBufs<G, C> = (Borrowed<f32>, Borrowed<G>, Borrowed<f32>, Borrowed<f32>, Option<Borrowed<C>>);

/// The AdamW calls: gradients `G`, working copy `C`.
#[allow(clippy::too_many_arguments)]
fn adam<G: Element, C: Half>(
    op: &'static str,
    multi: bool,
    h: *const mp_handle,
    ts: *const mp_adam_tensor,
    count: u64,
    step: u64,
    scale: u64,
    found: u64,
    cfg: *const mp_adam_config,
) -> Result<()> {
    let dev = &handle(op, h)?.dev;
    let cfg = adam_config(op, cfg)?;
    let list = host_array(op, "tensors", ts, count)?;
    null_or_misaligned::<f32>(op, "step", step)?;
    // Written: every entry's params, m, v and copy, and the step count; read: every
    // entry's grads, the scale and found_inf. No written range may overlap another
    // range, within an entry or across entries (the same tensor listed twice, one
    // entry's params on another's m); reads may share memory.
    let g = size_of::<G>();
    let mut writes = Vec::with_capacity(4 * list.len() + 1);
    let mut reads = Vec::with_capacity(list.len() + 2);
    let mut lens = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let n = length(op, "len", t.len, 4)?;
        // Messages name the list entry; a single-tensor call has no list.
        let entry = |r: Range| if multi { r.at(i) } else { r };
        writes.push(entry(range(op, "params", t.params, n, 4)?));
        writes.push(entry(range(op, "m", t.m, n, 4)?));
        writes.push(entry(range(op, "v", t.v, n, 4)?));
        writes.push(entry(range(op, "copy", t.copy, if t.copy != 0 { n } else { 0 }, 2)?));
        reads.push(entry(range(op, "grads", t.grads, n, g)?));
        lens.push(n);
    }
    writes.push(range(op, "step", step, 1, 4)?);
    reads.push(range(op, "scale", scale, 1, 4)?);
    reads.push(range(op, "found_inf", found, 1, 4)?);
    no_overlap(op, writes, &reads)?;
    let mut bufs: Vec<AdamBufs<G, C>> = Vec::with_capacity(list.len());
    for (t, &n) in list.iter().zip(&lens) {
        let copy = if t.copy != 0 { Some(borrow::<C>(op, "copy", dev, t.copy, n)?) } else { None };
        bufs.push((
            borrow::<f32>(op, "params", dev, t.params, n)?,
            borrow::<G>(op, "grads", dev, t.grads, n)?,
            borrow::<f32>(op, "m", dev, t.m, n)?,
            borrow::<f32>(op, "v", dev, t.v, n)?,
            copy,
        ));
    }
    let mut step_buf = borrow::<f32>(op, "step", dev, step, 1)?;
    let s = borrow_scalar::<f32>(op, "scale", dev, scale)?;
    let f = borrow_scalar::<f32>(op, "found_inf", dev, found)?;
    let mut tensors: Vec<AdamTensors<'_, G, C>> = bufs
        .iter_mut()
        .map(|(p, g, m, v, c)| AdamTensors {
            params: p.view_mut(),
            grads: g.view(),
            m: m.view_mut(),
            v: v.view_mut(),
            copy: c.as_mut().map(|c| c.view_mut()),
        })
        .collect();
    let mut scalars = AdamScalars {
        step: step_buf.view_mut(),
        scale: s.as_ref().map(|s| s.view()),
        found_inf: f.as_ref().map(|f| f.view()),
    };
    if multi {
        adamw_step_multi(dev, &mut tensors, &mut scalars, &cfg)
    } else {
        adamw_step(dev, &mut tensors[0], &mut scalars, &cfg)
    }
}

/// One AdamW step on pure-bf16 weights (no fp32 master copy), f32 gradients: `*step`
/// advances, then the bf16 params and the f32 moments update, all unless `*found_inf`
/// (may be 0) is non-zero; gradients are divided by `*scale` (may be 0) inside the
/// update. Each new weight is rounded to bf16 stochastically, with bits hashed from
/// (`seed`, the advanced step count, the element index): the same seed reproduces a run
/// bit for bit (cuda/adam.cu).
#[no_mangle]
pub unsafe extern "C" fn mp_adamw_pure_f32(
    h: *const mp_handle,
    t: *const mp_adam_pure_tensor,
    step: u64,
    scale: u64,
    found_inf: u64,
    cfg: *const mp_adam_config,
    seed: u64,
) -> MpStatus {
    guard("mp_adamw_pure_f32", || adam_pure::<f32>("mp_adamw_pure_f32", h, t, step, scale, found_inf, cfg, seed))
}

/// As mp_adamw_pure_f32 for bf16 gradients.
#[no_mangle]
pub unsafe extern "C" fn mp_adamw_pure_bf16(
    h: *const mp_handle,
    t: *const mp_adam_pure_tensor,
    step: u64,
    scale: u64,
    found_inf: u64,
    cfg: *const mp_adam_config,
    seed: u64,
) -> MpStatus {
    guard("mp_adamw_pure_bf16", || adam_pure::<bf16>("mp_adamw_pure_bf16", h, t, step, scale, found_inf, cfg, seed))
}

#[allow(clippy::too_many_arguments)]
fn adam_pure<G: Element>(
    op: &'static str,
    h: *const mp_handle,
    t: *const mp_adam_pure_tensor,
    step: u64,
    scale: u64,
    found: u64,
    cfg: *const mp_adam_config,
    seed: u64,
) -> Result<()> {
    let dev = &handle(op, h)?.dev;
    let cfg = adam_config(op, cfg)?;
    // SAFETY: non-null (checked by as_ref) and, by the C contract, a valid struct.
    let t = *unsafe { t.as_ref() }.ok_or(Error::Misaligned { op, what: "tensor", ptr: 0, align: 1 })?;
    null_or_misaligned::<f32>(op, "step", step)?;
    let n = length(op, "len", t.len, 4)?;
    // Written: params, m, v and the step count; read: grads, scale and found_inf.
    no_overlap(
        op,
        vec![
            range(op, "params", t.params, n, 2)?,
            range(op, "m", t.m, n, 4)?,
            range(op, "v", t.v, n, 4)?,
            range(op, "step", step, 1, 4)?,
        ],
        &[
            range(op, "grads", t.grads, n, size_of::<G>())?,
            range(op, "scale", scale, 1, 4)?,
            range(op, "found_inf", found, 1, 4)?,
        ],
    )?;
    let mut p = borrow::<bf16>(op, "params", dev, t.params, n)?;
    let g = borrow::<G>(op, "grads", dev, t.grads, n)?;
    let mut m = borrow::<f32>(op, "m", dev, t.m, n)?;
    let mut v = borrow::<f32>(op, "v", dev, t.v, n)?;
    let mut step_buf = borrow::<f32>(op, "step", dev, step, 1)?;
    let s = borrow_scalar::<f32>(op, "scale", dev, scale)?;
    let f = borrow_scalar::<f32>(op, "found_inf", dev, found)?;
    let mut tensors = AdamPureTensors { params: p.view_mut(), grads: g.view(), m: m.view_mut(), v: v.view_mut() };
    let mut scalars = AdamScalars {
        step: step_buf.view_mut(),
        scale: s.as_ref().map(|s| s.view()),
        found_inf: f.as_ref().map(|f| f.view()),
    };
    adamw_pure(dev, &mut tensors, &mut scalars, &cfg, seed)
}

/// PyTorch's `_amp_update_scale_` on the device: `*scale` (f32), `*growth_tracker`
/// (i32), `*found_inf` (f32).
#[no_mangle]
pub unsafe extern "C" fn mp_update_scale(
    h: *const mp_handle,
    scale: u64,
    growth_tracker: u64,
    found_inf: u64,
    growth: f64,
    backoff: f64,
    growth_interval: i32,
) -> MpStatus {
    guard("mp_update_scale", || {
        const OP: &str = "mp_update_scale";
        let dev = &handle(OP, h)?.dev;
        null_or_misaligned::<f32>(OP, "scale", scale)?;
        null_or_misaligned::<i32>(OP, "growth_tracker", growth_tracker)?;
        null_or_misaligned::<f32>(OP, "found_inf", found_inf)?;
        no_overlap(
            OP,
            vec![range(OP, "scale", scale, 1, 4)?, range(OP, "growth_tracker", growth_tracker, 1, 4)?],
            &[range(OP, "found_inf", found_inf, 1, 4)?],
        )?;
        let mut s = borrow::<f32>(OP, "scale", dev, scale, 1)?;
        let mut g = borrow::<i32>(OP, "growth_tracker", dev, growth_tracker, 1)?;
        let f = borrow::<f32>(OP, "found_inf", dev, found_inf, 1)?;
        let rule = ScaleRule { growth, backoff, growth_interval };
        update_scale(dev, &mut s.view_mut(), &mut g.view_mut(), &f.view(), &rule)
    })
}
