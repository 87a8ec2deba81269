//! Device memory calls: allocation, memset, copies.
//!
//! Everything runs at call time (streams are FIFO and the host waits for nothing, so
//! running each operation when it is issued is a legal schedule), except on a capturing
//! stream, where memsets and device-to-device copies are recorded instead, and except
//! host-to-device copies on the legacy default stream, below.
//!
//! # Host-to-device copies on the legacy stream
//!
//! The driver documents ("API synchronization behavior") that a synchronous
//! `cuMemcpyHtoD` from pageable memory "will return once the pageable buffer has been
//! copied to the staging memory for DMA transfer to device memory, but the DMA to final
//! destination may not have completed". The copy is work on the legacy default stream,
//! and a stream created with `CU_STREAM_NON_BLOCKING` does not wait for the legacy
//! stream: a kernel launched there right after the call may read the destination before
//! the DMA lands, and see the old bytes. Running the copy at call time would hide that
//! bug, so the emulator models it (all host memory is pageable here):
//!
//! - a host-to-device copy issued on the legacy stream (`cuMemcpyHtoD`, or
//!   `cuMemcpyHtoDAsync` naming the legacy stream) is staged (the bytes are copied from
//!   the host, which may reuse its buffer at once) and left *pending*: the destination
//!   keeps its old bytes;
//! - pending copies land, in issue order, at the first thing ordered after them: any
//!   stream-ordered operation on the legacy stream, the per-thread default stream or a
//!   blocking created stream (kernel, graph, memset, copy in any direction, event record,
//!   stream wait), `cuStreamSynchronize`/`cuStreamQuery` of the legacy stream,
//!   `cuCtxSynchronize`, and `cuMemFree`/`cuMemFreeAsync` (a free synchronizes on the
//!   driver, and must not leave a copy aimed at freed memory); destroying the context
//!   discards them;
//! - work on a non-blocking stream issued while copies are pending runs without them: a
//!   kernel, a device-to-device or device-to-host copy there sees the destination's old
//!   bytes (uninitialized, for a fresh allocation), as a GPU may. A kernel given a
//!   pointer into a pending destination, or a copy reading one, is reported on stderr
//!   ("reads memory still being written by an unordered legacy-stream copy"), and with
//!   `MP_EMU_STRICT=1` that work fails instead (`driver::faults`).
//!
//! Landing a copy as late as this is one legal schedule of the real driver, so a
//! program correct on a GPU is correct here; one that relies on the copy having landed
//! without ordering it (the usual bug: upload with `cuMemcpyHtoD`, launch on a
//! non-blocking stream) computes on stale data, and its own result checks fail. Copies
//! on a created stream, and to or from the device on any stream, run at call time.

use super::device::TOTAL_MEM;
use super::error::*;
use super::graph::run_node;
use super::state::{with_init, Handle, Node, PendingCopy, State, StreamRef};

/// Bytes the host says it can still give, from /proc/meminfo; None when unknown. Checked
/// only for large requests: Linux overcommits, so a huge allocation "succeeds" and the
/// process is killed when the fill touches it.
fn host_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

impl State {
    /// A new allocation owned by `ctx`: OUT_OF_MEMORY past the 80 GiB the device reports
    /// or what the host can provide.
    fn alloc(&mut self, ctx: Handle, size: usize) -> Result<u64, CuResult> {
        let size64 = size as u64;
        if size64 > TOTAL_MEM.saturating_sub(self.memory.used) {
            return Err(OUT_OF_MEMORY);
        }
        if size64 >= 1 << 30 && host_available().is_some_and(|a| size64 > a / 10 * 9) {
            return Err(OUT_OF_MEMORY);
        }
        let p = self.memory.try_alloc(size).ok_or(OUT_OF_MEMORY)?;
        self.owners.insert(p, ctx);
        Ok(p)
    }

    fn free(&mut self, ptr: u64) -> Result<(), CuResult> {
        if !self.memory.free(ptr) {
            return Err(INVALID_VALUE);
        }
        self.forget(ptr);
        self.owners.remove(&ptr);
        Ok(())
    }

    /// INVALID_VALUE unless `[addr, addr + len)` lies inside one live allocation.
    fn check_range(&self, addr: u64, len: usize) -> Result<(), CuResult> {
        if len == 0 || self.memory.slice(addr, len).is_some() {
            Ok(())
        } else {
            Err(INVALID_VALUE)
        }
    }

    /// Records `node` on a capturing stream, or runs it now.
    fn issue(&mut self, ctx: Handle, s: StreamRef, node: Node) -> Result<(), CuResult> {
        if self.record(s, node.clone())? {
            return Ok(());
        }
        let op = self.begin_op(ctx, s, &super::graph::describe(&node));
        run_node(self, ctx, &node, false, &op)
    }

    /// The stream a call names (`Some`) or, for the synchronous forms (`None`), the
    /// current context's legacy stream after the "unsafe call during capture" check.
    /// `waits` names a call that waits for the device's work, which returns a fault of
    /// it first (`driver::faults`).
    fn target(
        &mut self,
        stream: Option<Handle>,
        what: &'static str,
        waits: Option<&str>,
    ) -> Result<(Handle, StreamRef), CuResult> {
        if let Some(call) = waits {
            self.current_synced(call)?;
        }
        match stream {
            Some(h) => self.stream(h),
            None => {
                let ctx = self.current()?;
                self.check_unsafe_call(what)?;
                Ok((ctx, StreamRef::Legacy(ctx)))
            }
        }
    }
}

/// cuMemAlloc_v2. Zero bytes is INVALID_VALUE, as documented for the driver.
pub fn alloc(size: usize) -> Result<u64, CuResult> {
    with_init(|s| {
        let ctx = s.current()?;
        if size == 0 {
            return Err(INVALID_VALUE);
        }
        s.check_unsafe_call("cuMemAlloc during capture")?;
        s.alloc(ctx, size)
    })
}

/// cuMemAllocAsync. On a capturing stream the driver would add a graph memory node; the
/// emulator refuses (STREAM_CAPTURE_UNSUPPORTED, capture invalidated) because this crate
/// never allocates inside a graph by design (its buffers come from a pool filled by the
/// eager step), so an allocation during capture is the bug to report. Zero bytes gives
/// a unique pointer to an empty allocation (cudarc's `null()` relies on it succeeding).
pub fn alloc_async(size: usize, stream: Handle) -> Result<u64, CuResult> {
    with_init(|s| {
        let (ctx, st) = s.stream(stream)?;
        s.forbid_in_capture(st, STREAM_CAPTURE_UNSUPPORTED, "cuMemAllocAsync on a capturing stream")?;
        s.alloc(ctx, size)
    })
}

/// cuMemFree_v2. A null pointer is a no-op; anything but the base of a live allocation
/// is INVALID_VALUE. The context's pending legacy-stream copies land first (module docs).
/// It waits for the device's work, so a fault of that work is returned here.
pub fn free(ptr: u64) -> Result<(), CuResult> {
    with_init(|s| {
        let ctx = s.current_synced("cuMemFree")?;
        s.check_unsafe_call("cuMemFree during capture")?;
        if ptr == 0 {
            return Ok(());
        }
        s.land_copies(ctx);
        s.host_waited_ctx(ctx);
        s.free(ptr)
    })
}

/// cuMemFreeAsync. During capture the driver records a free node, which must free a
/// graph allocation; the emulator makes none (see [`alloc_async`]), so a free on a
/// capturing stream is INVALID_VALUE, as the driver answers for a non-graph allocation.
pub fn free_async(ptr: u64, stream: Handle) -> Result<(), CuResult> {
    with_init(|s| {
        let (ctx, st) = s.stream(stream)?;
        if s.capture_of(st).is_some() {
            eprintln!("mp-emu: cuMemFreeAsync of {ptr:#x} on a capturing stream: not a graph allocation");
            return Err(INVALID_VALUE);
        }
        s.check_legacy(st)?;
        if ptr == 0 {
            return Ok(());
        }
        s.land_copies(ctx);
        // The free is work of the stream: anything another stream still does with the
        // memory, unordered with it, races with it (a write of every byte).
        let len = s.memory.find(ptr).filter(|(b, _)| *b == ptr).map(|(_, a)| a.data.len() as u64);
        if let Some(len) = len {
            let op = s.begin_op(ctx, st, "cuMemFreeAsync");
            s.accessed(ctx, &op, &[], &[(ptr, ptr + len)])?;
        }
        s.free(ptr)
    })
}

/// cuMemsetD8/D16/D32 (`elem` 1, 2, 4 bytes), synchronous when `stream` is None.
pub fn memset(dst: u64, value: u32, elem: usize, count: usize, stream: Option<Handle>) -> Result<(), CuResult> {
    with_init(|s| {
        let (ctx, st) = s.target(stream, "synchronous cuMemset during capture", None)?;
        let len = count.checked_mul(elem).ok_or(INVALID_VALUE)?;
        if dst % elem as u64 != 0 {
            return Err(INVALID_VALUE);
        }
        s.check_range(dst, len)?;
        if len == 0 {
            return s.check_legacy(st);
        }
        s.issue(ctx, st, Node::Memset { dst, value, elem, count })
    })
}

/// cuMemcpyDtoD (and cuMemcpyPeer within the one device), synchronous when `stream` is None.
pub fn copy_dtod(dst: u64, src: u64, len: usize, stream: Option<Handle>) -> Result<(), CuResult> {
    with_init(|s| {
        let (ctx, st) = s.target(stream, "synchronous cuMemcpyDtoD during capture", None)?;
        s.check_range(dst, len)?;
        s.check_range(src, len)?;
        if len == 0 {
            return s.check_legacy(st);
        }
        s.issue(ctx, st, Node::Copy { dst, src, len })
    })
}

/// cuMemcpyPeerAsync: both contexts must exist; the device is one, so it is a
/// device-to-device copy.
pub fn copy_peer(
    dst: u64,
    dst_ctx: Handle,
    src: u64,
    src_ctx: Handle,
    len: usize,
    stream: Handle,
) -> Result<(), CuResult> {
    with_init(|s| {
        s.usable(dst_ctx)?;
        s.usable(src_ctx)?;
        Ok(())
    })?;
    copy_dtod(dst, src, len, Some(stream))
}

/// The check host copies make: on a capturing stream they are illegal (all host memory
/// is treated as pageable, and a pageable copy cannot be captured). Returns the context
/// and the stream the copy is ordered on. `waits`: as for `State::target`.
fn host_copy_target(
    s: &mut State,
    stream: Option<Handle>,
    what: &'static str,
    waits: Option<&str>,
) -> Result<(Handle, StreamRef), CuResult> {
    let (ctx, st) = s.target(stream, what, waits)?;
    s.forbid_in_capture(st, STREAM_CAPTURE_UNSUPPORTED, what)?;
    Ok((ctx, st))
}

/// cuMemcpyHtoD, synchronous when `stream` is None. On the legacy stream the copy is
/// staged and stays pending until something is ordered after it (module docs); on any
/// other stream it lands now, after the legacy stream's pending copies when that stream
/// follows the legacy stream. The synchronous form synchronizes the stream before it
/// copies ("API synchronization behavior"), so it returns a fault of the device's work;
/// the asynchronous form does not wait.
pub fn copy_htod(dst: u64, src: &[u8], stream: Option<Handle>) -> Result<(), CuResult> {
    with_init(|s| {
        let waits = stream.is_none().then_some("cuMemcpyHtoD");
        let (ctx, st) = host_copy_target(s, stream, "host-to-device copy from pageable memory during capture", waits)?;
        if src.is_empty() {
            return Ok(());
        }
        s.check_range(dst, src.len())?;
        if stream.is_none() {
            // The synchronous form waits for the stream's earlier work before it copies.
            s.host_waited_stream(st);
        }
        let op = s.begin_op(ctx, st, "a host-to-device copy");
        let range = [(dst, dst + src.len() as u64)];
        if let StreamRef::Legacy(_) = st {
            s.pending.push(PendingCopy { ctx, dst, data: src.to_vec() });
            return s.accessed(ctx, &op, &[], &range);
        }
        s.order(ctx, st);
        let d = s.memory.slice_mut(dst, src.len()).ok_or(INVALID_VALUE)?;
        d.copy_from_slice(src);
        s.accessed(ctx, &op, &[], &range)
    })
}

/// cuMemcpyDtoH, synchronous when `stream` is None (the legacy stream: pending copies
/// land first). On a non-blocking stream it reads what is there now (a finding when a
/// pending copy is writing it, `State::unordered`). Either form returns only once the
/// copy is done (host memory is pageable here), so it returns a fault of the device's
/// work, its own under `MP_EMU_STRICT` included.
pub fn copy_dtoh(dst: &mut [u8], src: u64, stream: Option<Handle>) -> Result<(), CuResult> {
    let call = if stream.is_none() { "cuMemcpyDtoH" } else { "cuMemcpyDtoHAsync" };
    with_init(|s| {
        let (ctx, st) =
            host_copy_target(s, stream, "device-to-host copy to pageable memory during capture", Some(call))?;
        if dst.is_empty() {
            return Ok(());
        }
        s.check_range(src, dst.len())?;
        if s.follows_legacy(st) {
            s.land_copies(ctx);
        } else if let Some(addr) = s.pending_overlap(ctx, src, dst.len()) {
            s.unordered(ctx, "a device-to-host copy", addr)?;
            s.sync_point(ctx, call)?;
        }
        dst.copy_from_slice(s.memory.slice(src, dst.len()).ok_or(INVALID_VALUE)?);
        let op = s.begin_op(ctx, st, "a device-to-host copy");
        s.accessed(ctx, &op, &[(src, src + dst.len() as u64)], &[])?;
        // The copy returns once done (pageable memory): the host has waited for it.
        s.host_waited_stream(st);
        s.sync_point(ctx, call)
    })
}

/// cuCtxSynchronize's part here: the current context's pending legacy-stream copies
/// land (the entry point calls this after `context::ctx_synchronize` succeeded).
pub fn land_legacy_copies() -> Result<(), CuResult> {
    with_init(|s| {
        let ctx = s.current()?;
        s.land_copies(ctx);
        s.host_waited_ctx(ctx);
        Ok(())
    })
}

/// cuMemGetInfo_v2: (free, total) of the 80 GiB the device reports.
pub fn get_info() -> Result<(u64, u64), CuResult> {
    with_init(|s| {
        s.current()?;
        Ok((TOTAL_MEM.saturating_sub(s.memory.used), TOTAL_MEM))
    })
}
