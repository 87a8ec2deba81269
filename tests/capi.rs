//! The C ABI as another engine sees it: the committed header is what cbindgen makes of
//! src/kernels/capi.rs today, and a C program (tests/c/capi_test.c) built with the
//! system C compiler against that header and the static library passes its checks
//! (the error paths everywhere; real calls with checked results where a GPU is), and the
//! PyTorch script's ctypes declarations lay the ABI's structs out as Rust (and so C) does.
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

/// Runs `body` in python3 with bench/pytorch/side_by_side.py imported as `s` (and
/// `ctypes`, `sys`), and returns what it printed.
fn with_script(root: &Path, body: &str) -> String {
    let script = format!("import ctypes, sys; sys.path.insert(0, sys.argv[1]); import side_by_side as s\n{body}");
    let out = Command::new("python3")
        .args(["-c", &script])
        .arg(root.join("bench/pytorch"))
        .output()
        .expect("run python3 (the side-by-side script's interpreter)");
    assert!(out.status.success(), "python3 failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `(field, offset)` of every field, then `("sizeof", size)`, as Python's ctypes lays out
/// bench/pytorch/side_by_side.py's copy of the struct.
fn ctypes_layout(root: &Path, class: &str) -> Vec<(String, usize)> {
    let body = format!(
        "c = s.{class}\n\
         for name, _ in c._fields_: print(name, getattr(c, name).offset)\n\
         print('sizeof', ctypes.sizeof(c))"
    );
    with_script(root, &body)
        .lines()
        .map(|l| {
            let (name, off) = l.split_once(' ').expect("name offset");
            (name.to_string(), off.parse().expect("offset"))
        })
        .collect()
}

macro_rules! layout {
    ($ty:ty { $($field:ident),* $(,)? }) => {{
        let mut v = vec![$((stringify!($field).to_string(), std::mem::offset_of!($ty, $field))),*];
        v.push(("sizeof".to_string(), std::mem::size_of::<$ty>()));
        v
    }};
}

/// The PyTorch script declares the ABI's structs again for ctypes; a field out of place
/// there would hand the kernels wrong pointers on the GPU, so the layouts are compared
/// with the Rust definitions (which the header is generated from) here, without a GPU.
#[test]
fn ctypes_structs_match_the_abi() {
    use mixed_precision::capi::{mp_adam_config, mp_adam_tensor, mp_gemm_args};
    let root = root();
    let gemm = layout!(mp_gemm_args {
        m,
        n,
        k,
        trans_a,
        trans_b,
        lda,
        ldb,
        ldc,
        a,
        b,
        c,
        c_dtype,
        alpha,
        beta,
        bias,
        bias_dtype,
        pre,
        activation,
        ab_dtype
    });
    assert_eq!(ctypes_layout(&root, "GemmArgs"), gemm);
    let cfg = layout!(mp_adam_config { lr, beta1, beta2, eps, weight_decay, mode });
    assert_eq!(ctypes_layout(&root, "AdamConfig"), cfg);
    let tensor = layout!(mp_adam_tensor { params, grads, m, v, copy, len });
    assert_eq!(ctypes_layout(&root, "AdamTensor"), tensor);
}

/// Parameter kinds (ptr, u64, i32, f64) of every function the header declares.
fn header_signatures(header: &str) -> Vec<(String, Vec<String>)> {
    let body = header.split("extern \"C\" {").nth(1).expect("the header's extern \"C\" block");
    let body: String = body.lines().filter(|l| !l.trim_start().starts_with("//") && !l.starts_with('#')).collect();
    body.split(';')
        .filter_map(|decl| {
            let (head, params) = decl.split_once('(')?;
            let name = head.split_whitespace().last()?.trim_start_matches('*').to_string();
            let params = params.trim_end().trim_end_matches(')');
            let kinds = params
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty() && *p != "void")
                .map(|p| {
                    let kind = if p.contains('*') || p.starts_with("CUstream") {
                        "ptr"
                    } else if p.starts_with("uint64_t") {
                        "u64"
                    } else if p.starts_with("int32_t") {
                        "i32"
                    } else if p.starts_with("double") {
                        "f64"
                    } else {
                        panic!("unclassified parameter `{p}` of {name}")
                    };
                    kind.to_string()
                })
                .collect();
            Some((name, kinds))
        })
        .collect()
}

/// Every function the script calls has, in its ctypes argtypes, the header's parameter
/// count and kinds.
#[test]
fn ctypes_signatures_match_the_header() {
    let root = root();
    let header = std::fs::read_to_string(root.join("include/mixed_precision.h")).expect("read the header");
    let declared = header_signatures(&header);
    assert!(declared.len() >= 14, "parsed only {declared:?}");
    let body = "def kind(t):\n\
                \x20   if t is ctypes.c_void_p or hasattr(t, '_type_') and t.__name__.startswith('LP_'): return 'ptr'\n\
                \x20   return {ctypes.c_uint64: 'u64', ctypes.c_int32: 'i32', ctypes.c_double: 'f64'}[t]\n\
                for name, args in s.SIGNATURES.items(): print(name, *[kind(a) for a in args])";
    let stdout = with_script(&root, body);
    assert!(stdout.lines().count() >= 8, "{stdout}");
    for line in stdout.lines() {
        let mut words = line.split_whitespace();
        let name = words.next().expect("name");
        let kinds: Vec<String> = words.map(String::from).collect();
        let want = declared.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{name} is not in the header"));
        assert_eq!(kinds, want.1, "{name}: the script's argtypes against the header");
    }
}
