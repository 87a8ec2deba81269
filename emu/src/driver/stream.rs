//! Streams and events.
//!
//! Work runs when it is issued, so a stream is only a context, its flags, its capture
//! state and its vector clock (`driver::order`, which finds work of two streams that
//! nothing orders), and an event a timestamp (host time: meaningless as a kernel time, and
//! benchmarks refuse the emulator anyway) with the clock of its record, or the capture
//! position it was recorded at.
//! The one exception, host-to-device copies on the legacy stream that land only when
//! something is ordered after them, is described in `driver::memcalls`; here, recording an
//! event on or making a stream that follows the legacy stream wait, and synchronizing
//! the legacy stream, land them.

use std::time::Instant;

use super::error::*;
use super::state::{with_init, Event, Handle, Member, Recorded, State, Stream, StreamRef};

/// cuStreamCreate / cuStreamCreateWithPriority (the priority changes nothing here).
pub fn create(flags: u32) -> Result<Handle, CuResult> {
    with_init(|s| {
        if flags & !super::state::STREAM_NON_BLOCKING != 0 {
            return Err(INVALID_VALUE);
        }
        let ctx = s.current()?;
        let h = s.new_handle();
        s.streams.insert(h, Stream { ctx, flags, capture: None });
        Ok(h)
    })
}

/// cuStreamDestroy_v2. Destroying the stream a capture began on ends that capture (no
/// graph); a stream that only joined it leaves it, and the capture is invalidated.
pub fn destroy(stream: Handle) -> Result<(), CuResult> {
    with_init(|s| {
        let (_, st) = s.stream(stream)?;
        let StreamRef::Created(h) = st else { return Err(INVALID_HANDLE) };
        if let Some(id) = s.capture_of(st) {
            let origin = s.captures.get(&id).map(|c| c.origin);
            if origin == Some(h) {
                if let Some(c) = s.captures.remove(&id) {
                    for m in c.members.keys() {
                        if let Some(x) = s.streams.get_mut(m) {
                            x.capture = None;
                        }
                    }
                }
            } else {
                if let Some(c) = s.captures.get_mut(&id) {
                    c.members.remove(&h);
                }
                s.invalidate(id, "a stream taking part in the capture was destroyed");
            }
        }
        if let Some(x) = s.streams.remove(&h) {
            s.retire_stream(h, x.flags & super::state::STREAM_NON_BLOCKING == 0);
        }
        Ok(())
    })
}

/// cuStreamSynchronize and cuStreamQuery (`call`): all work is done already, except the
/// legacy stream's pending host-to-device copies, which land when the legacy stream is the
/// one synchronized (a created stream's synchronization does not wait for the legacy
/// stream); on a capturing stream this is a host synchronization, which invalidates the
/// capture (`what` says why). A fault of the context's work is returned here
/// (`driver::faults`; the context is the unit, as its faults are sticky for all of it).
///
/// A query (`query`) answers CUDA_ERROR_NOT_READY once for work the host has not waited
/// for: the first cuStreamQuery after new work on the stream says NOT_READY, the next
/// one SUCCESS (the work is then done, and the host has waited for it). A GPU may answer
/// either; answering NOT_READY once makes code that assumes a query finds the stream
/// idle fail here, and code that polls still terminates. A stream the host already
/// waited for (synchronized, or with its work in the host's clock, `driver::order`)
/// answers SUCCESS at once.
pub fn synchronize(stream: Handle, call: &'static str, what: &'static str, query: bool) -> Result<(), CuResult> {
    with_init(|s| {
        s.current_synced(call)?;
        let (ctx, st) = s.stream(stream)?;
        s.forbid_in_capture(st, STREAM_CAPTURE_UNSUPPORTED, what)?;
        if query {
            s.query(st)?;
        } else {
            s.host_waited_stream(st);
        }
        if let StreamRef::Legacy(_) = st {
            s.land_copies(ctx);
        }
        Ok(())
    })
}

/// cuStreamWaitEvent. Outside capture it is a no-op (the event's work is done). With
/// capture it carries the fork/join rules: a stream that waits on an event recorded in
/// a capture joins that capture; a capturing stream that waits on the latest event of
/// another stream of its capture joins that stream's work back; waiting on uncaptured
/// work from a capturing stream is STREAM_CAPTURE_ISOLATION, and on another capture's
/// event STREAM_CAPTURE_MERGE (both invalidate).
pub fn wait_event(stream: Handle, event: Handle, flags: u32) -> Result<(), CuResult> {
    with_init(|s| {
        if flags & !1 != 0 {
            return Err(INVALID_VALUE);
        }
        let e = s.events.get(&event).ok_or(INVALID_HANDLE)?;
        let (recorded, deps, op) = (e.recorded, e.deps.clone(), e.op.clone());
        let (ctx, st) = s.stream(stream)?;
        let mine = s.capture_of(st);
        match recorded {
            Recorded::Captured { capture, stream: from, seq } if s.captures.contains_key(&capture) => match mine {
                None => {
                    let StreamRef::Created(h) = st else {
                        s.invalidate(capture, "a default stream waited on an event recorded in a capture");
                        return Err(STREAM_CAPTURE_IMPLICIT);
                    };
                    join(s, capture, h, deps);
                    Ok(())
                }
                Some(id) if id == capture => {
                    let c = s.captures.get_mut(&id).ok_or(UNKNOWN)?;
                    if c.invalidated.is_some() {
                        return Err(STREAM_CAPTURE_INVALIDATED);
                    }
                    if let Some(m) = c.members.get_mut(&from) {
                        if m.seq == seq && StreamRef::Created(from) != st {
                            m.unjoined = false;
                        }
                    }
                    if let StreamRef::Created(h) = st {
                        if let Some(m) = c.members.get_mut(&h) {
                            m.deps.extend(deps);
                        }
                    }
                    Ok(())
                }
                Some(id) => {
                    s.invalidate(id, "a capturing stream waited on an event of another capture");
                    s.invalidate(capture, "a stream of another capture waited on an event of this one");
                    Err(STREAM_CAPTURE_MERGE)
                }
            },
            Recorded::At(_) if mine.is_some() => {
                s.invalidate(
                    mine.unwrap_or_default(),
                    "a capturing stream waited on an event recorded outside capture",
                );
                Err(STREAM_CAPTURE_ISOLATION)
            }
            _ => {
                s.check_legacy(st)?;
                s.order(ctx, st);
                // The wait is work of the stream (it follows the legacy stream as any
                // other would), after which the stream has the event's clock.
                let me = s.begin_op(ctx, st, "cuStreamWaitEvent");
                if let Some(op) = op {
                    s.merge_into(ctx, me.key, &op.clock);
                }
                Ok(())
            }
        }
    })
}

/// Makes stream `h` a member of capture `id`, its first node depending on `deps`.
fn join(s: &mut State, id: u64, h: Handle, deps: Vec<usize>) {
    if let Some(c) = s.captures.get_mut(&id) {
        c.members.insert(h, Member { seq: 0, unjoined: false, deps });
    }
    if let Some(st) = s.streams.get_mut(&h) {
        st.capture = Some(id);
    }
}

/// CUevent_flags: BLOCKING_SYNC (1), DISABLE_TIMING (2), INTERPROCESS (4, which requires
/// DISABLE_TIMING).
const EVENT_DISABLE_TIMING: u32 = 2;

pub fn event_create(flags: u32) -> Result<Handle, CuResult> {
    with_init(|s| {
        if flags & !7 != 0 || (flags & 4 != 0 && flags & EVENT_DISABLE_TIMING == 0) {
            return Err(INVALID_VALUE);
        }
        let ctx = s.current()?;
        let h = s.new_handle();
        s.events.insert(h, Event { ctx, flags, recorded: Recorded::Never, op: None, polled: false, deps: Vec::new() });
        Ok(h)
    })
}

/// cuEventRecord: on a capturing stream the event marks the stream's position in the
/// capture (what cross-stream waits join on); otherwise the time.
pub fn event_record(event: Handle, stream: Handle) -> Result<(), CuResult> {
    with_init(|s| {
        let ev_ctx = s.events.get(&event).ok_or(INVALID_HANDLE)?.ctx;
        let (ctx, st) = s.stream(stream)?;
        if ev_ctx != ctx {
            return Err(INVALID_HANDLE);
        }
        let (recorded, op, deps) = match (st, s.capture_of(st)) {
            (StreamRef::Created(h), Some(id)) => {
                let c = s.captures.get(&id).ok_or(UNKNOWN)?;
                if c.invalidated.is_some() {
                    return Err(STREAM_CAPTURE_INVALIDATED);
                }
                let (seq, deps) = c.members.get(&h).map_or((0, Vec::new()), |m| (m.seq, m.deps.clone()));
                (Recorded::Captured { capture: id, stream: h, seq }, None, deps)
            }
            _ => {
                s.check_legacy(st)?;
                s.order(ctx, st);
                let op = s.begin_op(ctx, st, "cuEventRecord");
                (Recorded::At(Instant::now()), Some(op), Vec::new())
            }
        };
        if let Some(e) = s.events.get_mut(&event) {
            e.recorded = recorded;
            e.op = op;
            e.deps = deps;
            e.polled = false;
        }
        Ok(())
    })
}

/// The host-side wait every event call makes (`call`): a fault of the event's context's
/// work is returned here (`driver::faults`); an event recorded into a capture that is
/// still going on cannot be waited for (CAPTURED_EVENT, capture invalidated).
fn host_wait(s: &mut State, event: Handle, call: &str) -> Result<Recorded, CuResult> {
    let e = s.events.get(&event).ok_or(INVALID_HANDLE)?;
    let (ctx, recorded) = (e.ctx, e.recorded);
    s.live_context(ctx)?;
    s.sync_point(ctx, call)?;
    if let Recorded::Captured { capture, .. } = recorded {
        if s.captures.contains_key(&capture) {
            s.invalidate(capture, "an event recorded in the capture was waited for or queried from the host");
            return Err(CAPTURED_EVENT);
        }
    }
    Ok(recorded)
}

/// cuEventSynchronize and cuEventQuery (`query`): complete (SUCCESS) unless captured,
/// except that a query answers NOT_READY once for a record the host has not waited for,
/// as cuStreamQuery does ([`synchronize`]). Either way, once SUCCESS, the host has
/// waited for the record (`driver::order`).
pub fn event_wait(event: Handle, call: &str, query: bool) -> Result<(), CuResult> {
    with_init(|s| {
        host_wait(s, event, call)?;
        let e = s.events.get_mut(&event).ok_or(INVALID_HANDLE)?;
        let Some(op) = e.op.clone() else { return Ok(()) };
        if query && !e.polled && !super::order::knows(&s.order.host, op.key, op.epoch()) {
            e.polled = true;
            return Err(NOT_READY);
        }
        s.host_waited(&op.clock);
        Ok(())
    })
}

/// cuEventElapsedTime(_v2): host milliseconds between two recorded events. An event
/// created with DISABLE_TIMING, or not recorded: INVALID_HANDLE, as the driver answers.
pub fn event_elapsed(start: Handle, end: Handle) -> Result<f32, CuResult> {
    with_init(|s| {
        let a = host_wait(s, start, "cuEventElapsedTime")?;
        let b = host_wait(s, end, "cuEventElapsedTime")?;
        let timed = |h: Handle| s.events.get(&h).is_some_and(|e| e.flags & EVENT_DISABLE_TIMING == 0);
        match (a, b) {
            (Recorded::At(a), Recorded::At(b)) if timed(start) && timed(end) => {
                let ms = if b >= a { b.duration_since(a).as_secs_f64() } else { -a.duration_since(b).as_secs_f64() };
                Ok((ms * 1e3) as f32)
            }
            _ => Err(INVALID_HANDLE),
        }
    })
}

pub fn event_destroy(event: Handle) -> Result<(), CuResult> {
    with_init(|s| s.events.remove(&event).map(|_| ()).ok_or(INVALID_HANDLE))
}
