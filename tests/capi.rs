//! The C ABI as another engine sees it: the committed header is what cbindgen makes of
//! src/kernels/capi.rs today, and a C program (tests/c/capi_test.c) built with the
//! system C compiler against that header and the static library passes its checks
//! (the error paths everywhere; real calls with checked results where a GPU is).
//!
//! `MIXED_PRECISION_BLESS=1` rewrites include/mixed_precision.h instead of comparing.
//! `MIXED_PRECISION_ROOT` points at the sources when this test runs away from them (the
//! GPU bundle), and `MIXED_PRECISION_CAPI_C_BIN` at a C program built beforehand
//! (scripts/gpu-bundle.sh builds it here; the GPU machine has no compiler to rely on).

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    std::env::var_os("MIXED_PRECISION_ROOT").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

fn generated_header(root: &Path) -> String {
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    // The one source file that declares the ABI: parsed alone, so no cargo is needed.
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("src/kernels/capi.rs"))
        .generate()
        .expect("cbindgen could not generate the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("the header is UTF-8")
}

#[test]
fn header_is_current() {
    let root = root();
    let path = root.join("include/mixed_precision.h");
    let fresh = generated_header(&root);
    if std::env::var_os("MIXED_PRECISION_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("write the header");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "{} is stale: it differs from what cbindgen generates from src/kernels/capi.rs; \
         run `MIXED_PRECISION_BLESS=1 cargo test --test capi header_is_current` and commit it",
        path.display()
    );
}

/// The static library cargo built with this test: in target/<profile>/deps/ beside the
/// test executable (cargo test), or uplifted to target/<profile>/ (cargo build).
fn static_library() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let candidates: Vec<PathBuf> =
        exe.ancestors().skip(1).take(2).map(|dir| dir.join("libmixed_precision.a")).collect();
    candidates.iter().find(|lib| lib.is_file()).cloned().unwrap_or_else(|| {
        panic!("libmixed_precision.a not found in {candidates:?}: the [lib] crate-type must include staticlib")
    })
}

/// Compiles tests/c/capi_test.c with the system C compiler (`CC`, else `cc`), warnings
/// as errors, against the committed header and the static library.
fn build_c_program(root: &Path) -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("capi_test");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-std=c11", "-D_GNU_SOURCE", "-O1", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join("tests/c/capi_test.c"))
        .arg(static_library())
        // What a Rust staticlib needs from the system on Linux
        // (`rustc --print native-static-libs`).
        .args(["-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl", "-lc"])
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("could not run the C compiler `{cc}`: {e}"));
    assert!(status.success(), "`{cc}` failed to build tests/c/capi_test.c ({status})");
    out
}

#[test]
fn c_program() {
    let root = root();
    let program = match std::env::var_os("MIXED_PRECISION_CAPI_C_BIN") {
        Some(p) => PathBuf::from(p),
        None => build_c_program(&root),
    };
    let out = Command::new(&program).output().unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{stdout}");
    eprintln!("{stderr}");
    // A crash (a signal, no exit code) fails here as surely as a failed check.
    assert_eq!(out.status.code(), Some(0), "{} failed:\n{stdout}\n{stderr}", program.display());
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}
