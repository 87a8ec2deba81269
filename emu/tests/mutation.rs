//! Malformed PTX never hangs or panics the loader. Every vendored PTX file is mutated
//! (truncated, a token deleted or swapped with the next, a line deleted or duplicated,
//! stray punctuation or a directive inserted, a number made extreme) and each mutant
//! must either load or fail with an error naming one of its lines. The mutants are
//! seeded, so a failure names what reproduces it: the file, the seed and the mutation.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mp_emu::ptx::Module;

/// SplitMix64: a few lines of deterministic randomness instead of a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// FNV-1a, so that each file's seeds depend on its name and not on directory order.
fn hash(s: &str) -> u64 {
    s.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01B3))
}

/// A file and where its tokens and lines are, computed once: the large GEMM files are
/// mutated many times and scanning 2 MB per mutant would dominate the test.
struct Source {
    name: String,
    text: String,
    /// Byte ranges of tokens, as the lexer splits them closely enough: runs of word
    /// characters, strings, and single other characters.
    tokens: Vec<(usize, usize)>,
    /// Byte ranges of lines, without their `\n`.
    lines: Vec<(usize, usize)>,
}

impl Source {
    fn new(name: String, text: String) -> Source {
        let word = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'%' | b'$');
        let b = text.as_bytes();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let start = i;
            if b[i].is_ascii_whitespace() {
                i += 1;
                continue;
            } else if word(b[i]) {
                while i < b.len() && word(b[i]) {
                    i += 1;
                }
            } else if b[i] == b'"' {
                i += 1;
                while i < b.len() && b[i] != b'"' && b[i] != b'\n' {
                    i += 1;
                }
                i = (i + 1).min(b.len());
            } else {
                // Whole characters, so that every cut lies on a char boundary.
                i += text[i..].chars().next().map_or(1, char::len_utf8);
            }
            tokens.push((start, i));
        }
        let mut lines = Vec::new();
        let mut start = 0;
        for (i, &c) in b.iter().enumerate() {
            if c == b'\n' {
                lines.push((start, i));
                start = i + 1;
            }
        }
        lines.push((start, b.len()));
        Source { name, text, tokens, lines }
    }

    /// One mutant and a description of the mutation.
    fn mutate(&self, rng: &mut Rng) -> (String, String) {
        let t = &self.text;
        let tok = |k: usize| self.tokens[k.min(self.tokens.len() - 1)];
        let k = rng.below(self.tokens.len());
        let show = |r: (usize, usize)| format!("{:?} at byte {}", &t[r.0..r.1], r.0);
        match rng.below(8) {
            0 => {
                let mut at = rng.below(t.len() + 1);
                while !t.is_char_boundary(at) {
                    at -= 1;
                }
                (t[..at].to_string(), format!("truncated at byte {at}"))
            }
            1 => {
                let (s, e) = tok(k);
                (format!("{}{}", &t[..s], &t[e..]), format!("deleted token {}", show((s, e))))
            }
            2 => {
                let ((s1, e1), (s2, e2)) = (tok(k), tok(k + 1));
                if s1 == s2 {
                    return (t[..s1].to_string(), format!("truncated before the last token {}", show((s1, e1))));
                }
                let m = format!("{}{}{}{}{}", &t[..s1], &t[s2..e2], &t[e1..s2], &t[s1..e1], &t[e2..]);
                (m, format!("swapped tokens {} and {}", show((s1, e1)), show((s2, e2))))
            }
            3 => {
                let l = rng.below(self.lines.len());
                let (s, e) = self.lines[l];
                let e = (e + 1).min(t.len());
                (format!("{}{}", &t[..s], &t[e..]), format!("deleted line {}", l + 1))
            }
            4 => {
                let l = rng.below(self.lines.len());
                let (s, e) = self.lines[l];
                (format!("{}\n{}", &t[..e], &t[s..]), format!("duplicated line {}", l + 1))
            }
            5 => {
                const STRAY: &[&str] = &[
                    ";", "{", "}", ".pragma", "(", ")", "[", "]", ",", "\"", "@", "!", "-", "+", "<", ">", ":", "|",
                    ".reg", ".param", ".shared", ".entry", ".func", ".maxnreg", ".loc", ".align",
                ];
                let x = STRAY[rng.below(STRAY.len())];
                let (s, _) = tok(k);
                (format!("{} {x} {}", &t[..s], &t[s..]), format!("inserted {x:?} before {}", show(tok(k))))
            }
            6 => {
                // Cut after a token and end in the middle of a construct: parsers that look
                // for a closing token tend to run past the end here.
                const TAIL: &[&str] = &[
                    ".pragma",
                    ".pragma \"nounroll\"",
                    ".reg .b32 %r<",
                    ".param .align",
                    "{",
                    "@%p1 bra",
                    "@!",
                    "[%rd1+",
                    ".loc",
                    ".maxntid 1,",
                    "\"",
                ];
                let x = TAIL[rng.below(TAIL.len())];
                let (_, e) = tok(k);
                (format!("{} {x}", &t[..e]), format!("cut after {} and ended with {x:?}", show(tok(k))))
            }
            _ => {
                // A number at the limits of the widths the loader converts it to.
                const EXTREME: &[&str] = &[
                    "0",
                    "4294967295",
                    "4294967296",
                    "2147483648",
                    "18446744073709551615",
                    "0xFFFFFFFFFFFFFFFF",
                    "99999999999999999999999",
                    "0f",
                    "0d",
                    "0x",
                ];
                let digits: Vec<usize> =
                    (0..self.tokens.len()).filter(|&i| t.as_bytes()[self.tokens[i].0].is_ascii_digit()).collect();
                let (s, e) = tok(digits.get(rng.below(digits.len())).copied().unwrap_or(k));
                let x = EXTREME[rng.below(EXTREME.len())];
                (format!("{}{x}{}", &t[..s], &t[e..]), format!("replaced {} by {x}", show((s, e))))
            }
        }
    }
}

/// How a load ended: `Ok(None)` loaded, `Ok(Some((line, message)))` an error.
type Outcome = Result<Option<(usize, String)>, String>;

/// Loads `text` on its own thread, under `catch_unwind`, waiting at most `limit`. `None`:
/// it did not return in time (the thread is left running; the test fails).
fn load_watched(text: String, limit: Duration) -> Option<Outcome> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("load".into())
        .spawn(move || {
            let r = catch_unwind(AssertUnwindSafe(|| Module::load(&text))).map_err(|p| {
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic".into())
            });
            let _ = tx.send(r.map(|r| r.err().map(|e| (e.line, e.message))));
        })
        .unwrap();
    rx.recv_timeout(limit).ok()
}

/// Why one load's result is wrong, or None when it is right.
fn check(text: &str, outcome: Option<Outcome>, limit: Duration) -> Option<String> {
    // The lexer's line at the end of the text: one past the last `\n`.
    let last_line = text.matches('\n').count() + 1;
    match outcome {
        None => Some(format!("did not return within {limit:?}")),
        Some(Err(p)) => Some(format!("panicked: {p}")),
        Some(Ok(Some((line, message)))) if line == 0 || line > last_line || message.is_empty() => {
            Some(format!("error names line {line} of {last_line}: {message:?}"))
        }
        Some(Ok(_)) => None,
    }
}

fn limit() -> Duration {
    // A debug build loads the 2 MB GEMM files in about a second; a release build in tens
    // of milliseconds. Either way a load that takes this long is looping.
    Duration::from_secs(if cfg!(debug_assertions) { 30 } else { 5 })
}

fn sources() -> Vec<Source> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../cuda/ptx");
    let mut v: Vec<Source> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "ptx"))
        .map(|p| Source::new(p.file_name().unwrap().to_string_lossy().into(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

#[test]
fn mutated_ptx_loads_or_fails_with_a_line() {
    let sources = sources();
    assert!(sources.len() >= 10, "found only {} PTX files", sources.len());
    // Each load of the large files parses up to 2 MB; fewer of them keep the test short.
    // MP_EMU_MUTANTS multiplies the counts for a longer search.
    let scale: usize = std::env::var("MP_EMU_MUTANTS").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let (small, large) = if cfg!(debug_assertions) { (10, 2) } else { (40, 12) };
    let limit = limit();
    let mut failures = Vec::new();
    let start = Instant::now();
    let mut n = 0;
    'files: for src in &sources {
        let count = scale * if src.text.len() > 500_000 { large } else { small };
        for i in 0..count as u64 {
            let seed = hash(&src.name) ^ i;
            let (mutant, what) = src.mutate(&mut Rng(seed));
            let outcome = load_watched(mutant.clone(), limit);
            let hung = outcome.is_none();
            if let Some(why) = check(&mutant, outcome, limit) {
                failures.push(format!("{}, seed {seed:#x}, {what}: {why}", src.name));
            }
            n += 1;
            if hung {
                // The looping thread keeps a core busy: later timings would mean nothing.
                break 'files;
            }
        }
    }
    eprintln!("{n} mutants in {:?}", start.elapsed());
    assert!(failures.is_empty(), "{} of {n} mutants failed:\n{}", failures.len(), failures.join("\n"));
}

const HEAD: &str = ".version 8.0\n.target sm_80\n.address_size 64\n";

/// Why `text` did not fail to load with an error naming one of its lines, if it did not.
fn fails_with_a_line(text: &str) -> Option<String> {
    let outcome = load_watched(text.to_string(), limit());
    let why = match check(text, outcome.clone(), limit()) {
        Some(why) => why,
        None if matches!(outcome, Some(Ok(None))) => "loaded".into(),
        None => return None,
    };
    Some(format!("{text:.200?}: {why}"))
}

fn assert_fails_with_a_line(text: &str) {
    if let Some(why) = fails_with_a_line(text) {
        panic!("{why}");
    }
}

#[test]
fn pragma_without_semicolon_at_the_end_fails() {
    for end in ["\t.pragma \"nounroll\"", "\t.pragma"] {
        let text = format!("{HEAD}.visible .entry k()\n{{\n{end}");
        assert_fails_with_a_line(&text);
        let e = Module::load(&text).err().unwrap();
        assert_eq!(e.line, 6, "{e}");
    }
}

/// Forms the random mutants reach rarely or never: ends of input inside a construct,
/// numbers at the limits of what the loader converts them to, and nesting deep enough to
/// exhaust a recursive parser's stack (an abort, which no `catch_unwind` sees).
#[test]
fn hand_picked_malformed_ptx_fails_with_a_line() {
    let entry = |params: &str, body: &str| format!("{HEAD}.visible .entry k({params})\n{{\n{body}\n\tret;\n}}\n");
    let huge = "18446744073709551615";
    let texts = [
        // Ends of input.
        format!("{HEAD}.visible .entry k() .maxnreg\n"),
        format!("{HEAD}.visible .entry k()\n{{\n\t.pragma \"nounroll\n;\n\tret;\n}}\n"),
        "\"".to_string(),
        "/*".to_string(),
        // Register counts: one `%r<N>` is unbounded work.
        entry("", "\t.reg .b32 %r<4294967295>;"),
        entry("", "\t.reg .b32 %r<4294967296>;"),
        entry("", &format!("\t.reg .b32 %r<{huge}>;")),
        entry("", &"\t.reg .b32 %r<200000>;\n".repeat(2)),
        // Nesting.
        entry("", &format!("\t.reg .b32 %r<2>;\n\tmov.b32 %r1, {};", "{".repeat(1_000_000))),
        entry("", &format!("\tcall f, {};", "(".repeat(1_000_000))),
        // Alignments, sizes and thread counts.
        entry(&format!(".param .u32 a, .param .align {huge} .b8 b[8]"), ""),
        entry(".param .u32 a, .param .align 4294967296 .b8 b[8]", ""),
        entry(".param .u32 a, .param .align 3 .b8 b[8]", ""),
        entry(".param .u32 a, .param .align 0 .b8 b[8]", ""),
        entry(&format!(".param .u32 a, .param .b64 b[{huge}]"), ""),
        entry(&format!(".param .u32 a, .param .b8 b[{huge}]"), ""),
        entry(".param .u32 a, .param .b8 b[4294967296]", ""),
        format!("{HEAD}.shared .b64 s[{huge}];\n.visible .entry k()\n{{\n\tret;\n}}\n"),
        format!("{HEAD}.shared .align {huge} .b8 s[4];\n.visible .entry k()\n{{\n\tret;\n}}\n"),
        entry("", &format!("\t.shared .b8 s[{huge}];")),
        entry("", "\t.shared .b8 s[4294967296];\n\t.reg .b64 %rd<2>;\n\tmov.u64 %rd1, s;"),
        entry(
            "",
            "\t.shared .b8 s[4294967295];\n\t.shared .b8 t[4294967295];\n\t.reg .b64 %rd<2>;\n\tmov.u64 %rd1, s;\n\tmov.u64 %rd1, t;",
        ),
        format!("{HEAD}.visible .entry k() .maxntid {huge}, 1, 1\n{{\n\tret;\n}}\n"),
        format!("{HEAD}.visible .entry k() .maxntid 65536, 65536, 1\n{{\n\tret;\n}}\n"),
        format!("{HEAD}.target sm_{huge}\n"),
    ];
    let failures: Vec<String> = texts.iter().filter_map(|t| fails_with_a_line(t)).collect();
    assert!(failures.is_empty(), "{} of {} failed:\n{}", failures.len(), texts.len(), failures.join("\n"));
}

/// A number that is not one names its own line, not the next token's.
#[test]
fn bad_number_names_its_line() {
    let e = Module::load(&format!("{HEAD}.visible .entry k() .maxntid x\n{{\n\tret;\n}}\n")).err().unwrap();
    assert_eq!(e.line, 4, "{e}");
}

/// A string that does not end on its line is an error there; read on, it hid the lines
/// it spanned and a later error named a line too early.
#[test]
fn unterminated_string_fails_on_its_line() {
    let text = format!(
        "{HEAD}.visible .entry k()\n{{\n\t.reg .b32 %r<2>;\n\t.pragma \"nounroll;\n\tret;\n\t\";\n\tpopc.b32 %r1, %r1;\n}}\n"
    );
    let e = Module::load(&text).err().expect("must not load");
    assert_eq!(e.line, 7, "{e}");
    assert!(e.message.contains("string"), "{e}");
}
