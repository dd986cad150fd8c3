//! Logging set-up for provider binaries: `tracing` to stderr, plain or JSON.
//!
//! Colours only when stderr is a terminal: a host that sends a provider's stderr to a file or
//! a pipe (a 1.x host does) gets plain text, no ANSI escape codes.
//!
//! `RUST_LOG` wins when set (a 1.x host passes it through); otherwise the level the host asked
//! for in host data; otherwise `info`.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls do nothing.
pub fn init(structured: bool, level: Option<&str>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let level = level
            .map(str::to_ascii_lowercase)
            .unwrap_or_else(|| "info".into());
        EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let res = if structured {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    // Already installed (tests, embedding): keep the existing subscriber.
    let _ = res;
}
