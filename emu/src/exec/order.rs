//! The order the blocks of a launch run in (`MP_EMU_BLOCK_ORDER`).
//!
//! CUDA promises nothing about the order in which a grid's blocks run, or whether they
//! run together. The emulator hands blocks to its host threads from one counter, so by
//! default small launches run block 0, 1, 2, ... one after another: a kernel that reads
//! another block's output would see it written exactly when the index order says. The
//! global racecheck reports such reads; the other orders make them give a different
//! answer too, so a test with racecheck off (or a dependency racecheck cannot see, such
//! as a flag polled through a cache-bypassing load) fails as it could on a GPU.
//!
//! - `index` (default): 0, 1, 2, ... (x fastest).
//! - `reverse`: the last block first.
//! - `scatter`: block `(a * i + c) mod n` runs `i`-th, with `a` coprime to `n` near
//!   `0.618 n` (neighbours end up far apart) and `c = n / 2`: a fixed permutation, so a
//!   failure replays.

use crate::setting::Setting;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockOrder {
    Index,
    Reverse,
    Scatter,
}

/// In [`BlockOrder`]'s order.
static ORDER: Setting = Setting::new("MP_EMU_BLOCK_ORDER", &["index", "reverse", "scatter"]);
const ORDERS: [BlockOrder; 3] = [BlockOrder::Index, BlockOrder::Reverse, BlockOrder::Scatter];

impl BlockOrder {
    /// Parses `MP_EMU_BLOCK_ORDER`'s value.
    pub fn parse(v: &str) -> Option<BlockOrder> {
        ORDER.parse(v).map(|i| ORDERS[i as usize])
    }

    /// The order every launch of this process uses: the last [`set_block_order`], else
    /// `MP_EMU_BLOCK_ORDER` (crate::setting).
    pub fn current() -> BlockOrder {
        ORDERS[ORDER.get() as usize]
    }

    /// The block (linear index) that runs `pos`-th of `n`.
    pub fn block_at(self, pos: u64, n: u64) -> u64 {
        match self {
            BlockOrder::Index => pos,
            BlockOrder::Reverse => n - 1 - pos,
            BlockOrder::Scatter => {
                let a = scatter_multiplier(n);
                ((a as u128 * pos as u128 + (n / 2) as u128) % n as u128) as u64
            }
        }
    }
}

/// Sets the block order of every later launch in this process (tests; the environment
/// variable is the way in for programs).
pub fn set_block_order(order: BlockOrder) {
    ORDER.set(order as u8);
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The smallest multiplier at or above 0.618 n that is coprime to n (so `a i + c mod n`
/// is a bijection); 1 for n <= 2.
fn scatter_multiplier(n: u64) -> u64 {
    if n <= 2 {
        return 1;
    }
    let mut a = ((n as f64) * 0.618) as u64;
    a = a.max(1);
    while gcd(a, n) != 1 {
        a += 1;
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_order_is_a_permutation() {
        for n in [1u64, 2, 3, 4, 7, 8, 30, 64, 100, 132, 1000, 4096] {
            for o in [BlockOrder::Index, BlockOrder::Reverse, BlockOrder::Scatter] {
                let mut seen = vec![false; n as usize];
                for p in 0..n {
                    let b = o.block_at(p, n);
                    assert!(b < n && !seen[b as usize], "{o:?} n={n} repeats or leaves block {b}");
                    seen[b as usize] = true;
                }
            }
        }
        // Scatter moves neighbours apart: no two consecutive positions run adjacent blocks.
        let n = 100;
        for p in 0..n - 1 {
            let (a, b) = (BlockOrder::Scatter.block_at(p, n), BlockOrder::Scatter.block_at(p + 1, n));
            assert!(a.abs_diff(b) > 1, "positions {p}, {} run blocks {a}, {b}", p + 1);
        }
    }
}
