//! The C ABI's error paths, called from Rust as a C program would: every failure is a
//! status and a message, never a panic or a crash. (The C program and the generated
//! header are still to come; see the closing note of the C ABI issue.)

use std::ffi::CStr;

use mixed_precision::capi::*;
use mixed_precision::{Device, Error};

fn last_error() -> String {
    // SAFETY: mp_last_error returns a NUL-terminated string valid until the next call.
    unsafe { CStr::from_ptr(mp_last_error()) }.to_string_lossy().into_owned()
}

#[test]
fn null_handle_and_arguments_are_rejected() {
    let null = std::ptr::null();
    // SAFETY: null handles and pointers are part of the contract: rejected, not read.
    let s = unsafe { mp_cast_f32_f16(null, 0, 0, 4) };
    assert_eq!(s, MpStatus::MP_ERR_NULL_POINTER);
    assert!(last_error().contains("mp_cast_f32_f16"), "{}", last_error());
    // SAFETY: as above.
    let s = unsafe { mp_gemm(null, std::ptr::null()) };
    assert_eq!(s, MpStatus::MP_ERR_NULL_POINTER);
    // SAFETY: as above.
    let s = unsafe { mp_update_scale(null, 0, 0, 0, 2.0, 0.5, 2000) };
    assert_eq!(s, MpStatus::MP_ERR_NULL_POINTER);
    // SAFETY: null `out` is rejected before anything else.
    let s = unsafe { mp_handle_create(std::ptr::null_mut(), std::ptr::null_mut()) };
    assert_eq!(s, MpStatus::MP_ERR_NULL_POINTER);
    // SAFETY: destroying null is a no-op.
    assert_eq!(unsafe { mp_handle_destroy(std::ptr::null_mut()) }, MpStatus::MP_OK);
    assert_eq!(last_error(), "");
}

#[test]
fn no_driver_is_a_clean_status() {
    if !matches!(Device::new(0), Err(Error::NoDriver)) {
        eprintln!("skipped (a CUDA driver is present): capi::no_driver_is_a_clean_status");
        return;
    }
    let mut h = std::ptr::null_mut();
    // SAFETY: `h` is a valid out pointer; a null stream is allowed.
    let s = unsafe { mp_handle_create(std::ptr::null_mut(), &mut h) };
    assert_eq!(s, MpStatus::MP_ERR_NO_DRIVER);
    assert!(h.is_null());
    assert!(last_error().contains("no CUDA driver"), "{}", last_error());
}
