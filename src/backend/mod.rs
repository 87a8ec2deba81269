//! Backends: the CUDA kernels, and the CPU reference they are tested against.

pub mod cpu;
