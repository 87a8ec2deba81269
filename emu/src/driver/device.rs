//! The one emulated device: its compute capability (from `MP_EMU_CC`), SM count (from
//! `MP_EMU_SM_COUNT`), name and attributes.
//!
//! Limits that decide whether a launch or a module is legal (shared memory per block,
//! threads per SM, blocks per SM, clusters) follow the emulated compute capability, so a
//! kernel that would be refused on a T4 is refused at `MP_EMU_CC=7.5` too.
//!
//! The SM count is a real part's at each capability ([`default_sm_count`]), because
//! launchers size grid-stride grids from it: the grid a test gets, and so how many passes
//! a grid-stride loop makes, is the one that part would give. `MP_EMU_SM_COUNT` overrides
//! it; at 1 SM every grid-stride loop over more than a few thousand items runs several
//! passes, which is where a wrong stride shows (a single pass never uses the stride).
//!
//! Figures that only describe the machine (memory size, clocks, L2) are an H100 SXM's
//! whatever the compute capability: nothing sizes work from them, and an H100-class part
//! is what the GPU runs of this project use.

use super::error::{CuResult, INVALID_VALUE};

/// The environment variable that selects the compute capability.
pub const CC_VAR: &str = "MP_EMU_CC";
/// The compute capability when `MP_EMU_CC` is unset: sm_80, the oldest target with every
/// instruction our kernels use on their fast paths.
pub const DEFAULT_CC: (u32, u32) = (8, 0);
/// The compute capabilities the emulator accepts (those nvcc targets we may ship PTX for).
pub const SUPPORTED_CC: &[(u32, u32)] = &[(7, 5), (8, 0), (8, 6), (8, 9), (9, 0)];
/// The environment variable that overrides the SM count.
pub const SM_COUNT_VAR: &str = "MP_EMU_SM_COUNT";
/// The SM counts `MP_EMU_SM_COUNT` accepts: one SM up to more than any part has.
pub const SM_COUNT_RANGE: std::ops::RangeInclusive<u32> = 1..=1024;
/// Device memory reported by cuDeviceTotalMem and cuMemGetInfo: an H100's 80 GiB. The
/// real limit is what the host can allocate; cuMemAlloc fails with OUT_OF_MEMORY there.
pub const TOTAL_MEM: u64 = 80 << 30;
/// The environment variable that selects the emulated driver's version ("12.8", "13.0").
pub const DRIVER_VAR: &str = "MP_EMU_DRIVER_VERSION";
/// The driver version when `MP_EMU_DRIVER_VERSION` is unset, as cuDriverGetVersion reports
/// it: CUDA 13.0, the API our bindings target.
pub const DEFAULT_DRIVER_VERSION: i32 = 13000;
/// The newest PTX ISA version (major, minor) each driver version the emulator can pose as
/// JIT-compiles, newest first. A driver refuses PTX whose `.version` is newer with
/// CUDA_ERROR_UNSUPPORTED_PTX_VERSION.
///
/// From NVIDIA's "PTX ISA Release History" table, which names the CUDA release that
/// introduced each PTX ISA version (PTX ISA, chapter "Release Notes",
/// <https://docs.nvidia.com/cuda/parallel-thread-execution/#release-notes-ptx-release-history>;
/// the same table as NVIDIA's cuda-python transcribes it in
/// `cuda/bindings/utils/_ptx_utils.py`): ISA 8.0 to 8.5 came with CUDA 12.0 to 12.5, 8.6 with
/// 12.7, 8.7 with 12.8, 8.8 with 12.9, 9.0 with 13.0 and 9.1 with 13.1. CUDA 12.6 introduced
/// no ISA version, so it loads up to 8.5.
pub const DRIVER_PTX: &[(i32, (u32, u32))] = &[
    (13010, (9, 1)),
    (13000, (9, 0)),
    (12090, (8, 8)),
    (12080, (8, 7)),
    (12070, (8, 6)),
    (12060, (8, 5)),
    (12050, (8, 5)),
    (12040, (8, 4)),
    (12030, (8, 3)),
    (12020, (8, 2)),
    (12010, (8, 1)),
    (12000, (8, 0)),
];
/// Shared memory a block may use without opting in (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES).
pub const DEFAULT_SHARED_PER_BLOCK: u32 = 49152;

/// Parses `MP_EMU_CC`'s value ("8.0"): None unless it is one of [`SUPPORTED_CC`].
pub fn parse_cc(s: &str) -> Option<(u32, u32)> {
    let (major, minor) = s.trim().split_once('.')?;
    let cc = (major.parse().ok()?, minor.parse().ok()?);
    SUPPORTED_CC.contains(&cc).then_some(cc)
}

/// The SM count of the part the emulator stands for at compute capability `cc`: the
/// data-center part of that generation, the kind CI and users rent.
pub fn default_sm_count(cc: (u32, u32)) -> u32 {
    match cc {
        (7, 5) => 40,  // Tesla T4 (TU104, 2560 CUDA cores / 64 per SM)
        (8, 0) => 108, // A100 (GA100, SXM4 and PCIe alike)
        (8, 6) => 72,  // A10 (GA102, 9216 CUDA cores / 128 per SM)
        (8, 9) => 58,  // L4 (AD104, 7424 CUDA cores / 128 per SM)
        _ => 132,      // H100 SXM5 (GH100); the H200 of the project's GPU runs has 132 too
    }
}

/// Parses `MP_EMU_SM_COUNT`'s value ("1"): None unless it is a number in [`SM_COUNT_RANGE`].
pub fn parse_sm_count(s: &str) -> Option<u32> {
    s.trim().parse().ok().filter(|n| SM_COUNT_RANGE.contains(n))
}

/// The emulated device: what cuInit fixes once, from the environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Device {
    pub cc: (u32, u32),
    pub sm_count: u32,
}

impl Device {
    /// The part the emulator stands for at compute capability `cc`, SM count included.
    pub fn new(cc: (u32, u32)) -> Device {
        Device { cc, sm_count: default_sm_count(cc) }
    }

    /// The device the environment asks for, or a message saying why a setting is not
    /// valid (cuInit then fails with NO_DEVICE: a misspelt setting must not silently run
    /// the default target, nor a default SM count a test pass meant to shrink). The only
    /// place the emulator reads `MP_EMU_CC` and `MP_EMU_SM_COUNT`.
    pub fn from_env() -> Result<Device, String> {
        let cc = match std::env::var(CC_VAR) {
            Err(std::env::VarError::NotPresent) => DEFAULT_CC,
            Err(std::env::VarError::NotUnicode(v)) => {
                return Err(format!("{CC_VAR}={v:?} is not a compute capability"))
            }
            Ok(v) => parse_cc(&v).ok_or_else(|| {
                let known: Vec<String> = SUPPORTED_CC.iter().map(|(a, b)| format!("{a}.{b}")).collect();
                format!("{CC_VAR}={v:?} is not a supported compute capability (one of {})", known.join(", "))
            })?,
        };
        let sm_count = match std::env::var(SM_COUNT_VAR) {
            Err(std::env::VarError::NotPresent) => default_sm_count(cc),
            Err(std::env::VarError::NotUnicode(v)) => return Err(format!("{SM_COUNT_VAR}={v:?} is not an SM count")),
            Ok(v) => parse_sm_count(&v).ok_or_else(|| {
                let (lo, hi) = (SM_COUNT_RANGE.start(), SM_COUNT_RANGE.end());
                format!("{SM_COUNT_VAR}={v:?} is not an SM count ({lo} to {hi})")
            })?,
        };
        Ok(Device { cc, sm_count })
    }
}

/// Parses `MP_EMU_DRIVER_VERSION`'s value ("12.8") to cuDriverGetVersion's form (12080):
/// None unless it is one of [`DRIVER_PTX`]'s versions.
pub fn parse_driver_version(s: &str) -> Option<i32> {
    let (major, minor) = s.trim().split_once('.')?;
    let (major, minor): (i32, i32) = (major.parse().ok()?, minor.parse().ok()?);
    if !(0..10).contains(&minor) {
        return None;
    }
    let v = major.checked_mul(1000)? + minor * 10;
    DRIVER_PTX.iter().any(|&(d, _)| d == v).then_some(v)
}

/// "12.8" for 12080.
pub fn driver_version_name(v: i32) -> String {
    format!("{}.{}", v / 1000, v % 1000 / 10)
}

/// The version `MP_EMU_DRIVER_VERSION` asks for, or a message saying why the value is not
/// one. The one place the variable is read.
fn driver_version_from_env() -> Result<i32, String> {
    match std::env::var(DRIVER_VAR) {
        Err(std::env::VarError::NotPresent) => Ok(DEFAULT_DRIVER_VERSION),
        Err(std::env::VarError::NotUnicode(v)) => Err(format!("{DRIVER_VAR}={v:?} is not a driver version")),
        Ok(v) => parse_driver_version(&v).ok_or_else(|| {
            let known: Vec<String> = DRIVER_PTX.iter().rev().map(|&(d, _)| driver_version_name(d)).collect();
            format!("{DRIVER_VAR}={v:?} is not a supported driver version (one of {})", known.join(", "))
        }),
    }
}

/// What [`set_driver_version`] set (0: nothing, the environment decides).
static DRIVER_OVERRIDE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// The emulated driver's version, as cuDriverGetVersion reports it: what
/// [`set_driver_version`] set, else `MP_EMU_DRIVER_VERSION` (read once per process), else
/// [`DEFAULT_DRIVER_VERSION`]. An unsupported value in the environment is an error (cuInit
/// then fails, as for `MP_EMU_CC`: a misspelt setting must not silently run the default).
pub fn driver_version() -> Result<i32, String> {
    static FROM_ENV: std::sync::OnceLock<Result<i32, String>> = std::sync::OnceLock::new();
    match DRIVER_OVERRIDE.load(std::sync::atomic::Ordering::SeqCst) {
        0 => FROM_ENV.get_or_init(driver_version_from_env).clone(),
        v => Ok(v),
    }
}

/// Sets the emulated driver's version for this process, over the environment (`None`: back
/// to the environment's). For tests, which must not change environment variables while
/// other threads run. Fails for a version not in [`DRIVER_PTX`].
pub fn set_driver_version(v: Option<i32>) -> Result<(), String> {
    let v = v.unwrap_or(0);
    if v != 0 && !DRIVER_PTX.iter().any(|&(d, _)| d == v) {
        return Err(format!("{v} is not a driver version the emulator knows"));
    }
    DRIVER_OVERRIDE.store(v, std::sync::atomic::Ordering::SeqCst);
    Ok(())
}

/// The newest PTX ISA version driver `driver` loads.
pub fn max_ptx_version(driver: i32) -> (u32, u32) {
    DRIVER_PTX.iter().find(|&&(d, _)| driver >= d).map_or((0, 0), |&(_, isa)| isa)
}

/// Whether driver `driver` loads PTX of ISA version `isa` (a module's `.version`); if not,
/// the message that names both versions.
pub fn check_ptx_version(isa: (u32, u32), driver: i32) -> Result<(), String> {
    let max = max_ptx_version(driver);
    if isa <= max {
        return Ok(());
    }
    Err(format!(
        "unsupported .version {}.{}: CUDA driver {} loads PTX ISA {}.{} at most",
        isa.0,
        isa.1,
        driver_version_name(driver),
        max.0,
        max.1
    ))
}

/// The name cuDeviceGetName reports. It says "emulator" so that tests and benchmarks can
/// tell (benchmarks refuse to time it).
pub fn name(cc: (u32, u32)) -> String {
    format!("mp-emu emulator (sm_{}{})", cc.0, cc.1)
}

/// Largest shared memory per block after opting in (CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN).
pub fn shared_optin(cc: (u32, u32)) -> u32 {
    match cc {
        (7, 5) => 65536,
        (8, 0) => 166912,
        (8, _) => 101376,
        _ => 232448,
    }
}

fn threads_per_sm(cc: (u32, u32)) -> i32 {
    match cc {
        (7, 5) => 1024,
        (8, 0) | (9, _) => 2048,
        _ => 1536,
    }
}

fn blocks_per_sm(cc: (u32, u32)) -> i32 {
    match cc {
        (8, 0) | (9, _) => 32,
        _ => 16,
    }
}

fn shared_per_sm(cc: (u32, u32)) -> u32 {
    match cc {
        (7, 5) => 65536,
        (8, 0) => 167936,
        (8, _) => 102400,
        _ => 233472,
    }
}

/// The value of device attribute `attr` (a CUdevice_attribute), as `dev` would answer
/// (module doc: limits of its capability, its SM count, an H100's other figures).
/// Attributes the emulator has no figure for answer 0 (the feature is absent), as a
/// device without it would; numbers outside the CUDA 13.0 enum are INVALID_VALUE.
pub fn attribute(attr: i32, dev: &Device) -> Result<i32, CuResult> {
    let cc = dev.cc;
    let hopper = cc.0 >= 9;
    let ampere = cc.0 >= 8;
    let v = match attr {
        1 => 1024,                            // MAX_THREADS_PER_BLOCK
        2 | 3 => 1024,                        // MAX_BLOCK_DIM_X, Y
        4 => 64,                              // MAX_BLOCK_DIM_Z
        5 => i32::MAX,                        // MAX_GRID_DIM_X
        6 | 7 => 65535,                       // MAX_GRID_DIM_Y, Z
        8 => DEFAULT_SHARED_PER_BLOCK as i32, // MAX_SHARED_MEMORY_PER_BLOCK
        9 => 65536,                           // TOTAL_CONSTANT_MEMORY
        10 => 32,                             // WARP_SIZE
        11 => i32::MAX,                       // MAX_PITCH
        12 => 65536,                          // MAX_REGISTERS_PER_BLOCK
        13 => 1_980_000,                      // CLOCK_RATE (kHz)
        14 | 30 => 512,                       // TEXTURE_ALIGNMENT, SURFACE_ALIGNMENT
        15 => 1,                              // GPU_OVERLAP
        16 => dev.sm_count as i32,            // MULTIPROCESSOR_COUNT
        19 => 1,                              // CAN_MAP_HOST_MEMORY
        31 | 32 => 1,                         // CONCURRENT_KERNELS, ECC_ENABLED
        36 => 2_619_000,                      // MEMORY_CLOCK_RATE (kHz)
        37 => 5120,                           // GLOBAL_MEMORY_BUS_WIDTH
        38 => 50 << 20,                       // L2_CACHE_SIZE
        39 => threads_per_sm(cc),             // MAX_THREADS_PER_MULTIPROCESSOR
        40 => 2,                              // ASYNC_ENGINE_COUNT
        41 => 1,                              // UNIFIED_ADDRESSING
        51 => 32,                             // TEXTURE_PITCH_ALIGNMENT
        75 => cc.0 as i32,                    // COMPUTE_CAPABILITY_MAJOR
        76 => cc.1 as i32,                    // COMPUTE_CAPABILITY_MINOR
        78..=80 => 1,                         // STREAM_PRIORITIES, GLOBAL_L1_CACHE, LOCAL_L1_CACHE
        81 => shared_per_sm(cc) as i32,       // MAX_SHARED_MEMORY_PER_MULTIPROCESSOR
        82 => 65536,                          // MAX_REGISTERS_PER_MULTIPROCESSOR
        83 => 1,                              // MANAGED_MEMORY
        87 => 2,                              // SINGLE_TO_DOUBLE_PRECISION_PERF_RATIO
        89 | 90 => 1,                         // CONCURRENT_MANAGED_ACCESS, COMPUTE_PREEMPTION
        95 => 1,                              // COOPERATIVE_LAUNCH
        97 => shared_optin(cc) as i32,        // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
        99 => 1,                              // HOST_REGISTER_SUPPORTED
        102 => 1,                             // VIRTUAL_ADDRESS_MANAGEMENT_SUPPORTED
        103 => 1,                             // HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED
        106 => blocks_per_sm(cc),             // MAX_BLOCKS_PER_MULTIPROCESSOR
        111 => 1024 * ampere as i32,          // RESERVED_SHARED_MEMORY_PER_BLOCK
        115 => 1,                             // MEMORY_POOLS_SUPPORTED: cudarc then allocates with cuMemAllocAsync
        119 => 1,                             // MEMPOOL_SUPPORTED_HANDLE_TYPES: POSIX file descriptor
        120 | 127 => hopper as i32,           // CLUSTER_LAUNCH, TENSOR_MAP_ACCESS_SUPPORTED
        126 => 1 + 3 * hopper as i32,         // MEM_SYNC_DOMAIN_COUNT
        _ if (1..=147).contains(&attr) => 0,
        _ => return Err(INVALID_VALUE),
    };
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_supported_capabilities_only() {
        assert_eq!(parse_cc("7.5"), Some((7, 5)));
        assert_eq!(parse_cc(" 9.0 "), Some((9, 0)));
        assert_eq!(parse_cc("8"), None);
        assert_eq!(parse_cc("8.1"), None);
        assert_eq!(parse_cc("sm_80"), None);
    }

    #[test]
    fn parses_sm_counts_in_range_only() {
        assert_eq!(parse_sm_count("1"), Some(1));
        assert_eq!(parse_sm_count(" 1024 "), Some(1024));
        assert_eq!(parse_sm_count("0"), None);
        assert_eq!(parse_sm_count("1025"), None);
        assert_eq!(parse_sm_count("-1"), None);
        assert_eq!(parse_sm_count("8x"), None);
        assert_eq!(parse_sm_count(""), None);
    }

    #[test]
    fn driver_versions_and_the_ptx_they_load() {
        assert_eq!(parse_driver_version("13.0"), Some(13000));
        assert_eq!(parse_driver_version(" 12.8 "), Some(12080));
        assert_eq!(parse_driver_version("12.6"), Some(12060));
        assert_eq!(parse_driver_version("13"), None);
        assert_eq!(parse_driver_version("11.8"), None);
        assert_eq!(parse_driver_version("12.10"), None);
        assert_eq!(parse_driver_version("13000"), None);
        assert_eq!(max_ptx_version(13000), (9, 0));
        assert_eq!(max_ptx_version(12080), (8, 7));
        assert_eq!(max_ptx_version(12060), (8, 5));
        assert_eq!(max_ptx_version(12000), (8, 0));
        assert!(check_ptx_version((9, 0), 13000).is_ok());
        assert!(check_ptx_version((8, 7), 12080).is_ok());
        let e = check_ptx_version((9, 0), 12080).unwrap_err();
        assert!(e.contains("9.0") && e.contains("12.8") && e.contains("8.7"), "{e}");
    }

    #[test]
    fn limits_follow_the_capability() {
        let at = |cc| Device::new(cc);
        assert_eq!(attribute(97, &at((7, 5))), Ok(65536));
        assert_eq!(attribute(97, &at((9, 0))), Ok(232448));
        assert_eq!(attribute(0, &at((8, 0))), Err(INVALID_VALUE));
        assert_eq!(attribute(148, &at((8, 0))), Err(INVALID_VALUE));
    }

    #[test]
    fn sm_count_is_the_parts_unless_overridden() {
        let sms = |dev: Device| attribute(16, &dev).unwrap();
        let parts: Vec<i32> = SUPPORTED_CC.iter().map(|&cc| sms(Device::new(cc))).collect();
        assert_eq!(parts, [40, 108, 72, 58, 132]); // T4, A100, A10, L4, H100 SXM
        assert_eq!(sms(Device { cc: (9, 0), sm_count: 1 }), 1);
        // The SM count describes the machine; the per-SM limits stay the capability's.
        assert_eq!(attribute(39, &Device { cc: (8, 0), sm_count: 1 }), attribute(39, &Device::new((8, 0))));
    }
}
