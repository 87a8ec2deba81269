//! Modules, functions and kernel launches.

use std::collections::HashMap;
use std::sync::Arc;

use super::device::{self, shared_optin, DEFAULT_SHARED_PER_BLOCK};
use super::error::*;
use super::graph::{fault_code, run_node};
use super::resources;
use super::state::{with_init, Function, Handle, ModuleEntry, Node};
use crate::exec::mma::{Mma, MmaMode};
use crate::exec::{self, LaunchConfig};
use crate::ptx::{Kernel, Module};

/// What cuModuleLoadData was given, as far as the emulator can tell.
pub enum Image<'a> {
    /// NUL-terminated text (the terminator not included): PTX.
    Text(&'a [u8]),
    /// A cubin (ELF) or fatbin: machine code the emulator cannot run.
    Binary,
}

/// cuModuleLoadData(Ex) / cuModuleLoad. The PTX is parsed outside the lock (it is the
/// slow part, and needs no state), once per distinct text in the process (`loaded`). A
/// module whose `.version` is newer than the emulated driver's JIT accepts
/// (`MP_EMU_DRIVER_VERSION`, [`device::DRIVER_PTX`]) is
/// UNSUPPORTED_PTX_VERSION, decided before the rest is parsed (a newer ISA may bring
/// syntax this one lacks); a load error is INVALID_PTX with the parser's message on
/// stderr; a module whose `.target` is above the device's compute capability is
/// NO_BINARY_FOR_GPU, as the driver answers for PTX it cannot JIT for this device.
pub fn load(image: Image<'_>) -> Result<Handle, CuResult> {
    with_init(|s| s.current().map(|_| ()))?;
    let text = match image {
        Image::Binary => {
            eprintln!("mp-emu: cuModuleLoadData: a cubin or fatbin image; the emulator runs PTX only");
            return Err(INVALID_IMAGE);
        }
        Image::Text(t) => std::str::from_utf8(t).map_err(|_| {
            eprintln!("mp-emu: cuModuleLoadData: the PTX is not UTF-8 text");
            INVALID_PTX
        })?,
    };
    let (version, line) = crate::ptx::declared_version(text).map_err(|e| {
        eprintln!("mp-emu: cuModuleLoadData: {e}");
        INVALID_PTX
    })?;
    let driver = device::driver_version().map_err(|why| {
        eprintln!("mp-emu: {why}");
        NOT_INITIALIZED
    })?;
    if let Err(why) = device::check_ptx_version(version, driver) {
        eprintln!("mp-emu: cuModuleLoadData: PTX line {line}: {why}");
        return Err(UNSUPPORTED_PTX_VERSION);
    }
    let module = loaded(text).map_err(|e| {
        eprintln!("mp-emu: cuModuleLoadData: {e}");
        INVALID_PTX
    })?;
    with_init(|s| {
        let ctx = s.current()?;
        let cc = s.cc()?;
        if module.target > cc.0 * 10 + cc.1 {
            eprintln!("mp-emu: cuModuleLoadData: PTX for sm_{} does not run on sm_{}{}", module.target, cc.0, cc.1);
            return Err(NO_BINARY_FOR_GPU);
        }
        let registers = module.kernels.iter().map(|k| resources::registers(module.target, cc, &k.name)).collect();
        let h = s.new_handle();
        s.modules.insert(h, ModuleEntry { ctx, module, functions: HashMap::new(), registers });
        Ok(h)
    })
}

/// Texts this process loaded most recently, newest last, with what they loaded to.
type Cache = Vec<(Box<str>, Arc<Module>)>;
/// How many distinct texts [`loaded`] keeps: every vendored module of the crate at one
/// target, with room to spare.
const CACHE_ENTRIES: usize = 32;

/// `text` loaded: the module an earlier load of the same text made, or a new one. A
/// loaded module is never changed afterwards (contexts share it through the Arc), and
/// loading depends on the text alone (the device's checks come after), so one load
/// serves every context of the process. The crate's tests open a device, and so load
/// every module they use, per test: the GEMM's PTX (8 MB, every tile and layout
/// variant) took about half a second to load each time, on the order of a minute of
/// every pass of the test script. Failed loads are not kept (the error is reported
/// again on every attempt).
fn loaded(text: &str) -> Result<Arc<Module>, crate::ptx::LoadError> {
    static CACHE: std::sync::Mutex<Cache> = std::sync::Mutex::new(Vec::new());
    let lookup = |cache: &mut Cache| {
        let at = cache.iter().position(|(t, _)| **t == *text)?;
        // Most recently used last.
        let hit = cache.remove(at);
        let m = hit.1.clone();
        cache.push(hit);
        Some(m)
    };
    if let Some(m) = lookup(&mut CACHE.lock().unwrap_or_else(|p| p.into_inner())) {
        return Ok(m);
    }
    // Parsed outside the lock: another thread's load of the same text may finish first,
    // and then the first one stored is kept.
    let module = Arc::new(Module::load(text)?);
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(m) = lookup(&mut cache) {
        return Ok(m);
    }
    if cache.len() == CACHE_ENTRIES {
        cache.remove(0);
    }
    cache.push((text.into(), module.clone()));
    Ok(module)
}

/// cuModuleLoad: a PTX file by path.
pub fn load_file(path: &str) -> Result<Handle, CuResult> {
    let bytes = std::fs::read(path).map_err(|e| {
        eprintln!("mp-emu: cuModuleLoad: {path}: {e}");
        FILE_NOT_FOUND
    })?;
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    load(Image::Text(&bytes[..end]))
}

/// cuModuleUnload. It waits for the work that may still run the module's code, so a
/// fault of the context's work is returned here (`driver::faults`), and the module stays.
pub fn unload(module: Handle) -> Result<(), CuResult> {
    with_init(|s| {
        let ctx = s.modules.get(&module).ok_or(INVALID_HANDLE)?.ctx;
        if s.contexts.contains_key(&ctx) {
            s.sync_point(ctx, "cuModuleUnload")?;
        }
        if s.unload(module) {
            Ok(())
        } else {
            Err(INVALID_HANDLE)
        }
    })
}

/// cuModuleGetFunction: one handle per kernel, the same on every call.
pub fn get_function(module: Handle, name: &str) -> Result<Handle, CuResult> {
    with_init(|s| {
        let m = s.modules.get(&module).ok_or(INVALID_HANDLE)?;
        s.usable(m.ctx)?;
        let kernel = m.module.kernel(name).ok_or(NOT_FOUND)?;
        if let Some(&f) = m.functions.get(&kernel) {
            return Ok(f);
        }
        let f = s.new_handle();
        s.functions.insert(f, Function { module, kernel, max_dynamic_shared: None });
        if let Some(m) = s.modules.get_mut(&module) {
            m.functions.insert(kernel, f);
        }
        Ok(f)
    })
}

/// CUfunction_attribute values the emulator answers.
const ATTR_MAX_THREADS_PER_BLOCK: i32 = 0;
const ATTR_SHARED_SIZE_BYTES: i32 = 1;
const ATTR_CONST_SIZE_BYTES: i32 = 2;
const ATTR_LOCAL_SIZE_BYTES: i32 = 3;
const ATTR_NUM_REGS: i32 = 4;
const ATTR_PTX_VERSION: i32 = 5;
const ATTR_BINARY_VERSION: i32 = 6;
const ATTR_CACHE_MODE_CA: i32 = 7;
const ATTR_MAX_DYNAMIC_SHARED_SIZE_BYTES: i32 = 8;
const ATTR_PREFERRED_SHARED_MEMORY_CARVEOUT: i32 = 9;

/// The limit on a function's dynamic shared memory: what cuFuncSetAttribute raised it to,
/// or what is left of the default 48 KiB after its static shared memory.
fn max_dynamic_shared(f: &Function, k: &Kernel) -> u32 {
    f.max_dynamic_shared.unwrap_or(DEFAULT_SHARED_PER_BLOCK.saturating_sub(k.static_shared))
}

/// cuFuncGetAttribute. Registers per thread are ptxas's for the vendored kernels
/// (driver::resources); local memory is not modelled (none: the vendored kernels have no
/// stack frame or spills, which scripts/check-ptx.sh enforces).
pub fn get_attribute(attr: i32, func: Handle) -> Result<i32, CuResult> {
    with_init(|s| {
        let f = s.functions.get(&func).ok_or(INVALID_HANDLE)?;
        let m = s.modules.get(&f.module).ok_or(INVALID_HANDLE)?;
        let k = m.module.kernels.get(f.kernel).ok_or(UNKNOWN)?;
        let cc = s.cc()?;
        Ok(match attr {
            ATTR_MAX_THREADS_PER_BLOCK => k
                .max_ntid
                .map_or(1024, |n| n.iter().product::<u32>().min(1024))
                .min(resources::max_threads(m.registers[f.kernel])) as i32,
            ATTR_SHARED_SIZE_BYTES => k.static_shared as i32,
            ATTR_CONST_SIZE_BYTES | ATTR_LOCAL_SIZE_BYTES | ATTR_CACHE_MODE_CA => 0,
            ATTR_NUM_REGS => m.registers[f.kernel] as i32,
            ATTR_PTX_VERSION => m.module.target as i32,
            ATTR_BINARY_VERSION => (cc.0 * 10 + cc.1) as i32,
            ATTR_MAX_DYNAMIC_SHARED_SIZE_BYTES => max_dynamic_shared(f, k) as i32,
            ATTR_PREFERRED_SHARED_MEMORY_CARVEOUT => -1,
            10..=17 => 0,
            _ => return Err(INVALID_VALUE),
        })
    })
}

/// cuFuncSetAttribute: the dynamic shared memory limit (up to the opt-in maximum of the
/// compute capability, less static shared) and the carveout preference (accepted,
/// meaningless here). Other attributes are read-only: INVALID_VALUE.
pub fn set_attribute(func: Handle, attr: i32, value: i32) -> Result<(), CuResult> {
    with_init(|s| {
        let cc = s.cc()?;
        let f = s.functions.get(&func).ok_or(INVALID_HANDLE)?;
        let m = s.modules.get(&f.module).ok_or(INVALID_HANDLE)?;
        let k = m.module.kernels.get(f.kernel).ok_or(UNKNOWN)?;
        match attr {
            ATTR_MAX_DYNAMIC_SHARED_SIZE_BYTES => {
                let v = u32::try_from(value).map_err(|_| INVALID_VALUE)?;
                if v > shared_optin(cc).saturating_sub(k.static_shared) {
                    return Err(INVALID_VALUE);
                }
                if let Some(f) = s.functions.get_mut(&func) {
                    f.max_dynamic_shared = Some(v);
                }
                Ok(())
            }
            ATTR_PREFERRED_SHARED_MEMORY_CARVEOUT if (-1..=100).contains(&value) => Ok(()),
            _ => Err(INVALID_VALUE),
        }
    })
}

/// cuLaunchKernel. Checks what the driver checks before anything runs (handles, grid and
/// block limits, `.reqntid`, `.maxntid`, shared memory), builds the parameter buffer with
/// `params` (which reads the caller's kernelParams or extra), then runs the kernel now or
/// records it, with its parameters copied, on a capturing stream.
pub fn launch(
    func: Handle,
    grid: [u32; 3],
    block: [u32; 3],
    dynamic_shared: u32,
    stream: Handle,
    params: impl FnOnce(&Kernel) -> Result<Vec<u8>, CuResult>,
) -> Result<(), CuResult> {
    with_init(|s| {
        let f = s.functions.get(&func).ok_or(INVALID_HANDLE)?;
        let m = s.modules.get(&f.module).ok_or(INVALID_HANDLE)?;
        let (module, kernel, module_ctx) = (m.module.clone(), f.kernel, m.ctx);
        let k = module.kernels.get(kernel).ok_or(UNKNOWN)?;
        let regs = m.registers[kernel];
        let max_dyn = max_dynamic_shared(f, k);
        let (ctx, st) = s.stream(stream)?;
        if module_ctx != ctx {
            return Err(INVALID_CONTEXT);
        }
        // Over the opt-in maximum of the device, or over what the function allows.
        let shared_limit = k.static_shared.saturating_add(max_dyn).min(shared_optin(s.cc()?));
        let mma = Mma::new(MmaMode::current(), s.cc()?);
        let cfg = LaunchConfig { grid, block, dynamic_shared, shared_limit, mma };
        if let Err(e) = exec::check_shape(k, &cfg) {
            eprintln!("mp-emu: {}", e.report);
            return Err(fault_code(e.kind));
        }
        // Registers are a property of the binary the driver built for this device, so the
        // driver checks them rather than exec::check_shape.
        let threads = block.iter().product::<u32>();
        if !resources::fits(regs, threads) {
            eprintln!(
                "mp-emu: launch of {}: {threads} threads x {regs} registers need {} registers, more than an SM's 65536",
                k.name,
                resources::block_registers(regs, threads)
            );
            return Err(LAUNCH_OUT_OF_RESOURCES);
        }
        let params = params(k)?;
        if params.len() != k.param_bytes {
            return Err(INVALID_VALUE);
        }
        let node = Node::Kernel { module, kernel, cfg, params };
        if s.record(st, node.clone())? {
            return Ok(());
        }
        let op = s.begin_op(ctx, st, &super::graph::describe(&node));
        run_node(s, ctx, &node, false, &op)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PTX: &str = ".version 7.8\n.target sm_80\n.address_size 64\n.visible .entry k_{N}()\n{\n\tret;\n}\n";

    #[test]
    fn one_load_per_distinct_text() {
        let (a, b) = (PTX.replace("{N}", "cache_a"), PTX.replace("{N}", "cache_b"));
        let first = loaded(&a).unwrap();
        assert!(Arc::ptr_eq(&first, &loaded(&a).unwrap()), "the same text loads once");
        let other = loaded(&b).unwrap();
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(other.kernels[0].name, "k_cache_b");
        // A failed load is not kept: every attempt reports it.
        let bad = a.replace("ret;", "ret");
        assert!(loaded(&bad).is_err());
        assert!(loaded(&bad).is_err());
        // Past the bound the least recently used text is loaded anew.
        for n in 0..CACHE_ENTRIES {
            loaded(&PTX.replace("{N}", &format!("cache_fill_{n}"))).unwrap();
        }
        assert!(!Arc::ptr_eq(&first, &loaded(&a).unwrap()), "evicted after {CACHE_ENTRIES} newer texts");
    }
}
