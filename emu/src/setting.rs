//! Process-wide settings chosen by an environment variable (`MP_EMU_BLOCK_ORDER`,
//! `MP_EMU_MMA`, `MP_EMU_APPROX`), which tests may also set in-process.

use std::sync::atomic::{AtomicU8, Ordering};

const UNSET: u8 = u8::MAX;

/// One setting: the index into `names` of its value, the last [`Setting::set`], else the
/// environment variable's (read once), else 0. An unknown value is refused loudly, once,
/// and taken as `names[0]`, so a typo in a test script cannot silently test less.
pub struct Setting {
    var: &'static str,
    names: &'static [&'static str],
    value: AtomicU8,
}

impl Setting {
    pub const fn new(var: &'static str, names: &'static [&'static str]) -> Setting {
        Setting { var, names, value: AtomicU8::new(UNSET) }
    }

    /// The index of `v` in the setting's names.
    pub fn parse(&self, v: &str) -> Option<u8> {
        self.names.iter().position(|n| *n == v).map(|i| i as u8)
    }

    pub fn get(&self) -> u8 {
        let c = self.value.load(Ordering::Relaxed);
        if c != UNSET {
            return c;
        }
        let v = match std::env::var(self.var) {
            Ok(v) => self.parse(&v).unwrap_or_else(|| {
                eprintln!("mp-emu: {}={v:?} is not {}; using {}", self.var, self.names.join(" or "), self.names[0]);
                0
            }),
            Err(_) => 0,
        };
        // A concurrent first call computes the same value; either store wins.
        let _ = self.value.compare_exchange(UNSET, v, Ordering::Relaxed, Ordering::Relaxed);
        self.value.load(Ordering::Relaxed)
    }

    pub fn set(&self, v: u8) {
        self.value.store(v, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_wins_over_the_environment_and_names_parse() {
        static S: Setting = Setting::new("MP_EMU_SETTING_TEST_UNSET_VARIABLE", &["a", "b", "c"]);
        assert_eq!(S.get(), 0);
        S.set(2);
        assert_eq!(S.get(), 2);
        assert_eq!((S.parse("b"), S.parse("d")), (Some(1), None));
    }
}
