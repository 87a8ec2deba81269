//! Register compaction of a lowered kernel: virtual registers whose live ranges do not
//! overlap share one slot of the thread's register file.
//!
//! nvcc's PTX declares a fresh virtual register for almost every value (about 7,400 in a
//! GEMM kernel), so a register file with one slot per declared register is ~59 KB per
//! thread and ~15 MB per 256-thread block: filled at every launch and far larger than any
//! cache. Live ranges are short, so a few hundred slots hold the same values.
//!
//! Method: liveness over the kernel body's basic blocks (a guarded definition does not
//! kill: the old value survives when the guard is false), then each register's live range
//! is taken as the hull [first, last] of the instructions where it is live, used or
//! defined, and ranges are packed by linear scan. Two registers whose hulls are disjoint
//! are never live at the same instruction, so sharing a slot changes no value a kernel
//! reads. A definition nobody reads still gets its point in the hull, so it never lands on
//! a slot that holds a live value.
//!
//! Left as they are: the special registers (fixed indices), the constants (written once
//! per launch), and every register of a called function (its parameters, return values
//! and body): calls are rare in our PTX and the callee's range is disjoint from the
//! kernel's already. `MP_EMU_REGALLOC=0` switches compaction off, to tell a compaction
//! bug from a kernel bug.

use crate::ir::{special, Code, Inst, Op, NONE};

/// Whether compaction runs (read once per process).
fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("MP_EMU_REGALLOC").map_or(true, |v| v != "0"))
}

/// The registers an instruction reads (`uses`) and writes (`defs`). Fields that hold
/// something else (a call's return count in `c`, cp.async's offsets in `v`, wait_all's
/// marker in `b`) are left out.
fn operands(i: &Inst, uses: &mut Vec<u32>, defs: &mut Vec<u32>) {
    uses.clear();
    defs.clear();
    let mut u = |r: u32| {
        if r != NONE {
            uses.push(r)
        }
    };
    u(i.guard);
    match i.op {
        Op::Bra | Op::Ret | Op::Exit | Op::CpAsyncCommit | Op::CpAsyncWait => {}
        Op::Call => {
            let nret = i.c as usize;
            i.v[nret..].iter().for_each(|&r| u(r));
            defs.extend_from_slice(&i.v[..nret]);
        }
        Op::CpAsync => {
            u(i.d);
            u(i.a);
            u(i.b);
        }
        Op::Ld(_) => {
            u(i.a);
            defs.extend_from_slice(&i.v);
        }
        Op::St(_) => {
            u(i.a);
            i.v.iter().for_each(|&r| u(r));
        }
        Op::Pack => {
            i.v.iter().for_each(|&r| u(r));
            defs.push(i.d);
        }
        Op::Unpack => {
            u(i.a);
            defs.extend_from_slice(&i.v);
        }
        Op::WmmaLoadA(_) | Op::WmmaLoadB(_) | Op::WmmaLoadC(_) => {
            u(i.a);
            u(i.b);
            defs.extend_from_slice(&i.v);
        }
        Op::WmmaMma(..) => {
            let nd = crate::ir::collective::acc_regs(i.ty2);
            i.v[nd..].iter().for_each(|&r| u(r));
            defs.extend_from_slice(&i.v[..nd]);
        }
        Op::WmmaStoreD(_) => {
            u(i.a);
            u(i.b);
            i.v.iter().for_each(|&r| u(r));
        }
        Op::Shfl(_) => {
            u(i.a);
            u(i.b);
            u(i.c);
            u(i.v[0]);
            defs.push(i.d);
            defs.extend_from_slice(&i.v[1..]);
        }
        Op::BarSync | Op::BarWarpSync => {
            u(i.a);
            u(i.b);
        }
        Op::BarRedOr => {
            u(i.a);
            u(i.c);
            defs.push(i.d);
        }
        // Arithmetic, moves, comparisons, conversions: sources in a, b, c; result in d.
        _ => {
            u(i.a);
            u(i.b);
            u(i.c);
            if i.d != NONE {
                defs.push(i.d);
            }
        }
    }
}

/// Rewrites every register field of `i` through `map` (same fields as [`operands`]).
fn rename(i: &mut Inst, map: &[u32]) {
    let m = |r: &mut u32| {
        if *r != NONE {
            *r = map[*r as usize];
        }
    };
    m(&mut i.guard);
    match i.op {
        Op::Bra | Op::Ret | Op::Exit | Op::CpAsyncCommit | Op::CpAsyncWait => {}
        Op::Call => i.v.iter_mut().for_each(m),
        Op::CpAsync => {
            m(&mut i.d);
            m(&mut i.a);
            m(&mut i.b);
        }
        _ => {
            m(&mut i.d);
            m(&mut i.a);
            m(&mut i.b);
            m(&mut i.c);
            i.v.iter_mut().for_each(m);
        }
    }
}

/// A set of candidate registers (dense indices).
#[derive(Clone, PartialEq)]
struct Set(Vec<u64>);

impl Set {
    fn new(n: usize) -> Self {
        Set(vec![0; n.div_ceil(64)])
    }
    fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn remove(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
    fn union(&mut self, o: &Set) {
        self.0.iter_mut().zip(&o.0).for_each(|(a, b)| *a |= b);
    }
    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &bits)| {
            let mut b = bits;
            std::iter::from_fn(move || {
                (b != 0).then(|| {
                    let t = b.trailing_zeros() as usize;
                    b &= b - 1;
                    w * 64 + t
                })
            })
        })
    }
}

/// Compacts `code`'s register file in place (see the module docs).
pub fn compact(code: &mut Code) {
    if !enabled() {
        return;
    }
    let n = code.nregs as usize;
    let body = code.callees.iter().map(|c| c.entry as usize).min().unwrap_or(code.insts.len());
    let (mut uses, mut defs) = (Vec::new(), Vec::new());

    // Registers that keep a slot of their own: constants and everything a callee touches.
    let mut fixed = vec![false; n];
    for &(r, _) in &code.consts {
        fixed[r as usize] = true;
    }
    for c in &code.callees {
        c.params.iter().chain(&c.rets).for_each(|&r| fixed[r as usize] = true);
    }
    for i in &code.insts[body..] {
        operands(i, &mut uses, &mut defs);
        uses.iter().chain(&defs).for_each(|&r| fixed[r as usize] = true);
    }
    // Dense indices of the candidates.
    let special = special::COUNT as usize;
    let mut dense = vec![u32::MAX; n];
    let mut regs = Vec::new();
    for r in special..n {
        if !fixed[r] {
            dense[r] = regs.len() as u32;
            regs.push(r as u32);
        }
    }
    let nc = regs.len();
    let cand = |r: u32| -> Option<usize> {
        (r != NONE && (r as usize) < n).then(|| dense[r as usize]).filter(|&d| d != u32::MAX).map(|d| d as usize)
    };

    // Basic blocks of the kernel body.
    let insts = &code.insts[..body];
    let mut leader = vec![false; body + 1];
    leader[0] = true;
    leader[body] = true;
    for (pc, i) in insts.iter().enumerate() {
        match i.op {
            Op::Bra => {
                if let Some(l) = leader.get_mut(i.off as usize) {
                    *l = true;
                }
                leader[pc + 1] = true;
            }
            Op::Ret | Op::Exit => leader[pc + 1] = true,
            _ => {}
        }
    }
    let starts: Vec<usize> = (0..body).filter(|&pc| leader[pc]).collect();
    let mut block_of = vec![0usize; body];
    for (b, &s) in starts.iter().enumerate() {
        let e = starts.get(b + 1).copied().unwrap_or(body);
        block_of[s..e].iter_mut().for_each(|x| *x = b);
    }
    let end = |b: usize| starts.get(b + 1).copied().unwrap_or(body);
    let nb = starts.len();
    let mut succs: Vec<Vec<usize>> = vec![Vec::new(); nb];
    for b in 0..nb {
        let last = &insts[end(b) - 1];
        let falls = match last.op {
            Op::Bra | Op::Ret | Op::Exit => last.guard != NONE,
            _ => true,
        };
        if falls && end(b) < body {
            succs[b].push(b + 1);
        }
        if last.op == Op::Bra && (last.off as usize) < body {
            succs[b].push(block_of[last.off as usize]);
        }
    }
    // Upward-exposed uses and kills per block.
    let (mut gen, mut kill) = (vec![Set::new(nc); nb], vec![Set::new(nc); nb]);
    for b in 0..nb {
        for pc in (starts[b]..end(b)).rev() {
            operands(&insts[pc], &mut uses, &mut defs);
            if insts[pc].guard == NONE {
                for d in defs.iter().filter_map(|&r| cand(r)) {
                    kill[b].insert(d);
                    gen[b].remove(d);
                }
            }
            for u in uses.iter().filter_map(|&r| cand(r)) {
                gen[b].insert(u);
            }
        }
    }
    let (mut live_in, mut live_out) = (vec![Set::new(nc); nb], vec![Set::new(nc); nb]);
    let mut changed = true;
    while changed {
        changed = false;
        for b in (0..nb).rev() {
            let mut out = Set::new(nc);
            for &s in &succs[b] {
                out.union(&live_in[s]);
            }
            let mut inn = out.clone();
            inn.0.iter_mut().zip(&kill[b].0).for_each(|(a, k)| *a &= !k);
            inn.union(&gen[b]);
            if inn != live_in[b] {
                live_in[b] = inn;
                changed = true;
            }
            live_out[b] = out;
        }
    }
    // Hulls: every use and definition, block starts for live-in, block ends for live-out.
    let mut hull = vec![(usize::MAX, 0usize); nc];
    let mut cover = |d: usize, pc: usize| {
        let h = &mut hull[d];
        h.0 = h.0.min(pc);
        h.1 = h.1.max(pc);
    };
    for b in 0..nb {
        live_in[b].iter().for_each(|d| cover(d, starts[b]));
        live_out[b].iter().for_each(|d| cover(d, end(b) - 1));
        for (pc, i) in insts.iter().enumerate().take(end(b)).skip(starts[b]) {
            operands(i, &mut uses, &mut defs);
            uses.iter().chain(&defs).filter_map(|&r| cand(r)).for_each(|d| cover(d, pc));
        }
    }
    // Linear scan: slots freed when their range ends before the next one starts.
    let mut order: Vec<usize> = (0..nc).filter(|&d| hull[d].0 != usize::MAX).collect();
    order.sort_by_key(|&d| hull[d].0);
    let mut slot = vec![u32::MAX; nc];
    let mut active: std::collections::BinaryHeap<std::cmp::Reverse<(usize, u32)>> = Default::default();
    let mut free: std::collections::BinaryHeap<std::cmp::Reverse<u32>> = Default::default();
    let mut nslots = 0u32;
    for d in order {
        let (s, e) = hull[d];
        while let Some(&std::cmp::Reverse((end, sl))) = active.peek() {
            if end >= s {
                break;
            }
            active.pop();
            free.push(std::cmp::Reverse(sl));
        }
        let sl = free.pop().map(|r| r.0).unwrap_or_else(|| {
            nslots += 1;
            nslots - 1
        });
        slot[d] = sl;
        active.push(std::cmp::Reverse((e, sl)));
    }
    // The new file: specials, the shared slots, then the fixed registers in order.
    let mut map: Vec<u32> = (0..n as u32).collect();
    let mut next = special::COUNT + nslots;
    for (r, m) in map.iter_mut().enumerate().skip(special) {
        *m = match cand(r as u32) {
            // Never read or written: no instruction names it.
            Some(d) if slot[d] == u32::MAX => 0,
            Some(d) => special::COUNT + slot[d],
            None => {
                next += 1;
                next - 1
            }
        };
    }
    for i in &mut code.insts {
        rename(i, &map);
    }
    for c in &mut code.callees {
        c.params.iter_mut().chain(c.rets.iter_mut()).for_each(|r| *r = map[*r as usize]);
    }
    for (r, _) in &mut code.consts {
        *r = map[*r as usize];
    }
    code.nregs = next;
}
