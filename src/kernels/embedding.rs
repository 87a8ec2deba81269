//! Launchers for `cuda/embedding.cu`: GPT's token + position embedding in f16 or bf16, and
//! its deterministic backward into the f32 gradient arena.
//!
//! The token ids live on the device in a [`Tokens`], which checks every id against the
//! vocabulary when it is written and uploads, with the ids, the bucketed index the
//! backward runs on (each distinct token and its rows in ascending order). Its buffer has a
//! fixed size for a given number of ids, so new ids written between replays of a captured
//! CUDA graph land in the buffer the graph reads.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};

use super::{check_device, check_scalar, grid_stride_config, half_kernel};
use crate::device::Device;
use crate::dtype::Half;
use crate::error::{DriverContext, Error, Result};
use crate::ptx;

/// Columns per thread on the vector path (`EMB_VEC` in embedding.cu).
const EMB_VEC: usize = 8;
/// Threads per block of the backward: they split a row's columns (96 vectors of 8 at
/// C = 768, so most of a 128-thread block works on GPT-2's width).
const EMB_BACKWARD_THREADS: u32 = 128;
/// Blocks per SM of the backward's grid-stride loops over buckets and positions.
const EMB_BACKWARD_BLOCKS_PER_SM: usize = 8;

/// Token ids on the device, each checked on the host to be below `vocab`, with the index
/// [`embedding_backward`] needs: the distinct tokens in ascending order and, for each, its
/// rows in ascending order (cuda/embedding.cu gives the layout: one u32 buffer of
/// `4 n + 2` words for `n` ids).
///
/// [`Tokens::write`] replaces the ids with as many new ones without reallocating: an
/// asynchronous copy on the device's stream, ordered after the work queued before it
/// (which reads the old ids) and before the work queued after (which reads the new ones).
/// A CUDA graph captured with these `Tokens` therefore replays on whatever was written last.
pub struct Tokens {
    dev: Arc<Device>,
    vocab: usize,
    len: usize,
    /// ids, count, bucket tokens, bucket starts, bucket rows (see cuda/embedding.cu).
    index: CudaSlice<u32>,
    /// The host copy of `index`, kept to build the next one without allocating.
    host: Vec<u32>,
    /// Row order by token, reused between writes.
    order: Vec<u32>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("len", &self.len).field("vocab", &self.vocab).finish_non_exhaustive()
    }
}

impl Tokens {
    /// Checks `ids` against `vocab` (every id must be below it), builds the index and copies
    /// both to a new buffer on `dev`. Errors name the first id out of range and its index.
    pub fn upload(dev: &Arc<Device>, ids: &[u32], vocab: usize) -> Result<Tokens> {
        const OP: &str = "Tokens::upload";
        // Rows and bucket offsets are u32 on the device, and the buffer holds 4 n + 2.
        let words = ids
            .len()
            .checked_mul(4)
            .and_then(|w| w.checked_add(2))
            .filter(|_| u32::try_from(ids.len()).is_ok())
            .ok_or_else(|| Error::InvalidArgument {
                op: OP,
                what: "ids",
                why: format!("{} ids do not fit the u32 row index", ids.len()),
            })?;
        if vocab == 0 {
            return Err(Error::InvalidArgument { op: OP, what: "vocab", why: "must be at least 1".into() });
        }
        check_ids(OP, ids, vocab)?;
        let mut host = vec![0u32; words];
        let mut order = Vec::with_capacity(ids.len());
        build_index(ids, &mut host, &mut order);
        let index = dev.stream().clone_htod(&host).op(OP)?;
        Ok(Tokens { dev: dev.clone(), vocab, len: ids.len(), index, host, order })
    }

    /// Replaces the ids with `ids` (exactly [`len`](Tokens::len) of them, each below
    /// [`vocab`](Tokens::vocab)) in the same device buffer. On error nothing changes and
    /// nothing is queued.
    pub fn write(&mut self, ids: &[u32]) -> Result<()> {
        const OP: &str = "Tokens::write";
        if ids.len() != self.len {
            return Err(Error::LengthMismatch { op: OP, what: "ids", expected: self.len, got: ids.len() });
        }
        check_ids(OP, ids, self.vocab)?;
        build_index(ids, &mut self.host, &mut self.order);
        // A copy from pageable memory returns once the driver has staged the source, so
        // `host` may be rebuilt by the next write while this one is still queued.
        self.dev.stream().memcpy_htod(&self.host, &mut self.index).op(OP)
    }

    /// Device words of the ids and their index (`4 len + 2`): the length of the buffer
    /// [`copy_into`](Tokens::copy_into) takes.
    pub fn words(&self) -> usize {
        self.index.len()
    }

    /// A copy of these tokens in `buf` (a buffer of [`words`](Tokens::words) u32 on the
    /// same device, e.g. from a pool): the ids and their index copied on the stream,
    /// ordered after the work queued before. No allocation on the device.
    pub fn copy_into(&self, mut buf: CudaSlice<u32>) -> Result<Tokens> {
        const OP: &str = "Tokens::copy_into";
        if buf.len() != self.index.len() {
            return Err(Error::LengthMismatch { op: OP, what: "buf", expected: self.index.len(), got: buf.len() });
        }
        if !self.dev.owns(buf.stream()) {
            return Err(Error::DeviceMismatch { op: OP });
        }
        self.dev.stream().memcpy_dtod(&self.index, &mut buf).op(OP)?;
        Ok(Tokens {
            dev: self.dev.clone(),
            vocab: self.vocab,
            len: self.len,
            index: buf,
            host: self.host.clone(),
            order: Vec::new(),
        })
    }

    /// The device buffer, given back (to a pool).
    pub fn into_buffer(self) -> CudaSlice<u32> {
        self.index
    }

    /// Number of ids (`B * T`).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no ids.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bound every id is checked against.
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// The ids on the device (`len` u32, row order), for kernels that read them directly.
    pub fn ids(&self) -> CudaView<'_, u32> {
        self.index.slice(..self.len)
    }
}

fn check_ids(op: &'static str, ids: &[u32], vocab: usize) -> Result<()> {
    match ids.iter().position(|&id| id as usize >= vocab) {
        None => Ok(()),
        Some(i) => Err(Error::InvalidArgument {
            op,
            what: "ids",
            why: format!("ids[{i}] = {} is not below the vocabulary size {vocab}", ids[i]),
        }),
    }
}

/// Fills `host` (4 n + 2 words) with the layout cuda/embedding.cu reads. Unused bucket
/// slots are zero, so the whole buffer is initialised.
fn build_index(ids: &[u32], host: &mut [u32], order: &mut Vec<u32>) {
    let n = ids.len();
    order.clear();
    order.extend(0..n as u32);
    // Stable: rows of one token stay ascending.
    order.sort_by_key(|&r| ids[r as usize]);
    host.fill(0);
    host[..n].copy_from_slice(ids);
    let (meta, rest) = host[n..].split_at_mut(1);
    let (tokens, rest) = rest.split_at_mut(n);
    let (starts, rows) = rest.split_at_mut(n + 1);
    rows.copy_from_slice(order);
    let mut count = 0usize;
    for (j, &r) in order.iter().enumerate() {
        let id = ids[r as usize];
        if count == 0 || tokens[count - 1] != id {
            tokens[count] = id;
            starts[count] = j as u32;
            count += 1;
        }
    }
    starts[count] = n as u32;
    meta[0] = count as u32;
}

/// The shape of an embedding: `batch * seq` token ids, `channels` columns, a token table
/// `wte` of `vocab x channels` and a position table `wpe` of `max_seq x channels`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmbeddingShape {
    /// Sequences (B).
    pub batch: usize,
    /// Positions per sequence (T), at most `max_seq`.
    pub seq: usize,
    /// Channels (C), at least 1.
    pub channels: usize,
    /// Rows of `wte` (V). May exceed the [`Tokens`]' own vocabulary (a padded table), never
    /// fall short of it.
    pub vocab: usize,
    /// Rows of `wpe` (maxT).
    pub max_seq: usize,
}

/// Element counts of an embedding's operands, checked for overflow.
struct Sizes {
    rows: usize,
    out: usize,
    wte: usize,
    wpe: usize,
}

impl EmbeddingShape {
    fn check(&self, op: &'static str, tokens: &Tokens) -> Result<Sizes> {
        let overflow = || Error::InvalidArgument { op, what: "shape", why: format!("{self:?} overflows") };
        if self.channels == 0 {
            return Err(Error::InvalidArgument { op, what: "channels", why: "an embedding needs at least one".into() });
        }
        if self.seq > self.max_seq {
            return Err(Error::InvalidArgument {
                op,
                what: "seq",
                why: format!("{} positions but wpe has {} rows", self.seq, self.max_seq),
            });
        }
        let rows = self.batch.checked_mul(self.seq).ok_or_else(overflow)?;
        if tokens.len() != rows {
            return Err(Error::ShapeMismatch { op, expected: vec![self.batch, self.seq], got: vec![tokens.len()] });
        }
        if tokens.vocab() > self.vocab {
            return Err(Error::InvalidArgument {
                op,
                what: "vocab",
                why: format!("wte has {} rows but the tokens were checked against {}", self.vocab, tokens.vocab()),
            });
        }
        let sizes = Sizes {
            rows,
            out: rows.checked_mul(self.channels).ok_or_else(overflow)?,
            wte: self.vocab.checked_mul(self.channels).ok_or_else(overflow)?,
            wpe: self.max_seq.checked_mul(self.channels).ok_or_else(overflow)?,
        };
        // The kernels index with i64 (and u64 element counts): anything that fits a device
        // allocation fits, but say so rather than wrap.
        if [sizes.out, sizes.wte, sizes.wpe].iter().any(|&n| i64::try_from(n).is_err()) {
            return Err(overflow());
        }
        Ok(sizes)
    }

    fn check_matrix(&self, op: &'static str, what: Matrix, len: usize, sizes: &Sizes) -> Result<()> {
        let (expected, shape) = match what {
            Matrix::Rows => (sizes.out, vec![sizes.rows, self.channels]),
            Matrix::Wte => (sizes.wte, vec![self.vocab, self.channels]),
            Matrix::Wpe => (sizes.wpe, vec![self.max_seq, self.channels]),
        };
        if len == expected {
            Ok(())
        } else {
            Err(Error::ShapeMismatch { op, expected: shape, got: vec![len] })
        }
    }
}

#[derive(Clone, Copy)]
enum Matrix {
    Rows,
    Wte,
    Wpe,
}

/// `out[b T + t, c] = (half) ((f32) wte[tok, c] + (f32) wpe[t, c])` with `tok` the id of
/// row `b T + t`: the input of a GPT, `(B T, C)` row-major. 16-byte vector accesses when
/// `channels % 8 == 0` and every pointer is 16-byte aligned, single elements otherwise
/// (same result).
pub fn embedding_forward<H: Half>(
    dev: &Device,
    shape: EmbeddingShape,
    tokens: &Tokens,
    wte: &impl DevicePtr<H>,
    wpe: &impl DevicePtr<H>,
    out: &mut impl DevicePtrMut<H>,
) -> Result<()> {
    let op = half_kernel::<H>(["embedding_forward_f16", "embedding_forward_bf16"]);
    let sizes = shape.check(op, tokens)?;
    shape.check_matrix(op, Matrix::Wte, wte.len(), &sizes)?;
    shape.check_matrix(op, Matrix::Wpe, wpe.len(), &sizes)?;
    shape.check_matrix(op, Matrix::Rows, out.len(), &sizes)?;
    check_device(op, dev, &tokens.index)?;
    check_device(op, dev, wte)?;
    check_device(op, dev, wpe)?;
    check_device(op, dev, out)?;
    if sizes.out == 0 {
        return Ok(());
    }
    let func = dev.function(&ptx::EMBEDDING, op)?;
    let stream = dev.stream();
    let (tok_ptr, _tok) = tokens.index.device_ptr(stream);
    let (wte_ptr, _wte) = wte.device_ptr(stream);
    let (wpe_ptr, _wpe) = wpe.device_ptr(stream);
    let (out_ptr, _out) = out.device_ptr_mut(stream);
    let (rows, t, c, v) = (sizes.rows as i64, shape.seq as i64, shape.channels as i64, shape.vocab as i64);
    let mut launch = stream.launch_builder(&func);
    launch.arg(&tok_ptr).arg(&wte_ptr).arg(&wpe_ptr).arg(&out_ptr).arg(&rows).arg(&t).arg(&c).arg(&v);
    // SAFETY: arguments match `embedding_forward_f16(const uint32_t*, const __half*, const
    // __half*, __half*, int64_t, int64_t, int64_t, int64_t)`; the token buffer starts with
    // rows ids, each below tokens.vocab() <= V (checked when written), wte holds V * C,
    // wpe maxT * C with T <= maxT, out rows * C elements, all on this device's stream
    // (checked above); the kernel picks its vector path only for 16-byte aligned pointers.
    unsafe { launch.launch(grid_stride_config(dev, sizes.out.div_ceil(EMB_VEC))) }.op(op)?;
    Ok(())
}

/// The gradients of [`embedding_forward`], accumulated into the f32 arena:
/// `dwte[v, c] += S[v, c]` with `S` the f32 sum of `dout[r, c]` over the rows `r` whose
/// token is `v`, in ascending `r`, and `dwpe[t, c] += P[t, c]` with `P` the f32 sum of
/// `dout[b T + t, c]` over `b = 0..B`, in ascending `b` (each sum starts at 0 and is added
/// once). No atomics: the result is the same bits on every run and equals the CPU
/// reference's. Rows of `dwte` whose token does not occur are not touched.
///
/// `found_inf` (one f32), when given, is set to 1 if any value written is inf or NaN, and
/// never cleared: the training step's overflow check, made as the gradient is written.
pub fn embedding_backward<H: Half>(
    dev: &Device,
    shape: EmbeddingShape,
    tokens: &Tokens,
    dout: &impl DevicePtr<H>,
    dwte: &mut impl DevicePtrMut<f32>,
    dwpe: &mut impl DevicePtrMut<f32>,
    found_inf: Option<&mut CudaViewMut<'_, f32>>,
) -> Result<()> {
    let op = half_kernel::<H>(["embedding_backward_f16", "embedding_backward_bf16"]);
    let sizes = shape.check(op, tokens)?;
    shape.check_matrix(op, Matrix::Rows, dout.len(), &sizes)?;
    if dwte.len() != sizes.wte {
        return Err(Error::LengthMismatch { op, what: "dwte", expected: sizes.wte, got: dwte.len() });
    }
    if dwpe.len() != sizes.wpe {
        return Err(Error::LengthMismatch { op, what: "dwpe", expected: sizes.wpe, got: dwpe.len() });
    }
    if let Some(f) = &found_inf {
        check_scalar(op, "found_inf", &**f)?;
        check_device(op, dev, &**f)?;
    }
    check_device(op, dev, &tokens.index)?;
    check_device(op, dev, dout)?;
    check_device(op, dev, dwte)?;
    check_device(op, dev, dwpe)?;
    if sizes.rows == 0 {
        return Ok(());
    }
    // At most one block per bucket (there are at most B T) and per position; the grid
    // depends on the shape and the device only, never on the ids (graph capture).
    let max_blocks = dev.info().sm_count.max(1) as usize * EMB_BACKWARD_BLOCKS_PER_SM;
    let blocks = sizes.rows.min(max_blocks) as u32;
    let cfg = LaunchConfig { grid_dim: (blocks, 2, 1), block_dim: (EMB_BACKWARD_THREADS, 1, 1), shared_mem_bytes: 0 };
    let func = dev.function(&ptx::EMBEDDING, op)?;
    let stream = dev.stream();
    let (index_ptr, _index) = tokens.index.device_ptr(stream);
    let (dout_ptr, _dout) = dout.device_ptr(stream);
    let (dwte_ptr, _dwte) = dwte.device_ptr_mut(stream);
    let (dwpe_ptr, _dwpe) = dwpe.device_ptr_mut(stream);
    let (found_ptr, _found) = match found_inf {
        Some(f) => {
            let (ptr, sync) = f.device_ptr_mut(stream);
            (ptr, Some(sync))
        }
        None => (0, None),
    };
    let (b, t, c) = (shape.batch as i64, shape.seq as i64, shape.channels as i64);
    let mut launch = stream.launch_builder(&func);
    launch.arg(&index_ptr).arg(&dout_ptr).arg(&dwte_ptr).arg(&dwpe_ptr).arg(&b).arg(&t).arg(&c).arg(&found_ptr);
    // SAFETY: arguments match `embedding_backward_f16(const uint32_t*, const __half*,
    // float*, float*, int64_t, int64_t, int64_t, float*)`; the index holds 4 B T + 2 words
    // built by `build_index` (bucket tokens below tokens.vocab() <= V, rows below B T,
    // starts within B T), dout B T * C elements, dwte V * C, dwpe maxT * C with T <= maxT,
    // found_inf one or null, all on this device's stream (checked above). dwte and dwpe
    // are distinct exclusive borrows, so they do not overlap.
    unsafe { launch.launch(cfg) }.op(op)?;
    Ok(())
}
