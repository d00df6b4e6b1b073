//! Logging: human-readable lines on a terminal; under systemd (journald attached to stderr)
//! no timestamps, since the journal adds its own.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `RUST_LOG` overrides the default `info` level (tract's CPU
/// probing notes are kept at `warn`).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,tract_linalg=warn"));
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    let _ = if under_journald { builder.without_time().with_ansi(false).try_init() } else { builder.try_init() };
}
