//! mp-emu: a CPU implementation of the CUDA driver API subset that mixed-precision (and
//! cudarc, and the C test program) call. It loads the PTX our build emits and executes it
//! thread by thread, with memory checks. Selected only by the library search path
//! (`LD_LIBRARY_PATH` pointing at a folder holding this library as `libcuda.so` and
//! `libcuda.so.1`), so the crate's code is the same on a GPU and here.
//!
//! Layout (DESIGN.md, "Tests without and with a GPU"):
//! - [`api`]: the `extern "C"` `cu*` surface, argument translation only;
//! - [`driver`]: contexts, memory, streams, events, capture and graphs;
//! - [`ptx`]: PTX text to a lowered instruction array, once, at cuModuleLoadData;
//! - [`exec`]: grid/block/warp/thread scheduling over the lowered form.
//!
//! # Entry points
//!
//! Those reached by the crate through cudarc, by its tests and benchmarks, and by
//! `tests/c/capi_test.c`, plus a few neighbours that make the surface coherent (events,
//! synchronization, capture queries, context push/pop). Every one returns the CUDA 13
//! driver's codes; everything runs synchronously at call time except on a capturing
//! stream, where launches, memsets and device-to-device copies are recorded. A kernel's
//! fault is nevertheless returned by the next call that waits for the device, as on a GPU,
//! not by its launch (`driver::faults`: `MP_EMU_FAULTS`, `MP_EMU_STRICT`).
//!
//! - Initialization and errors: `cuInit`, `cuDriverGetVersion` (13000, or `MP_EMU_DRIVER_VERSION`), `cuGetErrorName`,
//!   `cuGetErrorString`.
//! - Device: `cuDeviceGet`, `cuDeviceGetCount`, `cuDeviceGetName`, `cuDeviceTotalMem_v2`,
//!   `cuDeviceGetAttribute`.
//! - Contexts: `cuDevicePrimaryCtxRetain`, `cuDevicePrimaryCtxRelease_v2`,
//!   `cuDevicePrimaryCtxReset_v2`, `cuDevicePrimaryCtxGetState`, `cuCtxCreate_v2`,
//!   `cuCtxCreate_v4`, `cuCtxDestroy_v2`, `cuCtxSetCurrent`, `cuCtxGetCurrent`,
//!   `cuCtxPushCurrent_v2`, `cuCtxPopCurrent_v2`, `cuCtxGetDevice`, `cuCtxSynchronize`.
//! - Memory: `cuMemAlloc_v2`, `cuMemAllocAsync`, `cuMemFree_v2`, `cuMemFreeAsync`,
//!   `cuMemGetInfo_v2`, `cuMemsetD8_v2`, `cuMemsetD16_v2`, `cuMemsetD32_v2`,
//!   `cuMemsetD8Async`, `cuMemsetD16Async`, `cuMemsetD32Async`, `cuMemcpyHtoD_v2`,
//!   `cuMemcpyDtoH_v2`, `cuMemcpyDtoD_v2`, `cuMemcpyHtoDAsync_v2`, `cuMemcpyDtoHAsync_v2`,
//!   `cuMemcpyDtoDAsync_v2`, `cuMemcpyPeerAsync`.
//! - Streams and capture: `cuStreamCreate`, `cuStreamCreateWithPriority`,
//!   `cuStreamDestroy_v2`, `cuStreamSynchronize`, `cuStreamQuery`, `cuStreamWaitEvent`,
//!   `cuStreamBeginCapture_v2`, `cuStreamEndCapture`, `cuStreamIsCapturing`,
//!   `cuStreamGetCaptureInfo` (the original three-argument form),
//!   `cuThreadExchangeStreamCaptureMode`.
//! - Events: `cuEventCreate`, `cuEventRecord`, `cuEventQuery`, `cuEventSynchronize`,
//!   `cuEventElapsedTime`, `cuEventElapsedTime_v2`, `cuEventDestroy_v2`.
//! - Modules and launches: `cuModuleLoadData`, `cuModuleLoadDataEx` (options ignored),
//!   `cuModuleLoad`, `cuModuleUnload`, `cuModuleGetFunction`, `cuFuncGetAttribute`,
//!   `cuFuncSetAttribute`, `cuLaunchKernel`.
//! - Graphs: `cuGraphInstantiateWithFlags`, `cuGraphUpload`, `cuGraphLaunch`,
//!   `cuGraphDestroy`, `cuGraphExecDestroy`, `cuGraphGetNodes` (count only).
//!
//! A symbol that is missing makes cudarc panic when it is first called ("Missing
//! symbol"), so a new driver call in the crate needs its entry point here.

pub mod api;
pub mod check;
pub mod cost;
pub mod driver;
pub mod exec;
pub mod ir;
pub mod ptx;
mod regalloc;
mod setting;
