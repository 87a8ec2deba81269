//! Bench group `gemm`: TFLOP/s of our tensor-core GEMM next to cuBLAS (cublasGemmEx,
//! f32 compute) measured in the same run, on square shapes and on the three GEMMs of each
//! layer of a 1024-4096-4096-4096-1024 MLP at batch 8192, with f16 inputs and again with
//! bf16 inputs (sm_80 and newer; the bf16 rows are skipped below). C is f32 or the input
//! type. `MIXED_PRECISION_BENCH_HALF=f16` or `bf16` runs one half type's rows only.
//! Run with `cargo bench --features cublas --bench gemm`.

mod common;

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput};
use mixed_precision::half::{bf16, f16};
use mixed_precision::kernels::gemm::{cublas::CublasGemm, gemm, Epilogue, GemmShape, Transpose};
use mixed_precision::rng::Rng;
use mixed_precision::{DType, Device, Element, Half, Tensor};

use Transpose::{N, T};

const WARMUP: u32 = 5;
const RUNS: u32 = 20;

struct Case {
    name: String,
    shape: GemmShape,
    f32_out: bool,
}

/// The shapes; `half` names the half-type output in the names.
fn cases(half: DType) -> Vec<Case> {
    let mut v: Vec<Case> = [1024, 2048, 4096, 8192]
        .into_iter()
        .map(|n| Case {
            name: format!("square {n} (NT, f32 out)"),
            shape: GemmShape::dense(n, n, n, N, T),
            f32_out: true,
        })
        .collect();
    let batch = 8192;
    let widths = [1024, 4096, 4096, 4096, 1024];
    for (l, w) in widths.windows(2).enumerate() {
        let (fan_in, fan_out) = (w[0], w[1]);
        v.push(Case {
            name: format!("layer {l} fwd X·Wᵀ {batch}x{fan_out}x{fan_in} (NT, {half} out)"),
            shape: GemmShape::dense(batch, fan_out, fan_in, N, T),
            f32_out: false,
        });
        v.push(Case {
            name: format!("layer {l} dgrad dY·W {batch}x{fan_in}x{fan_out} (NN, {half} out)"),
            shape: GemmShape::dense(batch, fan_in, fan_out, N, N),
            f32_out: false,
        });
        v.push(Case {
            name: format!("layer {l} wgrad dYᵀ·X {fan_out}x{fan_in}x{batch} (TN, f32 out)"),
            shape: GemmShape::dense(fan_out, fan_in, batch, T, N),
            f32_out: true,
        });
    }
    v
}

fn random_half<T: Half>(dev: &Arc<Device>, rng: &mut Rng, n: usize) -> Tensor<T> {
    let host: Vec<T> = (0..n).map(|_| T::from_f32(rng.uniform_in(-1.0, 1.0))).collect();
    Tensor::from_host(dev, &host, &[n]).unwrap()
}

/// (ours, cuBLAS) median seconds for one case with inputs T and output type C, named
/// `gemm/ours_<T>/<case>` and `gemm/cublas_<T>/<case>` for criterion.
fn time_case<T: Half, C: Element>(
    c: &mut Criterion,
    dev: &Arc<Device>,
    blas: &CublasGemm,
    case: &Case,
    rng: &mut Rng,
) -> (f64, f64) {
    let s = &case.shape;
    let ((ar, ac), (br, bc)) = s.stored();
    let a = random_half::<T>(dev, rng, ar * ac);
    let b = random_half::<T>(dev, rng, br * bc);
    let mut out = Tensor::<C>::zeros(dev, &[s.m * s.n]).unwrap();
    let mut ours = || gemm(dev, s, &a.view(), &b.view(), &mut out.view_mut(), Epilogue::default()).unwrap();
    let t_ours = common::median_seconds(dev, WARMUP, RUNS, &mut ours);
    let mut out2 = Tensor::<C>::zeros(dev, &[s.m * s.n]).unwrap();
    let mut theirs = || blas.gemm(s, &a.view(), &b.view(), &mut out2.view_mut(), 1.0, 0.0).unwrap();
    let t_blas = common::median_seconds(dev, WARMUP, RUNS, &mut theirs);
    let mut group = c.benchmark_group("gemm");
    group.throughput(Throughput::Elements((2 * s.m * s.n * s.k) as u64));
    group.bench_function(BenchmarkId::new(format!("ours_{}", T::DTYPE), &case.name), |bch| {
        bch.iter_custom(|it| common::time_gpu(dev, it, &mut ours))
    });
    group.bench_function(BenchmarkId::new(format!("cublas_{}", T::DTYPE), &case.name), |bch| {
        bch.iter_custom(|it| common::time_gpu(dev, it, &mut theirs))
    });
    group.finish();
    (t_ours, t_blas)
}

fn main() {
    let Some(dev) = common::gpu("gemm") else { return };
    let blas = CublasGemm::new(&dev).expect("cuBLAS");
    let mut c = Criterion::default().configure_from_args().sample_size(10);
    let mut rng = Rng::new(11);
    let mut rows = Vec::new();
    let mut halves = Vec::new();
    if common::runs_half(DType::F16) {
        halves.push(DType::F16);
    }
    if common::runs_half(DType::BF16) {
        let capability = dev.info().compute_capability;
        if capability >= (8, 0) {
            halves.push(DType::BF16);
        } else {
            println!(
                "skipped (bf16 tensor cores need sm_80, this is sm_{}{}): the bf16 rows",
                capability.0, capability.1
            );
        }
    }
    for half in halves {
        for case in cases(half) {
            let (ours, theirs) = match (half, case.f32_out) {
                (DType::BF16, true) => time_case::<bf16, f32>(&mut c, &dev, &blas, &case, &mut rng),
                (DType::BF16, false) => time_case::<bf16, bf16>(&mut c, &dev, &blas, &case, &mut rng),
                (_, true) => time_case::<f16, f32>(&mut c, &dev, &blas, &case, &mut rng),
                (_, false) => time_case::<f16, f16>(&mut c, &dev, &blas, &case, &mut rng),
            };
            let flops = 2.0 * (case.shape.m * case.shape.n * case.shape.k) as f64;
            rows.push((half, case.name, flops / ours / 1e12, flops / theirs / 1e12));
        }
    }
    c.final_summary();
    println!("\nmedian of {RUNS} after {WARMUP} warm-up runs, CUDA events, random inputs");
    println!("| inputs | shape | ours TFLOP/s | cuBLAS TFLOP/s | ours / cuBLAS |\n|---|---|---|---|---|");
    for (half, name, ours, theirs) in rows {
        println!("| {half} | {name} | {ours:.1} | {theirs:.1} | {:.2} |", ours / theirs);
    }
}
