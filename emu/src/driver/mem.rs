//! Device memory calls: allocation, memset, copies.
//!
//! Everything runs at call time (streams are FIFO and the host waits for nothing, so
//! running each operation when it is issued is a legal schedule), except on a capturing
//! stream, where memsets and device-to-device copies are recorded instead.

use super::device::TOTAL_MEM;
use super::error::*;
use super::graph::run_node;
use super::state::{with_init, Handle, Node, State, StreamRef};

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
        run_node(self, ctx, &node, false)
    }

    /// The stream a call names (`Some`) or, for the synchronous forms (`None`), the
    /// current context's legacy stream after the "unsafe call during capture" check.
    fn target(&mut self, stream: Option<Handle>, what: &'static str) -> Result<(Handle, StreamRef), CuResult> {
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
/// is INVALID_VALUE.
pub fn free(ptr: u64) -> Result<(), CuResult> {
    with_init(|s| {
        s.current()?;
        s.check_unsafe_call("cuMemFree during capture")?;
        if ptr == 0 {
            return Ok(());
        }
        s.free(ptr)
    })
}

/// cuMemFreeAsync. During capture the driver records a free node, which must free a
/// graph allocation; the emulator makes none (see [`alloc_async`]), so a free on a
/// capturing stream is INVALID_VALUE, as the driver answers for a non-graph allocation.
pub fn free_async(ptr: u64, stream: Handle) -> Result<(), CuResult> {
    with_init(|s| {
        let (_, st) = s.stream(stream)?;
        if s.capture_of(st).is_some() {
            eprintln!("mp-emu: cuMemFreeAsync of {ptr:#x} on a capturing stream: not a graph allocation");
            return Err(INVALID_VALUE);
        }
        s.check_legacy(st)?;
        if ptr == 0 {
            return Ok(());
        }
        s.free(ptr)
    })
}

/// cuMemsetD8/D16/D32 (`elem` 1, 2, 4 bytes), synchronous when `stream` is None.
pub fn memset(dst: u64, value: u32, elem: usize, count: usize, stream: Option<Handle>) -> Result<(), CuResult> {
    with_init(|s| {
        let (ctx, st) = s.target(stream, "synchronous cuMemset during capture")?;
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
        let (ctx, st) = s.target(stream, "synchronous cuMemcpyDtoD during capture")?;
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
/// is treated as pageable, and a pageable copy cannot be captured).
fn host_copy_target(s: &mut State, stream: Option<Handle>, what: &'static str) -> Result<(), CuResult> {
    let (_, st) = s.target(stream, what)?;
    s.forbid_in_capture(st, STREAM_CAPTURE_UNSUPPORTED, what)
}

/// cuMemcpyHtoD, synchronous when `stream` is None.
pub fn copy_htod(dst: u64, src: &[u8], stream: Option<Handle>) -> Result<(), CuResult> {
    with_init(|s| {
        host_copy_target(s, stream, "host-to-device copy from pageable memory during capture")?;
        if src.is_empty() {
            return Ok(());
        }
        let d = s.memory.slice_mut(dst, src.len()).ok_or(INVALID_VALUE)?;
        d.copy_from_slice(src);
        Ok(())
    })
}

/// cuMemcpyDtoH, synchronous when `stream` is None.
pub fn copy_dtoh(dst: &mut [u8], src: u64, stream: Option<Handle>) -> Result<(), CuResult> {
    with_init(|s| {
        host_copy_target(s, stream, "device-to-host copy to pageable memory during capture")?;
        if dst.is_empty() {
            return Ok(());
        }
        dst.copy_from_slice(s.memory.slice(src, dst.len()).ok_or(INVALID_VALUE)?);
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
