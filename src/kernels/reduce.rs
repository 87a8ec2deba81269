//! Launchers for `cuda/reduce.cu`: the deterministic reductions of a training step.

use crate::dtype::Half;
use cudarc::driver::{CudaViewMut, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};

use super::{check_device, check_scalar, half_kernel};
use crate::device::Device;
use crate::error::{DriverContext, Error, Result};
use crate::ptx;

/// Columns per block and rows per column of threads (`BIAS_GRAD_*` in reduce.cu).
const BIAS_GRAD_COLS: usize = 32;
const BIAS_GRAD_ROWS: u32 = 8;
/// Threads of the one block of `sum_f32`.
const SUM_THREADS: u32 = 1024;

/// `db[c] = beta * db[c] + sum_r dz[r, c]` for `dz` of `rows x cols` (f16, row-major) and
/// `db` of `cols` (f32): a linear layer's bias gradient. `beta` is 0 (overwrite, the old
/// value is not read) or any finite value (1 accumulates micro-batches).
pub fn bias_grad<H: Half>(
    dev: &Device,
    dz: &impl DevicePtr<H>,
    db: &mut impl DevicePtrMut<f32>,
    rows: usize,
    cols: usize,
    beta: f32,
) -> Result<()> {
    launch_bias_grad(dev, dz, db, rows, cols, beta, None)
}

/// [`bias_grad`] that also sets `found_inf` (one f32) to 1 when a `db[c]` it writes
/// is inf or NaN, and never clears it: the training step's overflow check on its bias
/// gradients, made as they are written (see [`super::gemm::gemm_checking`]).
pub fn bias_grad_checking<H: Half>(
    dev: &Device,
    dz: &impl DevicePtr<H>,
    db: &mut impl DevicePtrMut<f32>,
    rows: usize,
    cols: usize,
    beta: f32,
    found_inf: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    launch_bias_grad(dev, dz, db, rows, cols, beta, Some(found_inf))
}

fn launch_bias_grad<H: Half>(
    dev: &Device,
    dz: &impl DevicePtr<H>,
    db: &mut impl DevicePtrMut<f32>,
    rows: usize,
    cols: usize,
    beta: f32,
    found_inf: Option<&mut CudaViewMut<'_, f32>>,
) -> Result<()> {
    let op = half_kernel::<H>(["bias_grad_f16", "bias_grad_bf16"]);
    if let Some(f) = &found_inf {
        check_scalar(op, "found_inf", &**f)?;
        check_device(op, dev, &**f)?;
    }
    let need = rows.checked_mul(cols).ok_or_else(|| Error::InvalidArgument {
        op,
        what: "shape",
        why: format!("{rows} x {cols} overflows"),
    })?;
    if dz.len() != need {
        return Err(Error::ShapeMismatch { op, expected: vec![rows, cols], got: vec![dz.len()] });
    }
    if db.len() != cols {
        return Err(Error::LengthMismatch { op, what: "db", expected: cols, got: db.len() });
    }
    if !beta.is_finite() {
        return Err(Error::InvalidArgument { op, what: "beta", why: "must be finite".into() });
    }
    check_device(op, dev, dz)?;
    check_device(op, dev, db)?;
    if cols == 0 {
        return Ok(());
    }
    let blocks = u32::try_from(cols.div_ceil(BIAS_GRAD_COLS)).map_err(|_| Error::InvalidArgument {
        op,
        what: "cols",
        why: format!("{cols} columns exceed the grid limit"),
    })?;
    let func = dev.function(&ptx::REDUCE, op)?;
    let stream = dev.stream();
    let (dz_ptr, _dz) = dz.device_ptr(stream);
    let (db_ptr, _db) = db.device_ptr_mut(stream);
    let (found_ptr, _found) = match found_inf {
        Some(f) => {
            let (ptr, sync) = f.device_ptr_mut(stream);
            (ptr, Some(sync))
        }
        None => (0, None),
    };
    let (rows64, cols64) = (rows as i64, cols as i64);
    let mut launch = stream.launch_builder(&func);
    launch.arg(&dz_ptr).arg(&db_ptr).arg(&rows64).arg(&cols64).arg(&beta).arg(&found_ptr);
    let cfg = LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BIAS_GRAD_COLS as u32, BIAS_GRAD_ROWS, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: arguments match `bias_grad_f16(const __half*, float*, int64_t, int64_t,
    // float, float*)`; dz holds rows * cols elements, db cols and found_inf one (or it is
    // null), in this device's context (checked above); the kernel's block shape is the
    // 32 x 8 it is written for.
    unsafe { launch.launch(cfg) }.op(op)?;
    Ok(())
}

/// `out[0] = beta * out[0] + factor * sum(x)`, one block, for short ranges (a value per
/// row). With `beta == 0` the old value is not read.
pub fn sum_f32(
    dev: &Device,
    x: &impl DevicePtr<f32>,
    out: &mut impl DevicePtrMut<f32>,
    factor: f32,
    beta: f32,
) -> Result<()> {
    const OP: &str = "sum_f32";
    check_scalar(OP, "out", out)?;
    for (what, v) in [("factor", factor), ("beta", beta)] {
        if !v.is_finite() {
            return Err(Error::InvalidArgument { op: OP, what, why: "must be finite".into() });
        }
    }
    check_device(OP, dev, x)?;
    check_device(OP, dev, out)?;
    let func = dev.function(&ptx::REDUCE, OP)?;
    let stream = dev.stream();
    let (x_ptr, _x) = x.device_ptr(stream);
    let (out_ptr, _out) = out.device_ptr_mut(stream);
    let n64 = x.len() as u64;
    let mut launch = stream.launch_builder(&func);
    launch.arg(&x_ptr).arg(&out_ptr).arg(&n64).arg(&factor).arg(&beta);
    let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (SUM_THREADS, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: arguments match `sum_f32(const float*, float*, uint64_t, float, float)`; x
    // holds n elements and out one, in this device's context (checked above); the block
    // has the SUM_THREADS threads the kernel's shared array is sized for. n may be 0.
    unsafe { launch.launch(cfg) }.op(OP)?;
    Ok(())
}
