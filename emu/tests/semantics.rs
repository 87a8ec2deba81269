//! Per-instruction-family semantics against a host reference, on edge values (NaN, +-inf,
//! -0, subnormals, f16 max and its rounding neighbours, f32 max, integer extremes).
//!
//! Each test launches one tiny kernel with one thread per case: the thread loads up to
//! three operands from 8-byte slots of a global buffer, applies the instruction under
//! test and stores its result to an 8-byte slot. Results are compared bit for bit with
//! the host's IEEE arithmetic (Rust's f32/f64 operations round to nearest even, as the
//! PTX `.rn` forms do); a NaN result is checked only for being a NaN there, and its bits
//! (the GPU's canonical f32 and f16 NaNs, f64 payloads) in the tests of the "NaN results"
//! section.
//!
//! Section numbers refer to the PTX ISA 8.x ("Parallel Thread Execution ISA"), chapter 9.7.

mod common;
use common::*;
use half::f16;

// ---------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------

/// What a case must produce.
#[derive(Clone, Copy, Debug)]
enum Want {
    Bits(u64),
    /// Any f32 NaN.
    Nan32,
    /// Any f64 NaN.
    Nan64,
    /// Any f16 NaN.
    Nan16,
    /// An f32 within `rel` of `value` (relative), or exactly `value` when it is 0, inf or NaN.
    Near32 {
        value: f32,
        rel: f64,
    },
    /// +0.0f or -0.0f (the sign of a zero the ISA does not pin down).
    AnyZero32,
}

fn w32(x: f32) -> Want {
    if x.is_nan() {
        Want::Nan32
    } else {
        Want::Bits(x.to_bits() as u64)
    }
}

fn w64(x: f64) -> Want {
    if x.is_nan() {
        Want::Nan64
    } else {
        Want::Bits(x.to_bits())
    }
}

fn ok(want: Want, got: u64) -> bool {
    match want {
        Want::Bits(b) => b == got,
        Want::Nan32 => got >> 32 == 0 && f32::from_bits(got as u32).is_nan(),
        Want::Nan64 => f64::from_bits(got).is_nan(),
        Want::Nan16 => got >> 16 == 0 && f16::from_bits(got as u16).is_nan(),
        Want::AnyZero32 => got == 0 || got == 0x8000_0000,
        Want::Near32 { value, rel } => {
            if got >> 32 != 0 {
                return false;
            }
            let g = f32::from_bits(got as u32);
            if value.is_nan() {
                return g.is_nan();
            }
            if value == 0.0 || value.is_infinite() {
                return g.to_bits() == value.to_bits();
            }
            ((g as f64 - value as f64) / value as f64).abs() <= rel
        }
    }
}

/// Register type for a PTX operand type (f16 values live in .b16 registers, as nvcc
/// declares them).
fn reg_ty(t: &str) -> &str {
    if t == "f16" {
        "b16"
    } else {
        t
    }
}

/// Runs `body` once per case. Operand j of a case is declared and loaded as `%a`, `%b`,
/// `%c` of type `tys[j]`; the body computes `%d` of type `tout`, which is stored. The
/// body may use the predicates `%p1`..`%p3` and the scratch registers `%t32`, `%t64`.
/// Returns each case's result slot (upper bytes beyond `tout` zero).
fn run(tys: &[&str], tout: &str, body: &str, cases: &[[u64; 3]]) -> Vec<u64> {
    let names = ["%a", "%b", "%c"];
    let mut decl = String::new();
    let mut load = String::new();
    for (j, t) in tys.iter().enumerate() {
        decl += &format!("\t.reg .{} {};\n", reg_ty(t), names[j]);
        load += &format!("\tld.global.{} {}, [%rd3+{}];\n", reg_ty(t), names[j], 8 * j);
    }
    let ptx = format!(
        "{HEADER}
.visible .entry k(.param .u64 k_in, .param .u64 k_out, .param .u32 k_n)
{{
\t.reg .pred %p<4>;
\t.reg .b32 %r<6>;
\t.reg .b64 %rd<6>;
\t.reg .b32 %t32;
\t.reg .b64 %t64;
{decl}\t.reg .{dt} %d;
\tld.param.u64 %rd1, [k_in];
\tld.param.u64 %rd2, [k_out];
\tld.param.u32 %r4, [k_n];
\tmov.u32 %r1, %tid.x;
\tmov.u32 %r2, %ctaid.x;
\tmov.u32 %r3, %ntid.x;
\tmad.lo.s32 %r1, %r2, %r3, %r1;
\tsetp.ge.u32 %p0, %r1, %r4;
\t@%p0 bra $L_done;
\tmul.wide.u32 %rd3, %r1, 24;
\tadd.s64 %rd3, %rd1, %rd3;
\tmul.wide.u32 %rd4, %r1, 8;
\tadd.s64 %rd4, %rd2, %rd4;
{load}\t{body}
\tst.global.{dt} [%rd4], %d;
$L_done:
\tret;
}}
",
        dt = reg_ty(tout)
    );
    let mut rig = Rig::new(&ptx);
    let flat: Vec<u64> = cases.iter().flatten().copied().collect();
    let pin = rig.upload(&flat);
    let pout = rig.upload(&vec![0u64; cases.len()]);
    let n = cases.len() as u32;
    rig.launch("k", [n.div_ceil(128), 1, 1], [128, 1, 1], &[&pin.to_le_bytes(), &pout.to_le_bytes(), &n.to_le_bytes()])
        .unwrap_or_else(|e| panic!("`{body}`: {}", e.report));
    rig.download(pout, cases.len())
}

/// Runs `body` over `cases` and checks every result against `want`, listing every
/// mismatch.
fn check(what: &str, tys: &[&str], tout: &str, body: &str, cases: &[[u64; 3]], want: impl Fn(&[u64; 3]) -> Want) {
    let got = run(tys, tout, body, cases);
    let mut bad = Vec::new();
    for (c, g) in cases.iter().zip(&got) {
        let w = want(c);
        if !ok(w, *g) {
            bad.push(format!("  {c:#x?} -> got {g:#x}, want {w:x?}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{what} (`{body}`): {} of {} cases wrong:\n{}",
        bad.len(),
        cases.len(),
        bad[..bad.len().min(24)].join("\n")
    );
}

fn pairs(v: &[u64]) -> Vec<[u64; 3]> {
    v.iter().flat_map(|&a| v.iter().map(move |&b| [a, b, 0])).collect()
}

fn triples(v: &[u64]) -> Vec<[u64; 3]> {
    v.iter().flat_map(|&a| v.iter().flat_map(move |&b| v.iter().map(move |&c| [a, b, c]))).collect()
}

fn singles(v: &[u64]) -> Vec<[u64; 3]> {
    v.iter().map(|&a| [a, 0, 0]).collect()
}

fn f(x: u64) -> f32 {
    f32::from_bits(x as u32)
}

fn d(x: u64) -> f64 {
    f64::from_bits(x)
}

/// Flushes an f32 subnormal to sign-preserving zero (`.ftz`, ISA 9.7.3 "Floating-point
/// instructions": "subnormal inputs and results are flushed to sign-preserving zero").
fn ftz(x: f32) -> f32 {
    if x.is_subnormal() {
        f32::from_bits(x.to_bits() & 0x8000_0000)
    } else {
        x
    }
}

/// `.sat` (ISA 9.7.3.1 add): clamps to [0.0, 1.0], NaN results to +0.0.
fn sat(x: f32) -> f32 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

// ---------------------------------------------------------------------------------------
// Edge values
// ---------------------------------------------------------------------------------------

const F32_EDGES: &[u32] = &[
    0x0000_0000, // +0
    0x8000_0000, // -0
    0x3f80_0000, // 1
    0xbf80_0000, // -1
    0x3fc0_0000, // 1.5
    0x4040_0000, // 3
    0x3dcc_cccd, // 0.1
    0x3f80_0001, // 1 + ulp
    0x0080_0000, // smallest normal
    0x00c0_0000, // 1.5 x smallest normal
    0x0000_0001, // smallest subnormal
    0x007f_ffff, // largest subnormal
    0x8000_0001, // -smallest subnormal
    0x7f7f_ffff, // f32 max
    0xff7f_ffff, // -f32 max
    0x7f80_0000, // +inf
    0xff80_0000, // -inf
    0x7fc0_0000, // NaN
    0xffc0_0001, // -NaN with a payload
    0x477f_e000, // 65504 (f16 max)
    0x3f00_0000, // 0.5
];

const F64_EDGES: &[u64] = &[
    0,
    0x8000_0000_0000_0000,
    0x3ff0_0000_0000_0000, // 1
    0xbff0_0000_0000_0000, // -1
    0x3ff8_0000_0000_0000, // 1.5
    0x4008_0000_0000_0000, // 3
    0x3fb9_9999_9999_999a, // 0.1
    0x3ff0_0000_0000_0001, // 1 + ulp
    0x0010_0000_0000_0000, // smallest normal
    0x0018_0000_0000_0000, // 1.5 x smallest normal
    0x0000_0000_0000_0001, // smallest subnormal
    0x000f_ffff_ffff_ffff, // largest subnormal
    0x8000_0000_0000_0001, // -smallest subnormal
    0x7fef_ffff_ffff_ffff, // max
    0xffef_ffff_ffff_ffff, // -max
    0x7ff0_0000_0000_0000, // +inf
    0xfff0_0000_0000_0000, // -inf
    0x7ff8_0000_0000_0000, // NaN
    0xfff8_0000_0000_0001, // -NaN
    0x47ef_ffff_e000_0000, // f32 max
];

fn f32_edges() -> Vec<u64> {
    F32_EDGES.iter().map(|&b| b as u64).collect()
}

// ---------------------------------------------------------------------------------------
// add / sub / mul / div / fma (ISA 9.7.3.1-9.7.3.8): IEEE round-to-nearest-even,
// .ftz, .sat
// ---------------------------------------------------------------------------------------

type Bin32 = fn(f32, f32) -> f32;

#[test]
fn f32_arithmetic_rn_ftz_sat() {
    let ops: [(&str, &str, Bin32); 4] =
        [("add", "", |a, b| a + b), ("sub", "", |a, b| a - b), ("mul", "", |a, b| a * b), ("div", ".rn", |a, b| a / b)];
    let cases = pairs(&f32_edges());
    for (op, rn, host) in ops {
        for (mods, flush, clamp) in
            [("", false, false), (".ftz", true, false), (".sat", false, true), (".ftz.sat", true, true)]
        {
            let body = format!("{op}{rn}{mods}.f32 %d, %a, %b;");
            check(&body, &["f32", "f32"], "f32", &body, &cases, |c| {
                let (mut a, mut b) = (f(c[0]), f(c[1]));
                if flush {
                    (a, b) = (ftz(a), ftz(b));
                }
                let mut r = host(a, b);
                if clamp {
                    r = sat(r);
                }
                if flush {
                    r = ftz(r);
                }
                // The sign of a clamped zero is not specified.
                if clamp && r == 0.0 {
                    return Want::AnyZero32;
                }
                w32(r)
            });
        }
    }
}

#[test]
fn f32_arithmetic_hand_checked_edges() {
    // Values checked by hand, independent of the host's arithmetic.
    let cases: &[(&str, u32, u32, u32)] = &[
        ("add.f32", 0x7f7f_ffff, 0x7f7f_ffff, 0x7f80_0000), // max + max overflows to inf
        ("add.f32", 0x7f80_0000, 0xff80_0000, 0x7fff_ffff), // inf - inf is NaN (any)
        ("add.f32", 0x0000_0000, 0x8000_0000, 0x0000_0000), // +0 + -0 = +0
        ("add.f32", 0x8000_0000, 0x8000_0000, 0x8000_0000), // -0 + -0 = -0
        ("sub.f32", 0x3f80_0000, 0x3f80_0000, 0x0000_0000), // x - x = +0 in rn
        ("mul.f32", 0x0080_0000, 0x3f00_0000, 0x0040_0000), // min normal / 2: subnormal
        ("mul.ftz.f32", 0x0080_0000, 0x3f00_0000, 0x0000_0000), // ... flushed
        ("mul.ftz.f32", 0x8080_0000, 0x3f00_0000, 0x8000_0000), // ... to sign-preserving zero
        ("mul.ftz.f32", 0x0000_0001, 0x4b00_0000, 0x0000_0000), // subnormal input flushed before the multiply
        ("mul.f32", 0x0000_0001, 0x4b00_0000, 0x0080_0000), // 2^-149 * 2^23 = 2^-126 exactly
        ("add.sat.f32", 0x3f80_0000, 0x3f80_0000, 0x3f80_0000), // 2 clamps to 1
        ("add.sat.f32", 0x7fc0_0000, 0x3f80_0000, 0x0000_0000), // NaN clamps to +0
        ("div.rn.f32", 0x3f80_0000, 0x0000_0000, 0x7f80_0000), // 1 / +0 = inf
        ("div.rn.f32", 0x3f80_0000, 0x8000_0000, 0xff80_0000), // 1 / -0 = -inf
        ("div.rn.ftz.f32", 0x3f80_0000, 0x8000_0001, 0xff80_0000), // 1 / -subnormal = -inf with ftz
        ("div.rn.f32", 0x3f80_0000, 0x4040_0000, 0x3eaa_aaab), // 1/3 rounded to nearest
    ];
    for &(op, a, b, want) in cases {
        let body = format!("{op} %d, %a, %b;");
        let w = if f32::from_bits(want).is_nan() { Want::Nan32 } else { Want::Bits(want as u64) };
        check(op, &["f32", "f32"], "f32", &body, &[[a as u64, b as u64, 0]], |_| w);
    }
}

#[test]
fn f32_directed_rounding_hand_checked() {
    // ISA 9.7.3: .rz toward zero, .rm toward -inf, .rp toward +inf, one rounding of the
    // exact result; an exact zero sum of opposite signs is -0 under .rm only (IEEE 754
    // 6.3). Values worked by hand: 2^-30 = 0x3080_0000, 1 + 2^-23 = 0x3f80_0001.
    let two: &[(&str, u32, u32, u32)] = &[
        ("add.rz.f32", 0x3f80_0000, 0x3080_0000, 0x3f80_0000), // 1 + 2^-30 -> 1
        ("add.rp.f32", 0x3f80_0000, 0x3080_0000, 0x3f80_0001), // -> 1 + 2^-23
        ("add.rm.f32", 0x3f80_0000, 0x3080_0000, 0x3f80_0000),
        ("add.rm.f32", 0xbf80_0000, 0xb080_0000, 0xbf80_0001), // -1 - 2^-30 -> -(1 + 2^-23)
        ("add.rz.f32", 0xbf80_0000, 0xb080_0000, 0xbf80_0000),
        ("sub.rp.f32", 0x3f80_0000, 0xb080_0000, 0x3f80_0001), // 1 - (-2^-30)
        ("add.rm.f32", 0x3f80_0000, 0xbf80_0000, 0x8000_0000), // 1 + (-1) = -0 under .rm
        ("add.rz.f32", 0x3f80_0000, 0xbf80_0000, 0x0000_0000), // ... +0 otherwise
        ("add.rp.f32", 0x8000_0000, 0x8000_0000, 0x8000_0000), // -0 + -0 = -0
        ("mul.rz.f32", 0x7f7f_ffff, 0x4000_0000, 0x7f7f_ffff), // max * 2: overflow to max
        ("mul.rp.f32", 0x7f7f_ffff, 0x4000_0000, 0x7f80_0000), // ... to inf
        ("mul.rm.f32", 0xff7f_ffff, 0x4000_0000, 0xff80_0000), // -max * 2 to -inf
        ("mul.rz.f32", 0xff7f_ffff, 0x4000_0000, 0xff7f_ffff), // ... to -max
        ("mul.rp.f32", 0x0000_0001, 0x3f00_0000, 0x0000_0001), // 2^-150: up to 2^-149
        ("mul.rm.f32", 0x0000_0001, 0x3f00_0000, 0x0000_0000), // ... down to +0
        ("mul.rm.f32", 0x8000_0001, 0x3f00_0000, 0x8000_0001), // -2^-150 down to -2^-149
        ("mul.rz.f32", 0x7f80_0000, 0x3f00_0000, 0x7f80_0000), // inf stays inf
    ];
    for &(op, a, b, want) in two {
        let body = format!("{op} %d, %a, %b;");
        check(op, &["f32", "f32"], "f32", &body, &[[a as u64, b as u64, 0]], |_| Want::Bits(want as u64));
    }
    // (1 + 2^-23)^2 - 1 = 2^-22 + 2^-46: half an ulp above 2^-22, so .rn ties to 2^-22.
    let three: &[(&str, u32)] = &[
        ("fma.rn.f32", 0x3480_0000),
        ("fma.rp.f32", 0x3480_0001),
        ("fma.rm.f32", 0x3480_0000),
        ("fma.rz.f32", 0x3480_0000),
    ];
    for &(op, want) in three {
        let body = format!("{op} %d, %a, %b, %c;");
        let case = [0x3f80_0001u64, 0x3f80_0001, 0xbf80_0000];
        check(op, &["f32", "f32", "f32"], "f32", &body, &[case], |_| Want::Bits(want as u64));
    }
}

#[test]
fn f32_fma_rn_ftz_sat() {
    let vals: Vec<u64> = [
        0x0000_0000u32,
        0x8000_0000,
        0x3f80_0000,
        0xbf80_0000,
        0x3f80_0001,
        0x3f7f_ffff,
        0x0080_0000,
        0x0000_0001,
        0x7f7f_ffff,
        0x7f80_0000,
        0xff80_0000,
        0x7fc0_0000,
        0x4040_0000,
    ]
    .iter()
    .map(|&b| b as u64)
    .collect();
    let cases = triples(&vals);
    for (mods, flush, clamp) in [("", false, false), (".ftz", true, false), (".sat", false, true)] {
        let body = format!("fma.rn{mods}.f32 %d, %a, %b, %c;");
        check(&body, &["f32", "f32", "f32"], "f32", &body, &cases, |c| {
            let (mut a, mut b, mut e) = (f(c[0]), f(c[1]), f(c[2]));
            if flush {
                (a, b, e) = (ftz(a), ftz(b), ftz(e));
            }
            let mut r = a.mul_add(b, e);
            if clamp {
                r = sat(r);
                if r == 0.0 {
                    return Want::AnyZero32;
                }
            }
            if flush {
                r = ftz(r);
            }
            w32(r)
        });
    }
    // Single rounding: (1 + 2^-23)(1 - 2^-24) - 1 = 2^-24 - 2^-47 exactly (representable
    // in f32), where a separate multiply would round the product to 1 and give 0.
    let exact = 2f64.powi(-24) - 2f64.powi(-47);
    assert_eq!(exact as f32 as f64, exact);
    let body = "fma.rn.f32 %d, %a, %b, %c;";
    check(
        "fma single rounding",
        &["f32", "f32", "f32"],
        "f32",
        body,
        &[[0x3f80_0001, 0x3f7f_ffff, 0xbf80_0000]],
        |_| Want::Bits((exact as f32).to_bits() as u64),
    );
}

type Bin64 = fn(f64, f64) -> f64;

#[test]
fn f64_arithmetic_rn() {
    let ops: [(&str, Bin64); 4] = [
        ("add.f64", |a, b| a + b),
        ("sub.rn.f64", |a, b| a - b),
        ("mul.rn.f64", |a, b| a * b),
        ("div.rn.f64", |a, b| a / b),
    ];
    let cases = pairs(F64_EDGES);
    for (op, host) in ops {
        let body = format!("{op} %d, %a, %b;");
        check(op, &["f64", "f64"], "f64", &body, &cases, |c| w64(host(d(c[0]), d(c[1]))));
    }
    let vals: Vec<u64> =
        F64_EDGES.iter().step_by(2).copied().chain([0x3ff0_0000_0000_0001, 0x3fef_ffff_ffff_ffff]).collect();
    let body = "fma.rn.f64 %d, %a, %b, %c;";
    check("fma.rn.f64", &["f64", "f64", "f64"], "f64", body, &triples(&vals), |c| {
        w64(d(c[0]).mul_add(d(c[1]), d(c[2])))
    });
}

// ---------------------------------------------------------------------------------------
// rcp, sqrt (ISA 9.7.3.9-10, 9.7.4.x), ex2.approx (ISA 9.7.3.17)
// ---------------------------------------------------------------------------------------

#[test]
fn rcp_and_sqrt_rn() {
    let c32 = singles(&f32_edges());
    check("rcp.rn.f32", &["f32"], "f32", "rcp.rn.f32 %d, %a;", &c32, |c| w32(1.0 / f(c[0])));
    check("rcp.rn.ftz.f32", &["f32"], "f32", "rcp.rn.ftz.f32 %d, %a;", &c32, |c| w32(ftz(1.0 / ftz(f(c[0])))));
    check("sqrt.rn.f32", &["f32"], "f32", "sqrt.rn.f32 %d, %a;", &c32, |c| w32(f(c[0]).sqrt()));
    check("sqrt.rn.ftz.f32", &["f32"], "f32", "sqrt.rn.ftz.f32 %d, %a;", &c32, |c| w32(ftz(ftz(f(c[0])).sqrt())));
    let c64 = singles(F64_EDGES);
    check("rcp.rn.f64", &["f64"], "f64", "rcp.rn.f64 %d, %a;", &c64, |c| w64(1.0 / d(c[0])));
    check("sqrt.rn.f64", &["f64"], "f64", "sqrt.rn.f64 %d, %a;", &c64, |c| w64(d(c[0]).sqrt()));
    // Hand-checked: sqrt(-0) = -0, sqrt(-1) = NaN, 1/max is subnormal (flushed with ftz).
    check("sqrt -0", &["f32"], "f32", "sqrt.rn.f32 %d, %a;", &[[0x8000_0000, 0, 0]], |_| Want::Bits(0x8000_0000));
    check("sqrt -1", &["f32"], "f32", "sqrt.rn.f32 %d, %a;", &[[0xbf80_0000, 0, 0]], |_| Want::Nan32);
    check("rcp max", &["f32"], "f32", "rcp.rn.f32 %d, %a;", &[[0x7f7f_ffff, 0, 0]], |_| Want::Bits(0x0020_0000));
    check("rcp.ftz max", &["f32"], "f32", "rcp.rn.ftz.f32 %d, %a;", &[[0x7f7f_ffff, 0, 0]], |_| Want::Bits(0));
}

#[test]
fn rcp_approx_ftz_within_one_ulp() {
    // ISA 9.7.3.9 rcp.approx.f32: "maximum ulp error is 1 across the full range of
    // inputs"; .ftz flushes subnormal inputs and results (1/-subnormal = -inf).
    let mut vals = f32_edges();
    vals.extend([0x4049_0fdbu64, 0x3e80_0001, 0x7e80_0000, 0x0100_0000, 0xc2f6_e979]);
    check("rcp.approx.ftz.f32", &["f32"], "f32", "rcp.approx.ftz.f32 %d, %a;", &singles(&vals), |c| {
        let r = ftz(1.0 / ftz(f(c[0])));
        if r.is_nan() || r == 0.0 || r.is_infinite() {
            w32(r)
        } else {
            Want::Near32 { value: r, rel: 2f64.powi(-23) }
        }
    });
}

#[test]
fn ex2_approx_within_the_isa_error() {
    // ISA 9.7.3.17 ex2: "ex2.approx.f32 implements a fast approximation to 2^a", with a
    // maximum relative error of 2^-22 over the full range (2 ulp); ex2(-inf) = +0,
    // ex2(+inf) = +inf, ex2(NaN) = NaN, ex2(+-0) = 1. `.ftz` flushes subnormal inputs
    // (ex2 of one is 1) and results (2^-130 becomes +0).
    let vals: Vec<u64> = [
        0.0f32,
        -0.0,
        1.0,
        -1.0,
        0.5,
        -0.5,
        10.3,
        -10.3,
        3.25,
        127.9,
        128.0,
        200.0,
        -126.0,
        -125.5,
        -130.0,
        -149.0,
        -160.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ]
    .iter()
    .map(|x| x.to_bits() as u64)
    .chain([0x0000_0001, 0x807f_ffff])
    .collect();
    for (op, flush) in [("ex2.approx.f32", false), ("ex2.approx.ftz.f32", true)] {
        let body = format!("{op} %d, %a;");
        check(op, &["f32"], "f32", &body, &singles(&vals), |c| {
            let x = if flush { ftz(f(c[0])) } else { f(c[0]) };
            let mut r = (x as f64).exp2() as f32;
            if flush {
                r = ftz(r);
            }
            if r.is_nan() || r == 0.0 || r.is_infinite() || r.is_subnormal() {
                // Exact cases: the subnormal inputs here (-130, -149) give exact powers of 2.
                w32(r)
            } else {
                Want::Near32 { value: r, rel: 2f64.powi(-22) }
            }
        });
    }
}

// ---------------------------------------------------------------------------------------
// abs, neg, min, max, copysign (ISA 9.7.3.11-14, 9.7.3.3 copysign)
// ---------------------------------------------------------------------------------------

#[test]
fn abs_neg() {
    let c32 = singles(&f32_edges());
    // A NaN input gives a NaN (ISA: "NaN inputs yield an unspecified NaN"); otherwise
    // only the sign changes, -0 included.
    check("abs.f32", &["f32"], "f32", "abs.f32 %d, %a;", &c32, |c| w32(f(c[0]).abs()));
    check("neg.f32", &["f32"], "f32", "neg.f32 %d, %a;", &c32, |c| w32(-f(c[0])));
    check("abs.ftz.f32", &["f32"], "f32", "abs.ftz.f32 %d, %a;", &c32, |c| w32(ftz(f(c[0])).abs()));
    check("neg.ftz.f32", &["f32"], "f32", "neg.ftz.f32 %d, %a;", &c32, |c| w32(-ftz(f(c[0]))));
    let c64 = singles(F64_EDGES);
    check("abs.f64", &["f64"], "f64", "abs.f64 %d, %a;", &c64, |c| w64(d(c[0]).abs()));
    check("neg.f64", &["f64"], "f64", "neg.f64 %d, %a;", &c64, |c| w64(-d(c[0])));
    check("neg -0", &["f32"], "f32", "neg.f32 %d, %a;", &[[0, 0, 0]], |_| Want::Bits(0x8000_0000));
    check("abs -0", &["f32"], "f32", "abs.f32 %d, %a;", &[[0x8000_0000, 0, 0]], |_| Want::Bits(0));
}

/// min/max per ISA 9.7.3.11-12: a NaN operand gives the other operand, two NaNs give
/// NaN, and -0.0 is less than +0.0.
fn minmax_ref(a: f64, b: f64, min: bool) -> Option<f64> {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => None,
        (true, false) => Some(b),
        (false, true) => Some(a),
        _ if a == 0.0 && b == 0.0 => {
            let neg = a.is_sign_negative() || b.is_sign_negative();
            let pos = a.is_sign_positive() || b.is_sign_positive();
            Some(if min {
                if neg {
                    -0.0
                } else {
                    0.0
                }
            } else if pos {
                0.0
            } else {
                -0.0
            })
        }
        _ => Some(if min == (a < b) { a } else { b }),
    }
}

#[test]
fn min_max() {
    let cases = pairs(&f32_edges());
    for (op, min, flush) in
        [("min.f32", true, false), ("max.f32", false, false), ("min.ftz.f32", true, true), ("max.ftz.f32", false, true)]
    {
        let body = format!("{op} %d, %a, %b;");
        check(op, &["f32", "f32"], "f32", &body, &cases, |c| {
            let (mut a, mut b) = (f(c[0]), f(c[1]));
            if flush {
                (a, b) = (ftz(a), ftz(b));
            }
            match minmax_ref(a as f64, b as f64, min) {
                None => Want::Nan32,
                Some(r) => w32(r as f32),
            }
        });
    }
    let cases = pairs(F64_EDGES);
    for (op, min) in [("min.f64", true), ("max.f64", false)] {
        let body = format!("{op} %d, %a, %b;");
        check(op, &["f64", "f64"], "f64", &body, &cases, |c| match minmax_ref(d(c[0]), d(c[1]), min) {
            None => Want::Nan64,
            Some(r) => w64(r),
        });
    }
    // Hand-checked: min(-0, +0) = -0 in either order, max = +0; min(NaN, 1) = 1.
    check(
        "min -0 +0",
        &["f32", "f32"],
        "f32",
        "min.f32 %d, %a, %b;",
        &[[0, 0x8000_0000, 0], [0x8000_0000, 0, 0]],
        |_| Want::Bits(0x8000_0000),
    );
    check(
        "max -0 +0",
        &["f32", "f32"],
        "f32",
        "max.f32 %d, %a, %b;",
        &[[0, 0x8000_0000, 0], [0x8000_0000, 0, 0]],
        |_| Want::Bits(0),
    );
    check(
        "min NaN 1",
        &["f32", "f32"],
        "f32",
        "min.f32 %d, %a, %b;",
        &[[0x7fc0_0000, 0x3f80_0000, 0], [0x3f80_0000, 0xffc0_0001, 0]],
        |_| Want::Bits(0x3f80_0000),
    );
}

#[test]
fn copysign_takes_the_sign_of_the_first_operand() {
    // ISA 9.7.3.3: "copysign.type d, a, b: copy sign bit of a into value of b".
    let cases = pairs(&f32_edges());
    check("copysign.f32", &["f32", "f32"], "f32", "copysign.f32 %d, %a, %b;", &cases, |c| {
        Want::Bits(((c[0] as u32 & 0x8000_0000) | (c[1] as u32 & 0x7fff_ffff)) as u64)
    });
    check("copysign.f64", &["f64", "f64"], "f64", "copysign.f64 %d, %a, %b;", &pairs(F64_EDGES), |c| {
        Want::Bits((c[0] & (1 << 63)) | (c[1] & !(1 << 63)))
    });
    // Hand-checked: copysign(-1, 2) = -2 and copysign(3, -0.5) = 0.5.
    check(
        "copysign -1 2",
        &["f32", "f32"],
        "f32",
        "copysign.f32 %d, %a, %b;",
        &[[0xbf80_0000, 0x4000_0000, 0]],
        |_| Want::Bits(0xc000_0000),
    );
    check(
        "copysign 3 -0.5",
        &["f32", "f32"],
        "f32",
        "copysign.f32 %d, %a, %b;",
        &[[0x4040_0000, 0xbf00_0000, 0]],
        |_| Want::Bits(0x3f00_0000),
    );
}

// ---------------------------------------------------------------------------------------
// setp (ISA 9.7.3.x / 9.7.7.1, "Floating point comparison operators"), selp
// ---------------------------------------------------------------------------------------

/// The comparisons of ISA table "Floating-point comparison operators", written from
/// the host's ordered operators (false on NaN) so that they do not share logic with the
/// emulator's (hence the NaN test `a == a` and the negated comparisons, on purpose).
#[allow(clippy::eq_op, clippy::neg_cmp_op_on_partial_ord, clippy::nonminimal_bool, clippy::double_comparisons)]
fn fcmp(c: &str, a: f64, b: f64) -> bool {
    let num = a == a && b == b;
    match c {
        "eq" => a == b,
        "ne" => a < b || a > b,
        "lt" => a < b,
        "le" => a <= b,
        "gt" => a > b,
        "ge" => a >= b,
        "equ" => !(a < b || a > b),
        "neu" => !(a == b),
        "ltu" => !(a >= b),
        "leu" => !(a > b),
        "gtu" => !(a <= b),
        "geu" => !(a < b),
        "num" => num,
        "nan" => !num,
        _ => unreachable!(),
    }
}

const FCMPS: [&str; 14] = ["eq", "ne", "lt", "le", "gt", "ge", "equ", "neu", "ltu", "leu", "gtu", "geu", "num", "nan"];

#[test]
fn setp_float_every_comparison() {
    let c32 = pairs(&f32_edges());
    let c64 = pairs(F64_EDGES);
    for c in FCMPS {
        let body = format!("setp.{c}.f32 %p1, %a, %b; selp.u32 %d, 1, 0, %p1;");
        check(&body, &["f32", "f32"], "u32", &body, &c32, |x| {
            Want::Bits(fcmp(c, f(x[0]) as f64, f(x[1]) as f64) as u64)
        });
        let body = format!("setp.{c}.f64 %p1, %a, %b; selp.u32 %d, 1, 0, %p1;");
        check(&body, &["f64", "f64"], "u32", &body, &c64, |x| Want::Bits(fcmp(c, d(x[0]), d(x[1])) as u64));
        let body = format!("setp.{c}.ftz.f32 %p1, %a, %b; selp.u32 %d, 1, 0, %p1;");
        check(&body, &["f32", "f32"], "u32", &body, &c32, |x| {
            Want::Bits(fcmp(c, ftz(f(x[0])) as f64, ftz(f(x[1])) as f64) as u64)
        });
    }
    // Hand-checked: NaN != NaN is false for ne and true for neu; -0 == +0.
    let nan = [[0x7fc0_0000, 0x7fc0_0000, 0]];
    check("ne NaN", &["f32", "f32"], "u32", "setp.ne.f32 %p1, %a, %b; selp.u32 %d, 1, 0, %p1;", &nan, |_| {
        Want::Bits(0)
    });
    check("neu NaN", &["f32", "f32"], "u32", "setp.neu.f32 %p1, %a, %b; selp.u32 %d, 1, 0, %p1;", &nan, |_| {
        Want::Bits(1)
    });
    check(
        "eq -0 +0",
        &["f32", "f32"],
        "u32",
        "setp.eq.f32 %p1, %a, %b; selp.u32 %d, 1, 0, %p1;",
        &[[0, 0x8000_0000, 0]],
        |_| Want::Bits(1),
    );
    // With .ftz a negative subnormal equals zero; without, it is less.
    let sub = [[0x8000_0001, 0, 0]];
    check("lt -sub 0", &["f32", "f32"], "u32", "setp.lt.f32 %p1, %a, %b; selp.u32 %d, 1, 0, %p1;", &sub, |_| {
        Want::Bits(1)
    });
    check(
        "lt.ftz -sub 0",
        &["f32", "f32"],
        "u32",
        "setp.lt.ftz.f32 %p1, %a, %b; selp.u32 %d, 1, 0, %p1;",
        &sub,
        |_| Want::Bits(0),
    );
}

const I32_EDGES: &[u64] =
    &[0, 1, 2, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 0xffff_fffe, 0x1234_5678, 31, 32, 33, 40, 64];
const I64_EDGES: &[u64] = &[
    0,
    1,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
    0xffff_ffff,
    0x1_0000_0000,
    0x0123_4567_89ab_cdef,
    63,
    64,
    100,
];

fn icmp<T: Ord>(c: &str, a: T, b: T) -> bool {
    match c {
        "eq" => a == b,
        "ne" => a != b,
        "lt" | "lo" => a < b,
        "le" | "ls" => a <= b,
        "gt" | "hi" => a > b,
        "ge" | "hs" => a >= b,
        _ => unreachable!(),
    }
}

#[test]
fn setp_integer_signed_vs_unsigned() {
    let c32 = pairs(I32_EDGES);
    let c64 = pairs(I64_EDGES);
    for c in ["eq", "ne", "lt", "le", "gt", "ge"] {
        let body = format!("setp.{c}.s32 %p1, %a, %b; selp.u32 %d, 1, 0, %p1;");
        check(&body, &["s32", "s32"], "u32", &body, &c32, |x| {
            Want::Bits(icmp(c, x[0] as u32 as i32, x[1] as u32 as i32) as u64)
        });
        let body = format!("setp.{c}.u32 %p1, %a, %b; selp.u32 %d, 1, 0, %p1;");
        check(&body, &["u32", "u32"], "u32", &body, &c32, |x| Want::Bits(icmp(c, x[0] as u32, x[1] as u32) as u64));
        let body = format!("setp.{c}.s64 %p1, %a, %b; selp.u32 %d, 1, 0, %p1;");
        check(&body, &["s64", "s64"], "u32", &body, &c64, |x| Want::Bits(icmp(c, x[0] as i64, x[1] as i64) as u64));
        let body = format!("setp.{c}.u64 %p1, %a, %b; selp.u32 %d, 1, 0, %p1;");
        check(&body, &["u64", "u64"], "u32", &body, &c64, |x| Want::Bits(icmp(c, x[0], x[1]) as u64));
    }
    // lo/ls/hi/hs are the unsigned spellings.
    for c in ["lo", "ls", "hi", "hs"] {
        let body = format!("setp.{c}.u32 %p1, %a, %b; selp.u32 %d, 1, 0, %p1;");
        check(&body, &["u32", "u32"], "u32", &body, &c32, |x| Want::Bits(icmp(c, x[0] as u32, x[1] as u32) as u64));
    }
}

#[test]
fn selp() {
    let cases: Vec<[u64; 3]> = [(0x1234_5678u64, 0x9abc_def0u64), (0xffff_ffff, 0)]
        .iter()
        .flat_map(|&(a, b)| [[a, b, 0], [a, b, 1], [a, b, 7]])
        .collect();
    check(
        "selp.b32",
        &["b32", "b32", "u32"],
        "b32",
        "setp.ne.u32 %p1, %c, 0; selp.b32 %d, %a, %b, %p1;",
        &cases,
        |c| Want::Bits(if c[2] != 0 { c[0] } else { c[1] }),
    );
    let cases: Vec<[u64; 3]> =
        [[0x7ff8_0000_0000_0000, 0xbff0_0000_0000_0000, 1], [0x7ff8_0000_0000_0000, 0xbff0_0000_0000_0000, 0]].to_vec();
    check(
        "selp.f64",
        &["f64", "f64", "u32"],
        "f64",
        "setp.ne.u32 %p1, %c, 0; selp.f64 %d, %a, %b, %p1;",
        &cases,
        |c| Want::Bits(if c[2] != 0 { c[0] } else { c[1] }),
    );
    check(
        "selp.u16",
        &["u16", "u16", "u32"],
        "u16",
        "setp.ne.u32 %p1, %c, 0; selp.u16 %d, %a, %b, %p1;",
        &[[0x8001, 0x7ffe, 1], [0x8001, 0x7ffe, 0]],
        |c| Want::Bits(if c[2] != 0 { c[0] } else { c[1] }),
    );
}

// ---------------------------------------------------------------------------------------
// cvt (ISA 9.7.9.21 cvt, 9.7.9.21.1 "Rounding modifiers"): float <-> float, float ->
// int with integer rounding and saturation, int -> int, int -> float
// ---------------------------------------------------------------------------------------

#[test]
fn cvt_f32_to_f16_rounds_to_nearest_even() {
    // Hand-checked expectations.
    let table: &[(f32, u16)] = &[
        (0.0, 0x0000),
        (-0.0, 0x8000),
        (1.0, 0x3c00),
        (65504.0, 0x7bff),   // f16 max
        (65519.996, 0x7bff), // just below the midpoint to 65536: stays max
        (65520.0, 0x7c00),   // midpoint, max is odd: rounds to even = inf
        (-65520.0, 0xfc00),
        (1.0e6, 0x7c00), // overflow to inf
        (f32::MAX, 0x7c00),
        (f32::INFINITY, 0x7c00),
        (f32::NEG_INFINITY, 0xfc00),
        (1.0 + 1.0 / 2048.0, 0x3c00),                 // tie between 1 and 1+2^-10: even is 1
        (1.0 + 3.0 / 2048.0, 0x3c02),                 // tie between 1+2^-10 and 1+2^-9: even is the upper
        (1.0 + 1.0 / 2048.0 + 1.0 / 65536.0, 0x3c01), // above the tie: up
        (5.960_464_5e-8, 0x0001),                     // 2^-24: smallest f16 subnormal
        (2.980_232_2e-8, 0x0000),                     // 2^-25: half the smallest subnormal, tie to even 0
        (-2.980_232_2e-8, 0x8000),
        (8.940_697e-8, 0x0002),      // 3 x 2^-25: tie between 1 and 2 subnormal ulps: 2
        (2.980_232_6e-8, 0x0001),    // just above 2^-25: up to 2^-24
        (6.097_555e-5, 0x03ff),      // largest f16 subnormal (1023 x 2^-24)
        (6.103_515_6e-5, 0x0400),    // 2^-14: smallest f16 normal
        (f32::from_bits(1), 0x0000), // an f32 subnormal
        (-f32::from_bits(1), 0x8000),
    ];
    let cases: Vec<[u64; 3]> = table.iter().map(|&(x, _)| [x.to_bits() as u64, 0, 0]).collect();
    let got = run(&["f32"], "f16", "cvt.rn.f16.f32 %d, %a;", &cases);
    for ((x, want), g) in table.iter().zip(&got) {
        assert_eq!(*g, *want as u64, "cvt.rn.f16.f32 {x:e} ({:#x}) gave {g:#x}, want {want:#x}", x.to_bits());
    }
    // And the host library (correctly rounded) over a sweep of f32 values around every
    // f16 binade, NaN included.
    let mut sweep: Vec<u64> = (0..4096u32).map(|i| (0x3300_0000u32 + i * 0x0000_3001) as u64).collect();
    sweep.extend((0..4096u32).map(|i| (0xb300_0000u32 + i * 0x0000_3001) as u64));
    sweep.extend([0x7fc0_0000, 0xffc0_0000, 0x7f80_0001]);
    check("cvt.rn.f16.f32 sweep", &["f32"], "f16", "cvt.rn.f16.f32 %d, %a;", &singles(&sweep), |c| {
        let h = f16::from_f32(f(c[0]));
        if h.is_nan() {
            Want::Nan16
        } else {
            Want::Bits(h.to_bits() as u64)
        }
    });
}

#[test]
fn cvt_f16_to_f32_is_exact_for_every_f16() {
    let cases: Vec<[u64; 3]> = (0..=0xffffu64).map(|h| [h, 0, 0]).collect();
    check("cvt.f32.f16", &["f16"], "f32", "cvt.f32.f16 %d, %a;", &cases, |c| w32(f16::from_bits(c[0] as u16).to_f32()));
    // Hand-checked: max, smallest subnormal, -0.
    let table = [(0x7bffu64, 65504.0f32), (0x0001, 5.960_464_5e-8), (0x8000, -0.0), (0xfc00, f32::NEG_INFINITY)];
    for (h, x) in table {
        check("cvt.f32.f16 hand", &["f16"], "f32", "cvt.f32.f16 %d, %a;", &[[h, 0, 0]], |_| {
            Want::Bits(x.to_bits() as u64)
        });
    }
}

#[test]
fn cvt_f64_f32() {
    let max = f32::MAX as f64;
    let half_ulp = 2f64.powi(103); // half an ulp of f32::MAX
    let table: &[(f64, u32)] = &[
        (max, 0x7f7f_ffff),
        (max + half_ulp * 0.99, 0x7f7f_ffff), // below the midpoint: max
        (max + half_ulp, 0x7f80_0000),        // the midpoint: max is odd, rounds to inf
        (-(max + half_ulp), 0xff80_0000),
        (1e300, 0x7f80_0000),
        (2f64.powi(-149), 0x0000_0001),       // smallest f32 subnormal
        (2f64.powi(-150), 0x0000_0000),       // half of it: tie to even 0
        (3.0 * 2f64.powi(-150), 0x0000_0002), // 1.5 of it: tie to even 2
        (-(2f64.powi(-150)), 0x8000_0000),
        (1e-300, 0x0000_0000),
        (1.0 + 2f64.powi(-24), 0x3f80_0000),       // tie to even 1
        (1.0 + 3.0 * 2f64.powi(-24), 0x3f80_0002), // tie to even upper
        (0.1, 0x3dcc_cccd),
        (-0.0, 0x8000_0000),
        (f64::INFINITY, 0x7f80_0000),
    ];
    let cases: Vec<[u64; 3]> = table.iter().map(|&(x, _)| [x.to_bits(), 0, 0]).collect();
    let got = run(&["f64"], "f32", "cvt.rn.f32.f64 %d, %a;", &cases);
    for ((x, want), g) in table.iter().zip(&got) {
        assert_eq!(*g, *want as u64, "cvt.rn.f32.f64 {x:e} gave {g:#x}, want {want:#x}");
    }
    check("cvt.rn.f32.f64 edges", &["f64"], "f32", "cvt.rn.f32.f64 %d, %a;", &singles(F64_EDGES), |c| {
        w32(d(c[0]) as f32)
    });
    // f32 -> f64 is exact.
    check("cvt.f64.f32", &["f32"], "f64", "cvt.f64.f32 %d, %a;", &singles(&f32_edges()), |c| w64(f(c[0]) as f64));
}

#[test]
fn cvt_float_to_int_rounds_and_saturates() {
    // ISA 9.7.9.21: float to integer conversions saturate to the destination range and
    // NaN converts to 0.
    let vals: Vec<u64> = [
        0.0f32,
        -0.0,
        0.5,
        -0.5,
        1.5,
        -1.5,
        2.5,
        -2.5,
        3.5,
        0.499_999_97,
        1e10,
        -1e10,
        2_147_483_520.0,
        2_147_483_648.0,
        -2_147_483_648.0,
        4_294_967_040.0,
        4_294_967_296.0,
        f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ]
    .iter()
    .map(|x| x.to_bits() as u64)
    .chain([0x8000_0001])
    .collect();
    type Round = fn(f64) -> f64;
    let modes: [(&str, Round); 4] =
        [("rzi", f64::trunc), ("rni", f64::round_ties_even), ("rmi", f64::floor), ("rpi", f64::ceil)];
    for (m, round) in modes {
        let body = format!("cvt.{m}.s32.f32 %d, %a;");
        check(&body, &["f32"], "s32", &body, &singles(&vals), |c| {
            Want::Bits(round(f(c[0]) as f64) as i32 as u32 as u64)
        });
        let body = format!("cvt.{m}.u32.f32 %d, %a;");
        check(&body, &["f32"], "u32", &body, &singles(&vals), |c| Want::Bits(round(f(c[0]) as f64) as u32 as u64));
        let body = format!("cvt.{m}.s64.f64 %d, %a;");
        let v64: Vec<u64> = vals
            .iter()
            .map(|&b| (f(b) as f64).to_bits())
            .chain([9.3e18f64.to_bits(), (-9.3e18f64).to_bits()])
            .collect();
        check(&body, &["f64"], "s64", &body, &singles(&v64), |c| Want::Bits(round(d(c[0])) as i64 as u64));
        let body = format!("cvt.{m}.u64.f64 %d, %a;");
        check(&body, &["f64"], "u64", &body, &singles(&v64), |c| Want::Bits(round(d(c[0])) as u64));
        // Same-type float rounding to an integral value (ISA: cvt.rni.f32.f32 etc.).
        let body = format!("cvt.{m}.f64.f64 %d, %a;");
        check(&body, &["f64"], "f64", &body, &singles(&v64), |c| w64(round(d(c[0]))));
    }
    // Hand-checked saturation and NaN.
    let hand: &[(&str, f32, u64)] = &[
        ("cvt.rzi.s32.f32", f32::NAN, 0),
        ("cvt.rzi.s32.f32", 1e10, 0x7fff_ffff),
        ("cvt.rzi.s32.f32", -1e10, 0x8000_0000),
        ("cvt.rni.s32.f32", 2.5, 2),
        ("cvt.rni.s32.f32", -2.5, 0xffff_fffe),
        ("cvt.rmi.s32.f32", -0.5, 0xffff_ffff),
        ("cvt.rpi.s32.f32", 0.25, 1),
        ("cvt.rni.u32.f32", -1.5, 0),
        ("cvt.rzi.u32.f32", f32::INFINITY, 0xffff_ffff),
    ];
    for &(op, x, want) in hand {
        let ty = if op.contains(".u32.") { "u32" } else { "s32" };
        check(op, &["f32"], ty, &format!("{op} %d, %a;"), &[[x.to_bits() as u64, 0, 0]], |_| Want::Bits(want));
    }
}

#[test]
fn cvt_int_to_int_extends_and_truncates() {
    let v = [
        0u64,
        1,
        0x7fff,
        0x8000,
        0xffff,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_ffff,
        0x1_2345_6789,
        0xffff_ffff_8000_0000,
        u64::MAX,
    ];
    check("cvt.s64.s32", &["s32"], "s64", "cvt.s64.s32 %d, %a;", &singles(&v), |c| {
        Want::Bits(c[0] as u32 as i32 as i64 as u64)
    });
    check("cvt.u64.u32", &["u32"], "u64", "cvt.u64.u32 %d, %a;", &singles(&v), |c| Want::Bits(c[0] as u32 as u64));
    check("cvt.u32.u64", &["u64"], "u32", "cvt.u32.u64 %d, %a;", &singles(&v), |c| Want::Bits(c[0] as u32 as u64));
    check("cvt.u32.u16", &["u16"], "u32", "cvt.u32.u16 %d, %a;", &singles(&v), |c| Want::Bits(c[0] as u16 as u64));
    check("cvt.s32.s16", &["s16"], "s32", "cvt.s32.s16 %d, %a;", &singles(&v), |c| {
        Want::Bits(c[0] as u16 as i16 as i32 as u32 as u64)
    });
    check("cvt.s32.s64", &["s64"], "s32", "cvt.s32.s64 %d, %a;", &singles(&v), |c| Want::Bits(c[0] as u32 as u64));
    // Hand-checked.
    check("cvt.s64.s32 -1", &["s32"], "s64", "cvt.s64.s32 %d, %a;", &[[0xffff_ffff, 0, 0]], |_| Want::Bits(u64::MAX));
    check("cvt.u64.u32 max", &["u32"], "u64", "cvt.u64.u32 %d, %a;", &[[0xffff_ffff, 0, 0]], |_| {
        Want::Bits(0xffff_ffff)
    });
    check("cvt.u32.u64 trunc", &["u64"], "u32", "cvt.u32.u64 %d, %a;", &[[0x1_2345_6789, 0, 0]], |_| {
        Want::Bits(0x2345_6789)
    });
}

#[test]
fn cvt_int_to_float_rounds_to_nearest_even() {
    let v = [
        0u64,
        1,
        16_777_216,
        16_777_217,
        16_777_219,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_ffff,
        0x7fff_ffff_ffff_ffff,
        0x8000_0000_0000_0000,
        u64::MAX,
        0x20_0000_0000_0001,
    ];
    check(
        "cvt.rn.f32.s32",
        &["s32"],
        "f32",
        "cvt.rn.f32.s32 %d, %a;",
        &singles(&v),
        |c| w32(c[0] as u32 as i32 as f32),
    );
    check("cvt.rn.f32.u32", &["u32"], "f32", "cvt.rn.f32.u32 %d, %a;", &singles(&v), |c| w32(c[0] as u32 as f32));
    check("cvt.rn.f32.u64", &["u64"], "f32", "cvt.rn.f32.u64 %d, %a;", &singles(&v), |c| w32(c[0] as f32));
    check("cvt.rn.f64.s64", &["s64"], "f64", "cvt.rn.f64.s64 %d, %a;", &singles(&v), |c| w64(c[0] as i64 as f64));
    check("cvt.rn.f64.u64", &["u64"], "f64", "cvt.rn.f64.u64 %d, %a;", &singles(&v), |c| w64(c[0] as f64));
    check(
        "cvt.rn.f16.s32",
        &["s32"],
        "f16",
        "cvt.rn.f16.s32 %d, %a;",
        &singles(&[1, 65504, 65519, 65520, 2049, 2051, 0xffff_ffff]),
        |c| Want::Bits(f16::from_f64(c[0] as u32 as i32 as f64).to_bits() as u64),
    );
    // Hand-checked: 2^24 + 1 ties to 2^24, 2^24 + 3 ties up to 2^24 + 4.
    check("cvt.rn.f32.s32 tie", &["s32"], "f32", "cvt.rn.f32.s32 %d, %a;", &[[16_777_217, 0, 0]], |_| {
        Want::Bits(0x4b80_0000)
    });
    check("cvt.rn.f32.s32 tie up", &["s32"], "f32", "cvt.rn.f32.s32 %d, %a;", &[[16_777_219, 0, 0]], |_| {
        Want::Bits(0x4b80_0002)
    });
}

// ---------------------------------------------------------------------------------------
// Integer arithmetic (ISA 9.7.1), shifts (9.7.8.7-8), logic (9.7.8.1-4)
// ---------------------------------------------------------------------------------------

type Int2 = fn(u64, u64) -> u64;

#[test]
fn integer_arithmetic_wraps() {
    let c32 = pairs(I32_EDGES);
    let s = |x: u64| x as u32 as i32;
    let ops32: [(&str, &str, Int2); 10] = [
        ("add.s32", "s32", |a, b| (a as u32).wrapping_add(b as u32) as u64),
        ("sub.u32", "u32", |a, b| (a as u32).wrapping_sub(b as u32) as u64),
        ("mul.lo.s32", "s32", |a, b| (a as u32).wrapping_mul(b as u32) as u64),
        ("mul.hi.u32", "u32", |a, b| ((a as u32 as u64 * b as u32 as u64) >> 32) as u32 as u64),
        ("mul.hi.s32", "s32", |a, b| ((a as u32 as i32 as i64 * b as u32 as i32 as i64) >> 32) as u32 as u64),
        ("min.s32", "s32", |a, b| (a as u32 as i32).min(b as u32 as i32) as u32 as u64),
        ("max.s32", "s32", |a, b| (a as u32 as i32).max(b as u32 as i32) as u32 as u64),
        ("min.u32", "u32", |a, b| (a as u32).min(b as u32) as u64),
        ("max.u32", "u32", |a, b| (a as u32).max(b as u32) as u64),
        ("rem.u32", "u32", |a, b| if b as u32 == 0 { a as u32 as u64 } else { (a as u32 % b as u32) as u64 }),
    ];
    for (op, ty, host) in ops32 {
        let body = format!("{op} %d, %a, %b;");
        check(op, &[ty, ty], ty, &body, &c32, |c| Want::Bits(host(c[0], c[1])));
    }
    let _ = s;
    check("mul.wide.u32", &["u32", "u32"], "u64", "mul.wide.u32 %d, %a, %b;", &c32, |c| {
        Want::Bits((c[0] as u32 as u64) * (c[1] as u32 as u64))
    });
    check("mul.wide.s32", &["s32", "s32"], "s64", "mul.wide.s32 %d, %a, %b;", &c32, |c| {
        Want::Bits((c[0] as u32 as i32 as i64 * c[1] as u32 as i32 as i64) as u64)
    });
    let c3: Vec<[u64; 3]> = triples(&I32_EDGES[..8]);
    check("mad.lo.s32", &["s32", "s32", "s32"], "s32", "mad.lo.s32 %d, %a, %b, %c;", &c3, |c| {
        Want::Bits((c[0] as u32).wrapping_mul(c[1] as u32).wrapping_add(c[2] as u32) as u64)
    });
    let c64 = pairs(I64_EDGES);
    check("add.s64", &["s64", "s64"], "s64", "add.s64 %d, %a, %b;", &c64, |c| Want::Bits(c[0].wrapping_add(c[1])));
    check("sub.s64", &["s64", "s64"], "s64", "sub.s64 %d, %a, %b;", &c64, |c| Want::Bits(c[0].wrapping_sub(c[1])));
    check("mul.lo.s64", &["s64", "s64"], "s64", "mul.lo.s64 %d, %a, %b;", &c64, |c| {
        Want::Bits(c[0].wrapping_mul(c[1]))
    });
    check("min.u64", &["u64", "u64"], "u64", "min.u64 %d, %a, %b;", &c64, |c| Want::Bits(c[0].min(c[1])));
    check("max.s64", &["s64", "s64"], "s64", "max.s64 %d, %a, %b;", &c64, |c| {
        Want::Bits((c[0] as i64).max(c[1] as i64) as u64)
    });
    check("neg.s32", &["s32"], "s32", "neg.s32 %d, %a;", &singles(I32_EDGES), |c| {
        Want::Bits((c[0] as u32 as i32).wrapping_neg() as u32 as u64)
    });
    check("neg.s64", &["s64"], "s64", "neg.s64 %d, %a;", &singles(I64_EDGES), |c| {
        Want::Bits((c[0] as i64).wrapping_neg() as u64)
    });
    check("abs.s32", &["s32"], "s32", "abs.s32 %d, %a;", &singles(I32_EDGES), |c| {
        Want::Bits((c[0] as u32 as i32).wrapping_abs() as u32 as u64)
    });
    // Hand-checked.
    check("add.s32 max+1", &["s32", "s32"], "s32", "add.s32 %d, %a, %b;", &[[0x7fff_ffff, 1, 0]], |_| {
        Want::Bits(0x8000_0000)
    });
    check(
        "mul.wide.u32 max^2",
        &["u32", "u32"],
        "u64",
        "mul.wide.u32 %d, %a, %b;",
        &[[0xffff_ffff, 0xffff_ffff, 0]],
        |_| Want::Bits(0xffff_fffe_0000_0001),
    );
    check(
        "mul.wide.s32 min^2",
        &["s32", "s32"],
        "s64",
        "mul.wide.s32 %d, %a, %b;",
        &[[0x8000_0000, 0x8000_0000, 0]],
        |_| Want::Bits(1 << 62),
    );
    check("mul.wide.s32 -1*2", &["s32", "s32"], "s64", "mul.wide.s32 %d, %a, %b;", &[[0xffff_ffff, 2, 0]], |_| {
        Want::Bits(-2i64 as u64)
    });
    check("min.s32 vs u32", &["s32", "s32"], "s32", "min.s32 %d, %a, %b;", &[[0xffff_ffff, 1, 0]], |_| {
        Want::Bits(0xffff_ffff)
    });
    check("min.u32 vs s32", &["u32", "u32"], "u32", "min.u32 %d, %a, %b;", &[[0xffff_ffff, 1, 0]], |_| Want::Bits(1));
}

#[test]
fn shifts_past_the_width() {
    // ISA 9.7.8.7-8: "Shift amounts greater than the register width N are clamped to N";
    // shr of a signed type fills with the sign bit.
    let c32 = pairs(I32_EDGES);
    let shl32 = |a: u64, s: u64| if s as u32 >= 32 { 0 } else { ((a as u32) << s) as u64 };
    check("shl.b32", &["b32", "u32"], "b32", "shl.b32 %d, %a, %b;", &c32, |c| Want::Bits(shl32(c[0], c[1])));
    check("shr.u32", &["u32", "u32"], "u32", "shr.u32 %d, %a, %b;", &c32, |c| {
        Want::Bits(if c[1] as u32 >= 32 { 0 } else { (c[0] as u32 >> c[1]) as u64 })
    });
    check("shr.s32", &["s32", "u32"], "s32", "shr.s32 %d, %a, %b;", &c32, |c| {
        Want::Bits(((c[0] as u32 as i32) >> (c[1] as u32).min(31)) as u32 as u64)
    });
    check("shr.b32", &["b32", "u32"], "b32", "shr.b32 %d, %a, %b;", &c32, |c| {
        Want::Bits(if c[1] as u32 >= 32 { 0 } else { (c[0] as u32 >> c[1]) as u64 })
    });
    let c64: Vec<[u64; 3]> =
        I64_EDGES.iter().flat_map(|&a| [0u64, 1, 31, 32, 63, 64, 65, 200, 0xffff_ffff].map(|s| [a, s, 0])).collect();
    check("shl.b64", &["b64", "u32"], "b64", "shl.b64 %d, %a, %b;", &c64, |c| {
        Want::Bits(if c[1] as u32 >= 64 { 0 } else { c[0] << c[1] })
    });
    check("shr.u64", &["u64", "u32"], "u64", "shr.u64 %d, %a, %b;", &c64, |c| {
        Want::Bits(if c[1] as u32 >= 64 { 0 } else { c[0] >> c[1] })
    });
    check("shr.s64", &["s64", "u32"], "s64", "shr.s64 %d, %a, %b;", &c64, |c| {
        Want::Bits(((c[0] as i64) >> (c[1] as u32).min(63)) as u64)
    });
    let c16: Vec<[u64; 3]> =
        [0u64, 1, 0x8000, 0xffff, 0x1234].iter().flat_map(|&a| [0u64, 1, 15, 16, 17, 40].map(|s| [a, s, 0])).collect();
    check("shl.b16", &["b16", "u32"], "b16", "shl.b16 %d, %a, %b;", &c16, |c| {
        Want::Bits(if c[1] >= 16 { 0 } else { (c[0] << c[1]) & 0xffff })
    });
    check("shr.s16", &["s16", "u32"], "s16", "shr.s16 %d, %a, %b;", &c16, |c| {
        Want::Bits(((c[0] as u16 as i16) >> c[1].min(15)) as u16 as u64)
    });
    // Hand-checked: shr.s32 -8 by 40 fills with the sign, shl.b32 by 32 gives 0,
    // shr.u32 by 40 gives 0, shr.s32 of a positive value by 40 gives 0.
    check("shr.s32 by 40", &["s32", "u32"], "s32", "shr.s32 %d, %a, %b;", &[[0xffff_fff8, 40, 0]], |_| {
        Want::Bits(0xffff_ffff)
    });
    check("shr.s32 pos by 40", &["s32", "u32"], "s32", "shr.s32 %d, %a, %b;", &[[0x7fff_ffff, 40, 0]], |_| {
        Want::Bits(0)
    });
    check("shl.b32 by 32", &["b32", "u32"], "b32", "shl.b32 %d, %a, %b;", &[[0xffff_ffff, 32, 0]], |_| Want::Bits(0));
    check("shr.u32 by 40", &["u32", "u32"], "u32", "shr.u32 %d, %a, %b;", &[[0xffff_ffff, 40, 0]], |_| Want::Bits(0));
    // Immediate shift amounts.
    check("shl.b32 imm", &["b32"], "b32", "shl.b32 %d, %a, 4;", &[[0x1234_5678, 0, 0]], |_| Want::Bits(0x2345_6780));
    check("shr.s32 imm", &["s32"], "s32", "shr.s32 %d, %a, 31;", &[[0x8000_0000, 0, 0]], |_| Want::Bits(0xffff_ffff));
}

#[test]
fn logic_on_every_width_and_pred() {
    let vals =
        [0u64, 1, 0x5555_5555_5555_5555, 0xaaaa_aaaa_aaaa_aaaa, 0xff00_ff00_ff00_ff00, u64::MAX, 0x8000_0000_0000_0001];
    let cases = pairs(&vals);
    for (ty, m) in [("b16", 0xffffu64), ("b32", 0xffff_ffff), ("b64", u64::MAX)] {
        check(&format!("and.{ty}"), &[ty, ty], ty, &format!("and.{ty} %d, %a, %b;"), &cases, |c| {
            Want::Bits(c[0] & c[1] & m)
        });
        check(&format!("or.{ty}"), &[ty, ty], ty, &format!("or.{ty} %d, %a, %b;"), &cases, |c| {
            Want::Bits((c[0] | c[1]) & m)
        });
        check(&format!("xor.{ty}"), &[ty, ty], ty, &format!("xor.{ty} %d, %a, %b;"), &cases, |c| {
            Want::Bits((c[0] ^ c[1]) & m)
        });
        check(&format!("not.{ty}"), &[ty], ty, &format!("not.{ty} %d, %a;"), &singles(&vals), |c| {
            Want::Bits(!c[0] & m)
        });
    }
    let bools = pairs(&[0, 1]);
    let pred = |op: &str| format!("setp.ne.u32 %p1, %a, 0; setp.ne.u32 %p2, %b, 0; {op}; selp.u32 %d, 1, 0, %p3;");
    check("and.pred", &["u32", "u32"], "u32", &pred("and.pred %p3, %p1, %p2"), &bools, |c| Want::Bits(c[0] & c[1]));
    check("or.pred", &["u32", "u32"], "u32", &pred("or.pred %p3, %p1, %p2"), &bools, |c| Want::Bits(c[0] | c[1]));
    check("xor.pred", &["u32", "u32"], "u32", &pred("xor.pred %p3, %p1, %p2"), &bools, |c| Want::Bits(c[0] ^ c[1]));
    check("not.pred", &["u32", "u32"], "u32", &pred("not.pred %p3, %p1"), &bools, |c| Want::Bits(1 - c[0]));
    // A negated guard.
    check(
        "@!p",
        &["u32", "u32"],
        "u32",
        "setp.ne.u32 %p1, %a, 0; mov.u32 %d, 7; @!%p1 mov.u32 %d, %b;",
        &[[0, 9, 0], [1, 9, 0]],
        |c| Want::Bits(if c[0] == 0 { 9 } else { 7 }),
    );
}

// ---------------------------------------------------------------------------------------
// mov pack / unpack (ISA 9.7.9.x mov with vector operands), immediates (ISA 4.5.x)
// ---------------------------------------------------------------------------------------

#[test]
fn mov_pack_and_unpack() {
    // `mov.b32 %r, {lo, hi}` with f16 halves: lo in bits 0..16.
    let h = |x: f32| f16::from_f32(x).to_bits() as u64;
    let cases = [[h(1.0), h(-2.0), 0], [h(65504.0), 0x7e00, 0], [0x8000, 0x0001, 0]];
    check("mov.b32 pack", &["f16", "f16"], "b32", "mov.b32 %d, {%a, %b};", &cases, |c| Want::Bits(c[0] | (c[1] << 16)));
    check(
        "mov.b32 unpack hi",
        &["b32"],
        "f16",
        ".reg .b16 %lo; mov.b32 {%lo, %d}, %a;",
        &[[0xabcd_1234, 0, 0]],
        |_| Want::Bits(0xabcd),
    );
    check(
        "mov.b32 unpack lo",
        &["b32"],
        "f16",
        ".reg .b16 %hi; mov.b32 {%d, %hi}, %a;",
        &[[0xabcd_1234, 0, 0]],
        |_| Want::Bits(0x1234),
    );
    // `mov.b64 {%a, %b}, %rd` and back.
    check(
        "mov.b64 unpack lo",
        &["b64"],
        "b32",
        ".reg .b32 %hi; mov.b64 {%d, %hi}, %a;",
        &[[0x0123_4567_89ab_cdef, 0, 0]],
        |_| Want::Bits(0x89ab_cdef),
    );
    check(
        "mov.b64 unpack hi",
        &["b64"],
        "b32",
        ".reg .b32 %lo; mov.b64 {%lo, %d}, %a;",
        &[[0x0123_4567_89ab_cdef, 0, 0]],
        |_| Want::Bits(0x0123_4567),
    );
    check("mov.b64 pack", &["b32", "b32"], "b64", "mov.b64 %d, {%a, %b};", &[[0x89ab_cdef, 0x0123_4567, 0]], |_| {
        Want::Bits(0x0123_4567_89ab_cdef)
    });
    // Round trip through an f64 register.
    check(
        "mov.b64 f64",
        &["f64"],
        "f64",
        ".reg .b32 %x, %y; mov.b64 {%x, %y}, %a; mov.b64 %d, {%x, %y};",
        &singles(F64_EDGES),
        |c| Want::Bits(c[0]),
    );
}

#[test]
fn immediates() {
    let one = [[0u64, 0, 0]];
    check("0f inf", &["u32"], "f32", "mov.f32 %d, 0f7F800000;", &one, |_| Want::Bits(0x7f80_0000));
    check("0f -1", &["f32"], "f32", "add.f32 %d, %a, 0fBF800000;", &[[0x4040_0000, 0, 0]], |_| Want::Bits(0x4000_0000));
    check("0f neg literal", &["f32"], "f32", "mul.f32 %d, %a, 0f3F000000;", &[[0x4040_0000, 0, 0]], |_| {
        Want::Bits(0x3fc0_0000)
    });
    check("0d", &["u32"], "f64", "mov.f64 %d, 0d3FF8000000000000;", &one, |_| Want::Bits(0x3ff8_0000_0000_0000));
    check(
        "0d in fma",
        &["f64"],
        "f64",
        "fma.rn.f64 %d, %a, 0d4000000000000000, 0dBFF0000000000000;",
        &[[3f64.to_bits(), 0, 0]],
        |_| Want::Bits(5f64.to_bits()),
    );
    check("negative int", &["s32"], "s32", "add.s32 %d, %a, -5;", &[[3, 0, 0]], |_| Want::Bits(-2i32 as u32 as u64));
    check("negative int 64", &["u32"], "s64", "mov.u64 %d, -1;", &one, |_| Want::Bits(u64::MAX));
    check("hex int", &["b32"], "b32", "and.b32 %d, %a, 0xFF00FF00;", &[[0x1234_5678, 0, 0]], |_| {
        Want::Bits(0x1200_5600)
    });
    check(
        "negative compare",
        &["s32"],
        "u32",
        "setp.lt.s32 %p1, %a, -1; selp.u32 %d, 1, 0, %p1;",
        &[[-2i32 as u32 as u64, 0, 0], [-1i32 as u32 as u64, 0, 0]],
        |c| Want::Bits((c[0] as u32 as i32 == -2) as u64),
    );
    check("u16 imm", &["u32"], "u16", "mov.u16 %d, 65535;", &one, |_| Want::Bits(0xffff));
}

// ---------------------------------------------------------------------------------------
// Vector loads and stores (ISA 9.7.9.8-9)
// ---------------------------------------------------------------------------------------

#[test]
fn vector_loads_and_stores() {
    let ptx = format!(
        "{HEADER}
.visible .entry v(.param .u64 v_in, .param .u64 v_out)
{{
\t.reg .f32 %f<5>;
\t.reg .b32 %r<3>;
\t.reg .f64 %fd<3>;
\t.reg .b16 %h<5>;
\t.reg .b64 %rd<3>;
\tld.param.u64 %rd1, [v_in];
\tld.param.u64 %rd2, [v_out];
\tld.global.v4.f32 {{%f1, %f2, %f3, %f4}}, [%rd1];
\tst.global.v4.f32 [%rd2+16], {{%f4, %f3, %f2, %f1}};
\tld.global.v2.u32 {{%r1, %r2}}, [%rd1+16];
\tst.global.v2.u32 [%rd2], {{%r2, %r1}};
\tld.global.v2.f64 {{%fd1, %fd2}}, [%rd1+32];
\tst.global.v2.f64 [%rd2+32], {{%fd2, %fd1}};
\tld.global.v4.u16 {{%h1, %h2, %h3, %h4}}, [%rd1+48];
\tst.global.v4.u16 [%rd2+8], {{%h4, %h3, %h2, %h1}};
\tret;
}}
"
    );
    let mut rig = Rig::new(&ptx);
    let input: Vec<u32> = (0..14u32).map(|i| 0x1000_0000 + i).collect();
    let pin = rig.upload(&input);
    let pout = rig.upload(&[0u32; 12]);
    rig.launch("v", [1, 1, 1], [1, 1, 1], &[&pin.to_le_bytes(), &pout.to_le_bytes()]).unwrap();
    let out: Vec<u32> = rig.download(pout, 12);
    let i = |k: usize| input[k];
    let u16s: Vec<u16> = input[12..14].iter().flat_map(|w| [*w as u16, (*w >> 16) as u16]).collect();
    let rev16 = [u16s[3], u16s[2], u16s[1], u16s[0]];
    let want = [
        i(5),
        i(4),
        rev16[0] as u32 | (rev16[1] as u32) << 16,
        rev16[2] as u32 | (rev16[3] as u32) << 16,
        i(3),
        i(2),
        i(1),
        i(0),
        i(10),
        i(11),
        i(8),
        i(9),
    ];
    assert_eq!(out, want);
}

#[test]
fn cvt_f64_to_f16_rounds_once() {
    // One rounding from the f64 value: 1 + 2^-11 + 2^-40 is above the midpoint between 1
    // and 1 + 2^-10 and rounds up; going through f32 first would land on the midpoint
    // and tie to 1.
    let table: &[(f64, u64)] = &[
        (1.0 + 2f64.powi(-11) + 2f64.powi(-40), 0x3c01),
        (1.0 + 2f64.powi(-11), 0x3c00),
        (65520.0, 0x7c00),
        (65519.999, 0x7bff),
        (2f64.powi(-25), 0),
        (2f64.powi(-25) + 2f64.powi(-60), 1),
    ];
    for &(x, want) in table {
        check("cvt.rn.f16.f64", &["f64"], "f16", "cvt.rn.f16.f64 %d, %a;", &[[x.to_bits(), 0, 0]], |_| {
            Want::Bits(want)
        });
    }
}

#[test]
fn integer_high_products_and_division() {
    let c64 = pairs(I64_EDGES);
    check("mul.hi.u64", &["u64", "u64"], "u64", "mul.hi.u64 %d, %a, %b;", &c64, |c| {
        Want::Bits(((c[0] as u128 * c[1] as u128) >> 64) as u64)
    });
    check("mul.hi.s64", &["s64", "s64"], "s64", "mul.hi.s64 %d, %a, %b;", &c64, |c| {
        Want::Bits(((c[0] as i64 as i128 * c[1] as i64 as i128) >> 64) as u64)
    });
    let nz: Vec<[u64; 3]> = pairs(I32_EDGES).into_iter().filter(|c| c[1] as u32 != 0).collect();
    check("div.s32", &["s32", "s32"], "s32", "div.s32 %d, %a, %b;", &nz, |c| {
        Want::Bits((c[0] as u32 as i32).wrapping_div(c[1] as u32 as i32) as u32 as u64)
    });
    check("rem.s32", &["s32", "s32"], "s32", "rem.s32 %d, %a, %b;", &nz, |c| {
        Want::Bits((c[0] as u32 as i32).wrapping_rem(c[1] as u32 as i32) as u32 as u64)
    });
    check("div.u64", &["u64", "u64"], "u64", "div.u64 %d, %a, %b;", &pairs(&I64_EDGES[1..]), |c| {
        Want::Bits(c[0] / c[1])
    });
    check(
        "mad.wide.u32",
        &["u32", "u32", "u64"],
        "u64",
        "mad.wide.u32 %d, %a, %b, %c;",
        &triples(&I32_EDGES[..8]),
        |c| Want::Bits((c[0] as u32 as u64 * c[1] as u32 as u64).wrapping_add(c[2])),
    );
    // Hand-checked: -7 / 2 = -3 and -7 rem 2 = -1 (truncating, the sign of the dividend).
    check("div.s32 -7/2", &["s32", "s32"], "s32", "div.s32 %d, %a, %b;", &[[-7i32 as u32 as u64, 2, 0]], |_| {
        Want::Bits(-3i32 as u32 as u64)
    });
    check("rem.s32 -7%2", &["s32", "s32"], "s32", "rem.s32 %d, %a, %b;", &[[-7i32 as u32 as u64, 2, 0]], |_| {
        Want::Bits(-1i32 as u32 as u64)
    });
}

#[test]
fn cvt_narrowing_integers() {
    let v = [0u64, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff_ffff, 0x1234_5678];
    check("cvt.u16.u32", &["u32"], "u16", "cvt.u16.u32 %d, %a;", &singles(&v), |c| Want::Bits(c[0] as u16 as u64));
    check("cvt.s16.s32", &["s32"], "s16", "cvt.s16.s32 %d, %a;", &singles(&v), |c| Want::Bits(c[0] as u16 as u64));
    check("cvt.u8.u32", &["u32"], "u32", ".reg .u8 %q; cvt.u8.u32 %q, %a; cvt.u32.u8 %d, %q;", &singles(&v), |c| {
        Want::Bits(c[0] as u8 as u64)
    });
    check("cvt.s8.s32", &["s32"], "s32", ".reg .s8 %q; cvt.s8.s32 %q, %a; cvt.s32.s8 %d, %q;", &singles(&v), |c| {
        Want::Bits(c[0] as u8 as i8 as i32 as u32 as u64)
    });
}

// ---------------------------------------------------------------------------------------
// cvt.sat between integer types (ISA 9.7.9.21 cvt, "Saturation modifier": "For integer
// destination types, .sat limits the result to MININT..MAXINT for the size of the
// operation. Note that saturation applies to both signed and unsigned integer types.
// The saturation modifier is allowed only in cases where the destination type's value
// range is not a superset of the source type's value range")
// ---------------------------------------------------------------------------------------

const INT_TYPES: [&str; 8] = ["u8", "s8", "u16", "s16", "u32", "s32", "u64", "s64"];

/// The value range of integer type `t` ("s16": -32768..=32767).
fn int_range(t: &str) -> (i128, i128) {
    let bits: u32 = t[1..].parse().unwrap();
    if t.starts_with('s') {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    }
}

/// The value of the low bits of `raw` read as integer type `t`.
fn int_value(raw: u64, t: &str) -> i128 {
    let bits: u32 = t[1..].parse().unwrap();
    let low = if bits == 64 { raw } else { raw & ((1u64 << bits) - 1) };
    if t.starts_with('s') && low >> (bits - 1) & 1 == 1 {
        low as i128 - (1i128 << bits)
    } else {
        low as i128
    }
}

/// Whether `cvt.sat.{dt}.{st}` is legal: `dt`'s range does not contain `st`'s.
fn int_sat_legal(dt: &str, st: &str) -> bool {
    let (dlo, dhi) = int_range(dt);
    let (slo, shi) = int_range(st);
    !(dlo <= slo && shi <= dhi)
}

/// Runs `cvt.sat.{dt}.{st}` on the low bits of each value and returns what it wrote, as
/// the value of type `dt`. 8-bit operands travel through 32-bit registers (converted to
/// and from them without `.sat`), as nvcc's PTX keeps them.
fn run_cvt_sat(dt: &str, st: &str, vals: &[u64]) -> Vec<i128> {
    let wide = |t: &str| if t.starts_with('s') { "s32" } else { "u32" };
    let (load_ty, pre, src) = if st.ends_with('8') {
        (wide(st), format!(".reg .{st} %qs; cvt.{st}.{w} %qs, %a; ", w = wide(st)), "%qs")
    } else {
        (st, String::new(), "%a")
    };
    let (out_ty, body) = if dt.ends_with('8') {
        let w = wide(dt);
        (w, format!("{pre}.reg .{dt} %qd; cvt.sat.{dt}.{st} %qd, {src}; cvt.{w}.{dt} %d, %qd;"))
    } else {
        (dt, format!("{pre}cvt.sat.{dt}.{st} %d, {src};"))
    };
    let got = run(&[load_ty], out_ty, &body, &singles(vals));
    got.iter().map(|&g| int_value(g, dt)).collect()
}

#[test]
fn cvt_sat_int_to_int_clamps_to_the_destination_range() {
    let vals: Vec<u64> = [
        0u64,
        1,
        0x7f,
        0x80,
        0xff,
        0x100,
        0x7fff,
        0x8000,
        0xffff,
        0x1_0000,
        0xffff_ff80, // -128 as s32
        0xffff_ff7f, // -129
        0xffff_8000, // -32768
        0xffff_7fff, // -32769
        0x7fff_ffff,
        0x8000_0000,
        0xffff_ffff,
        0x1_0000_0000,
        0xffff_ffff_8000_0000,
        0xffff_ffff_7fff_ffff,
        0x7fff_ffff_ffff_ffff,
        0x8000_0000_0000_0000,
        u64::MAX,
    ]
    .to_vec();
    let mut legal = 0;
    for dt in INT_TYPES {
        for st in INT_TYPES {
            if !int_sat_legal(dt, st) {
                continue;
            }
            legal += 1;
            let (lo, hi) = int_range(dt);
            let got = run_cvt_sat(dt, st, &vals);
            let bad: Vec<String> = vals
                .iter()
                .zip(&got)
                .filter_map(|(&v, &g)| {
                    let want = int_value(v, st).clamp(lo, hi);
                    (g != want).then(|| format!("  {v:#x} ({}) -> {g}, want {want}", int_value(v, st)))
                })
                .collect();
            assert!(bad.is_empty(), "cvt.sat.{dt}.{st}:\n{}", bad.join("\n"));
        }
    }
    assert_eq!(legal, 38, "legal integer .sat pairs");
    // Hand-checked.
    let hand: &[(&str, &str, u64, i128)] = &[
        ("u8", "s32", -5i32 as u32 as u64, 0),
        ("u8", "s32", 300, 255),
        ("u8", "s32", 255, 255),
        ("u8", "u16", 0x1234, 255),
        ("s8", "s32", 200, 127),
        ("s8", "s32", -200i32 as u32 as u64, -128),
        ("s8", "u8", 0xff, 127),
        ("u8", "s8", 0x80, 0),
        ("s16", "s32", 40000, 32767),
        ("s16", "s32", -40000i32 as u32 as u64, -32768),
        ("s16", "s32", -32768i32 as u32 as u64, -32768),
        ("s16", "s32", 32767, 32767),
        ("u16", "u32", 0x1_0000, 0xffff),
        ("u32", "s64", u64::MAX, 0),
        ("u32", "s64", 1 << 33, 0xffff_ffff),
        ("u32", "s64", 0x1234, 0x1234),
        ("s32", "u32", 0x8000_0000, 0x7fff_ffff),
        ("u32", "s32", 0xffff_ffff, 0),
        ("s32", "s64", 0xffff_ffff, 0x7fff_ffff),
        ("s32", "s64", 0xffff_ffff_0000_0000, -0x8000_0000),
        ("u64", "s64", u64::MAX, 0),
        ("s64", "u64", u64::MAX, i64::MAX as i128),
    ];
    for &(dt, st, v, want) in hand {
        assert_eq!(run_cvt_sat(dt, st, &[v])[0], want, "cvt.sat.{dt}.{st} {v:#x}");
    }
}

#[test]
fn cvt_sat_int_to_int_where_it_cannot_saturate_is_refused() {
    let mut refused = 0;
    for dt in INT_TYPES {
        for st in INT_TYPES {
            let ptx = format!(
                "{HEADER}.visible .entry k()\n{{\n\t.reg .{st} %a;\n\t.reg .{dt} %d;\n\tmov.{st} %a, 1;\n\tcvt.sat.{dt}.{st} %d, %a;\n\tret;\n}}\n"
            );
            let loaded = mp_emu::ptx::Module::load(&ptx);
            if int_sat_legal(dt, st) {
                loaded.unwrap_or_else(|e| panic!("cvt.sat.{dt}.{st}: {e}"));
            } else {
                let e = loaded.err().unwrap_or_else(|| panic!("cvt.sat.{dt}.{st} cannot saturate and must not load"));
                assert!(e.message.contains("cvt.sat"), "{e}");
                refused += 1;
            }
        }
    }
    // The same type (8), a wider type of the same signedness (6 + 6), a wider signed
    // type from unsigned (6).
    assert_eq!(refused, 26);
}

#[test]
fn cvt_sat_int_to_float_clamps_to_zero_and_one() {
    // ISA cvt: "For floating-point destination types, .sat limits the result to the range
    // [0.0, 1.0]".
    let v = [0u64, 1, 2, 0xffff_ffff, 0x7fff_ffff, 0x8000_0000];
    check("cvt.rn.sat.f32.s32", &["s32"], "f32", "cvt.rn.sat.f32.s32 %d, %a;", &singles(&v), |c| {
        w32((c[0] as u32 as i32 as f32).clamp(0.0, 1.0))
    });
    check("cvt.rn.sat.f64.u32", &["u32"], "f64", "cvt.rn.sat.f64.u32 %d, %a;", &singles(&v), |c| {
        w64((c[0] as u32 as f64).clamp(0.0, 1.0))
    });
    check("cvt.rn.sat.f16.s32", &["s32"], "f16", "cvt.rn.sat.f16.s32 %d, %a;", &singles(&v), |c| {
        Want::Bits(f16::from_f64((c[0] as u32 as i32 as f64).clamp(0.0, 1.0)).to_bits() as u64)
    });
}

// ---------------------------------------------------------------------------------------
// NaN results (ISA 9.7.3 "Floating-Point Instructions": "NaN payloads are supported for
// double-precision instructions (except for rcp.approx.ftz.f64 and rsqrt.approx.ftz.f64,
// which maps input NaNs to a canonical NaN). Single-precision instructions return an
// unspecified NaN."; 9.7.4: "Half-precision instructions return an unspecified NaN").
// The GPU's f32 NaN is the canonical 0x7fffffff whatever the inputs' payloads, its f16
// NaN 0x7fff (CUDART_NAN_FP16); the host keeps an input's payload and sign instead.
// ---------------------------------------------------------------------------------------

const CANON32: u64 = 0x7fff_ffff;
const CANON16: u64 = 0x7fff;

/// NaNs with payloads and signs, quiet and signalling, none of them canonical.
const F32_NANS: &[u64] = &[0x7fc0_0000, 0xffc0_0001, 0x7f80_0001, 0xff80_1234, 0x7fc1_2345];

/// The edge values and the NaNs above.
fn f32_edges_and_nans() -> Vec<u64> {
    f32_edges().into_iter().chain(F32_NANS.iter().copied()).collect()
}

type Un32 = fn(f32) -> f32;

#[test]
fn f32_nan_results_are_the_canonical_nan() {
    let cases = pairs(&f32_edges_and_nans());
    let ops: [(&str, Bin32); 10] = [
        ("add.f32", |a, b| a + b),
        ("add.rz.f32", |a, b| a + b),
        ("sub.f32", |a, b| a - b),
        ("sub.rm.f32", |a, b| a - b),
        ("mul.f32", |a, b| a * b),
        ("mul.rp.ftz.f32", |a, b| ftz(a) * ftz(b)),
        ("div.rn.f32", |a, b| a / b),
        ("div.full.f32", |a, b| a / b),
        ("min.f32", |a, b| if a.is_nan() && b.is_nan() { f32::NAN } else { a.min(b) }),
        ("max.f32", |a, b| if a.is_nan() && b.is_nan() { f32::NAN } else { a.max(b) }),
    ];
    for (op, host) in ops {
        // Only the cases whose result is NaN: the rest is checked elsewhere.
        let nan: Vec<[u64; 3]> = cases.iter().copied().filter(|c| host(f(c[0]), f(c[1])).is_nan()).collect();
        assert!(nan.len() > 20, "{op}: {} NaN cases", nan.len());
        check(op, &["f32", "f32"], "f32", &format!("{op} %d, %a, %b;"), &nan, |_| Want::Bits(CANON32));
    }
    let vals: Vec<u64> =
        [0u64, 0x3f80_0000, 0x7f80_0000, 0xff80_0000].into_iter().chain(F32_NANS.iter().copied()).collect();
    for op in ["fma.rn.f32", "fma.rz.f32", "fma.rn.ftz.f32"] {
        let nan: Vec<[u64; 3]> =
            triples(&vals).into_iter().filter(|c| f(c[0]).mul_add(f(c[1]), f(c[2])).is_nan()).collect();
        check(op, &["f32", "f32", "f32"], "f32", &format!("{op} %d, %a, %b, %c;"), &nan, |_| Want::Bits(CANON32));
    }
    let unary: [(&str, Un32); 7] = [
        ("rcp.rn.f32", |a| 1.0 / a),
        ("rcp.approx.ftz.f32", |a| 1.0 / ftz(a)),
        ("sqrt.rn.f32", f32::sqrt),
        ("sqrt.approx.f32", f32::sqrt),
        ("ex2.approx.ftz.f32", |a| ftz(a).exp2()),
        ("lg2.approx.f32", f32::log2),
        ("lg2.approx.ftz.f32", |a| ftz(a).log2()),
    ];
    for (op, host) in unary {
        let nan: Vec<[u64; 3]> =
            singles(&f32_edges_and_nans()).into_iter().filter(|c| host(f(c[0])).is_nan()).collect();
        check(op, &["f32"], "f32", &format!("{op} %d, %a;"), &nan, |_| Want::Bits(CANON32));
    }
    // Hand-checked: inf - inf, 0 * inf, 0 / 0, sqrt(-1) make a NaN (the host's is
    // 0xffc00000 on x86); a payload NaN operand does not pass its payload or sign on.
    let hand: &[(&str, u64, u64)] = &[
        ("add.f32", 0x7f80_0000, 0xff80_0000),
        ("mul.f32", 0x0000_0000, 0x7f80_0000),
        ("div.rn.f32", 0x0000_0000, 0x8000_0000),
        ("add.f32", 0xffc0_0001, 0x3f80_0000),
        ("mul.f32", 0x3f80_0000, 0x7f80_0001),
        ("min.f32", 0xffc0_0001, 0x7fc1_2345),
    ];
    for &(op, a, b) in hand {
        check(op, &["f32", "f32"], "f32", &format!("{op} %d, %a, %b;"), &[[a, b, 0]], |_| Want::Bits(CANON32));
    }
    check("sqrt -1", &["f32"], "f32", "sqrt.rn.f32 %d, %a;", &[[0xbf80_0000, 0, 0]], |_| Want::Bits(CANON32));
}

#[test]
fn abs_neg_copysign_and_mov_keep_nan_payloads() {
    // Bit operations: only the sign bit changes (or nothing), signalling NaNs stay
    // signalling.
    let c = singles(F32_NANS);
    check("abs.f32", &["f32"], "f32", "abs.f32 %d, %a;", &c, |c| Want::Bits(c[0] & 0x7fff_ffff));
    check("abs.ftz.f32", &["f32"], "f32", "abs.ftz.f32 %d, %a;", &c, |c| Want::Bits(c[0] & 0x7fff_ffff));
    check("neg.f32", &["f32"], "f32", "neg.f32 %d, %a;", &c, |c| Want::Bits(c[0] ^ 0x8000_0000));
    check("mov.f32", &["f32"], "f32", "mov.f32 %d, %a;", &c, |c| Want::Bits(c[0]));
    let c: Vec<[u64; 3]> = F32_NANS.iter().map(|&n| [0xbf80_0000, n, 0]).collect();
    check("copysign.f32", &["f32", "f32"], "f32", "copysign.f32 %d, %a, %b;", &c, |c| Want::Bits(c[1] | 0x8000_0000));
    let c64 = singles(&[0x7ff8_0000_0000_0123, 0xfff4_0000_0000_0001]);
    check("neg.f64", &["f64"], "f64", "neg.f64 %d, %a;", &c64, |c| Want::Bits(c[0] ^ (1 << 63)));
    check("abs.f64", &["f64"], "f64", "abs.f64 %d, %a;", &c64, |c| Want::Bits(c[0] & !(1 << 63)));
}

#[test]
fn f64_nan_payloads_are_kept_but_not_by_rcp_approx() {
    // One quiet NaN operand with a payload: the result is that NaN.
    let nan = 0x7ff8_0000_0000_0123u64;
    let one = 0x3ff0_0000_0000_0000u64;
    for op in ["add.f64", "sub.rn.f64", "mul.rn.f64", "div.rn.f64"] {
        check(op, &["f64", "f64"], "f64", &format!("{op} %d, %a, %b;"), &[[nan, one, 0], [one, nan, 0]], |_| {
            Want::Bits(nan)
        });
    }
    check("fma.rn.f64", &["f64", "f64", "f64"], "f64", "fma.rn.f64 %d, %a, %b, %c;", &[[one, one, nan]], |_| {
        Want::Bits(nan)
    });
    check("sqrt.rn.f64", &["f64"], "f64", "sqrt.rn.f64 %d, %a;", &[[nan, 0, 0]], |_| Want::Bits(nan));
    // rcp.approx.ftz.f64: "Input NaNs map to a canonical NaN with encoding
    // 0x7fffffff00000000".
    check(
        "rcp.approx.ftz.f64",
        &["f64"],
        "f64",
        "rcp.approx.ftz.f64 %d, %a;",
        &singles(&[nan, 0xfff8_0000_0000_0000, 0x7ff0_0000_0000_0001]),
        |_| Want::Bits(0x7fff_ffff_0000_0000),
    );
}

#[test]
fn cvt_nan_results_are_the_canonical_nan_of_the_destination() {
    // To f32 and f16: the canonical NaN, whatever the source NaN.
    check(
        "cvt.rn.f32.f64",
        &["f64"],
        "f32",
        "cvt.rn.f32.f64 %d, %a;",
        &singles(&[0x7ff8_0000_0000_0123, 0xfff8_0000_0000_0000, 0x7ff0_0000_0000_0001, 0x7fff_ffff_ffff_ffff]),
        |_| Want::Bits(CANON32),
    );
    let h: Vec<u64> = vec![0x7e00, 0xfe00, 0x7c01, 0x7e55, 0xffff];
    check("cvt.f32.f16", &["f16"], "f32", "cvt.f32.f16 %d, %a;", &singles(&h), |_| Want::Bits(CANON32));
    check("cvt.rn.f16.f32", &["f32"], "f16", "cvt.rn.f16.f32 %d, %a;", &singles(F32_NANS), |_| Want::Bits(CANON16));
    check(
        "cvt.rn.f16.f64",
        &["f64"],
        "f16",
        "cvt.rn.f16.f64 %d, %a;",
        &singles(&[0x7ff8_0000_0000_0123, 0xfff8_0000_0000_0000]),
        |_| Want::Bits(CANON16),
    );
    for op in ["cvt.rni.f32.f32", "cvt.rzi.ftz.f32.f32"] {
        check(op, &["f32"], "f32", &format!("{op} %d, %a;"), &singles(F32_NANS), |_| Want::Bits(CANON32));
    }
    // With .sat a NaN is +0.
    check("cvt.sat.f32.f32", &["f32"], "f32", "cvt.sat.f32.f32 %d, %a;", &singles(F32_NANS), |_| Want::Bits(0));
    // To f64: a NaN (its payload is the hardware's business; the ISA supports f64 payloads).
    check("cvt.f64.f32", &["f32"], "f64", "cvt.f64.f32 %d, %a;", &singles(F32_NANS), |_| Want::Nan64);
}
