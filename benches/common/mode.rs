//! Short (CI) or full run, shared by the benches.

/// `MESHMIRROR_BENCH=short` or a `--short` argument: a quick run for CI.
#[derive(Clone, Copy, Debug)]
pub struct Mode {
    pub short: bool,
}

impl Mode {
    pub fn from_env() -> Mode {
        let env = std::env::var("MESHMIRROR_BENCH").unwrap_or_default();
        let short = env.eq_ignore_ascii_case("short") || std::env::args().any(|a| a == "--short");
        Mode { short }
    }

    pub fn name(self) -> &'static str {
        if self.short { "short" } else { "full" }
    }
}
