//! `MP_EMU_BLOCK_ORDER` (emu/src/exec/order.rs): the blocks of a launch in another order
//! than 0, 1, 2, ... A kernel whose blocks read each other's output in one launch is
//! reported by the global racecheck; with racecheck off, the emulator's index order gives
//! it one fixed answer, which a GPU need not give. The other orders give another answer,
//! so a dependency on the block order fails a test even where no sanitizer looks.
//!
//! One test, in its own process: the order is process-wide ([`set_block_order`]).

mod common;
use common::*;
use mp_emu::check::Checks;
use mp_emu::exec::order::{set_block_order, BlockOrder};

const NO_RACE: Checks = Checks { race: false, ..Checks::ALL };

/// `other_block` with `mode` (1 write, 2 read, 3 both in one launch) in `order`; res.
fn run(order: BlockOrder, launches: &[u32], checks: Checks) -> Result<Vec<u32>, String> {
    set_block_order(order);
    let ptx = format!("{HEADER}{OTHER_BLOCK}");
    let mut r = Rig::new(&ptx);
    let (out, res) = (r.upload(&[7u32; 64]), r.upload(&[0u32; 64]));
    for &mode in launches {
        other_block(&mut r, mode, checks, out, res).map_err(|e| e.report)?;
    }
    Ok(r.download::<u32>(res, 64))
}

#[test]
fn block_order_changes_the_answer_of_a_kernel_that_depends_on_it() {
    // The planted bug, racecheck off: one launch whose block 0 reads what block 1 writes
    // and the reverse. In index order block 0 runs first (reads the old 7s) and block 1
    // sees block 0's stores; reversed, the other way round.
    let index: Vec<u32> = (0..64).map(|i| if i < 32 { 7 } else { i - 32 + 100 }).collect();
    let reverse: Vec<u32> = (0..64).map(|i| if i < 32 { i + 32 + 100 } else { 7 }).collect();
    assert_eq!(run(BlockOrder::Index, &[3], NO_RACE).unwrap(), index);
    assert_eq!(run(BlockOrder::Reverse, &[3], NO_RACE).unwrap(), reverse, "reverse order");
    // Two blocks scattered: a*0 + 1 = block 1 first, as reversed.
    assert_eq!(run(BlockOrder::Scatter, &[3], NO_RACE).unwrap(), reverse, "scatter order");
    // With racecheck on, every order reports it.
    for order in [BlockOrder::Index, BlockOrder::Reverse, BlockOrder::Scatter] {
        let e = run(order, &[3], Checks::ALL).unwrap_err();
        assert!(e.contains("hazard on __global__ address"), "{order:?}: {e}");
    }
    // The clean twin: the writes in one launch, the reads in the next. Same answer in
    // every order, no finding.
    let want: Vec<u32> = (0..64).map(|i| (i + 32) % 64 + 100).collect();
    for order in [BlockOrder::Index, BlockOrder::Reverse, BlockOrder::Scatter] {
        assert_eq!(run(order, &[1, 2], Checks::ALL).unwrap(), want, "{order:?}");
    }
    set_block_order(BlockOrder::Index);
}
