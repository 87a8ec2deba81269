//! bf16 and bf16x2 (PTX ISA 9.7.4 "Half Precision Floating-Point Instructions", cvt,
//! wmma with `.bf16` multiplicands): every form nvcc emits for `cuda_bf16.h` and
//! `mma.h` at sm_80 and sm_90, against a host reference, on edge values (NaN, +-inf,
//! +-0, subnormals, max finite, ties, overflow on narrowing), and the refusal of each
//! form on a `.target` too old for it.
//!
//! The reference rounds exact values itself ([`round_bf16`]: integer arithmetic on
//! mantissa and exponent), independently of the emulator's f64 round-to-odd method.
//! `tests/bf16/probe.cu` is nvcc's input for `probe.sm_80.ptx` and `probe.sm_90.ptx`,
//! which the end-to-end tests at the bottom load and run.

mod common;
use common::*;

// ---------------------------------------------------------------------------------------
// The reference
// ---------------------------------------------------------------------------------------

/// An exact finite value: (-1)^neg * mag * 2^exp.
#[derive(Clone, Copy, Debug)]
struct Exact {
    neg: bool,
    mag: u128,
    exp: i32,
}

fn is_nan(b: u16) -> bool {
    b & 0x7f80 == 0x7f80 && b & 0x7f != 0
}

fn is_inf(b: u16) -> bool {
    b & 0x7fff == 0x7f80
}

/// A finite bf16 as an exact value.
fn exact(b: u16) -> Exact {
    let e = ((b >> 7) & 0xff) as i32;
    let f = (b & 0x7f) as u128;
    let (mag, exp) = if e == 0 { (f, -133) } else { (f | 0x80, e - 134) };
    Exact { neg: b & 0x8000 != 0, mag, exp }
}

/// A finite f32 as an exact value.
fn exact32(x: f32) -> Exact {
    let b = x.to_bits();
    let e = ((b >> 23) & 0xff) as i32;
    let f = (b & 0x7f_ffff) as u128;
    let (mag, exp) = if e == 0 { (f, -149) } else { (f | 0x80_0000, e - 150) };
    Exact { neg: b >> 31 != 0, mag, exp }
}

fn product(a: Exact, b: Exact) -> Exact {
    Exact { neg: a.neg != b.neg, mag: a.mag * b.mag, exp: a.exp + b.exp }
}

fn bitlen(m: u128) -> i32 {
    128 - m.leading_zeros() as i32
}

/// x + y, exact when the two overlap; when one is below 2^-30 of the other it is
/// replaced by a value of the same sign at 2^-32 of it, which rounds the same (the larger
/// has at most 24 significant bits, so no bf16 rounding boundary lies strictly within
/// 2^-24 of it), so that the sum fits an i128.
fn add(x: Exact, y: Exact) -> (bool, i128, i32) {
    let mut t = [x, y];
    if x.mag != 0 && y.mag != 0 {
        let (tx, ty) = (x.exp + bitlen(x.mag), y.exp + bitlen(y.mag));
        let small = if tx >= ty { 1 } else { 0 };
        let top = tx.max(ty);
        if t[small].exp + bitlen(t[small].mag) < top - 30 {
            t[small] = Exact { neg: t[small].neg, mag: 1, exp: top - 32 };
        }
    }
    let e = t.iter().filter(|v| v.mag != 0).map(|v| v.exp).min().unwrap_or(0);
    let mut n: i128 = 0;
    for v in &t {
        if v.mag != 0 {
            let m = (v.mag << (v.exp - e)) as i128;
            n += if v.neg { -m } else { m };
        }
    }
    // IEEE 754's sign of an exact zero sum under round to nearest: -0 only when both
    // addends are -0.
    let zero_neg = x.mag == 0 && y.mag == 0 && x.neg && y.neg;
    (zero_neg, n, e)
}

/// A 16-bit float format for the reference: fraction bits, the exponent of the smallest
/// subnormal, the exponent bias.
#[derive(Clone, Copy)]
struct Fmt {
    frac: i32,
    min_q: i32,
    bias: i32,
}

const BF16: Fmt = Fmt { frac: 7, min_q: -133, bias: 127 };
const F16: Fmt = Fmt { frac: 10, min_q: -24, bias: 15 };

/// n * 2^e (the sign of a zero given by `zero_neg`) rounded to bf16, to nearest even.
fn round_bf16(zero_neg: bool, n: i128, e: i32) -> u16 {
    round_to(BF16, zero_neg, n, e)
}

/// n * 2^e rounded to `f`, to nearest even; overflow gives infinity.
fn round_to(f: Fmt, zero_neg: bool, n: i128, e: i32) -> u16 {
    if n == 0 {
        return if zero_neg { 0x8000 } else { 0 };
    }
    let sign = if n < 0 { 0x8000u16 } else { 0 };
    let mag = n.unsigned_abs();
    let top = e + bitlen(mag); // value < 2^top
    let q = (top - f.frac - 1).max(f.min_q); // the exponent of the result's last bit
    let mut r = if q <= e {
        mag << (e - q)
    } else if q - e >= 128 {
        0 // below half the last bit (mag < 2^127)
    } else {
        let s = (q - e) as u32;
        let (r, rem, half) = (mag >> s, mag & ((1u128 << s) - 1), 1u128 << (s - 1));
        if rem > half || (rem == half && r & 1 == 1) {
            r + 1
        } else {
            r
        }
    };
    let mut q = q;
    let hidden = 1u128 << f.frac;
    if r >= 2 * hidden {
        r >>= 1;
        q += 1;
    }
    if r < hidden {
        return sign | r as u16; // subnormal (q == min_q) or zero
    }
    let biased = q + f.frac + f.bias;
    let inf = ((2 * f.bias + 1) as u16) << f.frac;
    if biased > 2 * f.bias {
        return sign | inf;
    }
    sign | ((biased as u16) << f.frac) | (r - hidden) as u16
}

const QNAN: u16 = 0x7fff;

fn specials(op: char, a: u16, b: u16, c: u16) -> Option<u16> {
    let used: &[u16] = if op == 'f' { &[a, b, c] } else { &[a, b] };
    if !used.iter().any(|&v| is_nan(v) || is_inf(v)) {
        return None;
    }
    let f = |v: u16| f32::from_bits((v as u32) << 16) as f64;
    let r = match op {
        '+' => f(a) + f(b),
        '-' => f(a) - f(b),
        '*' => f(a) * f(b),
        _ => f(a) * f(b) + f(c),
    };
    // Any inf or NaN operand makes the result inf or NaN, which f64 gets exactly.
    assert!(!r.is_finite(), "{op} on {a:#06x} {b:#06x} {c:#06x}");
    Some(if r.is_nan() {
        QNAN
    } else if r > 0.0 {
        0x7f80
    } else {
        0xff80
    })
}

/// The reference of add, sub, mul and fma on bf16: the exact result rounded once.
fn reference(op: char, a: u16, b: u16, c: u16) -> u16 {
    if let Some(s) = specials(op, a, b, c) {
        return s;
    }
    let (x, y) = match op {
        '+' => (exact(a), exact(b)),
        '-' => (exact(a), exact(b ^ 0x8000)),
        '*' => {
            let p = product(exact(a), exact(b));
            // A product plus -0: the product's own sign survives even when it is zero.
            (p, Exact { neg: p.neg, mag: 0, exp: 0 })
        }
        _ => (product(exact(a), exact(b)), exact(c)),
    };
    let (zn, n, e) = add(x, y);
    round_bf16(zn, n, e)
}

fn reference_cvt(x: f32) -> u16 {
    if x.is_nan() {
        return QNAN;
    }
    if x.is_infinite() {
        return if x > 0.0 { 0x7f80 } else { 0xff80 };
    }
    let v = exact32(x);
    let n = v.mag as i128;
    round_bf16(v.neg, if v.neg { -n } else { n }, v.exp)
}

fn reference_minmax(min: bool, nan_mode: bool, a: u16, b: u16) -> u16 {
    let (an, bn) = (is_nan(a), is_nan(b));
    if (an && bn) || (nan_mode && (an || bn)) {
        return QNAN;
    }
    if an {
        return b;
    }
    if bn {
        return a;
    }
    let f = |v: u16| f32::from_bits((v as u32) << 16);
    let (x, y) = (f(a), f(b));
    if x == y {
        // -0 < +0
        let a_neg = a & 0x8000 != 0;
        return if a_neg == min { a } else { b };
    }
    if (x < y) == min {
        a
    } else {
        b
    }
}

#[test]
fn the_reference_rounds_as_hand_checked() {
    // 1 + 1 = 2; 1 + 2^-8 is the tie between 1 and 1 + 2^-7 (even: 1); 1 + 3 x 2^-8 ties
    // to 1 + 2^-6 (even); the smallest subnormal halves to 0 (tie, even) and 3/2 of it
    // to 2 of it; max + half an ulp overflows.
    let one = 0x3f80;
    assert_eq!(reference('+', one, one, 0), 0x4000);
    assert_eq!(reference('+', one, 0x3b80, 0), one); // 2^-8
    assert_eq!(reference('+', 0x3f81, 0x3b80, 0), 0x3f82);
    assert_eq!(reference('*', 0x0001, 0x3f00, 0), 0x0000); // 2^-133 / 2
    assert_eq!(reference('*', 0x0001, 0x3fc0, 0), 0x0002); // 1.5 x 2^-133
    assert_eq!(reference('*', 0x0003, 0x3f00, 0), 0x0002); // 1.5 x 2^-133 again
    assert_eq!(reference('+', 0x7f7f, 0x7b00, 0), 0x7f80); // max + 2^119, the midpoint: inf
    assert_eq!(reference('+', 0x7f7f, 0x7a80, 0), 0x7f7f); // max + 2^118: stays
    assert_eq!(reference('-', one, one, 0), 0x0000);
    assert_eq!(reference('f', 0x8000, 0x3f80, 0x8000), 0x8000);
    assert_eq!(reference('f', one, one, 0xff80), 0xff80);
    assert_eq!(reference_cvt(f32::from_bits(0x3f80_8000)), 0x3f80);
    assert_eq!(reference_cvt(f32::from_bits(0x3f81_8000)), 0x3f82);
    assert_eq!(reference_cvt(f32::from_bits(0x0000_8000)), 0x0000);
    assert_eq!(reference_cvt(f32::from_bits(0x0001_8000)), 0x0002);
}

// ---------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------

/// Edge values: zeros, the smallest and largest subnormals, the smallest normal, 1 and
/// its neighbours, 1.5, 2, 3, 0.5, max finite, infinities, NaNs (quiet, negative with a
/// payload, signalling), and a few ordinary values of both signs and many magnitudes.
const EDGES: &[u16] = &[
    0x0000, 0x8000, 0x0001, 0x8001, 0x007f, 0x807f, 0x0080, 0x3f80, 0xbf80, 0x3f81, 0x3f7f, 0x3fc0, 0x4000, 0x4040,
    0x3f00, 0x7f7f, 0xff7f, 0x7f00, 0x7f80, 0xff80, 0x7fc0, 0xffc1, 0x7f81, 0x1234, 0xc2f7, 0x0a0b, 0x3b80, 0xbb80,
    0x5f80, 0x2080,
];

/// A deterministic stream of bf16 bit patterns over the whole range.
fn random(n: usize, seed: u64) -> Vec<u16> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 40) as u16
        })
        .collect()
}

/// Random values whose magnitudes stay near 1 (2^-20..2^20), so that sums cancel and
/// round in the middle bits rather than being dominated by one operand.
fn random_near_one(n: usize, seed: u64) -> Vec<u16> {
    random(n, seed)
        .into_iter()
        .map(|b| (b & 0x807f) | ((0x3f80 + ((b >> 7) % 41) * 0x80 - 20 * 0x80) & 0x7f80))
        .collect()
}

/// Runs `body` once per case under `target`: operands `%a`, `%b`, `%c` of register type
/// `ty` are loaded from the case's three 8-byte slots, the body computes `%d` of type
/// `out`, which is stored to the case's result slot.
fn run_on(target: &str, ty: &str, out: &str, body: &str, cases: &[[u64; 3]]) -> Vec<u64> {
    let ptx = format!(
        ".version 7.8
.target {target}
.address_size 64
.visible .entry k(.param .u64 k_in, .param .u64 k_out, .param .u32 k_n)
{{
\t.reg .pred %p<2>;
\t.reg .b32 %r<6>;
\t.reg .b64 %rd<6>;
\t.reg .{ty} %a, %b, %c;
\t.reg .{out} %d;
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
\tld.global.{ty} %a, [%rd3];
\tld.global.{ty} %b, [%rd3+8];
\tld.global.{ty} %c, [%rd3+16];
\t{body}
\tst.global.{out} [%rd4], %d;
$L_done:
\tret;
}}
"
    );
    let mut rig = Rig::new(&ptx);
    let flat: Vec<u64> = cases.iter().flatten().copied().collect();
    let pin = rig.upload(&flat);
    let pout = rig.upload(&vec![0u64; cases.len()]);
    let n = cases.len() as u32;
    rig.launch("k", [n.div_ceil(128), 1, 1], [128, 1, 1], &[&b64(pin), &b64(pout), &n.to_le_bytes()])
        .unwrap_or_else(|e| panic!("`{body}`: {}", e.report));
    rig.download(pout, cases.len())
}

/// Checks each case's result against `want`, listing the mismatches.
fn check(
    what: &str,
    target: &str,
    ty: &str,
    out: &str,
    body: &str,
    cases: &[[u64; 3]],
    want: impl Fn(&[u64; 3]) -> u64,
) {
    let got = run_on(target, ty, out, body, cases);
    let bad: Vec<String> = cases
        .iter()
        .zip(&got)
        .filter(|(c, g)| want(c) != **g)
        .map(|(c, g)| format!("  {:#06x?} -> got {g:#x}, want {:#x}", c, want(c)))
        .collect();
    assert!(
        bad.is_empty(),
        "{what} (`{body}`): {} of {} wrong:\n{}",
        bad.len(),
        cases.len(),
        bad[..bad.len().min(24)].join("\n")
    );
}

fn triples(a: &[u16], b: &[u16], c: &[u16]) -> Vec<[u64; 3]> {
    let mut v = Vec::new();
    for &x in a {
        for &y in b {
            for &z in c {
                v.push([x as u64, y as u64, z as u64]);
            }
        }
    }
    v
}

fn zipped(a: &[u16], b: &[u16], c: &[u16]) -> Vec<[u64; 3]> {
    a.iter().zip(b).zip(c).map(|((&x, &y), &z)| [x as u64, y as u64, z as u64]).collect()
}

/// Edge triples plus random ones over the whole range and near 1.
fn cases3() -> Vec<[u64; 3]> {
    let mut v = triples(EDGES, EDGES, EDGES);
    v.extend(zipped(&random(8000, 1), &random(8000, 2), &random(8000, 3)));
    v.extend(zipped(&random_near_one(8000, 4), &random_near_one(8000, 5), &random_near_one(8000, 6)));
    v
}

fn cases2() -> Vec<[u64; 3]> {
    let mut v = triples(EDGES, EDGES, &[0]);
    v.extend(zipped(&random(8000, 7), &random(8000, 8), &[0; 8000]));
    v.extend(zipped(&random_near_one(8000, 9), &random_near_one(8000, 10), &[0; 8000]));
    v
}

/// The same cases packed two to a .b32 (element 0 from the case, element 1 from the
/// case 7 positions on), so that a swap of halves or a wrong lane shows.
fn packed(cases: &[[u64; 3]]) -> Vec<[u64; 3]> {
    let n = cases.len();
    (0..n)
        .map(|i| {
            let j = (i + 7) % n;
            [0, 1, 2].map(|k| cases[i][k] | cases[j][k] << 16)
        })
        .collect()
}

fn per_half(c: &[u64; 3], f: impl Fn(u16, u16, u16) -> u16) -> u64 {
    let h = |x: u64, k: u32| (x >> (16 * k)) as u16;
    (0..2).map(|k| (f(h(c[0], k), h(c[1], k), h(c[2], k)) as u64) << (16 * k)).sum()
}

// ---------------------------------------------------------------------------------------
// Arithmetic
// ---------------------------------------------------------------------------------------

#[test]
fn fma_rn_bf16_rounds_once() {
    let cases = cases3();
    check("fma.rn.bf16", "sm_80", "b16", "b16", "fma.rn.bf16 %d, %a, %b, %c;", &cases, |c| {
        reference('f', c[0] as u16, c[1] as u16, c[2] as u16) as u64
    });
    check("fma.rn.bf16x2", "sm_80", "b32", "b32", "fma.rn.bf16x2 %d, %a, %b, %c;", &packed(&cases), |c| {
        per_half(c, |a, b, c| reference('f', a, b, c))
    });
}

#[test]
fn fma_rn_bf16_hand_checked() {
    // a*b + c with the tie decided by a far smaller addend: 1 + 2^-8 (a tie) + 2^-100 must
    // round up, which a double rounding through f32 or f64 would miss.
    let cases: &[(u16, u16, u16, u16)] = &[
        (0x3f81, 0x3f80, 0x0d80, 0x3f81), // (1 + 2^-7) * 1 + 2^-100: exact-ish, stays
        (0x3f80, 0x3f80, 0x3b80, 0x3f80), // 1 + 2^-8: tie, even (1)
        (0x3f81, 0x3f81, 0x0000, 0x3f82), // (1 + 2^-7)^2 = 1 + 2^-6 + 2^-14: rounds to 1 + 2^-6
        (0x3f80, 0x3b80, 0x3f80, 0x3f80), // 1 + 1 * 2^-8: tie, even
        (0x3f80, 0x7f7f, 0x7f7f, 0x7f80), // max + max: overflow to inf
        (0xff80, 0x0000, 0x3f80, QNAN),   // -inf * 0: NaN, the canonical one
        (0x0001, 0x3f00, 0x0000, 0x0000), // half the smallest subnormal: tie to even 0
        (0x0001, 0x3f80, 0x0001, 0x0002), // subnormals kept, not flushed
        (0x8000, 0x3f80, 0x0000, 0x0000), // -0 + +0 = +0
        (0x8000, 0x3f80, 0x8000, 0x8000), // -0 + -0 = -0
    ];
    let c: Vec<[u64; 3]> = cases.iter().map(|&(a, b, c, _)| [a as u64, b as u64, c as u64]).collect();
    let got = run_on("sm_80", "b16", "b16", "fma.rn.bf16 %d, %a, %b, %c;", &c);
    for (&(a, b, cc, want), g) in cases.iter().zip(&got) {
        assert_eq!(*g, want as u64, "fma.rn.bf16 {a:#06x} * {b:#06x} + {cc:#06x}");
        assert_eq!(reference('f', a, b, cc), want, "the reference on {a:#06x} * {b:#06x} + {cc:#06x}");
    }
    // A tie broken by a far smaller addend: (1 + 2^-7) * 1.5 = 1.5 + 2^-7 + 2^-8 is the
    // midpoint of 0x3fc1 (odd) and 0x3fc2: alone it goes to 0x3fc2, with -2^-100 added
    // down to 0x3fc1 (a rounding of the product first would lose that).
    let got =
        run_on("sm_80", "b16", "b16", "fma.rn.bf16 %d, %a, %b, %c;", &[[0x3f81, 0x3fc0, 0x8d80], [0x3f81, 0x3fc0, 0]]);
    assert_eq!(got, [0x3fc1, 0x3fc2]);
}

/// A finite f16 as an exact value.
fn exact_f16(b: u16) -> Exact {
    let e = ((b >> 10) & 0x1f) as i32;
    let f = (b & 0x3ff) as u128;
    let (mag, exp) = if e == 0 { (f, -24) } else { (f | 0x400, e - 25) };
    Exact { neg: b & 0x8000 != 0, mag, exp }
}

#[test]
fn fma_rn_f16_rounds_once_in_the_same_code() {
    // fma.rn.f16 runs in the bf16 code (exec/half.rs, one implementation for both
    // formats); before it, the loader took it and ran it as f64 on f16 bits.
    let finite: Vec<u16> = random(20000, 41).into_iter().filter(|b| b & 0x7c00 != 0x7c00).collect();
    let n = finite.len() / 3;
    let mut cases = zipped(&finite[..n], &finite[n..2 * n], &finite[2 * n..3 * n]);
    let edges: &[u16] =
        &[0x0000, 0x8000, 0x0001, 0x03ff, 0x0400, 0x3c00, 0x3c01, 0xbc00, 0x7bff, 0xfbff, 0x1400, 0x0200];
    cases.extend(triples(edges, edges, edges));
    check("fma.rn.f16", "sm_80", "b16", "b16", "fma.rn.f16 %d, %a, %b, %c;", &cases, |k| {
        let (a, b, c) = (k[0] as u16, k[1] as u16, k[2] as u16);
        let (zn, n, e) = add(product(exact_f16(a), exact_f16(b)), exact_f16(c));
        round_to(F16, zn, n, e) as u64
    });
    // Hand-checked: max + max overflows; 1 + 2^-11 ties to 1; 2^-24 / 2 ties to 0.
    let got = run_on(
        "sm_80",
        "b16",
        "b16",
        "fma.rn.f16 %d, %a, %b, %c;",
        &[[0x3c00, 0x7bff, 0x7bff], [0x3c00, 0x1000, 0x3c00], [0x0001, 0x3800, 0x0000], [0x7c00, 0x0000, 0x3c00]],
    );
    assert_eq!(got, [0x7c00, 0x3c00, 0x0000, 0x7fff]);
}

#[test]
fn add_sub_mul_bf16_on_sm_90() {
    let cases = cases2();
    for (op, ch) in [("add", '+'), ("sub", '-'), ("mul", '*')] {
        for rn in ["", ".rn"] {
            let body = format!("{op}{rn}.bf16 %d, %a, %b;");
            check(&body, "sm_90", "b16", "b16", &body, &cases, |c| reference(ch, c[0] as u16, c[1] as u16, 0) as u64);
            let body = format!("{op}{rn}.bf16x2 %d, %a, %b;");
            check(&body, "sm_90", "b32", "b32", &body, &packed(&cases), |c| {
                per_half(c, |a, b, _| reference(ch, a, b, 0))
            });
        }
    }
}

#[test]
fn min_max_bf16_and_their_nan_forms() {
    let cases = cases2();
    for (op, min) in [("min", true), ("max", false)] {
        for nan in [false, true] {
            let m = if nan { ".NaN" } else { "" };
            let body = format!("{op}{m}.bf16 %d, %a, %b;");
            check(&body, "sm_80", "b16", "b16", &body, &cases, |c| {
                reference_minmax(min, nan, c[0] as u16, c[1] as u16) as u64
            });
            let body = format!("{op}{m}.bf16x2 %d, %a, %b;");
            check(&body, "sm_80", "b32", "b32", &body, &packed(&cases), |c| {
                per_half(c, |a, b, _| reference_minmax(min, nan, a, b))
            });
        }
    }
    // Hand-checked: -0 < +0 both ways; one NaN gives the other operand; two give 0x7fff.
    let got = run_on(
        "sm_80",
        "b16",
        "b16",
        "min.bf16 %d, %a, %b;",
        &[[0, 0x8000, 0], [0x8000, 0, 0], [0xffc1, 0x3f80, 0], [0x7fc0, 0xffc1, 0]],
    );
    assert_eq!(got, [0x8000, 0x8000, 0x3f80, 0x7fff]);
    let got = run_on("sm_80", "b16", "b16", "max.NaN.bf16 %d, %a, %b;", &[[0, 0x8000, 0], [0xffc1, 0x3f80, 0]]);
    assert_eq!(got, [0, 0x7fff]);
}

#[test]
fn neg_abs_bf16_flip_and_clear_the_sign() {
    let all: Vec<[u64; 3]> = (0..=0xffffu64).map(|b| [b, 0, 0]).collect();
    check("neg.bf16", "sm_80", "b16", "b16", "neg.bf16 %d, %a;", &all, |c| c[0] ^ 0x8000);
    check("abs.bf16", "sm_80", "b16", "b16", "abs.bf16 %d, %a;", &all, |c| c[0] & 0x7fff);
    let p = packed(&all);
    check("neg.bf16x2", "sm_80", "b32", "b32", "neg.bf16x2 %d, %a;", &p, |c| c[0] ^ 0x8000_8000);
    check("abs.bf16x2", "sm_80", "b32", "b32", "abs.bf16x2 %d, %a;", &p, |c| c[0] & 0x7fff_7fff);
}

#[test]
fn nvcc_sm_80_lowering_of_hadd_hsub_hmul_is_exact() {
    // On sm_80 nvcc makes __hadd(a, b) fma.rn.bf16 d, a, 1.0, b; __hsub(a, b)
    // fma.rn.bf16 d, b, -1.0, a; __hmul(a, b) fma.rn.bf16 d, a, b, -0.0 (its PTX in
    // tests/bf16/probe.sm_80.ptx): each must equal the sm_90 instruction.
    let cases = cases2();
    let lowered = [
        ('+', "{ .reg .b16 c1; mov.b16 c1, 0x3f80U; fma.rn.bf16 %d, %a, c1, %b; }"),
        ('-', "{ .reg .b16 c1; mov.b16 c1, 0xbf80U; fma.rn.bf16 %d, %b, c1, %a; }"),
        ('*', "{ .reg .b16 c1; mov.b16 c1, 0x8000U; fma.rn.bf16 %d, %a, %b, c1; }"),
    ];
    for (ch, body) in lowered {
        check(body, "sm_80", "b16", "b16", body, &cases, |c| reference(ch, c[0] as u16, c[1] as u16, 0) as u64);
    }
}

fn fcmp(c: &str, a: u16, b: u16) -> bool {
    let f = |v: u16| f32::from_bits((v as u32) << 16);
    let (x, y) = (f(a), f(b));
    let nan = x.is_nan() || y.is_nan();
    match c {
        "eq" => !nan && x == y,
        "ne" => !nan && x != y,
        "lt" => !nan && x < y,
        "le" => !nan && x <= y,
        "gt" => !nan && x > y,
        "ge" => !nan && x >= y,
        "equ" => nan || x == y,
        "neu" => nan || x != y,
        "ltu" => nan || x < y,
        "leu" => nan || x <= y,
        "gtu" => nan || x > y,
        "geu" => nan || x >= y,
        "num" => !nan,
        "nan" => nan,
        _ => unreachable!(),
    }
}

const CMPS: [&str; 14] = ["eq", "ne", "lt", "le", "gt", "ge", "equ", "neu", "ltu", "leu", "gtu", "geu", "num", "nan"];

#[test]
fn setp_bf16_every_comparison_on_sm_90() {
    let cases = triples(EDGES, EDGES, &[0]);
    for c in CMPS {
        let body = format!("{{ .reg .pred q; setp.{c}.bf16 q, %a, %b; selp.u16 %d, 1, 0, q; }}");
        check(&body, "sm_90", "b16", "b16", &body, &cases, |k| fcmp(c, k[0] as u16, k[1] as u16) as u64);
    }
}

#[test]
fn set_f32_and_bf16_sources_give_one_or_all_ones() {
    let cases = triples(EDGES, EDGES, &[0]);
    for c in CMPS {
        // nvcc's sm_80 comparison: the bf16 bits moved into the upper half of a .b32,
        // compared as f32, 1.0f when true.
        let body =
            format!("{{ .reg .b32 x, y; mov.b32 x, {{0, %a}}; mov.b32 y, {{0, %b}}; set.{c}.f32.f32 %d, x, y; }}");
        check(&body, "sm_80", "b16", "b32", &body, &cases, |k| {
            if fcmp(c, k[0] as u16, k[1] as u16) {
                0x3f80_0000
            } else {
                0
            }
        });
        let body = format!("set.{c}.u32.bf16 %d, %a, %b;");
        check(&body, "sm_90", "b16", "b32", &body, &cases, |k| {
            if fcmp(c, k[0] as u16, k[1] as u16) {
                0xffff_ffff
            } else {
                0
            }
        });
    }
    // __hisnan at sm_90: bf16 1.0 or 0.
    check(
        "set.nan.bf16.bf16",
        "sm_90",
        "b16",
        "b16",
        "set.nan.bf16.bf16 %d, %a, %a;",
        &triples(EDGES, &[0], &[0]),
        |k| {
            if is_nan(k[0] as u16) {
                0x3f80
            } else {
                0
            }
        },
    );
    let got = run_on("sm_90", "b16", "b16", "set.lt.s16.bf16 %d, %a, %b;", &[[0x3f80, 0x4000, 0], [0x4000, 0x3f80, 0]]);
    assert_eq!(got, [0xffff, 0]);
}

// ---------------------------------------------------------------------------------------
// Conversions
// ---------------------------------------------------------------------------------------

fn f32_cases() -> Vec<u32> {
    let mut v: Vec<u32> = vec![
        0,
        0x8000_0000,
        1,
        0x8000_0001,
        0x0000_8000,
        0x0001_8000,
        0x0000_7fff,
        0x007f_ffff,
        0x0080_0000,
        0x3f80_0000,
        0x3f80_8000,
        0x3f81_8000,
        0x3f80_8001,
        0x3f80_7fff,
        0x7f7f_7fff,
        0x7f7f_8000,
        0x7f7f_ffff,
        0xff7f_ffff,
        0x7f80_0000,
        0xff80_0000,
        0x7fc0_0000,
        0xffc0_0001,
        0x7f80_0001,
        0x7fbf_ffff,
    ];
    let mut s = 11u64;
    for _ in 0..20000 {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let r = (s >> 32) as u32;
        v.push(r);
        v.push((r & 0xffff_0000) | 0x8000); // a tie
    }
    v
}

#[test]
fn cvt_rn_bf16_f32_rounds_to_nearest_even() {
    let cases: Vec<[u64; 3]> = f32_cases().iter().map(|&x| [x as u64, 0, 0]).collect();
    check("cvt.rn.bf16.f32", "sm_80", "f32", "b16", "cvt.rn.bf16.f32 %d, %a;", &cases, |c| {
        reference_cvt(f32::from_bits(c[0] as u32)) as u64
    });
    // Hand-checked: ties both ways, max finite rounding to inf at the midpoint, a NaN.
    let table: &[(u32, u16)] = &[
        (0x3f80_8000, 0x3f80),
        (0x3f81_8000, 0x3f82),
        (0x3f80_8001, 0x3f81),
        (0x7f7f_7fff, 0x7f7f),
        (0x7f7f_8000, 0x7f80),
        (0x0000_8000, 0x0000),
        (0x0001_8000, 0x0002),
        (0xffc0_0001, 0x7fff),
    ];
    let c: Vec<[u64; 3]> = table.iter().map(|&(x, _)| [x as u64, 0, 0]).collect();
    let got = run_on("sm_80", "f32", "b16", "cvt.rn.bf16.f32 %d, %a;", &c);
    for (&(x, want), g) in table.iter().zip(&got) {
        assert_eq!(*g, want as u64, "cvt.rn.bf16.f32 {x:#010x}");
    }
}

#[test]
fn cvt_rn_bf16x2_f32_puts_a_in_the_upper_half() {
    let xs = f32_cases();
    let cases: Vec<[u64; 3]> = xs.iter().zip(xs.iter().rev()).map(|(&a, &b)| [a as u64, b as u64, 0]).collect();
    check("cvt.rn.bf16x2.f32", "sm_80", "f32", "b32", "cvt.rn.bf16x2.f32 %d, %a, %b;", &cases, |c| {
        let h = |x: u64| reference_cvt(f32::from_bits(x as u32)) as u64;
        h(c[0]) << 16 | h(c[1])
    });
    let got = run_on(
        "sm_80",
        "f32",
        "b32",
        "cvt.rn.bf16x2.f32 %d, %a, %b;",
        &[[1.0f32.to_bits() as u64, 2.0f32.to_bits() as u64, 0]],
    );
    assert_eq!(got, [0x3f80_4000]);
}

/// `cvt.rn.f16x2.f32` (nvcc's `__floats2half2_rn` from sm_80; cuda/half.cuh's pack2 for
/// f16): the same packing as the bf16x2 form, each half rounded to nearest even as
/// `half::f16::from_f32` does (overflow to inf from 65520), a NaN to the canonical 0x7fff.
#[test]
fn cvt_rn_f16x2_f32_puts_a_in_the_upper_half() {
    let xs = f32_cases();
    let cases: Vec<[u64; 3]> = xs.iter().zip(xs.iter().rev()).map(|(&a, &b)| [a as u64, b as u64, 0]).collect();
    let f16_ref = |x: u64| {
        let x = f32::from_bits(x as u32);
        if x.is_nan() {
            0x7fff
        } else {
            half::f16::from_f32(x).to_bits() as u64
        }
    };
    check("cvt.rn.f16x2.f32", "sm_80", "f32", "b32", "cvt.rn.f16x2.f32 %d, %a, %b;", &cases, |c| {
        f16_ref(c[0]) << 16 | f16_ref(c[1])
    });
    // Hand-checked: 1.0 (0x3c00) up, 2.0 (0x4000) down; 65520 is the tie that overflows,
    // 65519 rounds down to the max 65504 (0x7bff); the f16 tie 1 + 2^-11 goes to even.
    let pairs: &[(f32, f32, u32)] =
        &[(1.0, 2.0, 0x3c00_4000), (65520.0, 65519.0, 0x7c00_7bff), (1.0 + 2f32.powi(-11), -0.0, 0x3c00_8000)];
    let c: Vec<[u64; 3]> = pairs.iter().map(|&(a, b, _)| [a.to_bits() as u64, b.to_bits() as u64, 0]).collect();
    let got = run_on("sm_80", "f32", "b32", "cvt.rn.f16x2.f32 %d, %a, %b;", &c);
    for (&(a, b, want), g) in pairs.iter().zip(&got) {
        assert_eq!(*g, want as u64, "cvt.rn.f16x2.f32 {a} {b}");
    }
}

#[test]
fn bf16_to_f32_is_exact_both_ways_nvcc_writes_it() {
    let all: Vec<[u64; 3]> = (0..=0xffffu64).map(|b| [b, 0, 0]).collect();
    // cvt.f32.bf16 (nvcc at sm_90): exact; a NaN gives the canonical f32 NaN, as every
    // cvt to f32 does here.
    check("cvt.f32.bf16", "sm_80", "b16", "f32", "cvt.f32.bf16 %d, %a;", &all, |c| {
        if is_nan(c[0] as u16) {
            0x7fff_ffff
        } else {
            c[0] << 16
        }
    });
    // The sm_80 idiom: the bits moved into the upper half (a move: NaNs keep their bits).
    check("mov.b32 {0, h}", "sm_80", "b16", "f32", "mov.b32 %d, {0, %a};", &all, |c| c[0] << 16);
    // And the other direction's idiom: the upper half of an f32 moved out.
    let f: Vec<[u64; 3]> = f32_cases().iter().map(|&x| [x as u64, 0, 0]).collect();
    check("mov.b32 {lo, hi}", "sm_80", "f32", "b16", "{ .reg .b16 lo; mov.b32 {lo, %d}, %a; }", &f, |c| c[0] >> 16);
}

#[test]
fn round_trip_of_every_bf16_through_f32() {
    let all: Vec<[u64; 3]> = (0..=0xffffu64).map(|b| [b, 0, 0]).collect();
    check(
        "cvt.rn.bf16.f32 of cvt.f32.bf16",
        "sm_80",
        "b16",
        "b16",
        "{ .reg .f32 t; cvt.f32.bf16 t, %a; cvt.rn.bf16.f32 %d, t; }",
        &all,
        |c| if is_nan(c[0] as u16) { QNAN as u64 } else { c[0] },
    );
}

// ---------------------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------------------

fn load(target: &str, reg: &str, body: &str) -> Result<(), String> {
    let ptx = format!(
        ".version 7.8\n.target {target}\n.address_size 64\n.visible .entry k(.param .u64 p)\n{{\n\t.reg .b16 %h<4>;\n\t.reg .b32 %r<4>;\n\t.reg .f32 %f<10>;\n\t.reg .b64 %rd<2>;\n\t.reg .{reg} %x;\n\tld.param.u64 %rd1, [p];\n\t{body}\n\tret;\n}}\n"
    );
    mp_emu::ptx::Module::load(&ptx).map(|_| ()).map_err(|e| e.to_string())
}

#[test]
fn each_form_is_refused_below_its_target() {
    let frag_f = "{%f0, %f1, %f2, %f3, %f4, %f5, %f6, %f7}";
    let frag_ab = "{%r0, %r1, %r2, %r3}";
    let mma =
        format!("wmma.mma.sync.aligned.row.col.m16n16k16.f32.bf16.bf16.f32 {frag_f}, {frag_ab}, {frag_ab}, {frag_f};");
    let forms: Vec<(u32, String)> = vec![
        (80, "cvt.rn.bf16.f32 %h0, %f0;".into()),
        (80, "cvt.rn.bf16x2.f32 %r0, %f0, %f1;".into()),
        (80, "cvt.rn.f16x2.f32 %r0, %f0, %f1;".into()),
        (80, "cvt.f32.bf16 %f0, %h0;".into()),
        (80, "fma.rn.bf16 %h0, %h1, %h2, %h3;".into()),
        (80, "fma.rn.bf16x2 %r0, %r1, %r2, %r3;".into()),
        (80, "min.bf16 %h0, %h1, %h2;".into()),
        (80, "max.NaN.bf16x2 %r0, %r1, %r2;".into()),
        (80, "neg.bf16 %h0, %h1;".into()),
        (80, "abs.bf16x2 %r0, %r1;".into()),
        (90, "add.bf16 %h0, %h1, %h2;".into()),
        (90, "sub.rn.bf16x2 %r0, %r1, %r2;".into()),
        (90, "mul.bf16 %h0, %h1, %h2;".into()),
        (90, "setp.gt.bf16 %x, %h1, %h2;".into()),
        (90, "set.nan.bf16.bf16 %h0, %h1, %h1;".into()),
        (80, format!("wmma.load.a.sync.aligned.row.m16n16k16.global.bf16 {frag_ab}, [%rd1], 16;")),
        (80, format!("wmma.load.b.sync.aligned.col.m16n16k16.shared.bf16 {frag_ab}, [%rd1], 16;")),
        (80, mma),
    ];
    for (sm, body) in &forms {
        let reg = if body.starts_with("setp") { "pred" } else { "bf16" };
        // Loads at its own target (so the refusal below is the target's doing)...
        load(&format!("sm_{sm}"), reg, body).unwrap_or_else(|e| panic!("`{body}` at sm_{sm}: {e}"));
        // ...and is refused at the one before, naming what it needs.
        let older = if *sm == 90 { "sm_89" } else { "sm_75" };
        let e = load(older, reg, body).expect_err(&format!("`{body}` loaded at {older}"));
        assert!(e.contains(&format!("requires sm_{sm}")), "`{body}` at {older}: {e}");
    }
}

#[test]
fn forms_nvcc_does_not_emit_are_refused() {
    for body in [
        "cvt.rz.bf16.f32 %h0, %f0;",
        "cvt.rn.relu.bf16.f32 %h0, %f0;",
        "cvt.rn.satfinite.bf16.f32 %h0, %f0;",
        "cvt.bf16.f32 %h0, %f0;",
        "cvt.rn.f32.bf16 %f0, %h0;",
        "cvt.ftz.f32.bf16 %f0, %h0;",
        "cvt.rn.bf16.f16 %h0, %h1;",
        "fma.bf16 %h0, %h1, %h2, %h3;",
        "fma.rn.relu.bf16 %h0, %h1, %h2, %h3;",
        "fma.rn.ftz.bf16 %h0, %h1, %h2, %h3;",
        "fma.rn.sat.f16 %h0, %h1, %h2, %h3;",
        "add.rz.bf16 %h0, %h1, %h2;",
        "min.xorsign.abs.bf16 %h0, %h1, %h2;",
        "setp.lt.ftz.bf16 %x, %h1, %h2;",
        "setp.lt.bf16x2 %x, %r1, %r2;",
        "set.lt.and.u32.bf16 %r0, %h1, %h2, %x;",
        "set.lt.f16.f16 %h0, %h1, %h2;",
        "mad.rn.bf16 %h0, %h1, %h2, %h3;",
        "div.rn.bf16 %h0, %h1, %h2;",
        "add.f16 %h0, %h1, %h2;",
    ] {
        let e = load("sm_90", "pred", body).expect_err(body);
        assert!(e.contains("unsupported instruction form") || e.contains("not a register"), "`{body}`: {e}");
    }
}

#[test]
fn bf16_registers_are_declared_and_moved() {
    // .reg .bf16 / .bf16x2 declarations, ld/st/mov on them.
    let ptx = format!(
        "{HEADER}.visible .entry k(.param .u64 p)
{{
\t.reg .bf16 %h<3>;
\t.reg .bf16x2 %x<3>;
\t.reg .b64 %rd<2>;
\tld.param.u64 %rd1, [p];
\tld.global.b16 %h0, [%rd1];
\tmov.b16 %h1, %h0;
\tneg.bf16 %h2, %h1;
\tst.global.b16 [%rd1+2], %h2;
\tld.global.b32 %x0, [%rd1+4];
\tmov.b32 %x1, {{%h0, %h2}};
\tfma.rn.bf16x2 %x2, %x0, %x1, %x0;
\tst.global.b32 [%rd1+8], %x2;
\tret;
}}
"
    );
    let mut rig = Rig::new(&ptx);
    // 1.5, then (1, 2) packed (low, high) times (1.5, -1.5) plus (1, 2): (2.5, -1).
    let p = rig.upload(&[0x3fc0u16, 0, 0x3f80, 0x4000, 0, 0]);
    rig.launch("k", [1, 1, 1], [1, 1, 1], &[&b64(p)]).unwrap();
    let got: Vec<u16> = rig.download(p, 6);
    assert_eq!(got, [0x3fc0, 0xbfc0, 0x3f80, 0x4000, 0x4020, 0xbf80]);
}

// ---------------------------------------------------------------------------------------
// wmma
// ---------------------------------------------------------------------------------------

/// A bf16 value with a few mantissa bits and exponents over a wide range (products and
/// sums of them are then exact or near it, and the order of accumulation matters little).
fn wmma_inputs(n: usize, seed: u64, spread: u32) -> Vec<u16> {
    random(n, seed)
        .into_iter()
        .map(|r| {
            let e = 127 + (r as u32 % (2 * spread + 1)) as i32 - spread as i32;
            (r & 0x8000) | ((e as u16) << 7) | ((r >> 3) & 0x70)
        })
        .collect()
}

fn bf(b: u16) -> f64 {
    f32::from_bits((b as u32) << 16) as f64
}

/// C (16x16 f32, row-major, ldc 16) = A B + C in f64 from the same bf16 inputs, A and B
/// stored row- or column-major with the given strides.
#[allow(clippy::too_many_arguments)]
fn host_mma(a: &[u16], lda: usize, a_row: bool, b: &[u16], ldb: usize, b_row: bool, c: &[f32]) -> Vec<(f64, f64)> {
    let at = |m: usize, k: usize| if a_row { a[m * lda + k] } else { a[k * lda + m] };
    let bt = |k: usize, n: usize| if b_row { b[k * ldb + n] } else { b[n * ldb + k] };
    let mut out = vec![(0f64, 0f64); 256];
    for m in 0..16 {
        for n in 0..16 {
            let p = |k: usize| bf(at(m, k)) * bf(bt(k, n));
            let c = c[m * 16 + n] as f64;
            out[m * 16 + n] = (c + (0..16).map(p).sum::<f64>(), c.abs() + (0..16).map(|k| p(k).abs()).sum::<f64>());
        }
    }
    out
}

/// Each element within the error bound of 16 f32 additions: 16 half-ulps of the sum of
/// the terms' magnitudes.
fn close(got: &[f32], want: &[(f64, f64)], what: &str) {
    for (i, (&g, &(w, mag))) in got.iter().zip(want).enumerate() {
        assert!(
            ((g as f64) - w).abs() <= mag * 16.0 * 2f64.powi(-24),
            "{what}: element {i} ({}, {}) got {g}, want {w}",
            i / 16,
            i % 16
        );
    }
}

#[test]
fn nvcc_wmma_bf16_kernels_match_a_host_matmul() {
    for file in ["probe.sm_80.ptx", "probe.sm_90.ptx"] {
        let ptx = std::fs::read_to_string(format!("{}/tests/bf16/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        for (kernel, row) in [("wmma_rr", true), ("wmma_cc", false)] {
            let mut rig = Rig::new(&ptx);
            // Strides of 24 elements (48 bytes, a multiple of 16) so that a stride mixed
            // up with 16 shows.
            let (lda, ldb, ldc) = (24usize, 24usize, 20usize);
            let a = wmma_inputs(16 * lda, 21, 20);
            let b = wmma_inputs(16 * ldb, 22, 20);
            let c0: Vec<f32> = (0..16 * ldc).map(|i| (i % 7) as f32 - 3.0).collect();
            let (pa, pb, pc) = (rig.upload(&a), rig.upload(&b), rig.upload(&c0));
            let args: [&[u8]; 6] = [
                &b64(pa),
                &b64(pb),
                &b64(pc),
                &(lda as u32).to_le_bytes(),
                &(ldb as u32).to_le_bytes(),
                &(ldc as u32).to_le_bytes(),
            ];
            rig.launch(kernel, [1, 1, 1], [32, 1, 1], &args)
                .unwrap_or_else(|e| panic!("{file} {kernel}: {}", e.report));
            let got: Vec<f32> = rig.download(pc, 16 * ldc);
            let c16: Vec<f32> = (0..256).map(|i| c0[(i / 16) * ldc + i % 16]).collect();
            let want = host_mma(&a, lda, row, &b, ldb, row, &c16);
            let got16: Vec<f32> = (0..256).map(|i| got[(i / 16) * ldc + i % 16]).collect();
            close(&got16, &want, &format!("{file} {kernel}"));
            // Columns past 16 of each row untouched.
            for r in 0..16 {
                assert_eq!(
                    &got[r * ldc + 16..r * ldc + ldc],
                    &c0[r * ldc + 16..r * ldc + ldc],
                    "{file} {kernel}: row {r} past the tile"
                );
            }
        }
    }
}

#[test]
fn wmma_bf16_products_are_exact_and_each_sum_rounds_once() {
    // Hand-written: shared-memory fragments, row x col, one product per output element
    // that needs bf16's range (2^100 * 2^100 and 2^-100 * 2^-100 leave f32's range before
    // they are added), and sums that round once from the exact value.
    let ptx = format!(
        "{HEADER}.visible .entry k(.param .u64 pa, .param .u64 pb, .param .u64 pc)
{{
\t.reg .pred %p<2>;
\t.reg .b32 %r<14>;
\t.reg .f32 %f<20>;
\t.reg .b64 %rd<4>;
\t.reg .b16 %h;
\t.shared .align 32 .b8 sa[512];
\t.shared .align 32 .b8 sb[512];
\tld.param.u64 %rd1, [pa];
\tld.param.u64 %rd2, [pb];
\tld.param.u64 %rd3, [pc];
\tmov.u32 %r10, %laneid;
\tmov.u32 %r11, 0;
$L_copy:
\tshl.b32 %r9, %r10, 1;
\tadd.s32 %r9, %r9, %r11;
\tcvt.u64.u32 %rd0, %r9;
\tadd.s64 %rd0, %rd0, %rd1;
\tld.global.b16 %h, [%rd0];
\tmov.u32 %r12, sa;
\tadd.s32 %r12, %r12, %r9;
\tst.shared.b16 [%r12], %h;
\tsub.s64 %rd0, %rd0, %rd1;
\tadd.s64 %rd0, %rd0, %rd2;
\tld.global.b16 %h, [%rd0];
\tmov.u32 %r13, sb;
\tadd.s32 %r13, %r13, %r9;
\tst.shared.b16 [%r13], %h;
\tadd.s32 %r11, %r11, 64;
\tsetp.lt.u32 %p1, %r11, 512;
\t@%p1 bra $L_copy;
\tbar.warp.sync -1;
\twmma.load.a.sync.aligned.row.m16n16k16.shared.bf16 {{%r0, %r1, %r2, %r3}}, [sa], 16;
\twmma.load.b.sync.aligned.col.m16n16k16.shared.bf16 {{%r4, %r5, %r6, %r7}}, [sb], 16;
\twmma.load.c.sync.aligned.row.m16n16k16.global.f32 {{%f0, %f1, %f2, %f3, %f4, %f5, %f6, %f7}}, [%rd3], 16;
\twmma.mma.sync.aligned.row.col.m16n16k16.f32.bf16.bf16.f32 {{%f8, %f9, %f10, %f11, %f12, %f13, %f14, %f15}}, {{%r0, %r1, %r2, %r3}}, {{%r4, %r5, %r6, %r7}}, {{%f0, %f1, %f2, %f3, %f4, %f5, %f6, %f7}};
\twmma.store.d.sync.aligned.row.m16n16k16.global.f32 [%rd3], {{%f8, %f9, %f10, %f11, %f12, %f13, %f14, %f15}}, 16;
\tret;
}}
"
    );
    let mut rig = Rig::new(&ptx);
    // A row-major 16x16 and B column-major (B[k][n] at n * 16 + k): zero except for
    // A[i][i] and B[i][i], so that D[i][i] = C[i][i] + A[i][i] B[i][i] and every other
    // element of D is 0.
    let mut a = vec![0u16; 256];
    let mut b = vec![0u16; 256];
    let mut c = vec![0f32; 256];
    let two = |e: i32| (((127 + e) as u16) << 7) & 0x7f80;
    // (0, 0): 2^100 * 2^100 + 1: a product beyond f32's range, which the f32 sum rounds
    // to infinity.
    a[0] = two(100);
    b[0] = two(100);
    c[0] = 1.0;
    // (1, 1): 2^-75 * 2^-75 = 2^-150, half the smallest f32 subnormal, plus C = 2^-149:
    // exactly 1.5 x 2^-149, a tie that goes to 2^-148; a product rounded to f32 first
    // (to 0, a tie to even) would leave 2^-149.
    a[17] = two(-75);
    b[17] = two(-75);
    c[17] = f32::from_bits(1);
    // (2, 2): C = 1 + 2^-23 (odd last bit), plus 2^-24 exactly (a tie: to even, 1 + 2^-22).
    a[32 + 2] = two(-12);
    b[2 * 16 + 2] = two(-12);
    c[2 * 16 + 2] = f32::from_bits(0x3f80_0001);
    // (3, 3): 1.25 * 2^-24 + 1: 5/8 of an ulp above 1, up to 1 + 2^-23.
    a[48 + 3] = 0x3fa0; // 1.25
    b[3 * 16 + 3] = two(-24);
    c[3 * 16 + 3] = 1.0;
    let (pa, pb, pc) = (rig.upload(&a), rig.upload(&b), rig.upload(&c));
    rig.launch("k", [1, 1, 1], [32, 1, 1], &[&b64(pa), &b64(pb), &b64(pc)]).unwrap_or_else(|e| panic!("{}", e.report));
    let got: Vec<f32> = rig.download(pc, 256);
    assert_eq!(got[0], f32::INFINITY);
    assert_eq!(got[17].to_bits(), 2);
    assert_eq!(got[2 * 16 + 2].to_bits(), 0x3f80_0002);
    assert_eq!(got[3 * 16 + 3].to_bits(), 0x3f80_0001);
    for (i, &g) in got.iter().enumerate() {
        if ![0, 17, 34, 51].contains(&i) {
            assert_eq!(g, 0.0, "element {i}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// nvcc's own PTX, end to end
// ---------------------------------------------------------------------------------------

fn probe(file: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/bf16/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn nvcc_probe_loads_at_its_target_and_not_below() {
    for (file, target, older) in
        [("probe.sm_80.ptx", ".target sm_80", ".target sm_75"), ("probe.sm_90.ptx", ".target sm_90", ".target sm_89")]
    {
        let ptx = probe(file);
        assert!(ptx.contains(target), "{file}");
        mp_emu::ptx::Module::load(&ptx).unwrap_or_else(|e| panic!("{file}: {e}"));
        let e = mp_emu::ptx::Module::load(&ptx.replace(target, older)).map(|_| ()).expect_err(file);
        assert!(e.to_string().contains("requires sm_"), "{file} at {older}: {e}");
    }
}

#[test]
fn nvcc_probe_conversions_and_arithmetic_run_as_the_reference() {
    let n = 4096usize;
    let mut xs: Vec<f32> = f32_cases().into_iter().take(n).map(f32::from_bits).collect();
    xs[0] = f32::from_bits(0x3f80_8000); // a tie
    let a = random(n + 1, 31);
    let b = random_near_one(n, 32);
    let c = random(n, 33);
    for file in ["probe.sm_80.ptx", "probe.sm_90.ptx"] {
        let mut rig = Rig::new(&probe(file));
        // cvt_k(x, y, y2, back, back2, n)
        let px = rig.upload(&xs);
        let (py, py2, pback, pback2) = (
            rig.upload(&vec![0u16; n]),
            rig.upload(&vec![0u32; n]),
            rig.upload(&vec![0f32; n]),
            rig.upload(&vec![0f32; 2 * n]),
        );
        rig.launch(
            "cvt_k",
            [(n / 128) as u32, 1, 1],
            [128, 1, 1],
            &[&b64(px), &b64(py), &b64(py2), &b64(pback), &b64(pback2), &(n as u32).to_le_bytes()],
        )
        .unwrap_or_else(|e| panic!("{file} cvt_k: {}", e.report));
        let (y, y2, back, back2): (Vec<u16>, Vec<u32>, Vec<u32>, Vec<u32>) =
            (rig.download(py, n), rig.download(py2, n), rig.download(pback, n), rig.download(pback2, 2 * n));
        for i in 0..n {
            let x = xs[i];
            let h = reference_cvt(x);
            // __floats2bfloat162_rn(x, 2x): .x (low half) from x, .y (high half) from 2x.
            let h2 = reference_cvt(x * 2.0);
            assert_eq!(y[i], h, "{file} __float2bfloat16_rn({:#x})", x.to_bits());
            assert_eq!(y2[i], (h2 as u32) << 16 | h as u32, "{file} __floats2bfloat162_rn({:#x})", x.to_bits());
            let widen = |v: u16| if is_nan(v) && file.contains("90") { 0x7fff_ffff } else { (v as u32) << 16 };
            assert_eq!(back[i], widen(h), "{file} __bfloat162float");
            assert_eq!([back2[2 * i], back2[2 * i + 1]], [widen(h), widen(h2)], "{file} __bfloat1622float2");
        }
        // arith_k(a, b, c, o, n): o[6i..] = hadd, hmul, hfma, hmin, hmax, hsub.
        let (pa, pb, pc, po) = (rig.upload(&a), rig.upload(&b), rig.upload(&c), rig.upload(&vec![0u16; 6 * n]));
        rig.launch(
            "arith_k",
            [(n / 128) as u32, 1, 1],
            [128, 1, 1],
            &[&b64(pa), &b64(pb), &b64(pc), &b64(po), &(n as u32).to_le_bytes()],
        )
        .unwrap_or_else(|e| panic!("{file} arith_k: {}", e.report));
        let o: Vec<u16> = rig.download(po, 6 * n);
        for i in 0..n {
            let (x, y, z) = (a[i], b[i], c[i]);
            let want = [
                reference('+', x, y, 0),
                reference('*', x, y, 0),
                reference('f', x, y, z),
                reference_minmax(true, false, x, y),
                reference_minmax(false, false, x, y),
                reference('-', x, y, 0),
            ];
            assert_eq!(&o[6 * i..6 * i + 6], &want, "{file} arith_k on {x:#06x}, {y:#06x}, {z:#06x}");
        }
        // arith2_k on the same values packed (element i and i + 1 of each array).
        let pk =
            |v: &[u16]| -> Vec<u32> { (0..n / 2).map(|i| v[2 * i] as u32 | (v[2 * i + 1] as u32) << 16).collect() };
        let (pa2, pb2, pc2, po2) =
            (rig.upload(&pk(&a)), rig.upload(&pk(&b)), rig.upload(&pk(&c)), rig.upload(&vec![0u32; 6 * (n / 2)]));
        rig.launch(
            "arith2_k",
            [(n / 256) as u32, 1, 1],
            [128, 1, 1],
            &[&b64(pa2), &b64(pb2), &b64(pc2), &b64(po2), &((n / 2) as u32).to_le_bytes()],
        )
        .unwrap_or_else(|e| panic!("{file} arith2_k: {}", e.report));
        let o2: Vec<u32> = rig.download(po2, 6 * (n / 2));
        for i in 0..n / 2 {
            for (j, op) in ['+', '*', 'f', 'm', 'M', '-'].into_iter().enumerate() {
                let one = |k: usize| {
                    let (x, y, z) = (a[2 * i + k], b[2 * i + k], c[2 * i + k]);
                    match op {
                        'm' => reference_minmax(true, false, x, y),
                        'M' => reference_minmax(false, false, x, y),
                        _ => reference(op, x, y, z),
                    }
                };
                let w = one(0) as u32 | (one(1) as u32) << 16;
                assert_eq!(
                    o2[6 * i + j],
                    w,
                    "{file} arith2_k {op} pair {i}: {:#06x?} {:#06x?} {:#06x?}",
                    &a[2 * i..2 * i + 2],
                    &b[2 * i..2 * i + 2],
                    &c[2 * i..2 * i + 2]
                );
            }
        }
        // cmp_k(a, b, o, n): __hgt, __heq, __hisnan, __hisinf, __hle, __hltu.
        let pcmp = rig.upload(&vec![0u32; 6 * n]);
        rig.launch(
            "cmp_k",
            [(n / 128) as u32, 1, 1],
            [128, 1, 1],
            &[&b64(pa), &b64(pb), &b64(pcmp), &(n as u32).to_le_bytes()],
        )
        .unwrap_or_else(|e| panic!("{file} cmp_k: {}", e.report));
        let o: Vec<u32> = rig.download(pcmp, 6 * n);
        for i in 0..n {
            let (x, y) = (a[i], b[i]);
            // __hisinf: -1 for -inf, 1 for +inf.
            let inf = match (is_inf(x), x & 0x8000 != 0) {
                (false, _) => 0,
                (true, false) => 1,
                (true, true) => u32::MAX,
            };
            let t = |b: bool| b as u32;
            let want = [
                t(fcmp("gt", x, y)),
                t(fcmp("eq", x, y)),
                t(is_nan(x)),
                inf,
                t(fcmp("le", x, y)),
                t(fcmp("ltu", x, y)),
            ];
            assert_eq!(&o[6 * i..6 * i + 6], &want, "{file} cmp_k on {x:#06x}, {y:#06x}");
        }
        // misc_k(a, o, n): neg, abs, min.NaN(a[i], a[i+1]), max.NaN(a[i], a[i+1]).
        let po = rig.upload(&vec![0u16; 4 * n]);
        rig.launch("misc_k", [(n / 128) as u32, 1, 1], [128, 1, 1], &[&b64(pa), &b64(po), &(n as u32).to_le_bytes()])
            .unwrap_or_else(|e| panic!("{file} misc_k: {}", e.report));
        let o: Vec<u16> = rig.download(po, 4 * n);
        for i in 0..n {
            let want = [
                a[i] ^ 0x8000,
                a[i] & 0x7fff,
                reference_minmax(true, true, a[i], a[i + 1]),
                reference_minmax(false, true, a[i], a[i + 1]),
            ];
            assert_eq!(&o[4 * i..4 * i + 4], &want, "{file} misc_k on {:#06x}, {:#06x}", a[i], a[i + 1]);
        }
    }
}
