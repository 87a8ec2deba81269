//! Stream capture and graphs: what a capturing stream records (the nodes and the edges
//! between them: stream order, event waits across the capture's streams), and running
//! recorded nodes (eagerly, or replayed by cuGraphLaunch in [`replay_order`]).

use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;

use super::error::{self, *};
use super::order::{join, Clock, Op};
use super::state::{with_init, Body, Capture, Graph, Handle, Member, Node, State, StreamRef, CAPTURE_RELAXED};
use crate::exec::{self, FaultKind};

/// The driver's code for a failed launch.
pub fn fault_code(kind: FaultKind) -> CuResult {
    match kind {
        FaultKind::InvalidValue => INVALID_VALUE,
        FaultKind::OutOfResources => LAUNCH_OUT_OF_RESOURCES,
        FaultKind::IllegalAddress => ILLEGAL_ADDRESS,
        FaultKind::MisalignedAddress => MISALIGNED_ADDRESS,
        FaultKind::IllegalInstruction => ILLEGAL_INSTRUCTION,
        FaultKind::Sanitizer => LAUNCH_FAILED,
    }
}

/// A memset or copy node whose memory is gone. Issued eagerly, the call was validated
/// already, so this only happens on replay, where the GPU would fault on the freed
/// memory: ILLEGAL_ADDRESS, sticky, with what and where on stderr, reported as
/// [`State::fault`] says.
fn bad_node(s: &mut State, ctx: Handle, replay: bool, what: String) -> Result<(), CuResult> {
    if !replay {
        return Err(INVALID_VALUE);
    }
    eprintln!("mp-emu: graph replay: {what} is not inside a live allocation (freed after capture?)");
    s.fault(ctx, ILLEGAL_ADDRESS, format!("a graph's {what}"))
}

/// What a node is, for the report of a race between streams (`driver::order`).
pub fn describe(node: &Node) -> String {
    match node {
        Node::Kernel { module, kernel, .. } => {
            format!("kernel {}", module.kernels.get(*kernel).map_or("?", |k| k.name.as_str()))
        }
        Node::Memset { .. } => "a memset".into(),
        Node::Copy { .. } => "a device-to-device copy".into(),
        Node::Graph(_) => "a graph launch".into(),
    }
}

/// The order a graph's nodes replay in: a topological order of its edges that takes,
/// among the nodes ready, the latest captured first. Issue order is also legal, and the
/// one the capture saw; replaying another one where the graph leaves freedom means a
/// graph that relied on issue order between unordered branches computes something else
/// here, and the check between streams reports the pair (`driver::order`). Fixed, so a
/// failure replays.
pub fn replay_order(body: &Body) -> Vec<usize> {
    let n = body.nodes.len();
    let mut waiting: Vec<usize> = body.deps.iter().map(Vec::len).collect();
    let mut next: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, deps) in body.deps.iter().enumerate() {
        for &d in deps {
            next[d].push(i);
        }
    }
    let mut ready: BinaryHeap<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop() {
        order.push(i);
        for &j in &next[i] {
            waiting[j] -= 1;
            if waiting[j] == 0 {
                ready.push(j);
            }
        }
    }
    order
}

/// Replays a graph's nodes as operation `op` (its launch) of context `ctx`: in
/// [`replay_order`], each node on its lane, after the launch's clock and its
/// dependencies' (`driver::order`). Returns the clock of the whole graph's end.
fn replay_body(s: &mut State, ctx: Handle, body: &Body, op: &Op) -> Result<Clock, CuResult> {
    let mut clocks: Vec<Clock> = vec![Clock::new(); body.nodes.len()];
    let mut end = op.clock.clone();
    for i in replay_order(body) {
        let mut c = op.clock.clone();
        for &d in &body.deps[i] {
            join(&mut c, &clocks[d]);
        }
        let lane = State::lane_key(op, body.lanes[i]);
        let node_op = s.lane_op(ctx, lane, c, &describe(&body.nodes[i]));
        run_node(s, ctx, &body.nodes[i], true, &node_op)?;
        let mut done = node_op.clock;
        if matches!(body.nodes[i], Node::Graph(_)) {
            // A child graph's nodes ran on lanes of their own and were merged into this
            // node's lane at its end (run_node): what follows this node follows them too.
            if let Some(c) = s.clock_of(node_op.key) {
                join(&mut done, c);
            }
        }
        join(&mut end, &done);
        clocks[i] = done;
    }
    Ok(end)
}

/// Runs one node on context `ctx`'s memory, as operation `op` (`driver::order`: what it
/// touches is checked against the other streams' work). `replay` is true when the node
/// comes from a graph (its arguments were checked at record time, against memory that
/// may since have been freed). Nothing runs once the context's work has faulted ([`State::faulted`]):
/// a GPU context that took a fault runs no more work, and a second report would only
/// bury the first. A kernel's fault is reported as [`State::fault`] says (by default at
/// the next synchronizing call); an error of the launch itself (an invalid
/// configuration, found before any thread runs) is returned at once and is not sticky.
pub fn run_node(s: &mut State, ctx: Handle, node: &Node, replay: bool, op: &Op) -> Result<(), CuResult> {
    if s.faulted(ctx) {
        return Ok(());
    }
    match node {
        Node::Kernel { module, kernel, cfg, params } => {
            match exec::launch_stats(module, *kernel, cfg, params, &mut s.memory) {
                Ok(st) => s.accessed(ctx, op, &st.read, &st.written),
                Err(e) => {
                    let code = fault_code(e.kind);
                    let name = module.kernels.get(*kernel).map_or("?", |k| k.name.as_str());
                    eprintln!("mp-emu: kernel {name}: {}: {}", error::name(code).unwrap_or("?"), e.report);
                    if e.kind.is_sticky() {
                        s.fault(ctx, code, format!("kernel {name}"))
                    } else {
                        Err(code)
                    }
                }
            }
        }
        &Node::Memset { dst, value, elem, count } => {
            let Some(d) = s.memory.slice_mut(dst, elem * count) else {
                return bad_node(s, ctx, replay, format!("memset of {count} x {elem} bytes at {dst:#x}"));
            };
            let bytes = value.to_le_bytes();
            for chunk in d.chunks_exact_mut(elem) {
                chunk.copy_from_slice(&bytes[..elem]);
            }
            s.accessed(ctx, op, &[], &[(dst, dst + (elem * count) as u64)])
        }
        &Node::Copy { dst, src, len } => {
            if s.memory.copy(dst, src, len) {
                s.accessed(ctx, op, &[(src, src + len as u64)], &[(dst, dst + len as u64)])
            } else {
                bad_node(s, ctx, replay, format!("copy of {len} bytes from {src:#x} to {dst:#x}"))
            }
        }
        Node::Graph(body) => {
            let end = replay_body(s, ctx, body, op)?;
            s.merge_into(ctx, op.key, &end);
            Ok(())
        }
    }
}

/// cuStreamBeginCapture_v2. The default streams cannot be captured here (the legacy
/// stream cannot on the driver either; the per-thread stream could, but nothing we run
/// captures it): STREAM_CAPTURE_UNSUPPORTED. A stream already capturing: ILLEGAL_STATE.
pub fn begin_capture(stream: Handle, mode: u32) -> Result<(), CuResult> {
    if mode > CAPTURE_RELAXED {
        return Err(INVALID_VALUE);
    }
    with_init(|s| {
        let (ctx, st) = s.stream(stream)?;
        let StreamRef::Created(h) = st else { return Err(STREAM_CAPTURE_UNSUPPORTED) };
        if s.capture_of(st).is_some() {
            return Err(ILLEGAL_STATE);
        }
        let id = s.new_capture_id();
        let mut members = BTreeMap::new();
        members.insert(h, Member { seq: 0, unjoined: false, deps: Vec::new() });
        let thread = std::thread::current().id();
        s.captures
            .insert(id, Capture { ctx, origin: h, mode, thread, members, body: Body::default(), invalidated: None });
        if let Some(st) = s.streams.get_mut(&h) {
            st.capture = Some(id);
        }
        Ok(())
    })
}

/// Takes every stream out of capture `id` and removes it.
fn finish(s: &mut State, id: u64) -> Option<Capture> {
    let c = s.captures.remove(&id)?;
    for h in c.members.keys() {
        if let Some(st) = s.streams.get_mut(h) {
            st.capture = None;
        }
    }
    Some(c)
}

/// cuStreamEndCapture: the graph of what was recorded (possibly empty). Not capturing:
/// ILLEGAL_STATE. A GLOBAL or THREAD_LOCAL capture ended from another thread:
/// STREAM_CAPTURE_WRONG_THREAD (the capture goes on). A stream that joined the capture
/// but did not begin it: STREAM_CAPTURE_UNMATCHED, and the capture is invalidated. An
/// invalidated capture: STREAM_CAPTURE_INVALIDATED; a fork never joined back:
/// STREAM_CAPTURE_UNJOINED; either way the capture ends without a graph.
pub fn end_capture(stream: Handle) -> Result<Handle, CuResult> {
    with_init(|s| {
        let (ctx, st) = s.stream(stream)?;
        let StreamRef::Created(h) = st else { return Err(ILLEGAL_STATE) };
        let id = s.capture_of(st).ok_or(ILLEGAL_STATE)?;
        let c = s.captures.get(&id).ok_or(UNKNOWN)?;
        if c.mode != CAPTURE_RELAXED && c.thread != std::thread::current().id() {
            return Err(STREAM_CAPTURE_WRONG_THREAD);
        }
        if c.origin != h {
            s.invalidate(id, "cuStreamEndCapture on a stream that did not begin the capture");
            return Err(STREAM_CAPTURE_UNMATCHED);
        }
        let c = finish(s, id).ok_or(UNKNOWN)?;
        if c.invalidated.is_some() {
            return Err(STREAM_CAPTURE_INVALIDATED);
        }
        if c.members.values().any(|m| m.unjoined) {
            eprintln!("mp-emu: cuStreamEndCapture: work forked onto another stream was not joined back");
            return Err(STREAM_CAPTURE_UNJOINED);
        }
        let g = s.new_handle();
        s.graphs.insert(g, Graph { ctx, nodes: Arc::new(c.body) });
        Ok(g)
    })
}

/// CUstreamCaptureStatus values.
pub const STATUS_NONE: u32 = 0;
pub const STATUS_ACTIVE: u32 = 1;
pub const STATUS_INVALIDATED: u32 = 2;

/// cuStreamGetCaptureInfo: (status, capture id). Asking about the legacy stream while a
/// blocking stream captures is STREAM_CAPTURE_IMPLICIT, as the driver answers.
pub fn capture_info(stream: Handle) -> Result<(u32, u64), CuResult> {
    with_init(|s| {
        let (ctx, st) = s.stream(stream)?;
        if let StreamRef::Legacy(_) = st {
            let blocking_capture = s
                .streams
                .values()
                .any(|x| x.ctx == ctx && x.capture.is_some() && x.flags & super::state::STREAM_NON_BLOCKING == 0);
            return if blocking_capture { Err(STREAM_CAPTURE_IMPLICIT) } else { Ok((STATUS_NONE, 0)) };
        }
        Ok(match s.capture_of(st) {
            None => (STATUS_NONE, 0),
            Some(id) => match s.captures.get(&id) {
                Some(c) if c.invalidated.is_some() => (STATUS_INVALIDATED, id),
                _ => (STATUS_ACTIVE, id),
            },
        })
    })
}

/// CUgraphInstantiate_flags the emulator accepts: AUTO_FREE_ON_LAUNCH (1), DEVICE_LAUNCH
/// (4), USE_NODE_PRIORITY (8). UPLOAD (2) is only for cuGraphInstantiateWithParams, and
/// AUTO_FREE_ON_LAUNCH with DEVICE_LAUNCH is refused, as by the driver.
pub fn instantiate(graph: Handle, flags: u64) -> Result<Handle, CuResult> {
    with_init(|s| {
        if flags & !0xd != 0 || (flags & 1 != 0 && flags & 4 != 0) {
            return Err(INVALID_VALUE);
        }
        let g = s.graphs.get(&graph).ok_or(INVALID_HANDLE)?;
        let (ctx, nodes) = (g.ctx, g.nodes.clone());
        s.usable(ctx)?;
        let h = s.new_handle();
        s.execs.insert(h, Graph { ctx, nodes });
        Ok(h)
    })
}

/// cuGraphUpload: nothing to upload; checks the handles.
pub fn upload(exec: Handle, stream: Handle) -> Result<(), CuResult> {
    with_init(|s| {
        s.execs.get(&exec).ok_or(INVALID_HANDLE)?;
        s.stream(stream).map(|_| ())
    })
}

/// cuGraphLaunch: replays the nodes now, in [`replay_order`]; into a capturing stream,
/// the graph is recorded as one node.
pub fn launch(exec: Handle, stream: Handle) -> Result<(), CuResult> {
    with_init(|s| {
        let nodes = s.execs.get(&exec).ok_or(INVALID_HANDLE)?.nodes.clone();
        let (ctx, st) = s.stream(stream)?;
        let node = Node::Graph(nodes);
        if s.record(st, node.clone())? {
            return Ok(());
        }
        let op = s.begin_op(ctx, st, "a graph launch");
        run_node(s, ctx, &node, true, &op)
    })
}

pub fn destroy_graph(graph: Handle) -> Result<(), CuResult> {
    with_init(|s| s.graphs.remove(&graph).map(|_| ()).ok_or(INVALID_HANDLE))
}

pub fn destroy_exec(exec: Handle) -> Result<(), CuResult> {
    with_init(|s| s.execs.remove(&exec).map(|_| ()).ok_or(INVALID_HANDLE))
}

/// The number of top-level nodes of a graph (cuGraphGetNodes with a null node array),
/// which tests use to see what a capture recorded.
pub fn node_count(graph: Handle) -> Result<usize, CuResult> {
    with_init(|s| s.graphs.get(&graph).map(|g| g.nodes.nodes.len()).ok_or(INVALID_HANDLE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(deps: Vec<Vec<usize>>) -> Body {
        let node = Node::Memset { dst: 0, value: 0, elem: 1, count: 0 };
        Body { nodes: vec![node; deps.len()], lanes: vec![0; deps.len()], deps }
    }

    #[test]
    fn replay_takes_the_latest_ready_node_and_keeps_every_edge() {
        // A chain stays in issue order.
        assert_eq!(replay_order(&body(vec![vec![], vec![0], vec![1]])), [0, 1, 2]);
        // A fork 0 -> {1, 2} -> 3: the branches swap, the join waits for both.
        assert_eq!(replay_order(&body(vec![vec![], vec![0], vec![0], vec![1, 2]])), [0, 2, 1, 3]);
        // Two independent chains 0 -> 2 and 1 -> 3: the later chain runs first.
        assert_eq!(replay_order(&body(vec![vec![], vec![], vec![0], vec![1]])), [1, 3, 0, 2]);
    }
}
