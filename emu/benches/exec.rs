//! Emulator speed: thread-instructions per second executing the GEMM kernel (sm_80 PTX,
//! the cp.async path) on a 128 x 128 x 256 problem, and the memory-bound cast kernel
//! (benches/common/cases.rs). This measures the emulator on this host, not any GPU: no figure
//! here is a GPU time.

#[path = "common/cases.rs"]
mod cases;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mp_emu::driver::allocations::Memory;
use mp_emu::exec::launch_stats;

fn exec(c: &mut Criterion) {
    let mut mem = Memory::new();
    let mut g = c.benchmark_group("exec");
    for (name, case) in
        [("gemm_nn_f32_sm80_128x128x256", cases::gemm(&mut mem)), ("cast_f32_f16_256k", cases::cast(&mut mem))]
    {
        let run = |mem: &mut Memory| launch_stats(&case.module, case.kernel, &case.cfg, &case.params, mem).unwrap();
        g.throughput(Throughput::Elements(run(&mut mem).thread_instructions));
        g.bench_function(name, |bch| bch.iter(|| run(&mut mem)));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = exec
}
criterion_main!(benches);
