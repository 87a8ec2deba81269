//! The work plan of the multi-tensor kernels (`cuda/multi_tensor.cuh`): every tensor is
//! cut into chunks of [`MT_CHUNK`] elements, each block of a launch takes one chunk, and
//! a list that does not fit one launch's parameter space is split over several launches.

use crate::error::{Error, Result};

/// Elements per chunk (`MT_CHUNK`).
pub(crate) const MT_CHUNK: usize = 65536;
/// Blocks one launch carries (`MT_MAX_BLOCKS`).
pub(crate) const MT_MAX_BLOCKS: usize = 256;

/// Mirrors `struct MtBlocks` in cuda/multi_tensor.cuh.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct MtBlocks {
    pub tensor: [u16; MT_MAX_BLOCKS],
    pub chunk: [u32; MT_MAX_BLOCKS],
}

/// One launch: which tensors of the caller's list it carries (in slot order) and the
/// block assignment, with `blocks` blocks used.
pub(crate) struct MtLaunch {
    pub tensors: Vec<usize>,
    pub map: MtBlocks,
    pub blocks: usize,
}

/// Splits tensors of `lens` into launches of at most `max_tensors` tensors and
/// [`MT_MAX_BLOCKS`] chunks each. Empty tensors are left out.
pub(crate) fn plan(op: &'static str, lens: &[usize], max_tensors: usize) -> Result<Vec<MtLaunch>> {
    let empty = || MtLaunch {
        tensors: Vec::new(),
        map: MtBlocks { tensor: [0; MT_MAX_BLOCKS], chunk: [0; MT_MAX_BLOCKS] },
        blocks: 0,
    };
    let mut launches = Vec::new();
    let mut cur = empty();
    for (t, &len) in lens.iter().enumerate() {
        let chunks = len.div_ceil(MT_CHUNK);
        if chunks > u32::MAX as usize {
            return Err(Error::InvalidArgument {
                op,
                what: "tensor length",
                why: format!("tensor {t} has {len} elements, more than the kernels index"),
            });
        }
        for chunk in 0..chunks {
            let slot_needed = cur.tensors.last() != Some(&t);
            if cur.blocks == MT_MAX_BLOCKS || (slot_needed && cur.tensors.len() == max_tensors) {
                launches.push(std::mem::replace(&mut cur, empty()));
            }
            if cur.tensors.last() != Some(&t) {
                cur.tensors.push(t);
            }
            cur.map.tensor[cur.blocks] = (cur.tensors.len() - 1) as u16;
            cur.map.chunk[cur.blocks] = chunk as u32;
            cur.blocks += 1;
        }
    }
    if cur.blocks > 0 {
        launches.push(cur);
    }
    Ok(launches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_every_chunk_once() {
        let lens = [0, 1, MT_CHUNK, MT_CHUNK + 1, 300 * MT_CHUNK + 7, 5, 0, 3 * MT_CHUNK];
        for max_tensors in [1, 2, 3, 64] {
            let launches = plan("test", &lens, max_tensors).unwrap();
            let mut seen: Vec<Vec<u32>> = vec![Vec::new(); lens.len()];
            for l in &launches {
                assert!(l.blocks >= 1 && l.blocks <= MT_MAX_BLOCKS);
                assert!(l.tensors.len() <= max_tensors);
                for b in 0..l.blocks {
                    let t = l.tensors[l.map.tensor[b] as usize];
                    seen[t].push(l.map.chunk[b]);
                }
            }
            for (t, &len) in lens.iter().enumerate() {
                let want: Vec<u32> = (0..len.div_ceil(MT_CHUNK) as u32).collect();
                assert_eq!(seen[t], want, "tensor {t}, max_tensors {max_tensors}");
            }
        }
    }
}
