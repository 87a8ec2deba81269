//! The device layer's ownership rule: a buffer belongs to the stream it was allocated on,
//! and every launcher refuses a buffer of another stream, even on the same context.

mod common;

use half::f16;
use mixed_precision::backend::cuda::Cuda;
use mixed_precision::backend::Backend;
use mixed_precision::kernels::adam::{adamw_step, AdamConfig, AdamScalars, AdamTensors};
use mixed_precision::kernels::add::add;
use mixed_precision::kernels::cast::cast_f32_f16;
use mixed_precision::kernels::gemm::{gemm, Epilogue, GemmShape, Transpose};
use mixed_precision::kernels::loss_scale::{update_scale, ScaleRule};
use mixed_precision::kernels::unscale::unscale_check;
use mixed_precision::{Device, Error, Result, Tensor};

fn assert_refused(what: &str, r: Result<()>, op: &str) {
    match r {
        Err(e @ Error::DeviceMismatch { .. }) => {
            assert!(e.to_string().contains(op), "{what}: the error names {op}: {e}");
        }
        other => panic!("{what}: expected DeviceMismatch naming {op}, got {other:?}"),
    }
}

/// Regression (issue 14, item 2): `Device::owns` compared contexts, so device B launched
/// on device A's buffers (two `Device`s on one primary context, as two `Device::new(0)`
/// calls give) with nothing ordering B's stream after A's: event tracking is off. Now
/// every launcher refuses, before launching anything: the outputs keep their poison.
#[test]
fn a_launch_on_another_devices_buffer_is_refused_before_it_runs() {
    let a = gpu_or_skip!();
    let b = common::gpu("a_launch_on_another_devices_buffer_is_refused_before_it_runs (device B)").unwrap();
    assert_eq!(a.context().cu_ctx(), b.context().cu_ctx(), "one primary context");
    assert_ne!(a.stream().cu_stream(), b.stream().cu_stream(), "two streams");

    let poison16 = f16::from_f32(-7.0);
    let x_a = Tensor::<f32>::from_host(&a, &[1.0, 2.0, 3.0, 4.0], &[4]).unwrap();
    let x_b = Tensor::<f32>::from_host(&b, &[1.0, 2.0, 3.0, 4.0], &[4]).unwrap();
    let h_a = Tensor::<f16>::from_host(&a, &[f16::ONE; 4], &[4]).unwrap();
    let mut y_a = Tensor::<f16>::from_host(&a, &[poison16; 4], &[4]).unwrap();
    let mut y_b = Tensor::<f16>::from_host(&b, &[poison16; 4], &[4]).unwrap();

    // An input of A, an output of A: each refused on B.
    assert_refused("cast, input on A", cast_f32_f16(&b, &x_a.view(), &mut y_b.view_mut()), "cast_f32_f16");
    assert_refused("cast, output on A", cast_f32_f16(&b, &x_b.view(), &mut y_a.view_mut()), "cast_f32_f16");
    let h_b = Tensor::<f16>::from_host(&b, &[f16::ONE; 4], &[4]).unwrap();
    assert_refused("add", add(&b, &h_b.view(), &h_a.view(), &mut y_b.view_mut()), "add_f16");

    // GEMM 2x2x2: A's operand on B.
    let shape = GemmShape::dense(2, 2, 2, Transpose::N, Transpose::N);
    let mut c_b = Tensor::<f32>::from_host(&b, &[-7.0; 4], &[4]).unwrap();
    let r = gemm(&b, &shape, &h_a.view(), &h_b.view(), &mut c_b.view_mut(), Epilogue::default());
    assert_refused("gemm", r, "gemm");

    // The optimizer phase: gradients of A, scalars of B.
    let mut grads_a = Tensor::<f32>::from_host(&a, &[1.0; 4], &[4]).unwrap();
    let scale_b = Tensor::<f32>::from_host(&b, &[2.0], &[1]).unwrap();
    let mut found_b = Tensor::<f32>::from_host(&b, &[0.0], &[1]).unwrap();
    let r = unscale_check(&b, &mut grads_a.view_mut(), Some(&scale_b.view()), &mut found_b.view_mut());
    assert_refused("unscale_check", r, "unscale_check_f32");
    let mut scale_a = Tensor::<f32>::from_host(&a, &[2.0], &[1]).unwrap();
    let mut tracker_b = b.stream().alloc_zeros::<i32>(1).unwrap();
    let r =
        update_scale(&b, &mut scale_a.view_mut(), &mut tracker_b.as_view_mut(), &found_b.view(), &ScaleRule::default());
    assert_refused("update_scale", r, "update_scale");
    let mut params_b = Tensor::<f32>::from_host(&b, &[0.5; 4], &[4]).unwrap();
    let mut m_b = Tensor::<f32>::zeros(&b, &[4]).unwrap();
    let mut v_b = Tensor::<f32>::zeros(&b, &[4]).unwrap();
    let mut step_b = Tensor::<f32>::zeros(&b, &[1]).unwrap();
    {
        let mut t: AdamTensors<_, f16> = AdamTensors {
            params: params_b.view_mut(),
            grads: grads_a.view(),
            m: m_b.view_mut(),
            v: v_b.view_mut(),
            copy: None,
        };
        let mut s = AdamScalars { step: step_b.view_mut(), scale: None, found_inf: None };
        assert_refused("adamw_step", adamw_step(&b, &mut t, &mut s, &AdamConfig::default()), "adamw_step_f32");
    }

    // Nothing ran: every output still holds its poison or initial value.
    assert_eq!(y_b.to_host().unwrap(), vec![poison16; 4]);
    assert_eq!(y_a.to_host().unwrap(), vec![poison16; 4]);
    assert_eq!(c_b.to_host().unwrap(), vec![-7.0; 4]);
    assert_eq!(grads_a.to_host().unwrap(), vec![1.0; 4]);
    assert_eq!(found_b.to_host().unwrap(), vec![0.0]);
    assert_eq!(scale_a.to_host().unwrap(), vec![2.0]);
    assert_eq!(params_b.to_host().unwrap(), vec![0.5; 4]);
    assert_eq!(step_b.to_host().unwrap(), vec![0.0]);

    // The backend keeps the rule too: a tensor of a Cuda on A is not B's to read or reuse.
    let (cuda_a, cuda_b) = (Cuda::new(&a), Cuda::new(&b));
    let t_a = cuda_a.tensor(&[1.0, 2.0], 1, 2).unwrap();
    assert!(matches!(cuda_b.to_host(&t_a), Err(Error::DeviceMismatch { op: "Cuda::to_host" })));
    assert!(matches!(cuda_b.copy(&t_a), Err(Error::DeviceMismatch { op: "Cuda::copy" })));

    // Each device still runs the same launch on its own buffers.
    cast_f32_f16(&b, &x_b.view(), &mut y_b.view_mut()).unwrap();
    let expect: Vec<f16> = [1.0f32, 2.0, 3.0, 4.0].iter().map(|&x| f16::from_f32(x)).collect();
    assert_eq!(y_b.to_host().unwrap(), expect);
    cast_f32_f16(&a, &x_a.view(), &mut y_a.view_mut()).unwrap();
    assert_eq!(y_a.to_host().unwrap(), expect);
}

/// The rule is the stream, not the `Device` object: a second `Device` adopted on A's own
/// stream (an engine that hands the crate the stream it already gave it) shares A's
/// buffers, as the work of both is ordered on that one stream.
#[test]
fn a_device_adopting_the_same_stream_shares_its_buffers() {
    let a = gpu_or_skip!();
    a.context().bind_to_thread().unwrap();
    // SAFETY: A's context is current on this thread (bound above) and A's stream is a
    // live stream of it; both outlive `same` because `a` is dropped after it.
    let same = unsafe { Device::from_current_context(a.stream().cu_stream()) }.unwrap();
    let x_a = Tensor::<f32>::from_host(&a, &[0.5, -2.0], &[2]).unwrap();
    let mut y_a = Tensor::<f16>::zeros(&a, &[2]).unwrap();
    cast_f32_f16(&same, &x_a.view(), &mut y_a.view_mut()).unwrap();
    assert_eq!(y_a.to_host().unwrap(), vec![f16::from_f32(0.5), f16::from_f32(-2.0)]);
    drop(same);
}
