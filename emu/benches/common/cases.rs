//! The emulator-speed cases, shared by benches/exec.rs (criterion) and
//! examples/exec_profile.rs (a fixed number of launches, for callgrind or perf): the GEMM
//! kernel (sm_80 PTX, the cp.async path) on 128 x 128 x 256 in one block, and the
//! memory-bound cast kernel on 256 Ki elements. Emulator speed on this host only; nothing
//! here is a GPU figure.

use mp_emu::driver::allocations::Memory;
use mp_emu::exec::LaunchConfig;
use mp_emu::ptx::Module;

/// One launch, ready to run: module, kernel index, configuration, parameter buffer.
pub struct Case {
    pub module: Module,
    pub kernel: usize,
    pub cfg: LaunchConfig,
    pub params: Vec<u8>,
}

fn ptx(name: &str) -> String {
    std::fs::read_to_string(format!("{}/../cuda/ptx/{name}", env!("CARGO_MANIFEST_DIR"))).expect("vendored PTX")
}

fn upload(mem: &mut Memory, bytes: &[u8]) -> u64 {
    let p = mem.alloc(bytes.len());
    mem.slice_mut(p, bytes.len()).unwrap().copy_from_slice(bytes);
    p
}

/// gemm_nn_f32, C = A B on 128 x 128 x 256, one block of 256 threads; A and B hold 1.0
/// and -1.0 (small integers, not all zeros).
pub fn gemm(mem: &mut Memory) -> Case {
    let module = Module::load(&ptx("gemm.sm_80.ptx")).unwrap();
    let kernel = module.kernel("gemm_nn_f32").unwrap();
    let (m, n, kk) = (128usize, 128usize, 256usize);
    let half = |i: usize| if i % 3 == 0 { 0x3c00u16 } else { 0xbc00u16 };
    let a: Vec<u8> = (0..m * kk).flat_map(|i| half(i).to_le_bytes()).collect();
    let b: Vec<u8> = (0..kk * n).flat_map(|i| half(i + 1).to_le_bytes()).collect();
    let (pa, pb, pc) = (upload(mem, &a), upload(mem, &b), mem.alloc(m * n * 4));
    // GemmParams (cuda/gemm.cu, 112 bytes): a, b, c, bias, pre, found_inf; m n k lda ldb
    // ldc; alpha, beta; act, bias_f16. Then the `vec` argument.
    let mut params = Vec::new();
    for v in [pa, pb, pc, 0, 0, 0] {
        params.extend_from_slice(&v.to_le_bytes());
    }
    for v in [m, n, kk, kk, n, n] {
        params.extend_from_slice(&(v as i64).to_le_bytes());
    }
    params.extend_from_slice(&1f32.to_le_bytes());
    params.extend_from_slice(&0f32.to_le_bytes());
    params.extend_from_slice(&[0u8; 8]);
    params.extend_from_slice(&1i32.to_le_bytes());
    Case { module, kernel, cfg: LaunchConfig::new([1, 1, 1], [256, 1, 1], 0), params }
}

/// cast_f32_f16 over 256 Ki elements, 64 blocks of 256 threads.
pub fn cast(mem: &mut Memory) -> Case {
    let module = Module::load(&ptx("cast.sm_75.ptx")).unwrap();
    let kernel = module.kernel("cast_f32_f16").unwrap();
    let len = 1usize << 18;
    let x: Vec<u8> = (0..len).flat_map(|i| (i as f32 * 0.25).to_le_bytes()).collect();
    let (px, py) = (upload(mem, &x), mem.alloc(len * 2));
    let mut params = Vec::new();
    for v in [px, py, len as u64] {
        params.extend_from_slice(&v.to_le_bytes());
    }
    Case { module, kernel, cfg: LaunchConfig::new([64, 1, 1], [256, 1, 1], 0), params }
}
