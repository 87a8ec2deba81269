//! Happens-before between streams: which device operations the driver orders, and the
//! finding when two that touch the same bytes are not ordered.
//!
//! The emulator runs every operation when it is issued, so two kernels on two streams
//! never overlap here and a program that forgot an event between them computes the right
//! answer; on a GPU the second may run first, or alongside. This module finds that bug
//! without needing the bad schedule: a vector clock per stream (one component per
//! stream, the count of operations issued on it), advanced and merged as the driver
//! orders work:
//!
//! - an operation on a stream follows the stream's earlier operations (FIFO);
//! - an operation on the legacy default stream follows the earlier work of every blocking
//!   stream of its context (created without CU_STREAM_NON_BLOCKING, and the per-thread
//!   default stream), and work on those follows the legacy stream's earlier work
//!   (CUDA Driver API, "Stream synchronization behavior": the legacy stream "synchronizes
//!   with all other streams in the same CUcontext except for non-blocking streams"; the
//!   per-thread default stream is treated as one blocking stream per context, not one per
//!   host thread); a non-blocking stream does neither;
//! - cuEventRecord is an operation of its stream (it advances the stream's epoch) whose
//!   clock the event keeps; cuStreamWaitEvent merges that clock into the waiting stream's;
//! - what the host waited for (cuCtxSynchronize, cuStreamSynchronize, cuEventSynchronize,
//!   a query that answered SUCCESS, the device-to-host copies that return once done and
//!   the synchronous host-to-device copy that first synchronizes, "API synchronization
//!   behavior") is in the host's clock, and every operation issued afterwards, on any
//!   stream, follows it;
//! - a replayed graph's nodes follow the work before the launch on its stream and their
//!   graph dependencies; the work after the launch follows all of them.
//!
//! Every kernel, copy, memset and asynchronous free records, per allocation, the byte
//! ranges it read and wrote (a kernel's from its launch's footprint,
//! `exec::footprint`) with its stream and its own clock component. An operation whose
//! ranges meet a recorded one of another stream, at least one of the two writing, that
//! its clock does not include, is a race between streams: said on stderr, naming both
//! operations, their streams, the allocation and the bytes; under `MP_EMU_STRICT` it is
//! also a fault of the later operation (CUDA_ERROR_LAUNCH_FAILED, as [`State::fault`]
//! reports it), like the unordered legacy-stream copy (`driver::memcalls`).
//!
//! The record stays small: an access is dropped once the host has waited for it (every
//! later operation follows it), and the bytes of an earlier access that a later one
//! ordered after it rewrote (for a write) or reread (for a read of a read) are trimmed
//! from it. A record pruned this way can hide no race: whatever is unordered with the
//! pruned access and conflicts with it also conflicts, unordered, with the one that
//! superseded it, or was ordered after it by the host. The one cap (a bound on accesses
//! kept per allocation, oldest dropped first) can miss a race, never invent one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::error::*;
use super::faults;
use super::state::{Handle, State, StreamRef, STREAM_NON_BLOCKING};
use crate::exec::footprint::Range;

/// Whose clock component an operation advances: a stream, or one lane of a graph
/// replayed on a stream (the stream a node was captured on, so a lane is as ordered as
/// that stream was).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    Legacy(Handle),
    PerThread(Handle),
    Stream(Handle),
    /// (the component of the launching stream or lane, the capturing stream)
    Lane(u64, Handle),
}

impl Key {
    pub fn of(s: StreamRef) -> Key {
        match s {
            StreamRef::Legacy(c) => Key::Legacy(c),
            StreamRef::PerThread(c) => Key::PerThread(c),
            StreamRef::Created(h) => Key::Stream(h),
        }
    }

    /// A number standing for this key inside a lane key (lanes of nested graphs).
    fn id(self) -> u64 {
        match self {
            Key::Legacy(c) => (c as u64) << 2,
            Key::PerThread(c) => (c as u64) << 2 | 1,
            Key::Stream(h) => (h as u64) << 2 | 2,
            Key::Lane(a, h) => a.rotate_left(17) ^ (h as u64) << 2 | 3,
        }
    }
}

/// A vector clock: for each stream or lane, the last of its operations known done.
pub type Clock = BTreeMap<Key, u64>;

pub fn join(into: &mut Clock, other: &Clock) {
    for (&k, &v) in other {
        let e = into.entry(k).or_insert(0);
        *e = (*e).max(v);
    }
}

/// Whether `clock` includes operation `epoch` of `key`.
pub fn knows(clock: &Clock, key: Key, epoch: u64) -> bool {
    clock.get(&key).is_some_and(|&v| v >= epoch)
}

/// One operation: where it runs, its clock (its own component included) and what it is.
#[derive(Clone)]
pub struct Op {
    pub key: Key,
    pub clock: Clock,
    pub what: Arc<str>,
}

impl Op {
    pub fn epoch(&self) -> u64 {
        self.clock.get(&self.key).copied().unwrap_or(0)
    }
}

/// A recorded access: bytes, read or written, by which operation.
#[derive(Clone)]
struct Access {
    lo: u64,
    hi: u64,
    write: bool,
    key: Key,
    epoch: u64,
    what: Arc<str>,
}

/// Accesses kept per allocation at most (module docs).
const MAX_ACCESSES: usize = 1 << 14;

/// The ordering state of the device.
#[derive(Default)]
pub struct Order {
    /// Each stream's or lane's clock, with its context.
    pub clocks: HashMap<Key, (Handle, Clock)>,
    /// What the host has waited for.
    pub host: Clock,
    /// Recorded accesses by allocation base.
    log: HashMap<u64, Vec<Access>>,
    /// Per stream, the epoch a query last answered NOT_READY for (`query`).
    polled: HashMap<Key, u64>,
    /// Blocking streams destroyed: their queued work still completes (cuStreamDestroy),
    /// and later legacy-stream work still follows it.
    retired_blocking: std::collections::HashSet<Key>,
}

impl State {
    /// How a report names the stream or lane `key`.
    fn stream_name(&self, key: Key) -> String {
        match key {
            Key::Legacy(_) => "the legacy default stream".into(),
            Key::PerThread(_) => "the per-thread default stream".into(),
            Key::Stream(h) => {
                let nb = self.streams.get(&h).is_some_and(|x| x.flags & STREAM_NON_BLOCKING != 0);
                format!("{}stream {h:#x}", if nb { "non-blocking " } else { "" })
            }
            Key::Lane(_, h) => format!("a graph node captured on stream {h:#x}"),
        }
    }

    /// The clock of stream `key` of `ctx` (empty for one that did nothing yet).
    pub fn clock(&self, key: Key) -> Clock {
        self.order.clocks.get(&key).map(|(_, c)| c.clone()).unwrap_or_default()
    }

    /// The clock work issued now on `s` starts from: the stream's own, what the host
    /// waited for, and the legacy-stream rule (module docs).
    fn start_clock(&self, ctx: Handle, s: StreamRef) -> Clock {
        let key = Key::of(s);
        let mut c = self.clock(key);
        join(&mut c, &self.order.host);
        match s {
            StreamRef::Legacy(_) => {
                for (k, (kctx, kc)) in &self.order.clocks {
                    let blocking = match *k {
                        Key::PerThread(_) => true,
                        Key::Stream(h) => self.streams.get(&h).map_or_else(
                            || self.order.retired_blocking.contains(k),
                            |x| x.flags & STREAM_NON_BLOCKING == 0,
                        ),
                        _ => false,
                    };
                    if *kctx == ctx && blocking {
                        join(&mut c, kc);
                    }
                }
            }
            _ if self.follows_legacy(s) => join(&mut c, &self.clock(Key::Legacy(ctx))),
            _ => {}
        }
        c
    }

    /// A new operation `what` on stream `s`: its clock, advanced and stored as the
    /// stream's.
    pub fn begin_op(&mut self, ctx: Handle, s: StreamRef, what: &str) -> Op {
        let key = Key::of(s);
        let mut clock = self.start_clock(ctx, s);
        *clock.entry(key).or_insert(0) += 1;
        self.order.clocks.insert(key, (ctx, clock.clone()));
        Op { key, clock, what: what.into() }
    }

    /// A node of a graph replayed on `lane` (module docs): `clock` is what it follows
    /// (the launch and its dependencies); its own component is the lane's next.
    pub fn lane_op(&mut self, ctx: Handle, lane: Key, mut clock: Clock, what: &str) -> Op {
        let next = self.clock(lane).get(&lane).copied().unwrap_or(0) + 1;
        clock.insert(lane, next);
        let e = self.order.clocks.entry(lane).or_insert((ctx, Clock::new()));
        e.1.insert(lane, next);
        Op { key: lane, clock, what: what.into() }
    }

    /// The key of lane `h` of a graph replayed as operation `op`.
    pub fn lane_key(op: &Op, h: Handle) -> Key {
        Key::Lane(op.key.id(), h)
    }

    /// Stream `key`'s clock now includes `clock` (a graph's end, an event wait).
    /// The clock of lane or stream `key` now (what work issued there next would follow).
    pub fn clock_of(&self, key: Key) -> Option<&Clock> {
        self.order.clocks.get(&key).map(|(_, c)| c)
    }

    pub fn merge_into(&mut self, ctx: Handle, key: Key, clock: &Clock) {
        let e = self.order.clocks.entry(key).or_insert((ctx, Clock::new()));
        join(&mut e.1, clock);
    }

    /// The host waited for `clock`: accesses it includes are dropped (module docs).
    pub fn host_waited(&mut self, clock: &Clock) {
        join(&mut self.order.host, clock);
        let host = &self.order.host;
        for accesses in self.order.log.values_mut() {
            accesses.retain(|a| !knows(host, a.key, a.epoch));
        }
        self.order.log.retain(|_, v| !v.is_empty());
    }

    /// The host waited for all of `ctx`'s work (cuCtxSynchronize, a free).
    pub fn host_waited_ctx(&mut self, ctx: Handle) {
        let mut all = Clock::new();
        for (c, k) in self.order.clocks.values() {
            if *c == ctx {
                join(&mut all, k);
            }
        }
        self.host_waited(&all);
    }

    /// The host waited for stream `s` (its synchronization, a device-to-host copy).
    pub fn host_waited_stream(&mut self, s: StreamRef) {
        let c = self.clock(Key::of(s));
        self.host_waited(&c);
    }

    /// Forgets the clocks of a context being destroyed: its work is over, and its
    /// streams can order nothing any more. Their components leave the host's clock and
    /// the query record too, and their accesses the log (handles are never reused), so
    /// a process that makes many contexts does not carry them all in every operation's
    /// clock.
    pub fn forget_context(&mut self, ctx: Handle) {
        let gone: Vec<Key> = self.order.clocks.iter().filter(|(_, (c, _))| *c == ctx).map(|(&k, _)| k).collect();
        self.order.clocks.retain(|_, (c, _)| *c != ctx);
        for k in &gone {
            self.order.host.remove(k);
            self.order.polled.remove(k);
            self.order.retired_blocking.remove(k);
        }
        for accesses in self.order.log.values_mut() {
            accesses.retain(|a| !gone.contains(&a.key));
        }
        self.order.log.retain(|_, v| !v.is_empty());
    }

    /// Stream `h` was destroyed; `blocking`: it was not CU_STREAM_NON_BLOCKING. Its clock
    /// stays (its work completes and what waited on it still follows it); a blocking
    /// one stays among the streams the legacy stream synchronizes with.
    pub fn retire_stream(&mut self, h: Handle, blocking: bool) {
        if blocking {
            self.order.retired_blocking.insert(Key::Stream(h));
        }
    }

    /// Forgets the accesses to an allocation being freed.
    pub fn forget(&mut self, base: u64) {
        self.order.log.remove(&base);
    }

    /// Records what `op` read and wrote and checks it against the other streams'
    /// accesses (module docs). On a race: the finding on stderr, and under
    /// `MP_EMU_STRICT` a fault of `ctx`'s work.
    pub fn accessed(&mut self, ctx: Handle, op: &Op, read: &[Range], written: &[Range]) -> Result<(), CuResult> {
        let epoch = op.epoch();
        let mut race: Option<String> = None;
        for (ranges, write) in [(read, false), (written, true)] {
            for &(lo, hi) in ranges {
                if lo >= hi {
                    continue;
                }
                let Some((base, len)) = self.memory.find(lo).map(|(b, a)| (b, a.data.len())) else { continue };
                if race.is_none() {
                    let log = self.order.log.get(&base).map_or(&[][..], Vec::as_slice);
                    if let Some(a) = log.iter().find(|a| {
                        a.lo < hi
                            && lo < a.hi
                            && (write || a.write)
                            && a.key != op.key
                            && !knows(&op.clock, a.key, a.epoch)
                    }) {
                        race = Some(format!(
                            "{} on {} {} bytes [{:#x}, {:#x}) of the {len}-byte allocation at {base:#x}, which {} on {} {} \
                             ({:#x}..{:#x}), with nothing ordering the two (no event waited on, no synchronization between \
                             the streams): on a GPU they may run in either order or at once",
                            op.what,
                            self.stream_name(op.key),
                            if write { "writes" } else { "reads" },
                            lo.max(a.lo),
                            hi.min(a.hi),
                            a.what,
                            self.stream_name(a.key),
                            if a.write { "wrote" } else { "read" },
                            a.lo,
                            a.hi,
                        ));
                    }
                }
                let log = self.order.log.entry(base).or_default();
                // Trim what this access supersedes, ordered before it.
                let mut kept = Vec::with_capacity(log.len() + 1);
                for a in log.drain(..) {
                    let covered = a.lo < hi
                        && lo < a.hi
                        && (write || !a.write)
                        && (a.key == op.key || knows(&op.clock, a.key, a.epoch));
                    if !covered {
                        kept.push(a);
                        continue;
                    }
                    if a.lo < lo {
                        kept.push(Access { hi: lo, ..a.clone() });
                    }
                    if hi < a.hi {
                        kept.push(Access { lo: hi, ..a });
                    }
                }
                kept.push(Access { lo, hi, write, key: op.key, epoch, what: op.what.clone() });
                if kept.len() > MAX_ACCESSES {
                    kept.drain(..kept.len() - MAX_ACCESSES);
                }
                *log = kept;
            }
        }
        let Some(msg) = race else { return Ok(()) };
        let strict = faults::strict().unwrap_or(false);
        eprintln!(
            "mp-emu: race between streams: {msg} (record an event after the first and make the second's stream wait \
             on it){}",
            if strict { "; MP_EMU_STRICT=1: it fails with CUDA_ERROR_LAUNCH_FAILED" } else { "" }
        );
        if strict {
            return self.fault(ctx, LAUNCH_FAILED, op.what.to_string());
        }
        Ok(())
    }

    /// cuStreamQuery's answer for stream `s` (module docs of `driver::stream`): SUCCESS
    /// when the host already waited for all its work, or when this work was queried
    /// once before; else NOT_READY, once.
    pub fn query(&mut self, s: StreamRef) -> Result<(), CuResult> {
        let key = Key::of(s);
        let clock = self.clock(key);
        let epoch = clock.get(&key).copied().unwrap_or(0);
        if epoch == 0 || knows(&self.order.host, key, epoch) || self.order.polled.get(&key) == Some(&epoch) {
            self.host_waited(&clock);
            return Ok(());
        }
        self.order.polled.insert(key, epoch);
        Err(NOT_READY)
    }
}
