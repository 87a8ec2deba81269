//! The global byte ranges a launch read and wrote, for the driver's check between
//! streams (`driver::order`): two operations on unordered streams race only where their
//! bytes meet, and our crate carves many tensors out of one pooled allocation, so a
//! whole-allocation footprint would call every pair of kernels on two streams a race.
//!
//! Exact ranges, never widened: a run grows only when an access touches or adjoins it.
//! A thread's accesses mostly continue the run it last extended (lanes of a warp walk
//! consecutive elements), so the common access is one comparison; an access that starts
//! where another run ends (a tile loop's next columns of a row it read a step earlier)
//! finds that run through a small table keyed by run ends; the runs are sorted and merged
//! whenever their number doubles, which keeps them about as many as the disjoint ranges
//! the kernel really touches.

/// A half-open byte range of device addresses.
pub type Range = (u64, u64);

/// The runs one host thread of a launch recorded.
#[derive(Default)]
pub struct Footprint {
    /// Runs read ([0]) and written ([1]), unsorted between compactions.
    runs: [Vec<Range>; 2],
    /// The run each kind last grew, the cheap place to try first.
    last: [usize; 2],
    /// Compact when a kind has this many runs.
    limit: [usize; 2],
    /// Per kind, run index + 1 by a hash of the run's end (0: none); an entry may be stale
    /// (the run grew or compaction renumbered the runs) and is checked before use.
    ends: [Vec<u32>; 2],
}

/// Entries of each kind's table of run ends.
const ENDS: usize = 512;

fn slot(end: u64) -> usize {
    (end.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 55) as usize % ENDS
}

const FIRST_LIMIT: usize = 1024;

impl Footprint {
    /// Records an access of `n` bytes at `addr`.
    pub fn note(&mut self, addr: u64, n: usize, write: bool) {
        let k = write as usize;
        let (lo, hi) = (addr, addr + n as u64);
        if let Some(r) = self.runs[k].get_mut(self.last[k]) {
            if lo <= r.1 && hi >= r.0 {
                let end = r.1;
                r.0 = r.0.min(lo);
                r.1 = r.1.max(hi);
                if r.1 != end {
                    self.record_end(k, self.last[k]);
                }
                return;
            }
        }
        if self.ends[k].is_empty() {
            self.ends[k] = vec![0; ENDS];
        }
        let at = self.ends[k][slot(lo)] as usize;
        if let Some(r) = at.checked_sub(1).and_then(|j| self.runs[k].get_mut(j)) {
            if r.1 == lo {
                r.1 = hi;
                self.last[k] = at - 1;
                self.record_end(k, at - 1);
                return;
            }
        }
        self.runs[k].push((lo, hi));
        self.last[k] = self.runs[k].len() - 1;
        self.record_end(k, self.last[k]);
        if self.runs[k].len() >= self.limit[k].max(FIRST_LIMIT) {
            merge(&mut self.runs[k]);
            self.limit[k] = 2 * self.runs[k].len();
            self.last[k] = self.runs[k].len().saturating_sub(1);
            self.ends[k].fill(0);
        }
    }

    /// Files run `j` of kind `k` under its end.
    fn record_end(&mut self, k: usize, j: usize) {
        if let Some(e) = self.ends[k].get_mut(slot(self.runs[k][j].1)) {
            *e = j as u32 + 1;
        }
    }

    /// Adds another thread's runs to these.
    pub fn absorb(&mut self, other: Footprint) {
        for (mine, theirs) in self.runs.iter_mut().zip(other.runs) {
            mine.extend(theirs);
        }
    }

    /// The sorted, disjoint ranges read and written.
    pub fn finish(mut self) -> (Vec<Range>, Vec<Range>) {
        for r in &mut self.runs {
            merge(r);
        }
        let [read, written] = self.runs;
        (read, written)
    }
}

/// Sorts `runs` and merges those that overlap or adjoin.
pub fn merge(runs: &mut Vec<Range>) {
    runs.sort_unstable();
    let mut out: Vec<Range> = Vec::with_capacity(runs.len());
    for &(lo, hi) in runs.iter() {
        match out.last_mut() {
            Some(l) if lo <= l.1 => l.1 = l.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    *runs = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_rows_stay_apart_and_adjoining_ones_merge() {
        let mut f = Footprint::default();
        // Two 16-byte rows 64 bytes apart, read element by element out of order, and a
        // write adjoining nothing read.
        for a in [0u64, 64, 4, 68, 8, 72, 12, 76] {
            f.note(a, 4, false);
        }
        f.note(200, 2, true);
        let (r, w) = f.finish();
        assert_eq!(r, vec![(0, 16), (64, 80)]);
        assert_eq!(w, vec![(200, 202)]);
    }

    #[test]
    fn a_run_continued_after_others_grows_without_new_runs() {
        let mut f = Footprint::default();
        // 64 rows 512 bytes apart, read 64 bytes of each per step over 8 steps (a tile
        // loop over k): one run per row, found again by its end at each step.
        for step in 0..8u64 {
            for row in 0..64u64 {
                f.note(row * 512 + step * 64, 64, false);
            }
        }
        assert_eq!(f.runs[0].len(), 64);
        let (r, _) = f.finish();
        assert_eq!(r, vec![(0, 64 * 512)]);
    }

    #[test]
    fn compaction_keeps_every_byte() {
        let mut f = Footprint::default();
        // Every other 4-byte word of 8192 words, in reverse: 4096 disjoint runs, which
        // compaction must keep apart.
        for i in (0..4096u64).rev() {
            f.note(8 * i, 4, false);
        }
        let (r, _) = f.finish();
        assert_eq!(r.len(), 4096);
        assert!(r.iter().enumerate().all(|(i, &x)| x == (8 * i as u64, 8 * i as u64 + 4)));
    }
}
