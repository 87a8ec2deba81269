//! Small whole kernels, written the way nvcc emits them (or taken from cuda/ptx/), run
//! on the executor and checked against host results: several blocks with a tail, a
//! block reduction through shuffles and shared memory, a WMMA tile in every layout, a
//! cp.async double buffer with zero-fill, a `.func` call, a by-value struct parameter.

mod common;
use common::*;
use half::f16;
use mp_emu::exec::FaultKind;

fn b64(v: u64) -> [u8; 8] {
    v.to_le_bytes()
}

// ---------------------------------------------------------------------------------------
// Vector add over several blocks with a tail
// ---------------------------------------------------------------------------------------

const VADD: &str = "
.visible .entry vadd(
\t.param .u64 vadd_param_0,
\t.param .u64 vadd_param_1,
\t.param .u64 vadd_param_2,
\t.param .u32 vadd_param_3
)
{
\t.reg .pred \t%p<2>;
\t.reg .f32 \t%f<4>;
\t.reg .b32 \t%r<6>;
\t.reg .b64 \t%rd<11>;

\tld.param.u64 \t%rd1, [vadd_param_0];
\tld.param.u64 \t%rd2, [vadd_param_1];
\tld.param.u64 \t%rd3, [vadd_param_2];
\tld.param.u32 \t%r2, [vadd_param_3];
\tmov.u32 \t%r3, %ctaid.x;
\tmov.u32 \t%r4, %ntid.x;
\tmov.u32 \t%r5, %tid.x;
\tmad.lo.s32 \t%r1, %r3, %r4, %r5;
\tsetp.ge.s32 \t%p1, %r1, %r2;
\t@%p1 bra \t$L__BB0_2;

\tcvta.to.global.u64 \t%rd4, %rd1;
\tmul.wide.s32 \t%rd5, %r1, 4;
\tadd.s64 \t%rd6, %rd4, %rd5;
\tcvta.to.global.u64 \t%rd7, %rd2;
\tadd.s64 \t%rd8, %rd7, %rd5;
\tld.global.f32 \t%f1, [%rd8];
\tld.global.f32 \t%f2, [%rd6];
\tadd.f32 \t%f3, %f2, %f1;
\tcvta.to.global.u64 \t%rd9, %rd3;
\tadd.s64 \t%rd10, %rd9, %rd5;
\tst.global.f32 \t[%rd10], %f3;

$L__BB0_2:
\tret;
}
";

#[test]
fn vector_add_several_blocks_with_a_tail() {
    let mut r = Rig::new(&format!("{HEADER}{VADD}"));
    for (n, block) in [(1usize, 32u32), (1000, 128), (4099, 256), (97, 1024)] {
        let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 7.0).collect();
        let b: Vec<f32> = (0..n).map(|i| (i % 13) as f32 * 1.25).collect();
        let pa = r.upload(&a);
        let pb = r.upload(&b);
        // Poisoned output: every element must be written.
        let pc = r.upload(&vec![f32::NAN; n]);
        let grid = (n as u32).div_ceil(block);
        r.launch("vadd", [grid, 1, 1], [block, 1, 1], &[&b64(pa), &b64(pb), &b64(pc), &(n as u32).to_le_bytes()])
            .unwrap();
        let c: Vec<f32> = r.download(pc, n);
        for i in 0..n {
            assert_eq!(c[i].to_bits(), (a[i] + b[i]).to_bits(), "n {n}, element {i}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Block reduction: shfl.sync.bfly within warps, partials through shared memory, bar.sync
// ---------------------------------------------------------------------------------------

/// One partial sum per block of 256 threads: out[blockIdx.x] = sum of x[block's range].
const BLOCK_SUM: &str = "
.visible .entry block_sum(
\t.param .u64 block_sum_param_0,
\t.param .u64 block_sum_param_1,
\t.param .u32 block_sum_param_2
)
{
\t.reg .pred \t%p<6>;
\t.reg .f32 \t%f<24>;
\t.reg .b32 \t%r<40>;
\t.reg .b64 \t%rd<8>;
\t// demoted variable
\t.shared .align 4 .b8 _ZZ9block_sumE7partial[32];

\tld.param.u64 \t%rd1, [block_sum_param_0];
\tld.param.u64 \t%rd2, [block_sum_param_1];
\tld.param.u32 \t%r1, [block_sum_param_2];
\tmov.u32 \t%r2, %tid.x;
\tmov.u32 \t%r3, %ctaid.x;
\tmov.u32 \t%r4, %ntid.x;
\tmad.lo.s32 \t%r5, %r3, %r4, %r2;
\tmov.f32 \t%f1, 0f00000000;
\tsetp.ge.u32 \t%p1, %r5, %r1;
\t@%p1 bra \t$L__BB0_2;

\tcvta.to.global.u64 \t%rd3, %rd1;
\tmul.wide.u32 \t%rd4, %r5, 4;
\tadd.s64 \t%rd5, %rd3, %rd4;
\tld.global.f32 \t%f1, [%rd5];

$L__BB0_2:
\tmov.b32 \t%r6, %f1;
\tmov.u32 \t%r7, 16;
\tmov.u32 \t%r8, 31;
\tmov.u32 \t%r9, -1;
\tshfl.sync.bfly.b32 \t%r10|%p2, %r6, %r7, %r8, %r9;
\tmov.b32 \t%f2, %r10;
\tadd.f32 \t%f3, %f1, %f2;
\tmov.b32 \t%r11, %f3;
\tmov.u32 \t%r12, 8;
\tshfl.sync.bfly.b32 \t%r13|%p2, %r11, %r12, %r8, %r9;
\tmov.b32 \t%f4, %r13;
\tadd.f32 \t%f5, %f3, %f4;
\tmov.b32 \t%r14, %f5;
\tmov.u32 \t%r15, 4;
\tshfl.sync.bfly.b32 \t%r16|%p2, %r14, %r15, %r8, %r9;
\tmov.b32 \t%f6, %r16;
\tadd.f32 \t%f7, %f5, %f6;
\tmov.b32 \t%r17, %f7;
\tmov.u32 \t%r18, 2;
\tshfl.sync.bfly.b32 \t%r19|%p2, %r17, %r18, %r8, %r9;
\tmov.b32 \t%f8, %r19;
\tadd.f32 \t%f9, %f7, %f8;
\tmov.b32 \t%r20, %f9;
\tmov.u32 \t%r21, 1;
\tshfl.sync.bfly.b32 \t%r22|%p2, %r20, %r21, %r8, %r9;
\tmov.b32 \t%f10, %r22;
\tadd.f32 \t%f11, %f9, %f10;
\tand.b32 \t%r23, %r2, 31;
\tshr.u32 \t%r24, %r2, 5;
\tsetp.ne.s32 \t%p3, %r23, 0;
\t@%p3 bra \t$L__BB0_4;

\tshl.b32 \t%r25, %r24, 2;
\tmov.u32 \t%r26, _ZZ9block_sumE7partial;
\tadd.s32 \t%r27, %r26, %r25;
\tst.shared.f32 \t[%r27], %f11;

$L__BB0_4:
\tbar.sync \t0;
\tsetp.ne.s32 \t%p4, %r24, 0;
\t@%p4 bra \t$L__BB0_8;

\tmov.f32 \t%f12, 0f00000000;
\tshr.u32 \t%r28, %r4, 5;
\tsetp.ge.u32 \t%p5, %r23, %r28;
\t@%p5 bra \t$L__BB0_7;

\tshl.b32 \t%r29, %r23, 2;
\tmov.u32 \t%r30, _ZZ9block_sumE7partial;
\tadd.s32 \t%r31, %r30, %r29;
\tld.shared.f32 \t%f12, [%r31];

$L__BB0_7:
\tmov.b32 \t%r32, %f12;
\tshfl.sync.bfly.b32 \t%r33|%p2, %r32, %r7, %r8, %r9;
\tmov.b32 \t%f13, %r33;
\tadd.f32 \t%f14, %f12, %f13;
\tmov.b32 \t%r32, %f14;
\tshfl.sync.bfly.b32 \t%r33|%p2, %r32, %r12, %r8, %r9;
\tmov.b32 \t%f13, %r33;
\tadd.f32 \t%f14, %f14, %f13;
\tmov.b32 \t%r32, %f14;
\tshfl.sync.bfly.b32 \t%r33|%p2, %r32, %r15, %r8, %r9;
\tmov.b32 \t%f13, %r33;
\tadd.f32 \t%f14, %f14, %f13;
\tmov.b32 \t%r32, %f14;
\tshfl.sync.bfly.b32 \t%r33|%p2, %r32, %r18, %r8, %r9;
\tmov.b32 \t%f13, %r33;
\tadd.f32 \t%f14, %f14, %f13;
\tmov.b32 \t%r32, %f14;
\tshfl.sync.bfly.b32 \t%r33|%p2, %r32, %r21, %r8, %r9;
\tmov.b32 \t%f13, %r33;
\tadd.f32 \t%f14, %f14, %f13;
\tsetp.ne.s32 \t%p3, %r23, 0;
\t@%p3 bra \t$L__BB0_8;

\tcvta.to.global.u64 \t%rd6, %rd2;
\tmul.wide.u32 \t%rd7, %r3, 4;
\tadd.s64 \t%rd6, %rd6, %rd7;
\tst.global.f32 \t[%rd6], %f14;

$L__BB0_8:
\tret;
}
";

#[test]
fn block_reduction_with_shuffles_and_a_barrier() {
    let mut r = Rig::new(&format!("{HEADER}{BLOCK_SUM}"));
    for (n, block) in [(1000usize, 256u32), (256, 256), (77, 128), (5000, 64)] {
        // Small integers: every partial sum is exact, whatever the order.
        let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 23) as f32 - 11.0).collect();
        let px = r.upload(&x);
        let grid = (n as u32).div_ceil(block);
        let pout = r.upload(&vec![f32::NAN; grid as usize]);
        r.launch("block_sum", [grid, 1, 1], [block, 1, 1], &[&b64(px), &b64(pout), &(n as u32).to_le_bytes()]).unwrap();
        let out: Vec<f32> = r.download(pout, grid as usize);
        for (b, got) in out.iter().enumerate() {
            let lo = b * block as usize;
            let want: f32 = x[lo..(lo + block as usize).min(n)].iter().sum();
            assert_eq!(*got, want, "n {n}, block {b}");
        }
    }
}

#[test]
fn repo_sum_f32_reduces_through_shared_memory() {
    // cuda/reduce.cu sum_f32(x, out, n, factor, beta): one block of 1024 threads;
    // out[0] = factor * sum(x) + (beta == 0 ? 0 : beta * out[0]).
    let mut r = Rig::new(&repo_ptx("reduce.sm_75.ptx"));
    for (n, factor, beta) in [(1usize, 1.0f32, 0.0f32), (1000, 0.5, 0.0), (3001, 2.0, 1.0), (1024, 1.0, 0.5)] {
        let x: Vec<f32> = (0..n).map(|i| ((i * 31) % 17) as f32 - 8.0).collect();
        let px = r.upload(&x);
        let pout = r.upload(&[4.0f32]);
        r.launch(
            "sum_f32",
            [1, 1, 1],
            [1024, 1, 1],
            &[&b64(px), &b64(pout), &b64(n as u64), &factor.to_le_bytes(), &beta.to_le_bytes()],
        )
        .unwrap();
        let got: Vec<f32> = r.download(pout, 1);
        let total = factor * x.iter().sum::<f32>();
        let want = if beta == 0.0 { total } else { beta * 4.0 + total };
        assert_eq!(got[0], want, "n {n}");
    }
}

#[test]
fn repo_cast_f32_f16_rounds_every_element() {
    // cuda/cast.cu cast_f32_f16(x, y, n): y[i] = (half)x[i], round to nearest even.
    let mut r = Rig::new(&repo_ptx("cast.sm_75.ptx"));
    let n = 1000usize;
    let mut x: Vec<f32> = (0..n).map(|i| i as f32 * 0.37 - 100.0).collect();
    x[0] = 65520.0; // rounds to inf
    x[1] = 65519.0; // rounds to 65504
    x[2] = 2.980_232_2e-8; // half the smallest subnormal: ties to 0
    let px = r.upload(&x);
    let py = r.upload(&vec![0xffffu16; n]);
    r.launch("cast_f32_f16", [4, 1, 1], [128, 1, 1], &[&b64(px), &b64(py), &b64(n as u64)]).unwrap();
    let y: Vec<u16> = r.download(py, n);
    for i in 0..n {
        assert_eq!(y[i], f16::from_f32(x[i]).to_bits(), "{i}");
    }
    assert_eq!(&y[..3], &[0x7c00, 0x7bff, 0x0000]);
}

// ---------------------------------------------------------------------------------------
// WMMA m16n16k16: a and b from shared in row and col layouts, mma, store d
// ---------------------------------------------------------------------------------------

/// One warp: copies A and B (16 x 16 f16 each, stored with leading dimension 24 in the
/// layouts `la` and `lb`) to shared memory, loads the fragments, D = A B + 1 with C a
/// constant 1.0 fragment, stores D with layout `ld` (leading dimension 16) to shared
/// memory (or straight to global memory) and copies it out.
fn wmma_ptx(la: &str, lb: &str, ld: &str, d_global: bool) -> String {
    let frag = |p: &str| (0..8).map(|i| format!("%{p}{i}")).collect::<Vec<_>>().join(", ");
    let (fa, fb, fc, fd) = (frag("ra"), frag("rb"), frag("fc"), frag("fd"));
    let store = if d_global {
        format!(
            "\tcvta.to.global.u64 \t%rd9, %rd3;\n\twmma.store.d.sync.aligned.{ld}.m16n16k16.global.f32 \t[%rd9], {{{fd}}}, %r20;\n\tbra.uni \t$L_end;\n"
        )
    } else {
        format!(
            "\tmov.u32 \t%r12, sd;\n\twmma.store.d.sync.aligned.{ld}.m16n16k16.shared.f32 \t[%r12], {{{fd}}}, %r20;\n"
        )
    };
    format!(
        "{HEADER}
.visible .entry wmma_tile(
\t.param .u64 wmma_tile_param_0,
\t.param .u64 wmma_tile_param_1,
\t.param .u64 wmma_tile_param_2
)
{{
\t.reg .pred \t%p<3>;
\t.reg .b32 \t%r<30>;
\t.reg .b32 \t%ra<8>;
\t.reg .b32 \t%rb<8>;
\t.reg .f32 \t%fc<8>;
\t.reg .f32 \t%fd<8>;
\t.reg .b64 \t%rd<12>;
\t.shared .align 16 .b8 sa[768];
\t.shared .align 16 .b8 sb[768];
\t.shared .align 16 .b8 sd[1024];

\tld.param.u64 \t%rd1, [wmma_tile_param_0];
\tld.param.u64 \t%rd2, [wmma_tile_param_1];
\tld.param.u64 \t%rd3, [wmma_tile_param_2];
\tmov.u32 \t%r1, %tid.x;
$L_copy:
\tsetp.ge.u32 \t%p1, %r1, 192;
\t@%p1 bra \t$L_copied;
\tmul.wide.u32 \t%rd4, %r1, 4;
\tadd.s64 \t%rd5, %rd1, %rd4;
\tld.global.u32 \t%r2, [%rd5];
\tadd.s64 \t%rd6, %rd2, %rd4;
\tld.global.u32 \t%r3, [%rd6];
\tshl.b32 \t%r4, %r1, 2;
\tmov.u32 \t%r5, sa;
\tadd.s32 \t%r6, %r5, %r4;
\tst.shared.u32 \t[%r6], %r2;
\tmov.u32 \t%r7, sb;
\tadd.s32 \t%r8, %r7, %r4;
\tst.shared.u32 \t[%r8], %r3;
\tadd.s32 \t%r1, %r1, 32;
\tbra.uni \t$L_copy;
$L_copied:
\tbar.sync \t0;
\tmov.u32 \t%r9, 24;
\tmov.u32 \t%r10, sa;
\twmma.load.a.sync.aligned.{la}.m16n16k16.shared.f16 \t{{{fa}}}, [%r10], %r9;
\tmov.u32 \t%r11, sb;
\twmma.load.b.sync.aligned.{lb}.m16n16k16.shared.f16 \t{{{fb}}}, [%r11], %r9;
\tmov.f32 \t%fc0, 0f3F800000;
\tmov.f32 \t%fc1, 0f3F800000;
\tmov.f32 \t%fc2, 0f3F800000;
\tmov.f32 \t%fc3, 0f3F800000;
\tmov.f32 \t%fc4, 0f3F800000;
\tmov.f32 \t%fc5, 0f3F800000;
\tmov.f32 \t%fc6, 0f3F800000;
\tmov.f32 \t%fc7, 0f3F800000;
\twmma.mma.sync.aligned.{la}.{lb}.m16n16k16.f32.f32 \t{{{fd}}}, {{{fa}}}, {{{fb}}}, {{{fc}}};
\tmov.u32 \t%r20, 16;
{store}\tbar.sync \t0;
\tmov.u32 \t%r1, %tid.x;
$L_out:
\tsetp.ge.u32 \t%p2, %r1, 256;
\t@%p2 bra \t$L_end;
\tshl.b32 \t%r13, %r1, 2;
\tmov.u32 \t%r14, sd;
\tadd.s32 \t%r15, %r14, %r13;
\tld.shared.u32 \t%r16, [%r15];
\tmul.wide.u32 \t%rd7, %r1, 4;
\tadd.s64 \t%rd8, %rd3, %rd7;
\tst.global.u32 \t[%rd8], %r16;
\tadd.s32 \t%r1, %r1, 32;
\tbra.uni \t$L_out;
$L_end:
\tret;
}}
"
    )
}

/// Runs the WMMA tile kernel for every a/b layout pair and each (d layout, d in global
/// memory) in `stores`, checking D = A B + 1 against the host.
fn wmma_tiles(stores: &[(&str, bool)]) {
    const LDM: usize = 24;
    // Small integers: fp16 exact, every product and sum exact in f32.
    let a: Vec<f32> = (0..256).map(|i| ((i * 5 + 3) % 7) as f32 - 3.0).collect(); // a[m][k] = a[m * 16 + k]
    let b: Vec<f32> = (0..256).map(|i| ((i * 3 + 1) % 9) as f32 - 4.0).collect(); // b[k][n] = b[k * 16 + n]
    let mut want = [[0f32; 16]; 16];
    for (m, row) in want.iter_mut().enumerate() {
        for (n, w) in row.iter_mut().enumerate() {
            *w = 1.0 + (0..16).map(|k| a[m * 16 + k] * b[k * 16 + n]).sum::<f32>();
        }
    }
    // Lay a matrix out in memory: row-major element (i, j) at i * LDM + j, column-major
    // at j * LDM + i. Padding halves are NaN: a load that reads them spoils the result.
    let lay = |mat: &[f32], layout: &str| -> Vec<u16> {
        let mut v = vec![0x7e00u16; 16 * LDM];
        for i in 0..16 {
            for j in 0..16 {
                let at = if layout == "row" { i * LDM + j } else { j * LDM + i };
                v[at] = f16::from_f32(mat[i * 16 + j]).to_bits();
            }
        }
        v
    };
    for la in ["row", "col"] {
        for lb in ["row", "col"] {
            for &(ld, d_global) in stores {
                let what = format!("a {la}, b {lb}, d {ld} in {}", if d_global { "global" } else { "shared" });
                let mut r = Rig::new(&wmma_ptx(la, lb, ld, d_global));
                let pa = r.upload(&lay(&a, la));
                let pb = r.upload(&lay(&b, lb));
                let pd = r.upload(&[f32::NAN; 256]);
                r.launch("wmma_tile", [1, 1, 1], [32, 1, 1], &[&b64(pa), &b64(pb), &b64(pd)])
                    .unwrap_or_else(|e| panic!("{what}: {}", e.report));
                let d: Vec<f32> = r.download(pd, 256);
                for (m, row) in want.iter().enumerate() {
                    for (n, w) in row.iter().enumerate() {
                        let at = if ld == "row" { m * 16 + n } else { n * 16 + m };
                        assert_eq!(d[at], *w, "{what}: D[{m}][{n}]");
                    }
                }
            }
        }
    }
}

#[test]
fn wmma_tile_in_every_layout() {
    wmma_tiles(&[("row", false), ("col", false)]);
}

#[test]
fn wmma_store_d_to_global_memory() {
    wmma_tiles(&[("row", true), ("col", true)]);
}

// ---------------------------------------------------------------------------------------
// cp.async double buffer with zero-fill
// ---------------------------------------------------------------------------------------

/// Issues the cp.async of chunk `%{chunk}` (128 floats, 16 bytes per thread of a
/// 32-thread block) into shared buffer chunk & 1, src-size clamped to what is left of
/// n (0: zero-fill), then commits the group.
fn issue(chunk: &str) -> String {
    format!(
        "\tshl.b32 \t%r10, {chunk}, 7;
\tshl.b32 \t%r11, %r3, 2;
\tadd.s32 \t%r12, %r10, %r11;
\tsub.s32 \t%r13, %r1, %r12;
\tmin.s32 \t%r13, %r13, 4;
\tmax.s32 \t%r13, %r13, 0;
\tshl.b32 \t%r14, %r13, 2;
\tmul.wide.u32 \t%rd3, %r12, 4;
\tadd.s64 \t%rd4, %rd1, %rd3;
\tsetp.eq.s32 \t%p1, %r14, 0;
\t@%p1 mov.u64 \t%rd4, %rd1;
\tand.b32 \t%r15, {chunk}, 1;
\tshl.b32 \t%r15, %r15, 9;
\tshl.b32 \t%r16, %r3, 4;
\tmov.u32 \t%r17, buf;
\tadd.s32 \t%r17, %r17, %r15;
\tadd.s32 \t%r17, %r17, %r16;
\tcp.async.cg.shared.global [%r17], [%rd4], 16, %r14;
\tcp.async.commit_group;
"
    )
}

fn double_buffer_ptx() -> String {
    format!(
        "{HEADER}
.visible .entry dbuf(
\t.param .u64 dbuf_param_0,
\t.param .u64 dbuf_param_1,
\t.param .u32 dbuf_param_2,
\t.param .u32 dbuf_param_3
)
{{
\t.reg .pred \t%p<4>;
\t.reg .b32 \t%r<30>;
\t.reg .f32 \t%f<10>;
\t.reg .b64 \t%rd<8>;
\t.shared .align 16 .b8 buf[1024];

\tld.param.u64 \t%rd1, [dbuf_param_0];
\tld.param.u64 \t%rd2, [dbuf_param_1];
\tld.param.u32 \t%r1, [dbuf_param_2];
\tld.param.u32 \t%r2, [dbuf_param_3];
\tcvta.to.global.u64 \t%rd1, %rd1;
\tcvta.to.global.u64 \t%rd2, %rd2;
\tmov.u32 \t%r3, %tid.x;
\tmov.u32 \t%r5, 0;
{first}\tmov.u32 \t%r4, 0;
$L_loop:
\tsetp.ge.u32 \t%p2, %r4, %r2;
\t@%p2 bra \t$L_done;
\tadd.s32 \t%r5, %r4, 1;
\tsetp.ge.u32 \t%p3, %r5, %r2;
\t@%p3 bra \t$L_last;
{next}\tcp.async.wait_group 1;
\tbra.uni \t$L_ready;
$L_last:
\tcp.async.wait_group 0;
$L_ready:
\tbar.sync \t0;
\tand.b32 \t%r20, %r4, 1;
\tshl.b32 \t%r20, %r20, 9;
\tshl.b32 \t%r21, %r3, 4;
\tmov.u32 \t%r22, buf;
\tadd.s32 \t%r22, %r22, %r20;
\tadd.s32 \t%r22, %r22, %r21;
\tld.shared.v4.f32 \t{{%f1, %f2, %f3, %f4}}, [%r22];
\tadd.f32 \t%f1, %f1, %f1;
\tadd.f32 \t%f2, %f2, %f2;
\tadd.f32 \t%f3, %f3, %f3;
\tadd.f32 \t%f4, %f4, %f4;
\tshl.b32 \t%r23, %r4, 7;
\tshl.b32 \t%r24, %r3, 2;
\tadd.s32 \t%r23, %r23, %r24;
\tmul.wide.u32 \t%rd5, %r23, 4;
\tadd.s64 \t%rd6, %rd2, %rd5;
\tst.global.v4.f32 \t[%rd6], {{%f1, %f2, %f3, %f4}};
\tbar.sync \t0;
\tadd.s32 \t%r4, %r4, 1;
\tbra.uni \t$L_loop;
$L_done:
\tret;
}}
",
        first = issue("%r5"),
        next = issue("%r5"),
    )
}

#[test]
fn cp_async_double_buffer_with_zero_fill() {
    let mut r = Rig::new(&double_buffer_ptx());
    // 1002: the last chunk has 26 full 16-byte copies, one of 8 bytes (src-size 8, the
    // rest zero-filled) and 5 of src-size 0 (all zeros).
    for n in [1002usize, 128, 1, 640] {
        let chunks = n.div_ceil(128);
        let x: Vec<f32> = (0..n).map(|i| i as f32 - 500.25).collect();
        let px = r.upload(&x);
        let py = r.upload(&vec![f32::NAN; chunks * 128]);
        r.launch(
            "dbuf",
            [1, 1, 1],
            [32, 1, 1],
            &[&b64(px), &b64(py), &(n as u32).to_le_bytes(), &(chunks as u32).to_le_bytes()],
        )
        .unwrap_or_else(|e| panic!("n {n}: {}", e.report));
        let y: Vec<f32> = r.download(py, chunks * 128);
        for i in 0..chunks * 128 {
            let want = if i < n { 2.0 * x[i] } else { 0.0 };
            assert_eq!(y[i].to_bits(), want.to_bits(), "n {n}, element {i}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// A .func called with call.uni and .param arguments
// ---------------------------------------------------------------------------------------

const CALL: &str = "
.func  (.param .b32 func_retval0) scale_add
(
\t.param .b32 scale_add_param_0,
\t.param .b32 scale_add_param_1
)
;

.visible .entry caller(
\t.param .u64 caller_param_0,
\t.param .u64 caller_param_1
)
{
\t.reg .f32 \t%f<5>;
\t.reg .b32 \t%r<3>;
\t.reg .b64 \t%rd<6>;

\tld.param.u64 \t%rd1, [caller_param_0];
\tld.param.u64 \t%rd2, [caller_param_1];
\tmov.u32 \t%r1, %tid.x;
\tmul.wide.u32 \t%rd3, %r1, 4;
\tadd.s64 \t%rd4, %rd1, %rd3;
\tld.global.f32 \t%f1, [%rd4];
\tcvt.rn.f32.u32 \t%f2, %r1;
\t{ // callseq 0, 0
\t.reg .b32 temp_param_reg;
\t.param .b32 param0;
\tst.param.f32 \t[param0+0], %f1;
\t.param .b32 param1;
\tst.param.f32 \t[param1+0], %f2;
\t.param .b32 retval0;
\tcall.uni (retval0), 
\tscale_add, 
\t(
\tparam0, 
\tparam1
\t);
\tld.param.f32 \t%f3, [retval0+0];
\t} // callseq 0
\t{ // callseq 1, 0
\t.reg .b32 temp_param_reg;
\t.param .b32 param0;
\tst.param.f32 \t[param0+0], %f3;
\t.param .b32 param1;
\tst.param.f32 \t[param1+0], %f3;
\t.param .b32 retval0;
\tcall.uni (retval0), 
\tscale_add, 
\t(
\tparam0, 
\tparam1
\t);
\tld.param.f32 \t%f4, [retval0+0];
\t} // callseq 1
\tadd.s64 \t%rd5, %rd2, %rd3;
\tst.global.f32 \t[%rd5], %f4;
\tret;
}

.func  (.param .b32 func_retval0) scale_add(
\t.param .b32 scale_add_param_0,
\t.param .b32 scale_add_param_1
)
{
\t.reg .f32 \t%f<4>;

\tld.param.f32 \t%f1, [scale_add_param_0];
\tld.param.f32 \t%f2, [scale_add_param_1];
\tfma.rn.f32 \t%f3, %f1, 0f40000000, %f2;
\tst.param.f32 \t[func_retval0+0], %f3;
\tret;
}
";

#[test]
fn func_called_with_call_uni_and_param_arguments() {
    let mut r = Rig::new(&format!("{HEADER}{CALL}"));
    let x: Vec<f32> = (0..64).map(|i| i as f32 * 0.25 - 3.0).collect();
    let px = r.upload(&x);
    let py = r.upload(&[f32::NAN; 64]);
    r.launch("caller", [1, 1, 1], [64, 1, 1], &[&b64(px), &b64(py)]).unwrap();
    let y: Vec<f32> = r.download(py, 64);
    for i in 0..64 {
        // f(a, b) = 2a + b; y = f(t, t) with t = f(x, i) = 3 t.
        let t = 2.0f32.mul_add(x[i], i as f32);
        assert_eq!(y[i], 2.0f32.mul_add(t, t), "{i}");
    }
}

#[test]
fn call_parameter_access_with_a_rounding_or_ftz_is_refused() {
    // The loader lowers a call parameter held in a register to a move; that path once
    // returned before the checks every other form takes, so `ld.param.rn` loaded. Each
    // edit must name its line; the unedited module loads (func_called_with_call_uni_...).
    for (from, to) in [
        ("ld.param.f32 \t%f3, [retval0+0];", "ld.param.rn.f32 \t%f3, [retval0+0];"),
        ("ld.param.f32 \t%f1, [scale_add_param_0];", "ld.param.ftz.f32 \t%f1, [scale_add_param_0];"),
        ("st.param.f32 \t[func_retval0+0], %f3;", "st.param.sat.f32 \t[func_retval0+0], %f3;"),
    ] {
        let src = format!("{HEADER}{CALL}");
        let edited = src.replacen(from, to, 1);
        assert_ne!(edited, src, "{from}");
        let line = edited.lines().position(|l| l.contains(to.split(' ').next().unwrap())).unwrap() + 1;
        let e = mp_emu::ptx::Module::load(&edited).err().unwrap_or_else(|| panic!("`{to}` loaded"));
        assert!(e.to_string().contains(&format!("line {line}")), "`{to}`: {e}");
    }
}

// ---------------------------------------------------------------------------------------
// A by-value struct parameter read through a computed address
// ---------------------------------------------------------------------------------------

const STRUCT_PARAM: &str = "
.visible .entry by_value(
\t.param .align 8 .b8 by_value_param_0[32],
\t.param .u64 by_value_param_1
)
{
\t.reg .pred \t%p<2>;
\t.reg .f32 \t%f<3>;
\t.reg .b32 \t%r<8>;
\t.reg .b64 \t%rd<12>;

\tmov.b64 \t%rd1, by_value_param_0;
\tld.param.u64 \t%rd2, [by_value_param_1];
\tmov.u32 \t%r1, %tid.x;
\tmul.wide.u32 \t%rd3, %r1, 8;
\tadd.s64 \t%rd4, %rd1, %rd3;
\t// the struct is {u64 ptr[3]; u32 count; f32 scale}: ptr[tid] through a computed address
\tld.param.u64 \t%rd5, [%rd4];
\tld.param.u32 \t%r2, [%rd1+24];
\tld.param.f32 \t%f1, [by_value_param_0+28];
\tmov.u32 \t%r3, 0;
$L_loop:
\tsetp.ge.u32 \t%p1, %r3, %r2;
\t@%p1 bra \t$L_done;
\tmul.wide.u32 \t%rd6, %r3, 4;
\tadd.s64 \t%rd7, %rd5, %rd6;
\tld.global.f32 \t%f2, [%rd7];
\tmul.f32 \t%f2, %f2, %f1;
\tmad.lo.s32 \t%r4, %r1, %r2, %r3;
\tmul.wide.u32 \t%rd8, %r4, 4;
\tadd.s64 \t%rd9, %rd2, %rd8;
\tst.global.f32 \t[%rd9], %f2;
\tadd.s32 \t%r3, %r3, 1;
\tbra.uni \t$L_loop;
$L_done:
\tret;
}
";

#[test]
fn struct_parameter_read_through_a_computed_address() {
    let mut r = Rig::new(&format!("{HEADER}{STRUCT_PARAM}"));
    let count = 5usize;
    let arrays: Vec<Vec<f32>> = (0..3).map(|k| (0..count).map(|i| (k * 10 + i) as f32).collect()).collect();
    let ptrs: Vec<u64> = arrays.iter().map(|a| r.upload(a)).collect();
    let mut s = Vec::new();
    for p in &ptrs {
        s.extend_from_slice(&p.to_le_bytes());
    }
    s.extend_from_slice(&(count as u32).to_le_bytes());
    s.extend_from_slice(&1.5f32.to_le_bytes());
    assert_eq!(s.len(), 32);
    let pout = r.upload(&vec![f32::NAN; 3 * count]);
    r.launch("by_value", [1, 1, 1], [3, 1, 1], &[&s, &b64(pout)]).unwrap();
    let out: Vec<f32> = r.download(pout, 3 * count);
    for k in 0..3 {
        for i in 0..count {
            assert_eq!(out[k * count + i], arrays[k][i] * 1.5, "array {k}, element {i}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// shfl.sync in every mode, with segments (the c operand), against the ISA's pseudo-code
// ---------------------------------------------------------------------------------------

/// Each lane shuffles `1000 + lane` with mode `mode`, b = the parameter, c = the
/// parameter; stores the value and the predicate.
fn shfl_ptx(mode: &str) -> String {
    format!(
        "{HEADER}
.visible .entry shfl(
\t.param .u64 shfl_param_0,
\t.param .u32 shfl_param_1,
\t.param .u32 shfl_param_2
)
{{
\t.reg .pred \t%p<2>;
\t.reg .b32 \t%r<10>;
\t.reg .b64 \t%rd<4>;

\tld.param.u64 \t%rd1, [shfl_param_0];
\tld.param.u32 \t%r1, [shfl_param_1];
\tld.param.u32 \t%r2, [shfl_param_2];
\tmov.u32 \t%r3, %laneid;
\tadd.s32 \t%r4, %r3, 1000;
\tmov.u32 \t%r5, -1;
\tshfl.sync.{mode}.b32 \t%r6|%p1, %r4, %r1, %r2, %r5;
\tselp.u32 \t%r7, 1, 0, %p1;
\tmul.wide.u32 \t%rd2, %r3, 8;
\tadd.s64 \t%rd3, %rd1, %rd2;
\tst.global.v2.u32 \t[%rd3], {{%r6, %r7}};
\tret;
}}
"
    )
}

#[test]
fn shfl_sync_every_mode_and_segment() {
    // ISA 9.7.8.6 shfl.sync: maxLane = (lane & segmask) | (cval & ~segmask), minLane =
    // lane & segmask; up: j = lane - b, p = j >= maxLane; down: j = lane + b, p = j <=
    // maxLane; bfly: j = lane ^ b, p = j <= maxLane; idx: j = minLane | (b & ~segmask),
    // p = j <= maxLane; a lane whose p is false reads its own value.
    for mode in ["up", "down", "bfly", "idx"] {
        let mut r = Rig::new(&shfl_ptx(mode));
        // c as CUDA forms it: ((32 - width) << 8) | (up ? 0 : 31).
        for width in [32u32, 16, 8, 4, 1] {
            let c = ((32 - width) << 8) | if mode == "up" { 0 } else { 31 };
            for b in [0u32, 1, 3, 5, 16, 31] {
                let p = r.upload(&[0u32; 64]);
                r.launch("shfl", [1, 1, 1], [32, 1, 1], &[&b64(p), &b.to_le_bytes(), &c.to_le_bytes()]).unwrap();
                let got: Vec<u32> = r.download(p, 64);
                let (segmask, cval) = ((c >> 8) & 31, c & 31);
                for lane in 0..32i64 {
                    let max_lane = ((lane as u32 & segmask) | (cval & !segmask)) as i64;
                    let min_lane = (lane as u32 & segmask) as i64;
                    let (j, ok) = match mode {
                        "up" => (lane - b as i64, lane - b as i64 >= max_lane),
                        "down" => (lane + b as i64, lane + b as i64 <= max_lane),
                        "bfly" => (lane ^ b as i64, (lane ^ b as i64) <= max_lane),
                        _ => {
                            let j = min_lane | (b & !segmask) as i64;
                            (j, j <= max_lane)
                        }
                    };
                    let src = if ok { j } else { lane };
                    let l = lane as usize;
                    assert_eq!(
                        (got[2 * l], got[2 * l + 1]),
                        (1000 + src as u32, ok as u32),
                        "shfl.{mode} width {width} b {b} lane {lane}"
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// bar.red.or.pred
// ---------------------------------------------------------------------------------------

const BAR_RED: &str = "
.visible .entry any_flag(
\t.param .u64 any_flag_param_0,
\t.param .u32 any_flag_param_1
)
{
\t.reg .pred \t%p<3>;
\t.reg .b32 \t%r<5>;
\t.reg .b64 \t%rd<4>;

\tld.param.u64 \t%rd1, [any_flag_param_0];
\tld.param.u32 \t%r1, [any_flag_param_1];
\tmov.u32 \t%r2, %tid.x;
\tsetp.eq.u32 \t%p1, %r2, %r1;
\tbar.red.or.pred \t%p2, 0, %p1;
\tselp.u32 \t%r3, 1, 0, %p2;
\tmul.wide.u32 \t%rd2, %r2, 4;
\tadd.s64 \t%rd3, %rd1, %rd2;
\tst.global.u32 \t[%rd3], %r3;
\tret;
}
";

#[test]
fn bar_red_or_gives_every_thread_the_block_wide_or() {
    let mut r = Rig::new(&format!("{HEADER}{BAR_RED}"));
    // The flagged thread: none (1000 is past the block), the first, one in the last warp.
    for (flag, want) in [(1000u32, 0u32), (0, 1), (150, 1)] {
        let p = r.upload(&[7u32; 160]);
        r.launch("any_flag", [1, 1, 1], [160, 1, 1], &[&b64(p), &flag.to_le_bytes()]).unwrap();
        assert_eq!(r.download::<u32>(p, 160), vec![want; 160], "flag {flag}");
    }
}

#[test]
fn wmma_stride_must_be_a_multiple_of_16_bytes() {
    // ldm 20 halves (40 bytes) for A and B, then ldm 18 floats (72 bytes) for D: rows that
    // do not start 16-byte aligned, which load_matrix_sync / store_matrix_sync forbid. The
    // tile's data stay in bounds either way; before the check both ran and gave a result.
    let ptx = wmma_ptx("row", "row", "row", false);
    for (from, to, what) in [
        ("\tmov.u32 \t%r9, 24;", "\tmov.u32 \t%r9, 20;", "wmma stride 20 (40 bytes of 2-byte elements)"),
        ("\tmov.u32 \t%r20, 16;", "\tmov.u32 \t%r20, 18;", "wmma stride 18 (72 bytes of 4-byte elements)"),
    ] {
        assert!(ptx.contains(from));
        let mut r = Rig::new(&ptx.replace(from, to));
        let (pa, pb) = (r.upload(&[0u16; 16 * 24]), r.upload(&[0u16; 16 * 24]));
        let pd = r.upload(&[0f32; 256]);
        let e = r.launch("wmma_tile", [1, 1, 1], [32, 1, 1], &[&b64(pa), &b64(pb), &b64(pd)]).unwrap_err();
        assert_eq!(e.kind, FaultKind::MisalignedAddress, "{}", e.report);
        assert!(e.report.contains(what) && e.report.contains("not a multiple of 16 bytes"), "{}", e.report);
    }
    // The clean twin is wmma_tile_in_every_layout: ldm 24 halves (48 bytes), 16 floats.
}

// ---------------------------------------------------------------------------------------
// Loads and stores of a whole warp at once (exec::access::ld_st_warp)
// ---------------------------------------------------------------------------------------

/// Each lane loads a sign-extended byte and half-word, odd lanes also a .v2 (even lanes
/// keep 7 and 9), stores the four as a .v4 to shared memory, and after a barrier copies
/// its neighbour's (lane + 1 mod 32) to `out`: even lanes as one .v4, odd lanes as a .v2,
/// a 16-bit and an 8-bit store. Guarded, vector, narrow and sign-extended accesses of a
/// converged warp, the forms the warp-wide path takes.
const LANE_MEMORY: &str = "
.visible .entry lane_memory(
\t.param .u64 lane_memory_param_0,
\t.param .u64 lane_memory_param_1
)
{
\t.reg .pred \t%p<2>;
\t.reg .b32 \t%r<16>;
\t.reg .b64 \t%rd<8>;
\t.shared .align 16 .b8 sh[512];

\tld.param.u64 \t%rd1, [lane_memory_param_0];
\tld.param.u64 \t%rd2, [lane_memory_param_1];
\tmov.u32 \t%r1, %tid.x;
\tcvt.u64.u32 \t%rd3, %r1;
\tadd.s64 \t%rd4, %rd1, %rd3;
\tld.global.s8 \t%r2, [%rd4];
\tshl.b64 \t%rd5, %rd3, 1;
\tadd.s64 \t%rd5, %rd1, %rd5;
\tld.global.s16 \t%r3, [%rd5+64];
\tand.b32 \t%r4, %r1, 1;
\tsetp.eq.u32 \t%p1, %r4, 1;
\tshl.b64 \t%rd6, %rd3, 3;
\tadd.s64 \t%rd6, %rd1, %rd6;
\tmov.u32 \t%r5, 7;
\tmov.u32 \t%r6, 9;
\t@%p1 ld.global.v2.u32 \t{%r5, %r6}, [%rd6+128];
\tshl.b32 \t%r7, %r1, 4;
\tmov.u32 \t%r8, sh;
\tadd.s32 \t%r9, %r8, %r7;
\tst.shared.v4.u32 \t[%r9], {%r2, %r3, %r5, %r6};
\tbar.sync \t0;
\tadd.s32 \t%r10, %r1, 1;
\tand.b32 \t%r10, %r10, 31;
\tshl.b32 \t%r10, %r10, 4;
\tadd.s32 \t%r10, %r8, %r10;
\tld.shared.v4.u32 \t{%r11, %r12, %r13, %r14}, [%r10];
\tshl.b64 \t%rd7, %rd3, 4;
\tadd.s64 \t%rd7, %rd2, %rd7;
\t@!%p1 st.global.v4.u32 \t[%rd7], {%r11, %r12, %r13, %r14};
\t@%p1 st.global.v2.u32 \t[%rd7], {%r11, %r12};
\t@%p1 st.global.u16 \t[%rd7+8], %r13;
\t@%p1 st.global.u8 \t[%rd7+10], %r14;
\tret;
}
";

#[test]
fn a_warps_guarded_vector_and_narrow_accesses() {
    let ptx = format!("{HEADER}{LANE_MEMORY}");
    let mut r = Rig::new(&ptx);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let input: Vec<u8> = (0..384)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let pin = r.upload(&input);
    let pout = r.upload(&[0u8; 512]);
    r.launch("lane_memory", [1, 1, 1], [32, 1, 1], &[&b64(pin), &b64(pout)]).unwrap();
    let got = r.download::<u8>(pout, 512);
    let u32_at = |o: usize| u32::from_le_bytes(input[o..o + 4].try_into().unwrap());
    for t in 0..32usize {
        let s = (t + 1) % 32;
        let a = input[s] as i8 as i32 as u32;
        let b = i16::from_le_bytes([input[64 + 2 * s], input[65 + 2 * s]]) as i32 as u32;
        let (c, d) = if s % 2 == 1 { (u32_at(128 + 8 * s), u32_at(132 + 8 * s)) } else { (7, 9) };
        let mut want = [0u8; 16];
        want[..4].copy_from_slice(&a.to_le_bytes());
        want[4..8].copy_from_slice(&b.to_le_bytes());
        if t % 2 == 0 {
            want[8..12].copy_from_slice(&c.to_le_bytes());
            want[12..].copy_from_slice(&d.to_le_bytes());
        } else {
            want[8..10].copy_from_slice(&c.to_le_bytes()[..2]);
            want[10] = d as u8;
        }
        assert_eq!(got[16 * t..16 * t + 16], want, "thread {t}");
    }
}
