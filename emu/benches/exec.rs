//! Emulator speed: thread-instructions per second executing the GEMM kernel (sm_80 PTX,
//! the cp.async path) on a 128 x 128 x 256 problem, and the memory-bound cast kernel.
//! This measures the emulator on this host, not any GPU: no figure here is a GPU time.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mp_emu::driver::memory::Memory;
use mp_emu::exec::{launch_stats, LaunchConfig};
use mp_emu::ptx::Module;

fn ptx(name: &str) -> String {
    std::fs::read_to_string(format!("{}/../cuda/ptx/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn upload(mem: &mut Memory, bytes: &[u8]) -> u64 {
    let p = mem.alloc(bytes.len());
    mem.slice_mut(p, bytes.len()).unwrap().copy_from_slice(bytes);
    p
}

fn gemm(c: &mut Criterion) {
    let module = Module::load(&ptx("gemm.sm_80.ptx")).unwrap();
    let k = module.kernel("gemm_nn_f32").unwrap();
    let (m, n, kk) = (128usize, 128usize, 256usize);
    let mut mem = Memory::new();
    // Small integers in f16: 1.0 and -1.0 alternating, so the data is not all zeros.
    let half = |i: usize| if i % 3 == 0 { 0x3c00u16 } else { 0xbc00u16 };
    let a: Vec<u8> = (0..m * kk).flat_map(|i| half(i).to_le_bytes()).collect();
    let b: Vec<u8> = (0..kk * n).flat_map(|i| half(i + 1).to_le_bytes()).collect();
    let (pa, pb, pc) = (upload(&mut mem, &a), upload(&mut mem, &b), mem.alloc(m * n * 4));
    let mut p = Vec::new();
    // GemmParams (cuda/gemm.cu, 112 bytes): a, b, c, bias, pre, found_inf; m n k lda ldb
    // ldc; alpha, beta; act, bias_f16. Then the `vec` argument.
    for v in [pa, pb, pc, 0, 0, 0] {
        p.extend_from_slice(&v.to_le_bytes());
    }
    for v in [m, n, kk, kk, n, n] {
        p.extend_from_slice(&(v as i64).to_le_bytes());
    }
    p.extend_from_slice(&1f32.to_le_bytes());
    p.extend_from_slice(&0f32.to_le_bytes());
    p.extend_from_slice(&[0u8; 8]);
    p.extend_from_slice(&1i32.to_le_bytes());
    let cfg = LaunchConfig::new([1, 1, 1], [256, 1, 1], 0);
    let count = launch_stats(&module, k, &cfg, &p, &mut mem).unwrap().thread_instructions;
    let mut g = c.benchmark_group("exec");
    g.throughput(Throughput::Elements(count));
    g.bench_function("gemm_nn_f32_sm80_128x128x256", |bch| {
        bch.iter(|| launch_stats(&module, k, &cfg, &p, &mut mem).unwrap())
    });
    let module = Module::load(&ptx("cast.sm_75.ptx")).unwrap();
    let k = module.kernel("cast_f32_f16").unwrap();
    let len = 1usize << 18;
    let x: Vec<u8> = (0..len).flat_map(|i| (i as f32 * 0.25).to_le_bytes()).collect();
    let (px, py) = (upload(&mut mem, &x), mem.alloc(len * 2));
    let mut p = Vec::new();
    for v in [px, py, len as u64] {
        p.extend_from_slice(&v.to_le_bytes());
    }
    let cfg = LaunchConfig::new([64, 1, 1], [256, 1, 1], 0);
    let count = launch_stats(&module, k, &cfg, &p, &mut mem).unwrap().thread_instructions;
    g.throughput(Throughput::Elements(count));
    g.bench_function("cast_f32_f16_256k", |bch| bch.iter(|| launch_stats(&module, k, &cfg, &p, &mut mem).unwrap()));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = gemm
}
criterion_main!(benches);
