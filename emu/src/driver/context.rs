//! Initialization, the device, and contexts (primary and created).

use super::error::*;
use super::state::{self, with, with_init, Context, Handle, State};
use super::{device, faults};

/// cuInit: reads `MP_EMU_CC` and `MP_EMU_SM_COUNT` once; a value that is not a supported
/// compute capability or an SM count fails with NO_DEVICE, saying why on stderr, every
/// time it is called. So does an `MP_EMU_DRIVER_VERSION` that is not a supported driver
/// version, and an `MP_EMU_FAULTS` or `MP_EMU_STRICT` that is not one of their values.
pub fn init(flags: u32) -> Result<(), CuResult> {
    if flags != 0 {
        return Err(INVALID_VALUE);
    }
    if let Err(why) = device::driver_version().map(|_| ()).and_then(|()| faults::check()) {
        eprintln!("mp-emu: {why}");
        return Err(NO_DEVICE);
    }
    with(|s| {
        if s.device.is_some() {
            return Ok(());
        }
        match device::Device::from_env() {
            Ok(dev) => {
                s.device = Some(dev);
                Ok(())
            }
            Err(why) => {
                eprintln!("mp-emu: {why}");
                Err(NO_DEVICE)
            }
        }
    })
}

fn check_device(dev: i32) -> Result<(), CuResult> {
    if dev == 0 {
        Ok(())
    } else {
        Err(INVALID_DEVICE)
    }
}

/// cuDeviceGet: ordinal 0 is the only device, and its CUdevice is 0.
pub fn device_get(ordinal: i32) -> Result<i32, CuResult> {
    with_init(|_| check_device(ordinal).map(|_| 0))
}

pub fn device_count() -> Result<i32, CuResult> {
    with_init(|_| Ok(1))
}

pub fn device_name(dev: i32) -> Result<String, CuResult> {
    with_init(|s| {
        check_device(dev)?;
        Ok(device::name(s.cc()?))
    })
}

pub fn device_total_mem(dev: i32) -> Result<u64, CuResult> {
    with_init(|_| check_device(dev).map(|_| device::TOTAL_MEM))
}

pub fn device_attribute(attr: i32, dev: i32) -> Result<i32, CuResult> {
    with_init(|s| {
        check_device(dev)?;
        device::attribute(attr, &s.device()?)
    })
}

/// Sets the device's SM count, as `MP_EMU_SM_COUNT` would have at cuInit (not part of the
/// CUDA API). For tests that compare SM counts in one process: the variable is read once
/// per process, and setting it from a multi-threaded test races with every other thread
/// reading the environment. Work already launched is unaffected; what a caller sizes from
/// the count after this call sees the new one. INVALID_VALUE outside
/// [`device::SM_COUNT_RANGE`].
pub fn set_sm_count(sm_count: u32) -> Result<(), CuResult> {
    if !device::SM_COUNT_RANGE.contains(&sm_count) {
        return Err(INVALID_VALUE);
    }
    with_init(|s| {
        s.device.as_mut().ok_or(NOT_INITIALIZED)?.sm_count = sm_count;
        Ok(())
    })
}

/// cuDevicePrimaryCtxRetain: the primary context's handle never changes; a retain of an
/// inactive primary context makes it active again with fresh state.
pub fn primary_retain(dev: i32) -> Result<Handle, CuResult> {
    with_init(|s| {
        check_device(dev)?;
        let h = match s.primary {
            Some(h) => h,
            None => {
                let h = s.new_handle();
                s.contexts.insert(h, Context::new(true, false));
                s.primary = Some(h);
                h
            }
        };
        let c = s.contexts.get_mut(&h).ok_or(UNKNOWN)?;
        c.refs += 1;
        c.active = true;
        Ok(h)
    })
}

/// cuDevicePrimaryCtxRelease: the last release destroys the context's resources and
/// clears a sticky error (the driver tears the context down; a later retain starts
/// afresh). Releasing more than retained is INVALID_CONTEXT.
pub fn primary_release(dev: i32) -> Result<(), CuResult> {
    with_init(|s| {
        check_device(dev)?;
        let h = s.primary.ok_or(INVALID_CONTEXT)?;
        let c = s.contexts.get_mut(&h).ok_or(INVALID_CONTEXT)?;
        if c.refs == 0 {
            return Err(INVALID_CONTEXT);
        }
        c.refs -= 1;
        if c.refs == 0 {
            c.active = false;
            c.clear_fault();
            s.destroy_resources(h);
        }
        Ok(())
    })
}

/// cuDevicePrimaryCtxReset: destroys the primary context's resources now, whatever the
/// retain count; it stays active for those who retained it.
pub fn primary_reset(dev: i32) -> Result<(), CuResult> {
    with_init(|s| {
        check_device(dev)?;
        if let Some(h) = s.primary {
            s.destroy_resources(h);
            if let Some(c) = s.contexts.get_mut(&h) {
                c.clear_fault();
                c.active = c.refs > 0;
            }
        }
        Ok(())
    })
}

/// cuDevicePrimaryCtxGetState: (flags, active).
pub fn primary_state(dev: i32) -> Result<(u32, bool), CuResult> {
    with_init(|s| {
        check_device(dev)?;
        Ok((0, s.primary.and_then(|h| s.contexts.get(&h)).is_some_and(|c| c.active)))
    })
}

/// cuCtxCreate: a new context, pushed on the calling thread's stack. Its allocations live
/// in the device's one memory (so pointers are unique across contexts) and are freed
/// when it is destroyed.
pub fn ctx_create(dev: i32) -> Result<Handle, CuResult> {
    with_init(|s| {
        check_device(dev)?;
        let h = s.new_handle();
        s.contexts.insert(h, Context::new(false, true));
        state::push_current(h);
        Ok(h)
    })
}

/// cuCtxDestroy: a created context only (the primary context is released, not
/// destroyed); it is popped from the calling thread's stack if on top. Other threads that
/// still have it current get INVALID_CONTEXT from then on.
pub fn ctx_destroy(ctx: Handle) -> Result<(), CuResult> {
    with_init(|s| {
        match s.contexts.get(&ctx) {
            Some(c) if !c.primary => {}
            _ => return Err(INVALID_CONTEXT),
        }
        s.destroy_resources(ctx);
        s.contexts.remove(&ctx);
        if state::current_handle() == Some(ctx) {
            state::pop_current();
        }
        Ok(())
    })
}

/// Checks that `ctx` names a context that exists (set/push accept an inactive primary
/// context: calls made with it current fail later, as with the driver).
fn known(s: &State, ctx: Handle) -> Result<(), CuResult> {
    if s.contexts.contains_key(&ctx) {
        Ok(())
    } else {
        Err(INVALID_CONTEXT)
    }
}

pub fn ctx_set_current(ctx: Option<Handle>) -> Result<(), CuResult> {
    with_init(|s| {
        if let Some(c) = ctx {
            known(s, c)?;
        }
        state::set_current(ctx);
        Ok(())
    })
}

pub fn ctx_get_current() -> Result<Option<Handle>, CuResult> {
    with_init(|_| Ok(state::current_handle()))
}

pub fn ctx_push(ctx: Handle) -> Result<(), CuResult> {
    with_init(|s| {
        known(s, ctx)?;
        state::push_current(ctx);
        Ok(())
    })
}

pub fn ctx_pop() -> Result<Handle, CuResult> {
    with_init(|_| state::pop_current().ok_or(INVALID_CONTEXT))
}

pub fn ctx_get_device() -> Result<i32, CuResult> {
    with_init(|s| {
        let ctx = state::current_handle().ok_or(INVALID_CONTEXT)?;
        s.live_context(ctx)?;
        Ok(0)
    })
}

/// cuCtxSynchronize: waits for all the context's streams (returning a fault of their work,
/// `driver::faults`); illegal while any of them is capturing (each such capture is
/// invalidated), whatever the capture mode, since it would wait on work that is being
/// recorded rather than run.
pub fn ctx_synchronize() -> Result<(), CuResult> {
    with_init(|s| {
        let ctx = s.current_synced("cuCtxSynchronize")?;
        let ids: Vec<u64> = s.captures.iter().filter(|(_, c)| c.ctx == ctx).map(|(id, _)| *id).collect();
        if ids.is_empty() {
            return Ok(());
        }
        for id in ids {
            s.invalidate(id, "cuCtxSynchronize while a stream of the context was capturing");
        }
        Err(STREAM_CAPTURE_UNSUPPORTED)
    })
}
