//! A planted bug: a grid-stride loop with the wrong stride, which only a device with few
//! SMs exposes.
//!
//! The crate's launchers size a grid-stride grid from the SM count (`grid_stride_config`
//! in src/kernels/mod.rs: 256 threads a block, at most 8 blocks per SM). At a full
//! device's count the tests' sizes fit in one pass, so no thread ever adds the stride and
//! a wrong one goes unnoticed; at 1 SM (`MP_EMU_SM_COUNT=1`, the extra pass of
//! scripts/test.sh) the same sizes take several passes. The two kernels here differ only
//! in the stride: `pairs_right` adds the grid's thread count, `pairs_wrong` twice that
//! (the stride counted in floats where the loop counts float pairs, the slip a vectorized
//! kernel invites).
//!
//! One test, in its own process: it changes the device's SM count, which is
//! process-wide ([`set_sm_count`]).

use std::ffi::{c_void, CString};
use std::ptr::null_mut;

use mp_emu::api::*;
use mp_emu::driver::context::set_sm_count;
use mp_emu::driver::device::{default_sm_count, SUPPORTED_CC};
use mp_emu::driver::error::{self as e, name};

type P = *mut c_void;

#[track_caller]
fn ok(r: u32) {
    assert_eq!(r, 0, "expected CUDA_SUCCESS, got {}", name(r).unwrap_or("?"));
}

/// y[2i..2i+2] = 2 x[2i..2i+2] + 1 for every pair i < n, two floats a thread per pass.
/// `{stride_fix}` is where the wrong twin doubles the stride.
const TEMPLATE: &str = "
.visible .entry {name}(
	.param .u64 {name}_param_0,
	.param .u64 {name}_param_1,
	.param .u32 {name}_param_2
)
{
	.reg .pred 	%p<2>;
	.reg .b32 	%r<8>;
	.reg .f32 	%f<5>;
	.reg .b64 	%rd<6>;

	ld.param.u64 	%rd1, [{name}_param_0];
	ld.param.u64 	%rd2, [{name}_param_1];
	ld.param.u32 	%r1, [{name}_param_2];
	cvta.to.global.u64 	%rd1, %rd1;
	cvta.to.global.u64 	%rd2, %rd2;
	mov.u32 	%r2, %ctaid.x;
	mov.u32 	%r3, %ntid.x;
	mov.u32 	%r4, %tid.x;
	mad.lo.s32 	%r5, %r2, %r3, %r4;
	mov.u32 	%r6, %nctaid.x;
	mul.lo.s32 	%r7, %r3, %r6;
{stride_fix}
	setp.ge.u32 	%p1, %r5, %r1;
	@%p1 bra 	$L__{name}_done;
$L__{name}_loop:
	mul.wide.u32 	%rd3, %r5, 8;
	add.s64 	%rd4, %rd1, %rd3;
	ld.global.v2.f32 	{%f1, %f2}, [%rd4];
	fma.rn.f32 	%f3, %f1, 0f40000000, 0f3F800000;
	fma.rn.f32 	%f4, %f2, 0f40000000, 0f3F800000;
	add.s64 	%rd5, %rd2, %rd3;
	st.global.v2.f32 	[%rd5], {%f3, %f4};
	add.s32 	%r5, %r5, %r7;
	setp.lt.u32 	%p1, %r5, %r1;
	@%p1 bra 	$L__{name}_loop;
$L__{name}_done:
	ret;
}
";

/// Both kernels; sm_75 so the test runs at every `MP_EMU_CC`.
fn ptx() -> String {
    let kernel = |name: &str, stride_fix: &str| TEMPLATE.replace("{name}", name).replace("{stride_fix}", stride_fix);
    format!(
        ".version 7.8\n.target sm_75\n.address_size 64\n{}{}",
        kernel("pairs_right", ""),
        kernel("pairs_wrong", "\tshl.b32 \t%r7, %r7, 1;"),
    )
}

/// As the crate's `grid_stride_config`.
const BLOCK: u32 = 256;
const BLOCKS_PER_SM: u32 = 8;

/// Pairs in the test: one pass at every part's SM count (40 at 7.5 gives 81920 threads),
/// ten passes at 1 SM (2048 threads).
const PAIRS: u32 = 20_000;

fn sm_count() -> u32 {
    let mut v = 0;
    ok(unsafe { cuDeviceGetAttribute(&mut v, 16, 0) });
    v as u32
}

/// Runs `f` over PAIRS pairs with the grid a launcher would choose from the device's SM
/// count as the driver reports it, and returns the pairs whose output is wrong.
fn wrong_pairs(f: P, x: &[f32]) -> Vec<u32> {
    let bytes = std::mem::size_of_val(x);
    let (mut xd, mut yd) = (0u64, 0u64);
    ok(unsafe { cuMemAlloc_v2(&mut xd, bytes) });
    ok(unsafe { cuMemAlloc_v2(&mut yd, bytes) });
    // NaN in y: a pair no thread wrote cannot pass for a right answer.
    let sentinel = vec![f32::NAN; x.len()];
    ok(unsafe { cuMemcpyHtoD_v2(xd, x.as_ptr().cast(), bytes) });
    ok(unsafe { cuMemcpyHtoD_v2(yd, sentinel.as_ptr().cast(), bytes) });
    let grid = PAIRS.div_ceil(BLOCK).min(sm_count() * BLOCKS_PER_SM);
    let (mut xp, mut yp, mut n) = (xd, yd, PAIRS);
    let mut args = [(&mut xp as *mut u64).cast::<c_void>(), (&mut yp as *mut u64).cast(), (&mut n as *mut u32).cast()];
    ok(unsafe { cuLaunchKernel(f, grid, 1, 1, BLOCK, 1, 1, 0, null_mut(), args.as_mut_ptr(), null_mut()) });
    let mut y = vec![0f32; x.len()];
    ok(unsafe { cuMemcpyDtoH_v2(y.as_mut_ptr().cast(), yd, bytes) });
    ok(unsafe { cuMemFree_v2(xd) });
    ok(unsafe { cuMemFree_v2(yd) });
    (0..PAIRS).filter(|&i| (0..2).any(|k| y[(2 * i + k) as usize] != 2.0 * x[(2 * i + k) as usize] + 1.0)).collect()
}

#[test]
fn a_wrong_grid_stride_passes_on_a_full_device_and_fails_at_one_sm() {
    let mut ctx = null_mut();
    unsafe {
        ok(cuInit(0));
        ok(cuDevicePrimaryCtxRetain(&mut ctx, 0));
        ok(cuCtxSetCurrent(ctx));
    }
    let text = CString::new(ptx()).unwrap();
    let mut m = null_mut();
    ok(unsafe { cuModuleLoadData(&mut m, text.as_ptr().cast()) });
    let function = |name: &str| {
        let name = CString::new(name).unwrap();
        let mut f = null_mut();
        ok(unsafe { cuModuleGetFunction(&mut f, m, name.as_ptr()) });
        f
    };
    let (right, wrong) = (function("pairs_right"), function("pairs_wrong"));
    let x: Vec<f32> = (0..2 * PAIRS).map(|i| i as f32 * 0.25 - 100.0).collect();

    // The old fixed count (132 at every capability) and every part's: one pass, so the
    // wrong stride is never added and its output is right. Nothing at these counts can
    // tell the two kernels apart.
    let mut full: Vec<u32> = SUPPORTED_CC.iter().map(|&cc| default_sm_count(cc)).collect();
    full.push(132);
    for sms in full {
        set_sm_count(sms).unwrap();
        assert_eq!(sm_count(), sms, "the driver reports the count set");
        assert!(PAIRS <= sms * BLOCKS_PER_SM * BLOCK, "one pass at {sms} SMs");
        assert_eq!(wrong_pairs(right, &x), [] as [u32; 0], "pairs_right at {sms} SMs");
        assert_eq!(wrong_pairs(wrong, &x), [] as [u32; 0], "pairs_wrong passes unnoticed at {sms} SMs");
    }

    // 1 SM: 8 blocks, 2048 threads, ten passes. The right stride covers every pair; the
    // doubled one skips the second 2048 of every 4096.
    set_sm_count(1).unwrap();
    assert_eq!(sm_count(), 1);
    assert_eq!(wrong_pairs(right, &x), [] as [u32; 0], "pairs_right at 1 SM");
    let threads = BLOCKS_PER_SM * BLOCK;
    let skipped: Vec<u32> = (0..PAIRS).filter(|i| i % (2 * threads) >= threads).collect();
    assert_eq!(skipped.len(), 9760);
    assert_eq!(wrong_pairs(wrong, &x), skipped, "pairs_wrong at 1 SM: exactly the skipped pairs");

    // The count stays within what MP_EMU_SM_COUNT accepts.
    assert_eq!(set_sm_count(0), Err(e::INVALID_VALUE));
    assert_eq!(set_sm_count(1025), Err(e::INVALID_VALUE));
    assert_eq!(sm_count(), 1);
    unsafe {
        ok(cuModuleUnload(m));
        ok(cuDevicePrimaryCtxRelease_v2(0));
    }
}
