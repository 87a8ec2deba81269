//! mp-emu: a CPU implementation of the CUDA driver API subset that mixed-precision (and
//! cudarc, and the C test program) call. It loads the PTX our build emits and executes it
//! thread by thread, with memory checks. Selected only by the library search path
//! (`LD_LIBRARY_PATH` pointing at a folder holding this library as `libcuda.so` and
//! `libcuda.so.1`), so the crate's code is the same on a GPU and here.
//!
//! Layout (DESIGN.md, "Tests without and with a GPU"):
//! - `lib.rs`: the `extern "C"` `cu*` surface, argument translation only;
//! - [`driver`]: contexts, memory, streams, events, capture and graphs;
//! - [`ptx`]: PTX text to a lowered instruction array, once, at cuModuleLoadData;
//! - [`exec`]: grid/block/warp/thread scheduling over the lowered form.

pub mod driver;
pub mod exec;
pub mod ir;
pub mod ptx;
