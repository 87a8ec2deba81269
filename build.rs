//! Compiles every `cuda/*.cu` to PTX and generates one `include_str!` constant per
//! file and target into `OUT_DIR/ptx_modules.rs` (included by `src/ptx.rs`).
//!
//! Targets: every file is compiled for the portable tensor-core target `sm_75`
//! (WMMA works from Turing on, and the driver JIT-compiles that PTX for any newer GPU).
//! A file that wants more variants says so in a line of its own:
//! `// ptx-targets: sm_75 sm_80 sm_90a` (sm_80 for cp.async, sm_90a for Hopper-only
//! instructions). The device picks the best variant its capability runs.
//!
//! nvcc is found through `NVCC`, then `CUDA_HOME`/`CUDA_PATH`, then `PATH`. Without it
//! the PTX vendored in `cuda/ptx/` is used (a cargo warning says so), unless
//! `MIXED_PRECISION_REQUIRE_NVCC=1`, which makes a missing nvcc an error.
//! `scripts/vendor-ptx.sh` refreshes `cuda/ptx/` from this script's own output, so the
//! nvcc command line lives here and nowhere else.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Targets a file may ask for, in the order the device prefers them (best last).
const KNOWN_TARGETS: &[&str] = &["sm_75", "sm_80", "sm_90a"];
const DEFAULT_TARGETS: &[&str] = &["sm_75"];

/// nvcc flags shared by every file. No `-lineinfo`: it embeds absolute paths, and the
/// vendored PTX must be identical on every clone.
const NVCC_FLAGS: &[&str] = &["-ptx", "-O3", "-std=c++17"];

struct Source {
    stem: String,
    path: PathBuf,
    targets: Vec<String>,
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cuda_dir = manifest.join("cuda");
    let vendored_dir = cuda_dir.join("ptx");

    for var in ["NVCC", "CUDA_HOME", "CUDA_PATH", "MIXED_PRECISION_REQUIRE_NVCC"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed={}", cuda_dir.display());
    println!("cargo:rerun-if-changed={}", vendored_dir.display());

    let sources = find_sources(&cuda_dir);
    let require_nvcc = env::var("MIXED_PRECISION_REQUIRE_NVCC").is_ok_and(|v| v == "1");

    match find_nvcc() {
        Some(nvcc) => compile_all(&nvcc, &cuda_dir, &sources, &out_dir),
        None if require_nvcc => {
            panic!(
                "MIXED_PRECISION_REQUIRE_NVCC=1 but no nvcc was found (looked at $NVCC, \
                 $CUDA_HOME/bin, $CUDA_PATH/bin and $PATH); run scripts/install-nvcc.sh \
                 and set NVCC to the path it prints"
            );
        }
        None => {
            println!(
                "cargo:warning=nvcc not found (NVCC, CUDA_HOME, CUDA_PATH, PATH): using the \
                 PTX vendored in cuda/ptx/"
            );
            copy_vendored(&vendored_dir, &sources, &out_dir);
        }
    }

    write_constants(&sources, &out_dir);
}

fn find_sources(cuda_dir: &Path) -> Vec<Source> {
    let mut sources = Vec::new();
    let entries = fs::read_dir(cuda_dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", cuda_dir.display()));
    for entry in entries {
        let path = entry.expect("readable cuda/ entry").path();
        let ext = path.extension().and_then(|e| e.to_str());
        if !matches!(ext, Some("cu") | Some("cuh")) {
            continue;
        }
        println!("cargo:rerun-if-changed={}", path.display());
        if ext != Some("cu") {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let stem = path.file_stem().and_then(|s| s.to_str()).expect("utf-8 file name").to_string();
        let targets = declared_targets(&text, &path);
        sources.push(Source { stem, path, targets });
    }
    sources.sort_by(|a, b| a.stem.cmp(&b.stem));
    sources
}

fn declared_targets(text: &str, path: &Path) -> Vec<String> {
    let Some(line) = text.lines().find_map(|l| l.trim().strip_prefix("// ptx-targets:")) else {
        return DEFAULT_TARGETS.iter().map(|s| s.to_string()).collect();
    };
    let targets: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    for t in &targets {
        assert!(
            KNOWN_TARGETS.contains(&t.as_str()),
            "{}: unknown ptx target {t:?} (known: {KNOWN_TARGETS:?})",
            path.display()
        );
    }
    assert!(!targets.is_empty(), "{}: empty `// ptx-targets:` line", path.display());
    targets
}

fn find_nvcc() -> Option<PathBuf> {
    if let Some(nvcc) = env::var_os("NVCC").filter(|v| !v.is_empty()) {
        let nvcc = PathBuf::from(nvcc);
        // An explicit NVCC that does not exist is a mistake, not a reason to fall back.
        assert!(nvcc.is_file(), "NVCC={} does not exist", nvcc.display());
        return Some(nvcc);
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(root) = env::var_os(var).filter(|v| !v.is_empty()) {
            let nvcc = Path::new(&root).join("bin").join("nvcc");
            if nvcc.is_file() {
                return Some(nvcc);
            }
        }
    }
    env::split_paths(&env::var_os("PATH")?).map(|dir| dir.join("nvcc")).find(|p| p.is_file())
}

fn ptx_file_name(stem: &str, target: &str) -> String {
    format!("{stem}.{target}.ptx")
}

fn compile_all(nvcc: &Path, cuda_dir: &Path, sources: &[Source], out_dir: &Path) {
    // PTX left in OUT_DIR by an earlier build (a target a file no longer asks for) would
    // be copied into cuda/ptx/ by scripts/vendor-ptx.sh as if current.
    remove_stale_ptx(out_dir);
    let jobs: Vec<(&Source, &str)> =
        sources.iter().flat_map(|s| s.targets.iter().map(move |t| (s, t.as_str()))).collect();
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|(src, target)| scope.spawn(move || compile_one(nvcc, cuda_dir, src, target, out_dir)))
            .collect();
        handles.into_iter().filter_map(|h| h.join().expect("nvcc thread").err()).collect()
    });
    if !failures.is_empty() {
        panic!("nvcc failed:\n{}", failures.join("\n\n"));
    }
}

fn compile_one(nvcc: &Path, cuda_dir: &Path, src: &Source, target: &str, out_dir: &Path) -> Result<(), String> {
    // compute_XX gives PTX with `.target sm_XX`; the driver JIT-compiles it for the GPU.
    let arch = format!("-arch={}", target.replace("sm_", "compute_"));
    let out = out_dir.join(ptx_file_name(&src.stem, target));
    let mut cmd = Command::new(nvcc);
    cmd.args(NVCC_FLAGS).arg(&arch).arg("-I").arg(cuda_dir).arg("-o").arg(&out).arg(&src.path);
    let shown = format!("{cmd:?}");
    match cmd.output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "command: {shown}\nstatus: {}\nstderr:\n{}{}",
            o.status,
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        )),
        Err(e) => Err(format!("command: {shown}\ncould not start nvcc: {e}")),
    }
}

fn remove_stale_ptx(out_dir: &Path) {
    let Ok(entries) = fs::read_dir(out_dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) == Some("ptx") {
            fs::remove_file(&path).unwrap_or_else(|e| panic!("cannot remove {}: {e}", path.display()));
        }
    }
}

fn copy_vendored(vendored_dir: &Path, sources: &[Source], out_dir: &Path) {
    for src in sources {
        for target in &src.targets {
            let name = ptx_file_name(&src.stem, target);
            let from = vendored_dir.join(&name);
            fs::copy(&from, out_dir.join(&name)).unwrap_or_else(|e| {
                panic!(
                    "no nvcc and no vendored PTX {} ({e}); install nvcc (scripts/install-nvcc.sh) \
                     and run scripts/vendor-ptx.sh",
                    from.display()
                )
            });
        }
    }
}

fn write_constants(sources: &[Source], out_dir: &Path) {
    let mut code = String::from("// @generated by build.rs from cuda/*.cu. Do not edit.\n\n");
    for src in sources {
        let upper = src.stem.to_uppercase();
        for target in &src.targets {
            let name = ptx_file_name(&src.stem, target);
            let _ = writeln!(
                code,
                "/// PTX of `cuda/{}.cu` for `{target}`.\npub const {upper}_{}: &str = include_str!(concat!(env!(\"OUT_DIR\"), \"/{name}\"));",
                src.stem,
                target.to_uppercase()
            );
        }
        let variants: Vec<String> = src
            .targets
            .iter()
            .map(|t| format!("PtxVariant {{ target: Target::{}, ptx: {upper}_{} }}", camel(t), t.to_uppercase()))
            .collect();
        let _ = writeln!(
            code,
            "/// Every variant of `cuda/{0}.cu`.\npub const {upper}: PtxModule = PtxModule {{ name: \"{0}\", variants: &[{1}] }};\n",
            src.stem,
            variants.join(", ")
        );
    }
    let all: Vec<String> = sources.iter().map(|s| format!("&{}", s.stem.to_uppercase())).collect();
    let _ = writeln!(
        code,
        "/// Every module, in file-name order.\npub const MODULES: &[&PtxModule] = &[{}];",
        all.join(", ")
    );
    fs::write(out_dir.join("ptx_modules.rs"), code).expect("write ptx_modules.rs");
}

fn camel(target: &str) -> String {
    // sm_90a -> Sm90a
    let digits = target.trim_start_matches("sm_");
    format!("Sm{digits}")
}
